//! AuthorizationPolicy compiled: who may call what on the traffic this
//! proxy receives, decided as Istio's RBAC filters do.
//!
//! Order (Istio's): a request matching a rule of a DENY policy is denied;
//! else, when ALLOW policies apply, it must match a rule of one; with none,
//! it is allowed. AUDIT policies decide nothing and mark the log. A rule
//! matches when one of its sources, one of its operations and every
//! condition match; a field matches when one of its values does and none
//! of its `not` values. On TCP traffic (no HTTP attributes) an ALLOW rule
//! that names an HTTP attribute never matches, and a DENY or AUDIT rule
//! matches with those values left out (denying more, never less).

mod analyze;
mod attributes;
pub(crate) mod compile;
mod pattern;
mod remote;

use std::sync::Arc;

use serde::Serialize;

pub use attributes::{Attributes, HttpAttributes, RequestAuth};
pub use pattern::Test;
pub use remote::{peer_principal, remote_ip};

use crate::config::authorization_policy::Action;

/// The policies that apply to this proxy, by action, in load order.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthzPlan {
    /// DENY policies.
    pub deny: Vec<PolicyPlan>,
    /// ALLOW policies; when any applies, a request must match one.
    pub allow: Vec<PolicyPlan>,
    /// AUDIT policies.
    pub audit: Vec<PolicyPlan>,
    /// The policies annotated `istio.io/dry-run: "true"`, as a plan of
    /// their own (Envoy's shadow rules): evaluated, counted and logged,
    /// never enforced.
    pub dry_run: Option<Box<AuthzPlan>>,
}

/// One AuthorizationPolicy.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyPlan {
    /// `<namespace>/<name>` (the metric's `policy` label).
    pub name: Arc<str>,
    /// Where it was read from, for `explain`.
    pub origin: String,
    /// Its rules as HTTP requests see them.
    pub http: Vec<RulePlan>,
    /// Its rules as TCP connections see them.
    pub tcp: Vec<RulePlan>,
}

/// One rule: `spec.rules[index]`.
#[derive(Debug, Clone, Serialize)]
pub struct RulePlan {
    /// Its index in `spec.rules`.
    pub index: usize,
    /// Sources (`from`), one of which must match; empty: any.
    pub from: Vec<Vec<Field>>,
    /// Operations (`to`), one of which must match; empty: any.
    pub to: Vec<Vec<Field>>,
    /// Conditions (`when`), all of which must match.
    pub when: Vec<Field>,
}

/// One attribute's values: one of `values` (when given) and none of
/// `not_values` must match.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Values, one of which must match.
    pub values: Vec<Test>,
    /// Values none of which may match.
    pub not_values: Vec<Test>,
}

/// The rule that decided, or audited, a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// The policy's action.
    pub action: Action,
    /// `<namespace>/<name>`.
    pub policy: Arc<str>,
    /// The rule's index in `spec.rules`.
    pub rule: usize,
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request or connection may proceed.
    pub allowed: bool,
    /// The DENY rule that denied it, or the ALLOW rule that allowed it;
    /// `None` when no policy applies (allowed) or no ALLOW rule matched
    /// (denied).
    pub by: Option<RuleRef>,
    /// The AUDIT rule that matched, if any.
    pub audit: Option<RuleRef>,
}

impl AuthzPlan {
    /// Whether any policy applies (otherwise every request is allowed and
    /// nothing is evaluated).
    pub fn is_empty(&self) -> bool {
        self.deny.is_empty()
            && self.allow.is_empty()
            && self.audit.is_empty()
            && self.dry_run.is_none()
    }

    /// What the dry-run policies would decide on their own; `None` when
    /// there are none.
    pub fn dry_run(&self, a: &Attributes) -> Option<Verdict> {
        self.dry_run.as_ref().map(|shadow| shadow.decide(a))
    }

    /// Decides a request (or, without `http`, a connection).
    pub fn decide(&self, a: &Attributes) -> Verdict {
        let audit = first_match(&self.audit, a, Action::Audit);
        if let Some(by) = first_match(&self.deny, a, Action::Deny) {
            return Verdict {
                allowed: false,
                by: Some(by),
                audit,
            };
        }
        if self.allow.is_empty() {
            return Verdict {
                allowed: true,
                by: None,
                audit,
            };
        }
        let by = first_match(&self.allow, a, Action::Allow);
        Verdict {
            allowed: by.is_some(),
            by,
            audit,
        }
    }
}

fn first_match(policies: &[PolicyPlan], a: &Attributes, action: Action) -> Option<RuleRef> {
    policies.iter().find_map(|p| {
        let rules = if a.http.is_some() { &p.http } else { &p.tcp };
        rules.iter().find(|r| r.matches(a)).map(|r| RuleRef {
            action,
            policy: p.name.clone(),
            rule: r.index,
        })
    })
}

impl RulePlan {
    fn matches(&self, a: &Attributes) -> bool {
        let any = |sets: &[Vec<Field>]| {
            sets.is_empty() || sets.iter().any(|fs| fs.iter().all(|f| f.matches(a)))
        };
        any(&self.from) && any(&self.to) && self.when.iter().all(|f| f.matches(a))
    }
}

impl Field {
    fn matches(&self, a: &Attributes) -> bool {
        (self.values.is_empty() || self.values.iter().any(|t| t.matches(a)))
            && !self.not_values.iter().any(|t| t.matches(a))
    }
}

#[cfg(test)]
mod tests;
