//! Outbound routing: which upstream a request from the local app goes to,
//! and with which TLS and pool settings.
//!
//! Istio's rules, applied here once so the runtime only looks up:
//! - ServiceEntry hosts: exact beats wildcard, longer wildcard beats shorter;
//!   a request counts as registered only on a declared port.
//! - VirtualService bound to `mesh` (the most specific one for the host):
//!   HTTP routes match as gateway routes do (`plan::route`: uri, scheme,
//!   method, authority, headers, queryParams, withoutHeaders, port) on the
//!   request after path normalisation; the first match wins and
//!   `route.destination.{host,port}` rewrites the destination (the classic
//!   80 → 443 rewrite for origination). A VirtualService with routes for
//!   the request's port of which none matches answers 404, as Envoy does for
//!   a virtual host without a matching route; one without routes for the
//!   port leaves the request to the registry (Istio builds no virtual host
//!   from it there).
//! - CONNECT tunnels: `tls` routes steer a tunnel whose first bytes are a
//!   ClientHello, by SNI (and port, `destinationSubnets`); with TLS routes
//!   for the port and none matching, the tunnel is refused (Envoy: no
//!   filter chain). `tcp` routes steer the other tunnels (all of them on a
//!   port without TLS routes, as on Istio's TCP ports, so a protocol whose
//!   server speaks first is not held up) by port and `destinationSubnets`;
//!   none matching leaves the tunnel to the HTTP routes that need no
//!   request, then the registry.
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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::host::{HostPattern, most_specific, normalize};
use super::route::RetryPlan;
use super::tls::{ClientTlsPlan, TlsMode};
use crate::bootstrap::OutboundTrafficPolicy;
use crate::config::service_entry::{Location, Resolution};
use net::IpNetwork;

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
    /// `outboundTlsPolicy`: whether plain text may leave the pod
    /// ([`OutboundPlan::plaintext_allowed`]).
    pub tls_policy: tls_policy::TlsPolicyPlan,
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
    /// Declared addresses (VIPs and CIDR blocks): what a captured
    /// connection's original destination is matched against
    /// ([`OutboundPlan::service_for_address`]).
    pub addresses: Vec<IpNetwork>,
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
    /// Labels (DestinationRule subsets select endpoints by them).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
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
    /// The endpoints it selects: those carrying all of these labels.
    pub labels: BTreeMap<String, String>,
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

/// Istio's default for each circuit-breaker threshold (pilot's
/// `getDefaultCircuitBreakerThresholds`: `math.MaxUint32`, not Envoy's
/// 1024, which would refuse the 1,025th concurrent request to a
/// destination). Upstream connections and requests stay bounded by the
/// downstream ones that cause them: each request in flight holds at most
/// one upstream connection, and downstream connections and streams are
/// limited per listener.
pub const DEFAULT_CIRCUIT_LIMIT: u32 = u32::MAX;

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
    /// The host's mesh VirtualService has routes for this port and none
    /// matched (Envoy's 404 `NR`).
    NoRoute {
        /// The VirtualService, `kind/namespace/name` and where it was read.
        route: String,
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
    /// The DestinationRule subset the route names, if any.
    pub subset: Option<Subset>,
}

/// A route's subset, as endpoints are picked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subset {
    /// Defined: endpoints carrying all of these labels.
    Labels(BTreeMap<String, String>),
    /// No DestinationRule defines it: it selects nothing, as in Istio (its
    /// cluster does not exist), never every endpoint.
    Undefined(String),
}

impl Subset {
    fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Subset::Labels(want) => want.iter().all(|(k, v)| labels.get(k) == Some(v)),
            Subset::Undefined(_) => false,
        }
    }
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
                let selected =
                    |e: &&EndpointPlan| self.subset.as_ref().is_none_or(|s| s.selects(&e.labels));
                let eps = self.service.endpoints.iter().filter(selected).map(|e| {
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
            // DNS without endpoints has one, the host, without labels: a
            // subset with labels selects nothing (Istio: no healthy
            // upstream).
            Resolution::Dns | Resolution::DnsRoundRobin
                if self
                    .subset
                    .as_ref()
                    .is_some_and(|s| !s.selects(&BTreeMap::new())) =>
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
    /// Routes traffic for `host:port` knowing nothing of a request: what a
    /// CONNECT tunnel follows. Only HTTP routes whose conditions are the
    /// port alone (or none) can match; a VirtualService with routes for the
    /// port of which none can gives [`Decision::NoRoute`]. `pick` chooses
    /// among weighted destinations (any counter will do).
    pub fn route(&self, host: &str, port: u16, pick: u64) -> Decision {
        let routing = self.select_connection(host, port, pick);
        self.decide(host, port, &routing)
    }

    /// Routes one HTTP request from the app by everything mesh routes match
    /// on. `pick` chooses among weighted destinations.
    pub fn route_request(&self, facts: &RequestFacts<'_>, pick: u64) -> Decision {
        let routing = self.select(facts, pick);
        self.decide(facts.host, facts.request.port, &routing)
    }

    /// Where traffic for `host:port` goes once the mesh routes have chosen
    /// (second step of [`OutboundPlan::route`] and
    /// [`OutboundPlan::route_request`]).
    pub fn decide(&self, host: &str, port: u16, routing: &MeshRouting<'_>) -> Decision {
        let mut request_host = normalize(host);
        let mut dest_host = request_host.clone();
        let mut dest_port = port;
        let mut subset = None;
        let mut route_name = None;
        let mut timeout = None;
        let mut retries = None;
        let mut weighted = false;
        match routing {
            MeshRouting::Unrouted => {}
            MeshRouting::NoMatch(vs) => {
                return Decision::NoRoute {
                    route: vs.resource.clone(),
                };
            }
            MeshRouting::Routed(c) => {
                dest_host.clone_from(&c.dest.host);
                dest_port = self.destination_port(&dest_host, c.dest.port, port);
                subset.clone_from(&c.dest.subset);
                route_name = Some(c.vs.resource.clone());
                weighted = c.weighted;
                if let Some((r, _)) = c.http {
                    timeout = r.timeout;
                    retries = Some(r.retries.clone());
                    // The upstream sees the rewritten authority: SNI and
                    // certificate names follow it, as Envoy's auto_sni does.
                    if let Some(a) = r.rewrite.as_ref().and_then(|rw| rw.authority.as_deref()) {
                        let end = super::route::port_start(a).unwrap_or(a.len());
                        request_host =
                            normalize(a[..end].trim_start_matches('[').trim_end_matches(']'));
                    }
                }
            }
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

    /// Istio: a route destination without a port takes its service's port
    /// when the service has exactly one, else the port the app addressed
    /// (the sidecar's listener port).
    fn destination_port(&self, dest_host: &str, port: Option<u16>, request_port: u16) -> u16 {
        port.unwrap_or_else(|| match self.service_for(dest_host, None) {
            Some(s) if s.ports.len() == 1 => s.ports[0].number,
            _ => request_port,
        })
    }

    /// The ServiceEntry whose `addresses` hold `ip` and that declares
    /// `port`: the most specific network wins (a VIP over a block, a longer
    /// prefix over a shorter), the first loaded among equals. For traffic
    /// captured by its original destination.
    pub fn service_for_address(&self, ip: IpAddr, port: u16) -> Option<Arc<ServicePlan>> {
        let mut best: Option<(u8, &Arc<ServicePlan>)> = None;
        for s in &self.services {
            if !s.ports.iter().any(|p| p.number == port) {
                continue;
            }
            let bits = s
                .addresses
                .iter()
                .filter(|n| n.contains(ip))
                .map(IpNetwork::prefix_len)
                .max();
            if let Some(bits) = bits
                && best.is_none_or(|(b, _)| bits > b)
            {
                best = Some((bits, s));
            }
        }
        best.map(|(_, s)| s.clone())
    }

    /// For traffic captured on its way to `ip:port` that names `host` (a
    /// Host header or SNI), the host to route by when it is not `host`
    /// itself: a name the registry knows on `port` (a ServiceEntry or a
    /// mesh VirtualService) is routed as named; otherwise the first host of
    /// the ServiceEntry whose `addresses` hold `ip`, as Envoy matches a
    /// listener by destination IP. `None`: route by `host` (or, without
    /// one, by nothing: Istio's PassthroughCluster / BlackHoleCluster).
    pub fn captured_host(&self, host: Option<&str>, ip: IpAddr, port: u16) -> Option<String> {
        if let Some(h) = host {
            let h = normalize(h);
            if self.service_for(&h, Some(port)).is_some() || self.mesh_routes(&h).is_some() {
                return None;
            }
        }
        let service = self.service_for_address(ip, port)?;
        // A wildcard names no host to connect to.
        let named = service
            .hosts
            .iter()
            .map(ToString::to_string)
            .find(|h| !h.starts_with('*'))?;
        Some(named)
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
            subset: None,
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
        let found = self.rule_for(dest_host);
        let (policy, rule) = match found {
            Some(rule) => (
                rule.policy_for(subset, dest_port),
                Some(rule.resource.clone()),
            ),
            None => (Arc::new(UpstreamPolicy::default()), None),
        };
        let subset = subset.map(|name| match found.and_then(|r| r.subsets.get(name)) {
            Some(s) => Subset::Labels(s.labels.clone()),
            None => Subset::Undefined(name.to_string()),
        });
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
            subset,
        })
    }

    /// Whether plain text from the app may leave the pod for `host:port`
    /// (the host the app addressed: a name or an IP; any case) under
    /// `outboundTlsPolicy`. Ask it only for traffic that would go out in
    /// plain text: TLS a DestinationRule originates and the app's own TLS
    /// are always allowed. `Ok` under ALLOW or when an exception lists it;
    /// `Err` (`plaintext_refused`) says what to change.
    pub fn plaintext_allowed(
        &self,
        host: &str,
        port: u16,
    ) -> Result<tls_policy::PlaintextGrant, tls_policy::PlaintextRefusal> {
        self.tls_policy.plaintext_allowed(host, port)
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
mod mesh;
mod select;
pub use mesh::{L4MatchPlan, L4RoutePlan, MeshRoutes, MeshRouting, RequestFacts, RouteChoice};
pub mod net;
mod service;
pub mod tls_policy;
