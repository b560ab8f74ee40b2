//! `istioctl analyze`-style findings on the policies that apply: rules
//! that can never match this proxy's traffic, warned with the reason.

use super::{Field, PolicyPlan, RulePlan, Test};
use crate::bootstrap::PathNormalization;
use crate::config::Resource;
use crate::config::authorization_policy::{Action, AuthorizationPolicySpec};
use crate::plan::authn::AuthnPlan;
use crate::plan::diagnostics::Diagnostics;
use crate::plan::inbound::{InboundPlan, TlsServerMode};

/// What the proxy's inbound traffic can carry.
pub(crate) struct Reach {
    /// Ports with a listener that verifies client certificates.
    mtls_ports: Vec<u16>,
    /// Every inbound port; `None` under capture (any port can arrive).
    ports: Option<Vec<u16>>,
    /// Whether any RequestAuthentication rule applies.
    tokens: bool,
    /// Whether paths are matched with runs of `/` merged.
    merged_slashes: bool,
}

impl Reach {
    /// What `inbound` and `authn` let the proxy's traffic carry.
    pub(crate) fn of(
        inbound: &InboundPlan,
        authn: &AuthnPlan,
        capture: bool,
        normalization: PathNormalization,
    ) -> Reach {
        let verifies = |l: &crate::plan::inbound::ListenerPlan| {
            l.mesh
                || l.servers.iter().any(|s| {
                    s.tls.as_ref().is_some_and(|t| {
                        matches!(
                            t.mode,
                            TlsServerMode::Mutual | TlsServerMode::OptionalMutual
                        )
                    })
                })
        };
        Reach {
            mtls_ports: inbound
                .listeners
                .iter()
                .filter(|l| verifies(l))
                .map(|l| l.port)
                .collect(),
            ports: (!capture).then(|| inbound.listeners.iter().map(|l| l.port).collect()),
            tokens: !authn.rules.is_empty(),
            merged_slashes: matches!(
                normalization,
                PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
            ),
        }
    }
}

/// Warns about each rule of `policy` that can never match, and about a
/// DENY path rule a doubled `/` steps around.
pub(crate) fn check(
    ap: &Resource<AuthorizationPolicySpec>,
    policy: &PolicyPlan,
    (action, reach): (Action, &Reach),
    diag: &mut Diagnostics,
) {
    let src = &ap.source;
    if action == Action::Deny {
        denies_all_tcp(ap, diag);
    }
    let paths = |r: &RulePlan| {
        r.to.iter()
            .flatten()
            .flat_map(|f| &f.values)
            .any(|t| matches!(t, Test::Path(_)))
    };
    if action == Action::Deny && !reach.merged_slashes && policy.http.iter().any(paths) {
        diag.warn(
            src,
            "spec.rules",
            "DENY by path with pathNormalization BASE: a request for //admin is not /admin and \
             steps around the rule (Istio's security best practices); set MeshConfig \
             pathNormalization to MERGE_SLASHES (or DECODE_AND_MERGE_SLASHES) in the bootstrap \
             file",
        );
    }
    for rule in &policy.http {
        for finding in never(rule, reach) {
            diag.warn(
                src,
                &format!("spec.rules[{}]", rule.index),
                format!("can never match: {finding}"),
            );
        }
    }
}

/// Istio's validation warning: a DENY rule whose sources or operations
/// name only HTTP attributes denies every TCP connection in its scope.
fn denies_all_tcp(ap: &Resource<AuthorizationPolicySpec>, diag: &mut Diagnostics) {
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let sources: Vec<_> = rule
            .from
            .iter()
            .flatten()
            .filter_map(|f| f.source.as_ref())
            .collect();
        let operations: Vec<_> = rule
            .to
            .iter()
            .flatten()
            .filter_map(|t| t.operation.as_ref())
            .collect();
        let tcp_from = sources.iter().any(|s| {
            !(s.principals.is_empty()
                && s.not_principals.is_empty()
                && s.ip_blocks.is_empty()
                && s.not_ip_blocks.is_empty()
                && s.namespaces.is_empty()
                && s.not_namespaces.is_empty()
                && s.remote_ip_blocks.is_empty()
                && s.not_remote_ip_blocks.is_empty()
                && s.service_accounts.is_empty()
                && s.not_service_accounts.is_empty())
        });
        let tcp_to = operations
            .iter()
            .any(|o| !(o.ports.is_empty() && o.not_ports.is_empty()));
        let (from, to) = (!sources.is_empty(), !operations.is_empty());
        if (from && !to && !tcp_from) || (to && !tcp_to) {
            diag.warn(
                &ap.source,
                &format!("spec.rules[{i}]"),
                "this DENY rule names only HTTP attributes, so it denies all traffic to TCP ports \
                 under its scope (Istio's rule for TCP); name the ports it is meant for",
            );
        }
    }
}

/// Why `rule` can never match, if it cannot.
fn never(rule: &RulePlan, reach: &Reach) -> Vec<String> {
    let mut out = Vec::new();
    let ports: Vec<u16> = rule
        .to
        .iter()
        .flatten()
        .chain(&rule.when)
        .flat_map(|f| &f.values)
        .filter_map(|t| match t {
            Test::Port(p) => Some(*p),
            _ => None,
        })
        .collect();
    let needs =
        |pred: fn(&Test) -> bool, fs: &[Field]| fs.iter().any(|f| f.values.iter().any(pred));
    let identity = |t: &Test| {
        matches!(
            t,
            Test::Principal(_)
                | Test::Namespace(_)
                | Test::ServiceAccount { .. }
                | Test::TrustDomain(_)
        )
    };
    let token = |t: &Test| matches!(t, Test::RequestPrincipal(_) | Test::Claim { .. });
    let all_sources_need = |pred: fn(&Test) -> bool| {
        (!rule.from.is_empty() && rule.from.iter().all(|fs| needs(pred, fs)))
            || needs(pred, &rule.when)
    };
    if all_sources_need(identity) {
        let reachable = if ports.is_empty() {
            !reach.mtls_ports.is_empty()
        } else {
            ports.iter().any(|p| reach.mtls_ports.contains(p))
        };
        if !reachable {
            out.push(
                "it needs a peer identity (principals, namespaces, serviceAccounts, \
                 trustDomains) and no inbound listener of this proxy on its ports verifies \
                 client certificates (a MUTUAL or OPTIONAL_MUTUAL server, or the mesh listener \
                 with --identity-dir)"
                    .to_string(),
            );
        }
    }
    if all_sources_need(token) && !reach.tokens {
        out.push(
            "it needs a validated JWT (requestPrincipals, request.auth.*) and no \
             RequestAuthentication applies to this proxy"
                .to_string(),
        );
    }
    if let Some(served) = &reach.ports
        && !ports.is_empty()
        && !ports.iter().any(|p| served.contains(p))
    {
        out.push(format!(
            "its ports {ports:?} are not served by any inbound listener of this proxy"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use crate::bootstrap::{Bootstrap, PathNormalization};
    use crate::config::load_str;

    const GATEWAY: &str = "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ['*']
";

    fn warnings(policy: &str, b: &Bootstrap) -> Vec<String> {
        let config = load_str("p.yaml", &format!("{GATEWAY}---\n{policy}")).unwrap();
        let c = crate::plan::compile_all(&config, b);
        assert!(c.errors.is_empty(), "{:?}", c.errors);
        c.plan.warnings
    }

    fn policy(action: &str, rules: &str) -> String {
        format!(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: p, namespace: default}}
spec:
  action: {action}
  rules:
{rules}"
        )
    }

    #[test]
    fn rules_that_cannot_match_this_proxy_are_named() {
        let b = Bootstrap::default();
        let w = warnings(
            &policy(
                "ALLOW",
                "  - from: [{source: {principals: [cluster.local/ns/a/sa/one]}}]
  - from: [{source: {requestPrincipals: ['*']}}]
  - to: [{operation: {ports: ['9999']}}]
  - to: [{operation: {ports: ['8080'], methods: [GET]}}]
",
            ),
            &b,
        );
        let never: Vec<&String> = w.iter().filter(|w| w.contains("can never match")).collect();
        assert_eq!(never.len(), 3, "{w:#?}");
        assert!(never[0].contains("spec.rules[0]") && never[0].contains("peer identity"));
        assert!(never[1].contains("spec.rules[1]") && never[1].contains("RequestAuthentication"));
        assert!(never[2].contains("spec.rules[2]") && never[2].contains("[9999]"));
    }

    #[test]
    fn a_deny_path_rule_without_merged_slashes_is_warned() {
        let deny = policy("DENY", "  - to: [{operation: {paths: ['/admin*']}}]\n");
        let mut b = Bootstrap::default();
        let w = warnings(&deny, &b);
        assert!(w.iter().any(|w| w.contains("//admin")), "{w:#?}");
        b.path_normalization = PathNormalization::MergeSlashes;
        let w = warnings(&deny, &b);
        assert!(!w.iter().any(|w| w.contains("//admin")), "{w:#?}");
    }
}
