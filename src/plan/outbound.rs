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
//!   `REGISTRY_ONLY` refuses them. One departure from Istio: under
//!   `ALLOW_ANY`, a host no ServiceEntry declares but whose DestinationRule
//!   asks for TLS on that port is reached over TLS as the rule says (Istio's
//!   sidecar would send it plain text through `PassthroughCluster`); meshgate
//!   never sends a host plain text that a rule asks to protect.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::host::{HostPattern, most_specific, normalize};
use super::route::RetryPlan;
use super::tls::{ClientTlsPlan, TlsMode};
use super::weighted::pick_weighted;
use crate::bootstrap::OutboundTrafficPolicy;
use crate::config::service_entry::{Location, Resolution};

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
    /// Labels of the workloads `workloadSelector` picks as endpoints
    /// instead: meshgate has no workload registry, so a STATIC or DNS entry
    /// with a selector has no endpoints and its requests fail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload_selector: Option<BTreeMap<String, String>>,
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
    /// Connection and request limits (Envoy's circuit breakers).
    pub limits: PoolLimits,
    /// Endpoint ejection; `None` without `outlierDetection`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outlier: Option<OutlierPlan>,
}

/// Envoy's default for each circuit-breaker threshold.
pub const DEFAULT_CIRCUIT_LIMIT: u32 = 1024;

/// `connectionPool` limits of one destination, shared by every worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolLimits {
    /// `tcp.maxConnections`: upstream connections open at once.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`: requests waiting for a connection.
    pub http1_max_pending_requests: u32,
    /// `http.http2MaxRequests`: requests in flight at once.
    pub http2_max_requests: u32,
}

impl Default for PoolLimits {
    fn default() -> Self {
        PoolLimits {
            max_connections: DEFAULT_CIRCUIT_LIMIT,
            http1_max_pending_requests: DEFAULT_CIRCUIT_LIMIT,
            http2_max_requests: DEFAULT_CIRCUIT_LIMIT,
        }
    }
}

/// `outlierDetection` with Istio's defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutlierPlan {
    /// Consecutive 5xx (and connect failures) before ejection; 0: off.
    pub consecutive_5xx_errors: u32,
    /// Consecutive 502/503/504 (and connect failures) before ejection; 0: off.
    pub consecutive_gateway_errors: u32,
    /// How often ejections are reconsidered.
    #[serde(with = "secs")]
    pub interval: Duration,
    /// Ejection time, multiplied by the times the endpoint was ejected.
    #[serde(with = "secs")]
    pub base_ejection_time: Duration,
    /// Percent of endpoints that may be out at once (at least one may).
    pub max_ejection_percent: u32,
}

impl Default for OutlierPlan {
    fn default() -> Self {
        OutlierPlan {
            consecutive_5xx_errors: 5,
            consecutive_gateway_errors: 0,
            interval: Duration::from_secs(10),
            base_ejection_time: Duration::from_secs(30),
            max_ejection_percent: 10,
        }
    }
}

impl Default for UpstreamPolicy {
    fn default() -> Self {
        UpstreamPolicy {
            tls: ClientTlsPlan::disabled(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_requests_per_connection: 0,
            h2: false,
            limits: PoolLimits::default(),
            outlier: None,
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
    /// Retry policy (Istio's default when the route is silent).
    pub retries: Arc<RetryPlan>,
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
    /// Retry policy from the route (Istio's default without one).
    pub retries: Arc<RetryPlan>,
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
    /// `subjectAltNames`, else (ISTIO_MUTUAL) the mesh's trust domain, else
    /// the rule's explicit `sni` (the name meshgate asks the server for, as
    /// Envoy's `auto_sni_san_validation` checks it; Istio leaves the name
    /// unchecked there), else the request's host (Istio's
    /// `auto_san_validation`).
    pub fn verify_names(&self) -> Vec<String> {
        if !self.policy.tls.subject_alt_names.is_empty() {
            self.policy.tls.subject_alt_names.clone()
        } else if !self.service.subject_alt_names.is_empty() {
            self.service.subject_alt_names.clone()
        } else if let Some(td) = &self.policy.tls.mesh_trust_domain {
            // ISTIO_MUTUAL: any workload of the mesh's trust domain.
            vec![format!("spiffe://{td}/*")]
        } else if let Some(sni) = &self.policy.tls.sni {
            vec![sni.clone()]
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
            // STATIC without endpoints, and DNS whose endpoints are the
            // workloads a selector picks: none (Istio: no healthy upstream).
            Resolution::Static => Vec::new(),
            Resolution::Dns | Resolution::DnsRoundRobin
                if self.service.workload_selector.is_some() =>
            {
                Vec::new()
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
        let mut retries = None;
        let mut weighted = false;
        if let Some(vs) = most_specific(&self.routes, &request_host, |r| &r.hosts)
            && let Some(r) = vs
                .http
                .iter()
                .find(|r| r.ports.is_empty() || r.ports.contains(&port))
            && let Some(d) = pick_weighted(&r.destinations, |d| d.weight, pick)
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
            retries = Some(r.retries.clone());
            weighted = r.destinations.len() > 1;
        }
        if let Some(t) = self.registered(&request_host, &dest_host, dest_port, subset.as_deref()) {
            return Decision::Registered(Box::new(Target {
                route: route_name,
                timeout,
                retries: retries.unwrap_or(t.retries),
                weighted,
                ..t
            }));
        }
        match self.policy {
            OutboundTrafficPolicy::AllowAny => {
                match self.rule_only(&request_host, &dest_host, dest_port, subset.as_deref()) {
                    Some(t) => Decision::Registered(Box::new(Target {
                        route: route_name,
                        timeout,
                        retries: retries.unwrap_or(t.retries),
                        weighted,
                        ..t
                    })),
                    None => Decision::Passthrough {
                        host: dest_host,
                        port: dest_port,
                    },
                }
            }
            OutboundTrafficPolicy::RegistryOnly => {
                // As in Istio: a DestinationRule does not register a host.
                let rule = self
                    .rule_for(&dest_host)
                    .map(|r| {
                        format!(
                            "; {} applies to this host but a DestinationRule does not declare \
                             it, add a ServiceEntry",
                            r.resource
                        )
                    })
                    .unwrap_or_default();
                Decision::Refused {
                    reason: format!(
                        "{dest_host}:{dest_port} is not in the service registry (no ServiceEntry \
                         declares this host and port) and outboundTrafficPolicy is REGISTRY_ONLY{rule}"
                    ),
                }
            }
        }
    }

    /// The DestinationRule for `host`, most specific first.
    pub fn rule_for(&self, host: &str) -> Option<&Arc<RulePlan>> {
        most_specific(&self.rules, host, |r| std::slice::from_ref(&r.host))
    }

    /// A host no ServiceEntry declares (on `dest_port`) whose
    /// DestinationRule originates TLS on that port (for `subset`): the
    /// target that honours the rule, resolved by DNS at `dest_host:dest_port`
    /// (no `targetPort` without a ServiceEntry). `None` when no rule applies
    /// or the rule's policy for the port is plain text.
    ///
    /// Istio's sidecar would send such a request plain text
    /// (`PassthroughCluster`) and its gateway would answer 503; meshgate
    /// originates TLS as the rule says instead, and `validate` warns.
    pub fn rule_only(
        &self,
        request_host: &str,
        dest_host: &str,
        dest_port: u16,
        subset: Option<&str>,
    ) -> Option<Target> {
        let rule = self.rule_for(dest_host)?;
        let policy = rule.policy_for(subset, dest_port);
        if policy.tls.mode == TlsMode::Disable {
            return None;
        }
        let port = PortPlan {
            number: dest_port,
            name: String::new(),
            protocol: "HTTP".into(),
            target_port: dest_port,
        };
        let service = Arc::new(ServicePlan {
            resource: format!("no ServiceEntry ({} originates TLS)", rule.resource),
            // The rule's host: a bounded metric label, even for a wildcard.
            hosts: vec![rule.host.clone()],
            ports: vec![port.clone()],
            resolution: Resolution::Dns,
            location: Location::MeshExternal,
            endpoints: Vec::new(),
            workload_selector: None,
            subject_alt_names: Vec::new(),
            addresses: Vec::new(),
        });
        Some(Target {
            request_host: request_host.to_string(),
            host: dest_host.to_string(),
            service,
            port,
            policy,
            rule: Some(rule.resource.clone()),
            route: None,
            timeout: None,
            retries: default_retries(),
            weighted: false,
        })
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
        let (policy, rule) = match self.rule_for(dest_host) {
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
            retries: default_retries(),
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

/// Istio's default retry policy, one `Arc` for every target without a
/// route of its own.
fn default_retries() -> Arc<RetryPlan> {
    static DEFAULT: std::sync::LazyLock<Arc<RetryPlan>> =
        std::sync::LazyLock::new(|| Arc::new(RetryPlan::istio_default()));
    DEFAULT.clone()
}

impl RulePlan {
    fn policy_for(&self, subset: Option<&str>, port: u16) -> Arc<UpstreamPolicy> {
        if let Some(s) = subset.and_then(|s| self.subsets.get(s)) {
            return s.ports.get(&port).unwrap_or(&s.default).clone();
        }
        self.ports.get(&port).unwrap_or(&self.default).clone()
    }
}

pub(super) mod compile;
mod service;
