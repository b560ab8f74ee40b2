//! `connectionPool` limits: a destination that never answers holds at most
//! `maxConnections` upstream connections; `http1MaxPendingRequests`
//! requests wait (each at most the connect timeout), the rest are answered
//! 503 `overflow` at once and counted; other destinations are unaffected.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stuck_destination_holds_at_most_max_connections_and_overflows_the_rest() {
    let (stuck, accepted) = black_hole().await;
    let (ok, _) = answering(200, "bystander").await;
    let yaml = format!(
        "{}{}{}{}",
        service("stuck.test", &[stuck]),
        rule(
            "stuck.test",
            "connectionPool:
  tcp: {maxConnections: 4, connectTimeout: 1s}
  http: {http1MaxPendingRequests: 8}"
        ),
        service("ok.test", &[ok]),
        // Retries would not change the count; keep the case about limits.
        route("stuck.test", "retries: {attempts: 0}"),
    );
    let p = proxy(&yaml).await;
    let addr = p.proxy.outbound;

    let flood: Vec<_> = (0..60)
        .map(|i| {
            tokio::spawn(async move {
                request(
                    addr,
                    "POST",
                    "stuck.test",
                    &format!("/probe/{i}"),
                    None,
                    Duration::from_secs(4),
                )
                .await
            })
        })
        .collect();
    // While the flood is held, another destination is served.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let bystander = request(addr, "GET", "ok.test", "/", None, Duration::from_secs(3))
        .await
        .expect("the bystander is answered");
    assert_eq!(
        (bystander.status, bystander.body.as_str()),
        (200, "bystander")
    );

    let mut overflow = 0;
    let mut unanswered = 0;
    for r in flood {
        match r.await.unwrap() {
            Some(g) if g.status == 503 && g.error == "overflow" => overflow += 1,
            Some(g) => panic!("unexpected answer {g:?}"),
            None => unanswered += 1,
        }
    }
    let held = accepted.load(Ordering::SeqCst);
    assert!(
        held <= 4,
        "{held} upstream connections for maxConnections 4"
    );
    assert_eq!(
        unanswered, 4,
        "the 4 requests in flight wait for the upstream"
    );
    assert_eq!(overflow, 56, "48 beyond the queue at once, 8 after waiting");
    let labels = |kind: &str| {
        format!(
            "meshgate_upstream_overflow_total{{destination_service=\"stuck.test\",kind=\"{kind}\"}}"
        )
    };
    assert_eq!(metric(&p, &labels("pending")).await, 48.0);
    assert_eq!(metric(&p, &labels("pending_timeout")).await, 8.0);
    let text = p.metrics().await;
    assert!(
        text.contains("response_flags=\"overflow\""),
        "istio_requests_total records the overflow flag"
    );
}

#[tokio::test]
async fn requests_beyond_http2_max_requests_overflow_at_once() {
    let (stuck, _) = black_hole().await;
    let yaml = format!(
        "{}{}{}",
        service("busy.test", &[stuck]),
        rule(
            "busy.test",
            "connectionPool:
  http: {http2MaxRequests: 2}"
        ),
        route("busy.test", "retries: {attempts: 0}"),
    );
    let p = proxy(&yaml).await;
    let addr = p.proxy.outbound;
    let held: Vec<_> = (0..2)
        .map(|_| {
            tokio::spawn(request(
                addr,
                "GET",
                "busy.test",
                "/",
                None,
                Duration::from_secs(3),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let third = request(addr, "GET", "busy.test", "/", None, Duration::from_secs(3))
        .await
        .expect("answered at once");
    assert_eq!((third.status, third.error.as_str()), (503, "overflow"));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(
        metric(
            &p,
            "meshgate_upstream_overflow_total{destination_service=\"busy.test\",kind=\"requests\"}"
        )
        .await,
        1.0
    );
    for h in held {
        assert!(h.await.unwrap().is_none(), "still waiting for the upstream");
    }
}

#[tokio::test]
async fn a_small_pending_queue_overflows_while_keep_alive_connections_are_reused() {
    // One connection, one waiting request: sequential requests reuse the
    // connection and are never refused.
    let (up, requests) = answering(200, "fine").await;
    let yaml = format!(
        "{}{}",
        service("small.test", &[up]),
        rule(
            "small.test",
            "connectionPool:
  tcp: {maxConnections: 1}
  http: {http1MaxPendingRequests: 1}"
        ),
    );
    let p = proxy(&yaml).await;
    for _ in 0..5 {
        let g = request(
            p.proxy.outbound,
            "GET",
            "small.test",
            "/",
            None,
            Duration::from_secs(3),
        )
        .await
        .expect("answered");
        assert_eq!(g.status, 200, "{g:?}");
    }
    assert_eq!(requests.load(Ordering::SeqCst), 5);
}
