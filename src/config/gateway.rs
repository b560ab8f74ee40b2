//! `Gateway` (networking.istio.io): server-side listeners. Parsed here so
//! configs that contain Gateways load; compiled by the ingress work.

use serde::{Deserialize, Serialize};

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Servers (port + hosts + TLS).
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Gateway pod selector; ignored.
    #[serde(default)]
    pub selector: std::collections::BTreeMap<String, String>,
}

/// `Server`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Listening port.
    pub port: Option<ServerPort>,
    /// Bind address.
    pub bind: Option<String>,
    /// Hosts served, `[ns/]host`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Server TLS settings (kept raw until the ingress compiler reads them).
    pub tls: Option<serde_json::Value>,
    /// Not implemented in Istio either.
    pub default_endpoint: Option<String>,
    /// Server name.
    pub name: Option<String>,
}

/// `Port`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    /// Port number.
    pub number: Option<u32>,
    /// Protocol.
    pub protocol: Option<String>,
    /// Port name.
    pub name: Option<String>,
    /// Deprecated target port.
    pub target_port: Option<u32>,
}
