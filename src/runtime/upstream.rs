//! Upstream connections: resolve, connect, TLS handshake, HTTP handshake,
//! and a keep-alive pool per worker.
//!
//! Pools are keyed by what a connection was made with (endpoints, SNI,
//! policy, and the TLS client config, itself keyed by the content of the
//! credentials it was built from), not by configuration generation: a reload
//! that leaves a destination unchanged keeps its pooled connections and TLS
//! sessions; one that changes it (a rotated certificate, a new CA) makes new
//! connections, and the old pool is evicted at a later reload once unused.
//!
//! Never falls back to plain text or to an unverified connection: a failed
//! step is an [`UpstreamError`] with a classified reason.

use std::collections::HashMap;
use std::io;
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

use super::drain::Drain;
use super::http::Body;
use super::per_worker::PerWorker;
use crate::creds::{Credentials, Fingerprint};
use crate::metrics::Metrics;
use crate::plan::outbound::UpstreamPolicy;
use crate::tls::client::ClientTlsError;
use crate::tls::{FailureReason, classify};

/// A failed upstream step, with what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host name did not resolve.
    #[error("{host}: {detail}")]
    Dns {
        /// The name looked up.
        host: String,
        /// The resolver's answer.
        detail: String,
    },
    /// The destination has no endpoints.
    #[error("no endpoints")]
    NoEndpoints,
    /// TCP connect failed.
    #[error("connect to {addr} ({host}): {source}")]
    Connect {
        /// The endpoint's name.
        host: String,
        /// The address tried.
        addr: SocketAddr,
        /// The OS error (refused, unreachable, ...).
        source: io::Error,
    },
    /// TCP connect took longer than the connect timeout.
    #[error("connect to {addr} ({host}) took longer than {timeout:?}")]
    ConnectTimeout {
        /// The endpoint's name.
        host: String,
        /// The address tried.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The destination is the proxy's own outbound listener.
    #[error("{host}:{port} resolves to {addr}, meshgate's own outbound listener")]
    Loop {
        /// The endpoint's name.
        host: String,
        /// Its port.
        port: u16,
        /// The address it resolved to.
        addr: SocketAddr,
    },
    /// The TLS client settings could not be built (a credential is missing).
    #[error(transparent)]
    Credential(#[from] ClientTlsError),
    /// The SNI is not a valid server name.
    #[error("{0:?} cannot be sent as SNI")]
    InvalidSni(String),
    /// The TLS handshake failed.
    #[error("{detail}")]
    Tls {
        /// Classified reason.
        reason: FailureReason,
        /// Expected vs presented names, issuer, validity.
        detail: String,
    },
    /// The TLS handshake took longer than the connect timeout.
    #[error("TLS handshake took longer than {0:?}")]
    HandshakeTimeout(Duration),
    /// The HTTP exchange failed (a reset, an alert after the handshake).
    #[error("upstream: {detail}")]
    Exchange {
        /// Classified reason.
        reason: FailureReason,
        /// What happened.
        detail: String,
    },
    /// No response within the route's timeout.
    #[error("no response within the route timeout of {0:?}")]
    RouteTimeout(Duration),
    /// A pooled connection closed before the request could be sent, and so
    /// did a new one.
    #[error("pooled connection closed before the request could be sent, and so did a new one")]
    ClosedTwice,
}

impl UpstreamError {
    /// The stable reason (header, metric label).
    pub fn reason(&self) -> FailureReason {
        match self {
            UpstreamError::Dns { .. } | UpstreamError::NoEndpoints => FailureReason::DnsFailure,
            UpstreamError::Connect { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => FailureReason::ConnectRefused,
                io::ErrorKind::TimedOut => FailureReason::ConnectTimeout,
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    FailureReason::NoRouteToHost
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    FailureReason::ConnectionReset
                }
                _ => FailureReason::ConnectFailed,
            },
            UpstreamError::ConnectTimeout { .. } | UpstreamError::HandshakeTimeout(_) => {
                FailureReason::ConnectTimeout
            }
            UpstreamError::Loop { .. } => FailureReason::LoopDetected,
            UpstreamError::Credential(_) => FailureReason::CredentialUnavailable,
            UpstreamError::InvalidSni(_) => FailureReason::InvalidSni,
            UpstreamError::Tls { reason, .. } | UpstreamError::Exchange { reason, .. } => *reason,
            UpstreamError::RouteTimeout(_) => FailureReason::RequestTimeout,
            UpstreamError::ClosedTwice => FailureReason::ConnectionReset,
        }
    }
}

/// Identifies connections that may be shared: same endpoints, SNI and
/// policy, made with the same TLS client config.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Endpoints (host or IP, port).
    pub endpoints: Vec<(String, u16)>,
    /// SNI sent, if TLS.
    pub sni: Option<String>,
    /// The policy (TLS, timeouts, protocol).
    pub policy: PolicyRef,
    /// The TLS client config connections are made with; `None` for plain
    /// text.
    pub tls: Option<ConfigRef>,
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

/// A client config compared by identity: the cache hands out one `Arc` per
/// distinct content, so equal pointers mean equal settings.
#[derive(Debug, Clone)]
pub struct ConfigRef(pub Arc<ClientConfig>);

impl PartialEq for ConfigRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConfigRef {}

impl std::hash::Hash for ConfigRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// How to reach one upstream.
pub struct UpstreamSpec {
    /// Pool identity (and endpoints).
    pub key: Arc<PoolKey>,
    /// SNI for TLS connections (the config is in the key).
    pub sni: Option<ServerName<'static>>,
}

/// The `listener` label of outbound handshakes.
static OUTBOUND_LABEL: std::sync::LazyLock<Arc<str>> =
    std::sync::LazyLock::new(|| Arc::from("outbound"));

/// Idle keep-alive connections kept per pool key.
const MAX_IDLE_PER_KEY: usize = 512;

/// What a client config is built from: the policy, the names verified, and
/// the content of the trust roots and client certificate.
#[derive(Clone, PartialEq, Eq, Hash)]
struct TlsKey {
    policy: PolicyRef,
    names: Vec<String>,
    trust: Option<Fingerprint>,
    identity: Option<Fingerprint>,
}

/// A cached client config and the last generation that used it.
struct CachedConfig {
    config: Arc<ClientConfig>,
    used: u64,
}

enum Sender {
    H1(http1::SendRequest<Body>),
    H2(http2::SendRequest<Body>),
}

struct IdleConn {
    sender: http1::SendRequest<Body>,
    uses: u32,
    since: Instant,
}

/// The connections of one pool key on one worker.
#[derive(Default)]
struct Pool {
    /// HTTP/1.1 connections waiting for a request.
    idle: Vec<IdleConn>,
    /// The HTTP/2 connection (h2 or h2c), shared by concurrent requests.
    h2: Option<http2::SendRequest<Body>>,
    /// The last configuration generation that used this pool.
    used: u64,
}

/// One worker's connections. An HTTP connection is driven by a task on
/// the worker that opened it, so only that worker uses it: a request and
/// its upstream connection never cross threads.
#[derive(Default)]
struct Shard {
    pools: Mutex<HashMap<Arc<PoolKey>, Pool>>,
}

/// Pools, TLS configs and connection bookkeeping for all upstreams.
pub struct Upstreams {
    metrics: Arc<Metrics>,
    tls_cache: Mutex<HashMap<TlsKey, CachedConfig>>,
    /// Pools per worker.
    shards: PerWorker<Shard>,
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
            shards: PerWorker::new(shards),
            own: std::sync::OnceLock::new(),
        }
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

    /// Pool keys held across all workers (for bounds and the admin view).
    pub fn pools(&self) -> usize {
        self.shards.all().map(|s| lock(&s.pools).len()).sum()
    }

    /// Client configs cached.
    pub fn tls_configs(&self) -> usize {
        lock(&self.tls_cache).len()
    }

    /// After generation `generation` is published: drops pools and client
    /// configs that no request used during the generation before it (their
    /// destination changed or went away), and pooled connections that are
    /// closed or idled out. In-flight requests keep their connections.
    pub fn evict(&self, generation: u64) {
        let keep = |used: u64| used + 1 >= generation;
        lock(&self.tls_cache).retain(|_, c| keep(c.used));
        for shard in self.shards.all() {
            lock(&shard.pools).retain(|key, pool| {
                let max_idle = key.policy.idle_timeout;
                pool.idle.retain(|c| {
                    !c.sender.is_closed() && (max_idle.is_zero() || c.since.elapsed() <= max_idle)
                });
                if pool.h2.as_ref().is_some_and(|s| s.is_closed()) {
                    pool.h2 = None;
                }
                keep(pool.used) && (pool.h2.is_some() || !pool.idle.is_empty())
            });
        }
    }

    /// The client config for `policy` verifying `names` with the
    /// credentials of `creds`; built once per distinct content and reused
    /// (across reloads too) so TLS sessions resume.
    pub fn tls_config(
        &self,
        policy: &PolicyRef,
        names: &[String],
        creds: &Credentials,
        generation: u64,
    ) -> Result<Arc<ClientConfig>, UpstreamError> {
        let tls = &policy.tls;
        let trust = (!tls.insecure_skip_verify)
            .then(|| creds.trust.get(&(tls.trust.clone(), tls.crl.clone())))
            .flatten()
            .map(|t| t.fingerprint);
        let identity = tls
            .identity
            .as_ref()
            .and_then(|id| creds.identities.get(id))
            .map(|i| i.fingerprint);
        let key = TlsKey {
            policy: policy.clone(),
            names: names.to_vec(),
            trust,
            identity,
        };
        if let Some(c) = lock(&self.tls_cache).get_mut(&key) {
            c.used = c.used.max(generation);
            return Ok(c.config.clone());
        }
        let config = crate::tls::client::build(tls, names, policy.h2, creds)?;
        lock(&self.tls_cache).insert(
            key,
            CachedConfig {
                config: config.clone(),
                used: generation,
            },
        );
        Ok(config)
    }

    /// Sends `req` on a pooled or new connection. A request that a reused
    /// connection could not send (closed by the peer while idle) is retried
    /// once on a new connection. New connections are driven by tasks of
    /// `drain`.
    pub async fn send(
        &self,
        spec: &UpstreamSpec,
        mut req: Request<Body>,
        pick: u64,
        generation: u64,
        drain: &Drain,
    ) -> Result<Response<Incoming>, UpstreamError> {
        for _attempt in 0..2 {
            let (sender, uses, reused) = match self.checkout(&spec.key, generation) {
                Some((s, uses)) => (s, uses, true),
                // Boxed: the connect and handshake state is large and only
                // needed for a new connection, so it stays out of every
                // request's (and every idle connection's) future.
                None => (
                    Box::pin(self.connect(spec, pick, generation, drain)).await?,
                    0,
                    false,
                ),
            };
            match sender {
                Sender::H2(mut s) => {
                    return match s.try_send_request(req).await {
                        Ok(resp) => Ok(resp),
                        Err(mut e) => {
                            self.forget_h2(&spec.key);
                            match e.take_message() {
                                Some(r) if reused => {
                                    req = r;
                                    continue;
                                }
                                _ => Err(exchange_error(e.error())),
                            }
                        }
                    };
                }
                Sender::H1(mut s) => match s.try_send_request(req).await {
                    Ok(resp) => {
                        self.release(spec, s, uses + 1, generation);
                        return Ok(resp);
                    }
                    Err(mut e) => match e.take_message() {
                        Some(r) if reused => {
                            req = r;
                            continue;
                        }
                        _ => return Err(exchange_error(e.error())),
                    },
                },
            }
        }
        Err(UpstreamError::ClosedTwice)
    }

    fn forget_h2(&self, key: &Arc<PoolKey>) {
        if let Some(pool) = lock(&self.shards.get().pools).get_mut(key) {
            pool.h2 = None;
        }
    }

    fn checkout(&self, key: &Arc<PoolKey>, generation: u64) -> Option<(Sender, u32)> {
        let mut pools = lock(&self.shards.get().pools);
        let pool = pools.get_mut(key)?;
        pool.used = pool.used.max(generation);
        if let Some(s) = &pool.h2 {
            if !s.is_closed() {
                return Some((Sender::H2(s.clone()), 0));
            }
            pool.h2 = None;
        }
        let max_idle = key.policy.idle_timeout;
        // Released connections may still be finishing their last response
        // (not ready yet): skip those, drop closed or idled-out ones, take
        // the most recently used ready one.
        let list = &mut pool.idle;
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
    fn release(
        &self,
        spec: &UpstreamSpec,
        sender: http1::SendRequest<Body>,
        uses: u32,
        generation: u64,
    ) {
        let max = spec.key.policy.max_requests_per_connection;
        if max != 0 && uses >= max {
            return; // dropping the sender closes the connection
        }
        let mut pools = lock(&self.shards.get().pools);
        let pool = pools.entry(spec.key.clone()).or_default();
        pool.used = pool.used.max(generation);
        let list = &mut pool.idle;
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
        let mut last = UpstreamError::NoEndpoints;
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
                    last = UpstreamError::Loop {
                        host: host.clone(),
                        port: *port,
                        addr,
                    };
                    continue;
                }
                match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
                    Ok(Ok(s)) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
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
        }
        Err(last)
    }

    async fn connect(
        &self,
        spec: &UpstreamSpec,
        pick: u64,
        generation: u64,
        drain: &Drain,
    ) -> Result<Sender, UpstreamError> {
        let policy = &spec.key.policy;
        let tcp = self
            .connect_tcp(&spec.key.endpoints, policy.connect_timeout, pick)
            .await?;
        self.metrics.upstream_connections.inc();
        let sender = match (&spec.key.tls, &spec.sni) {
            (Some(config), Some(sni)) => {
                let connector = TlsConnector::from(config.0.clone());
                let started = Instant::now();
                let tls = match tokio::time::timeout(
                    policy.connect_timeout,
                    connector.connect(sni.clone(), tcp),
                )
                .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return Err(match classify(&e) {
                            Some((reason, detail)) => UpstreamError::Tls { reason, detail },
                            None => UpstreamError::Tls {
                                reason: FailureReason::HandshakeFailure,
                                detail: format!("TLS handshake: {e}"),
                            },
                        });
                    }
                    Err(_) => return Err(UpstreamError::HandshakeTimeout(policy.connect_timeout)),
                };
                let (_, conn) = tls.get_ref();
                self.metrics
                    .handshake_done("outbound", &OUTBOUND_LABEL, conn, started.elapsed());
                let h2 = conn.alpn_protocol() == Some(crate::tls::client::ALPN_H2);
                self.handshake_http(TokioIo::new(tls), h2, drain).await?
            }
            _ => {
                self.handshake_http(TokioIo::new(tcp), policy.h2, drain)
                    .await?
            }
        };
        if let Sender::H2(s) = &sender {
            // h2 and h2c alike: one connection carries every request.
            let mut pools = lock(&self.shards.get().pools);
            let pool = pools.entry(spec.key.clone()).or_default();
            pool.h2 = Some(s.clone());
            pool.used = pool.used.max(generation);
        }
        Ok(sender)
    }

    async fn handshake_http<T>(
        &self,
        io: TokioIo<T>,
        h2: bool,
        drain: &Drain,
    ) -> Result<Sender, UpstreamError>
    where
        T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let open = OpenConnection::new(self.metrics.clone());
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| exchange_error(&e))?;
            drain.spawn_upstream(async move {
                let _open = open;
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
                let _ = conn.with_upgrades().await;
            });
            Ok(Sender::H1(sender))
        }
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
fn exchange_error(e: &hyper::Error) -> UpstreamError {
    match classify(e) {
        Some((reason, detail)) => UpstreamError::Exchange { reason, detail },
        None => UpstreamError::Exchange {
            reason: FailureReason::ConnectionReset,
            detail: e.to_string(),
        },
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

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these maps inconsistent
    // (single inserts/removes), so keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_classified_by_what_happened() {
        let addr: SocketAddr = ([192, 0, 2, 1], 443).into();
        let connect = |kind| UpstreamError::Connect {
            host: "api.test".into(),
            addr,
            source: io::Error::from(kind),
        };
        for (e, want) in [
            (connect(io::ErrorKind::ConnectionRefused), "connect_refused"),
            (connect(io::ErrorKind::TimedOut), "connect_timeout"),
            (connect(io::ErrorKind::HostUnreachable), "no_route_to_host"),
            (
                connect(io::ErrorKind::NetworkUnreachable),
                "no_route_to_host",
            ),
            (connect(io::ErrorKind::ConnectionReset), "upstream_reset"),
            (connect(io::ErrorKind::AddrNotAvailable), "connect_error"),
            (
                UpstreamError::ConnectTimeout {
                    host: "api.test".into(),
                    addr,
                    timeout: Duration::from_secs(1),
                },
                "connect_timeout",
            ),
            (
                UpstreamError::Dns {
                    host: "api.test".into(),
                    detail: "no addresses".into(),
                },
                "dns_failure",
            ),
            (
                UpstreamError::Credential(ClientTlsError::TrustNotLoaded {
                    origin: "dr.yaml:3: DestinationRule/default/api".into(),
                }),
                "credential_unavailable",
            ),
            (UpstreamError::InvalidSni("a b".into()), "invalid_sni"),
            (
                UpstreamError::RouteTimeout(Duration::from_secs(1)),
                "request_timeout",
            ),
        ] {
            assert_eq!(e.reason().as_str(), want, "{e}");
        }
        // Only handshake failures count as TLS failures.
        assert!(!FailureReason::CredentialUnavailable.is_tls());
        assert!(!FailureReason::NoRouteToHost.is_tls());
    }
}
