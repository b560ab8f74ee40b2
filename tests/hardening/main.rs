//! The HTTP layer under hostile input: each case a defect a probe found
//! (upgrade smuggling, path normalisation, idle connections, header limits
//! and framing, upstream amplification, identity header injection), with
//! the status or reason the client gets, the metric that counts it, and
//! other clients still served.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate::bootstrap::Bootstrap;
use meshgate::standin::fetch;
use meshgate::test_util::{TestProxy, metric_value, tempdir};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP/1.1 + h2c backend answering with JSON: its tag, the method,
/// path and version, and every request header it saw.
async fn backend(tag: &'static str) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        let mut headers = serde_json::Map::new();
                        for (k, v) in req.headers() {
                            if let Value::Array(a) =
                                headers.entry(k.as_str().to_string()).or_insert(json!([]))
                            {
                                a.push(json!(v.to_str().unwrap_or("")));
                            }
                        }
                        let body = json!({
                            "backend": tag,
                            "method": req.method().as_str(),
                            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                            "version": format!("{:?}", req.version()),
                            "headers": headers,
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                        ))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
            });
        }
    });
    addr
}

/// A raw backend that answers ANY request carrying an `Upgrade` header
/// with 101 and then echoes bytes (what an h2c- or WebSocket-capable app
/// does); other requests get a plain 200. Records each request head.
async fn upgrading_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                loop {
                    let Ok(head) = read_head(&mut s).await else {
                        return;
                    };
                    if head.is_empty() {
                        return;
                    }
                    seen.lock().unwrap().push(head.clone());
                    let lower = head.to_ascii_lowercase();
                    if let Some(token) = lower
                        .lines()
                        .find_map(|l| l.strip_prefix("upgrade:"))
                        .map(|t| t.trim().to_string())
                    {
                        let _ = s
                            .write_all(
                                format!(
                                    "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {token}\r\n\r\n"
                                )
                                .as_bytes(),
                            )
                            .await;
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                        return;
                    }
                    let _ = s
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                }
            });
        }
    });
    (addr, heads)
}

/// Reads until `\r\n\r\n`, one byte at a time (nothing after it is taken).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            break;
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads whatever arrives within `limit` (or until the peer closes).
async fn read_for<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    got
}

/// A Gateway with one plain HTTP server on config port 8080 for `hosts`,
/// and a VirtualService with `routes` (YAML list items under `http:`).
fn plain_gateway(hosts: &str, routes: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [{hosts}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [{hosts}]
  gateways: [gw]
  http:
{routes}"#
    )
}

/// A route item sending everything to `backend`.
fn route_to(backend: SocketAddr) -> String {
    format!(
        "  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
        backend.port()
    )
}

/// Starts a proxy with config port 8080 on 127.0.0.1:0.
async fn start(yaml: &str, tweak: impl FnOnce(&mut Bootstrap)) -> TestProxy {
    match TestProxy::start(tempdir(), yaml, move |b| {
        b.port_map.insert(8080, "127.0.0.1:0".parse().unwrap());
        tweak(b);
    })
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("proxy failed to start: {e}\n--- config ---\n{yaml}"),
    }
}

/// Polls the proxy's metric `key` until it reaches `want`, at most 3 s;
/// returns the last value.
async fn wait_metric(p: &TestProxy, key: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = metric_value(&p.metrics().await, key);
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A well-behaved request still gets its answer.
async fn still_served(addr: SocketAddr, host: &str) {
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        fetch(addr, "GET", "/ok", Some(host)),
    )
    .await
    .expect("answered in time")
    .expect("answered");
    assert_eq!(r.status, 200, "another client is still served: {}", r.body);
}

mod identity;
mod idle;
mod limits;
mod paths;
mod timeouts;
mod upgrades;
