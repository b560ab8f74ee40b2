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

use super::host::{HostPattern, most_specific};
use super::route::HttpRoutePlan;
use super::tls::CredentialRef;

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

impl ListenerPlan {
    /// A Sidecar ingress listener (the workload's own port, not a Gateway
    /// server nor the mesh listener): under capture it is served on the
    /// inbound capture listener by the dialled port instead of being bound,
    /// as the app itself listens there.
    pub fn is_sidecar(&self) -> bool {
        !self.mesh && self.servers.iter().all(|s| s.gateway.is_empty())
    }
}

impl InboundPlan {
    /// The listener that serves a captured inbound connection the client
    /// dialled to `port`: a Sidecar ingress or Gateway listener on that
    /// port, else the mesh inbound listener.
    pub fn captured_listener(&self, port: u16) -> Option<&ListenerPlan> {
        self.listeners
            .iter()
            .find(|l| !l.mesh && l.port == port)
            .or_else(|| self.listeners.iter().find(|l| l.mesh))
    }
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

    /// Whether the app behind this server is spoken to in h2c (HTTP2 and
    /// GRPC server ports, as in Istio).
    pub fn h2c_upstream(&self) -> bool {
        matches!(self.protocol, ServerProtocol::Http2 | ServerProtocol::Grpc)
    }

    /// Whether the server terminates TLS (as opposed to passing it through).
    pub fn terminates(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.mode != TlsServerMode::Passthrough)
    }
}

/// The server that takes a TLS connection, chosen by its SNI: the most
/// specific host match; with no SNI, a server for `*`. `None`: the
/// connection is refused (`unrecognized_name`), never given another host's
/// certificate.
pub fn select_server<'a>(
    servers: &'a [Arc<ServerPlan>],
    sni: Option<&str>,
) -> Option<&'a Arc<ServerPlan>> {
    match sni {
        Some(name) => most_specific(servers, name, |s| &s.hosts),
        None => servers.iter().find(|s| s.hosts.contains(&HostPattern::Any)),
    }
}

impl ListenerPlan {
    /// The server for a request's `host` (normalized, no port) on a
    /// plain-text port: the most specific match.
    pub fn server_for_host(&self, host: &str) -> Option<&Arc<ServerPlan>> {
        most_specific(&self.servers, host, |s| &s.hosts)
    }

    /// Whether another server on this listener names `host` more
    /// specifically than `server` (a TLS connection's, chosen by SNI): the
    /// request then belongs to that server and its TLS policy, even when
    /// `server` has a `*` host (421, as Istio's hardening guide expects).
    pub fn owned_elsewhere(&self, server: &ServerPlan, host: &str) -> bool {
        let specificity = |s: &ServerPlan| {
            s.hosts
                .iter()
                .filter(|h| h.matches(host))
                .map(|h| h.specificity())
                .max()
        };
        let mine = specificity(server);
        self.servers
            .iter()
            .any(|o| !std::ptr::eq(o.as_ref(), server) && specificity(o) > mine)
    }
}

impl ServerPlan {
    /// The bound VirtualService whose hosts match `host` most specifically.
    pub fn routes_for(&self, host: &str) -> Option<&GatewayRoutes> {
        most_specific(&self.routes, host, |vs| &vs.hosts).map(|vs| vs.as_ref())
    }

    /// The TLS route of a PASSTHROUGH server for `sni` on `port`: the first
    /// whose ports and SNI hosts fit.
    pub fn tls_route(&self, port: u16, sni: &str) -> Option<&L4RoutePlan> {
        self.routes.iter().flat_map(|vs| vs.tls.iter()).find(|r| {
            (r.ports.is_empty() || r.ports.contains(&port))
                && r.sni_hosts.iter().any(|h| h.matches(sni))
        })
    }

    /// The TCP route on `port`: the first whose ports fit.
    pub fn tcp_route(&self, port: u16) -> Option<&L4RoutePlan> {
        self.routes
            .iter()
            .flat_map(|vs| vs.tcp.iter())
            .find(|r| r.ports.is_empty() || r.ports.contains(&port))
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

mod binding;
pub(super) mod compile;
mod gateway;
mod sidecar;
mod tls;

#[cfg(test)]
mod tests;
