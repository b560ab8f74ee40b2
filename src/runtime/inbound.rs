//! Inbound listeners (Gateway servers, Sidecar ingress): TLS termination or
//! SNI passthrough, then HTTP or TCP to the destination.
//!
//! Connection path: accept → read the ClientHello under the handshake
//! deadline (bytes kept) → pick the server by SNI (unknown name: TLS alert,
//! never another host's certificate) → PASSTHROUGH: replay the bytes to the
//! upstream chosen by SNI and splice | terminate with that server's config →
//! HTTP (ALPN h2 / http/1.1) or TCP.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::conn::Connection;
use super::copy::{Counted, TCP_IDLE_TIMEOUT, splice};
use super::exchange::Ctx;
use super::inbound_http::{self, HttpConn, captured_delivery, config_port, listener_plan};
use super::log_limit::LogLimit;
use super::prepared::Destination;
use super::sniff;
use super::state::State;
use super::tls_fact::{NoTls, TlsFact};
use crate::plan::destination::{self, Speak};
use crate::plan::inbound::{L4RoutePlan, ServerPlan, TlsServerMode, select_server};
use crate::tls::failure::classify_rustls;
use crate::tls::hello::{self, RawSni};
use crate::tls::{FailureReason, classify};

/// A client's socket, its bytes counted on its connection.
type Downstream = Counted<TcpStream>;

/// Largest ClientHello accepted (several records are allowed).
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Failed-handshake warnings: at most this many lines per reason per 10 s
/// (a client can cause one per connection); the metric counts them all.
static HANDSHAKE_LOG: LogLimit = LogLimit::per_10s(10);

/// Counts and logs a failed downstream handshake, and marks the
/// connection with the reason. The log line is rate-limited per reason.
fn handshake_failed(ctx: &Ctx, reason: FailureReason, detail: &str) {
    ctx.conn.set_tls(TlsFact::NoTls(NoTls::HandshakeFailed));
    ctx.conn.set_flag(reason.as_str());
    ctx.state.metrics.tls_failure("inbound", reason);
    if let Some(suppressed) = HANDSHAKE_LOG.allow(reason.as_str()) {
        warn!(
            reason = reason.as_str(),
            peer = %ctx.conn.peer,
            listener = %ctx.conn.listener.label,
            detail,
            suppressed,
            "downstream TLS handshake failed{}",
            HANDSHAKE_LOG.note(suppressed)
        );
    }
}

/// Serves one accepted connection on an inbound listener.
pub async fn serve(stream: Counted<TcpStream>, conn: Arc<Connection>, state: Arc<State>) {
    let ctx = Ctx {
        snapshot: state.snapshot(),
        state,
        conn,
    };
    let captured = ctx
        .snapshot
        .plan
        .inbound
        .listeners
        .iter()
        .any(|l| l.mesh && l.port == ctx.conn.listener.port)
        .then(|| sniff::original_dst(stream.get_ref()))
        .flatten();
    if let Some(orig) = captured {
        ctx.conn.set_original_dst(orig);
        if super::capture::is_own_port(orig, stream.get_ref(), &ctx.state) {
            return super::capture::refuse_loop(&ctx.conn, &ctx.state, orig, "inbound");
        }
    }
    if let Ok(local) = stream.get_ref().local_addr() {
        // `destination.ip` of AuthorizationPolicy conditions (recorded
        // whatever the policies now: a reload may add one).
        ctx.conn.set_local(local);
    }
    let Some(listener) = listener_plan(&ctx) else {
        debug!("listener no longer configured; closing");
        ctx.conn.set_flag("no_listener");
        return;
    };
    let deadline = ctx.state.bootstrap.handshake_timeout;
    if listener.tls {
        if listener.permissive {
            // PERMISSIVE: TLS (a ClientHello) or plain text on the same port.
            let mut first = [0u8; 1];
            match tokio::time::timeout(deadline, stream.get_ref().peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 && first[0] != 0x16 => {
                    ctx.conn.set_tls(TlsFact::NoTls(NoTls::Permissive));
                    let server = listener.servers.first().cloned();
                    if let (Some(_), true, Some(server)) = (captured, listener.mesh, &server) {
                        // A captured port carries whatever the app speaks.
                        super::capture::count_inbound(&ctx, "tcp");
                        return Box::pin(serve_tcp(stream, &ctx, server)).await;
                    }
                    let conn = Arc::new(HttpConn::new(ctx, server));
                    return inbound_http::serve(stream, conn, inbound_http::Version::Detect).await;
                }
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        if captured.is_some() {
            super::capture::count_inbound(&ctx, "tls");
        }
        serve_tls(stream, ctx).await;
        return;
    }
    ctx.conn.set_tls(TlsFact::NoTls(NoTls::Plaintext));
    let is_http = listener.servers.iter().all(|s| s.protocol.is_http());
    if captured.is_some() {
        super::capture::count_inbound(&ctx, if is_http { "http" } else { "tcp" });
    }
    // A client that says nothing is closed at the first request's
    // deadline (`runtime::timeouts`), HTTP/2 prior knowledge included.
    if is_http {
        let conn = Arc::new(HttpConn::new(ctx, None));
        inbound_http::serve(stream, conn, inbound_http::Version::Detect).await;
    } else if let Some(server) = listener.servers.first().cloned() {
        Box::pin(serve_tcp(stream, &ctx, &server)).await;
    }
}

// === TLS ===

struct Hello {
    /// Every byte read so far (replayed to a PASSTHROUGH upstream).
    bytes: Vec<u8>,
    sni: Option<String>,
    /// The parsed ClientHello; termination continues from it.
    accepted: rustls::server::Accepted,
}

enum HelloError {
    NotTls(Vec<u8>),
    Closed,
    Bad(String),
    /// rustls refused the ClientHello: the reason, and the alert to send.
    Refused {
        reason: FailureReason,
        detail: String,
        alert: Vec<u8>,
    },
}

/// The refusal of a ClientHello rustls would not accept, with the alert
/// rustls prepared (or, if it prepared none, one for the reason).
fn refused(
    e: &rustls::Error,
    mut alert: rustls::server::AcceptedAlert,
    bytes: &[u8],
) -> HelloError {
    if hello::offers_tls12_or_later(bytes) == Some(false) {
        // An old client's hello lacks what rustls checks first (e.g.
        // signature_algorithms); the version is what to tell it.
        return HelloError::Refused {
            reason: FailureReason::ProtocolVersion,
            detail: format!("the client offers only TLS 1.0/1.1 ({e}); TLS 1.2 or 1.3 is required"),
            alert: hello::fatal_alert(hello::PROTOCOL_VERSION).to_vec(),
        };
    }
    let (reason, mut detail) = classify_rustls(e);
    if reason == FailureReason::BadSni
        && let RawSni::Name(name) = hello::raw_server_name(bytes)
        && let Err(why) = hello::check_host_name(&name)
    {
        detail = why.to_string();
    }
    let mut out = Vec::new();
    let _ = alert.write_all(&mut out);
    if out.is_empty() {
        out = hello::fatal_alert(match reason {
            FailureReason::BadSni => hello::ILLEGAL_PARAMETER,
            FailureReason::ProtocolVersion => hello::PROTOCOL_VERSION,
            _ => hello::HANDSHAKE_FAILURE,
        })
        .to_vec();
    }
    HelloError::Refused {
        reason,
        detail,
        alert: out,
    }
}

/// Reads until a whole ClientHello has arrived, keeping every byte.
async fn read_hello(stream: &mut Downstream) -> Result<Hello, HelloError> {
    use tokio::io::AsyncReadExt;
    let mut acceptor = rustls::server::Acceptor::default();
    let mut bytes = Vec::with_capacity(1024);
    // On the heap: an array here would be part of every connection's task
    // for its whole life, not just while the ClientHello is read.
    let mut chunk = vec![0u8; 4096];
    loop {
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|_| HelloError::Closed)?;
        if n == 0 {
            return Err(if bytes.is_empty() {
                HelloError::Closed
            } else {
                HelloError::Bad("connection closed mid-ClientHello".into())
            });
        }
        if bytes.is_empty() && chunk[0] != 0x16 {
            return Err(HelloError::NotTls(chunk[..n].to_vec()));
        }
        bytes.extend_from_slice(&chunk[..n]);
        let mut fresh: &[u8] = &chunk[..n];
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return Err(HelloError::Bad("ClientHello too large".into()));
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let sni = accepted
                    .client_hello()
                    .server_name()
                    .map(|s| s.to_ascii_lowercase());
                return Ok(Hello {
                    bytes,
                    sni,
                    accepted,
                });
            }
            Ok(None) if bytes.len() < MAX_HELLO_BYTES => continue,
            Ok(None) => return Err(HelloError::Bad("ClientHello too large".into())),
            Err((e, alert)) => return Err(refused(&e, alert, &bytes)),
        }
    }
}

/// A fatal `unrecognized_name` alert, sent in the clear before any
/// handshake state exists.
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = hello::fatal_alert(hello::UNRECOGNIZED_NAME);

/// A terminated TLS connection, ready to serve.
enum Terminated {
    Http(
        tokio_rustls::server::TlsStream<Downstream>,
        Arc<HttpConn>,
        inbound_http::Version,
    ),
    Tcp(
        tokio_rustls::server::TlsStream<Downstream>,
        Ctx,
        Arc<ServerPlan>,
    ),
}

/// Serves a TLS port. The handshake runs in its own (boxed) future that is
/// gone once the connection is established: an idle connection keeps only
/// what serving needs.
async fn serve_tls(stream: Downstream, ctx: Ctx) {
    // The handshake's future gives back only the (boxed) future serving
    // the connection: the connection's task keeps no room for the TLS
    // stream on its way from one to the other.
    let serving = Box::pin(async move { accept_tls(stream, ctx).await.map(serve_terminated) });
    if let Some(serving) = serving.await {
        serving.await;
    }
}

/// The future serving an established TLS connection, which holds the
/// stream.
fn serve_terminated(terminated: Terminated) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    match terminated {
        Terminated::Http(tls, conn, version) => inbound_http::serve(tls, conn, version),
        Terminated::Tcp(tls, ctx, server) => {
            let tls = Box::new(tls);
            Box::pin(async move { serve_tcp(tls, &ctx, &server).await })
        }
    }
}

/// Reads the ClientHello, picks the server, and either completes the TLS
/// handshake (`Some`) or handles the connection to its end: refusals,
/// alerts and PASSTHROUGH (`None`).
async fn accept_tls(mut stream: Downstream, ctx: Ctx) -> Option<Terminated> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + ctx.state.bootstrap.handshake_timeout;
    let hello = match tokio::time::timeout_at(deadline, read_hello(&mut stream)).await {
        Err(_) => {
            handshake_failed(
                &ctx,
                FailureReason::HandshakeTimeout,
                "no complete ClientHello before the handshake deadline",
            );
            return None;
        }
        Ok(Err(HelloError::Closed)) => return None,
        Ok(Err(HelloError::NotTls(first))) => {
            handshake_failed(
                &ctx,
                FailureReason::NotTls,
                "the client did not start with a TLS record",
            );
            if first.first().is_some_and(u8::is_ascii_uppercase) {
                // Plain HTTP on a TLS port: say so instead of a bare reset.
                let body = "this port expects TLS (HTTPS); plain HTTP was received\n";
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nx-meshgate-error: not_tls\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                linger(stream).await;
            }
            return None;
        }
        Ok(Err(HelloError::Bad(why))) => {
            handshake_failed(&ctx, FailureReason::HandshakeFailure, &why);
            return None;
        }
        Ok(Err(HelloError::Refused {
            reason,
            detail,
            alert,
        })) => {
            handshake_failed(&ctx, reason, &detail);
            let _ = stream.write_all(&alert).await;
            linger(stream).await;
            return None;
        }
        Ok(Ok(h)) => h,
    };
    let listener = listener_plan(&ctx)?;
    let Some(server) = select_server(&listener.servers, hello.sni.as_deref()).cloned() else {
        let detail = match &hello.sni {
            Some(s) => format!("no server on port {} serves SNI {s:?}", config_port(&ctx)),
            None => format!(
                "the client sent no SNI and no server on port {} serves \"*\"",
                config_port(&ctx)
            ),
        };
        handshake_failed(&ctx, FailureReason::UnknownSni, &detail);
        let _ = stream.write_all(&ALERT_UNRECOGNIZED_NAME).await;
        linger(stream).await;
        return None;
    };
    let tls_plan = server.tls.as_ref()?;
    if tls_plan.mode == TlsServerMode::Passthrough {
        passthrough(stream, hello, &ctx, &server).await;
        return None;
    }
    let Some(config) = ctx.snapshot.server_tls.get(&server.origin).cloned() else {
        handshake_failed(
            &ctx,
            FailureReason::HandshakeFailure,
            "no TLS configuration for this server",
        );
        return None;
    };
    let sni: Option<Arc<str>> = hello.sni.as_deref().map(Arc::from);
    // The ClientHello is parsed once: the handshake continues from it.
    let accept = tokio_rustls::StartHandshake::from_parts(hello.accepted, stream)
        .into_stream(config)
        .into_fallible();
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Err(_) => {
            handshake_failed(
                &ctx,
                FailureReason::HandshakeTimeout,
                "handshake not finished before the deadline",
            );
            return None;
        }
        Ok(Err((e, _)))
            if e.get_ref().is_none()
                && matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset
                        | std::io::ErrorKind::BrokenPipe
                        | std::io::ErrorKind::UnexpectedEof
                ) =>
        {
            // The client went away mid-handshake: not a TLS failure.
            debug!(error = %e, "client closed the connection during the handshake");
            ctx.conn.set_tls(TlsFact::NoTls(NoTls::HandshakeFailed));
            ctx.conn.set_flag("downstream_disconnect");
            return None;
        }
        Ok(Err((e, io))) => {
            let (reason, detail) =
                classify(&e).unwrap_or((FailureReason::HandshakeFailure, e.to_string()));
            handshake_failed(&ctx, reason.as_server(), &detail);
            // The alert is written; let the client read it before the socket
            // goes (closing with unread input would reset the connection and
            // the client would see a reset instead of the reason).
            linger(io).await;
            return None;
        }
        Ok(Ok(t)) => t,
    };
    let (_, conn) = tls.get_ref();
    ctx.state
        .metrics
        .handshake_done("inbound", &ctx.conn.listener.label, conn, started.elapsed());
    let client = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| crate::creds::CertInfo::parse(leaf).ok())
        .map(Arc::new);
    let alpn = match conn.alpn_protocol() {
        Some(b"h2") => Some("h2"),
        Some(b"http/1.1") => Some("http/1.1"),
        Some(b"http/1.0") => Some("http/1.0"),
        Some(_) => Some("other"),
        None => None,
    };
    ctx.conn.set_tls(TlsFact::Established { sni, alpn, client });
    if server.protocol.is_http() {
        let version = match alpn {
            Some("h2") => inbound_http::Version::H2,
            Some(_) => inbound_http::Version::H1,
            None => inbound_http::Version::Detect,
        };
        let conn = Arc::new(HttpConn::new(ctx, Some(server)));
        Some(Terminated::Http(tls, conn, version))
    } else {
        Some(Terminated::Tcp(tls, ctx, server))
    }
}

async fn passthrough(stream: Downstream, hello: Hello, ctx: &Ctx, server: &ServerPlan) {
    ctx.conn.set_tls(TlsFact::Passthrough {
        sni: hello.sni.as_deref().map(Arc::from),
    });
    let Some(sni) = hello.sni.as_deref() else {
        return handshake_failed(
            ctx,
            FailureReason::UnknownSni,
            "PASSTHROUGH needs SNI to route; the client sent none",
        );
    };
    let port = config_port(ctx);
    if !super::authz::check_connection(ctx, Some(sni), inbound_http::policy_port(ctx)) {
        return;
    }
    let Some(dest) = server
        .tls_route(port, sni)
        .and_then(|r| l4_destination(ctx, r))
    else {
        ctx.state
            .metrics
            .tls_failure("inbound", FailureReason::NoRoute);
        ctx.conn.set_flag(FailureReason::NoRoute.as_str());
        warn!(sni, peer = %ctx.conn.peer, "no TLS route for this SNI on a PASSTHROUGH server; closing");
        return;
    };
    let Some(mut upstream) = connect_l4(ctx, &dest).await else {
        return;
    };
    // The upstream sees exactly the client's bytes, ClientHello included.
    if upstream.write_all(&hello.bytes).await.is_err() {
        ctx.conn.set_flag("upstream_reset");
        return;
    }
    let end = splice(ctx.conn.bytes(), stream, upstream, TCP_IDLE_TIMEOUT).await;
    ctx.conn.set_flag(end.flag());
}

/// Connects to an L4 destination, marking the connection as spliced to it;
/// `None` (logged, flagged) when it cannot be reached.
async fn connect_l4(ctx: &Ctx, dest: &Destination) -> Option<TcpStream> {
    let pick = ctx.state.next();
    match ctx
        .state
        .upstreams
        .connect_tcp_from(
            dest.source,
            &dest.endpoints,
            dest.policy.connect_timeout,
            pick,
        )
        .await
    {
        Ok(u) => {
            ctx.conn.spliced(dest.label.clone(), dest.describe(), true);
            Some(u)
        }
        Err(e) => {
            let reason = e.reason();
            warn!(reason = reason.as_str(), detail = %e, destination = %dest.label, "L4 upstream unreachable");
            ctx.conn.set_flag(reason.as_str());
            None
        }
    }
}

/// The destination of a TLS/TCP route, by weight.
fn l4_destination(ctx: &Ctx, route: &L4RoutePlan) -> Option<Destination> {
    let d = crate::plan::pick_weighted(&route.destinations, |d| d.weight, ctx.state.random())?;
    let target = destination::resolve(
        &ctx.snapshot.plan.outbound,
        &d.host,
        d.port,
        d.subset.as_deref(),
        Speak::Bytes,
    );
    Some(Destination::route(&target))
}

async fn serve_tcp<IO>(stream: IO, ctx: &Ctx, server: &ServerPlan)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let port = config_port(ctx);
    if !super::authz::check_connection(ctx, None, inbound_http::policy_port(ctx)) {
        return;
    }
    let dest = match server.tcp_route(port) {
        Some(r) => l4_destination(ctx, r),
        // The mesh listener's captured traffic goes where it was going;
        // anything else to the server's `defaultEndpoint`.
        None => captured_delivery(ctx).or_else(|| {
            let ep = server.default_endpoint.as_ref()?;
            let a = ep.parse::<std::net::SocketAddr>().ok()?;
            Some(Destination::plain(
                &a.ip().to_string(),
                a.port(),
                "inbound|default",
            ))
        }),
    };
    let Some(dest) = dest else {
        warn!(peer = %ctx.conn.peer, server = %server.origin, "no TCP route; closing");
        ctx.conn.set_flag(FailureReason::NoRoute.as_str());
        return;
    };
    let Some(upstream) = connect_l4(ctx, &dest).await else {
        return;
    };
    let end = splice(ctx.conn.bytes(), stream, upstream, TCP_IDLE_TIMEOUT).await;
    ctx.conn.set_flag(end.flag());
}

/// How long a refused connection is drained after the refusal was sent.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Shuts down the write side and reads (discarding) until the client
/// closes or [`LINGER`] passes, so a final alert or response is delivered
/// rather than lost to a reset.
async fn linger(mut stream: Downstream) {
    use tokio::io::AsyncReadExt;
    let _ = stream.shutdown().await;
    let mut sink = vec![0u8; 4096];
    let _ = tokio::time::timeout(LINGER, async {
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
