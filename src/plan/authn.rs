//! RequestAuthentication compiled: the JSON Web Token rules that apply to
//! this proxy's inbound traffic. Tokens are validated per request by
//! `runtime::authn`; a valid one becomes the request's
//! [`RequestAuth`](super::authz::RequestAuth).

use serde::Serialize;

use super::diagnostics::Diagnostics;
use crate::bootstrap::Bootstrap;
use crate::config::Config;

/// The JWT rules of every RequestAuthentication that applies to this proxy.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthnPlan {
    /// The rules, in load order; empty: no token is looked at.
    pub rules: Vec<JwtRulePlan>,
}

/// One `jwtRules` entry.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JwtRulePlan {
    /// `<namespace>/<name>` of its RequestAuthentication.
    pub policy: String,
    /// The `iss` a token must carry.
    pub issuer: String,
}

/// Compiles the RequestAuthentications that apply to this proxy.
pub(crate) fn compile(config: &Config, bootstrap: &Bootstrap, diag: &mut Diagnostics) -> AuthnPlan {
    let mut plan = AuthnPlan::default();
    for ra in &config.request_authentications {
        let refs = ra.spec.target_ref.is_some() || !ra.spec.target_refs.is_empty();
        if !super::selector::policy_applies(
            &ra.source,
            ra.spec.selector.as_ref(),
            refs,
            bootstrap,
            diag,
        ) {
            continue;
        }
        for rule in &ra.spec.jwt_rules {
            plan.rules.push(JwtRulePlan {
                policy: format!("{}/{}", ra.source.namespace, ra.source.name),
                issuer: rule.issuer.clone(),
            });
        }
    }
    plan
}
