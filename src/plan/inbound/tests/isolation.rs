//! A server that does not compile takes its port down, not the
//! configuration; Istio's L4 protocols are served as TCP.

use super::*;
use crate::plan::compile_all;

fn compile_parts(yaml: &str) -> crate::plan::Compiled {
    let config = crate::config::load_str("gw.yaml", yaml).unwrap();
    compile_all(&config, &crate::bootstrap::Bootstrap::default())
}

#[test]
fn istio_l4_protocols_are_served_as_tcp() {
    for proto in ["MONGO", "REDIS", "MYSQL", "TCP"] {
        let yaml = gateway(
            "default",
            "gw",
            &format!(
                "- port: {{number: 27017, name: db, protocol: {proto}}}\n  hosts: [db.example.com]"
            ),
        );
        let plan = compiled(&yaml);
        assert_eq!(only_server(&plan).protocol, ServerProtocol::Tcp, "{proto}");
    }
}

#[test]
fn a_broken_server_takes_down_its_port_only() {
    let yaml = gateway(
        "default",
        "gw",
        "- port: {number: 8443, name: bad, protocol: HTTPS}\n  hosts: [bad.example.com]\n\
         - port: {number: 8443, name: wide, protocol: HTTPS}\n  hosts: [\"*\"]\n  tls: {mode: SIMPLE, credentialName: wide}\n\
         - port: {number: 443, name: good, protocol: HTTPS}\n  hosts: [good.example.com]\n  tls: {mode: SIMPLE, credentialName: good}",
    );
    let c = compile_parts(&yaml);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let ports: Vec<u16> = c.plan.inbound.listeners.iter().map(|l| l.port).collect();
    // The `*` server on 8443 would otherwise take bad.example.com's clients.
    assert_eq!(ports, vec![443]);
    let isolated: Vec<String> = c.isolated.iter().map(ToString::to_string).collect();
    assert_eq!(isolated.len(), 2, "{isolated:#?}");
    assert!(
        isolated[0].contains("spec.servers[0].tls: required for HTTPS and TLS servers"),
        "{isolated:#?}"
    );
    assert!(
        isolated[1].contains("spec.servers[0]: port 8443 is not served (nor its other servers: ")
            && isolated[1].contains("spec.servers[1]"),
        "{isolated:#?}"
    );
    // The strict view refuses the whole configuration.
    let config = crate::config::load_str("gw.yaml", &yaml).unwrap();
    let errs = crate::plan::compile(&config, &crate::bootstrap::Bootstrap::default()).unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs}");
}

#[test]
fn an_unknown_protocol_is_refused_and_isolated() {
    let yaml = docs(&[&gateway(
        "default",
        "gw",
        "- port: {number: 25, name: smtp, protocol: SMTP}\n  hosts: [mail.example.com]\n\
             - port: {number: 80, name: http, protocol: HTTP}\n  hosts: [web.example.com]",
    )]);
    let c = compile_parts(&yaml);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    assert_eq!(c.plan.inbound.listeners.len(), 1);
    assert_eq!(c.plan.inbound.listeners[0].port, 80);
    assert!(
        c.isolated[0]
            .reason
            .contains("\"SMTP\" is not a protocol Istio accepts"),
        "{:?}",
        c.isolated
    );
}

#[test]
fn mixing_tls_and_plain_text_takes_that_port_down() {
    let yaml = docs(&[
        &gateway(
            "default",
            "a",
            "- port: {number: 8000, name: http, protocol: HTTP}\n  hosts: [a.example.com]",
        ),
        &gateway(
            "default",
            "b",
            "- port: {number: 8000, name: https, protocol: HTTPS}\n  hosts: [b.example.com]\n  tls: {mode: SIMPLE, credentialName: b}\n\
             - port: {number: 9000, name: http, protocol: HTTP}\n  hosts: [c.example.com]",
        ),
    ]);
    let c = compile_parts(&yaml);
    assert!(c.errors.is_empty(), "{:?}", c.errors);
    let ports: Vec<u16> = c.plan.inbound.listeners.iter().map(|l| l.port).collect();
    assert_eq!(ports, vec![9000]);
    assert!(
        c.isolated[0]
            .reason
            .contains("would mix TLS and plain-text")
    );
}
