//! The state every listener and connection shares: the configuration in
//! force (a [`Snapshot`] behind an `ArcSwap`), metrics, upstream pools and
//! prepared destinations.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::prepared::PreparedCache;
use super::upstream::Upstreams;
use crate::bootstrap::Bootstrap;
use crate::creds::Credentials;
use crate::load::Loaded;
use crate::metrics::Metrics;
use crate::plan::Plan;
use crate::source::Sources;
use crate::tls::server_configs::ServerConfigs;

/// One consistent configuration: plan plus the credentials it references.
pub struct Snapshot {
    /// The compiled plan.
    pub plan: Arc<Plan>,
    /// Loaded, validated credentials.
    pub creds: Arc<Credentials>,
    /// rustls server configs of the terminating inbound servers.
    pub server_tls: ServerConfigs,
    /// Increments on every successful reload; keys TLS config caches.
    pub generation: u64,
    /// Errors whose parts are left out of this configuration.
    pub isolated: Vec<String>,
    /// What the plan was compiled from, when a reload of unchanged files
    /// may reuse it.
    pub inputs: Option<Arc<crate::load::Inputs>>,
}

/// State shared by every listener and connection.
pub struct State {
    /// Listener settings and limits.
    pub bootstrap: Bootstrap,
    /// When the first configuration's files were read.
    pub read_at: std::time::SystemTime,
    /// The configuration in force.
    snapshot: ArcSwap<Snapshot>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Upstream connections and TLS configs.
    pub upstreams: Upstreams,
    /// Destinations prepared under the configuration in force.
    pub prepared: PreparedCache,
    /// Set once every listener is bound and the config is loaded.
    pub ready: AtomicBool,
    /// Round-robin counter over endpoints.
    pub counter: AtomicU64,
    /// Weighted-route counter, apart from `counter` so that drawing a
    /// route never skews the endpoint rotation (two draws per request
    /// would pin every request to the same endpoint of two).
    weights: AtomicU64,
    /// Where configurations are read from (files, the Kubernetes source).
    pub sources: Sources,
    /// Remote JSON Web Key Sets of RequestAuthentication rules.
    pub jwks: super::jwks::JwksCache,
}

impl State {
    /// New state around a first good configuration.
    pub fn new(bootstrap: Bootstrap, loaded: Loaded, metrics: Arc<Metrics>) -> State {
        let shards = bootstrap.workers() + 1;
        State {
            bootstrap,
            read_at: loaded.read_at,
            snapshot: ArcSwap::from_pointee(Snapshot {
                plan: loaded.plan,
                creds: Arc::new(loaded.creds),
                server_tls: loaded.server_tls,
                generation: 0,
                isolated: loaded.isolated,
                inputs: loaded.inputs,
            }),
            upstreams: Upstreams::new(metrics.clone(), shards),
            prepared: PreparedCache::new(shards),
            metrics,
            ready: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            weights: AtomicU64::new(0),
            sources: Sources::files(),
            jwks: Default::default(),
        }
    }

    /// The same state reading configurations from `sources`.
    pub fn with_sources(self, sources: Sources) -> State {
        State { sources, ..self }
    }

    /// The configuration in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The configuration in force, borrowed for a moment (no reference
    /// count taken: per-request checks on the hot path; not to be held
    /// across an await).
    pub fn current(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    /// Puts a new configuration in force for new connections; returns its
    /// generation.
    pub fn publish(&self, loaded: Loaded) -> u64 {
        let generation = self.snapshot.load().generation + 1;
        self.snapshot.store(Arc::new(Snapshot {
            plan: loaded.plan,
            creds: Arc::new(loaded.creds),
            server_tls: loaded.server_tls,
            generation,
            isolated: loaded.isolated,
            inputs: loaded.inputs,
        }));
        generation
    }

    /// Next value of the shared counter (round robin over endpoints).
    pub fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed)
    }

    /// A well-mixed value for weighted choices, so a 50/50 split alternates
    /// request by request instead of in runs (splitmix64 of a counter).
    pub fn random(&self) -> u64 {
        let n = self.weights.fetch_add(1, Ordering::Relaxed);
        let mut z = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
