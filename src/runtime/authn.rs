//! RequestAuthentication at request time: the tokens a request carries,
//! validated against the rules of `plan::authn` as Envoy's `jwt_authn`
//! filter does with the configuration Istio gives it.
//!
//! - Headers the rules write (`outputPayloadToHeader`,
//!   `outputClaimToHeaders`) are removed from every request first, so a
//!   client cannot forge them. A CORS preflight (`OPTIONS` with `Origin`
//!   and `Access-Control-Request-Method`) is not authenticated (Istio's
//!   `bypass_cors_preflight`).
//! - Each rule looks for tokens at its locations: header values (after the
//!   prefix, from the first base64url character), the first value of each
//!   query parameter, cookies. No token anywhere: the request goes on
//!   without a request principal.
//! - Otherwise one rule (in the plan's issuer order) must find its tokens
//!   all valid: `iss` equal to its issuer, within `nbf`/`exp` with 60 s of
//!   clock skew, an audience in common when it lists any, signed by a key
//!   of its set. Else the request is refused with the first failing rule's
//!   reason: 401 (403 for an audience not allowed) with Envoy's body
//!   (`Jwt is expired`, `Jwt issuer is not configured`, ...) and
//!   `www-authenticate: Bearer realm="<url>", error="invalid_token"`.
//! - The valid rule's tokens are removed from the request (the header, or
//!   the query parameter; cookies stay, as in Envoy) unless
//!   `forwardOriginalToken`, and its output headers are added.
//!
//! Nothing of a token is logged or counted; `meshgate_jwt_authn_total`
//! counts results with a bounded reason.

use std::sync::Arc;

use base64::Engine as _;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use serde_json::{Map, Value};
use tracing::debug;

use super::exchange::{Ctx, Outcome, Reply};
use super::http::{ERROR_HEADER, boxed};
use crate::metrics::JwtAuthnLabels;
use crate::plan::authn::token::{self, CLOCK_SKEW_SECS, Jwt, Status};
use crate::plan::authn::{AuthnPlan, Jwks, JwtRulePlan, KeySource, Location};
use crate::plan::authz::RequestAuth;

/// The reason (response flag, `x-meshgate-error`) of a refusal (Envoy's
/// response code details start so).
pub const DENIED: &str = "jwt_authn_access_denied";

/// The longest path Envoy puts in the realm (`MaximumUriLength`).
const MAX_REALM_PATH: usize = 256;

/// A token found in a request and where.
struct Found {
    token: String,
    at: Where,
}

enum Where {
    Header(HeaderName),
    Param(String),
    Cookie,
}

/// The request's validated token: `Ok(None)` when it carries none (it
/// goes on without a request principal, as Istio), `Err` (401) when a
/// token is present and invalid.
pub(super) async fn authenticate<B>(
    ctx: &Ctx,
    req: &mut Request<B>,
) -> Result<Option<RequestAuth>, Box<Reply>> {
    // The rules in force now, as authorization decides by them; the
    // common case (none) checked without taking a reference.
    if ctx.state.current().plan.authn.rules.is_empty() {
        return Ok(None);
    }
    let snapshot = ctx.state.snapshot();
    let plan = &snapshot.plan.authn;
    if plan.rules.is_empty() {
        return Ok(None);
    }
    sanitize(plan, req.headers_mut());
    if cors_preflight(req) {
        return Ok(None);
    }
    let found: Vec<Vec<Found>> = plan.rules.iter().map(|r| extract(r, req)).collect();
    if found.iter().all(Vec::is_empty) {
        count(ctx, "no_token", "");
        return Ok(None);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut failure: Option<(Status, &JwtRulePlan)> = None;
    for (rule, tokens) in plan.rules.iter().zip(&found) {
        if tokens.is_empty() {
            continue;
        }
        match verify_all(ctx, rule, tokens, now).await {
            Ok(jwts) => {
                let auth = apply(rule, tokens, &jwts, req);
                count(ctx, "allowed", "");
                return Ok(Some(auth));
            }
            Err(status) => {
                failure.get_or_insert((status, rule));
            }
        }
    }
    let (status, rule) = failure.unwrap_or((Status::JwtVerificationFail, &plan.rules[0]));
    count(ctx, "denied", status.reason());
    debug!(
        policy = %rule.policy,
        rule = rule.index,
        reason = status.reason(),
        "request refused by RequestAuthentication"
    );
    Err(Box::new(deny(ctx, req, status)))
}

fn count(ctx: &Ctx, result: &'static str, reason: &'static str) {
    ctx.state
        .metrics
        .jwt_authn
        .get_or_create(&JwtAuthnLabels { result, reason })
        .inc();
}

/// Removes the headers any rule writes (Envoy's `sanitizeHeaders`).
fn sanitize(plan: &AuthnPlan, headers: &mut HeaderMap) {
    for r in &plan.rules {
        if let Some(h) = &r.output_payload_to_header {
            headers.remove(h);
        }
        for (h, _) in &r.output_claim_to_headers {
            headers.remove(h);
        }
    }
}

fn cors_preflight<B>(req: &Request<B>) -> bool {
    let present = |h: &str| {
        req.headers()
            .get(h)
            .is_some_and(|v| !v.as_bytes().is_empty())
    };
    req.method() == http::Method::OPTIONS
        && present("origin")
        && present("access-control-request-method")
}

/// Envoy's `extractJWT`: from the first base64url (or `.`) character at
/// or after `from`; the whole value when there is none.
fn after_prefix(value: &str, from: usize) -> &str {
    let legal = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    match value[from..].find(legal) {
        Some(i) => &value[from + i..],
        None => value,
    }
}

fn extract<B>(rule: &JwtRulePlan, req: &Request<B>) -> Vec<Found> {
    let mut out = Vec::new();
    for loc in &rule.locations {
        match loc {
            Location::Header { name, prefix } => {
                for v in req.headers().get_all(name) {
                    let value = String::from_utf8_lossy(v.as_bytes());
                    let token = if prefix.is_empty() {
                        value.to_string()
                    } else {
                        let Some(pos) = value.find(prefix.as_str()) else {
                            continue;
                        };
                        after_prefix(&value, pos + prefix.len()).to_string()
                    };
                    out.push(Found {
                        token,
                        at: Where::Header(name.clone()),
                    });
                }
            }
            Location::Param(p) => {
                if let Some(token) = query_param(req.uri(), p) {
                    out.push(Found {
                        token,
                        at: Where::Param(p.clone()),
                    });
                }
            }
            Location::Cookie(c) => {
                if let Some(token) = cookie(req.headers(), c) {
                    out.push(Found {
                        token,
                        at: Where::Cookie,
                    });
                }
            }
        }
    }
    out
}

/// Percent-decodes a query component (`+` is a space).
fn decode_component(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The first value of query parameter `name`.
fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode_component(k) == name).then(|| decode_component(v))
    })
}

/// `uri` without every `name` query parameter.
fn without_param(uri: &Uri, name: &str) -> Option<Uri> {
    let pq = uri.path_and_query()?;
    let query = pq.query()?;
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let k = pair.split_once('=').map_or(*pair, |(k, _)| k);
            decode_component(k) != name
        })
        .collect();
    let new_pq = if kept.is_empty() {
        pq.path().to_string()
    } else {
        format!("{}?{}", pq.path(), kept.join("&"))
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(new_pq.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The first cookie `name` (surrounding quotes removed).
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all(header::COOKIE).iter().find_map(|v| {
        let v = v.to_str().ok()?;
        v.split(';').find_map(|c| {
            let (k, val) = c.trim().split_once('=')?;
            (k.trim() == name).then(|| {
                let val = val.trim();
                val.strip_prefix('"')
                    .and_then(|x| x.strip_suffix('"'))
                    .unwrap_or(val)
                    .to_string()
            })
        })
    })
}

/// Every token of `rule` valid for it, or the first failure.
async fn verify_all(
    ctx: &Ctx,
    rule: &JwtRulePlan,
    tokens: &[Found],
    now: u64,
) -> Result<Vec<Jwt>, Status> {
    let mut out = Vec::with_capacity(tokens.len());
    for f in tokens {
        out.push(verify(ctx, rule, &f.token, now).await?);
    }
    Ok(out)
}

/// One token, checked in Envoy's order: parse, issuer, time, audience,
/// keys, signature.
async fn verify(ctx: &Ctx, rule: &JwtRulePlan, token: &str, now: u64) -> Result<Jwt, Status> {
    let jwt = Jwt::parse(token)?;
    if !rule.issuer.is_empty() && jwt.iss != rule.issuer {
        return Err(Status::JwtUnknownIssuer);
    }
    jwt.verify_time(now, CLOCK_SKEW_SECS)?;
    if !token::audiences_allowed(&rule.audiences, &jwt.audiences) {
        return Err(Status::JwtAudienceNotAllowed);
    }
    let fetched: Arc<Jwks>;
    let keys = match &rule.keys {
        KeySource::Inline(j) => j,
        KeySource::Remote(remote) => {
            fetched = ctx
                .state
                .jwks
                .keys(&ctx.state, remote, rule.timeout)
                .await?;
            &fetched
        }
    };
    jwt.verify_signature(keys)?;
    Ok(jwt)
}

/// The valid rule's effects on the request; the request's identity (the
/// first token's, as Envoy's last-written payload).
fn apply<B>(
    rule: &JwtRulePlan,
    tokens: &[Found],
    jwts: &[Jwt],
    req: &mut Request<B>,
) -> RequestAuth {
    for (f, jwt) in tokens.iter().zip(jwts).rev() {
        if let Some(h) = &rule.output_payload_to_header
            && let Ok(v) = HeaderValue::from_str(&jwt.payload_b64)
        {
            req.headers_mut().append(h.clone(), v);
        }
        for (h, claim) in &rule.output_claim_to_headers {
            if let Some(v) = claim_header(&jwt.payload, claim)
                && let Ok(v) = HeaderValue::from_str(&v)
            {
                req.headers_mut().append(h.clone(), v);
            }
        }
        if !rule.forward_original_token {
            match &f.at {
                Where::Header(h) => {
                    req.headers_mut().remove(h);
                }
                Where::Param(p) => {
                    if let Some(uri) = without_param(req.uri(), p) {
                        *req.uri_mut() = uri;
                    }
                }
                // Envoy leaves cookies in place.
                Where::Cookie => {}
            }
        }
    }
    let first = &jwts[0];
    RequestAuth {
        issuer: first.iss.clone(),
        subject: first.sub.clone(),
        claims: normalize(&first.payload, &rule.space_delimited_claims),
    }
}

/// The payload as authorization sees it: the space-delimited claims'
/// string values split into lists (Envoy's `normalize_payload_in_metadata`).
fn normalize(payload: &Map<String, Value>, claims: &[String]) -> Map<String, Value> {
    let mut out = payload.clone();
    for c in claims {
        if let Some(Value::String(s)) = payload.get(c) {
            let list: Vec<Value> = s
                .split(' ')
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.to_string()))
                .collect();
            if !list.is_empty() {
                out.insert(c.clone(), Value::Array(list));
            }
        }
    }
    out
}

/// A claim (a `.`-separated path) as Envoy writes it to a header: strings
/// as they are, whole numbers as integers, other numbers with six
/// decimals, booleans as `true`/`false`, objects and lists as base64 JSON.
fn claim_header(payload: &Map<String, Value>, path: &str) -> Option<String> {
    let mut parts = path.split('.');
    let mut v = payload.get(parts.next()?)?;
    for p in parts {
        v = v.as_object()?.get(p)?;
    }
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(u), _) => u.to_string(),
            (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f < u64::MAX as f64 => {
                (f as u64).to_string()
            }
            (None, Some(f)) => format!("{f:.6}"),
            (None, None) => return None,
        },
        Value::Object(_) | Value::Array(_) => {
            base64::engine::general_purpose::STANDARD.encode(serde_json::to_string(v).ok()?)
        }
        Value::Null => return None,
    };
    (!s.is_empty()).then_some(s)
}

/// Envoy's refusal: 401 (403 for audiences), its reason as the body and
/// `www-authenticate` naming the request's URL.
fn deny<B>(ctx: &Ctx, req: &Request<B>, status: Status) -> Reply {
    let code = if status == Status::JwtAudienceNotAllowed {
        StatusCode::FORBIDDEN
    } else {
        StatusCode::UNAUTHORIZED
    };
    let mut resp = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from_static(
        status.as_str().as_bytes(),
    ))));
    *resp.status_mut() = code;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(ERROR_HEADER, HeaderValue::from_static(DENIED));
    let scheme = if matches!(ctx.conn.tls(), super::tls_fact::TlsFact::Established { .. }) {
        "https"
    } else {
        "http"
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
        .unwrap_or("");
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut cut = path.len().min(MAX_REALM_PATH);
    while !path.is_char_boundary(cut) {
        cut -= 1;
    }
    let realm = format!(
        "Bearer realm=\"{scheme}://{host}{}\", error=\"invalid_token\"",
        &path[..cut]
    );
    if let Ok(v) = HeaderValue::from_str(&realm) {
        h.insert(header::WWW_AUTHENTICATE, v);
    }
    Reply {
        resp,
        outcome: Outcome::local("-", code, DENIED),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_follow_the_prefix_from_the_first_base64url_character() {
        assert_eq!(after_prefix("Bearer a.b.c", 7), "a.b.c");
        assert_eq!(after_prefix("Bearer   a.b.c", 7), "a.b.c");
        assert_eq!(after_prefix("x Bearer a.b.c", 9), "a.b.c");
        // Nothing legal after the prefix: the whole value (Envoy).
        assert_eq!(after_prefix("Bearer ", 7), "Bearer ");
    }

    #[test]
    fn query_parameters_are_decoded_and_removed() {
        let uri: Uri = "/p?a=1&access_token=x%2Ey.z&b=2&access_token=other"
            .parse()
            .unwrap();
        assert_eq!(query_param(&uri, "access_token").unwrap(), "x.y.z");
        assert_eq!(query_param(&uri, "missing"), None);
        let cut = without_param(&uri, "access_token").unwrap();
        assert_eq!(cut.to_string(), "/p?a=1&b=2");
        let only: Uri = "/p?access_token=t".parse().unwrap();
        assert_eq!(
            without_param(&only, "access_token").unwrap().to_string(),
            "/p"
        );
        assert_eq!(decode_component("a+b%20c%zz%"), "a b c%zz%");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; jwt=\"t.o.k\""),
        );
        h.append(header::COOKIE, HeaderValue::from_static("jwt=second"));
        assert_eq!(cookie(&h, "jwt").unwrap(), "t.o.k");
        assert_eq!(cookie(&h, "a").unwrap(), "1");
        assert_eq!(cookie(&h, "b"), None);
    }

    #[test]
    fn claims_go_to_headers_as_envoy_writes_them() {
        let p: Map<String, Value> = serde_json::from_str(
            r#"{"s":"x","i":7,"f":1.5,"n":-2,"b":true,"o":{"k":"v"},"l":["a"],"e":"","z":null}"#,
        )
        .unwrap();
        assert_eq!(claim_header(&p, "s").unwrap(), "x");
        assert_eq!(claim_header(&p, "i").unwrap(), "7");
        assert_eq!(claim_header(&p, "f").unwrap(), "1.500000");
        assert_eq!(claim_header(&p, "n").unwrap(), "-2.000000");
        assert_eq!(claim_header(&p, "b").unwrap(), "true");
        assert_eq!(claim_header(&p, "o.k").unwrap(), "v");
        let o = base64::engine::general_purpose::STANDARD
            .decode(claim_header(&p, "o").unwrap())
            .unwrap();
        assert_eq!(o, br#"{"k":"v"}"#);
        assert!(claim_header(&p, "l").is_some());
        assert_eq!(claim_header(&p, "e"), None);
        assert_eq!(claim_header(&p, "z"), None);
        assert_eq!(claim_header(&p, "missing"), None);
    }

    #[test]
    fn space_delimited_claims_become_lists() {
        let p: Map<String, Value> =
            serde_json::from_str(r#"{"scope":"read  write","roles":"a b","blank":"  "}"#).unwrap();
        let n = normalize(&p, &["scope".into(), "blank".into()]);
        assert_eq!(n["scope"], serde_json::json!(["read", "write"]));
        assert_eq!(n["roles"], "a b");
        assert_eq!(n["blank"], "  ");
    }
}
