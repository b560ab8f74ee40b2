//! Wiring: load → compile → credentials → bind → serve. Returns the real
//! bound addresses so tests and the demo can use port 0.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::bootstrap::Bootstrap;
use crate::config::{self, Config};
use crate::creds::{self, Credentials};
use crate::metrics::{Metrics, ReloadLabels};
use crate::plan::{self, Plan};
use crate::runtime::{State, workers};

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone)]
pub struct LoadErrors(pub Vec<String>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for LoadErrors {}

/// A fully checked configuration.
pub struct Loaded {
    /// The compiled plan.
    pub plan: Plan,
    /// The credentials it references, validated.
    pub creds: Credentials,
    /// rustls server configs per inbound server (keyed by its origin).
    pub server_tls: HashMap<String, Arc<rustls::ServerConfig>>,
}

/// Loads the bootstrap's config paths and checks everything. Documents
/// that parse are compiled even when others do not, so every problem is
/// reported in one go.
pub fn load(bootstrap: &Bootstrap) -> Result<Loaded, LoadErrors> {
    load_with(bootstrap, None)
}

/// [`load`], falling back per credential to `previous` (see
/// [`creds::load_with_fallback`]).
pub fn load_with(
    bootstrap: &Bootstrap,
    previous: Option<&Credentials>,
) -> Result<Loaded, LoadErrors> {
    let (config, parse_errors) = config::load_partial(&bootstrap.config_paths);
    let mut errors: Vec<String> = parse_errors.0.iter().map(ToString::to_string).collect();
    match check_with(&config, bootstrap, previous) {
        Ok(loaded) if errors.is_empty() => return Ok(loaded),
        Ok(_) => {}
        Err(e) => errors.extend(e.0),
    }
    Err(LoadErrors(errors))
}

/// Compiles parsed config and loads its credentials.
pub fn check(config: &Config, bootstrap: &Bootstrap) -> Result<Loaded, LoadErrors> {
    check_with(config, bootstrap, None)
}

fn check_with(
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<&Credentials>,
) -> Result<Loaded, LoadErrors> {
    let plan = plan::compile(config, bootstrap)
        .map_err(|e| LoadErrors(e.0.iter().map(ToString::to_string).collect()))?;
    let creds = creds::load_with_fallback(&plan, config, bootstrap, previous)
        .map_err(|e| LoadErrors(e.iter().map(ToString::to_string).collect()))?;
    let mut server_tls = HashMap::new();
    let mut errors = Vec::new();
    for server in plan.inbound.listeners.iter().flat_map(|l| l.servers.iter()) {
        if let Some(tls) = server.tls.as_ref().filter(|_| server.terminates()) {
            match crate::tls::server::build(tls, server.protocol.is_http(), &creds) {
                Ok(c) => {
                    server_tls.insert(server.origin.clone(), c);
                }
                Err(e) => errors.push(e),
            }
        }
    }
    if !errors.is_empty() {
        return Err(LoadErrors(errors));
    }
    Ok(Loaded {
        plan,
        creds,
        server_tls,
    })
}

/// Re-reads the config paths (and every file they name). On success the
/// new configuration serves new connections; on failure the last good one
/// stays and the errors are returned, logged and counted.
pub fn reload(state: &State) -> Result<(), LoadErrors> {
    let label = |r| ReloadLabels { result: r };
    let previous = state.snapshot().creds.clone();
    match load_with(&state.bootstrap, Some(&previous)) {
        Ok(loaded) => {
            for w in loaded.plan.warnings.iter().chain(&loaded.creds.warnings) {
                warn!("{w}");
            }
            state.metrics.set_certificates(&loaded.creds);
            state.metrics.count_rotations(&previous, &loaded.creds);
            let loaded_stale = !loaded.creds.stale.is_empty();
            state.publish(loaded);
            state
                .metrics
                .config_reloads
                .get_or_create(&label(if loaded_stale { "partial" } else { "success" }))
                .inc();
            state.metrics.config_stale.set(i64::from(loaded_stale));
            info!("configuration reloaded");
            Ok(())
        }
        Err(e) => {
            state
                .metrics
                .config_reloads
                .get_or_create(&label("failure"))
                .inc();
            state.metrics.config_stale.set(1);
            for line in &e.0 {
                warn!("reload refused, keeping the last good configuration: {line}");
            }
            Err(e)
        }
    }
}

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
    /// Inbound listeners: config port → bound address.
    pub inbound: BTreeMap<u16, SocketAddr>,
    /// Shared state (metrics, snapshot).
    pub state: Arc<State>,
    shutdown: CancellationToken,
    workers: workers::Workers,
}

async fn bind(addr: SocketAddr, what: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot bind the {what} listener on {addr}: {e}"),
        )
    })
}

/// Binds every listener and starts serving `loaded`: the proxy ports on
/// `bootstrap.workers()` worker threads, the admin ports and file watching
/// on the caller's runtime.
pub async fn build(bootstrap: Bootstrap, loaded: Loaded) -> std::io::Result<Proxy> {
    for w in loaded.plan.warnings.iter().chain(&loaded.creds.warnings) {
        warn!("{w}");
    }
    let workers = bootstrap.workers();
    let shared = |addr: SocketAddr, what: &str, service| {
        workers::bind(addr, workers, service).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot bind the {what} listener on {addr}: {e}"),
            )
        })
    };
    let mut ports = vec![shared(
        bootstrap.outbound_addr,
        "outbound",
        workers::Service::Outbound,
    )?];
    let mut inbound = BTreeMap::new();
    for l in &loaded.plan.inbound.listeners {
        let addr = if l.mesh {
            bootstrap.mesh_inbound_addr
        } else {
            bootstrap.inbound_addr(l.port, l.bind.as_deref())
        };
        let port = shared(
            addr,
            &format!("inbound port {}", l.port),
            workers::Service::Inbound {
                port: l.port,
                bind: l.bind.clone(),
            },
        )?;
        info!(port = l.port, addr = %port.addr, "inbound listener bound");
        inbound.insert(l.port, port.addr);
        ports.push(port);
    }
    let admin = bind(bootstrap.admin_addr, "admin").await?;
    let stats = bind(bootstrap.stats_addr, "stats").await?;
    let ready = bind(bootstrap.ready_addr, "readiness").await?;
    let addrs = (
        ports[0].addr,
        admin.local_addr()?,
        stats.local_addr()?,
        ready.local_addr()?,
    );
    let metrics = Arc::new(Metrics::new());
    metrics.set_certificates(&loaded.creds);
    let state = Arc::new(State::new(bootstrap, loaded, metrics));
    state.upstreams.set_own_address(addrs.0);
    let shutdown = CancellationToken::new();
    let workers = workers::start(workers, ports, state.clone(), shutdown.clone())?;
    for (l, role) in [
        (admin, crate::admin::Role::Admin),
        (stats, crate::admin::Role::Stats),
        (ready, crate::admin::Role::Ready),
    ] {
        tokio::spawn(crate::admin::run(l, role, state.clone(), shutdown.clone()));
    }
    if !state.bootstrap.watch_interval.is_zero() {
        tokio::spawn(crate::watch::run(state.clone(), shutdown.clone()));
    }
    state.ready.store(true, Ordering::Release);
    info!(
        outbound = %addrs.0, admin = %addrs.1, stats = %addrs.2, ready = %addrs.3,
        workers = state.bootstrap.workers(),
        "listeners bound; ready"
    );
    Ok(Proxy {
        outbound: addrs.0,
        admin: addrs.1,
        stats: addrs.2,
        ready: addrs.3,
        inbound,
        state,
        shutdown,
        workers,
    })
}

impl Proxy {
    /// Re-reads the config paths. On success the new config serves new
    /// connections; on failure the last good config stays and the errors
    /// are returned (and counted).
    pub fn reload(&self) -> Result<(), LoadErrors> {
        reload(&self.state)
    }

    /// Stops accepting and lets open connections finish.
    pub fn shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        self.shutdown.cancel();
    }

    /// Waits (at most `limit`) until the workers have stopped after
    /// [`Proxy::shutdown`].
    pub async fn stopped(&self, limit: std::time::Duration) {
        self.workers.stopped(limit).await;
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
