//! `DestinationRule` (networking.istio.io): client-side policy per host.
//!
//! Mirrors `destination_rule.proto` for the parts meshgate reads; fields that
//! exist in Istio but are not implemented are kept as raw values so `plan`
//! can name them instead of rejecting them as typos.

use serde::{Deserialize, Serialize};

/// `DestinationRule.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DestinationRuleSpec {
    /// Host the rule applies to (exact or wildcard).
    pub host: Option<String>,
    /// Policy for every port unless a port-level entry replaces it.
    pub traffic_policy: Option<TrafficPolicy>,
    /// Named subsets (labels + policy).
    #[serde(default)]
    pub subsets: Vec<Subset>,
    /// Namespaces the rule applies to (`.`, `*`, names); a rule not
    /// exported to the proxy's namespace is ignored (`plan::scope`).
    #[serde(default)]
    pub export_to: Vec<String>,
    /// Workloads the rule applies to (`{matchLabels}`; `plan::selector`).
    pub workload_selector: Option<serde_json::Value>,
}

/// `TrafficPolicy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TrafficPolicy {
    /// Load balancing; round robin is what meshgate does.
    pub load_balancer: Option<serde_json::Value>,
    /// Connection limits and timeouts.
    pub connection_pool: Option<ConnectionPool>,
    /// Outlier detection: endpoints ejected after consecutive errors.
    pub outlier_detection: Option<OutlierDetection>,
    /// Client TLS settings.
    pub tls: Option<ClientTls>,
    /// Per-port replacements of this policy.
    #[serde(default)]
    pub port_level_settings: Vec<PortTrafficPolicy>,
    /// CONNECT tunnelling; not implemented.
    pub tunnel: Option<serde_json::Value>,
    /// PROXY protocol towards the upstream; not implemented.
    pub proxy_protocol: Option<serde_json::Value>,
    /// Retry budget; not implemented.
    pub retry_budget: Option<serde_json::Value>,
}

/// `PortTrafficPolicy`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortTrafficPolicy {
    /// The port this entry applies to.
    pub port: Option<PortSelector>,
    /// See [`TrafficPolicy::load_balancer`].
    pub load_balancer: Option<serde_json::Value>,
    /// See [`TrafficPolicy::connection_pool`].
    pub connection_pool: Option<ConnectionPool>,
    /// See [`TrafficPolicy::outlier_detection`].
    pub outlier_detection: Option<OutlierDetection>,
    /// See [`TrafficPolicy::tls`].
    pub tls: Option<ClientTls>,
}

/// `PortSelector`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: Option<u32>,
}

/// `Subset`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Subset {
    /// Subset name.
    pub name: Option<String>,
    /// Endpoint labels.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Policy overriding the rule's own for this subset.
    pub traffic_policy: Option<TrafficPolicy>,
}

/// `ClientTLSSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClientTls {
    /// DISABLE (default), SIMPLE, MUTUAL or ISTIO_MUTUAL.
    pub mode: Option<ClientTlsMode>,
    /// Client certificate file (MUTUAL).
    pub client_certificate: Option<String>,
    /// Client private key file (MUTUAL).
    pub private_key: Option<String>,
    /// CA bundle file; the system roots when absent.
    pub ca_certificates: Option<String>,
    /// Kubernetes Secret holding cert, key and/or CA.
    pub credential_name: Option<String>,
    /// SANs accepted on the server certificate.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// SNI to send; the request's host when absent.
    pub sni: Option<String>,
    /// Skip chain and SAN verification.
    pub insecure_skip_verify: Option<bool>,
    /// CRL file for the server certificate.
    pub ca_crl: Option<String>,
}

/// `ClientTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ClientTlsMode {
    /// Plain text.
    Disable,
    /// TLS, server verified.
    Simple,
    /// TLS with a client certificate.
    Mutual,
    /// Mesh mTLS with the workload identity.
    IstioMutual,
}

/// `ConnectionPoolSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConnectionPool {
    /// TCP-level settings.
    pub tcp: Option<TcpSettings>,
    /// HTTP-level settings.
    pub http: Option<HttpSettings>,
}

/// `ConnectionPoolSettings.TCPSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpSettings {
    /// Maximum upstream connections at once (Envoy's default 1024).
    pub max_connections: Option<u32>,
    /// Upstream connect timeout, e.g. `10s`.
    pub connect_timeout: Option<String>,
    /// TCP keepalive; OS defaults apply.
    pub tcp_keepalive: Option<serde_json::Value>,
    /// Maximum connection lifetime; not enforced yet.
    pub max_connection_duration: Option<String>,
    /// Idle timeout for TCP connections.
    pub idle_timeout: Option<String>,
}

/// `ConnectionPoolSettings.HTTPSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpSettings {
    /// Requests waiting for a connection (Envoy's default 1024).
    pub http1_max_pending_requests: Option<u32>,
    /// Concurrent requests to the destination (Envoy's default 1024).
    pub http2_max_requests: Option<u32>,
    /// Requests per upstream connection; 0 = unlimited, 1 = no keep-alive.
    pub max_requests_per_connection: Option<u32>,
    /// Retry limit; not enforced yet.
    pub max_retries: Option<u32>,
    /// Idle time after which a pooled upstream connection is closed.
    pub idle_timeout: Option<String>,
    /// DEFAULT, DO_NOT_UPGRADE or UPGRADE (HTTP/2 to the upstream).
    pub h2_upgrade_policy: Option<H2UpgradePolicy>,
    /// Use the client's protocol upstream.
    pub use_client_protocol: Option<bool>,
    /// HTTP/2 stream limit; not enforced yet.
    pub max_concurrent_streams: Option<u32>,
    /// HTTP/2 keepalive pings; not implemented.
    pub http2_keep_alive: Option<serde_json::Value>,
}

/// `ConnectionPoolSettings.HTTPSettings.H2UpgradePolicy`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum H2UpgradePolicy {
    /// Mesh default (no upgrade).
    Default,
    /// Never upgrade.
    DoNotUpgrade,
    /// Speak HTTP/2 to the upstream (negotiated with ALPN over TLS).
    Upgrade,
}

/// `OutlierDetection`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses (and connect failures) before ejection;
    /// 0 disables.
    pub consecutive_5xx_errors: Option<u32>,
    /// Consecutive 502/503/504 responses (and connect failures) before
    /// ejection; 0 (the default) disables.
    pub consecutive_gateway_errors: Option<u32>,
    /// Deprecated alias of `consecutive5xxErrors`.
    pub consecutive_errors: Option<u32>,
    /// Local-origin failures counted apart; not implemented.
    pub split_external_local_origin_errors: Option<bool>,
    /// Consecutive local-origin failures; not implemented.
    pub consecutive_local_origin_failures: Option<u32>,
    /// Time between ejection sweeps, e.g. `10s`.
    pub interval: Option<String>,
    /// Minimum ejection time, multiplied by the times ejected.
    pub base_ejection_time: Option<String>,
    /// Percent of endpoints that may be ejected at once.
    pub max_ejection_percent: Option<u32>,
    /// Panic threshold; not implemented.
    pub min_health_percent: Option<u32>,
}
