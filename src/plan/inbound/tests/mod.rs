//! Table-driven tests of the inbound plan (Gateway servers, Sidecar ingress
//! listeners, VirtualService binding) against Istio's documented semantics.
//! Every case is whole YAML read with the real loader and compiled with
//! `plan::compile`, exactly as `meshgate validate` does.

use base64::Engine as _;

use super::*;
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{ConfigErrors, load_str};
use crate::plan::Plan;
use crate::plan::route::StrMatch;

const FILE: &str = "ingress.yaml";

// === helpers ===

fn try_plan(yaml: &str, policy: OutboundTrafficPolicy) -> Result<Plan, ConfigErrors> {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let bootstrap = Bootstrap {
        outbound_traffic_policy: policy,
        ..Bootstrap::default()
    };
    crate::plan::compile(&config, &bootstrap)
}

fn compiled(yaml: &str) -> Plan {
    try_plan(yaml, OutboundTrafficPolicy::AllowAny)
        .unwrap_or_else(|e| panic!("does not compile:\n{e}\n--- yaml ---\n{yaml}"))
}

/// `None` when one error line reads `ingress.yaml:N: {resource}: {field}:
/// ...` and contains every fragment of `reasons`; otherwise what is wrong.
fn missing_error(yaml: &str, resource: &str, field: &str, reasons: &[&str]) -> Option<String> {
    let text = match try_plan(yaml, OutboundTrafficPolicy::AllowAny) {
        Ok(p) => {
            return Some(format!(
                "compiled, but expected an error at {field} (warnings: {:?})",
                p.warnings
            ));
        }
        Err(e) => e.to_string(),
    };
    let located = format!(" {resource}: {field}: ");
    let found = text.lines().any(|l| {
        l.starts_with(&format!("{FILE}:"))
            && l.contains(&located)
            && reasons.iter().all(|r| l.contains(r))
    });
    (!found).then(|| format!("no error `{FILE}:N:{located}..{reasons:?}..` among:\n{text}"))
}

/// Indents every non-empty line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// A Gateway whose `spec.servers` is `servers` (a YAML sequence at column 0).
fn gateway(ns: &str, name: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{}",
        indent(servers, 2)
    )
}

/// The Gateway `edge/ingress` with one server on port 443 (HTTPS) serving
/// `a.example.com` with the given `tls` (a flow mapping).
fn https_server(tls: &str) -> String {
    gateway(
        "edge",
        "ingress",
        &format!(
            "- port: {{number: 443, name: https, protocol: HTTPS}}\n  hosts: [a.example.com]\n  \
             tls: {tls}"
        ),
    )
}

/// A VirtualService; `body` holds the `http` / `tls` / `tcp` keys at column 0.
fn virtual_service(ns: &str, name: &str, hosts: &str, gateways: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n{}",
        indent(body, 2)
    )
}

/// A Sidecar `prod-us1/ratings`; `ingress` is its `spec.ingress` sequence
/// (column 0), `extra` more `spec` keys (column 0).
fn sidecar(ingress: &str, extra: &str) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: ratings\n  \
         namespace: prod-us1\nspec:\n  workloadSelector:\n    labels:\n      app: ratings\n",
    );
    if !ingress.is_empty() {
        s.push_str("  ingress:\n");
        s.push_str(&indent(ingress, 2));
    }
    s.push_str(&indent(extra, 2));
    s
}

fn docs(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn cred(name: &str) -> CredentialRef {
    CredentialRef {
        name: name.into(),
        namespace: None,
    }
}

fn files(cert: &str, key: &str) -> ServerCertSource {
    ServerCertSource::Files {
        cert: cert.into(),
        key: key.into(),
    }
}

fn host_strings(hosts: &[HostPattern]) -> Vec<String> {
    hosts.iter().map(ToString::to_string).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `Kind/ns/name` of each VirtualService bound to `server`.
fn bound(server: &ServerPlan) -> Vec<String> {
    server
        .routes
        .iter()
        .map(|r| {
            r.resource
                .rsplit(": ")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn only_listener(plan: &Plan) -> &ListenerPlan {
    assert_eq!(
        plan.inbound.listeners.len(),
        1,
        "expected one listener: {:#?}",
        plan.inbound.listeners
    );
    &plan.inbound.listeners[0]
}

fn only_server(plan: &Plan) -> &ServerPlan {
    let l = only_listener(plan);
    assert_eq!(l.servers.len(), 1, "expected one server: {l:#?}");
    &l.servers[0]
}

fn server_tls(server: &ServerPlan) -> &ServerTlsPlan {
    server
        .tls
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no TLS settings", server.origin))
}

/// Asserts that a collected list of table-row mismatches is empty.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn has_warning(plan: &Plan, parts: &[&str]) -> bool {
    plan.warnings
        .iter()
        .any(|w| parts.iter().all(|p| w.contains(p)))
}

mod binding;
mod isolation;
mod sidecar;
mod tasks;
mod tls;
