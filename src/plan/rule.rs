//! DestinationRule compilation: the policy for every (subset, port) pair,
//! merged the way Istio's `MergeTrafficPolicy` does.
//!
//! For a port: a matching top-level `portLevelSettings` entry replaces the
//! top-level components entirely (omitted ones take defaults). For a subset:
//! that result, then the subset's own components where set, then the
//! subset's matching port entry replacing everything. Each block is
//! compiled once, so a problem is reported once.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::diagnostics::Diagnostics;
use super::host::HostPattern;
use super::outbound::{OutlierPlan, PoolLimits, RulePlan, ServicePlan, SubsetPlan, UpstreamPolicy};
use super::port::port_number;
use super::tls::{ClientTlsPlan, TlsMode};
use super::{duration, tls};
use crate::bootstrap::OutboundTrafficPolicy;
use crate::config::destination_rule::{
    ClientTls, ConnectionPool, H2UpgradePolicy, OutlierDetection, TrafficPolicy,
};
use crate::config::{Config, Source};

/// Compiled connection pool settings (defaults applied).
#[derive(Debug, Clone, PartialEq)]
struct Pool {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_requests_per_connection: u32,
    h2: bool,
    limits: PoolLimits,
}

impl Default for Pool {
    fn default() -> Self {
        let d = UpstreamPolicy::default();
        Pool {
            connect_timeout: d.connect_timeout,
            idle_timeout: d.idle_timeout,
            max_requests_per_connection: d.max_requests_per_connection,
            h2: d.h2,
            limits: d.limits,
        }
    }
}

/// The components of one policy block; `None` = not set in that block.
#[derive(Debug, Clone, Default)]
struct Components {
    tls: Option<ClientTlsPlan>,
    pool: Option<Pool>,
    outlier: Option<OutlierPlan>,
}

impl Components {
    /// `over`'s set components replace `self`'s.
    fn overlay(&self, over: &Components) -> Components {
        Components {
            tls: over.tls.clone().or_else(|| self.tls.clone()),
            pool: over.pool.clone().or_else(|| self.pool.clone()),
            outlier: over.outlier.or(self.outlier),
        }
    }

    fn policy(&self) -> Arc<UpstreamPolicy> {
        let tls = self.tls.clone().unwrap_or_else(ClientTlsPlan::disabled);
        let pool = self.pool.clone().unwrap_or_default();
        Arc::new(UpstreamPolicy {
            // HTTP/2 to upstreams is negotiated by ALPN, so only over TLS.
            h2: pool.h2 && tls.mode != TlsMode::Disable,
            tls,
            connect_timeout: pool.connect_timeout,
            idle_timeout: pool.idle_timeout,
            max_requests_per_connection: pool.max_requests_per_connection,
            limits: pool.limits,
            outlier: self.outlier,
        })
    }
}

/// A compiled TrafficPolicy: its own components and its port entries.
struct Block {
    own: Components,
    ports: BTreeMap<u16, Components>,
}

/// Compiles every DestinationRule; `services` (the compiled ServiceEntries)
/// and `policy` (the outbound traffic policy in force) say what happens to a
/// rule whose host no ServiceEntry declares, which is warned about.
pub(crate) fn compile(
    config: &Config,
    services: &[Arc<ServicePlan>],
    policy: OutboundTrafficPolicy,
    diag: &mut Diagnostics,
) -> Vec<Arc<RulePlan>> {
    let mut rules: Vec<Arc<RulePlan>> = Vec::new();
    let declared = Declared::new(services);
    let mut by_host: std::collections::HashMap<HostPattern, usize> =
        std::collections::HashMap::new();
    for dr in &config.destination_rules {
        let src = &dr.source;
        let before = diag.errors.len();
        let host = match dr.spec.host.as_deref().map(HostPattern::parse_domain) {
            Some(Ok(h)) => Some(h),
            Some(Err(e)) => {
                diag.error(src, "spec.host", e.to_string());
                None
            }
            None => {
                diag.error(src, "spec.host", "required");
                None
            }
        };
        let empty = TrafficPolicy::default();
        let top = compile_block(
            dr.spec.traffic_policy.as_ref().unwrap_or(&empty),
            src,
            "spec.trafficPolicy",
            diag,
        );
        // Ports named anywhere get their own merged policy.
        let default = top.own.policy();
        let ports: BTreeMap<u16, Arc<UpstreamPolicy>> =
            top.ports.iter().map(|(p, c)| (*p, c.policy())).collect();
        let mut subsets = BTreeMap::new();
        for (i, s) in dr.spec.subsets.iter().enumerate() {
            let field = format!("spec.subsets[{i}]");
            let Some(name) = s.name.clone().filter(|n| !n.is_empty()) else {
                diag.error(src, format!("{field}.name"), "required");
                continue;
            };
            let Some(tp) = &s.traffic_policy else {
                subsets.insert(
                    name,
                    SubsetPlan {
                        labels: s.labels.clone(),
                        default: default.clone(),
                        ports: ports.clone(),
                    },
                );
                continue;
            };
            let sub = compile_block(tp, src, &format!("{field}.trafficPolicy"), diag);
            let mut sports = BTreeMap::new();
            for port in top.ports.keys().chain(sub.ports.keys()) {
                let merged = match sub.ports.get(port) {
                    Some(c) => c.clone(),
                    None => top.ports.get(port).unwrap_or(&top.own).overlay(&sub.own),
                };
                sports.insert(*port, merged.policy());
            }
            subsets.insert(
                name,
                SubsetPlan {
                    labels: s.labels.clone(),
                    default: top.own.overlay(&sub.own).policy(),
                    ports: sports,
                },
            );
        }
        let Some(host) = host else { continue };
        if diag.errors.len() != before {
            continue;
        }
        if let Some(prev) = by_host.get(&host).map(|&i| &rules[i]) {
            diag.warn(
                src,
                "spec.host",
                format!(
                    "{host} already has a DestinationRule ({}); this one is ignored",
                    prev.resource
                ),
            );
            continue;
        }
        let rule = RulePlan {
            resource: src.to_string(),
            host,
            default,
            ports,
            subsets,
        };
        if !declared.covers(&rule.host) {
            let what = if originates_tls(&rule) {
                unregistered(&rule.host, policy)
            } else {
                unused(&rule.host)
            };
            diag.warn(
                src,
                "spec.host",
                format!(
                    "IST0174: The host {} defined in the DestinationRule does not match any \
                     services in the mesh: {what}",
                    rule.host
                ),
            );
        }
        by_host.insert(rule.host.clone(), rules.len());
        rules.push(Arc::new(rule));
    }
    rules
}

/// Whether any (subset, port) policy of `rule` originates TLS.
fn originates_tls(rule: &RulePlan) -> bool {
    let tls = |p: &Arc<UpstreamPolicy>| p.tls.mode != TlsMode::Disable;
    tls(&rule.default)
        || rule.ports.values().any(tls)
        || rule
            .subsets
            .values()
            .any(|s| tls(&s.default) || s.ports.values().any(tls))
}

/// The ServiceEntry hosts, indexed so that each rule's lookup does not
/// scan every service (10,000 rules against 10,000 services).
struct Declared<'a> {
    exact: std::collections::HashSet<&'a str>,
    /// Wildcards and `*`, usually few.
    others: Vec<&'a HostPattern>,
}

impl<'a> Declared<'a> {
    fn new(services: &'a [Arc<ServicePlan>]) -> Declared<'a> {
        let mut exact = std::collections::HashSet::new();
        let mut others = Vec::new();
        for h in services.iter().flat_map(|s| &s.hosts) {
            match h {
                HostPattern::Exact(name) => {
                    exact.insert(name.as_str());
                }
                other => others.push(other),
            }
        }
        Declared { exact, others }
    }

    /// Whether a ServiceEntry declares every host `host` stands for (an
    /// exact host it matches, or a wildcard at least as broad as `host`).
    fn covers(&self, host: &HostPattern) -> bool {
        match host {
            HostPattern::Exact(h) => {
                self.exact.contains(h.as_str()) || self.others.iter().any(|se| se.matches(h))
            }
            HostPattern::Wildcard(suffix) => self.others.iter().any(|se| match se {
                HostPattern::Wildcard(s) => suffix.ends_with(s.as_str()),
                HostPattern::Any => true,
                HostPattern::Exact(_) => false,
            }),
            HostPattern::Any => self.others.iter().any(|se| matches!(se, HostPattern::Any)),
        }
    }
}

/// What happens to a rule that originates no TLS, for a host no
/// ServiceEntry declares.
fn unused(host: &HostPattern) -> String {
    format!(
        "host {host} has no ServiceEntry, so this rule is not used: requests to it, from the \
         app or gateway routes, go with default settings (the app's as through Istio's \
         PassthroughCluster under ALLOW_ANY, refused under REGISTRY_ONLY); add a ServiceEntry"
    )
}

/// What happens to a TLS-originating rule's host that no ServiceEntry
/// declares, and how it differs from Istio.
fn unregistered(host: &HostPattern, policy: OutboundTrafficPolicy) -> String {
    match policy {
        OutboundTrafficPolicy::AllowAny => format!(
            "host {host} has no ServiceEntry; Istio would send it plaintext (PassthroughCluster) \
             under ALLOW_ANY and answer 503 on a gateway route; meshgate originates TLS as this \
             rule says (to the host and port the app asked for, resolved by DNS)"
        ),
        OutboundTrafficPolicy::RegistryOnly => format!(
            "host {host} has no ServiceEntry; outbound requests to it are refused under \
             REGISTRY_ONLY (as in Istio; a DestinationRule does not register a host), gateway \
             routes to it originate TLS as this rule says; add a ServiceEntry"
        ),
    }
}

fn compile_block(tp: &TrafficPolicy, src: &Source, field: &str, diag: &mut Diagnostics) -> Block {
    for (name, set, what) in [
        (
            "loadBalancer",
            tp.load_balancer.is_some(),
            "not implemented yet; ignored (round robin)",
        ),
        (
            "retryBudget",
            tp.retry_budget.is_some(),
            "not implemented yet; ignored (retries are bounded by the route's attempts)",
        ),
    ] {
        if set {
            diag.warn(src, &format!("{field}.{name}"), what);
        }
    }
    for (name, set) in [
        ("tunnel", tp.tunnel.is_some()),
        ("proxyProtocol", tp.proxy_protocol.is_some()),
    ] {
        if set {
            diag.error(src, format!("{field}.{name}"), "not supported yet");
        }
    }
    let own = components(
        tp.tls.as_ref(),
        tp.connection_pool.as_ref(),
        tp.outlier_detection.as_ref(),
        src,
        field,
        diag,
    );
    let mut ports = BTreeMap::new();
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pfield = format!("{field}.portLevelSettings[{i}]");
        let number = pl.port.as_ref().and_then(|p| p.number);
        let Some(number) = port_number(number, src, &format!("{pfield}.port.number"), diag) else {
            continue;
        };
        if pl.load_balancer.is_some() {
            diag.warn(
                src,
                &format!("{pfield}.loadBalancer"),
                "not implemented yet; ignored (round robin)",
            );
        }
        let c = components(
            pl.tls.as_ref(),
            pl.connection_pool.as_ref(),
            pl.outlier_detection.as_ref(),
            src,
            &pfield,
            diag,
        );
        if ports.insert(number, c).is_some() {
            diag.error(
                src,
                format!("{pfield}.port.number"),
                format!("port {number} appears twice"),
            );
        }
    }
    Block { own, ports }
}

fn components(
    tls_cfg: Option<&ClientTls>,
    pool: Option<&ConnectionPool>,
    outlier: Option<&OutlierDetection>,
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Components {
    let c = Components {
        tls: tls_cfg.and_then(|t| tls::compile(t, src, &format!("{field}.tls"), diag)),
        pool: pool.map(|p| compile_pool(p, src, field, diag)),
        outlier: outlier
            .map(|o| compile_outlier(o, src, &format!("{field}.outlierDetection"), diag)),
    };
    let plain = c.tls.as_ref().is_none_or(|t| t.mode == TlsMode::Disable);
    if plain && c.pool.as_ref().is_some_and(|p| p.h2) {
        diag.warn(
            src,
            &format!("{field}.connectionPool.http.h2UpgradePolicy"),
            "UPGRADE without TLS is not implemented (no h2c to upstreams yet); HTTP/1.1 is used",
        );
    }
    c
}

fn compile_pool(pool: &ConnectionPool, src: &Source, field: &str, diag: &mut Diagnostics) -> Pool {
    let mut out = Pool::default();
    let mut dur = |v: &Option<String>, name: &str| -> Option<Duration> {
        let raw = v.as_deref()?;
        duration::parse(raw)
            .map_err(|e| diag.error(src, format!("{field}.connectionPool.{name}"), e.to_string()))
            .ok()
    };
    if let Some(tcp) = &pool.tcp {
        if let Some(d) = dur(&tcp.connect_timeout, "tcp.connectTimeout") {
            out.connect_timeout = d;
        }
        if let Some(d) = dur(&tcp.idle_timeout, "tcp.idleTimeout") {
            out.idle_timeout = d;
        }
        dur(&tcp.max_connection_duration, "tcp.maxConnectionDuration");
        // 0 is the proto's "unset": Envoy's default stays, as in Istio.
        if let Some(n) = tcp.max_connections.filter(|n| *n > 0) {
            out.limits.max_connections = n;
        }
    }
    if let Some(http) = &pool.http {
        if let Some(d) = dur(&http.idle_timeout, "http.idleTimeout") {
            out.idle_timeout = d;
        }
        out.max_requests_per_connection = http.max_requests_per_connection.unwrap_or(0);
        if let Some(n) = http.http1_max_pending_requests.filter(|n| *n > 0) {
            out.limits.http1_max_pending_requests = n;
        }
        if let Some(n) = http.http2_max_requests.filter(|n| *n > 0) {
            out.limits.http2_max_requests = n;
        }
        out.h2 = http.h2_upgrade_policy == Some(H2UpgradePolicy::Upgrade);
        if http.use_client_protocol == Some(true) {
            diag.warn(
                src,
                &format!("{field}.connectionPool.http.useClientProtocol"),
                "not implemented yet; the upstream protocol follows h2UpgradePolicy",
            );
        }
    }
    out
}

/// `outlierDetection` with Istio's defaults for what it leaves out.
fn compile_outlier(
    od: &OutlierDetection,
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> OutlierPlan {
    let mut out = OutlierPlan::default();
    let mut dur = |v: &Option<String>, name: &str| -> Option<Duration> {
        let raw = v.as_deref()?;
        match duration::parse(raw) {
            Ok(d) if d.is_zero() => {
                diag.error(src, format!("{field}.{name}"), "must be greater than 0");
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                diag.error(src, format!("{field}.{name}"), e.to_string());
                None
            }
        }
    };
    if let Some(d) = dur(&od.interval, "interval") {
        out.interval = d;
    }
    if let Some(d) = dur(&od.base_ejection_time, "baseEjectionTime") {
        out.base_ejection_time = d;
    }
    if let Some(n) = od.consecutive_5xx_errors.or(od.consecutive_errors) {
        out.consecutive_5xx_errors = n;
    }
    if let Some(n) = od.consecutive_gateway_errors {
        out.consecutive_gateway_errors = n;
    }
    if let Some(p) = od.max_ejection_percent {
        if p > 100 {
            diag.error(
                src,
                format!("{field}.maxEjectionPercent"),
                "must be 0 to 100",
            );
        }
        out.max_ejection_percent = p.min(100);
    }
    for (name, set) in [
        (
            "splitExternalLocalOriginErrors",
            od.split_external_local_origin_errors == Some(true),
        ),
        (
            "consecutiveLocalOriginFailures",
            od.consecutive_local_origin_failures.is_some(),
        ),
        ("minHealthPercent", od.min_health_percent.is_some()),
    ] {
        if set {
            diag.warn(
                src,
                &format!("{field}.{name}"),
                "not implemented yet; ignored",
            );
        }
    }
    out
}
