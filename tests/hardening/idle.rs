//! Idle HTTP/1.1 keep-alive connections, inbound and from the app on the
//! outbound listener: the proxy lets go of a connection's HTTP state while
//! it is idle (after 250 ms with nothing in flight) and builds it again on
//! the client's next bytes. What the client
//! sees must not change: bytes sent across that point, a head at the size
//! limit, an upgrade; and a request-head timeout that counts from the first
//! byte of a head, as Envoy's `request_headers_timeout`, not from the end
//! of the previous response.

use super::*;

/// Longer than the proxy's idle point.
const IDLE: Duration = Duration::from_millis(700);

/// Reads one response of `upgrading_backend` (a 2-byte body) on a kept
/// connection; returns its head.
async fn response(s: &mut TcpStream) -> String {
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(s))
        .await
        .expect("answered in time")
        .unwrap();
    let mut body = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut body))
        .await
        .expect("body in time")
        .unwrap();
    assert_eq!(&body, b"ok", "{head}");
    head
}

fn kept(head: &str) -> bool {
    head.starts_with("HTTP/1.1 200") && !head.to_ascii_lowercase().contains("connection: close")
}

#[tokio::test]
async fn a_head_at_the_limit_split_across_an_idle_period_is_served_whole() {
    let (app, heads) = upgrading_backend().await;
    let p = start(&plain_gateway("app.test", &route_to(app)), |b| {
        b.max_header_bytes = 8192;
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let first = response(&mut s).await;
    assert!(kept(&first), "{first}");
    // Counted: "GET" "/2" "host" "app.test" "x-pad" pad: exactly the limit.
    let pad = "p".repeat(8192 - (3 + 2 + 4 + 8 + 5));
    let head =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app.test\r\nX-Pad: {pad}\r\n\r\n");
    let second = head("/2");
    let (start_of, rest) = second.as_bytes().split_at(second.len() / 2);
    // Half a head at once, then an idle period: those bytes were read
    // before the connection went idle, and must not be lost.
    s.write_all(start_of).await.unwrap();
    tokio::time::sleep(IDLE).await;
    s.write_all(rest).await.unwrap();
    let second = response(&mut s).await;
    assert!(kept(&second), "{second}");
    // A whole head at the limit on a connection idle for a while.
    tokio::time::sleep(IDLE).await;
    s.write_all(head("/3").as_bytes()).await.unwrap();
    let third = response(&mut s).await;
    assert!(kept(&third), "{third}");
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[0].starts_with("GET /1 "), "{}", seen[0]);
    assert!(
        seen[1].starts_with("GET /2 ") && seen[1].contains(&pad),
        "{:.100}",
        seen[1]
    );
    assert!(
        seen[2].starts_with("GET /3 ") && seen[2].contains(&pad),
        "{:.100}",
        seen[2]
    );
}

#[tokio::test]
async fn the_request_head_timeout_starts_with_a_head_not_at_the_previous_response() {
    let (app, _) = upgrading_backend().await;
    let p = start(&plain_gateway("app.test", &route_to(app)), |b| {
        b.request_header_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /1 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    assert!(kept(&response(&mut s).await));
    // Idle for more than the head timeout: still open, still served.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(b"GET /2 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    let second = response(&mut s).await;
    assert!(kept(&second), "{second}");
    // A head that starts and never ends is still bounded.
    tokio::time::sleep(IDLE).await;
    s.write_all(b"GET /3 HTTP/1.1\r\nHost: app").await.unwrap();
    let started = Instant::now();
    let rest = read_for(&mut s, Duration::from_secs(3)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed at the head timeout, not later: {:?} {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&rest)
    );
}

/// On a connection to `addr` with `host`: a request, an idle period, a
/// WebSocket upgrade, an idle period inside the tunnel, a frame each way,
/// and the client's close reaching the end of the tunnel.
async fn websocket_after_an_idle_period(addr: SocketAddr, host: &str) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /1 HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert!(kept(&response(&mut s).await));
    tokio::time::sleep(IDLE).await;
    s.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
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
    // Idle inside the tunnel: it is not an HTTP connection any more.
    tokio::time::sleep(IDLE).await;
    s.write_all(b"\x81\x02hi").await.unwrap();
    let mut back = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"\x81\x02hi");
    // The client's close reaches through to the end of the tunnel.
    s.shutdown().await.unwrap();
    let end = read_for(&mut s, Duration::from_secs(3)).await;
    assert!(end.is_empty(), "{end:?}");
}

#[tokio::test]
async fn a_websocket_upgrade_after_an_idle_period_is_relayed() {
    let (app, _) = upgrading_backend().await;
    let p = start(&plain_gateway("app.test", &route_to(app)), |_| {}).await;
    websocket_after_an_idle_period(p.proxy.inbound()[&8080], "app.test").await;
}

/// The app's keep-alive connection to the outbound listener (an HTTP
/// client's pool): idle longer than the request-head timeout, it is still
/// open and served; a head split across an idle period arrives whole; a
/// head that starts and never ends is still closed at the timeout.
#[tokio::test]
async fn an_idle_app_connection_outlives_the_request_head_timeout() {
    let (app, heads) = upgrading_backend().await;
    let p = start("", |b| {
        b.request_header_timeout = Duration::from_millis(500);
    })
    .await;
    let mut s = TcpStream::connect(p.proxy.outbound).await.unwrap();
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: {app}\r\n\r\n");
    s.write_all(get("/1").as_bytes()).await.unwrap();
    assert!(kept(&response(&mut s).await));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    s.write_all(get("/2").as_bytes()).await.unwrap();
    let second = response(&mut s).await;
    assert!(kept(&second), "{second}");
    // Half a head, an idle period shorter than the head timeout, the rest.
    let third = get("/3");
    let (start_of, rest) = third.as_bytes().split_at(third.len() / 2);
    s.write_all(start_of).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.write_all(rest).await.unwrap();
    let third = response(&mut s).await;
    assert!(kept(&third), "{third}");
    let seen = heads.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen[2].starts_with("GET /3 "), "{}", seen[2]);
    tokio::time::sleep(IDLE).await;
    s.write_all(format!("GET /4 HTTP/1.1\r\nHost: {app}").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let rest = read_for(&mut s, Duration::from_secs(3)).await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed at the head timeout, not later: {:?} {:?}",
        started.elapsed(),
        String::from_utf8_lossy(&rest)
    );
}

/// A WebSocket the app opens on a connection that was idle is relayed.
#[tokio::test]
async fn an_outbound_websocket_after_an_idle_period_is_relayed() {
    let (ws, _) = upgrading_backend().await;
    let p = start("", |_| {}).await;
    websocket_after_an_idle_period(p.proxy.outbound, &ws.to_string()).await;
}
