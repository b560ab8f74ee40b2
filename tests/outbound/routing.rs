//! Registry: target ports, port-level settings, wildcard hosts, REGISTRY_ONLY and ALLOW_ANY, request forms and limits.

use super::*;

#[tokio::test]
async fn target_port_is_used_when_no_endpoint_port_is_given() {
    // ServiceEntry port 80 with targetPort = the stand-in's port; the
    // endpoint has no per-port override.
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file))
        .replace(
            "targetPort: 443",
            &format!("targetPort: {}", up.addr.port()),
        )
        .replace(&format!("    ports:\n      http: {}\n", up.addr.port()), "");
    assert!(!yaml.contains("http: "), "{yaml}");
    let p = proxy(pki, &yaml).await;
    assert_eq!(p.get(HOST, "/").await.status, 200);
}

#[tokio::test]
async fn port_level_settings_apply_only_to_their_port() {
    // Port 80 originates TLS; port 8080 of the same host has no TLS block,
    // so the same TLS upstream answered in plain text fails as not_tls...
    // the other way round: 8080 is plain to a plain server.
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let plain = plain_server().await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file))
        .replace(
            "    targetPort: 443\n",
            &format!("    targetPort: 443\n  - number: 8080\n    name: plain\n    protocol: HTTP\n    targetPort: {}\n", plain.port()),
        );
    let p = proxy(pki, &yaml).await;
    assert_eq!(p.get(HOST, "/").await.status, 200, "port 80: TLS");
    let r = p.get(&format!("{HOST}:8080"), "/plain").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body, "plain:/plain",
        "port 8080: no TLS (port-level settings do not leak)"
    );
}

#[tokio::test]
async fn plain_text_upstream_on_a_tls_port_is_not_tls() {
    let pki = pki();
    let plain = plain_server().await;
    let yaml = egress_yaml(plain.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p.get(HOST, "/").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.headers["x-meshgate-error"], "not_tls", "{}", r.body);
}

#[tokio::test]
async fn wildcard_service_entry_host() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&["en.wiki.test"])).await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: wiki}}
spec:
  hosts: ["*.wiki.test"]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 443}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1beta1
kind: DestinationRule
metadata: {{name: wiki}}
spec:
  host: "*.wiki.test"
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
"#,
        port = up.addr.port(),
        ca = pki.ca_file.display()
    );
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
    })
    .await
    .unwrap();
    let r = p.get("en.wiki.test", "/").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(
        v["tls"]["sni"], "en.wiki.test",
        "SNI is the request's host, not the pattern"
    );
    // A different subdomain is registered too, but its certificate name is checked.
    let r = p.get("de.wiki.test", "/").await;
    assert_eq!(r.headers["x-meshgate-error"], "san_mismatch");
    // The bare domain is not covered by the wildcard.
    assert_eq!(p.get("wiki.test", "/").await.status, 502);
}

#[tokio::test]
async fn registry_only_refuses_unknown_hosts_with_502() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly
    })
    .await
    .unwrap();
    let r = p.get("unknown.example.org", "/").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.headers["x-meshgate-error"], "registry_only");
    assert!(
        r.body.contains("unknown.example.org:80") && r.body.contains("REGISTRY_ONLY"),
        "{}",
        r.body
    );
    // Registered host, undeclared port: refused too.
    assert_eq!(p.get(&format!("{HOST}:8443"), "/").await.status, 502);
    assert_eq!(p.get(HOST, "/").await.status, 200);
    let m = p.metrics().await;
    assert!(
        m.contains("destination_service=\"BlackHoleCluster\",response_code=\"502\""),
        "{m}"
    );
}

#[tokio::test]
async fn allow_any_forwards_unknown_hosts_as_plain_http() {
    let pki = pki();
    let plain = plain_server().await;
    let yaml = egress_yaml(1, &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = p
        .get(&format!("localhost:{}", plain.port()), "/hello")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "plain:/hello");
    let m = p.metrics().await;
    assert!(
        m.contains("destination_service=\"PassthroughCluster\",response_code=\"200\""),
        "{m}"
    );
}

#[tokio::test]
async fn absolute_form_requests_work_like_an_http_proxy() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let r = fetch(
        p.proxy.outbound,
        "GET",
        &format!("http://{HOST}/abs?q=1"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["path"], "/abs?q=1", "origin-form upstream");
    assert_eq!(v["host"], HOST);
}

#[tokio::test]
async fn two_host_headers_or_none_is_400() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let yaml = egress_yaml(1, &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    for req in [
        "GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.0\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
            .await
            .unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        assert!(
            out.starts_with("HTTP/1.") && out.contains(" 400 "),
            "{req:?} → {out}"
        );
    }
}

#[tokio::test]
async fn oversized_headers_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = pki();
    let yaml = egress_yaml(1, &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| b.max_header_bytes = 16 * 1024)
        .await
        .unwrap();
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    let big = "x".repeat(64 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n");
    let _ = s.write_all(req.as_bytes()).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.contains(" 431 "), "{out}");
}
