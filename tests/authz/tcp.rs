//! TCP traffic (Istio's "TCP traffic" task): a denied connection is closed
//! before any upstream connection (the app never sees it); an ALLOW rule
//! that names HTTP-only fields never matches TCP; a DENY rule with HTTP
//! fields and `ports` denies the whole port.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

/// A Sidecar `default/default` with TCP ingress ports 9000 and 9001, both
/// to `app`.
fn sidecar(app: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  ingress:
  - port: {{number: 9000, protocol: TCP, name: tcp-a}}
    defaultEndpoint: 127.0.0.1:{port}
  - port: {{number: 9001, protocol: TCP, name: tcp-b}}
    defaultEndpoint: 127.0.0.1:{port}
"#,
        port = app.port()
    )
}

/// A Gateway `default/gw` with a TCP server on config port 9000 and a
/// VirtualService TCP route to `app`.
fn tcp_gateway(app: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 9000, name: tcp, protocol: TCP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp, namespace: default}}
spec:
  hosts: ["*"]
  gateways: [gw]
  tcp:
  - match: [{{port: 9000}}]
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
"#,
        port = app.port()
    )
}

/// Sends `ping` and half-closes; what came back before the proxy closed
/// (the echo, or nothing when the connection was refused).
async fn exchange(addr: SocketAddr) -> Vec<u8> {
    let run = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The write may fail when the proxy already closed: that is a
        // refusal too.
        if s.write_all(b"ping").await.is_err() || s.shutdown().await.is_err() {
            return Vec::new();
        }
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        got
    };
    tokio::time::timeout(DEADLINE, run)
        .await
        .expect("the connection ends in time")
}

/// Task "TCP traffic": a DENY with `methods` and `ports: [9000]` closes
/// every connection to 9000; 9001 is served.
#[tokio::test]
async fn deny_on_a_port_closes_its_connections() {
    let app = TcpApp::start().await;
    let yaml = sidecar(app.addr)
        + &policy(
            "tcp-deny",
            "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]\n      ports: [\"9000\"]",
        );
    let p = start(&yaml, &[9000, 9001], |_| {}).await;
    let ports = p.proxy.inbound();
    assert_eq!(exchange(ports[&9000]).await, b"", "9000 is closed");
    assert_eq!(app.accepted(), 0, "the app never saw the denied connection");
    assert_eq!(exchange(ports[&9001]).await, b"ping", "9001 is served");
    assert_eq!(app.accepted(), 1);
    assert_eq!(
        wait_metric(&p, &decisions("deny", "default/tcp-deny"), 1.0).await,
        1.0,
        "{}",
        p.metrics().await
    );
}

/// Task "TCP traffic": an ALLOW rule with `methods` (HTTP-only) never
/// matches a TCP connection, so with it as the only ALLOW policy every
/// connection is denied; an ALLOW by port allows its port only.
#[tokio::test]
async fn allow_with_http_only_fields_denies_tcp() {
    let app = TcpApp::start().await;
    let yaml = sidecar(app.addr)
        + &policy(
            "tcp-policy",
            "action: ALLOW\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]\n      ports: [\"9000\"]",
        );
    let p = start(&yaml, &[9000, 9001], |_| {}).await;
    let ports = p.proxy.inbound();
    assert_eq!(exchange(ports[&9000]).await, b"");
    assert_eq!(exchange(ports[&9001]).await, b"");
    assert_eq!(app.accepted(), 0);
    assert_eq!(
        wait_metric(&p, &decisions("deny", ""), 2.0).await,
        2.0,
        "{}",
        p.metrics().await
    );

    let yaml = sidecar(app.addr)
        + &policy(
            "tcp-port",
            "action: ALLOW\nrules:\n- to:\n  - operation:\n      ports: [\"9001\"]",
        );
    let p = start(&yaml, &[9000, 9001], |_| {}).await;
    let ports = p.proxy.inbound();
    assert_eq!(exchange(ports[&9000]).await, b"");
    assert_eq!(app.accepted(), 0);
    assert_eq!(exchange(ports[&9001]).await, b"ping");
    assert_eq!(app.accepted(), 1);
    assert_eq!(
        wait_metric(&p, &decisions("allow", "default/tcp-port"), 1.0).await,
        1.0
    );
}

/// The same on a Gateway TCP server: a DENY by port, and an ALLOW by source
/// address.
#[tokio::test]
async fn a_gateway_tcp_server_is_authorized() {
    let app = TcpApp::start().await;
    let deny = tcp_gateway(app.addr)
        + &policy(
            "tcp-deny",
            "action: DENY\nrules:\n- to:\n  - operation:\n      ports: [\"9000\"]",
        );
    let p = start(&deny, &[9000], |_| {}).await;
    assert_eq!(exchange(p.proxy.inbound()[&9000]).await, b"");
    assert_eq!(app.accepted(), 0);

    let allow = tcp_gateway(app.addr)
        + &policy(
            "from-loopback",
            "rules:\n- from:\n  - source:\n      ipBlocks: [\"127.0.0.0/8\"]",
        );
    let p = start(&allow, &[9000], |_| {}).await;
    assert_eq!(exchange(p.proxy.inbound()[&9000]).await, b"ping");
    assert_eq!(app.accepted(), 1);

    let elsewhere = tcp_gateway(app.addr)
        + &policy(
            "from-elsewhere",
            "rules:\n- from:\n  - source:\n      ipBlocks: [\"10.0.0.0/8\"]",
        );
    let p = start(&elsewhere, &[9000], |_| {}).await;
    assert_eq!(exchange(p.proxy.inbound()[&9000]).await, b"");
    assert_eq!(app.accepted(), 1, "no new connection to the app");
}

/// PASSTHROUGH: the decision is made on the ClientHello's SNI
/// (`connection.sni`) before any upstream connection.
#[tokio::test]
async fn passthrough_is_decided_on_the_sni() {
    let app = TcpApp::start().await;
    let yaml = format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 443, name: tls, protocol: TLS}}
    hosts: [a.test, b.test]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: pass, namespace: default}}
spec:
  hosts: [a.test, b.test]
  gateways: [gw]
  tls:
  - match: [{{sniHosts: [a.test, b.test]}}]
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
"#,
        port = app.addr.port()
    ) + &policy(
        "deny-b",
        "action: DENY\nrules:\n- when:\n  - key: connection.sni\n    values: [\"b.test\"]",
    );
    let p = start(&yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];
    let hello = |sni: &str| meshgate::test_util::ClientOpts {
        sni: Some(sni.into()),
        ca_pem: meshgate::devpki::DevCa::new("unused").cert_pem,
        ..Default::default()
    };
    // The app is no TLS server: the handshake fails either way; what
    // matters is whether the app saw the connection.
    let _ = tokio::time::timeout(
        DEADLINE,
        meshgate::test_util::tls_connect(addr, &hello("b.test")),
    )
    .await
    .expect("ends in time");
    assert_eq!(
        app.accepted(),
        0,
        "b.test is denied before any upstream connection"
    );
    let _ = tokio::time::timeout(
        DEADLINE,
        meshgate::test_util::tls_connect(addr, &hello("a.test")),
    )
    .await
    .expect("ends in time");
    assert_eq!(app.accepted(), 1, "a.test is passed through");
    assert_eq!(
        wait_metric(&p, &decisions("deny", "default/deny-b"), 1.0).await,
        1.0
    );
}
