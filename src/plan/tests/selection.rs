//! Which resources apply to this proxy by its labels (`plan::selector`):
//! Gateway `selector`, Sidecar and DestinationRule `workloadSelector`,
//! PeerAuthentication `selector` precedence, and how the labels are given
//! (`--workload-labels`, the downward API file, the bootstrap).

use std::collections::BTreeMap;

use super::*;
use crate::flags::labels::{parse_file, parse_flag, parse_pairs};

// === helpers ===

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A bootstrap in namespace `shop` with these labels (`None`: unknown) and
/// the mesh inbound listener configured (an identity and an app address).
fn bootstrap(workload: Option<&[(&str, &str)]>) -> Bootstrap {
    Bootstrap {
        namespace: "shop".into(),
        workload_labels: workload.map(labels),
        identity_dir: Some(PathBuf::from("/etc/identity")),
        app_addr: Some("127.0.0.1:8080".parse().unwrap()),
        ..Bootstrap::default()
    }
}

fn compile_as(yaml: &str, b: &Bootstrap) -> Compiled {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    compile_all(&config, b)
}

fn plan_as(yaml: &str, workload: Option<&[(&str, &str)]>) -> Plan {
    let c = compile_as(yaml, &bootstrap(workload));
    let errors: Vec<String> = c
        .errors
        .iter()
        .chain(&c.isolated)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "errors:\n{}\n--- yaml ---\n{yaml}",
        errors.join("\n")
    );
    c.plan
}

/// Every (port, host) an inbound listener other than the mesh one serves.
fn served(plan: &Plan) -> Vec<(u16, String)> {
    let mut out = Vec::new();
    for l in plan.inbound.listeners.iter().filter(|l| !l.mesh) {
        for s in &l.servers {
            for h in &s.hosts {
                out.push((l.port, format!("{h:?}")));
            }
        }
    }
    out
}

fn ports(plan: &Plan) -> Vec<u16> {
    let mut p: Vec<u16> = plan
        .inbound
        .listeners
        .iter()
        .filter(|l| !l.mesh)
        .map(|l| l.port)
        .collect();
    p.dedup();
    p
}

fn warned<'a>(plan: &'a Plan, fragment: &str) -> Vec<&'a String> {
    plan.warnings
        .iter()
        .filter(|w| w.contains(fragment))
        .collect()
}

// === Gateway selector ===

const GATEWAYS: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress-a, namespace: shop}
spec:
  selector: {app: ingress-a}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["a.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: ingress-b, namespace: shop}
spec:
  selector: {app: ingress-b, tier: edge}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["b.example.com"]
  # Broken: with the labels known it is another workload's to fix, and
  # does not take this proxy's port 80 down.
  - port: {number: 8443, name: bad, protocol: SMTP}
    hosts: ["b.example.com"]
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: everyone, namespace: elsewhere}
spec:
  servers:
  - port: {number: 8080, name: http, protocol: HTTP}
    hosts: ["*/open.example.com"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: b-routes, namespace: shop}
spec:
  hosts: ["b.example.com"]
  gateways: [ingress-b]
  http:
  - route: [{destination: {host: b.internal}}]
"#;

#[test]
fn only_the_gateways_selecting_the_proxy_serve() {
    let plan = plan_as(
        GATEWAYS,
        Some(&[("app", "ingress-a"), ("pod-template-hash", "x1")]),
    );
    assert_eq!(
        served(&plan),
        vec![
            (80, "Exact(\"a.example.com\")".to_string()),
            (8080, "Exact(\"open.example.com\")".to_string()),
        ],
        "ingress-a's and the selector-less Gateway's servers only"
    );
    // ingress-b stays known: its VirtualService is no IST0101.
    assert!(warned(&plan, "IST0101").is_empty(), "{:#?}", plan.warnings);

    // Every label of a selector must be on the proxy.
    let plan = plan_as(GATEWAYS, Some(&[("app", "ingress-b")]));
    assert_eq!(ports(&plan), vec![8080], "tier: edge is missing");
    let c = compile_as(
        GATEWAYS,
        &bootstrap(Some(&[("app", "ingress-b"), ("tier", "edge")])),
    );
    let errors: Vec<String> = c.isolated.iter().map(|e| e.to_string()).collect();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("Gateway/shop/ingress-b") && e.contains("SMTP")),
        "ingress-b's servers are this proxy's now: {errors:?}"
    );
}

#[test]
fn without_labels_every_gateway_applies_and_validate_says_so_once() {
    let c = compile_as(GATEWAYS, &bootstrap(None));
    let hosts: Vec<String> = c
        .plan
        .inbound
        .listeners
        .iter()
        .flat_map(|l| &l.servers)
        .flat_map(|s| s.hosts.iter().map(|h| format!("{h:?}")))
        .collect();
    assert!(
        hosts.iter().any(|h| h.contains("a.example.com")),
        "{hosts:?}"
    );
    assert!(
        hosts.iter().any(|h| h.contains("b.example.com")),
        "{hosts:?}"
    );
    let w = warned(&c.plan, "Gateway selectors are not checked");
    assert_eq!(w.len(), 1, "{:#?}", c.plan.warnings);
    for part in [
        "Gateway/shop/ingress-a",
        "Gateway/shop/ingress-b",
        "--workload-labels",
    ] {
        assert!(w[0].contains(part), "{part}: {}", w[0]);
    }
    assert!(
        !w[0].contains("everyone"),
        "no selector, nothing to check: {}",
        w[0]
    );
}

// === Sidecar workloadSelector ===

fn sidecar(name: &str, ns: &str, selector: Option<&str>, port: u16) -> String {
    let sel = selector.map_or(String::new(), |s| {
        format!("  workloadSelector: {{labels: {s}}}\n")
    });
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{sel}  ingress:\n  - port: {{number: {port}, name: http, protocol: HTTP}}\n    defaultEndpoint: 127.0.0.1:8080\n"
    )
}

#[test]
fn a_sidecar_selecting_the_proxy_is_the_one_in_force() {
    let yaml = [
        sidecar("namespace-wide", "shop", None, 9080),
        sidecar("web", "shop", Some("{app: web}"), 9443),
        sidecar("web-v2", "shop", Some("{app: web, version: v2}"), 9444),
        sidecar("other", "shop", Some("{app: other}"), 9999),
        sidecar("foreign", "elsewhere", Some("{app: web}"), 9555),
    ]
    .concat();
    // (labels, ports served, warning expected)
    type Row<'a> = (Option<&'a [(&'a str, &'a str)]>, Vec<u16>, Option<&'a str>);
    let rows: Vec<Row> = vec![
        (Some(&[("app", "web")]), vec![9443], None),
        (Some(&[("app", "other")]), vec![9999], None),
        // No Sidecar selects it: the namespace-wide one applies.
        (Some(&[("app", "db")]), vec![9080], None),
        (Some(&[]), vec![9080], None),
        // Two select it: the first loaded, warned.
        (
            Some(&[("app", "web"), ("version", "v2")]),
            vec![9443],
            Some("Sidecar/shop/web-v2: spec.workloadSelector: selects this proxy too"),
        ),
        // Unknown labels: every Sidecar, as before, each selector warned.
        (
            None,
            vec![9080, 9443, 9444, 9555, 9999],
            Some("Sidecar/shop/other: spec.workloadSelector: not checked"),
        ),
    ];
    let mut failures = Vec::new();
    for (workload, want, warning) in rows {
        let plan = plan_as(&yaml, workload);
        if ports(&plan) != want {
            failures.push(format!(
                "{workload:?}: ports {:?}, want {want:?}",
                ports(&plan)
            ));
        }
        if let Some(w) = warning
            && warned(&plan, w).is_empty()
        {
            failures.push(format!(
                "{workload:?}: no warning {w:?} in {:#?}",
                plan.warnings
            ));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn the_root_namespace_sidecar_is_the_default_of_a_namespace_without_one() {
    let root = sidecar("mesh-default", "istio-system", None, 9100);
    let root_selecting = sidecar("root-web", "istio-system", Some("{app: web}"), 9101);
    let own = sidecar("namespace-wide", "shop", None, 9080);
    let own_other = sidecar("other", "shop", Some("{app: other}"), 9999);
    let own_web = sidecar("web", "shop", Some("{app: web}"), 9443);
    let root_second = sidecar("second", "istio-system", None, 9102);
    let own_second = sidecar("second", "shop", None, 9081);
    let foreign = sidecar("foreign", "elsewhere", None, 9555);
    let web: Option<&[(&str, &str)]> = Some(&[("app", "web")]);
    // (Sidecars, labels, ports served, warning expected)
    type Row<'a> = (
        Vec<&'a str>,
        Option<&'a [(&'a str, &'a str)]>,
        Vec<u16>,
        Option<&'a str>,
    );
    let rows: Vec<Row> = vec![
        // No Sidecar in the proxy's namespace: the root one without a
        // selector; the root one selecting the proxy's labels is for the
        // root namespace's workloads only.
        (vec![&root_selecting, &root], web, vec![9100], None),
        (vec![&root, &own_other], web, vec![9100], None),
        (vec![&root_selecting], web, vec![], None),
        // The namespace's own replaces it, selecting or not.
        (vec![&root, &own], web, vec![9080], None),
        (vec![&root, &own, &own_web], web, vec![9443], None),
        // Labels unknown: any Sidecar of the namespace replaces it.
        (vec![&root, &own_other], None, vec![9999], None),
        (vec![&root, &own], None, vec![9080], None),
        (vec![&root], None, vec![9100], None),
        // Two at one level: the first loaded, warned.
        (
            vec![&root, &root_second],
            web,
            vec![9100],
            Some("Sidecar/istio-system/second: spec.workloadSelector: is the mesh-wide default"),
        ),
        (
            vec![&own, &own_second, &root],
            web,
            vec![9080],
            Some(
                "Sidecar/shop/second: spec.workloadSelector: applies to every workload of the \
                 proxy's namespace, as Sidecar/shop/namespace-wide is",
            ),
        ),
        // Another namespace's never applies.
        (
            vec![&foreign, &root],
            web,
            vec![9100],
            Some("Sidecar/elsewhere/foreign: metadata.namespace: does not apply to this proxy"),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (sidecars, workload, want, warning)) in rows.into_iter().enumerate() {
        let plan = plan_as(&sidecars.concat(), workload);
        if ports(&plan) != want {
            failures.push(format!(
                "row {i} {workload:?}: ports {:?}, want {want:?}",
                ports(&plan)
            ));
        }
        if let Some(w) = warning
            && warned(&plan, w).is_empty()
        {
            failures.push(format!("row {i}: no warning {w:?} in {:#?}", plan.warnings));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn a_root_namespace_sidecar_selects_the_root_namespace_workloads() {
    let yaml = sidecar("mesh-default", "istio-system", None, 9100)
        + &sidecar("root-web", "istio-system", Some("{app: web}"), 9101);
    let mut b = bootstrap(Some(&[("app", "web")]));
    b.namespace = "istio-system".into();
    let c = compile_as(&yaml, &b);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(ports(&c.plan), vec![9101]);
}

#[test]
fn the_root_namespace_default_egress_is_not_warned_about() {
    let egress = |name: &str, ns: &str, selector: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{selector}  egress:\n  - hosts: [\"./*\"]\n"
        )
    };
    let foreign = "Istio would apply this Sidecar to it only from the mesh root namespace";
    for workload in [Some(&[("app", "web")][..]), None] {
        let plan = plan_as(&egress("default", "istio-system", ""), workload);
        assert!(warned(&plan, foreign).is_empty(), "{:#?}", plan.warnings);
    }
    // Labels unknown, a root-namespace Sidecar with a selector applies to
    // meshgate, and is not the default: warned.
    let plan = plan_as(
        &egress(
            "web",
            "istio-system",
            "  workloadSelector: {labels: {app: web}}\n",
        ),
        None,
    );
    assert_eq!(warned(&plan, foreign).len(), 1, "{:#?}", plan.warnings);
}

#[test]
fn a_selector_istio_refuses_is_an_error() {
    let yaml = sidecar("bad", "shop", Some("{\"app\": \"*\"}"), 9080)
        + &sidecar("typo", "shop", None, 9081).replace(
            "spec:\n",
            "spec:\n  workloadSelector: {matchLabels: {app: web}}\n",
        );
    let c = compile_as(&yaml, &bootstrap(Some(&[("app", "web")])));
    let text: Vec<String> = c.errors.iter().map(|e| e.to_string()).collect();
    let text = text.join("\n");
    assert!(
        text.contains(
            "Sidecar/shop/bad: spec.workloadSelector: wildcard is not supported in selector"
        ),
        "{text}"
    );
    assert!(
        text.contains("Sidecar/shop/typo: spec.workloadSelector:") && text.contains("matchLabels"),
        "{text}"
    );
}

// === DestinationRule workloadSelector ===

fn rule(name: &str, ns: &str, selector: Option<&str>, sni: &str) -> String {
    let sel = selector.map_or(String::new(), |s| {
        format!("  workloadSelector: {{matchLabels: {s}}}\n")
    });
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  host: api.example.com\n{sel}  trafficPolicy:\n    tls: {{mode: SIMPLE, sni: {sni}}}\n"
    )
}

const API: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api, namespace: shop}
spec:
  hosts: [api.example.com]
  ports: [{number: 443, name: tls, protocol: TLS}]
  resolution: DNS
"#;

#[test]
fn a_rule_selecting_the_proxy_takes_precedence_in_its_namespace_only() {
    // The selector-less rule first: precedence is not load order.
    let yaml = [
        API.to_string(),
        rule("catch-all", "shop", None, "catch-all.example"),
        rule("web", "shop", Some("{app: web}"), "web.example"),
        rule(
            "foreign",
            "elsewhere",
            Some("{app: web}"),
            "foreign.example",
        ),
    ]
    .concat();
    let sni = |plan: &Plan| {
        let t = registered(plan, "api.example.com", 443);
        (
            t.policy.tls.sni.clone().unwrap_or_default(),
            t.rule.unwrap_or_default(),
        )
    };

    let plan = plan_as(&yaml, Some(&[("app", "web")]));
    let (s, from) = sni(&plan);
    assert_eq!(s, "web.example");
    assert!(from.contains("DestinationRule/shop/web"), "{from}");
    let w = warned(
        &plan,
        "DestinationRule/shop/catch-all: spec.host: does not apply",
    );
    assert_eq!(w.len(), 1, "{:#?}", plan.warnings);
    assert!(w[0].contains("DestinationRule/shop/web"), "{}", w[0]);

    // Not selected: the rule without a selector.
    let plan = plan_as(&yaml, Some(&[("app", "api")]));
    assert_eq!(sni(&plan).0, "catch-all.example");

    // Another namespace's selector never applies here, even matching.
    let foreign = [
        API.to_string(),
        rule("foreign", "elsewhere", Some("{app: web}"), "f.example"),
    ]
    .concat();
    let plan = plan_as(&foreign, Some(&[("app", "web")]));
    assert_eq!(registered(&plan, "api.example.com", 443).rule, None);

    // Unknown labels: as before (the first loaded), the selector warned.
    let plan = plan_as(&yaml, None);
    assert_eq!(sni(&plan).0, "catch-all.example");
    assert_eq!(
        warned(
            &plan,
            "DestinationRule/shop/web: spec.workloadSelector: not checked"
        )
        .len(),
        1,
        "{:#?}",
        plan.warnings
    );
}

// === PeerAuthentication precedence ===

fn peer(name: &str, ns: &str, selector: Option<&str>, mode: &str) -> String {
    let sel = selector.map_or(String::new(), |s| {
        format!("  selector: {{matchLabels: {s}}}\n")
    });
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n{sel}  mtls: {{mode: {mode}}}\n"
    )
}

/// The mesh inbound listener's mode, from its TLS flags, and its origin.
fn mesh_mode(plan: &Plan) -> (&'static str, String) {
    let l = plan
        .inbound
        .listeners
        .iter()
        .find(|l| l.mesh)
        .expect("a mesh listener");
    let mode = match (l.tls, l.permissive) {
        (false, _) => "DISABLE",
        (true, true) => "PERMISSIVE",
        (true, false) => "STRICT",
    };
    (mode, l.servers[0].origin.clone())
}

#[test]
fn peer_authentication_workload_over_namespace_over_mesh() {
    let mesh = peer("mesh", "istio-system", None, "STRICT");
    let namespace = peer("namespace", "shop", None, "PERMISSIVE");
    let workload = peer("web", "shop", Some("{app: web}"), "DISABLE");
    let web: &[(&str, &str)] = &[("app", "web")];
    let db: &[(&str, &str)] = &[("app", "db")];
    // (yaml, labels, mode, the resource it comes from)
    type Row<'a> = (String, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let rows: Vec<Row> = vec![
        // Load order does not matter: the workload policy first here.
        (
            [workload.clone(), namespace.clone(), mesh.clone()].concat(),
            web,
            "DISABLE",
            "PeerAuthentication/shop/web",
        ),
        (
            [mesh.clone(), namespace.clone(), workload.clone()].concat(),
            db,
            "PERMISSIVE",
            "PeerAuthentication/shop/namespace",
        ),
        (
            [workload.clone(), mesh.clone()].concat(),
            db,
            "STRICT",
            "PeerAuthentication/istio-system/mesh",
        ),
        // UNSET inherits the level above.
        (
            [
                mesh.clone(),
                peer("web", "shop", Some("{app: web}"), "UNSET"),
            ]
            .concat(),
            web,
            "STRICT",
            "PeerAuthentication/istio-system/mesh",
        ),
        // Another namespace's, and a selector in the root namespace: ignored.
        (
            [
                peer("other", "elsewhere", None, "STRICT"),
                peer("root-web", "istio-system", Some("{app: web}"), "STRICT"),
            ]
            .concat(),
            web,
            "PERMISSIVE",
            "default",
        ),
        (String::new(), web, "PERMISSIVE", "default"),
    ];
    let mut failures = Vec::new();
    for (yaml, workload, want, from) in &rows {
        let plan = plan_as(yaml, Some(workload));
        let (mode, origin) = mesh_mode(&plan);
        if mode != *want || !origin.contains(from) {
            failures.push(format!(
                "{workload:?}: {mode} from {origin}, want {want} from {from}\n{yaml}"
            ));
        }
    }
    assert_no_failures(&failures);

    // The ignored STRICT ones are warned about: the mode in force is weaker.
    let plan = plan_as(&rows[4].0, Some(web));
    for name in ["elsewhere/other", "istio-system/root-web"] {
        assert_eq!(
            warned(
                &plan,
                &format!("PeerAuthentication/{name}: spec.mtls.mode: STRICT does not apply")
            )
            .len(),
            1,
            "{name}: {:#?}",
            plan.warnings
        );
    }
}

#[test]
fn two_peer_authentications_at_one_level_the_first_loaded_applies() {
    let yaml = [
        peer("first", "shop", None, "STRICT"),
        peer("second", "shop", None, "DISABLE"),
        peer("web", "shop", Some("{app: web}"), "PERMISSIVE"),
        peer("web-too", "shop", Some("{tier: front}"), "DISABLE"),
    ]
    .concat();
    let plan = plan_as(&yaml, Some(&[("app", "db")]));
    assert_eq!(mesh_mode(&plan).0, "STRICT");
    let w = warned(
        &plan,
        "PeerAuthentication/shop/second: spec.selector: namespace-wide",
    );
    assert_eq!(w.len(), 1, "{:#?}", plan.warnings);
    assert!(w[0].contains("PeerAuthentication/shop/first"), "{}", w[0]);
    let plan = plan_as(&yaml, Some(&[("app", "web"), ("tier", "front")]));
    assert_eq!(mesh_mode(&plan).0, "PERMISSIVE");
    let w = warned(&plan, "web-too: spec.selector: selecting this proxy");
    assert_eq!(w.len(), 1, "{:#?}", plan.warnings);
}

#[test]
fn peer_authentication_with_unknown_labels_is_never_weaker() {
    let namespace = peer("namespace", "shop", None, "PERMISSIVE");
    // A STRICT selector might be this proxy's: applied.
    let yaml = [
        namespace.clone(),
        peer("web", "shop", Some("{app: web}"), "STRICT"),
    ]
    .concat();
    let plan = plan_as(&yaml, None);
    assert_eq!(mesh_mode(&plan).0, "STRICT");
    assert_eq!(
        warned(
            &plan,
            "PeerAuthentication/shop/web: spec.selector: not checked"
        )
        .len(),
        1
    );
    // A DISABLE one might not be: not applied.
    let yaml = [
        namespace,
        peer("web", "shop", Some("{app: web}"), "DISABLE"),
    ]
    .concat();
    let plan = plan_as(&yaml, None);
    assert_eq!(mesh_mode(&plan).0, "PERMISSIVE");
    assert_eq!(
        warned(&plan, "not applied").len(),
        1,
        "{:#?}",
        plan.warnings
    );
}

// === the labels ===

#[test]
fn labels_from_the_downward_api_file() {
    // As Kubernetes writes it: sorted `key="value"` lines, Go's %q quoting.
    let text = concat!(
        "app=\"ingress-a\"\n",
        "pod-template-hash=\"7d9f5c\"\n",
        "security.istio.io/tlsMode=\"istio\"\n",
        "note=\"say \\\"hi\\\" \\\\ tab\\there caf\\u00e9 \\x41\\101 \\U0001F600\"\n",
        "\n",
        "empty=\"\"\n",
    );
    let got = parse_file(text).unwrap();
    assert_eq!(got["app"], "ingress-a");
    assert_eq!(got["security.istio.io/tlsMode"], "istio");
    assert_eq!(got["note"], "say \"hi\" \\ tab\there café AA \u{1F600}");
    assert_eq!(got["empty"], "");
    assert_eq!(got.len(), 5);

    for (bad, line, reason) in [
        ("app=\"a\"\nversion=\"v1", 2, "no closing quote"),
        ("app=\"a\"x", 1, "after the closing quote"),
        ("app=\"\\q\"", 1, "\\q is not an escape"),
        ("app=\"\\xZZ\"", 1, "hexadecimal"),
        ("app=\"\\xff\"", 1, "not UTF-8"),
        ("a\n\njust-a-key", 1, "expected key=\"value\""),
        ("app=\"a\"\napp=\"b\"", 2, "given twice"),
    ] {
        let (l, why) = parse_file(bad).unwrap_err();
        assert!(
            l == line && why.contains(reason),
            "{bad:?}: line {l}: {why}"
        );
    }
}

#[test]
fn the_flag_takes_pairs_or_a_file() {
    assert_eq!(
        parse_pairs("app=ingress-a, version = v1,empty=").unwrap(),
        labels(&[("app", "ingress-a"), ("version", "v1"), ("empty", "")])
    );
    assert_eq!(parse_pairs("").unwrap(), labels(&[]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("labels");
    std::fs::write(&file, "app=\"web\"\nversion=\"v1\"\n").unwrap();
    let path = file.display().to_string();
    assert_eq!(
        parse_flag(&path).unwrap(),
        labels(&[("app", "web"), ("version", "v1")])
    );
    std::fs::write(&file, "app=\"web\"\nversion=\"v1\n").unwrap();
    let err = parse_flag(&path).unwrap_err();
    assert!(err.starts_with(&format!("{path}:2: ")), "{err}");
    let err = parse_flag("/etc/podinfo/missing").unwrap_err();
    assert!(
        err.contains("expected key=value") && err.contains("not a readable file"),
        "{err}"
    );

    // On the command line and in the bootstrap file.
    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        config: crate::flags::ConfigFlags,
    }
    use clap::Parser as _;
    let cli = Cli::try_parse_from([
        "meshgate",
        "-c",
        "x.yaml",
        "--workload-labels",
        &path,
        "--root-namespace",
        "mesh-root",
    ])
    .unwrap_err();
    assert!(
        cli.to_string().contains("--workload-labels") && cli.to_string().contains(":2:"),
        "{cli}"
    );
    std::fs::write(&file, "app=\"web\"\n").unwrap();
    let cli = Cli::try_parse_from([
        "meshgate",
        "-c",
        "x.yaml",
        "--workload-labels",
        &path,
        "--root-namespace",
        "mesh-root",
    ])
    .unwrap();
    let b = cli.config.bootstrap().unwrap();
    assert_eq!(b.workload_labels, Some(labels(&[("app", "web")])));
    assert_eq!(b.root_namespace, "mesh-root");
    let none = Cli::try_parse_from(["meshgate", "-c", "x.yaml"]).unwrap();
    let b = none.config.bootstrap().unwrap();
    assert_eq!(
        (b.workload_labels, b.root_namespace.as_str()),
        (None, "istio-system")
    );

    let boot = dir.path().join("bootstrap.yaml");
    std::fs::write(
        &boot,
        "workloadLabels: {app: api}\nrootNamespace: mesh-root\n",
    )
    .unwrap();
    let mut b = Bootstrap::default();
    b.apply_file(&boot).unwrap();
    assert_eq!(b.workload_labels, Some(labels(&[("app", "api")])));
    assert_eq!(b.root_namespace, "mesh-root");
}

#[test]
fn the_root_namespace_is_configurable() {
    let yaml = peer("mesh", "mesh-root", None, "STRICT");
    let mut b = bootstrap(Some(&[]));
    let plan = compile_as(&yaml, &b).plan;
    assert_eq!(mesh_mode(&plan).0, "PERMISSIVE", "not the root namespace");
    b.root_namespace = "mesh-root".into();
    let plan = compile_as(&yaml, &b).plan;
    assert_eq!(mesh_mode(&plan), ("STRICT", mesh_mode(&plan).1));
    assert!(
        mesh_mode(&plan)
            .1
            .contains("PeerAuthentication/mesh-root/mesh")
    );
}
