//! Outbound routing: which upstream a request from the local app goes to,
//! and with which TLS and pool settings.
//!
//! Istio's rules, applied here once so the runtime only looks up:
//! - ServiceEntry hosts: exact beats wildcard, longer wildcard beats shorter;
//!   a request counts as registered only on a declared port.
//! - VirtualService bound to `mesh`: first HTTP route whose `match.port`
//!   fits; `route.destination.{host,port}` rewrites the destination (the
//!   classic 80 → 443 rewrite for origination).
//! - DestinationRule: most specific host; a matching `portLevelSettings`
//!   entry replaces the top-level policy entirely (no inheritance, omitted
//!   parts take defaults), subsets override per component.
//! - Unknown hosts: `ALLOW_ANY` passes them through as plain HTTP,
//!   `REGISTRY_ONLY` refuses them.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::host::{HostPattern, most_specific, normalize};
use super::tls::ClientTlsPlan;
use super::{Diagnostics, duration};
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::service_entry::{Location, Resolution};
use crate::config::{Config, Resource, Source};

/// Istio's default upstream connect timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Istio's default idle timeout for upstream connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(3600);

/// Compiled outbound configuration.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboundPlan {
    /// What happens to hosts without a ServiceEntry.
    pub policy: OutboundTrafficPolicy,
    /// ServiceEntries.
    pub services: Vec<Arc<ServicePlan>>,
    /// DestinationRules.
    pub rules: Vec<Arc<RulePlan>>,
    /// VirtualServices bound to `mesh`.
    pub routes: Vec<MeshRoutes>,
}

/// A compiled ServiceEntry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePlan {
    /// `kind/namespace/name` and where it was read.
    pub resource: String,
    /// Hosts it declares.
    pub hosts: Vec<HostPattern>,
    /// Ports it declares.
    pub ports: Vec<PortPlan>,
    /// How endpoints are found.
    pub resolution: Resolution,
    /// Inside or outside the mesh.
    pub location: Location,
    /// Explicit endpoints.
    pub endpoints: Vec<EndpointPlan>,
    /// Names accepted on the server certificate (unless the rule overrides).
    pub subject_alt_names: Vec<String>,
    /// Declared addresses (VIPs/CIDRs); informational for explicit proxying.
    pub addresses: Vec<String>,
}

/// A declared service port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PortPlan {
    /// Port the app connects to.
    pub number: u16,
    /// Port name (endpoint `ports` maps use it).
    pub name: String,
    /// Declared protocol, upper case.
    pub protocol: String,
    /// Port on the endpoint.
    pub target_port: u16,
}

/// A ServiceEntry endpoint.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EndpointPlan {
    /// IP address or DNS name.
    pub address: String,
    /// Port-name → endpoint port overrides.
    pub ports: BTreeMap<String, u16>,
    /// Relative weight.
    pub weight: u32,
}

/// A compiled DestinationRule.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RulePlan {
    /// `kind/namespace/name` and where it was read.
    pub resource: String,
    /// Host it applies to.
    pub host: HostPattern,
    /// Policy for ports without a port-level entry.
    pub default: Arc<UpstreamPolicy>,
    /// Port-level replacements.
    pub ports: BTreeMap<u16, Arc<UpstreamPolicy>>,
    /// Subset policies.
    pub subsets: BTreeMap<String, SubsetPlan>,
}

/// Policies of one subset.
#[derive(Debug, Clone, Serialize)]
pub struct SubsetPlan {
    /// Policy for ports without a port-level entry.
    pub default: Arc<UpstreamPolicy>,
    /// Port-level replacements.
    pub ports: BTreeMap<u16, Arc<UpstreamPolicy>>,
}

/// Everything about how to talk to one upstream (host, port).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamPolicy {
    /// TLS origination settings.
    pub tls: ClientTlsPlan,
    /// TCP connect timeout.
    #[serde(with = "secs")]
    pub connect_timeout: Duration,
    /// Idle time before a pooled connection is closed (zero: never).
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// Requests per connection (0: unlimited; 1: no keep-alive).
    pub max_requests_per_connection: u32,
    /// Speak HTTP/2 to the upstream (`h2UpgradePolicy: UPGRADE`).
    pub h2: bool,
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            tls: ClientTlsPlan::disabled(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_requests_per_connection: 0,
            h2: false,
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs_f64()))
    }
}

/// HTTP routes of one VirtualService bound to `mesh`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshRoutes {
    /// `kind/namespace/name` and where it was read.
    pub resource: String,
    /// Hosts the routes apply to.
    pub hosts: Vec<HostPattern>,
    /// Routes in order; the first match wins.
    pub http: Vec<HttpRoutePlan>,
}

/// One HTTP route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoutePlan {
    /// Ports the route matches; empty matches every port.
    pub ports: Vec<u16>,
    /// Weighted destinations.
    pub destinations: Vec<RouteDestination>,
    /// Request timeout (`timeout`).
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Duration>,
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::secs::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// A route destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Destination host.
    pub host: String,
    /// Destination port; the request's port when absent.
    pub port: Option<u16>,
    /// DestinationRule subset.
    pub subset: Option<String>,
    /// Weight (all equal when none given).
    pub weight: u32,
}

/// The outcome of routing one request.
#[derive(Debug, Clone)]
pub enum Decision {
    /// A registered service: originate per its policy.
    Registered(Box<Target>),
    /// Not registered and the policy is ALLOW_ANY: forward as is.
    Passthrough {
        /// Host to connect to.
        host: String,
        /// Port to connect to.
        port: u16,
    },
    /// Not registered and the policy is REGISTRY_ONLY.
    Refused {
        /// Why, for the response body and the log.
        reason: String,
    },
}

/// A routed request's upstream.
#[derive(Debug, Clone)]
pub struct Target {
    /// The host the app asked for (drives automatic SNI and SAN checks).
    pub request_host: String,
    /// Destination host after VirtualService routing.
    pub host: String,
    /// The service that declares it.
    pub service: Arc<ServicePlan>,
    /// The declared port the request goes to (after routing).
    pub port: PortPlan,
    /// Pool, timeout and TLS settings.
    pub policy: Arc<UpstreamPolicy>,
    /// The DestinationRule that supplied `policy`, if any.
    pub rule: Option<String>,
    /// The VirtualService that routed the request, if any.
    pub route: Option<String>,
    /// Request timeout from the route.
    pub timeout: Option<Duration>,
    /// Whether a weighted route chose this destination among several (the
    /// same request may go elsewhere next time).
    pub weighted: bool,
}

impl Target {
    /// The SNI to send: `sni` when set, else the request's host.
    pub fn sni(&self) -> &str {
        self.policy.tls.sni.as_deref().unwrap_or(&self.request_host)
    }

    /// Names the server certificate must carry (any one of them):
    /// DestinationRule `subjectAltNames`, else ServiceEntry
    /// `subjectAltNames`, else the request's host.
    pub fn verify_names(&self) -> Vec<String> {
        if !self.policy.tls.subject_alt_names.is_empty() {
            self.policy.tls.subject_alt_names.clone()
        } else if !self.service.subject_alt_names.is_empty() {
            self.service.subject_alt_names.clone()
        } else if let Some(td) = &self.policy.tls.mesh_trust_domain {
            // ISTIO_MUTUAL: any workload of the mesh's trust domain.
            vec![format!("spiffe://{td}/*")]
        } else {
            vec![self.request_host.clone()]
        }
    }

    /// Endpoint addresses with ports, per the service's resolution.
    pub fn endpoints(&self) -> Vec<(String, u16)> {
        match self.service.resolution {
            Resolution::Static | Resolution::Dns | Resolution::DnsRoundRobin
                if !self.service.endpoints.is_empty() =>
            {
                let eps = self.service.endpoints.iter().map(|e| {
                    let port = e
                        .ports
                        .get(&self.port.name)
                        .copied()
                        .unwrap_or(self.port.target_port);
                    (e.address.clone(), port)
                });
                if self.service.resolution == Resolution::DnsRoundRobin {
                    eps.take(1).collect()
                } else {
                    eps.collect()
                }
            }
            // NONE (the address the app resolved), DNS without endpoints and
            // DYNAMIC_DNS all resolve the host itself.
            _ => vec![(self.host.clone(), self.port.target_port)],
        }
    }
}

impl OutboundPlan {
    /// Routes a request for `host:port`. `pick` chooses among weighted
    /// destinations (any counter will do).
    pub fn route(&self, host: &str, port: u16, pick: u64) -> Decision {
        let request_host = normalize(host);
        let mut dest_host = request_host.clone();
        let mut dest_port = port;
        let mut subset = None;
        let mut route_name = None;
        let mut timeout = None;
        let mut weighted = false;
        if let Some(vs) = most_specific(&self.routes, &request_host, |r| &r.hosts)
            && let Some(r) = vs
                .http
                .iter()
                .find(|r| r.ports.is_empty() || r.ports.contains(&port))
            && let Some(d) = super::pick_weighted(&r.destinations, |d| d.weight, pick)
        {
            dest_host = normalize(&d.host);
            // Istio: a destination whose service exposes a single
            // port needs no port; otherwise the request's port.
            dest_port = d.port.unwrap_or_else(|| {
                match most_specific(&self.services, &dest_host, |s| &s.hosts) {
                    Some(s) if s.ports.len() == 1 => s.ports[0].number,
                    _ => port,
                }
            });
            subset = d.subset.clone();
            route_name = Some(vs.resource.clone());
            timeout = r.timeout;
            weighted = r.destinations.len() > 1;
        }
        if let Some(t) = self.registered(&request_host, &dest_host, dest_port, subset.as_deref()) {
            return Decision::Registered(Box::new(Target {
                route: route_name,
                timeout,
                weighted,
                ..t
            }));
        }
        match self.policy {
            OutboundTrafficPolicy::AllowAny => Decision::Passthrough {
                host: dest_host,
                port: dest_port,
            },
            OutboundTrafficPolicy::RegistryOnly => Decision::Refused {
                reason: format!(
                    "{dest_host}:{dest_port} is not in the service registry (no ServiceEntry \
                     declares this host and port) and outboundTrafficPolicy is REGISTRY_ONLY"
                ),
            },
        }
    }

    /// The registered service for `dest_host:dest_port`, with the policy of
    /// the DestinationRule (and `subset`) that applies. `request_host`
    /// drives automatic SNI and SAN checks.
    pub fn registered(
        &self,
        request_host: &str,
        dest_host: &str,
        dest_port: u16,
        subset: Option<&str>,
    ) -> Option<Target> {
        let service = self.service_for(dest_host, Some(dest_port))?;
        let service_port = service
            .ports
            .iter()
            .find(|p| p.number == dest_port)?
            .clone();
        let (policy, rule) =
            match most_specific(&self.rules, dest_host, |r| std::slice::from_ref(&r.host)) {
                Some(rule) => (
                    rule.policy_for(subset, dest_port),
                    Some(rule.resource.clone()),
                ),
                None => (Arc::new(UpstreamPolicy::default()), None),
            };
        Some(Target {
            request_host: request_host.to_string(),
            host: dest_host.to_string(),
            service,
            port: service_port,
            policy,
            rule,
            route: None,
            timeout: None,
            weighted: false,
        })
    }

    /// The most specific ServiceEntry declaring `host` (on `port` when
    /// given); the first loaded wins ties.
    pub fn service_for(&self, host: &str, port: Option<u16>) -> Option<Arc<ServicePlan>> {
        let declared: Vec<&Arc<ServicePlan>> = self
            .services
            .iter()
            .filter(|s| port.is_none_or(|p| s.ports.iter().any(|sp| sp.number == p)))
            .collect();
        most_specific(declared, host, |s| &s.hosts).cloned()
    }
}

impl RulePlan {
    fn policy_for(&self, subset: Option<&str>, port: u16) -> Arc<UpstreamPolicy> {
        if let Some(s) = subset.and_then(|s| self.subsets.get(s)) {
            return s.ports.get(&port).unwrap_or(&s.default).clone();
        }
        self.ports.get(&port).unwrap_or(&self.default).clone()
    }
}

// === compile ===

pub(crate) fn compile(
    config: &Config,
    bootstrap: &Bootstrap,
    diag: &mut Diagnostics,
) -> OutboundPlan {
    // A Sidecar's outboundTrafficPolicy overrides the mesh-wide setting.
    let sidecar_policy = config
        .sidecars
        .iter()
        .find_map(|s| s.spec.outbound_traffic_policy.as_ref())
        // An absent mode is the proto's zero value, REGISTRY_ONLY.
        .map(|p| p.mode.unwrap_or(OutboundTrafficPolicy::RegistryOnly));
    OutboundPlan {
        policy: sidecar_policy.unwrap_or(bootstrap.outbound_traffic_policy),
        services: config
            .service_entries
            .iter()
            .filter_map(|se| compile_service(se, diag))
            .map(Arc::new)
            .collect(),
        rules: super::rule::compile(config, diag),
        routes: config
            .virtual_services
            .iter()
            .filter_map(|vs| compile_routes(vs, diag))
            .collect(),
    }
}

pub(crate) fn port_number(
    v: Option<u32>,
    source: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<u16> {
    match v {
        Some(n) if (1..=65535).contains(&n) => Some(n as u16),
        Some(n) => {
            diag.error(source, field, format!("{n} is not a valid port (1-65535)"));
            None
        }
        None => {
            diag.error(source, field, "required");
            None
        }
    }
}

const PROTOCOLS: [&str; 9] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP",
];

fn compile_service(
    se: &Resource<crate::config::service_entry::ServiceEntrySpec>,
    diag: &mut Diagnostics,
) -> Option<ServicePlan> {
    let src = &se.source;
    let spec = &se.spec;
    let before = diag.errors.len();
    if spec.hosts.is_empty() {
        diag.error(src, "spec.hosts", "at least one host is required");
    }
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(HostPattern::Any) => diag.error(
                src,
                format!("spec.hosts[{i}]"),
                "\"*\" is not allowed in a ServiceEntry; use a domain wildcard such as \"*.example.com\"",
            ),
            Ok(p) => hosts.push(p),
            Err(e) => diag.error(src, format!("spec.hosts[{i}]"), e),
        }
    }
    let mut ports = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let Some(number) = port_number(p.number, src, &format!("{field}.number"), diag) else {
            continue;
        };
        if !seen.insert(number) {
            diag.error(
                src,
                format!("{field}.number"),
                format!("port {number} is declared twice"),
            );
        }
        let protocol = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
        if !PROTOCOLS.contains(&protocol.as_str()) {
            diag.error(
                src,
                format!("{field}.protocol"),
                format!(
                    "{:?}: expected one of {}",
                    p.protocol.clone().unwrap_or_default(),
                    PROTOCOLS.join(", ")
                ),
            );
        }
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            diag.error(src, format!("{field}.name"), "required");
        }
        let target_port = match p.target_port {
            None | Some(0) => number,
            Some(t) => {
                port_number(Some(t), src, &format!("{field}.targetPort"), diag).unwrap_or(number)
            }
        };
        ports.push(PortPlan {
            number,
            name,
            protocol,
            target_port,
        });
    }
    if spec.ports.is_empty() {
        diag.error(src, "spec.ports", "at least one port is required");
    }
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    let wildcard = hosts.iter().any(HostPattern::is_wildcard);
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => diag.error(
            src,
            "spec.endpoints",
            "endpoints cannot be set with resolution NONE; use STATIC or DNS",
        ),
        Resolution::Static if spec.endpoints.is_empty() => diag.error(
            src,
            "spec.endpoints",
            "resolution STATIC needs endpoints (workloadSelector is not supported)",
        ),
        Resolution::Dns | Resolution::DnsRoundRobin if wildcard && spec.endpoints.is_empty() => diag.error(
            src,
            "spec.resolution",
            "wildcard hosts cannot be resolved with DNS; use DYNAMIC_DNS or NONE, or list endpoints",
        ),
        Resolution::DnsRoundRobin if spec.endpoints.len() > 1 => diag.error(
            src,
            "spec.endpoints",
            "resolution DNS_ROUND_ROBIN allows at most one endpoint",
        ),
        Resolution::DynamicDns if !wildcard => diag.error(
            src,
            "spec.resolution",
            "DYNAMIC_DNS is for wildcard hosts only; use DNS for exact hosts",
        ),
        _ => {}
    }
    if spec.workload_selector.is_some() {
        diag.error(
            src,
            "spec.workloadSelector",
            "not supported (no Kubernetes pod registry); list endpoints instead",
        );
    }
    let mut endpoints = Vec::new();
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let field = format!("spec.endpoints[{i}]");
        let address = ep.address.clone().unwrap_or_default();
        if address.is_empty() {
            diag.error(src, format!("{field}.address"), "required");
            continue;
        }
        if address.starts_with("unix://") {
            diag.error(
                src,
                format!("{field}.address"),
                "unix domain socket endpoints are not supported yet",
            );
            continue;
        }
        if resolution == Resolution::Static && address.parse::<std::net::IpAddr>().is_err() {
            diag.error(
                src,
                format!("{field}.address"),
                format!("{address:?}: resolution STATIC needs IP addresses; use DNS for names"),
            );
        }
        let mut ep_ports = BTreeMap::new();
        for (name, p) in &ep.ports {
            if !ports.iter().any(|sp| &sp.name == name) {
                diag.error(
                    src,
                    format!("{field}.ports.{name}"),
                    "no port with this name in spec.ports",
                );
            }
            if let Some(n) = port_number(Some(*p), src, &format!("{field}.ports.{name}"), diag) {
                ep_ports.insert(name.clone(), n);
            }
        }
        endpoints.push(EndpointPlan {
            address,
            ports: ep_ports,
            weight: ep.weight.unwrap_or(1).max(1),
        });
    }
    (diag.errors.len() == before).then(|| ServicePlan {
        resource: src.to_string(),
        hosts,
        ports,
        resolution,
        location: spec.location.unwrap_or(Location::MeshExternal),
        endpoints,
        subject_alt_names: spec.subject_alt_names.clone(),
        addresses: spec.addresses.clone(),
    })
}

fn compile_routes(
    vs: &Resource<crate::config::virtual_service::VirtualServiceSpec>,
    diag: &mut Diagnostics,
) -> Option<MeshRoutes> {
    let src = &vs.source;
    let spec = &vs.spec;
    let mesh_bound = spec.gateways.is_empty() || spec.gateways.iter().any(|g| g == "mesh");
    if !mesh_bound {
        return None; // gateway-only: compiled by `plan::inbound`
    }
    let before = diag.errors.len();
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => hosts.push(p),
            Err(e) => diag.error(src, format!("spec.hosts[{i}]"), e),
        }
    }
    if hosts.is_empty() {
        diag.error(src, "spec.hosts", "at least one host is required");
    }
    if !spec.tls.is_empty() || !spec.tcp.is_empty() {
        diag.warn(
            src,
            "spec.tls/spec.tcp",
            "TLS and TCP routes are not served yet; CONNECT traffic follows the ServiceEntry",
        );
    }
    let mut http = Vec::new();
    for (i, r) in spec.http.iter().enumerate() {
        let field = format!("spec.http[{i}]");
        let mut ports = Vec::new();
        let mut mesh_match = r.matches.is_empty();
        for (j, m) in r.matches.iter().enumerate() {
            let mfield = format!("{field}.match[{j}]");
            if !m.gateways.is_empty() && !m.gateways.iter().any(|g| g == "mesh") {
                continue; // this condition is for a gateway
            }
            mesh_match = true;
            let typed = [
                ("uri", m.uri.is_some()),
                ("scheme", m.scheme.is_some()),
                ("method", m.method.is_some()),
                ("authority", m.authority.is_some()),
                ("headers", !m.headers.is_empty()),
                ("queryParams", !m.query_params.is_empty()),
                ("withoutHeaders", !m.without_headers.is_empty()),
                ("ignoreUriCase", m.ignore_uri_case.is_some()),
            ];
            let unsupported = typed
                .iter()
                .filter(|(_, set)| *set)
                .map(|(k, _)| k.to_string())
                .chain(m.other.keys().filter(|k| *k != "name").cloned());
            for k in unsupported {
                diag.error(
                    src,
                    format!("{mfield}.{k}"),
                    "not supported for mesh routes yet (only port)",
                );
            }
            match m.port {
                Some(p) => ports.extend(port_number(Some(p), src, &format!("{mfield}.port"), diag)),
                None => ports.clear(),
            }
            if m.port.is_none() {
                // one unrestricted condition makes the route match every port
                ports.clear();
                break;
            }
        }
        if !mesh_match {
            continue;
        }
        let timeout = match r.timeout.as_deref().map(duration::parse) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => {
                diag.error(src, format!("{field}.timeout"), e);
                None
            }
            None => None,
        };
        for (k, set) in [
            ("rewrite", r.rewrite.is_some()),
            ("headers", r.headers.is_some()),
        ] {
            if set {
                diag.error(
                    src,
                    format!("{field}.{k}"),
                    "not supported for mesh routes yet",
                );
            }
        }
        for k in r.other.keys() {
            if k == "retries" {
                diag.warn(
                    src,
                    &format!("{field}.retries"),
                    "not implemented yet; requests are not retried",
                );
            } else {
                diag.error(
                    src,
                    format!("{field}.{k}"),
                    "not supported for mesh routes yet",
                );
            }
        }
        let mut destinations = Vec::new();
        for (j, d) in r.route.iter().enumerate() {
            let dfield = format!("{field}.route[{j}].destination");
            let Some(dest) = &d.destination else {
                diag.error(src, dfield, "required");
                continue;
            };
            let host = dest.host.clone().unwrap_or_default();
            if let Err(e) = HostPattern::parse(&host) {
                diag.error(src, format!("{dfield}.host"), e);
            }
            if d.headers.is_some() {
                diag.error(
                    src,
                    format!("{field}.route[{j}].headers"),
                    "not supported for mesh routes yet",
                );
            }
            let port = match dest.port.as_ref().and_then(|p| p.number) {
                Some(n) => port_number(Some(n), src, &format!("{dfield}.port.number"), diag),
                None => None,
            };
            destinations.push(RouteDestination {
                host,
                port,
                subset: dest.subset.clone(),
                weight: d.weight.unwrap_or(0),
            });
        }
        if destinations.is_empty() {
            diag.error(src, format!("{field}.route"), "at least one destination is required (redirects and direct responses are not supported yet)");
        }
        http.push(HttpRoutePlan {
            ports,
            destinations,
            timeout,
        });
    }
    (diag.errors.len() == before).then(|| MeshRoutes {
        resource: src.to_string(),
        hosts,
        http,
    })
}
