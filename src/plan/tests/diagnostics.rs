//! Errors and warnings: file, resource, field and reason; insecureSkipVerify; credentialName.

use super::outbound::{EGRESS_TLS_ORIGINATION, ONE_SERVICE};
use super::*;

// === 10. errors name file, resource, field and reason ===

struct ErrorCase {
    file: &'static str,
    yaml: &'static str,
    resource: &'static str,
    field: &'static str,
    /// Words the reason must contain (case-insensitive).
    reason: &'static [&'static str],
}

const ERROR_CASES: &[ErrorCase] = &[
    ErrorCase {
        file: "istio-mutual.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mesh-mtls
  namespace: egress
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: ISTIO_MUTUAL
"#,
        resource: "DestinationRule/egress/mesh-mtls",
        field: "spec.trafficPolicy.tls.mode",
        reason: &["ISTIO_MUTUAL", "--identity-dir"],
    },
    ErrorCase {
        file: "mutual-no-cert.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: mtls
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: MUTUAL
      caCertificates: /etc/certs/ca.pem
"#,
        resource: "DestinationRule/default/mtls",
        field: "spec.trafficPolicy.tls.clientCertificate",
        reason: &["required", "MUTUAL"],
    },
    ErrorCase {
        file: "static-name-endpoint.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts: [db.internal.example]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: STATIC
  endpoints:
  - address: db1.internal.example
"#,
        resource: "ServiceEntry/default/db",
        field: "spec.endpoints[0].address",
        reason: &["STATIC"],
    },
    ErrorCase {
        file: "none-with-endpoints.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: db
spec:
  hosts: [db.internal.example]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: NONE
  endpoints:
  - address: 10.0.0.1
"#,
        resource: "ServiceEntry/default/db",
        field: "spec.endpoints",
        reason: &["NONE"],
    },
    ErrorCase {
        file: "dns-wildcard.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: wikipedia
spec:
  hosts: ["*.wikipedia.org"]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/wikipedia",
        field: "spec.resolution",
        reason: &["wildcard", "DNS"],
    },
    ErrorCase {
        file: "star-host.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: everything
spec:
  hosts: ["*"]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
"#,
        resource: "ServiceEntry/default/everything",
        field: "spec.hosts[0]",
        reason: &["\"*\""],
    },
    ErrorCase {
        file: "port-range.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 70000, name: https, protocol: HTTPS}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[0].number",
        reason: &["70000"],
    },
    ErrorCase {
        file: "duplicate-port.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTPS}
  - {number: 443, name: https-again, protocol: HTTP}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[1].number",
        reason: &["443"],
    },
    ErrorCase {
        file: "bad-duration.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: slow
spec:
  host: api.example.com
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 10parsecs
"#,
        resource: "DestinationRule/default/slow",
        field: "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        reason: &["10parsecs"],
    },
    ErrorCase {
        file: "bad-protocol.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [api.example.com]
  ports:
  - {number: 443, name: https, protocol: HTTQ}
  resolution: DNS
"#,
        resource: "ServiceEntry/default/api",
        field: "spec.ports[0].protocol",
        reason: &["HTTQ"],
    },
    ErrorCase {
        file: "credential-scheme.yaml",
        yaml: r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: vault
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: foo://vault/client-creds
"#,
        resource: "DestinationRule/default/vault",
        field: "spec.trafficPolicy.tls.credentialName",
        reason: &["foo://"],
    },
];

#[test]
fn errors_name_file_resource_field_and_reason() {
    let mut failures = Vec::new();
    for case in ERROR_CASES {
        let errs = compile_errors(case.file, case.yaml);
        if errs.0.len() != 1 {
            failures.push(format!("{}: want 1 error, got:\n{errs}", case.file));
            continue;
        }
        let e = &errs.0[0];
        let msg = errs.to_string();
        let prefix = format!("{}:1: {}: {}: ", case.file, case.resource, case.field);
        let ok_struct = e.file.as_path() == Path::new(case.file)
            && e.line == 1
            && e.resource.as_deref() == Some(case.resource)
            && e.field.as_deref() == Some(case.field);
        let Some(reason) = msg.strip_prefix(&prefix).filter(|_| ok_struct) else {
            failures.push(format!(
                "{}: want prefix {prefix:?}, got {msg:?}",
                case.file
            ));
            continue;
        };
        let lower = reason.to_lowercase();
        for word in case.reason {
            if !lower.contains(&word.to_lowercase()) {
                failures.push(format!("{}: reason lacks {word:?}: {msg}", case.file));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn every_error_in_a_file_is_reported_at_once() {
    // Good and broken documents interleaved; every broken one is reported,
    // each at its own document's line, and the good ones add nothing. (Each
    // object has its own name: a second `api` would replace the first.)
    let good = ONE_SERVICE.replace("name: api", "name: good-api");
    let docs = [
        EGRESS_TLS_ORIGINATION.split("---\n").next().unwrap(),
        ERROR_CASES[6].yaml, // port 70000
        ERROR_CASES[4].yaml, // DNS with a wildcard host
        &good,               // good
        ERROR_CASES[0].yaml, // ISTIO_MUTUAL
        ERROR_CASES[8].yaml, // connectTimeout: 10parsecs
        EGRESS_TLS_ORIGINATION.split("---\n").nth(1).unwrap(),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: broken-route
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination:
        host: a.*.example.com
"#,
    ];
    let mut yaml = String::new();
    let mut starts = Vec::new();
    let mut line = 1;
    for doc in docs {
        if !yaml.is_empty() {
            yaml.push_str("---\n");
            line += 1;
        }
        starts.push(line);
        yaml.push_str(doc);
        line += doc.lines().count();
    }
    let errs = compile_errors("many.yaml", &yaml);
    let expected = [
        (
            "ServiceEntry/default/api",
            starts[1],
            "spec.ports[0].number",
        ),
        (
            "ServiceEntry/default/wikipedia",
            starts[2],
            "spec.resolution",
        ),
        (
            "DestinationRule/egress/mesh-mtls",
            starts[4],
            "spec.trafficPolicy.tls.mode",
        ),
        (
            "DestinationRule/default/slow",
            starts[5],
            "spec.trafficPolicy.connectionPool.tcp.connectTimeout",
        ),
        (
            "VirtualService/default/broken-route",
            starts[7],
            "spec.http[0].route[0].destination.host",
        ),
    ];
    assert_eq!(errs.0.len(), expected.len(), "{errs}");
    for (resource, line, field) in expected {
        let want = format!("many.yaml:{line}: {resource}: {field}: ");
        assert!(
            errs.0.iter().any(|e| e.to_string().starts_with(&want)),
            "no error starting {want:?} in:\n{errs}"
        );
    }
    let msg = errs.to_string();
    assert!(!msg.contains("edition-cnn-com"), "{msg}");
}

// === 11. insecureSkipVerify ===

#[test]
fn insecure_skip_verify_compiles_with_a_warning() {
    let yaml = format!(
        "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
         metadata:\n  name: trust-me\n  namespace: egress\nspec:\n  host: api.example.com\n  \
         trafficPolicy:\n    tls:\n      mode: SIMPLE\n      insecureSkipVerify: true\n"
    );
    let plan = compiled(&yaml);
    let t = registered(&plan, "api.example.com", 443);
    assert_eq!(t.policy.tls.mode, TlsMode::Simple);
    assert!(t.policy.tls.insecure_skip_verify);
    let warning = plan
        .warnings
        .iter()
        .find(|w| w.contains("insecureSkipVerify"))
        .unwrap_or_else(|| panic!("no insecureSkipVerify warning: {:?}", plan.warnings));
    // The DestinationRule document starts after ONE_SERVICE and the `---`.
    let line = ONE_SERVICE.lines().count() + 2;
    assert!(
        warning.starts_with(&format!("{FILE}:{line}: DestinationRule/egress/trust-me: ")),
        "{warning}"
    );
    assert!(
        warning.contains("spec.trafficPolicy.tls.insecureSkipVerify"),
        "{warning}"
    );
}

// === 12. credentialName ===

#[test]
fn credential_name_references() {
    // (mode, credentialName, trust, identity)
    let rows = [
        (
            "MUTUAL",
            "kubernetes://istio-system/client-creds",
            TrustSource::Credential(cred(Some("istio-system"), "client-creds")),
            Some(IdentitySource::Credential(cred(
                Some("istio-system"),
                "client-creds",
            ))),
        ),
        (
            "MUTUAL",
            "kubernetes://client-creds",
            TrustSource::Credential(cred(None, "client-creds")),
            Some(IdentitySource::Credential(cred(None, "client-creds"))),
        ),
        (
            "SIMPLE",
            "client-creds",
            TrustSource::Credential(cred(None, "client-creds")),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (mode, name, trust, identity) in rows {
        let yaml = format!(
            "{ONE_SERVICE}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
             metadata:\n  name: creds\nspec:\n  host: api.example.com\n  trafficPolicy:\n    \
             tls:\n      mode: {mode}\n      credentialName: {name}\n"
        );
        let t = registered(&compiled(&yaml), "api.example.com", 443);
        let got = (t.policy.tls.trust.clone(), t.policy.tls.identity.clone());
        if got != (trust.clone(), identity.clone()) {
            failures.push(format!(
                "{mode} {name}: got {got:?}, want {:?}",
                (trust, identity)
            ));
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn a_gateway_route_to_a_service_with_several_ports_must_name_one() {
    let yaml = |port: &str| {
        format!(
            r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: web}}
spec:
  hosts: [web.internal]
  ports:
  - {{number: 8080, name: http, protocol: HTTP}}
  - {{number: 9090, name: admin, protocol: HTTP}}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [web.example.com]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.example.com]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: web.internal{port}}}
"#
        )
    };
    let errs = compile_errors("ports.yaml", &yaml(""));
    // The route's error, then the port it leaves unserved.
    assert_eq!(errs.0.len(), 2, "{errs}");
    assert!(
        errs.0[1].reason.starts_with("port 80 is not served"),
        "{errs}"
    );
    let e = &errs.0[0];
    assert_eq!(e.resource.as_deref(), Some("VirtualService/default/web"));
    assert_eq!(
        e.field.as_deref(),
        Some("spec.http[0].route[0].destination.port")
    );
    assert!(e.reason.contains("8080, 9090"), "{errs}");
    // Naming the port compiles.
    let ok = yaml(", port: {number: 9090}");
    let config = crate::config::load_str("ports.yaml", &ok).unwrap();
    assert!(crate::plan::compile(&config, &crate::bootstrap::Bootstrap::default()).is_ok());
}
