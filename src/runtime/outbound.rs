//! The outbound listener (Istio's 15001): plain HTTP from the local app,
//! originated to upstreams per the plan.
//!
//! Accepts origin-form requests (host from `Host`), absolute-form requests
//! (`curl -x`, `HTTP_PROXY`) and `CONNECT` tunnels (bytes relayed untouched,
//! policy applied by host).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::http::{Body, boxed, local_response, strip_hop_by_hop};
use super::upstream::{PoolKey, UpstreamError, UpstreamSpec};
use super::{Snapshot, State};
use crate::metrics::RequestLabels;
use crate::plan::outbound::UpstreamPolicy;
use crate::plan::{Decision, TlsMode};

/// Most downstream connections served at once; more wait in the backlog.
const MAX_CONNECTIONS: usize = 10_000;

/// Runs the accept loop until `shutdown` is cancelled.
pub async fn run(listener: TcpListener, state: Arc<State>, shutdown: CancellationToken) {
    let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = std::time::Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => { backoff = std::time::Duration::from_millis(5); x }
                Err(e) => {
                    // EMFILE and friends: wait instead of spinning.
                    warn!(error = %e, "outbound accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(std::time::Duration::from_secs(1));
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let shutdown = shutdown.clone();
        let span = info_span!("outbound", peer = %peer);
        tokio::spawn(
            async move {
                serve_connection(stream, peer, state, shutdown).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    // One snapshot per connection: a reload never splits a connection.
    let snapshot = state.snapshot();
    let ctx = Arc::new(ConnCtx {
        state: state.clone(),
        snapshot,
        peer,
    });
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(ctx.handle(req).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(state.bootstrap.request_header_timeout)
        .max_buf_size(state.bootstrap.max_header_bytes.max(8192))
        .max_headers(128);
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => if let Err(e) = r { debug!(error = %e, "downstream connection ended with an error") },
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

struct ConnCtx {
    state: Arc<State>,
    snapshot: Arc<Snapshot>,
    peer: SocketAddr,
}

/// What one request turned into, for the access log and metrics.
struct Outcome {
    destination: String,
    status: StatusCode,
    flag: &'static str,
    upstream: String,
}

impl ConnCtx {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let authority = authority_of(&req);
        let (resp, outcome) = match authority {
            Err(msg) => (
                local_response(StatusCode::BAD_REQUEST, "bad_request", msg.clone()),
                Outcome {
                    destination: "unknown".into(),
                    status: StatusCode::BAD_REQUEST,
                    flag: "bad_request",
                    upstream: "-".into(),
                },
            ),
            Ok((host, port)) => {
                if method == Method::CONNECT {
                    self.connect(req, &host, port).await
                } else {
                    self.forward(req, &host, port).await
                }
            }
        };
        let elapsed = start.elapsed();
        let labels = RequestLabels {
            reporter: "source",
            destination_service: outcome.destination.clone(),
            response_code: outcome.status.as_u16(),
            response_flags: outcome.flag,
        };
        self.state.metrics.requests.get_or_create(&labels).inc();
        self.state
            .metrics
            .request_duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64() * 1000.0);
        info!(
            target: "access",
            method = %method,
            path = %path,
            destination = %outcome.destination,
            upstream = %outcome.upstream,
            status = outcome.status.as_u16(),
            flag = outcome.flag,
            duration_ms = elapsed.as_millis() as u64,
            "request"
        );
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        host: &str,
        port: u16,
    ) -> (Response<Body>, Outcome) {
        let pick = self.state.next();
        let decision = self.snapshot.plan.outbound.route(host, port, pick);
        let (endpoints, policy, names, sni, destination, timeout) = match decision {
            Decision::Refused { reason } => {
                return refused(reason);
            }
            Decision::Passthrough { host, port } => (
                vec![(host, port)],
                UpstreamPolicy::default(),
                Vec::new(),
                None,
                "PassthroughCluster".to_string(),
                None,
            ),
            Decision::Registered(t) => {
                let names = t.verify_names();
                let sni = t.sni().to_string();
                (
                    t.endpoints(),
                    (*t.policy).clone(),
                    names,
                    Some(sni),
                    service_label(&t),
                    t.timeout,
                )
            }
        };
        let upstream_desc = endpoints
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let fail = |e: UpstreamError, destination: String| -> (Response<Body>, Outcome) {
            self.upstream_failed(e, destination, upstream_desc.clone(), host, port)
        };
        let tls = if policy.tls.mode == TlsMode::Disable {
            None
        } else {
            let config = match self.state.upstreams.tls_config(
                &policy,
                &names,
                &self.snapshot.creds,
                self.snapshot.generation,
            ) {
                Ok(c) => c,
                Err(e) => {
                    return fail(
                        UpstreamError {
                            reason: crate::tls::FailureReason::HandshakeFailure,
                            detail: e,
                        },
                        destination,
                    );
                }
            };
            let sni_str = sni.clone().unwrap_or_else(|| host.to_string());
            let server_name = match ServerName::try_from(sni_str.clone()) {
                Ok(n) => n,
                Err(_) => {
                    return fail(
                        UpstreamError {
                            reason: crate::tls::FailureReason::HandshakeFailure,
                            detail: format!("{sni_str:?} cannot be sent as SNI"),
                        },
                        destination,
                    );
                }
            };
            Some((config, server_name))
        };
        let spec = UpstreamSpec {
            key: PoolKey {
                endpoints,
                sni: tls.as_ref().and(sni),
                names,
                policy: policy.clone(),
                generation: self.snapshot.generation,
            },
            tls,
        };
        let upstream_req =
            match build_upstream_request(req, host, port, policy.h2 && spec.tls.is_some()) {
                Ok(r) => r,
                Err(msg) => {
                    return (
                        local_response(StatusCode::BAD_REQUEST, "bad_request", msg),
                        Outcome {
                            destination,
                            status: StatusCode::BAD_REQUEST,
                            flag: "bad_request",
                            upstream: "-".into(),
                        },
                    );
                }
            };
        let send = self.state.upstreams.send(&spec, upstream_req, pick);
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, send).await {
                Ok(r) => r,
                Err(_) => {
                    let msg = format!(
                        "meshgate: upstream {host}:{port} did not answer within the route timeout of {t:?}"
                    );
                    return (
                        local_response(StatusCode::GATEWAY_TIMEOUT, "request_timeout", msg),
                        Outcome {
                            destination,
                            status: StatusCode::GATEWAY_TIMEOUT,
                            flag: "request_timeout",
                            upstream: upstream_desc,
                        },
                    );
                }
            },
            None => send.await,
        };
        match result {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = http::Version::HTTP_11;
                let status = parts.status;
                (
                    Response::from_parts(parts, boxed(body)),
                    Outcome {
                        destination,
                        status,
                        flag: "",
                        upstream: upstream_desc,
                    },
                )
            }
            Err(e) => fail(e, destination),
        }
    }

    fn upstream_failed(
        &self,
        e: UpstreamError,
        destination: String,
        upstream: String,
        host: &str,
        port: u16,
    ) -> (Response<Body>, Outcome) {
        if e.reason.is_tls() {
            self.state.metrics.tls_failure("outbound", e.reason);
        }
        warn!(
            reason = e.reason.as_str(),
            destination = %destination,
            upstream = %upstream,
            detail = %e.detail,
            "upstream connection failed"
        );
        let what = if e.reason.is_tls() {
            "TLS handshake with"
        } else {
            "connection to"
        };
        let msg = format!(
            "meshgate: {what} upstream {host}:{port} failed: {}; the proxy log has the details",
            e.reason
        );
        (
            local_response(StatusCode::SERVICE_UNAVAILABLE, e.reason.as_str(), msg),
            Outcome {
                destination,
                status: StatusCode::SERVICE_UNAVAILABLE,
                flag: e.reason.as_str(),
                upstream,
            },
        )
    }

    async fn connect(
        &self,
        req: Request<Incoming>,
        host: &str,
        port: u16,
    ) -> (Response<Body>, Outcome) {
        let pick = self.state.next();
        let (endpoints, timeout, destination) =
            match self.snapshot.plan.outbound.route(host, port, pick) {
                Decision::Refused { reason } => return refused(reason),
                Decision::Passthrough { host, port } => (
                    vec![(host, port)],
                    crate::plan::outbound::DEFAULT_CONNECT_TIMEOUT,
                    "PassthroughCluster".to_string(),
                ),
                Decision::Registered(t) => {
                    (t.endpoints(), t.policy.connect_timeout, service_label(&t))
                }
            };
        let upstream_desc = endpoints
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut upstream = match self
            .state
            .upstreams
            .connect_tcp(&endpoints, timeout, pick)
            .await
        {
            Ok(s) => s,
            Err(e) => return self.upstream_failed(e, destination, upstream_desc, host, port),
        };
        self.state.metrics.tunnels.inc();
        let peer = self.peer;
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                        Ok((up, down)) => {
                            debug!(%peer, bytes_up = up, bytes_down = down, "tunnel closed")
                        }
                        Err(e) => debug!(%peer, error = %e, "tunnel ended with an error"),
                    }
                }
                Err(e) => debug!(%peer, error = %e, "CONNECT upgrade failed"),
            }
        });
        let resp = Response::new(boxed(http_body_util::Empty::new()));
        (
            resp,
            Outcome {
                destination,
                status: StatusCode::OK,
                flag: "",
                upstream: upstream_desc,
            },
        )
    }
}

fn refused(reason: String) -> (Response<Body>, Outcome) {
    (
        local_response(
            StatusCode::BAD_GATEWAY,
            "registry_only",
            format!("meshgate: {reason}"),
        ),
        Outcome {
            destination: "BlackHoleCluster".into(),
            status: StatusCode::BAD_GATEWAY,
            flag: "registry_only",
            upstream: "-".into(),
        },
    )
}

/// The metric label for a registered destination: the ServiceEntry host
/// pattern that matched (bounded, unlike the request's own host).
fn service_label(t: &crate::plan::Target) -> String {
    t.service
        .hosts
        .iter()
        .filter(|h| h.matches(&t.host))
        .max_by_key(|h| h.specificity())
        .map(|h| h.to_string())
        .unwrap_or_else(|| t.host.clone())
}

/// Host and port the request is for: the CONNECT target, the absolute-form
/// URI's authority, or the single `Host` header (two or none → error).
fn authority_of(req: &Request<Incoming>) -> Result<(String, u16), String> {
    if let Some(auth) = req.uri().authority() {
        let default = if req.uri().scheme_str() == Some("https") {
            443
        } else {
            80
        };
        if req.method() == Method::CONNECT && auth.port_u16().is_none() {
            return Err("meshgate: CONNECT needs host:port".into());
        }
        return split_host(auth.as_str(), default);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (Some(h), None) = (hosts.next(), hosts.next()) else {
        return Err("meshgate: the request must carry exactly one Host header".into());
    };
    let h = h
        .to_str()
        .map_err(|_| "meshgate: Host header is not valid text".to_string())?;
    split_host(h, 80)
}

fn split_host(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let bad = || format!("meshgate: {authority:?} is not a valid host[:port]");
    let auth: http::uri::Authority = authority.parse().map_err(|_| bad())?;
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || auth.as_str().contains('@') {
        return Err(bad());
    }
    let port = auth.port_u16().unwrap_or(default_port);
    if port == 0 {
        return Err(bad());
    }
    Ok((host.to_ascii_lowercase(), port))
}

/// The request as sent upstream: origin-form for HTTP/1.1 (absolute URI for
/// HTTP/2, which carries it as `:authority`), hop-by-hop headers removed, a
/// `Host` header as the app addressed it.
fn build_upstream_request(
    req: Request<Incoming>,
    host: &str,
    port: u16,
    h2: bool,
) -> Result<Request<Body>, String> {
    let (mut parts, body) = req.into_parts();
    let host_header = match parts.headers.get(header::HOST) {
        Some(h) if parts.uri.authority().is_none() => h.clone(),
        _ => {
            let v = if port == 80 {
                host.to_string()
            } else {
                format!("{host}:{port}")
            };
            HeaderValue::from_str(&v).map_err(|_| "meshgate: invalid host".to_string())?
        }
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .to_string();
    strip_hop_by_hop(&mut parts.headers);
    if h2 {
        let authority = host_header.to_str().unwrap_or(host).to_string();
        parts.uri = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| format!("meshgate: {e}"))?;
        parts.headers.remove(header::HOST);
        parts.version = http::Version::HTTP_2;
    } else {
        parts.uri = pq
            .parse()
            .map_err(|_| "meshgate: invalid request target".to_string())?;
        parts.headers.insert(header::HOST, host_header);
        parts.version = http::Version::HTTP_11;
    }
    Ok(Request::from_parts(parts, boxed(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_host_forms() {
        assert_eq!(
            split_host("API.example.com", 80).unwrap(),
            ("api.example.com".into(), 80)
        );
        assert_eq!(
            split_host("a.example.com:8443", 80).unwrap(),
            ("a.example.com".into(), 8443)
        );
        assert_eq!(split_host("[::1]:9000", 80).unwrap(), ("::1".into(), 9000));
        assert!(split_host("user@host", 80).is_err());
        assert!(split_host("host:0", 80).is_err());
        assert!(split_host("", 80).is_err());
    }
}
