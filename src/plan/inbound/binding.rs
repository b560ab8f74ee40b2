//! Binding VirtualServices to Gateway servers: `gateways:` references in
//! every form Istio accepts, host intersection, and the TLS and TCP routes.

use super::*;
use crate::config::virtual_service::{RouteDestination, VirtualServiceSpec};
use crate::config::{Resource, Source};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::port::port_number;
use crate::plan::route::compile::compile_http_route;

/// Whether a VirtualService `gateways` entry (in namespace `vs_ns`) names
/// the gateway `gw_id` (`ns/name`).
///
/// Istio's forms: `ns/name`, `./name` (the VirtualService's namespace),
/// `name` (same), and the legacy `name.ns.svc.cluster.local`.
pub(super) fn gateway_ref_matches(entry: &str, vs_ns: &str, gw_id: &str) -> bool {
    let id = match entry.split_once('/') {
        Some((".", name)) => format!("{vs_ns}/{name}"),
        Some((ns, name)) => format!("{ns}/{name}"),
        None => match entry
            .strip_suffix(".svc.cluster.local")
            .and_then(|n| n.split_once('.'))
        {
            Some((name, ns)) => format!("{ns}/{name}"),
            None => format!("{vs_ns}/{entry}"),
        },
    };
    id == gw_id
}

/// Istio's `SubsetOf`: every name `a` matches, `b` matches too.
fn subset_of(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (_, HostPattern::Any) => true,
        (HostPattern::Any, _) => false,
        (HostPattern::Exact(x), p) => p.matches(x),
        (HostPattern::Wildcard(_), HostPattern::Exact(_)) => false,
        (HostPattern::Wildcard(x), HostPattern::Wildcard(y)) => x.ends_with(y.as_str()),
    }
}

/// Istio's `Names.Intersection`: for each pair of a server host and a
/// VirtualService host with a name in common, the narrower of the two;
/// these are the hosts the VirtualService's routes serve on the server.
pub(super) fn intersection(
    server_hosts: &[HostPattern],
    vs_hosts: &[HostPattern],
) -> Vec<HostPattern> {
    let mut out: Vec<HostPattern> = Vec::new();
    for s in server_hosts {
        for v in vs_hosts {
            let narrower = if subset_of(s, v) {
                s
            } else if subset_of(v, s) {
                v
            } else {
                continue;
            };
            if !out.contains(narrower) {
                out.push(narrower.clone());
            }
        }
    }
    out
}

/// A Gateway server host: `namespace/dnsName` in Istio, the namespace
/// saying whose VirtualServices may bind to it.
#[derive(Debug, Clone)]
pub(super) struct ServerHost {
    /// The namespace whose VirtualServices may bind (`.` already made the
    /// Gateway's); `None`: any (`*/`, or no prefix).
    pub namespace: Option<String>,
    /// The host pattern.
    pub host: HostPattern,
}

impl ServerHost {
    /// Parses a server host as Istio validates it for a Gateway
    /// (`ValidateNamespaceSlashWildcardHostname`): `ns/host`, `*/host`,
    /// `./host` or `host`; `~/` is only for Gateway API gateways.
    pub(super) fn parse(raw: &str, gateway_ns: &str) -> Result<ServerHost, String> {
        let Some((ns, name)) = raw.split_once('/') else {
            let host = HostPattern::parse(raw).map_err(|e| e.to_string())?;
            return Ok(ServerHost {
                namespace: None,
                host,
            });
        };
        if ns.is_empty() || name.is_empty() {
            return Err(format!(
                "{raw:?}: config namespace and dnsName in host entry cannot be empty"
            ));
        }
        let namespace = match ns {
            "*" => None,
            "." => Some(gateway_ns.to_string()),
            n if is_dns1123_label(n) => Some(n.to_string()),
            _ => {
                return Err(format!(
                    "invalid namespace value {ns:?} in gateway (a namespace name, \"*\" for any \
                     or \".\" for the Gateway's)"
                ));
            }
        };
        let host = HostPattern::parse(name).map_err(|e| e.to_string())?;
        Ok(ServerHost { namespace, host })
    }
}

/// Istio's `NamesForNamespace`: the server hosts a VirtualService of
/// `namespace` may bind to.
pub(super) fn hosts_for_namespace(hosts: &[ServerHost], namespace: &str) -> Vec<HostPattern> {
    hosts
        .iter()
        .filter(|h| h.namespace.as_deref().is_none_or(|n| n == namespace))
        .map(|h| h.host.clone())
        .collect()
}

/// A Kubernetes namespace name (RFC 1123 label).
fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Compiles the routes `vs` serves on a server whose hosts open to its
/// namespace are `server_hosts`; `None` when no host of `vs` is among
/// them. The bound hosts are their intersection, as Istio builds the
/// server's virtual hosts: a VirtualService never serves a host the
/// server opens to another namespace only.
pub(super) fn compile_bound_routes(
    vs: &Resource<VirtualServiceSpec>,
    server_hosts: &[HostPattern],
    port: u16,
    applies: &dyn Fn(&[String]) -> bool,
    diag: &mut Diagnostics,
) -> Option<GatewayRoutes> {
    let src = &vs.source;
    let mut vs_hosts = Vec::new();
    for (i, h) in vs.spec.hosts.iter().enumerate() {
        match HostPattern::parse(h) {
            Ok(p) => vs_hosts.push(p),
            Err(e) => diag.error(src, format!("spec.hosts[{i}]"), e.to_string()),
        }
    }
    let hosts = intersection(server_hosts, &vs_hosts);
    if hosts.is_empty() {
        return None;
    }
    let http = vs
        .spec
        .http
        .iter()
        .enumerate()
        .filter_map(|(i, r)| compile_http_route(r, src, &format!("spec.http[{i}]"), applies, diag))
        .collect();
    let mut tls = Vec::new();
    for (i, r) in vs.spec.tls.iter().enumerate() {
        let field = format!("spec.tls[{i}]");
        let mut sni_hosts = Vec::new();
        let mut ports = Vec::new();
        let mut any = false;
        for (j, m) in r.matches.iter().enumerate() {
            if !applies(&m.gateways) {
                continue;
            }
            any = true;
            for k in m.other.keys() {
                diag.error(src, format!("{field}.match[{j}].{k}"), "not supported yet");
            }
            if m.sni_hosts.is_empty() {
                diag.error(src, format!("{field}.match[{j}].sniHosts"), "required");
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                match HostPattern::parse(h) {
                    Ok(p) => sni_hosts.push(p),
                    Err(e) => diag.error(
                        src,
                        format!("{field}.match[{j}].sniHosts[{k}]"),
                        e.to_string(),
                    ),
                }
            }
            if let Some(p) = m.port {
                ports.extend(port_number(
                    Some(p),
                    src,
                    &format!("{field}.match[{j}].port"),
                    diag,
                ));
            }
        }
        if !any {
            continue;
        }
        let destinations = l4_destinations(&r.route, src, &field, diag);
        tls.push(L4RoutePlan {
            sni_hosts,
            ports,
            destinations,
        });
    }
    let mut tcp = Vec::new();
    for (i, r) in vs.spec.tcp.iter().enumerate() {
        let field = format!("spec.tcp[{i}]");
        let mut ports = Vec::new();
        let applicable: Vec<_> = r
            .matches
            .iter()
            .enumerate()
            .filter(|(_, m)| applies(&m.gateways))
            .collect();
        if !r.matches.is_empty() && applicable.is_empty() {
            continue;
        }
        for (j, m) in applicable {
            for k in m.other.keys() {
                diag.error(src, format!("{field}.match[{j}].{k}"), "not supported yet");
            }
            if let Some(p) = m.port {
                ports.extend(port_number(
                    Some(p),
                    src,
                    &format!("{field}.match[{j}].port"),
                    diag,
                ));
            }
        }
        let destinations = l4_destinations(&r.route, src, &field, diag);
        tcp.push(L4RoutePlan {
            sni_hosts: Vec::new(),
            ports,
            destinations,
        });
    }
    let _ = port;
    Some(GatewayRoutes {
        resource: src.to_string(),
        hosts,
        http,
        tls,
        tcp,
    })
}

pub(super) fn l4_destinations(
    route: &[RouteDestination],
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Vec<L4Destination> {
    let mut out = Vec::new();
    if route.is_empty() {
        diag.error(
            src,
            format!("{field}.route"),
            "at least one destination is required",
        );
    }
    for (j, d) in route.iter().enumerate() {
        let dfield = format!("{field}.route[{j}].destination");
        let Some(dest) = &d.destination else {
            diag.error(src, dfield, "required");
            continue;
        };
        let host = dest.host.clone().unwrap_or_default();
        if let Err(e) = HostPattern::parse(&host) {
            diag.error(src, format!("{dfield}.host"), e.to_string());
        }
        let port = match dest.port.as_ref().and_then(|p| p.number) {
            Some(n) => port_number(Some(n), src, &format!("{dfield}.port.number"), diag),
            None => None,
        };
        out.push(L4Destination {
            host,
            port,
            subset: dest.subset.clone(),
            weight: d.weight.unwrap_or(0),
        });
    }
    out
}
