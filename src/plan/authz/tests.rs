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

// === actions and their order ===

/// Reference: "allow-nothing ... `spec: {}` ... effectively denies all
/// requests to workloads in namespace `foo`".
#[test]
fn allow_nothing_denies_every_request_and_connection() {
    let p = plan(&ap("allow-nothing", ""));
    assert!(!p.is_empty(), "an ALLOW policy with no rules applies");
    expect(
        &p,
        &[
            ("GET /", get("/"), DENIED),
            ("POST /data", req("POST", "/data"), DENIED),
            ("mutual TLS", get("/").peer("foo", "sleep"), DENIED),
            ("TCP", tcp(9000), DENIED),
        ],
    );
    let v = decide(&p, &get("/"));
    assert_eq!(v.by, None, "denied for want of an ALLOW rule: {v:?}");
}

/// Reference: "allow-all ... `rules: [{}]`"; "An empty rule is always
/// matched".
#[test]
fn allow_all_allows_every_request_and_connection() {
    let p = plan(&ap("allow-all", "rules:\n- {}"));
    expect(
        &p,
        &[
            ("GET /", get("/"), ALLOWED),
            ("DELETE /x", req("DELETE", "/x"), ALLOWED),
            ("TCP", tcp(9000), ALLOWED),
        ],
    );
    assert_eq!(
        decide(&p, &get("/")).by,
        rule(Action::Allow, "foo/allow-all", 0)
    );
}

/// Task "Explicit deny" / reference: a DENY policy with `rules: [{}]`
/// denies everything, and DENY is evaluated before ALLOW.
#[test]
fn deny_all_beats_allow_all() {
    let deny_all = ap("deny-all", "action: DENY\nrules:\n- {}");
    let p = plan(&deny_all);
    expect(
        &p,
        &[("GET /", get("/"), DENIED), ("TCP", tcp(9000), DENIED)],
    );
    assert_eq!(
        decide(&p, &get("/")).by,
        rule(Action::Deny, "foo/deny-all", 0)
    );
    let both = ap("allow-all", "rules:\n- {}") + &deny_all;
    let p = plan(&both);
    let v = decide(&p, &get("/"));
    assert!(!v.allowed, "DENY first: {v:?}");
    assert_eq!(v.by, rule(Action::Deny, "foo/deny-all", 0));
}

/// No policy: every request allowed, nothing evaluated.
#[test]
fn no_policy_allows_everything() {
    let p = plan("");
    assert!(p.is_empty());
    let v = decide(&p, &get("/"));
    assert!(v.allowed && v.by.is_none() && v.audit.is_none(), "{v:?}");
}

/// Reference, evaluation order: 2. a matching DENY denies; 3. no ALLOW
/// policy: allow; 4. a matching ALLOW allows; 5. deny.
#[test]
fn deny_then_allow_then_default_deny() {
    // Reference example: deny POST from namespace dev.
    let deny_dev_post = ap(
        "deny-dev-post",
        r#"action: DENY
rules:
- from:
  - source:
      namespaces: ["dev"]
  to:
  - operation:
      methods: ["POST"]"#,
    );
    let p = plan(&deny_dev_post);
    expect(
        &p,
        &[
            ("POST from dev", req("POST", "/").peer("dev", "x"), DENIED),
            ("GET from dev", get("/").peer("dev", "x"), ALLOWED),
            (
                "POST from prod",
                req("POST", "/").peer("prod", "x"),
                ALLOWED,
            ),
            ("POST in plain text", req("POST", "/"), ALLOWED),
        ],
    );
    let with_allow = deny_dev_post
        + &ap(
            "allow-get",
            r#"rules:
- to:
  - operation:
      methods: ["GET", "POST"]"#,
        );
    let p = plan(&with_allow);
    expect(
        &p,
        &[
            ("POST from dev", req("POST", "/").peer("dev", "x"), DENIED),
            (
                "POST from prod",
                req("POST", "/").peer("prod", "x"),
                ALLOWED,
            ),
            ("PUT from prod", req("PUT", "/").peer("prod", "x"), DENIED),
        ],
    );
    let v = decide(&p, &req("PUT", "/"));
    assert_eq!(v.by, None, "no ALLOW rule matched: {v:?}");
    let v = decide(&p, &req("POST", "/").peer("prod", "x"));
    assert_eq!(v.by, rule(Action::Allow, "foo/allow-get", 0));
}

/// Reference: "AUDIT policies do not affect whether requests are allowed
/// or denied"; the matching request is marked.
#[test]
fn audit_never_changes_a_decision_but_is_reported() {
    let audit = ap(
        "audit-profile",
        r#"action: AUDIT
rules:
- to:
  - operation:
      methods: ["GET"]
      paths: ["/user/profile/*"]"#,
    );
    let p = plan(&audit);
    let v = decide(&p, &get("/user/profile/me"));
    assert!(v.allowed, "{v:?}");
    assert_eq!(v.by, None);
    assert_eq!(v.audit, rule(Action::Audit, "foo/audit-profile", 0));
    let v = decide(&p, &get("/other"));
    assert!(v.allowed && v.audit.is_none(), "{v:?}");

    let with_deny = audit.clone() + &ap("deny-all", "action: DENY\nrules:\n- {}");
    let v = decide(&plan(&with_deny), &get("/user/profile/me"));
    assert!(!v.allowed, "{v:?}");
    assert_eq!(v.audit, rule(Action::Audit, "foo/audit-profile", 0));

    let with_nothing = audit + &ap("allow-nothing", "");
    let v = decide(&plan(&with_nothing), &get("/user/profile/me"));
    assert!(!v.allowed, "AUDIT does not allow: {v:?}");
    assert_eq!(v.audit, rule(Action::Audit, "foo/audit-profile", 0));
}

/// Reference example: principals or namespace `test`, GET `/info*` or
/// POST `/data`, when `request.auth.claims[iss]` is Google's.
#[test]
fn the_references_first_example() {
    let p = plan(&ap(
        "httpbin",
        r#"action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep"]
  - source:
      namespaces: ["test"]
  to:
  - operation:
      methods: ["GET"]
      paths: ["/info*"]
  - operation:
      methods: ["POST"]
      paths: ["/data"]
  when:
  - key: request.auth.claims[iss]
    values: ["https://accounts.google.com"]"#,
    ));
    let google = |r: Req| r.jwt("https://accounts.google.com", "u1", serde_json::json!({}));
    expect(
        &p,
        &[
            (
                "sleep GET /info with a Google token",
                google(get("/info").peer("default", "sleep")),
                ALLOWED,
            ),
            (
                "test/x GET /info/x with a Google token",
                google(get("/info/x").peer("test", "x")),
                ALLOWED,
            ),
            (
                "test/x POST /data with a Google token",
                google(req("POST", "/data").peer("test", "x")),
                ALLOWED,
            ),
            (
                "test/x POST /data/x",
                google(req("POST", "/data/x").peer("test", "x")),
                DENIED,
            ),
            (
                "test/x GET /data",
                google(get("/data").peer("test", "x")),
                DENIED,
            ),
            (
                "sleep without a token",
                get("/info").peer("default", "sleep"),
                DENIED,
            ),
            (
                "another issuer",
                get("/info").peer("default", "sleep").jwt(
                    "https://evil.example",
                    "u1",
                    serde_json::json!({}),
                ),
                DENIED,
            ),
            (
                "plain text with a Google token",
                google(get("/info")),
                DENIED,
            ),
            (
                "prod/x with a Google token",
                google(get("/info").peer("prod", "x")),
                DENIED,
            ),
        ],
    );
}

// === HTTP operations (task "HTTP traffic") ===

/// Task "HTTP traffic": allow-nothing, then `productpage-viewer` allows
/// GET; POST stays denied.
#[test]
fn http_task_get_allowed_post_denied() {
    let yaml = ap("allow-nothing", "")
        + &ap(
            "productpage-viewer",
            r#"selector:
  matchLabels:
    app: httpbin
action: ALLOW
rules:
- to:
  - operation:
      methods: ["GET"]"#,
        );
    let p = plan(&yaml);
    expect(
        &p,
        &[
            ("GET /productpage", get("/productpage"), ALLOWED),
            ("POST /productpage", req("POST", "/productpage"), DENIED),
            ("get (methods are case-sensitive)", req("get", "/"), DENIED),
            ("HEAD /", req("HEAD", "/"), DENIED),
        ],
    );
}

/// Reference: "Exact `abc`, prefix `abc*` (matches `abc` and `abcd`),
/// suffix `*abc` (matches `abc` and `xabc`), presence `*`", on paths.
#[test]
fn paths_exact_prefix_suffix_and_presence() {
    let p = plan(&ap(
        "paths",
        r#"rules:
- to:
  - operation:
      paths: ["/productpage", "/api/*", "*/info", "/static*"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/productpage"), ALLOWED),
            ("exact, one more segment", get("/productpage/x"), DENIED),
            ("exact, trailing slash", get("/productpage/"), DENIED),
            ("exact is case-sensitive", get("/ProductPage"), DENIED),
            ("prefix", get("/api/v1/users"), ALLOWED),
            ("prefix, itself", get("/api/"), ALLOWED),
            ("prefix needs its slash", get("/api"), DENIED),
            ("prefix abc* matches abc", get("/static"), ALLOWED),
            (
                "prefix abc* matches abcd",
                get("/staticfiles/a.css"),
                ALLOWED,
            ),
            ("suffix", get("/v1/info"), ALLOWED),
            ("suffix, itself", get("/info"), ALLOWED),
            ("suffix, more after", get("/v1/info/x"), DENIED),
            ("neither", get("/details"), DENIED),
        ],
    );
    let any = plan(&ap(
        "any",
        "rules:\n- to:\n  - operation:\n      paths: [\"*\"]",
    ));
    expect(
        &any,
        &[
            ("presence, root", get("/"), ALLOWED),
            ("presence, deep", get("/a/b/c"), ALLOWED),
            (
                "presence on TCP: an HTTP field never matches",
                tcp(80),
                DENIED,
            ),
        ],
    );
}

/// Reference: `notPaths` and `notMethods` ("the path doesn't have prefix
/// `/admin`").
#[test]
fn not_paths_and_not_methods() {
    let p = plan(&ap(
        "not",
        r#"rules:
- to:
  - operation:
      hosts: ["*.example.com"]
      methods: ["GET", "HEAD"]
      notPaths: ["/admin*"]
- to:
  - operation:
      notMethods: ["DELETE", "PUT"]
      paths: ["/data/*"]"#,
    ));
    expect(
        &p,
        &[
            (
                "GET /x on a.example.com",
                get("/x").host("a.example.com"),
                ALLOWED,
            ),
            ("HEAD /x", req("HEAD", "/x").host("a.example.com"), ALLOWED),
            ("GET /admin", get("/admin").host("a.example.com"), DENIED),
            (
                "GET /admin/users",
                get("/admin/users").host("a.example.com"),
                DENIED,
            ),
            (
                "GET /administrator",
                get("/administrator").host("a.example.com"),
                DENIED,
            ),
            (
                "GET /x/admin",
                get("/x/admin").host("a.example.com"),
                ALLOWED,
            ),
            ("POST /x", req("POST", "/x").host("a.example.com"), DENIED),
            (
                "GET /x on example.com",
                get("/x").host("example.com"),
                DENIED,
            ),
            ("POST /data/1", req("POST", "/data/1"), ALLOWED),
            ("DELETE /data/1", req("DELETE", "/data/1"), DENIED),
            ("PUT /data/1", req("PUT", "/data/1"), DENIED),
            ("POST /other", req("POST", "/other"), DENIED),
        ],
    );
}

/// Reference: "hosts ... The match is case-insensitive"; the builder
/// matches `:authority` exactly (`(?i)example\.com`), so a port in the
/// authority is part of it (security best practices, "Writing host match
/// policies").
#[test]
fn hosts_are_case_insensitive_and_exact_on_the_authority() {
    let p = plan(&ap(
        "hosts",
        r#"rules:
- to:
  - operation:
      hosts: ["example.com", "prefix.example.*", "*.example.org", "api.example.net:8443"]
      notHosts: ["blocked.example.org"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/").host("example.com"), ALLOWED),
            ("exact, other case", get("/").host("EXAMPLE.Com"), ALLOWED),
            (
                "exact, with a port",
                get("/").host("example.com:80"),
                DENIED,
            ),
            (
                "exact, another name",
                get("/").host("www.example.com"),
                DENIED,
            ),
            ("prefix", get("/").host("prefix.example.io"), ALLOWED),
            (
                "prefix, other case",
                get("/").host("PREFIX.example.io:8080"),
                ALLOWED,
            ),
            ("suffix", get("/").host("a.example.org"), ALLOWED),
            (
                "suffix, other case",
                get("/").host("A.EXAMPLE.ORG"),
                ALLOWED,
            ),
            (
                "suffix, port breaks it",
                get("/").host("a.example.org:80"),
                DENIED,
            ),
            ("notHosts", get("/").host("blocked.example.org"), DENIED),
            (
                "notHosts, other case",
                get("/").host("Blocked.Example.Org"),
                DENIED,
            ),
            (
                "with a port",
                get("/").host("api.example.net:8443"),
                ALLOWED,
            ),
            ("without the port", get("/").host("api.example.net"), DENIED),
        ],
    );
}

/// Reference: path templates. "`/foo/{*}` matches `/foo/bar` but not
/// `/foo/bar/baz`"; "`/foo/{**}/` matches `/foo/bar/` ... and `/foo//` but
/// not `/foo/bar`"; "`/foo/{*}/bar/{**}` matches `/foo/buzz/bar/` and
/// `/foo/buzz/bar/baz`". Envoy's uri_template (which Istio hands them to,
/// `{*}` → `*`, `{**}` → `**`) reads `*` as `[pchar]+` and `**` as
/// `[pchar/]*`, fully matched, so `/foo/{**}` needs the `/` after `/foo`.
#[test]
fn path_templates_as_istio_documents_them() {
    let p = plan(&ap(
        "templates",
        r#"rules:
- to:
  - operation:
      paths: ["/one/{*}", "/any/{**}", "/foo/{*}/bar/{**}", "/{*}/items"]"#,
    ));
    expect(
        &p,
        &[
            ("{*}: one segment", get("/one/bar"), ALLOWED),
            ("{*}: not two", get("/one/bar/baz"), DENIED),
            ("{*}: not none", get("/one/"), DENIED),
            ("{*}: not without the slash", get("/one"), DENIED),
            ("{**}: zero segments after the slash", get("/any/"), ALLOWED),
            ("{**}: several", get("/any/a/b/c.txt"), ALLOWED),
            ("{**}: not without the slash", get("/any"), DENIED),
            ("{**}: not another prefix", get("/anything"), DENIED),
            (
                "/foo/{*}/bar/{**}: /foo/buzz/bar/",
                get("/foo/buzz/bar/"),
                ALLOWED,
            ),
            (
                "/foo/{*}/bar/{**}: /foo/buzz/bar/baz",
                get("/foo/buzz/bar/baz"),
                ALLOWED,
            ),
            ("/foo/{*}/bar/{**}: /foo/bar/", get("/foo/bar/"), DENIED),
            ("/{*}/items", get("/shop/items"), ALLOWED),
            ("/{*}/items, two segments", get("/a/b/items"), DENIED),
        ],
    );
}

/// Reference: "`/foo/{**}/` matches `/foo/bar/` ... and `/foo//` but not
/// `/foo/bar`". Istio's `CheckValidPathTemplate` trims the leading and
/// trailing `/` before checking that `{**}` is last, so this template is
/// valid.
#[test]
fn a_trailing_slash_after_the_any_template_is_valid() {
    let p = plan(&ap(
        "trailing",
        "rules:\n- to:\n  - operation:\n      paths: [\"/foo/{**}/\"]",
    ));
    expect(
        &p,
        &[
            ("/foo/bar/", get("/foo/bar/"), ALLOWED),
            ("/foo//", get("/foo//"), ALLOWED),
            ("/foo/bar", get("/foo/bar"), DENIED),
        ],
    );
}

/// Reference: "`/*/baz/{*}` ... `/**/baz/{*}` ... `/{**}/foo/{*}` ...
/// `/foo/{*}.txt` is invalid"; "`{` or `}` beyond a supported path template"
/// (`CheckValidPathTemplate`).
#[test]
fn bad_path_templates_are_refused() {
    for bad in [
        "/*/baz/{*}",
        "/**/baz/{*}",
        "/{**}/foo/{*}",
        "/foo/{*}.txt",
        "/foo/{id}",
        "/foo/{",
    ] {
        let yaml = ap(
            "bad-path",
            &format!("rules:\n- to:\n  - operation:\n      paths: [{bad:?}]"),
        );
        assert_error(
            &yaml,
            "bad-path",
            "spec.rules[0].to[0].operation.paths[0]",
            "",
        );
    }
    let not_paths = ap(
        "bad-not-path",
        "rules:\n- to:\n  - operation:\n      notPaths: [\"/{**}/x\"]",
    );
    assert_error(
        &not_paths,
        "bad-not-path",
        "spec.rules[0].to[0].operation.notPaths[0]",
        "",
    );
}

// === sources ===

/// Reference: principals "`<TRUST_DOMAIN>/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>`
/// ... requires mTLS"; builder: exact `spiffe://<value>`, prefix, suffix
/// (`spiffe://.*<suffix>`) and `*` (`.+`, any authenticated peer).
#[test]
fn principals_exact_prefix_suffix_and_any() {
    let p = plan(&ap(
        "principals",
        r#"rules:
- from:
  - source:
      principals: ["cluster.local/ns/default/sa/sleep", "cluster.local/ns/ops/*", "*/sa/admin"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/").peer("default", "sleep"), ALLOWED),
            (
                "exact, another sa",
                get("/").peer("default", "sleeper"),
                DENIED,
            ),
            (
                "exact, another trust domain",
                get("/").by("spiffe://other.td/ns/default/sa/sleep"),
                DENIED,
            ),
            (
                "exact, not a SPIFFE ID",
                get("/").by("cluster.local/ns/default/sa/sleep"),
                DENIED,
            ),
            ("prefix", get("/").peer("ops", "anything"), ALLOWED),
            (
                "prefix, another namespace",
                get("/").peer("opsx", "a"),
                DENIED,
            ),
            ("suffix", get("/").peer("any", "admin"), ALLOWED),
            (
                "suffix, other td",
                get("/").by("spiffe://x/ns/y/sa/admin"),
                ALLOWED,
            ),
            ("no mutual TLS", get("/"), DENIED),
        ],
    );
    let any = plan(&ap(
        "any-peer",
        "rules:\n- from:\n  - source:\n      principals: [\"*\"]",
    ));
    expect(
        &any,
        &[
            ("any peer", get("/").peer("x", "y"), ALLOWED),
            ("any peer, TCP", tcp(9000).peer("x", "y"), ALLOWED),
            ("plain text", get("/"), DENIED),
            ("plain text, TCP", tcp(9000), DENIED),
        ],
    );
}

/// Reference ("Authorization on plain text" in the security best
/// practices and Istio's mTLS migration task): a DENY with
/// `notPrincipals: ["*"]` denies every request without mutual TLS.
#[test]
fn not_principals_any_denies_plain_text() {
    let p = plan(&ap(
        "require-mtls",
        "action: DENY\nrules:\n- from:\n  - source:\n      notPrincipals: [\"*\"]",
    ));
    expect(
        &p,
        &[
            ("plain text", get("/"), DENIED),
            ("plain text TCP", tcp(9000), DENIED),
            ("mutual TLS", get("/").peer("default", "sleep"), ALLOWED),
            (
                "mutual TLS TCP",
                tcp(9000).peer("default", "sleep"),
                ALLOWED,
            ),
        ],
    );
}

/// Builder: `namespaces` is the regex `.*/ns/<ns>/.*` on the peer identity
/// (with `*` as `.*`); `notNamespaces` its negation (so a request without a
/// peer identity is not in any namespace).
#[test]
fn namespaces_and_not_namespaces() {
    let p = plan(&ap(
        "ns",
        "rules:\n- from:\n  - source:\n      namespaces: [\"foo\", \"team-*\"]",
    ));
    expect(
        &p,
        &[
            ("foo", get("/").peer("foo", "a"), ALLOWED),
            ("foobar", get("/").peer("foobar", "a"), DENIED),
            ("team-a", get("/").peer("team-a", "x"), ALLOWED),
            ("team (no dash)", get("/").peer("team", "x"), DENIED),
            ("plain text", get("/"), DENIED),
            ("TCP from foo", tcp(9000).peer("foo", "a"), ALLOWED),
        ],
    );
    let not = plan(&ap(
        "not-ns",
        "rules:\n- from:\n  - source:\n      notNamespaces: [\"foo\"]",
    ));
    expect(
        &not,
        &[
            ("foo", get("/").peer("foo", "a"), DENIED),
            ("bar", get("/").peer("bar", "a"), ALLOWED),
            ("plain text (no namespace)", get("/"), ALLOWED),
        ],
    );
}

/// Reference: serviceAccounts "`<namespace>/<serviceaccount>`;
/// `<serviceaccount>` ... the same namespace as the AuthorizationPolicy";
/// builder regex `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
#[test]
fn service_accounts() {
    let p = plan(&ap(
        "sa",
        r#"rules:
- from:
  - source:
      serviceAccounts: ["sleep", "bar/curl"]
      notServiceAccounts: ["foo/blocked"]"#,
    ));
    expect(
        &p,
        &[
            (
                "foo/sleep (the policy's namespace)",
                get("/").peer("foo", "sleep"),
                ALLOWED,
            ),
            ("default/sleep", get("/").peer("default", "sleep"), DENIED),
            ("foo/sleep-2", get("/").peer("foo", "sleep-2"), DENIED),
            ("bar/curl", get("/").peer("bar", "curl"), ALLOWED),
            (
                "another trust domain",
                get("/").by("spiffe://td.example/ns/bar/sa/curl"),
                ALLOWED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}

/// Reference: ipBlocks "populated from the source address of the IP
/// packet"; single IPs and CIDRs; remoteIpBlocks the original client
/// (`remote.ip`).
#[test]
fn ip_blocks_and_remote_ip_blocks() {
    let p = plan(&ap(
        "ips",
        r#"rules:
- from:
  - source:
      ipBlocks: ["10.1.0.0/16", "192.168.1.1", "2001:db8::/32"]
      notIpBlocks: ["10.1.9.0/24"]"#,
    ));
    expect(
        &p,
        &[
            ("in the block", get("/").source("10.1.2.3"), ALLOWED),
            ("the single IP", get("/").source("192.168.1.1"), ALLOWED),
            ("next to it", get("/").source("192.168.1.2"), DENIED),
            ("in notIpBlocks", get("/").source("10.1.9.7"), DENIED),
            ("outside", get("/").source("10.2.0.1"), DENIED),
            ("IPv6", get("/").source("2001:db8::1"), ALLOWED),
            (
                "IPv4-mapped IPv6",
                get("/").source("::ffff:10.1.2.3"),
                ALLOWED,
            ),
            ("TCP in the block", tcp(9000).source("10.1.2.3"), ALLOWED),
            (
                "ipBlocks read the peer, not X-Forwarded-For",
                get("/").source("10.9.9.9").remote("10.1.2.3"),
                DENIED,
            ),
        ],
    );
    // Task "Ingress access control": remoteIpBlocks.
    let remote = plan(&ap(
        "ingress-policy",
        r#"action: ALLOW
rules:
- from:
  - source:
      remoteIpBlocks: ["203.0.113.0/24"]
      notRemoteIpBlocks: ["203.0.113.66"]"#,
    ));
    expect(
        &remote,
        &[
            (
                "client in the block",
                get("/").source("10.0.0.5").remote("203.0.113.7"),
                ALLOWED,
            ),
            (
                "client excluded",
                get("/").source("10.0.0.5").remote("203.0.113.66"),
                DENIED,
            ),
            (
                "the peer is in the block, the client not",
                get("/").source("203.0.113.7").remote("198.51.100.1"),
                DENIED,
            ),
        ],
    );
    // Task "Ingress access control": DENY by remote IP.
    let deny = plan(&ap(
        "ingress-deny",
        "action: DENY\nrules:\n- from:\n  - source:\n      remoteIpBlocks: [\"198.51.100.0/24\"]",
    ));
    expect(
        &deny,
        &[
            ("denied client", get("/").remote("198.51.100.4"), DENIED),
            ("other client", get("/").remote("203.0.113.4"), ALLOWED),
        ],
    );
}

/// Source `trustDomains`: exact (`spiffe://<td>/` prefix), `*` (any SPIFFE
/// ID) and one wildcard within the trust domain (builder
/// `srcTrustDomainGenerator`).
#[test]
fn trust_domains() {
    let p = plan(&ap(
        "td",
        "rules:\n- from:\n  - source:\n      trustDomains: [\"cluster.local\", \"*.corp.example\"]",
    ));
    expect(
        &p,
        &[
            ("exact", get("/").peer("a", "b"), ALLOWED),
            (
                "exact, longer",
                get("/").by("spiffe://cluster.local.evil/ns/a/sa/b"),
                DENIED,
            ),
            (
                "wildcard",
                get("/").by("spiffe://eu.corp.example/ns/a/sa/b"),
                ALLOWED,
            ),
            (
                "wildcard stays in the domain",
                get("/").by("spiffe://x/y.corp.example/sa/b"),
                DENIED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}

// === TCP (task "TCP traffic") ===

/// Task "TCP traffic": ALLOW `ports: ["9000", "9001"]`; the port of a
/// connection is matched; `notPorts` its negation.
#[test]
fn tcp_ports_and_not_ports() {
    let p = plan(&ap(
        "tcp-policy",
        r#"action: ALLOW
rules:
- to:
  - operation:
      ports: ["9000", "9001"]
      notPorts: ["9001"]"#,
    ));
    expect(
        &p,
        &[
            ("9000", tcp(9000), ALLOWED),
            ("9001 (notPorts)", tcp(9001), DENIED),
            ("9002", tcp(9002), DENIED),
            ("HTTP on 9000", get("/").port(9000), ALLOWED),
            ("HTTP on 8000", get("/"), DENIED),
        ],
    );
}

/// Task "TCP traffic": an ALLOW rule naming `methods` on TCP ports never
/// matches ("Istio ignores the HTTP-only fields ... the rule becomes
/// invalid ... the request is rejected"); builder testdata
/// `tcp/allow-only-http` compiles to no policy.
#[test]
fn tcp_allow_with_http_only_fields_never_matches() {
    let p = plan(&ap(
        "tcp-policy",
        r#"action: ALLOW
rules:
- to:
  - operation:
      methods: ["GET"]
      ports: ["9000"]"#,
    ));
    expect(
        &p,
        &[
            ("TCP 9000", tcp(9000), DENIED),
            ("HTTP GET on 9000", get("/").port(9000), ALLOWED),
            ("HTTP POST on 9000", req("POST", "/").port(9000), DENIED),
        ],
    );
    // testdata tcp/allow-both-http-tcp: only the rule with TCP fields only
    // (namespaces ns-1, ports 80) survives for TCP.
    let both = plan(&ap(
        "httpbin-deny",
        r#"action: ALLOW
rules:
- from:
  - source:
      requestPrincipals: ["id-1"]
  to:
  - operation:
      methods: ["GET"]
- from:
  - source:
      namespaces: ["ns-1"]
  to:
  - operation:
      ports: ["8080"]
      methods: ["GET"]
- from:
  - source:
      namespaces: ["ns-2"]
      requestPrincipals: ["id-2"]
  to:
  - operation:
      ports: ["9090"]
- from:
  - source:
      namespaces: ["ns-1"]
  to:
  - operation:
      ports: ["80"]"#,
    ));
    expect(
        &both,
        &[
            ("ns-1 on 80", tcp(80).peer("ns-1", "a"), ALLOWED),
            ("ns-1 on 8080", tcp(8080).peer("ns-1", "a"), DENIED),
            ("ns-2 on 9090", tcp(9090).peer("ns-2", "a"), DENIED),
            ("plain on 80", tcp(80), DENIED),
        ],
    );
    assert_eq!(
        decide(&both, &tcp(80).peer("ns-1", "a")).by,
        rule(Action::Allow, "foo/httpbin-deny", 3)
    );
}

/// Task "TCP traffic" / reference: a DENY rule with `methods` and `ports`
/// denies every TCP connection to that port ("missing attributes are
/// treated as matches"); other ports are untouched.
#[test]
fn tcp_deny_with_http_fields_denies_the_port() {
    let p = plan(&ap(
        "tcp-policy",
        r#"action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
      ports: ["9000"]"#,
    ));
    expect(
        &p,
        &[
            ("TCP 9000", tcp(9000), DENIED),
            ("TCP 9001", tcp(9001), ALLOWED),
            ("HTTP GET on 9000", get("/").port(9000), DENIED),
            ("HTTP POST on 9000", req("POST", "/").port(9000), ALLOWED),
        ],
    );
    assert_eq!(
        decide(&p, &tcp(9000)).by,
        rule(Action::Deny, "foo/tcp-policy", 0)
    );
    // Without ports, every TCP connection is denied.
    let all = plan(&ap(
        "deny-get",
        "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]",
    ));
    expect(
        &all,
        &[
            ("TCP 9000", tcp(9000), DENIED),
            ("TCP 9001", tcp(9001), DENIED),
            ("HTTP POST", req("POST", "/"), ALLOWED),
        ],
    );
}

/// Builder testdata `tcp/deny-both-http-tcp`: for TCP, HTTP-only values
/// are dropped from DENY rules (rule 3: namespaces ns-1 plus methods →
/// namespaces ns-1 only; rule 9: `when destination.port` kept; rule 8:
/// `when request.headers` → any).
#[test]
fn tcp_deny_keeps_only_tcp_fields() {
    let p = plan(&ap(
        "httpbin-deny",
        r#"action: DENY
rules:
- from:
  - source:
      namespaces: ["ns-1"]
  to:
  - operation:
      methods: ["GET"]
- when:
  - key: "destination.port"
    values: ["80"]"#,
    ));
    expect(
        &p,
        &[
            ("ns-1 on any port", tcp(9000).peer("ns-1", "a"), DENIED),
            ("ns-2 on 9000", tcp(9000).peer("ns-2", "a"), ALLOWED),
            ("anyone on 80", tcp(80), DENIED),
            ("plain on 9000", tcp(9000), ALLOWED),
            (
                "HTTP POST from ns-1",
                req("POST", "/").peer("ns-1", "a"),
                ALLOWED,
            ),
        ],
    );
    let headers = plan(&ap(
        "deny-header",
        "action: DENY\nrules:\n- when:\n  - key: \"request.headers[:method]\"\n    values: [\"GET\"]",
    ));
    expect(&headers, &[("TCP", tcp(9000), DENIED)]);
}

// === conditions ===

/// Conditions reference: `request.headers[...]` values (exact, prefix,
/// suffix, `*` presence) and notValues; header names are
/// case-insensitive.
#[test]
fn when_request_headers() {
    let p = plan(&ap(
        "headers",
        r#"rules:
- when:
  - key: request.headers[X-Token]
    values: ["admin", "user-*", "*-svc"]
    notValues: ["user-blocked"]
  - key: request.headers[User-Agent]
    values: ["*"]"#,
    ));
    let ua = |r: Req| r.header("user-agent", "curl/8");
    expect(
        &p,
        &[
            ("exact", ua(get("/").header("x-token", "admin")), ALLOWED),
            (
                "exact is case-sensitive",
                ua(get("/").header("x-token", "Admin")),
                DENIED,
            ),
            ("prefix", ua(get("/").header("x-token", "user-1")), ALLOWED),
            (
                "suffix",
                ua(get("/").header("x-token", "billing-svc")),
                ALLOWED,
            ),
            (
                "notValues",
                ua(get("/").header("x-token", "user-blocked")),
                DENIED,
            ),
            ("other", ua(get("/").header("x-token", "guest")), DENIED),
            ("absent", ua(get("/")), DENIED),
            ("no user agent", get("/").header("x-token", "admin"), DENIED),
        ],
    );
    let not_only = plan(&ap(
        "not-only",
        "rules:\n- when:\n  - key: request.headers[x-env]\n    notValues: [\"prod\"]",
    ));
    expect(
        &not_only,
        &[
            ("prod", get("/").header("x-env", "prod"), DENIED),
            ("dev", get("/").header("x-env", "dev"), ALLOWED),
            ("absent", get("/"), ALLOWED),
        ],
    );
}

/// Conditions reference: `source.ip`, `remote.ip`, `destination.ip`,
/// `destination.port`, `connection.sni`, `source.namespace`,
/// `source.principal`, `source.serviceAccount`.
#[test]
fn when_connection_attributes() {
    let p = plan(&ap(
        "conn",
        r#"rules:
- when:
  - key: source.ip
    values: ["10.0.0.0/8"]
    notValues: ["10.9.0.0/16"]
  - key: destination.port
    values: ["8000", "8443"]
  - key: connection.sni
    values: ["*.example.com"]
  - key: destination.ip
    values: ["10.0.0.99"]"#,
    ));
    let ok = || get("/").sni("api.example.com");
    expect(
        &p,
        &[
            ("all", ok(), ALLOWED),
            ("source outside", ok().source("192.168.0.1"), DENIED),
            ("source in notValues", ok().source("10.9.1.1"), DENIED),
            ("port 8443", ok().port(8443), ALLOWED),
            ("port 9000", ok().port(9000), DENIED),
            ("another SNI", ok().sni("example.org"), DENIED),
            ("no SNI", get("/"), DENIED),
            ("another destination", ok().dest("10.0.0.98"), DENIED),
            ("TCP with all", tcp(8000).sni("db.example.com"), ALLOWED),
        ],
    );
    let ids = plan(&ap(
        "ids",
        r#"rules:
- when:
  - key: source.namespace
    values: ["foo"]
  - key: source.principal
    notValues: ["cluster.local/ns/foo/sa/blocked"]
  - key: remote.ip
    values: ["203.0.113.0/24"]"#,
    ));
    expect(
        &ids,
        &[
            (
                "foo/a",
                get("/").peer("foo", "a").remote("203.0.113.9"),
                ALLOWED,
            ),
            (
                "foo/blocked",
                get("/").peer("foo", "blocked").remote("203.0.113.9"),
                DENIED,
            ),
            (
                "bar/a",
                get("/").peer("bar", "a").remote("203.0.113.9"),
                DENIED,
            ),
            (
                "foo/a, another client",
                get("/").peer("foo", "a").remote("198.51.100.1"),
                DENIED,
            ),
        ],
    );
    let sa = plan(&ap(
        "sa-cond",
        "rules:\n- when:\n  - key: source.serviceAccount\n    values: [\"bar/curl\"]",
    ));
    expect(
        &sa,
        &[
            ("bar/curl", get("/").peer("bar", "curl"), ALLOWED),
            ("foo/curl", get("/").peer("foo", "curl"), DENIED),
        ],
    );
}

/// Task "JWT token": `requestPrincipals: ["*"]` requires a valid token
/// (`<iss>/<sub>`); `when request.auth.claims[groups]` with a list claim
/// matches when the list holds a value; `request.auth.principal`.
#[test]
fn jwt_request_principals_and_claims() {
    let p = plan(&ap(
        "require-jwt",
        r#"action: ALLOW
rules:
- from:
  - source:
      requestPrincipals: ["testing@secure.istio.io/testing@secure.istio.io"]
  when:
  - key: request.auth.claims[groups]
    values: ["group1"]"#,
    ));
    let token = |groups: serde_json::Value| {
        get("/headers").jwt(
            "testing@secure.istio.io",
            "testing@secure.istio.io",
            serde_json::json!({ "groups": groups }),
        )
    };
    expect(
        &p,
        &[
            (
                "groups [group1, group2]",
                token(serde_json::json!(["group1", "group2"])),
                ALLOWED,
            ),
            (
                "groups \"group1\" (a string)",
                token(serde_json::json!("group1")),
                ALLOWED,
            ),
            (
                "groups [group2]",
                token(serde_json::json!(["group2"])),
                DENIED,
            ),
            ("no groups claim", token(serde_json::Value::Null), DENIED),
            ("no token", get("/headers"), DENIED),
            (
                "another subject",
                get("/headers").jwt(
                    "testing@secure.istio.io",
                    "someone",
                    serde_json::json!({ "groups": ["group1"] }),
                ),
                DENIED,
            ),
        ],
    );
    let any = plan(&ap(
        "any-token",
        "rules:\n- from:\n  - source:\n      requestPrincipals: [\"*\"]",
    ));
    expect(
        &any,
        &[
            (
                "a token",
                get("/").jwt("iss", "sub", serde_json::json!({})),
                ALLOWED,
            ),
            ("no token", get("/"), DENIED),
            ("TCP (HTTP-only field, ALLOW)", tcp(9000), DENIED),
        ],
    );
    let when = plan(&ap(
        "principal-cond",
        r#"rules:
- when:
  - key: request.auth.principal
    values: ["https://issuer.example/*"]
  - key: request.auth.audiences
    values: ["api"]
  - key: request.auth.claims[nested][role]
    values: ["admin"]"#,
    ));
    let t = |iss: &str, claims: serde_json::Value| get("/").jwt(iss, "u1", claims);
    expect(
        &when,
        &[
            (
                "all",
                t(
                    "https://issuer.example",
                    serde_json::json!({"aud": ["web", "api"], "nested": {"role": "admin"}}),
                ),
                ALLOWED,
            ),
            (
                "aud as a string",
                t(
                    "https://issuer.example",
                    serde_json::json!({"aud": "api", "nested": {"role": "admin"}}),
                ),
                ALLOWED,
            ),
            (
                "another issuer",
                t(
                    "https://other.example",
                    serde_json::json!({"aud": "api", "nested": {"role": "admin"}}),
                ),
                DENIED,
            ),
            (
                "another audience",
                t(
                    "https://issuer.example",
                    serde_json::json!({"aud": "web", "nested": {"role": "admin"}}),
                ),
                DENIED,
            ),
            (
                "nested claim missing",
                t("https://issuer.example", serde_json::json!({"aud": "api"})),
                DENIED,
            ),
        ],
    );
}

/// Reference, Dry run (annotation `istio.io/dry-run: "true"`): the policy
/// is evaluated in shadow only ("to dry-run the policy without actually
/// enforcing it"; builder testdata `http/dry-run-allow` compiles it to
/// `shadowRules` only). meshgate must either leave decisions unchanged or
/// refuse the configuration naming the annotation; enforcing it is not
/// what the user asked.
#[test]
fn a_dry_run_policy_is_not_enforced() {
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: dry-run-example
  namespace: foo
  annotations:
    "istio.io/dry-run": "true"
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#;
    let c = compiled_as(yaml, &bootstrap());
    let errors = error_lines(&c);
    if errors.iter().any(|e| e.contains("istio.io/dry-run")) {
        return;
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let v = decide(&c.plan.authz, &get("/headers"));
    assert!(
        v.allowed,
        "a dry-run DENY policy denied a request (Istio only logs it): {v:?}"
    );
}

// === compile errors (Istio's validation) ===

#[test]
fn custom_is_refused() {
    let yaml = ap(
        "ext-authz",
        "action: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- to:\n  - operation:\n      paths: [\"/headers\"]",
    );
    assert_error(&yaml, "ext-authz", "spec.action", "CUSTOM");
}

/// validation.go: "DENY action without `rules` is meaningless".
#[test]
fn deny_without_rules_is_refused() {
    assert_error(
        &ap("deny-nothing", "action: DENY"),
        "deny-nothing",
        "spec.rules",
        "DENY",
    );
}

/// validation.go: "`from.source` must not be empty", "`to.operation` must
/// not be empty", "`from` must not be empty" (a `from: []` list), "`to`
/// must not be empty".
#[test]
fn empty_sources_and_operations_are_refused() {
    assert_error(
        &ap("empty-source", "rules:\n- from:\n  - source: {}"),
        "empty-source",
        "spec.rules[0].from[0].source",
        "empty",
    );
    assert_error(
        &ap("empty-op", "rules:\n- to:\n  - operation: {}"),
        "empty-op",
        "spec.rules[0].to[0].operation",
        "empty",
    );
    assert_error(
        &ap("nil-source", "rules:\n- from:\n  - {}"),
        "nil-source",
        "spec.rules[0].from[0].source",
        "",
    );
}

/// validation.go: `rule.From != nil && len(rule.From) == 0` → "`from` must
/// not be empty" (and the same for `to`). An ALLOW rule `{from: []}`
/// accepted as "any source" would allow everything.
#[test]
fn an_empty_from_or_to_list_is_refused() {
    assert_error(
        &ap("empty-from", "rules:\n- from: []"),
        "empty-from",
        "spec.rules[0].from",
        "empty",
    );
    assert_error(
        &ap("empty-to", "rules:\n- to: []"),
        "empty-to",
        "spec.rules[0].to",
        "empty",
    );
}

/// security.go `ValidateAttribute`: unknown keys, keys replaced by other
/// fields, and bracketed keys without a name are refused.
#[test]
fn bad_condition_keys_are_refused() {
    for (key, reason) in [
        ("request.unknown", "unknown"),
        ("destination.labels[version]", ""),
        ("destination.namespace", ""),
        ("destination.name", ""),
        ("request.headers", ""),
        ("request.headers[]", ""),
        ("request.auth.claims", ""),
    ] {
        let yaml = ap(
            "bad-key",
            &format!("rules:\n- when:\n  - key: {key:?}\n    values: [\"x\"]"),
        );
        assert_error(&yaml, "bad-key", "spec.rules[0].when[0]", reason);
    }
    let no_values = ap("no-values", "rules:\n- when:\n  - key: request.headers[x]");
    assert_error(&no_values, "no-values", "spec.rules[0].when[0]", "values");
}

/// security.go `ValidateIPs`, `ValidatePorts`, `CheckEmptyValues`.
#[test]
fn bad_values_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "from:\n  - source:\n      ipBlocks: [\"10.0.0.0/33\"]",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "",
        ),
        (
            "from:\n  - source:\n      notIpBlocks: [\"not-an-ip\"]",
            "spec.rules[0].from[0].source.notIpBlocks[0]",
            "",
        ),
        (
            "from:\n  - source:\n      remoteIpBlocks: [\"300.1.1.1\"]",
            "spec.rules[0].from[0].source.remoteIpBlocks[0]",
            "",
        ),
        (
            "when:\n  - key: source.ip\n    values: [\"10.0.0.0/x\"]",
            "spec.rules[0].when[0]",
            "",
        ),
        (
            "to:\n  - operation:\n      ports: [\"http\"]",
            "spec.rules[0].to[0].operation.ports[0]",
            "port",
        ),
        (
            "to:\n  - operation:\n      notPorts: [\"70000\"]",
            "spec.rules[0].to[0].operation.notPorts[0]",
            "port",
        ),
        (
            "when:\n  - key: destination.port\n    values: [\"-1\"]",
            "spec.rules[0].when[0]",
            "port",
        ),
        (
            "from:\n  - source:\n      principals: [\"\"]",
            "spec.rules[0].from[0].source.principals[0]",
            "empty",
        ),
        (
            "to:\n  - operation:\n      methods: [\"GET\", \"\"]",
            "spec.rules[0].to[0].operation.methods[1]",
            "empty",
        ),
        (
            "from:\n  - source:\n      serviceAccounts: [\"foo/*\"]",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcard",
        ),
        (
            "from:\n  - source:\n      serviceAccounts: [\"a/b/c\"]",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "",
        ),
    ];
    for (rule_yaml, field, reason) in cases {
        let yaml = ap("bad-value", &format!("rules:\n- {rule_yaml}"));
        assert_error(&yaml, "bad-value", field, reason);
    }
}

/// validation.go: "cannot set serviceAccounts with namespaces or
/// principals".
#[test]
fn service_accounts_with_namespaces_or_principals_are_refused() {
    for other in ["namespaces: [\"foo\"]", "notPrincipals: [\"x\"]"] {
        let yaml = ap(
            "sa-and-ns",
            &format!(
                "rules:\n- from:\n  - source:\n      serviceAccounts: [\"sleep\"]\n      {other}"
            ),
        );
        assert_error(
            &yaml,
            "sa-and-ns",
            "spec.rules[0].from[0].source",
            "serviceAccounts",
        );
    }
}

/// validation.go: `provider` with a non-CUSTOM action.
#[test]
fn a_provider_without_custom_is_refused() {
    let yaml = ap(
        "provider",
        "action: DENY\nprovider:\n  name: x\nrules:\n- {}",
    );
    assert_error(&yaml, "provider", "spec.provider", "provider");
}

/// validation.go warns: "configured AuthorizationPolicy will deny all
/// traffic to TCP ports under its scope due to the use of only HTTP
/// attributes in a DENY rule; it is recommended to explicitly specify the
/// port".
#[test]
fn a_deny_rule_with_only_http_attributes_is_warned() {
    let yaml = ap(
        "deny-get",
        "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(error_lines(&c).is_empty());
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/deny-get") && w.contains("TCP")),
        "no warning that the rule denies every TCP connection: {:?}",
        c.plan.warnings
    );
    // With a port, no such warning.
    let scoped = ap(
        "deny-get",
        "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]\n      ports: [\"8000\"]",
    );
    let c = compiled_as(&scoped, &bootstrap());
    assert!(
        !c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/deny-get") && w.contains("deny all")),
        "{:?}",
        c.plan.warnings
    );
}

// === which policies apply ===

/// Reference: "metadata/namespace tells which namespace the policy
/// applies. If set to root namespace, the policy applies to all
/// namespaces in a mesh."
#[test]
fn namespace_and_root_namespace_scope() {
    let other = ap_in("bar", "allow-nothing", "");
    let c = compiled_as(&other, &bootstrap());
    assert!(error_lines(&c).is_empty());
    assert!(
        c.plan.authz.is_empty(),
        "another namespace's policy applies"
    );
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("bar/allow-nothing")),
        "the policy left out is named: {:?}",
        c.plan.warnings
    );
    let root = ap_in("istio-system", "allow-nothing", "");
    let p = plan(&root);
    assert_eq!(p.allow.len(), 1, "the root namespace's policy applies");
    assert_eq!(&*p.allow[0].name, "istio-system/allow-nothing");
    expect(&p, &[("GET /", get("/"), DENIED)]);
    // Another root namespace.
    let b = Bootstrap {
        root_namespace: "mesh-root".into(),
        ..bootstrap()
    };
    assert!(plan_as(&root, &b).is_empty());
    assert_eq!(plan_as(&ap_in("mesh-root", "x", ""), &b).allow.len(), 1);
}

/// Reference: "applies to workloads containing label `app: httpbin`";
/// "label `version: v1` in all namespaces" (root namespace with a
/// selector).
#[test]
fn selectors_against_the_workload_labels() {
    let selecting = |ns: &str, labels: &str| {
        ap_in(
            ns,
            "allow-nothing",
            &format!("selector:\n  matchLabels:\n    {labels}"),
        )
    };
    assert_eq!(plan(&selecting("foo", "app: httpbin")).allow.len(), 1);
    assert_eq!(
        plan(&selecting("foo", "{app: httpbin, version: v1}"))
            .allow
            .len(),
        1
    );
    assert!(plan(&selecting("foo", "app: productpage")).is_empty());
    assert!(plan(&selecting("foo", "{app: httpbin, version: v2}")).is_empty());
    assert_eq!(
        plan(&selecting("istio-system", "version: v1")).allow.len(),
        1
    );
    assert!(plan(&selecting("istio-system", "version: v2")).is_empty());
    assert!(plan(&selecting("bar", "app: httpbin")).is_empty());
}

/// `targetRefs` attach a policy to Gateway API gateways and waypoints, not
/// to a sidecar: not applied, and said so.
#[test]
fn target_refs_are_not_applied() {
    let yaml = ap(
        "waypoint-only",
        "targetRefs:\n- kind: Gateway\n  group: gateway.networking.k8s.io\n  name: waypoint\nrules:\n- {}\naction: DENY",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(error_lines(&c).is_empty(), "{:?}", error_lines(&c));
    assert!(c.plan.authz.is_empty());
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/waypoint-only") && w.contains("targetRef")),
        "{:?}",
        c.plan.warnings
    );
}

/// An error in a policy that does not apply to this proxy is still an
/// error (`validate` checks the whole configuration, as Istio's webhook
/// does for every policy).
#[test]
fn a_policy_for_another_workload_is_still_validated() {
    let yaml = ap(
        "other-workload",
        "selector:\n  matchLabels:\n    app: productpage\naction: DENY\nrules:\n- from:\n  - source:\n      ipBlocks: [\"nope\"]",
    );
    assert_error(
        &yaml,
        "other-workload",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "",
    );
}

/// A CUSTOM policy selecting another workload does not apply to this proxy
/// (reference: "workload `selector` can be used to further restrict where
/// a policy applies"), so it has no external authorizer to miss: this
/// proxy's configuration still loads (a warning may name it), and its
/// decisions are unchanged.
#[test]
fn a_custom_policy_for_another_workload_does_not_stop_this_proxy() {
    let yaml = ap(
        "ext-authz",
        "selector:\n  matchLabels:\n    app: productpage\naction: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- {}",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(
        error_lines(&c).is_empty(),
        "a CUSTOM policy for app: productpage stops the httpbin proxy:\n{}",
        error_lines(&c).join("\n")
    );
    assert!(c.plan.authz.is_empty());
}

/// Task "Explicit deny": `deny-method-get` denies GET unless
/// `x-token: admin`; then `allow-path-ip` allows only GET `/ip` with that
/// token; adding `deny-path-ip` denies `/ip` even with it.
#[test]
fn explicit_deny_task() {
    let deny_get = ap(
        "deny-method-get",
        r#"action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
  when:
  - key: request.headers[x-token]
    notValues: ["admin"]"#,
    );
    let admin = |r: Req| r.header("x-token", "admin");
    expect(
        &plan(&deny_get),
        &[
            ("GET /get", get("/get"), DENIED),
            ("POST /post", req("POST", "/post"), ALLOWED),
            ("GET /get as admin", admin(get("/get")), ALLOWED),
            (
                "GET /get as guest",
                get("/get").header("x-token", "guest"),
                DENIED,
            ),
        ],
    );
    let allow_ip = ap(
        "allow-path-ip",
        r#"action: ALLOW
rules:
- to:
  - operation:
      paths: ["/ip"]"#,
    );
    let with_allow = deny_get.clone() + &allow_ip;
    expect(
        &plan(&with_allow),
        &[
            ("GET /ip as admin", admin(get("/ip")), ALLOWED),
            ("GET /get as admin", admin(get("/get")), DENIED),
            ("GET /ip", get("/ip"), DENIED),
        ],
    );
    let deny_ip = ap(
        "deny-path-ip",
        r#"action: DENY
rules:
- to:
  - operation:
      paths: ["/ip"]"#,
    );
    let all = with_allow + &deny_ip;
    let p = plan(&all);
    expect(&p, &[("GET /ip as admin", admin(get("/ip")), DENIED)]);
    assert_eq!(
        decide(&p, &admin(get("/ip"))).by,
        rule(Action::Deny, "foo/deny-path-ip", 0)
    );
}

/// Task "HTTP traffic" (Bookinfo): `details-viewer` allows GET from the
/// productpage's service account only.
#[test]
fn http_task_details_viewer() {
    let yaml = ap("allow-nothing", "")
        + &ap(
            "details-viewer",
            r#"selector:
  matchLabels:
    app: httpbin
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/foo/sa/bookinfo-productpage"]
  to:
  - operation:
      methods: ["GET"]"#,
        );
    expect(
        &plan(&yaml),
        &[
            (
                "productpage GET",
                get("/details/0").peer("foo", "bookinfo-productpage"),
                ALLOWED,
            ),
            (
                "productpage POST",
                req("POST", "/details/0").peer("foo", "bookinfo-productpage"),
                DENIED,
            ),
            (
                "reviews GET",
                get("/details/0").peer("foo", "bookinfo-reviews"),
                DENIED,
            ),
            ("plain text GET", get("/details/0"), DENIED),
        ],
    );
}

/// Labels unknown (no `--workload-labels`): whether a selecting policy
/// applies cannot be known. Applying an ALLOW policy that selects another
/// workload adds its rules to this proxy's: with `rules: [{}]` it would
/// allow every request this proxy's own ALLOW policy refuses, which Istio
/// never does. Either the configuration is refused naming the selector, or
/// the uncertain ALLOW policy can only deny (fail closed).
#[test]
fn unknown_labels_never_widen_what_allow_policies_allow() {
    let yaml = ap(
        "frontend-only",
        "rules:\n- from:\n  - source:\n      namespaces: [\"frontend\"]",
    ) + &ap(
        "public-allow-all",
        "selector:\n  matchLabels:\n    app: public\nrules:\n- {}",
    );
    let unknown = Bootstrap {
        workload_labels: None,
        ..bootstrap()
    };
    let c = compiled_as(&yaml, &unknown);
    let errors = error_lines(&c);
    if errors.iter().any(|e| e.contains("spec.selector")) {
        return;
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    expect(
        &c.plan.authz,
        &[
            ("frontend", get("/").peer("frontend", "a"), ALLOWED),
            (
                "another namespace, allowed only if this proxy were app: public",
                get("/").peer("evil", "a"),
                DENIED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}

/// Envoy's header matchers see the request's pseudo-headers (`:method`,
/// `:authority`, `:path`), and Istio writes conditions on them (builder
/// testdata `tcp/deny-both-http-tcp`, rule 8:
/// `request.headers[:method]`). A DENY on `:method` must deny.
#[test]
fn when_request_pseudo_headers() {
    let p = plan(&ap(
        "deny-get",
        "action: DENY\nrules:\n- when:\n  - key: \"request.headers[:method]\"\n    values: [\"GET\"]",
    ));
    expect(
        &p,
        &[
            ("GET", get("/"), DENIED),
            ("POST", req("POST", "/"), ALLOWED),
        ],
    );
    let p = plan(&ap(
        "pseudo",
        r#"rules:
- when:
  - key: "request.headers[:authority]"
    values: ["httpbin.foo"]
  - key: "request.headers[:path]"
    values: ["/status/*"]"#,
    ));
    expect(
        &p,
        &[
            ("authority and path", get("/status/200"), ALLOWED),
            ("another path", get("/headers"), DENIED),
            (
                "another authority",
                get("/status/200").host("other.foo"),
                DENIED,
            ),
        ],
    );
}
