//! VirtualService `fault` on Gateway routes: a fixed delay and an abort,
//! each for its percentage of requests (Istio's HTTPFaultInjection).

use super::*;

#[tokio::test]
async fn abort_and_delay_apply_to_their_route_only() {
    let dir = tempdir();
    let app = backend("APP", Duration::ZERO).await;
    let yaml = format!(
        r#"{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: faults, namespace: default}}
spec:
  hosts: [app.test]
  gateways: [ingress]
  http:
  - match: [{{uri: {{prefix: /blocked}}}}]
    fault:
      abort: {{httpStatus: 421, percentage: {{value: 100}}}}
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
  - match: [{{uri: {{prefix: /slow}}}}]
    fault:
      delay: {{fixedDelay: 300ms, percentage: {{value: 100}}}}
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
  - match: [{{uri: {{prefix: /never}}}}]
    fault:
      abort: {{httpStatus: 500, percentage: {{value: 0}}}}
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
"#,
        gateway(&[server(8080, "HTTP", &["app.test"], &[])]),
        port = app.port()
    );
    let p = start_ports(dir, &yaml, &[8080], |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let get = |path: &'static str| async move {
        fetch(addr, "GET", path, Some("app.test"))
            .await
            .expect("answered")
    };
    let r = get("/blocked/x").await;
    assert_eq!(r.status, 421, "{}", r.body);
    assert!(r.body.contains("fault filter abort"), "{}", r.body);
    let started = Instant::now();
    let r = get("/slow").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(started.elapsed() >= Duration::from_millis(300));
    for _ in 0..20 {
        assert_eq!(get("/never").await.status, 200, "0% never aborts");
    }
    let started = Instant::now();
    assert_eq!(get("/other").await.status, 200);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "no delay elsewhere"
    );
}
