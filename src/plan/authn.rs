//! RequestAuthentication compiled: the JSON Web Token rules that apply to
//! this proxy's inbound traffic. Tokens are validated per request by
//! `runtime::authn`; a valid one becomes the request's
//! [`RequestAuth`](super::authz::RequestAuth).
//!
//! As Istio builds Envoy's `jwt_authn` filter (`convertToEnvoyJwtConfig`):
//! the `jwtRules` of every policy that applies, sorted by issuer (rules of
//! one issuer are all kept, none merged), each one provider; a request
//! without any token passes (without a request principal), one with
//! tokens must have all the tokens found at one rule's locations valid
//! for that rule. Each field is checked as Istio's validation does
//! (`validateJwtRule`); what meshgate cannot honour safely is an error.
//!
//! Keys: `jwks` is read here (a key set that does not parse or has no
//! usable key is an error); `jwksUri` — or, without either, the issuer's
//! OpenID discovery document, as istiod resolves it — is fetched by
//! `runtime::jwks`.

pub mod jwks;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod token;

use std::time::Duration;

use http::HeaderName;
use serde::Serialize;

use super::diagnostics::Diagnostics;
use crate::bootstrap::Bootstrap;
use crate::config::request_authentication::JwtRule;
use crate::config::{Config, Source};

pub use jwks::Jwks;

/// Istio's default `timeout` for fetching a key set.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Claims always split at spaces (Istio's `buildSpaceDelimitedClaims`).
const SPACE_DELIMITED: [&str; 2] = ["permission", "scope"];

/// Headers a token may not set: they frame or route the request, or are
/// connection-specific (a claim value there would change how the app reads
/// the request).
const RESERVED_HEADERS: [&str; 10] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

/// The JWT rules of every RequestAuthentication that applies to this proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthnPlan {
    /// The rules, sorted by issuer (stable); empty: no token is looked at.
    pub rules: Vec<JwtRulePlan>,
}

/// One `jwtRules` entry.
#[derive(Debug, Clone, Serialize)]
pub struct JwtRulePlan {
    /// `<namespace>/<name>` of its RequestAuthentication.
    pub policy: String,
    /// Its index in `spec.jwtRules`.
    pub index: usize,
    /// The `iss` a token must carry; empty: any (Istio allows an empty
    /// issuer with `jwksUri`).
    pub issuer: String,
    /// Accepted audiences, without scheme or trailing slash; empty: any.
    pub audiences: Vec<String>,
    /// Where the keys come from.
    pub keys: KeySource,
    /// Where tokens are looked for.
    pub locations: Vec<Location>,
    /// Keep the token in the request to the app.
    pub forward_original_token: bool,
    /// The header that carries the verified payload (base64url) to the app.
    #[serde(serialize_with = "header_opt")]
    pub output_payload_to_header: Option<HeaderName>,
    /// Headers set from claims: (header, claim path with `.`).
    #[serde(serialize_with = "header_pairs")]
    pub output_claim_to_headers: Vec<(HeaderName, String)>,
    /// Claims whose string value becomes a list for authorization.
    pub space_delimited_claims: Vec<String>,
    /// How long fetching the key set may take.
    pub timeout: Duration,
}

/// Where a rule's key set comes from.
#[derive(Debug, Clone, Serialize)]
pub enum KeySource {
    /// `jwks`, read at load.
    Inline(Jwks),
    /// Fetched and cached at run time.
    Remote(Remote),
}

/// A key set fetched at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub enum Remote {
    /// `jwksUri` (http or https).
    Uri(String),
    /// The `jwks_uri` of `<issuer>/.well-known/openid-configuration`.
    Discovery(String),
}

impl Remote {
    /// The first URL fetched.
    pub fn url(&self) -> String {
        match self {
            Remote::Uri(u) => u.clone(),
            Remote::Discovery(issuer) => format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
        }
    }
}

/// One place a token is read from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Location {
    /// A header; the token follows `prefix` (when not empty).
    Header {
        /// The header.
        #[serde(serialize_with = "header")]
        name: HeaderName,
        /// What comes before the token (`Bearer `).
        prefix: String,
    },
    /// A query parameter.
    Param(String),
    /// A cookie.
    Cookie(String),
}

fn header<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}

fn header_opt<S: serde::Serializer>(h: &Option<HeaderName>, s: S) -> Result<S::Ok, S::Error> {
    match h {
        Some(h) => s.serialize_some(h.as_str()),
        None => s.serialize_none(),
    }
}

fn header_pairs<S: serde::Serializer>(v: &[(HeaderName, String)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|(h, c)| (h.as_str(), c)))
}

impl AuthnPlan {
    /// Every key set fetched at run time, with the longest timeout of the
    /// rules that use it.
    pub fn remotes(&self) -> Vec<(Remote, Duration)> {
        let mut out: Vec<(Remote, Duration)> = Vec::new();
        for r in &self.rules {
            if let KeySource::Remote(remote) = &r.keys {
                match out.iter_mut().find(|(x, _)| x == remote) {
                    Some((_, t)) => *t = (*t).max(r.timeout),
                    None => out.push((remote.clone(), r.timeout)),
                }
            }
        }
        out
    }
}

/// Compiles the RequestAuthentications that apply to this proxy (every
/// one is checked, applying or not).
pub(crate) fn compile(config: &Config, bootstrap: &Bootstrap, diag: &mut Diagnostics) -> AuthnPlan {
    let mut plan = AuthnPlan::default();
    for ra in &config.request_authentications {
        let refs = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
        let applies = super::selector::policy_applies(
            &ra.source,
            ra.spec.selector.as_ref(),
            (
                refs,
                "failing closed: left out, so tokens of its issuers are refused (401) rather \
                 than accepted for a workload it may not select",
            ),
            bootstrap,
            diag,
        ) == super::selector::Applies::Yes;
        let policy = format!("{}/{}", ra.source.namespace, ra.source.name);
        for (index, rule) in ra.spec.jwt_rules.iter().enumerate() {
            let field = format!("spec.jwtRules[{index}]");
            if let Some(r) = compile_rule(&ra.source, &field, &policy, index, rule, diag)
                && applies
            {
                plan.rules.push(r);
            }
        }
    }
    // Istio sorts the rules by issuer (deterministic filter config).
    plan.rules.sort_by(|a, b| a.issuer.cmp(&b.issuer));
    plan
}

/// A header name as Istio validates one (`ValidateStrictHTTPHeaderName`),
/// not one a token may not set.
fn output_header(name: &str) -> Result<HeaderName, String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(format!("header name {name} is not a valid header name"));
    }
    let h = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes())
        .map_err(|_| format!("header name {name} is not a valid header name"))?;
    if RESERVED_HEADERS.contains(&h.as_str()) {
        return Err(format!(
            "{name} cannot be set from a token: it frames or routes the request"
        ));
    }
    Ok(h)
}

fn compile_rule(
    src: &Source,
    field: &str,
    policy: &str,
    index: usize,
    rule: &JwtRule,
    diag: &mut Diagnostics,
) -> Option<JwtRulePlan> {
    let errors = diag.errors.len();
    for (i, a) in rule.audiences.iter().enumerate() {
        if a.is_empty() {
            diag.error(
                src,
                format!("{field}.audiences[{i}]"),
                "audience must be non-empty string",
            );
        }
    }
    let uri = rule.jwks_uri.as_deref().unwrap_or("");
    let inline = rule.jwks.as_deref().unwrap_or("");
    if rule.issuer.is_empty() && uri.is_empty() {
        diag.error(
            src,
            format!("{field}.issuer"),
            "issuer or jwksUri must be non-empty string",
        );
    }
    if !uri.is_empty()
        && let Err(why) = check_url(uri)
    {
        diag.error(src, format!("{field}.jwksUri"), why);
    }
    let mut keys = None;
    if !inline.is_empty() {
        match Jwks::parse(inline) {
            Ok((set, findings)) => {
                for (key, why) in &findings.skipped {
                    diag.warn(
                        src,
                        &format!("{field}.jwks"),
                        format_args!("key {key} is not used: {why}"),
                    );
                }
                for i in &findings.private {
                    diag.warn(
                        src,
                        &format!("{field}.jwks"),
                        format_args!(
                            "jwks key at index {i} contains private key material; only public \
                             keys are used for verification"
                        ),
                    );
                }
                keys = Some(KeySource::Inline(set));
            }
            Err(status) => diag.error(
                src,
                format!("{field}.jwks"),
                format!("jwks parse error: {status}"),
            ),
        }
        if !uri.is_empty() {
            diag.warn(
                src,
                &format!("{field}.jwksUri"),
                "ignored: jwks is given too (Istio uses jwks)",
            );
        }
    } else if !uri.is_empty() {
        keys = Some(KeySource::Remote(Remote::Uri(uri.to_string())));
    } else if !rule.issuer.is_empty() {
        if check_url(&rule.issuer).is_err() {
            diag.warn(
                src,
                &format!("{field}.issuer"),
                format_args!(
                    "neither jwks nor jwksUri is given and the issuer {:?} is not an http(s) URL \
                     for OpenID discovery: no key can be found, every token of this rule is \
                     refused",
                    rule.issuer
                ),
            );
        }
        keys = Some(KeySource::Remote(Remote::Discovery(rule.issuer.clone())));
    }
    let mut locations = Vec::new();
    for (i, h) in rule.from_headers.iter().enumerate() {
        if h.name.is_empty() {
            diag.error(
                src,
                format!("{field}.fromHeaders[{i}].name"),
                "location header name must be non-empty string",
            );
            continue;
        }
        match HeaderName::from_bytes(h.name.to_ascii_lowercase().as_bytes()) {
            Ok(name) => locations.push(Location::Header {
                name,
                prefix: h.prefix.clone(),
            }),
            Err(_) => diag.error(
                src,
                format!("{field}.fromHeaders[{i}].name"),
                format!("{:?} is not a valid header name", h.name),
            ),
        }
    }
    for (i, p) in rule.from_params.iter().enumerate() {
        if p.is_empty() {
            diag.error(
                src,
                format!("{field}.fromParams[{i}]"),
                "location query must be non-empty string",
            );
        } else {
            locations.push(Location::Param(p.clone()));
        }
    }
    for (i, c) in rule.from_cookies.iter().enumerate() {
        if c.is_empty() {
            diag.error(
                src,
                format!("{field}.fromCookies[{i}]"),
                "cookie name must be non-empty string",
            );
        } else {
            locations.push(Location::Cookie(c.clone()));
        }
    }
    if rule.from_headers.is_empty() && rule.from_params.is_empty() && rule.from_cookies.is_empty() {
        // Envoy's defaults when no location is given at all.
        locations.push(Location::Header {
            name: http::header::AUTHORIZATION,
            prefix: "Bearer ".into(),
        });
        locations.push(Location::Param("access_token".into()));
    }
    let output_payload_to_header = match rule.output_payload_to_header.as_deref() {
        None | Some("") => None,
        Some(h) => match output_header(h) {
            Ok(h) => Some(h),
            Err(why) => {
                diag.error(src, format!("{field}.outputPayloadToHeader"), why);
                None
            }
        },
    };
    let mut output_claim_to_headers = Vec::new();
    for (i, c) in rule.output_claim_to_headers.iter().enumerate() {
        if c.claim.is_empty() || c.header.is_empty() {
            diag.error(
                src,
                format!("{field}.outputClaimToHeaders[{i}]"),
                "outputClaimToHeaders header and claim value must be non-empty string",
            );
            continue;
        }
        match output_header(&c.header) {
            Ok(h) => output_claim_to_headers.push((h, c.claim.clone())),
            Err(why) => diag.error(
                src,
                format!("{field}.outputClaimToHeaders[{i}].header"),
                why,
            ),
        }
    }
    let timeout = match rule.timeout.as_deref() {
        None => DEFAULT_TIMEOUT,
        Some(raw) => match super::duration::parse(raw) {
            Ok(d) if d < Duration::from_millis(1) => {
                diag.error(
                    src,
                    format!("{field}.timeout"),
                    "duration must be greater than 1ms",
                );
                DEFAULT_TIMEOUT
            }
            Ok(d) if d.subsec_nanos() % 1_000_000 != 0 => {
                diag.error(
                    src,
                    format!("{field}.timeout"),
                    "only durations to ms precision are supported",
                );
                DEFAULT_TIMEOUT
            }
            Ok(d) => d,
            Err(why) => {
                diag.error(src, format!("{field}.timeout"), why.to_string());
                DEFAULT_TIMEOUT
            }
        },
    };
    let mut space_delimited_claims = Vec::new();
    for (i, c) in rule.space_delimited_claims.iter().enumerate() {
        if c.is_empty() {
            diag.error(
                src,
                format!("{field}.spaceDelimitedClaims[{i}]"),
                "claim name must be non-empty string",
            );
        }
    }
    for c in rule
        .space_delimited_claims
        .iter()
        .map(String::as_str)
        .chain(SPACE_DELIMITED)
    {
        if !c.is_empty() && !space_delimited_claims.iter().any(|x| x == c) {
            space_delimited_claims.push(c.to_string());
        }
    }
    space_delimited_claims.sort();
    if rule.issuer.is_empty() && !uri.is_empty() {
        diag.warn(
            src,
            &format!("{field}.issuer"),
            "empty: tokens of any issuer signed by a key of jwksUri are accepted (Istio)",
        );
    }
    if diag.errors.len() > errors {
        return None;
    }
    Some(JwtRulePlan {
        policy: policy.to_string(),
        index,
        issuer: rule.issuer.clone(),
        audiences: rule
            .audiences
            .iter()
            .map(|a| token::sanitize_audience(a).to_string())
            .collect(),
        keys: keys?,
        locations,
        forward_original_token: rule.forward_original_token,
        output_payload_to_header,
        output_claim_to_headers,
        space_delimited_claims,
        timeout,
    })
}

/// A key set URL as Istio's `ParseJwksURI` accepts one: http or https,
/// with a host and a valid port.
fn check_url(raw: &str) -> Result<(), String> {
    let scheme = raw
        .split_once("://")
        .or_else(|| raw.split_once(':'))
        .map_or("", |(s, _)| s);
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!("URI scheme {scheme:?} is not supported"));
    }
    let uri: http::Uri = raw
        .parse()
        .map_err(|e| format!("{raw:?} is not a URL: {e}"))?;
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("{raw:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
