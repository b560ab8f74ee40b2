//! Server TLS settings: defaults, rules and errors.

use super::*;

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
            "protocol SMTP",
            "- port: {number: 25, name: smtp, protocol: SMTP}\n  hosts: [a.example.com]",
            "spec.servers[0].port.protocol",
            vec!["\"SMTP\"", "not a protocol Istio accepts"],
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
