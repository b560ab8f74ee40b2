//! The compiled, validated, immutable form of the configuration.
//!
//! `compile` resolves references between resources, applies Istio's defaults
//! and precedence rules, and collects every error (each naming file, line,
//! `kind/namespace/name`, field path and reason). Known-but-unsupported
//! settings are errors when they would change security, warnings when they
//! only tune behaviour. Pure: no sockets, no tokio, no rustls objects, so
//! `meshgate validate` runs exactly the code the proxy runs.

mod analyze;
pub mod authn;
pub mod authz;
pub mod destination;
mod diagnostics;
pub mod duration;
pub mod host;
pub mod inbound;
pub mod outbound;
pub mod path;
mod port;
pub mod route;
mod rule;
mod scope;
mod selector;
pub mod tls;
mod weighted;

use serde::Serialize;

use crate::bootstrap::Bootstrap;
use crate::config::{Config, ConfigErrors};
use diagnostics::{Diagnostics, MeshIdentity};

pub use outbound::{Decision, OutboundPlan, Target};
pub use tls::{ClientTlsPlan, CredentialRef, IdentitySource, TlsMode, TrustSource};
pub use weighted::pick_weighted;

/// The whole compiled configuration. Shared behind `Arc`; never mutated.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Outbound (origination) routing and upstream policy.
    pub outbound: OutboundPlan,
    /// Inbound (termination) listeners.
    pub inbound: inbound::InboundPlan,
    /// AuthorizationPolicies on inbound traffic.
    pub authz: authz::AuthzPlan,
    /// RequestAuthentication JWT rules on inbound requests.
    pub authn: authn::AuthnPlan,
    /// Findings that do not stop the proxy (unsupported tuning fields,
    /// `insecureSkipVerify`, skipped kinds).
    pub warnings: Vec<String>,
}

impl Plan {
    /// Every certificate, key, CA and CRL file the plan names (for change
    /// detection).
    pub fn referenced_files(&self) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        let policies = self.outbound.rules.iter().flat_map(|r| {
            std::iter::once(&r.default).chain(r.ports.values()).chain(
                r.subsets
                    .values()
                    .flat_map(|s| std::iter::once(&s.default).chain(s.ports.values())),
            )
        });
        for p in policies {
            if let TrustSource::File(f) = &p.tls.trust {
                out.push(f.clone());
            }
            if let Some(IdentitySource::Files { cert, key }) = &p.tls.identity {
                out.extend([cert.clone(), key.clone()]);
            }
            out.extend(p.tls.crl.clone());
        }
        for tls in self
            .inbound
            .listeners
            .iter()
            .flat_map(|l| &l.servers)
            .filter_map(|s| s.tls.as_ref())
        {
            for c in &tls.certs {
                if let inbound::ServerCertSource::Files { cert, key } = c {
                    out.extend([cert.clone(), key.clone()]);
                }
            }
            if let Some(inbound::ClientCaSource::File(f)) = &tls.client_ca {
                out.push(f.clone());
            }
            out.extend(tls.crl.clone());
        }
        out.sort();
        out.dedup();
        out
    }
}

/// Compiles parsed resources into a plan, or returns every error found
/// (errors in isolated parts too: the strict view).
pub fn compile(config: &Config, bootstrap: &Bootstrap) -> Result<Plan, ConfigErrors> {
    let compiled = compile_all(config, bootstrap);
    let mut errors = compiled.errors;
    errors.extend(compiled.isolated);
    if errors.is_empty() {
        Ok(compiled.plan)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// A plan with everything found while compiling it.
pub struct Compiled {
    /// What compiled. With `errors`, it is incomplete and must not be
    /// served; it still lets credentials be checked in the same pass.
    pub plan: Plan,
    /// Errors that stop the configuration from being served.
    pub errors: Vec<crate::config::ConfigError>,
    /// Errors in parts left out of `plan` (a listener whose servers do not
    /// compile): the rest may be served without them.
    pub isolated: Vec<crate::config::ConfigError>,
}

/// Compiles parsed resources, reporting everything at once.
pub fn compile_all(config: &Config, bootstrap: &Bootstrap) -> Compiled {
    let mut diag = Diagnostics {
        warnings: config.warnings.clone(),
        mesh: bootstrap.identity_dir.clone().map(|dir| MeshIdentity {
            dir,
            trust_domain: bootstrap.trust_domain.clone(),
            app_addr: bootstrap.app_addr,
        }),
        capture: bootstrap.interception_mode == crate::bootstrap::InterceptionMode::Redirect,
        ..Default::default()
    };
    let scoped = scope::scope(config, bootstrap, &mut diag);
    let config = scoped.visible(); // exportTo: what the proxy's namespace sees
    let outbound = outbound::compile::compile(scoped.mesh(), bootstrap, &mut diag);
    analyze::run(config, &mut diag);
    let inbound = inbound::compile::compile(config, &mut diag);
    let authn = authn::compile(config, bootstrap, &mut diag);
    let authz = authz::compile::compile(config, bootstrap, (&inbound, &authn), &mut diag);
    Compiled {
        plan: Plan {
            outbound,
            inbound,
            authz,
            authn,
            warnings: diag.warnings,
        },
        errors: diag.errors,
        isolated: diag.isolated,
    }
}

#[cfg(test)]
mod tests;
