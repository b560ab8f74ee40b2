//! Upstream resilience end to end, with real sockets: DestinationRule
//! `connectionPool` limits (the amplification a probe found: every stuck
//! request opened and held one more upstream connection), outlier
//! detection, VirtualService retries, and `h2UpgradePolicy: UPGRADE`
//! against an upstream that only speaks HTTP/1.1 (nginx).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshgate::test_util::{TestProxy, metric_value, tempdir};
use tokio::net::TcpListener;

#[path = "../common/mod.rs"]
mod common;

mod limits;
mod outlier;
mod retries;
mod upgrade;

/// A ServiceEntry for `host` (port 80, plain HTTP) with STATIC endpoints.
fn service(host: &str, endpoints: &[SocketAddr]) -> String {
    let eps: String = endpoints
        .iter()
        .map(|a| {
            format!(
                "  - address: {}\n    ports:\n      http: {}\n",
                a.ip(),
                a.port()
            )
        })
        .collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
  resolution: STATIC
  endpoints:
{eps}---
",
        name = host.replace('.', "-"),
    )
}

/// A DestinationRule for `host` whose `trafficPolicy` is `policy` (YAML,
/// indented by four spaces here).
fn rule(host: &str, policy: &str) -> String {
    let policy: String = policy.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: {name}
spec:
  host: {host}
  trafficPolicy:
{policy}---
",
        name = host.replace('.', "-"),
    )
}

/// A mesh VirtualService for `host` with one route whose extra fields are
/// `extra` (e.g. `retries: {attempts: 0}`).
fn route(host: &str, extra: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}-route
spec:
  hosts: [{host}]
  http:
  - {extra}
    route:
    - destination: {{host: {host}}}
---
",
        name = host.replace('.', "-"),
    )
}

async fn proxy(yaml: &str) -> TestProxy {
    TestProxy::start(tempdir(), yaml, |_| {})
        .await
        .unwrap_or_else(|e| panic!("proxy does not start: {e}\n{yaml}"))
}

/// What the client got.
#[derive(Debug)]
struct Got {
    status: u16,
    error: String,
    body: String,
}

/// `method` `host``path` through the outbound listener on a connection of
/// its own, with `body` when given; `None` when no answer came within
/// `wait`.
async fn request(
    proxy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: Option<&'static str>,
    wait: Duration,
) -> Option<Got> {
    let exchange = async {
        let tcp = tokio::net::TcpStream::connect(proxy).await.ok()?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .ok()?;
        tokio::spawn(conn);
        let builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", host);
        let resp = match body {
            Some(b) => {
                sender
                    .send_request(builder.body(Full::new(Bytes::from(b))).ok()?)
                    .await
            }
            None => {
                // Bodiless, but with Content-Length: 0 as curl sends a POST.
                let req = builder
                    .header("content-length", "0")
                    .body(Full::new(Bytes::new()))
                    .ok()?;
                sender.send_request(req).await
            }
        }
        .ok()?;
        let status = resp.status().as_u16();
        let error = resp
            .headers()
            .get("x-meshgate-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some(Got {
            status,
            error,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(wait, exchange).await.ok().flatten()
}

/// An upstream that accepts connections, reads what comes, and never
/// answers; counts the connections it accepted.
async fn black_hole() -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                use tokio::io::AsyncReadExt;
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    (addr, accepted)
}

/// An HTTP/1.1 upstream answering every request with `status` and body
/// `tag`; counts the requests it received.
async fn answering(status: u16, tag: &'static str) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let count = count.clone();
                        async move {
                            // Read the body first, as a real service would.
                            let _ = req.into_body().collect().await;
                            count.fetch_add(1, Ordering::SeqCst);
                            let mut resp = http::Response::new(Full::new(Bytes::from(tag)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, requests)
}

/// A port nothing listens on (connections are refused).
fn refusing() -> SocketAddr {
    common::free_addr()
}

/// The value of `name` with exactly `labels` in the proxy's metrics.
async fn metric(p: &TestProxy, name_and_labels: &str) -> f64 {
    metric_value(&p.metrics().await, name_and_labels)
}
