//! Compiling one ServiceEntry into a [`ServicePlan`], with Istio's
//! validation (`ValidateServiceEntry` in `pkg/config/validation`): what
//! Istio accepts loads, what it refuses is refused for its reason, and what
//! it only warns about is warned about (with what meshgate does then).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Resource;
use crate::config::Source;
use crate::config::service_entry::{Location, Resolution, ServiceEntrySpec, WorkloadEntry};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::host::{self, HostPattern};
use crate::plan::outbound::{EndpointPlan, PortPlan, ServicePlan};
use crate::plan::port::port_number;

/// Istio's `protocol.Parse` names (upper case); an empty protocol is
/// accepted too (Istio sniffs it).
const PROTOCOLS: [&str; 12] = [
    "HTTP",
    "HTTPS",
    "GRPC",
    "GRPC-WEB",
    "HTTP2",
    "HTTP_PROXY",
    "MONGO",
    "REDIS",
    "MYSQL",
    "TCP",
    "TLS",
    "UDP",
];

/// Istio's `Instance.IsHTTP`.
fn is_http(protocol: &str) -> bool {
    matches!(
        protocol,
        "HTTP" | "HTTP2" | "HTTP_PROXY" | "GRPC" | "GRPC-WEB"
    )
}

/// Istio's `Instance.IsTLS`.
fn is_tls(protocol: &str) -> bool {
    matches!(protocol, "HTTPS" | "TLS")
}

/// Istio's `Instance.IsTCP`.
fn is_tcp(protocol: &str) -> bool {
    matches!(
        protocol,
        "TCP" | "HTTPS" | "TLS" | "MONGO" | "REDIS" | "MYSQL"
    )
}

fn resolution_name(r: Resolution) -> &'static str {
    match r {
        Resolution::None => "NONE",
        Resolution::Static => "STATIC",
        Resolution::Dns => "DNS",
        Resolution::DnsRoundRobin => "DNS_ROUND_ROBIN",
        Resolution::DynamicDns => "DYNAMIC_DNS",
    }
}

pub(super) fn compile_service(
    se: &Resource<ServiceEntrySpec>,
    diag: &mut Diagnostics,
) -> Option<ServicePlan> {
    let src = &se.source;
    let spec = &se.spec;
    let before = diag.errors.len();
    let resolution = spec.resolution.unwrap_or(Resolution::None);
    check_selector(spec, resolution, src, diag);
    let hosts = compile_hosts(spec, resolution, src, diag);
    let ports = compile_ports(spec, src, diag);
    check_resolution(spec, resolution, src, diag);
    check_export_to(&spec.export_to, &src.namespace, src, diag);
    let endpoints = compile_endpoints(spec, resolution, src, diag);
    let addresses = super::net::parse_addresses(&spec.addresses, resolution, src, diag);
    let plan = (diag.errors.len() == before).then(|| ServicePlan {
        resource: src.to_string(),
        hosts,
        ports,
        resolution,
        location: spec.location.unwrap_or(Location::MeshExternal),
        endpoints,
        workload_selector: spec.workload_selector.as_ref().map(|s| s.labels.clone()),
        subject_alt_names: spec.subject_alt_names.clone(),
        addresses,
    });
    if spec.ports.is_empty() {
        let unused = if spec.endpoints.is_empty() {
            ""
        } else {
            "; its endpoints are not used"
        };
        diag.warn(
            src,
            "spec.ports",
            format!(
                "declares no port, so it registers nothing (Istio builds no listener, route or \
                 cluster for it): requests to its hosts are handled as for a host no ServiceEntry \
                 declares (passed through under ALLOW_ANY, refused under REGISTRY_ONLY){unused}"
            ),
        );
        return None;
    }
    if plan.is_some() && resolution == Resolution::Static && spec.endpoints.is_empty() {
        let why = if spec.workload_selector.is_some() {
            "its endpoints are the workloads its workloadSelector selects, and meshgate has no \
             workload registry (it serves one workload)"
        } else {
            "resolution STATIC lists no endpoints"
        };
        diag.warn(
            src,
            "spec.endpoints",
            format!(
                "no endpoints: {why}; requests to this service fail (503, no endpoints) as \
                 Istio's do (no healthy upstream), they never go elsewhere; list endpoints"
            ),
        );
    }
    plan
}

/// `workloadSelector`: Istio's label checks, never together with
/// `endpoints`; meshgate cannot select workloads, so a selector leaves the
/// entry without endpoints (warned, and requests fail closed).
fn check_selector(
    spec: &ServiceEntrySpec,
    resolution: Resolution,
    src: &Source,
    diag: &mut Diagnostics,
) {
    let Some(sel) = &spec.workload_selector else {
        return;
    };
    let field = "spec.workloadSelector";
    for (k, v) in &sel.labels {
        let pair = format!("{k}={v}");
        if k.is_empty() {
            diag.error(
                src,
                format!("{field}.labels"),
                format!("empty key is not supported in selector: {pair:?}"),
            );
        }
        if k.contains('*') || v.contains('*') {
            diag.error(
                src,
                format!("{field}.labels.{k}"),
                format!("wildcard is not supported in selector: {pair:?}"),
            );
        }
    }
    if sel.labels.is_empty() {
        diag.warn(
            src,
            field,
            "service entry: workload selector specified without labels, will be applied to all \
             services in namespace",
        );
    }
    if !spec.endpoints.is_empty() {
        diag.error(
            src,
            field,
            "only one of WorkloadSelector or Endpoints is allowed in Service Entry",
        );
        return;
    }
    match resolution {
        Resolution::None => diag.warn(
            src,
            field,
            "workloadSelector should not be set when resolution mode is NONE; ignored (the \
             address the app connected to is used)",
        ),
        Resolution::DynamicDns => diag.warn(
            src,
            field,
            "workloadSelector has no effect with resolution DYNAMIC_DNS (the request's own host \
             is resolved); ignored",
        ),
        // STATIC: warned with the missing endpoints.
        Resolution::Static => {}
        Resolution::Dns | Resolution::DnsRoundRobin => diag.warn(
            src,
            field,
            format!(
                "selects workloads as endpoints (resolution {} then resolves their addresses, \
                 not the hosts), and meshgate has no workload registry (it serves one workload): \
                 this entry has no endpoints, so requests to it fail (503, no endpoints) rather \
                 than go elsewhere; list endpoints instead",
                resolution_name(resolution)
            ),
        ),
    }
}

/// `hosts`: Istio's `ValidateWildcardDomain`, never `*`; a partial
/// wildcard (`*foo.com`) is accepted with Istio's warning except with
/// DYNAMIC_DNS.
fn compile_hosts(
    spec: &ServiceEntrySpec,
    resolution: Resolution,
    src: &Source,
    diag: &mut Diagnostics,
) -> Vec<HostPattern> {
    if spec.hosts.is_empty() {
        diag.error(
            src,
            "spec.hosts",
            "service entry must have at least one host",
        );
    }
    let mut hosts = Vec::new();
    for (i, h) in spec.hosts.iter().enumerate() {
        let field = format!("spec.hosts[{i}]");
        match HostPattern::parse_domain(h) {
            Ok(HostPattern::Any) => diag.error(
                src,
                field,
                format!(
                    "invalid host {h}: \"*\" is not allowed in a ServiceEntry; use a domain \
                     wildcard such as \"*.example.com\""
                ),
            ),
            Ok(p) => {
                if let HostPattern::Wildcard(suffix) = &p
                    && p.is_partial_wildcard()
                    && resolution != Resolution::DynamicDns
                {
                    diag.warn(
                        src,
                        &field,
                        format!(
                            "partial wildcard {h:?} not allowed (Istio accepts it with this \
                             warning); matched as Envoy matches a suffix wildcard: any longer \
                             name ending in {suffix:?}"
                        ),
                    );
                }
                hosts.push(p);
            }
            Err(e) => diag.error(src, field, e.to_string()),
        }
    }
    hosts
}

/// `ports`: names unique RFC 1123 labels, numbers unique and in range, a
/// protocol Istio knows (or none).
fn compile_ports(spec: &ServiceEntrySpec, src: &Source, diag: &mut Diagnostics) -> Vec<PortPlan> {
    let mut ports = Vec::new();
    let mut names = BTreeSet::new();
    let mut numbers = BTreeSet::new();
    for (i, p) in spec.ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        let name = p.name.clone().unwrap_or_default();
        if name.is_empty() {
            diag.error(src, format!("{field}.name"), "required");
        } else if !host::is_dns1123_label(&name) {
            diag.error(
                src,
                format!("{field}.name"),
                format!(
                    "invalid port name: {name} (an RFC 1123 label: letters, digits and inner '-', \
                     63 at most)"
                ),
            );
        }
        if !names.insert(name.clone()) && !name.is_empty() {
            diag.error(
                src,
                format!("{field}.name"),
                format!("service entry port name {name:?} already defined"),
            );
        }
        let number = port_number(p.number, src, &format!("{field}.number"), diag);
        if let Some(n) = number
            && !numbers.insert(n)
        {
            diag.error(
                src,
                format!("{field}.number"),
                format!("service entry port {n} already defined"),
            );
        }
        let raw = p.protocol.clone().unwrap_or_default();
        let protocol = raw.to_ascii_uppercase();
        if !protocol.is_empty() && !PROTOCOLS.contains(&protocol.as_str()) {
            diag.error(
                src,
                format!("{field}.protocol"),
                format!(
                    "unsupported protocol: {raw}; expected one of {} (or none)",
                    PROTOCOLS.join(", ")
                ),
            );
        }
        let Some(number) = number else { continue };
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
    ports
}

/// What each resolution allows (hosts, endpoints, protocols), and several
/// hosts only where HTTP or SNI tells them apart.
fn check_resolution(
    spec: &ServiceEntrySpec,
    resolution: Resolution,
    src: &Source,
    diag: &mut Diagnostics,
) {
    let name = resolution_name(resolution);
    let protocol = |i: usize| {
        spec.ports[i]
            .protocol
            .clone()
            .unwrap_or_default()
            .to_ascii_uppercase()
    };
    match resolution {
        Resolution::None if !spec.endpoints.is_empty() => diag.error(
            src,
            "spec.endpoints",
            "no endpoints should be provided for resolution type NONE; use STATIC or DNS",
        ),
        Resolution::None | Resolution::Static => {}
        Resolution::Dns | Resolution::DnsRoundRobin => {
            if spec.endpoints.is_empty()
                && let Some(e) = spec.hosts.iter().find_map(|h| host::validate_fqdn(h).err())
            {
                diag.error(
                    src,
                    "spec.resolution",
                    format!(
                        "hosts must be FQDN or contain only prefix wildcards if no endpoints are \
                         provided for resolution mode {name}, {e}; a wildcard host cannot be \
                         resolved with DNS: use DYNAMIC_DNS or NONE, or list endpoints"
                    ),
                );
            }
            if resolution == Resolution::DnsRoundRobin && spec.endpoints.len() > 1 {
                diag.error(
                    src,
                    "spec.endpoints",
                    format!("there must only be 0 or 1 endpoint for resolution mode {name}"),
                );
            }
            if !spec.addresses.is_empty()
                && spec.hosts.len() > 1
                && (0..spec.ports.len()).any(|i| is_tcp(&protocol(i)))
            {
                diag.warn(
                    src,
                    "spec.hosts",
                    "service entry can not have more than one host specified simultaneously \
                     with address and tcp port",
                );
            }
        }
        Resolution::DynamicDns => {
            for (i, h) in spec.hosts.iter().enumerate() {
                if !h.starts_with('*') {
                    diag.error(
                        src,
                        format!("spec.hosts[{i}]"),
                        format!(
                            "host must be wildcarded for resolution mode {name}; use DNS for \
                             exact hosts"
                        ),
                    );
                }
            }
            if !spec.endpoints.is_empty() {
                diag.error(
                    src,
                    "spec.endpoints",
                    format!(
                        "endpoints cannot be set for resolution type {name}: the destination \
                         is the host the request names"
                    ),
                );
            }
            for i in 0..spec.ports.len() {
                if !matches!(protocol(i).as_str(), "HTTP" | "TLS" | "GRPC" | "HTTP2") {
                    diag.error(
                        src,
                        format!("spec.ports[{i}].protocol"),
                        format!(
                            "only HTTP, TLS, GRPC, and HTTP2 protocols are supported for \
                             resolution type {name}"
                        ),
                    );
                }
            }
        }
    }
    if resolution != Resolution::None
        && spec.hosts.len() > 1
        && let Some(i) = (0..spec.ports.len()).find(|i| {
            let p = protocol(*i);
            !is_http(&p) && !is_tls(&p)
        })
    {
        diag.error(
            src,
            format!("spec.ports[{i}].protocol"),
            format!(
                "multiple hosts provided with non-HTTP, non-TLS ports: plain TCP cannot tell \
                 the hosts apart (resolution {name}); use one host per ServiceEntry, or \
                 resolution NONE"
            ),
        );
    }
}

/// Istio's `validateExportTo` for a ServiceEntry: `.`, `*`, `~` or a
/// namespace name, no duplicates, `*` and `~` alone.
fn check_export_to(export_to: &[String], namespace: &str, src: &Source, diag: &mut Diagnostics) {
    let field = "spec.exportTo";
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if seen.contains(key) {
            let reason = if key != e {
                format!("duplicate entries in exportTo: . and current namespace {namespace}")
            } else {
                format!("duplicate entries in exportTo for entry {e}")
            };
            diag.error(src, format!("{field}[{i}]"), reason);
        } else if key == "~" || key == "*" || host::is_dns1123_label(key) {
            seen.insert(key);
        } else {
            diag.error(
                src,
                format!("{field}[{i}]"),
                format!("{e:?}: only .,*, or a valid DNS 1123 label is allowed as exportTo entry"),
            );
        }
    }
    if export_to.len() > 1 {
        if seen.contains("*") {
            diag.error(
                src,
                field,
                "cannot have both public (*) and non-public exportTo values for a resource",
            );
        }
        if seen.contains("~") {
            diag.error(
                src,
                field,
                "cannot export service entry to no one (~) and someone",
            );
        }
    }
}

/// `endpoints` of STATIC (IP addresses) and DNS (IP addresses or names)
/// entries, with their port overrides and labels checked as Istio does.
fn compile_endpoints(
    spec: &ServiceEntrySpec,
    resolution: Resolution,
    src: &Source,
    diag: &mut Diagnostics,
) -> Vec<EndpointPlan> {
    if matches!(resolution, Resolution::None | Resolution::DynamicDns) {
        return Vec::new(); // endpoints are refused with these
    }
    let port_names: BTreeSet<&str> = spec
        .ports
        .iter()
        .map(|p| p.name.as_deref().unwrap_or(""))
        .collect();
    let mut endpoints = Vec::new();
    for (i, ep) in spec.endpoints.iter().enumerate() {
        let field = format!("spec.endpoints[{i}]");
        let ports = endpoint_ports(ep, &port_names, &field, src, diag);
        check_labels(&ep.labels, &format!("{field}.labels"), src, diag);
        let address = ep.address.clone().unwrap_or_default();
        let afield = format!("{field}.address");
        if address.is_empty() {
            match ep.network.as_deref().filter(|n| !n.is_empty()) {
                Some(network) if resolution == Resolution::Static => diag.warn(
                    src,
                    &afield,
                    format!(
                        "address is unset with network {network:?} (an endpoint reached through \
                         that network's gateway); meshgate is single-network and does not use it"
                    ),
                ),
                _ => diag.error(src, afield, "address is required"),
            }
            continue;
        }
        if address.starts_with("unix://") {
            let reason = if resolution == Resolution::Static {
                "unix domain socket endpoints are not supported yet".to_string()
            } else {
                format!("endpoint address {address:?} is not a valid FQDN or an IP address")
            };
            diag.error(src, afield, reason);
            continue;
        }
        let address = match ip_address(&address) {
            Some(ip) => ip,
            None if resolution == Resolution::Static => {
                diag.error(
                    src,
                    afield,
                    format!(
                        "endpoint address {address:?} is not a valid IP address (resolution \
                         STATIC; use DNS for names)"
                    ),
                );
                continue;
            }
            None => {
                if host::validate_fqdn(&address).is_err() {
                    diag.error(
                        src,
                        afield,
                        format!(
                            "endpoint address {address:?} is not a valid FQDN or an IP address"
                        ),
                    );
                    continue;
                }
                host::normalize(&address)
            }
        };
        endpoints.push(EndpointPlan {
            address,
            ports,
            weight: ep.weight.unwrap_or(1).max(1),
            labels: ep.labels.clone(),
        });
    }
    endpoints
}

/// An endpoint's port overrides: each names a declared port.
fn endpoint_ports(
    ep: &WorkloadEntry,
    port_names: &BTreeSet<&str>,
    field: &str,
    src: &Source,
    diag: &mut Diagnostics,
) -> BTreeMap<String, u16> {
    let mut out = BTreeMap::new();
    for (name, p) in &ep.ports {
        let pfield = format!("{field}.ports.{name}");
        if !port_names.contains(name.as_str()) {
            diag.error(
                src,
                pfield.clone(),
                format!(
                    "endpoint port {p} is not defined by the service entry (no port named \
                     {name:?} in spec.ports)"
                ),
            );
        } else if !host::is_dns1123_label(name) {
            diag.error(src, pfield.clone(), format!("invalid port name: {name}"));
        }
        if let Some(n) = port_number(Some(*p), src, &pfield, diag) {
            out.insert(name.clone(), n);
        }
    }
    out
}

/// An IP address as Go's `netip.ParseAddr` accepts it (Istio's
/// `IsValidIPAddress`): IPv4 dotted decimal, IPv6 in any case and with an
/// embedded IPv4 (`::ffff:1.2.3.4`), and an IPv6 zone (`fe80::1%eth0`).
/// Returns the address in canonical form (the zone kept as written); no
/// brackets.
pub(crate) fn ip_address(s: &str) -> Option<String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Some(ip.to_string());
    }
    let (addr, zone) = s.split_once('%')?;
    let ip = addr.parse::<std::net::Ipv6Addr>().ok()?;
    (!zone.is_empty()).then(|| format!("{ip}%{zone}"))
}

/// Kubernetes label syntax, as Istio's `labels.Instance.Validate` checks
/// endpoint labels: keys `[prefix/]name`, values a name or empty.
fn check_labels(
    labels: &BTreeMap<String, String>,
    field: &str,
    src: &Source,
    diag: &mut Diagnostics,
) {
    for (k, v) in labels {
        if !label_key_ok(k) {
            diag.error(
                src,
                format!("{field}.{k}"),
                format!("invalid tag key: {k:?}"),
            );
        }
        if !(v.is_empty() || qualified_name(v)) {
            diag.error(
                src,
                format!("{field}.{k}"),
                format!("invalid tag value: {v:?}"),
            );
        }
    }
}

fn label_key_ok(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                let b = l.as_bytes();
                !b.is_empty()
                    && b[0].is_ascii_alphanumeric()
                    && b[b.len() - 1].is_ascii_alphanumeric()
                    && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
            })
    });
    prefix_ok && name.len() <= 63 && qualified_name(name)
}

/// `(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`.
fn qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}
