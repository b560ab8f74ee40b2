//! The mesh CA over Istio's signing API: CSR with a bearer token, a bad
//! token refused, and a sidecar's identity fetched and renewed into Istio's
//! file-mounted layout.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meshgate::ca::grpc::{CaAddress, Signer, create_certificate, serve};
use meshgate::ca::{MeshCa, spiffe_id};
use meshgate::creds::{CertInfo, certs_from_pem, identity_from_pem, provider};
use meshgate::identity::{CaClient, fetch_into, renew};
use meshgate::test_util::{TestProxy, tempdir};

const DAY: Duration = Duration::from_secs(86400);

/// Starts a CA server on 127.0.0.1:0 with one token for `frontend`, for
/// cluster `Kubernetes`.
async fn ca_server(
    dir: &std::path::Path,
    max_validity: Duration,
) -> (
    std::net::SocketAddr,
    String,
    tokio_util::sync::CancellationToken,
) {
    let ca = MeshCa::init(&dir.join("ca"), "cluster.local", true, DAY).unwrap();
    let server = ca
        .issue(
            "spiffe://cluster.local/ns/istio-system/sa/meshgate-ca",
            &["meshgate-ca".into(), "localhost".into()],
            DAY,
        )
        .unwrap();
    let id = identity_from_pem(
        server.cert_chain_pem.as_bytes(),
        server.key_pem.as_bytes(),
        &provider(),
        "ca",
    )
    .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(id.certified.cert.clone(), {
            use rustls_pki_types::pem::PemObject;
            rustls_pki_types::PrivateKeyDer::from_pem_slice(server.key_pem.as_bytes()).unwrap()
        })
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let root = server.root_pem.clone();
    let tokens = HashMap::from([(
        "good-token".to_string(),
        spiffe_id("cluster.local", "default", "frontend"),
    )]);
    let signer = Arc::new(Signer {
        ca,
        tokens,
        max_validity,
        cluster_id: Some("Kubernetes".into()),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(serve(
        listener,
        tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        signer,
        stop.clone(),
    ));
    (addr, root, stop)
}

/// A client of the CA at `addr` with the `good-token`.
fn client(addr: std::net::SocketAddr, root: &str, validity: Duration) -> CaClient {
    CaClient {
        addr: addr.into(),
        server_name: Some("meshgate-ca".into()),
        root_pem: root.to_string(),
        token: "good-token".into(),
        token_file: None,
        cluster_id: None,
        validity,
    }
}

#[tokio::test]
async fn csr_over_istio_grpc_api_with_token() {
    let dir = tempdir();
    let (addr, root, _stop) = ca_server(dir.path(), DAY).await;
    let good = client(addr, &root, Duration::from_secs(3600));
    let (chain, key) = create_certificate(&good).await.unwrap();
    let certs = certs_from_pem(chain.as_bytes()).unwrap();
    assert!(certs.len() >= 2, "leaf and CA chain");
    let leaf = CertInfo::parse(&certs[0]).unwrap();
    assert_eq!(
        leaf.sans,
        vec![format!(
            "URI:{}",
            spiffe_id("cluster.local", "default", "frontend")
        )],
        "the token's identity, nothing else"
    );
    assert!(leaf.not_after - leaf.not_before <= 3600 + 60);
    identity_from_pem(chain.as_bytes(), key.as_bytes(), &provider(), "t").unwrap();
    // The refusal is a trailers-only answer: its status is in the headers.
    let stolen = CaClient {
        token: "stolen".into(),
        token_file: None,
        ..good.clone()
    };
    let err = create_certificate(&stolen).await.unwrap_err().to_string();
    assert!(
        err.contains("grpc-status 16 (UNAUTHENTICATED): missing or unknown bearer token"),
        "{err}"
    );
}

#[tokio::test]
async fn cluster_id_header_is_sent_and_checked() {
    let dir = tempdir();
    let (addr, root, _stop) = ca_server(dir.path(), DAY).await;
    let ours = CaClient {
        cluster_id: Some("Kubernetes".into()),
        ..client(addr, &root, DAY)
    };
    create_certificate(&ours).await.unwrap();
    let other = CaClient {
        cluster_id: Some("cluster2".into()),
        ..ours
    };
    let err = create_certificate(&other).await.unwrap_err().to_string();
    assert!(
        err.contains("grpc-status 16 (UNAUTHENTICATED)") && err.contains("cluster2"),
        "{err}"
    );
}

#[tokio::test]
async fn ca_address_may_be_a_host_name() {
    let dir = tempdir();
    let (addr, root, _stop) = ca_server(dir.path(), DAY).await;
    let by_name: CaAddress = format!("localhost:{}", addr.port()).parse().unwrap();
    // Without a server name, the host of the address is verified: the
    // CA's certificate names `localhost`.
    let c = CaClient {
        addr: by_name.clone(),
        server_name: None,
        ..client(addr, &root, DAY)
    };
    create_certificate(&c).await.unwrap();
    // A name the certificate does not carry fails the handshake.
    let wrong = CaClient {
        server_name: Some("istiod.istio-system.svc".into()),
        ..c.clone()
    };
    let err = create_certificate(&wrong).await.unwrap_err().to_string();
    assert!(err.contains("TLS"), "{err}");
    // A name that does not resolve is reported as such.
    let nowhere = CaClient {
        addr: "ca.invalid:15012".parse().unwrap(),
        ..c
    };
    let err = create_certificate(&nowhere).await.unwrap_err().to_string();
    assert!(err.contains("ca.invalid:15012: cannot resolve"), "{err}");
}

#[tokio::test]
async fn sidecar_identity_is_fetched_and_renewed_at_half_life() {
    let dir = tempdir();
    // Short certificates so that half-life comes within the test.
    let (addr, root, _stop) = ca_server(dir.path(), Duration::from_secs(4)).await;
    let client = client(addr, &root, Duration::from_secs(3600));
    let identity = dir.path().join("identity");
    let first = fetch_into(&client, &identity).await.unwrap();
    assert!(
        first <= Duration::from_secs(2),
        "capped at the CA's maximum, renewed at half: {first:?}"
    );
    let serial = |p: &std::path::Path| {
        let pem = std::fs::read_to_string(p.join("cert-chain.pem")).unwrap();
        CertInfo::parse(&certs_from_pem(pem.as_bytes()).unwrap()[0])
            .unwrap()
            .serial
    };
    let before = serial(&identity);
    assert!(identity.join("key.pem").exists() && identity.join("root-cert.pem").exists());
    // A sidecar serving that identity on its mesh inbound listener, with
    // file watching off: the renewal itself must put the new certificate in
    // service.
    let p = TestProxy::start(tempdir(), "", |b| {
        b.identity_dir = Some(identity.clone());
        b.app_addr = Some(([127, 0, 0, 1], 9).into());
        b.mesh_inbound_addr = ([127, 0, 0, 1], 0).into();
        assert!(b.watch_interval.is_zero(), "no file watching");
    })
    .await
    .unwrap();
    let in_service = |p: &TestProxy| {
        p.proxy
            .state
            .snapshot()
            .creds
            .servers
            .values()
            .map(|id| id.leaf.serial.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(in_service(&p), vec![before.clone()]);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(renew(
        client,
        identity.clone(),
        first,
        p.proxy.reloads(),
        stop.clone(),
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    while serial(&identity) == before || in_service(&p) != vec![serial(&identity)] {
        assert!(
            std::time::Instant::now() < deadline,
            "renewed within the certificate's first half-life and put in service \
             (files: {:?}, in service: {:?}, first: {before:?})",
            serial(&identity),
            in_service(&p)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn failed_renewal_keeps_the_current_certificate() {
    let dir = tempdir();
    let (addr, root, stop_ca) = ca_server(dir.path(), Duration::from_secs(4)).await;
    let client = client(addr, &root, Duration::from_secs(4));
    let identity = dir.path().join("identity");
    fetch_into(&client, &identity).await.unwrap();
    let pem = std::fs::read_to_string(identity.join("cert-chain.pem")).unwrap();
    stop_ca.cancel();
    let wrong = CaClient {
        token: "revoked".into(),
        token_file: None,
        ..client
    };
    assert!(fetch_into(&wrong, &identity).await.is_err());
    assert_eq!(
        std::fs::read_to_string(identity.join("cert-chain.pem")).unwrap(),
        pem,
        "files untouched"
    );
}
