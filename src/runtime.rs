//! The running proxy: listeners, connections, upstream pools.
//!
//! The current configuration is a [`Snapshot`] behind an `ArcSwap`; every
//! downstream connection takes one snapshot when accepted, so it never sees
//! half of a reload.

pub mod http;
pub mod outbound;
pub mod upstream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::bootstrap::Bootstrap;
use crate::creds::Credentials;
use crate::metrics::Metrics;
use crate::plan::Plan;

/// One consistent configuration: plan plus the credentials it references.
pub struct Snapshot {
    /// The compiled plan.
    pub plan: Arc<Plan>,
    /// Loaded, validated credentials.
    pub creds: Arc<Credentials>,
    /// Increments on every successful reload; keys TLS config caches.
    pub generation: u64,
}

/// State shared by every listener and connection.
pub struct State {
    /// Listener settings and limits.
    pub bootstrap: Bootstrap,
    /// The configuration in force.
    snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Upstream connections and TLS configs.
    pub upstreams: upstream::Upstreams,
    /// Set once every listener is bound and the config is loaded.
    pub ready: AtomicBool,
    /// Round-robin / weighted-route counter.
    pub counter: AtomicU64,
}

impl State {
    /// New state around a first good configuration.
    pub fn new(
        bootstrap: Bootstrap,
        plan: Plan,
        creds: Credentials,
        metrics: Arc<Metrics>,
    ) -> State {
        State {
            bootstrap,
            snapshot: ArcSwap::from_pointee(Snapshot {
                plan: Arc::new(plan),
                creds: Arc::new(creds),
                generation: 0,
            }),
            upstreams: upstream::Upstreams::new(metrics.clone()),
            metrics,
            ready: AtomicBool::new(false),
            counter: AtomicU64::new(0),
        }
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Puts a new configuration in force for new connections.
    pub fn publish(&self, plan: Plan, creds: Credentials) {
        let generation = self.snapshot.load().generation + 1;
        self.snapshot.store(Arc::new(Snapshot {
            plan: Arc::new(plan),
            creds: Arc::new(creds),
            generation,
        }));
        self.upstreams.clear_tls_cache();
    }

    /// Next value of the shared counter.
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }
}
