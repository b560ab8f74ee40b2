//! Inbound (termination) plan: Gateway servers and Sidecar ingress
//! listeners grouped into listeners by port, with their TLS settings and the
//! VirtualService routes bound to them.
//!
//! Istio's rules: a Gateway server's `hosts` (`[ns/]host`) decide which SNI
//! and Host values it serves; a VirtualService binds with `gateways:
//! [ns/name]` (or `name` in its own namespace) and applies to the servers
//! whose hosts its own hosts intersect; `tls.mode` defaults to PASSTHROUGH
//! (the proto's zero value); TLS below 1.2 is refused.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::Diagnostics;
use super::host::HostPattern;
use super::outbound::port_number;
use super::route::{HttpRoutePlan, compile_http_route};
use super::tls::CredentialRef;

use crate::config::{Config, Resource, Source};

/// Every inbound listener.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InboundPlan {
    /// Listeners by port, in port order.
    pub listeners: Vec<ListenerPlan>,
}

/// One listening port and the servers on it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerPlan {
    /// Port number from the config (the bootstrap may rebind it).
    pub port: u16,
    /// Bind IP from `server.bind`; the bootstrap's default when `None`.
    pub bind: Option<String>,
    /// Whether clients speak TLS on this port (HTTPS / TLS servers).
    pub tls: bool,
    /// TLS port that also accepts plain text (PeerAuthentication PERMISSIVE).
    pub permissive: bool,
    /// The mesh inbound listener (Istio's 15006): bound at the bootstrap's
    /// `mesh_inbound_addr`.
    pub mesh: bool,
    /// Servers in config order.
    pub servers: Vec<Arc<ServerPlan>>,
}

/// Protocol of a server port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerProtocol {
    /// HTTP/1.1 (and h2c prior knowledge).
    Http,
    /// HTTPS: TLS, then HTTP (or passthrough).
    Https,
    /// HTTP/2 in the clear.
    Http2,
    /// gRPC in the clear.
    Grpc,
    /// TLS: terminated then TCP, or passthrough.
    Tls,
    /// Opaque TCP.
    Tcp,
}

impl ServerProtocol {
    /// Whether requests are HTTP after any TLS is removed.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            ServerProtocol::Http
                | ServerProtocol::Https
                | ServerProtocol::Http2
                | ServerProtocol::Grpc
        )
    }
}

/// One Gateway server or Sidecar ingress listener.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerPlan {
    /// `file:line: Gateway/ns/name: spec.servers[i]`.
    pub origin: String,
    /// `ns/name` of the Gateway (empty for Sidecar listeners).
    pub gateway: String,
    /// Port protocol.
    pub protocol: ServerProtocol,
    /// Hosts served (namespace prefixes removed).
    pub hosts: Vec<HostPattern>,
    /// TLS settings; `None` for plain servers.
    pub tls: Option<ServerTlsPlan>,
    /// Answer plain HTTP with 301 to https.
    pub https_redirect: bool,
    /// VirtualServices bound to this server, in config order.
    pub routes: Vec<Arc<GatewayRoutes>>,
    /// Sidecar `defaultEndpoint` (`127.0.0.1:8080`): where traffic goes when
    /// no route applies.
    pub default_endpoint: Option<String>,
}

impl ServerPlan {
    /// Whether `host` (normalized, no port) is one this server serves.
    pub fn serves(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| h.matches(host))
    }

    /// Whether the server terminates TLS (as opposed to passing it through).
    pub fn terminates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.mode != TlsServerMode::Passthrough)
    }
}

/// The routes of one VirtualService, as bound to one server.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayRoutes {
    /// `file:line: VirtualService/ns/name`.
    pub resource: String,
    /// The VirtualService's hosts.
    pub hosts: Vec<HostPattern>,
    /// HTTP routes (first match wins).
    pub http: Vec<HttpRoutePlan>,
    /// SNI routes for PASSTHROUGH.
    pub tls: Vec<L4RoutePlan>,
    /// TCP routes for terminated or plain TCP.
    pub tcp: Vec<L4RoutePlan>,
}

/// A TLS (SNI) or TCP route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4RoutePlan {
    /// SNI patterns (TLS routes); empty matches any.
    pub sni_hosts: Vec<HostPattern>,
    /// Listener ports; empty matches any.
    pub ports: Vec<u16>,
    /// Weighted destinations.
    pub destinations: Vec<L4Destination>,
}

/// A destination of a TLS or TCP route.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Destination {
    /// Host (registry name or DNS name).
    pub host: String,
    /// Port.
    pub port: Option<u16>,
    /// Subset.
    pub subset: Option<String>,
    /// Weight.
    pub weight: u32,
}

/// Server TLS modes meshgate serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsServerMode {
    /// Forward the TLS bytes by SNI.
    Passthrough,
    /// Terminate.
    Simple,
    /// Terminate; client certificate required and verified.
    Mutual,
    /// Terminate; client certificate verified when sent.
    OptionalMutual,
}

/// TLS versions meshgate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum TlsVersion {
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    Tls12,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    Tls13,
}

/// Where a server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ServerCertSource {
    /// Certificate and key files.
    Files {
        /// Chain, leaf first.
        cert: PathBuf,
        /// Key.
        key: PathBuf,
    },
    /// A Secret (`cert`/`key` or `tls.crt`/`tls.key`).
    Credential(CredentialRef),
}

/// Where the CA for client certificates comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientCaSource {
    /// A PEM file (`caCertificates`).
    File(PathBuf),
    /// `<credentialName>-cacert`, else `<credentialName>` (Istio's rule).
    Credential(CredentialRef),
    /// `caCertCredentialName`: a Secret or ConfigMap with `cacert`/`ca.crt`.
    CaCredential(CredentialRef),
}

/// Compiled server TLS settings.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsPlan {
    /// Mode.
    pub mode: TlsServerMode,
    /// One or two certificates (RSA and ECDSA side by side).
    pub certs: Vec<ServerCertSource>,
    /// CA for client certificates (MUTUAL / OPTIONAL_MUTUAL).
    pub client_ca: Option<ClientCaSource>,
    /// CRL for client certificates.
    pub crl: Option<PathBuf>,
    /// Client SANs allowed (any one); empty allows all.
    pub subject_alt_names: Vec<String>,
    /// Allowed SHA-256 SPKI digests of client certificates.
    #[serde(serialize_with = "hex_list")]
    pub spki_sha256: Vec<Vec<u8>>,
    /// Allowed SHA-256 digests of client certificates.
    #[serde(serialize_with = "hex_list")]
    pub cert_sha256: Vec<Vec<u8>>,
    /// Lowest version.
    pub min_version: TlsVersion,
    /// Highest version.
    pub max_version: TlsVersion,
    /// TLS 1.2 cipher suites (IANA names); empty = rustls defaults.
    pub cipher_suites: Vec<String>,
    /// Accept client certificates that fail validation (Istio's field).
    pub insecure_skip_verify: bool,
    /// `file:line: Kind/ns/name: field`.
    pub origin: String,
}

/// How a config enum value is spelled in YAML (`ISTIO_MUTUAL`, `TLSV1_1`).
fn yaml_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn hex_list<S: serde::Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for b in v {
        seq.serialize_element(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())?;
    }
    seq.end()
}

/// OpenSSL names Istio accepts → IANA names of the suites rustls implements.
pub const CIPHER_SUITES: [(&str, &str); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
    ),
];

// === compile ===

pub(crate) fn compile(config: &Config, diag: &mut Diagnostics) -> InboundPlan {
    let mut servers: Vec<(u16, Option<String>, ServerPlan, Source, String)> = Vec::new();
    for gw in &config.gateways {
        let gw_id = format!("{}/{}", gw.source.namespace, gw.source.name);
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            if let Some((port, plan)) = compile_gateway_server(gw, &gw_id, s, &field, config, diag)
            {
                let bind = s.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, gw.source.clone(), field));
            }
        }
    }
    for sc in &config.sidecars {
        for (i, l) in sc.spec.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            if let Some((port, plan)) = compile_sidecar_listener(&sc.source, l, &field, diag) {
                let bind = l.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, sc.source.clone(), field));
            }
        }
    }
    // Istio's IST0101: a VirtualService naming a Gateway that is not there.
    for vs in &config.virtual_services {
        for g in vs.spec.gateways.iter().filter(|g| *g != "mesh") {
            let known = config.gateways.iter().any(|gw| {
                let id = format!("{}/{}", gw.source.namespace, gw.source.name);
                gateway_ref_matches(g, &vs.source.namespace, &id)
            });
            if !known {
                diag.warn(
                    &vs.source,
                    "spec.gateways",
                    format!("gateway {g:?} is not in the configuration; routes bound to it are not served"),
                );
            }
        }
    }
    let mut listeners: Vec<ListenerPlan> = Vec::new();
    for (port, bind, server, src, field) in servers {
        let tls = matches!(server.protocol, ServerProtocol::Https | ServerProtocol::Tls);
        match listeners.iter_mut().find(|l| l.port == port && l.bind == bind) {
            Some(l) if l.tls != tls => diag.error(
                &src,
                format!("{field}.port"),
                format!(
                    "port {port} would mix TLS and plain-text servers (the other is {}); use separate ports",
                    l.servers[0].origin
                ),
            ),
            Some(l) => {
                for other in &l.servers {
                    for h in &server.hosts {
                        if other.hosts.contains(h) {
                            diag.warnings.push(format!(
                                "{}: host {h} on port {port} is also served by {}; the first one wins",
                                server.origin, other.origin
                            ));
                        }
                    }
                }
                l.servers.push(Arc::new(server));
            }
            None => listeners.push(ListenerPlan {
                port,
                bind,
                tls,
                permissive: false,
                mesh: false,
                servers: vec![Arc::new(server)],
            }),
        }
    }
    listeners.sort_by_key(|l| l.port);
    listeners.extend(mesh_inbound(config, diag));
    InboundPlan { listeners }
}

fn parse_protocol(
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
        "" => {
            diag.error(
                src,
                field,
                "required (HTTP, HTTPS, HTTP2, GRPC, TLS or TCP)",
            );
            return None;
        }
        other => {
            diag.error(
                src,
                field,
                format!("{other:?} is not supported (HTTP, HTTPS, HTTP2, GRPC, TLS or TCP)"),
            );
            return None;
        }
    };
    Some(proto)
}

fn compile_gateway_server(
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
    let mut hosts = Vec::new();
    for (i, h) in s.hosts.iter().enumerate() {
        // `ns/host`: the namespace part scopes VirtualServices in Istio; a
        // single workload sees every namespace, so only the host matters.
        let host = h.split_once('/').map(|(_, h)| h).unwrap_or(h);
        match HostPattern::parse(host) {
            Ok(p) => hosts.push(p),
            Err(e) => diag.error(src, format!("{field}.hosts[{i}]"), e),
        }
    }
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
        if let Some(r) = compile_bound_routes(
            vs,
            &hosts,
            number,
            &|g: &[String]| g.is_empty() || applies(g, vs_ns),
            diag,
        ) {
            routes.push(Arc::new(r));
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

mod binding;
mod sidecar;
mod tls;

use binding::{compile_bound_routes, gateway_ref_matches};
use sidecar::{compile_sidecar_listener, mesh_inbound};

use tls::compile_server_tls;

#[cfg(test)]
mod tests;
