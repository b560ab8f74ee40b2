//! Conditions.

use super::*;

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
