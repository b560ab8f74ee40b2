//! Outbound: the Istio tasks, DestinationRule matching and merging, endpoints, SNI and SANs, connection pools.

use super::*;

// === 1. the Istio "Egress TLS Origination" task ===

/// The task's YAML, unmodified.
pub(super) const EGRESS_TLS_ORIGINATION: &str = r#"apiVersion: networking.istio.io/v1
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
    name: tls
    protocol: TLS
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

pub(super) const ONE_SERVICE: &str = r#"apiVersion: networking.istio.io/v1
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
    let rows: [(&str, &str, &str, &str, &[&str]); 7] = [
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
            "sni override without SANs: the name sent is the name checked",
            "[]",
            "sni: front.example.net",
            "front.example.net",
            &["front.example.net"],
        ),
        (
            "sni override with DestinationRule SANs: the SANs",
            "[]",
            "sni: front.example.net\nsubjectAltNames: [dr.example.com]",
            "front.example.net",
            &["dr.example.com"],
        ),
        (
            "sni override with ServiceEntry SANs: the SANs",
            "[se.example.com]",
            "sni: front.example.net",
            "front.example.net",
            &["se.example.com"],
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
