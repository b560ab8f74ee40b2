//! Operations and actions on a real listener: `hosts` on the authority as
//! sent (case-insensitive, port included), `methods`, `ports` as
//! configured (not the address a test rebinds them to), AUDIT counted
//! without changing the decision.

use meshgate::test_util::{https_get, tempdir};

use crate::support::*;

#[tokio::test]
async fn hosts_match_the_authority_as_sent() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "hosts",
            "rules:\n- to:\n  - operation:\n      hosts: [\"app.test\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let send = |host: &'static str| async move {
        let s = tokio::net::TcpStream::connect(addr).await.unwrap();
        raw_get(s, host, "/h", &[]).await
    };
    let r = send("app.test").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = send("APP.Test").await;
    assert_eq!(r.status, 200, "hosts are case-insensitive: {}", r.body);
    let r = send("app.test:8080").await;
    assert_denied(r.status, &r.body, "a port makes another authority");
}

#[tokio::test]
async fn methods_and_config_ports() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "get-on-8080",
            "rules:\n- to:\n  - operation:\n      methods: [\"GET\", \"HEAD\"]\n      ports: [\"8080\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    assert_ne!(addr.port(), 8080, "the test rebinds the config port");
    let r = plain_get(addr, "/get", &[]).await;
    assert_eq!(r.status, 200, "the config port is matched: {}", r.body);
    let post = meshgate::standin::fetch(addr, "POST", "/post", Some(HOST))
        .await
        .unwrap();
    assert_denied(post.status, &post.body, "POST");
    assert_eq!(app.seen(), vec!["/get"]);
}

/// Reference: "AUDIT policies do not affect whether requests are allowed
/// or denied"; meshgate counts the audited request.
#[tokio::test]
async fn audit_is_counted_and_decides_nothing() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "audit-profile",
            "action: AUDIT\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]\n      paths: [\"/user/profile/*\"]",
        )
        + &policy(
            "deny-admin",
            "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/user/profile/admin\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(addr, "/user/profile/me", &[]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = plain_get(addr, "/user/profile/admin", &[]).await;
    assert_denied(r.status, &r.body, "DENY with AUDIT");
    let r = plain_get(addr, "/other", &[]).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        wait_metric(&p, &decisions("audit", "default/audit-profile"), 2.0).await,
        2.0,
        "{}",
        p.metrics().await
    );
    assert_eq!(
        wait_metric(&p, &decisions("deny", "default/deny-admin"), 1.0).await,
        1.0
    );
    assert_eq!(app.seen(), vec!["/user/profile/me", "/other"]);
}

/// On a sidecar, Istio's `ports` (and `destination.port`) are the
/// workload's port: the one the app serves, which peers dial and the
/// capture sends to 15006. meshgate's mesh listener hands connections made
/// to 15006 itself to `--app-addr`: a policy written for the app's port
/// must mean the same there, so a DENY scoped to the app's port denies.
#[tokio::test]
async fn a_deny_scoped_to_the_apps_port_on_the_mesh_listener() {
    let app = App::start().await;
    let dir = tempdir();
    let pki = MeshPki::new(dir.path());
    let identity = pki.identity_dir.clone();
    let yaml = peer_authentication("STRICT")
        + &policy(
            "deny-app-port",
            &format!(
                "action: DENY\nrules:\n- from:\n  - source:\n      namespaces: [\"b\"]\n  to:\n  - operation:\n      ports: [\"{}\"]",
                app.addr.port()
            ),
        );
    let app_addr = app.addr;
    let p = start_in(dir, &yaml, &[], move |b| {
        b.identity_dir = Some(identity);
        b.app_addr = Some(app_addr);
        b.mesh_inbound_addr = "127.0.0.1:0".parse().unwrap();
    })
    .await;
    let addr = p.proxy.inbound()[&15006];
    let r = https_get(
        addr,
        &pki.client(Some(&pki.two), false),
        WORKLOAD_DNS,
        "/two",
        &[],
    )
    .await
    .unwrap();
    assert_denied(
        r.status,
        &r.body,
        "two (namespace b) to the app's port, a DENY scoped to that port",
    );
    let r = https_get(
        addr,
        &pki.client(Some(&pki.one), false),
        WORKLOAD_DNS,
        "/one",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Task "Dry run": a DENY policy annotated `istio.io/dry-run: "true"` is
/// evaluated and counted, never enforced.
#[tokio::test]
async fn a_dry_run_policy_is_counted_not_enforced() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-path-headers
  namespace: default
  annotations:
    "istio.io/dry-run": "true"
spec:
  action: DENY
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#;
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for path in ["/headers", "/ip"] {
        let r = plain_get(addr, path, &[]).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
    }
    assert_eq!(app.seen(), vec!["/headers", "/ip"]);
    assert_eq!(
        wait_metric(
            &p,
            &decisions("dry_run_deny", "default/deny-path-headers"),
            1.0
        )
        .await,
        1.0,
        "{}",
        p.metrics().await
    );
    assert_eq!(
        wait_metric(&p, &decisions("deny", "default/deny-path-headers"), 0.0).await,
        0.0
    );
}

/// A condition on a pseudo-header (`request.headers[:method]`, as in
/// Istio's builder testdata) is matched on a real request.
#[tokio::test]
async fn a_deny_on_the_method_pseudo_header() {
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "deny-get",
            "action: DENY\nrules:\n- when:\n  - key: \"request.headers[:method]\"\n    values: [\"GET\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let r = plain_get(addr, "/get", &[]).await;
    assert_denied(r.status, &r.body, "GET");
    let post = meshgate::standin::fetch(addr, "POST", "/post", Some(HOST))
        .await
        .unwrap();
    assert_eq!(post.status, 200, "{}", post.body);
    assert_eq!(app.seen(), vec!["/post"]);
}

/// An upgrade request (WebSocket) is authorized like any request, before
/// any upgrade: a denied one gets 403 and never reaches the app.
#[tokio::test]
async fn an_upgrade_request_is_authorized_first() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = App::start().await;
    let yaml = plain_gateway(app.addr)
        + &policy(
            "deny-ws",
            "action: DENY\nrules:\n- to:\n  - operation:\n      paths: [\"/ws*\"]",
        );
    let p = start(&yaml, &[8080], |_| {}).await;
    let mut s = tokio::net::TcpStream::connect(p.proxy.inbound()[&8080])
        .await
        .unwrap();
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).contains(RBAC_BODY) {
        match tokio::time::timeout(DEADLINE, s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.ends_with(RBAC_BODY), "{text}");
    assert!(app.seen().is_empty());
}
