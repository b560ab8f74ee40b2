//! Making one upstream connection: resolve, TCP connect (classified
//! errors, ejected endpoints skipped), TLS, and the HTTP/1.1 or h2
//! handshake whose connection is then driven by a task of the drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;

use super::error::UpstreamError;
use super::key::PoolKey;
use crate::metrics::Metrics;
use crate::runtime::drain::Drain;
use crate::runtime::http::Body;
use crate::tls::{FailureReason, classify};

/// The `listener` label of outbound handshakes.
static OUTBOUND_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("outbound"));

/// The request side of an HTTP connection.
pub enum Sender {
    /// HTTP/1.1: one request at a time.
    H1(http1::SendRequest<Body>),
    /// HTTP/2 (h2 or h2c): shared by concurrent requests.
    H2(http2::SendRequest<Body>),
}

/// Resolves and connects TCP to the first reachable endpoint, starting at
/// `pick` (round robin) and skipping those `skip` names unless every one
/// is skipped. Each endpoint that fails is reported to `failed`. Returns
/// the stream and the endpoint's index.
pub async fn connect_tcp(
    to: &Target<'_>,
    pick: u64,
    skip: &(dyn Fn(usize) -> bool + Sync),
    failed: &mut (dyn FnMut(usize) + Send),
) -> Result<(TcpStream, usize), UpstreamError> {
    let Target {
        endpoints,
        timeout,
        source,
        own,
    } = *to;
    let mut last = UpstreamError::NoEndpoints;
    let n = endpoints.len();
    if n == 0 {
        return Err(last);
    }
    let start = (pick % n as u64) as usize;
    let order = (0..n).map(|i| (start + i) % n);
    let mut candidates: Vec<usize> = order.clone().filter(|i| !skip(*i)).collect();
    if candidates.is_empty() {
        candidates = order.collect();
    }
    for i in candidates {
        let (host, port) = &endpoints[i];
        let addrs = match resolve(host, *port, timeout).await {
            Ok(a) => a,
            Err(e) => {
                last = e;
                failed(i);
                continue;
            }
        };
        let mut reached = false;
        for addr in addrs {
            if is_own(own, addr) {
                last = UpstreamError::Loop {
                    host: host.clone(),
                    port: *port,
                    addr,
                };
                reached = true;
                continue;
            }
            match tokio::time::timeout(timeout, connect_from(source, addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, i));
                }
                Ok(Err(source)) => {
                    last = UpstreamError::Connect {
                        host: host.clone(),
                        addr,
                        source,
                    };
                }
                Err(_) => {
                    last = UpstreamError::ConnectTimeout {
                        host: host.clone(),
                        addr,
                        timeout,
                    };
                }
            }
        }
        if !reached {
            failed(i);
        }
    }
    Err(last)
}

/// Where [`connect_tcp`] connects.
#[derive(Clone, Copy)]
pub struct Target<'a> {
    /// Endpoints (host or IP, port).
    pub endpoints: &'a [(String, u16)],
    /// Per address tried.
    pub timeout: Duration,
    /// The local address to connect from, when not the system's choice
    /// (used for endpoints of its family only).
    pub source: Option<std::net::IpAddr>,
    /// The proxy's own outbound listener, never connected to.
    pub own: Option<SocketAddr>,
}

/// Connects to `addr`, from `source` when given and of `addr`'s family.
async fn connect_from(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
) -> std::io::Result<TcpStream> {
    let Some(source) = source.filter(|s| s.is_ipv4() == addr.is_ipv4()) else {
        return TcpStream::connect(addr).await;
    };
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Whether `addr` is the proxy's own outbound listener `own`.
fn is_own(own: Option<SocketAddr>, addr: SocketAddr) -> bool {
    own.is_some_and(|own| {
        own.port() == addr.port()
            && (own.ip() == addr.ip()
                || (own.ip().is_unspecified()
                    && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
    })
}

/// TLS (when the key says so) and the HTTP handshake over `tcp`. The
/// connection is driven by a task of `drain` that holds `guard` (the
/// connection's slot in the pool limits) until the connection ends.
pub async fn handshake<G: Send + 'static>(
    key: &PoolKey,
    sni: Option<&ServerName<'static>>,
    tcp: TcpStream,
    metrics: &Arc<Metrics>,
    drain: &Drain,
    guard: G,
) -> Result<Sender, UpstreamError> {
    let policy = &key.policy;
    metrics.upstream_connections.inc();
    match (&key.tls, sni) {
        (Some(config), Some(sni)) => {
            let started = Instant::now();
            let tls = match tokio::time::timeout(
                policy.connect_timeout,
                crate::tls::client::connect(&config.0, sni.clone(), tcp),
            )
            .await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    return Err(UpstreamError::Tls {
                        reason: e.reason,
                        detail: e.detail,
                    });
                }
                Err(_) => return Err(UpstreamError::HandshakeTimeout(policy.connect_timeout)),
            };
            let (_, conn) = tls.get_ref();
            metrics.handshake_done("outbound", &OUTBOUND_LABEL, conn, started.elapsed());
            let h2 = conn.alpn_protocol() == Some(crate::tls::client::ALPN_H2);
            handshake_http(TokioIo::new(tls), h2, metrics, drain, guard).await
        }
        _ => handshake_http(TokioIo::new(tcp), policy.h2, metrics, drain, guard).await,
    }
}

async fn handshake_http<T, G>(
    io: TokioIo<T>,
    h2: bool,
    metrics: &Arc<Metrics>,
    drain: &Drain,
    guard: G,
) -> Result<Sender, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    G: Send + 'static,
{
    let open = OpenConnection::new(metrics.clone());
    if h2 {
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(|e| exchange_error(&e))?;
        drain.spawn_upstream(async move {
            let _open = open;
            let _guard = guard;
            let _ = conn.await;
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| exchange_error(&e))?;
        drain.spawn_upstream(async move {
            let _open = open;
            let _guard = guard;
            let _ = conn.with_upgrades().await;
        });
        Ok(Sender::H1(sender))
    }
}

/// Counts an upstream connection as open until dropped (however its task
/// ends).
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> OpenConnection {
        metrics.upstream_connections_active.inc();
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.upstream_connections_active.dec();
    }
}

/// Classifies an error that happened while exchanging the request: a TLS
/// alert sent after the handshake (TLS 1.3 client-certificate rejection)
/// or a reset.
pub fn exchange_error(e: &hyper::Error) -> UpstreamError {
    match classify(e) {
        Some((reason, detail)) => UpstreamError::Exchange { reason, detail },
        None => UpstreamError::Exchange {
            reason: FailureReason::ConnectionReset,
            detail: error_chain(e),
        },
    }
}

/// `e` and its sources, for the log (h2's reason is in a source).
fn error_chain(e: &hyper::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

async fn resolve(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, UpstreamError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let dns = |detail: String| UpstreamError::Dns {
        host: host.to_string(),
        detail,
    };
    // The system resolver, so /etc/hosts and resolv.conf apply as they do
    // for the application.
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let v: Vec<_> = addrs.collect();
            if v.is_empty() {
                Err(dns("no addresses".into()))
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(dns(e.to_string())),
        Err(_) => Err(dns(format!("resolution took longer than {timeout:?}"))),
    }
}
