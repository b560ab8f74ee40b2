//! Wiring: checks that the ports are free, binds every listener, starts the
//! workers, the admin ports, the reloader and the file watcher, and returns
//! the real bound addresses so tests and the demo can use port 0.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::bootstrap::Bootstrap;
use crate::load::{LoadErrors, Loaded};
use crate::metrics::Metrics;
use crate::reload::{self, Cause, Reloads};
use crate::runtime::drain::Drain;
use crate::runtime::state::State;
use crate::runtime::workers::{self, Service, Workers};

/// A running proxy. Dropping it stops the listeners.
pub struct Proxy {
    /// Outbound listener address.
    pub outbound: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Prometheus address.
    pub stats: SocketAddr,
    /// Readiness address.
    pub ready: SocketAddr,
    /// Shared state (metrics, snapshot).
    pub state: Arc<State>,
    workers: Arc<Workers>,
    reloads: Reloads,
    shutdown: CancellationToken,
}

/// Binds every listener and starts serving `loaded`: the proxy ports on
/// `bootstrap.workers()` worker threads, the admin ports, reloads and file
/// watching on the caller's runtime. Fails, before binding anything, when
/// another process holds one of the ports.
pub async fn build(bootstrap: Bootstrap, loaded: Loaded) -> std::io::Result<Proxy> {
    let (proxy, _) = start(bootstrap, loaded, crate::source::Sources::files()).await?;
    // The load's transient parse is freed: resident no longer.
    let _ = tokio::task::spawn_blocking(crate::memory::release).await;
    proxy.state.ready.store(true, Ordering::Release);
    info!(
        outbound = %proxy.outbound, admin = %proxy.admin, stats = %proxy.stats, ready = %proxy.ready,
        workers = proxy.workers.count(),
        "listeners bound; ready"
    );
    Ok(proxy)
}

/// Starts a proxy whose configuration comes from the Kubernetes API server
/// (`client`), with the bootstrap's files as local overrides: the admin
/// ports and the outbound listener at once, the outbound listener refusing
/// everything (REGISTRY_ONLY, nothing registered) and readiness saying what
/// it waits for until the first complete sync is loaded; the other
/// listeners are bound by that load.
#[cfg(feature = "kubernetes")]
pub async fn build_kube(bootstrap: Bootstrap, client: ::kube::Client) -> std::io::Result<Proxy> {
    use crate::source::{Sources, Store};
    let closed = Bootstrap {
        outbound_traffic_policy: crate::bootstrap::OutboundTrafficPolicy::RegistryOnly,
        identity_dir: None,
        config_paths: Vec::new(),
        ..bootstrap.clone()
    };
    let nothing = crate::load::check(&crate::config::Config::default(), &closed)
        .map_err(|e| std::io::Error::other(format!("cannot start with no configuration: {e}")))?;
    let store = std::sync::Arc::new(Store::default());
    store.set_waiting(Some("the Kubernetes source is starting".into()));
    let (proxy, reloads) = start(bootstrap, nothing, Sources::with_store(store)).await?;
    tokio::spawn(crate::source::kubernetes::run(
        client,
        proxy.state.clone(),
        reloads,
        proxy.shutdown.clone(),
    ));
    info!(
        outbound = %proxy.outbound, admin = %proxy.admin, stats = %proxy.stats, ready = %proxy.ready,
        workers = proxy.workers.count(),
        "admin ports bound; the outbound listener refuses everything until the first complete sync from the Kubernetes API server is loaded"
    );
    Ok(proxy)
}

/// Binds every listener of `loaded` and starts the workers, admin ports,
/// reloader and file watcher; not ready yet.
async fn start(
    bootstrap: Bootstrap,
    loaded: Loaded,
    sources: crate::source::Sources,
) -> std::io::Result<(Proxy, Reloads)> {
    for w in loaded.warnings() {
        warn!("{w}");
    }
    for e in &loaded.isolated {
        error!("{e}; left out, the rest is served");
    }
    let ports = workers::desired(&loaded.plan, &bootstrap);
    let admin_ports = [
        (bootstrap.admin_addr, "admin"),
        (bootstrap.stats_addr, "stats"),
        (bootstrap.ready_addr, "readiness"),
    ];
    for (service, addr) in &ports {
        workers::ensure_free(*addr, &service.to_string())?;
    }
    for (addr, what) in admin_ports {
        workers::ensure_free(addr, what)?;
    }
    let mut bound = Vec::new();
    for (service, addr) in ports {
        let what = service.to_string();
        let port = workers::bind(addr, bootstrap.workers(), service).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the {what} listener on {addr}: {e}"),
            )
        })?;
        info!(listener = %what, addr = %port.addr, "listener bound");
        bound.push(port);
    }
    let mut admin = Vec::new();
    for (addr, what) in admin_ports {
        let l = TcpListener::bind(addr).await.map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the {what} listener on {addr}: {e}"),
            )
        })?;
        admin.push(l);
    }
    let outbound = bound
        .iter()
        .find(|p| p.service == Service::Outbound)
        .map(|p| p.addr)
        .unwrap_or(bootstrap.outbound_addr);
    let metrics = Arc::new(Metrics::new());
    metrics.set_certificates(&loaded.creds);
    metrics.config_errors.set(loaded.isolated.len() as i64);
    let state = Arc::new(State::new(bootstrap, loaded, metrics).with_sources(sources));
    state.upstreams.set_own_address(outbound);
    crate::runtime::jwks::prefetch(&state);
    let shutdown = CancellationToken::new();
    let workers = Arc::new(Workers::start(state.clone(), shutdown.clone())?);
    for port in bound {
        workers.serve(port);
    }
    // The admin ports live on this runtime, with their own drain.
    let admin_drain = Drain::new(shutdown.clone(), state.bootstrap.termination_drain_duration);
    let mut addrs = Vec::new();
    for (l, role) in admin.into_iter().zip([
        crate::admin::Role::Admin,
        crate::admin::Role::Stats,
        crate::admin::Role::Ready,
    ]) {
        addrs.push(l.local_addr()?);
        tokio::spawn(crate::admin::run(
            l,
            role,
            state.clone(),
            admin_drain.clone(),
        ));
    }
    tokio::spawn(admin_drain.run());
    let (reloads, requests) = reload::channel();
    tokio::spawn(reload::run(
        requests,
        state.clone(),
        workers.clone(),
        shutdown.clone(),
    ));
    if !state.bootstrap.watch_interval.is_zero() {
        tokio::spawn(crate::watch::run(
            state.clone(),
            reloads.clone(),
            shutdown.clone(),
        ));
    }
    let proxy = Proxy {
        outbound,
        admin: addrs[0],
        stats: addrs[1],
        ready: addrs[2],
        state,
        workers,
        reloads: reloads.clone(),
        shutdown,
    };
    Ok((proxy, reloads))
}

impl Proxy {
    /// Inbound listeners in service: config port → bound address.
    pub fn inbound(&self) -> BTreeMap<u16, SocketAddr> {
        self.workers
            .ports()
            .into_iter()
            .filter_map(|(s, a)| match s {
                Service::Inbound { port, .. } => Some((port, a)),
                Service::Outbound => None,
            })
            .collect()
    }

    /// Re-reads the config paths (and every file they name). On success
    /// the new config serves new connections and the listeners follow it;
    /// on failure the last good config stays and the errors are returned
    /// (and counted).
    pub async fn reload(&self) -> Result<(), LoadErrors> {
        self.reloads.reload(Cause::Request).await
    }

    /// Asks for reloads (SIGHUP, certificate renewal).
    pub fn reloads(&self) -> Reloads {
        self.reloads.clone()
    }

    /// Stops accepting; open connections finish (see [`Proxy::stopped`]).
    pub fn shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Waits until the workers have stopped after [`Proxy::shutdown`]:
    /// open connections get `terminationDrainDuration`, then are closed.
    pub async fn stopped(&self) {
        let limit = self.state.bootstrap.termination_drain_duration + Duration::from_secs(1);
        self.workers.stopped(limit).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
