//! Command-line flags that set the proxy's own settings, layered in one
//! place: defaults, then the bootstrap file, then the flags.

pub mod labels;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::bootstrap::{Bootstrap, InterceptionMode, OutboundTrafficPolicy, TlsPolicyMode};

/// Flags shared by `run` and `validate`.
#[derive(Args, Debug, Clone)]
pub struct ConfigFlags {
    /// Config files or directories (multi-document YAML). Repeatable. With
    /// --kube, local overrides of the cluster's objects.
    #[arg(long = "config", short = 'c', value_name = "PATH", required_unless_present_any = ["kube", "bootstrap"], num_args = 1..)]
    pub config: Vec<PathBuf>,
    /// Bootstrap file: MeshConfig-style `outboundTrafficPolicy.mode`, listen
    /// addresses, `secretsDir`, `namespace`, limits. Flags override it.
    #[arg(long, value_name = "FILE")]
    pub bootstrap: Option<PathBuf>,
    /// Directory of Secrets as Kubernetes mounts them (`DIR/<name>/tls.crt`),
    /// for `credentialName`.
    #[arg(long, value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
    /// Namespace the proxy runs in (where `credentialName` Secrets are looked up).
    #[arg(long)]
    pub namespace: Option<String>,
    /// What to do with hosts that no ServiceEntry declares (default ALLOW_ANY, as in Istio).
    #[arg(long, value_enum)]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// REQUIRE: no plain text leaves the pod; outbound traffic is TLS that
    /// meshgate originates (a DestinationRule) or the app's own TLS
    /// (bootstrap `outboundTlsPolicy`, with its `exceptions`) [default: ALLOW].
    #[arg(long, value_enum)]
    pub outbound_tls_policy: Option<TlsPolicyMode>,
    /// REDIRECT when traffic is captured by `meshgate iptables` rules:
    /// Sidecar ingress ports are then served on the inbound capture
    /// listener instead of being bound (Istio's `interceptionMode`)
    /// [default: NONE].
    #[arg(long, value_enum)]
    pub interception_mode: Option<InterceptionMode>,
    /// This workload's mesh identity for ISTIO_MUTUAL, in Istio's
    /// file-mounted layout: cert-chain.pem, key.pem, root-cert.pem (e.g. from
    /// `meshgate ca issue`); rotated files are picked up.
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh [default: cluster.local].
    #[arg(long)]
    pub trust_domain: Option<String>,
    /// Proxies in front of this one whose X-Forwarded-For entries are
    /// trusted (ProxyConfig gatewayTopology.numTrustedProxies): the client
    /// address AuthorizationPolicy remoteIpBlocks match is the N-th entry
    /// from the right [default: 0, the connection's peer].
    #[arg(long, value_name = "N")]
    pub num_trusted_proxies: Option<u32>,
    /// Refuse the configuration on any error. Without it, a server or
    /// credential that does not load is left out (its port, or what uses
    /// the credential, fails closed) and the rest is served.
    #[arg(long)]
    pub strict: bool,
    /// This proxy's labels, which Gateway `selector` and `workloadSelector`s
    /// are matched against: `app=web,version=v1`, or the path of the pod's
    /// labels file from the Kubernetes downward API (`key="value"` lines),
    /// read at start. Unknown without it: every Gateway applies (warned).
    #[arg(long, value_name = "K=V,...|FILE", value_parser = labels::parse_flag)]
    pub workload_labels: Option<BTreeMap<String, String>>,
    /// The mesh's root namespace (MeshConfig `rootNamespace`), where
    /// PeerAuthentications without a selector are mesh-wide
    /// [default: istio-system].
    #[arg(long, value_name = "NAMESPACE", value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub root_namespace: Option<String>,
    /// Read the Istio resources, and the Secrets their credentialNames
    /// name, from the Kubernetes API server (list+watch in the proxy's
    /// namespace and the root namespace); -c files override objects of the
    /// same kind, namespace and name. Bootstrap `source: kubernetes`.
    #[arg(long)]
    pub kube: bool,
    /// The kubeconfig for --kube [default: the pod's service account, else
    /// KUBECONFIG or ~/.kube/config].
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
}

/// Flags of `run`.
#[derive(Args, Debug, Clone)]
pub struct RunFlags {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Outbound listener [default: 127.0.0.1:15001].
    #[arg(long)]
    pub outbound_addr: Option<SocketAddr>,
    /// Admin listener (/config_dump, /certs) [default: 127.0.0.1:15000].
    #[arg(long)]
    pub admin_addr: Option<SocketAddr>,
    /// Prometheus listener (/stats/prometheus) [default: 127.0.0.1:15020].
    #[arg(long)]
    pub stats_addr: Option<SocketAddr>,
    /// Readiness listener (/healthz/ready) [default: 127.0.0.1:15021].
    #[arg(long)]
    pub ready_addr: Option<SocketAddr>,
    /// IP that Gateway and Sidecar ingress listeners bind to when a server
    /// has no `bind` [default: 0.0.0.0].
    #[arg(long)]
    pub inbound_bind: Option<IpAddr>,
    /// Rebind a config port: `443=127.0.0.1:8443` serves the Gateway's port
    /// 443 on 127.0.0.1:8443 (a server with its own `bind` keeps that IP).
    /// Repeatable.
    #[arg(long, value_name = "PORT=ADDR", value_parser = parse_port_map)]
    pub port_map: Vec<(u16, SocketAddr)>,
    /// How often config, certificate and Secret files are checked for
    /// changes, e.g. `1s`; `0s` disables (reload with SIGHUP) [default: 1s].
    #[arg(long, value_parser = crate::plan::duration::parse)]
    pub watch_interval: Option<Duration>,
    /// Where the local app listens; with --identity-dir, the mesh inbound
    /// listener accepts mutual TLS from other workloads and forwards to it.
    #[arg(long)]
    pub app_addr: Option<SocketAddr>,
    /// The mesh inbound listener (PeerAuthentication applies) [default: 0.0.0.0:15006].
    #[arg(long)]
    pub mesh_inbound_addr: Option<SocketAddr>,
    /// Worker threads serving the proxy ports, each with its own socket per
    /// port (Istio's `concurrency`); 0: one per CPU [default: 2].
    #[arg(long, value_name = "N")]
    pub concurrency: Option<usize>,
    /// How long open connections may finish after SIGTERM before the rest
    /// are closed (Istio's `terminationDrainDuration`) [default: 5s].
    #[arg(long, value_parser = crate::plan::duration::parse)]
    pub termination_drain_duration: Option<Duration>,
    /// Get the workload certificate from this CA (Istio's signing API, e.g.
    /// `meshgate ca serve` or istiod) into --identity-dir, and renew it at
    /// half its lifetime.
    /// `HOST:PORT`; a host name (e.g. `istiod.istio-system.svc:15012`) is
    /// resolved at each connection.
    #[arg(long, value_name = "HOST:PORT", requires_all = ["ca_root", "ca_token_file"])]
    pub ca_address: Option<crate::ca::grpc::CaAddress>,
    /// Name the CA's certificate must carry (Istio's `ISTIOD_SAN`)
    /// [default: the host of --ca-address].
    #[arg(long, env = "ISTIOD_SAN")]
    pub ca_server_name: Option<String>,
    /// Root certificate(s) to verify the CA with (the mesh root).
    #[arg(long)]
    pub ca_root: Option<PathBuf>,
    /// File holding the bearer token for the CA.
    #[arg(long)]
    pub ca_token_file: Option<PathBuf>,
}

/// A `--port-map` value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PortMapError {
    /// No `=`.
    #[error("{0:?}: expected PORT=IP:PORT, e.g. 443=127.0.0.1:8443")]
    Form(String),
    /// The config port is not a number.
    #[error("{0:?} is not a port")]
    Port(String),
    /// The address is not `IP:PORT`.
    #[error("{0:?} is not IP:PORT")]
    Addr(String),
}

fn parse_port_map(s: &str) -> Result<(u16, SocketAddr), PortMapError> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| PortMapError::Form(s.to_string()))?;
    let port = port
        .parse()
        .map_err(|_| PortMapError::Port(port.to_string()))?;
    let addr = addr
        .parse()
        .map_err(|_| PortMapError::Addr(addr.to_string()))?;
    Ok((port, addr))
}

impl ConfigFlags {
    /// The bootstrap: defaults, then the bootstrap file, then these flags.
    pub fn bootstrap(&self) -> Result<Bootstrap, crate::bootstrap::BootstrapError> {
        let mut b = Bootstrap::default();
        // Unset until the file or a flag names it (with --kube: the pod's).
        b.namespace.clear();
        if let Some(f) = &self.bootstrap {
            b.apply_file(f)?;
        }
        b.config_paths = self.config.clone();
        set(&mut b.secrets_dir, self.secrets_dir.clone().map(Some));
        set(&mut b.namespace, self.namespace.clone());
        set(&mut b.outbound_traffic_policy, self.outbound_traffic_policy);
        set(&mut b.outbound_tls_policy.mode, self.outbound_tls_policy);
        set(&mut b.interception_mode, self.interception_mode);
        set(&mut b.identity_dir, self.identity_dir.clone().map(Some));
        set(&mut b.trust_domain, self.trust_domain.clone());
        set(&mut b.num_trusted_proxies, self.num_trusted_proxies);
        b.strict |= self.strict;
        set(
            &mut b.workload_labels,
            self.workload_labels.clone().map(Some),
        );
        set(&mut b.root_namespace, self.root_namespace.clone());
        if self.kube {
            b.source = crate::bootstrap::ConfigSource::Kubernetes;
        }
        set(&mut b.kubeconfig, self.kubeconfig.clone().map(Some));
        if b.namespace.is_empty() {
            b.namespace = match b.source {
                crate::bootstrap::ConfigSource::Kubernetes => crate::source::pod_namespace(),
                crate::bootstrap::ConfigSource::Files => None,
            }
            .unwrap_or_else(|| Bootstrap::default().namespace);
        }
        if b.config_paths.is_empty() && b.source == crate::bootstrap::ConfigSource::Files {
            return Err(crate::bootstrap::BootstrapError::Field {
                path: self.bootstrap.clone().unwrap_or_default(),
                field: "source",
                message: "no configuration: give -c PATH, or --kube (source: kubernetes)".into(),
            });
        }
        Ok(b)
    }
}

impl RunFlags {
    /// The bootstrap: defaults, then the bootstrap file, then these flags.
    pub fn bootstrap(&self) -> Result<Bootstrap, crate::bootstrap::BootstrapError> {
        let mut b = self.config.bootstrap()?;
        set(&mut b.outbound_addr, self.outbound_addr);
        set(&mut b.admin_addr, self.admin_addr);
        set(&mut b.stats_addr, self.stats_addr);
        set(&mut b.ready_addr, self.ready_addr);
        set(&mut b.inbound_bind, self.inbound_bind);
        b.port_map.extend(self.port_map.iter().copied());
        set(&mut b.watch_interval, self.watch_interval);
        set(&mut b.concurrency, self.concurrency);
        set(&mut b.app_addr, self.app_addr.map(Some));
        set(&mut b.mesh_inbound_addr, self.mesh_inbound_addr);
        set(
            &mut b.termination_drain_duration,
            self.termination_drain_duration,
        );
        Ok(b)
    }
}

/// A flag given on the command line overrides what is there.
fn set<T>(slot: &mut T, flag: Option<T>) {
    if let Some(v) = flag {
        *slot = v;
    }
}
