//! TCP (task "TCP traffic").

use super::*;

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
