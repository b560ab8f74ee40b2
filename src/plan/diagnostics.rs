//! Where every compiler in `plan` reports what it finds.

use crate::config::{ConfigError, Source};

/// Collects errors and warnings while compiling, with the few bootstrap
/// facts compilation depends on.
#[derive(Default)]
pub(crate) struct Diagnostics {
    pub errors: Vec<ConfigError>,
    /// Errors in parts left out of the plan (a listener whose servers do
    /// not compile) while the rest is served; fatal in strict mode.
    pub isolated: Vec<ConfigError>,
    pub warnings: Vec<String>,
    /// The workload's mesh identity, when configured (for ISTIO_MUTUAL).
    pub mesh: Option<MeshIdentity>,
    /// Ports each ServiceEntry host declares (lower case), for route
    /// destinations that name no port.
    pub service_ports: std::collections::HashMap<String, Vec<u16>>,
    /// Whether traffic is captured (`interceptionMode: REDIRECT`): the
    /// mesh inbound listener then serves every captured port.
    pub capture: bool,
}

/// Where the workload's mesh identity lives and its trust domain.
#[derive(Debug, Clone)]
pub(crate) struct MeshIdentity {
    /// Istio's file-mounted layout: cert-chain.pem, key.pem, root-cert.pem.
    pub dir: std::path::PathBuf,
    /// SPIFFE trust domain.
    pub trust_domain: String,
    /// The local app, for the mesh inbound listener.
    pub app_addr: Option<std::net::SocketAddr>,
}

impl Diagnostics {
    pub fn error(&mut self, source: &Source, field: impl Into<String>, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: source.file.clone(),
            line: source.line,
            resource: Some(source.resource()),
            field: Some(field.into()),
            reason: reason.into(),
        });
    }

    /// Moves the errors recorded since `mark` (an `errors.len()`) to
    /// [`Diagnostics::isolated`].
    pub fn isolate_since(&mut self, mark: usize) {
        let moved: Vec<ConfigError> = self.errors.drain(mark..).collect();
        self.isolated.extend(moved);
    }

    pub fn warn(&mut self, source: &Source, field: &str, reason: impl std::fmt::Display) {
        self.warnings.push(format!("{source}: {field}: {reason}"));
    }
}
