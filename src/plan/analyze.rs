//! `istioctl analyze` checks that apply to configuration files, reported as
//! warnings that carry Istio's message code (`IST0128: ...`) and say what
//! meshgate does in the case. Istio's analyzers (`pkg/config/analysis/
//! analyzers`) are followed for the conditions; where an analyzer looks at
//! Kubernetes objects meshgate does not have (pods, Services), the
//! ServiceEntries stand for them.
//!
//! Codes reported here: IST0101 (a destination port the ServiceEntry does
//! not declare), IST0109 (mesh VirtualServices defining the same host),
//! IST0112 (a destination without port to a service with several),
//! IST0128 / IST0129 (TLS origination without `caCertificates`), IST0173
//! (a subset whose labels select no endpoint) and IST0177 (ServiceEntries
//! giving the same host and port different protocols). IST0101 for a
//! missing Gateway is reported by `plan::inbound`, IST0174 (a
//! DestinationRule for a host no ServiceEntry declares) by `plan::rule`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::destination_rule::{ClientTls, ClientTlsMode, DestinationRuleSpec};
use crate::config::service_entry::{Resolution, ServiceEntrySpec};
use crate::config::virtual_service::{RouteDestination, VirtualServiceSpec};
use crate::config::{Config, Resource};
use crate::plan::diagnostics::Diagnostics;

/// Runs every check on `config`.
pub(crate) fn run(config: &Config, diag: &mut Diagnostics) {
    let services = Services::new(config);
    for dr in &config.destination_rules {
        ca_certificates(dr, diag);
        subsets(dr, &services, diag);
    }
    conflicting_mesh_hosts(config, diag);
    for vs in &config.virtual_services {
        destination_ports(vs, &services, diag);
    }
    conflicting_protocols(config, diag);
}

/// Istio's `ConvertHostToFQDN`: a name without a dot (and not a wildcard)
/// is a Kubernetes Service of the namespace.
fn fqdn(namespace: &str, host: &str) -> String {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host.starts_with('*') || host.contains('.') {
        host
    } else {
        format!("{host}.{namespace}.svc.cluster.local")
    }
}

/// The ServiceEntries by fully qualified host, for Istio's
/// `GetDestinationHost` without scanning every entry per lookup.
struct Services<'a> {
    /// Exact hosts; the first entry loaded wins.
    exact: std::collections::HashMap<String, &'a Resource<ServiceEntrySpec>>,
    /// Wildcard hosts without their `*`, in load order.
    wildcards: Vec<(String, &'a Resource<ServiceEntrySpec>)>,
}

impl<'a> Services<'a> {
    fn new(config: &'a Config) -> Services<'a> {
        let mut exact = std::collections::HashMap::new();
        let mut wildcards = Vec::new();
        for se in &config.service_entries {
            for h in &se.spec.hosts {
                let h = fqdn(&se.source.namespace, h);
                match h.strip_prefix('*') {
                    Some(suffix) => wildcards.push((suffix.to_string(), se)),
                    None => {
                        exact.entry(h).or_insert(se);
                    }
                }
            }
        }
        Services { exact, wildcards }
    }

    /// Istio's `GetDestinationHost`: the ServiceEntry declaring `host`
    /// (seen from `namespace`), exactly or by a wildcard.
    fn destination(&self, namespace: &str, host: &str) -> Option<&'a Resource<ServiceEntrySpec>> {
        let want = fqdn(namespace, host);
        if let Some(se) = self.exact.get(&want) {
            return Some(se);
        }
        let bare = want.trim_start_matches('*');
        self.wildcards
            .iter()
            .find(|(suffix, _)| bare.ends_with(suffix.as_str()))
            .map(|(_, se)| *se)
    }
}

// === IST0128 / IST0129: TLS origination without caCertificates ===

/// Istio's `CaCertificateAnalyzer`: SIMPLE or MUTUAL at the top level
/// (IST0128) or on a port (IST0129) with no `caCertificates`, unless a
/// `credentialName` is set on a rule with a `workloadSelector`.
fn ca_certificates(dr: &Resource<DestinationRuleSpec>, diag: &mut Diagnostics) {
    let src = &dr.source;
    let Some(tp) = &dr.spec.traffic_policy else {
        return;
    };
    let name = format!("{}/{}", src.namespace, src.name);
    let host = dr.spec.host.clone().unwrap_or_default();
    let selector = dr.spec.workload_selector.is_some();
    if let Some((mode, tls)) = unverified(tp.tls.as_ref(), selector) {
        diag.warn(
            src,
            "spec.trafficPolicy.tls",
            format!(
                "IST0128: DestinationRule {name} in namespace {} has TLS mode set to {mode} but \
                 no caCertificates are set to validate server identity for host: {host}; {}",
                src.namespace,
                verified_with(tls)
            ),
        );
    }
    for (i, p) in tp.port_level_settings.iter().enumerate() {
        if let Some((mode, tls)) = unverified(p.tls.as_ref(), selector) {
            let port = p
                .port
                .as_ref()
                .and_then(|s| s.number)
                .map(|n| n.to_string())
                .unwrap_or_default();
            diag.warn(
                src,
                &format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                format!(
                    "IST0129: DestinationRule {name} in namespace {} has TLS mode set to {mode} \
                     but no caCertificates are set to validate server identity for host: {host} \
                     at port {port}; {}",
                    src.namespace,
                    verified_with(tls)
                ),
            );
        }
    }
}

/// The mode name when `tls` is SIMPLE or MUTUAL without `caCertificates`
/// (and is not a `credentialName` on a rule with a selector).
fn unverified(tls: Option<&ClientTls>, selector: bool) -> Option<(&'static str, &ClientTls)> {
    let tls = tls?;
    let mode = match tls.mode? {
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::Disable | ClientTlsMode::IstioMutual => return None,
    };
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let exempt = set(&tls.credential_name) && selector;
    (!set(&tls.ca_certificates) && !exempt).then_some((mode, tls))
}

/// What meshgate verifies the server with, for a block IST0128/0129 names.
fn verified_with(tls: &ClientTls) -> String {
    if tls.insecure_skip_verify == Some(true) {
        return "verification is skipped for it: meshgate does NOT verify the server".into();
    }
    match tls.credential_name.as_deref().filter(|c| !c.is_empty()) {
        Some(cred) => format!(
            "meshgate verifies the server with the CA of credentialName {cred} (its chain and \
             name are always checked)"
        ),
        None => "meshgate verifies the server against the system's root certificates (its \
                 chain and name are always checked); set caCertificates to trust only your CA"
            .into(),
    }
}

// === IST0173: a subset whose labels select no endpoint ===

/// Istio's `SubsetSelectPodAnalyzer`, with a ServiceEntry's endpoints for
/// the pods: a subset whose labels no endpoint carries (Istio and meshgate:
/// 503, no healthy upstream).
fn subsets(dr: &Resource<DestinationRuleSpec>, services: &Services<'_>, diag: &mut Diagnostics) {
    let src = &dr.source;
    let Some(host) = dr.spec.host.as_deref() else {
        return;
    };
    if host.starts_with('*') {
        return;
    }
    let Some(se) = services.destination(&src.namespace, host) else {
        return;
    };
    let spec = &se.spec;
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    if matches!(resolution, Resolution::None | Resolution::DynamicDns)
        || spec.workload_selector.is_some()
    {
        return; // no endpoint list to select from
    }
    // A DNS entry without endpoints has one: its host, without labels.
    let empty = BTreeMap::new();
    let endpoints: Vec<&BTreeMap<String, String>> = if spec.endpoints.is_empty() {
        if resolution == Resolution::Static {
            return; // no endpoints at all: warned with the ServiceEntry
        }
        vec![&empty]
    } else {
        spec.endpoints.iter().map(|e| &e.labels).collect()
    };
    for (i, s) in dr.spec.subsets.iter().enumerate() {
        if s.labels.is_empty() {
            continue;
        }
        let name = s.name.clone().unwrap_or_default();
        let selected = endpoints
            .iter()
            .filter(|l| s.labels.iter().all(|(k, v)| l.get(k) == Some(v)))
            .count();
        let field = format!("spec.subsets[{i}].labels");
        let resource = se.source.resource();
        if selected == 0 {
            diag.warn(
                src,
                &field,
                format!(
                    "IST0173: The Subset {name} defined in the DestinationRule does not select \
                     any endpoint of {resource}: its requests are answered 503 (no_endpoints; \
                     Istio's UH, NoHealthyUpstream)"
                ),
            );
        }
    }
}

// === IST0109: mesh VirtualServices defining the same host ===

fn mesh_bound(vs: &VirtualServiceSpec) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Istio's `ConflictingMeshGatewayHostsAnalyzer` (meshgate sees every
/// namespace's VirtualServices, so `exportTo` scopes nothing).
fn conflicting_mesh_hosts(config: &Config, diag: &mut Diagnostics) {
    let mut by_host: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, vs) in config.virtual_services.iter().enumerate() {
        if !mesh_bound(&vs.spec) {
            continue;
        }
        let hosts: BTreeSet<String> = vs
            .spec
            .hosts
            .iter()
            .map(|h| fqdn(&vs.source.namespace, h))
            .collect();
        for h in hosts {
            by_host.entry(h).or_default().push(i);
        }
    }
    let mut reported = BTreeSet::new();
    for (host, list) in by_host {
        if list.len() < 2 {
            continue;
        }
        let vss = &config.virtual_services;
        let mut names: Vec<String> = list
            .iter()
            .map(|i| format!("{}/{}", vss[*i].source.namespace, vss[*i].source.name))
            .collect();
        names.sort();
        let first = vss[list[0]].source.resource();
        for i in list {
            if !reported.insert(i) {
                continue;
            }
            diag.warn(
                &vss[i].source,
                "spec.hosts",
                format!(
                    "IST0109: The VirtualServices {} associated with mesh gateway define the same \
                     host {host} which can lead to undefined behavior. This can be fixed by \
                     merging the conflicting VirtualServices into a single resource. (meshgate \
                     uses the first loaded, {first})",
                    names.join(",")
                ),
            );
        }
    }
}

// === IST0112 / IST0101: destination ports ===

/// Istio's `DestinationHostAnalyzer`, for destinations whose host a
/// ServiceEntry declares: no port while the service has several (IST0112,
/// for mesh routes: gateway routes refuse it or are left to their own
/// checks), or a port it does not declare (IST0101).
fn destination_ports(
    vs: &Resource<VirtualServiceSpec>,
    services: &Services<'_>,
    diag: &mut Diagnostics,
) {
    let spec = &vs.spec;
    let gateway_bound = spec.gateways.iter().any(|g| g != "mesh");
    // (field, destination, whether IST0112 is left to the gateway routes)
    let mut dests: Vec<(String, &RouteDestination, bool)> = Vec::new();
    for (i, r) in spec.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            dests.push((format!("spec.http[{i}].route[{j}]"), d, gateway_bound));
        }
    }
    for (i, r) in spec.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            dests.push((format!("spec.tls[{i}].route[{j}]"), d, gateway_bound));
        }
    }
    for (i, r) in spec.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            dests.push((format!("spec.tcp[{i}].route[{j}]"), d, gateway_bound));
        }
    }
    for (field, d, refused_already) in dests {
        let Some(dest) = &d.destination else { continue };
        let Some(host) = dest.host.as_deref().filter(|h| !h.is_empty()) else {
            continue;
        };
        let Some(se) = services.destination(&vs.source.namespace, host) else {
            continue;
        };
        let declared: Vec<u32> = se.spec.ports.iter().filter_map(|p| p.number).collect();
        match dest.port.as_ref().and_then(|p| p.number) {
            None if declared.len() > 1 && !refused_already => {
                let list: Vec<String> = declared.iter().map(u32::to_string).collect();
                diag.warn(
                    &vs.source,
                    &format!("{field}.destination.port"),
                    format!(
                        "IST0112: This VirtualService routes to a service {host:?} that exposes \
                         multiple ports [{}]. Specifying a port in the destination is required \
                         to disambiguate. (meshgate keeps the port the request came on)",
                        list.join(" ")
                    ),
                );
            }
            Some(n) if !declared.contains(&n) => diag.warn(
                &vs.source,
                &format!("{field}.destination.port.number"),
                format!(
                    "IST0101: Referenced host:port not found: \"{host}:{n}\" ({} does not \
                     declare port {n}; meshgate handles requests routed there as for a host no \
                     ServiceEntry declares)",
                    se.source.resource()
                ),
            ),
            _ => {}
        }
    }
}

// === IST0177: one host and port, several protocols ===

/// Istio's `ConflictingServiceEntryProtocolAnalyzer` (every ServiceEntry
/// is visible to meshgate's one workload).
fn conflicting_protocols(config: &Config, diag: &mut Diagnostics) {
    let mut index: BTreeMap<(String, u32), Vec<(usize, String)>> = BTreeMap::new();
    for (i, se) in config.service_entries.iter().enumerate() {
        for h in &se.spec.hosts {
            for p in &se.spec.ports {
                let Some(n) = p.number else { continue };
                let protocol = p.protocol.clone().unwrap_or_default().to_ascii_uppercase();
                index
                    .entry((h.to_ascii_lowercase(), n))
                    .or_default()
                    .push((i, protocol));
            }
        }
    }
    let ses = &config.service_entries;
    let mut reported = BTreeSet::new();
    for ((host, port), entries) in index {
        let protocols: BTreeSet<&str> = entries.iter().map(|(_, p)| p.as_str()).collect();
        if protocols.len() < 2 {
            continue;
        }
        let names: BTreeSet<String> = entries
            .iter()
            .map(|(i, _)| format!("{}/{}", ses[*i].source.namespace, ses[*i].source.name))
            .collect();
        let first = ses[entries[0].0].source.resource();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        let protocols = protocols.into_iter().collect::<Vec<_>>().join(", ");
        for (i, _) in &entries {
            if !reported.insert(*i) {
                continue;
            }
            diag.warn(
                &ses[*i].source,
                "spec.ports",
                format!(
                    "IST0177: Multiple ServiceEntries ({names}) define the same host {host:?} and \
                     port {port} with conflicting protocols ({protocols}). (meshgate uses the \
                     first loaded, {first})"
                ),
            );
        }
    }
}
