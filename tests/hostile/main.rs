//! Hostile clients and faulty peers: the cases of the reliability catalogue
//! (`reliability.md` §2) that meshgate handles today.
//!
//! Every case asserts three things: (a) what the hostile client gets (the
//! status, TLS alert or close), (b) the metric that counts it, and (c) that
//! a well-behaved client keeps being served while the hostile one is active
//! and after. Every case is bounded: short timeouts come from the bootstrap
//! (`handshake_timeout`, `request_header_timeout`) and each test body runs
//! under [`bounded`].
//!
//! Modules by area; a new area is one more `mod` line at the end.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate::bootstrap::Bootstrap;
use meshgate::devpki::{DevCa, Leaf, LeafSpec};
use meshgate::test_util::{ClientOpts, TestProxy, https_get, tempdir, tls_connect};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The host the Gateway serves.
const HOST: &str = "service.hostile.test";

/// The longest any one case may take.
const CASE_LIMIT: Duration = Duration::from_secs(10);

/// How long a metric may lag behind what the client already saw.
const METRIC_LAG: Duration = Duration::from_secs(3);

/// Runs a test body, failing it if it takes longer than [`CASE_LIMIT`].
async fn bounded<F: Future>(f: F) -> F::Output {
    match tokio::time::timeout(CASE_LIMIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("the case took longer than {CASE_LIMIT:?}"),
    }
}

// ===================================================================
// The app behind the proxy
// ===================================================================

/// A plain HTTP/1.1 + h2c app that records one line per request
/// (`METHOD path cl=<content-length> te=<transfer-encoding> body=<bytes>`)
/// and answers `app:<path>` after `delay`.
struct App {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl App {
    async fn start(delay: Duration) -> App {
        use http_body_util::BodyExt as _;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let log = log.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: ::http::Request<hyper::body::Incoming>| {
                            let log = log.clone();
                            async move {
                                let header = |n: ::http::header::HeaderName| {
                                    req.headers()
                                        .get(n)
                                        .map(|v| v.to_str().unwrap_or("?").to_string())
                                };
                                let line = format!(
                                    "{} {} cl={:?} te={:?}",
                                    req.method(),
                                    req.uri().path(),
                                    header(::http::header::CONTENT_LENGTH),
                                    header(::http::header::TRANSFER_ENCODING),
                                );
                                let path = req.uri().path().to_string();
                                let body = req.into_body().collect().await.map(|b| b.to_bytes());
                                let n = body.as_ref().map_or(0, |b| b.len());
                                log.lock().unwrap().push(format!("{line} body={n}"));
                                tokio::time::sleep(delay).await;
                                Ok::<_, std::convert::Infallible>(::http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(format!(
                                        "app:{path}"
                                    ))),
                                ))
                            }
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
        App { addr, seen }
    }

    /// The requests the app received so far.
    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

// ===================================================================
// An inbound Gateway in front of the app
// ===================================================================

/// A proxy with one HTTPS Gateway server per host on config port 443 (one
/// certificate naming every host), and a VirtualService sending every
/// request for those hosts to an [`App`].
struct Gateway {
    p: TestProxy,
    /// The CA that issued the server certificate.
    ca: DevCa,
    /// The server certificate.
    leaf: Leaf,
    /// Where port 443 is served.
    addr: SocketAddr,
    app: App,
}

/// `tls:` lines of every server: `mode: SIMPLE` with the certificate, then
/// `extra` (a later `mode:` line replaces the first).
async fn gateway(hosts: &[&str], extra: &[String], tweak: impl FnOnce(&mut Bootstrap)) -> Gateway {
    let dir = tempdir();
    let ca = DevCa::new("hostile server CA");
    let leaf = ca.issue(&LeafSpec::server(hosts));
    let (cert, key) = leaf.write(dir.path(), "server").unwrap();
    let mut tls = vec![
        "mode: SIMPLE".to_string(),
        format!("serverCertificate: {}", cert.display()),
        format!("privateKey: {}", key.display()),
    ];
    for l in extra {
        if l.starts_with("mode:") {
            tls[0] = l.clone();
        } else {
            tls.push(l.clone());
        }
    }
    let tls: String = tls.iter().map(|l| format!("      {l}\n")).collect();
    let servers: String = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            format!(
                "  - port: {{number: 443, name: https-{i}, protocol: HTTPS}}\n    hosts: [\"{h}\"]\n    tls:\n{tls}"
            )
        })
        .collect();
    let app = App::start(Duration::ZERO).await;
    let host_list = hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
{servers}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts: [{host_list}]
  gateways: [ingress]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        port = app.addr.port()
    );
    let p = match TestProxy::start(dir, &yaml, |b| {
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        tweak(b);
    })
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("proxy failed to start: {e}\n--- config ---\n{yaml}"),
    };
    let addr = p.proxy.inbound()[&443];
    Gateway {
        p,
        ca,
        leaf,
        addr,
        app,
    }
}

impl Gateway {
    /// A client that trusts the server CA and asks for `host` by SNI.
    fn client(&self, host: &str) -> ClientOpts {
        ClientOpts {
            sni: Some(host.into()),
            ca_pem: self.ca.cert_pem.clone(),
            ..Default::default()
        }
    }

    /// The Prometheus label of the port-443 listener.
    fn listener(&self) -> String {
        format!("listener=\"{}_443\"", self.addr.ip())
    }

    /// A well-behaved client's request for `HOST` on a new connection:
    /// it must succeed quickly.
    async fn assert_served(&self, why: &str) {
        assert_ok(
            https_get(self.addr, &self.client(HOST), HOST, "/ok", &[]).await,
            why,
        );
    }

    /// Keeps a well-behaved client making requests for `HOST` (new TLS
    /// connection each time) until [`Bystander::finish`].
    fn bystander(&self) -> Bystander {
        let (addr, opts) = (self.addr, self.client(HOST));
        Bystander::start(move || {
            let opts = opts.clone();
            async move {
                match https_get(addr, &opts, HOST, "/bystander", &[]).await {
                    Ok(r) if r.status == 200 => Ok(()),
                    Ok(r) => Err(format!("status {}: {}", r.status, r.body)),
                    Err(e) => Err(e.to_string()),
                }
            }
        })
    }

    /// Waits until the port-443 listener has no open connection.
    async fn assert_connections_closed(&self, why: &str) {
        let l = self.listener();
        wait_metric(&self.p, why, |m| {
            metric_sum(m, "meshgate_downstream_connections_active", &[&l]) == 0.0
        })
        .await;
    }
}

fn assert_ok(r: Result<meshgate::standin::Fetched, meshgate::standin::StandInError>, why: &str) {
    match r {
        Ok(r) => assert_eq!(r.status, 200, "{why}: {}", r.body),
        Err(e) => panic!("{why}: a well-behaved request failed: {e}"),
    }
}

// ===================================================================
// A well-behaved client running beside a hostile one
// ===================================================================

/// A loop of well-behaved requests, one after another, while a hostile
/// client is active. Each request must succeed within a second.
struct Bystander {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl Bystander {
    fn start<F, Fut>(request: F) -> Bystander
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut ok, mut failures) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                let started = Instant::now();
                match tokio::time::timeout(Duration::from_secs(1), request()).await {
                    Ok(Ok(())) => ok += 1,
                    Ok(Err(e)) => failures.push(e),
                    Err(_) => failures.push(format!(
                        "no answer within 1 s (after {:?})",
                        started.elapsed()
                    )),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failures)
        });
        Bystander { stop, task }
    }

    /// Stops the loop; every request must have succeeded, and at least one.
    async fn finish(self, what: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (ok, failures) = self.task.await.expect("the bystander task");
        assert!(
            failures.is_empty(),
            "{what}: a well-behaved client failed {} time(s) ({ok} ok): {failures:?}",
            failures.len()
        );
        assert!(ok >= 1, "{what}: the well-behaved client made no request");
        ok
    }
}

// ===================================================================
// Metrics
// ===================================================================

/// Sum of every `name{...}` line whose labels contain all of `parts`; a
/// metric without labels (`name value`, a plain gauge) counts when `parts`
/// is empty.
fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    let labelled = format!("{name}{{");
    let plain = format!("{name} ");
    text.lines()
        .filter(|l| l.starts_with(&labelled) || l.starts_with(&plain))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Polls the proxy's metrics until `ok` holds (the proxy may count after
/// the client has seen the outcome); panics with `what` and the metrics.
async fn wait_metric(p: &TestProxy, what: &str, ok: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + METRIC_LAG;
    loop {
        let m = p.metrics().await;
        if ok(&m) {
            return m;
        }
        if Instant::now() > deadline {
            let relevant: Vec<&str> = m
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("meshgate_tls_handshake_failures")
                            || l.starts_with("istio_requests_total")
                            || l.starts_with("meshgate_downstream")
                            || l.starts_with("meshgate_config"))
                })
                .collect();
            panic!(
                "{what}: not seen in the metrics within {METRIC_LAG:?}:\n{}",
                relevant.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `meshgate_tls_handshake_failures_total` for one direction and reason.
fn failures(text: &str, direction: &str, reason: &str) -> f64 {
    metric_sum(
        text,
        "meshgate_tls_handshake_failures_total",
        &[
            &format!("direction=\"{direction}\""),
            &format!("reason=\"{reason}\""),
        ],
    )
}

/// `istio_requests_total` lines with this code and flag.
fn requests(text: &str, code: u16, flag: &str) -> f64 {
    metric_sum(
        text,
        "istio_requests_total",
        &[
            &format!("response_code=\"{code}\""),
            &format!("response_flags=\"{flag}\""),
        ],
    )
}

/// Every `istio_requests_total` line.
fn all_requests(text: &str) -> f64 {
    metric_sum(text, "istio_requests_total", &[])
}

// ===================================================================
// Raw sockets
// ===================================================================

/// Reads until EOF or an error; `Err` (with what was read) on timeout.
async fn read_until_closed<S: AsyncRead + Unpin>(
    s: &mut S,
    limit: Duration,
) -> Result<Vec<u8>, Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(got),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Writes `bytes` in `chunk`-sized pieces, `pause` apart, until they are
/// all written or the peer answers or closes; then reads the rest. Writing
/// no further than the peer reads means its answer is not lost to a reset
/// (a socket closed with unread input resets the connection).
async fn write_until_answered<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    bytes: &[u8],
    chunk: usize,
    pause: Duration,
) -> Vec<u8> {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    for piece in bytes.chunks(chunk) {
        if s.write_all(piece).await.is_err() || s.flush().await.is_err() {
            break;
        }
        match tokio::time::timeout(pause, s.read(&mut buf)).await {
            Err(_) => continue,
            Ok(Ok(n)) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Ok(_) => return answer,
        }
    }
    match read_until_closed(s, Duration::from_secs(3)).await {
        Ok(rest) => answer.extend_from_slice(&rest),
        Err(rest) => panic!(
            "the connection stayed open after {} answer bytes: {:?}",
            answer.len() + rest.len(),
            String::from_utf8_lossy(&[answer, rest].concat())
        ),
    }
    answer
}

/// The status line and headers of a raw HTTP/1.1 answer.
fn head_of(answer: &[u8]) -> String {
    let text = String::from_utf8_lossy(answer);
    text.split("\r\n\r\n").next().unwrap_or("").to_string()
}

mod http;
mod reload;
mod resources;
mod tls;
mod upstream;
