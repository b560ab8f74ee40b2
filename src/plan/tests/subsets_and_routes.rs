//! Subsets, weighted destinations and mesh VirtualService routing.

use super::*;

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
