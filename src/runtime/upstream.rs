//! Upstream connections: resolve, connect, TLS handshake, HTTP handshake,
//! a keep-alive pool per worker, and per destination the
//! `connectionPool` limits, outlier detection and the route's retries.
//!
//! Pools are keyed by what a connection was made with (endpoints, SNI,
//! policy, and the TLS client config, itself keyed by the content of the
//! credentials it was built from), not by configuration generation: a reload
//! that leaves a destination unchanged keeps its pooled connections and TLS
//! sessions; one that changes it (a rotated certificate, a new CA) makes new
//! connections, and the old pool is evicted at a later reload once unused.
//!
//! A request to a destination: a place among its requests in flight
//! (`http2MaxRequests`), then a pooled connection, a new one within
//! `maxConnections`, or a wait for one (at most `http1MaxPendingRequests`
//! waiting, each at most the connect timeout); beyond a limit the answer is
//! an overflow at once. Tries that fail safely are retried per the route's
//! policy, on another endpoint when there is one.
//!
//! Never falls back to plain text or to an unverified connection: a failed
//! step is an [`UpstreamError`] with a classified reason.

mod connect;
mod error;
mod key;
mod limits;
mod outlier;
mod pool;
mod retry;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response, Version, header};
use hyper::body::Incoming;
use rustls::ClientConfig;
use tokio::net::TcpStream;

use self::connect::{Sender, exchange_error};
pub use self::error::{OVERFLOW, OverflowKind, UpstreamError};
pub use self::key::{ConfigRef, PolicyRef, PoolKey, UpstreamSpec};
use self::limits::DestState;
use self::outlier::Observed;
use self::pool::{Pools, lock};
use self::retry::{Replay, retriable_error, retriable_response};
use super::drain::Drain;
use super::http::Body;
use crate::creds::{Credentials, Fingerprint};
use crate::metrics::Metrics;

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

/// A destination's shared state and the last generation that used it.
struct SharedState {
    state: Arc<DestState>,
    used: u64,
}

/// Pools, TLS configs and connection bookkeeping for all upstreams.
pub struct Upstreams {
    metrics: Arc<Metrics>,
    tls_cache: Mutex<HashMap<TlsKey, CachedConfig>>,
    /// Connections per worker.
    pools: Pools,
    /// Limits and endpoint health per pool key, shared by the workers
    /// (each worker's pool holds its own reference).
    states: Mutex<HashMap<Arc<PoolKey>, SharedState>>,
    /// The proxy's own outbound listener: never a valid upstream (a request
    /// for it would loop through the proxy until resources run out).
    own: std::sync::OnceLock<SocketAddr>,
}

/// What one try came to when it failed: the error, the endpoint it went
/// to (when one was reached), and the request when it never left.
struct TryFailure {
    error: UpstreamError,
    endpoint: Option<usize>,
    unsent: Option<Request<Body>>,
}

impl TryFailure {
    fn new(error: UpstreamError, endpoint: Option<usize>) -> Box<TryFailure> {
        Box::new(TryFailure {
            error,
            endpoint,
            unsent: None,
        })
    }
}

/// A connection obtained for one try.
struct Obtained {
    sender: Sender,
    uses: u32,
    endpoint: usize,
    reused: bool,
}

impl Upstreams {
    /// Empty pools for `shards` threads (workers + 1).
    pub fn new(metrics: Arc<Metrics>, shards: usize) -> Upstreams {
        Upstreams {
            metrics,
            tls_cache: Mutex::new(HashMap::new()),
            pools: Pools::new(shards),
            states: Mutex::new(HashMap::new()),
            own: std::sync::OnceLock::new(),
        }
    }

    /// Records the proxy's own listener address for loop detection.
    pub fn set_own_address(&self, addr: SocketAddr) {
        let _ = self.own.set(addr);
    }

    /// Pool keys held across all workers (for bounds and the admin view).
    pub fn pools(&self) -> usize {
        self.pools.len()
    }

    /// Client configs cached.
    pub fn tls_configs(&self) -> usize {
        lock(&self.tls_cache).len()
    }

    /// After generation `generation` is published: drops pools, client
    /// configs and destination states that no request used during the
    /// generation before it (their destination changed or went away), and
    /// pooled connections that are closed or idled out. In-flight requests
    /// keep their connections.
    pub fn evict(&self, generation: u64) {
        let keep = |used: u64| used + 1 >= generation;
        lock(&self.tls_cache).retain(|_, c| keep(c.used));
        self.pools.evict(keep);
        // A state still referenced (a pool, a request, a connection) stays,
        // so every worker keeps sharing the same limits.
        lock(&self.states).retain(|_, s| keep(s.used) || Arc::strong_count(&s.state) > 1);
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

    /// Resolves and connects TCP to the first reachable endpoint, starting
    /// at `pick` (round robin).
    pub async fn connect_tcp(
        &self,
        endpoints: &[(String, u16)],
        timeout: Duration,
        pick: u64,
    ) -> Result<TcpStream, UpstreamError> {
        self.connect_tcp_from(None, endpoints, timeout, pick).await
    }

    /// [`Upstreams::connect_tcp`] from the local address `source` (when
    /// given and of the endpoint's family).
    pub async fn connect_tcp_from(
        &self,
        source: Option<std::net::IpAddr>,
        endpoints: &[(String, u16)],
        timeout: Duration,
        pick: u64,
    ) -> Result<TcpStream, UpstreamError> {
        let own = self.own.get().copied();
        let to = connect::Target {
            endpoints,
            timeout,
            source,
            own,
        };
        connect::connect_tcp(&to, pick, &|_| false, &mut |_| {})
            .await
            .map(|(s, _)| s)
    }

    /// Sends `req` within the destination's limits, retrying per the
    /// route's policy what may safely be retried; a response the policy
    /// would retry is returned as is once the retries are spent. New
    /// connections are driven by tasks of `drain`.
    pub async fn send(
        &self,
        spec: &UpstreamSpec,
        req: Request<Body>,
        pick: u64,
        generation: u64,
        drain: &Drain,
    ) -> Result<Response<Incoming>, UpstreamError> {
        let state = self.state(&spec.key, generation);
        let _in_flight = state
            .limits
            .request()
            .inspect_err(|e| self.count_overflow(spec, e))?;
        let plan = &*spec.retries;
        let replay = Replay::of(&req, plan);
        let mut next = Some(req);
        let mut tried: Vec<usize> = Vec::new();
        let mut attempt: u32 = 0;
        loop {
            let Some(req) = next.take().or_else(|| replay.as_ref().map(Replay::request)) else {
                return Err(UpstreamError::ClosedTwice);
            };
            let last = attempt >= plan.attempts;
            let avoid = |i: usize| plan.other_endpoint && tried.contains(&i);
            let one = self.try_once(spec, &state, req, pick + u64::from(attempt), drain, &avoid);
            let outcome = match plan.per_try_timeout {
                Some(t) => tokio::time::timeout(t, one).await.unwrap_or_else(|_| {
                    Err(TryFailure::new(UpstreamError::PerTryTimeout(t), None))
                }),
                None => one.await,
            };
            let retry = match outcome {
                Ok((resp, endpoint)) => {
                    self.observe(
                        spec,
                        &state,
                        endpoint,
                        Observed::Status(resp.status().as_u16()),
                    );
                    if last || replay.is_none() || !retriable_response(&resp, plan) {
                        return Ok(resp);
                    }
                    tried.push(endpoint);
                    None
                }
                Err(f) => {
                    if let Some(endpoint) = f.endpoint {
                        self.observe(spec, &state, endpoint, Observed::LocalFailure);
                        tried.push(endpoint);
                    }
                    let unsent = f.unsent.is_some();
                    if last || !retriable_error(&f.error, plan, unsent, replay.is_some()) {
                        return Err(f.error);
                    }
                    f.unsent
                }
            };
            attempt += 1;
            next = retry;
            self.metrics.upstream_retry(&spec.label);
            tokio::time::sleep(retry::backoff(plan, attempt, pick)).await;
        }
    }

    /// The shared state of `key`, through this worker's pool.
    fn state(&self, key: &Arc<PoolKey>, generation: u64) -> Arc<DestState> {
        self.pools.state(key, generation, || {
            let mut states = lock(&self.states);
            let s = states.entry(key.clone()).or_insert_with(|| SharedState {
                state: Arc::new(DestState::new(&key.policy, key.endpoints.len())),
                used: generation,
            });
            s.used = s.used.max(generation);
            s.state.clone()
        })
    }

    fn observe(&self, spec: &UpstreamSpec, state: &DestState, endpoint: usize, seen: Observed) {
        if let Some(o) = &state.outlier
            && o.record(endpoint, seen)
        {
            let (host, port) = spec
                .key
                .endpoints
                .get(endpoint)
                .cloned()
                .unwrap_or_default();
            tracing::warn!(
                destination = %spec.label,
                endpoint = %format!("{host}:{port}"),
                "endpoint ejected by outlier detection"
            );
            self.metrics.upstream_ejection(&spec.label);
        }
    }

    fn count_overflow(&self, spec: &UpstreamSpec, e: &UpstreamError) {
        if let UpstreamError::Overflow { kind, .. } = e {
            self.metrics.upstream_overflow(&spec.label, kind.as_str());
        }
    }

    /// One try: a connection (pooled, new, or waited for), then the
    /// request. A request a reused connection could not send (closed by
    /// the peer while idle) goes once more on another connection.
    async fn try_once(
        &self,
        spec: &UpstreamSpec,
        state: &Arc<DestState>,
        mut req: Request<Body>,
        pick: u64,
        drain: &Drain,
        avoid: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<(Response<Incoming>, usize), Box<TryFailure>> {
        for _ in 0..2 {
            // Boxed: the connect and handshake state is large and only
            // needed for a new connection, so it stays out of every
            // request's (and every idle connection's) future.
            let got = match Box::pin(self.obtain(spec, state, pick, drain, avoid)).await {
                Ok(o) => o,
                Err(mut f) => {
                    f.unsent = Some(req);
                    return Err(f);
                }
            };
            let endpoint = got.endpoint;
            match got.sender {
                Sender::H2(mut s) => match s.try_send_request(req).await {
                    Ok(resp) => return Ok((resp, endpoint)),
                    Err(mut e) => {
                        self.pools.forget_h2(&spec.key);
                        match e.take_message() {
                            Some(r) if got.reused => req = r,
                            r => {
                                return Err(Box::new(TryFailure {
                                    error: exchange_error(e.error()),
                                    endpoint: Some(endpoint),
                                    unsent: r,
                                }));
                            }
                        }
                    }
                },
                Sender::H1(mut s) => {
                    if req.version() == Version::HTTP_2 {
                        // Shaped for h2, but ALPN chose HTTP/1.1.
                        h2_to_http1(&mut req);
                    }
                    match s.try_send_request(req).await {
                        Ok(resp) => {
                            self.release(spec, state, s, got.uses + 1, endpoint);
                            return Ok((resp, endpoint));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(r) if got.reused => req = r,
                            r => {
                                return Err(Box::new(TryFailure {
                                    error: exchange_error(e.error()),
                                    endpoint: Some(endpoint),
                                    unsent: r,
                                }));
                            }
                        },
                    }
                }
            }
        }
        Err(Box::new(TryFailure {
            error: UpstreamError::ClosedTwice,
            endpoint: None,
            unsent: Some(req),
        }))
    }

    /// Returns an HTTP/1.1 connection to the pool as soon as its response
    /// headers are in (it becomes ready for the next request once the body
    /// is done; `checkout` skips it until then), unless it reached
    /// `maxRequestsPerConnection`. No task per request: the hand-off costs a
    /// lock, not a wake-up.
    fn release(
        &self,
        spec: &UpstreamSpec,
        state: &DestState,
        sender: hyper::client::conn::http1::SendRequest<Body>,
        uses: u32,
        endpoint: usize,
    ) {
        let max = spec.key.policy.max_requests_per_connection;
        if max != 0 && uses >= max {
            return; // dropping the sender closes the connection
        }
        self.pools.release(&spec.key, sender, uses, endpoint);
        state.limits.notify_freed();
    }

    /// A connection for one try: a pooled one, a new one within
    /// `maxConnections`, or, at the limit, one that frees up within the
    /// connect timeout (at most `http1MaxPendingRequests` requests wait).
    async fn obtain(
        &self,
        spec: &UpstreamSpec,
        state: &Arc<DestState>,
        pick: u64,
        drain: &Drain,
        avoid: &(dyn Fn(usize) -> bool + Sync),
    ) -> Result<Obtained, Box<TryFailure>> {
        let key = &spec.key;
        let ejected = |i: usize| state.is_ejected(i);
        let deadline = tokio::time::Instant::now() + key.policy.connect_timeout;
        let mut pending = None;
        loop {
            let freed = state.limits.freed();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(c) = self.pools.checkout(key, &ejected, avoid) {
                return Ok(Obtained {
                    sender: c.sender,
                    uses: c.uses,
                    endpoint: c.endpoint,
                    reused: true,
                });
            }
            if let Some(slot) = state.limits.try_connection() {
                return self.connect(spec, state, pick, drain, avoid, slot).await;
            }
            if pending.is_none() {
                pending = Some(state.limits.pending().map_err(|e| {
                    self.count_overflow(spec, &e);
                    TryFailure::new(e, None)
                })?);
            }
            // Free a slot another worker holds idle.
            self.pools.close_idle_elsewhere(key);
            if let Some((mut s, uses, endpoint)) = self.pools.checkout_busy(key, avoid) {
                // A connection of ours finishing its last response.
                match tokio::time::timeout_at(deadline, s.ready()).await {
                    Ok(Ok(())) => {
                        return Ok(Obtained {
                            sender: Sender::H1(s),
                            uses,
                            endpoint,
                            reused: true,
                        });
                    }
                    Ok(Err(_)) => continue,
                    Err(_) => break,
                }
            }
            tokio::select! {
                _ = freed => {}
                // Connections of other workers become ready without a
                // wake-up: look again now and then.
                _ = tokio::time::sleep(WAIT_RECHECK) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        let e = state.limits.pending_timeout();
        self.count_overflow(spec, &e);
        Err(TryFailure::new(e, None))
    }

    async fn connect(
        &self,
        spec: &UpstreamSpec,
        state: &DestState,
        pick: u64,
        drain: &Drain,
        avoid: &(dyn Fn(usize) -> bool + Sync),
        slot: limits::ConnectionSlot,
    ) -> Result<Obtained, Box<TryFailure>> {
        let key = &spec.key;
        let skip = |i: usize| state.is_ejected(i) || avoid(i);
        let mut failed = Vec::new();
        let own = self.own.get().copied();
        let to = connect::Target {
            endpoints: &key.endpoints,
            timeout: key.policy.connect_timeout,
            source: key.source,
            own,
        };
        let connected = connect::connect_tcp(&to, pick, &skip, &mut |i| failed.push(i)).await;
        for i in failed {
            self.observe(spec, state, i, Observed::LocalFailure);
        }
        let (tcp, endpoint) = connected.map_err(|e| TryFailure::new(e, None))?;
        let sender = connect::handshake(key, spec.sni.as_ref(), tcp, &self.metrics, drain, slot)
            .await
            .map_err(|e| TryFailure::new(e, Some(endpoint)))?;
        if let Sender::H2(s) = &sender {
            // h2 and h2c alike: one connection carries every request.
            self.pools.set_h2(key, s, endpoint);
        }
        Ok(Obtained {
            sender,
            uses: 0,
            endpoint,
            reused: false,
        })
    }
}

/// How often a request waiting for a connection looks at the pools again.
const WAIT_RECHECK: Duration = Duration::from_millis(50);

/// Reshapes a request built for HTTP/2 (absolute URI, no `Host`) for an
/// HTTP/1.1 connection: origin-form target, `Host` from the authority.
fn h2_to_http1(req: &mut Request<Body>) {
    if let Some(authority) = req.uri().authority().cloned() {
        if !req.headers().contains_key(header::HOST)
            && let Ok(v) = http::HeaderValue::from_str(authority.as_str())
        {
            req.headers_mut().insert(header::HOST, v);
        }
        let origin = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("/"));
        *req.uri_mut() = origin;
    }
    *req.version_mut() = Version::HTTP_11;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_h2_shaped_request_is_reshaped_for_http1() {
        let mut req = Request::get("https://api.test:8443/a/b?c=d")
            .version(Version::HTTP_2)
            .body(super::super::http::boxed(http_body_util::Empty::<
                bytes::Bytes,
            >::new()))
            .unwrap();
        h2_to_http1(&mut req);
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers()[header::HOST], "api.test:8443");
        assert_eq!(req.version(), Version::HTTP_11);
    }
}
