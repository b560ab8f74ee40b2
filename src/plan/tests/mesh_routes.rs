//! Mesh VirtualServices as a sidecar applies them to the app's outbound
//! traffic: HTTP routes matched on the whole request (the gateway routes'
//! matching), fall-through and Envoy's 404 when nothing matches, rewrites
//! and header operations, `tls` routes by SNI and `tcp` routes by port and
//! subnet for tunnels, and ServiceEntry `addresses`.

use std::net::IpAddr;

use http::{HeaderMap, HeaderValue};

use super::*;
use crate::plan::outbound::{MeshRouting, RequestFacts};
use crate::plan::route::RequestView;

// === helpers ===

/// ServiceEntries for the hosts the routes below use: api.example.com and
/// four backends on 80, 443 and 5432, single.internal on 9000 alone.
const REGISTRY: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
  - {number: 5432, name: pg, protocol: TCP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backends}
spec:
  hosts: [v1.internal, v2.internal, other.internal, firewall.internal]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: tls, protocol: TLS}
  - {number: 5432, name: pg, protocol: TCP}
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: single}
spec:
  hosts: [single.internal]
  ports: [{number: 9000, name: http, protocol: HTTP}]
  resolution: DNS
"#;

/// `REGISTRY` plus a mesh VirtualService for api.example.com whose spec
/// continues with `rest` (YAML at the `spec` level).
fn vs(rest: &str) -> String {
    format!(
        "{REGISTRY}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: \
         api, namespace: shop}}\nspec:\n  hosts: [api.example.com]\n{}",
        indent(rest, 2)
    )
}

/// A request to api.example.com; GET / on port 80 unless changed.
struct Req {
    method: &'static str,
    scheme: &'static str,
    authority: &'static str,
    path: &'static str,
    headers: HeaderMap,
    port: u16,
}

fn get(path: &'static str) -> Req {
    Req {
        method: "GET",
        scheme: "http",
        authority: "api.example.com",
        path,
        headers: HeaderMap::new(),
        port: 80,
    }
}

impl Req {
    fn header(mut self, name: &'static str, value: &'static str) -> Req {
        self.headers.append(name, HeaderValue::from_static(value));
        self
    }

    fn facts(&self) -> RequestFacts<'_> {
        RequestFacts {
            host: "api.example.com",
            request: RequestView {
                method: self.method,
                scheme: self.scheme,
                authority: self.authority,
                path_and_query: self.path,
                headers: &self.headers,
                port: self.port,
            },
        }
    }
}

/// Where `req` goes: the destination host and port, or what else happens.
fn dest(plan: &Plan, req: &Req) -> String {
    describe(plan.outbound.route_request(&req.facts(), 0))
}

fn describe(d: Decision) -> String {
    match d {
        Decision::Registered(t) => format!("{}:{}", t.host, t.port.number),
        Decision::Passthrough { host, port } => format!("passthrough {host}:{port}"),
        Decision::Refused { .. } => "refused".into(),
        Decision::NoRoute { .. } => "404".into(),
    }
}

/// (field, reason) of every error compiling `yaml`.
fn errors(yaml: &str) -> Vec<(String, String)> {
    compile_errors(FILE, yaml)
        .0
        .into_iter()
        .map(|e| (e.field.unwrap_or_default(), e.reason))
        .collect()
}

/// Asserts that compiling `yaml` reports an error at `field` whose reason
/// contains `reason`.
fn assert_error(yaml: &str, field: &str, reason: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|(f, r)| f == field && r.contains(reason)),
        "want {field}: {reason}\ngot {errs:#?}\n--- yaml ---\n{yaml}"
    );
}

// === HTTP matches ===

#[test]
fn every_match_kind_selects_its_route() {
    let plan = compiled(&vs(r#"http:
- match: [{uri: {exact: /exact}}]
  route: [{destination: {host: v1.internal}}]
- match: [{uri: {prefix: /v1/}}]
  route: [{destination: {host: v2.internal}}]
- match: [{uri: {regex: "/item/[0-9]+"}}]
  route: [{destination: {host: other.internal}}]
- match: [{uri: {prefix: /CASE}, ignoreUriCase: true}]
  route: [{destination: {host: firewall.internal}}]
- match: [{headers: {x-canary: {exact: "yes"}}}]
  route: [{destination: {host: v1.internal, port: {number: 443}}}]
- match: [{headers: {x-present: {}}}]
  route: [{destination: {host: v2.internal, port: {number: 443}}}]
- match: [{method: {exact: POST}}]
  route: [{destination: {host: other.internal, port: {number: 443}}}]
- match: [{queryParams: {debug: {exact: "1"}}}]
  route: [{destination: {host: firewall.internal, port: {number: 443}}}]
- match: [{authority: {prefix: api.example.com:8}}]
  route: [{destination: {host: v1.internal, port: {number: 5432}}}]
- match: [{scheme: {exact: https}}]
  route: [{destination: {host: v2.internal, port: {number: 5432}}}]
- match: [{port: 8080}]
  route: [{destination: {host: other.internal, port: {number: 5432}}}]
- match: [{withoutHeaders: {x-internal: {}}}]
  route: [{destination: {host: single.internal}}]
- route: [{destination: {host: firewall.internal, port: {number: 5432}}}]
"#));
    let mut failures = Vec::new();
    let rows: Vec<(&str, Req, &str)> = vec![
        ("uri exact", get("/exact"), "v1.internal:80"),
        // exact is tested on the path without the query
        ("uri exact, query", get("/exact?x=1"), "v1.internal:80"),
        ("uri prefix", get("/v1/users"), "v2.internal:80"),
        ("uri regex", get("/item/42"), "other.internal:80"),
        (
            "uri regex is a full match",
            get("/item/42/x"),
            "single.internal:9000",
        ),
        ("ignoreUriCase", get("/case/x"), "firewall.internal:80"),
        (
            "header exact",
            get("/").header("x-canary", "yes"),
            "v1.internal:443",
        ),
        (
            "header present",
            get("/").header("x-present", "anything"),
            "v2.internal:443",
        ),
        (
            "method",
            Req {
                method: "POST",
                ..get("/")
            },
            "other.internal:443",
        ),
        ("query param", get("/?debug=1"), "firewall.internal:443"),
        (
            "authority",
            Req {
                authority: "api.example.com:8081",
                ..get("/")
            },
            "v1.internal:5432",
        ),
        (
            "scheme",
            Req {
                scheme: "https",
                ..get("/")
            },
            "v2.internal:5432",
        ),
        (
            "port",
            Req {
                port: 8080,
                ..get("/")
            },
            "other.internal:5432",
        ),
        ("withoutHeaders absent", get("/"), "single.internal:9000"),
        (
            "withoutHeaders present: falls through to the catch-all",
            get("/").header("x-internal", "1"),
            "firewall.internal:5432",
        ),
        (
            "header value differs: falls through",
            get("/").header("x-canary", "no").header("x-internal", "1"),
            "firewall.internal:5432",
        ),
    ];
    for (what, req, want) in rows {
        let got = dest(&plan, &req);
        if got != want {
            failures.push(format!("{what}: {} → {got}, want {want}", req.path));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn no_matching_route_is_404_and_routes_for_other_ports_leave_the_registry() {
    let plan = compiled(&vs(r#"http:
- match: [{uri: {prefix: /v1/}, port: 80}]
  route: [{destination: {host: v1.internal}}]
- match: [{headers: {x-env: {exact: test}}, port: 80}]
  route: [{destination: {host: v2.internal}}]
"#));
    assert_eq!(dest(&plan, &get("/v1/a")), "v1.internal:80");
    assert_eq!(
        dest(&plan, &get("/x").header("x-env", "test")),
        "v2.internal:80"
    );
    // Envoy: a virtual host with no matching route answers 404 (NR).
    match plan.outbound.route_request(&get("/v2/a").facts(), 0) {
        Decision::NoRoute { route } => {
            assert!(route.contains("VirtualService/shop/api"), "{route}")
        }
        other => panic!("want NoRoute, got {other:?}"),
    }
    // Port 8080: the VirtualService has no route there; Istio builds no
    // virtual host from it, so the registry decides.
    let other_port = Req {
        port: 8080,
        ..get("/v2/a")
    };
    assert_eq!(dest(&plan, &other_port), "passthrough api.example.com:8080");
    // Without a request (a CONNECT), no route can match: 404 too.
    assert_eq!(
        describe(plan.outbound.route("api.example.com", 80, 0)),
        "404"
    );
}

#[test]
fn the_first_matching_route_wins_and_path_less_routing_takes_port_only_routes() {
    let plan = compiled(&vs(r#"http:
- match: [{uri: {prefix: /v1/}}]
  route: [{destination: {host: v1.internal}}]
- match: [{port: 80}]
  route: [{destination: {host: v2.internal}}]
- route: [{destination: {host: other.internal}}]
"#));
    assert_eq!(dest(&plan, &get("/v1/x")), "v1.internal:80");
    assert_eq!(dest(&plan, &get("/v2/x")), "v2.internal:80");
    assert_eq!(
        dest(
            &plan,
            &Req {
                port: 443,
                ..get("/v1/x")
            }
        ),
        "v1.internal:443"
    );
    assert_eq!(
        dest(
            &plan,
            &Req {
                port: 443,
                ..get("/v2/x")
            }
        ),
        "other.internal:443"
    );
    // `route(host, port)` knows no request: the uri route cannot match,
    // the port-only one can.
    assert_eq!(
        describe(plan.outbound.route("api.example.com", 80, 0)),
        "v2.internal:80"
    );
    assert_eq!(
        describe(plan.outbound.route("API.example.com.", 443, 0)),
        "other.internal:443"
    );
}

#[test]
fn matches_for_gateways_are_not_the_meshs() {
    let plan = compiled(&vs(r#"gateways: [mesh, edge/ingress]
http:
- match: [{gateways: [edge/ingress], uri: {prefix: /}}]
  route: [{destination: {host: v1.internal}}]
- match: [{gateways: [mesh], uri: {prefix: /a}}, {gateways: [edge/ingress], uri: {prefix: /b}}]
  route: [{destination: {host: v2.internal}}]
"#));
    assert_eq!(dest(&plan, &get("/a")), "v2.internal:80");
    assert_eq!(dest(&plan, &get("/b")), "404");
}

#[test]
fn a_destination_without_a_port_takes_the_single_service_port_or_the_requests() {
    let plan = compiled(&vs(r#"http:
- match: [{uri: {prefix: /single}}]
  route: [{destination: {host: single.internal}}]
- route: [{destination: {host: v1.internal}}]
"#));
    assert_eq!(dest(&plan, &get("/single")), "single.internal:9000");
    // v1.internal declares three ports: the request's (Istio's listener
    // port), not an error as on a gateway.
    assert_eq!(
        dest(
            &plan,
            &Req {
                port: 5432,
                ..get("/")
            }
        ),
        "v1.internal:5432"
    );
}

#[test]
fn weights_pick_among_destinations_and_the_choice_has_its_own_key() {
    let plan = compiled(&vs(r#"http:
- route:
  - {destination: {host: v1.internal}, weight: 25}
  - {destination: {host: v2.internal}, weight: 75}
"#));
    let req = get("/");
    let hosts: Vec<String> = (0..4)
        .map(|pick| describe(plan.outbound.route_request(&req.facts(), pick * 25)))
        .collect();
    assert_eq!(
        hosts,
        [
            "v1.internal:80",
            "v2.internal:80",
            "v2.internal:80",
            "v2.internal:80"
        ]
    );
    let (a, b) = (
        plan.outbound.select(&req.facts(), 0),
        plan.outbound.select(&req.facts(), 50),
    );
    assert!(a.key() != 0 && b.key() != 0 && a.key() != b.key());
    match plan.outbound.route_request(&req.facts(), 0) {
        Decision::Registered(t) => assert!(t.weighted && t.route.is_some(), "{t:?}"),
        other => panic!("{other:?}"),
    }
}

// === rewrites, headers, timeouts ===

#[test]
fn rewrites_and_header_operations_are_compiled_as_on_gateways() {
    let plan = compiled(&vs(r#"http:
- match: [{uri: {prefix: /old/}}]
  rewrite: {uri: /new/, authority: v1.internal}
  headers:
    request: {set: {x-route: old}, remove: [x-secret]}
    response: {add: {x-served-by: mesh}}
  route:
  - destination: {host: v1.internal}
    headers: {request: {set: {x-dest: v1}}}
  timeout: 0s
- route: [{destination: {host: v2.internal}}]
  timeout: 3s
"#));
    let req = get("/old/page?q=1");
    let routing = plan.outbound.select(&req.facts(), 0);
    let (route, d, matched) = routing.http().expect("an HTTP route");
    let rw = route.rewrite.as_ref().unwrap();
    assert_eq!(
        rw.rewrite_path(req.path, &matched).as_deref(),
        Some("/new/page?q=1")
    );
    assert_eq!(rw.authority.as_deref(), Some("v1.internal"));
    assert_eq!(
        route.request_headers.set,
        [(String::from("x-route"), String::from("old"))]
    );
    assert_eq!(route.request_headers.remove, ["x-secret"]);
    assert_eq!(
        route.response_headers.add,
        [(String::from("x-served-by"), String::from("mesh"))]
    );
    assert_eq!(
        d.request_headers.set,
        [(String::from("x-dest"), String::from("v1"))]
    );
    match plan.outbound.decide("api.example.com", 80, &routing) {
        Decision::Registered(t) => {
            // The upstream sees the rewritten authority: SNI and the names
            // checked follow it.
            assert_eq!(t.request_host, "v1.internal");
            // Istio: 0s disables the route timeout.
            assert_eq!(t.timeout, None);
        }
        other => panic!("{other:?}"),
    }
    match plan.outbound.route_request(&get("/").facts(), 0) {
        Decision::Registered(t) => {
            assert_eq!(t.request_host, "api.example.com");
            assert_eq!(t.timeout, Some(Duration::from_secs(3)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn what_mesh_routes_cannot_do_is_refused() {
    for (rest, field, reason) in [
        (
            "http:\n- redirect: {uri: /x}\n",
            "spec.http[0].redirect",
            "not supported for mesh routes yet",
        ),
        (
            "http:\n- directResponse: {status: 503}\n",
            "spec.http[0].directResponse",
            "not supported for mesh routes yet",
        ),
        (
            "http:\n- fault: {abort: {httpStatus: 500, percentage: {value: 1}}}\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.http[0].fault",
            "not supported for mesh routes yet",
        ),
        (
            "http:\n- match: [{uri: {prefix: /}}]\n",
            "spec.http[0].route",
            "at least one destination is required",
        ),
        (
            "http:\n- match: [{sourceLabels: {app: web}}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.http[0].match[0].sourceLabels",
            "not supported",
        ),
        (
            "http:\n- match: [{uri: {regex: \"(\"}}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.http[0].match[0].uri.regex",
            "not a valid RE2-style regex",
        ),
        (
            "http:\n- route: [{destination: {host: \"*.internal\"}}]\n",
            "spec.http[0].route[0].destination.host",
            "not a wildcard",
        ),
        (
            "http:\n- mirror: {host: v2.internal}\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.http[0].mirror",
            "not supported yet",
        ),
    ] {
        assert_error(&vs(rest), field, reason);
    }
}

// === TLS and TCP routes ===

const TLS_ROUTES: &str = r#"tls:
- match:
  - sniHosts: [api.example.com]
    destinationSubnets: [10.0.0.0/8]
  route: [{destination: {host: v2.internal}}]
- match:
  - {sniHosts: [api.example.com], port: 443}
  route: [{destination: {host: firewall.internal}}]
tcp:
- match: [{port: 5432, destinationSubnets: [192.168.0.0/16]}]
  route: [{destination: {host: v1.internal}}]
- match: [{port: 5432}]
  route: [{destination: {host: other.internal, port: {number: 5432}}}]
"#;

fn l4(plan: &Plan, routing: MeshRouting<'_>, port: u16) -> String {
    match routing {
        MeshRouting::Unrouted => "unrouted".into(),
        MeshRouting::NoMatch(_) => "no match".into(),
        r => describe(plan.outbound.decide("api.example.com", port, &r)),
    }
}

#[test]
fn tls_routes_steer_a_client_hello_by_sni_port_and_subnet() {
    let plan = compiled(&vs(TLS_ROUTES));
    let o = &plan.outbound;
    let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
    let host = "api.example.com";
    let rows = [
        // SNI selects the route; the tunnel goes to its destination, on
        // the port the app addressed (v2/firewall declare several).
        (Some(host), 443, None, "firewall.internal:443"),
        (Some("API.example.com"), 443, None, "firewall.internal:443"),
        // The original destination in destinationSubnets: the first route.
        (Some(host), 443, ip("10.1.2.3"), "v2.internal:443"),
        (Some(host), 443, ip("11.1.2.3"), "firewall.internal:443"),
        // TLS routes for the port and no SNI (or another): refused, as
        // Envoy finds no filter chain.
        (None, 443, None, "no match"),
        (Some("other.example.com"), 443, None, "no match"),
        // Port 8443: only the subnet route applies there.
        // (v2.internal does not declare 8443: plain passthrough.)
        (
            Some(host),
            8443,
            ip("10.9.9.9"),
            "passthrough v2.internal:8443",
        ),
        (Some(host), 8443, None, "no match"),
    ];
    let mut failures = Vec::new();
    for (sni, port, dest_ip, want) in rows {
        let got = l4(&plan, o.select_tls(host, port, sni, dest_ip, 0), port);
        if got != want {
            failures.push(format!("{sni:?}:{port} {dest_ip:?} → {got}, want {want}"));
        }
    }
    assert_no_failures(&failures);
    // No VirtualService for the host: the registry decides.
    assert_eq!(
        l4(
            &plan,
            o.select_tls("v1.internal", 443, Some("v1.internal"), None, 0),
            443
        ),
        "unrouted"
    );
    // Tunnels wait for their ClientHello where TLS routes apply.
    assert!(o.routes_by_sni(host, 443).is_some());
    assert!(o.routes_by_sni(host, 5432).is_some());
    assert!(o.routes_by_sni("v1.internal", 443).is_none());
}

#[test]
fn tcp_routes_steer_other_bytes_by_port_and_subnet() {
    let plan = compiled(&vs(TLS_ROUTES));
    let o = &plan.outbound;
    let host = "api.example.com";
    let ip = "192.168.1.1".parse::<IpAddr>().ok();
    assert_eq!(
        l4(&plan, o.select_tcp(host, 5432, ip, 0), 5432),
        "v1.internal:5432"
    );
    assert_eq!(
        l4(&plan, o.select_tcp(host, 5432, None, 0), 5432),
        "other.internal:5432"
    );
    // No TCP route for the port: Istio's default chain, the registry.
    assert_eq!(l4(&plan, o.select_tcp(host, 443, None, 0), 443), "unrouted");
    // A TCP route without a match takes everything; without TLS routes a
    // tunnel is routed at once (a server that speaks first is not held up).
    let plan = compiled(&vs(
        "tcp:\n- route: [{destination: {host: v2.internal}}]\nhttp:\n- route: [{destination: {host: v1.internal}}]\n",
    ));
    assert_eq!(
        l4(&plan, plan.outbound.select_tcp(host, 7000, None, 0), 7000),
        "passthrough v2.internal:7000"
    );
    assert!(plan.outbound.routes_by_sni(host, 7000).is_none());
    assert_eq!(
        l4(&plan, plan.outbound.select_tunnel(host, 80, None, 0), 80),
        "v2.internal:80",
        "a tunnel takes the TCP route before the HTTP ones"
    );
    // HTTP requests keep to the HTTP routes.
    assert_eq!(dest(&plan, &get("/")), "v1.internal:80");
}

#[test]
fn tls_and_tcp_route_fields_meshgate_cannot_honour_are_errors() {
    for (rest, field, reason) in [
        (
            "tls:\n- route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match",
            "at least one match",
        ),
        (
            "tls:\n- match: [{port: 443}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match[0].sniHosts",
            "at least one SNI host",
        ),
        (
            "tls:\n- match: [{sniHosts: [www.example.org]}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match[0].sniHosts[0]",
            "not within any of the VirtualService's hosts",
        ),
        (
            "tls:\n- match: [{sniHosts: [api.example.com], destinationSubnets: [10.0.0.0/33]}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match[0].destinationSubnets[0]",
            "not a valid CIDR block",
        ),
        (
            "tls:\n- match: [{sniHosts: [api.example.com], sourceLabels: {app: web}}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match[0].sourceLabels",
            "not supported",
        ),
        (
            "tls:\n- match: [{sniHosts: [api.example.com], sniHost: x}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tls[0].match[0].sniHost",
            "unknown field",
        ),
        (
            "tls:\n- match: [{sniHosts: [api.example.com]}]\n",
            "spec.tls[0].route",
            "at least one destination",
        ),
        (
            "tls:\n- match: [{sniHosts: [api.example.com]}]\n  route: [{destination: {host: v1.internal}, headers: {request: {set: {a: b}}}}]\n",
            "spec.tls[0].route[0].headers",
            "only HTTP routes change headers",
        ),
        (
            "tcp:\n- match: [{port: 5432, sourceNamespace: web}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tcp[0].match[0].sourceNamespace",
            "not supported",
        ),
        (
            "tcp:\n- match: [{destinationSubnets: [not-an-ip]}]\n  route: [{destination: {host: v1.internal}}]\n",
            "spec.tcp[0].match[0].destinationSubnets[0]",
            "not a valid IP address",
        ),
        (
            "tcp:\n- route:\n  - {destination: {host: v1.internal}}\n  - {destination: {host: v2.internal}}\n",
            "spec.tcp[0].route",
            "total destination weight = 0",
        ),
    ] {
        assert_error(&vs(rest), field, reason);
    }
    // The tls routes of a wildcard VirtualService may name any host under it.
    let yaml = vs("tls:\n- match: [{sniHosts: [api.example.com]}]\n  route: [{destination: {host: v1.internal}}]\n")
        .replace("hosts: [api.example.com]\n  tls", "hosts: [\"*.example.com\"]\n  tls");
    compiled(&yaml);
}

#[test]
fn tls_and_tcp_routes_are_no_longer_only_warned_about() {
    let plan = compiled(&vs(TLS_ROUTES));
    assert!(
        plan.warnings.iter().all(|w| !w.contains("not served yet")),
        "{:?}",
        plan.warnings
    );
    let mesh = &plan.outbound.routes[0];
    assert_eq!((mesh.tls.len(), mesh.tcp.len()), (2, 2));
    assert_eq!(
        mesh.tls[0].matches[0].destination_subnets[0].to_string(),
        "10.0.0.0/8"
    );
}

// === ServiceEntry addresses ===

fn se(name: &str, addresses: &str, resolution: &str, port: u16) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\n\
         spec:\n  hosts: [{name}.example.com]\n  addresses: {addresses}\n  ports: [{{number: \
         {port}, name: tcp, protocol: TCP}}]\n  resolution: {resolution}\n"
    )
}

#[test]
fn service_entry_addresses_are_typed_networks() {
    let plan = compiled(&se(
        "db",
        "[10.1.2.3, 10.0.0.0/8, \"2001:db8::/32\", \"2001:db8::1\", 192.168.7.9/24]",
        "NONE",
        5432,
    ));
    let got: Vec<String> = plan.outbound.services[0]
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    // Bits past the prefix are masked, as Envoy's CidrRange does.
    assert_eq!(
        got,
        [
            "10.1.2.3",
            "10.0.0.0/8",
            "2001:db8::/32",
            "2001:db8::1",
            "192.168.7.0/24"
        ]
    );
}

#[test]
fn invalid_addresses_are_errors_naming_the_field() {
    for (addresses, resolution, field, reason) in [
        (
            "[10.0.0.256]",
            "NONE",
            "spec.addresses[0]",
            "not a valid IP address",
        ),
        (
            "[10.0.0.1, db.internal]",
            "NONE",
            "spec.addresses[1]",
            "not a valid IP address",
        ),
        (
            "[10.0.0.0/33]",
            "NONE",
            "spec.addresses[0]",
            "not a valid CIDR block",
        ),
        (
            "[\"10.0.0.0/08\"]",
            "STATIC",
            "spec.addresses[0]",
            "not a valid CIDR block",
        ),
        (
            "[\"10.0.0.0/8/8\"]",
            "NONE",
            "spec.addresses[0]",
            "not a valid IP address",
        ),
        (
            "[\"::/129\"]",
            "NONE",
            "spec.addresses[0]",
            "not a valid CIDR block",
        ),
        (
            "[\"fe80::1%eth0\"]",
            "NONE",
            "spec.addresses[0]",
            "not a valid IP address",
        ),
        (
            "[10.0.0.1, 10.2.0.0/16]",
            "DNS",
            "spec.addresses[1]",
            "only with resolution NONE or STATIC",
        ),
    ] {
        let mut yaml = se("db", addresses, resolution, 5432);
        if resolution == "STATIC" {
            yaml.push_str("  endpoints: [{address: 10.0.0.1}]\n");
        }
        assert_error(&yaml, field, reason);
    }
    let yaml = se("wild", "[10.0.0.1]", "DYNAMIC_DNS", 443)
        .replace("wild.example.com", "\"*.wild.example.com\"")
        .replace("TCP", "TLS");
    assert_error(&yaml, "spec.addresses", "DYNAMIC_DNS");
}

#[test]
fn the_most_specific_address_finds_the_service() {
    let yaml = [
        se("wide", "[10.0.0.0/8]", "NONE", 5432),
        se("narrow", "[10.1.0.0/16]", "NONE", 5432),
        se("vip", "[10.1.2.3]", "NONE", 5432),
        se("other-port", "[10.1.2.0/24]", "NONE", 3306),
        se("v6", "[\"2001:db8::/32\"]", "NONE", 5432),
    ]
    .join("---\n");
    let plan = compiled(&yaml);
    let find = |ip: &str, port: u16| {
        plan.outbound
            .service_for_address(ip.parse().unwrap(), port)
            .map(|s| s.hosts[0].to_string())
    };
    let mut failures = Vec::new();
    for (ip, port, want) in [
        ("10.1.2.3", 5432, Some("vip.example.com")),
        ("10.1.9.9", 5432, Some("narrow.example.com")),
        ("10.200.0.1", 5432, Some("wide.example.com")),
        // A longer prefix on another port does not count.
        ("10.1.2.4", 5432, Some("narrow.example.com")),
        ("10.1.2.4", 3306, Some("other-port.example.com")),
        ("11.0.0.1", 5432, None),
        ("10.1.2.3", 8080, None),
        ("2001:db8::5", 5432, Some("v6.example.com")),
        // An IPv4-mapped IPv6 address is its IPv4 address.
        ("::ffff:10.1.2.3", 5432, Some("vip.example.com")),
        ("2001:db9::5", 5432, None),
    ] {
        let got = find(ip, port);
        if got.as_deref() != want {
            failures.push(format!("{ip}:{port} → {got:?}, want {want:?}"));
        }
    }
    assert_no_failures(&failures);
}
