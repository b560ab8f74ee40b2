//! Namespace scoping as Istio applies it: Gateway server hosts
//! `namespace/host`, `exportTo`, and Sidecar `egress` hosts, seen from the
//! proxy's namespace (`bootstrap.namespace`).

use super::*;
use crate::bootstrap::OutboundTrafficPolicy::{AllowAny, RegistryOnly};

// === helpers ===

fn compile_in(
    yaml: &str,
    namespace: &str,
    policy: OutboundTrafficPolicy,
) -> Result<Plan, ConfigErrors> {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let bootstrap = Bootstrap {
        outbound_traffic_policy: policy,
        namespace: namespace.into(),
        ..Bootstrap::default()
    };
    compile(&config, &bootstrap)
}

fn plan_in(yaml: &str, namespace: &str, policy: OutboundTrafficPolicy) -> Plan {
    compile_in(yaml, namespace, policy)
        .unwrap_or_else(|e| panic!("does not compile in {namespace}:\n{e}\n--- yaml ---\n{yaml}"))
}

/// The error lines of a configuration that must not compile.
fn errors_in(yaml: &str, namespace: &str) -> String {
    match compile_in(yaml, namespace, AllowAny) {
        Ok(p) => panic!(
            "compiled in {namespace}, expected errors (warnings: {:#?})\n--- yaml ---\n{yaml}",
            p.warnings
        ),
        Err(e) => e.to_string(),
    }
}

/// Asserts one line of `text` names `resource` and `field` and contains
/// every fragment.
fn assert_line(text: &str, resource: &str, field: &str, fragments: &[&str]) {
    let located = format!(" {resource}: {field}: ");
    assert!(
        text.lines()
            .any(|l| l.contains(&located) && fragments.iter().all(|f| l.contains(f))),
        "no line `{located}` with {fragments:?} among:\n{text}"
    );
}

fn warnings(plan: &Plan) -> String {
    plan.warnings.join("\n")
}

/// The outcome of a mesh request, in one word.
fn outcome(plan: &Plan, host: &str, port: u16) -> String {
    let d = plan.outbound.route(host, port, 0);
    if let Decision::Registered(t) = &d {
        format!("registered:{}", t.host)
    } else if matches!(d, Decision::Passthrough { .. }) {
        "passthrough".into()
    } else if matches!(d, Decision::Refused { .. }) {
        "registry_only".into()
    } else {
        format!("{d:?}")
    }
}

fn service_entry(ns: &str, name: &str, hosts: &str, export_to: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n  hosts: [{hosts}]\n  ports: [{{number: 80, name: http, \
         protocol: HTTP}}]\n  resolution: DNS\n{export_to}\n"
    )
}

fn simple_rule(ns: &str, name: &str, host: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: \
         {name}, namespace: {ns}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    tls: {{mode: \
         SIMPLE}}\n{extra}\n"
    )
}

fn sidecar(ns: &str, name: &str, egress: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: {name}, \
         namespace: {ns}}}\nspec:\n  egress:\n{}",
        indent(egress, 2)
    )
}

fn gateway_server(hosts: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress, \
         namespace: gw-ns}}\nspec:\n  servers:\n  - port: {{number: 80, name: http, protocol: \
         HTTP}}\n    hosts: [{hosts}]\n"
    )
}

fn gateway_route(ns: &str, name: &str, hosts: &str, extra: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: \
         {name}, namespace: {ns}}}\nspec:\n  hosts: [{hosts}]\n  gateways: [gw-ns/ingress]\n  \
         http:\n  - route:\n    - destination: {{host: backend.{ns}.internal, port: {{number: \
         8080}}}}\n{extra}\n"
    )
}

/// The VirtualServices bound to the only server, with their bound hosts.
fn bound(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let l = &plan.inbound.listeners[0];
    l.servers[0]
        .routes
        .iter()
        .map(|r| {
            let name = r.resource.rsplit(": ").next().unwrap_or("").to_string();
            (name, r.hosts.iter().map(|h| h.to_string()).collect())
        })
        .collect()
}

// === 1. Gateway server hosts `namespace/host` ===

#[test]
fn gateway_server_host_namespace_decides_which_virtual_services_bind() {
    let routes = gateway_route("gw-ns", "own", "app.example.com", "")
        + &gateway_route("other-ns", "foreign", "app.example.com", "");
    let own = "VirtualService/gw-ns/own";
    let foreign = "VirtualService/other-ns/foreign";
    let rows: [(&str, &[&str]); 5] = [
        ("\"gw-ns/app.example.com\"", &[own]),
        ("\"other-ns/app.example.com\"", &[foreign]),
        ("\"./app.example.com\"", &[own]),
        ("\"*/app.example.com\"", &[own, foreign]),
        ("app.example.com", &[own, foreign]),
    ];
    let mut failures = Vec::new();
    for (hosts, want) in rows {
        let yaml = gateway_server(hosts) + &routes;
        let plan = plan_in(&yaml, "gw-ns", AllowAny);
        let got: Vec<String> = bound(&plan).into_iter().map(|(n, _)| n).collect();
        if got != want {
            failures.push(format!("hosts {hosts}: bound {got:?}, want {want:?}"));
        }
        // A VirtualService kept out by the namespace is named.
        if want.len() == 1 {
            let out = if want[0] == own { foreign } else { own };
            let w = warnings(&plan);
            if !w
                .lines()
                .any(|l| l.contains(out) && l.contains("not bound to"))
            {
                failures.push(format!("hosts {hosts}: no warning for {out}:\n{w}"));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn a_virtual_service_serves_only_the_hosts_opened_to_its_namespace() {
    // Istio's vhosts are the intersection of the server's hosts for the
    // VirtualService's namespace with its own hosts.
    let yaml = gateway_server("\"other-ns/a.example.com\", \"gw-ns/b.example.com\"")
        + &gateway_route("other-ns", "wide", "\"*.example.com\"", "");
    let plan = plan_in(&yaml, "gw-ns", AllowAny);
    assert_eq!(
        bound(&plan),
        [(
            "VirtualService/other-ns/wide".to_string(),
            vec!["a.example.com".to_string()]
        )]
    );
    let server = &plan.inbound.listeners[0].servers[0];
    // Routes for a request host are the bound VirtualService matching it
    // most specifically (as the runtime picks them).
    let routes_for = |h: &str| crate::plan::host::most_specific(&server.routes, h, |r| &r.hosts);
    assert!(routes_for("a.example.com").is_some());
    assert!(
        routes_for("b.example.com").is_none(),
        "b.example.com is gw-ns's only"
    );
    // The plan keeps the host patterns.
    let hosts: Vec<String> = server.hosts.iter().map(|h| h.to_string()).collect();
    assert_eq!(hosts, ["a.example.com", "b.example.com"]);
}

#[test]
fn gateway_server_host_namespaces_are_validated_as_istio_does() {
    let rows = [
        (
            "\"~/app.example.com\"",
            "invalid namespace value \"~\" in gateway",
        ),
        (
            "\"Bad_NS/app.example.com\"",
            "invalid namespace value \"Bad_NS\"",
        ),
        ("\"/app.example.com\"", "cannot be empty"),
        ("\"gw-ns/\"", "cannot be empty"),
    ];
    for (hosts, reason) in rows {
        let yaml = gateway_server(hosts) + &gateway_route("gw-ns", "own", "app.example.com", "");
        let text = errors_in(&yaml, "gw-ns");
        assert_line(
            &text,
            "Gateway/gw-ns/ingress",
            "spec.servers[0].hosts[0]",
            &[reason],
        );
    }
}

#[test]
fn a_gateway_virtual_service_must_be_exported_to_the_proxy_namespace() {
    let gw = gateway_server("\"*/app.example.com\"");
    let rows: [(&str, &str, bool); 5] = [
        ("", "gw-ns", true),
        ("  exportTo: [\".\"]", "gw-ns", false),
        ("  exportTo: [gw-ns]", "gw-ns", true),
        ("  exportTo: [\"*\"]", "gw-ns", true),
        // Istio checks against the gateway proxy's namespace, not the
        // Gateway resource's.
        ("  exportTo: [gw-ns]", "edge", false),
    ];
    let mut failures = Vec::new();
    for (export, proxy_ns, served) in rows {
        let yaml = gw.clone() + &gateway_route("other-ns", "foreign", "app.example.com", export);
        let plan = plan_in(&yaml, proxy_ns, AllowAny);
        let got = !bound(&plan).is_empty();
        if got != served {
            failures.push(format!(
                "{export:?} in {proxy_ns}: bound {got}, want {served}"
            ));
        }
        let warned = warnings(&plan).lines().any(|l| {
            l.contains("VirtualService/other-ns/foreign: spec.exportTo:")
                && l.contains("routes are not served on gw-ns/ingress")
        });
        if warned == served {
            failures.push(format!("{export:?} in {proxy_ns}: warned {warned}"));
        }
    }
    assert_no_failures(&failures);
}

// === 2. exportTo and mesh traffic ===

#[test]
fn export_to_dot_hides_a_service_entry_from_other_namespaces() {
    let yaml = service_entry("team-a", "api", "api.team-a.example", "  exportTo: [\".\"]");
    let mut failures = Vec::new();
    for (ns, policy, want) in [
        ("team-a", RegistryOnly, "registered:api.team-a.example"),
        ("default", RegistryOnly, "registry_only"),
        ("default", AllowAny, "passthrough"),
    ] {
        let plan = plan_in(&yaml, ns, policy);
        let got = outcome(&plan, "api.team-a.example", 80);
        if got != want {
            failures.push(format!("from {ns} ({policy:?}): {got}, want {want}"));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn export_to_lists_name_the_namespaces_that_see_a_resource() {
    let yaml = service_entry(
        "team-a",
        "listed",
        "listed.example",
        "  exportTo: [team-b, prod]",
    ) + &service_entry("team-a", "public", "public.example", "  exportTo: [\"*\"]")
        + &service_entry("team-a", "default", "default.example", "")
        + &service_entry("team-a", "nobody", "nobody.example", "  exportTo: [\"~\"]")
        + &service_entry("team-a", "own", "own.example", "  exportTo: [team-a]");
    let mut failures = Vec::new();
    for (ns, visible) in [
        ("prod", &["listed", "public", "default"][..]),
        ("team-b", &["listed", "public", "default"]),
        ("team-a", &["public", "default", "own"]),
        ("other", &["public", "default"]),
    ] {
        let plan = plan_in(&yaml, ns, RegistryOnly);
        for name in ["listed", "public", "default", "nobody", "own"] {
            let host = format!("{name}.example");
            let got = outcome(&plan, &host, 80) != "registry_only";
            if got != visible.contains(&name) {
                failures.push(format!("{name} from {ns}: visible {got}"));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn export_to_scopes_destination_rules_and_mesh_virtual_services() {
    let yaml = service_entry("shared", "api", "api.example", "")
        + &service_entry("shared", "v2", "v2.example", "")
        + &simple_rule(
            "team-a",
            "tls",
            "api.example",
            "  exportTo: [team-a, team-b]",
        )
        + "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: \
           to-v2, namespace: team-a}\nspec:\n  hosts: [api.example]\n  exportTo: [\".\"]\n  \
           http:\n  - route:\n    - destination: {host: v2.example}\n";
    let mut failures = Vec::new();
    for (ns, tls, dest) in [
        ("team-a", TlsMode::Simple, "v2.example"),
        ("team-b", TlsMode::Simple, "api.example"),
        ("other", TlsMode::Disable, "api.example"),
    ] {
        let plan = plan_in(&yaml, ns, RegistryOnly);
        let t = registered(&plan, "api.example", 80);
        if t.host != dest {
            failures.push(format!("from {ns}: routed to {}, want {dest}", t.host));
        }
        let mode = plan
            .outbound
            .rule_for("api.example")
            .map(|r| r.default.tls.mode)
            .unwrap_or(TlsMode::Disable);
        if mode != tls {
            failures.push(format!("from {ns}: rule TLS {mode:?}, want {tls:?}"));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn a_hidden_destination_rule_asking_for_tls_is_warned_about() {
    let se = service_entry("team-a", "api", "api.example", "");
    let hidden = simple_rule("team-a", "tls", "api.example", "  exportTo: [\".\"]");
    // Seen from team-a, the rule applies and nothing is said.
    let plan = plan_in(&(se.clone() + &hidden), "team-a", AllowAny);
    assert_eq!(
        registered(&plan, "api.example", 80).policy.tls.mode,
        TlsMode::Simple
    );
    assert!(
        !warnings(&plan).contains("asks for TLS"),
        "{}",
        warnings(&plan)
    );

    // From default: Istio's semantics (no TLS), and a warning naming both.
    let plan = plan_in(&(se.clone() + &hidden), "default", AllowAny);
    let t = registered(&plan, "api.example", 80);
    assert_eq!(
        t.policy.tls.mode,
        TlsMode::Disable,
        "the rule does not apply here"
    );
    let w = warnings(&plan);
    assert_line(
        &w,
        "DestinationRule/team-a/tls",
        "spec.exportTo",
        &[
            "asks for TLS (SIMPLE)",
            "\"default\"",
            "ServiceEntry/team-a/api",
        ],
    );

    // A rule with a workload selector is its namespace's only.
    let selected = simple_rule(
        "team-a",
        "tls",
        "api.example",
        "  workloadSelector: {matchLabels: {app: x}}",
    );
    let plan = plan_in(&(se.clone() + &selected), "default", AllowAny);
    assert_line(
        &warnings(&plan),
        "DestinationRule/team-a/tls",
        "spec.exportTo",
        &["workloadSelector"],
    );

    // Not when no visible ServiceEntry declares the host, nor when a
    // visible rule for the host takes its place, nor for a plain-text rule.
    let quiet = [
        service_entry("team-a", "api", "api.example", "  exportTo: [\".\"]") + &hidden,
        se.clone() + &hidden + &simple_rule("default", "mine", "api.example", ""),
        se + &hidden.replace("SIMPLE", "DISABLE"),
    ];
    for yaml in quiet {
        let plan = plan_in(&yaml, "default", AllowAny);
        assert!(
            !warnings(&plan).contains("asks for TLS"),
            "{}\n--- yaml ---\n{yaml}",
            warnings(&plan)
        );
    }
}

#[test]
fn invalid_export_to_lists_are_errors_as_in_istio() {
    let vs = |export: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, \
             namespace: team-a}}\nspec:\n  hosts: [api.example]\n  exportTo: {export}\n  http:\n  \
             - route:\n    - destination: {{host: api.example}}\n"
        )
    };
    let dr = |extra: &str| simple_rule("team-a", "d", "api.example", extra);
    let rows = [
        (
            vs("[\"~\"]"),
            "VirtualService/team-a/r",
            "spec.exportTo[0]",
            "exportTo ~ (none) is not allowed",
        ),
        (
            vs("[\"*\", team-b]"),
            "VirtualService/team-a/r",
            "spec.exportTo",
            "cannot have both public (*) and non-public",
        ),
        (
            vs("[team-a, \".\"]"),
            "VirtualService/team-a/r",
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace team-a",
        ),
        (
            vs("[Team_B]"),
            "VirtualService/team-a/r",
            "spec.exportTo[0]",
            "only .,*, or a valid DNS 1123 label",
        ),
        (
            dr("  exportTo: [team-b, team-b]"),
            "DestinationRule/team-a/d",
            "spec.exportTo[1]",
            "duplicate entries in exportTo for entry team-b",
        ),
        (
            dr("  exportTo: [\"~\"]"),
            "DestinationRule/team-a/d",
            "spec.exportTo[0]",
            "exportTo ~ (none) is not allowed",
        ),
        (
            dr("  workloadSelector: {matchLabels: {app: x}}\n  exportTo: [team-b]"),
            "DestinationRule/team-a/d",
            "spec.exportTo",
            "workload selector cannot have exportTo beyond current namespace",
        ),
        // Hidden from the proxy's namespace, still reported.
        (
            service_entry("team-a", "s", "s.example", "  exportTo: [\"~\", team-b]"),
            "ServiceEntry/team-a/s",
            "spec.exportTo",
            "cannot export service entry to no one (~) and someone",
        ),
    ];
    for (yaml, resource, field, reason) in rows {
        let text = errors_in(&yaml, "default");
        assert_line(&text, resource, field, &[reason]);
    }
}

// === 3. Sidecar egress ===

fn three_namespaces() -> String {
    service_entry("default", "a", "a.example.com", "")
        + &service_entry("other", "b", "b.example.com", "")
        + &service_entry("third", "c", "c.example.com, c2.example.com", "")
}

#[test]
fn sidecar_egress_hosts_decide_which_services_mesh_traffic_sees() {
    let rows: [(&str, &[&str]); 8] = [
        ("- hosts: [\"./*\", \"other/b.example.com\"]", &["a", "b"]),
        ("- hosts: [\"*/*\"]", &["a", "b", "c", "c2"]),
        ("- hosts: [\"*/*\", \"~third/*\"]", &["a", "b"]),
        ("- hosts: [\"*/*\", \"~/c2.example.com\"]", &["a", "b", "c"]),
        ("- hosts: [\"~/*\"]", &[]),
        ("- hosts: [\"third/c.example.com\"]", &["c"]),
        ("- hosts: [\"*/*.example.com\"]", &["a", "b", "c", "c2"]),
        // `./` is the proxy's namespace (default), not `other`'s.
        ("- hosts: [\"other/*\", \"./a.example.com\"]", &["a", "b"]),
    ];
    let mut failures = Vec::new();
    for (egress, visible) in rows {
        let yaml = three_namespaces() + &sidecar("default", "default", egress);
        let plan = plan_in(&yaml, "default", RegistryOnly);
        for name in ["a", "b", "c", "c2"] {
            let host = format!("{name}.example.com");
            let got = outcome(&plan, &host, 80) != "registry_only";
            if got != visible.contains(&name) {
                failures.push(format!("{egress}: {host} visible {got}"));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn egress_hosts_match_service_hosts_as_istio_does() {
    // An exact import does not take a wildcard entry (Istio's SubsetOf).
    let wild = service_entry("default", "wild", "\"*.wild.example.com\"", "")
        .replace("resolution: DNS", "resolution: NONE");
    let yaml = wild.clone() + &sidecar("default", "default", "- hosts: [\"*/x.wild.example.com\"]");
    let plan = plan_in(&yaml, "default", RegistryOnly);
    assert_eq!(outcome(&plan, "x.wild.example.com", 80), "registry_only");
    let yaml = wild + &sidecar("default", "default", "- hosts: [\"*/*.example.com\"]");
    let plan = plan_in(&yaml, "default", RegistryOnly);
    assert_eq!(
        outcome(&plan, "x.wild.example.com", 80),
        "registered:x.wild.example.com"
    );
}

#[test]
fn egress_hosts_scope_mesh_virtual_services_and_their_destinations() {
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: \
              front, namespace: default}\nspec:\n  hosts: [front.example.com]\n  http:\n  - \
              route:\n    - destination: {host: c.example.com}\n";
    let yaml =
        three_namespaces() + vs + &service_entry("default", "front", "front.example.com", "");
    // The VirtualService not imported: front.example.com is itself.
    let hidden = yaml.clone() + &sidecar("default", "default", "- hosts: [\"./a.example.com\"]");
    let plan = plan_in(&hidden, "default", AllowAny);
    assert_eq!(outcome(&plan, "front.example.com", 80), "passthrough");

    // Imported: Istio imports the service it routes to, for the route.
    // Under ALLOW_ANY meshgate does too.
    let imported = yaml.clone() + &sidecar("default", "default", "- hosts: [\"./*\"]");
    let plan = plan_in(&imported, "default", AllowAny);
    assert_eq!(
        outcome(&plan, "front.example.com", 80),
        "registered:c.example.com"
    );
    // Under REGISTRY_ONLY it cannot open c.example.com to this route alone:
    // the route is refused, and validate says so.
    let plan = plan_in(&imported, "default", RegistryOnly);
    assert_eq!(outcome(&plan, "front.example.com", 80), "registry_only");
    assert_eq!(outcome(&plan, "c.example.com", 80), "registry_only");
    assert_line(
        &warnings(&plan),
        "VirtualService/default/front",
        "spec.http[0].route[0].destination.host",
        &[
            "ServiceEntry/third/c",
            "\"third/c.example.com\"",
            "REGISTRY_ONLY",
        ],
    );
}

#[test]
fn egress_does_not_reach_gateway_routes_silently() {
    // Istio's gateways ignore Sidecars; meshgate's gateway routes resolve
    // in the proxy's registry, so a hidden destination is an error.
    let yaml = gateway_server("\"*/app.example.com\"")
        + &gateway_route("gw-ns", "own", "app.example.com", "")
        + &service_entry("gw-ns", "backend", "backend.gw-ns.internal", "")
        + &sidecar("gw-ns", "default", "- hosts: [\"./a.example.com\"]");
    let text = errors_in(&yaml, "gw-ns");
    assert_line(
        &text,
        "VirtualService/gw-ns/own",
        "spec.http[0].route[0].destination.host",
        &[
            "ServiceEntry/gw-ns/backend",
            "\"gw-ns/backend.gw-ns.internal\"",
        ],
    );
    // Imported: fine.
    let ok = yaml.replace("./a.example.com", "./*");
    plan_in(&ok, "gw-ns", RegistryOnly);
    // Bound to a Gateway that is not there: its routes are never served.
    let absent = yaml.replace("gateways: [gw-ns/ingress]", "gateways: [gw-ns/absent]");
    plan_in(&absent, "gw-ns", RegistryOnly);
}

#[test]
fn egress_listeners_meshgate_cannot_honour() {
    // Refused: a per-port listener would widen what the hosts see.
    let errors = [
        (
            "- port: {number: 8080, protocol: HTTP, name: http}\n  hosts: [\"./*\"]",
            "spec.egress[0].port",
            "per-port egress listener is not supported",
        ),
        (
            "- hosts: [\"./*\"]\n- hosts: [\"*/*\"]",
            "spec.egress[1]",
            "only one listener with empty port",
        ),
        ("- hosts: []", "spec.egress[0].hosts", "at least one host"),
        (
            "- hosts: [\"a.example.com\"]",
            "spec.egress[0].hosts[0]",
            "namespace/dnsName",
        ),
        (
            "- hosts: [\"./a\"]",
            "spec.egress[0].hosts[0]",
            "short names",
        ),
        (
            "- hosts: [\"Bad/*\"]",
            "spec.egress[0].hosts[0]",
            "invalid namespace value",
        ),
        (
            "- hosts: [\"./a.*.com\"]",
            "spec.egress[0].hosts[0]",
            "left-most",
        ),
        (
            "- hosts: [\"./*\"]\n  captureMode: SOMETIMES",
            "spec.egress[0].captureMode",
            "DEFAULT, IPTABLES or NONE",
        ),
    ];
    for (egress, field, reason) in errors {
        let text = errors_in(&sidecar("default", "default", egress), "default");
        assert_line(&text, "Sidecar/default/default", field, &[reason]);
    }
    // Warned: they change how traffic reaches meshgate, not what it sees.
    let plan = plan_in(
        &sidecar(
            "default",
            "default",
            "- hosts: [\"./*\"]\n  bind: 127.0.0.2\n  captureMode: NONE",
        ),
        "default",
        AllowAny,
    );
    let w = warnings(&plan);
    assert_line(
        &w,
        "Sidecar/default/default",
        "spec.egress[0].bind",
        &["outboundAddr"],
    );
    assert_line(
        &w,
        "Sidecar/default/default",
        "spec.egress[0].captureMode",
        &["NONE"],
    );
}

#[test]
fn one_sidecar_with_egress_is_in_force() {
    let two = sidecar("default", "default", "- hosts: [\"./*\"]")
        + &sidecar("default", "narrow", "- hosts: [\"./a.example.com\"]");
    let text = errors_in(&two, "default");
    assert_line(
        &text,
        "Sidecar/default/narrow",
        "spec.egress",
        &["Sidecar/default/default declares egress too"],
    );
    // A Sidecar of another namespace still applies (every Sidecar in the
    // configuration does), with a warning; `./` is the proxy's namespace.
    let yaml = three_namespaces() + &sidecar("other", "default", "- hosts: [\"./*\"]");
    let plan = plan_in(&yaml, "default", RegistryOnly);
    assert_eq!(
        outcome(&plan, "a.example.com", 80),
        "registered:a.example.com"
    );
    assert_eq!(outcome(&plan, "b.example.com", 80), "registry_only");
    assert_line(
        &warnings(&plan),
        "Sidecar/other/default",
        "spec.egress",
        &["root namespace", "\"./\" meaning \"default\""],
    );
}
