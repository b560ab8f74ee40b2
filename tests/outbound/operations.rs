//! CONNECT, h2, reload, admin, timeouts, loops, ISTIO_MUTUAL, shutdown, prepared destinations.

use super::*;

#[tokio::test]
async fn connect_tunnel_relays_bytes_untouched() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file))
        .replace(
            "    targetPort: 443\n",
            "    targetPort: 443\n  - number: 443\n    name: https\n    protocol: TLS\n",
        )
        .replace(
            &format!("      http: {}\n", up.addr.port()),
            &format!("      http: {p}\n      https: {p}\n", p = up.addr.port()),
        );
    let ca_pem = pki.ca.cert_pem.clone();
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
    })
    .await
    .unwrap();
    // Refused by host policy.
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(b"CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains(" 502 "));
    // Allowed: the app speaks TLS itself through the tunnel.
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let n = s.read(&mut buf).await.unwrap();
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let roots = meshgate::creds::roots_from_pem(ca_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(HOST.try_into().unwrap(), s)
        .await
        .expect("end-to-end TLS through the tunnel");
    let mut tls = tls;
    tls.write_all(
        format!("GET /tunnel HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/tunnel"),
        "{out}"
    );
    assert_eq!(
        up.last().unwrap().sni.as_deref(),
        Some(HOST),
        "the app's own TLS, relayed untouched"
    );
}

#[tokio::test]
async fn h2_upgrade_speaks_http2_to_the_upstream() {
    let pki = pki();
    let leaf = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let mut cfg = StandInConfig::new(&leaf.cert_pem, &leaf.key_pem);
    cfg.h2 = true;
    let up = StandIn::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let tls = format!(
        "{}\n      connectionPool:\n        http:\n          h2UpgradePolicy: UPGRADE",
        simple(&pki.ca_file)
    );
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    for _ in 0..3 {
        let r = p.get(HOST, "/h2").await;
        assert_eq!(r.status, 200, "{}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["http"], "HTTP/2.0");
        assert_eq!(v["tls"]["alpn"], "h2");
    }
    assert_eq!(up.handshakes(), 1, "one multiplexed HTTP/2 connection");
}

#[tokio::test]
async fn reload_keeps_the_last_good_config() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    write(
        p.dir.path(),
        "config.yaml",
        &yaml.replace("mode: SIMPLE", "mode: SIMPEL"),
    );
    let err = p.proxy.reload().await.unwrap_err().to_string();
    assert!(
        err.contains("config.yaml")
            && err.contains("DestinationRule/default/external")
            && err.contains("mode"),
        "{err}"
    );
    assert_eq!(
        p.get(HOST, "/").await.status,
        200,
        "still serving the last good config"
    );
    assert_eq!(
        p.metric("meshgate_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    write(
        p.dir.path(),
        "config.yaml",
        &yaml.replace(&format!("http: {}", up.addr.port()), "http: 1"),
    );
    p.proxy.reload().await.unwrap();
    assert_eq!(
        p.get(HOST, "/").await.status,
        503,
        "the new config is in force"
    );
}

#[tokio::test]
async fn admin_config_dump_shows_the_plan_and_no_key_material() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let (cert, key) = pki
        .ca
        .issue(&LeafSpec::client("frontend"))
        .write(pki.dir.path(), "client")
        .unwrap();
    let tls = format!(
        "        mode: MUTUAL\n        caCertificates: {}\n        clientCertificate: {}\n        privateKey: {}",
        pki.ca_file.display(),
        cert.display(),
        key.display()
    );
    let key_pem = std::fs::read_to_string(&key).unwrap();
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = proxy(pki, &yaml).await;
    let dump = fetch(p.proxy.admin, "GET", "/config_dump", Some("localhost"))
        .await
        .unwrap();
    assert_eq!(dump.status, 200);
    assert!(
        dump.body.contains(HOST)
            && dump.body.contains("MUTUAL")
            && dump.body.contains("CN=frontend"),
        "{}",
        dump.body
    );
    assert!(!dump.body.contains("PRIVATE KEY"));
    let key_body: String = key_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !dump.body.contains(&key_body[..40]),
        "no key bytes in config_dump"
    );
    let ready = fetch(p.proxy.ready, "GET", "/healthz/ready", Some("localhost"))
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
}

#[tokio::test]
async fn insecure_skip_verify_is_honoured_when_configured() {
    let pki = pki();
    // A certificate for another name from a CA the system roots do not
    // hold: only insecureSkipVerify lets this through. (With a CA or SANs
    // given too, Istio's validation refuses the rule.)
    let up = upstream(&pki, LeafSpec::server(&["elsewhere.test"])).await;
    let tls = "        mode: SIMPLE\n        insecureSkipVerify: true".to_string();
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = proxy(pki, &yaml).await;
    assert!(
        p.proxy
            .state
            .snapshot()
            .plan
            .warnings
            .iter()
            .any(|w| w.contains("insecureSkipVerify")),
        "a warning at load"
    );
    assert_eq!(p.get(HOST, "/").await.status, 200);
}

#[tokio::test]
async fn idle_and_slow_downstream_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.request_header_timeout = std::time::Duration::from_millis(300);
        b.idle_timeout = std::time::Duration::from_millis(1500);
    })
    .await
    .unwrap();
    // Half a request head, then nothing: closed after the deadline.
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: ").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        r.is_ok(),
        "a stalled request head is dropped after the header timeout"
    );
    // A keep-alive connection left idle after a request: the head timeout
    // starts with a head's first byte (Envoy's `request_headers_timeout`),
    // so it is closed at the idle timeout, not at the head timeout.
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut first = vec![0u8; 4096];
    let n = s.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    let idle_from = std::time::Instant::now();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
    assert!(
        r.is_ok(),
        "an idle keep-alive connection is closed after the idle timeout"
    );
    assert!(
        idle_from.elapsed() >= std::time::Duration::from_millis(1300),
        "not at the head timeout: {:?}",
        idle_from.elapsed()
    );
}

#[tokio::test]
async fn a_request_for_the_proxy_itself_does_not_loop() {
    let pki = pki();
    let yaml = egress_yaml(1, &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let own = format!("127.0.0.1:{}", p.proxy.outbound.port());
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), p.get(&own, "/"))
        .await
        .expect("answers at once instead of forwarding to itself");
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-meshgate-error"], "loop_detected");
}

/// ISTIO_MUTUAL: the workload's identity from Istio's file-mounted layout
/// (made with the mesh CA), the server checked to be a workload of the trust
/// domain.
#[tokio::test]
async fn istio_mutual_uses_the_mesh_identity_and_checks_the_trust_domain() {
    use meshgate::ca::{MeshCa, spiffe_id};
    let dir = tempdir();
    let ca = MeshCa::init(
        &dir.path().join("ca"),
        "cluster.local",
        true,
        std::time::Duration::from_secs(86400),
    )
    .unwrap();
    let day = std::time::Duration::from_secs(86400);
    ca.issue(&spiffe_id("cluster.local", "default", "frontend"), &[], day)
        .unwrap()
        .write(&dir.path().join("identity"))
        .unwrap();
    let upstream = |id: &str| {
        let issued = ca.issue(id, &[], day).unwrap();
        let mut cfg = StandInConfig::new(&issued.cert_chain_pem, &issued.key_pem);
        cfg.client_ca_pem = Some(issued.root_pem.clone());
        cfg
    };
    let good = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        upstream(&spiffe_id("cluster.local", "default", "backend")),
    )
    .await
    .unwrap();
    let foreign = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        upstream("spiffe://other.domain/ns/default/sa/backend"),
    )
    .await
    .unwrap();
    let yaml = |port: u16| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend}}
spec:
  hosts: [backend.default.svc.cluster.local]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend}}
spec:
  host: backend.default.svc.cluster.local
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
"#
        )
    };
    let identity = dir.path().join("identity");
    let start = |y: String| {
        let identity = identity.clone();
        async move {
            TestProxy::start(tempdir(), &y, move |b| b.identity_dir = Some(identity))
                .await
                .unwrap()
        }
    };
    let p = start(yaml(good.addr.port())).await;
    let r = p.get("backend.default.svc.cluster.local", "/mesh").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = good.last().unwrap();
    assert!(
        seen.client_cert.is_some(),
        "the mesh identity was presented"
    );
    let p = start(yaml(foreign.addr.port())).await;
    let r = p.get("backend.default.svc.cluster.local", "/mesh").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.headers["x-meshgate-error"], "san_mismatch",
        "another trust domain is refused"
    );
    // Without an identity the configuration is refused with what to do.
    let err = TestProxy::start(tempdir(), &yaml(good.addr.port()), |_| {})
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("--identity-dir"), "{err}");
}

#[tokio::test]
async fn shutdown_stops_the_workers_and_frees_the_ports() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 2)
        .await
        .unwrap();
    assert_eq!(p.get(HOST, "/").await.status, 200);
    let addr = p.proxy.outbound;
    p.proxy.shutdown();
    let started = std::time::Instant::now();
    p.proxy.stopped().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "idle workers stop at once, took {:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no worker accepts on {addr} after shutdown"
    );
}

#[tokio::test]
async fn a_reload_moves_a_host_to_its_new_destination() {
    // One worker: the second request meets the destination the first one
    // prepared, unless the reload retired it.
    let pki = pki();
    let a = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let b = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(a.addr.port(), &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(p.get(HOST, "/").await.status, 200);
    }
    assert_eq!((a.handshakes(), b.handshakes()), (1, 0));
    let moved = egress_yaml(b.addr.port(), &simple(&p.path("ca.crt")));
    std::fs::write(p.config_path(), moved).unwrap();
    p.proxy.reload().await.expect("the new config loads");
    for _ in 0..3 {
        assert_eq!(p.get(HOST, "/").await.status, 200);
    }
    assert_eq!((a.handshakes(), b.handshakes()), (1, 1), "after the reload");
}

#[tokio::test]
async fn weighted_mesh_routes_spread_requests_on_one_worker() {
    let pki = pki();
    let a = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let b = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let se = |name: &str, port: u16| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {name}\nspec:\n  hosts: [{name}.test]\n  ports:\n  - {{number: 80, name: http, protocol: HTTP, targetPort: 443}}\n  resolution: STATIC\n  endpoints:\n  - address: 127.0.0.1\n    ports: {{http: {port}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\nspec:\n  host: {name}.test\n  trafficPolicy:\n    tls: {{mode: SIMPLE, caCertificates: {ca}}}\n---\n",
            ca = pki.ca_file.display()
        )
    };
    let yaml = egress_yaml(a.addr.port(), &simple(&pki.ca_file))
        + "---\n"
        + &se("a", a.addr.port())
        + &se("b", b.addr.port())
        + &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: split\nspec:\n  hosts: [{HOST}]\n  http:\n  - route:\n    - destination: {{host: a.test}}\n      weight: 50\n    - destination: {{host: b.test}}\n      weight: 50\n"
        );
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    for i in 0..20 {
        let r = p.get(HOST, &format!("/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let (na, nb) = (a.requests(), b.requests());
    assert_eq!(na + nb, 20);
    assert!(
        na >= 4 && nb >= 4,
        "a 50/50 split stays a split: {na} / {nb}"
    );
}
