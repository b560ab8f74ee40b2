//! PASSTHROUGH, handshake deadline, Sidecar ingress, resumption, credentialName Secrets, Upgrade.

use super::*;

// ===================================================================
// 9. PASSTHROUGH
// ===================================================================

/// A raw TCP backend that records every byte until the client closes its
/// side, then answers `reply` and closes.
async fn recorder(reply: &'static [u8]) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        let _ = tx.send(got);
        let _ = s.write_all(reply).await;
        let _ = s.shutdown().await;
    });
    (addr, rx)
}

#[tokio::test]
async fn passthrough_routes_by_sni_end_to_end() {
    const REPLY: &[u8] = b"\x16\x03\x03\x00\x05backend-bytes\x00\xff";
    let backend_ca = DevCa::new("backend CA");
    let leaf = backend_ca.issue(&LeafSpec::server(&["pass.test"]));
    let standin = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    let (raw_addr, raw_rx) = recorder(REPLY).await;
    let dir = tempdir();
    let yaml = gateway(&[server(
        443,
        "TLS",
        &["pass.test", "raw.test"],
        &["mode: PASSTHROUGH".into()],
    )]) + &format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: passthrough
  namespace: default
spec:
  hosts: [pass.test, raw.test]
  gateways: [ingress]
  tls:
  - match:
    - sniHosts: [pass.test]
      port: 443
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {standin}}}}}
  - match:
    - sniHosts: [raw.test]
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {raw}}}}}
"#,
        standin = standin.addr.port(),
        raw = raw_addr.port()
    );
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];

    // The client trusts only the backend's CA: the session is end to end.
    let o = ClientOpts {
        sni: Some("pass.test".into()),
        ca_pem: backend_ca.cert_pem.clone(),
        ..Default::default()
    };
    let tls = tls_connect(addr, &o).await.unwrap();
    assert_eq!(peer_subject(&tls), "CN=pass.test");
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(
        chain[0],
        der_of(&leaf.cert_pem),
        "the backend's own certificate"
    );
    let mut conn = HttpsConn::new(tls, false).await.unwrap();
    let r = conn.get("pass.test", "/through", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], "pass.test", "{}", r.body);
    assert_eq!(
        standin.last().and_then(|s| s.sni).as_deref(),
        Some("pass.test")
    );
    assert_eq!(
        metric_sum(
            &p.metrics().await,
            "meshgate_tls_handshakes_total",
            &["direction=\"inbound\""]
        ),
        0.0,
        "meshgate did not terminate"
    );

    // Byte for byte: a real ClientHello in two pieces, then arbitrary bytes.
    let hello = client_hello("raw.test");
    let trailer: &[u8] = b"\x17\x03\x03\x00\x10after-the-hello\x00\xff\x80";
    let mut sent = Vec::new();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for piece in [&hello[..10], &hello[10..], trailer] {
        s.write_all(piece).await.unwrap();
        sent.extend_from_slice(piece);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), raw_rx)
        .await
        .expect("the backend saw the client close")
        .unwrap();
    assert_eq!(got, sent, "the backend received exactly the client's bytes");
    let back = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("the proxy closes after the backend");
    assert_eq!(
        back, REPLY,
        "the client received exactly the backend's bytes"
    );
}

// ===================================================================
// 10. Handshake deadline, plain text on the TLS port
// ===================================================================

#[tokio::test]
async fn handshake_deadline_disconnects_slow_clients() {
    let ca = DevCa::new("deadline CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |b| {
        b.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = p.proxy.inbound()[&443];
    let hello = client_hello(HOST);
    let cases: [(&str, &[u8]); 3] = [
        ("nothing sent", &[]),
        ("half a ClientHello (20 bytes)", &hello[..20]),
        ("a whole ClientHello, then silence", &hello),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let started = Instant::now();
        read_until_closed(&mut s, Duration::from_secs(3))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 3s"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{what}: closed after {took:?}"
        );
        let n = wait_metric(&p, &failure_key("handshake_timeout"), (i + 1) as f64).await;
        assert_eq!(n, (i + 1) as f64, "{what}");
    }
    // A normal client still gets through.
    let r = https_get(addr, &opts(&ca), HOST, "/", &[]).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn plain_text_on_the_tls_port() {
    let ca = DevCa::new("not-tls CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("closed after the answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("TLS"), "{text}");
    assert_eq!(wait_metric(&p, &failure_key("not_tls"), 1.0).await, 1.0);

    // Not HTTP either: closed without an answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01\x02garbage").await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("closed");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(wait_metric(&p, &failure_key("not_tls"), 2.0).await, 2.0);
}

// ===================================================================
// 11. Sidecar ingress TLS
// ===================================================================

#[tokio::test]
async fn sidecar_ingress_simple_tls_reaches_the_default_endpoint() {
    let ca = DevCa::new("sidecar CA");
    let dir = tempdir();
    let (c, k) = ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir.path(), "srv")
        .unwrap();
    let app = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  ingress:
  - port: {{number: 8443, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{port}
    tls:
      mode: SIMPLE
      serverCertificate: {c}
      privateKey: {k}
"#,
        port = app.port(),
        c = c.display(),
        k = k.display()
    );
    let p = start_ports(dir, &yaml, &[8443], |_| {}).await;
    for h2 in [false, true] {
        let o = ClientOpts { h2, ..opts(&ca) };
        let r = https_get(p.proxy.inbound()[&8443], &o, HOST, "/side?car=1", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        let v = body_json(&r);
        assert_eq!(v["path"], "/side?car=1");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    let m = p.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "meshgate_tls_handshakes_total",
            &["direction=\"inbound\"", "listener=\"127.0.0.1_8443\""]
        ),
        2.0,
        "{m}"
    );
}

// ===================================================================
// 12. Session resumption
// ===================================================================

#[tokio::test]
async fn second_handshake_from_the_same_client_is_resumed() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let ca = DevCa::new("resume CA");
        let dir = tempdir();
        let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let cfg = client_config(&ca.cert_pem, &[version], None);
        let vname = format!("{:?}", version.version);
        for (i, want) in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed]
            .into_iter()
            .enumerate()
        {
            let tls = connect_with(p.proxy.inbound()[&443], cfg.clone(), HOST)
                .await
                .unwrap();
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(want),
                "{vname} handshake #{}",
                i + 1
            );
            // A request, so the client reads its session tickets.
            let mut conn = HttpsConn::new(tls, false).await.unwrap();
            assert_eq!(conn.get(HOST, "/", &[]).await.unwrap().status, 200);
        }
        // The group label is left out of the match: an abbreviated TLS 1.2
        // handshake negotiates no key exchange.
        let version = format!("version=\"{vname}\"");
        let labels = |resumed: &'static str| {
            [
                "direction=\"inbound\"",
                "listener=\"127.0.0.1_443\"",
                resumed,
                version.as_str(),
            ]
        };
        let resumed = wait_sum(&p, &labels("resumed=\"true\""), 1.0).await;
        let m = p.metrics().await;
        assert_eq!(resumed, 1.0, "{vname}\n{m}");
        assert_eq!(
            metric_sum(
                &m,
                "meshgate_tls_handshakes_total",
                &labels("resumed=\"false\"")
            ),
            1.0,
            "{vname}\n{m}"
        );
    }
}

// ===================================================================
// 13. credentialName from in-config Secrets
// ===================================================================

fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: kubernetes.io/tls\ndata:\n"
    );
    for (k, v) in data {
        s.push_str(&format!(
            "  {k}: {}\n",
            base64::engine::general_purpose::STANDARD.encode(v)
        ));
    }
    s
}

#[tokio::test]
async fn credential_name_from_config_secrets() {
    let server_ca = DevCa::new("server CA");
    let client_ca = DevCa::new("client CA");
    let decoy_ca = DevCa::new("decoy CA");
    let srv = server_ca.issue(&LeafSpec::server(&[HOST]));
    let client = client_ca.issue(&LeafSpec::client("client.test"));
    let decoy_client = decoy_ca.issue(&LeafSpec::client("client.test"));
    let id = |l: &Leaf| Some((l.cert_pem.clone(), l.key_pem.clone()));
    struct Case {
        name: &'static str,
        mode: &'static str,
        secrets: String,
        clients: Vec<(&'static str, Identity, Expect)>,
    }
    let cases = [
        Case {
            name: "SIMPLE, tls.crt/tls.key",
            mode: "SIMPLE",
            secrets: secret(
                "gw-cred",
                &[("tls.crt", &srv.cert_pem), ("tls.key", &srv.key_pem)],
            ),
            clients: vec![("no cert", None, Expect::Ok { xfcc: false })],
        },
        Case {
            name: "MUTUAL, ca.crt in the same Secret",
            mode: "MUTUAL",
            secrets: secret(
                "gw-cred",
                &[
                    ("tls.crt", &srv.cert_pem),
                    ("tls.key", &srv.key_pem),
                    ("ca.crt", &client_ca.cert_pem),
                ],
            ),
            clients: vec![
                ("client CA cert", id(&client), Expect::Ok { xfcc: true }),
                ("no cert", None, Expect::Reject("no_client_cert")),
                (
                    "decoy CA cert",
                    id(&decoy_client),
                    Expect::Reject("unknown_ca"),
                ),
            ],
        },
        Case {
            name: "MUTUAL, CA from <name>-cacert (wins over the Secret's own ca.crt)",
            mode: "MUTUAL",
            secrets: secret(
                "gw-cred",
                &[
                    ("tls.crt", &srv.cert_pem),
                    ("tls.key", &srv.key_pem),
                    ("ca.crt", &decoy_ca.cert_pem),
                ],
            ) + &secret("gw-cred-cacert", &[("ca.crt", &client_ca.cert_pem)]),
            clients: vec![
                ("client CA cert", id(&client), Expect::Ok { xfcc: true }),
                (
                    "decoy CA cert",
                    id(&decoy_client),
                    Expect::Reject("unknown_ca"),
                ),
            ],
        },
    ];
    for c in cases {
        let b = backend("app", Duration::ZERO).await;
        let tls = vec![
            format!("mode: {}", c.mode),
            "credentialName: gw-cred".into(),
        ];
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)])
            + &route_all("app", &[HOST], b)
            + &c.secrets;
        let p = start_ports(tempdir(), &yaml, &[443], |_| {}).await;
        for (who, identity, expect) in c.clients {
            let what = format!("{}: {who}", c.name);
            let o = ClientOpts {
                identity,
                ..opts(&server_ca)
            };
            let r = https_get(p.proxy.inbound()[&443], &o, HOST, "/", &[]).await;
            match expect {
                Expect::Ok { xfcc } => {
                    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(r.status, 200, "{what}: {}", r.body);
                    assert_eq!(
                        !seen_header(&body_json(&r), "x-forwarded-client-cert").is_empty(),
                        xfcc,
                        "{what}"
                    );
                }
                Expect::Reject(reason) => {
                    assert!(r.is_err(), "{what}: {r:?}");
                    assert_eq!(
                        wait_metric(&p, &failure_key(reason), 1.0).await,
                        1.0,
                        "{what}: {reason}\n{}",
                        p.metrics().await
                    );
                }
            }
        }
    }
}

// ===================================================================
// 14. WebSocket-style Upgrade
// ===================================================================

/// A raw backend that answers an Upgrade request with 101 and then echoes
/// bytes. Records each request head.
pub(crate) async fn upgrade_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(head) = read_head(&mut s).await else {
                    return;
                };
                seen.lock().unwrap().push(head);
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let ca = DevCa::new("ws CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let (ws, heads) = upgrade_backend().await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("ws", &[HOST], ws);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let mut tls = tls_connect(p.proxy.inbound()[&443], &opts(&ca))
        .await
        .unwrap();
    tls.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut tls))
        .await
        .expect("a response head")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let backend_head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        backend_head.contains("upgrade: websocket"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("connection: upgrade"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{backend_head}"
    );
    for msg in [
        &b"\x81\x05hello"[..],
        b"\x82\x03\x00\x01\x02 and more bytes",
    ] {
        tls.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
            .await
            .expect("echoed bytes arrive after the 101")
            .unwrap();
        assert_eq!(back, msg);
    }
}

/// Servers on one port with different `bind` IPs are separate listeners,
/// each serving its own hosts.
#[tokio::test]
async fn servers_binding_different_ips_on_one_port() {
    let a = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: split}}
spec:
  servers:
  - port: {{number: 8080, name: http-a, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: [a.test]
  - port: {{number: 8080, name: http-b, protocol: HTTP}}
    bind: 127.0.0.2
    hosts: [b.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: both}}
spec:
  hosts: [a.test, b.test]
  gateways: [split]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        a.port()
    );
    let p = TestProxy::start(tempdir(), &yaml, |b| {
        b.port_map.insert(8080, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let listeners = &p.proxy.state.snapshot().plan.inbound.listeners;
    assert_eq!(listeners.len(), 2, "one listener per bind");
    // Each bound address answers for its own host only.
    let first = p.proxy.inbound()[&8080];
    let ip = first.ip().to_string();
    let (own, other) = if ip == "127.0.0.1" {
        ("a.test", "b.test")
    } else {
        ("b.test", "a.test")
    };
    let r = meshgate::standin::fetch(first, "GET", "/", Some(own))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = meshgate::standin::fetch(first, "GET", "/", Some(other))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
}

/// An HTTP2/GRPC server port: the app behind it is spoken to in h2c.
#[tokio::test]
async fn grpc_server_port_speaks_h2c_to_the_app() {
    let app = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: grpc}}
spec:
  servers:
  - port: {{number: 9090, name: grpc, protocol: GRPC}}
    hosts: [grpc.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: [grpc.test]
  gateways: [grpc]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        app.port()
    );
    let p = TestProxy::start(tempdir(), &yaml, |b| {
        b.port_map.insert(9090, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let r = meshgate::standin::fetch(
        p.proxy.inbound()[&9090],
        "GET",
        "/svc/Method",
        Some("grpc.test"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "h2c to the app: {}", r.body);
}
