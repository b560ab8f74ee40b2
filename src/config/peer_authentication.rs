//! `PeerAuthentication` (security.istio.io): whether the mesh inbound port
//! requires mutual TLS.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `PeerAuthentication.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PeerAuthenticationSpec {
    /// Workloads it applies to (`{matchLabels}`; `plan::selector`).
    pub selector: Option<serde_json::Value>,
    /// Mutual TLS mode for the workload.
    pub mtls: Option<MutualTls>,
    /// Per-port modes; not implemented.
    #[serde(default)]
    pub port_level_mtls: BTreeMap<String, MutualTls>,
}

/// `PeerAuthentication.MutualTLS`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MutualTls {
    /// UNSET, DISABLE, PERMISSIVE or STRICT.
    pub mode: Option<MtlsMode>,
}

/// `PeerAuthentication.MutualTLS.Mode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit (PERMISSIVE here).
    Unset,
    /// Plain text only.
    Disable,
    /// Mutual TLS or plain text.
    Permissive,
    /// Mutual TLS only.
    Strict,
}
