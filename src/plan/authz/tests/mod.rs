//! Decisions as Istio documents them: each test a policy from Istio's
//! authorization reference (`security/v1beta1/authorization_policy.proto`
//! in istio/api, published as "Authorization Policy" on istio.io), its tasks
//! ("HTTP traffic", "TCP traffic", "Ingress access control", "Explicit
//! deny", "Dry run", "JWT token") or the builder's input/output pairs in
//! istio/istio (`pilot/pkg/security/authz/builder/testdata`), with the
//! requests whose verdicts they give. Compile errors follow Istio's
//! validation (`pkg/config/validation/validation.go`,
//! `ValidateAuthorizationPolicy`, and `pkg/config/security/security.go`).

use std::collections::BTreeMap;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::*;
use crate::bootstrap::Bootstrap;
use crate::config::load_str;
use crate::plan::{Compiled, compile_all};

const FILE: &str = "authz.yaml";
const ALLOWED: bool = true;
const DENIED: bool = false;

mod actions;
mod conditions;
mod operations;
mod scope;
mod sources;
mod tcp;
mod validation;

// === helpers ===

/// The proxy of Istio's examples: a workload `app: httpbin, version: v1`
/// in namespace `foo`, root namespace `istio-system`.
fn bootstrap() -> Bootstrap {
    Bootstrap {
        namespace: "foo".into(),
        workload_labels: Some(labels(&[("app", "httpbin"), ("version", "v1")])),
        ..Bootstrap::default()
    }
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// An AuthorizationPolicy `foo/<name>` with `spec` (YAML lines at column 0).
fn ap(name: &str, spec: &str) -> String {
    ap_in("foo", name, spec)
}

/// An AuthorizationPolicy `<ns>/<name>` with `spec` (YAML lines at column 0).
fn ap_in(ns: &str, name: &str, spec: &str) -> String {
    let spec: String = spec
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect();
    let spec = if spec.is_empty() {
        " {}\n".to_string()
    } else {
        format!("\n{spec}")
    };
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:{spec}"
    )
}

fn compiled_as(yaml: &str, b: &Bootstrap) -> Compiled {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    compile_all(&config, b)
}

fn error_lines(c: &Compiled) -> Vec<String> {
    c.errors
        .iter()
        .chain(&c.isolated)
        .map(|e| e.to_string())
        .collect()
}

/// The authorization plan of `yaml` for `b`; panics on any error.
fn plan_as(yaml: &str, b: &Bootstrap) -> AuthzPlan {
    let c = compiled_as(yaml, b);
    let errors = error_lines(&c);
    assert!(
        errors.is_empty(),
        "errors:\n{}\n--- yaml ---\n{yaml}",
        errors.join("\n")
    );
    c.plan.authz
}

fn plan(yaml: &str) -> AuthzPlan {
    plan_as(yaml, &bootstrap())
}

/// The errors of `yaml`; panics when it compiles.
fn errors(yaml: &str) -> Vec<String> {
    let c = compiled_as(yaml, &bootstrap());
    let errors = error_lines(&c);
    assert!(
        !errors.is_empty(),
        "expected errors, but it compiled (warnings: {:?})\n--- yaml ---\n{yaml}",
        c.plan.warnings
    );
    errors
}

/// Asserts that one error names `field` and contains `reason` (and the
/// file and the resource `AuthorizationPolicy/foo/<name>`).
fn assert_error(yaml: &str, name: &str, field: &str, reason: &str) {
    let errors = errors(yaml);
    assert!(
        errors.iter().any(|e| e.contains(FILE)
            && e.contains(&format!("foo/{name}"))
            && e.contains(field)
            && e.to_lowercase().contains(&reason.to_lowercase())),
        "no error naming {FILE}, foo/{name}, {field:?} and {reason:?} in:\n{}\n--- yaml ---\n{yaml}",
        errors.join("\n")
    );
}

/// A request or connection as authorization sees it (owned).
#[derive(Debug, Clone)]
struct Req {
    source_ip: IpAddr,
    remote_ip: Option<IpAddr>,
    principal: Option<String>,
    destination_ip: Option<IpAddr>,
    port: u16,
    sni: Option<String>,
    http: Option<HttpReq>,
}

#[derive(Debug, Clone)]
struct HttpReq {
    host: String,
    method: String,
    path: String,
    headers: HeaderMap,
    auth: Option<RequestAuth>,
}

/// A plain-text HTTP request (no peer identity) from 10.0.0.1 to port
/// 8000 with `Host: httpbin.foo`.
fn req(method: &str, path: &str) -> Req {
    Req {
        source_ip: ip("10.0.0.1"),
        remote_ip: None,
        principal: None,
        destination_ip: Some(ip("10.0.0.99")),
        port: 8000,
        sni: None,
        http: Some(HttpReq {
            host: "httpbin.foo".into(),
            method: method.into(),
            path: path.into(),
            headers: HeaderMap::new(),
            auth: None,
        }),
    }
}

fn get(path: &str) -> Req {
    req("GET", path)
}

/// A TCP connection (no HTTP attributes) from 10.0.0.1 to `port`.
fn tcp(port: u16) -> Req {
    Req {
        http: None,
        ..req("GET", "/").port(port)
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

impl Req {
    fn http_mut(&mut self) -> &mut HttpReq {
        self.http.as_mut().expect("an HTTP request")
    }

    /// The authority as sent.
    fn host(mut self, h: &str) -> Req {
        self.http_mut().host = h.into();
        self
    }

    /// Over mutual TLS, with this verified identity (a URI SAN).
    fn by(mut self, identity: &str) -> Req {
        self.principal = Some(identity.into());
        self
    }

    /// From the workload `ns/sa` of trust domain cluster.local.
    fn peer(self, ns: &str, sa: &str) -> Req {
        self.by(&format!("spiffe://cluster.local/ns/{ns}/sa/{sa}"))
    }

    fn source(mut self, a: &str) -> Req {
        self.source_ip = ip(a);
        self
    }

    fn remote(mut self, a: &str) -> Req {
        self.remote_ip = Some(ip(a));
        self
    }

    fn port(mut self, p: u16) -> Req {
        self.port = p;
        self
    }

    fn dest(mut self, a: &str) -> Req {
        self.destination_ip = Some(ip(a));
        self
    }

    fn sni(mut self, s: &str) -> Req {
        self.sni = Some(s.into());
        self
    }

    fn header(mut self, k: &str, v: &str) -> Req {
        self.http_mut().headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
        self
    }

    /// With a token RequestAuthentication validated: `iss`, `sub` and the
    /// other claims of `claims` (a JSON object).
    fn jwt(mut self, iss: &str, sub: &str, claims: serde_json::Value) -> Req {
        let mut map = claims.as_object().cloned().unwrap_or_default();
        map.insert("iss".into(), iss.into());
        map.insert("sub".into(), sub.into());
        self.http_mut().auth = Some(RequestAuth {
            issuer: iss.into(),
            subject: sub.into(),
            claims: map,
        });
        self
    }

    fn attributes(&self) -> Attributes<'_> {
        Attributes {
            source_ip: self.source_ip,
            remote_ip: self.remote_ip.unwrap_or(self.source_ip),
            principal: self.principal.as_deref(),
            destination_ip: self.destination_ip,
            destination_port: self.port,
            sni: self.sni.as_deref(),
            http: self.http.as_ref().map(|h| HttpAttributes {
                host: &h.host,
                method: &h.method,
                path: &h.path,
                path_and_query: &h.path,
                scheme: "http",
                headers: &h.headers,
                auth: h.auth.as_ref(),
            }),
        }
    }
}

fn decide(p: &AuthzPlan, r: &Req) -> Verdict {
    p.decide(&r.attributes())
}

/// Asserts the verdict of every `(case, request, allowed)`.
fn expect(p: &AuthzPlan, cases: &[(&str, Req, bool)]) {
    let mut wrong = Vec::new();
    for (what, r, allowed) in cases {
        let v = decide(p, r);
        if v.allowed != *allowed {
            wrong.push(format!(
                "{what}: expected {}, got {v:?}",
                if *allowed { "ALLOWED" } else { "DENIED" }
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn rule(action: Action, policy: &str, rule: usize) -> Option<RuleRef> {
    Some(RuleRef {
        action,
        policy: Arc::from(policy),
        rule,
    })
}
