//! One lifecycle for every accepted connection: the accept loop (connection
//! limit, accept-error backoff), and the [`Connection`] guard each
//! connection holds, whose `Drop` writes the connection's access-log line
//! and close metrics however the connection ends (early return, error,
//! cancellation at the drain limit).
//!
//! The connection's socket counts its bytes into the guard as they move.
//! A connection's guard is shared (`Arc`) with anything the connection
//! spawns (a CONNECT tunnel, an upgraded WebSocket), so the record and the
//! connection permit are released only when the last part is done.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::copy::{ByteCounts, Counted};
use super::drain::Drain;
use super::tls_fact::TlsFact;
use crate::metrics::{ListenerLabels, Metrics, TcpLabels};

/// Most connections one listener serves at once on one worker; more wait
/// in the backlog.
pub const MAX_CONNECTIONS: usize = 10_000;

/// The flag of a connection closed because the drain limit passed.
pub const DRAINED: &str = "drained";

/// What kind of traffic a listener carries (the `reporter` of its records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the local app (Istio's `source` reporter).
    Outbound,
    /// To the local app or a Gateway destination (`destination`).
    Inbound,
    /// The proxy's own admin, stats and readiness ports.
    Admin,
}

impl Direction {
    /// Istio's `reporter` label.
    pub fn reporter(self) -> &'static str {
        match self {
            Direction::Outbound => "source",
            Direction::Inbound => "destination",
            Direction::Admin => "admin",
        }
    }
}

/// What every connection of one listener shares.
pub struct Listener {
    /// Metric label: Envoy's `ip_port` of the bound address for inbound
    /// listeners, the role for the others.
    pub label: Arc<str>,
    /// The config port (Gateway / Sidecar port; the bound port otherwise).
    pub port: u16,
    /// The Gateway server `bind`, if any.
    pub bind: Option<String>,
    /// Traffic direction.
    pub direction: Direction,
    /// Cancelled when the listener is removed or the proxy shuts down:
    /// stop accepting, and HTTP connections finish gracefully.
    pub stop: CancellationToken,
    limit: Arc<Semaphore>,
}

impl Listener {
    /// A listener whose connections stop with `stop`.
    pub fn new(
        label: Arc<str>,
        port: u16,
        bind: Option<String>,
        direction: Direction,
        stop: CancellationToken,
    ) -> Listener {
        Listener {
            label,
            port,
            bind,
            direction,
            stop,
            limit: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        }
    }
}

/// Accepts on `socket` until the listener stops, handing each connection
/// with its guard to `handler`, run as a task of `drain`. The connection
/// limit bounds what one listener can hold; accept errors (EMFILE, ...)
/// back off instead of spinning.
pub async fn accept_loop<F, Fut>(
    socket: TcpListener,
    listener: Arc<Listener>,
    metrics: Arc<Metrics>,
    drain: Drain,
    handler: F,
) where
    F: Fn(Counted<TcpStream>, Arc<Connection>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut backoff = Duration::from_millis(5);
    loop {
        let permit = tokio::select! {
            () = listener.stop.cancelled() => return,
            p = listener.limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, peer) = tokio::select! {
            () = listener.stop.cancelled() => return,
            r = socket.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(5); x }
                Err(e) => {
                    tracing::warn!(error = %e, listener = %listener.label, "accept failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        let conn = Arc::new(Connection::new(
            listener.clone(),
            peer,
            metrics.clone(),
            drain.clone(),
            permit,
        ));
        let _ = stream.set_nodelay(true);
        let stream = Counted::new(stream, conn.bytes.clone());
        conn.spawn(handler(stream, conn.clone()));
    }
}

/// How a connection ended, when not simply closed by either side.
#[derive(Debug, Default)]
struct Facts {
    tls: TlsFact,
    /// `destination_service` of spliced (TCP-level) traffic.
    destination: Option<Arc<str>>,
    /// Endpoints used, for the log.
    upstream: Option<String>,
    /// Why the connection was closed by the proxy; empty otherwise.
    flag: &'static str,
    /// Whether bytes were spliced (tunnel, upgrade, passthrough, TCP):
    /// counted in Istio's TCP metrics.
    spliced: bool,
    /// Bytes (received, sent) before the splice began (the CONNECT or
    /// upgrade exchange), left out of the TCP metrics.
    before_splice: (u64, u64),
    /// Where the client was going before capture redirected it here.
    original_dst: Option<SocketAddr>,
    /// The local address the client connected to.
    local: Option<SocketAddr>,
    /// The protocol a captured connection's first bytes showed (`http`,
    /// `tls`, `tcp`); empty when not sniffed.
    protocol: &'static str,
}

/// A connection's requests at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Activity {
    /// Requests started.
    pub requests: u64,
    /// Requests whose response is not yet given.
    pub in_flight: u32,
    /// When a request last started or ended.
    pub last: Instant,
}

/// One accepted connection. Dropped when the connection and everything it
/// spawned are done; the drop writes its access-log line and metrics.
pub struct Connection {
    /// The listener it arrived on.
    pub listener: Arc<Listener>,
    /// The client's address.
    pub peer: SocketAddr,
    /// The worker's tasks and shutdown signals.
    pub drain: Drain,
    metrics: Arc<Metrics>,
    started: Instant,
    /// Bytes from and to the client.
    bytes: Arc<ByteCounts>,
    /// HTTP requests served.
    requests: AtomicU64,
    /// HTTP requests in flight (head received, response not yet given).
    in_flight: AtomicU32,
    /// When a request last started or ended, in µs after `started`.
    last_active_us: AtomicU64,
    facts: Mutex<Facts>,
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    fn new(
        listener: Arc<Listener>,
        peer: SocketAddr,
        metrics: Arc<Metrics>,
        drain: Drain,
        permit: OwnedSemaphorePermit,
    ) -> Connection {
        let labels = ListenerLabels {
            listener: listener.label.clone(),
        };
        metrics.downstream_connections.get_or_create(&labels).inc();
        metrics
            .downstream_connections_active
            .get_or_create(&labels)
            .inc();
        Connection {
            listener,
            peer,
            drain,
            metrics,
            started: Instant::now(),
            bytes: Arc::default(),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            last_active_us: AtomicU64::new(0),
            facts: Mutex::new(Facts::default()),
            _permit: permit,
        }
    }

    /// Runs `fut`, work of this connection (serving it, a tunnel, an
    /// upgrade), as a task of its worker: drained at shutdown, and stopped
    /// at the drain limit with the connection marked `drained`.
    pub fn spawn<F>(self: &Arc<Self>, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let conn = self.clone();
        self.drain.spawn(fut, move || conn.set_flag(DRAINED));
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Records the connection's TLS outcome.
    pub fn set_tls(&self, tls: TlsFact) {
        self.facts().tls = tls;
    }

    /// The connection's TLS outcome so far.
    pub fn tls(&self) -> TlsFact {
        self.facts().tls.clone()
    }

    /// Istio's `connection_security_policy` of the connection.
    pub fn security_policy(&self) -> &'static str {
        self.facts().tls.security_policy()
    }

    /// Records why the proxy closed the connection (a stable reason).
    pub fn set_flag(&self, flag: &'static str) {
        self.facts().flag = flag;
    }

    /// Marks the connection as spliced to `destination` (`upstream` for the
    /// log) and counts it in Istio's TCP metrics: every byte of the
    /// connection when `whole`, else those from now on (after a CONNECT or
    /// upgrade exchange).
    pub fn spliced(&self, destination: Arc<str>, upstream: String, whole: bool) {
        let mark = if whole { (0, 0) } else { self.byte_mark() };
        self.spliced_since(destination, upstream, mark);
    }

    /// Bytes (received, sent) so far: where a splice whose destination is
    /// chosen later (by a tunnel's first bytes) starts counting.
    pub fn byte_mark(&self) -> (u64, u64) {
        (
            self.bytes.received.load(Ordering::Relaxed),
            self.bytes.sent.load(Ordering::Relaxed),
        )
    }

    /// [`Connection::spliced`], counting the bytes since `mark` (a
    /// [`Connection::byte_mark`]).
    pub fn spliced_since(&self, destination: Arc<str>, upstream: String, mark: (u64, u64)) {
        self.metrics
            .tcp_opened
            .get_or_create(&TcpLabels {
                reporter: self.listener.direction.reporter(),
                destination_service: destination.clone(),
            })
            .inc();
        let mut f = self.facts();
        f.before_splice = mark;
        f.destination = Some(destination);
        f.upstream = Some(upstream);
        f.spliced = true;
    }

    /// Records where a captured connection was going (its pre-NAT
    /// destination).
    pub fn set_original_dst(&self, addr: SocketAddr) {
        self.facts().original_dst = Some(addr);
    }

    /// The pre-NAT destination of a captured connection.
    pub fn original_dst(&self) -> Option<SocketAddr> {
        self.facts().original_dst
    }

    /// Records the local address the client connected to.
    pub fn set_local(&self, addr: SocketAddr) {
        self.facts().local = Some(addr);
    }

    /// The address the client meant to reach: the original destination of
    /// a captured connection, else the local address it connected to.
    pub fn destination(&self) -> Option<SocketAddr> {
        let f = self.facts();
        f.original_dst.or(f.local)
    }

    /// Records the protocol a captured connection's first bytes showed.
    pub fn set_protocol(&self, protocol: &'static str) {
        self.facts().protocol = protocol;
    }

    /// Bytes from and to the client so far.
    pub fn bytes(&self) -> &ByteCounts {
        &self.bytes
    }

    /// Counts one HTTP request on this connection, in flight until
    /// [`Connection::request_done`].
    pub fn request_started(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
    }

    /// One request of [`Connection::request_started`] is done.
    pub fn request_done(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.touch();
    }

    fn touch(&self) {
        let us = u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_active_us.store(us, Ordering::Relaxed);
    }

    /// The connection's requests so far, for its time bounds.
    pub fn activity(&self) -> Activity {
        Activity {
            requests: self.requests.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            last: self.started + Duration::from_micros(self.last_active_us.load(Ordering::Relaxed)),
        }
    }

    fn facts(&self) -> std::sync::MutexGuard<'_, Facts> {
        self.facts.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let labels = ListenerLabels {
            listener: self.listener.label.clone(),
        };
        self.metrics
            .downstream_connections_active
            .get_or_create(&labels)
            .dec();
        let facts = std::mem::take(self.facts.get_mut().unwrap_or_else(|p| p.into_inner()));
        let received = self.bytes.received.load(Ordering::Relaxed);
        let sent = self.bytes.sent.load(Ordering::Relaxed);
        if facts.spliced {
            let labels = TcpLabels {
                reporter: self.listener.direction.reporter(),
                destination_service: facts.destination.clone().unwrap_or_else(|| "-".into()),
            };
            self.metrics.tcp_closed.get_or_create(&labels).inc();
            let (r0, s0) = facts.before_splice;
            self.metrics
                .tcp_received_bytes
                .get_or_create(&labels)
                .inc_by(received.saturating_sub(r0));
            self.metrics
                .tcp_sent_bytes
                .get_or_create(&labels)
                .inc_by(sent.saturating_sub(s0));
        }
        if !access_log_on() {
            return;
        }
        info!(
            target: "access",
            reporter = self.listener.direction.reporter(),
            listener = %self.listener.label,
            peer = %self.peer,
            tls = %facts.tls,
            original_dst = %facts.original_dst.map_or_else(|| "-".to_string(), |a| a.to_string()),
            protocol = %if facts.protocol.is_empty() { "-" } else { facts.protocol },
            destination = %facts.destination.as_deref().unwrap_or("-"),
            upstream = %facts.upstream.as_deref().unwrap_or("-"),
            requests = *self.requests.get_mut(),
            bytes_received = received,
            bytes_sent = sent,
            flag = facts.flag,
            duration_ms = self.started.elapsed().as_millis() as u64,
            "connection"
        );
    }
}

/// Drives a served connection (`conn`, pinned) to its end; when `stop` is
/// cancelled (the listener removed, shutdown) asks it to finish gracefully
/// (`graceful`: finish the request in flight, then close) and waits for
/// that. Errors are logged at debug: a client's reset is normal.
pub async fn serve_until_stopped<C, E>(
    mut conn: std::pin::Pin<Box<C>>,
    stop: CancellationToken,
    graceful: impl FnOnce(&mut std::pin::Pin<Box<C>>),
) where
    C: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            graceful(&mut conn);
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "downstream connection ended with an error");
    }
}

/// Whether access-log lines are written (`info` for target `access`).
pub fn access_log_on() -> bool {
    tracing::enabled!(target: "access", tracing::Level::INFO)
}
