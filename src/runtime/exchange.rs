//! One HTTP exchange, the same for both directions: the request's record
//! (a guard that counts and logs it however it ends), the prepared
//! destination lookup, shaping the request for the upstream's HTTP
//! version, sending it, shaping the response, and turning failures into
//! responses with a stable reason.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use tracing::{info, warn};

use super::conn::Connection;
use super::copy::{TCP_IDLE_TIMEOUT, splice};
use super::http::{
    Body, HeadError, boxed, check_request_head, is_websocket_upgrade, local_response,
    normalize_request_path, strip_hop_by_hop,
};
use super::log_limit::LogLimit;
use super::prepared::{Destination, Prepared, PreparedKey};
use super::state::{Snapshot, State};
use super::timeouts::BodyFault;
use super::upstream::UpstreamError;
use crate::metrics::RequestLabels;
use crate::plan::TlsMode;
use crate::tls::FailureReason;

/// What a request handler works with: the shared state, the configuration
/// the connection took when it was accepted, and the connection itself.
pub struct Ctx {
    /// Shared state.
    pub state: Arc<State>,
    /// The configuration this connection serves under.
    pub snapshot: Arc<Snapshot>,
    /// The connection's guard.
    pub conn: Arc<Connection>,
}

/// What one request turned into, for the access log and metrics.
pub struct Outcome {
    /// `destination_service` label.
    pub destination: Arc<str>,
    /// Status sent downstream (0: none, the client went away).
    pub status: u16,
    /// Error reason, empty on success.
    pub flag: &'static str,
    /// Endpoints used, for the log.
    pub upstream: Option<String>,
}

impl Outcome {
    /// A locally answered request.
    pub fn local(destination: &str, status: StatusCode, flag: &'static str) -> Outcome {
        Outcome {
            destination: destination.into(),
            status: status.as_u16(),
            flag,
            upstream: None,
        }
    }

    /// A response relayed from `dest`.
    pub fn relayed(dest: &Destination, status: StatusCode) -> Outcome {
        Outcome {
            destination: dest.label.clone(),
            status: status.as_u16(),
            flag: "",
            upstream: super::conn::access_log_on().then(|| dest.describe()),
        }
    }
}

/// A response with its outcome.
pub struct Reply {
    /// Sent to the client.
    pub resp: Response<Body>,
    /// Recorded.
    pub outcome: Outcome,
}

impl Reply {
    /// A locally generated response (reason in `x-meshgate-error`).
    pub fn local(status: StatusCode, reason: &'static str, message: String) -> Reply {
        Reply {
            resp: local_response(status, reason, message),
            outcome: Outcome::local("-", status, reason),
        }
    }
}

/// Admits a request before routing: its head within the limits
/// (`check_request_head`), then its path normalised as the bootstrap's
/// `pathNormalization` says. A refused request gets 431 or 400, as Envoy
/// answers, and a connection whose framing is suspect is closed after it.
pub fn admit<B>(ctx: &Ctx, req: &mut Request<B>) -> Result<(), Box<Reply>> {
    let b = &ctx.state.bootstrap;
    if let Err(why) = check_request_head(req, b.max_header_bytes, b.headers_with_underscores_action)
    {
        let mut reply = Reply::local(why.status(), why.reason(), format!("meshgate: {why}"));
        if why == HeadError::TransferEncoding {
            reply
                .resp
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Err(Box::new(reply));
    }
    normalize_request_path(req, b.path_normalization).map_err(|why| {
        Box::new(Reply::local(
            StatusCode::BAD_REQUEST,
            "path_normalization_failed",
            format!("meshgate: {why}"),
        ))
    })
}

/// The reply for a failed upstream exchange: the client's own fault when
/// its body stalled or was malformed ([`BodyFault`]), else `upstream`.
pub fn body_fault_or(fault: &BodyFault, conn: &Connection, upstream: Reply) -> Reply {
    match fault.client_fault(conn) {
        Some((status, reason, message)) => Reply::local(status, reason, message.into()),
        None => upstream,
    }
}

/// Failed-upstream-request warnings: at most this many lines per reason per
/// 10 s (a client can cause one per request); the metrics count them all.
static UPSTREAM_FAILURE_LOG: LogLimit = LogLimit::per_10s(10);

/// The flag of a request whose client went away before the response.
pub const DOWNSTREAM_DISCONNECT: &str = "downstream_disconnect";

/// One request in flight. Dropped when the handler is done or cancelled
/// (the client went away); the drop counts and logs it.
pub struct RequestRecord<'a> {
    conn: &'a Connection,
    started: Instant,
    /// Method and path, kept only when the access log is on.
    line: Option<(http::Method, String)>,
    outcome: Option<Outcome>,
}

impl<'a> RequestRecord<'a> {
    /// Notes the start of `req` on `conn`.
    pub fn start<B>(conn: &'a Connection, req: &Request<B>) -> RequestRecord<'a> {
        conn.request_started();
        RequestRecord {
            conn,
            started: Instant::now(),
            line: super::conn::access_log_on()
                .then(|| (req.method().clone(), req.uri().path().to_string())),
            outcome: None,
        }
    }

    /// Records the outcome and hands back the response.
    pub fn finish(&mut self, reply: Reply) -> Response<Body> {
        self.outcome = Some(reply.outcome);
        reply.resp
    }
}

impl Drop for RequestRecord<'_> {
    fn drop(&mut self) {
        self.conn.request_done();
        let outcome = self.outcome.take().unwrap_or_else(|| Outcome {
            destination: "-".into(),
            status: 0,
            flag: DOWNSTREAM_DISCONNECT,
            upstream: None,
        });
        let elapsed = self.started.elapsed();
        let reporter = self.conn.listener.direction.reporter();
        let metrics = self.conn.metrics();
        let labels = RequestLabels {
            reporter,
            destination_service: outcome.destination.clone(),
            response_code: outcome.status,
            response_flags: outcome.flag,
            connection_security_policy: self.conn.security_policy(),
        };
        metrics.requests.get_or_create(&labels).inc();
        metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
        let Some((method, path)) = &self.line else {
            return;
        };
        info!(
            target: "access",
            reporter,
            method = %method,
            path = %path,
            destination = %outcome.destination,
            upstream = %outcome.upstream.as_deref().unwrap_or("-"),
            status = outcome.status,
            flag = outcome.flag,
            duration_ms = elapsed.as_millis() as u64,
            "request"
        );
    }
}

/// A destination chosen for a request: what to prepare, and whether the
/// preparation may be reused by later requests with the same key.
pub struct Choice {
    /// Where the request goes.
    pub dest: Destination,
    /// The route's timeout.
    pub timeout: Option<Duration>,
    /// Whether later requests with the same key go to the same place
    /// (weighted and passthrough choices are not kept).
    pub cacheable: bool,
}

impl Ctx {
    /// The prepared destination for `key`: from this worker's cache, or
    /// chosen by `choose`, prepared and (when cacheable) cached. `Err` is
    /// the reply when the request cannot go anywhere.
    pub fn prepared(
        &self,
        key: PreparedKey<'_>,
        authority: &str,
        choose: impl FnOnce() -> Result<Choice, Box<Reply>>,
    ) -> Result<Arc<Prepared>, Box<Reply>> {
        let generation = self.snapshot.generation;
        if let Some(p) = self.state.prepared.get(generation, key) {
            return Ok(p);
        }
        let choice = choose()?;
        let prepared = Prepared::new(
            &self.state.upstreams,
            &self.snapshot.creds,
            generation,
            choice.dest,
            choice.timeout,
        )
        .map_err(|(dest, e)| Box::new(self.failure(e, &dest, authority)))?;
        let prepared = Arc::new(prepared);
        if choice.cacheable {
            self.state
                .prepared
                .insert(generation, key, prepared.clone());
        }
        Ok(prepared)
    }

    /// Sends `req` to `prepared` over a pooled or new connection, within
    /// the route's timeout; failures become the reply.
    pub async fn send(
        &self,
        prepared: &Prepared,
        req: Request<Body>,
        authority: &str,
    ) -> Result<Response<Incoming>, Box<Reply>> {
        let pick = self.state.next();
        let send = self.state.upstreams.send(
            &prepared.spec,
            req,
            pick,
            self.snapshot.generation,
            &self.conn.drain,
        );
        let result = match prepared.timeout {
            Some(t) => tokio::time::timeout(t, send)
                .await
                .unwrap_or(Err(UpstreamError::RouteTimeout(t))),
            None => send.await,
        };
        result.map_err(|e| Box::new(self.failure(e, &prepared.dest, authority)))
    }

    /// The reply for a failed upstream step: 503 (504 for a route timeout)
    /// with the reason in `x-meshgate-error`; details only in the log; TLS
    /// failures counted.
    pub fn failure(&self, e: UpstreamError, dest: &Destination, authority: &str) -> Reply {
        let reason = e.reason();
        let direction = match self.conn.listener.direction {
            super::conn::Direction::Outbound => "outbound",
            _ => "inbound",
        };
        let overflow = e.is_overflow();
        if reason.is_tls() && !overflow {
            self.state.metrics.tls_failure(direction, reason);
        }
        // Overflows are counted (meshgate_upstream_overflow_total), not
        // logged one by one: they come in floods.
        if !overflow && let Some(suppressed) = UPSTREAM_FAILURE_LOG.allow(reason.as_str()) {
            warn!(
                reason = reason.as_str(),
                destination = %dest.label,
                upstream = %dest.describe(),
                detail = %e,
                suppressed,
                "upstream request failed{}",
                UPSTREAM_FAILURE_LOG.note(suppressed)
            );
        }
        // The port the app asked for may not be the one dialled
        // (`targetPort`, endpoint ports): say where the request went.
        let authority = match dialled(dest) {
            Some(to) if to != authority => format!("{authority} (dialled {to})"),
            _ => authority.to_string(),
        };
        let (status, msg) = match reason {
            _ if overflow => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("meshgate: upstream {authority} is over its connection pool limits: {e}"),
            ),
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
        Reply {
            resp: local_response(status, e.code(), msg),
            outcome: Outcome {
                destination: dest.label.clone(),
                status: status.as_u16(),
                flag: e.code(),
                upstream: super::conn::access_log_on().then(|| dest.describe()),
            },
        }
    }
}

/// A WebSocket upgrade the client asked for (the one upgrade forwarded).
pub struct Upgrade(hyper::upgrade::OnUpgrade);

impl Upgrade {
    /// Takes the client's upgrade from `req` when it asks for a WebSocket;
    /// any other `Upgrade` is left to be stripped as hop-by-hop.
    pub fn take(req: &mut Request<Incoming>) -> Option<Upgrade> {
        is_websocket_upgrade(req).then(|| Upgrade(hyper::upgrade::on(req)))
    }
}

impl Ctx {
    /// The reply to a `101 Switching Protocols` from the upstream: with the
    /// client's WebSocket upgrade, the two upgraded streams are spliced by a
    /// task that shares the connection's guard (counted, logged, drained
    /// with it); a switch nobody asked for is refused.
    pub fn switch(
        &self,
        mut resp: Response<Incoming>,
        upgrade: Option<Upgrade>,
        dest: &Destination,
    ) -> Reply {
        let Some(Upgrade(down)) = upgrade else {
            warn!(destination = %dest.label, "the upstream switched protocols without being asked");
            return Reply {
                resp: local_response(
                    StatusCode::BAD_GATEWAY,
                    "upstream_protocol_error",
                    "meshgate: the upstream switched protocols without being asked".into(),
                ),
                outcome: Outcome {
                    destination: dest.label.clone(),
                    status: StatusCode::BAD_GATEWAY.as_u16(),
                    flag: "upstream_protocol_error",
                    upstream: super::conn::access_log_on().then(|| dest.describe()),
                },
            };
        };
        let up = hyper::upgrade::on(&mut resp);
        let conn = self.conn.clone();
        let (label, endpoints) = (dest.label.clone(), dest.describe());
        self.conn.spawn(async move {
            match (down.await, up.await) {
                (Ok(down), Ok(up)) => {
                    conn.spliced(label, endpoints, false);
                    let end = splice(
                        conn.bytes(),
                        hyper_util::rt::TokioIo::new(down),
                        hyper_util::rt::TokioIo::new(up),
                        TCP_IDLE_TIMEOUT,
                    )
                    .await;
                    conn.set_flag(end.flag());
                }
                _ => conn.set_flag("upgrade_failed"),
            }
        });
        let status = resp.status();
        let (parts, _) = resp.into_parts();
        Reply {
            resp: Response::from_parts(parts, boxed(http_body_util::Empty::new())),
            outcome: Outcome::relayed(dest, status),
        }
    }
}

/// Sets the request target for the upstream's HTTP version: HTTP/2 carries
/// Where `dest`'s requests are dialled, for a reply's body: its
/// endpoints, the first few of many.
fn dialled(dest: &Destination) -> Option<String> {
    const SHOWN: usize = 3;
    let all = &dest.endpoints;
    let first: Vec<String> = all
        .iter()
        .take(SHOWN)
        .map(|(h, p)| format!("{h}:{p}"))
        .collect();
    match all.len() {
        0 => None,
        n if n <= SHOWN => Some(first.join(", ")),
        n => Some(format!("{} and {} more", first.join(", "), n - SHOWN)),
    }
}

/// scheme and `authority` in the URI and no `Host`; HTTP/1.1 gets
/// origin-form and `Host: authority` (kept as sent when it already says
/// so). The caller has removed hop-by-hop headers (before adding its own);
/// a WebSocket upgrade (`websocket`) gets its two headers back.
pub fn shape_request(
    parts: &mut http::request::Parts,
    authority: &str,
    path_and_query: &str,
    dest: &Destination,
    websocket: bool,
) -> Result<(), Box<Reply>> {
    let bad = |what: &str| {
        Box::new(Reply::local(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("meshgate: {what}"),
        ))
    };
    if websocket {
        if dest.policy.h2 {
            return Err(Box::new(Reply::local(
                StatusCode::NOT_IMPLEMENTED,
                "upgrade_unsupported",
                "meshgate: a WebSocket upgrade cannot be forwarded to an upstream spoken to in HTTP/2".into(),
            )));
        }
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts
            .headers
            .insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    }
    if dest.policy.h2 {
        let scheme = if dest.policy.tls.mode == TlsMode::Disable {
            "http"
        } else {
            "https"
        };
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| bad("invalid request target"))?;
        parts.headers.remove(header::HOST);
        parts.version = http::Version::HTTP_2;
        return Ok(());
    }
    if parts.uri.scheme().is_some()
        || parts.uri.path_and_query().map(|p| p.as_str()) != Some(path_and_query)
    {
        parts.uri = path_and_query
            .parse()
            .map_err(|_| bad("invalid request target"))?;
    }
    let host = parts.headers.get(header::HOST).map(HeaderValue::as_bytes);
    if host != Some(authority.as_bytes()) {
        let v = HeaderValue::from_str(authority).map_err(|_| bad("invalid authority"))?;
        parts.headers.insert(header::HOST, v);
    }
    parts.version = http::Version::HTTP_11;
    Ok(())
}

/// The upstream's response for the client: hop-by-hop headers removed, in
/// the client's HTTP version.
pub fn shape_response(
    resp: Response<Incoming>,
    version: http::Version,
    stream_idle: Duration,
) -> (http::response::Parts, Body) {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = version;
    (parts, super::timeouts::response_body(body, stream_idle))
}
