//! `Sidecar` (networking.istio.io): the sidecar's own listeners. meshgate
//! reads `ingress[]` (TLS termination for clients outside the mesh) and
//! `outboundTrafficPolicy`.

use serde::{Deserialize, Serialize};

use super::gateway::{ServerPort, ServerTls};

/// `Sidecar.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads it applies to; meshgate is one workload.
    pub workload_selector: Option<serde_json::Value>,
    /// Inbound listeners.
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    /// Outbound listeners (host visibility); not implemented.
    #[serde(default)]
    pub egress: Vec<serde_json::Value>,
    /// Unknown-host policy for this workload.
    pub outbound_traffic_policy: Option<SidecarOutboundPolicy>,
    /// Inbound connection pool; not implemented.
    pub inbound_connection_pool: Option<serde_json::Value>,
}

/// `IstioIngressListener`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IngressListener {
    /// Port (number, protocol, name).
    pub port: Option<ServerPort>,
    /// Bind address.
    pub bind: Option<String>,
    /// DEFAULT, IPTABLES or NONE.
    pub capture_mode: Option<String>,
    /// Where traffic goes: `127.0.0.1:PORT`, `0.0.0.0:PORT`, `[::1]:PORT`.
    pub default_endpoint: Option<String>,
    /// SIMPLE or MUTUAL termination.
    pub tls: Option<ServerTls>,
    /// Connection pool; not implemented.
    pub connection_pool: Option<serde_json::Value>,
}

/// `OutboundTrafficPolicy` in a Sidecar.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarOutboundPolicy {
    /// REGISTRY_ONLY or ALLOW_ANY.
    pub mode: Option<crate::bootstrap::OutboundTrafficPolicy>,
    /// Hidden egress proxy; not implemented.
    pub egress_proxy: Option<serde_json::Value>,
}
