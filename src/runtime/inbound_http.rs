//! HTTP after termination (or on plain inbound ports): 421 for hosts
//! outside the connection's server, VirtualService routing, identity
//! headers for the app, and the relay to the destination.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::exchange::{
    Choice, Ctx, Outcome, Reply, RequestRecord, Upgrade, admit, body_fault_or, shape_request,
    shape_response,
};
use super::http::{
    Body, MAX_CONCURRENT_STREAMS, boxed, head_buffer, header_list_size, local_response,
    request_authority, strip_hop_by_hop,
};
use super::idle;
use super::prepared::{Destination, PreparedKey};
use super::state::Snapshot;
use super::timeouts::{self, Timeouts, serve_bounded};
use crate::creds::CertInfo;
use crate::plan::destination::{self, Speak};
use crate::plan::inbound::{ListenerPlan, ServerPlan};
use crate::plan::route::{FaultPlan, HttpRoutePlan, Matched, RequestView, RouteDestinationPlan};

/// The listener plan a connection arrived on, under its configuration
/// (servers on one port may bind different IPs).
pub(super) fn listener_plan(ctx: &Ctx) -> Option<&ListenerPlan> {
    let l = &ctx.conn.listener;
    let inbound = &ctx.snapshot.plan.inbound;
    // Captured (on the mesh listener): by the port the client dialled.
    if let Some(orig) = ctx.conn.original_dst() {
        return inbound.captured_listener(orig.port());
    }
    inbound
        .listeners
        .iter()
        .find(|p| p.port == l.port && p.bind == l.bind)
}

/// The config port a connection is served as: the port a captured client
/// dialled, else the listener's.
pub(super) fn config_port(ctx: &Ctx) -> u16 {
    ctx.conn
        .original_dst()
        .map_or(ctx.conn.listener.port, |o| o.port())
}

/// The destination port AuthorizationPolicy sees (`ports`,
/// `destination.port`): the config port, except that connections made to
/// the mesh listener itself are for the app at `--app-addr`, and policies
/// name the workload's port, as on a sidecar whose capture delivers the
/// app's port to 15006.
pub(super) fn policy_port(ctx: &Ctx) -> u16 {
    match ctx.state.bootstrap.app_addr {
        Some(app)
            if ctx.conn.original_dst().is_none() && listener_plan(ctx).is_some_and(|l| l.mesh) =>
        {
            app.port()
        }
        _ => config_port(ctx),
    }
}

/// Where a captured connection served by the mesh listener goes: the
/// address the client dialled, connected to from `127.0.0.6`, which the
/// capture rules let through (Istio's `InboundPassthroughCluster`).
pub(super) fn captured_delivery(ctx: &Ctx) -> Option<Destination> {
    let orig = ctx.conn.original_dst()?;
    // Sidecar ingress and Gateway servers have their own destinations;
    // the mesh listener's `--app-addr` is for connections made to 15006.
    if !listener_plan(ctx).is_some_and(|l| l.mesh) {
        return None;
    }
    let mut dest = Destination::plain(
        &orig.ip().to_string(),
        orig.port(),
        "InboundPassthroughCluster",
    );
    dest.source = orig
        .is_ipv4()
        .then_some(std::net::IpAddr::from(INBOUND_PASSTHROUGH_SOURCE));
    Some(dest)
}

/// The source address of connections to the app from captured inbound
/// traffic (Istio's): `meshgate iptables` lets it through uncaptured.
pub const INBOUND_PASSTHROUGH_SOURCE: [u8; 4] = [127, 0, 0, 6];

/// One downstream HTTP connection on an inbound listener.
pub(super) struct HttpConn {
    ctx: Ctx,
    /// The server chosen by SNI for a TLS connection; `None` on plain
    /// ports, where each request picks its server by Host.
    server: Option<Arc<ServerPlan>>,
    /// Whether the client spoke TLS to us.
    tls: bool,
    /// `X-Forwarded-Client-Cert` for a verified client certificate.
    xfcc: Option<HeaderValue>,
    /// The peer's IP as a header value (`X-Forwarded-For`), made once.
    peer_ip: HeaderValue,
    /// HTTP/1.1 sessions and the connection's time bounds (`idle`).
    park: idle::ParkCtl,
}

impl AsRef<idle::ParkCtl> for HttpConn {
    fn as_ref(&self) -> &idle::ParkCtl {
        &self.park
    }
}

impl HttpConn {
    /// An HTTP connection whose TLS outcome is already recorded on the
    /// connection.
    pub(super) fn new(ctx: Ctx, server: Option<Arc<ServerPlan>>) -> HttpConn {
        let peer_ip = HeaderValue::from_str(&ctx.conn.peer.ip().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let fact = ctx.conn.tls();
        let by = server.as_deref().and_then(|s| own_uri(&ctx.snapshot, s));
        let xfcc = fact
            .client()
            .and_then(|c| HeaderValue::from_str(&xfcc(c, by.as_deref())).ok());
        HttpConn {
            tls: fact.terminated(),
            ctx,
            server,
            xfcc,
            peer_ip,
            park: idle::ParkCtl::default(),
        }
    }
}

/// The URI SAN of the certificate a server presents (XFCC `By=`).
fn own_uri(snapshot: &Snapshot, server: &ServerPlan) -> Option<String> {
    let tls = server.tls.as_ref()?;
    tls.certs.iter().find_map(|src| {
        snapshot
            .creds
            .servers
            .get(src)?
            .leaf
            .sans
            .iter()
            .find_map(|s| s.strip_prefix("URI:").map(str::to_string))
    })
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
/// drives it, so an idle connection's task stays small. HTTP/1.1 (by ALPN
/// or by its first bytes) is served in sessions that release hyper's
/// buffers while the connection is idle (`idle`).
pub(super) fn serve<IO>(
    io: IO,
    conn: Arc<HttpConn>,
    version: Version,
) -> Pin<Box<dyn Future<Output = ()> + Send>>
where
    IO: idle::Park + AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Held once, on the heap: the futures below each keep a pointer.
    let io = Box::new(io);
    let header_timeout = conn.ctx.state.bootstrap.request_header_timeout;
    let park_limit = idle::park_limit(header_timeout);
    let max_head = conn.ctx.state.bootstrap.max_header_bytes;
    let (max_buf, max_list) = (head_buffer(max_head), header_list_size(max_head));
    let shutdown = conn.ctx.conn.listener.stop.clone();
    let record = conn.ctx.conn.clone();
    let timeouts = Timeouts::of(&conn.ctx.state.bootstrap);
    let ctl = conn.clone();
    let service = service_fn(move |req| {
        let conn = conn.clone();
        // hyper keeps room for one request future per connection for the
        // connection's whole life; boxing the request's work keeps that
        // room (idle memory) small and frees it between requests.
        async move { Ok::<_, Infallible>(Box::pin(conn.handle(req)).await) }
    });
    let h1 = move || {
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout)
            .max_buf_size(max_buf);
        builder
    };
    let h2 = move || {
        let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
            .max_header_list_size(max_list);
        builder
    };
    // Each version's future is built here and handed to `serve_bounded`
    // as it is: no `async` block around them holds a second copy of what
    // they own. HTTP/1.x sessions (and HTTP/2 found by detection) are
    // asked to finish through the park control; HTTP/2 by ALPN by hyper's
    // graceful shutdown.
    let served: Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>> = match version {
        Version::H2 => {
            let served = Box::pin(h2().serve_connection(TokioIo::new(io), service));
            return Box::pin(serve_bounded(served, record, timeouts, shutdown, |c| {
                c.as_mut().graceful_shutdown()
            }));
        }
        Version::H1 => {
            let io = idle::Parked::new(io, ctl.clone());
            Box::pin(idle::serve_h1(
                io,
                h1(),
                service,
                record.clone(),
                park_limit,
            ))
        }
        // No ALPN (plain ports, the rare TLS client without it): HTTP/2
        // with prior knowledge or HTTP/1.x, told by the first bytes.
        Version::Detect => {
            let (shared, rec) = (ctl.clone(), record.clone());
            Box::pin(async move {
                let mut io = idle::Parked::new(io, shared.clone());
                let detected = tokio::select! {
                    d = idle::detect(&mut io) => d,
                    // Finishing before the first bytes: nothing to answer.
                    () = shared.park.closed() => Ok(idle::Detected::Closed),
                };
                match detected {
                    Ok(idle::Detected::H1) => {
                        idle::serve_h1(io, h1(), service, rec, park_limit).await
                    }
                    Ok(idle::Detected::H2) => {
                        // Boxed: an HTTP/1.1 connection carries no room
                        // for HTTP/2's state.
                        let mut c = Box::pin(h2().serve_connection(TokioIo::new(io), service));
                        let mut closing = false;
                        loop {
                            tokio::select! {
                                r = c.as_mut() => break r,
                                () = shared.park.closed(), if !closing => {
                                    closing = true;
                                    c.as_mut().graceful_shutdown();
                                }
                            }
                        }
                    }
                    Ok(idle::Detected::Closed) => Ok(()),
                    Err(e) => {
                        tracing::debug!(error = %e, "downstream connection ended before its first request");
                        Ok(())
                    }
                }
            })
        }
    };
    Box::pin(serve_bounded(
        served,
        record,
        timeouts,
        shutdown,
        move |_| ctl.park.close(),
    ))
}

/// Envoy's `X-Forwarded-Client-Cert` for a verified client certificate:
/// `By=<our URI SAN>;Hash=<sha256>;Subject="<DN>";URI=<uri>;DNS=<dns>...`.
fn xfcc(info: &CertInfo, by: Option<&str>) -> String {
    let mut parts = Vec::new();
    if let Some(by) = by {
        parts.push(format!("By={}", xfcc_value(by, false)));
    }
    parts.push(format!("Hash={}", info.sha256));
    parts.push(format!("Subject={}", xfcc_value(&info.subject, true)));
    for san in &info.sans {
        if let Some(u) = san.strip_prefix("URI:") {
            parts.push(format!("URI={}", xfcc_value(u, false)));
        }
    }
    for san in &info.sans {
        if let Some(d) = san.strip_prefix("DNS:") {
            parts.push(format!("DNS={}", xfcc_value(d, false)));
        }
    }
    parts.join(";")
}

/// An XFCC value as Envoy writes it: double-quoted (with `"` and `\`
/// escaped) when `always` or when it contains `,` `;` `=` or `"`, so a
/// certificate's names cannot add pairs or elements to the header.
fn xfcc_value(v: &str, always: bool) -> std::borrow::Cow<'_, str> {
    if !always && !v.contains([',', ';', '=', '"', '\\']) {
        return std::borrow::Cow::Borrowed(v);
    }
    let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
    std::borrow::Cow::Owned(format!("\"{escaped}\""))
}

/// Headers a client must not be able to forge (Istio's SANITIZE_SET).
const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

const X_FORWARDED_FOR: &str = "x-forwarded-for";

impl HttpConn {
    async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        let mut record = RequestRecord::start(&self.ctx.conn, &req);
        let reply = self.route(req).await;
        record.finish(reply)
    }

    async fn route(&self, mut req: Request<Incoming>) -> Reply {
        if let Err(reply) = admit(&self.ctx, &mut req) {
            return *reply;
        }
        let auth = match request_authority(&req) {
            Ok(a) => a,
            Err(why) => {
                return Reply::local(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("meshgate: {why}"),
                );
            }
        };
        let (host, authority) = (auth.host.as_str(), auth.text.as_str());
        let port = config_port(&self.ctx);
        let server = match &self.server {
            Some(s) if !s.serves(host) || self.owned_elsewhere(s, host) => {
                // The HTTP/2 connection-reuse trap: this connection was set up
                // for another server's certificate; the client must retry on
                // a new connection (RFC 9110 §15.5.20), never get another
                // host's route.
                return Reply::local(
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
                let Some(s) = self.plain_server(host) else {
                    return Reply::local(
                        StatusCode::NOT_FOUND,
                        "no_route",
                        format!("meshgate: no server on port {port} serves {host}"),
                    );
                };
                s
            }
        };
        // RequestAuthentication, then AuthorizationPolicy (Envoy's
        // jwt_authn and rbac filters, before routing).
        let token = match super::authn::authenticate(&self.ctx, &mut req).await {
            Ok(t) => t,
            Err(reply) => return *reply,
        };
        if let Err(reply) = super::authz::check_request(
            &self.ctx,
            &super::authz::HttpRequest {
                host: authority,
                method: req.method().as_str(),
                scheme: if self.tls { "https" } else { "http" },
                path_and_query: req.uri().path_and_query().map_or("/", |p| p.as_str()),
                headers: req.headers(),
                auth: token.as_ref(),
                port: policy_port(&self.ctx),
            },
        ) {
            return *reply;
        }
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
            return Reply {
                resp,
                outcome: Outcome::local("https_redirect", StatusCode::MOVED_PERMANENTLY, ""),
            };
        }
        let scheme = if self.tls { "https" } else { "http" };
        // A cheap clone (shared bytes): the request moves on below.
        let uri = req.uri().clone();
        let pq = uri.path_and_query().map_or("/", |p| p.as_str());
        let view = RequestView {
            method: req.method().as_str(),
            scheme,
            authority,
            path_and_query: pq,
            headers: req.headers(),
            port,
        };
        let chosen = server.routes_for(host).and_then(|vs| {
            vs.http.iter().find_map(|r| {
                r.matched(&view)
                    .map(|m| (r, m.uri_prefix.map(str::to_string)))
            })
        });
        let Some((route, prefix)) = chosen else {
            if let Some(dest) = captured_delivery(&self.ctx) {
                // Not cached: the dialled port differs per connection
                // (the pool is still shared, keyed by content).
                let key = PreparedKey::Route(std::ptr::from_ref(server.as_ref()) as usize, false);
                let prepared = match self.ctx.prepared(key, authority, || {
                    Ok(Choice {
                        dest,
                        timeout: None,
                        cacheable: false,
                    })
                }) {
                    Ok(p) => p,
                    Err(reply) => return *reply,
                };
                return self.relay(req, authority, pq, None, None, &prepared).await;
            }
            if let Some(ep) = server
                .default_endpoint
                .as_ref()
                .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
            {
                // Sidecar `defaultEndpoint`: the app, for anything unrouted,
                // in h2c when the port's protocol says HTTP2/GRPC.
                let h2c = server.h2c_upstream();
                let key = PreparedKey::Route(std::ptr::from_ref(server.as_ref()) as usize, h2c);
                let prepared = match self.ctx.prepared(key, authority, || {
                    let mut dest =
                        Destination::plain(&ep.ip().to_string(), ep.port(), "inbound|default");
                    if h2c {
                        Arc::make_mut(&mut dest.policy).h2 = true;
                    }
                    Ok(Choice {
                        dest,
                        timeout: None,
                        cacheable: true,
                    })
                }) {
                    Ok(p) => p,
                    Err(reply) => return *reply,
                };
                return self.relay(req, authority, pq, None, None, &prepared).await;
            }
            return Reply::local(
                StatusCode::NOT_FOUND,
                "no_route",
                format!(
                    "meshgate: no route matched {host}{pq} on port {port} (server {})",
                    server.origin
                ),
            );
        };
        if let Some(f) = &route.fault
            && let Some(reply) = self.inject(f).await
        {
            return reply;
        }
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
            return Reply {
                resp,
                outcome: Outcome::local("redirect", status, ""),
            };
        }
        if let Some(d) = &route.direct_response {
            let status = StatusCode::from_u16(d.status).unwrap_or(StatusCode::OK);
            let mut resp = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from(
                d.body.clone().unwrap_or_default(),
            ))));
            *resp.status_mut() = status;
            return Reply {
                resp,
                outcome: Outcome::local("direct_response", status, ""),
            };
        }
        let Some(dest_plan) = route.pick(self.ctx.state.random()) else {
            return Reply::local(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_route",
                "meshgate: the route has no destination".into(),
            );
        };
        let h2c = server.h2c_upstream();
        // The plan outlives the cache entry (same generation): its address
        // names the destination.
        let key = PreparedKey::Route(std::ptr::from_ref(dest_plan) as usize, h2c);
        let prepared = match self.ctx.prepared(key, &dest_plan.host, || {
            self.route_destination(dest_plan, h2c, route)
        }) {
            Ok(p) => p,
            Err(reply) => return *reply,
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
        // Keep the client's WebSocket upgrade before the request is consumed.
        let upgrade = Upgrade::take(&mut req);
        self.relay(
            req,
            new_authority.unwrap_or(authority),
            new_path.as_deref().unwrap_or(pq),
            Some((route, dest_plan)),
            upgrade,
            &prepared,
        )
        .await
    }

    /// A route's `fault`: the delay, then the abort, each for its share of
    /// requests (Envoy's fault filter order).
    async fn inject(&self, fault: &FaultPlan) -> Option<Reply> {
        if let Some((delay, share)) = fault.delay
            && share.includes(self.ctx.state.random())
        {
            tokio::time::sleep(delay).await;
        }
        let (status, share) = fault.abort?;
        if !share.includes(self.ctx.state.random()) {
            return None;
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        Some(Reply::local(
            status,
            "fault_abort",
            "fault filter abort".into(),
        ))
    }

    /// Where a route destination goes, as the plan decides.
    fn route_destination(
        &self,
        dest_plan: &RouteDestinationPlan,
        h2c: bool,
        route: &HttpRoutePlan,
    ) -> Result<Choice, Box<Reply>> {
        let target = destination::resolve(
            &self.ctx.snapshot.plan.outbound,
            &dest_plan.host,
            dest_plan.port,
            dest_plan.subset.as_deref(),
            Speak::Http { h2c },
        );
        let mut dest = Destination::route(&target);
        // The route's retry policy (Istio's default when it is silent).
        dest.retries = route.retries.clone();
        Ok(Choice {
            dest,
            timeout: route.timeout,
            cacheable: true,
        })
    }

    /// Whether another server on this listener names `host` more
    /// specifically than `server` (the connection's, chosen by SNI): then the
    /// request belongs to that server and its TLS policy, even when the
    /// connection's server has a `*` host (421, as Istio's hardening guide
    /// expects).
    fn owned_elsewhere(&self, server: &ServerPlan, host: &str) -> bool {
        listener_plan(&self.ctx).is_some_and(|l| l.owned_elsewhere(server, host))
    }

    /// The server on a plain port for `host`: the most specific match.
    fn plain_server(&self, host: &str) -> Option<Arc<ServerPlan>> {
        listener_plan(&self.ctx)?.server_for_host(host).cloned()
    }

    async fn relay(
        &self,
        req: Request<Incoming>,
        authority: &str,
        path: &str,
        ops: Option<(&HttpRoutePlan, &RouteDestinationPlan)>,
        upgrade: Option<Upgrade>,
        prepared: &super::prepared::Prepared,
    ) -> Reply {
        let dest = &prepared.dest;
        let (mut parts, body) = req.into_parts();
        let downstream_version = parts.version;
        strip_hop_by_hop(&mut parts.headers);
        // Identity headers: client-sent copies are removed, then set.
        parts.headers.remove(X_FORWARDED_CLIENT_CERT);
        if let Some(x) = &self.xfcc {
            parts.headers.insert(X_FORWARDED_CLIENT_CERT, x.clone());
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
                HeaderValue::from_str(&format!("{prev}, {}", self.ctx.conn.peer.ip())).ok()
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
        if let Err(reply) = shape_request(&mut parts, authority, path, dest, upgrade.is_some()) {
            return *reply;
        }
        let stream_idle = self.ctx.state.bootstrap.stream_idle_timeout;
        let (body, fault) = timeouts::request_body(body, stream_idle);
        let upstream_req = Request::from_parts(parts, body);
        let resp = match self.ctx.send(prepared, upstream_req, authority).await {
            Ok(r) => r,
            Err(reply) => return body_fault_or(&fault, &self.ctx.conn, *reply),
        };
        let status = resp.status();
        if status == StatusCode::SWITCHING_PROTOCOLS {
            return self.ctx.switch(resp, upgrade, dest);
        }
        let (mut parts, body) = shape_response(resp, downstream_version, stream_idle);
        if let Some((route, d)) = ops {
            d.response_headers.apply(&mut parts.headers);
            route.response_headers.apply(&mut parts.headers);
        }
        Reply {
            resp: Response::from_parts(parts, body),
            outcome: Outcome::relayed(dest, status),
        }
    }
}

fn hosts_of(s: &ServerPlan) -> String {
    s.hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
