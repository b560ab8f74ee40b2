//! `Sidecar` (networking.istio.io): the sidecar's own listeners. meshgate
//! reads `ingress[]` (TLS termination for clients outside the mesh),
//! `outboundTrafficPolicy` and `egress[].hosts` (which services, with their
//! VirtualServices, outbound traffic sees: `plan::scope`). Which Sidecars
//! apply is decided by `workloadSelector` (`plan::selector`); at most one
//! may declare `egress`. An egress listener's `port` (a per-port listener)
//! is refused, its `bind` and `captureMode` are warned about: meshgate has
//! one outbound listener.

use serde::{Deserialize, Serialize};

use super::gateway::{ServerPort, ServerTls};

/// `Sidecar.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SidecarSpec {
    /// Workloads it applies to (`{labels}`; `plan::selector`).
    pub workload_selector: Option<serde_json::Value>,
    /// Inbound listeners.
    #[serde(default)]
    pub ingress: Vec<IngressListener>,
    /// Outbound listeners: the hosts outbound traffic may see.
    #[serde(default)]
    pub egress: Vec<EgressListener>,
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

/// `IstioEgressListener`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressListener {
    /// A per-port listener (refused: meshgate has one outbound listener).
    pub port: Option<ServerPort>,
    /// Bind address (or `unix://` socket) of the listener.
    pub bind: Option<String>,
    /// DEFAULT, IPTABLES or NONE.
    pub capture_mode: Option<String>,
    /// Imported hosts, `namespace/dnsName`: `*/`, `./` (the proxy's
    /// namespace), a namespace, or `~`-prefixed to exclude.
    #[serde(default)]
    pub hosts: Vec<String>,
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
