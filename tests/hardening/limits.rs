//! Request-head limits held exactly and identically on HTTP/1.1 and
//! HTTP/2, Transfer-Encoding that cannot be framed safely refused, header
//! names with underscores per the bootstrap, and at most 100 concurrent
//! streams per HTTP/2 connection.

use super::*;

use meshgate::bootstrap::UnderscoreAction;

/// Sends one raw HTTP/1.1 request head (and body) and returns the answer
/// up to the close.
async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    String::from_utf8_lossy(&read_for(&mut s, Duration::from_secs(3)).await).into_owned()
}

/// GET / over h2 with prior knowledge and one `x-pad` header.
async fn h2_get(addr: SocketAddr, pad: usize) -> u16 {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("http://app.test/")
        .header("x-pad", "p".repeat(pad))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_head_limit_is_exact_on_both_protocols() {
    let app = backend("app").await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |b| {
        b.max_header_bytes = 4096;
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    // Counted: "GET" "/" "host" "app.test" "connection" "close" "x-pad" pad.
    let fixed = 3 + 1 + 4 + 8 + 10 + 5 + 5;
    let h1 = |pad: usize| {
        format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nX-Pad: {}\r\n\r\n",
            "p".repeat(pad)
        )
    };
    let at = raw(addr, &h1(4096 - fixed)).await;
    assert!(at.starts_with("HTTP/1.1 200"), "at the limit: {at:.60}");
    let over = raw(addr, &h1(4096 - fixed + 1)).await;
    assert!(
        over.starts_with("HTTP/1.1 431"),
        "one byte over: {over:.200}"
    );
    assert!(over.contains("request_headers_too_large"), "{over:.300}");
    // HTTP/2 counts the same way: "GET" "/" "app.test" "x-pad" pad.
    let fixed = 3 + 1 + 8 + 5;
    assert_eq!(h2_get(addr, 4096 - fixed).await, 200, "at the limit");
    assert_eq!(h2_get(addr, 4096 - fixed + 1).await, 431, "one byte over");
    // Every header counts: many small ones too.
    let many: String = (0..95)
        .map(|i| format!("X-H{i:02}: {}\r\n", "v".repeat(40)))
        .collect();
    let answer = raw(
        addr,
        &format!("GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{many}\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.100}");
    // 101 headers on HTTP/2 (hyper's HTTP/1.1 parser refuses them too).
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(s),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get("http://app.test/");
    for i in 0..101 {
        req = req.header(format!("x-{i}"), "v");
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 431);
    still_served(addr, "app.test").await;
}

#[tokio::test]
async fn transfer_encoding_other_than_one_chunked_is_400_and_closes() {
    let (app, heads) = upgrading_backend().await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for te in [
        "Transfer-Encoding: chunked, chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: identity\r\n",
    ] {
        // A second, smuggled request follows the first body.
        let answer = raw(
            addr,
            &format!(
                "POST / HTTP/1.1\r\nHost: app.test\r\n{te}\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n"
            ),
        )
        .await;
        assert!(
            answer.starts_with("HTTP/1.1 400") || answer.starts_with("HTTP/1.1 501"),
            "{te:?}: {answer:.200}"
        );
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{te:?}: one answer, then the connection closes: {answer}"
        );
    }
    assert!(heads.lock().unwrap().is_empty(), "the app saw nothing");
    still_served(addr, "app.test").await;
}

#[tokio::test]
async fn headers_with_underscores_follow_the_bootstrap() {
    let app = backend("app").await;
    let yaml = plain_gateway("\"app.test\"", &route_to(app));
    let request = "GET / HTTP/1.1\r\nHost: app.test\r\nX_User: admin\r\nX-User: me\r\nConnection: close\r\n\r\n";
    let seen = |answer: &str| -> Value {
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str::<Value>(body).unwrap_or_else(|e| panic!("{e}: {answer}"))["headers"]
            .clone()
    };
    let p = start(&yaml, |_| {}).await;
    let answer = raw(p.proxy.inbound()[&8080], request).await;
    assert_eq!(
        seen(&answer)["x_user"],
        json!(["admin"]),
        "ALLOW, Envoy's default"
    );

    let p = start(&yaml, |b| {
        b.headers_with_underscores_action = UnderscoreAction::DropHeader;
    })
    .await;
    let answer = raw(p.proxy.inbound()[&8080], request).await;
    let headers = seen(&answer);
    assert!(headers.get("x_user").is_none(), "{headers}");
    assert_eq!(headers["x-user"], json!(["me"]));

    let p = start(&yaml, |b| {
        b.headers_with_underscores_action = UnderscoreAction::RejectRequest;
    })
    .await;
    let answer = raw(p.proxy.inbound()[&8080], request).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:.200}");
    assert!(answer.contains("header_with_underscore"), "{answer:.300}");
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The 101st concurrent stream on one HTTP/2 connection is refused.
#[tokio::test]
async fn an_http2_connection_has_at_most_100_concurrent_streams() {
    let app = backend("app").await;
    let p = start(&plain_gateway("\"app.test\"", &route_to(app)), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    // HPACK: :method GET, :scheme http, :path /, :authority app.test
    // (literal, indexed name 1), no Huffman.
    let mut block = vec![0x82, 0x86, 0x84, 0x01, 8];
    block.extend_from_slice(b"app.test");
    // 101 requests whose bodies never end: each stays open.
    for i in 0..101u32 {
        out.extend(frame(0x1, 0x4, 2 * i + 1, &block));
    }
    s.write_all(&out).await.unwrap();
    // Read frames until the 101st stream (id 201) is reset.
    let mut buf = Vec::new();
    let mut settings_max = None;
    let mut refused = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut chunk = [0u8; 16384];
    while refused.is_none() {
        match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload = buf[9..9 + len].to_vec();
            buf.drain(..9 + len);
            if kind == 0x4 && flags & 1 == 0 {
                for p in payload.chunks(6) {
                    if p.len() == 6 && u16::from_be_bytes([p[0], p[1]]) == 0x3 {
                        settings_max = Some(u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
                    }
                }
            }
            if kind == 0x3 && stream == 201 {
                refused = Some(u32::from_be_bytes([
                    payload[0], payload[1], payload[2], payload[3],
                ]));
            }
        }
    }
    assert_eq!(settings_max, Some(100), "SETTINGS_MAX_CONCURRENT_STREAMS");
    assert_eq!(refused, Some(0x7), "stream 201 gets REFUSED_STREAM");
    still_served(addr, "app.test").await;
}
