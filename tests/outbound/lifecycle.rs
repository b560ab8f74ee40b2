//! Connection lifecycle on the outbound side: pools across reloads, a
//! request whose client goes away, CONNECT tunnels counted and drained.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Polls `f` every 20 ms until it holds, at most 5 s.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn an_unchanged_reload_keeps_the_pooled_connection() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = egress_yaml(up.addr.port(), &simple(&pki.ca_file));
    let p = TestProxy::start(pki.dir, &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    assert_eq!(p.get(HOST, "/").await.status, 200);
    for i in 0..5 {
        p.proxy.reload().await.expect("the same config reloads");
        let r = p.get(HOST, &format!("/after-reload-{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    assert_eq!(
        up.handshakes(),
        1,
        "reloads that change nothing keep the upstream connection"
    );
    assert_eq!(p.proxy.state.upstreams.pools(), 1);
}

#[tokio::test]
async fn pools_stay_bounded_across_reloads() {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let ca = pki.ca_file.clone();
    let p = TestProxy::start(pki.dir, &egress_yaml(up.addr.port(), &simple(&ca)), |b| {
        b.concurrency = 1
    })
    .await
    .unwrap();
    for i in 0..100 {
        // Each generation changes the destination's policy, so its
        // connections cannot be shared with the previous generation's.
        let yaml = egress_yaml(up.addr.port(), &simple(&ca)).replace(
            "      tls:\n",
            &format!(
                "      connectionPool: {{tcp: {{connectTimeout: {}s}}}}\n      tls:\n",
                i + 1
            ),
        );
        std::fs::write(p.config_path(), yaml).unwrap();
        p.proxy.reload().await.expect("the new config loads");
        let r = p.get(HOST, &format!("/{i}")).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let (pools, configs) = (
            p.proxy.state.upstreams.pools(),
            p.proxy.state.upstreams.tls_configs(),
        );
        assert!(
            pools <= 3 && configs <= 3,
            "after reload {i}: {pools} pools, {configs} client configs held"
        );
    }
    assert_eq!(up.handshakes(), 100, "one connection per policy generation");
}

/// A raw upstream that reads requests and never answers.
async fn silent_upstream() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    });
    addr
}

#[tokio::test]
async fn a_request_whose_client_goes_away_is_counted() {
    let silent = silent_upstream().await;
    let p = TestProxy::start(tempdir(), "", |_| {}).await.unwrap();
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("GET /never HTTP/1.1\r\nHost: {silent}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The request reaches the upstream, then the app gives up.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let key = "istio_requests_total{reporter=\"source\",destination_service=\"-\",response_code=\"0\",response_flags=\"downstream_disconnect\",connection_security_policy=\"none\"}";
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = p.metrics().await;
        if meshgate::test_util::metric_value(&m, key) == 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "not counted:\n{m}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A TCP server that echoes every byte back.
async fn echo_tcp() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_tunnel_is_counted_and_drained_at_shutdown() {
    let echo = echo_tcp().await;
    let p = TestProxy::start(tempdir(), "", |b| {
        b.termination_drain_duration = Duration::from_millis(300);
    })
    .await
    .unwrap();
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut back = vec![0u8; 23];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping through the tunnel");
    let metrics = || p.proxy.state.metrics.encode();
    let tcp = |name: &str| {
        meshgate::test_util::metric_value(
            &metrics(),
            &format!("{name}{{reporter=\"source\",destination_service=\"PassthroughCluster\"}}"),
        )
    };
    assert_eq!(tcp("istio_tcp_connections_opened_total"), 1.0);
    assert_eq!(tcp("istio_tcp_connections_closed_total"), 0.0, "still open");
    // Shutdown: the tunnel gets the drain limit, then it is closed.
    let started = Instant::now();
    p.proxy.shutdown();
    p.proxy.stopped().await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(2),
        "drained within the limit: {took:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("the tunnel is closed");
    assert!(matches!(end, Ok(0) | Err(_)), "closed: {end:?}");
    eventually("the closed tunnel is counted", || {
        tcp("istio_tcp_connections_closed_total") == 1.0
    })
    .await;
    assert_eq!(tcp("istio_tcp_received_bytes_total"), 23.0);
    assert_eq!(tcp("istio_tcp_sent_bytes_total"), 23.0);
    assert_eq!(
        meshgate::test_util::metric_value(
            &metrics(),
            "meshgate_downstream_connections_active{listener=\"outbound\"}"
        ),
        0.0
    );
}
