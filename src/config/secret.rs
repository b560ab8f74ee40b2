//! Kubernetes `Secret` documents (`apiVersion: v1`, `kind: Secret`), the
//! in-config source for `credentialName`.

use std::collections::BTreeMap;

use serde::Deserialize;

/// A `kind: Secret` object. `data` values are base64; `stringData` values
/// are plain and win over `data` for the same key, as in Kubernetes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretObject {
    /// `v1`.
    pub api_version: String,
    /// `Secret`.
    pub kind: String,
    /// Name and namespace.
    #[serde(default)]
    pub metadata: super::meta::ObjectMeta,
    /// Secret type, e.g. `kubernetes.io/tls`; informational.
    #[serde(rename = "type")]
    pub secret_type: Option<String>,
    /// Base64-encoded values.
    #[serde(default)]
    pub data: BTreeMap<String, String>,
    /// Plain values.
    #[serde(default)]
    pub string_data: BTreeMap<String, String>,
    /// Immutable flag; ignored.
    pub immutable: Option<bool>,
}
