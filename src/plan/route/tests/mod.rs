//! Table-driven tests of `compile_http_route` and request matching against
//! Istio's HTTPRoute semantics as Envoy applies them. Routes are written as
//! whole VirtualService documents and read with the real loader.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::compile::compile_http_route;
use super::*;
use crate::config::{ConfigError, load_str};
use crate::plan::diagnostics::Diagnostics;

const FILE: &str = "routes.yaml";
const TO: &str = "route: [{destination: {host: app.example.com}}]";

// === helpers ===

/// A VirtualService whose `spec.http` is `http` (a YAML sequence).
fn doc(http: &str) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: web\n  \
         namespace: shop\nspec:\n  hosts: [web.example.com]\n  gateways: [mesh, edge]\n  http:\n",
    );
    let indent = http
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    for line in http.lines().filter(|l| !l.trim().is_empty()) {
        s.push_str("  ");
        s.push_str(&line[indent..]);
        s.push('\n');
    }
    s
}

/// One route with the given `match` list (flow YAML) going to one host.
fn with_match(matches: &str) -> String {
    format!("- match: {matches}\n  {TO}")
}

fn any_gateway(_: &[String]) -> bool {
    true
}

/// Compiles `spec.http[i]` of the document.
fn compile_at(
    http: &str,
    i: usize,
    applies: &dyn Fn(&[String]) -> bool,
) -> (Option<HttpRoutePlan>, Diagnostics) {
    let text = doc(http);
    let config = load_str(FILE, &text)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{text}"));
    let vs = &config.virtual_services[0];
    let mut diag = Diagnostics::default();
    let plan = compile_http_route(
        &vs.spec.http[i],
        &vs.source,
        &format!("spec.http[{i}]"),
        applies,
        &mut diag,
    );
    (plan, diag)
}

fn route(http: &str) -> HttpRoutePlan {
    let (plan, diag) = compile_at(http, 0, &any_gateway);
    let errors: Vec<String> = diag.errors.iter().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{http}\nunexpected errors: {errors:#?}");
    plan.unwrap_or_else(|| panic!("{http}\ncompiled to None"))
}

fn errors_at(http: &str, i: usize) -> Vec<ConfigError> {
    let (plan, diag) = compile_at(http, i, &any_gateway);
    assert!(plan.is_none(), "{http}\nexpected errors, but it compiled");
    assert!(!diag.errors.is_empty(), "{http}\nNone without errors");
    diag.errors
}

/// A request; GET http://web.example.com/… on port 80 unless changed.
#[derive(Debug, Clone)]
struct Req {
    method: &'static str,
    scheme: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: HeaderMap,
    port: u16,
}

fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        scheme: "http",
        authority: "web.example.com",
        path,
        headers: HeaderMap::new(),
        port: 80,
    }
}

impl Req {
    fn method(mut self, m: &'static str) -> Self {
        self.method = m;
        self
    }
    fn scheme(mut self, s: &'static str) -> Self {
        self.scheme = s;
        self
    }
    fn authority(mut self, a: &'static str) -> Self {
        self.authority = a;
        self
    }
    fn port(mut self, p: u16) -> Self {
        self.port = p;
        self
    }
    fn header(mut self, name: &'static str, value: &'static str) -> Self {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }
    fn view(&self) -> RequestView<'_> {
        RequestView {
            method: self.method,
            scheme: self.scheme,
            authority: self.authority,
            path_and_query: self.path,
            headers: &self.headers,
            port: self.port,
        }
    }
}

mod behaviour;
mod errors;
