//! What an authorization decision is made on: the connection's and the
//! request's attributes, and a validated token.

use std::net::IpAddr;

/// A validated JSON Web Token (RequestAuthentication).
#[derive(Debug, Clone, Default)]
pub struct RequestAuth {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// Every claim of the payload (`aud`, `azp` and the others).
    pub claims: serde_json::Map<String, serde_json::Value>,
}

impl RequestAuth {
    /// Istio's request principal: `<iss>/<sub>`.
    pub fn principal(&self) -> String {
        format!("{}/{}", self.issuer, self.subject)
    }
}

/// What a decision is made on.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    /// The connection's peer address (`source.ip`, `ipBlocks`).
    pub source_ip: IpAddr,
    /// The original client (`remote.ip`, `remoteIpBlocks`): the peer, or
    /// an `X-Forwarded-For` entry with `numTrustedProxies`.
    pub remote_ip: IpAddr,
    /// The peer's verified identity (a client certificate's URI SAN, e.g.
    /// `spiffe://cluster.local/ns/x/sa/y`); `None` without one.
    pub principal: Option<&'a str>,
    /// The address the client connected to (`destination.ip`).
    pub destination_ip: Option<IpAddr>,
    /// The port the client connected to (`destination.port`, `ports`).
    pub destination_port: u16,
    /// The SNI the client sent (`connection.sni`).
    pub sni: Option<&'a str>,
    /// The request, for HTTP; `None` for a TCP connection.
    pub http: Option<HttpAttributes<'a>>,
}

/// An HTTP request's attributes.
#[derive(Debug, Clone)]
pub struct HttpAttributes<'a> {
    /// The authority as the client sent it (`hosts`).
    pub host: &'a str,
    /// The method (`methods`).
    pub method: &'a str,
    /// The normalised path without the query (`paths`).
    pub path: &'a str,
    /// The normalised path with the query (`request.headers[:path]`).
    pub path_and_query: &'a str,
    /// `http` or `https` (`request.headers[:scheme]`).
    pub scheme: &'a str,
    /// The request headers (`request.headers[...]`).
    pub headers: &'a http::HeaderMap,
    /// The validated token (`requestPrincipals`, `request.auth.*`).
    pub auth: Option<&'a RequestAuth>,
}

impl HttpAttributes<'_> {
    /// A pseudo-header's value, as Envoy's header matchers see it
    /// (`:method`, `:path`, `:authority` or `host`, `:scheme`).
    pub fn pseudo(&self, name: &str) -> Option<&str> {
        match name {
            ":method" => Some(self.method),
            ":path" => Some(self.path_and_query),
            ":authority" | "host" => Some(self.host),
            ":scheme" => Some(self.scheme),
            _ => None,
        }
    }
}
