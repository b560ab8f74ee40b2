//! What `meshgate explain` reports: one [`Explanation`] per request, printed
//! as text or serialized as one JSON object. Field names are camelCase and
//! stable; a part that does not apply is `null` (never left out), so
//! scripts can rely on every field being there.

use std::time::Duration;

use serde::Serialize;

use crate::plan::route::RetryPlan;

/// Which way the request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Direction {
    /// From the local app through the outbound listener.
    Outbound,
    /// From a client to a Gateway server or Sidecar ingress listener.
    Inbound,
}

/// How the request reaches meshgate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RequestKind {
    /// Plain HTTP from the app (`http://` URL).
    Http,
    /// A CONNECT tunnel (`https://` URL, or `host:port`).
    Connect,
    /// A TLS connection (inbound).
    Tls,
    /// Plain text on an inbound port.
    Plaintext,
}

/// Everything meshgate would do with one request.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    /// `outbound` or `inbound`.
    pub direction: Direction,
    /// The request as understood.
    pub request: RequestInfo,
    /// Whether the request reaches a destination (an upstream or the app).
    /// A response meshgate makes itself (refusal, redirect, direct
    /// response, injected abort) is not served.
    pub served: bool,
    /// Why it is not served, and what to change.
    pub refusal: Option<Refusal>,
    /// The resources that decided, in the order they apply.
    pub matched: Vec<Matched>,
    /// Inbound: the listener on the port.
    pub listener: Option<ListenerInfo>,
    /// Inbound: the server that takes the connection.
    pub server: Option<ServerInfo>,
    /// Inbound: the server's TLS.
    pub server_tls: Option<ServerTlsInfo>,
    /// Inbound: the `--client-cert` given, checked as the server would.
    pub client_certificate: Option<ClientCertCheck>,
    /// The VirtualService route that applies.
    pub route: Option<RouteInfo>,
    /// Where the request goes.
    pub destination: Option<DestinationInfo>,
    /// Outbound: the `outboundTlsPolicy` decision on what leaves the pod.
    pub tls_policy: Option<TlsPolicyInfo>,
    /// Anything else worth knowing.
    pub notes: Vec<String>,
    /// Errors in parts of the configuration left out while the rest is
    /// served (a port whose server does not load, a credential that does
    /// not load: what uses it fails closed).
    pub left_out: Vec<String>,
}

impl Explanation {
    /// An explanation with nothing decided yet.
    pub fn new(direction: Direction, request: RequestInfo) -> Explanation {
        Explanation {
            direction,
            request,
            served: false,
            refusal: None,
            matched: Vec::new(),
            listener: None,
            server: None,
            server_tls: None,
            client_certificate: None,
            route: None,
            destination: None,
            tls_policy: None,
            notes: Vec::new(),
            left_out: Vec::new(),
        }
    }

    /// Records what the configuration left out, with a note when anything
    /// was.
    pub fn left_out(&mut self, isolated: &[String]) {
        if !isolated.is_empty() {
            self.notes.push(format!(
                "{} part(s) of the configuration did not load and are left out (leftOut): a port whose server does not load is not served, and what uses a credential that does not load fails closed",
                isolated.len()
            ));
        }
        self.left_out = isolated.to_vec();
    }

    /// Records the refusal (the first one wins: it is what the client sees).
    pub fn refuse(&mut self, refusal: Refusal) {
        self.served = false;
        if self.refusal.is_none() {
            self.refusal = Some(refusal);
        }
    }

    /// Settles `served`: a destination was reached and nothing refused.
    pub fn finish(mut self) -> Explanation {
        self.served = self.refusal.is_none() && self.destination.is_some();
        self
    }
}

/// The request, as explain understood it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RequestInfo {
    /// What was asked, as given (URL, `host:port`, or the inbound flags).
    pub target: String,
    /// How it reaches meshgate.
    pub kind: RequestKind,
    /// Host (normalized, no port); `None` when not known.
    pub host: Option<String>,
    /// Port the request is for (outbound) or arrives on (inbound).
    pub port: u16,
    /// Path and query after meshgate's normalisation.
    pub path: Option<String>,
    /// Method.
    pub method: Option<String>,
    /// SNI the client sends (inbound).
    pub sni: Option<String>,
}

/// Why a request is not served.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Refusal {
    /// Stable short reason (`registry_only`, `unknown_sni`, `no_route`, ...).
    pub code: String,
    /// HTTP status the client gets, when it gets one.
    pub status: Option<u16>,
    /// TLS alert the client gets, when refused in the handshake.
    pub alert: Option<String>,
    /// What happens and why.
    pub reason: String,
    /// What to change for the request to be served.
    pub suggestion: Option<String>,
}

impl Refusal {
    /// A refusal answered with an HTTP status.
    pub fn status(code: &str, status: u16, reason: String, suggestion: Option<String>) -> Refusal {
        Refusal {
            code: code.into(),
            status: Some(status),
            alert: None,
            reason,
            suggestion,
        }
    }

    /// A refusal in the TLS handshake, with the alert sent.
    pub fn alert(code: &str, alert: &str, reason: String, suggestion: Option<String>) -> Refusal {
        Refusal {
            code: code.into(),
            status: None,
            alert: Some(alert.into()),
            reason,
            suggestion,
        }
    }

    /// A connection closed (or never accepted) without a response.
    pub fn closed(code: &str, reason: String, suggestion: Option<String>) -> Refusal {
        Refusal {
            code: code.into(),
            status: None,
            alert: None,
            reason,
            suggestion,
        }
    }
}

/// A resource that took part in the decision.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Matched {
    /// `ServiceEntry`, `DestinationRule`, `VirtualService`, `Gateway`,
    /// `Sidecar`, ...
    pub kind: String,
    /// Where it is written: `file:line: Kind/namespace/name[: field]`.
    pub at: String,
    /// Which part applied, and how.
    pub detail: String,
}

/// An inbound listener.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerInfo {
    /// Port from the config.
    pub port: u16,
    /// Bind IP, when a server names one.
    pub bind: Option<String>,
    /// Clients speak TLS on it.
    pub tls: bool,
    /// Plain text is accepted too (PeerAuthentication PERMISSIVE).
    pub permissive: bool,
    /// The mesh inbound listener.
    pub mesh: bool,
    /// Servers on the port.
    pub servers: usize,
}

/// The server that takes an inbound connection.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerInfo {
    /// `file:line: Gateway/ns/name: spec.servers[i]`.
    pub at: String,
    /// Port protocol.
    pub protocol: String,
    /// Hosts it serves.
    pub hosts: Vec<String>,
    /// How it was chosen.
    pub selected_by: String,
}

/// A server's TLS settings, with what was loaded for them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerTlsInfo {
    /// `SIMPLE`, `MUTUAL`, `OPTIONAL_MUTUAL`, `PASSTHROUGH`.
    pub mode: String,
    /// Where the settings are written.
    pub at: String,
    /// The certificates presented (none for PASSTHROUGH).
    pub certificates: Vec<ServerCertInfo>,
    /// Whether a certificate covers the SNI; `None` without SNI or
    /// certificate.
    pub covers_sni: Option<bool>,
    /// `required`, `optional` or `notRequested`.
    pub client_certificate: String,
    /// Where client certificates are verified against.
    pub client_ca: Option<String>,
    /// Client SANs allowed (any one); empty allows every verified client.
    pub client_subject_alt_names: Vec<String>,
    /// Lowest TLS version (`TLSV1_2`).
    pub min_version: String,
    /// Highest TLS version.
    pub max_version: String,
    /// Client certificates accepted even when they fail validation.
    pub insecure_skip_verify: bool,
}

/// One server certificate.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServerCertInfo {
    /// Files or Secret it was loaded from.
    pub source: String,
    /// Subject DN.
    pub subject: String,
    /// SANs (`DNS:name`, `URI:...`).
    pub sans: Vec<String>,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whether it covers the SNI; `None` without SNI.
    pub covers_sni: Option<bool>,
}

/// A client certificate checked against a server's client CA and lists.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientCertCheck {
    /// The file given.
    pub file: String,
    /// Leaf subject DN.
    pub subject: String,
    /// Leaf SANs.
    pub sans: Vec<String>,
    /// End of validity (RFC 3339).
    pub not_after: String,
    /// Whether the server would accept it; `None` when the server does not
    /// ask for one (it is not looked at).
    pub accepted: Option<bool>,
    /// Stable reason of a rejection (`unknown_ca`, `san_not_allowed`, ...).
    pub reason: Option<String>,
    /// Details of a rejection.
    pub detail: Option<String>,
}

/// The VirtualService route that applies.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteInfo {
    /// `file:line: VirtualService/ns/name`.
    pub at: String,
    /// Position among the VirtualService's routes that apply here (from 0).
    pub index: Option<usize>,
    /// The route's `name`.
    pub name: Option<String>,
    /// `forward`, `redirect`, `directResponse`, `faultAbort`.
    pub action: String,
    /// Request timeout (`0s`: none).
    pub timeout: Option<String>,
    /// Retry policy.
    pub retries: Option<RetryInfo>,
    /// Path and authority sent upstream when rewritten.
    pub rewrite: Option<String>,
    /// Fault injection on the route.
    pub fault: Option<String>,
}

/// A route's retry policy.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryInfo {
    /// Retries after the first try.
    pub attempts: u32,
    /// Timeout of each try.
    pub per_try_timeout: Option<String>,
    /// When to retry (`retryOn` conditions).
    pub retry_on: Vec<String>,
    /// Statuses retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
}

impl RetryInfo {
    /// From a compiled policy.
    pub fn of(plan: &RetryPlan) -> RetryInfo {
        RetryInfo {
            attempts: plan.attempts,
            per_try_timeout: plan.per_try_timeout.map(secs),
            retry_on: plan.retry_on.iter().map(yaml_name).collect(),
            retriable_status_codes: plan.retriable_status_codes.clone(),
        }
    }
}

/// Where the request goes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DestinationInfo {
    /// `registered` (a ServiceEntry declares it), `ruleOnly` (no
    /// ServiceEntry, a DestinationRule originates TLS), `passthrough`
    /// (ALLOW_ANY, as is), `host` (a route to a host no ServiceEntry
    /// declares), `defaultEndpoint` (a Sidecar's app).
    pub kind: String,
    /// Destination host.
    pub host: String,
    /// Destination (service) port.
    pub port: u16,
    /// The port's declared protocol.
    pub protocol: Option<String>,
    /// Endpoints dialled (`address:port`, after targetPort and endpoint
    /// ports); a name is resolved by DNS at connect time.
    pub endpoints: Vec<String>,
    /// ServiceEntry resolution.
    pub resolution: Option<String>,
    /// Whether a weighted route chose this among several destinations.
    pub weighted: bool,
    /// Whether HTTP/2 is spoken to it (h2 by ALPN, or h2c).
    pub http2: bool,
    /// TLS originated by meshgate; `None`: plain text (or the app's own
    /// TLS through a tunnel).
    pub tls: Option<UpstreamTlsInfo>,
    /// Pool limits and timeouts (Istio's defaults where no
    /// DestinationRule sets them); `None` where meshgate keeps no pool.
    pub pool: Option<PoolInfo>,
}

/// The `outboundTlsPolicy` decision on an outbound request or tunnel.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsPolicyInfo {
    /// `ALLOW` or `REQUIRE`.
    pub mode: String,
    /// `allowed` or `refused`.
    pub decision: String,
    /// Why: `originatedTls` (a DestinationRule), `appTls` (the app's own
    /// TLS passes through), `exception`, `allowMode` (plain text under
    /// ALLOW) or `plaintext` (refused).
    pub because: String,
    /// The exception that lists the destination (`host:port`).
    pub exception: Option<String>,
    /// In a sentence.
    pub detail: String,
}

/// TLS that meshgate originates to the destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamTlsInfo {
    /// `SIMPLE`, `MUTUAL` or `ISTIO_MUTUAL`.
    pub mode: String,
    /// Where the settings are written.
    pub at: String,
    /// SNI sent.
    pub sni: String,
    /// Names the server certificate must carry (any one).
    pub expected_sans: Vec<String>,
    /// Roots the server's chain is verified against.
    pub ca: String,
    /// Client certificate presented (MUTUAL).
    pub client_certificate: Option<String>,
    /// Revocation list applied to the server's chain.
    pub crl: Option<String>,
    /// Lowest TLS version offered.
    pub min_version: String,
    /// Highest TLS version offered.
    pub max_version: String,
    /// Chain and name are not verified.
    pub insecure_skip_verify: bool,
}

/// Connection pool settings of a destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolInfo {
    /// TCP connect timeout.
    pub connect_timeout: String,
    /// Idle time before a pooled connection closes (`0s`: never).
    pub idle_timeout: String,
    /// Requests per connection (0: unlimited).
    pub max_requests_per_connection: u32,
    /// `tcp.maxConnections`.
    pub max_connections: u32,
    /// `http.http1MaxPendingRequests`.
    pub http1_max_pending_requests: u32,
    /// `http.http2MaxRequests`.
    pub http2_max_requests: u32,
    /// `outlierDetection`, in brief.
    pub outlier_detection: Option<String>,
}

/// A duration as the config writes it (`10s`, `0.5s`).
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// How a serialized enum is spelled in YAML (`SIMPLE`, `STATIC`).
pub fn yaml_name<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|j| j.as_str().map(str::to_string))
        .unwrap_or_default()
}
