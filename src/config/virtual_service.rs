//! `VirtualService` (networking.istio.io): routing rules for the mesh
//! (outbound) and for gateways (inbound).

use std::collections::BTreeMap;

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
    pub tls: Vec<TlsRoute>,
    /// TCP routes.
    #[serde(default)]
    pub tcp: Vec<TcpRoute>,
    /// Namespaces the routes are visible to (`.`, `*`, names); routes not
    /// exported to the proxy's namespace are ignored (`plan::scope`).
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
    /// URI / authority rewrite.
    pub rewrite: Option<Rewrite>,
    /// Request timeout, e.g. `5s`.
    pub timeout: Option<String>,
    /// Header manipulation.
    pub headers: Option<Headers>,
    /// Retry policy; Istio's default policy when absent.
    pub retries: Option<HttpRetry>,
    /// Any other HTTPRoute field (redirect, fault, mirror, ...).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `HTTPRetry`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HttpRetry {
    /// Retries allowed after the first try; 0 (or absent) disables retries.
    pub attempts: Option<i64>,
    /// Timeout of each try, e.g. `2s`.
    pub per_try_timeout: Option<String>,
    /// Comma-separated conditions (Envoy's `retry_on` names and status codes).
    pub retry_on: Option<String>,
    /// Retry in other localities; meshgate has no localities.
    pub retry_remote_localities: Option<bool>,
    /// Retry on the same endpoint as the failed try.
    pub retry_ignore_previous_hosts: Option<bool>,
    /// Base interval between retries, e.g. `25ms`.
    pub backoff: Option<String>,
}

/// `HTTPMatchRequest`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Match name.
    pub name: Option<String>,
    /// URI condition.
    pub uri: Option<StringMatch>,
    /// Scheme condition.
    pub scheme: Option<StringMatch>,
    /// Method condition.
    pub method: Option<StringMatch>,
    /// Authority (Host) condition.
    pub authority: Option<StringMatch>,
    /// Header conditions (lower-case names).
    #[serde(default)]
    pub headers: BTreeMap<String, StringMatch>,
    /// Destination port of the request.
    pub port: Option<u32>,
    /// Gateways this match applies to.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Case-insensitive URI matching.
    pub ignore_uri_case: Option<bool>,
    /// Query parameter conditions.
    #[serde(default)]
    pub query_params: BTreeMap<String, StringMatch>,
    /// Headers that must be absent (or not match).
    #[serde(default)]
    pub without_headers: BTreeMap<String, StringMatch>,
    /// Any other condition (sourceLabels, sourceNamespace, statPrefix).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `StringMatch`: exactly one of exact, prefix, regex.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StringMatch {
    /// Exact value.
    pub exact: Option<String>,
    /// Prefix.
    pub prefix: Option<String>,
    /// RE2 regular expression, matched against the whole value.
    pub regex: Option<String>,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces the matched prefix (or the whole path for exact/regex).
    pub uri: Option<String>,
    /// Replaces the Host / authority.
    pub authority: Option<String>,
    /// Regex rewrite; not implemented.
    pub uri_regex_rewrite: Option<serde_json::Value>,
}

/// `Headers`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Headers {
    /// Changes to the request.
    pub request: Option<HeaderOperations>,
    /// Changes to the response.
    pub response: Option<HeaderOperations>,
}

/// `Headers.HeaderOperations`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HeaderOperations {
    /// Overwrite.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Append.
    #[serde(default)]
    pub add: BTreeMap<String, String>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// `HTTPRouteDestination` / `RouteDestination`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RouteDestination {
    /// Where to send the request.
    pub destination: Option<Destination>,
    /// Share of traffic, percent.
    pub weight: Option<u32>,
    /// Header manipulation for this destination.
    pub headers: Option<Headers>,
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

/// `TLSRoute`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsRoute {
    /// Conditions (SNI hosts).
    #[serde(rename = "match", default)]
    pub matches: Vec<TlsMatch>,
    /// Destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `TLSMatchAttributes`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsMatch {
    /// SNI values (wildcards allowed).
    #[serde(default)]
    pub sni_hosts: Vec<String>,
    /// Port.
    pub port: Option<u32>,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Other conditions (destinationSubnets, sourceLabels, sourceNamespace).
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// `TCPRoute`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TcpRoute {
    /// Conditions.
    #[serde(rename = "match", default)]
    pub matches: Vec<L4Match>,
    /// Destinations.
    #[serde(default)]
    pub route: Vec<RouteDestination>,
}

/// `L4MatchAttributes`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct L4Match {
    /// Port.
    pub port: Option<u32>,
    /// Gateways.
    #[serde(default)]
    pub gateways: Vec<String>,
    /// Other conditions.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}
