//! The outbound listener (Istio's 15001): plain HTTP from the local app,
//! originated to upstreams per the plan.
//!
//! Accepts origin-form requests (host from `Host`), absolute-form requests
//! (`curl -x`, `HTTP_PROXY`) and `CONNECT` tunnels (bytes relayed untouched,
//! policy applied by host).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tracing::debug;

use super::conn::Connection;
use super::copy::{Counted, TCP_IDLE_TIMEOUT, splice};
use super::exchange::{
    Choice, Ctx, Outcome, Reply, RequestRecord, Upgrade, admit, body_fault_or, shape_request,
    shape_response,
};
use super::http::{Authority, Body, boxed, head_buffer, request_authority, strip_hop_by_hop};
use super::prepared::{Destination, PreparedKey};
use super::state::State;
use super::timeouts::{self, Timeouts, serve_bounded};
use super::tls_fact::{NoTls, TlsFact};
use crate::plan::Decision;

/// Serves one accepted connection on the outbound listener.
pub async fn serve(stream: Counted<TcpStream>, conn: Arc<Connection>, state: Arc<State>) {
    conn.set_tls(TlsFact::NoTls(NoTls::Plaintext));
    let stop = conn.listener.stop.clone();
    let timeouts = Timeouts::of(&state.bootstrap);
    // One snapshot per connection: a reload never splits a connection.
    let ctx = Arc::new(Ctx {
        snapshot: state.snapshot(),
        state,
        conn: conn.clone(),
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.state.bootstrap.request_header_timeout)
        .max_buf_size(head_buffer(ctx.state.bootstrap.max_header_bytes));
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        // hyper keeps room for one request future per connection for the
        // connection's whole life; boxing the request's work keeps that
        // room (idle memory) small and frees it between requests.
        async move { Ok::<_, Infallible>(Box::pin(handle(ctx, req)).await) }
    });
    let served = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    serve_bounded(Box::pin(served), &conn, timeouts, stop, |c| {
        c.as_mut().graceful_shutdown()
    })
    .await;
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
    let default_port = if req.uri().scheme_str() == Some("https") {
        443
    } else {
        80
    };
    let (host, port) = (auth.host.as_str(), auth.port.unwrap_or(default_port));
    let prepared = match ctx.prepared(PreparedKey::Host(host, port), &auth.text, || {
        choose(ctx, host, port)
    }) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
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
    let pq = parts
        .uri
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    let websocket = upgrade.is_some();
    if let Err(reply) = shape_request(&mut parts, &authority, &pq, &prepared.dest, websocket) {
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
            let (parts, body) = shape_response(resp, http::Version::HTTP_11, stream_idle);
            Reply {
                resp: Response::from_parts(parts, body),
                outcome: Outcome::relayed(&prepared.dest, status),
            }
        }
        Err(reply) => body_fault_or(&fault, &ctx.conn, *reply),
    }
}

/// Routes `host:port` per the plan.
fn choose(ctx: &Ctx, host: &str, port: u16) -> Result<Choice, Box<Reply>> {
    match ctx
        .snapshot
        .plan
        .outbound
        .route(host, port, ctx.state.random())
    {
        Decision::Refused { reason } => Err(Box::new(refused(reason))),
        Decision::Passthrough { host, port } => Ok(Choice {
            dest: Destination::plain(&host, port, "PassthroughCluster"),
            timeout: None,
            cacheable: false,
        }),
        Decision::Registered(t) => Ok(Choice {
            cacheable: !t.weighted,
            timeout: t.timeout,
            dest: Destination::registered(&t),
        }),
    }
}

/// A CONNECT tunnel: routed by host like a request, then the bytes are
/// spliced by a task that shares the connection's guard (so it is counted,
/// logged and drained like the connection). When the destination's
/// DestinationRule originates TLS, the tunnel never carries plain text:
/// a client that starts with a TLS ClientHello is passed through (it
/// speaks TLS itself), anything else — or silence past the deadline — is
/// wrapped in TLS as the rule says.
async fn connect(ctx: &Ctx, req: Request<Incoming>, host: &str, port: u16) -> Reply {
    let authority = format!("{host}:{port}");
    let prepared = match ctx.prepared(PreparedKey::Host(host, port), &authority, || {
        choose(ctx, host, port)
    }) {
        Ok(p) => p,
        Err(reply) => return *reply,
    };
    let dest = prepared.dest.clone();
    let originate = match (&prepared.spec.key.tls, &prepared.spec.sni) {
        (Some(config), Some(sni)) => Some((config.0.clone(), sni.clone())),
        _ => None,
    };
    let pick = ctx.state.next();
    let upstream = match ctx
        .state
        .upstreams
        .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, pick)
        .await
    {
        Ok(s) => s,
        Err(e) => return ctx.failure(e, &dest, &format!("{host}:{port}")),
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
                let down = TokioIo::new(upgraded);
                let end = match originate {
                    None => splice(conn.bytes(), down, upstream, TCP_IDLE_TIMEOUT).await,
                    Some((config, sni)) => {
                        let tunnel = tunnel_tls(
                            down,
                            upstream,
                            &config,
                            sni,
                            first_bytes,
                            connect_timeout,
                            conn.metrics(),
                        );
                        match tunnel.await {
                            Ok((down, Tunnel::Passthrough(up))) => {
                                splice(conn.bytes(), down, up, TCP_IDLE_TIMEOUT).await
                            }
                            Ok((down, Tunnel::Originated(up))) => {
                                splice(conn.bytes(), down, *up, TCP_IDLE_TIMEOUT).await
                            }
                            Err(flag) => {
                                conn.set_flag(flag);
                                return;
                            }
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

/// The upstream side of a CONNECT tunnel to a TLS-originating destination.
enum Tunnel {
    /// The client speaks TLS itself: its bytes go through untouched.
    Passthrough(TcpStream),
    /// meshgate's TLS, as the DestinationRule says.
    Originated(Box<tokio_rustls::client::TlsStream<crate::tls::client::Watched<TcpStream>>>),
}

/// Reads the client's first bytes (waiting at most `wait`) and decides:
/// a TLS record passes through, anything else is sent inside TLS made with
/// `config` for `sni`. The bytes read are forwarded first. Errors are the
/// connection's flag.
async fn tunnel_tls<D>(
    mut down: D,
    mut up: TcpStream,
    config: &Arc<rustls::ClientConfig>,
    sni: rustls::pki_types::ServerName<'static>,
    wait: std::time::Duration,
    connect_timeout: std::time::Duration,
    metrics: &crate::metrics::Metrics,
) -> Result<(D, Tunnel), &'static str>
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut first = vec![0u8; 4096];
    let n = match tokio::time::timeout(wait, down.read(&mut first)).await {
        Ok(Ok(0)) | Ok(Err(_)) => return Err("downstream_closed"),
        Ok(Ok(n)) => n,
        // A client waiting for the server to speak first: TLS all the same.
        Err(_) => 0,
    };
    first.truncate(n);
    // A TLS handshake record: content type 22, version 3.x.
    if n >= 2 && first[0] == 0x16 && first[1] == 0x03 {
        up.write_all(&first)
            .await
            .map_err(|_| "upstream_write_failed")?;
        return Ok((down, Tunnel::Passthrough(up)));
    }
    let handshake = crate::tls::client::connect(config, sni, up);
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
        tls.write_all(&first)
            .await
            .map_err(|_| "upstream_write_failed")?;
    }
    Ok((down, Tunnel::Originated(Box::new(tls))))
}

fn refused(reason: String) -> Reply {
    let mut reply = Reply::local(
        StatusCode::BAD_GATEWAY,
        "registry_only",
        format!("meshgate: {reason}"),
    );
    reply.outcome.destination = "BlackHoleCluster".into();
    reply
}
