//! Describing a destination as the plan resolved it: the ServiceEntry and
//! DestinationRule (and which part of it) behind it, the endpoints dialled,
//! the TLS originated and the pool settings. Shared by both directions (an
//! inbound route's destination is resolved like an outbound request's).

use std::sync::Arc;

use super::model::{
    DestinationInfo, Explanation, Matched, PoolInfo, Refusal, UpstreamTlsInfo, secs, yaml_name,
};
use crate::load::Loaded;
use crate::plan::outbound::{RulePlan, Target, UpstreamPolicy};
use crate::plan::{IdentitySource, TlsMode, TrustSource};

/// TLS versions meshgate offers upstream (`tls::client::build`).
const CLIENT_MIN_VERSION: &str = "TLSV1_2";
const CLIENT_MAX_VERSION: &str = "TLSV1_3";

/// A registered (or rule-only) target: its destination and the resources
/// behind it.
pub fn target(loaded: &Loaded, t: &Target) -> (DestinationInfo, Vec<Matched>) {
    let outbound = &loaded.plan.outbound;
    let mut matched = Vec::new();
    let declared = outbound.services.iter().any(|s| Arc::ptr_eq(s, &t.service));
    if declared {
        let pattern = t
            .service
            .hosts
            .iter()
            .filter(|h| h.matches(&t.host))
            .max_by_key(|h| h.specificity())
            .map(ToString::to_string)
            .unwrap_or_else(|| t.host.clone());
        matched.push(Matched {
            kind: "ServiceEntry".into(),
            at: t.service.resource.clone(),
            detail: format!(
                "host {pattern}, port {} (name {:?}, protocol {}) → targetPort {}; resolution {}, {}",
                t.port.number,
                t.port.name,
                t.port.protocol,
                t.port.target_port,
                yaml_name(&t.service.resolution),
                yaml_name(&t.service.location),
            ),
        });
    }
    if let Some(rule) = t
        .rule
        .as_ref()
        .and_then(|r| outbound.rules.iter().find(|x| &x.resource == r))
    {
        matched.push(Matched {
            kind: "DestinationRule".into(),
            at: rule.resource.clone(),
            detail: format!(
                "host {}; {}",
                rule.host,
                policy_part(rule, &t.policy, t.port.number)
            ),
        });
    }
    let kind = if declared { "registered" } else { "ruleOnly" };
    let dest = DestinationInfo {
        kind: kind.into(),
        host: t.host.clone(),
        port: t.port.number,
        protocol: Some(t.port.protocol.clone()),
        endpoints: t.endpoints().iter().map(|(h, p)| endpoint(h, *p)).collect(),
        resolution: Some(yaml_name(&t.service.resolution)),
        weighted: t.weighted,
        http2: t.policy.h2,
        tls: tls(loaded, t),
        pool: Some(pool(&t.policy)),
    };
    (dest, matched)
}

/// A registered destination with no endpoint to dial fails (Envoy's "no
/// healthy upstream": 503 for a request).
pub fn without_endpoints(ex: &mut Explanation, t: &Target, http: bool) {
    if !t.endpoints().is_empty() {
        return;
    }
    let why = if t.service.workload_selector.is_some() {
        "its endpoints are the workloads its workloadSelector picks, and meshgate has no workload registry"
    } else if t.service.endpoints.is_empty() {
        "resolution STATIC without endpoints"
    } else {
        "none of its endpoints is selected for this destination (a subset's labels)"
    };
    let reason = format!(
        "{} gives {}:{} no endpoint to dial ({why}): no healthy upstream",
        t.service.resource, t.host, t.port.number
    );
    let fix =
        Some("list the endpoints' addresses in the ServiceEntry, or use resolution DNS".into());
    ex.refuse(if http {
        Refusal::status("no_endpoints", 503, reason, fix)
    } else {
        Refusal::closed("no_endpoints", reason, fix)
    });
}

/// A host reached in plain text with the default policy.
pub fn plain(kind: &str, host: &str, port: u16, h2c: bool) -> DestinationInfo {
    DestinationInfo {
        kind: kind.into(),
        host: host.into(),
        port,
        protocol: None,
        endpoints: vec![endpoint(host, port)],
        resolution: None,
        weighted: false,
        http2: h2c,
        tls: None,
        pool: Some(pool(&UpstreamPolicy::default())),
    }
}

/// `host:port`, IPv6 in brackets.
pub fn endpoint(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Which part of `rule` supplied `policy` for `port`: the top level, a
/// `portLevelSettings` entry, or a subset (with its own port entry).
fn policy_part(rule: &RulePlan, policy: &Arc<UpstreamPolicy>, port: u16) -> String {
    let mut candidates: Vec<(String, &Arc<UpstreamPolicy>)> = Vec::new();
    if let Some(p) = rule.ports.get(&port) {
        candidates.push((format!("portLevelSettings port {port}"), p));
    }
    candidates.push(("top-level trafficPolicy".into(), &rule.default));
    for (name, s) in &rule.subsets {
        if let Some(p) = s.ports.get(&port) {
            candidates.push((format!("subset {name:?}, portLevelSettings port {port}"), p));
        }
        candidates.push((format!("subset {name:?}"), &s.default));
    }
    // The plan hands out the policy it compiled; a listener may have
    // adjusted a copy (HTTP/2 for an h2c port), so compare values after.
    let found = candidates
        .iter()
        .find(|(_, p)| Arc::ptr_eq(p, policy))
        .or_else(|| candidates.iter().find(|(_, p)| ***p == **policy))
        .or_else(|| {
            candidates
                .iter()
                .find(|(_, p)| !policy.tls.origin.is_empty() && p.tls.origin == policy.tls.origin)
        });
    match found {
        Some((part, _)) => part.clone(),
        None => "its policy for this port".into(),
    }
}

fn tls(loaded: &Loaded, t: &Target) -> Option<UpstreamTlsInfo> {
    let tls = &t.policy.tls;
    if tls.mode == TlsMode::Disable {
        return None;
    }
    let creds = &loaded.creds;
    let ca = if tls.insecure_skip_verify {
        "none: insecureSkipVerify (the chain and names are not verified)".to_string()
    } else {
        match creds.trust.get(&(tls.trust.clone(), tls.crl.clone())) {
            Some(trust) => {
                let n = trust.roots.len();
                format!(
                    "{} ({n} root{})",
                    trust.source,
                    if n == 1 { "" } else { "s" }
                )
            }
            None => match &tls.trust {
                TrustSource::System => "system roots".into(),
                TrustSource::File(f) => format!("caCertificates {}", f.display()),
                TrustSource::Credential(c) => c.to_string(),
            },
        }
    };
    let client_certificate = tls
        .identity
        .as_ref()
        .map(|id| match creds.identities.get(id) {
            Some(i) => format!("{} (subject {:?})", i.source, i.leaf.subject),
            None => match id {
                IdentitySource::Files { cert, key } => {
                    format!("{} + {}", cert.display(), key.display())
                }
                IdentitySource::Credential(c) => c.to_string(),
            },
        });
    let mode = if tls.mesh_trust_domain.is_some() {
        "ISTIO_MUTUAL".to_string()
    } else {
        yaml_name(&tls.mode)
    };
    Some(UpstreamTlsInfo {
        mode,
        at: tls.origin.clone(),
        sni: t.sni().to_string(),
        expected_sans: t.verify_names(),
        ca,
        client_certificate,
        crl: tls.crl.as_ref().map(|p| p.display().to_string()),
        min_version: CLIENT_MIN_VERSION.into(),
        max_version: CLIENT_MAX_VERSION.into(),
        insecure_skip_verify: tls.insecure_skip_verify,
    })
}

fn pool(p: &UpstreamPolicy) -> PoolInfo {
    PoolInfo {
        connect_timeout: secs(p.connect_timeout),
        idle_timeout: secs(p.idle_timeout),
        max_requests_per_connection: p.max_requests_per_connection,
        max_connections: p.limits.max_connections,
        http1_max_pending_requests: p.limits.http1_max_pending_requests,
        http2_max_requests: p.limits.http2_max_requests,
        outlier_detection: p.outlier.map(|o| {
            format!(
                "eject after {} consecutive 5xx / {} gateway errors, every {}, for {} (up to {}%)",
                o.consecutive_5xx_errors,
                o.consecutive_gateway_errors,
                secs(o.interval),
                secs(o.base_ejection_time),
                o.max_ejection_percent
            )
        }),
    }
}

/// A resolved route destination, adding the resources behind it to `ex`;
/// `http`: requests (a failure is a response), else a connection.
pub fn route_target(
    ex: &mut Explanation,
    loaded: &Loaded,
    target: &crate::plan::destination::RouteTarget,
    http: bool,
) -> DestinationInfo {
    use crate::plan::destination::RouteTarget;
    match target {
        RouteTarget::Registered(t) => {
            let (dest, matched) = self::target(loaded, t);
            ex.matched.extend(matched);
            without_endpoints(ex, t, http);
            dest
        }
        RouteTarget::Host { host, port, h2c } => plain("host", host, *port, *h2c),
    }
}
