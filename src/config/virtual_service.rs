//! `VirtualService` (networking.istio.io): routing rules.
//!
//! The foundation reads the mesh-side HTTP routes (`match.port`,
//! `route.destination.{host,port}`); the rest is parsed so that the ingress
//! work can build on it.

use serde::{Deserialize, Serialize};

/// `VirtualService.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VirtualServiceSpec {
    /// Hosts the routes apply to.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Gateways (and/or `mesh`) the routes bind to; `mesh` when empty.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// HTTP routes, first match wins.
    #[serde(default)]
    pub http: Vec<HttpRoute>,
    /// TLS (SNI) routes.
    #[serde(default)]
    pub tls: Vec<serde_json::Value>,
    /// TCP routes.
    #[serde(default)]
    pub tcp: Vec<serde_json::Value>,
    /// Visibility; ignored (single workload).
    #[serde(default)]
    pub export_to: Vec<String>,
}

/// `HTTPRoute`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoute {
    /// Route name.
    pub name: Option<String>,
    /// Conditions; any one matching selects the route.
    #[serde(rename = "match", default)]
    pub matches: Vec<HttpMatch>,
    /// Destinations with weights.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
    /// Any other HTTPRoute field (rewrite, timeout, retries, headers, ...).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `HTTPMatchRequest`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Destination port of the request.
    pub port: Option<u32>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Any other condition (uri, headers, method, ...).
    #[serde(flatten)]
    pub other: std::collections::BTreeMap<String, serde_json::Value>,
}

/// `HTTPRouteDestination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestination {
    /// Where to send the request.
    pub destination: Option<Destination>,
    /// Share of traffic, percent.
    pub weight: Option<u32>,
    /// Header manipulation; ingress work.
    pub headers: Option<serde_json::Value>,
}

/// `Destination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Destination host (registry name).
    pub host: Option<String>,
    /// DestinationRule subset.
    pub subset: Option<String>,
    /// Destination port.
    pub port: Option<PortSelector>,
}

/// `PortSelector`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortSelector {
    /// Port number.
    pub number: Option<u32>,
}
