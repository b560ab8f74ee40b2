//! Compiling one Gateway server, and the server protocol shared with
//! Sidecar ingress listeners.

use std::sync::Arc;

use super::binding::{
    ServerHost, compile_bound_routes, gateway_ref_matches, hosts_for_namespace, intersection,
};
use super::tls::compile_server_tls;
use super::{ServerPlan, ServerProtocol};
use crate::config::{Config, Resource, Source};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::host::HostPattern;
use crate::plan::port::port_number;

/// What a server port's `protocol` may be, as Istio's validation lists it.
const SERVER_PROTOCOLS: &str =
    "HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, MONGO, REDIS or MYSQL";

pub(super) fn parse_protocol(
    raw: Option<&str>,
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<ServerProtocol> {
    let p = raw.unwrap_or("").to_ascii_uppercase();
    let proto = match p.as_str() {
        "HTTP" => ServerProtocol::Http,
        "HTTPS" => ServerProtocol::Https,
        "HTTP2" => ServerProtocol::Http2,
        "GRPC" | "GRPC-WEB" => ServerProtocol::Grpc,
        "TLS" => ServerProtocol::Tls,
        "TCP" => ServerProtocol::Tcp,
        // Istio's other L4 protocols: Envoy proxies them as TCP (its
        // MongoDB/Redis/MySQL filters are off unless enabled).
        "MONGO" | "REDIS" | "MYSQL" => ServerProtocol::Tcp,
        "" => {
            diag.error(src, field, format!("required ({SERVER_PROTOCOLS})"));
            return None;
        }
        other => {
            // Istio's validation refuses it too ("invalid protocol").
            diag.error(
                src,
                field,
                format!("{other:?} is not a protocol Istio accepts ({SERVER_PROTOCOLS})"),
            );
            return None;
        }
    };
    Some(proto)
}

pub(super) fn compile_gateway_server(
    gw: &Resource<crate::config::gateway::GatewaySpec>,
    gw_id: &str,
    s: &crate::config::gateway::Server,
    field: &str,
    config: &Config,
    diag: &mut Diagnostics,
) -> Option<(u16, ServerPlan)> {
    let src = &gw.source;
    let before = diag.errors.len();
    let port = s.port.as_ref();
    let number = port_number(
        port.and_then(|p| p.number),
        src,
        &format!("{field}.port.number"),
        diag,
    );
    let protocol = parse_protocol(
        port.and_then(|p| p.protocol.as_deref()),
        src,
        &format!("{field}.port.protocol"),
        diag,
    );
    if let Some(b) = &s.bind
        && !b.is_empty()
        && b.parse::<std::net::IpAddr>().is_err()
    {
        diag.error(
            src,
            format!("{field}.bind"),
            format!("{b:?}: only IP addresses are supported (no unix sockets yet)"),
        );
    }
    if s.hosts.is_empty() {
        diag.error(
            src,
            format!("{field}.hosts"),
            "at least one host is required",
        );
    }
    // `ns/host`: only VirtualServices of `ns` (`*`: any, `.`: the
    // Gateway's) bind to `host`; the plan keeps the host patterns.
    let mut scoped_hosts = Vec::new();
    for (i, h) in s.hosts.iter().enumerate() {
        match ServerHost::parse(h, &src.namespace) {
            Ok(p) => scoped_hosts.push(p),
            Err(e) => diag.error(src, format!("{field}.hosts[{i}]"), e),
        }
    }
    let hosts: Vec<HostPattern> = scoped_hosts.iter().map(|h| h.host.clone()).collect();
    let (Some(number), Some(protocol)) = (number, protocol) else {
        return None;
    };
    let origin = format!("{src}: {field}");
    let mut https_redirect = false;
    let tls = match (&s.tls, protocol) {
        (Some(t), ServerProtocol::Https | ServerProtocol::Tls) => {
            compile_server_tls(t, src, &format!("{field}.tls"), false, diag)
        }
        (None, ServerProtocol::Https | ServerProtocol::Tls) => {
            diag.error(
                src,
                format!("{field}.tls"),
                "required for HTTPS and TLS servers",
            );
            None
        }
        (Some(t), _) => {
            https_redirect = t.https_redirect == Some(true);
            let others = t.mode.is_some()
                || t.credential_name.is_some()
                || !t.credential_names.is_empty()
                || !t.tls_certificates.is_empty()
                || t.server_certificate.is_some()
                || t.private_key.is_some()
                || t.ca_certificates.is_some()
                || t.ca_cert_credential_name.is_some()
                || t.min_protocol_version.is_some()
                || t.max_protocol_version.is_some()
                || !t.cipher_suites.is_empty()
                || !t.subject_alt_names.is_empty();
            if others {
                diag.warn(src, &format!("{field}.tls"), "only httpsRedirect applies to a plain-text server; the other TLS fields are ignored");
            }
            None
        }
        (None, _) => None,
    };
    let applies = |gateways: &[String], vs_ns: &str| -> bool {
        gateways
            .iter()
            .any(|g| gateway_ref_matches(g, vs_ns, gw_id))
    };
    let mut routes = Vec::new();
    for vs in &config.virtual_services {
        let vs_ns = vs.source.namespace.as_str();
        if !applies(&vs.spec.gateways, vs_ns) {
            continue;
        }
        let open = hosts_for_namespace(&scoped_hosts, vs_ns);
        if let Some(r) = compile_bound_routes(
            vs,
            &open,
            number,
            &|g: &[String]| g.is_empty() || applies(g, vs_ns),
            diag,
        ) {
            routes.push(Arc::new(r));
        } else if open.len() < hosts.len() {
            let vs_hosts: Vec<HostPattern> = vs
                .spec
                .hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect();
            if !intersection(&hosts, &vs_hosts).is_empty() {
                diag.warn(
                    &vs.source,
                    "spec.hosts",
                    format!(
                        "not bound to {origin}: the server hosts it matches admit \
                         VirtualServices of other namespaces only ({}), and it is in {vs_ns:?}",
                        s.hosts.join(", ")
                    ),
                );
            }
        }
    }
    if diag.errors.len() != before {
        return None;
    }
    Some((
        number,
        ServerPlan {
            origin,
            gateway: gw_id.to_string(),
            protocol,
            hosts,
            tls,
            https_redirect,
            routes,
            default_endpoint: None,
        },
    ))
}
