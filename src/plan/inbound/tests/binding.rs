//! VirtualService binding, server hosts and listeners.

use super::*;

// === 4. VirtualService binding ===

/// `shop/ingress` on 8080, `other-ns/ingress` on 8081, `default/ingress`
/// on 8082, all serving `app.example.com`.
fn three_gateways() -> String {
    let server = |port: u16| {
        format!(
            "- port: {{number: {port}, name: http, protocol: HTTP}}\n  hosts: [app.example.com]"
        )
    };
    docs(&[
        &gateway("shop", "ingress", &server(8080)),
        &gateway("other-ns", "ingress", &server(8081)),
        &gateway("default", "ingress", &server(8082)),
    ])
}

const TO_APP: &str = "http:\n- route:\n  - destination: {host: app.internal}";

#[test]
fn virtual_service_gateway_references() {
    // (gateways, gateways bound, gateway named in a "not in the configuration" warning)
    let rows: &[(&str, &[&str], Option<&str>)] = &[
        ("[ingress]", &["shop/ingress"], None),
        ("[other-ns/ingress]", &["other-ns/ingress"], None),
        (
            "[shop/ingress, other-ns/ingress]",
            &["shop/ingress", "other-ns/ingress"],
            None,
        ),
        ("[default/ingress]", &["default/ingress"], None),
        // Istio's resolveGatewayName: `./name` is the VirtualService's namespace.
        ("[./ingress]", &["shop/ingress"], None),
        // Istio's resolveGatewayName: legacy `name.ns.svc.cluster.local`.
        (
            "[ingress.other-ns.svc.cluster.local]",
            &["other-ns/ingress"],
            None,
        ),
        ("[mesh]", &[], None),
        ("[]", &[], None),
        ("[missing]", &[], Some("missing")),
        (
            "[ingress, other-ns/missing]",
            &["shop/ingress"],
            Some("other-ns/missing"),
        ),
    ];
    let mut failures = Vec::new();
    for (gateways, want, warned) in rows {
        let yaml = docs(&[
            &three_gateways(),
            &virtual_service("shop", "app", "[app.example.com]", gateways, TO_APP),
        ]);
        let plan = compiled(&yaml);
        let got: Vec<&str> = plan
            .inbound
            .listeners
            .iter()
            .flat_map(|l| &l.servers)
            .filter(|s| bound(s).iter().any(|r| r == "VirtualService/shop/app"))
            .map(|s| s.gateway.as_str())
            .collect();
        if got != *want {
            failures.push(format!(
                "gateways: {gateways}: bound to {got:?}, want {want:?}"
            ));
        }
        let missing: Vec<&String> = plan
            .warnings
            .iter()
            .filter(|w| w.contains("is not in the configuration"))
            .collect();
        match warned {
            Some(name) => {
                let quoted = format!("gateway \"{name}\"");
                if !missing.iter().any(|w| {
                    w.contains(&quoted)
                        && w.contains("VirtualService/shop/app: spec.gateways")
                        && w.starts_with(FILE)
                }) {
                    failures.push(format!(
                        "gateways: {gateways}: no warning naming {quoted}: {:?}",
                        plan.warnings
                    ));
                }
            }
            None if !missing.is_empty() => {
                failures.push(format!(
                    "gateways: {gateways}: unexpected warnings {missing:?}"
                ));
            }
            None => {}
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn virtual_service_binds_to_the_servers_its_hosts_intersect() {
    let gw = gateway(
        "edge",
        "ingress",
        "- port: {number: 80, name: http-a, protocol: HTTP}\n  hosts: [a.example.com]\n- port: \
         {number: 80, name: http-b, protocol: HTTP}\n  hosts: [b.example.com]\n- port: {number: \
         81, name: http-wild, protocol: HTTP}\n  hosts: [\"*.example.com\"]\n- port: {number: \
         82, name: http-any, protocol: HTTP}\n  hosts: [\"*\"]",
    );
    // (VirtualService hosts, servers bound by index)
    let rows: &[(&str, &[usize])] = &[
        ("[a.example.com]", &[0, 2, 3]),
        ("[b.example.com]", &[1, 2, 3]),
        ("[c.example.com]", &[2, 3]),
        ("[c.other.org]", &[3]),
        ("[\"*.example.com\"]", &[0, 1, 2, 3]),
        ("[\"*.a.example.com\"]", &[2, 3]),
        ("[\"*\"]", &[0, 1, 2, 3]),
        ("[c.other.org, b.example.com]", &[1, 2, 3]),
    ];
    let mut failures = Vec::new();
    for (hosts, want) in rows {
        let yaml = docs(&[
            &gw,
            &virtual_service("edge", "app", hosts, "[ingress]", TO_APP),
        ]);
        let plan = compiled(&yaml);
        let got: Vec<usize> = plan
            .inbound
            .listeners
            .iter()
            .flat_map(|l| &l.servers)
            .filter(|s| !s.routes.is_empty())
            .map(|s| {
                let i = s.origin.rsplit("spec.servers[").next().unwrap_or_default();
                i.trim_end_matches(']').parse().unwrap_or(usize::MAX)
            })
            .collect();
        if got != *want {
            failures.push(format!(
                "hosts {hosts}: bound to servers {got:?}, want {want:?}"
            ));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn per_match_gateways_choose_the_routes_of_each_binding() {
    let vs = virtual_service(
        "edge",
        "app",
        "[app.example.com]",
        "[ingress, mesh]",
        r#"http:
- name: mesh-only
  match:
  - gateways: [mesh]
    port: 80
  route:
  - destination: {host: app-v1.internal}
- name: gateway-only
  match:
  - gateways: [ingress]
    uri: {prefix: /api}
  route:
  - destination: {host: app-v2.internal}
- name: split
  match:
  - gateways: [mesh]
    port: 81
  - gateways: [ingress]
    uri: {prefix: /split}
  route:
  - destination: {host: app-v3.internal}
- name: everywhere
  route:
  - destination: {host: app-v4.internal}
"#,
    );
    let gw = gateway(
        "edge",
        "ingress",
        "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [app.example.com]",
    );
    let plan = compiled(&docs(&[&gw, &vs]));
    let s = only_server(&plan);
    assert_eq!(bound(s), ["VirtualService/edge/app"]);
    let names: Vec<&str> = s.routes[0]
        .http
        .iter()
        .map(|r| r.name.as_deref().unwrap_or("?"))
        .collect();
    assert_eq!(names, ["gateway-only", "split", "everywhere"]);
    // `split` keeps only its gateway condition.
    let split = &s.routes[0].http[1];
    assert_eq!(split.matches.len(), 1, "{split:#?}");
    assert!(
        matches!(&split.matches[0].uri, Some(StrMatch::Prefix(p)) if p == "/split"),
        "{split:#?}"
    );

    // The mesh side: the same VirtualService, with the mesh conditions.
    let mesh: Vec<_> = plan
        .outbound
        .routes
        .iter()
        .filter(|r| r.resource.ends_with("VirtualService/edge/app"))
        .collect();
    assert_eq!(mesh.len(), 1, "{:#?}", plan.outbound.routes);
    let got: Vec<(Vec<u16>, &str)> = mesh[0]
        .http
        .iter()
        .map(|r| {
            (
                r.matches.iter().filter_map(|m| m.port).collect(),
                r.destinations[0].host.as_str(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (vec![80], "app-v1.internal"),
            (vec![81], "app-v3.internal"),
            (vec![], "app-v4.internal"),
        ]
    );
}

#[test]
fn per_match_gateways_apply_to_tls_routes() {
    let gw = gateway(
        "edge",
        "ingress",
        "- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [\"*.example.com\"]\n  tls: \
         {mode: PASSTHROUGH}",
    );
    let vs = virtual_service(
        "edge",
        "sni",
        "[\"*.example.com\"]",
        "[ingress]",
        r#"tls:
- match:
  - sniHosts: [a.example.com]
    gateways: [other]
  route:
  - destination: {host: a.internal}
- match:
  - sniHosts: [b.example.com]
  route:
  - destination: {host: b.internal, port: {number: 8443}}
"#,
    );
    let gw_other = gateway(
        "edge",
        "other",
        "- port: {number: 8443, name: tls, protocol: TLS}\n  hosts: [\"*.example.com\"]\n  \
         tls: {mode: PASSTHROUGH}",
    );
    let plan = compiled(&docs(&[&gw, &gw_other, &vs]));
    let l443 = &plan.inbound.listeners[0];
    assert_eq!(l443.port, 443);
    let routes = &l443.servers[0].routes;
    assert_eq!(routes.len(), 1, "{routes:#?}");
    let got: Vec<(Vec<String>, &str)> = routes[0]
        .tls
        .iter()
        .map(|r| (host_strings(&r.sni_hosts), r.destinations[0].host.as_str()))
        .collect();
    assert_eq!(got, [(strings(&["b.example.com"]), "b.internal")]);
    // The VirtualService does not list `other`, so the match naming it
    // binds nothing there.
    assert!(plan.inbound.listeners[1].servers[0].routes.is_empty());
}

// === 5. server hosts ===

#[test]
fn server_hosts_drop_the_namespace_part() {
    let rows: &[(&str, &str)] = &[
        ("./a.example.com", "a.example.com"),
        ("*/b.example.com", "b.example.com"),
        ("shop/c.example.com", "c.example.com"),
        ("*/*.d.example.com", "*.d.example.com"),
        ("E.Example.COM.", "e.example.com"),
        ("*", "*"),
        ("*/*", "*"),
    ];
    let hosts: Vec<String> = rows.iter().map(|(h, _)| format!("\"{h}\"")).collect();
    let yaml = gateway(
        "edge",
        "ingress",
        &format!(
            "- port: {{number: 80, name: http, protocol: HTTP}}\n  hosts: [{}]",
            hosts.join(", ")
        ),
    );
    let plan = compiled(&yaml);
    let s = only_server(&plan);
    let want: Vec<&str> = rows.iter().map(|(_, h)| *h).collect();
    assert_eq!(host_strings(&s.hosts), want);
    assert_eq!(s.hosts[5], HostPattern::Any);
    assert_eq!(s.hosts[6], HostPattern::Any);
    assert_eq!(s.hosts[3], HostPattern::Wildcard(".d.example.com".into()));
    assert!(s.serves("a.example.com") && s.serves("anything.test"));
}

// === 6. listeners ===

#[test]
fn servers_are_grouped_into_listeners_by_port_and_bind() {
    struct Row {
        case: &'static str,
        servers: &'static str,
        /// (port, bind, tls, server count)
        want: Vec<(u16, Option<&'static str>, bool, usize)>,
    }
    let rows = [
        Row {
            case: "two plain HTTP servers on port 80",
            servers: "- port: {number: 80, name: http-a, protocol: HTTP}\n  hosts: \
                      [a.example.com]\n- port: {number: 80, name: http-b, protocol: HTTP}\n  \
                      hosts: [b.example.com]",
            want: vec![(80, None, false, 2)],
        },
        Row {
            case: "HTTPS and TLS on one port",
            servers: "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: \
                      [a.example.com]\n  tls: {mode: SIMPLE, credentialName: a}\n- port: \
                      {number: 443, name: tls, protocol: TLS}\n  hosts: [b.example.com]\n  tls: \
                      {mode: PASSTHROUGH}",
            want: vec![(443, None, true, 2)],
        },
        Row {
            case: "a bound server gets its own listener",
            servers: "- port: {number: 80, name: http-a, protocol: HTTP}\n  hosts: \
                      [a.example.com]\n- port: {number: 80, name: http-b, protocol: HTTP}\n  \
                      bind: 127.0.0.2\n  hosts: [b.example.com]",
            want: vec![(80, None, false, 1), (80, Some("127.0.0.2"), false, 1)],
        },
        Row {
            case: "TLS and plain-text on one port with different binds",
            servers: "- port: {number: 8443, name: https, protocol: HTTPS}\n  bind: \
                      127.0.0.2\n  hosts: [a.example.com]\n  tls: {mode: SIMPLE, \
                      credentialName: a}\n- port: {number: 8443, name: http, protocol: HTTP}\n  \
                      bind: 127.0.0.3\n  hosts: [b.example.com]",
            want: vec![
                (8443, Some("127.0.0.2"), true, 1),
                (8443, Some("127.0.0.3"), false, 1),
            ],
        },
        Row {
            case: "listeners in port order",
            servers: "- port: {number: 9000, name: tcp, protocol: TCP}\n  hosts: [\"*\"]\n- \
                      port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"*\"]\n- port: \
                      {number: 8080, name: grpc, protocol: GRPC}\n  hosts: [\"*\"]",
            want: vec![
                (80, None, false, 1),
                (8080, None, false, 1),
                (9000, None, false, 1),
            ],
        },
    ];
    let mut failures = Vec::new();
    for row in rows {
        let plan = compiled(&gateway("edge", "ingress", row.servers));
        let got: Vec<(u16, Option<&str>, bool, usize)> = plan
            .inbound
            .listeners
            .iter()
            .map(|l| (l.port, l.bind.as_deref(), l.tls, l.servers.len()))
            .collect();
        if got != row.want {
            failures.push(format!("{}: got {got:?}, want {:?}", row.case, row.want));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn the_same_host_twice_on_a_port_warns() {
    let plan = compiled(&gateway(
        "edge",
        "ingress",
        "- port: {number: 80, name: http-a, protocol: HTTP}\n  hosts: [a.example.com]\n- port: \
         {number: 80, name: http-b, protocol: HTTP}\n  hosts: [a.example.com]",
    ));
    assert!(
        has_warning(
            &plan,
            &[
                "Gateway/edge/ingress: spec.servers[1]",
                "a.example.com",
                "also served by",
                "spec.servers[0]",
            ]
        ),
        "{:#?}",
        plan.warnings
    );
}
