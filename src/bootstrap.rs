//! The proxy's own settings: listen addresses, config paths and the mesh-wide
//! options Istio keeps in MeshConfig (`outboundTrafficPolicy`).
//!
//! Read from command-line flags and, optionally, a bootstrap YAML file whose
//! keys follow MeshConfig's spelling. Pure: no sockets.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::plan::path::PathNormalization;

/// MeshConfig `outboundTrafficPolicy.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OutboundTrafficPolicy {
    /// Hosts without a ServiceEntry are forwarded as plain HTTP (Istio's default).
    #[default]
    AllowAny,
    /// Hosts without a ServiceEntry are refused with 502.
    RegistryOnly,
}

/// Istio's ProxyConfig `interceptionMode`: how the app's traffic reaches
/// the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InterceptionMode {
    /// No capture: apps use the outbound listener as an HTTP proxy (or by
    /// Host), and every Gateway/Sidecar ingress port is bound.
    #[default]
    None,
    /// Traffic is captured with NAT REDIRECT rules (`meshgate iptables`):
    /// the outbound listener serves captured connections by their original
    /// destination, and Sidecar ingress ports are served on the inbound
    /// capture listener (15006) instead of being bound.
    Redirect,
}

/// `outboundTlsPolicy.mode`: whether plain text may leave the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[clap(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsPolicyMode {
    /// Plain text goes where the configuration sends it.
    #[default]
    Allow,
    /// Every outbound connection is TLS: originated by meshgate (a
    /// DestinationRule) or the app's own TLS passed through; plain text to
    /// anything else is refused (`plaintext_refused`).
    Require,
}

/// `outboundTlsPolicy`: the force-encryption switch and its exceptions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct OutboundTlsPolicy {
    /// ALLOW (default) or REQUIRE.
    pub mode: TlsPolicyMode,
    /// `host:port` destinations that may be reached in plain text under
    /// REQUIRE (`*.example.com:80` for a wildcard host).
    pub exceptions: Vec<(String, u16)>,
}

/// Where the Istio resources come from (bootstrap `source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConfigSource {
    /// The config files only (`-c`).
    #[default]
    Files,
    /// The Kubernetes API server, with the config files as local
    /// overrides (`--kube`).
    Kubernetes,
}

/// Envoy's `headers_with_underscores_action`: what to do with a request
/// header whose name has an underscore (such names can alias dashed ones
/// in CGI-style apps: `x_user` read as `x-user`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum UnderscoreAction {
    /// Forward them (Envoy's default).
    #[default]
    Allow,
    /// Refuse the request with 400.
    RejectRequest,
    /// Remove those headers and forward the rest.
    DropHeader,
}

/// Everything the proxy needs besides the Istio resources.
#[derive(Debug, Clone, Serialize)]
pub struct Bootstrap {
    /// Config files or directories.
    pub config_paths: Vec<PathBuf>,
    /// Directory holding Secrets laid out as Kubernetes mounts them
    /// (`<dir>/<secret-name>/<key>`), for `credentialName`.
    pub secrets_dir: Option<PathBuf>,
    /// Namespace the proxy runs in (where `credentialName` Secrets live).
    pub namespace: String,
    /// Outbound capture / explicit proxy listener.
    pub outbound_addr: SocketAddr,
    /// Admin endpoint (`/config_dump`, `/ready`); loopback only.
    pub admin_addr: SocketAddr,
    /// Prometheus endpoint (`/stats/prometheus`).
    pub stats_addr: SocketAddr,
    /// Readiness endpoint (`/healthz/ready`).
    pub ready_addr: SocketAddr,
    /// Unknown-host policy.
    pub outbound_traffic_policy: OutboundTrafficPolicy,
    /// Longest wait for a client's request headers, also between requests
    /// on a keep-alive connection (so idle connections are closed).
    pub request_header_timeout: Duration,
    /// Largest request head accepted (bytes); larger gets 431.
    pub max_header_bytes: usize,
    /// IP that inbound (Gateway / Sidecar ingress) listeners bind to when
    /// the server gives no `bind`.
    pub inbound_bind: IpAddr,
    /// Rebinds a config port to another address (`443 → 127.0.0.1:8443`);
    /// port 0 picks a free one (tests).
    pub port_map: BTreeMap<u16, SocketAddr>,
    /// Longest time from accept to a completed TLS handshake (and to the
    /// first bytes of a ClientHello).
    pub handshake_timeout: Duration,
    /// How often config, certificate, key, CA and Secret files are checked
    /// for changes (zero: never; reload with SIGHUP only).
    pub watch_interval: Duration,
    /// Warn when a certificate in service expires within this window.
    pub expiry_warning: Duration,
    /// The workload's mesh identity in Istio's file-mounted layout
    /// (`cert-chain.pem`, `key.pem`, `root-cert.pem`), for ISTIO_MUTUAL.
    pub identity_dir: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh.
    pub trust_domain: String,
    /// Where the local app listens; with `identity_dir`, the mesh inbound
    /// listener (`mesh_inbound_addr`, Istio's 15006) forwards to it.
    pub app_addr: Option<SocketAddr>,
    /// The mesh inbound listener (mutual TLS from other sidecars).
    pub mesh_inbound_addr: SocketAddr,
    /// Worker threads serving the proxy ports (Istio's `concurrency`;
    /// 0: one per CPU).
    pub concurrency: usize,
    /// How long open connections may finish after shutdown begins before
    /// the rest are closed (Istio's `terminationDrainDuration`).
    pub termination_drain_duration: Duration,
    /// How long a downstream HTTP connection may have no request in flight
    /// before it is closed gracefully (Envoy's `idle_timeout`).
    pub idle_timeout: Duration,
    /// How long a request or response body may move nothing before the
    /// request is ended (Envoy's `stream_idle_timeout`).
    pub stream_idle_timeout: Duration,
    /// Request headers whose names contain `_` (Envoy's
    /// `headers_with_underscores_action`, default ALLOW).
    pub headers_with_underscores_action: UnderscoreAction,
    /// Proxies in front of this one whose `X-Forwarded-For` entries are
    /// trusted (ProxyConfig `gatewayTopology.numTrustedProxies`): the
    /// client address AuthorizationPolicy `remoteIpBlocks` match is the
    /// N-th entry from the right, the connection's peer when 0 (the
    /// default) or when the header has fewer entries.
    pub num_trusted_proxies: u32,
    /// Refuse the whole configuration on any error (`--strict`), instead of
    /// serving all but a broken server or credential.
    pub strict: bool,
    /// How request paths are normalised before routing and forwarding
    /// (MeshConfig `pathNormalization.normalization`, default `BASE`).
    pub path_normalization: PathNormalization,
    /// How app traffic reaches the proxy (Istio's `interceptionMode`).
    pub interception_mode: InterceptionMode,
    /// How long a captured connection may send nothing before its protocol
    /// is decided without its first bytes (MeshConfig
    /// `protocolDetectionTimeout`); then it is TCP.
    pub protocol_detection_timeout: Duration,
    /// Whether plain text may leave the pod (`outboundTlsPolicy`).
    pub outbound_tls_policy: OutboundTlsPolicy,
    /// This proxy's own labels (`--workload-labels`, bootstrap
    /// `workloadLabels`; on Kubernetes the pod's labels, through the
    /// downward API), which Gateway `selector` and `workloadSelector`s are
    /// matched against (`plan::selector`). `None`: unknown.
    pub workload_labels: Option<BTreeMap<String, String>>,
    /// The mesh's root namespace (MeshConfig `rootNamespace`): its
    /// PeerAuthentications without a selector are mesh-wide.
    pub root_namespace: String,
    /// Where the Istio resources come from: files, or the Kubernetes API
    /// server with the files as local overrides (`--kube`, bootstrap
    /// `source: kubernetes`).
    pub source: ConfigSource,
    /// The kubeconfig for the Kubernetes source (`--kubeconfig`); without
    /// it the pod's service account, else the default kubeconfig.
    pub kubeconfig: Option<PathBuf>,
}

/// A bootstrap file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The file cannot be read.
    #[error("{}: cannot read bootstrap file: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid YAML for the bootstrap keys.
    #[error("{}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's first line.
        message: String,
    },
    /// A field's value is invalid.
    #[error("{}: {field}: {message}", path.display())]
    Field {
        /// The file.
        path: PathBuf,
        /// The key.
        field: &'static str,
        /// Why.
        message: String,
    },
}

/// How long a captured connection may stay silent before it is taken for
/// TCP: long enough for any client that speaks first, short enough for a
/// protocol whose server speaks first (Istio's default before it made the
/// wait unbounded).
pub const DEFAULT_PROTOCOL_DETECTION: Duration = Duration::from_millis(100);

/// Istio's default MeshConfig `rootNamespace`.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Istio's default `terminationDrainDuration`.
pub const DEFAULT_TERMINATION_DRAIN: Duration = Duration::from_secs(5);

impl Default for Bootstrap {
    fn default() -> Self {
        Bootstrap {
            config_paths: Vec::new(),
            secrets_dir: None,
            namespace: "default".into(),
            outbound_addr: ([127, 0, 0, 1], 15001).into(),
            admin_addr: ([127, 0, 0, 1], 15000).into(),
            stats_addr: ([127, 0, 0, 1], 15020).into(),
            ready_addr: ([127, 0, 0, 1], 15021).into(),
            outbound_traffic_policy: OutboundTrafficPolicy::AllowAny,
            request_header_timeout: Duration::from_secs(10),
            max_header_bytes: 64 * 1024,
            inbound_bind: IpAddr::from([0, 0, 0, 0]),
            port_map: BTreeMap::new(),
            handshake_timeout: Duration::from_secs(10),
            watch_interval: Duration::from_secs(1),
            expiry_warning: Duration::from_secs(7 * 86400),
            identity_dir: None,
            trust_domain: "cluster.local".into(),
            app_addr: None,
            mesh_inbound_addr: ([0, 0, 0, 0], 15006).into(),
            // Istio's default for sidecars.
            concurrency: 2,
            termination_drain_duration: DEFAULT_TERMINATION_DRAIN,
            path_normalization: PathNormalization::Base,
            headers_with_underscores_action: UnderscoreAction::Allow,
            num_trusted_proxies: 0,
            strict: false,
            idle_timeout: Duration::from_secs(3600),
            stream_idle_timeout: Duration::from_secs(300),
            interception_mode: InterceptionMode::None,
            protocol_detection_timeout: DEFAULT_PROTOCOL_DETECTION,
            outbound_tls_policy: OutboundTlsPolicy::default(),
            workload_labels: None,
            root_namespace: DEFAULT_ROOT_NAMESPACE.into(),
            source: ConfigSource::Files,
            kubeconfig: None,
        }
    }
}

/// The bootstrap file: MeshConfig-style keys plus meshgate's listeners.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BootstrapFile {
    outbound_traffic_policy: Option<PolicyFile>,
    namespace: Option<String>,
    secrets_dir: Option<PathBuf>,
    outbound_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    stats_addr: Option<SocketAddr>,
    ready_addr: Option<SocketAddr>,
    request_header_timeout: Option<String>,
    max_header_bytes: Option<usize>,
    inbound_bind: Option<IpAddr>,
    #[serde(default)]
    port_map: BTreeMap<u16, SocketAddr>,
    handshake_timeout: Option<String>,
    watch_interval: Option<String>,
    expiry_warning: Option<String>,
    identity_dir: Option<PathBuf>,
    trust_domain: Option<String>,
    app_addr: Option<SocketAddr>,
    mesh_inbound_addr: Option<SocketAddr>,
    concurrency: Option<usize>,
    termination_drain_duration: Option<String>,
    path_normalization: Option<PathNormalizationFile>,
    idle_timeout: Option<String>,
    stream_idle_timeout: Option<String>,
    headers_with_underscores_action: Option<UnderscoreAction>,
    interception_mode: Option<InterceptionMode>,
    protocol_detection_timeout: Option<String>,
    outbound_tls_policy: Option<TlsPolicyFile>,
    workload_labels: Option<BTreeMap<String, String>>,
    root_namespace: Option<String>,
    source: Option<ConfigSource>,
    gateway_topology: Option<GatewayTopologyFile>,
}

/// ProxyConfig `gatewayTopology`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GatewayTopologyFile {
    num_trusted_proxies: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsPolicyFile {
    mode: Option<TlsPolicyMode>,
    #[serde(default)]
    exceptions: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    mode: Option<OutboundTrafficPolicy>,
}

/// MeshConfig `pathNormalization`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathNormalizationFile {
    normalization: Option<PathNormalization>,
}

impl Bootstrap {
    /// Applies a bootstrap YAML file over `self`. Errors name the file.
    pub fn apply_file(&mut self, path: &Path) -> Result<(), BootstrapError> {
        let text = std::fs::read_to_string(path).map_err(|source| BootstrapError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let file: BootstrapFile =
            serde_saphyr::from_str(&text).map_err(|e| BootstrapError::Parse {
                path: path.to_path_buf(),
                message: first_line(&e.to_string()),
            })?;
        let dur = |field: &'static str, v: &Option<String>| {
            v.as_deref()
                .map(crate::plan::duration::parse)
                .transpose()
                .map_err(|message| BootstrapError::Field {
                    path: path.to_path_buf(),
                    field,
                    message: message.to_string(),
                })
        };
        if let Some(mode) = file.outbound_traffic_policy.and_then(|p| p.mode) {
            self.outbound_traffic_policy = mode;
        }
        if let Some(ns) = file.namespace {
            self.namespace = ns;
        }
        if file.secrets_dir.is_some() {
            self.secrets_dir = file.secrets_dir;
        }
        self.outbound_addr = file.outbound_addr.unwrap_or(self.outbound_addr);
        self.admin_addr = file.admin_addr.unwrap_or(self.admin_addr);
        self.stats_addr = file.stats_addr.unwrap_or(self.stats_addr);
        self.ready_addr = file.ready_addr.unwrap_or(self.ready_addr);
        if let Some(d) = dur("requestHeaderTimeout", &file.request_header_timeout)? {
            self.request_header_timeout = d;
        }
        self.max_header_bytes = file.max_header_bytes.unwrap_or(self.max_header_bytes);
        self.inbound_bind = file.inbound_bind.unwrap_or(self.inbound_bind);
        self.port_map.extend(file.port_map);
        if let Some(d) = dur("handshakeTimeout", &file.handshake_timeout)? {
            self.handshake_timeout = d;
        }
        if let Some(d) = dur("watchInterval", &file.watch_interval)? {
            self.watch_interval = d;
        }
        if let Some(d) = dur("expiryWarning", &file.expiry_warning)? {
            self.expiry_warning = d;
        }
        if file.identity_dir.is_some() {
            self.identity_dir = file.identity_dir;
        }
        if let Some(td) = file.trust_domain {
            self.trust_domain = td;
        }
        if file.app_addr.is_some() {
            self.app_addr = file.app_addr;
        }
        self.mesh_inbound_addr = file.mesh_inbound_addr.unwrap_or(self.mesh_inbound_addr);
        self.concurrency = file.concurrency.unwrap_or(self.concurrency);
        if let Some(d) = dur("terminationDrainDuration", &file.termination_drain_duration)? {
            self.termination_drain_duration = d;
        }
        if let Some(d) = dur("idleTimeout", &file.idle_timeout)? {
            self.idle_timeout = d;
        }
        if let Some(d) = dur("streamIdleTimeout", &file.stream_idle_timeout)? {
            self.stream_idle_timeout = d;
        }
        if let Some(a) = file.headers_with_underscores_action {
            self.headers_with_underscores_action = a;
        }
        if let Some(mode) = file.path_normalization.and_then(|p| p.normalization) {
            self.path_normalization = mode;
        }
        if let Some(mode) = file.interception_mode {
            self.interception_mode = mode;
        }
        if let Some(d) = dur("protocolDetectionTimeout", &file.protocol_detection_timeout)? {
            if d.is_zero() {
                return Err(BootstrapError::Field {
                    path: path.to_path_buf(),
                    field: "protocolDetectionTimeout",
                    message: "must be at least 1ms (a captured connection is never held \
                              without a bound)"
                        .into(),
                });
            }
            self.protocol_detection_timeout = d;
        }
        if let Some(policy) = file.outbound_tls_policy {
            if let Some(mode) = policy.mode {
                self.outbound_tls_policy.mode = mode;
            }
            let mut exceptions = Vec::new();
            for (i, e) in policy.exceptions.iter().enumerate() {
                exceptions.push(parse_exception(e).map_err(|message| BootstrapError::Field {
                    path: path.to_path_buf(),
                    field: "outboundTlsPolicy.exceptions",
                    message: format!("[{i}] {e:?}: {message}"),
                })?);
            }
            self.outbound_tls_policy.exceptions = exceptions;
        }
        if file.workload_labels.is_some() {
            self.workload_labels = file.workload_labels;
        }
        if let Some(ns) = file.root_namespace {
            if ns.is_empty() {
                return Err(BootstrapError::Field {
                    path: path.to_path_buf(),
                    field: "rootNamespace",
                    message: "must name a namespace".into(),
                });
            }
            self.root_namespace = ns;
        }
        if let Some(source) = file.source {
            self.source = source;
        }
        if let Some(n) = file.gateway_topology.and_then(|t| t.num_trusted_proxies) {
            self.num_trusted_proxies = n;
        }
        Ok(())
    }

    /// Worker threads to start: `concurrency`, or one per CPU when it is 0.
    pub fn workers(&self) -> usize {
        match self.concurrency {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    /// Where the listener for config port `port` (with optional `bind`
    /// IP) binds.
    pub fn inbound_addr(&self, port: u16, bind: Option<&str>) -> SocketAddr {
        let bind_ip = bind.and_then(|b| b.parse::<IpAddr>().ok());
        match self.port_map.get(&port) {
            // A server's own `bind` keeps its IP; the map moves the port.
            Some(a) => SocketAddr::new(bind_ip.unwrap_or(a.ip()), a.port()),
            None => SocketAddr::new(bind_ip.unwrap_or(self.inbound_bind), port),
        }
    }

    /// Every address bound to port 0, for tests and the demo.
    pub fn ephemeral() -> Bootstrap {
        let any: SocketAddr = ([127, 0, 0, 1], 0).into();
        Bootstrap {
            outbound_addr: any,
            admin_addr: any,
            stats_addr: any,
            ready_addr: any,
            // Tests and the demo reload explicitly.
            watch_interval: Duration::ZERO,
            ..Bootstrap::default()
        }
    }
}

/// An `outboundTlsPolicy.exceptions` entry: `host:port`, the host a name
/// (`*.` wildcard allowed) or an IP (`[v6]:port`).
pub fn parse_exception(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port, e.g. api.example.com:80".to_string())?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{port:?} is not a port (1-65535)"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || host.contains(char::is_whitespace) {
        return Err("expected host:port, e.g. api.example.com:80".into());
    }
    if host.parse::<IpAddr>().is_err() {
        crate::plan::host::HostPattern::parse(host).map_err(|e| e.to_string())?;
    }
    Ok((host.to_ascii_lowercase(), port))
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrency_sets_the_workers() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        let mut b = Bootstrap::default();
        assert_eq!(b.workers(), 2, "Istio's sidecar default");
        std::fs::write(&p, "concurrency: 3\n").unwrap();
        b.apply_file(&p).unwrap();
        assert_eq!(b.workers(), 3);
        std::fs::write(&p, "concurrency: 0\n").unwrap();
        b.apply_file(&p).unwrap();
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(b.workers(), cpus, "0: one per CPU");
    }

    #[test]
    fn path_normalization_uses_meshconfig_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        let mut b = Bootstrap::default();
        assert_eq!(
            b.path_normalization,
            PathNormalization::Base,
            "Istio's default"
        );
        for (name, want) in [
            ("NONE", PathNormalization::None),
            ("DEFAULT", PathNormalization::Base),
            ("MERGE_SLASHES", PathNormalization::MergeSlashes),
            (
                "DECODE_AND_MERGE_SLASHES",
                PathNormalization::DecodeAndMergeSlashes,
            ),
            ("BASE", PathNormalization::Base),
        ] {
            std::fs::write(&p, format!("pathNormalization:\n  normalization: {name}\n")).unwrap();
            b.apply_file(&p).unwrap();
            assert_eq!(b.path_normalization, want, "{name}");
        }
        std::fs::write(&p, "pathNormalization:\n  normalization: SOMETIMES\n").unwrap();
        let err = b.apply_file(&p).unwrap_err().to_string();
        assert!(err.contains("b.yaml") && err.contains("SOMETIMES"), "{err}");
    }

    #[test]
    fn capture_settings_use_istio_spelling() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        let mut b = Bootstrap::default();
        assert_eq!(b.interception_mode, InterceptionMode::None);
        assert_eq!(b.outbound_tls_policy.mode, TlsPolicyMode::Allow);
        std::fs::write(
            &p,
            "interceptionMode: REDIRECT\nprotocolDetectionTimeout: 250ms\n\
             outboundTlsPolicy:\n  mode: REQUIRE\n  exceptions: [\"Legacy.internal:80\", \"[fd00::1]:8080\"]\n",
        )
        .unwrap();
        b.apply_file(&p).unwrap();
        assert_eq!(b.interception_mode, InterceptionMode::Redirect);
        assert_eq!(b.protocol_detection_timeout, Duration::from_millis(250));
        assert_eq!(b.outbound_tls_policy.mode, TlsPolicyMode::Require);
        assert_eq!(
            b.outbound_tls_policy.exceptions,
            vec![("legacy.internal".into(), 80), ("fd00::1".into(), 8080)]
        );
        for bad in [
            "outboundTlsPolicy:\n  exceptions: [\"legacy.internal\"]\n",
            "outboundTlsPolicy:\n  exceptions: [\"legacy.internal:http\"]\n",
            "outboundTlsPolicy:\n  exceptions: [\"legacy.*.internal:80\"]\n",
            "outboundTlsPolicy:\n  exceptions: [\"legacy/internal:80\"]\n",
            "protocolDetectionTimeout: 0s\n",
            "interceptionMode: TPROXY\n",
        ] {
            std::fs::write(&p, bad).unwrap();
            let err = b.apply_file(&p).unwrap_err().to_string();
            assert!(err.contains("b.yaml"), "{bad}: {err}");
        }
    }

    #[test]
    fn bootstrap_file_sets_policy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.yaml");
        std::fs::write(
            &p,
            "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\noutboundAddr: 127.0.0.1:9999\n",
        )
        .unwrap();
        let mut b = Bootstrap::default();
        b.apply_file(&p).unwrap();
        assert_eq!(
            b.outbound_traffic_policy,
            OutboundTrafficPolicy::RegistryOnly
        );
        assert_eq!(b.outbound_addr.port(), 9999);
        std::fs::write(&p, "outboundTrafficPolicy:\n  mode: DENY\n").unwrap();
        let err = b.apply_file(&p).unwrap_err().to_string();
        assert!(err.contains("b.yaml") && err.contains("DENY"), "{err}");
    }
}
