//! Table-driven tests of the inbound plan (Gateway servers, Sidecar ingress
//! listeners, VirtualService binding) against Istio's documented semantics.
//! Every case is whole YAML read with the real loader and compiled with
//! `plan::compile`, exactly as `meshgate validate` does.

use base64::Engine as _;

use super::*;
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{ConfigErrors, load_str};
use crate::plan::Plan;
use crate::plan::route::StrMatch;

const FILE: &str = "ingress.yaml";

// === helpers ===

fn try_plan(yaml: &str, policy: OutboundTrafficPolicy) -> Result<Plan, ConfigErrors> {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let bootstrap = Bootstrap {
        outbound_traffic_policy: policy,
        ..Bootstrap::default()
    };
    crate::plan::compile(&config, &bootstrap)
}

fn compiled(yaml: &str) -> Plan {
    try_plan(yaml, OutboundTrafficPolicy::AllowAny)
        .unwrap_or_else(|e| panic!("does not compile:\n{e}\n--- yaml ---\n{yaml}"))
}

/// `None` when one error line reads `ingress.yaml:N: {resource}: {field}:
/// ...` and contains every fragment of `reasons`; otherwise what is wrong.
fn missing_error(yaml: &str, resource: &str, field: &str, reasons: &[&str]) -> Option<String> {
    let text = match try_plan(yaml, OutboundTrafficPolicy::AllowAny) {
        Ok(p) => {
            return Some(format!(
                "compiled, but expected an error at {field} (warnings: {:?})",
                p.warnings
            ));
        }
        Err(e) => e.to_string(),
    };
    let located = format!(" {resource}: {field}: ");
    let found = text.lines().any(|l| {
        l.starts_with(&format!("{FILE}:"))
            && l.contains(&located)
            && reasons.iter().all(|r| l.contains(r))
    });
    (!found).then(|| format!("no error `{FILE}:N:{located}..{reasons:?}..` among:\n{text}"))
}

/// Indents every non-empty line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{l}\n"))
        .collect()
}

/// A Gateway whose `spec.servers` is `servers` (a YAML sequence at column 0).
fn gateway(ns: &str, name: &str, servers: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  selector:\n    istio: ingressgateway\n  servers:\n{}",
        indent(servers, 2)
    )
}

/// The Gateway `edge/ingress` with one server on port 443 (HTTPS) serving
/// `a.example.com` with the given `tls` (a flow mapping).
fn https_server(tls: &str) -> String {
    gateway(
        "edge",
        "ingress",
        &format!(
            "- port: {{number: 443, name: https, protocol: HTTPS}}\n  hosts: [a.example.com]\n  \
             tls: {tls}"
        ),
    )
}

/// A VirtualService; `body` holds the `http` / `tls` / `tcp` keys at column 0.
fn virtual_service(ns: &str, name: &str, hosts: &str, gateways: &str, body: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  \
         namespace: {ns}\nspec:\n  hosts: {hosts}\n  gateways: {gateways}\n{}",
        indent(body, 2)
    )
}

/// A Sidecar `prod-us1/ratings`; `ingress` is its `spec.ingress` sequence
/// (column 0), `extra` more `spec` keys (column 0).
fn sidecar(ingress: &str, extra: &str) -> String {
    let mut s = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata:\n  name: ratings\n  \
         namespace: prod-us1\nspec:\n  workloadSelector:\n    labels:\n      app: ratings\n",
    );
    if !ingress.is_empty() {
        s.push_str("  ingress:\n");
        s.push_str(&indent(ingress, 2));
    }
    s.push_str(&indent(extra, 2));
    s
}

fn docs(parts: &[&str]) -> String {
    parts.join("---\n")
}

fn cred(name: &str) -> CredentialRef {
    CredentialRef {
        name: name.into(),
        namespace: None,
    }
}

fn files(cert: &str, key: &str) -> ServerCertSource {
    ServerCertSource::Files {
        cert: cert.into(),
        key: key.into(),
    }
}

fn host_strings(hosts: &[HostPattern]) -> Vec<String> {
    hosts.iter().map(ToString::to_string).collect()
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// `Kind/ns/name` of each VirtualService bound to `server`.
fn bound(server: &ServerPlan) -> Vec<String> {
    server
        .routes
        .iter()
        .map(|r| {
            r.resource
                .rsplit(": ")
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect()
}

fn only_listener(plan: &Plan) -> &ListenerPlan {
    assert_eq!(
        plan.inbound.listeners.len(),
        1,
        "expected one listener: {:#?}",
        plan.inbound.listeners
    );
    &plan.inbound.listeners[0]
}

fn only_server(plan: &Plan) -> &ServerPlan {
    let l = only_listener(plan);
    assert_eq!(l.servers.len(), 1, "expected one server: {l:#?}");
    &l.servers[0]
}

fn server_tls(server: &ServerPlan) -> &ServerTlsPlan {
    server
        .tls
        .as_ref()
        .unwrap_or_else(|| panic!("{}: no TLS settings", server.origin))
}

/// Asserts that a collected list of table-row mismatches is empty.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

fn has_warning(plan: &Plan, parts: &[&str]) -> bool {
    plan.warnings
        .iter()
        .any(|w| parts.iter().all(|p| w.contains(p)))
}

// === 1. the Istio "Secure Gateways" task ===

/// The task's Gateway for one host, with `{MODE}` for SIMPLE or MUTUAL.
const SECURE_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: {MODE}
      credentialName: httpbin-credential # must be the same as secret
    hosts:
    - httpbin.example.com
"#;

const HTTPBIN_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - "httpbin.example.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#;

/// The task's "Configure a TLS ingress gateway for multiple hosts" Gateway.
const MULTI_HOST_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: https-httpbin
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
  - port:
      number: 443
      name: https-helloworld
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: helloworld-credential
    hosts:
    - helloworld.example.com
"#;

const HELLOWORLD_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: helloworld
spec:
  hosts:
  - helloworld.example.com
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        exact: /hello
    route:
    - destination:
        host: helloworld
        port:
          number: 5000
"#;

#[test]
fn secure_gateways_task() {
    struct Want {
        hosts: &'static [&'static str],
        mode: TlsServerMode,
        cert: &'static str,
        client_ca: Option<ClientCaSource>,
        routes: &'static [&'static str],
    }
    let httpbin = |mode, client_ca| Want {
        hosts: &["httpbin.example.com"],
        mode,
        cert: "httpbin-credential",
        client_ca,
        routes: &["VirtualService/default/httpbin"],
    };
    let rows: Vec<(&str, String, Vec<Want>)> = vec![
        (
            "single host, SIMPLE",
            docs(&[&SECURE_GATEWAY.replace("{MODE}", "SIMPLE"), HTTPBIN_VS]),
            vec![httpbin(TlsServerMode::Simple, None)],
        ),
        (
            "multiple hosts on one port",
            docs(&[MULTI_HOST_GATEWAY, HTTPBIN_VS, HELLOWORLD_VS]),
            vec![
                httpbin(TlsServerMode::Simple, None),
                Want {
                    hosts: &["helloworld.example.com"],
                    mode: TlsServerMode::Simple,
                    cert: "helloworld-credential",
                    client_ca: None,
                    routes: &["VirtualService/default/helloworld"],
                },
            ],
        ),
        (
            "MUTUAL: the client CA comes from the same credential",
            docs(&[&SECURE_GATEWAY.replace("{MODE}", "MUTUAL"), HTTPBIN_VS]),
            vec![httpbin(
                TlsServerMode::Mutual,
                Some(ClientCaSource::Credential(cred("httpbin-credential"))),
            )],
        ),
    ];
    let mut failures = Vec::new();
    for (case, yaml, want) in rows {
        let plan = compiled(&yaml);
        let l = only_listener(&plan);
        let mut got = Vec::new();
        got.push(format!(
            "port {} bind {:?} tls {} servers {}",
            l.port,
            l.bind,
            l.tls,
            l.servers.len()
        ));
        for s in &l.servers {
            let t = server_tls(s);
            got.push(format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}-{:?} {:?}",
                s.protocol,
                host_strings(&s.hosts),
                t.mode,
                t.certs,
                t.client_ca,
                bound(s),
                t.min_version,
                t.max_version,
                s.gateway,
            ));
        }
        let mut expected = vec![format!(
            "port 443 bind None tls true servers {}",
            want.len()
        )];
        for w in &want {
            expected.push(format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}-{:?} {:?}",
                ServerProtocol::Https,
                strings(w.hosts),
                w.mode,
                vec![ServerCertSource::Credential(cred(w.cert))],
                w.client_ca,
                strings(w.routes),
                TlsVersion::Tls12,
                TlsVersion::Tls13,
                "default/mygateway",
            ));
        }
        if got != expected {
            failures.push(format!("{case}:\n  got  {got:#?}\n  want {expected:#?}"));
        }
        for (i, s) in l.servers.iter().enumerate() {
            if !s
                .origin
                .ends_with(&format!("Gateway/default/mygateway: spec.servers[{i}]"))
                || !s.terminates()
                || s.https_redirect
                || s.default_endpoint.is_some()
            {
                failures.push(format!("{case}: server {i}: {s:#?}"));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn secure_gateway_routes_compile_with_the_task_matches() {
    let plan = compiled(&docs(&[MULTI_HOST_GATEWAY, HTTPBIN_VS, HELLOWORLD_VS]));
    let l = only_listener(&plan);
    let httpbin = &l.servers[0].routes[0];
    assert_eq!(host_strings(&httpbin.hosts), ["httpbin.example.com"]);
    assert_eq!(httpbin.http.len(), 1);
    let r = &httpbin.http[0];
    let prefixes: Vec<String> = r
        .matches
        .iter()
        .map(|m| match &m.uri {
            Some(StrMatch::Prefix(p)) => p.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(prefixes, ["/status", "/delay"]);
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(r.destinations[0].host, "httpbin");
    assert_eq!(r.destinations[0].port, Some(8000));
    let hello = &l.servers[1].routes[0].http[0];
    assert!(
        matches!(&hello.matches[0].uri, Some(StrMatch::Exact(p)) if p == "/hello"),
        "{hello:#?}"
    );
    assert_eq!(
        (
            hello.destinations[0].host.as_str(),
            hello.destinations[0].port
        ),
        ("helloworld", Some(5000))
    );
}

// === 2. the SNI passthrough task ===

const PASSTHROUGH_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: {PROTOCOL}
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: nginx
spec:
  hosts:
  - nginx.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx.mesh-external.svc.cluster.local
        port:
          number: 443
"#;

#[test]
fn sni_passthrough_task() {
    let rows = [
        ("TLS", ServerProtocol::Tls),
        ("HTTPS", ServerProtocol::Https),
    ];
    for (protocol, want) in rows {
        let plan = compiled(&PASSTHROUGH_GATEWAY.replace("{PROTOCOL}", protocol));
        let l = only_listener(&plan);
        assert!(l.tls, "{protocol}: {l:#?}");
        let s = only_server(&plan);
        assert_eq!(s.protocol, want, "{protocol}");
        let t = server_tls(s);
        assert_eq!(t.mode, TlsServerMode::Passthrough, "{protocol}");
        assert!(
            t.certs.is_empty() && t.client_ca.is_none(),
            "{protocol}: {t:#?}"
        );
        assert!(!s.terminates(), "{protocol}");
        assert_eq!(s.routes.len(), 1, "{protocol}: {s:#?}");
        let vs = &s.routes[0];
        assert!(
            vs.http.is_empty() && vs.tcp.is_empty(),
            "{protocol}: {vs:#?}"
        );
        assert_eq!(vs.tls.len(), 1, "{protocol}: {vs:#?}");
        let r = &vs.tls[0];
        assert_eq!(
            host_strings(&r.sni_hosts),
            ["nginx.example.com"],
            "{protocol}"
        );
        assert_eq!(r.ports, [443], "{protocol}");
        assert_eq!(r.destinations.len(), 1, "{protocol}");
        let d = &r.destinations[0];
        assert_eq!(
            (d.host.as_str(), d.port, d.subset.as_deref()),
            ("my-nginx.mesh-external.svc.cluster.local", Some(443), None),
            "{protocol}"
        );
    }
}

// === 3. TLS settings: defaults and rules ===

#[test]
fn server_tls_settings_that_compile() {
    struct Want {
        mode: TlsServerMode,
        certs: Vec<ServerCertSource>,
        client_ca: Option<ClientCaSource>,
        versions: (TlsVersion, TlsVersion),
        cipher_suites: Vec<&'static str>,
        spki: Vec<Vec<u8>>,
        hash: Vec<Vec<u8>>,
    }
    let simple = || Want {
        mode: TlsServerMode::Simple,
        certs: vec![files("/c.pem", "/k.pem")],
        client_ca: None,
        versions: (TlsVersion::Tls12, TlsVersion::Tls13),
        cipher_suites: Vec::new(),
        spki: Vec::new(),
        hash: Vec::new(),
    };
    let mutual_files = || Want {
        mode: TlsServerMode::Mutual,
        client_ca: Some(ClientCaSource::File("/ca.pem".into())),
        ..simple()
    };
    let digest: Vec<u8> = (0u8..32).collect();
    let hex: Vec<String> = digest.iter().map(|b| format!("{b:02X}")).collect();
    let colon_hash = hex.join(":");
    let plain_hash = hex.concat().to_ascii_lowercase();
    let spki = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    const FILES: &str = "serverCertificate: /c.pem, privateKey: /k.pem";
    const MUTUAL: &str = "mode: MUTUAL, serverCertificate: /c.pem, privateKey: /k.pem, \
                          caCertificates: /ca.pem";

    let rows: Vec<(&str, String, Want)> = vec![
        (
            "mode absent and nothing else: PASSTHROUGH (the proto default)",
            "{}".into(),
            Want {
                mode: TlsServerMode::Passthrough,
                certs: Vec::new(),
                ..simple()
            },
        ),
        (
            "explicit PASSTHROUGH",
            "{mode: PASSTHROUGH}".into(),
            Want {
                mode: TlsServerMode::Passthrough,
                certs: Vec::new(),
                ..simple()
            },
        ),
        (
            "SIMPLE with files",
            format!("{{mode: SIMPLE, {FILES}}}"),
            simple(),
        ),
        (
            "SIMPLE with tlsCertificates (RSA + ECDSA)",
            "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /rsa.pem, privateKey: \
             /rsa.key}, {serverCertificate: /ec.pem, privateKey: /ec.key}]}"
                .into(),
            Want {
                certs: vec![files("/rsa.pem", "/rsa.key"), files("/ec.pem", "/ec.key")],
                ..simple()
            },
        ),
        (
            "SIMPLE with credentialNames (RSA + ECDSA)",
            "{mode: SIMPLE, credentialNames: [rsa-cred, ec-cred]}".into(),
            Want {
                certs: vec![
                    ServerCertSource::Credential(cred("rsa-cred")),
                    ServerCertSource::Credential(cred("ec-cred")),
                ],
                ..simple()
            },
        ),
        (
            "SIMPLE with kubernetes://ns/name",
            "{mode: SIMPLE, credentialName: \"kubernetes://istio-system/gw-cred\"}".into(),
            Want {
                certs: vec![ServerCertSource::Credential(CredentialRef {
                    name: "gw-cred".into(),
                    namespace: Some("istio-system".into()),
                })],
                ..simple()
            },
        ),
        (
            "MUTUAL with caCertificates",
            format!("{{{MUTUAL}}}"),
            mutual_files(),
        ),
        (
            "OPTIONAL_MUTUAL with credentialName: CA from the credential",
            "{mode: OPTIONAL_MUTUAL, credentialName: gw-cred}".into(),
            Want {
                mode: TlsServerMode::OptionalMutual,
                certs: vec![ServerCertSource::Credential(cred("gw-cred"))],
                client_ca: Some(ClientCaSource::Credential(cred("gw-cred"))),
                ..simple()
            },
        ),
        (
            "MUTUAL: caCertCredentialName takes precedence over the credential's CA",
            "{mode: MUTUAL, credentialName: gw-cred, caCertCredentialName: client-ca}".into(),
            Want {
                mode: TlsServerMode::Mutual,
                certs: vec![ServerCertSource::Credential(cred("gw-cred"))],
                client_ca: Some(ClientCaSource::CaCredential(cred("client-ca"))),
                ..simple()
            },
        ),
        (
            "TLS_AUTO keeps the defaults (1.2 - 1.3)",
            format!(
                "{{mode: SIMPLE, {FILES}, minProtocolVersion: TLS_AUTO, maxProtocolVersion: \
                 TLS_AUTO}}"
            ),
            simple(),
        ),
        (
            "TLS 1.3 only",
            format!("{{mode: SIMPLE, {FILES}, minProtocolVersion: TLSV1_3}}"),
            Want {
                versions: (TlsVersion::Tls13, TlsVersion::Tls13),
                ..simple()
            },
        ),
        (
            "TLS 1.2 only",
            format!("{{mode: SIMPLE, {FILES}, maxProtocolVersion: TLSV1_2}}"),
            Want {
                versions: (TlsVersion::Tls12, TlsVersion::Tls12),
                ..simple()
            },
        ),
        (
            "cipherSuites: OpenSSL names map to IANA names, IANA names are kept",
            format!(
                "{{mode: SIMPLE, {FILES}, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, \
                 ECDHE-ECDSA-CHACHA20-POLY1305, TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384]}}"
            ),
            Want {
                cipher_suites: vec![
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                ],
                ..simple()
            },
        ),
        (
            "verifyCertificateHash with colons (upper case) and without",
            format!("{{{MUTUAL}, verifyCertificateHash: [\"{colon_hash}\", {plain_hash}]}}"),
            Want {
                hash: vec![digest.clone(), digest.clone()],
                ..mutual_files()
            },
        ),
        (
            "verifyCertificateSpki (base64 SHA-256)",
            format!("{{{MUTUAL}, verifyCertificateSpki: [\"{spki}\"]}}"),
            Want {
                spki: vec![vec![7u8; 32]],
                ..mutual_files()
            },
        ),
    ];
    let mut failures = Vec::new();
    for (case, tls, want) in rows {
        let yaml = https_server(&tls);
        let plan = match try_plan(&yaml, OutboundTrafficPolicy::AllowAny) {
            Ok(p) => p,
            Err(e) => {
                failures.push(format!("{case}: does not compile:\n{e}\n{yaml}"));
                continue;
            }
        };
        let t = server_tls(only_server(&plan));
        let got = (
            t.mode,
            &t.certs,
            &t.client_ca,
            (t.min_version, t.max_version),
            &t.cipher_suites,
            &t.spki_sha256,
            &t.cert_sha256,
        );
        let ciphers = strings(&want.cipher_suites);
        let expected = (
            want.mode,
            &want.certs,
            &want.client_ca,
            want.versions,
            &ciphers,
            &want.spki,
            &want.hash,
        );
        if got != expected {
            failures.push(format!("{case}:\n  got  {got:?}\n  want {expected:?}"));
        }
        if !t
            .origin
            .ends_with("Gateway/edge/ingress: spec.servers[0].tls")
        {
            failures.push(format!("{case}: origin {:?}", t.origin));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn gateway_errors_name_file_resource_field_and_reason() {
    const GW: &str = "Gateway/edge/ingress";
    const FILES: &str = "serverCertificate: /c.pem, privateKey: /k.pem";
    let tls_rows: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "certificates with mode absent: PASSTHROUGH does not use them",
            "{credentialName: gw-cred}".into(),
            "spec.servers[0].tls.mode",
            vec![
                "not set",
                "PASSTHROUGH",
                "does not use certificates",
                "SIMPLE",
            ],
        ),
        (
            "explicit PASSTHROUGH with files",
            format!("{{mode: PASSTHROUGH, {FILES}}}"),
            "spec.servers[0].tls.mode",
            vec!["PASSTHROUGH does not use certificates"],
        ),
        (
            "SIMPLE without a certificate",
            "{mode: SIMPLE}".into(),
            "spec.servers[0].tls",
            vec!["server certificate is required"],
        ),
        (
            "serverCertificate without privateKey",
            "{mode: SIMPLE, serverCertificate: /c.pem}".into(),
            "spec.servers[0].tls.privateKey",
            vec!["required"],
        ),
        (
            "MUTUAL without any CA",
            format!("{{mode: MUTUAL, {FILES}}}"),
            "spec.servers[0].tls.caCertificates",
            vec!["required for MUTUAL"],
        ),
        (
            "OPTIONAL_MUTUAL without any CA",
            format!("{{mode: OPTIONAL_MUTUAL, {FILES}}}"),
            "spec.servers[0].tls.caCertificates",
            vec!["required for MUTUAL and OPTIONAL_MUTUAL"],
        ),
        (
            "credentialName and credentialNames",
            "{mode: SIMPLE, credentialName: a, credentialNames: [b]}".into(),
            "spec.servers[0].tls",
            vec!["mutually exclusive"],
        ),
        (
            "credentialName and tlsCertificates",
            "{mode: SIMPLE, credentialName: a, tlsCertificates: [{serverCertificate: /c.pem, \
             privateKey: /k.pem}]}"
                .into(),
            "spec.servers[0].tls",
            vec!["mutually exclusive"],
        ),
        (
            "three credentialNames",
            "{mode: SIMPLE, credentialNames: [a, b, c]}".into(),
            "spec.servers[0].tls.credentialNames",
            vec!["at most two"],
        ),
        (
            "three tlsCertificates",
            "{mode: SIMPLE, tlsCertificates: [{serverCertificate: /a, privateKey: /a}, \
             {serverCertificate: /b, privateKey: /b}, {serverCertificate: /c, privateKey: /c}]}"
                .into(),
            "spec.servers[0].tls.tlsCertificates",
            vec!["at most two"],
        ),
        (
            "ISTIO_MUTUAL",
            "{mode: ISTIO_MUTUAL}".into(),
            "spec.servers[0].tls.mode",
            vec!["not supported yet"],
        ),
        (
            "AUTO_PASSTHROUGH",
            "{mode: AUTO_PASSTHROUGH}".into(),
            "spec.servers[0].tls.mode",
            vec!["not supported yet"],
        ),
        (
            "minProtocolVersion TLSV1_1",
            format!("{{mode: SIMPLE, {FILES}, minProtocolVersion: TLSV1_1}}"),
            "spec.servers[0].tls.minProtocolVersion",
            vec!["TLS 1.2 and 1.3 only"],
        ),
        (
            "minProtocolVersion TLSV1_0",
            format!("{{mode: SIMPLE, {FILES}, minProtocolVersion: TLSV1_0}}"),
            "spec.servers[0].tls.minProtocolVersion",
            vec!["TLS 1.2 and 1.3 only"],
        ),
        (
            "maxProtocolVersion TLSV1_1",
            format!("{{mode: SIMPLE, {FILES}, maxProtocolVersion: TLSV1_1}}"),
            "spec.servers[0].tls.maxProtocolVersion",
            vec!["TLS 1.2 and 1.3 only"],
        ),
        (
            "min above max",
            format!(
                "{{mode: SIMPLE, {FILES}, minProtocolVersion: TLSV1_3, maxProtocolVersion: \
                 TLSV1_2}}"
            ),
            "spec.servers[0].tls.minProtocolVersion",
            vec!["above maxProtocolVersion"],
        ),
        (
            "cipher AES128-SHA (CBC, static RSA)",
            format!("{{mode: SIMPLE, {FILES}, cipherSuites: [AES128-SHA]}}"),
            "spec.servers[0].tls.cipherSuites[0]",
            vec![
                "\"AES128-SHA\"",
                "rustls",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "ECDHE-RSA-CHACHA20-POLY1305",
            ],
        ),
        (
            "cipher DES-CBC3-SHA after a supported one",
            format!(
                "{{mode: SIMPLE, {FILES}, cipherSuites: [ECDHE-RSA-AES128-GCM-SHA256, \
                 DES-CBC3-SHA]}}"
            ),
            "spec.servers[0].tls.cipherSuites[1]",
            vec!["\"DES-CBC3-SHA\"", "rustls", "ECDHE-RSA-AES256-GCM-SHA384"],
        ),
        (
            "verifyCertificateSpki of 16 bytes",
            format!(
                "{{mode: MUTUAL, {FILES}, caCertificates: /ca.pem, verifyCertificateSpki: \
                 [\"AAAAAAAAAAAAAAAAAAAAAA==\"]}}"
            ),
            "spec.servers[0].tls.verifyCertificateSpki[0]",
            vec!["SHA-256"],
        ),
        (
            "verifyCertificateSpki not base64",
            format!(
                "{{mode: MUTUAL, {FILES}, caCertificates: /ca.pem, verifyCertificateSpki: \
                 [\"not base64!\"]}}"
            ),
            "spec.servers[0].tls.verifyCertificateSpki[0]",
            vec!["SHA-256"],
        ),
        (
            "verifyCertificateHash of 31 bytes",
            format!(
                "{{mode: MUTUAL, {FILES}, caCertificates: /ca.pem, verifyCertificateHash: \
                 [\"{}\"]}}",
                "ab".repeat(31)
            ),
            "spec.servers[0].tls.verifyCertificateHash[0]",
            vec!["64 digits"],
        ),
        (
            "verifyCertificateHash not hex",
            format!(
                "{{mode: MUTUAL, {FILES}, caCertificates: /ca.pem, verifyCertificateHash: \
                 [\"{}\"]}}",
                "zz".repeat(32)
            ),
            "spec.servers[0].tls.verifyCertificateHash[0]",
            vec!["hex SHA-256"],
        ),
        (
            "an unknown credential scheme",
            "{mode: SIMPLE, credentialName: \"vault://gw-cred\"}".into(),
            "spec.servers[0].tls.credentialName",
            vec!["unsupported credential type"],
        ),
    ];
    let mut failures = Vec::new();
    for (case, tls, field, reasons) in tls_rows {
        if let Some(f) = missing_error(&https_server(&tls), GW, field, &reasons) {
            failures.push(format!("{case}: {f}"));
        }
    }

    let server_rows: Vec<(&str, &str, &str, Vec<&str>)> = vec![
        (
            "HTTPS without tls",
            "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.example.com]",
            "spec.servers[0].tls",
            vec!["required for HTTPS and TLS servers"],
        ),
        (
            "TLS without tls",
            "- port: {number: 443, name: tls, protocol: TLS}\n  hosts: [a.example.com]",
            "spec.servers[0].tls",
            vec!["required for HTTPS and TLS servers"],
        ),
        (
            "protocol MONGO",
            "- port: {number: 27017, name: mongo, protocol: MONGO}\n  hosts: [a.example.com]",
            "spec.servers[0].port.protocol",
            vec!["\"MONGO\"", "not supported"],
        ),
        (
            "protocol missing",
            "- port: {number: 80, name: http}\n  hosts: [a.example.com]",
            "spec.servers[0].port.protocol",
            vec!["required"],
        ),
        (
            "port 70000",
            "- port: {number: 70000, name: http, protocol: HTTP}\n  hosts: [a.example.com]",
            "spec.servers[0].port.number",
            vec!["70000", "not a valid port"],
        ),
        (
            "port 0",
            "- port: {number: 0, name: http, protocol: HTTP}\n  hosts: [a.example.com]",
            "spec.servers[0].port.number",
            vec!["not a valid port"],
        ),
        (
            "no hosts",
            "- port: {number: 80, name: http, protocol: HTTP}",
            "spec.servers[0].hosts",
            vec!["at least one host"],
        ),
        (
            "a wildcard in the middle of a host",
            "- port: {number: 80, name: http, protocol: HTTP}\n  hosts: [\"ns/a.*.com\"]",
            "spec.servers[0].hosts[0]",
            vec!["left-most"],
        ),
        (
            "bind to a unix socket",
            "- port: {number: 80, name: http, protocol: HTTP}\n  bind: \"unix:///x\"\n  hosts: \
             [a.example.com]",
            "spec.servers[0].bind",
            vec!["unix:///x", "only IP addresses"],
        ),
        (
            "TLS and plain-text servers on one port",
            "- port: {number: 8443, name: https, protocol: HTTPS}\n  hosts: [a.example.com]\n  \
             tls: {mode: SIMPLE, serverCertificate: /c.pem, privateKey: /k.pem}\n- port: \
             {number: 8443, name: http, protocol: HTTP}\n  hosts: [b.example.com]",
            "spec.servers[1].port",
            vec![
                "port 8443",
                "mix TLS and plain-text",
                "Gateway/edge/ingress: spec.servers[0]",
            ],
        ),
    ];
    for (case, servers, field, reasons) in server_rows {
        let yaml = gateway("edge", "ingress", servers);
        if let Some(f) = missing_error(&yaml, GW, field, &reasons) {
            failures.push(format!("{case}: {f}"));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn mixing_tls_and_plain_text_is_refused_across_gateways() {
    let yaml = docs(&[
        &gateway(
            "edge",
            "secure",
            "- port: {number: 443, name: https, protocol: HTTPS}\n  hosts: [a.example.com]\n  \
             tls: {mode: SIMPLE, credentialName: a-cred}",
        ),
        &gateway(
            "edge",
            "plain",
            "- port: {number: 443, name: http, protocol: HTTP}\n  hosts: [b.example.com]",
        ),
    ]);
    let failure = missing_error(
        &yaml,
        "Gateway/edge/plain",
        "spec.servers[0].port",
        &[
            "mix TLS and plain-text",
            "Gateway/edge/secure: spec.servers[0]",
        ],
    );
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
}

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
        .map(|r| (r.ports.clone(), r.destinations[0].host.as_str()))
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
        (
            "GRPC",
            Some(MUTUAL),
            ServerProtocol::Https,
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
            "protocol MONGO",
            format!("- port: {{number: 9080, protocol: MONGO, name: mongo}}{endpoint}"),
            "spec.ingress[0].port.protocol",
            vec!["\"MONGO\"", "not supported"],
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
