//! Sidecar ingress and outboundTrafficPolicy; HTTP servers and routes on gateways.

use super::*;

// === 7. Sidecar ingress listeners ===

#[test]
fn sidecar_ingress_listeners() {
    const SIMPLE: &str = "{mode: SIMPLE, privateKey: /etc/certs/privatekey.pem, serverCertificate: \
         /etc/certs/servercert.pem}";
    const MUTUAL: &str = "{mode: MUTUAL, privateKey: /etc/certs/privatekey.pem, \
                          serverCertificate: /etc/certs/servercert.pem, caCertificates: \
                          /etc/certs/ca.pem}";
    // (port protocol, tls, served protocol, mode)
    let rows: &[(&str, Option<&str>, ServerProtocol, Option<TlsServerMode>)] = &[
        (
            "HTTP",
            Some(SIMPLE),
            ServerProtocol::Https,
            Some(TlsServerMode::Simple),
        ),
        // The form of Istio's Sidecar reference example.
        (
            "HTTPS",
            Some(SIMPLE),
            ServerProtocol::Https,
            Some(TlsServerMode::Simple),
        ),
        // TLS from the client, h2c to the app.
        (
            "GRPC",
            Some(MUTUAL),
            ServerProtocol::Grpc,
            Some(TlsServerMode::Mutual),
        ),
        (
            "TCP",
            Some(SIMPLE),
            ServerProtocol::Tls,
            Some(TlsServerMode::Simple),
        ),
        (
            "TLS",
            Some(MUTUAL),
            ServerProtocol::Tls,
            Some(TlsServerMode::Mutual),
        ),
        ("HTTP", None, ServerProtocol::Http, None),
        ("TCP", None, ServerProtocol::Tcp, None),
    ];
    let mut failures = Vec::new();
    for (protocol, tls, want_protocol, want_mode) in rows {
        let mut listener = format!(
            "- port: {{number: 9080, protocol: {protocol}, name: somename}}\n  defaultEndpoint: \
             \"127.0.0.1:8080\""
        );
        if let Some(t) = tls {
            listener.push_str(&format!("\n  tls: {t}"));
        }
        let yaml = sidecar(&listener, "");
        let plan = match try_plan(&yaml, OutboundTrafficPolicy::AllowAny) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{protocol} {tls:?}: does not compile:\n{e}"));
                continue;
            }
        };
        let l = only_listener(&plan);
        let s = only_server(&plan);
        let got = (
            l.port,
            l.bind.as_deref(),
            l.tls,
            s.protocol,
            s.tls.as_ref().map(|t| t.mode),
            host_strings(&s.hosts),
            s.default_endpoint.as_deref(),
            s.gateway.as_str(),
            s.routes.len(),
        );
        let want = (
            9080,
            None,
            want_mode.is_some(),
            *want_protocol,
            *want_mode,
            strings(&["*"]),
            Some("127.0.0.1:8080"),
            "",
            0,
        );
        if got != want {
            failures.push(format!(
                "{protocol} {tls:?}:\n  got  {got:?}\n  want {want:?}"
            ));
        }
        if !s
            .origin
            .ends_with("Sidecar/prod-us1/ratings: spec.ingress[0]")
        {
            failures.push(format!("{protocol} {tls:?}: origin {:?}", s.origin));
        }
        if let Some(t) = &s.tls
            && t.certs
                != [files(
                    "/etc/certs/servercert.pem",
                    "/etc/certs/privatekey.pem",
                )]
        {
            failures.push(format!("{protocol} {tls:?}: certs {:?}", t.certs));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn sidecar_ingress_errors() {
    const SC: &str = "Sidecar/prod-us1/ratings";
    const FILES: &str = "serverCertificate: /c.pem, privateKey: /k.pem";
    let port = "- port: {number: 9080, protocol: HTTP, name: http}";
    let endpoint = "\n  defaultEndpoint: \"127.0.0.1:8080\"";
    let rows: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "OPTIONAL_MUTUAL",
            format!(
                "{port}{endpoint}\n  tls: {{mode: OPTIONAL_MUTUAL, {FILES}, caCertificates: \
                 /ca.pem}}"
            ),
            "spec.ingress[0].tls.mode",
            vec!["SIMPLE and MUTUAL only"],
        ),
        (
            "explicit PASSTHROUGH",
            format!("{port}{endpoint}\n  tls: {{mode: PASSTHROUGH}}"),
            "spec.ingress[0].tls.mode",
            vec!["SIMPLE and MUTUAL only"],
        ),
        (
            "mode absent: PASSTHROUGH, which a Sidecar does not do",
            format!("{port}{endpoint}\n  tls: {{{FILES}}}"),
            "spec.ingress[0].tls.mode",
            vec!["SIMPLE and MUTUAL only"],
        ),
        (
            "ISTIO_MUTUAL",
            format!("{port}{endpoint}\n  tls: {{mode: ISTIO_MUTUAL}}"),
            "spec.ingress[0].tls.mode",
            vec!["not supported yet"],
        ),
        (
            "MUTUAL without a CA",
            format!("{port}{endpoint}\n  tls: {{mode: MUTUAL, {FILES}}}"),
            "spec.ingress[0].tls.caCertificates",
            vec!["required for MUTUAL"],
        ),
        (
            "missing defaultEndpoint",
            format!("{port}\n  tls: {{mode: SIMPLE, {FILES}}}"),
            "spec.ingress[0].defaultEndpoint",
            vec!["required"],
        ),
        (
            "defaultEndpoint that is not IP:PORT",
            format!("{port}\n  defaultEndpoint: \"localhost:8080\""),
            "spec.ingress[0].defaultEndpoint",
            vec!["localhost:8080", "must be 127.0.0.1:<port>"],
        ),
        (
            "defaultEndpoint on a unix socket",
            format!("{port}\n  defaultEndpoint: \"unix:///var/run/app.sock\""),
            "spec.ingress[0].defaultEndpoint",
            vec!["unix domain sockets are not supported yet"],
        ),
        (
            "port 70000",
            format!("- port: {{number: 70000, protocol: HTTP, name: http}}{endpoint}"),
            "spec.ingress[0].port.number",
            vec!["not a valid port"],
        ),
        (
            "protocol SMTP",
            format!("- port: {{number: 9080, protocol: SMTP, name: smtp}}{endpoint}"),
            "spec.ingress[0].port.protocol",
            vec!["\"SMTP\"", "not a protocol Istio accepts"],
        ),
    ];
    let mut failures = Vec::new();
    for (case, ingress, field, reasons) in rows {
        if let Some(f) = missing_error(&sidecar(&ingress, ""), SC, field, &reasons) {
            failures.push(format!("{case}: {f}"));
        }
    }
    assert_no_failures(&failures);
}

/// Istio's Sidecar validation accepts only loopback or wildcard hosts in
/// `defaultEndpoint` ("must be of form 127.0.0.1:<port>, 0.0.0.0:<port>,
/// [::1]:port, [::]:port, unix://filepath"); another IP would turn the
/// sidecar into a forwarder to an arbitrary address.
#[test]
fn sidecar_default_endpoint_is_loopback_or_wildcard() {
    let listener = |endpoint: &str| {
        format!(
            "- port: {{number: 9080, protocol: HTTP, name: http}}\n  defaultEndpoint: \"{endpoint}\""
        )
    };
    let mut failures = Vec::new();
    for ok in ["127.0.0.1:8080", "0.0.0.0:8080", "[::1]:8080", "[::]:8080"] {
        if let Err(e) = try_plan(&sidecar(&listener(ok), ""), OutboundTrafficPolicy::AllowAny) {
            failures.push(format!("{ok}: refused:\n{e}"));
        }
    }
    for bad in ["10.1.2.3:8080", "[2001:db8::1]:8080"] {
        if let Some(f) = missing_error(
            &sidecar(&listener(bad), ""),
            "Sidecar/prod-us1/ratings",
            "spec.ingress[0].defaultEndpoint",
            &[bad],
        ) {
            failures.push(format!("{bad}: {f}"));
        }
    }
    assert_no_failures(&failures);
}

/// A Sidecar ingress port declared HTTPS or TLS without `tls` is one where
/// the application terminates TLS itself (Istio forwards the bytes to
/// `defaultEndpoint`). Whatever meshgate does with it (forward it, or
/// refuse it at compile time), it must not produce a TLS listener whose
/// server has no TLS settings: the runtime closes every such connection
/// without a word (`runtime/inbound.rs`, `serve_tls`: `let Some(tls_plan) =
/// &server.tls else { return };`).
#[test]
fn sidecar_tls_port_without_tls_settings_is_not_a_silent_dead_listener() {
    let mut failures = Vec::new();
    for protocol in ["HTTPS", "TLS"] {
        let yaml = sidecar(
            &format!(
                "- port: {{number: 9443, protocol: {protocol}, name: app-tls}}\n  \
                 defaultEndpoint: \"127.0.0.1:8443\""
            ),
            "",
        );
        match try_plan(&yaml, OutboundTrafficPolicy::AllowAny) {
            Err(e) => {
                let text = e.to_string();
                if !text.contains("Sidecar/prod-us1/ratings: spec.ingress[0]") {
                    failures.push(format!(
                        "{protocol}: error does not name the listener:\n{text}"
                    ));
                }
            }
            Ok(plan) => {
                for l in &plan.inbound.listeners {
                    for s in &l.servers {
                        if l.tls && s.tls.is_none() {
                            failures.push(format!(
                                "{protocol}: listener {} has tls = true but server {} ({:?}) has \
                                 no TLS settings",
                                l.port, s.origin, s.protocol
                            ));
                        }
                    }
                }
            }
        }
    }
    assert_no_failures(&failures);
}

// === 8. Sidecar outboundTrafficPolicy ===

#[test]
fn sidecar_outbound_traffic_policy_overrides_the_bootstrap() {
    use OutboundTrafficPolicy::{AllowAny, RegistryOnly};
    // (bootstrap, Sidecar spec keys, effective policy)
    let rows: &[(OutboundTrafficPolicy, &str, OutboundTrafficPolicy)] = &[
        (
            AllowAny,
            "outboundTrafficPolicy: {mode: REGISTRY_ONLY}",
            RegistryOnly,
        ),
        (
            RegistryOnly,
            "outboundTrafficPolicy: {mode: ALLOW_ANY}",
            AllowAny,
        ),
        (RegistryOnly, "egress: []", RegistryOnly),
        (AllowAny, "egress: []", AllowAny),
        // Istio's SidecarScope takes the Sidecar's policy whole when it is
        // set; `mode` absent is the proto zero value, REGISTRY_ONLY.
        (AllowAny, "outboundTrafficPolicy: {}", RegistryOnly),
    ];
    let mut failures = Vec::new();
    for (bootstrap, spec, want) in rows {
        let yaml = sidecar("", spec);
        match try_plan(&yaml, *bootstrap) {
            Ok(plan) if plan.outbound.policy == *want => {}
            Ok(plan) => failures.push(format!(
                "bootstrap {bootstrap:?}, Sidecar `{spec}`: got {:?}, want {want:?}",
                plan.outbound.policy
            )),
            Err(e) => failures.push(format!("{spec}: does not compile:\n{e}")),
        }
    }
    assert_no_failures(&failures);
}

// === 9. TLS settings on a plain HTTP server ===

#[test]
fn https_redirect_and_other_tls_fields_on_an_http_server() {
    // (tls, httpsRedirect, warns that the other fields are ignored)
    let rows: &[(Option<&str>, bool, bool)] = &[
        (None, false, false),
        (Some("{httpsRedirect: true}"), true, false),
        (Some("{httpsRedirect: false}"), false, false),
        (Some("{httpsRedirect: true, mode: SIMPLE}"), true, true),
        (
            Some("{httpsRedirect: true, credentialName: a-cred}"),
            true,
            true,
        ),
        (
            Some("{serverCertificate: /c.pem, privateKey: /k.pem}"),
            false,
            true,
        ),
        (
            Some("{httpsRedirect: true, credentialNames: [a, b]}"),
            true,
            true,
        ),
        (
            Some("{tlsCertificates: [{serverCertificate: /c.pem, privateKey: /k.pem}]}"),
            false,
            true,
        ),
        (
            Some("{httpsRedirect: true, caCertificates: /ca.pem}"),
            true,
            true,
        ),
        (
            Some("{httpsRedirect: true, minProtocolVersion: TLSV1_3}"),
            true,
            true,
        ),
    ];
    let mut failures = Vec::new();
    for (tls, redirect, warns) in rows {
        let mut server =
            "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [a.example.com]"
                .to_string();
        if let Some(t) = tls {
            server.push_str(&format!("\n  tls: {t}"));
        }
        let plan = match try_plan(
            &gateway("edge", "ingress", &server),
            OutboundTrafficPolicy::AllowAny,
        ) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{tls:?}: does not compile:\n{e}"));
                continue;
            }
        };
        let l = only_listener(&plan);
        let s = only_server(&plan);
        let warned = has_warning(
            &plan,
            &[
                FILE,
                "Gateway/edge/ingress: spec.servers[0].tls:",
                "only httpsRedirect applies",
            ],
        );
        let got = (l.tls, s.protocol, s.tls.is_some(), s.https_redirect, warned);
        let want = (false, ServerProtocol::Http, false, *redirect, *warns);
        if got != want {
            failures.push(format!(
                "{tls:?}: (listener tls, protocol, tls plan, https_redirect, warned)\n  got  \
                 {got:?}\n  want {want:?}\n  warnings {:?}",
                plan.warnings
            ));
        }
    }
    assert_no_failures(&failures);
}

// === 10. an HTTP route on a gateway ===

#[test]
fn gateway_http_route_with_prefix_rewrite_and_headers() {
    let gw = gateway(
        "edge",
        "ingress",
        "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [api.example.com]",
    );
    let vs = virtual_service(
        "edge",
        "api",
        "[api.example.com]",
        "[ingress]",
        r#"http:
- name: v1
  match:
  - uri:
      prefix: /v1/
  rewrite:
    uri: /
    authority: backend.internal
  headers:
    request:
      set:
        x-env: prod
      add:
        x-trace: "on"
      remove: [x-debug]
    response:
      set:
        cache-control: no-store
      remove: [server]
  timeout: 5s
  route:
  - destination:
      host: api.internal
      port:
        number: 8080
"#,
    );
    let plan = compiled(&docs(&[&gw, &vs]));
    let s = only_server(&plan);
    assert_eq!(s.routes.len(), 1, "{s:#?}");
    let vs = &s.routes[0];
    assert!(
        vs.resource.ends_with("VirtualService/edge/api"),
        "{}",
        vs.resource
    );
    assert_eq!(host_strings(&vs.hosts), ["api.example.com"]);
    assert_eq!(vs.http.len(), 1);
    let r = &vs.http[0];
    assert_eq!(r.name.as_deref(), Some("v1"));
    assert_eq!(r.matches.len(), 1);
    assert!(
        matches!(&r.matches[0].uri, Some(StrMatch::Prefix(p)) if p == "/v1/"),
        "{r:#?}"
    );
    let rw = r.rewrite.as_ref().expect("rewrite");
    assert_eq!(
        (rw.uri.as_deref(), rw.authority.as_deref()),
        (Some("/"), Some("backend.internal"))
    );
    let pairs = |v: &[(String, String)]| -> Vec<(String, String)> { v.to_vec() };
    assert_eq!(
        pairs(&r.request_headers.set),
        [("x-env".to_string(), "prod".to_string())]
    );
    assert_eq!(
        pairs(&r.request_headers.add),
        [("x-trace".to_string(), "on".to_string())]
    );
    assert_eq!(r.request_headers.remove, ["x-debug"]);
    assert_eq!(
        pairs(&r.response_headers.set),
        [("cache-control".to_string(), "no-store".to_string())]
    );
    assert_eq!(r.response_headers.remove, ["server"]);
    assert_eq!(r.timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(
        (r.destinations[0].host.as_str(), r.destinations[0].port),
        ("api.internal", Some(8080))
    );
    assert!(r.redirect.is_none() && r.direct_response.is_none());
    // A gateway-only VirtualService is not a mesh route.
    assert!(
        plan.outbound
            .routes
            .iter()
            .all(|m| !m.resource.ends_with("VirtualService/edge/api")),
        "{:#?}",
        plan.outbound.routes
    );
}

#[test]
fn gateway_route_errors_name_the_virtual_service() {
    let gw = gateway(
        "edge",
        "ingress",
        "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [api.example.com]",
    );
    let vs = virtual_service(
        "edge",
        "api",
        "[api.example.com]",
        "[ingress]",
        "http:\n- match:\n  - uri: {prefix: /v1/}\n  rewrite: {uri: v2}\n  route:\n  - \
         destination: {host: api.internal}",
    );
    let failure = missing_error(
        &docs(&[&gw, &vs]),
        "VirtualService/edge/api",
        "spec.http[0].rewrite.uri",
        &["must start with \"/\""],
    );
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
}

/// `verifyCertificateHash` is user input: anything that is not 64 hex
/// digits (colons aside) is an error, never a panic and never accepted.
#[test]
fn verify_certificate_hash_rejects_non_hex_input() {
    let rows = [
        // 64 bytes; byte offset 2 falls inside the two-byte `é`.
        ("non-ASCII", format!("a{}a", "é".repeat(31))),
        // `u8::from_str_radix` takes a leading `+`.
        ("plus signs", "+a".repeat(32)),
    ];
    let mut failures = Vec::new();
    for (case, hash) in rows {
        let yaml = https_server(&format!(
            "{{mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, caCertificates: \
             /ca.pem, verifyCertificateHash: [\"{hash}\"]}}"
        ));
        let outcome = std::panic::catch_unwind(|| {
            missing_error(
                &yaml,
                "Gateway/edge/ingress",
                "spec.servers[0].tls.verifyCertificateHash[0]",
                &["hex SHA-256"],
            )
        });
        match outcome {
            Ok(None) => {}
            Ok(Some(f)) => failures.push(format!("{case} {hash:?}: {f}")),
            Err(_) => failures.push(format!("{case} {hash:?}: compile panicked")),
        }
    }
    assert_no_failures(&failures);
}
