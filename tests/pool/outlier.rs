//! outlierDetection: an endpoint answering 5xx in a row is ejected for
//! baseEjectionTime, requests go to the healthy one meanwhile, and it is
//! back afterwards.

use super::*;

#[tokio::test]
async fn a_failing_endpoint_is_ejected_then_returns_after_the_base_ejection_time() {
    let (bad, bad_count) = answering(500, "bad").await;
    let (good, good_count) = answering(200, "good").await;
    let yaml = format!(
        "{}{}{}",
        service("flaky.test", &[bad, good]),
        rule(
            "flaky.test",
            "connectionPool: {http: {maxRequestsPerConnection: 1}}
outlierDetection:
  consecutive5xxErrors: 2
  interval: 1s
  baseEjectionTime: 1s"
        ),
        route("flaky.test", "retries: {attempts: 0}"),
    );
    let p = proxy(&yaml).await;
    let send = || async {
        request(
            p.proxy.outbound,
            "GET",
            "flaky.test",
            "/",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("answered")
    };
    let mut failures = 0;
    for _ in 0..20 {
        if send().await.status != 200 {
            failures += 1;
        }
    }
    assert_eq!(
        failures, 2,
        "two 500s eject the endpoint (10% still allows one)"
    );
    assert_eq!(bad_count.load(Ordering::SeqCst), 2);
    assert_eq!(good_count.load(Ordering::SeqCst), 18);
    assert_eq!(
        metric(
            &p,
            "meshgate_upstream_ejections_total{destination_service=\"flaky.test\"}"
        )
        .await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..4 {
        send().await;
    }
    assert!(
        bad_count.load(Ordering::SeqCst) > 2,
        "back in service after baseEjectionTime"
    );
}

#[tokio::test]
async fn without_outlier_detection_nothing_is_ejected() {
    let (bad, bad_count) = answering(500, "bad").await;
    let (good, _) = answering(200, "good").await;
    let yaml = format!(
        "{}{}{}",
        service("plain.test", &[bad, good]),
        rule(
            "plain.test",
            "connectionPool: {http: {maxRequestsPerConnection: 1}}"
        ),
        route("plain.test", "retries: {attempts: 0}"),
    );
    let p = proxy(&yaml).await;
    for _ in 0..20 {
        request(
            p.proxy.outbound,
            "GET",
            "plain.test",
            "/",
            None,
            Duration::from_secs(5),
        )
        .await
        .expect("answered");
    }
    assert!(bad_count.load(Ordering::SeqCst) >= 5);
}
