//! A Gateway server's `credentialName` Secret rotated in the cluster (as
//! cert-manager does, one update of the Secret): the new certificate is
//! served, and a client looping meanwhile sees no failed request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{ClientOpts, HttpsConn, echo_service, tls_connect};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::json;

use super::common::fake_kube::FakeKube;
use super::proxy::*;

const GW_HOST: &str = "shop.example.test";

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a certificate")
        .to_vec()
}

/// One connection and request: the certificate served, or what failed.
async fn once(addr: std::net::SocketAddr, opts: &ClientOpts) -> Result<Vec<u8>, String> {
    let tls = tls_connect(addr, opts)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let served = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("no certificate")?;
    let mut conn = HttpsConn::new(tls, false)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn
        .get(GW_HOST, "/", &[])
        .await
        .map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {}: {}", r.status, r.body));
    }
    Ok(served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_is_served_without_a_failed_request() {
    let fake = FakeKube::start().await;
    let ca = DevCa::new("kube gateway CA");
    let old = ca.issue(&LeafSpec::server(&[GW_HOST]));
    let new = ca.issue(&LeafSpec::server(&[GW_HOST]));
    let backend = echo_service().await;
    fake.apply(tls_secret("gw-cert", &old.cert_pem, &old.key_pem));
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "default"},
        "spec": {"servers": [{
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": [GW_HOST],
            "tls": {"mode": "SIMPLE", "credentialName": "gw-cert"},
        }]},
    }));
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "shop", "namespace": "default"},
        "spec": {
            "hosts": [GW_HOST],
            "gateways": ["ingress"],
            "http": [{"route": [{"destination": {"host": "127.0.0.1", "port": {"number": backend.port()}}}]}],
        },
    }));
    let p = start(&fake, |_| {}).await;
    ready(&p).await;
    let addr = p.proxy.inbound()[&443];
    let opts = ClientOpts {
        sni: Some(GW_HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    };
    assert_eq!(once(addr, &opts).await, Ok(der(&old.cert_pem)));

    // A client loop across the rotation.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (stop, opts) = (stop.clone(), opts.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                seen.push(once(addr, &opts).await);
            }
            seen
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    fake.apply(tls_secret("gw-cert", &new.cert_pem, &new.key_pem));
    let new_der = der(&new.cert_pem);
    wait_for("the rotated certificate served", || async {
        (once(addr, &opts).await.as_ref() == Ok(&new_der)).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::SeqCst);
    let seen = client.await.unwrap();
    let failed: Vec<&String> = seen.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        seen.len()
    );
    let old_der = der(&old.cert_pem);
    assert!(
        seen.iter().any(|r| r.as_ref() == Ok(&old_der)),
        "the loop ran before the rotation"
    );
    assert!(
        seen.iter().any(|r| r.as_ref() == Ok(&new_der)),
        "and after it"
    );
    // Once the new one is served, never the old one again.
    let first_new = seen
        .iter()
        .position(|r| r.as_ref() == Ok(&new_der))
        .unwrap();
    assert!(seen[first_new..].iter().all(|r| r.as_ref() == Ok(&new_der)));
}
