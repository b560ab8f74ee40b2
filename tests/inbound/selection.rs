//! Gateway `selector` against the proxy's own labels, end to end: in a
//! namespace holding two ingress workloads' Gateways on one port, a proxy
//! started with `--workload-labels app=ingress-a` serves only its own.

use super::*;
use meshgate::flags::labels::parse_flag;

/// Gateway `shop/<name>` selecting `app: <name>`, one HTTPS server on 443
/// for `host`, and a VirtualService sending it to `backend`.
fn ingress(name: &str, host: &str, dir: &Path, leaf: &Leaf, backend: SocketAddr) -> String {
    let tls: Vec<String> = simple_tls(dir, leaf, name)
        .iter()
        .map(|l| format!("      {l}\n"))
        .collect();
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: {name}, namespace: shop}}
spec:
  selector: {{app: {name}}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["{host}"]
    tls:
{tls}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: {name}, namespace: shop}}
spec:
  hosts: ["{host}"]
  gateways: [{name}]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        tls = tls.concat(),
        port = backend.port()
    )
}

#[tokio::test]
async fn a_proxy_serves_only_the_gateway_selecting_its_labels() {
    let s = setup();
    let a = backend("a", Duration::ZERO).await;
    let b = backend("b", Duration::ZERO).await;
    let yaml = ingress(
        "ingress-a",
        "a.shop.test",
        s.dir.path(),
        &s.ca.issue(&LeafSpec::server(&["a.shop.test"])),
        a,
    ) + &ingress(
        "ingress-b",
        "b.shop.test",
        s.dir.path(),
        &s.ca.issue(&LeafSpec::server(&["b.shop.test"])),
        b,
    );
    let client = |host: &str| ClientOpts {
        sni: Some(host.into()),
        ca_pem: s.ca.cert_pem.clone(),
        ..Default::default()
    };
    let labels = parse_flag("app=ingress-a").unwrap();
    let p = start_ports(tempdir(), &yaml, &[443], |boot| {
        boot.namespace = "shop".into();
        boot.workload_labels = Some(labels);
    })
    .await;
    let addr = p.proxy.inbound()[&443];

    let r = https_get(addr, &client("a.shop.test"), "a.shop.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["backend"], "a");
    // ingress-b's server is not on this proxy: its SNI gets an alert, never
    // its certificate or its route.
    let err = https_get(addr, &client("b.shop.test"), "b.shop.test", "/", &[])
        .await
        .expect_err("ingress-b's host is not served here");
    assert!(err.to_string().contains("UnrecognisedName"), "{err}");

    // Without labels both Gateways apply (as before labels could be given).
    let p = start_ports(tempdir(), &yaml, &[443], |boot| {
        boot.namespace = "shop".into();
    })
    .await;
    let addr = p.proxy.inbound()[&443];
    let r = https_get(addr, &client("b.shop.test"), "b.shop.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(body_json(&r)["backend"], "b");
}
