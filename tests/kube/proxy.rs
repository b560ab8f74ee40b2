//! meshgate on the Kubernetes source, against the fake API server: the
//! proxy in-process (`TestProxy::start_kube`), the objects the tests
//! apply, and waits with deadlines.

use std::future::Future;
use std::time::{Duration, Instant};

use meshgate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig};
use meshgate::test_util::{TestProxy, tempdir};
use serde_json::{Value, json};

use super::common::fake_kube::FakeKube;

/// The external host the outbound tests call.
pub const HOST: &str = "api.external.test";

/// Longest a test waits for meshgate to follow a change (a watch that
/// failed retries after the watcher's backoff: 0.8 s, doubling, jittered).
pub const WAIT: Duration = Duration::from_secs(8);

/// Polls `f` until it gives a value, within [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, f: F) -> T
where
    F: Fn() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < WAIT,
            "timed out after {WAIT:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// base64 of `s`, as the API server holds Secret data.
pub fn b64(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A `kubernetes.io/tls` Secret.
pub fn tls_secret(name: &str, cert_pem: &str, key_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64(cert_pem), "tls.key": b64(key_pem)},
    })
}

/// An `Opaque` Secret with a CA bundle under `ca.crt`.
pub fn ca_secret(name: &str, ca_pem: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": "default"},
        "type": "Opaque",
        "data": {"ca.crt": b64(ca_pem)},
    })
}

/// ServiceEntry `api` for [`HOST`]: port 80, TLS originated to the
/// stand-in's port.
pub fn service_entry(upstream_port: u16) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {
            "hosts": [HOST],
            "location": "MESH_EXTERNAL",
            "ports": [{"number": 80, "name": "http", "protocol": "HTTP", "targetPort": 443}],
            "resolution": "STATIC",
            "endpoints": [{"address": "127.0.0.1", "ports": {"http": upstream_port}}],
        },
    })
}

/// DestinationRule `api`: SIMPLE TLS on port 80 with `sni`, the CA from
/// the Secret `api-ca`.
pub fn destination_rule(sni: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "api", "namespace": "default"},
        "spec": {
            "host": HOST,
            "trafficPolicy": {"portLevelSettings": [{
                "port": {"number": 80},
                "tls": {"mode": "SIMPLE", "credentialName": "api-ca", "sni": sni},
            }]},
        },
    })
}

/// The fake API server with an HTTPS stand-in for [`HOST`] and the
/// ServiceEntry, DestinationRule (`sni`) and CA Secret that reach it.
pub struct Egress {
    pub fake: FakeKube,
    pub upstream: StandIn,
}

impl Egress {
    pub async fn start(sni: &str) -> Egress {
        let fake = FakeKube::start().await;
        let ca = DevCa::new("kube egress CA");
        // The SNI the DestinationRule sets is the name verified.
        let leaf = ca.issue(&LeafSpec::server(&[HOST, "*.example.test"]));
        let upstream = StandIn::start(
            ([127, 0, 0, 1], 0).into(),
            StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
        )
        .await
        .expect("stand-in");
        fake.apply(ca_secret("api-ca", &ca.cert_pem));
        fake.apply(service_entry(upstream.addr.port()));
        fake.apply(destination_rule(sni));
        Egress { fake, upstream }
    }
}

/// meshgate on `fake`, proxy namespace `default`, REGISTRY_ONLY, every
/// listener on port 0 (Gateway port 443 too); `tweak` adjusts the rest.
pub async fn start(fake: &FakeKube, tweak: impl FnOnce(&mut Bootstrap)) -> TestProxy {
    let dir = tempdir();
    let kubeconfig = fake.kubeconfig(dir.path());
    TestProxy::start_kube(dir, &kubeconfig, |b| {
        b.namespace = "default".into();
        b.outbound_traffic_policy = OutboundTrafficPolicy::RegistryOnly;
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        tweak(b);
    })
    .await
    .expect("meshgate starts on the fake API server")
}

/// Waits until readiness answers 200.
pub async fn ready(p: &TestProxy) {
    wait_for("readiness", || async {
        let (status, _) = p.readiness().await;
        (status == 200).then_some(())
    })
    .await;
}

/// The SNI the stand-in saw for a request to [`HOST`] through meshgate,
/// or the status when it was not 200.
pub async fn sni(p: &TestProxy) -> Result<String, u16> {
    let r = p.get(HOST, "/").await;
    if r.status != 200 {
        return Err(r.status);
    }
    let v: Value = serde_json::from_str(&r.body).expect("the stand-in answers JSON");
    Ok(v["tls"]["sni"].as_str().unwrap_or_default().to_string())
}

/// Waits until a request to [`HOST`] gives `want`.
pub async fn wait_sni(p: &TestProxy, want: Result<&str, u16>) {
    let want = want.map(str::to_string);
    wait_for(&format!("requests to give {want:?}"), || async {
        (sni(p).await == want).then_some(())
    })
    .await;
}
