//! ISTIO_MUTUAL between two meshgate sidecars: A originates mutual TLS with
//! its workload identity, B's mesh inbound listener verifies the caller's
//! SPIFFE ID (PeerAuthentication STRICT / PERMISSIVE) and hands the request
//! to its app with the identity in X-Forwarded-Client-Cert.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use meshgate::ca::{MeshCa, spiffe_id};
use meshgate::standin::fetch;
use meshgate::test_util::{TestProxy, echo_service, tempdir};

const DAY: Duration = Duration::from_secs(86400);
const BACKEND: &str = "backend.default.svc.cluster.local";

fn caller_yaml(mesh_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend}}
spec:
  hosts: [{BACKEND}]
  location: MESH_INTERNAL
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {mesh_port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend}}
spec:
  host: {BACKEND}
  trafficPolicy:
    tls: {{mode: ISTIO_MUTUAL}}
"#
    )
}

fn peer_auth(mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

async fn backend(identity: &Path, app: SocketAddr, mode: &str) -> TestProxy {
    let identity = identity.to_path_buf();
    TestProxy::start(tempdir(), &peer_auth(mode), move |b| {
        b.identity_dir = Some(identity);
        b.app_addr = Some(app);
        b.mesh_inbound_addr = "127.0.0.1:0".parse().unwrap();
    })
    .await
    .unwrap()
}

async fn caller(identity: &Path, mesh: SocketAddr) -> TestProxy {
    let identity = identity.to_path_buf();
    TestProxy::start(tempdir(), &caller_yaml(mesh.port()), move |b| {
        b.identity_dir = Some(identity)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn istio_mutual_between_two_sidecars() {
    let dir = tempdir();
    let ca = MeshCa::init(&dir.path().join("ca"), "cluster.local", true, DAY).unwrap();
    let issue = |id: &str, name: &str| {
        let d = dir.path().join(name);
        ca.issue(id, &[], DAY).unwrap().write(&d).unwrap();
        d
    };
    let frontend_id = spiffe_id("cluster.local", "default", "frontend");
    let backend_id = spiffe_id("cluster.local", "default", "backend");
    let a_identity = issue(&frontend_id, "a");
    let b_identity = issue(&backend_id, "b");
    let app = echo_service().await;

    // STRICT: mutual TLS from a workload of the trust domain only.
    let b = backend(&b_identity, app, "STRICT").await;
    let mesh = b.proxy.inbound()[&15006];
    let a = caller(&a_identity, mesh).await;
    let r = a.get(BACKEND, "/orders").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    let xfcc = v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_default();
    assert!(
        xfcc.contains(&format!("URI={frontend_id}")),
        "the caller's SPIFFE ID reaches the app: {xfcc}"
    );
    assert!(xfcc.contains(&format!("By={backend_id}")), "{xfcc}");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    let plain = fetch(mesh, "GET", "/orders", Some(BACKEND)).await;
    assert!(
        plain.is_err() || plain.as_ref().is_ok_and(|r| r.status != 200),
        "STRICT refuses plain text: {plain:?}"
    );

    // Another trust domain, same root: refused by the server's check.
    let stranger = caller(
        &issue("spiffe://other.domain/ns/default/sa/frontend", "c"),
        mesh,
    )
    .await;
    let r = stranger.get(BACKEND, "/orders").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        b.metric("meshgate_tls_handshake_failures_total{direction=\"inbound\",reason=\"san_not_allowed\"}").await,
        1.0
    );

    // PERMISSIVE: plain text is accepted too (no identity header then).
    let b2 = backend(&b_identity, app, "PERMISSIVE").await;
    let plain = fetch(b2.proxy.inbound()[&15006], "GET", "/p", Some(BACKEND))
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "{}", plain.body);
    let v: serde_json::Value = serde_json::from_str(&plain.body).unwrap();
    assert!(v["headers"].get("x-forwarded-client-cert").is_none());
    let a2 = caller(&a_identity, b2.proxy.inbound()[&15006]).await;
    assert_eq!(a2.get(BACKEND, "/p").await.status, 200);

    // DISABLE: plain text only; a mutual-TLS caller cannot handshake.
    let b3 = backend(&b_identity, app, "DISABLE").await;
    let plain = fetch(b3.proxy.inbound()[&15006], "GET", "/d", Some(BACKEND))
        .await
        .unwrap();
    assert_eq!(plain.status, 200, "{}", plain.body);
    let a3 = caller(&a_identity, b3.proxy.inbound()[&15006]).await;
    assert_eq!(a3.get(BACKEND, "/d").await.status, 503);
}

/// During a root rotation both roots are trusted (a bundle in
/// root-cert.pem): workloads with certificates from the old and the new
/// root talk to each other.
#[tokio::test]
async fn two_roots_during_a_root_rotation() {
    let dir = tempdir();
    let old = MeshCa::init(&dir.path().join("old"), "cluster.local", false, DAY).unwrap();
    let new = MeshCa::init(&dir.path().join("new"), "cluster.local", false, DAY).unwrap();
    let bundle = format!("{}{}", old.root_pem, new.root_pem);
    let issue = |ca: &MeshCa, sa: &str, name: &str| {
        let mut issued = ca
            .issue(&spiffe_id("cluster.local", "default", sa), &[], DAY)
            .unwrap();
        issued.root_pem = bundle.clone();
        let d = dir.path().join(name);
        issued.write(&d).unwrap();
        d
    };
    let b_identity = issue(&old, "backend", "b");
    let a_identity = issue(&new, "frontend", "a");
    let app = echo_service().await;
    let b = backend(&b_identity, app, "STRICT").await;
    let a = caller(&a_identity, b.proxy.inbound()[&15006]).await;
    let r = a.get(BACKEND, "/rotating").await;
    assert_eq!(
        r.status, 200,
        "new-root client to old-root server: {}",
        r.body
    );
    // Without the bundle, the new root alone does not trust the old server.
    let mut lone = new
        .issue(&spiffe_id("cluster.local", "default", "frontend"), &[], DAY)
        .unwrap();
    lone.root_pem = new.root_pem.clone();
    let lone_dir = dir.path().join("lone");
    lone.write(&lone_dir).unwrap();
    let a2 = caller(&lone_dir, b.proxy.inbound()[&15006]).await;
    assert_eq!(a2.get(BACKEND, "/rotating").await.status, 503);
}
