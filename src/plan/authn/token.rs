//! One JSON Web Token as Envoy's `jwt_authn` filter reads and checks it
//! (its `jwt_verify` library): parsed in the same order with the same
//! failures, the time window with Envoy's 60 s of clock skew, the audience
//! check with its scheme and trailing-slash leniency, and the signature
//! against a key set by `kid` and `alg`.

use base64::Engine as _;
use base64::engine::general_purpose;
use serde_json::{Map, Value};

use super::jwks::Jwks;
pub(crate) use super::status::B64URL;
pub use super::status::Status;

/// Envoy's default clock skew (`kClockSkewInSecond`).
pub const CLOCK_SKEW_SECS: u64 = 60;

/// The signature algorithms Envoy implements (`isImplemented`).
const IMPLEMENTED: [&str; 13] = [
    "ES256", "ES384", "ES512", "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256",
    "PS384", "PS512", "EdDSA",
];

/// A parsed token (`jwt_verify::Jwt`): nothing in it is trusted before
/// [`Jwt::verify_signature`] succeeds.
#[derive(Clone)]
pub struct Jwt {
    /// `alg` of the header.
    pub alg: String,
    /// `kid` of the header, empty without one.
    pub kid: String,
    /// `iss`, empty without one.
    pub iss: String,
    /// `sub`, empty without one.
    pub sub: String,
    /// `nbf`, 0 without one.
    pub nbf: u64,
    /// `exp`, 0 without one.
    pub exp: u64,
    /// `aud`, a string or a list of strings.
    pub audiences: Vec<String>,
    /// Every claim of the payload.
    pub payload: Map<String, Value>,
    /// The payload as sent (base64url), for `outputPayloadToHeader`.
    pub payload_b64: String,
    /// `<header>.<payload>` as sent: what is signed.
    signed: String,
    /// The decoded signature.
    signature: Vec<u8>,
}

impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token itself (it is a bearer credential).
        f.debug_struct("Jwt")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

/// An integer claim: absent is 0; anything else than a non-negative whole
/// number is refused with `not_integer` or `out_of_range`.
fn int_claim(
    payload: &Map<String, Value>,
    name: &str,
    not_integer: Status,
    out_of_range: Status,
) -> Result<u64, Status> {
    match payload.get(name) {
        None => Ok(0),
        Some(Value::Number(n)) => {
            if let Some(u) = n.as_u64() {
                return if u > i64::MAX as u64 {
                    Err(out_of_range)
                } else {
                    Ok(u)
                };
            }
            if n.as_i64().is_some() {
                return Err(out_of_range);
            }
            match n.as_f64() {
                Some(f) if f.fract() != 0.0 || !f.is_finite() => Err(not_integer),
                Some(f) if f < 0.0 || f >= i64::MAX as f64 => Err(out_of_range),
                // A whole number written as a float (`1.7e9`).
                Some(f) => Ok(f as u64),
                None => Err(not_integer),
            }
        }
        Some(_) => Err(not_integer),
    }
}

/// A string claim or header field: absent is empty; another type fails.
fn str_field(map: &Map<String, Value>, name: &str, wrong: Status) -> Result<String, Status> {
    match map.get(name) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(wrong),
    }
}

fn decode_object(part: &str, b64: Status, json: Status) -> Result<Map<String, Value>, Status> {
    let bytes = B64URL.decode(part).map_err(|_| b64)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(json),
    }
}

impl Jwt {
    /// Parses `token` as Envoy does (`Jwt::parseFromString`).
    pub fn parse(token: &str) -> Result<Jwt, Status> {
        if token.bytes().filter(|b| *b == b'.').count() != 2 {
            return Err(Status::JwtBadFormat);
        }
        let parts: Vec<&str> = token.split('.').filter(|p| !p.is_empty()).collect();
        let [header, payload, signature] = parts[..] else {
            return Err(Status::JwtBadFormat);
        };
        let h = decode_object(
            header,
            Status::JwtHeaderParseErrorBadBase64,
            Status::JwtHeaderParseErrorBadJson,
        )?;
        let alg = match h.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(Status::JwtHeaderBadAlg),
        };
        if !IMPLEMENTED.contains(&alg.as_str()) {
            return Err(Status::JwtHeaderNotImplementedAlg);
        }
        let kid = str_field(&h, "kid", Status::JwtHeaderBadKid)?;
        let p = decode_object(
            payload,
            Status::JwtPayloadParseErrorBadBase64,
            Status::JwtPayloadParseErrorBadJson,
        )?;
        let iss = str_field(&p, "iss", Status::JwtPayloadParseErrorIssNotString)?;
        let sub = str_field(&p, "sub", Status::JwtPayloadParseErrorSubNotString)?;
        int_claim(
            &p,
            "iat",
            Status::JwtPayloadParseErrorIatNotInteger,
            Status::JwtPayloadParseErrorIatOutOfRange,
        )?;
        let nbf = int_claim(
            &p,
            "nbf",
            Status::JwtPayloadParseErrorNbfNotInteger,
            Status::JwtPayloadParseErrorNbfOutOfRange,
        )?;
        let exp = int_claim(
            &p,
            "exp",
            Status::JwtPayloadParseErrorExpNotInteger,
            Status::JwtPayloadParseErrorExpOutOfRange,
        )?;
        str_field(&p, "jti", Status::JwtPayloadParseErrorJtiNotString)?;
        let audiences = match p.get("aud") {
            None => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or(Status::JwtPayloadParseErrorAudNotString)?,
            Some(_) => return Err(Status::JwtPayloadParseErrorAudNotString),
        };
        let signature = B64URL
            .decode(signature)
            .map_err(|_| Status::JwtSignatureParseErrorBadBase64)?;
        Ok(Jwt {
            alg,
            kid,
            iss,
            sub,
            nbf,
            exp,
            audiences,
            payload: p,
            payload_b64: payload.to_string(),
            signed: format!("{header}.{payload}"),
            signature,
        })
    }

    /// `nbf` and `exp` against `now` (Unix seconds) with `skew` seconds of
    /// leeway (`verifyTimeConstraint`).
    pub fn verify_time(&self, now: u64, skew: u64) -> Result<(), Status> {
        if now.saturating_add(skew) < self.nbf {
            return Err(Status::JwtNotYetValid);
        }
        if self.exp != 0 && now > self.exp.saturating_add(skew) {
            return Err(Status::JwtExpired);
        }
        Ok(())
    }

    /// The signature against `jwks` (`verifyJwtWithoutTimeChecking`): a
    /// key whose `kid` differs from the token's (both given) or whose `alg`
    /// differs (given) is skipped; every other key is tried.
    pub fn verify_signature(&self, jwks: &Jwks) -> Result<(), Status> {
        let mut matched = false;
        for key in jwks.keys() {
            if !self.kid.is_empty() && !key.kid.is_empty() && key.kid != self.kid {
                continue;
            }
            if !key.alg.is_empty() && key.alg != self.alg {
                continue;
            }
            matched = true;
            match key.verify(&self.alg, self.signed.as_bytes(), &self.signature) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(status) => return Err(status),
            }
        }
        Err(if matched {
            Status::JwtVerificationFail
        } else {
            Status::JwksKidAlgMismatch
        })
    }
}

/// An audience without its `http://` or `https://` scheme and one trailing
/// `/` (Envoy's `sanitizeAudience`).
pub fn sanitize_audience(aud: &str) -> &str {
    if aud.is_empty() {
        return aud;
    }
    let rest = aud
        .strip_prefix("http://")
        .or_else(|| aud.strip_prefix("https://"))
        .unwrap_or(aud);
    rest.strip_suffix('/').unwrap_or(rest)
}

/// Whether a token's `aud` values meet the configured (sanitized)
/// audiences: any one in common; no configured audience allows any.
pub fn audiences_allowed(allowed: &[String], token: &[String]) -> bool {
    allowed.is_empty()
        || token
            .iter()
            .any(|a| allowed.iter().any(|c| c == sanitize_audience(a)))
}

/// Unpadded base64url, for tests and callers that encode.
pub fn b64url(bytes: &[u8]) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
