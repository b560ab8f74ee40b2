//! The outbound listener (Istio's 15001): plain HTTP from the local app,
//! originated to upstreams per the plan.
//!
//! Accepts origin-form requests (host from `Host`), absolute-form requests
//! (`curl -x`, `HTTP_PROXY`) and `CONNECT` tunnels (bytes relayed untouched,
//! policy applied by host). Requests follow the mesh VirtualService's HTTP
//! routes (matched on the normalised request, with their rewrites and
//! header operations); a tunnel to a host whose VirtualService has TLS or
//! TCP routes for the port is routed by its first bytes: a ClientHello's
//! SNI selects a TLS route, anything else a TCP route.
//! Under `outboundTlsPolicy: REQUIRE`, plain text leaves only inside TLS
//! the destination originates or to an exception
//! (`OutboundPlan::plaintext_allowed`); else a request gets 403 and a
//! tunnel whose first bytes are not TLS is closed (`plaintext_refused`).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::conn::Connection;
use super::copy::{Counted, TCP_IDLE_TIMEOUT, splice};
use super::exchange::{
    Choice, Ctx, Outcome, Reply, RequestRecord, Upgrade, admit, body_fault_or, shape_request,
    shape_response,
};
use super::http::{Authority, Body, boxed, head_buffer, request_authority, strip_hop_by_hop};
use super::idle;
use super::log_limit::LogLimit;
use super::prepared::{Destination, Prepared, PreparedKey};
use super::state::State;
use super::timeouts::{self, Timeouts, serve_bounded};
use super::tls_fact::{NoTls, TlsFact};
use crate::plan::Decision;
use crate::plan::outbound::tls_policy::PlaintextRefusal;
use crate::plan::outbound::{MeshRouting, RequestFacts};
use crate::plan::route::RequestView;
use crate::tls::hello::{self, RawSni};

/// Serves one accepted connection on the outbound listener.
pub async fn serve(stream: Counted<TcpStream>, conn: Arc<Connection>, state: Arc<State>) {
    serve_http(stream, conn, state).await;
}

/// Serves HTTP/1.1 from the app on `io` (an accepted socket, or a captured
/// one whose first bytes were read to sniff it and are replayed), in
/// sessions that let go of hyper's state while the app's connection is
/// idle (`idle`): an app's pool of keep-alive connections costs little.
pub(super) async fn serve_http<IO>(io: IO, conn: Arc<Connection>, state: Arc<State>)
where
    IO: idle::Park + tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    conn.set_tls(TlsFact::NoTls(NoTls::Plaintext));
    let stop = conn.listener.stop.clone();
    let timeouts = Timeouts::of(&state.bootstrap);
    // One snapshot per connection: a reload never splits a connection.
    let ctx = Arc::new(Ctx {
        snapshot: state.snapshot(),
        state,
        conn: conn.clone(),
    });
    let header_timeout = ctx.state.bootstrap.request_header_timeout;
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(head_buffer(ctx.state.bootstrap.max_header_bytes));
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        // hyper keeps room for one request future per connection for the
        // connection's whole life; boxing the request's work keeps that
        // room (idle memory) small and frees it between requests.
        async move { Ok::<_, Infallible>(Box::pin(handle(ctx, req)).await) }
    });
    let ctl = Arc::new(idle::ParkCtl::default());
    let limit = idle::park_limit(header_timeout);
    let served = idle::serve_h1(
        idle::Parked::new(io, ctl.clone()),
        builder,
        service,
        conn.clone(),
        limit,
    );
    serve_bounded(Box::pin(served), conn, timeouts, stop, |_| ctl.close()).await;
}

async fn handle(ctx: Arc<Ctx>, mut req: Request<Incoming>) -> Response<Body> {
    let conn = ctx.conn.clone();
    let mut record = RequestRecord::start(&conn, &req);
    if let Err(reply) = admit(&ctx, &mut req) {
        return record.finish(*reply);
    }
    let reply = match request_authority(&req) {
        Err(why) => Reply::local(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("meshgate: {why}"),
        ),
        Ok(auth) if req.method() == Method::CONNECT => match auth.port {
            Some(port) => connect(&ctx, req, &auth.host, port).await,
            None => Reply::local(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "meshgate: CONNECT needs host:port".into(),
            ),
        },
        Ok(auth) => forward(&ctx, req, &auth).await,
    };
    record.finish(reply)
}

async fn forward(ctx: &Ctx, mut req: Request<Incoming>, auth: &Authority) -> Reply {
    let scheme = match req.uri().scheme_str() {
        Some("https") => "https",
        _ => "http",
    };
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (mut host, mut port) = (auth.host.as_str(), auth.port.unwrap_or(default_port));
    let captured_host;
    if let Some(orig) = ctx
        .conn
        .original_dst()
        .filter(|_| req.uri().authority().is_none())
    {
        // Captured origin-form: the port the app dialled picks the
        // ServiceEntry port, and a Host the registry does not know may be
        // known by address. (An absolute-form request names its own.)
        port = orig.port();
        captured_host = ctx
            .snapshot
            .plan
            .outbound
            .captured_host(Some(host), orig.ip(), port);
        if let Some(h) = &captured_host {
            host = h;
        }
    }
    let upgrade = Upgrade::take(&mut req);
    let (mut parts, body) = req.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    // The Host as the app addressed it: its own header for origin-form,
    // else the absolute URI's host (with a port other than 80).
    let authority = match parts.headers.get(http::header::HOST) {
        Some(h) if parts.uri.authority().is_none() => h.to_str().unwrap_or(host).to_string(),
        _ if port == 80 => host.to_string(),
        _ => format!("{host}:{port}"),
    };
    // Already normalised by `admit`: routes match what the upstream gets.
    let pq = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let outbound = &ctx.snapshot.plan.outbound;
    let facts = RequestFacts {
        host,
        request: RequestView {
            method: parts.method.as_str(),
            scheme,
            authority: &authority,
            path_and_query: &pq,
            headers: &parts.headers,
            port,
        },
    };
    let routing = outbound.select(&facts, ctx.state.random());
    if let MeshRouting::NoMatch(vs) = routing {
        return Reply::local(
            StatusCode::NOT_FOUND,
            "no_route",
            format!(
                "meshgate: no route of {} matched {} {host}{pq} on port {port}",
                vs.resource, parts.method
            ),
        );
    }
    let key = prepared_key(ctx, host, port, &routing);
    let prepared = match ctx.prepared(key, &auth.text, || choose(ctx, host, port, &routing)) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
    // The app's bytes are plain text: under outboundTlsPolicy REQUIRE they
    // leave only inside the destination's TLS, or to an exception.
    if let Err(refusal) = outbound.plaintext_allowed(host, port)
        && originates(&prepared).is_none()
    {
        plaintext_refused(&ctx.state.metrics, &refusal, "http");
        let mut reply = Reply::local(
            StatusCode::FORBIDDEN,
            PLAINTEXT_REFUSED,
            format!("meshgate: {refusal}"),
        );
        reply.outcome.destination = prepared.dest.label.clone();
        return reply;
    }
    let http_route = routing.http();
    let rewrite = http_route.and_then(|(r, _, m)| r.rewrite.as_ref().map(|rw| (rw, m)));
    let path = rewrite.and_then(|(rw, m)| rw.rewrite_path(&pq, &m));
    let authority = rewrite
        .and_then(|(rw, _)| rw.authority.clone())
        .unwrap_or(authority);
    if let Some((route, dest, _)) = http_route {
        // Envoy applies a destination's own operations before the route's.
        dest.request_headers.apply(&mut parts.headers);
        route.request_headers.apply(&mut parts.headers);
    }
    let websocket = upgrade.is_some();
    let path = path.as_deref().unwrap_or(&pq);
    if let Err(reply) = shape_request(&mut parts, &authority, path, &prepared.dest, websocket) {
        return *reply;
    }
    let stream_idle = ctx.state.bootstrap.stream_idle_timeout;
    let (body, fault) = timeouts::request_body(body, stream_idle);
    let req = Request::from_parts(parts, body);
    match ctx.send(&prepared, req, &format!("{host}:{port}")).await {
        Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
            ctx.switch(resp, upgrade, &prepared.dest)
        }
        Ok(resp) => {
            let status = resp.status();
            let (mut parts, body) = shape_response(resp, http::Version::HTTP_11, stream_idle);
            if let Some((route, dest, _)) = http_route {
                dest.response_headers.apply(&mut parts.headers);
                route.response_headers.apply(&mut parts.headers);
            }
            Reply {
                resp: Response::from_parts(parts, body),
                outcome: Outcome::relayed(&prepared.dest, status),
            }
        }
        Err(reply) => body_fault_or(&fault, &ctx.conn, *reply),
    }
}

/// The prepared-destination key of traffic for `host:port`: captured
/// connections have their own (their destination may be the address the
/// app dialled, which an explicit proxy request does not have).
pub(super) fn prepared_key<'a>(
    ctx: &Ctx,
    host: &'a str,
    port: u16,
    routing: &MeshRouting,
) -> PreparedKey<'a> {
    const CAPTURED: usize = 1 << (usize::BITS - 1);
    let captured = if ctx.conn.original_dst().is_some() {
        CAPTURED
    } else {
        0
    };
    PreparedKey::Host(host, port, routing.key() | captured)
}

/// Where traffic for `host:port` goes once the mesh routes have chosen.
/// A captured connection's unregistered traffic (Istio's
/// `PassthroughCluster`) and a ServiceEntry with `resolution: NONE` go to
/// the address the app dialled, as Envoy's original-destination cluster
/// does; anything else to the ServiceEntry's endpoints.
pub(super) fn choose(
    ctx: &Ctx,
    host: &str,
    port: u16,
    routing: &MeshRouting,
) -> Result<Choice, Box<Reply>> {
    let orig = ctx.conn.original_dst();
    match ctx.snapshot.plan.outbound.decide(host, port, routing) {
        Decision::Refused { reason } => Err(Box::new(refused(reason))),
        Decision::NoRoute { route } => Err(Box::new(Reply::local(
            StatusCode::NOT_FOUND,
            "no_route",
            format!("meshgate: no route of {route} matches {host}:{port}"),
        ))),
        Decision::Passthrough { host, port } => Ok(Choice {
            dest: match orig {
                Some(o) => Destination::plain(&o.ip().to_string(), o.port(), "PassthroughCluster"),
                None => Destination::plain(&host, port, "PassthroughCluster"),
            },
            timeout: None,
            cacheable: false,
        }),
        // The key names the route destination: a weighted pick is the
        // same for every later request with the key.
        Decision::Registered(t) => {
            let mut dest = Destination::registered(&t);
            let dialled = orig.filter(|_| {
                t.service.resolution == crate::config::service_entry::Resolution::None
                    && t.host == t.request_host
            });
            if let Some(o) = dialled {
                dest.endpoints = vec![(o.ip().to_string(), o.port())];
            }
            Ok(Choice {
                cacheable: dialled.is_none(),
                timeout: t.timeout,
                dest,
            })
        }
    }
}

/// A CONNECT tunnel: routed by host and port (a TCP route, else the HTTP
/// routes that need no request, else the registry; when the host's
/// VirtualService has TLS routes for the port, by its first bytes:
/// [`connect_by_first_bytes`]), then the bytes are spliced by a task that
/// shares the connection's guard (so it is counted, logged and drained
/// like the connection). When the destination's DestinationRule
/// originates TLS, the tunnel never carries plain text: a client that
/// starts with a TLS ClientHello is passed through (it speaks TLS itself),
/// anything else — or silence past the deadline — is wrapped in TLS as the
/// rule says.
async fn connect(ctx: &Arc<Ctx>, req: Request<Incoming>, host: &str, port: u16) -> Reply {
    if let Some(vs) = ctx.snapshot.plan.outbound.routes_by_sni(host, port) {
        let label = vs
            .hosts
            .iter()
            .filter(|h| h.matches(host))
            .max_by_key(|h| h.specificity())
            .map_or_else(|| host.to_string(), ToString::to_string);
        return connect_by_first_bytes(ctx.clone(), req, host.to_string(), port, label);
    }
    let authority = format!("{host}:{port}");
    let dest_ip = host.parse::<std::net::IpAddr>().ok();
    let routing = ctx
        .snapshot
        .plan
        .outbound
        .select_tunnel(host, port, dest_ip, ctx.state.random());
    let key = PreparedKey::Host(host, port, routing.key());
    let prepared = match ctx.prepared(key, &authority, || choose(ctx, host, port, &routing)) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
    let dest = prepared.dest.clone();
    let originate = originates(&prepared);
    // Under outboundTlsPolicy REQUIRE, plain bytes that are not wrapped
    // need an exception: the first bytes decide ([`open_tunnel`]).
    let refused = ctx
        .snapshot
        .plan
        .outbound
        .plaintext_allowed(host, port)
        .err();
    let pick = ctx.state.next();
    let upstream = match ctx
        .state
        .upstreams
        .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, pick)
        .await
    {
        Ok(s) => s,
        Err(e) => return ctx.failure(e, &dest, &authority),
    };
    ctx.state.metrics.tunnels.inc();
    let conn = ctx.conn.clone();
    let (label, endpoints) = (dest.label.clone(), dest.describe());
    let first_bytes = ctx.state.bootstrap.request_header_timeout;
    let connect_timeout = dest.policy.connect_timeout;
    ctx.conn.spawn(async move {
        match hyper::upgrade::on(req).await {
            Ok(upgraded) => {
                conn.spliced(label, endpoints, false);
                let mut down = TokioIo::new(upgraded);
                let end = match originate {
                    None if refused.is_none() => {
                        splice(conn.bytes(), down, upstream, TCP_IDLE_TIMEOUT).await
                    }
                    originate => {
                        let first = match read_first(&mut down, first_bytes).await {
                            Ok(first) => first,
                            Err(flag) => return conn.set_flag(flag),
                        };
                        let tunnel = open_tunnel(
                            &first,
                            upstream,
                            originate,
                            refused,
                            connect_timeout,
                            conn.metrics(),
                        );
                        match tunnel.await {
                            Ok(up) => up.splice(&conn, down).await,
                            Err(flag) => return conn.set_flag(flag),
                        }
                    }
                };
                conn.set_flag(end.flag());
            }
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "CONNECT upgrade failed");
                conn.set_flag("upgrade_failed");
            }
        }
    });
    Reply {
        resp: Response::new(boxed(http_body_util::Empty::new())),
        outcome: Outcome::relayed(&dest, StatusCode::OK),
    }
}

/// A CONNECT tunnel to a host whose VirtualService has TLS routes for the
/// port: accepted at once (the client sends nothing before the 200), then
/// routed by what the client sends first. A ClientHello's SNI selects a
/// TLS route (none matching: the tunnel is closed, as Envoy finds no
/// filter chain); other bytes, or silence past `requestHeaderTimeout`,
/// follow the TCP routes (`destinationSubnets` match a CONNECT to an IP),
/// else the host's other routes or its ServiceEntry.
/// Bytes go through as they are, wrapped in the destination's TLS only
/// when its DestinationRule originates TLS and the client did not start
/// TLS itself. `label` names the tunnel in the request's record.
fn connect_by_first_bytes(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    host: String,
    port: u16,
    label: String,
) -> Reply {
    ctx.state.metrics.tunnels.inc();
    let task = ctx.clone();
    ctx.conn.spawn(async move {
        let ctx = task;
        let conn = ctx.conn.clone();
        let upgraded = match hyper::upgrade::on(req).await {
            Ok(u) => u,
            Err(e) => {
                debug!(peer = %conn.peer, error = %e, "CONNECT upgrade failed");
                return conn.set_flag("upgrade_failed");
            }
        };
        let mark = conn.byte_mark();
        let mut down = TokioIo::new(upgraded);
        let wait = ctx.state.bootstrap.request_header_timeout;
        let first = match read_first(&mut down, wait).await {
            Ok(first) => first,
            Err(flag) => return conn.set_flag(flag),
        };
        let outbound = &ctx.snapshot.plan.outbound;
        let dest_ip = host.parse::<std::net::IpAddr>().ok();
        let pick = ctx.state.random();
        let routing = if is_tls_record(&first) {
            let sni = client_hello_sni(&first);
            match outbound.select_tls(&host, port, sni.as_deref(), dest_ip, pick) {
                MeshRouting::Unrouted => outbound.select_connection(&host, port, pick),
                r => r,
            }
        } else {
            outbound.select_tunnel(&host, port, dest_ip, pick)
        };
        if let MeshRouting::NoMatch(vs) = routing {
            debug!(peer = %conn.peer, host, port, route = %vs.resource, "CONNECT tunnel: no route matched its first bytes; closing");
            return conn.set_flag("no_route");
        }
        let authority = format!("{host}:{port}");
        let key = PreparedKey::Host(&host, port, routing.key());
        let prepared = match ctx.prepared(key, &authority, || choose(&ctx, &host, port, &routing)) {
            Ok(p) => p,
            Err(reply) => return conn.set_flag(reply.outcome.flag),
        };
        let dest = &prepared.dest;
        let upstream = match ctx
            .state
            .upstreams
            .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, ctx.state.next())
            .await
        {
            Ok(s) => s,
            Err(e) => return conn.set_flag(ctx.failure(e, dest, &authority).outcome.flag),
        };
        conn.spliced_since(dest.label.clone(), dest.describe(), mark);
        let tunnel = open_tunnel(
            &first,
            upstream,
            originates(&prepared),
            outbound.plaintext_allowed(&host, port).err(),
            dest.policy.connect_timeout,
            conn.metrics(),
        );
        let end = match tunnel.await {
            Ok(up) => up.splice(&conn, down).await,
            Err(flag) => return conn.set_flag(flag),
        };
        conn.set_flag(end.flag());
    });
    Reply {
        resp: Response::new(boxed(http_body_util::Empty::new())),
        outcome: Outcome::local(&label, StatusCode::OK, ""),
    }
}

/// The TLS a prepared destination originates: its client config and SNI.
pub(super) fn originates(prepared: &Prepared) -> Option<Originate> {
    match (&prepared.spec.key.tls, &prepared.spec.sni) {
        (Some(config), Some(sni)) => Some((config.0.clone(), sni.clone())),
        _ => None,
    }
}

/// A client config and the SNI to send with it.
pub(super) type Originate = (
    Arc<rustls::ClientConfig>,
    rustls::pki_types::ServerName<'static>,
);

/// Largest ClientHello read from a tunnel before routing it.
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Whether `bytes` start a TLS handshake record: content type 22, version
/// 3.x.
pub(super) fn is_tls_record(bytes: &[u8]) -> bool {
    bytes.len() >= 2 && bytes[0] == 0x16 && bytes[1] == 0x03
}

/// The SNI of the ClientHello in `bytes` (lower case), when it has a valid
/// one.
pub(super) fn client_hello_sni(bytes: &[u8]) -> Option<String> {
    let RawSni::Name(name) = hello::raw_server_name(bytes) else {
        return None;
    };
    hello::check_host_name(&name).ok()?;
    let name = std::str::from_utf8(&name).ok()?;
    Some(crate::plan::host::normalize(name))
}

/// Reads what a tunnel's client sends first, waiting at most `wait`: a
/// TLS record is read until its ClientHello is whole (or
/// [`MAX_HELLO_BYTES`]), anything else is what one read gives. Silence is
/// no bytes; a client that closes is the connection's flag.
async fn read_first<D>(down: &mut D, wait: std::time::Duration) -> Result<Vec<u8>, &'static str>
where
    D: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt as _;
    let deadline = tokio::time::Instant::now() + wait;
    let mut first = Vec::new();
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = match tokio::time::timeout_at(deadline, down.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Err("downstream_closed"),
            Ok(Ok(n)) => n,
            // A client waiting for the server to speak first, or a
            // ClientHello that never completes: route what there is.
            Err(_) => return Ok(first),
        };
        first.extend_from_slice(&chunk[..n]);
        if !hello_pending(&first) {
            return Ok(first);
        }
    }
}

/// Whether `bytes` start a ClientHello that has not all arrived: a TLS
/// handshake record cut short, or a ClientHello (perhaps over several
/// records) not yet readable. A malformed one is read until the deadline.
fn hello_pending(bytes: &[u8]) -> bool {
    if bytes.first() != Some(&0x16) || bytes.len() >= MAX_HELLO_BYTES {
        return false;
    }
    if bytes.len() < 9 {
        return bytes.len() < 2 || bytes[1] == 0x03;
    }
    let record_end = 5 + usize::from(u16::from_be_bytes([bytes[3], bytes[4]]));
    is_tls_record(bytes)
        && hello::raw_server_name(bytes) == RawSni::Unreadable
        && (bytes.len() < record_end || bytes[5] == 1)
}

/// The upstream side of a CONNECT tunnel.
pub(super) enum Tunnel {
    /// The client's bytes go through untouched (it speaks TLS itself, or
    /// the destination takes plain bytes).
    Plain(TcpStream),
    /// meshgate's TLS, as the DestinationRule says.
    Originated(Box<tokio_rustls::client::TlsStream<crate::tls::client::Watched<TcpStream>>>),
}

impl Tunnel {
    /// Relays the client's bytes to the upstream until either side ends.
    pub(super) async fn splice<D>(
        self,
        conn: &super::conn::Connection,
        down: D,
    ) -> super::copy::SpliceEnd
    where
        D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match self {
            Tunnel::Plain(up) => splice(conn.bytes(), down, up, TCP_IDLE_TIMEOUT).await,
            Tunnel::Originated(up) => splice(conn.bytes(), down, *up, TCP_IDLE_TIMEOUT).await,
        }
    }
}

/// Opens the upstream side of a tunnel whose client sent `first`: a TLS
/// record, or a destination without `originate`, goes through untouched;
/// anything else is sent inside TLS made with `originate`. `first` is
/// forwarded before anything else. Errors are the connection's flag.
///
/// `refused` is the plan's answer for plain text to the tunnel's
/// destination (`OutboundPlan::plaintext_allowed(..).err()`): with it,
/// bytes that are not a TLS record and that `originate` does not wrap
/// (silence included) are refused — nothing is written to `up`, and the
/// flag is `plaintext_refused` (logged and counted here).
pub(super) async fn open_tunnel(
    first: &[u8],
    mut up: TcpStream,
    originate: Option<Originate>,
    refused: Option<PlaintextRefusal>,
    connect_timeout: std::time::Duration,
    metrics: &crate::metrics::Metrics,
) -> Result<Tunnel, &'static str> {
    use tokio::io::AsyncWriteExt as _;
    if let Some(refusal) = refused
        && originate.is_none()
        && !is_tls_record(first)
    {
        plaintext_refused(metrics, &refusal, "tcp");
        return Err(PLAINTEXT_REFUSED);
    }
    let Some((config, sni)) = originate.filter(|_| !is_tls_record(first)) else {
        up.write_all(first)
            .await
            .map_err(|_| "upstream_write_failed")?;
        return Ok(Tunnel::Plain(up));
    };
    let handshake = crate::tls::client::connect(&config, sni, up);
    let mut tls = match tokio::time::timeout(connect_timeout, handshake).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            debug!(reason = e.reason.as_str(), detail = %e.detail, "CONNECT tunnel: TLS origination failed");
            metrics
                .tls_failures
                .get_or_create(&crate::metrics::FailureLabels {
                    direction: "outbound",
                    reason: e.reason.as_str(),
                })
                .inc();
            return Err(e.reason.as_str());
        }
        Err(_) => return Err("handshake_timeout"),
    };
    if !first.is_empty() {
        tls.write_all(first)
            .await
            .map_err(|_| "upstream_write_failed")?;
    }
    Ok(Tunnel::Originated(Box::new(tls)))
}

/// The flag (and `x-meshgate-error`) of plain text refused under
/// `outboundTlsPolicy: REQUIRE`.
pub(super) const PLAINTEXT_REFUSED: &str = "plaintext_refused";

/// Plain-text refusals: at most this many lines per kind per 10 s (a
/// client can cause one per request); the metric counts them all.
static PLAINTEXT_LOG: LogLimit = LogLimit::per_10s(10);

/// Logs (rate limited) and counts plain text refused under
/// `outboundTlsPolicy: REQUIRE`; `kind` is `http` (a request) or `tcp` (a
/// tunnel's bytes).
pub(super) fn plaintext_refused(
    metrics: &crate::metrics::Metrics,
    refusal: &PlaintextRefusal,
    kind: &'static str,
) {
    metrics.count_plaintext_refused(kind);
    if let Some(suppressed) = PLAINTEXT_LOG.allow(kind) {
        warn!(
            reason = PLAINTEXT_REFUSED,
            destination = %refusal.authority(),
            kind,
            suppressed,
            "outbound plain text refused: {refusal}{}",
            PLAINTEXT_LOG.note(suppressed)
        );
    }
}

pub(super) fn refused(reason: String) -> Reply {
    let mut reply = Reply::local(
        StatusCode::BAD_GATEWAY,
        "registry_only",
        format!("meshgate: {reason}"),
    );
    reply.outcome.destination = "BlackHoleCluster".into();
    reply
}
