//! Compiled HTTP routes (a VirtualService's `http` entries) and request
//! matching, with the semantics Envoy gives Istio's `HTTPRoute`:
//! - `match`: any one `HTTPMatchRequest` selects the route; within one, every
//!   condition must hold. No `match` at all matches everything.
//! - `uri.prefix` is tested against the whole `:path` (query included),
//!   `uri.exact` and `uri.regex` against the path without the query; regexes
//!   are RE2-style full matches. `ignoreUriCase` folds ASCII case.
//! - `rewrite.uri` replaces the matched prefix; a match without a `uri`
//!   condition is Envoy's prefix `/`, so the leading `/` is what is replaced
//!   (<https://github.com/istio/istio/issues/45148>). After an exact or regex
//!   match the whole path is replaced; the query is kept either way.
//! - Destination weights are relative (Istio ≥ 1.15 dropped "must sum to
//!   100", <https://github.com/istio/istio/pull/39544>); more than one
//!   destination with a zero total is an error.
//!
//! Pure: no sockets, no tokio. Only `http` types for header maps.

use std::borrow::Cow;
use std::str::FromStr;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Serialize;

pub mod fault;

pub use fault::{FaultPlan, Share};

/// A request as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method, as sent (`GET`).
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host / `:authority` as sent (may include `:port`).
    pub authority: &'a str,
    /// Origin-form target, `/a/b?x=1`.
    pub path_and_query: &'a str,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Listener port the request arrived on.
    pub port: u16,
}

/// One compiled `HTTPRoute`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRoutePlan {
    /// `name`, for logs and the access log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Conditions, any one selects the route; empty matches everything.
    pub matches: Vec<HttpMatchPlan>,
    /// Weighted destinations (empty for redirects and direct responses).
    pub destinations: Vec<RouteDestinationPlan>,
    /// URI / authority rewrite before forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<RewritePlan>,
    /// Request timeout; `Some(ZERO)` disables it, as in Istio.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub timeout: Option<Duration>,
    /// Retry policy (Istio's default when the route is silent).
    pub retries: std::sync::Arc<RetryPlan>,
    /// Changes to the request (applied after a destination's own).
    pub request_headers: HeaderOpsPlan,
    /// Changes to the response (applied after a destination's own).
    pub response_headers: HeaderOpsPlan,
    /// Answer with a redirect instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redirect: Option<RedirectPlan>,
    /// Answer with a fixed response instead of forwarding.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub direct_response: Option<DirectResponsePlan>,
    /// Delay and/or abort injected before the route acts (`fault`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<FaultPlan>,
}

/// One compiled `HTTPMatchRequest`; every condition must hold.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatchPlan {
    /// Path condition (prefix: whole `:path`; exact/regex: path sans query).
    pub uri: Option<StrMatch>,
    /// Scheme condition, ASCII case-insensitive for exact/prefix.
    pub scheme: Option<StrMatch>,
    /// Method condition, case-sensitive.
    pub method: Option<StrMatch>,
    /// Authority condition on the Host as sent, ASCII case-insensitive for
    /// exact/prefix.
    pub authority: Option<StrMatch>,
    /// Headers that must be present and match (lower-case names); several
    /// values of one header are joined with `,` as Envoy does.
    pub headers: Vec<(String, StrMatch)>,
    /// Headers that must be absent or not match.
    pub without_headers: Vec<(String, StrMatch)>,
    /// Query parameters (first occurrence, not percent-decoded).
    pub query_params: Vec<(String, StrMatch)>,
    /// Listener port.
    pub port: Option<u16>,
    /// `ignoreUriCase`.
    pub ignore_uri_case: bool,
}

/// A compiled `StringMatch`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum StrMatch {
    /// Whole value equal.
    Exact(String),
    /// Value starts with.
    Prefix(String),
    /// RE2-style full match.
    Regex(CompiledRegex),
    /// Header present with any value: `{}` or `regex: "*"`, only for
    /// `headers` and `withoutHeaders` (Istio's `present_match`).
    Present,
}

/// A regex anchored as `^(?:..)$`; serializes as the source written.
#[derive(Debug, Clone)]
pub struct CompiledRegex {
    source: String,
    regex: regex::Regex,
}

/// What matched, for rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Matched<'a> {
    /// The prefix the request's path was matched on: the `uri.prefix`, or
    /// `/` when the match (or route) had no `uri` condition, as Envoy does;
    /// `None` after an exact or regex `uri` match.
    pub uri_prefix: Option<&'a str>,
}

/// A weighted destination.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteDestinationPlan {
    /// Destination host (normalized: lower case, no trailing dot).
    pub host: String,
    /// Destination port; the request's (or the single service port) if absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// DestinationRule subset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subset: Option<String>,
    /// Relative weight (0 = no traffic unless every weight is 0).
    pub weight: u32,
    /// Request changes for this destination; Envoy applies them before the
    /// route's own.
    pub request_headers: HeaderOpsPlan,
    /// Response changes for this destination, before the route's own.
    pub response_headers: HeaderOpsPlan,
}

/// `HTTPRewrite`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RewritePlan {
    /// New path (or path prefix).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// New Host / `:authority` (also from `headers.request.set.host`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
}

/// Header changes; names lower case, values validated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HeaderOpsPlan {
    /// Overwrite (or add).
    pub set: Vec<(String, String)>,
    /// Append.
    pub add: Vec<(String, String)>,
    /// Remove.
    pub remove: Vec<String>,
}

/// `HTTPRedirect`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RedirectPlan {
    /// Replaces the path; its own query (if any) replaces the request's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    /// Replaces the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authority: Option<String>,
    /// Replaces the port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Replaces the scheme (`http` or `https`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Status: 301 (default), 302, 303, 307 or 308.
    pub code: u16,
}

/// `HTTPDirectResponse`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectResponsePlan {
    /// Status, 200-599.
    pub status: u16,
    /// Body (`body.string`, or `body.bytes` decoded; must be UTF-8).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
}

// === impl HttpRoutePlan ===

impl HttpRoutePlan {
    /// The first of `matches` that fits `req` (Istio: any one match selects
    /// the route; within a match all conditions must hold). `None`: this
    /// route does not apply.
    pub fn matched(&self, req: &RequestView) -> Option<Matched<'_>> {
        if self.matches.is_empty() {
            return Some(Matched {
                uri_prefix: Some("/"),
            });
        }
        self.matches
            .iter()
            .find(|m| m.matches(req))
            .map(|m| Matched {
                uri_prefix: m.uri_prefix(),
            })
    }

    /// Weighted choice among destinations; `pick` is any counter value
    /// (`pick % total weight`). All weights 0 → the first destination.
    pub fn pick(&self, pick: u64) -> Option<&RouteDestinationPlan> {
        super::weighted::pick_weighted(&self.destinations, |d| d.weight, pick)
    }
}

// === impl HttpMatchPlan ===

impl HttpMatchPlan {
    /// Whether every condition holds for `req`.
    pub fn matches(&self, req: &RequestView) -> bool {
        if self.port.is_some_and(|p| p != req.port) {
            return false;
        }
        if let Some(u) = &self.uri {
            // Envoy: `prefix` tests the whole `:path`, `path` and
            // `safe_regex` the path with the query string removed.
            let subject = match u {
                StrMatch::Prefix(_) => req.path_and_query,
                _ => path_only(req.path_and_query),
            };
            if !u.matches(subject, self.ignore_uri_case) {
                return false;
            }
        }
        let fields = [
            (&self.scheme, req.scheme, true),
            (&self.method, req.method, false),
            (&self.authority, req.authority, true),
        ];
        for (cond, value, ignore_case) in fields {
            if cond
                .as_ref()
                .is_some_and(|c| !c.matches(value, ignore_case))
            {
                return false;
            }
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(name, m)| header_value(req.headers, name).is_some_and(|v| m.matches(&v, false)));
        let without_ok = self.without_headers.iter().all(|(name, m)| {
            !header_value(req.headers, name).is_some_and(|v| m.matches(&v, false))
        });
        let query_ok = self.query_params.iter().all(|(name, m)| {
            query_value(req.path_and_query, name).is_some_and(|v| m.matches(v, false))
        });
        headers_ok && without_ok && query_ok
    }

    /// Whether the port is the only condition (none looks at the request
    /// itself), so the match can be decided for a connection before any
    /// request is read (a CONNECT tunnel).
    pub fn is_port_only(&self) -> bool {
        let HttpMatchPlan {
            uri,
            scheme,
            method,
            authority,
            headers,
            without_headers,
            query_params,
            port: _,
            ignore_uri_case: _,
        } = self;
        uri.is_none()
            && scheme.is_none()
            && method.is_none()
            && authority.is_none()
            && headers.is_empty()
            && without_headers.is_empty()
            && query_params.is_empty()
    }

    fn uri_prefix(&self) -> Option<&str> {
        match &self.uri {
            Some(StrMatch::Prefix(p)) => Some(p),
            Some(_) => None,
            None => Some("/"),
        }
    }
}

fn path_only(path_and_query: &str) -> &str {
    path_and_query
        .split(['?', '#'])
        .next()
        .unwrap_or(path_and_query)
}

/// All values of `name` joined with `,` (Envoy's rule for matching a header
/// sent several times); `None` when absent.
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    let mut values = headers.get_all(name).iter();
    let first = String::from_utf8_lossy(values.next()?.as_bytes());
    let mut joined: Option<String> = None;
    for v in values {
        let s = joined.get_or_insert_with(|| first.to_string());
        s.push(',');
        s.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(joined.map_or(first, Cow::Owned))
}

/// The first value of query parameter `name` (`a` alone is `a=`).
fn query_value<'a>(path_and_query: &'a str, name: &str) -> Option<&'a str> {
    let query = path_and_query.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or(query);
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v)
    })
}

// === impl StrMatch ===

impl StrMatch {
    /// Whether `value` matches. `ignore_case` folds ASCII case for exact and
    /// prefix; a regex carries its own case rule from compile time.
    pub fn matches(&self, value: &str, ignore_case: bool) -> bool {
        match self {
            StrMatch::Exact(e) if ignore_case => e.eq_ignore_ascii_case(value),
            StrMatch::Exact(e) => e == value,
            StrMatch::Prefix(p) if ignore_case => value
                .as_bytes()
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Regex(r) => r.is_match(value),
            StrMatch::Present => true,
        }
    }
}

// === impl CompiledRegex ===

impl CompiledRegex {
    /// Compiles `source` for a full match, case-insensitive if asked.
    pub fn new(source: &str, ignore_case: bool) -> Result<CompiledRegex, regex::Error> {
        let flags = if ignore_case { "(?i)" } else { "" };
        let regex = regex::Regex::new(&format!("{flags}^(?:{source})$"))?;
        Ok(CompiledRegex {
            source: source.to_string(),
            regex,
        })
    }

    /// The regex as written in the resource.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Whether the whole of `value` matches.
    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl Serialize for CompiledRegex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

// === impl RewritePlan ===

impl RewritePlan {
    /// Istio's `rewrite.uri`: replaces the matched prefix after a prefix
    /// match, otherwise the whole path; the query string is kept. `None`
    /// when this rewrite does not change the path.
    pub fn rewrite_path(&self, path_and_query: &str, m: &Matched) -> Option<String> {
        let uri = self.uri.as_deref()?;
        if let Some(prefix) = m.uri_prefix
            && path_and_query.is_char_boundary(prefix.len())
            && path_and_query.len() >= prefix.len()
        {
            return Some(format!("{uri}{}", &path_and_query[prefix.len()..]));
        }
        let query = path_and_query
            .find('?')
            .map_or("", |i| &path_and_query[i..]);
        Some(format!("{uri}{query}"))
    }
}

// === impl HeaderOpsPlan ===

impl HeaderOpsPlan {
    /// Applies to a header map: remove, then set (overwrite), then add
    /// (append), the order Envoy uses.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name.as_str());
        }
        for (name, value) in &self.set {
            if let (Ok(n), Ok(v)) = (HeaderName::from_str(name), HeaderValue::from_str(value)) {
                headers.insert(n, v);
            }
        }
        for (name, value) in &self.add {
            if let (Ok(n), Ok(v)) = (HeaderName::from_str(name), HeaderValue::from_str(value)) {
                headers.append(n, v);
            }
        }
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }
}

// === impl RedirectPlan ===

impl RedirectPlan {
    /// The `Location` for `req`, built as Envoy does: scheme, host, port and
    /// path from the redirect where set, else from the request; the request's
    /// port is dropped when a port is given or when the scheme changes away
    /// from a default port; the query is kept unless `uri` has its own.
    pub fn location(&self, req: &RequestView) -> String {
        let scheme = self.scheme.as_deref().unwrap_or(req.scheme);
        let port = self.port.map(|p| format!(":{p}")).unwrap_or_default();
        let host = match &self.authority {
            Some(a) if self.port.is_some() => port_start(a).map_or(a.as_str(), |i| &a[..i]),
            Some(a) => a.as_str(),
            None => request_host(req, scheme, self.port.is_some()),
        };
        let path: Cow<str> = match &self.uri {
            Some(uri) if uri.contains('?') => uri.into(),
            Some(uri) => match req.path_and_query.find('?') {
                Some(i) => format!("{uri}{}", &req.path_and_query[i..]).into(),
                None => uri.into(),
            },
            None => req.path_and_query.into(),
        };
        let slash = if path.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{host}{port}{slash}{path}")
    }
}

/// Istio's default number of retries (`attempts`) when a route is silent.
pub const DEFAULT_RETRY_ATTEMPTS: u32 = 2;
/// Envoy's base interval between retries.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(25);

/// A route's retry policy (Istio's `HTTPRetry`, compiled). The runtime
/// retries only what is safe: a try whose request never reached the
/// upstream, or a bodiless request (rebuilt as it was sent).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPlan {
    /// Retries after the first try; 0 disables retries.
    pub attempts: u32,
    /// Timeout of each try.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_secs")]
    pub per_try_timeout: Option<Duration>,
    /// When to retry.
    pub retry_on: std::collections::BTreeSet<RetryCondition>,
    /// Statuses retried under `retriable-status-codes`.
    pub retriable_status_codes: Vec<u16>,
    /// Base interval between retries (the n-th waits up to n times it).
    #[serde(with = "secs")]
    pub backoff: Duration,
    /// A retry goes to another endpoint when there is one (Envoy's
    /// previous-hosts predicate; off with `retryIgnorePreviousHosts`).
    pub other_endpoint: bool,
}

impl RetryPlan {
    /// Istio's policy for routes without `retries`: 2 retries on
    /// `connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes`
    /// with 503 retriable.
    pub fn istio_default() -> RetryPlan {
        RetryPlan {
            attempts: DEFAULT_RETRY_ATTEMPTS,
            per_try_timeout: None,
            retry_on: [
                RetryCondition::ConnectFailure,
                RetryCondition::RefusedStream,
                RetryCondition::Unavailable,
                RetryCondition::Cancelled,
                RetryCondition::RetriableStatusCodes,
            ]
            .into_iter()
            .collect(),
            retriable_status_codes: vec![503],
            backoff: DEFAULT_RETRY_BACKOFF,
            other_endpoint: true,
        }
    }

    /// No retries (`attempts: 0`).
    pub fn disabled() -> RetryPlan {
        RetryPlan {
            attempts: 0,
            ..RetryPlan::istio_default()
        }
    }

    /// Whether `condition` is one of `retryOn`.
    pub fn on(&self, condition: RetryCondition) -> bool {
        self.retry_on.contains(&condition)
    }

    /// Whether a response with `status` may be retried (by status alone).
    pub fn retriable_status(&self, status: u16) -> bool {
        (self.on(RetryCondition::FiveXx) && (500..600).contains(&status))
            || (self.on(RetryCondition::GatewayError) && matches!(status, 502..=504))
            || (self.on(RetryCondition::Retriable4xx) && status == 409)
            || (self.on(RetryCondition::RetriableStatusCodes)
                && self.retriable_status_codes.contains(&status))
    }
}

impl Default for RetryPlan {
    fn default() -> Self {
        RetryPlan::istio_default()
    }
}

/// One `retryOn` condition (Envoy's `x-envoy-retry-on` and
/// `x-envoy-retry-grpc-on` names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryCondition {
    /// The connection could not be made.
    ConnectFailure,
    /// The upstream refused the HTTP/2 stream (REFUSED_STREAM).
    RefusedStream,
    /// The connection was reset or closed before a response.
    Reset,
    /// Any 5xx, a reset or no response.
    #[serde(rename = "5xx")]
    FiveXx,
    /// 502, 503, 504.
    GatewayError,
    /// 409.
    #[serde(rename = "retriable-4xx")]
    Retriable4xx,
    /// The statuses in `retriable_status_codes`.
    RetriableStatusCodes,
    /// gRPC status UNAVAILABLE (14).
    Unavailable,
    /// gRPC status CANCELLED (1).
    Cancelled,
    /// gRPC status DEADLINE_EXCEEDED (4).
    DeadlineExceeded,
    /// gRPC status RESOURCE_EXHAUSTED (8).
    ResourceExhausted,
    /// gRPC status INTERNAL (13).
    Internal,
}

impl RetryCondition {
    /// The condition named `name` in `retryOn`.
    pub fn parse(name: &str) -> Option<RetryCondition> {
        Some(match name {
            "connect-failure" => RetryCondition::ConnectFailure,
            "refused-stream" => RetryCondition::RefusedStream,
            "reset" => RetryCondition::Reset,
            "5xx" => RetryCondition::FiveXx,
            "gateway-error" => RetryCondition::GatewayError,
            "retriable-4xx" => RetryCondition::Retriable4xx,
            "retriable-status-codes" => RetryCondition::RetriableStatusCodes,
            "unavailable" => RetryCondition::Unavailable,
            "cancelled" => RetryCondition::Cancelled,
            "deadline-exceeded" => RetryCondition::DeadlineExceeded,
            "resource-exhausted" => RetryCondition::ResourceExhausted,
            "internal" => RetryCondition::Internal,
            _ => return None,
        })
    }

    /// The gRPC status this condition retries, if it is a gRPC one.
    pub fn grpc_status(self) -> Option<u32> {
        match self {
            RetryCondition::Cancelled => Some(1),
            RetryCondition::DeadlineExceeded => Some(4),
            RetryCondition::ResourceExhausted => Some(8),
            RetryCondition::Internal => Some(13),
            RetryCondition::Unavailable => Some(14),
            _ => None,
        }
    }
}

mod secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}s", d.as_secs_f64()))
    }
}

/// The request's host, without its port when the redirect sets a port or
/// changes the scheme away from the port's default (Envoy's
/// `processRequestHost`).
fn request_host<'a>(req: &RequestView<'a>, new_scheme: &str, new_port: bool) -> &'a str {
    let host = req.authority;
    let Some(i) = port_start(host) else {
        return host;
    };
    let port = &host[i..];
    let default_port =
        (req.scheme == "https" && port == ":443") || (req.scheme == "http" && port == ":80");
    if new_port || (new_scheme != req.scheme && default_port) {
        &host[..i]
    } else {
        host
    }
}

/// Where the `:port` of a `host[:port]` starts (IPv6 literals in brackets).
pub(crate) fn port_start(host: &str) -> Option<usize> {
    if host.starts_with('[') {
        host.rfind("]:").map(|i| i + 1)
    } else {
        host.rfind(':')
    }
}

mod opt_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}s", d.as_secs_f64())),
            None => s.serialize_none(),
        }
    }
}

pub(super) mod compile;

#[cfg(test)]
mod tests;
