//! The outbound listener (Istio's 15001): plain HTTP from the local app,
//! originated to upstreams per the plan.
//!
//! Accepts origin-form requests (host from `Host`), absolute-form requests
//! (`curl -x`, `HTTP_PROXY`) and `CONNECT` tunnels (bytes relayed untouched,
//! policy applied by host).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span};

use super::forward::{self, Destination, Outcome};
use super::http::{Body, boxed, local_response, strip_hop_by_hop};
use super::{Snapshot, State};
use crate::plan::Decision;

/// Runs the accept loop until `shutdown` is cancelled.
pub async fn run(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    super::accept_loop(
        listener,
        shutdown.clone(),
        tasks,
        "outbound",
        move |stream, peer| {
            let _ = stream.set_nodelay(true);
            let state = state.clone();
            let shutdown = shutdown.clone();
            let span = info_span!("outbound", peer = %peer);
            async move { serve_connection(stream, peer, state, shutdown).await }.instrument(span)
        },
    )
    .await;
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
        // hyper keeps room for one request future per connection for the
        // connection's whole life; boxing the request's work keeps that
        // room (idle memory) small and frees it between requests.
        async move { Ok::<_, Infallible>(Box::pin(ctx.handle(req)).await) }
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

impl ConnCtx {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = forward::Started::new(&req);
        let (resp, outcome) = match authority_of(&req) {
            Err(msg) => (
                local_response(StatusCode::BAD_REQUEST, "bad_request", msg),
                Outcome::local("unknown", StatusCode::BAD_REQUEST, "bad_request"),
            ),
            Ok((host, port)) if req.method() == Method::CONNECT => {
                Box::pin(self.connect(req, &host, port)).await
            }
            Ok((host, port)) => self.forward(req, &host, port).await,
        };
        forward::record(&self.state, "source", &started, &outcome);
        resp
    }

    async fn forward(
        &self,
        req: Request<Incoming>,
        host: &str,
        port: u16,
    ) -> (Response<Body>, Outcome) {
        let pick = self.state.next();
        let prepared = match self.prepared(host, port) {
            Ok(p) => p,
            Err(refusal) => return *refusal,
        };
        let dest = &prepared.dest;
        let upstream_req = match build_upstream_request(req, host, port, dest.policy.h2) {
            Ok(r) => r,
            Err(msg) => {
                return (
                    local_response(StatusCode::BAD_REQUEST, "bad_request", msg),
                    Outcome::local(&dest.label, StatusCode::BAD_REQUEST, "bad_request"),
                );
            }
        };
        match forward::send(&self.state, &prepared, upstream_req, pick).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                parts.version = http::Version::HTTP_11;
                let outcome = Outcome {
                    destination: dest.label.clone(),
                    status: parts.status,
                    flag: "",
                    upstream: dest.upstream_for_log(),
                };
                (Response::from_parts(parts, boxed(body)), outcome)
            }
            Err(e) => forward::failure(&self.state, "outbound", e, dest, &format!("{host}:{port}")),
        }
    }

    /// The destination for `host:port`: from this worker's cache, or routed
    /// and prepared (and cached unless a weighted route chose it). `Err` is
    /// the response when the request cannot go anywhere.
    fn prepared(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Arc<forward::Prepared>, Box<(Response<Body>, Outcome)>> {
        let generation = self.snapshot.generation;
        if let Some(p) = self.state.prepared.by_host(generation, host, port) {
            return Ok(p);
        }
        let (dest, timeout, cacheable) =
            match self
                .snapshot
                .plan
                .outbound
                .route(host, port, self.state.random())
            {
                Decision::Refused { reason } => return Err(Box::new(refused(reason))),
                Decision::Passthrough { host, port } => (
                    Destination::plain(&host, port, "PassthroughCluster"),
                    None,
                    false,
                ),
                Decision::Registered(t) => (Destination::registered(&t), t.timeout, !t.weighted),
            };
        match forward::Prepared::new(&self.state, &self.snapshot, dest, timeout) {
            Ok(p) => {
                let p = Arc::new(p);
                if cacheable {
                    self.state
                        .prepared
                        .insert_host(generation, host, port, p.clone());
                }
                Ok(p)
            }
            Err((dest, e)) => Err(Box::new(forward::failure(
                &self.state,
                "outbound",
                e,
                &dest,
                &format!("{host}:{port}"),
            ))),
        }
    }

    async fn connect(
        &self,
        req: Request<Incoming>,
        host: &str,
        port: u16,
    ) -> (Response<Body>, Outcome) {
        let pick = self.state.next();
        let dest = match self
            .snapshot
            .plan
            .outbound
            .route(host, port, self.state.random())
        {
            Decision::Refused { reason } => return refused(reason),
            Decision::Passthrough { host, port } => {
                Destination::plain(&host, port, "PassthroughCluster")
            }
            Decision::Registered(t) => Destination::registered(&t),
        };
        let mut upstream = match self
            .state
            .upstreams
            .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, pick)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                return forward::failure(
                    &self.state,
                    "outbound",
                    e,
                    &dest,
                    &format!("{host}:{port}"),
                );
            }
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
        let outcome = Outcome {
            destination: dest.label.clone(),
            status: StatusCode::OK,
            flag: "",
            upstream: dest.upstream_for_log(),
        };
        (resp, outcome)
    }
}

fn refused(reason: String) -> (Response<Body>, Outcome) {
    (
        local_response(
            StatusCode::BAD_GATEWAY,
            "registry_only",
            format!("meshgate: {reason}"),
        ),
        Outcome::local("BlackHoleCluster", StatusCode::BAD_GATEWAY, "registry_only"),
    )
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
    strip_hop_by_hop(&mut parts.headers);
    if h2 {
        let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = host_header.to_str().unwrap_or(host);
        parts.uri = Uri::builder()
            .scheme("https")
            .authority(authority)
            .path_and_query(pq)
            .build()
            .map_err(|e| format!("meshgate: {e}"))?;
        parts.headers.remove(header::HOST);
        parts.version = http::Version::HTTP_2;
    } else {
        if parts.uri.authority().is_some() {
            // Absolute-form from a proxy-aware app: origin-form upstream.
            let pq = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            parts.uri = pq
                .parse()
                .map_err(|_| "meshgate: invalid request target".to_string())?;
        }
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
