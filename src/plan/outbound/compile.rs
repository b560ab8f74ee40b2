//! Compiling ServiceEntries, DestinationRules (in `plan::rule`) and
//! VirtualServices bound to `mesh` into an [`OutboundPlan`].

use std::sync::Arc;

use super::net::parse_networks;
use super::tls_policy::{TlsPolicyPlan, check};
use super::{L4MatchPlan, L4RoutePlan, MeshRoutes, OutboundPlan, ServicePlan, service};
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{Config, Resource, Source};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::host::HostPattern;
use crate::plan::port::port_number;
use crate::plan::route::RouteDestinationPlan;
use crate::plan::route::compile::{RouteScope, compile_destinations, compile_mesh_http_route};
use crate::plan::rule;

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
    let policy = sidecar_policy.unwrap_or(bootstrap.outbound_traffic_policy);
    let services: Vec<Arc<ServicePlan>> = config
        .service_entries
        .iter()
        .filter_map(|se| service::compile_service(se, diag))
        .map(Arc::new)
        .collect();
    let plan = OutboundPlan {
        policy,
        rules: rule::compile(config, &services, policy, diag),
        services,
        routes: config
            .virtual_services
            .iter()
            .filter_map(|vs| compile_routes(vs, diag))
            .collect(),
        tls_policy: TlsPolicyPlan::compile(&bootstrap.outbound_tls_policy),
    };
    check::check_services(&config.service_entries, &plan, diag);
    plan
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
            Err(e) => diag.error(src, format!("spec.hosts[{i}]"), e.to_string()),
        }
    }
    if hosts.is_empty() {
        diag.error(src, "spec.hosts", "at least one host is required");
    }
    // A match naming gateways applies to the mesh only when it names `mesh`.
    let applies = |gateways: &[String]| gateways.is_empty() || gateways.iter().any(|g| g == "mesh");
    let http = spec
        .http
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            compile_mesh_http_route(r, src, &format!("spec.http[{i}]"), &applies, diag)
        })
        .collect();
    let mut tls = Vec::new();
    for (i, r) in spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            diag.error(
                src,
                format!("{field}.match"),
                "a TLS route needs at least one match (sniHosts)",
            );
        }
        let matches: Vec<L4MatchPlan> = r
            .matches
            .iter()
            .enumerate()
            .filter(|(_, m)| applies(&m.gateways))
            .map(|(j, m)| {
                let mfield = format!("{field}.match[{j}]");
                let sni_hosts = sni_hosts(&m.sni_hosts, &hosts, src, &mfield, diag);
                l4_match(m.port, &m.other, sni_hosts, src, &mfield, diag)
            })
            .collect();
        let destinations = l4_destinations(&r.route, src, &field, diag);
        if !matches.is_empty() {
            tls.push(L4RoutePlan {
                matches,
                destinations,
            });
        }
    }
    let mut tcp = Vec::new();
    for (i, r) in spec.tcp.iter().enumerate() {
        let field = format!("spec.tcp[{i}]");
        let matches: Vec<L4MatchPlan> = r
            .matches
            .iter()
            .enumerate()
            .filter(|(_, m)| applies(&m.gateways))
            .map(|(j, m)| {
                let mfield = format!("{field}.match[{j}]");
                l4_match(m.port, &m.other, Vec::new(), src, &mfield, diag)
            })
            .collect();
        let destinations = l4_destinations(&r.route, src, &field, diag);
        // A route whose matches all name other gateways is not the mesh's.
        if r.matches.is_empty() || !matches.is_empty() {
            tcp.push(L4RoutePlan {
                matches,
                destinations,
            });
        }
    }
    (diag.errors.len() == before).then(|| MeshRoutes {
        resource: src.to_string(),
        hosts,
        http,
        tls,
        tcp,
    })
}

/// A TLS match's `sniHosts`, each one within the VirtualService's hosts
/// (Istio's validation); an IP address is accepted with Istio's warning.
fn sni_hosts(
    raw: &[String],
    vs_hosts: &[HostPattern],
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Vec<HostPattern> {
    if raw.is_empty() {
        diag.error(
            src,
            format!("{field}.sniHosts"),
            "at least one SNI host is required",
        );
    }
    let mut out = Vec::new();
    for (k, h) in raw.iter().enumerate() {
        let f = format!("{field}.sniHosts[{k}]");
        if let Ok(ip) = h.trim().parse::<std::net::IpAddr>() {
            diag.warn(
                src,
                &f,
                format!("using an IP address ({ip}) goes against the SNI specification and most clients do not send one"),
            );
            out.push(HostPattern::Exact(ip.to_string()));
            continue;
        }
        match HostPattern::parse(h) {
            Ok(p) if vs_hosts.iter().any(|v| subset_of(&p, v)) => out.push(p),
            Ok(p) => {
                let list: Vec<String> = vs_hosts.iter().map(ToString::to_string).collect();
                diag.error(
                    src,
                    f,
                    format!(
                        "SNI host {p} is not within any of the VirtualService's hosts [{}]",
                        list.join(", ")
                    ),
                );
            }
            Err(e) => diag.error(src, f, e.to_string()),
        }
    }
    out
}

/// Whether every name `a` matches is matched by `b` (Istio's `SubsetOf`).
fn subset_of(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (_, HostPattern::Any) => true,
        (HostPattern::Any, _) => false,
        (HostPattern::Exact(x), p) => p.matches(x),
        (HostPattern::Wildcard(x), HostPattern::Wildcard(y)) => x.ends_with(y.as_str()),
        (HostPattern::Wildcard(_), HostPattern::Exact(_)) => false,
    }
}

/// The conditions of a TLS or TCP match besides `sniHosts` and
/// `gateways`: `port` and `destinationSubnets` are honoured; the source
/// conditions are refused as on HTTP routes (meshgate has no workload
/// labels to compare).
fn l4_match(
    port: Option<u32>,
    other: &std::collections::BTreeMap<String, serde_json::Value>,
    sni_hosts: Vec<HostPattern>,
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> L4MatchPlan {
    let port = port.and_then(|p| port_number(Some(p), src, &format!("{field}.port"), diag));
    let mut destination_subnets = Vec::new();
    for (k, v) in other.iter().filter(|(_, v)| !v.is_null()) {
        let f = format!("{field}.{k}");
        match k.as_str() {
            "destinationSubnets" => match serde_json::from_value::<Vec<String>>(v.clone()) {
                Ok(list) => destination_subnets = parse_networks(&list, src, &f, diag),
                Err(_) => diag.error(src, f, "expected a list of IP addresses or CIDR blocks"),
            },
            "sourceLabels" | "sourceNamespace" | "sourceSubnet" => diag.error(
                src,
                f,
                "not supported yet (source conditions: meshgate serves one workload and knows no labels of its own)",
            ),
            _ => diag.error(src, f, "unknown field"),
        }
    }
    L4MatchPlan {
        sni_hosts,
        port,
        destination_subnets,
    }
}

/// A TLS or TCP route's destinations: required, checked as HTTP route
/// destinations are; they relay bytes, so no `headers`.
fn l4_destinations(
    route: &[crate::config::virtual_service::RouteDestination],
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Vec<RouteDestinationPlan> {
    if route.is_empty() {
        diag.error(
            src,
            format!("{field}.route"),
            "at least one destination is required",
        );
    }
    for (j, d) in route.iter().enumerate() {
        if d.headers.is_some() {
            diag.error(
                src,
                format!("{field}.route[{j}].headers"),
                "only HTTP routes change headers; a TLS or TCP route relays bytes",
            );
        }
    }
    compile_destinations(route, src, field, RouteScope::Mesh, diag)
}
