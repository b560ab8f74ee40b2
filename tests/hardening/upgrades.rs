//! Upgrades: only WebSocket is forwarded (as Istio's default upgrade
//! config); `Upgrade: h2c` and every other token are stripped, so no
//! unrouted tunnel can reach the app. WebSocket works both ways, outbound
//! too.

use super::*;

/// `Upgrade: h2c` on a route to an app that would accept it: the app never
/// sees the upgrade, the client never gets a 101, and bytes sent after the
/// request never reach the app unrouted.
#[tokio::test]
async fn h2c_upgrade_is_stripped_and_never_tunnelled() {
    let (app, heads) = upgrading_backend().await;
    let routes = format!(
        "  - match: [{{uri: {{prefix: /admin}}}}]\n    directResponse: {{status: 403}}\n{}",
        route_to(app)
    );
    let p = start(&plain_gateway("app.test", &routes), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "no switch: {head}");
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let lower = seen[0].to_ascii_lowercase();
    assert!(
        !lower.contains("upgrade") && !lower.contains("http2-settings"),
        "the app never sees the upgrade: {}",
        seen[0]
    );
    // What the client sends next is HTTP/1.1 to the proxy, routed: the deny
    // route answers, the app sees nothing unrouted.
    let _ = read_for(&mut s, Duration::from_millis(100)).await; // the body
    s.write_all(b"GET /admin HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(next.starts_with("HTTP/1.1 403"), "{next}");
    assert_eq!(
        heads.lock().unwrap().len(),
        1,
        "/admin never reached the app"
    );
}

/// Any other upgrade token is stripped too; WebSocket passes.
#[tokio::test]
async fn only_websocket_upgrades_pass() {
    let (app, heads) = upgrading_backend().await;
    let p = start(&plain_gateway("app.test", &route_to(app)), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for (i, token) in ["h2c", "TLS/1.2", "foo", "websocket, h2c"]
        .iter()
        .enumerate()
    {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "GET /{i} HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
            .await
            .unwrap()
            .unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{token}: {head}");
    }
    assert!(
        heads
            .lock()
            .unwrap()
            .iter()
            .all(|h| !h.to_ascii_lowercase().contains("upgrade:")),
        "{:?}",
        heads.lock().unwrap()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s.write_all(b"\x81\x02hi").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x81\x02hi");
}

/// The app opens a WebSocket to an external service through the outbound
/// listener, as it would without a mesh.
#[tokio::test]
async fn outbound_websocket_reaches_the_upstream() {
    let (ws, heads) = upgrading_backend().await;
    let p = start("", |_| {}).await;
    let mut s = TcpStream::connect(p.proxy.outbound).await.unwrap();
    s.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {ws}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut s))
        .await
        .unwrap()
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let upstream_head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        upstream_head.contains("upgrade: websocket") && upstream_head.contains("sec-websocket-key"),
        "{upstream_head}"
    );
    s.write_all(b"\x81\x05hello").await.unwrap();
    let mut back = [0u8; 7];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x81\x05hello");
    // Counted as spliced traffic to where it went.
    let m = p.proxy.state.metrics.encode();
    assert_eq!(
        metric_value(
            &m,
            "istio_tcp_connections_opened_total{reporter=\"source\",destination_service=\"PassthroughCluster\"}"
        ),
        1.0,
        "{m}"
    );
}

/// gRPC needs `te: trailers`, which HTTP/2 allows; other TE values are
/// hop-by-hop and removed.
#[tokio::test]
async fn te_trailers_reaches_the_app_and_other_te_values_do_not() {
    let app = backend("grpc").await;
    let yaml =
        plain_gateway("grpc.test", &route_to(app)).replace("protocol: HTTP}", "protocol: GRPC}");
    let p = start(&yaml, |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for (te, want) in [
        ("trailers", Some("trailers")),
        ("gzip, trailers", Some("trailers")),
        ("gzip", None),
    ] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("POST /svc/M HTTP/1.1\r\nHost: grpc.test\r\nTE: {te}\r\nConnection: TE\r\ncontent-length: 0\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let resp = String::from_utf8_lossy(&read_for(&mut s, Duration::from_millis(500)).await)
            .into_owned();
        let body = resp.split("\r\n\r\n").nth(1).unwrap_or_default();
        let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{resp}"));
        assert_eq!(v["version"], "HTTP/2.0", "{resp}");
        assert_eq!(
            v["headers"]["te"]
                .as_array()
                .and_then(|a| a.first())
                .and_then(Value::as_str),
            want,
            "TE: {te} → {v}"
        );
    }
}
