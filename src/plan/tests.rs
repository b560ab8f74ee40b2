//! Table-driven tests of `plan::compile` and `OutboundPlan::route` against
//! Istio's documented semantics (ServiceEntry, DestinationRule,
//! VirtualService as a sidecar applies them to outbound traffic).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::outbound::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, PortPlan};
use super::*;
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{ConfigErrors, load_str};

const FILE: &str = "mesh.yaml";

// === helpers ===

fn try_compile(
    file: &str,
    yaml: &str,
    policy: OutboundTrafficPolicy,
) -> Result<Plan, ConfigErrors> {
    let config = load_str(file, yaml)
        .unwrap_or_else(|e| panic!("{file} does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let bootstrap = Bootstrap {
        outbound_traffic_policy: policy,
        ..Bootstrap::default()
    };
    compile(&config, &bootstrap)
}

fn plan_with(yaml: &str, policy: OutboundTrafficPolicy) -> Plan {
    try_compile(FILE, yaml, policy)
        .unwrap_or_else(|e| panic!("does not compile:\n{e}\n--- yaml ---\n{yaml}"))
}

fn compiled(yaml: &str) -> Plan {
    plan_with(yaml, OutboundTrafficPolicy::AllowAny)
}

fn registered_pick(plan: &Plan, host: &str, port: u16, pick: u64) -> Target {
    match plan.outbound.route(host, port, pick) {
        Decision::Registered(t) => *t,
        other => panic!("{host}:{port}: expected Registered, got {other:?}"),
    }
}

fn registered(plan: &Plan, host: &str, port: u16) -> Target {
    registered_pick(plan, host, port, 0)
}

fn compile_errors(file: &str, yaml: &str) -> ConfigErrors {
    match try_compile(file, yaml, OutboundTrafficPolicy::AllowAny) {
        Ok(p) => panic!(
            "{file}: expected errors, but it compiled (warnings: {:?})\n--- yaml ---\n{yaml}",
            p.warnings
        ),
        Err(e) => e,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn endpoints(v: &[(&str, u16)]) -> Vec<(String, u16)> {
    v.iter().map(|(h, p)| (h.to_string(), *p)).collect()
}

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

fn cred(namespace: Option<&str>, name: &str) -> CredentialRef {
    CredentialRef {
        name: name.into(),
        namespace: namespace.map(Into::into),
    }
}

/// Asserts that a collected list of table-row mismatches is empty.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

// === 1. the Istio "Egress TLS Origination" task ===

/// The task's YAML, unmodified.
const EGRESS_TLS_ORIGINATION: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE # initiates HTTPS when accessing edition.cnn.com
"#;

#[test]
fn egress_tls_origination_task() {
    let plan = compiled(EGRESS_TLS_ORIGINATION);
    struct Row {
        port: u16,
        mode: TlsMode,
        port_plan: PortPlan,
    }
    let rows = [
        Row {
            port: 80,
            mode: TlsMode::Simple,
            port_plan: PortPlan {
                number: 80,
                name: "http-port".into(),
                protocol: "HTTP".into(),
                target_port: 443,
            },
        },
        // The port-level entry is for 80 only; 443 gets the (empty) top level.
        Row {
            port: 443,
            mode: TlsMode::Disable,
            port_plan: PortPlan {
                number: 443,
                name: "https-port".into(),
                protocol: "HTTPS".into(),
                target_port: 443,
            },
        },
    ];
    for row in rows {
        let t = registered(&plan, "edition.cnn.com", row.port);
        let ctx = format!("edition.cnn.com:{}", row.port);
        assert_eq!(t.policy.tls.mode, row.mode, "{ctx}");
        assert_eq!(t.port, row.port_plan, "{ctx}");
        assert_eq!(t.host, "edition.cnn.com", "{ctx}");
        assert_eq!(t.sni(), "edition.cnn.com", "{ctx}");
        assert_eq!(t.verify_names(), strings(&["edition.cnn.com"]), "{ctx}");
        assert_eq!(t.policy.tls.trust, TrustSource::System, "{ctx}");
        assert_eq!(t.policy.tls.identity, None, "{ctx}");
        assert!(!t.policy.tls.insecure_skip_verify, "{ctx}");
        assert_eq!(
            t.endpoints(),
            endpoints(&[("edition.cnn.com", 443)]),
            "{ctx}"
        );
        let rule = t
            .rule
            .as_deref()
            .unwrap_or_else(|| panic!("{ctx}: no rule"));
        assert!(
            rule.contains("DestinationRule/default/edition-cnn-com"),
            "{ctx}: {rule}"
        );
        assert_eq!(t.route, None, "{ctx}");
        assert_eq!(t.policy.connect_timeout, DEFAULT_CONNECT_TIMEOUT, "{ctx}");
    }
    // The port-level TLS block says where it came from.
    let t = registered(&plan, "edition.cnn.com", 80);
    assert!(
        t.policy
            .tls
            .origin
            .contains("spec.trafficPolicy.portLevelSettings[0].tls"),
        "{}",
        t.policy.tls.origin
    );
    // Host matching is case-insensitive and ignores a trailing dot.
    let t = registered(&plan, "Edition.CNN.com.", 80);
    assert_eq!(t.policy.tls.mode, TlsMode::Simple);
    assert_eq!(t.sni(), "edition.cnn.com");
}

// === 2. the older form of the task (VirtualService port rewrite) ===

const EGRESS_TLS_ORIGINATION_V1ALPHA3: &str = r#"apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: cnn
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
  - number: 443
    name: http-port-for-tls-origination
    protocol: HTTP
  resolution: DNS
---
apiVersion: networking.istio.io/v1alpha3
kind: VirtualService
metadata:
  name: rewrite-port-for-edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  http:
  - match:
    - port: 80
    route:
    - destination:
        host: edition.cnn.com
        port:
          number: 443
---
apiVersion: networking.istio.io/v1alpha3
kind: DestinationRule
metadata:
  name: originate-tls-for-edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    loadBalancer:
      simple: ROUND_ROBIN
    portLevelSettings:
    - port:
        number: 443
      tls:
        mode: SIMPLE # initiates HTTPS for connections to edition.cnn.com
"#;

#[test]
fn egress_tls_origination_task_with_virtual_service_rewrite() {
    let plan = compiled(EGRESS_TLS_ORIGINATION_V1ALPHA3);
    // (request port, routed by the VirtualService)
    for (port, routed) in [(80, true), (443, false)] {
        let ctx = format!("edition.cnn.com:{port}");
        let t = registered(&plan, "edition.cnn.com", port);
        assert_eq!(t.port.number, 443, "{ctx}");
        assert_eq!(t.port.name, "http-port-for-tls-origination", "{ctx}");
        assert_eq!(t.port.target_port, 443, "{ctx}");
        assert_eq!(t.host, "edition.cnn.com", "{ctx}");
        assert_eq!(t.policy.tls.mode, TlsMode::Simple, "{ctx}");
        assert_eq!(t.sni(), "edition.cnn.com", "{ctx}");
        assert_eq!(t.verify_names(), strings(&["edition.cnn.com"]), "{ctx}");
        assert_eq!(
            t.endpoints(),
            endpoints(&[("edition.cnn.com", 443)]),
            "{ctx}"
        );
        if routed {
            let route = t
                .route
                .as_deref()
                .unwrap_or_else(|| panic!("{ctx}: no route"));
            assert!(
                route.contains("VirtualService/default/rewrite-port-for-edition-cnn-com"),
                "{ctx}: {route}"
            );
        } else {
            assert_eq!(t.route, None, "{ctx}");
        }
    }
    // The unimplemented loadBalancer is a warning, not an error.
    assert!(
        plan.warnings.iter().any(|w| w
            .contains("DestinationRule/default/originate-tls-for-edition-cnn-com")
            && w.contains("loadBalancer")),
        "{:?}",
        plan.warnings
    );
}

// === 3. port-level settings replace the top level, no inheritance ===

const PORT_LEVEL: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTP}
  - {number: 8443, name: mtls, protocol: HTTP}
  - {number: 9443, name: pool-only, protocol: HTTP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api.example.com
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 3s
    tls:
      mode: SIMPLE
      caCertificates: /etc/certs/ca.pem
    portLevelSettings:
    - port:
        number: 8443
      tls:
        mode: MUTUAL
        clientCertificate: /etc/certs/client.pem
        privateKey: /etc/certs/client.key
    - port:
        number: 9443
      connectionPool:
        tcp:
          connectTimeout: 5s
"#;

#[test]
fn port_level_settings_replace_the_top_level_policy() {
    let plan = compiled(PORT_LEVEL);
    let client = IdentitySource::Files {
        cert: "/etc/certs/client.pem".into(),
        key: "/etc/certs/client.key".into(),
    };
    let ca = TrustSource::File(PathBuf::from("/etc/certs/ca.pem"));
    // (port, mode, trust, identity, connect timeout)
    let rows = [
        (
            443,
            TlsMode::Simple,
            ca.clone(),
            None,
            Duration::from_secs(3),
        ),
        (
            8443,
            TlsMode::Mutual,
            TrustSource::System,
            Some(client),
            DEFAULT_CONNECT_TIMEOUT,
        ),
        (
            9443,
            TlsMode::Disable,
            TrustSource::System,
            None,
            Duration::from_secs(5),
        ),
    ];
    let mut failures = Vec::new();
    for (port, mode, trust, identity, connect) in rows {
        let t = registered(&plan, "api.example.com", port);
        let got = (
            t.policy.tls.mode,
            t.policy.tls.trust.clone(),
            t.policy.tls.identity.clone(),
            t.policy.connect_timeout,
        );
        let want = (mode, trust, identity, connect);
        if got != want {
            failures.push(format!("port {port}: got {got:?}, want {want:?}"));
        }
    }
    assert_no_failures(&failures);
}

// === 4. DestinationRule host matching ===

const DR_HOSTS_SE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: example
spec:
  hosts: [v1.api.example.com, v2.api.example.com, www.example.com, example.com]
  ports:
  - {number: 443, name: https, protocol: HTTP}
  resolution: DNS
"#;

fn dr_for_host(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: {name}\n\
         spec:\n  host: \"{host}\"\n  trafficPolicy:\n    tls:\n      mode: SIMPLE\n      \
         sni: {name}.sni.example\n"
    )
}

#[test]
fn destination_rule_most_specific_host_wins() {
    let short = dr_for_host("short-wildcard", "*.example.com");
    let long = dr_for_host("long-wildcard", "*.api.example.com");
    let exact = dr_for_host("exact", "v1.api.example.com");
    // Both load orders, so neither "first wins" nor "last wins" passes.
    let orders = [
        [&long, &exact, &short],
        [&short, &exact, &long],
        [&exact, &short, &long],
    ];
    // (request host, DestinationRule expected)
    let rows = [
        ("v1.api.example.com", Some("exact")),
        ("v2.api.example.com", Some("long-wildcard")),
        ("www.example.com", Some("short-wildcard")),
        // `*.example.com` needs at least one more label.
        ("example.com", None),
    ];
    let mut failures = Vec::new();
    for (i, order) in orders.iter().enumerate() {
        let mut yaml = DR_HOSTS_SE.to_string();
        for dr in order {
            yaml.push_str("---\n");
            yaml.push_str(dr);
        }
        let plan = compiled(&yaml);
        for (host, want) in rows {
            let t = registered(&plan, host, 443);
            let got = t.rule.as_deref().map(|r| {
                r.rsplit('/')
                    .next()
                    .expect("rsplit yields at least one item")
                    .to_string()
            });
            let sni = t.sni().to_string();
            let want_sni = match want {
                Some(name) => format!("{name}.sni.example"),
                None => host.to_string(),
            };
            if got.as_deref() != want || sni != want_sni {
                failures.push(format!(
                    "order {i}, {host}: got rule {got:?} sni {sni}, want rule {want:?} sni {want_sni}"
                ));
            }
        }
    }
    assert_no_failures(&failures);
}

// === 5. wildcard ServiceEntry hosts ===

#[test]
fn wildcard_service_entry_hosts() {
    let mut failures = Vec::new();
    for resolution in ["NONE", "DYNAMIC_DNS"] {
        let yaml = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wikipedia
spec:
  hosts:
  - "*.wikipedia.org"
  ports:
  - number: 443
    name: https
    protocol: HTTPS
  - number: 80
    name: http
    protocol: HTTP
  resolution: {resolution}
"#
        );
        for policy in [
            OutboundTrafficPolicy::AllowAny,
            OutboundTrafficPolicy::RegistryOnly,
        ] {
            let plan = plan_with(&yaml, policy);
            // (request host, port, Some(endpoint) when registered)
            let rows = [
                ("en.wikipedia.org", 443, Some(("en.wikipedia.org", 443))),
                ("de.wikipedia.org", 80, Some(("de.wikipedia.org", 80))),
                (
                    "commons.m.wikipedia.org",
                    443,
                    Some(("commons.m.wikipedia.org", 443)),
                ),
                ("EN.Wikipedia.org.", 443, Some(("en.wikipedia.org", 443))),
                ("wikipedia.org", 443, None),
                ("en.wikipedia.org.evil.com", 443, None),
                ("en.wikipedia.org", 8080, None),
            ];
            for (host, port, want) in rows {
                let ctx = format!("{resolution} {policy:?} {host}:{port}");
                match (plan.outbound.route(host, port, 0), want) {
                    (Decision::Registered(t), Some(ep)) => {
                        if t.endpoints() != endpoints(&[ep]) {
                            failures
                                .push(format!("{ctx}: endpoints {:?}, want {ep:?}", t.endpoints()));
                        }
                    }
                    (Decision::Passthrough { .. }, None)
                        if policy == OutboundTrafficPolicy::AllowAny => {}
                    (Decision::Refused { .. }, None)
                        if policy == OutboundTrafficPolicy::RegistryOnly => {}
                    (got, want) => failures.push(format!("{ctx}: got {got:?}, want {want:?}")),
                }
            }
        }
    }
    assert_no_failures(&failures);
}

// === 6. outbound traffic policy ===

const ONE_SERVICE: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTP}
  resolution: DNS
"#;

#[test]
fn outbound_traffic_policy_for_unknown_hosts() {
    enum Want {
        Registered,
        Passthrough,
        Refused,
    }
    use OutboundTrafficPolicy::{AllowAny, RegistryOnly};
    let rows = [
        (AllowAny, "unknown.example.net", 80, Want::Passthrough),
        (RegistryOnly, "unknown.example.net", 80, Want::Refused),
        // A registered host on an undeclared port is unknown.
        (AllowAny, "api.example.com", 8080, Want::Passthrough),
        (RegistryOnly, "api.example.com", 8080, Want::Refused),
        (AllowAny, "api.example.com", 443, Want::Registered),
        (RegistryOnly, "api.example.com", 443, Want::Registered),
    ];
    let mut failures = Vec::new();
    for (policy, host, port, want) in rows {
        let plan = plan_with(ONE_SERVICE, policy);
        let ctx = format!("{policy:?} {host}:{port}");
        match (plan.outbound.route(host, port, 0), want) {
            (Decision::Registered(t), Want::Registered) => {
                if t.host != host || t.port.number != port {
                    failures.push(format!("{ctx}: routed to {}:{}", t.host, t.port.number));
                }
            }
            (Decision::Passthrough { host: h, port: p }, Want::Passthrough) => {
                if h != host || p != port {
                    failures.push(format!("{ctx}: passthrough to {h}:{p}"));
                }
            }
            (Decision::Refused { reason }, Want::Refused) => {
                if !reason.contains(host) || !reason.contains("REGISTRY_ONLY") {
                    failures.push(format!(
                        "{ctx}: reason must name the host and REGISTRY_ONLY: {reason}"
                    ));
                }
            }
            (got, _) => failures.push(format!("{ctx}: got {got:?}")),
        }
    }
    assert_no_failures(&failures);
}

// === 7. STATIC endpoints, per-port-name overrides and weights ===

const STATIC_ENDPOINTS: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
spec:
  hosts: [backend.internal.example]
  location: MESH_INTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 8080
  - number: 9000
    name: grpc
    protocol: GRPC
  resolution: STATIC
  endpoints:
  - address: 10.0.0.1
    ports:
      http: 8443
    weight: 3
  - address: 10.0.0.2
    weight: 1
  - address: 10.0.0.3
    ports:
      grpc: 9001
"#;

#[test]
fn static_endpoints_with_port_overrides_and_weights() {
    let plan = compiled(STATIC_ENDPOINTS);
    let rows = [
        (
            80,
            endpoints(&[("10.0.0.1", 8443), ("10.0.0.2", 8080), ("10.0.0.3", 8080)]),
        ),
        (
            9000,
            endpoints(&[("10.0.0.1", 9000), ("10.0.0.2", 9000), ("10.0.0.3", 9001)]),
        ),
    ];
    for (port, want) in rows {
        let t = registered(&plan, "backend.internal.example", port);
        assert_eq!(t.endpoints(), want, "port {port}");
        let weights: Vec<u32> = t.service.endpoints.iter().map(|e| e.weight).collect();
        // An endpoint without a weight counts as 1.
        assert_eq!(weights, [3, 1, 1], "port {port}");
    }
    // DNS with endpoints: the listed names, not the host.
    let dns = STATIC_ENDPOINTS
        .replace("resolution: STATIC", "resolution: DNS")
        .replace("10.0.0.1", "a.backend.example")
        .replace("10.0.0.2", "b.backend.example")
        .replace("10.0.0.3", "c.backend.example");
    let t = registered(&compiled(&dns), "backend.internal.example", 80);
    assert_eq!(
        t.endpoints(),
        endpoints(&[
            ("a.backend.example", 8443),
            ("b.backend.example", 8080),
            ("c.backend.example", 8080)
        ])
    );
}

// === 8. subjectAltNames and SNI ===

#[test]
fn subject_alt_names_and_sni_precedence() {
    // (case, SE subjectAltNames, DR tls extra lines, want sni, want verify names)
    let rows: [(&str, &str, &str, &str, &[&str]); 5] = [
        (
            "no SANs anywhere: the request host",
            "[]",
            "",
            "api.example.com",
            &["api.example.com"],
        ),
        (
            "ServiceEntry SANs",
            "[se.example.com, spiffe://example.com/ns/a/sa/b]",
            "",
            "api.example.com",
            &["se.example.com", "spiffe://example.com/ns/a/sa/b"],
        ),
        (
            "DestinationRule SANs beat ServiceEntry SANs",
            "[se.example.com]",
            "subjectAltNames: [dr.example.com]",
            "api.example.com",
            &["dr.example.com"],
        ),
        (
            "DestinationRule SANs without ServiceEntry SANs",
            "[]",
            "subjectAltNames: [dr.example.com]",
            "api.example.com",
            &["dr.example.com"],
        ),
        (
            "sni override: auto SAN validation still uses the Host",
            "[]",
            "sni: front.example.net",
            "front.example.net",
            &["api.example.com"],
        ),
    ];
    let mut failures = Vec::new();
    for (case, se_sans, dr_tls, want_sni, want_names) in rows {
        let yaml = format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - number: 443
    name: https
    protocol: HTTP
  resolution: DNS
  subjectAltNames: {se_sans}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
{}"#,
            indent(dr_tls, 6)
        );
        let t = registered(&compiled(&yaml), "api.example.com", 443);
        if t.sni() != want_sni || t.verify_names() != strings(want_names) {
            failures.push(format!(
                "{case}: got sni {} names {:?}, want sni {want_sni} names {want_names:?}",
                t.sni(),
                t.verify_names()
            ));
        }
    }
    assert_no_failures(&failures);
}

// === 9. connectionPool ===

#[test]
fn connection_pool_settings() {
    struct Row {
        case: &'static str,
        policy: &'static str,
        want: (Duration, Duration, u32, bool),
        warning: Option<&'static str>,
    }
    let rows = [
        Row {
            case: "defaults",
            policy: "tls: {mode: SIMPLE}",
            want: (DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, 0, false),
            warning: None,
        },
        Row {
            case: "everything set, with TLS",
            policy: "tls: {mode: SIMPLE}
connectionPool:
  tcp: {connectTimeout: 250ms}
  http: {idleTimeout: 30s, maxRequestsPerConnection: 1, h2UpgradePolicy: UPGRADE}",
            want: (Duration::from_millis(250), Duration::from_secs(30), 1, true),
            warning: None,
        },
        Row {
            case: "DO_NOT_UPGRADE",
            policy: "tls: {mode: SIMPLE}
connectionPool:
  http: {h2UpgradePolicy: DO_NOT_UPGRADE, idleTimeout: 1h30m}",
            want: (DEFAULT_CONNECT_TIMEOUT, Duration::from_secs(5400), 0, false),
            warning: None,
        },
        Row {
            case: "UPGRADE without TLS (no h2c yet: warned, HTTP/1.1)",
            policy: "connectionPool:
  http: {h2UpgradePolicy: UPGRADE}",
            want: (DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, 0, false),
            warning: Some("h2UpgradePolicy"),
        },
    ];
    let mut failures = Vec::new();
    for row in rows {
        let yaml = format!(
            "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata:\n  name: pool\nspec:\n  host: api.example.com\n  trafficPolicy:\n{}",
            indent(row.policy, 4)
        );
        let plan = compiled(&yaml);
        let t = registered(&plan, "api.example.com", 443);
        let p = &t.policy;
        let got = (
            p.connect_timeout,
            p.idle_timeout,
            p.max_requests_per_connection,
            p.h2,
        );
        if got != row.want {
            failures.push(format!("{}: got {got:?}, want {:?}", row.case, row.want));
        }
        if let Some(w) = row.warning
            && !plan
                .warnings
                .iter()
                .any(|x| x.contains("DestinationRule/default/pool") && x.contains(w))
        {
            failures.push(format!(
                "{}: no warning naming {w}: {:?}",
                row.case, plan.warnings
            ));
        }
    }
    assert_no_failures(&failures);
}

// === 10. errors name file, resource, field and reason ===

struct ErrorCase {
    file: &'static str,
    yaml: &'static str,
    resource: &'static str,
    field: &'static str,
    /// Words the reason must contain (case-insensitive).
    reason: &'static [&'static str],
}

const ERROR_CASES: &[ErrorCase] = &[
    ErrorCase {
        file: "istio-mutual.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mesh-mtls
  namespace: egress
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"#,
        resource: "DestinationRule/egress/mesh-mtls",
        field: "spec.trafficPolicy.tls.mode",
        reason: &["ISTIO_MUTUAL", "--identity-dir"],
    },
    ErrorCase {
        file: "mutual-no-cert.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mtls
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      caCertificates: /etc/certs/ca.pem
"#,
        resource: "DestinationRule/default/mtls",
        field: "spec.trafficPolicy.tls.clientCertificate",
        reason: &["required", "MUTUAL"],
    },
    ErrorCase {
        file: "static-no-endpoints.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts: [db.internal.example]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: STATIC
"#,
        resource: "ServiceEntry/default/db",
        field: "spec.endpoints",
        reason: &["STATIC"],
    },
    ErrorCase {
        file: "none-with-endpoints.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts: [db.internal.example]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: NONE
  endpoints:
  - address: 10.0.0.1
"#,
        resource: "ServiceEntry/default/db",
        field: "spec.endpoints",
        reason: &["NONE"],
    },
    ErrorCase {
        file: "dns-wildcard.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wikipedia
spec:
  hosts: ["*.wikipedia.org"]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/wikipedia",
        field: "spec.resolution",
        reason: &["wildcard", "DNS"],
    },
    ErrorCase {
        file: "star-host.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: everything
spec:
  hosts: ["*"]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
"#,
        resource: "ServiceEntry/default/everything",
        field: "spec.hosts[0]",
        reason: &["\"*\""],
    },
    ErrorCase {
        file: "port-range.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 70000, name: https, protocol: HTTPS}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[0].number",
        reason: &["70000"],
    },
    ErrorCase {
        file: "duplicate-port.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  - {number: 443, name: https-again, protocol: HTTP}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[1].number",
        reason: &["443"],
    },
    ErrorCase {
        file: "bad-duration.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: slow
spec:
  host: api.example.com
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 10parsecs
"#,
        resource: "DestinationRule/default/slow",
        field: "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        reason: &["10parsecs"],
    },
    ErrorCase {
        file: "bad-protocol.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTQ}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[0].protocol",
        reason: &["HTTQ"],
    },
    ErrorCase {
        file: "credential-scheme.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: vault
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: foo://vault/client-creds
"#,
        resource: "DestinationRule/default/vault",
        field: "spec.trafficPolicy.tls.credentialName",
        reason: &["foo://"],
    },
];

#[test]
fn errors_name_file_resource_field_and_reason() {
    let mut failures = Vec::new();
    for case in ERROR_CASES {
        let errs = compile_errors(case.file, case.yaml);
        if errs.0.len() != 1 {
            failures.push(format!("{}: want 1 error, got:\n{errs}", case.file));
            continue;
        }
        let e = &errs.0[0];
        let msg = errs.to_string();
        let prefix = format!("{}:1: {}: {}: ", case.file, case.resource, case.field);
        let ok_struct = e.file.as_path() == Path::new(case.file)
            && e.line == 1
            && e.resource.as_deref() == Some(case.resource)
            && e.field.as_deref() == Some(case.field);
        let Some(reason) = msg.strip_prefix(&prefix).filter(|_| ok_struct) else {
            failures.push(format!(
                "{}: want prefix {prefix:?}, got {msg:?}",
                case.file
            ));
            continue;
        };
        let lower = reason.to_lowercase();
        for word in case.reason {
            if !lower.contains(&word.to_lowercase()) {
                failures.push(format!("{}: reason lacks {word:?}: {msg}", case.file));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    // Good and broken documents interleaved; every broken one is reported,
    // each at its own document's line, and the good ones add nothing.
    let docs = [
        EGRESS_TLS_ORIGINATION.split("---\n").next().unwrap(),
        ERROR_CASES[6].yaml, // port 70000
        ERROR_CASES[4].yaml, // DNS with a wildcard host
        ONE_SERVICE,         // good
        ERROR_CASES[0].yaml, // ISTIO_MUTUAL
        ERROR_CASES[8].yaml, // connectTimeout: 10parsecs
        EGRESS_TLS_ORIGINATION.split("---\n").nth(1).unwrap(),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: broken-route
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination:
        host: a.*.example.com
"#,
    ];
    let mut yaml = String::new();
    let mut starts = Vec::new();
    let mut line = 1;
    for doc in docs {
        if !yaml.is_empty() {
            yaml.push_str("---\n");
            line += 1;
        }
        starts.push(line);
        yaml.push_str(doc);
        line += doc.lines().count();
    }
    let errs = compile_errors("many.yaml", &yaml);
    let expected = [
        (
            "ServiceEntry/default/api",
            starts[1],
            "spec.ports[0].number",
        ),
        (
            "ServiceEntry/default/wikipedia",
            starts[2],
            "spec.resolution",
        ),
        (
            "DestinationRule/egress/mesh-mtls",
            starts[4],
            "spec.trafficPolicy.tls.mode",
        ),
        (
            "DestinationRule/default/slow",
            starts[5],
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ),
        (
            "VirtualService/default/broken-route",
            starts[7],
            "spec.http[0].route[0].destination.host",
        ),
    ];
    assert_eq!(errs.0.len(), expected.len(), "{errs}");
    for (resource, line, field) in expected {
        let want = format!("many.yaml:{line}: {resource}: {field}: ");
        assert!(
            errs.0.iter().any(|e| e.to_string().starts_with(&want)),
            "no error starting {want:?} in:\n{errs}"
        );
    }
    let msg = errs.to_string();
    assert!(!msg.contains("edition-cnn-com"), "{msg}");
}

// === 11. insecureSkipVerify ===

#[test]
fn insecure_skip_verify_compiles_with_a_warning() {
    let yaml = format!(
        "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata:\n  name: trust-me\n  namespace: egress\nspec:\n  host: api.example.com\n  \
         trafficPolicy:\n    tls:\n      mode: SIMPLE\n      insecureSkipVerify: true\n"
    );
    let plan = compiled(&yaml);
    let t = registered(&plan, "api.example.com", 443);
    assert_eq!(t.policy.tls.mode, TlsMode::Simple);
    assert!(t.policy.tls.insecure_skip_verify);
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("insecureSkipVerify"))
        .unwrap_or_else(|| panic!("no insecureSkipVerify warning: {:?}", plan.warnings));
    // The DestinationRule document starts after ONE_SERVICE and the `---`.
    let line = ONE_SERVICE.lines().count() + 2;
    assert!(
        warning.starts_with(&format!("{FILE}:{line}: DestinationRule/egress/trust-me: ")),
        "{warning}"
    );
    assert!(
        warning.contains("spec.trafficPolicy.tls.insecureSkipVerify"),
        "{warning}"
    );
}

// === 12. credentialName ===

#[test]
fn credential_name_references() {
    // (mode, credentialName, trust, identity)
    let rows = [
        (
            "MUTUAL",
            "kubernetes://istio-system/client-creds",
            TrustSource::Credential(cred(Some("istio-system"), "client-creds")),
            Some(IdentitySource::Credential(cred(
                Some("istio-system"),
                "client-creds",
            ))),
        ),
        (
            "MUTUAL",
            "kubernetes://client-creds",
            TrustSource::Credential(cred(None, "client-creds")),
            Some(IdentitySource::Credential(cred(None, "client-creds"))),
        ),
        (
            "SIMPLE",
            "client-creds",
            TrustSource::Credential(cred(None, "client-creds")),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (mode, name, trust, identity) in rows {
        let yaml = format!(
            "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata:\n  name: creds\nspec:\n  host: api.example.com\n  trafficPolicy:\n    \
             tls:\n      mode: {mode}\n      credentialName: {name}\n"
        );
        let t = registered(&compiled(&yaml), "api.example.com", 443);
        let got = (t.policy.tls.trust.clone(), t.policy.tls.identity.clone());
        if got != (trust.clone(), identity.clone()) {
            failures.push(format!(
                "{mode} {name}: got {got:?}, want {:?}",
                (trust, identity)
            ));
        }
    }
    assert_no_failures(&failures);
}

// === 13. subsets ===

/// ServiceEntry `reviews.example.com` (443 and 8443), an optional
/// VirtualService sending everything to `subset`, and a DestinationRule with
/// the given top-level `trafficPolicy` and `subsets` (both at indent 0).
fn reviews(traffic_policy: &str, subsets: &str, subset: Option<&str>) -> String {
    let mut yaml = String::from(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: reviews
spec:
  hosts: [reviews.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTP}
  - {number: 8443, name: alt, protocol: HTTP}
  resolution: DNS
"#,
    );
    if let Some(subset) = subset {
        yaml.push_str(&format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews.example.com]
  http:
  - route:
    - destination:
        host: reviews.example.com
        subset: {subset}
"#
        ));
    }
    yaml.push_str(&format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews.example.com
  trafficPolicy:
{}  subsets:
{}"#,
        indent(traffic_policy, 4),
        indent(subsets, 2)
    ));
    yaml
}

struct SubsetRow {
    case: &'static str,
    traffic_policy: &'static str,
    subsets: &'static str,
    subset: Option<&'static str>,
    port: u16,
    want: (TlsMode, Duration),
}

fn check_subset_rows(rows: &[SubsetRow]) {
    let mut failures = Vec::new();
    for row in rows {
        let yaml = reviews(row.traffic_policy, row.subsets, row.subset);
        let t = registered(&compiled(&yaml), "reviews.example.com", row.port);
        let got = (t.policy.tls.mode, t.policy.connect_timeout);
        if got != row.want {
            failures.push(format!(
                "{} (subset {:?}, port {}): got {got:?}, want {:?}",
                row.case, row.subset, row.port, row.want
            ));
        }
        if row.subset.is_some() && t.route.is_none() {
            failures.push(format!("{}: not routed by the VirtualService", row.case));
        }
    }
    assert_no_failures(&failures);
}

const SUBSETS_V1_V2: &str = "- name: v1
  labels: {version: v1}
- name: v2
  labels: {version: v2}
  trafficPolicy:
    tls: {mode: SIMPLE}
";

#[test]
fn subset_traffic_policy_overrides_the_rule() {
    let ten = DEFAULT_CONNECT_TIMEOUT;
    check_subset_rows(&[
        SubsetRow {
            case: "subset v2 sets SIMPLE over a DISABLE top level",
            traffic_policy: "tls: {mode: DISABLE}",
            subsets: SUBSETS_V1_V2,
            subset: Some("v2"),
            port: 443,
            want: (TlsMode::Simple, ten),
        },
        SubsetRow {
            case: "subset v1 has no policy: the top level applies",
            traffic_policy: "tls: {mode: DISABLE}",
            subsets: SUBSETS_V1_V2,
            subset: Some("v1"),
            port: 443,
            want: (TlsMode::Disable, ten),
        },
        SubsetRow {
            case: "no subset routed: the top level applies",
            traffic_policy: "tls: {mode: DISABLE}",
            subsets: SUBSETS_V1_V2,
            subset: None,
            port: 443,
            want: (TlsMode::Disable, ten),
        },
        SubsetRow {
            case: "subset inherits the components it leaves unset",
            traffic_policy: "tls: {mode: DISABLE}
connectionPool: {tcp: {connectTimeout: 3s}}",
            subsets: SUBSETS_V1_V2,
            subset: Some("v2"),
            port: 443,
            want: (TlsMode::Simple, Duration::from_secs(3)),
        },
        SubsetRow {
            case: "subset connectionPool replaces the top level's, tls inherited",
            traffic_policy: "tls: {mode: SIMPLE}
connectionPool: {tcp: {connectTimeout: 3s}}",
            subsets: "- name: v3
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 7s}}",
            subset: Some("v3"),
            port: 443,
            want: (TlsMode::Simple, Duration::from_secs(7)),
        },
        SubsetRow {
            case: "subset port-level entry replaces the subset policy on its port",
            traffic_policy: "tls: {mode: DISABLE}",
            subsets: "- name: v2
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 8443}
      connectionPool: {tcp: {connectTimeout: 5s}}",
            subset: Some("v2"),
            port: 8443,
            want: (TlsMode::Disable, Duration::from_secs(5)),
        },
        SubsetRow {
            case: "subset port-level entry leaves other ports alone",
            traffic_policy: "tls: {mode: DISABLE}",
            subsets: "- name: v2
  trafficPolicy:
    tls: {mode: SIMPLE}
    portLevelSettings:
    - port: {number: 8443}
      connectionPool: {tcp: {connectTimeout: 5s}}",
            subset: Some("v2"),
            port: 443,
            want: (TlsMode::Simple, ten),
        },
    ]);
}

/// Istio's `MergeTrafficPolicy(original, subset, port)`: the top level is
/// first merged with its own port-level entry for the port, then the
/// subset's components override it, then the subset's port-level entry.
#[test]
fn subset_policy_merges_over_the_top_level_port_settings() {
    check_subset_rows(&[
        SubsetRow {
            case: "subset tls over a top-level port entry that only sets connectionPool",
            traffic_policy: "portLevelSettings:
- port: {number: 443}
  connectionPool: {tcp: {connectTimeout: 5s}}",
            subsets: SUBSETS_V1_V2,
            subset: Some("v2"),
            port: 443,
            want: (TlsMode::Simple, Duration::from_secs(5)),
        },
        SubsetRow {
            case: "subset with its own port entries keeps the top-level port entry for other ports",
            traffic_policy: "portLevelSettings:
- port: {number: 443}
  tls: {mode: SIMPLE}",
            subsets: "- name: v4
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8443}
      connectionPool: {tcp: {connectTimeout: 5s}}",
            subset: Some("v4"),
            port: 443,
            want: (TlsMode::Simple, DEFAULT_CONNECT_TIMEOUT),
        },
    ]);
}

#[test]
fn weighted_destinations_follow_pick() {
    let yaml = reviews("tls: {mode: DISABLE}", SUBSETS_V1_V2, None).replace(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule",
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: canary
spec:
  hosts: [reviews.example.com]
  http:
  - timeout: 5s
    route:
    - destination: {host: reviews.example.com, subset: v1}
      weight: 90
    - destination: {host: reviews.example.com, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule"#,
    );
    let plan = compiled(&yaml);
    for (pick, mode) in [
        (0, TlsMode::Disable),
        (89, TlsMode::Disable),
        (90, TlsMode::Simple),
        (99, TlsMode::Simple),
        (100, TlsMode::Disable),
    ] {
        let t = registered_pick(&plan, "reviews.example.com", 443, pick);
        assert_eq!(t.policy.tls.mode, mode, "pick {pick}");
        assert_eq!(t.timeout, Some(Duration::from_secs(5)), "pick {pick}");
        assert!(t.weighted, "chosen among several: not the same every time");
    }
    let single = compiled(&reviews("tls: {mode: DISABLE}", SUBSETS_V1_V2, None));
    assert!(!registered_pick(&single, "reviews.example.com", 443, 0).weighted);
}

#[test]
fn inherited_policy_problems_are_reported_once() {
    // A subset with its own trafficPolicy inherits the top-level tls; the
    // top-level block's problems must not be reported again per subset.
    let yaml = |tls: &str| {
        reviews(
            &format!("tls: {tls}"),
            "- name: v1
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 3s}}
- name: v2
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 4s}}",
            None,
        )
    };
    let mut failures = Vec::new();
    let errs = compile_errors(FILE, &yaml("{mode: ISTIO_MUTUAL}"));
    if errs.0.len() != 1 {
        failures.push(format!("{} errors, want 1:\n{errs}", errs.0.len()));
    }
    let plan = compiled(&yaml("{mode: SIMPLE, insecureSkipVerify: true}"));
    let warnings: Vec<&String> = plan
        .warnings
        .iter()
        .filter(|w| w.contains("insecureSkipVerify"))
        .collect();
    if warnings.len() != 1 {
        failures.push(format!(
            "{} insecureSkipVerify warnings, want 1:\n{warnings:#?}",
            warnings.len()
        ));
    }
    assert_no_failures(&failures);
}

// === VirtualService routing ===

const ROUTING: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: front
spec:
  hosts: [front.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: http-alt, protocol: HTTP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: backend
spec:
  hosts: [backend.example.com]
  ports:
  - {number: 8443, name: https, protocol: HTTP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: other
spec:
  hosts: [other.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 8080, name: http-alt, protocol: HTTP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: front
spec:
  hosts: [front.example.com]
  http:
  - match:
    - port: 8080
    route:
    - destination: {host: other.example.com}
  - route:
    - destination: {host: backend.example.com}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: gateway-only
spec:
  hosts: [other.example.com]
  gateways: [istio-egressgateway]
  http:
  - route:
    - destination: {host: backend.example.com, port: {number: 8443}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: backend
spec:
  host: backend.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
"#;

#[test]
fn virtual_service_routes() {
    let plan = compiled(ROUTING);
    // (request host, port, want destination host, port, routed)
    let rows = [
        // A destination without a port on a single-port service uses that
        // port (Istio: "If a service exposes only a single port it is not
        // required to explicitly select the port").
        ("front.example.com", 80, "backend.example.com", 8443, true),
        // First matching route wins; without a port the request's is kept.
        ("front.example.com", 8080, "other.example.com", 8080, true),
        // A VirtualService bound only to a gateway does not route sidecar
        // traffic.
        ("other.example.com", 80, "other.example.com", 80, false),
    ];
    let mut failures = Vec::new();
    for (host, port, want_host, want_port, routed) in rows {
        let ctx = format!("{host}:{port}");
        match plan.outbound.route(host, port, 0) {
            Decision::Registered(t) => {
                let got = (t.host.as_str(), t.port.number, t.route.is_some());
                if got != (want_host, want_port, routed) {
                    failures.push(format!(
                        "{ctx}: got {got:?}, want {:?}",
                        (want_host, want_port, routed)
                    ));
                }
                // SNI and SAN checks follow the Host the app sent.
                if t.sni() != host || t.verify_names() != strings(&[host]) {
                    failures.push(format!(
                        "{ctx}: sni {} names {:?}",
                        t.sni(),
                        t.verify_names()
                    ));
                }
            }
            other => failures.push(format!(
                "{ctx}: got {other:?}, want Registered {want_host}:{want_port}"
            )),
        }
    }
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("VirtualService/default/gateway-only")),
        "{:?}",
        plan.warnings
    );
    assert_no_failures(&failures);
}
