//! Compiling ServiceEntries, DestinationRules (in `plan::rule`) and
//! VirtualServices bound to `mesh` into an [`OutboundPlan`].

use std::sync::Arc;

use super::{HttpRoutePlan, MeshRoutes, OutboundPlan, RouteDestination, ServicePlan, service};
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{Config, Resource};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::duration;
use crate::plan::host::HostPattern;
use crate::plan::port::port_number;
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
    OutboundPlan {
        policy,
        rules: rule::compile(config, &services, policy, diag),
        services,
        routes: config
            .virtual_services
            .iter()
            .filter_map(|vs| compile_routes(vs, diag))
            .collect(),
    }
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
                diag.error(src, format!("{field}.timeout"), e.to_string());
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
            diag.error(
                src,
                format!("{field}.{k}"),
                "not supported for mesh routes yet",
            );
        }
        let retries = crate::plan::route::compile::compile_retries(
            r.retries.as_ref(),
            src,
            &format!("{field}.retries"),
            diag,
        );
        let mut destinations = Vec::new();
        for (j, d) in r.route.iter().enumerate() {
            let dfield = format!("{field}.route[{j}].destination");
            let Some(dest) = &d.destination else {
                diag.error(src, dfield, "required");
                continue;
            };
            let host = dest.host.clone().unwrap_or_default();
            if let Err(e) = HostPattern::parse(&host) {
                diag.error(src, format!("{dfield}.host"), e.to_string());
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
            retries,
        });
    }
    (diag.errors.len() == before).then(|| MeshRoutes {
        resource: src.to_string(),
        hosts,
        http,
    })
}
