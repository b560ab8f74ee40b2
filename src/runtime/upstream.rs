//! Upstream connections: resolve, connect, TLS handshake, HTTP handshake,
//! and a keep-alive pool per (endpoints, TLS settings).
//!
//! Never falls back to plain text or to an unverified connection: a failed
//! step is an [`UpstreamError`] with a classified reason.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::http::Body;
use crate::creds::Credentials;
use crate::metrics::Metrics;
use crate::plan::outbound::UpstreamPolicy;
use crate::tls::{FailureReason, classify};

/// A failed upstream step.
#[derive(Debug, Clone)]
pub struct UpstreamError {
    /// Stable reason (header, metric label).
    pub reason: FailureReason,
    /// Human details for the log.
    pub detail: String,
}

impl UpstreamError {
    fn new(reason: FailureReason, detail: impl Into<String>) -> Self {
        UpstreamError {
            reason,
            detail: detail.into(),
        }
    }
}

/// Identifies connections that may be shared: same endpoints, same TLS
/// settings and expected names, same configuration generation.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Endpoints (host or IP, port).
    pub endpoints: Vec<(String, u16)>,
    /// SNI sent, if TLS.
    pub sni: Option<String>,
    /// Names the server certificate is verified against.
    pub names: Vec<String>,
    /// The policy (TLS, timeouts, protocol).
    pub policy: PolicyRef,
    /// Configuration generation.
    pub generation: u64,
}

/// A shared policy compared by pointer first (the plan hands out the same
/// `Arc` for every request to a destination), by content otherwise, and
/// hashed on a few fields: pool and config-cache lookups stay cheap on the
/// request path.
#[derive(Debug, Clone)]
pub struct PolicyRef(pub Arc<UpstreamPolicy>);

impl PartialEq for PolicyRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for PolicyRef {}

impl std::hash::Hash for PolicyRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // A subset of what `eq` compares: equal values hash equally.
        self.0.tls.mode.hash(state);
        self.0.h2.hash(state);
        self.0.connect_timeout.hash(state);
        self.0.tls.sni.hash(state);
    }
}

impl std::ops::Deref for PolicyRef {
    type Target = UpstreamPolicy;
    fn deref(&self) -> &UpstreamPolicy {
        &self.0
    }
}

/// How to reach one upstream.
pub struct UpstreamSpec {
    /// Pool identity (and endpoints).
    pub key: Arc<PoolKey>,
    /// TLS client config and SNI; `None` for plain text.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// The `listener` label of outbound handshakes.
static OUTBOUND_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("outbound"));

/// Idle keep-alive connections kept per pool key.
const MAX_IDLE_PER_KEY: usize = 512;

/// Client configs are cached per (policy, generation), then by expected names.
type TlsKey = (PolicyRef, u64);

/// Client configs for one policy, by the names they verify.
type TlsConfigs = Vec<(Vec<String>, Arc<ClientConfig>)>;

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

struct IdleConn {
    sender: http1::SendRequest<Body>,
    uses: u32,
    since: Instant,
}

/// One worker's connections. An HTTP connection is driven by a task on
/// the worker that opened it, so only that worker uses it: a request and
/// its upstream connection never cross threads.
#[derive(Default)]
struct Shard {
    idle: Mutex<HashMap<Arc<PoolKey>, Vec<IdleConn>>>,
    h2: Mutex<HashMap<Arc<PoolKey>, http2::SendRequest<Body>>>,
}

/// Pools, TLS configs and connection bookkeeping for all upstreams.
pub struct Upstreams {
    metrics: Arc<Metrics>,
    tls_cache: Mutex<HashMap<TlsKey, TlsConfigs>>,
    /// Pools per worker.
    shards: super::workers::PerWorker<Shard>,
    /// The proxy's own outbound listener: never a valid upstream (a request
    /// for it would loop through the proxy until resources run out).
    own: std::sync::OnceLock<SocketAddr>,
}

impl Upstreams {
    /// Empty pools for `shards` threads (workers + 1).
    pub fn new(metrics: Arc<Metrics>, shards: usize) -> Upstreams {
        Upstreams {
            metrics,
            tls_cache: Mutex::new(HashMap::new()),
            shards: super::workers::PerWorker::new(shards),
            own: std::sync::OnceLock::new(),
        }
    }

    /// This thread's pools.
    fn shard(&self) -> &Shard {
        self.shards.get()
    }

    /// Records the proxy's own listener address for loop detection.
    pub fn set_own_address(&self, addr: SocketAddr) {
        let _ = self.own.set(addr);
    }

    fn is_own(&self, addr: SocketAddr) -> bool {
        self.own.get().is_some_and(|own| {
            own.port() == addr.port()
                && (own.ip() == addr.ip()
                    || (own.ip().is_unspecified()
                        && (addr.ip().is_loopback() || addr.ip().is_unspecified())))
        })
    }

    /// Drops cached TLS configs (after a reload).
    pub fn clear_tls_cache(&self) {
        lock(&self.tls_cache).clear();
    }

    /// The client config for `policy` verifying `names`; built once and
    /// reused so TLS sessions resume.
    pub fn tls_config(
        &self,
        policy: &PolicyRef,
        names: &[String],
        creds: &Credentials,
        generation: u64,
    ) -> Result<Arc<ClientConfig>, String> {
        let key = (policy.clone(), generation);
        if let Some(list) = lock(&self.tls_cache).get(&key)
            && let Some((_, c)) = list.iter().find(|(n, _)| n.as_slice() == names)
        {
            return Ok(c.clone());
        }
        let config = crate::tls::client::build(&policy.tls, names, policy.h2, creds)?;
        lock(&self.tls_cache)
            .entry(key)
            .or_default()
            .push((names.to_vec(), config.clone()));
        Ok(config)
    }

    /// Sends `req` on a pooled or new connection. A request that a reused
    /// connection could not send (closed by the peer while idle) is retried
    /// once on a new connection.
    pub async fn send(
        &self,
        spec: &UpstreamSpec,
        mut req: Request<Body>,
        pick: u64,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for _attempt in 0..2 {
            let (sender, uses, reused) = match self.checkout(&spec.key) {
                Some((s, uses)) => (s, uses, true),
                // Boxed: the connect and handshake state is large and only
                // needed for a new connection, so it stays out of every
                // request's (and every idle connection's) future.
                None => (Box::pin(self.connect(spec, pick)).await?, 0, false),
            };
            match sender {
                Sender::H2(mut s) => {
                    return match s.try_send_request(req).await {
                        Ok(resp) => Ok(resp),
                        Err(mut e) => {
                            lock(&self.shard().h2).remove(&spec.key);
                            match e.take_message() {
                                Some(r) if reused => {
                                    req = r;
                                    continue;
                                }
                                _ => Err(response_error(e.error())),
                            }
                        }
                    };
                }
                Sender::H1(mut s) => match s.try_send_request(req).await {
                    Ok(resp) => {
                        self.release(spec, s, uses + 1);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(r) if reused => {
                            req = r;
                            continue;
                        }
                        _ => return Err(response_error(e.error())),
                    },
                },
            }
        }
        Err(UpstreamError::new(
            FailureReason::ConnectionReset,
            "pooled connection closed before the request could be sent, and so did a new one",
        ))
    }

    fn checkout(&self, key: &PoolKey) -> Option<(Sender, u32)> {
        if key.policy.h2 {
            let mut h2 = lock(&self.shard().h2);
            if let Some(s) = h2.get(key) {
                if !s.is_closed() {
                    return Some((Sender::H2(s.clone()), 0));
                }
                h2.remove(key);
            }
        }
        let mut idle = lock(&self.shard().idle);
        let list = idle.get_mut(key)?;
        let max_idle = key.policy.idle_timeout;
        // Released connections may still be finishing their last response
        // (not ready yet): skip those, drop closed or idled-out ones, take
        // the most recently used ready one.
        let mut i = list.len();
        while i > 0 {
            i -= 1;
            let c = &list[i];
            let expired = !max_idle.is_zero() && c.since.elapsed() > max_idle;
            if expired || c.sender.is_closed() {
                list.swap_remove(i);
            } else if c.sender.is_ready() {
                let c = list.swap_remove(i);
                return Some((Sender::H1(c.sender), c.uses));
            }
        }
        None
    }

    /// Returns an HTTP/1.1 connection to the pool as soon as its response
    /// headers are in (it becomes ready for the next request once the body
    /// is done; `checkout` skips it until then), unless it reached
    /// `maxRequestsPerConnection`. No task per request: the hand-off costs a
    /// lock, not a wake-up.
    fn release(&self, spec: &UpstreamSpec, sender: http1::SendRequest<Body>, uses: u32) {
        let max = spec.key.policy.max_requests_per_connection;
        if max != 0 && uses >= max {
            return; // dropping the sender closes the connection
        }
        let mut pool = lock(&self.shard().idle);
        let list = pool.entry(spec.key.clone()).or_default();
        if list.len() >= MAX_IDLE_PER_KEY {
            list.retain(|c| !c.sender.is_closed());
            if list.len() >= MAX_IDLE_PER_KEY {
                list.remove(0);
            }
        }
        list.push(IdleConn {
            sender,
            uses,
            since: Instant::now(),
        });
    }

    /// Resolves and connects TCP to the first reachable endpoint, starting
    /// at `pick` (round robin).
    pub async fn connect_tcp(
        &self,
        endpoints: &[(String, u16)],
        timeout: Duration,
        pick: u64,
    ) -> Result<TcpStream, UpstreamError> {
        let mut last = UpstreamError::new(FailureReason::DnsFailure, "no endpoints");
        let n = endpoints.len().max(1);
        for i in 0..endpoints.len() {
            let (host, port) = &endpoints[(pick as usize + i) % n];
            let addrs = match resolve(host, *port, timeout).await {
                Ok(a) => a,
                Err(e) => {
                    last = e;
                    continue;
                }
            };
            for addr in addrs {
                if self.is_own(addr) {
                    last = UpstreamError::new(
                        FailureReason::LoopDetected,
                        format!(
                            "{host}:{port} resolves to {addr}, meshgate's own outbound listener"
                        ),
                    );
                    continue;
                }
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Ok(Err(e)) => {
                        let reason = if e.kind() == std::io::ErrorKind::ConnectionRefused {
                            FailureReason::ConnectRefused
                        } else {
                            FailureReason::ConnectionReset
                        };
                        last =
                            UpstreamError::new(reason, format!("connect to {addr} ({host}): {e}"));
                    }
                    Err(_) => {
                        last = UpstreamError::new(
                            FailureReason::ConnectTimeout,
                            format!("connect to {addr} ({host}) took longer than {timeout:?}"),
                        );
                    }
                }
            }
        }
        Err(last)
    }

    async fn connect(&self, spec: &UpstreamSpec, pick: u64) -> Result<Sender, UpstreamError> {
        let policy = &spec.key.policy;
        let tcp = self
            .connect_tcp(&spec.key.endpoints, policy.connect_timeout, pick)
            .await?;
        self.metrics.upstream_connections.inc();
        match &spec.tls {
            None => self.handshake_http(TokioIo::new(tcp), policy.h2).await,
            Some((config, sni)) => {
                let connector = TlsConnector::from(config.clone());
                let started = Instant::now();
                let tls = match tokio::time::timeout(
                    policy.connect_timeout,
                    connector.connect(sni.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        let err = match classify(&e) {
                            Some((reason, detail)) => UpstreamError::new(reason, detail),
                            None => UpstreamError::new(
                                FailureReason::HandshakeFailure,
                                format!("TLS handshake: {e}"),
                            ),
                        };
                        return Err(err);
                    }
                    Err(_) => {
                        return Err(UpstreamError::new(
                            FailureReason::ConnectTimeout,
                            format!(
                                "TLS handshake took longer than {:?}",
                                policy.connect_timeout
                            ),
                        ));
                    }
                };
                let (_, conn) = tls.get_ref();
                self.metrics
                    .handshake_done("outbound", &OUTBOUND_LABEL, conn, started.elapsed());
                let h2 = conn.alpn_protocol() == Some(crate::tls::client::ALPN_H2);
                self.handshake_http(TokioIo::new(tls), h2)
                    .await
                    .inspect(|s| {
                        if let Sender::H2(s2) = s {
                            lock(&self.shard().h2).insert(spec.key.clone(), s2.clone());
                        }
                    })
            }
        }
    }

    async fn handshake_http<T>(&self, io: TokioIo<T>, h2: bool) -> Result<Sender, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let metrics = self.metrics.clone();
        metrics.upstream_connections_active.inc();
        let done = move || {
            metrics.upstream_connections_active.dec();
        };
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| response_error(&e))?;
            tokio::spawn(async move {
                let _ = conn.await;
                done();
            });
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| response_error(&e))?;
            tokio::spawn(async move {
                let _ = conn.with_upgrades().await;
                done();
            });
            Ok(Sender::H1(sender))
        }
    }
}

/// Classifies an error that happened while exchanging the request: a TLS
/// alert sent after the handshake (TLS 1.3 client-certificate rejection)
/// or a reset.
fn response_error(e: &hyper::Error) -> UpstreamError {
    match classify(e) {
        Some((reason, detail)) => UpstreamError::new(reason, detail),
        None => UpstreamError::new(FailureReason::ConnectionReset, format!("upstream: {e}")),
    }
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
    // The system resolver, so /etc/hosts and resolv.conf apply as they do
    // for the application.
    match tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await {
        Ok(Ok(addrs)) => {
            let v: Vec<_> = addrs.collect();
            if v.is_empty() {
                Err(UpstreamError::new(
                    FailureReason::DnsFailure,
                    format!("{host}: no addresses"),
                ))
            } else {
                Ok(v)
            }
        }
        Ok(Err(e)) => Err(UpstreamError::new(
            FailureReason::DnsFailure,
            format!("{host}: {e}"),
        )),
        Err(_) => Err(UpstreamError::new(
            FailureReason::DnsFailure,
            format!("{host}: resolution took longer than {timeout:?}"),
        )),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // (single inserts/removes), so keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
