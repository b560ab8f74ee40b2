//! Ingress TLS termination end to end: Gateway + VirtualService in front of
//! an in-process local service, real rustls clients, rcgen certificates.

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{ClientOpts, TestProxy, echo_service, https_get, tempdir};

const HOST: &str = "service.internal.test";

struct Setup {
    ca: DevCa,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    Setup {
        ca: DevCa::new("ingress CA"),
        dir: tempdir(),
    }
}

/// Gateway on config port 443 (rebound to port 0) + a VirtualService routing
/// every path to the local service.
fn gateway_yaml(tls: &str, backend: std::net::SocketAddr, hosts: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{hosts}]
    tls:
{tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
spec:
  hosts: [{hosts}]
  gateways: [ingress]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        port = backend.port()
    )
}

async fn start(s: Setup, yaml: &str) -> TestProxy {
    TestProxy::start(s.dir, yaml, |b| {
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap()
}

fn opts(ca: &DevCa) -> ClientOpts {
    ClientOpts {
        sni: Some(HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn simple_terminates_and_forwards_plain_http_with_identity_headers() {
    let s = setup();
    let (cert, key) =
        s.ca.issue(&LeafSpec::server(&[HOST]))
            .write(s.dir.path(), "server")
            .unwrap();
    let backend = echo_service().await;
    let tls = format!(
        "      mode: SIMPLE\n      serverCertificate: {}\n      privateKey: {}",
        cert.display(),
        key.display()
    );
    let yaml = gateway_yaml(&tls, backend, HOST);
    let o = opts(&s.ca);
    let p = start(s, &yaml).await;
    let addr = p.proxy.inbound[&443];
    let r = https_get(
        addr,
        &o,
        HOST,
        "/hello?x=1",
        &[
            ("x-forwarded-client-cert", "By=forged"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert!(
        v["headers"].get("x-forwarded-client-cert").is_none(),
        "client-sent XFCC removed: {}",
        r.body
    );
}
