//! Where meshgate departs from Istio to stay at least as strict: a
//! DestinationRule that asks for TLS is honoured even for a host no
//! ServiceEntry declares, and an explicit `sni` is the name verified when
//! no `subjectAltNames` say otherwise.

use super::*;
use crate::plan::destination::{RouteTarget, Speak, resolve};

/// DestinationRules only: no ServiceEntry declares any of these hosts.
const RULES_ONLY: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE, caCertificates: /etc/ca.pem}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: wild}
spec:
  host: "*.wild.example.com"
  trafficPolicy:
    tls: {mode: SIMPLE, sni: front.example.net}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ported}
spec:
  host: ported.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: plain}
spec:
  host: plain.example.com
  trafficPolicy:
    connectionPool:
      tcp: {connectTimeout: 3s}
"#;

#[test]
fn rule_without_service_entry_originates_tls_under_allow_any() {
    let plan = compiled(RULES_ONLY);
    // (host, port, Some((mode, sni, names, endpoint, label)) when TLS is originated)
    type Want = Option<(
        TlsMode,
        &'static str,
        &'static [&'static str],
        u16,
        &'static str,
    )>;
    let rows: [(&str, u16, Want); 8] = [
        (
            "api.example.com",
            80,
            Some((
                TlsMode::Simple,
                "api.example.com",
                &["api.example.com"],
                80,
                "api.example.com",
            )),
        ),
        (
            "API.example.com.",
            8443,
            Some((
                TlsMode::Simple,
                "api.example.com",
                &["api.example.com"],
                8443,
                "api.example.com",
            )),
        ),
        // A wildcard rule covers the hosts under it; its explicit sni is
        // sent and verified.
        (
            "a.wild.example.com",
            443,
            Some((
                TlsMode::Simple,
                "front.example.net",
                &["front.example.net"],
                443,
                "*.wild.example.com",
            )),
        ),
        ("wild.example.com", 443, None),
        // Port-level TLS only on its port.
        (
            "ported.example.com",
            8443,
            Some((
                TlsMode::Simple,
                "ported.example.com",
                &["ported.example.com"],
                8443,
                "ported.example.com",
            )),
        ),
        ("ported.example.com", 80, None),
        // A rule without TLS leaves plain text alone.
        ("plain.example.com", 80, None),
        ("unknown.example.org", 80, None),
    ];
    let mut failures = Vec::new();
    for (host, port, want) in rows {
        let ctx = format!("{host}:{port}");
        match (plan.outbound.route(host, port, 0), want) {
            (Decision::Registered(t), Some((mode, sni, names, ep_port, label))) => {
                let host = crate::plan::host::normalize(host);
                let got = (
                    t.policy.tls.mode,
                    t.sni().to_string(),
                    t.verify_names(),
                    t.endpoints(),
                    t.service.hosts.iter().map(|h| h.to_string()).collect(),
                );
                let want = (
                    mode,
                    sni.to_string(),
                    strings(names),
                    vec![(host.clone(), ep_port)],
                    vec![label.to_string()],
                );
                if got != want {
                    failures.push(format!("{ctx}: got {got:?}, want {want:?}"));
                }
                if t.rule.is_none() {
                    failures.push(format!("{ctx}: the rule is not named"));
                }
            }
            (Decision::Passthrough { host: h, port: p }, None) => {
                if h != crate::plan::host::normalize(host) || p != port {
                    failures.push(format!("{ctx}: passthrough to {h}:{p}"));
                }
            }
            (got, want) => failures.push(format!("{ctx}: got {got:?}, want {want:?}")),
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn rule_without_service_entry_is_still_refused_under_registry_only() {
    // Istio: a DestinationRule creates no cluster, so REGISTRY_ONLY sends
    // the request to BlackHoleCluster.
    let plan = plan_with(RULES_ONLY, OutboundTrafficPolicy::RegistryOnly);
    match plan.outbound.route("api.example.com", 80, 0) {
        Decision::Refused { reason } => {
            assert!(reason.contains("REGISTRY_ONLY"), "{reason}");
            assert!(reason.contains("DestinationRule"), "{reason}");
            assert!(reason.contains("ServiceEntry"), "{reason}");
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let warn = plan
        .warnings
        .iter()
        .find(|w| w.contains("DestinationRule/default/api"))
        .unwrap_or_else(|| panic!("no warning for the rule: {:?}", plan.warnings));
    assert!(warn.contains("REGISTRY_ONLY"), "{warn}");
}

#[test]
fn rule_without_service_entry_is_warned_about() {
    let plan = compiled(RULES_ONLY);
    let about = |name: &str| {
        plan.warnings
            .iter()
            .filter(|w| w.contains(&format!("DestinationRule/default/{name}: spec.host:")))
            .cloned()
            .collect::<Vec<_>>()
    };
    for (name, host) in [
        ("api", "api.example.com"),
        ("wild", "*.wild.example.com"),
        ("ported", "ported.example.com"),
    ] {
        let w = about(name);
        assert_eq!(w.len(), 1, "{name}: {:?}", plan.warnings);
        for part in [
            host,
            "has no ServiceEntry",
            "PassthroughCluster",
            "meshgate originates TLS as this rule says",
            "spec.host",
        ] {
            assert!(w[0].contains(part), "{name}: {part:?} missing in {}", w[0]);
        }
    }
    // No TLS asked for: the rule is not used (istioctl analyze's IST0174).
    let plain = about("plain");
    assert!(
        plain.len() == 1
            && plain[0].contains("IST0174")
            && plain[0].contains("this rule is not used"),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn rule_with_a_service_entry_is_not_warned_about() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com, "*.wild.example.com"]
  ports: [{number: 443, name: https, protocol: HTTP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: deeper}
spec:
  host: "*.a.wild.example.com"
  trafficPolicy:
    tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: broader}
spec:
  host: "*.example.com"
  trafficPolicy:
    tls: {mode: SIMPLE}
"#;
    let plan = compiled(yaml);
    let warned: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("has no ServiceEntry"))
        .collect();
    // `*.example.com` is broader than every ServiceEntry host: the hosts
    // outside them have none.
    assert_eq!(warned.len(), 1, "{warned:?}");
    assert!(
        warned[0].contains("DestinationRule/default/broader"),
        "{warned:?}"
    );
    // The ServiceEntry's undeclared port still gets the rule's TLS.
    match plan.outbound.route("api.example.com", 8080, 0) {
        Decision::Registered(t) => assert_eq!(t.policy.tls.mode, TlsMode::Simple),
        other => panic!("expected TLS, got {other:?}"),
    }
}

#[test]
fn mesh_route_to_a_rule_only_host_originates_tls() {
    let yaml = format!(
        r#"{RULES_ONLY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shift}}
spec:
  hosts: [old.example.com]
  http:
  - route:
    - destination: {{host: api.example.com, port: {{number: 443}}}}
"#
    );
    let plan = compiled(&yaml);
    match plan.outbound.route("old.example.com", 80, 0) {
        Decision::Registered(t) => {
            assert_eq!(t.policy.tls.mode, TlsMode::Simple);
            assert_eq!(t.endpoints(), endpoints(&[("api.example.com", 443)]));
            assert_eq!(t.route.as_deref().map(|r| r.contains("shift")), Some(true));
        }
        other => panic!("expected TLS, got {other:?}"),
    }
}

#[test]
fn gateway_route_to_a_rule_only_host_originates_tls() {
    let plan = compiled(RULES_ONLY);
    let http = Speak::Http { h2c: false };
    match resolve(&plan.outbound, "api.example.com", Some(8080), None, http) {
        RouteTarget::Registered(t) => {
            assert_eq!(t.policy.tls.mode, TlsMode::Simple);
            assert!(!t.policy.h2, "TLS: never h2c");
            assert_eq!(t.endpoints(), endpoints(&[("api.example.com", 8080)]));
            assert_eq!(t.verify_names(), strings(&["api.example.com"]));
        }
        other => panic!("expected TLS origination, got {other:?}"),
    }
    // An HTTP2 server port does not turn TLS into h2c.
    let h2c = Speak::Http { h2c: true };
    assert!(matches!(
        resolve(&plan.outbound, "b.wild.example.com", Some(443), None, h2c),
        RouteTarget::Registered(t) if t.policy.tls.mode == TlsMode::Simple && !t.policy.h2
    ));
    // TLS and TCP routes relay the client's bytes as they are.
    assert!(matches!(
        resolve(
            &plan.outbound,
            "api.example.com",
            Some(443),
            None,
            Speak::Bytes
        ),
        RouteTarget::Host { .. }
    ));
    // No TLS asked for: plain, as before.
    assert!(matches!(
        resolve(&plan.outbound, "plain.example.com", Some(80), None, http),
        RouteTarget::Host { .. }
    ));
    // REGISTRY_ONLY is the sidecar's outbound policy; a gateway route to
    // the host still gets the rule's TLS, never plain text.
    let strict = plan_with(RULES_ONLY, OutboundTrafficPolicy::RegistryOnly);
    assert!(matches!(
        resolve(&strict.outbound, "api.example.com", Some(80), None, http),
        RouteTarget::Registered(t) if t.policy.tls.mode == TlsMode::Simple
    ));
}

#[test]
fn explicit_sni_is_the_expected_name_unless_sans_say_otherwise() {
    // (DestinationRule tls extra lines, ServiceEntry SANs, wanted names)
    let rows: [(&str, &str, &[&str]); 4] = [
        ("sni: other.test", "[]", &["other.test"]),
        (
            "sni: other.test\n      subjectAltNames: [x.test]",
            "[]",
            &["x.test"],
        ),
        ("sni: other.test", "[se.test]", &["se.test"]),
        ("", "[]", &["api.test"]),
    ];
    let mut failures = Vec::new();
    for (extra, se_sans, want) in rows {
        let yaml = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: api}}
spec:
  hosts: [api.test]
  ports: [{{number: 443, name: https, protocol: HTTP}}]
  resolution: DNS
  subjectAltNames: {se_sans}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: api}}
spec:
  host: api.test
  trafficPolicy:
    tls:
      mode: SIMPLE
      {extra}
"#
        );
        let t = registered(&compiled(&yaml), "api.test", 443);
        if t.verify_names() != strings(want) {
            failures.push(format!(
                "{extra:?} / SE {se_sans}: names {:?}, want {want:?}",
                t.verify_names()
            ));
        }
    }
    assert_no_failures(&failures);
}
