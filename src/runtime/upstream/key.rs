//! What identifies a destination's connections: the pool key, and how a
//! request reaches it.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use crate::plan::outbound::UpstreamPolicy;
use crate::plan::route::RetryPlan;

/// Identifies connections that may be shared: same endpoints, SNI and
/// policy, made with the same TLS client config. Connection-pool limits
/// and outlier detection apply per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// Endpoints (host or IP, port).
    pub endpoints: Vec<(String, u16)>,
    /// SNI sent, if TLS.
    pub sni: Option<String>,
    /// The policy (TLS, timeouts, protocol, limits).
    pub policy: PolicyRef,
    /// The TLS client config connections are made with; `None` for plain
    /// text.
    pub tls: Option<ConfigRef>,
    /// The local address connections are made from, when not the
    /// system's choice (`127.0.0.6` for captured inbound traffic to the
    /// app, which capture rules let through).
    pub source: Option<std::net::IpAddr>,
}

/// A shared policy compared by pointer first (the plan hands out the same
/// `Arc` for every request to a destination), by content otherwise, and
/// hashed on a few fields: pool and config-cache lookups stay cheap on the
/// request path.
#[derive(Debug, Clone)]
pub struct PolicyRef(pub Arc<UpstreamPolicy>);

impl PartialEq for PolicyRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || *self.0 == *other.0
    }
}

impl Eq for PolicyRef {}

impl std::hash::Hash for PolicyRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // A subset of what `eq` compares: equal values hash equally.
        self.0.tls.mode.hash(state);
        self.0.h2.hash(state);
        self.0.connect_timeout.hash(state);
        self.0.tls.sni.hash(state);
    }
}

impl std::ops::Deref for PolicyRef {
    type Target = UpstreamPolicy;
    fn deref(&self) -> &UpstreamPolicy {
        &self.0
    }
}

/// A client config compared by identity: the cache hands out one `Arc` per
/// distinct content, so equal pointers mean equal settings.
#[derive(Debug, Clone)]
pub struct ConfigRef(pub Arc<ClientConfig>);

impl PartialEq for ConfigRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ConfigRef {}

impl std::hash::Hash for ConfigRef {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.0).hash(state);
    }
}

/// How to reach one upstream.
pub struct UpstreamSpec {
    /// Pool identity (and endpoints).
    pub key: Arc<PoolKey>,
    /// SNI for TLS connections (the config is in the key).
    pub sni: Option<ServerName<'static>>,
    /// The route's retry policy.
    pub retries: Arc<RetryPlan>,
    /// The `destination_service` metric label.
    pub label: Arc<str>,
}
