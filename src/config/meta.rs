//! Resource identity and source location shared by every config type.
//!
//! Must not depend on `plan`, `runtime` or anything async.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Kubernetes `metadata`, the subset meshgate reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Resource name; required for every kind meshgate reads.
    pub name: Option<String>,
    /// Namespace; `default` when absent, as `kubectl apply` would do.
    pub namespace: Option<String>,
    /// Labels; kept for `workloadSelector` matching and `config_dump`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// Annotations; read, never interpreted.
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
}

/// Where a resource came from: the file, the line its document starts on, and
/// its `kind/namespace/name`. Every error about a resource carries one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    /// The file the document was read from.
    pub file: PathBuf,
    /// 1-based line of the document's first line in `file`.
    pub line: usize,
    /// `kind` of the resource, e.g. `DestinationRule`.
    pub kind: String,
    /// Namespace (`default` when the document gives none).
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// What the `file` of a resource read from the Kubernetes API server starts
/// with: `kubernetes:<namespace>/<Kind>/<name>` (see `crate::source`).
pub const KUBERNETES_ORIGIN: &str = "kubernetes:";

/// The object an origin written `kubernetes:<namespace>/<Kind>/<name>`
/// names (`<namespace>/<Kind>/<name>`); `None` for a file.
pub fn kubernetes_object(file: &Path) -> Option<&str> {
    file.to_str()?.strip_prefix(KUBERNETES_ORIGIN)
}

impl Source {
    /// `kind/namespace/name`, the form used in every message.
    pub fn resource(&self) -> String {
        format!("{}/{}/{}", self.kind, self.namespace, self.name)
    }

    /// Where the resource is defined: `file:line`, or, for an object read
    /// from the API server, `<namespace>/<Kind>/<name>` (it has no line).
    pub fn location(&self) -> String {
        match kubernetes_object(&self.file) {
            Some(object) => object.to_string(),
            None => format!("{}:{}", self.file.display(), self.line),
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match kubernetes_object(&self.file) {
            // The object is its own location: named once.
            Some(object) => f.write_str(object),
            None => write!(
                f,
                "{}:{}: {}",
                self.file.display(),
                self.line,
                self.resource()
            ),
        }
    }
}

/// A whole Istio/Kubernetes object with a typed `spec`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Object<S> {
    /// e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// e.g. `ServiceEntry`.
    pub kind: String,
    /// Name, namespace, labels.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// The resource's spec.
    pub spec: S,
    /// Written by controllers; ignored.
    #[serde(default)]
    pub status: Option<serde_json::Value>,
}
