//! CONNECT to a destination whose DestinationRule originates TLS: the
//! tunnel never carries plain text. Plain bytes from the app are wrapped in
//! TLS as the rule says; an app that speaks TLS itself is passed through.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn tunnel(p: &TestProxy) -> tokio::net::TcpStream {
    connect_tunnel(p, &format!("{HOST}:80")).await
}

#[tokio::test]
async fn plain_bytes_in_a_tunnel_are_sent_inside_the_rules_tls() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = proxy(pki, &yaml).await;
    let mut s = tunnel(&p).await;
    s.write_all(
        format!("GET /inside HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .expect("answered")
    .ok();
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/inside"),
        "{out}"
    );
    assert_eq!(
        up.last().unwrap().sni.as_deref(),
        Some(HOST),
        "meshgate's TLS"
    );
    assert!(
        up.failures().is_empty(),
        "no plain text reached it: {:?}",
        up.failures()
    );
}

#[tokio::test]
async fn an_apps_own_tls_in_a_tunnel_is_passed_through() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let ca_pem = pki.ca.cert_pem.clone();
    let p = proxy(pki, &yaml).await;
    let s = tunnel(&p).await;
    let roots = meshgate::creds::roots_from_pem(ca_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(HOST.try_into().unwrap(), s)
        .await
        .expect("the app's TLS reaches the upstream, not double-encrypted");
    tls.write_all(
        format!("GET /own HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/own"),
        "{out}"
    );
}
