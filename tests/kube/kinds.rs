//! Each Istio kind through the fake API server with `run --kube`: applied,
//! the traffic shows it; modified, the traffic follows; deleted, the
//! behaviour from before it comes back. Gateway, VirtualService, Sidecar
//! and PeerAuthentication here (ServiceEntry, DestinationRule and Secrets
//! in `source` and `rotation`); then an API server serving Istio's groups
//! at `v1beta1` only, and the root namespace's Sidecar as the mesh-wide
//! default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshgate::ca::{MeshCa, spiffe_id};
use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{Fetched, fetch};
use meshgate::test_util::{ClientOpts, HttpsConn, TestProxy, echo_service, tempdir, tls_connect};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use super::common::fake_kube::FakeKube;
use super::proxy::*;

// === Gateway ===

const GW_HOST: &str = "shop.example.test";

fn der(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .expect("a certificate")
        .to_vec()
}

/// Gateway `ingress`: one HTTPS server on 443 for [`GW_HOST`] with the
/// Secret `credential`.
fn gateway(credential: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "ingress", "namespace": "default"},
        "spec": {"servers": [{
            "port": {"number": 443, "name": "https", "protocol": "HTTPS"},
            "hosts": [GW_HOST],
            "tls": {"mode": "SIMPLE", "credentialName": credential},
        }]},
    })
}

/// The certificate port 443 serves and the status of one request, or
/// `None` while no listener is on 443 or the request fails.
async fn gateway_answer(p: &TestProxy, opts: &ClientOpts) -> Option<(Vec<u8>, u16)> {
    let addr = *p.proxy.inbound().get(&443)?;
    let tls = tls_connect(addr, opts).await.ok()?;
    let served = tls.get_ref().1.peer_certificates()?.first()?.to_vec();
    let mut conn = HttpsConn::new(tls, false).await.ok()?;
    let r = conn.get(GW_HOST, "/", &[]).await.ok()?;
    Some((served, r.status))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_added_modified_and_deleted() {
    let fake = FakeKube::start().await;
    let ca = DevCa::new("kube gateway CA");
    let one = ca.issue(&LeafSpec::server(&[GW_HOST]));
    let two = ca.issue(&LeafSpec::server(&[GW_HOST]));
    let backend = echo_service().await;
    fake.apply(tls_secret("cert-one", &one.cert_pem, &one.key_pem));
    fake.apply(tls_secret("cert-two", &two.cert_pem, &two.key_pem));
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
    assert!(
        !p.proxy.inbound().contains_key(&443),
        "no Gateway, no listener: {:?}",
        p.proxy.inbound()
    );
    let opts = ClientOpts {
        sni: Some(GW_HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    };

    // Added: port 443 answers TLS with the credentialName certificate.
    fake.apply(gateway("cert-one"));
    let want = (der(&one.cert_pem), 200);
    wait_for("the Gateway served with cert-one", || async {
        (gateway_answer(&p, &opts).await.as_ref() == Some(&want)).then_some(())
    })
    .await;

    // Modified: the other Secret's certificate.
    fake.apply(gateway("cert-two"));
    let want = (der(&two.cert_pem), 200);
    wait_for("the Gateway served with cert-two", || async {
        (gateway_answer(&p, &opts).await.as_ref() == Some(&want)).then_some(())
    })
    .await;

    // Deleted: the listener goes, connections are refused.
    let addr = p.proxy.inbound()[&443];
    assert!(fake.delete("networking.istio.io/v1", "Gateway", "default", "ingress"));
    wait_for("the listener on 443 removed", || async {
        (!p.proxy.inbound().contains_key(&443)).then_some(())
    })
    .await;
    wait_for("connections to the old listener refused", || async {
        tls_connect(addr, &opts).await.is_err().then_some(())
    })
    .await;
}

// === VirtualService ===

/// A mesh VirtualService for [`HOST`] with `http` routes to the
/// ServiceEntry's port 80.
fn virtual_service(route: Value) -> Value {
    let mut route = route;
    route["route"] = json!([{"destination": {"host": HOST, "port": {"number": 80}}}]);
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {"hosts": [HOST], "http": [route]},
    })
}

/// A request to [`HOST`] through meshgate: the status, the path the
/// stand-in saw and the response header `x-route`, as `200 /path x-route`.
async fn answer(p: &TestProxy) -> String {
    let r = p.get(HOST, "/orders").await;
    let path = serde_json::from_str::<Value>(&r.body)
        .ok()
        .and_then(|v| v["path"].as_str().map(str::to_string))
        .unwrap_or_default();
    let route = r
        .headers
        .get("x-route")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    format!("{} {path} {route}", r.status)
}

async fn wait_answer(p: &TestProxy, want: &str) {
    wait_for(&format!("requests to give {want:?}"), || async {
        (answer(p).await == want).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_virtual_service_added_modified_and_deleted() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(answer(&p).await, "200 /orders -");

    // Added: the route rewrites the path (the prefix "/" it matches).
    e.fake
        .apply(virtual_service(json!({"rewrite": {"uri": "/v2/"}})));
    wait_answer(&p, "200 /v2/orders -").await;

    // Modified: another rewrite, and a response header.
    e.fake.apply(virtual_service(json!({
        "rewrite": {"uri": "/v3/"},
        "headers": {"response": {"set": {"x-route": "v3"}}},
    })));
    wait_answer(&p, "200 /v3/orders v3").await;

    // Deleted: straight to the ServiceEntry again.
    assert!(
        e.fake
            .delete("networking.istio.io/v1", "VirtualService", "default", "api")
    );
    wait_answer(&p, "200 /orders -").await;
}

// === Sidecar ===

/// A Sidecar with these egress hosts.
fn sidecar(namespace: &str, hosts: &[&str]) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "Sidecar",
        "metadata": {"name": "default", "namespace": namespace},
        "spec": {"egress": [{"hosts": hosts}]},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sidecar_added_modified_and_deleted() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));

    // Added: its egress hosts hide the ServiceEntry; REGISTRY_ONLY refuses.
    e.fake.apply(sidecar("default", &["./other.example.test"]));
    wait_sni(&p, Err(502)).await;

    // Modified: the host imported again.
    e.fake.apply(sidecar(
        "default",
        &["./other.example.test", &format!("./{HOST}")],
    ));
    wait_sni(&p, Ok("one.example.test")).await;

    // Hidden again, then deleted: every ServiceEntry visible as before.
    e.fake.apply(sidecar("default", &["./other.example.test"]));
    wait_sni(&p, Err(502)).await;
    assert!(
        e.fake
            .delete("networking.istio.io/v1", "Sidecar", "default", "default")
    );
    wait_sni(&p, Ok("one.example.test")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_namespace_sidecar_applies_until_the_namespace_has_its_own() {
    let e = Egress::start("one.example.test").await;
    // The mesh-wide default ("./" is the proxy's namespace): hides HOST.
    e.fake
        .apply(sidecar("istio-system", &["./other.example.test"]));
    let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
    for labels in [None, Some(web)] {
        let p = start(&e.fake, |b| b.workload_labels = labels).await;
        ready(&p).await;
        assert_eq!(
            sni(&p).await,
            Err(502),
            "the root namespace's Sidecar applies"
        );

        // The namespace's own Sidecar replaces it (and is the only one with
        // egress in force, so the change loads).
        e.fake.apply(sidecar("default", &["./*"]));
        wait_sni(&p, Ok("one.example.test")).await;

        // Deleted: the default again.
        assert!(
            e.fake
                .delete("networking.istio.io/v1", "Sidecar", "default", "default")
        );
        wait_sni(&p, Err(502)).await;
        assert!(
            p.proxy.state.snapshot().isolated.is_empty(),
            "{:?}",
            p.proxy.state.snapshot().isolated
        );
    }
}

// === PeerAuthentication ===

const DAY: Duration = Duration::from_secs(86400);
const BACKEND: &str = "backend.default.svc.cluster.local";

fn peer_authentication(mode: &str) -> Value {
    json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "default", "namespace": "default"},
        "spec": {"mtls": {"mode": mode}},
    })
}

/// A workload identity issued by `ca`, written under `dir/name`.
fn identity(ca: &MeshCa, dir: &Path, sa: &str) -> PathBuf {
    let d = dir.join(sa);
    ca.issue(&spiffe_id("cluster.local", "default", sa), &[], DAY)
        .expect("issue")
        .write(&d)
        .expect("write the identity");
    d
}

/// A meshgate from files calling [`BACKEND`] at `mesh` with ISTIO_MUTUAL.
async fn mesh_caller(identity: PathBuf, mesh: SocketAddr) -> TestProxy {
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: backend}}\nspec:\n  hosts: [{BACKEND}]\n  location: MESH_INTERNAL\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints: [{{address: 127.0.0.1, ports: {{http: {}}}}}]\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: backend}}\nspec:\n  host: {BACKEND}\n  trafficPolicy:\n    tls: {{mode: ISTIO_MUTUAL}}\n",
        mesh.port()
    );
    TestProxy::start(tempdir(), &yaml, move |b| b.identity_dir = Some(identity))
        .await
        .expect("the caller starts")
}

/// Whether the mesh inbound listener takes a plain-text request.
async fn plain_accepted(p: &TestProxy) -> bool {
    let Some(&mesh) = p.proxy.inbound().get(&15006) else {
        return false;
    };
    matches!(
        fetch(mesh, "GET", "/plain", Some(BACKEND)).await,
        Ok(Fetched { status: 200, .. })
    )
}

async fn wait_plain(p: &TestProxy, accepted: bool) {
    wait_for(&format!("plain text accepted: {accepted}"), || async {
        (plain_accepted(p).await == accepted).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_authentication_added_modified_and_deleted() {
    let dir = tempdir();
    let ca = MeshCa::init(&dir.path().join("ca"), "cluster.local", true, DAY).expect("mesh CA");
    let own = identity(&ca, dir.path(), "backend");
    let theirs = identity(&ca, dir.path(), "frontend");
    let app = echo_service().await;
    let fake = FakeKube::start().await;
    let p = start(&fake, |b| {
        b.identity_dir = Some(own);
        b.app_addr = Some(app);
        b.mesh_inbound_addr = "127.0.0.1:0".parse().unwrap();
    })
    .await;
    ready(&p).await;
    // No policy: PERMISSIVE.
    assert!(plain_accepted(&p).await);
    let caller = mesh_caller(theirs, p.proxy.inbound()[&15006]).await;
    assert_eq!(caller.get(BACKEND, "/m").await.status, 200);

    // Added STRICT: plain text refused, mutual TLS from the mesh served
    // with the caller's identity.
    fake.apply(peer_authentication("STRICT"));
    wait_plain(&p, false).await;
    let r = caller.get(BACKEND, "/m").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).expect("the app answers JSON");
    let frontend = spiffe_id("cluster.local", "default", "frontend");
    assert!(
        v["headers"]["x-forwarded-client-cert"]
            .as_str()
            .is_some_and(|x| x.contains(&format!("URI={frontend}"))),
        "{v}"
    );

    // Modified PERMISSIVE: plain text again.
    fake.apply(peer_authentication("PERMISSIVE"));
    wait_plain(&p, true).await;

    // STRICT, then deleted: back to the default.
    fake.apply(peer_authentication("STRICT"));
    wait_plain(&p, false).await;
    assert!(fake.delete(
        "security.istio.io/v1",
        "PeerAuthentication",
        "default",
        "default"
    ));
    wait_plain(&p, true).await;
    assert_eq!(caller.get(BACKEND, "/m").await.status, 200);
}

// === Served versions ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_serving_v1beta1_only_is_read_there() {
    let e = Egress::start("one.example.test").await;
    e.fake
        .set_served_versions("networking.istio.io", &["v1beta1"]);
    e.fake
        .set_served_versions("security.istio.io", &["v1beta1"]);
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));

    // A change written at v1beta1 is followed.
    let mut rule = destination_rule("two.example.test");
    rule["apiVersion"] = "networking.istio.io/v1beta1".into();
    e.fake.apply(rule);
    wait_sni(&p, Ok("two.example.test")).await;

    // v1 tried first, then every kind listed and watched at v1beta1.
    let requests = e.fake.requests();
    for (group, plural) in [
        ("networking.istio.io", "destinationrules"),
        ("networking.istio.io", "sidecars"),
        ("security.istio.io", "peerauthentications"),
    ] {
        let at = |version: &str| format!("/apis/{group}/{version}/namespaces/default/{plural}");
        assert!(
            requests.iter().any(|r| r.contains(&at("v1"))),
            "{plural}: v1 tried: {requests:#?}"
        );
        assert!(
            requests
                .iter()
                .any(|r| r.contains(&format!("{}?", at("v1beta1"))) && r.contains("watch=true")),
            "{plural}: watched at v1beta1: {requests:#?}"
        );
        assert!(
            !requests
                .iter()
                .any(|r| r.contains(&format!("{}?", at("v1"))) && r.contains("watch=true")),
            "{plural}: never watched at v1: {requests:#?}"
        );
    }
    assert_eq!(p.metric("meshgate_config_stale").await, 0.0);
}
