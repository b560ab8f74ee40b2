//! AuthorizationPolicy → [`AuthzPlan`]: which policies apply to this proxy
//! (`plan::selector::policy_applies`), each value checked as Istio's
//! validation does, every problem reported at once.

use std::sync::Arc;

use super::analyze::{self, Reach};
use super::pattern::{Cidr, PathPat, RequestPrincipal, Str, Test};
use super::{AuthzPlan, Field, PolicyPlan, RulePlan};
use crate::bootstrap::Bootstrap;
use crate::config::authorization_policy::{
    Action, AuthorizationPolicySpec, Condition, Operation, SourceMatch,
};
use crate::config::{Config, Resource, Source};
use crate::plan::authn::AuthnPlan;
use crate::plan::diagnostics::Diagnostics;
use crate::plan::inbound::InboundPlan;
use crate::plan::selector::Applies;

/// Reads one value of a field; the message says why it cannot be used.
type Parse<'a> = dyn Fn(&str) -> Result<Test, String> + 'a;

/// Compiles the AuthorizationPolicies that apply to this proxy.
pub(crate) fn compile(
    config: &Config,
    bootstrap: &Bootstrap,
    (inbound, authn): (&InboundPlan, &AuthnPlan),
    diag: &mut Diagnostics,
) -> AuthzPlan {
    let mut plan = AuthzPlan::default();
    let reach = Reach::of(inbound, authn, diag.capture, bootstrap.path_normalization);
    for ap in &config.authorization_policies {
        let spec = &ap.spec;
        let refs = spec.target_ref.is_some() || !spec.target_refs.is_empty();
        let action = spec.action.unwrap_or(Action::Allow);
        let assumed = match action {
            Action::Allow => {
                "failing closed: it counts as an ALLOW policy of this proxy whose rules match \
                 nothing (requests must match another ALLOW policy)"
            }
            _ => "applied as if it selects this proxy (it can only refuse more)",
        };
        let applies = super::super::selector::policy_applies(
            &ap.source,
            spec.selector.as_ref(),
            (refs, assumed),
            bootstrap,
            diag,
        );
        if action == Action::Custom {
            // Never silently allowed: there is no external authorizer.
            let why = "CUSTOM delegates the decision to an external authorizer (spec.provider), \
                       which meshgate does not call";
            if applies != Applies::No {
                diag.error(
                    &ap.source,
                    "spec.action",
                    format!(
                        "{why}; a CUSTOM policy cannot be enforced, so the configuration is refused"
                    ),
                );
            } else {
                diag.warn(
                    &ap.source,
                    "spec.action",
                    format!("{why}; it does not apply to this proxy, so it is left out"),
                );
            }
            continue;
        }
        if spec.provider.is_some() {
            diag.error(
                &ap.source,
                "spec.provider",
                format!("`provider` must not be with non CUSTOM action, found {action:?}"),
            );
        }
        if action == Action::Deny && spec.rules.is_empty() {
            diag.error(
                &ap.source,
                "spec.rules",
                "DENY action without `rules` is meaningless as it will never be triggered; add \
                 an empty rule `{}` if it is meant for every request",
            );
        }
        let mut policy = compile_policy(ap, action, diag);
        match applies {
            Applies::No => continue,
            Applies::Unknown if action == Action::Allow => {
                policy.http.clear();
                policy.tcp.clear();
            }
            Applies::Unknown | Applies::Yes => {}
        }
        analyze::check(ap, &policy, (action, &reach), diag);
        let into = if dry_run(ap, diag) {
            plan.dry_run.get_or_insert_with(Box::default)
        } else {
            &mut plan
        };
        match action {
            Action::Allow => into.allow.push(policy),
            Action::Deny => into.deny.push(policy),
            Action::Audit => into.audit.push(policy),
            Action::Custom => {}
        }
    }
    plan
}

/// Istio's `istio.io/dry-run` annotation (Go's `strconv.ParseBool`):
/// the policy is evaluated and logged, never enforced.
fn dry_run(ap: &Resource<AuthorizationPolicySpec>, diag: &mut Diagnostics) -> bool {
    let Some(v) = ap.annotations.get("istio.io/dry-run") else {
        return false;
    };
    match v.as_str() {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => true,
        "0" | "f" | "F" | "false" | "FALSE" | "False" => false,
        other => {
            diag.error(
                &ap.source,
                "metadata.annotations[istio.io/dry-run]",
                format!("{other:?} is not a boolean"),
            );
            false
        }
    }
}

fn compile_policy(
    ap: &Resource<AuthorizationPolicySpec>,
    action: Action,
    diag: &mut Diagnostics,
) -> PolicyPlan {
    let src = &ap.source;
    let mut http = Vec::new();
    let mut tcp = Vec::new();
    for (i, rule) in ap.spec.rules.iter().enumerate() {
        let at = format!("spec.rules[{i}]");
        if rule.from.as_ref().is_some_and(Vec::is_empty) {
            diag.error(src, format!("{at}.from"), "`from` must not be empty");
        }
        if rule.to.as_ref().is_some_and(Vec::is_empty) {
            diag.error(src, format!("{at}.to"), "`to` must not be empty");
        }
        let from: Vec<Vec<Field>> = rule
            .from
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, f)| {
                let at = format!("{at}.from[{j}].source");
                match &f.source {
                    Some(s) => source_fields(s, &src.namespace, src, &at, diag),
                    None => {
                        diag.error(src, at, "`from.source` must not be nil");
                        Vec::new()
                    }
                }
            })
            .collect();
        let to: Vec<Vec<Field>> = rule
            .to
            .iter()
            .flatten()
            .enumerate()
            .map(|(j, t)| {
                let at = format!("{at}.to[{j}].operation");
                match &t.operation {
                    Some(o) => operation_fields(o, src, &at, diag),
                    None => {
                        diag.error(src, at, "`to.operation` must not be nil");
                        Vec::new()
                    }
                }
            })
            .collect();
        let when: Vec<Field> = rule
            .when
            .iter()
            .enumerate()
            .filter_map(|(j, c)| {
                condition(c, &src.namespace, src, &format!("{at}.when[{j}]"), diag)
            })
            .collect();
        let rule = RulePlan {
            index: i,
            from,
            to,
            when,
        };
        if let Some(t) = for_tcp(&rule, action) {
            tcp.push(t);
        }
        http.push(rule);
    }
    PolicyPlan {
        name: Arc::from(format!("{}/{}", src.namespace, src.name)),
        origin: src.to_string(),
        http,
        tcp,
    }
}

/// The rule as a TCP connection sees it: an ALLOW rule naming an HTTP
/// attribute never matches (left out); a DENY or AUDIT rule drops those
/// values, matching more.
fn for_tcp(rule: &RulePlan, action: Action) -> Option<RulePlan> {
    let fields = rule
        .from
        .iter()
        .flatten()
        .chain(rule.to.iter().flatten())
        .chain(&rule.when);
    let http = fields
        .flat_map(|f| f.values.iter().chain(&f.not_values))
        .any(Test::http_only);
    if !http {
        return Some(rule.clone());
    }
    if action == Action::Allow {
        return None;
    }
    let strip = |fs: &Vec<Field>| -> Vec<Field> {
        fs.iter()
            .map(|f| Field {
                values: f
                    .values
                    .iter()
                    .filter(|t| !t.http_only())
                    .cloned()
                    .collect(),
                not_values: f
                    .not_values
                    .iter()
                    .filter(|t| !t.http_only())
                    .cloned()
                    .collect(),
            })
            .filter(|f| !(f.values.is_empty() && f.not_values.is_empty()))
            .collect()
    };
    Some(RulePlan {
        index: rule.index,
        from: rule.from.iter().map(strip).collect(),
        to: rule.to.iter().map(strip).collect(),
        when: strip(&rule.when),
    })
}

/// Compiles one list of values with `parse`, naming each bad one.
fn values(
    list: &[String],
    parse: &Parse<'_>,
    src: &Source,
    at: &str,
    diag: &mut Diagnostics,
) -> Vec<Test> {
    list.iter()
        .enumerate()
        .filter_map(|(k, v)| {
            if v.is_empty() {
                diag.error(src, format!("{at}[{k}]"), "empty value not allowed");
                return None;
            }
            parse(v)
                .map_err(|e| diag.error(src, format!("{at}[{k}]"), e))
                .ok()
        })
        .collect()
}

/// One field from its `values` and `notValues` lists; `None` when both are
/// empty.
fn field(
    (vals, nots): (&[String], &[String]),
    (name, not_name): (&str, &str),
    parse: &Parse<'_>,
    src: &Source,
    at: &str,
    diag: &mut Diagnostics,
) -> Option<Field> {
    if vals.is_empty() && nots.is_empty() {
        return None;
    }
    Some(Field {
        values: values(vals, parse, src, &format!("{at}.{name}"), diag),
        not_values: values(nots, parse, src, &format!("{at}.{not_name}"), diag),
    })
}

fn principal(v: &str) -> Result<Test, String> {
    Ok(Test::Principal(Str::parse(v)))
}

fn namespace(v: &str) -> Result<Test, String> {
    Ok(Test::Namespace(v.into()))
}

fn service_account(policy_ns: &str) -> impl Fn(&str) -> Result<Test, String> + '_ {
    move |v| {
        if v.contains('*') {
            return Err(format!(
                "{v:?}: wildcards are not supported in service accounts"
            ));
        }
        let (ns, sa) = v.split_once('/').unwrap_or((policy_ns, v));
        if ns.is_empty() || sa.is_empty() || sa.contains('/') {
            return Err(format!(
                "{v:?}: must be <namespace>/<serviceaccount> or <serviceaccount>"
            ));
        }
        Ok(Test::ServiceAccount {
            ns: ns.into(),
            sa: sa.into(),
        })
    }
}

fn trust_domain(v: &str) -> Result<Test, String> {
    if v.matches('*').count() > 1 {
        return Err(format!("{v:?}: at most one wildcard is supported"));
    }
    Ok(Test::TrustDomain(v.into()))
}

fn port(v: &str) -> Result<Test, String> {
    v.parse::<u16>()
        .map(Test::Port)
        .map_err(|_| format!("{v:?} is not a port (0 to 65535)"))
}

fn source_fields(
    s: &SourceMatch,
    policy_ns: &str,
    src: &Source,
    at: &str,
    diag: &mut Diagnostics,
) -> Vec<Field> {
    let by_identity =
        s.principals.len() + s.not_principals.len() + s.namespaces.len() + s.not_namespaces.len();
    if by_identity > 0 && s.service_accounts.len() + s.not_service_accounts.len() > 0 {
        diag.error(
            src,
            at,
            "cannot set serviceAccounts with namespaces or principals",
        );
    }
    let sa = service_account(policy_ns);
    let cidr = |f: fn(Cidr) -> Test| move |v: &str| Cidr::parse(v).map(f);
    let fields = [
        field(
            (&s.principals, &s.not_principals),
            ("principals", "notPrincipals"),
            &principal,
            src,
            at,
            diag,
        ),
        field(
            (&s.request_principals, &s.not_request_principals),
            ("requestPrincipals", "notRequestPrincipals"),
            &|v| Ok(Test::RequestPrincipal(RequestPrincipal::parse(v))),
            src,
            at,
            diag,
        ),
        field(
            (&s.namespaces, &s.not_namespaces),
            ("namespaces", "notNamespaces"),
            &namespace,
            src,
            at,
            diag,
        ),
        field(
            (&s.service_accounts, &s.not_service_accounts),
            ("serviceAccounts", "notServiceAccounts"),
            &sa,
            src,
            at,
            diag,
        ),
        field(
            (&s.trust_domains, &s.not_trust_domains),
            ("trustDomains", "notTrustDomains"),
            &trust_domain,
            src,
            at,
            diag,
        ),
        field(
            (&s.ip_blocks, &s.not_ip_blocks),
            ("ipBlocks", "notIpBlocks"),
            &cidr(Test::SourceIp),
            src,
            at,
            diag,
        ),
        field(
            (&s.remote_ip_blocks, &s.not_remote_ip_blocks),
            ("remoteIpBlocks", "notRemoteIpBlocks"),
            &cidr(Test::RemoteIp),
            src,
            at,
            diag,
        ),
    ];
    let out: Vec<Field> = fields.into_iter().flatten().collect();
    if out.is_empty() {
        diag.error(src, at, "`from.source` must not be empty");
    }
    out
}

fn operation_fields(o: &Operation, src: &Source, at: &str, diag: &mut Diagnostics) -> Vec<Field> {
    let fields = [
        field(
            (&o.hosts, &o.not_hosts),
            ("hosts", "notHosts"),
            &|v| Ok(Test::Host(Str::parse(v))),
            src,
            at,
            diag,
        ),
        field(
            (&o.ports, &o.not_ports),
            ("ports", "notPorts"),
            &port,
            src,
            at,
            diag,
        ),
        field(
            (&o.methods, &o.not_methods),
            ("methods", "notMethods"),
            &|v| Ok(Test::Method(Str::parse(v))),
            src,
            at,
            diag,
        ),
        field(
            (&o.paths, &o.not_paths),
            ("paths", "notPaths"),
            &|v| PathPat::parse(v).map(Test::Path),
            src,
            at,
            diag,
        ),
    ];
    let out: Vec<Field> = fields.into_iter().flatten().collect();
    if out.is_empty() {
        diag.error(src, at, "`to.operation` must not be empty");
    }
    out
}

/// The name inside `[...]` after `prefix` in `key` (`request.headers[x]`),
/// or the names of `[a][b]`.
fn bracketed(key: &str, prefix: &str) -> Option<Vec<String>> {
    let mut rest = key.strip_prefix(prefix)?;
    let mut names = Vec::new();
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let (name, after) = inner.split_once(']')?;
        if name.is_empty() || name.contains('[') {
            return None;
        }
        names.push(name.to_string());
        rest = after;
    }
    (!names.is_empty()).then_some(names)
}

fn condition(
    c: &Condition,
    policy_ns: &str,
    src: &Source,
    at: &str,
    diag: &mut Diagnostics,
) -> Option<Field> {
    let key = c.key.as_str();
    let claim = |path: Vec<String>| {
        move |v: &str| {
            Ok(Test::Claim {
                path: path.clone(),
                value: Str::parse(v),
            })
        }
    };
    let sa = service_account(policy_ns);
    let cidr = |f: fn(Cidr) -> Test| move |v: &str| Cidr::parse(v).map(f);
    let parse: Box<Parse<'_>> = match key {
        "source.ip" => Box::new(cidr(Test::SourceIp)),
        "remote.ip" => Box::new(cidr(Test::RemoteIp)),
        "destination.ip" => Box::new(cidr(Test::DestinationIp)),
        "destination.port" => Box::new(port),
        "source.namespace" => Box::new(namespace),
        "source.principal" => Box::new(principal),
        "source.serviceAccount" => Box::new(sa),
        "source.trustDomain" => Box::new(trust_domain),
        "connection.sni" => Box::new(|v: &str| Ok(Test::Sni(Str::parse(v)))),
        "request.auth.principal" => {
            Box::new(|v: &str| Ok(Test::RequestPrincipal(RequestPrincipal::parse(v))))
        }
        "request.auth.audiences" => Box::new(claim(vec!["aud".into()])),
        "request.auth.presenter" => Box::new(claim(vec!["azp".into()])),
        k if k.starts_with("request.auth.claims") => {
            match bracketed(k, "request.auth.claims") {
                Some(path) => Box::new(claim(path)),
                None => {
                    diag.error(
                    src,
                    format!("{at}.key"),
                    format!("{k:?}: expected request.auth.claims[name] (or [a][b] for nested claims)"),
                );
                    return None;
                }
            }
        }
        k if k.starts_with("request.headers") => match bracketed(k, "request.headers") {
            Some(names) if names.len() == 1 => {
                let name = names[0].to_ascii_lowercase();
                Box::new(move |v: &str| {
                    Ok(Test::Header {
                        name: name.clone(),
                        value: Str::parse(v),
                    })
                })
            }
            _ => {
                diag.error(
                    src,
                    format!("{at}.key"),
                    format!("{k:?}: expected request.headers[name]"),
                );
                return None;
            }
        },
        k if k.starts_with("experimental.envoy.filters.") => {
            diag.error(
                src,
                format!("{at}.key"),
                format!(
                    "{k:?} reads Envoy filter metadata, which meshgate does not have; the \
                     condition cannot be enforced"
                ),
            );
            return None;
        }
        k => {
            diag.error(src, format!("{at}.key"), format!("unknown attribute {k:?}"));
            return None;
        }
    };
    if c.values.is_empty() && c.not_values.is_empty() {
        diag.error(
            src,
            at,
            format!("at least one of values or notValues must be set for key {key:?}"),
        );
        return None;
    }
    field(
        (&c.values, &c.not_values),
        ("values", "notValues"),
        &*parse,
        src,
        at,
        diag,
    )
}
