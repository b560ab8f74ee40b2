//! HTTP after termination (or on plain inbound ports): 421 for hosts
//! outside the connection's server, VirtualService routing, identity
//! headers for the app, and the relay to the destination.

use std::convert::Infallible;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::forward::{self, Destination, Outcome};
use super::http::{Body, boxed, local_response, strip_hop_by_hop};
use super::inbound::{ConnInfo, resolve_destination};
use crate::creds::CertInfo;
use crate::plan::host::{most_specific, normalize};
use crate::plan::inbound::{GatewayRoutes, ServerPlan, ServerProtocol};
use crate::plan::route::{HttpRoutePlan, Matched, RequestView};

/// One downstream HTTP connection on an inbound listener.
pub(super) struct HttpConn {
    pub info: ConnInfo,
    /// The server chosen by SNI for a TLS connection; `None` on plain
    /// ports, where each request picks its server by Host.
    pub server: Option<Arc<ServerPlan>>,
    /// Whether the client spoke TLS to us.
    pub tls: bool,
    /// `X-Forwarded-Client-Cert` value for a verified client certificate.
    pub xfcc: Option<String>,
    /// The peer's IP as a header value (`X-Forwarded-For`), made once.
    peer_ip: HeaderValue,
}

impl HttpConn {
    pub(super) fn new(
        info: ConnInfo,
        server: Option<Arc<ServerPlan>>,
        tls: bool,
        xfcc: Option<String>,
    ) -> HttpConn {
        let peer_ip = HeaderValue::from_str(&info.peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        HttpConn {
            info,
            server,
            tls,
            xfcc,
            peer_ip,
        }
    }
}

/// The HTTP version a downstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Version {
    /// ALPN chose HTTP/1.1 (or another non-h2 protocol).
    H1,
    /// ALPN chose h2.
    H2,
    /// No ALPN: HTTP/1.1, or HTTP/2 with prior knowledge (the preface).
    Detect,
}

/// Serves HTTP/1.1 and HTTP/2 on `io`. The connection's state is built
/// here, on the heap and sized for the version in use (an HTTP/1.1
/// connection carries no room for HTTP/2's); the returned future only
/// drives it, so an idle connection's task stays small.
pub(super) fn serve<IO>(
    io: IO,
    conn: Arc<HttpConn>,
    shutdown: CancellationToken,
    version: Version,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = conn.info.state.bootstrap.request_header_timeout;
    let max_buf = conn.info.state.bootstrap.max_header_bytes.max(8192);
    let service = service_fn(move |req| {
        let conn = conn.clone();
        // hyper keeps room for one request future per connection for the
        // connection's whole life; boxing the request's work keeps that
        // room (idle memory) small and frees it between requests.
        async move { Ok::<_, Infallible>(Box::pin(conn.handle(req)).await) }
    });
    let io = TokioIo::new(io);
    match version {
        Version::H1 => {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_buf);
            let served = Box::pin(builder.serve_connection(io, service).with_upgrades());
            Box::pin(run_until_shutdown(served, shutdown, |c| {
                c.as_mut().graceful_shutdown()
            }))
        }
        Version::H2 => {
            let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
            builder
                .timer(TokioTimer::new())
                .max_header_list_size(max_buf as u32);
            let served = Box::pin(builder.serve_connection(io, service));
            Box::pin(run_until_shutdown(served, shutdown, |c| {
                c.as_mut().graceful_shutdown()
            }))
        }
        // The auto builder lends itself to its connection: both live in
        // this future (no ALPN: plain ports and the rare TLS client
        // without it).
        Version::Detect => Box::pin(async move {
            let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            builder
                .http1()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .max_buf_size(max_buf);
            builder
                .http2()
                .timer(TokioTimer::new())
                .max_header_list_size(max_buf as u32);
            let served = Box::pin(builder.serve_connection_with_upgrades(io, service));
            run_until_shutdown(served, shutdown, |c| c.as_mut().graceful_shutdown()).await
        }),
    }
}

/// Drives `conn` to the end; on shutdown asks it to finish gracefully
/// (`graceful`) and waits for that. Errors are logged.
async fn run_until_shutdown<C, E>(
    mut conn: std::pin::Pin<Box<C>>,
    shutdown: CancellationToken,
    graceful: impl FnOnce(&mut std::pin::Pin<Box<C>>),
) where
    C: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            graceful(&mut conn);
            conn.await
        }
    };
    if let Err(e) = result {
        debug!(error = %e, "downstream HTTP connection ended with an error");
    }
}

/// Envoy's `X-Forwarded-Client-Cert` for a verified client certificate:
/// `By=<our URI SAN>;Hash=<sha256>;Subject="<DN>";URI=<uri>;DNS=<dns>...`.
pub(super) fn xfcc(leaf: &CertificateDer<'_>, by: Option<&str>) -> String {
    let Ok(info) = CertInfo::parse(leaf) else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(by) = by {
        parts.push(format!("By={by}"));
    }
    parts.push(format!("Hash={}", info.sha256));
    parts.push(format!("Subject=\"{}\"", info.subject.replace('"', "\\\"")));
    for san in &info.sans {
        if let Some(u) = san.strip_prefix("URI:") {
            parts.push(format!("URI={u}"));
        }
    }
    for san in &info.sans {
        if let Some(d) = san.strip_prefix("DNS:") {
            parts.push(format!("DNS={d}"));
        }
    }
    parts.join(";")
}

/// Headers a client must not be able to forge (Istio's SANITIZE_SET).
const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

const X_FORWARDED_FOR: &str = "x-forwarded-for";

impl HttpConn {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let started = forward::Started::new(&req);
        let (resp, outcome) = self.route(req).await;
        forward::record(&self.info.state, "destination", &started, &outcome);
        resp
    }

    async fn route(&self, mut req: Request<Incoming>) -> (Response<Body>, Outcome) {
        let Some(authority) = request_authority(&req) else {
            return local(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "meshgate: the request must name exactly one host (Host or :authority)".into(),
            );
        };
        let host = host_of(&authority);
        let server = match &self.server {
            Some(s) if !s.serves(&host) => {
                // The HTTP/2 connection-reuse trap: this connection was set up
                // for another server's certificate; the client must retry on
                // a new connection (RFC 9110 §15.5.20), never get another
                // host's route.
                return local(
                    StatusCode::MISDIRECTED_REQUEST,
                    "misdirected_request",
                    format!(
                        "meshgate: {host} is not served on this connection (it was opened for {}); open a new connection",
                        hosts_of(s)
                    ),
                );
            }
            Some(s) => s.clone(),
            None => {
                let Some(s) = self.plain_server(&host) else {
                    return local(
                        StatusCode::NOT_FOUND,
                        "no_route",
                        format!(
                            "meshgate: no server on port {} serves {host}",
                            self.info.port
                        ),
                    );
                };
                s
            }
        };
        if server.https_redirect && !self.tls {
            let pq = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            let mut resp = local_response(
                StatusCode::MOVED_PERMANENTLY,
                "https_redirect",
                String::new(),
            );
            if let Ok(v) = HeaderValue::from_str(&format!("https://{host}{pq}")) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            return (
                resp,
                Outcome::local("https_redirect", StatusCode::MOVED_PERMANENTLY, ""),
            );
        }
        let scheme = if self.tls { "https" } else { "http" };
        // A cheap clone (shared bytes): the request moves on below.
        let uri = req.uri().clone();
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let view = RequestView {
            method: req.method().as_str(),
            scheme,
            authority: &authority,
            path_and_query: pq,
            headers: req.headers(),
            port: self.info.port,
        };
        let chosen = select_routes(&server.routes, &host).and_then(|vs| {
            vs.http.iter().find_map(|r| {
                r.matched(&view)
                    .map(|m| (r, m.uri_prefix.map(str::to_string)))
            })
        });
        let (route, prefix) = match chosen {
            Some(x) => x,
            None => {
                if let Some(ep) = server
                    .default_endpoint
                    .as_ref()
                    .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
                {
                    let dest =
                        Destination::plain(&ep.ip().to_string(), ep.port(), "inbound|default");
                    let prepared = match self.prepare(dest, None) {
                        Ok(p) => Arc::new(p),
                        Err((dest, e)) => {
                            return forward::failure(
                                &self.info.state,
                                "inbound",
                                e,
                                &dest,
                                &authority,
                            );
                        }
                    };
                    return self.relay(req, &authority, pq, None, None, prepared).await;
                }
                return local(
                    StatusCode::NOT_FOUND,
                    "no_route",
                    format!(
                        "meshgate: no route matched {host}{pq} on port {} (server {})",
                        self.info.port, server.origin
                    ),
                );
            }
        };
        if let Some(r) = &route.redirect {
            let location = r.location(&view);
            let mut resp = local_response(
                StatusCode::from_u16(r.code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
                "",
                String::new(),
            );
            resp.headers_mut()
                .remove(crate::runtime::http::ERROR_HEADER);
            if let Ok(v) = HeaderValue::from_str(&location) {
                resp.headers_mut().insert(header::LOCATION, v);
            }
            let status = resp.status();
            return (resp, Outcome::local("redirect", status, ""));
        }
        if let Some(d) = &route.direct_response {
            let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
            let mut resp = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from(
                d.body.clone().unwrap_or_default(),
            ))));
            *resp.status_mut() = status;
            return (resp, Outcome::local("direct_response", status, ""));
        }
        let Some(dest_plan) = route.pick(self.info.state.random()) else {
            return local(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_route",
                "meshgate: the route has no destination".into(),
            );
        };
        let prepared = match self.route_destination(dest_plan, &server, route.timeout) {
            Ok(p) => p,
            Err(refusal) => return *refusal,
        };
        let matched = Matched {
            uri_prefix: prefix.as_deref(),
        };
        let new_path = route
            .rewrite
            .as_ref()
            .and_then(|rw| rw.rewrite_path(pq, &matched));
        let new_authority = route
            .rewrite
            .as_ref()
            .and_then(|rw| rw.authority.as_deref());
        // Keep the downstream upgrade handle before the request is consumed.
        let upgrade = is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
        let ops = Some((route, dest_plan));
        self.relay(
            req,
            new_authority.unwrap_or(&authority),
            new_path.as_deref().unwrap_or(pq),
            ops,
            upgrade,
            prepared,
        )
        .await
    }

    /// The prepared destination for a route destination: from this
    /// worker's cache, or resolved, prepared and cached. `Err` is the
    /// response when it cannot be reached.
    fn route_destination(
        &self,
        dest_plan: &crate::plan::route::RouteDestinationPlan,
        server: &ServerPlan,
        timeout: Option<std::time::Duration>,
    ) -> Result<Arc<forward::Prepared>, Box<(Response<Body>, Outcome)>> {
        // An HTTP2/GRPC server port: the app behind it speaks h2c.
        let h2c = matches!(
            server.protocol,
            ServerProtocol::Http2 | ServerProtocol::Grpc
        );
        // The plan outlives the cache entry (same generation): its address
        // names the destination.
        let key = (std::ptr::from_ref(dest_plan) as usize, h2c);
        let generation = self.info.snapshot.generation;
        if let Some(p) = self.info.state.prepared.by_route(generation, key) {
            return Ok(p);
        }
        let Some((mut dest, _)) = resolve_destination(
            &self.info.snapshot,
            &dest_plan.host,
            dest_plan.port,
            dest_plan.subset.as_deref(),
        ) else {
            return Err(Box::new(local(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_route",
                format!(
                    "meshgate: destination {} cannot be resolved",
                    dest_plan.host
                ),
            )));
        };
        if dest.policy.tls.mode == crate::plan::TlsMode::Disable && h2c {
            Arc::make_mut(&mut dest.policy).h2 = true;
        }
        let prepared = Arc::new(self.prepare(dest, timeout).map_err(|(dest, e)| {
            Box::new(forward::failure(
                &self.info.state,
                "inbound",
                e,
                &dest,
                &dest_plan.host,
            ))
        })?);
        self.info
            .state
            .prepared
            .insert_route(generation, key, prepared.clone());
        Ok(prepared)
    }

    fn prepare(
        &self,
        dest: Destination,
        timeout: Option<std::time::Duration>,
    ) -> Result<forward::Prepared, (Box<Destination>, super::upstream::UpstreamError)> {
        forward::Prepared::new(&self.info.state, &self.info.snapshot, dest, timeout)
    }

    /// The server on a plain port for `host`: the most specific match.
    fn plain_server(&self, host: &str) -> Option<Arc<ServerPlan>> {
        let listener = self.info.listener()?;
        most_specific(&listener.servers, host, |s| &s.hosts).cloned()
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay(
        &self,
        req: Request<Incoming>,
        authority: &str,
        path: &str,
        ops: Option<(&HttpRoutePlan, &crate::plan::route::RouteDestinationPlan)>,
        upgrade: Option<hyper::upgrade::OnUpgrade>,
        prepared: Arc<forward::Prepared>,
    ) -> (Response<Body>, Outcome) {
        let dest = &prepared.dest;
        let (mut parts, body) = req.into_parts();
        let downstream_version = parts.version;
        let upgrade_header = parts.headers.get(header::UPGRADE).cloned();
        strip_hop_by_hop(&mut parts.headers);
        // Identity headers: client-sent copies are removed, then set.
        parts.headers.remove(X_FORWARDED_CLIENT_CERT);
        if let Some(x) = self
            .xfcc
            .as_deref()
            .and_then(|x| HeaderValue::from_str(x).ok())
        {
            parts.headers.insert(X_FORWARDED_CLIENT_CERT, x);
        }
        parts.headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static(if self.tls { "https" } else { "http" }),
        );
        let xff = match parts
            .headers
            .get(X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) if !prev.trim().is_empty() => {
                HeaderValue::from_str(&format!("{prev}, {}", self.info.peer.ip())).ok()
            }
            _ => Some(self.peer_ip.clone()),
        };
        if let Some(v) = xff {
            parts
                .headers
                .insert(HeaderName::from_static(X_FORWARDED_FOR), v);
        }
        if let Some((route, d)) = ops {
            // Envoy applies a destination's own operations before the route's.
            d.request_headers.apply(&mut parts.headers);
            route.request_headers.apply(&mut parts.headers);
        }
        if let Some(u) = &upgrade_header
            && upgrade.is_some()
        {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            parts.headers.insert(header::UPGRADE, u.clone());
        }
        let h2 = dest.policy.h2;
        let uri = if h2 {
            Uri::builder()
                .scheme(if dest.policy.tls.mode == crate::plan::TlsMode::Disable {
                    "http"
                } else {
                    "https"
                })
                .authority(authority)
                .path_and_query(path)
                .build()
        } else if parts.uri.scheme().is_none()
            && parts.uri.path_and_query().map(|p| p.as_str()) == Some(path)
        {
            // Origin-form and not rewritten: sent as it came.
            Ok(std::mem::take(&mut parts.uri))
        } else {
            path.parse::<Uri>().map_err(http::Error::from)
        };
        let Ok(uri) = uri else {
            return local(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "meshgate: invalid request target after rewrite".into(),
            );
        };
        parts.uri = uri;
        if h2 {
            parts.headers.remove(header::HOST);
            parts.version = http::Version::HTTP_2;
        } else {
            // The downstream Host is kept as is when it names the authority.
            let host = parts.headers.get(header::HOST).map(HeaderValue::as_bytes);
            if host != Some(authority.as_bytes()) {
                let Ok(v) = HeaderValue::from_str(authority) else {
                    return local(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "meshgate: invalid authority".into(),
                    );
                };
                parts.headers.insert(header::HOST, v);
            }
            parts.version = http::Version::HTTP_11;
        }
        let upstream_req = Request::from_parts(parts, boxed(body));
        let pick = self.info.state.next();
        let result = forward::send(&self.info.state, &prepared, upstream_req, pick).await;
        let mut resp = match result {
            Ok(r) => r,
            Err(e) => return forward::failure(&self.info.state, "inbound", e, dest, authority),
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(down) = upgrade
        {
            let up = hyper::upgrade::on(&mut resp);
            tokio::spawn(async move {
                if let (Ok(down), Ok(up)) = (down.await, up.await) {
                    let mut down = TokioIo::new(down);
                    let mut up = TokioIo::new(up);
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
            });
            let (parts, _) = resp.into_parts();
            let outcome = Outcome {
                destination: dest.label.clone(),
                status: parts.status,
                flag: "",
                upstream: dest.upstream_for_log(),
            };
            return (
                Response::from_parts(parts, boxed(http_body_util::Empty::new())),
                outcome,
            );
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some((route, d)) = ops {
            d.response_headers.apply(&mut parts.headers);
            route.response_headers.apply(&mut parts.headers);
        }
        parts.version = downstream_version;
        let outcome = Outcome {
            destination: dest.label.clone(),
            status: parts.status,
            flag: "",
            upstream: dest.upstream_for_log(),
        };
        (Response::from_parts(parts, boxed(body)), outcome)
    }
}

fn local(status: StatusCode, reason: &'static str, msg: String) -> (Response<Body>, Outcome) {
    (
        local_response(status, reason, msg),
        Outcome::local("-", status, reason),
    )
}

/// `:authority` (HTTP/2, absolute-form) or the single `Host` header.
fn request_authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(h), None) => h
            .to_str()
            .ok()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

/// The host part of an authority, lower-cased, without user info, port or
/// brackets.
fn host_of(authority: &str) -> String {
    let a = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match a.strip_prefix('[') {
        Some(rest) => rest.split_once(']').map_or(rest, |(h, _)| h),
        None => match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => a,
        },
    };
    normalize(host)
}

fn hosts_of(s: &ServerPlan) -> String {
    s.hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The VirtualService whose hosts match `host` most specifically.
fn select_routes<'a>(routes: &'a [Arc<GatewayRoutes>], host: &str) -> Option<&'a GatewayRoutes> {
    most_specific(routes, host, |vs| &vs.hosts).map(|vs| vs.as_ref())
}

fn is_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == http::Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_strips_port_brackets_and_user_info() {
        for (authority, host) in [
            ("svc.test", "svc.test"),
            ("SVC.Test:8443", "svc.test"),
            ("svc.test.", "svc.test"),
            ("[::1]:443", "::1"),
            ("[2001:DB8::1]", "2001:db8::1"),
            ("user@svc.test:80", "svc.test"),
            ("127.0.0.1:18080", "127.0.0.1"),
            ("svc.test:http", "svc.test:http"),
        ] {
            assert_eq!(host_of(authority), host, "{authority}");
        }
    }
}
