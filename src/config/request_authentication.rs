//! `RequestAuthentication` (security.istio.io): which JSON Web Tokens this
//! proxy accepts. Compiled by `plan::authn`, validated per request.

use serde::{Deserialize, Serialize};

/// `RequestAuthentication.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestAuthenticationSpec {
    /// Workloads it applies to (`{matchLabels}`).
    pub selector: Option<serde_json::Value>,
    /// Istio attaches a policy with target references to Kubernetes
    /// Gateway API gateways and waypoints only, never to a sidecar.
    pub target_ref: Option<serde_json::Value>,
    /// As `target_ref`.
    #[serde(default)]
    pub target_refs: Vec<serde_json::Value>,
    /// The issuers accepted.
    #[serde(default)]
    pub jwt_rules: Vec<JwtRule>,
}

/// `JWTRule`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtRule {
    /// The `iss` a token must carry.
    #[serde(default)]
    pub issuer: String,
    /// `aud` values accepted (any one of them); empty: any audience (what
    /// Istio configures Envoy with).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Where the JSON Web Key Set is fetched from.
    pub jwks_uri: Option<String>,
    /// The JSON Web Key Set, inline.
    pub jwks: Option<String>,
    /// Headers the token is read from (default `Authorization: Bearer`).
    #[serde(default)]
    pub from_headers: Vec<JwtHeader>,
    /// Query parameters the token is read from (`access_token` by default,
    /// when no location is given at all).
    #[serde(default)]
    pub from_params: Vec<String>,
    /// Cookies the token is read from.
    #[serde(default)]
    pub from_cookies: Vec<String>,
    /// A header to carry the verified payload (base64url) to the app.
    pub output_payload_to_header: Option<String>,
    /// Keep the token in the request to the app.
    #[serde(default)]
    pub forward_original_token: bool,
    /// Headers set from claims.
    #[serde(default)]
    pub output_claim_to_headers: Vec<ClaimToHeader>,
    /// How long fetching `jwksUri` may take.
    pub timeout: Option<String>,
    /// Claims whose string value is split at spaces into a list for
    /// authorization (`scope` and `permission` always are).
    #[serde(default)]
    pub space_delimited_claims: Vec<String>,
}

/// `JWTHeader`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JwtHeader {
    /// Header name.
    pub name: String,
    /// Prefix before the token (e.g. `Bearer `).
    #[serde(default)]
    pub prefix: String,
}

/// `ClaimToHeader`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ClaimToHeader {
    /// Header name.
    pub header: String,
    /// Claim name.
    pub claim: String,
}
