//! Compiling `HTTPRoute`s: every field checked and named in errors, the
//! way Istio's own validation does.

use std::str::FromStr;

use base64::Engine as _;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::Source;
use crate::config::virtual_service::{
    HeaderOperations, Headers, HttpMatch, HttpRetry, HttpRoute, RouteDestination, StringMatch,
};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::duration;
use crate::plan::host::HostPattern;
use crate::plan::port::port_number;

use super::*;

// === compile ===

/// Istio rejects regexes longer than this (RE2 program size stand-in).
const MAX_REGEX_LEN: usize = 1024;
/// Istio rejects direct response bodies of 1 MB or more.
const MAX_BODY_LEN: usize = 1024 * 1024;
/// Redirect codes Envoy can send.
const REDIRECT_CODES: [u16; 5] = [301, 302, 303, 307, 308];
/// HTTPRoute fields that are understood but not implemented.
const UNSUPPORTED_ROUTE_FIELDS: [&str; 6] = [
    "mirror",
    "mirrors",
    "mirrorPercentage",
    "mirrorPercent",
    "corsPolicy",
    "delegate",
];
/// HTTPMatchRequest fields that are understood but not implemented.
const UNSUPPORTED_MATCH_FIELDS: [&str; 3] = ["sourceLabels", "sourceNamespace", "statPrefix"];

/// HTTPRoute actions the outbound (mesh) listener does not carry out yet.
const GATEWAY_ONLY_ACTIONS: [&str; 3] = ["redirect", "directResponse", "fault"];

/// Where a compiled route is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RouteScope {
    /// A Gateway (or Sidecar ingress) listener.
    Gateway,
    /// The mesh: the local app's outbound traffic. A destination without a
    /// port takes the request's port when its service has several (the
    /// sidecar's listener port); redirects, direct responses and faults are
    /// not served there yet.
    Mesh,
}

/// Compiles one HTTPRoute found at `field` (e.g. `spec.http[2]`) of
/// `source`. `applies` decides whether a match with a given `gateways` list
/// applies to the listener being compiled; matches for other gateways are
/// dropped, and a route whose matches all belong elsewhere is `None` without
/// error. Errors go to `diag` and make it return `None`.
pub(crate) fn compile_http_route(
    route: &HttpRoute,
    source: &Source,
    field: &str,
    applies: &dyn Fn(&[String]) -> bool,
    diag: &mut Diagnostics,
) -> Option<HttpRoutePlan> {
    compile_route(route, source, field, applies, RouteScope::Gateway, diag)
}

/// [`compile_http_route`] for a VirtualService bound to `mesh`: the same
/// matches, rewrites, header operations, timeouts and retries.
pub(crate) fn compile_mesh_http_route(
    route: &HttpRoute,
    source: &Source,
    field: &str,
    applies: &dyn Fn(&[String]) -> bool,
    diag: &mut Diagnostics,
) -> Option<HttpRoutePlan> {
    compile_route(route, source, field, applies, RouteScope::Mesh, diag)
}

/// Compiles the destinations of a route found at `field` (`field.route[j]`
/// in errors), with Istio's rule that several destinations need a weight.
pub(crate) fn compile_destinations(
    route: &[RouteDestination],
    source: &Source,
    field: &str,
    scope: RouteScope,
    diag: &mut Diagnostics,
) -> Vec<RouteDestinationPlan> {
    let mut cx = Cx {
        src: source,
        diag,
        scope,
    };
    let destinations = route
        .iter()
        .enumerate()
        .filter_map(|(j, d)| cx.destination(d, &format!("{field}.route[{j}]")))
        .collect();
    let total: u64 = route.iter().map(|d| u64::from(d.weight.unwrap_or(0))).sum();
    if route.len() > 1 && total == 0 {
        cx.error(
            &format!("{field}.route"),
            "total destination weight = 0; give the destinations weights",
        );
    }
    destinations
}

fn compile_route(
    route: &HttpRoute,
    source: &Source,
    field: &str,
    applies: &dyn Fn(&[String]) -> bool,
    scope: RouteScope,
    diag: &mut Diagnostics,
) -> Option<HttpRoutePlan> {
    let kept: Vec<(usize, &HttpMatch)> = route
        .matches
        .iter()
        .enumerate()
        .filter(|(_, m)| applies(&m.gateways))
        .collect();
    if !route.matches.is_empty() && kept.is_empty() {
        return None;
    }
    let before = diag.errors.len();
    let mut cx = Cx {
        src: source,
        diag,
        scope,
    };

    let matches: Vec<HttpMatchPlan> = kept
        .iter()
        .filter_map(|(j, m)| cx.http_match(m, &format!("{field}.match[{j}]")))
        .collect();

    for (k, v) in &route.other {
        if v.is_null() {
            continue;
        }
        let f = format!("{field}.{k}");
        match k.as_str() {
            k if scope == RouteScope::Mesh && GATEWAY_ONLY_ACTIONS.contains(&k) => {
                cx.error(&f, "not supported for mesh routes yet")
            }
            "redirect" | "directResponse" | "fault" => {}
            k if UNSUPPORTED_ROUTE_FIELDS.contains(&k) => cx.error(&f, "not supported yet"),
            _ => cx.error(&f, "unknown field"),
        }
    }

    let written = |k: &str| route.other.get(k).filter(|v| !v.is_null());
    // Mesh routes refuse the gateway-only actions above.
    let present = |k: &str| written(k).filter(|_| scope == RouteScope::Gateway);
    let fault = present("fault").and_then(|v| {
        let f = format!("{field}.fault");
        let raw: super::fault::RawFault = cx.parse_value(v, &f)?;
        let compiled = super::fault::compile(&raw);
        let at = |suffix: &str| {
            if suffix.is_empty() {
                f.clone()
            } else {
                format!("{f}.{suffix}")
            }
        };
        for (suffix, reason) in &compiled.warnings {
            cx.diag.warn(cx.src, &at(suffix), reason);
        }
        for (suffix, reason) in compiled.errors {
            cx.error(&at(&suffix), reason);
        }
        compiled.plan
    });
    let redirect = present("redirect").and_then(|v| cx.redirect(v, &format!("{field}.redirect")));
    let direct_response = present("directResponse")
        .and_then(|v| cx.direct_response(v, &format!("{field}.directResponse")));
    let has_route = !route.route.is_empty();
    let action = match (present("redirect"), present("directResponse")) {
        (Some(_), direct) => {
            if direct.is_some() {
                cx.error(
                    &format!("{field}.directResponse"),
                    "cannot be combined with redirect",
                );
            }
            Some("redirect")
        }
        (None, Some(_)) => Some("directResponse"),
        (None, None) => None,
    };
    match action {
        Some(a) => {
            if has_route {
                cx.error(
                    &format!("{field}.route"),
                    format!("cannot be combined with {a}"),
                );
            }
            if route.rewrite.is_some() {
                cx.error(
                    &format!("{field}.rewrite"),
                    format!("cannot be combined with {a}"),
                );
            }
        }
        // A delegating route has none of them; `delegate` is reported above.
        None if !has_route && written("delegate").is_none() && scope == RouteScope::Gateway => {
            cx.error(
                field,
                "one of route, redirect or directResponse is required",
            )
        }
        None if !has_route
            && written("delegate").is_none()
            && GATEWAY_ONLY_ACTIONS.iter().all(|k| written(k).is_none()) =>
        {
            cx.error(
                &format!("{field}.route"),
                "at least one destination is required (redirect and directResponse are not supported for mesh routes yet)",
            )
        }
        None => {}
    }

    let timeout = route
        .timeout
        .as_deref()
        .and_then(|t| match duration::parse(t) {
            // `0s` is no timeout, as in Istio.
            Ok(d) if d.is_zero() => None,
            Ok(d) => Some(d),
            Err(e) => {
                cx.error(&format!("{field}.timeout"), e.to_string());
                None
            }
        });

    let retries = compile_retries(
        route.retries.as_ref(),
        cx.src,
        &format!("{field}.retries"),
        cx.diag,
    );

    let mut rewrite = route
        .rewrite
        .as_ref()
        .and_then(|rw| cx.rewrite(rw, &format!("{field}.rewrite")));
    let (request_headers, response_headers, header_authority) =
        cx.headers(route.headers.as_ref(), &format!("{field}.headers"), true);
    if let Some(authority) = header_authority {
        // Istio turns `headers.request.set.host` into an authority rewrite.
        let rw = rewrite.get_or_insert_with(RewritePlan::default);
        if rw.authority.is_some() {
            cx.error(
                &format!("{field}.headers.request"),
                "authority set twice (rewrite.authority and a host header)",
            );
        }
        rw.authority = Some(authority);
    }

    let destinations = compile_destinations(&route.route, cx.src, field, scope, cx.diag);

    (diag.errors.len() == before).then(|| HttpRoutePlan {
        name: route.name.clone().filter(|n| !n.is_empty()),
        matches,
        destinations,
        rewrite,
        timeout,
        retries,
        request_headers,
        response_headers,
        redirect,
        direct_response,
        fault,
    })
}

/// Compiles an `HTTPRetry` found at `field`: Istio's default policy when
/// absent, none with `attempts` 0 or absent (as Istio's `ConvertPolicy`).
/// The routes of one VirtualService share nothing, so each gets its own
/// `Arc`; routes without `retries` share the default.
pub(crate) fn compile_retries(
    retries: Option<&HttpRetry>,
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> std::sync::Arc<RetryPlan> {
    static DEFAULT: std::sync::LazyLock<std::sync::Arc<RetryPlan>> =
        std::sync::LazyLock::new(|| std::sync::Arc::new(RetryPlan::istio_default()));
    let Some(r) = retries else {
        return DEFAULT.clone();
    };
    let mut plan = RetryPlan::istio_default();
    match r.attempts {
        Some(n) if n < 0 => diag.error(src, format!("{field}.attempts"), "must be 0 or more"),
        Some(n) => plan.attempts = u32::try_from(n.min(i64::from(MAX_RETRY_ATTEMPTS))).unwrap_or(0),
        None => plan.attempts = 0,
    }
    if let Some(raw) = &r.per_try_timeout {
        match duration::parse(raw) {
            Ok(d) if d.is_zero() => {}
            Ok(d) => plan.per_try_timeout = Some(d),
            Err(e) => diag.error(src, format!("{field}.perTryTimeout"), e.to_string()),
        }
    }
    if let Some(raw) = &r.backoff {
        match duration::parse(raw) {
            Ok(d) if !d.is_zero() => plan.backoff = d,
            Ok(_) => diag.error(src, format!("{field}.backoff"), "must be greater than 0"),
            Err(e) => diag.error(src, format!("{field}.backoff"), e.to_string()),
        }
    }
    if let Some(on) = &r.retry_on {
        plan.retry_on.clear();
        plan.retriable_status_codes.clear();
        for item in on.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Ok(code) = item.parse::<u16>() {
                if !(100..=599).contains(&code) {
                    diag.error(
                        src,
                        format!("{field}.retryOn"),
                        format!("{code} is not an HTTP status"),
                    );
                }
                plan.retriable_status_codes.push(code);
                plan.retry_on.insert(RetryCondition::RetriableStatusCodes);
            } else if let Some(c) = RetryCondition::parse(item) {
                plan.retry_on.insert(c);
            } else if UNIMPLEMENTED_RETRY_ON.contains(&item) {
                diag.warn(
                    src,
                    &format!("{field}.retryOn"),
                    format!("{item:?} not implemented yet; ignored"),
                );
            } else {
                diag.error(
                    src,
                    format!("{field}.retryOn"),
                    format!("unknown retry condition {item:?}"),
                );
            }
        }
    }
    if r.retry_ignore_previous_hosts == Some(true) {
        plan.other_endpoint = false;
    }
    if plan == **DEFAULT {
        return DEFAULT.clone();
    }
    std::sync::Arc::new(plan)
}

/// Envoy's `retryOn` conditions meshgate knows but does not act on.
const UNIMPLEMENTED_RETRY_ON: [&str; 4] = [
    "retriable-headers",
    "envoy-ratelimited",
    "http3-post-connect-failure",
    "reset-before-request",
];

/// Retries beyond this are not useful and only multiply load.
const MAX_RETRY_ATTEMPTS: u32 = 10;

/// What a `StringMatch` may be, by where it appears.
#[derive(Clone, Copy, Default)]
struct Allow {
    /// `(?i)` for regexes (`ignoreUriCase`).
    ignore_case: bool,
    /// An empty prefix (only `uri`).
    empty_prefix: bool,
    /// `{}` / `regex: "*"` as presence (headers, withoutHeaders).
    present: bool,
    /// Prefix matching is refused for query parameters.
    no_prefix: bool,
}

/// Compile context: where errors go, and where the route is served.
struct Cx<'a> {
    src: &'a Source,
    diag: &'a mut Diagnostics,
    scope: RouteScope,
}

impl Cx<'_> {
    fn error(&mut self, field: &str, reason: impl Into<String>) {
        self.diag.error(self.src, field, reason);
    }

    fn http_match(&mut self, m: &HttpMatch, field: &str) -> Option<HttpMatchPlan> {
        let before = self.diag.errors.len();
        let ignore_uri_case = m.ignore_uri_case.unwrap_or(false);
        let one = |cx: &mut Self, sm: &Option<StringMatch>, name: &str, allow: Allow| {
            sm.as_ref()
                .and_then(|sm| cx.string_match(sm, &format!("{field}.{name}"), allow))
        };
        let uri_allow = Allow {
            ignore_case: ignore_uri_case,
            empty_prefix: true,
            ..Allow::default()
        };
        let uri = one(self, &m.uri, "uri", uri_allow);
        let scheme = one(self, &m.scheme, "scheme", Allow::default());
        let method = one(self, &m.method, "method", Allow::default());
        let authority = one(self, &m.authority, "authority", Allow::default());
        let present = Allow {
            present: true,
            ..Allow::default()
        };
        let mut headers = Vec::new();
        for (k, sm) in &m.headers {
            let f = format!("{field}.headers.{k}");
            let name = self.match_header_name(k, &f);
            if let (Some(name), Some(sm)) = (name, self.string_match(sm, &f, present)) {
                headers.push((name, sm));
            }
        }
        let mut without_headers = Vec::new();
        for (k, sm) in &m.without_headers {
            let f = format!("{field}.withoutHeaders.{k}");
            let name = self.match_header_name(k, &f);
            if let (Some(name), Some(sm)) = (name, self.string_match(sm, &f, present)) {
                without_headers.push((name, sm));
            }
        }
        let mut query_params = Vec::new();
        for (k, sm) in &m.query_params {
            let f = format!("{field}.queryParams.{k}");
            if k.is_empty() {
                self.error(&f, "empty query parameter name");
            }
            let allow = Allow {
                no_prefix: true,
                ..Allow::default()
            };
            if let Some(sm) = self.string_match(sm, &f, allow) {
                query_params.push((k.clone(), sm));
            }
        }
        let port = m
            .port
            .and_then(|p| port_number(Some(p), self.src, &format!("{field}.port"), self.diag));
        for (k, v) in &m.other {
            if v.is_null() || k == "name" {
                continue;
            }
            let f = format!("{field}.{k}");
            if UNSUPPORTED_MATCH_FIELDS.contains(&k.as_str()) {
                self.error(&f, "not supported yet");
            } else {
                self.error(&f, "unknown field");
            }
        }
        (self.diag.errors.len() == before).then_some(HttpMatchPlan {
            uri,
            scheme,
            method,
            authority,
            headers,
            without_headers,
            query_params,
            port,
            ignore_uri_case,
        })
    }

    fn match_header_name(&mut self, raw: &str, field: &str) -> Option<String> {
        if raw.starts_with("@request.auth.claims") {
            self.error(field, "JWT claim routing is not supported");
            return None;
        }
        let lower = raw.to_ascii_lowercase();
        match HeaderName::from_str(&lower) {
            Ok(_) => Some(lower),
            Err(_) => {
                self.error(field, format!("{raw:?} is not a valid header name"));
                None
            }
        }
    }

    fn string_match(&mut self, sm: &StringMatch, field: &str, allow: Allow) -> Option<StrMatch> {
        let set: Vec<&str> = [
            ("exact", sm.exact.is_some()),
            ("prefix", sm.prefix.is_some()),
            ("regex", sm.regex.is_some()),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            self.error(
                field,
                format!(
                    "only one of exact, prefix or regex may be set (found {})",
                    set.join(" and ")
                ),
            );
            return None;
        }
        if let Some(e) = &sm.exact {
            return Some(StrMatch::Exact(e.clone()));
        }
        if let Some(p) = &sm.prefix {
            let f = format!("{field}.prefix");
            if allow.no_prefix {
                self.error(
                    &f,
                    "prefix matching is not supported for query parameters; use exact or regex",
                );
                return None;
            }
            if p.is_empty() && !allow.empty_prefix {
                self.error(&f, "must not be empty");
                return None;
            }
            return Some(StrMatch::Prefix(p.clone()));
        }
        let Some(r) = &sm.regex else {
            if allow.present {
                return Some(StrMatch::Present);
            }
            self.error(field, "one of exact, prefix or regex is required");
            return None;
        };
        let f = format!("{field}.regex");
        if allow.present && r == "*" {
            // Istio: `*` is not a regex but "present with any value".
            return Some(StrMatch::Present);
        }
        if r.is_empty() {
            self.error(&f, "must not be empty");
            return None;
        }
        if r.len() > MAX_REGEX_LEN {
            self.error(
                &f,
                format!("regex is too large, max length allowed is {MAX_REGEX_LEN}"),
            );
            return None;
        }
        match CompiledRegex::new(r, allow.ignore_case) {
            Ok(re) => Some(StrMatch::Regex(re)),
            Err(e) => {
                let detail = regex_error(&e);
                self.error(
                    &f,
                    format!("{r:?} is not a valid RE2-style regex: {detail}"),
                );
                None
            }
        }
    }

    fn rewrite(
        &mut self,
        rw: &crate::config::virtual_service::Rewrite,
        field: &str,
    ) -> Option<RewritePlan> {
        if rw.uri_regex_rewrite.as_ref().is_some_and(|v| !v.is_null()) {
            self.error(&format!("{field}.uriRegexRewrite"), "not supported yet");
            return None;
        }
        let uri = rw.uri.clone().filter(|u| !u.is_empty());
        let authority = rw.authority.clone().filter(|a| !a.is_empty());
        if let Some(u) = &uri {
            self.check_path(u, &format!("{field}.uri"));
        }
        if let Some(a) = &authority {
            self.check_authority(a, &format!("{field}.authority"));
        }
        if uri.is_none() && authority.is_none() {
            self.error(field, "must set uri or authority");
            return None;
        }
        Some(RewritePlan { uri, authority })
    }

    fn check_path(&mut self, path: &str, field: &str) {
        if !path.starts_with('/') {
            self.error(field, format!("{path:?} must start with \"/\""));
        } else if http::uri::PathAndQuery::from_str(path).is_err() {
            self.error(field, format!("{path:?} is not a valid path"));
        }
    }

    fn check_authority(&mut self, authority: &str, field: &str) {
        if http::uri::Authority::from_str(authority).is_err() || authority.contains('@') {
            self.error(field, format!("{authority:?} is not a valid host[:port]"));
        }
    }

    /// Route or destination `headers`. Returns request and response
    /// operations, and the authority from a request `host` header when
    /// `authority_ok` (Istio makes that an authority rewrite).
    fn headers(
        &mut self,
        headers: Option<&Headers>,
        field: &str,
        authority_ok: bool,
    ) -> (HeaderOpsPlan, HeaderOpsPlan, Option<String>) {
        let mut authority = None;
        let request = self.header_ops(
            headers.and_then(|h| h.request.as_ref()),
            &format!("{field}.request"),
            Some(&mut authority).filter(|_| authority_ok),
        );
        let response = self.header_ops(
            headers.and_then(|h| h.response.as_ref()),
            &format!("{field}.response"),
            None,
        );
        (request, response, authority)
    }

    fn header_ops(
        &mut self,
        ops: Option<&HeaderOperations>,
        field: &str,
        mut authority: Option<&mut Option<String>>,
    ) -> HeaderOpsPlan {
        let mut plan = HeaderOpsPlan::default();
        let Some(ops) = ops else { return plan };
        for (verb, map) in [("set", &ops.set), ("add", &ops.add)] {
            for (k, v) in map {
                let f = format!("{field}.{verb}.{k}");
                let lower = k.to_ascii_lowercase();
                let Some(value) = self.header_value(v, &f) else {
                    continue;
                };
                if lower == "host" || lower == ":authority" {
                    match authority.as_deref_mut() {
                        Some(slot) if slot.is_none() => {
                            self.check_authority(&value, &f);
                            *slot = Some(value);
                        }
                        Some(_) => self.error(&f, "authority set twice"),
                        None if field.ends_with(".request") => self.error(
                            &f,
                            "setting the host per destination is not supported yet; use rewrite.authority",
                        ),
                        None => self.error(&f, "cannot be modified"),
                    }
                    continue;
                }
                if let Some(name) = self.op_header_name(k, &f) {
                    let list = if verb == "set" {
                        &mut plan.set
                    } else {
                        &mut plan.add
                    };
                    list.push((name, value));
                }
            }
        }
        for (i, k) in ops.remove.iter().enumerate() {
            let f = format!("{field}.remove[{i}]");
            let lower = k.to_ascii_lowercase();
            if lower == "host" || lower == ":authority" {
                self.error(&f, "the host header cannot be removed");
            } else if let Some(name) = self.op_header_name(k, &f) {
                plan.remove.push(name);
            }
        }
        plan
    }

    fn op_header_name(&mut self, raw: &str, field: &str) -> Option<String> {
        if raw.starts_with(':') {
            self.error(field, format!("pseudo-header {raw:?} cannot be modified"));
            return None;
        }
        let lower = raw.to_ascii_lowercase();
        match HeaderName::from_str(&lower) {
            Ok(_) => Some(lower),
            Err(_) => {
                self.error(field, format!("{raw:?} is not a valid header name"));
                None
            }
        }
    }

    /// A header value as Envoy reads it: `%%` is a literal `%`; `%NAME%`
    /// command operators are not implemented.
    fn header_value(&mut self, raw: &str, field: &str) -> Option<String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix('%') {
                out.push('%');
                rest = tail;
                continue;
            }
            let reason = match after.find('%') {
                Some(j) => format!(
                    "%{}% and other Envoy command operators are not supported; write %% for a literal %",
                    &after[..j]
                ),
                None => "unterminated %; write %% for a literal %".to_string(),
            };
            self.error(field, reason);
            return None;
        }
        out.push_str(rest);
        if HeaderValue::from_str(&out).is_err() {
            self.error(field, format!("{raw:?} is not a valid header value"));
            return None;
        }
        Some(out)
    }

    fn destination(&mut self, d: &RouteDestination, field: &str) -> Option<RouteDestinationPlan> {
        let before = self.diag.errors.len();
        let dfield = format!("{field}.destination");
        let Some(dest) = &d.destination else {
            self.error(&dfield, "required");
            return None;
        };
        let raw = dest.host.as_deref().unwrap_or_default();
        let host = if raw.is_empty() {
            self.error(&format!("{dfield}.host"), "required");
            None
        } else {
            match HostPattern::parse(raw) {
                Ok(HostPattern::Exact(h)) => Some(h),
                Ok(_) => {
                    self.error(
                        &format!("{dfield}.host"),
                        format!("{raw:?}: a destination must be a single host, not a wildcard"),
                    );
                    None
                }
                Err(e) => {
                    self.error(&format!("{dfield}.host"), e.to_string());
                    None
                }
            }
        };
        let port = dest.port.as_ref().and_then(|p| p.number).and_then(|n| {
            port_number(
                Some(n),
                self.src,
                &format!("{dfield}.port.number"),
                self.diag,
            )
        });
        if port.is_none()
            && self.scope == RouteScope::Gateway
            && let Some(h) = &host
            && let Some(ports) = self.diag.service_ports.get(h.as_str())
            && ports.len() > 1
        {
            let list: Vec<String> = ports.iter().map(u16::to_string).collect();
            self.error(
                &format!("{dfield}.port"),
                format!(
                    "required: the ServiceEntry for {h} declares several ports ({}); say which one",
                    list.join(", ")
                ),
            );
        }
        let (request_headers, response_headers, _) =
            self.headers(d.headers.as_ref(), &format!("{field}.headers"), false);
        let host = host?;
        (self.diag.errors.len() == before).then(|| RouteDestinationPlan {
            host,
            port,
            subset: dest.subset.clone().filter(|s| !s.is_empty()),
            weight: d.weight.unwrap_or(0),
            request_headers,
            response_headers,
        })
    }

    fn redirect(&mut self, value: &serde_json::Value, field: &str) -> Option<RedirectPlan> {
        let raw: RawRedirect = self.parse_value(value, field)?;
        let before = self.diag.errors.len();
        if raw.derive_port.as_ref().is_some_and(|v| !v.is_null()) {
            self.error(
                &format!("{field}.derivePort"),
                "not supported yet; set port instead",
            );
        }
        let uri = raw.uri.filter(|u| !u.is_empty());
        if let Some(u) = &uri {
            self.check_path(u, &format!("{field}.uri"));
        }
        let authority = raw.authority.filter(|a| !a.is_empty());
        if let Some(a) = &authority {
            self.check_authority(a, &format!("{field}.authority"));
        }
        let scheme = raw.scheme.filter(|s| !s.is_empty());
        if let Some(s) = &scheme
            && s != "http"
            && s != "https"
        {
            self.error(
                &format!("{field}.scheme"),
                format!("{s:?}: must be \"http\" or \"https\""),
            );
        }
        let port = raw
            .port
            .filter(|p| *p != 0)
            .and_then(|p| port_number(Some(p), self.src, &format!("{field}.port"), self.diag));
        let code = match raw.redirect_code.unwrap_or(0) {
            0 => 301,
            c => match u16::try_from(c).ok().filter(|c| REDIRECT_CODES.contains(c)) {
                Some(c) => c,
                None => {
                    self.error(
                        &format!("{field}.redirectCode"),
                        format!("{c} is not supported; use 301, 302, 303, 307 or 308"),
                    );
                    301
                }
            },
        };
        if uri.is_none() && authority.is_none() && scheme.is_none() && raw.port.is_none() {
            self.error(field, "must set uri, authority, scheme or port");
        }
        (self.diag.errors.len() == before).then_some(RedirectPlan {
            uri,
            authority,
            port,
            scheme,
            code,
        })
    }

    fn direct_response(
        &mut self,
        value: &serde_json::Value,
        field: &str,
    ) -> Option<DirectResponsePlan> {
        let raw: RawDirectResponse = self.parse_value(value, field)?;
        let before = self.diag.errors.len();
        let status = match raw.status {
            None | Some(0) => {
                self.error(&format!("{field}.status"), "required");
                0
            }
            Some(s) if (200..=599).contains(&s) => s as u16,
            Some(s) => {
                self.error(
                    &format!("{field}.status"),
                    format!("{s} must be in the range 200-599"),
                );
                0
            }
        };
        let bfield = format!("{field}.body");
        let body = match raw.body {
            None => None,
            Some(RawBody {
                string: Some(_),
                bytes: Some(_),
            }) => {
                self.error(&bfield, "only one of string or bytes may be set");
                None
            }
            Some(RawBody {
                string: Some(s), ..
            }) => Some(s),
            Some(RawBody { bytes: Some(b), .. }) => {
                let bytes_field = format!("{bfield}.bytes");
                match base64::engine::general_purpose::STANDARD.decode(b.trim()) {
                    Ok(raw) => match String::from_utf8(raw) {
                        Ok(s) => Some(s),
                        Err(_) => {
                            self.error(
                                &bytes_field,
                                "binary bodies are not supported yet; the decoded body must be UTF-8",
                            );
                            None
                        }
                    },
                    Err(e) => {
                        self.error(&bytes_field, format!("invalid base64: {e}"));
                        None
                    }
                }
            }
            Some(RawBody {
                string: None,
                bytes: None,
            }) => {
                self.error(&bfield, "one of string or bytes is required");
                None
            }
        };
        if body.as_ref().is_some_and(|b| b.len() >= MAX_BODY_LEN) {
            self.error(&bfield, "must be less than 1MB");
        }
        (self.diag.errors.len() == before).then_some(DirectResponsePlan { status, body })
    }

    /// Deserializes an untyped field, naming the exact sub-field on error.
    fn parse_value<T: DeserializeOwned>(
        &mut self,
        value: &serde_json::Value,
        field: &str,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(t) => Some(t),
            Err(e) => {
                let path = e.path().to_string();
                let f = if path == "." {
                    field.to_string()
                } else {
                    format!("{field}.{path}")
                };
                self.error(&f, e.into_inner().to_string());
                None
            }
        }
    }
}

/// The regex crate's message without its multi-line caret drawing.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map(|l| {
            l.trim_start()
                .trim_start_matches("error:")
                .trim()
                .to_string()
        })
        .unwrap_or(text)
}

/// `HTTPRedirect` as written.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawRedirect {
    uri: Option<String>,
    authority: Option<String>,
    port: Option<u32>,
    scheme: Option<String>,
    redirect_code: Option<u32>,
    derive_port: Option<serde_json::Value>,
}

/// `HTTPDirectResponse` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectResponse {
    status: Option<u32>,
    body: Option<RawBody>,
}

/// `HTTPBody` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBody {
    string: Option<String>,
    bytes: Option<String>,
}
