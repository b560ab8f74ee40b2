//! HTTP after TLS termination under hostile clients (catalogue 2.B): a
//! trickled header block, request smuggling with Content-Length and
//! Transfer-Encoding, bad Host headers, a request for another server's
//! host, oversized heads, and HTTP/2 rapid reset and CONTINUATION floods.

use super::*;

/// Another host served on the same port (421 case).
const OTHER: &str = "other.hostile.test";

/// A TLS connection to the Gateway speaking HTTP/1.1 (or h2 by ALPN).
async fn tls(g: &Gateway, h2: bool) -> tokio_rustls::client::TlsStream<TcpStream> {
    let o = ClientOpts {
        h2,
        ..g.client(HOST)
    };
    tls_connect(g.addr, &o).await.expect("TLS handshake")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_on_the_headers_is_cut_at_the_request_header_timeout() {
    const HEADER_TIMEOUT: Duration = Duration::from_millis(500);
    bounded(async {
        let g = gateway(&[HOST], &[], |b| b.request_header_timeout = HEADER_TIMEOUT).await;
        let m0 = g.p.metrics().await;
        let opened0 = metric_sum(
            &m0,
            "meshgate_downstream_connections_total",
            &[&g.listener()],
        );
        let bystander = g.bystander();
        // Half the clients trickle a header block one byte every 50 ms
        // (it would take seconds); the others send nothing after the
        // handshake.
        let mut slow = tokio::task::JoinSet::new();
        for i in 0..8 {
            let s = tls(&g, false).await;
            slow.spawn(async move {
                let started = Instant::now();
                let (mut rx, mut tx) = tokio::io::split(s);
                let trickle = tokio::spawn(async move {
                    if i % 2 == 1 {
                        return;
                    }
                    let head = format!(
                        "GET /slow HTTP/1.1\r\nHost: {HOST}\r\nX-Slow: {}",
                        "a".repeat(200)
                    );
                    for b in head.bytes() {
                        if tx.write_all(&[b]).await.is_err() || tx.flush().await.is_err() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                });
                let got = read_until_closed(&mut rx, Duration::from_secs(3)).await;
                trickle.abort();
                (i, started.elapsed(), got)
            });
        }
        while let Some(r) = slow.join_next().await {
            let (i, took, got) = r.unwrap();
            let got = got.unwrap_or_else(|_| panic!("slow client {i} still open after 3 s"));
            assert!(
                took >= HEADER_TIMEOUT - Duration::from_millis(100) && took < HEADER_TIMEOUT * 4,
                "slow client {i} closed after {took:?} (timeout {HEADER_TIMEOUT:?})"
            );
            // hyper closes at the timeout without a response (no 408).
            assert!(
                got.is_empty(),
                "slow client {i}: {:?}",
                String::from_utf8_lossy(&got)
            );
        }
        let served = bystander.finish("during a header slowloris").await;
        // The slow connections were counted as connections, and never as
        // requests: no request record is written for a head that never
        // arrived.
        let m = wait_metric(&g.p, "the slow connections are counted", |m| {
            metric_sum(m, "meshgate_downstream_connections_total", &[&g.listener()])
                >= opened0 + 8.0 + served as f64
        })
        .await;
        assert_eq!(
            all_requests(&m),
            served as f64,
            "only the bystander's requests counted"
        );
        assert!(
            g.app.seen().iter().all(|l| !l.contains("/slow")),
            "{:?}",
            g.app.seen()
        );
        g.assert_connections_closed("the slow connections are released")
            .await;
    })
    .await;
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_one_request_then_close() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let mut s = tls(&g, false).await;
        // Chunked says the body is empty; Content-Length says 6 bytes. If
        // the proxy believed Content-Length (or kept the connection), the
        // bytes after the chunked body would become a second request.
        let req = format!(
            "POST /cl-te HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGPOST /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let got = read_until_closed(&mut s, Duration::from_secs(3))
            .await
            .expect("the connection is closed after the response");
        let text = String::from_utf8_lossy(&got);
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "one response: {text}");
        assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
        assert!(text.ends_with("app:/cl-te"), "{text}");
        // Transfer-Encoding won: the app got one POST with an empty body,
        // and never the smuggled request.
        let seen: Vec<String> = g
            .app
            .seen()
            .into_iter()
            .filter(|l| !l.contains("/bystander"))
            .collect();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(seen[0].starts_with("POST /cl-te ") && seen[0].ends_with(" body=0"), "{seen:?}");
        let served = bystander.finish("beside a smuggling attempt").await;
        wait_metric(&g.p, "one 200 counted for the smuggling attempt", |m| {
            requests(m, 200, "") == served as f64 + 1.0
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn duplicate_or_missing_host_is_400_on_both_listeners() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let cases = [
            "GET /dup HTTP/1.1\r\nHost: service.hostile.test\r\nHost: evil.test\r\n\r\n",
            "GET /none HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /none10 HTTP/1.0\r\n\r\n",
        ];
        let mut answered = 0.0;
        for req in cases {
            // The Gateway (after TLS) and the outbound listener (the app's
            // side) refuse alike.
            let mut s = tls(&g, false).await;
            s.write_all(req.as_bytes()).await.unwrap();
            s.flush().await.unwrap();
            let inbound = read_head(&mut s).await;
            let mut o = TcpStream::connect(g.p.proxy.outbound).await.unwrap();
            o.write_all(req.as_bytes()).await.unwrap();
            let outbound = read_head(&mut o).await;
            for (side, head) in [("inbound", inbound), ("outbound", outbound)] {
                assert!(
                    head.starts_with("HTTP/1.") && head.contains(" 400 "),
                    "{side} {req:?}: {head}"
                );
                assert!(
                    head.to_ascii_lowercase()
                        .contains("x-meshgate-error: bad_request"),
                    "{side} {req:?}: {head}"
                );
                answered += 1.0;
            }
        }
        wait_metric(&g.p, "every refusal counted as 400 bad_request", |m| {
            requests(m, 400, "bad_request") == answered
        })
        .await;
        assert!(
            g.app.seen().iter().all(|l| l.contains("/bystander")),
            "{:?}",
            g.app.seen()
        );
        bystander.finish("beside bad Host headers").await;
    })
    .await;
}

#[tokio::test]
async fn another_servers_host_on_a_connection_is_421() {
    bounded(async {
        let g = gateway(&[HOST, OTHER], &[], |_| {}).await;
        let bystander = g.bystander();
        for h2 in [false, true] {
            let mut conn = meshgate::test_util::HttpsConn::new(tls(&g, h2).await, h2)
                .await
                .unwrap();
            let r = conn.get(OTHER, "/misdirected", &[]).await.unwrap();
            assert_eq!(r.status, 421, "h2={h2}: {}", r.body);
            assert_eq!(r.headers["x-meshgate-error"], "misdirected_request");
            // The connection still serves the host it was opened for.
            let r = conn.get(HOST, "/own", &[]).await.unwrap();
            assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        }
        wait_metric(&g.p, "each 421 counted", |m| {
            requests(m, 421, "misdirected_request") == 2.0
        })
        .await;
        assert!(g.app.seen().iter().all(|l| !l.contains("/misdirected")));
        bystander.finish("beside misdirected requests").await;
        // A connection opened for the other host reaches it.
        let o = g.client(OTHER);
        assert_ok(
            https_get(g.addr, &o, OTHER, "/", &[]).await,
            "the other host on its own connection",
        );
    })
    .await;
}

/// Reads a response head (up to the blank line), at most 3 s.
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        while !out.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), read)
        .await
        .expect("a response head within 3 s");
    head_of(&out)
}

/// Sends `head` over TLS no faster than the proxy reads it; returns the
/// answer's head.
async fn oversized(g: &Gateway, head: &str) -> String {
    let mut s = tls(g, false).await;
    let got = write_until_answered(&mut s, head.as_bytes(), 2048, Duration::from_millis(20)).await;
    head_of(&got)
}

#[tokio::test]
async fn oversized_heads_are_refused_by_hyper() {
    bounded(async {
        let g = gateway(&[HOST], &[], |b| b.max_header_bytes = 16 * 1024).await;
        let bystander = g.bystander();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {}\r\n\r\n",
            "b".repeat(64 * 1024)
        );
        let many = format!(
            "GET / HTTP/1.1\r\nHost: {HOST}\r\n{}\r\n",
            (0..101)
                .map(|i| format!("X-H{i}: v\r\n"))
                .collect::<String>()
        );
        let long_uri = format!(
            "GET /{} HTTP/1.1\r\nHost: {HOST}\r\n\r\n",
            "u".repeat(70 * 1024)
        );
        for (what, head, want) in [
            ("a 64 KiB header with a 16 KiB limit", &big, "HTTP/1.1 431 "),
            ("101 headers", &many, "HTTP/1.1 431 "),
            // hyper's 414 needs a URI longer than 64 KiB in a buffer
            // that holds it; the 16 KiB head limit is reached first.
            ("a 70 KiB URI", &long_uri, "HTTP/1.1 431 "),
        ] {
            let answer = oversized(&g, head).await;
            assert!(answer.starts_with(want), "{what}: {answer}");
        }
        let served = bystander.finish("beside oversized heads").await;
        // hyper answers these itself: no request reaches meshgate's
        // handler, so none is counted and the app sees none.
        let m = g.p.metrics().await;
        assert_eq!(
            all_requests(&m),
            served as f64,
            "only the bystander's requests counted"
        );
        assert_eq!(g.app.seen().len(), served);
        g.assert_connections_closed("refused connections are released")
            .await;
    })
    .await;
}

// ===================================================================
// HTTP/2 floods, frames written by hand
// ===================================================================

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const CANCEL: u32 = 0x8;
const ENHANCE_YOUR_CALM: u32 = 0xb;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET https://HOST/`: static-table entries for `:method GET`,
/// `:scheme https` and `:path /`, and `:authority` as a literal.
fn get_block() -> Vec<u8> {
    let mut b = vec![0x82, 0x87, 0x84, 0x01, HOST.len() as u8];
    b.extend_from_slice(HOST.as_bytes());
    b
}

/// Reads the server's frames until the connection ends; the GOAWAY error
/// code if one came.
async fn read_goaway<R: AsyncRead + Unpin>(mut rx: R) -> Option<u32> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let mut goaway = None;
    loop {
        match rx.read(&mut chunk).await {
            Ok(0) | Err(_) => return goaway,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                goaway = Some(u32::from_be_bytes(buf[13..17].try_into().unwrap()));
            }
            buf.drain(..9 + len);
        }
    }
}

/// Writes `flood` batches (until the write fails or `limit` batches) on a
/// fresh h2 connection while reading; the GOAWAY code the proxy sent, the
/// batches written and how long until the connection ended.
async fn flood(
    g: &Gateway,
    first: Vec<u8>,
    batch: impl Fn(u32) -> Vec<u8>,
    limit: u32,
) -> (Option<u32>, u32, Duration) {
    let s = tls(g, true).await;
    let started = Instant::now();
    let (rx, mut tx) = tokio::io::split(s);
    let reader = tokio::spawn(read_goaway(rx));
    let mut sent = 0;
    if tx.write_all(&first).await.is_ok() {
        while sent < limit && !reader.is_finished() {
            if tx.write_all(&batch(sent)).await.is_err() {
                break;
            }
            sent += 1;
            tokio::task::yield_now().await;
        }
    }
    let goaway = tokio::time::timeout(Duration::from_secs(3), reader)
        .await
        .expect("the proxy ends the flooding connection")
        .unwrap();
    (goaway, sent, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let opened0 = metric_sum(
            &g.p.metrics().await,
            "meshgate_downstream_connections_total",
            &[],
        );
        let bystander = g.bystander();
        let mut first = PREFACE.to_vec();
        first.extend(frame(SETTINGS, 0, 0, &[]));
        // 100 streams per batch, each opened and cancelled at once.
        const PER_BATCH: u32 = 100;
        let (goaway, sent, took) = flood(
            &g,
            first,
            |n| {
                let mut b = Vec::new();
                for i in 0..PER_BATCH {
                    let id = 2 * (n * PER_BATCH + i) + 1;
                    b.extend(frame(HEADERS, END_HEADERS | END_STREAM, id, &get_block()));
                    b.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
                }
                b
            },
            1000,
        )
        .await;
        eprintln!(
            "rapid reset: {} streams written, GOAWAY {goaway:?} after {took:?}",
            sent * PER_BATCH
        );
        assert_eq!(
            goaway,
            Some(ENHANCE_YOUR_CALM),
            "GOAWAY ENHANCE_YOUR_CALM ({sent} batches)"
        );
        assert!(
            sent < 1000,
            "cut off before the flood ended ({sent} batches)"
        );
        bystander.finish("during a rapid-reset flood").await;
        let m = wait_metric(&g.p, "the flooding connection is closed", |m| {
            metric_sum(
                m,
                "meshgate_downstream_connections_active",
                &[&g.listener()],
            ) == 0.0
        })
        .await;
        assert!(metric_sum(&m, "meshgate_downstream_connections_total", &[]) > opened0);
        g.assert_served("after the flood").await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() {
    bounded(async {
        let g = gateway(&[HOST], &[], |_| {}).await;
        let bystander = g.bystander();
        let mut first = PREFACE.to_vec();
        first.extend(frame(SETTINGS, 0, 0, &[]));
        // A header block that never ends: HEADERS without END_HEADERS,
        // then CONTINUATION frames of small literal headers.
        first.extend(frame(HEADERS, END_STREAM, 1, &get_block()));
        let literal: Vec<u8> = {
            let mut l = vec![0x00, 0x07];
            l.extend_from_slice(b"x-flood");
            l.push(32);
            l.extend_from_slice(&[b'f'; 32]);
            l
        };
        let (goaway, sent, took) =
            flood(&g, first, |_| frame(CONTINUATION, 0, 1, &literal), 100_000).await;
        eprintln!("CONTINUATION flood: {sent} frames written, GOAWAY {goaway:?} after {took:?}");
        assert_eq!(
            goaway,
            Some(ENHANCE_YOUR_CALM),
            "GOAWAY ENHANCE_YOUR_CALM ({sent} frames)"
        );
        assert!(sent < 100_000, "cut off before the flood ended");
        assert!(
            g.app.seen().iter().all(|l| l.contains("/bystander")),
            "{:?}",
            g.app.seen()
        );
        bystander.finish("during a CONTINUATION flood").await;
        g.assert_connections_closed("the flooding connection is closed")
            .await;
        g.assert_served("after the flood").await;
    })
    .await;
}
