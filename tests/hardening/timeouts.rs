//! Time bounds: a connection that sends no request, an idle HTTP/2
//! connection, a request body that stalls; and a client that breaks its
//! own body framing gets 400, not an upstream error.

use super::*;

/// Reads until the peer closes; `None` if it is still open after `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// An empty SETTINGS frame.
const SETTINGS: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];

#[tokio::test]
async fn a_connection_without_a_request_is_closed_whatever_its_protocol() {
    let app = backend("app").await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |b| {
        b.request_header_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let started = Instant::now();
    // Nothing at all, on the inbound port (HTTP/1.1 or HTTP/2) and on the
    // outbound one.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut silent_out = TcpStream::connect(p.proxy.outbound).await.unwrap();
    // The HTTP/2 preface and SETTINGS, then nothing.
    let mut preface_only = TcpStream::connect(addr).await.unwrap();
    preface_only.write_all(PREFACE).await.unwrap();
    preface_only.write_all(SETTINGS).await.unwrap();
    // A bystander is served meanwhile.
    still_served(addr, "app.test").await;
    for (name, s) in [
        ("silent", &mut silent),
        ("silent outbound", &mut silent_out),
        ("preface only", &mut preface_only),
    ] {
        assert!(
            closed_within(s, Duration::from_secs(3)).await.is_some(),
            "{name}: closed at the request header timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(3));
    let closed = wait_metric(
        &p,
        "meshgate_downstream_timeouts_total{kind=\"request_header_timeout\"}",
        3.0,
    )
    .await;
    assert!(closed >= 3.0, "counted: {closed}");
    still_served(addr, "app.test").await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let app = backend("app").await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |b| {
        b.idle_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    let driver = tokio::spawn(conn);
    let req = http::Request::get("http://app.test/one")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let idle_from = Instant::now();
    // The proxy sends GOAWAY and closes: the client's connection ends.
    if tokio::time::timeout(Duration::from_secs(3), driver)
        .await
        .is_err()
    {
        panic!(
            "still open after the idle timeout:\n{}",
            p.metrics()
                .await
                .lines()
                .filter(|l| l.starts_with("meshgate_downstream"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    assert!(
        idle_from.elapsed() >= Duration::from_millis(400),
        "not before the idle timeout: {:?}",
        idle_from.elapsed()
    );
    assert_eq!(
        wait_metric(
            &p,
            "meshgate_downstream_timeouts_total{kind=\"idle_timeout\"}",
            1.0
        )
        .await,
        1.0
    );
}

/// An idle HTTP/1.1 keep-alive connection outlives the request-head
/// timeout (which starts at a request's first byte) and its parked state
/// (no hyper session after 250 ms idle), and is closed at the idle timeout.
#[tokio::test]
async fn an_idle_http1_connection_is_closed_after_the_idle_timeout() {
    let app = backend("app").await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |b| {
        b.idle_timeout = Duration::from_millis(1500);
        b.request_header_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(s))
        .await
        .unwrap();
    let mut driver = tokio::spawn(conn);
    let get = |path: &str| {
        http::Request::get(format!("http://app.test{path}"))
            .header("host", "app.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap()
    };
    let resp = sender.send_request(get("/one")).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    // Past the head timeout and the park: still open, still served.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(!driver.is_finished(), "closed before the idle timeout");
    let resp = sender.send_request(get("/two")).await.unwrap();
    assert_eq!(resp.status(), 200);
    drop(resp);
    let idle_from = Instant::now();
    if tokio::time::timeout(Duration::from_secs(5), &mut driver)
        .await
        .is_err()
    {
        panic!("still open after the idle timeout");
    }
    assert!(
        idle_from.elapsed() >= Duration::from_millis(1300),
        "not before the idle timeout: {:?}",
        idle_from.elapsed()
    );
    assert_eq!(
        wait_metric(
            &p,
            "meshgate_downstream_timeouts_total{kind=\"idle_timeout\"}",
            1.0
        )
        .await,
        1.0
    );
}

/// A request whose body stops arriving: the proxy answers 408 at the
/// stream idle timeout and lets go of the upstream request.
#[tokio::test]
async fn a_stalled_request_body_frees_its_upstream_request() {
    // An app that reads the request head and waits for the body.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    let (freed_tx, freed_rx) = tokio::sync::oneshot::channel::<Duration>();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let _ = read_head(&mut s).await;
        let since = Instant::now();
        let mut buf = [0u8; 1024];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
        let _ = freed_tx.send(since.elapsed());
    });
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |b| {
        b.stream_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100\r\n\r\n0123456789",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(3), read_head(&mut s))
        .await
        .expect("answered at the stream idle timeout")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("stream_idle_timeout"), "{head}");
    let freed = tokio::time::timeout(Duration::from_secs(3), freed_rx)
        .await
        .expect("the upstream request is released")
        .unwrap();
    assert!(freed < Duration::from_secs(2), "{freed:?}");
    assert_eq!(
        wait_metric(
            &p,
            "meshgate_downstream_timeouts_total{kind=\"stream_idle_timeout\"}",
            1.0
        )
        .await,
        1.0
    );
}

/// A chunked body with a broken chunk size is the client's fault: 400.
#[tokio::test]
async fn a_malformed_chunked_body_is_400_not_an_upstream_error() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut s).await;
                let _ = read_for(&mut s, Duration::from_secs(10)).await;
            });
        }
    });
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(3), read_head(&mut s))
        .await
        .expect("answered")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
}
