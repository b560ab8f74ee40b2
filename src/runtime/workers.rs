//! The data plane's threads: one single-threaded tokio runtime per worker,
//! each with its own `SO_REUSEPORT` socket on every proxy port (as Envoy's
//! `--concurrency` workers do), and the set of listening ports kept in step
//! with the configuration.
//!
//! A downstream connection, the tasks it spawns and the pooled upstream
//! connections it uses all live on one thread, so handing a request to an
//! upstream connection and its response back is a wake-up inside one
//! runtime, not a futex round trip to another thread. The kernel spreads new
//! connections over the workers' sockets.
//!
//! Ports are exclusive to this process: before anything is bound, every
//! address is checked with a plain bind (no `SO_REUSEPORT`), which fails if
//! another process listens there, so a second proxy never silently takes a
//! share of the first one's connections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::conn::{Direction, Listener, accept_loop};
use super::drain::Drain;
use super::state::State;
use crate::bootstrap::Bootstrap;
use crate::metrics::ChangeLabels;
use crate::plan::Plan;

/// Pending connections per listening socket.
const BACKLOG: u32 = 1024;

/// How long a reload waits for a removed listener's sockets to close
/// before binding a new one on the same address.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What a listening port serves.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// The outbound (15001) listener.
    Outbound,
    /// An inbound listener for config port `port` (Gateway, Sidecar, mesh).
    Inbound {
        /// The config port.
        port: u16,
        /// The Gateway server `bind`, if any.
        bind: Option<String>,
    },
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Service::Outbound => f.write_str("outbound"),
            Service::Inbound { port, bind: None } => write!(f, "inbound port {port}"),
            Service::Inbound {
                port,
                bind: Some(b),
            } => write!(f, "inbound port {port} (bind {b})"),
        }
    }
}

/// Every port the proxy should listen on under `plan`, with its address.
pub fn desired(plan: &Plan, bootstrap: &Bootstrap) -> BTreeMap<Service, SocketAddr> {
    let mut out = BTreeMap::new();
    out.insert(Service::Outbound, bootstrap.outbound_addr);
    let captured = bootstrap.interception_mode == crate::bootstrap::InterceptionMode::Redirect;
    for l in &plan.inbound.listeners {
        // Under capture the app listens on its own ports; their Sidecar
        // ingress listeners are served on the capture listener (15006).
        if captured && l.is_sidecar() {
            continue;
        }
        let addr = if l.mesh {
            bootstrap.mesh_inbound_addr
        } else {
            bootstrap.inbound_addr(l.port, l.bind.as_deref())
        };
        out.insert(
            Service::Inbound {
                port: l.port,
                bind: l.bind.clone(),
            },
            addr,
        );
    }
    out
}

/// Fails when another process listens on `addr` (checked with a plain bind,
/// which a `SO_REUSEPORT` group of another process refuses). Port 0 is
/// always free.
pub fn ensure_free(addr: SocketAddr, what: &str) -> std::io::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    let probe = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    // Connections of an earlier run in TIME_WAIT do not count.
    probe.set_reuse_address(true)?;
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            std::io::Error::new(
                e.kind(),
                format!(
                    "the {what} address {addr} is in use by another process \
                     (is another meshgate running?)"
                ),
            )
        } else {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the {what} listener on {addr}: {e}"),
            )
        }
    })
}

/// One proxy port bound once per worker.
pub struct Port {
    /// What the port serves.
    pub service: Service,
    /// The bound address (the same for every worker's socket).
    pub addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

/// Binds `addr` once per worker with `SO_REUSEPORT`: the first socket picks
/// the port (when `addr` asks for port 0), the others join it.
pub fn bind(addr: SocketAddr, workers: usize, service: Service) -> std::io::Result<Port> {
    let mut sockets = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(at),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&at.into())?;
        socket.listen(BACKLOG as i32)?;
        let listener: std::net::TcpListener = socket.into();
        at = listener.local_addr()?;
        sockets.push(listener);
    }
    Ok(Port {
        service,
        addr: at,
        sockets,
    })
}

/// A listening port in service.
struct Running {
    addr: SocketAddr,
    /// Cancelled to stop accepting (and drain its connections).
    stop: CancellationToken,
    /// Closed once every worker has dropped its socket.
    closed: mpsc::Receiver<()>,
}

/// Work handed to a worker thread.
struct ServePort {
    service: Service,
    socket: std::net::TcpListener,
    stop: CancellationToken,
    /// Dropped when the worker's socket is closed.
    open: mpsc::Sender<()>,
}

/// What a reconciliation changed.
#[derive(Debug, Default)]
pub struct Changes {
    /// Listeners bound.
    pub added: Vec<(Service, SocketAddr)>,
    /// Listeners stopped.
    pub removed: Vec<(Service, SocketAddr)>,
    /// Listeners that could not be bound (retried on the next reload).
    pub failed: Vec<(Service, SocketAddr, String)>,
}

/// Running workers and the ports they serve.
pub struct Workers {
    count: usize,
    commands: Vec<mpsc::UnboundedSender<ServePort>>,
    running: Mutex<BTreeMap<Service, Running>>,
    shutdown: CancellationToken,
    stopped: tokio::sync::Mutex<mpsc::Receiver<()>>,
    state: Arc<State>,
}

impl Workers {
    /// Starts the worker threads (`bootstrap.workers()`); they serve the
    /// ports handed to [`Workers::serve`] until `shutdown`, then drain.
    pub fn start(state: Arc<State>, shutdown: CancellationToken) -> std::io::Result<Workers> {
        let count = state.bootstrap.workers().max(1);
        let limit = state.bootstrap.termination_drain_duration;
        // Each worker holds a sender; all dropped = all stopped.
        let (done, stopped) = mpsc::channel::<()>(1);
        let mut commands = Vec::with_capacity(count);
        for i in 0..count {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            commands.push(tx);
            let (state, done) = (state.clone(), done.clone());
            let drain = Drain::new(shutdown.clone(), limit);
            std::thread::Builder::new()
                .name(format!("meshgate-worker-{}", i + 1))
                .spawn(move || {
                    super::per_worker::enter(i + 1);
                    runtime.block_on(serve(rx, state, drain));
                    drop(done);
                })?;
        }
        Ok(Workers {
            count,
            commands,
            running: Mutex::new(BTreeMap::new()),
            shutdown,
            stopped: tokio::sync::Mutex::new(stopped),
            state,
        })
    }

    /// Worker threads.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Hands a bound port to the workers: worker i serves socket i.
    pub fn serve(&self, port: Port) {
        let stop = self.shutdown.child_token();
        let (open, closed) = mpsc::channel(1);
        for (i, socket) in port.sockets.into_iter().enumerate() {
            let _ = self.commands[i % self.count].send(ServePort {
                service: port.service.clone(),
                socket,
                stop: stop.clone(),
                open: open.clone(),
            });
        }
        self.lock().insert(
            port.service,
            Running {
                addr: port.addr,
                stop,
                closed,
            },
        );
    }

    /// Every port in service.
    pub fn ports(&self) -> BTreeMap<Service, SocketAddr> {
        self.lock()
            .iter()
            .map(|(s, r)| (s.clone(), r.addr))
            .collect()
    }

    /// Makes the served ports match `want`: new ones are bound (after the
    /// exclusivity check), removed ones stop accepting and their
    /// connections finish gracefully, unchanged ones keep their sockets.
    pub async fn reconcile(&self, want: &BTreeMap<Service, SocketAddr>) -> Changes {
        let mut changes = Changes::default();
        let removed: Vec<(Service, Running)> = {
            let mut running = self.lock();
            let gone: Vec<Service> = running
                .keys()
                .filter(|s| !want.contains_key(*s))
                .cloned()
                .collect();
            gone.into_iter()
                .filter_map(|s| running.remove(&s).map(|r| (s, r)))
                .collect()
        };
        for (service, mut r) in removed {
            r.stop.cancel();
            // The address may be bound again below: wait for the sockets.
            let _ = tokio::time::timeout(CLOSE_WAIT, r.closed.recv()).await;
            changes.removed.push((service, r.addr));
        }
        let missing: Vec<(Service, SocketAddr)> = {
            let running = self.lock();
            want.iter()
                .filter(|(s, _)| !running.contains_key(*s))
                .map(|(s, a)| (s.clone(), *a))
                .collect()
        };
        for (service, addr) in missing {
            let what = service.to_string();
            match ensure_free(addr, &what).and_then(|()| bind(addr, self.count, service.clone())) {
                Ok(port) => {
                    changes.added.push((service, port.addr));
                    self.serve(port);
                }
                Err(e) => changes.failed.push((service, addr, e.to_string())),
            }
        }
        let metrics = &self.state.metrics;
        for (change, n) in [
            ("added", changes.added.len()),
            ("removed", changes.removed.len()),
            ("bind_failed", changes.failed.len()),
        ] {
            if n > 0 {
                metrics
                    .listener_changes
                    .get_or_create(&ChangeLabels { change })
                    .inc_by(n as u64);
            }
        }
        for (service, addr) in &changes.added {
            info!(listener = %service, %addr, "listener added");
        }
        for (service, addr) in &changes.removed {
            info!(listener = %service, %addr, "listener removed; its connections finish and close");
        }
        for (service, addr, e) in &changes.failed {
            error!(listener = %service, %addr, error = %e, "listener not bound; retried on the next reload");
        }
        changes
    }

    /// Waits until every worker thread has stopped after shutdown (they
    /// drain for at most the drain limit), at most `limit`.
    pub async fn stopped(&self, limit: Duration) {
        let mut rx = self.stopped.lock().await;
        let _ = tokio::time::timeout(limit, async { while rx.recv().await.is_some() {} }).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Service, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One worker: serves the ports it is handed until shutdown, then drains.
async fn serve(mut ports: mpsc::UnboundedReceiver<ServePort>, state: Arc<State>, drain: Drain) {
    loop {
        let port = tokio::select! {
            p = ports.recv() => match p { Some(p) => p, None => break },
            () = drain.shutdown().cancelled() => break,
        };
        let socket = match tokio::net::TcpListener::from_std(port.socket) {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, listener = %port.service, "worker cannot register a listening socket");
                continue;
            }
        };
        let (label, config_port, bind, direction) = match &port.service {
            Service::Outbound => (
                Arc::from("outbound"),
                socket.local_addr().map_or(0, |a| a.port()),
                None,
                Direction::Outbound,
            ),
            // Envoy names a listener by its bound address: `ip_port`, with
            // the config port.
            Service::Inbound { port: p, bind } => (
                match socket.local_addr() {
                    Ok(a) => Arc::from(format!("{}_{p}", a.ip())),
                    Err(_) => Arc::from(format!("_{p}")),
                },
                *p,
                bind.clone(),
                Direction::Inbound,
            ),
        };
        let listener = Arc::new(Listener::new(
            label,
            config_port,
            bind,
            direction,
            port.stop,
        ));
        let (state, open) = (state.clone(), port.open);
        let metrics = state.metrics.clone();
        let conns = drain.clone();
        drain.spawn(
            async move {
                let _open = open;
                match direction {
                    Direction::Outbound => {
                        accept_loop(socket, listener, metrics, conns, move |stream, conn| {
                            super::capture::serve_outbound(stream, conn, state.clone())
                        })
                        .await
                    }
                    _ => {
                        accept_loop(socket, listener, metrics, conns, move |stream, conn| {
                            super::inbound::serve(stream, conn, state.clone())
                        })
                        .await
                    }
                }
            },
            || {},
        );
    }
    drain.run().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, F: Future>(_f: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_connection_task_keeps_room_only_for_what_every_connection_needs() {
        // Each connection's task holds its handler's future for the
        // connection's life, idle or not: the branches a connection may
        // take (captured traffic, the handshake, the TLS stream, HTTP/2)
        // are boxed, so the task is sized for what all share. Measured in
        // the test build (the release build's are smaller): 560 and 928
        // bytes, from 1,600 and 3,720 before the branches were boxed.
        let inbound = future_size(super::super::inbound::serve);
        let outbound = future_size(super::super::capture::serve_outbound);
        assert!(inbound <= 1024, "inbound connection task: {inbound} bytes");
        assert!(
            outbound <= 1024,
            "outbound connection task: {outbound} bytes"
        );
    }

    #[test]
    fn one_socket_per_worker_on_one_port() {
        let port = bind(([127, 0, 0, 1], 0).into(), 3, Service::Outbound).unwrap();
        assert_ne!(port.addr.port(), 0, "the first socket picked the port");
        assert_eq!(port.sockets.len(), 3);
        for s in &port.sockets {
            assert_eq!(s.local_addr().unwrap(), port.addr);
        }
        // Each socket listens: a connection to the port is accepted by one.
        let _client = std::net::TcpStream::connect(port.addr).unwrap();
    }

    #[test]
    fn a_port_held_by_another_socket_is_refused() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let err = bind(addr, 2, Service::Outbound).err().expect("port in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    }

    #[test]
    fn a_reuseport_group_of_another_owner_is_not_joined() {
        // What another meshgate process holds looks like this: a
        // SO_REUSEPORT group. Joining it would succeed; the check refuses.
        let group = bind(([127, 0, 0, 1], 0).into(), 2, Service::Outbound).unwrap();
        let err = ensure_free(group.addr, "outbound").expect_err("held by a group");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        let msg = err.to_string();
        assert!(
            msg.contains(&group.addr.to_string()) && msg.contains("another process"),
            "{msg}"
        );
        let addr = group.addr;
        drop(group);
        ensure_free(addr, "outbound").expect("free once the group is closed");
    }
}
