//! Actions and their order.

use super::*;

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
