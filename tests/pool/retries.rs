//! VirtualService retries: Istio's default policy (2 retries on connect
//! failure, refused stream, 503, ...) applies to routes that say nothing;
//! only requests that can be sent again unchanged are retried.

use super::*;

#[tokio::test]
async fn a_503_from_one_endpoint_is_retried_on_the_other() {
    let (bad, bad_count) = answering(503, "bad").await;
    let (good, good_count) = answering(200, "good").await;
    // No keep-alive: every try picks an endpoint (round robin).
    let yaml = format!(
        "{}{}",
        service("api.test", &[bad, good]),
        rule(
            "api.test",
            "connectionPool: {http: {maxRequestsPerConnection: 1}}"
        ),
    );
    let p = proxy(&yaml).await;
    for i in 0..10 {
        let g = request(
            p.proxy.outbound,
            "GET",
            "api.test",
            "/",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
        assert_eq!((g.status, g.body.as_str()), (200, "good"), "request {i}");
    }
    assert_eq!(good_count.load(Ordering::SeqCst), 10);
    let retried = bad_count.load(Ordering::SeqCst);
    assert!(
        retried >= 1,
        "round robin sent some tries to the bad endpoint"
    );
    assert_eq!(
        metric(
            &p,
            "meshgate_upstream_retries_total{destination_service=\"api.test\"}"
        )
        .await,
        retried as f64
    );
}

#[tokio::test]
async fn a_request_whose_body_was_sent_is_not_retried() {
    let (bad, bad_count) = answering(503, "bad").await;
    let yaml = service("only-bad.test", &[bad]);
    let p = proxy(&yaml).await;
    let g = request(
        p.proxy.outbound,
        "POST",
        "only-bad.test",
        "/orders",
        Some("{\"order\": 1}"),
        Duration::from_secs(5),
    )
    .await
    .expect("answered");
    assert_eq!(g.status, 503);
    assert_eq!(
        bad_count.load(Ordering::SeqCst),
        1,
        "sent once, never again"
    );
    // Bodiless, the same request is tried three times (two retries).
    let g = request(
        p.proxy.outbound,
        "GET",
        "only-bad.test",
        "/",
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("answered");
    assert_eq!(
        (g.status, g.body.as_str()),
        (503, "bad"),
        "the last answer is relayed"
    );
    assert_eq!(bad_count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn attempts_zero_disables_retries() {
    let (bad, bad_count) = answering(503, "bad").await;
    let yaml = format!(
        "{}{}",
        service("no-retry.test", &[bad]),
        route("no-retry.test", "retries: {attempts: 0}"),
    );
    let p = proxy(&yaml).await;
    let g = request(
        p.proxy.outbound,
        "GET",
        "no-retry.test",
        "/",
        None,
        Duration::from_secs(5),
    )
    .await
    .expect("answered");
    assert_eq!(g.status, 503);
    assert_eq!(bad_count.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn per_try_timeout_retries_a_stuck_endpoint_on_gateway_errors() {
    let (stuck, _) = black_hole().await;
    let (good, good_count) = answering(200, "good").await;
    let yaml = format!(
        "{}{}{}",
        service("slow.test", &[stuck, good]),
        rule(
            "slow.test",
            "connectionPool: {http: {maxRequestsPerConnection: 1}}"
        ),
        route(
            "slow.test",
            "retries: {attempts: 2, perTryTimeout: 300ms, retryOn: gateway-error}"
        ),
    );
    let p = proxy(&yaml).await;
    for _ in 0..4 {
        let g = request(
            p.proxy.outbound,
            "GET",
            "slow.test",
            "/",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
        assert_eq!((g.status, g.body.as_str()), (200, "good"));
    }
    assert_eq!(good_count.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn a_refused_endpoint_does_not_fail_the_request() {
    let (good, good_count) = answering(200, "good").await;
    let yaml = format!(
        "{}{}",
        service("half.test", &[refusing(), good]),
        rule(
            "half.test",
            "connectionPool: {http: {maxRequestsPerConnection: 1}}"
        ),
    );
    let p = proxy(&yaml).await;
    for _ in 0..4 {
        let g = request(
            p.proxy.outbound,
            "GET",
            "half.test",
            "/",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
        assert_eq!(g.status, 200, "{g:?}");
    }
    assert_eq!(good_count.load(Ordering::SeqCst), 4);
}

/// A Gateway route's `retries` apply as on mesh routes: `attempts: 0`
/// sends one try; the default policy retries a 503 on the other endpoint.
#[tokio::test]
async fn gateway_routes_follow_their_retry_policy() {
    let (bad, bad_count) = answering(503, "bad").await;
    let (good, good_count) = answering(200, "good").await;
    let gateway = |retries: &str| {
        format!(
            "{}{}apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [web.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.test]
  gateways: [gw]
  http:
  - {retries}
    route:
    - destination: {{host: api.test, port: {{number: 80}}}}
",
            service("api.test", &[bad, good]),
            rule(
                "api.test",
                "connectionPool: {http: {maxRequestsPerConnection: 1}}"
            ),
        )
    };
    let start = |yaml: String| async move {
        TestProxy::start(tempdir(), &yaml, |b| {
            b.port_map.insert(8080, "127.0.0.1:0".parse().unwrap());
        })
        .await
        .unwrap_or_else(|e| panic!("proxy does not start: {e}\n{yaml}"))
    };
    let p = start(gateway("retries: {attempts: 0}")).await;
    let addr = p.proxy.inbound()[&8080];
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let g = request(addr, "GET", "web.test", "/", None, Duration::from_secs(5))
            .await
            .expect("answered");
        statuses.push(g.status);
    }
    assert!(
        statuses.contains(&503),
        "no retries: {statuses:?} bad {} good {}",
        bad_count.load(Ordering::SeqCst),
        good_count.load(Ordering::SeqCst)
    );
    assert_eq!(
        bad_count.load(Ordering::SeqCst) + good_count.load(Ordering::SeqCst),
        6,
        "one try each"
    );

    let p = start(gateway("timeout: 5s")).await;
    let addr = p.proxy.inbound()[&8080];
    for i in 0..6 {
        let g = request(addr, "GET", "web.test", "/", None, Duration::from_secs(5))
            .await
            .expect("answered");
        assert_eq!((g.status, g.body.as_str()), (200, "good"), "request {i}");
    }
}
