//! Sending a request to a chosen destination and turning failures into
//! responses: shared by the outbound and inbound listeners.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use rustls::pki_types::ServerName;
use tracing::{info, warn};

use super::http::{Body, local_response};
use super::upstream::{PolicyRef, PoolKey, UpstreamError, UpstreamSpec};
use super::{Snapshot, State};
use crate::metrics::RequestLabels;
use crate::plan::Target;
use crate::plan::TlsMode;
use crate::plan::outbound::UpstreamPolicy;
use crate::tls::FailureReason;

/// The policy of destinations no DestinationRule covers; one `Arc` so
/// their pooled connections are found by pointer.
static DEFAULT_POLICY: std::sync::LazyLock<Arc<UpstreamPolicy>> =
    std::sync::LazyLock::new(|| Arc::new(UpstreamPolicy::default()));

/// Where a request goes and how.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Endpoints (host or IP, port), tried round robin.
    pub endpoints: Vec<(String, u16)>,
    /// TLS, pool and protocol settings (shared with the plan; copied only
    /// when a listener adjusts it).
    pub policy: Arc<UpstreamPolicy>,
    /// Names the server certificate must carry (TLS only).
    pub names: Vec<String>,
    /// SNI to send (TLS only).
    pub sni: Option<String>,
    /// Bounded metric label (`destination_service`).
    pub label: Arc<str>,
}

impl Destination {
    /// A registered service, per its ServiceEntry and DestinationRule.
    pub fn registered(t: &Target) -> Destination {
        Destination {
            endpoints: t.endpoints(),
            policy: t.policy.clone(),
            names: t.verify_names(),
            sni: Some(t.sni().to_string()),
            label: service_label(t).into(),
        }
    }

    /// A host and port reached in plain text, resolved by the system.
    pub fn plain(host: &str, port: u16, label: &str) -> Destination {
        Destination {
            endpoints: vec![(host.to_string(), port)],
            policy: DEFAULT_POLICY.clone(),
            names: Vec::new(),
            sni: None,
            label: label.into(),
        }
    }

    /// `host:port,...` for the access log; empty (and free) when the
    /// access log is off.
    pub fn upstream_for_log(&self) -> String {
        if access_log_on() {
            self.describe()
        } else {
            String::new()
        }
    }

    /// `host:port,...` for logs.
    pub fn describe(&self) -> String {
        self.endpoints
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The metric label for a registered destination: the ServiceEntry host
/// pattern that matched (bounded, unlike the request's own host).
fn service_label(t: &Target) -> String {
    t.service
        .hosts
        .iter()
        .filter(|h| h.matches(&t.host))
        .max_by_key(|h| h.specificity())
        .map(|h| h.to_string())
        .unwrap_or_else(|| t.host.clone())
}

/// A destination made ready for requests: its pool key, TLS client config
/// and SNI worked out once, then shared by every request that goes there
/// under the same configuration (see [`PreparedCache`]).
pub struct Prepared {
    /// Where requests go.
    pub dest: Destination,
    /// The route's request timeout.
    pub timeout: Option<Duration>,
    spec: UpstreamSpec,
}

impl Prepared {
    /// Works out the pool key and TLS settings of `dest` under `snapshot`;
    /// on failure `dest` comes back with the reason.
    pub fn new(
        state: &State,
        snapshot: &Snapshot,
        dest: Destination,
        timeout: Option<Duration>,
    ) -> Result<Prepared, (Box<Destination>, UpstreamError)> {
        match spec_for(state, snapshot, &dest) {
            Ok(spec) => Ok(Prepared {
                dest,
                timeout,
                spec,
            }),
            Err(e) => Err((Box::new(dest), e)),
        }
    }
}

fn spec_for(
    state: &State,
    snapshot: &Snapshot,
    dest: &Destination,
) -> Result<UpstreamSpec, UpstreamError> {
    let policy = &PolicyRef(dest.policy.clone());
    let tls = if policy.tls.mode == TlsMode::Disable {
        None
    } else {
        let config = state
            .upstreams
            .tls_config(policy, &dest.names, &snapshot.creds, snapshot.generation)
            .map_err(|detail| UpstreamError {
                reason: FailureReason::HandshakeFailure,
                detail,
            })?;
        let sni = dest.sni.clone().unwrap_or_default();
        let server_name = ServerName::try_from(sni.clone()).map_err(|_| UpstreamError {
            reason: FailureReason::HandshakeFailure,
            detail: format!("{sni:?} cannot be sent as SNI"),
        })?;
        Some((config, server_name))
    };
    Ok(UpstreamSpec {
        key: Arc::new(PoolKey {
            endpoints: dest.endpoints.clone(),
            sni: tls.as_ref().and(dest.sni.clone()),
            names: dest.names.clone(),
            policy: policy.clone(),
            generation: snapshot.generation,
        }),
        tls,
    })
}

/// Sends `req` to a prepared destination over a pooled or new connection,
/// within the route's timeout.
pub async fn send(
    state: &State,
    prepared: &Prepared,
    req: Request<Body>,
    pick: u64,
) -> Result<Response<Incoming>, UpstreamError> {
    let send = state.upstreams.send(&prepared.spec, req, pick);
    match prepared.timeout {
        Some(t) => tokio::time::timeout(t, send).await.unwrap_or_else(|_| {
            Err(UpstreamError {
                reason: FailureReason::RequestTimeout,
                detail: format!("no response within the route timeout of {t:?}"),
            })
        }),
        None => send.await,
    }
}

/// Destinations prepared under the configuration in force, per worker (no
/// lock is shared between workers): requests to a destination seen before
/// skip routing, policy lookup and pool-key construction. Emptied when a
/// newer configuration is seen; connections still on an older one bypass
/// it.
pub struct PreparedCache {
    shards: super::workers::PerWorker<Mutex<CacheShard>>,
}

#[derive(Default)]
struct CacheShard {
    generation: u64,
    /// Outbound: by request host, then port.
    by_host: HashMap<String, Vec<(u16, Arc<Prepared>)>>,
    /// Inbound: by route destination (its address in the plan, which the
    /// generation keeps alive) and whether it is spoken to in h2c.
    by_route: HashMap<(usize, bool), Arc<Prepared>>,
}

impl CacheShard {
    /// Hosts and route destinations held.
    fn len(&self) -> usize {
        self.by_host.len() + self.by_route.len()
    }
}

/// Entries per worker before the cache starts over (wildcard ServiceEntry
/// hosts are unbounded).
const MAX_PREPARED: usize = 1024;

impl PreparedCache {
    /// Empty caches for `shards` threads (workers + 1).
    pub fn new(shards: usize) -> PreparedCache {
        PreparedCache {
            shards: super::workers::PerWorker::new(shards),
        }
    }

    /// This thread's shard, made current for `generation`; `None` for a
    /// connection on an older configuration.
    fn shard(&self, generation: u64) -> Option<std::sync::MutexGuard<'_, CacheShard>> {
        let mut shard = self.shards.get().lock().unwrap_or_else(|p| p.into_inner());
        if shard.generation < generation || shard.len() >= MAX_PREPARED {
            *shard = CacheShard {
                generation: generation.max(shard.generation),
                ..CacheShard::default()
            };
        }
        (shard.generation == generation).then_some(shard)
    }

    /// The prepared destination for `host:port`.
    pub fn by_host(&self, generation: u64, host: &str, port: u16) -> Option<Arc<Prepared>> {
        let shard = self.shard(generation)?;
        let list = shard.by_host.get(host)?;
        list.iter()
            .find(|(p, _)| *p == port)
            .map(|(_, d)| d.clone())
    }

    /// Remembers the prepared destination for `host:port`.
    pub fn insert_host(&self, generation: u64, host: &str, port: u16, prepared: Arc<Prepared>) {
        if let Some(mut shard) = self.shard(generation) {
            shard
                .by_host
                .entry(host.to_string())
                .or_default()
                .push((port, prepared));
        }
    }

    /// The prepared destination for a route destination.
    pub fn by_route(&self, generation: u64, key: (usize, bool)) -> Option<Arc<Prepared>> {
        self.shard(generation)?.by_route.get(&key).cloned()
    }

    /// Remembers the prepared destination for a route destination.
    pub fn insert_route(&self, generation: u64, key: (usize, bool), prepared: Arc<Prepared>) {
        if let Some(mut shard) = self.shard(generation) {
            shard.by_route.insert(key, prepared);
        }
    }
}

/// Whether access log lines are written (`info` for target `access`).
pub fn access_log_on() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}

/// A request as it arrived, for its access log line: the method and path
/// are kept only when the access log is on.
pub struct Started {
    at: Instant,
    line: Option<(http::Method, String)>,
}

impl Started {
    /// Notes the start of `req`.
    pub fn new<B>(req: &Request<B>) -> Started {
        Started {
            at: Instant::now(),
            line: access_log_on().then(|| (req.method().clone(), req.uri().path().to_string())),
        }
    }
}

/// What one request turned into, for the access log and metrics.
pub struct Outcome {
    /// `destination_service` label.
    pub destination: Arc<str>,
    /// Status sent downstream.
    pub status: StatusCode,
    /// Error reason, empty on success.
    pub flag: &'static str,
    /// Endpoints used, for the log.
    pub upstream: String,
}

impl Outcome {
    /// A locally answered request.
    pub fn local(destination: &str, status: StatusCode, flag: &'static str) -> Outcome {
        Outcome {
            destination: destination.into(),
            status,
            flag,
            upstream: "-".into(),
        }
    }
}

/// Counts and logs one finished request.
pub fn record(state: &State, reporter: &'static str, started: &Started, outcome: &Outcome) {
    let elapsed = started.at.elapsed();
    let labels = RequestLabels {
        reporter,
        destination_service: outcome.destination.clone(),
        response_code: outcome.status.as_u16(),
        response_flags: outcome.flag,
    };
    state.metrics.requests.get_or_create(&labels).inc();
    state
        .metrics
        .request_duration
        .get_or_create(&labels)
        .observe(elapsed.as_secs_f64() * 1000.0);
    let Some((method, path)) = &started.line else {
        return;
    };
    info!(
        target: "access",
        reporter,
        method = %method,
        path = %path,
        destination = %outcome.destination,
        upstream = %outcome.upstream,
        status = outcome.status.as_u16(),
        flag = outcome.flag,
        duration_ms = elapsed.as_millis() as u64,
        "request"
    );
}

/// The response and outcome for a failed upstream exchange: 503 (504 for a
/// route timeout) with the reason in `x-meshgate-error`; details only in
/// the log; TLS failures counted.
pub fn failure(
    state: &State,
    direction: &'static str,
    e: UpstreamError,
    dest: &Destination,
    authority: &str,
) -> (Response<Body>, Outcome) {
    if e.reason.is_tls() {
        state.metrics.tls_failure(direction, e.reason);
    }
    warn!(
        reason = e.reason.as_str(),
        destination = %dest.label,
        upstream = %dest.describe(),
        detail = %e.detail,
        "upstream request failed"
    );
    let (status, msg) = match e.reason {
        FailureReason::RequestTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("meshgate: upstream {authority} did not answer within the route timeout"),
        ),
        r if r.is_tls() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "meshgate: TLS handshake with upstream {authority} failed: {r}; the proxy log has the details"
            ),
        ),
        r => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "meshgate: connection to upstream {authority} failed: {r}; the proxy log has the details"
            ),
        ),
    };
    (
        local_response(status, e.reason.as_str(), msg),
        Outcome {
            destination: dest.label.clone(),
            status,
            flag: e.reason.as_str(),
            upstream: dest.upstream_for_log(),
        },
    )
}
