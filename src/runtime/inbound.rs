//! Inbound listeners (Gateway servers, Sidecar ingress): TLS termination or
//! SNI passthrough, then HTTP or TCP to the destination.
//!
//! Connection path: accept → read the ClientHello under the handshake
//! deadline (bytes kept) → pick the server by SNI (unknown name: TLS alert,
//! never another host's certificate) → PASSTHROUGH: replay the bytes to the
//! upstream chosen by SNI and splice | terminate with that server's config →
//! HTTP (ALPN h2 / http/1.1) or TCP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use super::forward::Destination;
use super::inbound_http::{self, HttpConn};
use super::{Snapshot, State};
use crate::plan::host::{HostPattern, most_specific};
use crate::plan::inbound::{L4RoutePlan, ListenerPlan, ServerPlan, TlsServerMode};
use crate::tls::{FailureReason, classify};

/// Largest ClientHello accepted (several records are allowed).
const MAX_HELLO_BYTES: usize = 64 * 1024;

/// Runs one inbound listener (config port `port`) until `shutdown`.
pub async fn run(
    listener: TcpListener,
    port: u16,
    bind: Option<String>,
    state: Arc<State>,
    shutdown: CancellationToken,
    tasks: tokio_util::task::TaskTracker,
) {
    // Envoy names a listener by its bound address: `ip_port`, with the
    // config port.
    let label: Arc<str> = match listener.local_addr() {
        Ok(a) => format!("{}_{port}", a.ip()).into(),
        Err(_) => format!("_{port}").into(),
    };
    let listener_info = Arc::new(ListenerInfo { port, bind, label });
    super::accept_loop(
        listener,
        shutdown.clone(),
        tasks,
        "inbound",
        move |stream, peer| {
            let state = state.clone();
            let shutdown = shutdown.clone();
            let listener = listener_info.clone();
            let span = info_span!("inbound", port, peer = %peer);
            async move { serve_connection(stream, peer, &listener, state, shutdown).await }
                .instrument(span)
        },
    )
    .await;
}

/// What every inbound connection knows.
pub(super) struct ConnInfo {
    pub state: Arc<State>,
    pub snapshot: Arc<Snapshot>,
    /// Config port.
    pub port: u16,
    /// The listener's `bind` (servers on one port may bind different IPs).
    pub bind: Option<String>,
    /// `ip_port` metric label (the listener's bound address).
    pub label: Arc<str>,
    pub peer: SocketAddr,
}

impl ConnInfo {
    pub(super) fn listener(&self) -> Option<&ListenerPlan> {
        self.snapshot
            .plan
            .inbound
            .listeners
            .iter()
            .find(|l| l.port == self.port && l.bind == self.bind)
    }

    fn handshake_failed(&self, reason: FailureReason, detail: &str) {
        self.state.metrics.tls_failure("inbound", reason);
        warn!(reason = reason.as_str(), peer = %self.peer, listener = %self.label, detail, "downstream TLS handshake failed");
    }
}

/// What every connection of one listener shares.
struct ListenerInfo {
    port: u16,
    bind: Option<String>,
    label: Arc<str>,
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &ListenerInfo,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let info = ConnInfo {
        snapshot: state.snapshot(),
        state,
        port: listener.port,
        bind: listener.bind.clone(),
        label: listener.label.clone(),
        peer,
    };
    let Some(listener) = info.listener() else {
        debug!("listener no longer configured; closing");
        return;
    };
    if listener.tls {
        if listener.permissive {
            // PERMISSIVE: TLS (a ClientHello) or plain text on the same port.
            let mut first = [0u8; 1];
            let deadline = info.state.bootstrap.handshake_timeout;
            match tokio::time::timeout(deadline, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 && first[0] != 0x16 => {
                    let server = listener.servers.first().cloned();
                    let conn = Arc::new(HttpConn::new(info, server, false, None));
                    return inbound_http::serve(
                        stream,
                        conn,
                        shutdown,
                        inbound_http::Version::Detect,
                    )
                    .await;
                }
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
        }
        serve_tls(stream, info, shutdown).await;
    } else {
        // First-byte deadline: a client that connects and says nothing is
        // not held forever (HTTP/2 prior knowledge has no header timeout).
        let mut probe = [0u8; 1];
        let deadline = info.state.bootstrap.handshake_timeout;
        let is_tcp = !listener.servers.iter().all(|s| s.protocol.is_http());
        if !is_tcp
            && !matches!(tokio::time::timeout(deadline, stream.peek(&mut probe)).await, Ok(Ok(n)) if n > 0)
        {
            debug!("no request bytes before the deadline; closing");
            return;
        }
        let servers = listener.servers.clone();
        if servers.iter().all(|s| s.protocol.is_http()) {
            let conn = Arc::new(HttpConn::new(info, None, false, None));
            inbound_http::serve(stream, conn, shutdown, inbound_http::Version::Detect).await;
        } else if let Some(server) = servers.first() {
            Box::pin(serve_tcp(stream, &info, server)).await;
        }
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
}

/// Reads until a whole ClientHello has arrived, keeping every byte.
async fn read_hello(stream: &mut TcpStream) -> Result<Hello, HelloError> {
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
            Err((e, _)) => return Err(HelloError::Bad(e.to_string())),
        }
    }
}

/// The server for `sni`: the most specific host match; with no SNI, a
/// server for `*`.
fn select_server<'a>(
    servers: &'a [Arc<ServerPlan>],
    sni: Option<&str>,
) -> Option<&'a Arc<ServerPlan>> {
    match sni {
        Some(name) => most_specific(servers, name, |s| &s.hosts),
        None => servers.iter().find(|s| s.hosts.contains(&HostPattern::Any)),
    }
}

/// A fatal `unrecognized_name` alert, sent in the clear before any
/// handshake state exists.
const ALERT_UNRECOGNIZED_NAME: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// A terminated TLS connection, ready to serve.
enum Terminated {
    Http(
        tokio_rustls::server::TlsStream<TcpStream>,
        Arc<HttpConn>,
        inbound_http::Version,
    ),
    Tcp(
        tokio_rustls::server::TlsStream<TcpStream>,
        ConnInfo,
        Arc<ServerPlan>,
    ),
}

/// Serves a TLS port. The handshake runs in its own (boxed) future that is
/// gone once the connection is established: an idle connection keeps only
/// what serving needs.
async fn serve_tls(stream: TcpStream, info: ConnInfo, shutdown: CancellationToken) {
    match Box::pin(accept_tls(stream, info)).await {
        Some(Terminated::Http(tls, conn, version)) => {
            inbound_http::serve(tls, conn, shutdown, version).await
        }
        Some(Terminated::Tcp(tls, info, server)) => Box::pin(serve_tcp(tls, &info, &server)).await,
        None => {}
    }
}

/// Reads the ClientHello, picks the server, and either completes the TLS
/// handshake (`Some`) or handles the connection to its end: refusals,
/// alerts and PASSTHROUGH (`None`).
async fn accept_tls(mut stream: TcpStream, info: ConnInfo) -> Option<Terminated> {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + info.state.bootstrap.handshake_timeout;
    let hello = match tokio::time::timeout_at(deadline, read_hello(&mut stream)).await {
        Err(_) => {
            info.handshake_failed(
                FailureReason::HandshakeTimeout,
                "no complete ClientHello before the handshake deadline",
            );
            return None;
        }
        Ok(Err(HelloError::Closed)) => return None,
        Ok(Err(HelloError::NotTls(first))) => {
            if first.first().is_some_and(u8::is_ascii_uppercase) {
                // Plain HTTP on a TLS port: say so instead of a bare reset.
                let body = "this port expects TLS (HTTPS); plain HTTP was received\n";
                let resp = format!(
                    "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\nx-meshgate-error: not_tls\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(resp.as_bytes()).await;
                info.handshake_failed(
                    FailureReason::NotTls,
                    "the client did not start with a TLS record",
                );
                linger(stream).await;
                return None;
            }
            info.handshake_failed(
                FailureReason::NotTls,
                "the client did not start with a TLS record",
            );
            return None;
        }
        Ok(Err(HelloError::Bad(why))) => {
            info.handshake_failed(FailureReason::HandshakeFailure, &why);
            return None;
        }
        Ok(Ok(h)) => h,
    };
    let listener = info.listener()?;
    let Some(server) = select_server(&listener.servers, hello.sni.as_deref()).cloned() else {
        let detail = match &hello.sni {
            Some(s) => format!("no server on port {} serves SNI {s:?}", info.port),
            None => format!(
                "the client sent no SNI and no server on port {} serves \"*\"",
                info.port
            ),
        };
        info.handshake_failed(FailureReason::UnknownSni, &detail);
        let _ = stream.write_all(&ALERT_UNRECOGNIZED_NAME).await;
        linger(stream).await;
        return None;
    };
    let tls_plan = server.tls.as_ref()?;
    if tls_plan.mode == TlsServerMode::Passthrough {
        passthrough(stream, hello, &info, &server).await;
        return None;
    }
    let Some(config) = info.snapshot.server_tls.get(&server.origin).cloned() else {
        info.handshake_failed(
            FailureReason::HandshakeFailure,
            "no TLS configuration for this server",
        );
        return None;
    };
    // The ClientHello is parsed once: the handshake continues from it.
    let accept = tokio_rustls::StartHandshake::from_parts(hello.accepted, stream)
        .into_stream(config)
        .into_fallible();
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Err(_) => {
            info.handshake_failed(
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
            return None;
        }
        Ok(Err((e, io))) => {
            let (reason, detail) =
                classify(&e).unwrap_or((FailureReason::HandshakeFailure, e.to_string()));
            info.handshake_failed(reason, &detail);
            // The alert is written; let the client read it before the socket
            // goes (closing with unread input would reset the connection and
            // the client would see a reset instead of the reason).
            linger(io).await;
            return None;
        }
        Ok(Ok(t)) => t,
    };
    let (_, conn) = tls.get_ref();
    info.state
        .metrics
        .handshake_done("inbound", &info.label, conn, started.elapsed());
    let by = own_uri(&info, &server);
    let xfcc = conn
        .peer_certificates()
        .and_then(|chain| chain.first())
        .map(|leaf| inbound_http::xfcc(leaf, by.as_deref()));
    if server.protocol.is_http() {
        let version = match conn.alpn_protocol() {
            Some(b"h2") => inbound_http::Version::H2,
            Some(_) => inbound_http::Version::H1,
            None => inbound_http::Version::Detect,
        };
        let conn = Arc::new(HttpConn::new(info, Some(server), true, xfcc));
        Some(Terminated::Http(tls, conn, version))
    } else {
        Some(Terminated::Tcp(tls, info, server))
    }
}

/// The URI SAN of the certificate a server presents (XFCC `By=`).
fn own_uri(info: &ConnInfo, server: &ServerPlan) -> Option<String> {
    let tls = server.tls.as_ref()?;
    tls.certs.iter().find_map(|src| {
        info.snapshot
            .creds
            .servers
            .get(src)?
            .leaf
            .sans
            .iter()
            .find_map(|s| s.strip_prefix("URI:").map(str::to_string))
    })
}

async fn passthrough(mut stream: TcpStream, hello: Hello, info: &ConnInfo, server: &ServerPlan) {
    let Some(sni) = hello.sni.as_deref() else {
        return info.handshake_failed(
            FailureReason::UnknownSni,
            "PASSTHROUGH needs SNI to route; the client sent none",
        );
    };
    let route = server.routes.iter().flat_map(|vs| vs.tls.iter()).find(|r| {
        (r.ports.is_empty() || r.ports.contains(&info.port))
            && r.sni_hosts.iter().any(|h| h.matches(sni))
    });
    let Some(dest) = route.and_then(|r| l4_destination(info, r)) else {
        info.state
            .metrics
            .tls_failure("inbound", FailureReason::NoRoute);
        warn!(sni, peer = %info.peer, "no TLS route for this SNI on a PASSTHROUGH server; closing");
        return;
    };
    let pick = info.state.next();
    let mut upstream = match info
        .state
        .upstreams
        .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, pick)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            warn!(reason = e.reason.as_str(), detail = %e.detail, sni, "passthrough upstream unreachable");
            return;
        }
    };
    // The upstream sees exactly the client's bytes, ClientHello included.
    if upstream.write_all(&hello.bytes).await.is_err() {
        return;
    }
    let started = Instant::now();
    match tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        Ok((up, down)) => debug!(
            sni,
            bytes_up = up,
            bytes_down = down,
            ms = started.elapsed().as_millis() as u64,
            "passthrough closed"
        ),
        Err(e) => debug!(sni, error = %e, "passthrough ended with an error"),
    }
}

/// The destination of a TLS/TCP route, by weight.
fn l4_destination(info: &ConnInfo, route: &L4RoutePlan) -> Option<Destination> {
    let d = crate::plan::pick_weighted(&route.destinations, |d| d.weight, info.state.random())?;
    resolve_destination(&info.snapshot, &d.host, d.port, d.subset.as_deref()).map(
        |(mut dest, _)| {
            // L4: bytes are relayed as they are; no TLS origination.
            std::sync::Arc::make_mut(&mut dest.policy).tls = crate::plan::ClientTlsPlan::disabled();
            dest
        },
    )
}

/// A route destination: the registered service (ServiceEntry +
/// DestinationRule) when one declares the host, else the host itself via
/// the system resolver (a Kubernetes Service name, `/etc/hosts`). Returns
/// the destination and the port used.
pub(super) fn resolve_destination(
    snapshot: &Snapshot,
    host: &str,
    port: Option<u16>,
    subset: Option<&str>,
) -> Option<(Destination, u16)> {
    let outbound = &snapshot.plan.outbound;
    let host = crate::plan::host::normalize(host);
    let port = port.or_else(|| {
        outbound
            .service_for(&host, None)
            .filter(|s| s.ports.len() == 1)
            .map(|s| s.ports[0].number)
    });
    let port = port.unwrap_or(80);
    match outbound.registered(&host, &host, port, subset) {
        Some(t) => {
            let mut dest = Destination::registered(&t);
            // A plain-text port declared HTTP2 or GRPC gets h2c, as in Istio.
            if dest.policy.tls.mode == crate::plan::TlsMode::Disable
                && matches!(t.port.protocol.as_str(), "HTTP2" | "GRPC" | "GRPC-WEB")
            {
                std::sync::Arc::make_mut(&mut dest.policy).h2 = true;
            }
            Some((dest, port))
        }
        None => Some((Destination::plain(&host, port, &host), port)),
    }
}

async fn serve_tcp<IO>(mut stream: IO, info: &ConnInfo, server: &ServerPlan)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let route = server
        .routes
        .iter()
        .flat_map(|vs| vs.tcp.iter())
        .find(|r| r.ports.is_empty() || r.ports.contains(&info.port));
    let dest = match (route, &server.default_endpoint) {
        (Some(r), _) => l4_destination(info, r),
        (None, Some(ep)) => ep
            .parse::<SocketAddr>()
            .ok()
            .map(|a| Destination::plain(&a.ip().to_string(), a.port(), "inbound|default")),
        (None, None) => None,
    };
    let Some(dest) = dest else {
        warn!(peer = %info.peer, server = %server.origin, "no TCP route; closing");
        return;
    };
    let pick = info.state.next();
    let mut upstream = match info
        .state
        .upstreams
        .connect_tcp(&dest.endpoints, dest.policy.connect_timeout, pick)
        .await
    {
        Ok(u) => u,
        Err(e) => {
            warn!(reason = e.reason.as_str(), detail = %e.detail, "TCP upstream unreachable");
            return;
        }
    };
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await {
        debug!(error = %e, "TCP relay ended with an error");
    }
}

/// How long a refused connection is drained after the refusal was sent.
const LINGER: std::time::Duration = std::time::Duration::from_millis(500);

/// Shuts down the write side and reads (discarding) until the client
/// closes or [`LINGER`] passes, so a final alert or response is delivered
/// rather than lost to a reset.
async fn linger(mut stream: TcpStream) {
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
