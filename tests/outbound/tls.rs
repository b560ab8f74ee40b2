//! Verified TLS origination: reuse, resumption, failures by reason, SANs, mutual TLS.

use super::*;

#[tokio::test]
async fn simple_with_ca_file_originates_verified_tls() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/v1/items?x=1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], HOST, "automatic SNI from the Host header");
    assert_eq!(v["path"], "/v1/items?x=1");
    assert_eq!(v["host"], HOST);
    assert_eq!(v["tls"]["version"], "TLSv1_3");
    assert_eq!(
        v["tls"]["group"], "X25519MLKEM768",
        "post-quantum hybrid preferred"
    );
    let m = p.metrics().await;
    assert!(m.contains("meshgate_tls_handshakes_total{direction=\"outbound\",listener=\"outbound\",version=\"TLSv1_3\",group=\"X25519MLKEM768\",resumed=\"false\"} 1"), "{m}");
    // CPU and handshake cost are visible in production too.
    let cpu = meshgate::test_util::metric_value(&m, "process_cpu_seconds_total");
    assert!(cpu > 0.0, "process CPU exported: {m}");
    assert!(
        m.contains("meshgate_tls_handshake_duration_seconds_count{direction=\"outbound\"} 1"),
        "{m}"
    );
}

#[tokio::test]
async fn connection_reuse_one_handshake_for_many_requests() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    // One worker: every request shares its pool.
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    for i in 0..20 {
        let r = p.get(HOST, &format!("/n/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        up.handshakes(),
        1,
        "20 sequential requests share one upstream TLS connection"
    );
    drop(p);
    // Each worker keeps its own pool (a connection is driven on the thread
    // that opened it): at most one connection per worker.
    let pki2 = crate::pki();
    let up2 = upstream(&pki2, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up2.addr.port(), &simple(&pki2.ca_file));
    let p = TestProxy::start(pki2.dir, &yaml, |b| b.concurrency = 3)
        .await
        .unwrap();
    for i in 0..30 {
        let r = p.get(HOST, &format!("/n/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let opened = up2.handshakes();
    assert!(
        (1..=3).contains(&opened),
        "{opened} connections for 3 workers"
    );
}

#[tokio::test]
async fn max_requests_per_connection_one_uses_session_resumption() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let tls = format!(
        "{}\n      connectionPool:\n        http:\n          maxRequestsPerConnection: 1",
        simple(&pki.ca_file)
    );
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    for _ in 0..3 {
        assert_eq!(p.get(HOST, "/").await.status, 200);
    }
    assert_eq!(
        up.handshakes(),
        3,
        "keep-alive disabled: one connection per request"
    );
    assert!(
        up.last().unwrap().resumed,
        "later handshakes resume the TLS session"
    );
    let resumed = p
        .metric("meshgate_tls_handshakes_total{direction=\"outbound\",listener=\"outbound\",version=\"TLSv1_3\",group=\"X25519MLKEM768\",resumed=\"true\"}")
        .await;
    assert!(resumed >= 1.0, "resumed handshakes counted");
}

async fn expect_failure(spec: LeafSpec, trust_other_ca: bool, reason: &str) {
    let pki = pki();
    let up = upstream(&pki, spec).await;
    let ca_file = if trust_other_ca {
        DevCa::new("unrelated CA")
            .write_cert(pki.dir.path(), "other.crt")
            .unwrap()
    } else {
        pki.ca_file.clone()
    };
    let yaml = egress_yaml(up.addr.port(), &simple(&ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-meshgate-error"], reason, "{}", r.body);
    assert!(
        r.body.contains(reason) && r.body.contains(HOST),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("BEGIN"),
        "no certificate material in responses"
    );
    let c = p
        .metric(&format!(
            "meshgate_tls_handshake_failures_total{{direction=\"outbound\",reason=\"{reason}\"}}"
        ))
        .await;
    assert_eq!(c, 1.0, "failure counted under {reason}");
    // Never falls back to an unverified or plain connection: a retry fails the same way.
    assert_eq!(p.get(HOST, "/").await.status, 503);
}

#[tokio::test]
async fn unknown_ca_is_503_unknown_ca() {
    expect_failure(LeafSpec::server(&[HOST]), true, "unknown_ca").await;
}

#[tokio::test]
async fn san_mismatch_is_503_san_mismatch() {
    expect_failure(
        LeafSpec::server(&["other.example.com"]),
        false,
        "san_mismatch",
    )
    .await;
}

#[tokio::test]
async fn expired_is_503_expired() {
    expect_failure(LeafSpec::server(&[HOST]).expired(), false, "expired").await;
}

#[tokio::test]
async fn not_yet_valid_is_503_not_yet_valid() {
    expect_failure(
        LeafSpec::server(&[HOST]).not_yet_valid(),
        false,
        "not_yet_valid",
    )
    .await;
}

#[tokio::test]
async fn subject_alt_names_override_the_host() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["backend.internal"])).await;
    let tls = format!(
        "{}\n        subjectAltNames: [backend.internal]\n        sni: backend.internal",
        simple(&pki.ca_file)
    );
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], "backend.internal");
    assert_eq!(v["host"], HOST, "the Host header stays what the app sent");
}

#[tokio::test]
async fn mutual_presents_the_client_certificate() {
    let pki = pki();
    let server = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let mut cfg = StandInConfig::new(&server.cert_pem, &server.key_pem);
    cfg.client_ca_pem = Some(pki.ca.cert_pem.clone());
    let up = StandIn::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let (cert, key) = pki
        .ca
        .issue(&LeafSpec::client("frontend.client"))
        .write(pki.dir.path(), "client")
        .unwrap();
    let tls = format!(
        "        mode: MUTUAL\n        caCertificates: {}\n        clientCertificate: {}\n        privateKey: {}",
        pki.ca_file.display(),
        cert.display(),
        key.display()
    );
    let yaml = egress_yaml(up.addr.port(), &tls);
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["client_cert"], "CN=frontend.client");
}

#[tokio::test]
async fn upstream_requiring_a_client_cert_without_one_is_a_clear_503() {
    let pki = pki();
    let server = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let mut cfg = StandInConfig::new(&server.cert_pem, &server.key_pem);
    cfg.client_ca_pem = Some(pki.ca.cert_pem.clone());
    let up = StandIn::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.headers["x-meshgate-error"], "client_cert_required",
        "{}",
        r.body
    );
    let c = p
        .metric("meshgate_tls_handshake_failures_total{direction=\"outbound\",reason=\"client_cert_required\"}")
        .await;
    assert_eq!(c, 1.0);
}

#[tokio::test]
async fn connect_refused_is_503_connect_refused() {
    let pki = pki();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let yaml = egress_yaml(port, &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-meshgate-error"], "connect_refused");
}
