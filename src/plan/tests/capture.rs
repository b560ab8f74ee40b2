//! The plan under capture (`interceptionMode: REDIRECT`): which host a
//! captured connection is routed by, and what the capture listener (15006)
//! serves.

use std::net::IpAddr;

use super::*;
use crate::bootstrap::{Bootstrap, InterceptionMode};
use crate::config::load_str;

fn captured(yaml: &str, identity: bool) -> Result<Plan, crate::config::ConfigErrors> {
    let config = load_str(FILE, yaml).unwrap_or_else(|e| panic!("does not load:\n{e}"));
    let bootstrap = Bootstrap {
        interception_mode: InterceptionMode::Redirect,
        identity_dir: identity.then(|| "/etc/istio/identity".into()),
        ..Bootstrap::default()
    };
    compile(&config, &bootstrap)
}

const REGISTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  addresses: [240.0.0.10]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: db}
spec:
  hosts: [db.internal, "*.db.internal"]
  addresses: [10.20.0.0/16]
  ports: [{number: 5432, name: pg, protocol: TCP}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: wild}
spec:
  hosts: ["*.wild.example"]
  addresses: [240.0.0.20]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: NONE
"#;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn a_known_name_is_routed_as_named_an_unknown_one_by_the_dialled_address() {
    let plan = compiled(REGISTRY);
    let out = &plan.outbound;
    // The registry knows the Host on the dialled port: route by it.
    assert_eq!(
        out.captured_host(Some("api.example.com"), ip("1.2.3.4"), 80),
        None
    );
    assert_eq!(
        out.captured_host(Some("API.Example.com"), ip("240.0.0.10"), 80),
        None
    );
    // A Host the registry does not know, dialled at the VIP.
    assert_eq!(
        out.captured_host(Some("10.0.0.1"), ip("240.0.0.10"), 80),
        Some("api.example.com".into())
    );
    // No Host (TCP), dialled inside a CIDR: the first named host.
    assert_eq!(
        out.captured_host(None, ip("10.20.3.4"), 5432),
        Some("db.internal".into())
    );
    // The port must be one the entry declares.
    assert_eq!(out.captured_host(None, ip("10.20.3.4"), 5433), None);
    assert_eq!(out.captured_host(None, ip("240.0.0.10"), 443), None);
    // Neither known by name nor by address: unregistered.
    assert_eq!(
        out.captured_host(Some("other.example"), ip("9.9.9.9"), 80),
        None
    );
    // An entry with wildcard hosts only names nothing to connect to.
    assert_eq!(out.captured_host(None, ip("240.0.0.20"), 80), None);
}

#[test]
fn sidecar_ingress_ports_are_served_by_the_capture_listener() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default}
spec:
  ingress:
  - port: {number: 9080, protocol: HTTP, name: http}
    defaultEndpoint: 127.0.0.1:8080
"#;
    let plan = captured(yaml, true).expect("compiles");
    let ingress = plan
        .inbound
        .listeners
        .iter()
        .find(|l| l.port == 9080)
        .expect("the ingress listener");
    assert!(ingress.is_sidecar());
    let mesh = plan
        .inbound
        .listeners
        .iter()
        .find(|l| l.mesh)
        .expect("under capture the mesh listener exists without --app-addr");
    assert!(!mesh.is_sidecar());
    assert_eq!(mesh.port, 15006);
    assert!(mesh.tls && mesh.permissive, "PERMISSIVE by default");
    assert_eq!(
        mesh.servers[0].default_endpoint, None,
        "delivered to the dialled address"
    );
    assert_eq!(
        plan.inbound.captured_listener(9080).map(|l| l.port),
        Some(9080)
    );
    assert!(plan.inbound.captured_listener(8080).is_some_and(|l| l.mesh));
}

#[test]
fn without_an_identity_captured_inbound_is_relayed_and_strict_is_refused() {
    let plan = captured("", false).expect("compiles");
    let mesh = plan.inbound.listeners.iter().find(|l| l.mesh).unwrap();
    assert!(!mesh.tls);
    assert_eq!(
        mesh.servers[0].protocol,
        crate::plan::inbound::ServerProtocol::Tcp
    );
    let strict = r#"
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default}
spec:
  mtls: {mode: STRICT}
"#;
    let err = captured(strict, false).expect_err("STRICT cannot be honoured");
    let text = err.to_string();
    assert!(
        text.contains("PeerAuthentication/default/default: spec.mtls.mode")
            && text.contains("identity"),
        "{text}"
    );
    // Without capture nothing changes: no mesh listener without an app.
    let config = load_str(FILE, strict).unwrap();
    let plan = compile(&config, &Bootstrap::default()).expect("compiles");
    assert!(plan.inbound.listeners.iter().all(|l| !l.mesh));
}
