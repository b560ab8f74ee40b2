//! Compiling one ServiceEntry into a [`ServicePlan`], with Istio's
//! validation of hosts, ports, resolution and endpoints.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Resource;
use crate::config::service_entry::{Location, Resolution};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::host::HostPattern;
use crate::plan::outbound::{EndpointPlan, PortPlan, ServicePlan};
use crate::plan::port::port_number;

const PROTOCOLS: [&str; 9] = [
    "HTTP", "HTTPS", "GRPC", "GRPC-WEB", "HTTP2", "MONGO", "TCP", "TLS", "UDP",
];

pub(super) fn compile_service(
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
            Err(e) => diag.error(src, format!("spec.hosts[{i}]"), e.to_string()),
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
