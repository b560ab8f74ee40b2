//! Destinations made ready for requests: where a request goes (endpoints,
//! policy, names, SNI) and, worked out once per destination and
//! configuration generation, its pool key and TLS client config.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::pki_types::ServerName;

use super::per_worker::PerWorker;
use super::upstream::{ConfigRef, PolicyRef, PoolKey, UpstreamError, UpstreamSpec, Upstreams};
use crate::creds::Credentials;
use crate::plan::Target;
use crate::plan::TlsMode;
use crate::plan::destination::RouteTarget;
use crate::plan::outbound::UpstreamPolicy;
use crate::plan::route::RetryPlan;

/// The policy of destinations no DestinationRule covers; one `Arc` so
/// their pooled connections are found by pointer.
static DEFAULT_POLICY: std::sync::LazyLock<Arc<UpstreamPolicy>> =
    std::sync::LazyLock::new(|| Arc::new(UpstreamPolicy::default()));

/// Istio's default retry policy, for destinations no route names one for.
static DEFAULT_RETRIES: std::sync::LazyLock<Arc<RetryPlan>> =
    std::sync::LazyLock::new(|| Arc::new(RetryPlan::istio_default()));

/// Where a request goes and how.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Endpoints (host or IP, port), tried round robin.
    pub endpoints: Vec<(String, u16)>,
    /// TLS, pool and protocol settings (shared with the plan; copied only
    /// when a listener adjusts it).
    pub policy: Arc<UpstreamPolicy>,
    /// Names the server certificate must carry (TLS only).
    pub names: Vec<String>,
    /// SNI to send (TLS only).
    pub sni: Option<String>,
    /// Bounded metric label (`destination_service`).
    pub label: Arc<str>,
    /// The route's retry policy.
    pub retries: Arc<RetryPlan>,
    /// The local address to connect from (`None`: the system's choice).
    pub source: Option<std::net::IpAddr>,
}

impl Destination {
    /// A registered service, per its ServiceEntry and DestinationRule.
    pub fn registered(t: &Target) -> Destination {
        Destination {
            endpoints: t.endpoints(),
            policy: t.policy.clone(),
            names: t.verify_names(),
            sni: Some(t.sni().to_string()),
            label: service_label(t).into(),
            retries: t.retries.clone(),
            source: None,
        }
    }

    /// A route destination as the plan resolved it.
    pub fn route(target: &RouteTarget) -> Destination {
        match target {
            RouteTarget::Registered(t) => Destination::registered(t),
            RouteTarget::Host { host, port, h2c } => {
                let mut dest = Destination::plain(host, *port, host);
                if *h2c {
                    Arc::make_mut(&mut dest.policy).h2 = true;
                }
                dest
            }
        }
    }

    /// A host and port reached in plain text, resolved by the system.
    pub fn plain(host: &str, port: u16, label: &str) -> Destination {
        Destination {
            endpoints: vec![(host.to_string(), port)],
            policy: DEFAULT_POLICY.clone(),
            names: Vec::new(),
            sni: None,
            label: label.into(),
            retries: DEFAULT_RETRIES.clone(),
            source: None,
        }
    }

    /// `host:port,...` for logs.
    pub fn describe(&self) -> String {
        self.endpoints
            .iter()
            .map(|(h, p)| format!("{h}:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The metric label for a registered destination: the ServiceEntry host
/// pattern that matched (bounded, unlike the request's own host).
fn service_label(t: &Target) -> String {
    t.service
        .hosts
        .iter()
        .filter(|h| h.matches(&t.host))
        .max_by_key(|h| h.specificity())
        .map(|h| h.to_string())
        .unwrap_or_else(|| t.host.clone())
}

/// A destination made ready for requests: its pool key, TLS client config
/// and SNI worked out once, then shared by every request that goes there
/// under the same configuration (see [`PreparedCache`]).
pub struct Prepared {
    /// Where requests go.
    pub dest: Destination,
    /// The route's request timeout.
    pub timeout: Option<Duration>,
    /// How to reach it.
    pub spec: UpstreamSpec,
}

impl Prepared {
    /// Works out the pool key and TLS settings of `dest` with `creds`
    /// (generation `generation`); on failure `dest` comes back with the
    /// reason.
    pub fn new(
        upstreams: &Upstreams,
        creds: &Credentials,
        generation: u64,
        dest: Destination,
        timeout: Option<Duration>,
    ) -> Result<Prepared, (Box<Destination>, UpstreamError)> {
        match spec_for(upstreams, creds, generation, &dest) {
            Ok(spec) => Ok(Prepared {
                dest,
                timeout,
                spec,
            }),
            Err(e) => Err((Box::new(dest), e)),
        }
    }
}

fn spec_for(
    upstreams: &Upstreams,
    creds: &Credentials,
    generation: u64,
    dest: &Destination,
) -> Result<UpstreamSpec, UpstreamError> {
    let policy = PolicyRef(dest.policy.clone());
    let (tls, sni) = if policy.tls.mode == TlsMode::Disable {
        (None, None)
    } else {
        let config = upstreams.tls_config(&policy, &dest.names, creds, generation)?;
        let sni = dest.sni.clone().unwrap_or_default();
        let server_name =
            ServerName::try_from(sni.clone()).map_err(|_| UpstreamError::InvalidSni(sni))?;
        (Some(ConfigRef(config)), Some(server_name))
    };
    Ok(UpstreamSpec {
        key: Arc::new(PoolKey {
            endpoints: dest.endpoints.clone(),
            sni: tls.as_ref().and(dest.sni.clone()),
            policy,
            tls,
            source: dest.source,
        }),
        sni,
        retries: dest.retries.clone(),
        label: dest.label.clone(),
    })
}

/// What a prepared destination is looked up by.
#[derive(Debug, Clone, Copy)]
pub enum PreparedKey<'a> {
    /// Outbound: the request's host and port, and the mesh route
    /// destination chosen for it (`MeshRouting::key`, 0 for none).
    Host(&'a str, u16, usize),
    /// Inbound: a route destination (its address in the plan, which the
    /// generation keeps alive) and whether it is spoken to in h2c.
    Route(usize, bool),
}

/// Destinations prepared under the configuration in force, per worker (no
/// lock is shared between workers): requests to a destination seen before
/// skip routing, policy lookup and pool-key construction. Emptied when a
/// newer configuration is seen; connections still on an older one bypass
/// it.
pub struct PreparedCache {
    shards: PerWorker<Mutex<CacheShard>>,
}

#[derive(Default)]
struct CacheShard {
    generation: u64,
    /// Outbound: by request host, then port and route destination.
    by_host: HashMap<String, Vec<(u16, usize, Arc<Prepared>)>>,
    /// Inbound: by route destination.
    by_route: HashMap<(usize, bool), Arc<Prepared>>,
}

impl CacheShard {
    /// Hosts and route destinations held.
    fn len(&self) -> usize {
        self.by_host.len() + self.by_route.len()
    }
}

/// Entries per worker before the cache starts over (wildcard ServiceEntry
/// hosts are unbounded).
const MAX_PREPARED: usize = 1024;

impl PreparedCache {
    /// Empty caches for `shards` threads (workers + 1).
    pub fn new(shards: usize) -> PreparedCache {
        PreparedCache {
            shards: PerWorker::new(shards),
        }
    }

    /// This thread's shard, made current for `generation`; `None` for a
    /// connection on an older configuration.
    fn shard(&self, generation: u64) -> Option<std::sync::MutexGuard<'_, CacheShard>> {
        let mut shard = self.shards.get().lock().unwrap_or_else(|p| p.into_inner());
        if shard.generation < generation || shard.len() >= MAX_PREPARED {
            *shard = CacheShard {
                generation: generation.max(shard.generation),
                ..CacheShard::default()
            };
        }
        (shard.generation == generation).then_some(shard)
    }

    /// The prepared destination for `key`.
    pub fn get(&self, generation: u64, key: PreparedKey<'_>) -> Option<Arc<Prepared>> {
        let shard = self.shard(generation)?;
        match key {
            PreparedKey::Host(host, port, route) => shard
                .by_host
                .get(host)?
                .iter()
                .find(|(p, r, _)| (*p, *r) == (port, route))
                .map(|(_, _, d)| d.clone()),
            PreparedKey::Route(addr, h2c) => shard.by_route.get(&(addr, h2c)).cloned(),
        }
    }

    /// Remembers the prepared destination for `key`.
    pub fn insert(&self, generation: u64, key: PreparedKey<'_>, prepared: Arc<Prepared>) {
        let Some(mut shard) = self.shard(generation) else {
            return;
        };
        match key {
            PreparedKey::Host(host, port, route) => shard
                .by_host
                .entry(host.to_string())
                .or_default()
                .push((port, route, prepared)),
            PreparedKey::Route(addr, h2c) => {
                shard.by_route.insert((addr, h2c), prepared);
            }
        }
    }
}
