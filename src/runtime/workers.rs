//! The data plane's threads: one single-threaded tokio runtime per worker,
//! each with its own `SO_REUSEPORT` socket on every proxy port (as Envoy's
//! `--concurrency` workers do).
//!
//! A downstream connection, the tasks it spawns and the pooled upstream
//! connections it uses all live on one thread, so handing a request to an
//! upstream connection and its response back is a wake-up inside one
//! runtime, not a futex round trip to another thread. The kernel spreads new
//! connections over the workers' sockets.
//!
//! The admin, stats and readiness ports, file watching and certificate
//! renewal stay on the caller's runtime.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::State;

thread_local! {
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// The worker running on this thread, from 1; 0 off the workers (admin,
/// tests calling the runtime directly).
pub fn current() -> usize {
    WORKER.with(Cell::get)
}

/// One `T` per thread that serves connections: per worker, plus one for
/// every other thread (index 0). Each worker only touches its own, so the
/// locks inside never contend across workers.
pub struct PerWorker<T>(Box<[T]>);

impl<T: Default> PerWorker<T> {
    /// `slots` values (workers + 1).
    pub fn new(slots: usize) -> PerWorker<T> {
        PerWorker((0..slots.max(1)).map(|_| T::default()).collect())
    }

    /// This thread's value.
    pub fn get(&self) -> &T {
        &self.0[current() % self.0.len()]
    }
}

/// How long open connections may finish after shutdown before the worker
/// stops them.
const DRAIN: Duration = Duration::from_secs(5);

/// Pending connections per listening socket.
const BACKLOG: u32 = 1024;

/// What a listening socket serves.
#[derive(Clone)]
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

/// One proxy port bound once per worker.
pub struct Port {
    /// What the port serves.
    pub service: Service,
    /// The bound address (the same for every worker's socket).
    pub addr: SocketAddr,
    sockets: Vec<std::net::TcpListener>,
}

/// Binds `addr` once per worker with `SO_REUSEPORT`: the first socket picks
/// the port (when `addr` asks for port 0), the others join it. Must run
/// inside a tokio runtime.
pub fn bind(addr: SocketAddr, workers: usize, service: Service) -> std::io::Result<Port> {
    let mut sockets = Vec::with_capacity(workers);
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let socket = if at.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(at)?;
        let listener = socket.listen(BACKLOG)?;
        at = listener.local_addr()?;
        sockets.push(listener.into_std()?);
    }
    Ok(Port {
        service,
        addr: at,
        sockets,
    })
}

/// Running workers; they stop when the shutdown token given to [`start`] is
/// cancelled and their connections have finished (or [`DRAIN`] passed).
pub struct Workers {
    stopped: tokio::sync::Mutex<tokio::sync::mpsc::Receiver<()>>,
}

impl Workers {
    /// Waits until every worker thread has stopped, at most `limit`.
    pub async fn stopped(&self, limit: Duration) {
        let mut rx = self.stopped.lock().await;
        let _ = tokio::time::timeout(limit, async { while rx.recv().await.is_some() {} }).await;
    }
}

/// Starts `count` worker threads serving `ports`.
pub fn start(
    count: usize,
    ports: Vec<Port>,
    state: Arc<State>,
    shutdown: CancellationToken,
) -> std::io::Result<Workers> {
    let count = count.max(1);
    // Deal each port's sockets out: worker i gets socket i of every port.
    let mut per_worker: Vec<Vec<(Service, std::net::TcpListener)>> =
        (0..count).map(|_| Vec::new()).collect();
    for port in ports {
        for (i, socket) in port.sockets.into_iter().enumerate() {
            per_worker[i % count].push((port.service.clone(), socket));
        }
    }
    // Each worker holds a sender; all dropped = all stopped.
    let (tx, rx) = tokio::sync::mpsc::channel::<()>(1);
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let state = state.clone();
        let shutdown = shutdown.clone();
        let tx = tx.clone();
        std::thread::Builder::new()
            .name(format!("meshgate-worker-{}", i + 1))
            .spawn(move || {
                WORKER.with(|w| w.set(i + 1));
                runtime.block_on(serve(sockets, state, shutdown));
                drop(tx);
            })?;
    }
    Ok(Workers {
        stopped: tokio::sync::Mutex::new(rx),
    })
}

/// One worker: accept on its sockets until shutdown, then let connections
/// finish.
async fn serve(
    sockets: Vec<(Service, std::net::TcpListener)>,
    state: Arc<State>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    for (service, socket) in sockets {
        let listener = match tokio::net::TcpListener::from_std(socket) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "worker cannot register a listening socket");
                continue;
            }
        };
        let (state, stop, conns) = (state.clone(), shutdown.clone(), tracker.clone());
        tracker.spawn(async move {
            match service {
                Service::Outbound => super::outbound::run(listener, state, stop, conns).await,
                Service::Inbound { port, bind } => {
                    super::inbound::run(listener, port, bind, state, stop, conns).await
                }
            }
        });
    }
    shutdown.cancelled().await;
    tracker.close();
    let _ = tokio::time::timeout(DRAIN, tracker.wait()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_socket_per_worker_on_one_port() {
        let port = bind(([127, 0, 0, 1], 0).into(), 3, Service::Outbound).unwrap();
        assert_ne!(port.addr.port(), 0, "the first socket picked the port");
        assert_eq!(port.sockets.len(), 3);
        for s in &port.sockets {
            assert_eq!(s.local_addr().unwrap(), port.addr);
        }
        // Each socket listens: a connection to the port is accepted by one.
        let _client = tokio::net::TcpStream::connect(port.addr).await.unwrap();
    }

    #[tokio::test]
    async fn a_port_held_by_another_socket_is_refused() {
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = other.local_addr().unwrap();
        let err = bind(addr, 2, Service::Outbound).err().expect("port in use");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    }
}
