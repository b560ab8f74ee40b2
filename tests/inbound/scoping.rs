//! Gateway server hosts `namespace/host`: only VirtualServices of that
//! namespace bind to the host, end to end.

use super::*;

/// A VirtualService `ns/name` bound to `gw-ns/ingress`, sending every
/// request for `hosts` to `backend`.
fn route_in(ns: &str, name: &str, hosts: &str, backend: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: {ns}
spec:
  hosts: [{hosts}]
  gateways: [gw-ns/ingress]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        port = backend.port()
    )
}

#[tokio::test]
async fn a_virtual_service_of_another_namespace_is_not_served_on_a_namespaced_host() {
    let dir = tempdir();
    let same = backend("same-namespace", Duration::ZERO).await;
    let other = backend("other-namespace", Duration::ZERO).await;
    // The foreign VirtualService first: where both claim a host, it would
    // win the tie if the namespace did not keep it out.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: gw-ns
spec:
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["gw-ns/same.test", "gw-ns/taken.test", "./dot.test", "*/open.test"]
"#
    .to_string()
        + &route_in(
            "other-ns",
            "foreign",
            "taken.test, dot.test, open.test",
            other,
        )
        + &route_in("gw-ns", "own", "same.test, dot.test", same);
    let p = start_ports(dir, &yaml, &[80], |b| b.namespace = "gw-ns".into()).await;
    let addr = p.proxy.inbound()[&80];

    for host in ["same.test", "dot.test"] {
        let r = fetch(addr, "GET", "/x", Some(host)).await.unwrap();
        assert_eq!(r.status, 200, "{host}: {}", r.body);
        assert_eq!(body_json(&r)["backend"], "same-namespace", "{host}");
    }

    // The server serves taken.test, but only to VirtualServices of gw-ns:
    // other-ns's routes for it are not there (Istio builds no virtual host
    // for them), so the request is unrouted.
    let r = fetch(addr, "GET", "/x", Some("taken.test")).await.unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("no route matched"), "{}", r.body);
    assert_eq!(r.headers.get("x-meshgate-error").unwrap(), "no_route");

    // `*/open.test` admits every namespace.
    let r = fetch(addr, "GET", "/x", Some("open.test")).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["backend"], "other-namespace");
}
