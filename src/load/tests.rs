//! One load reports everything: parse, compile and credential errors and
//! every warning together.

use super::*;

fn se(name: &str, host: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: {name}}}\nspec:\n  hosts: [{host}]\n  ports: [{{number: 443, name: https, protocol: TLS}}]\n  resolution: DNS\n"
    )
}

fn dr(name: &str, host: &str, tls: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}}}\nspec:\n  host: {host}\n  trafficPolicy:\n    tls: {tls}\n"
    )
}

fn bootstrap(dir: &std::path::Path, strict: bool) -> Bootstrap {
    Bootstrap {
        config_paths: vec![dir.to_path_buf()],
        strict,
        ..Bootstrap::default()
    }
}

#[test]
fn every_problem_is_reported_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing-ca.pem");
    let yaml = [
        se("a", "a.example.com"),
        // A credential error.
        dr(
            "a",
            "a.example.com",
            &format!("{{mode: SIMPLE, caCertificates: {}}}", missing.display()),
        ),
        // A warning.
        dr(
            "b",
            "b.example.com",
            "{mode: SIMPLE, insecureSkipVerify: true}",
        ),
        // A compile error.
        se("bad", "\"*\""),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("a.yaml"), yaml).unwrap();
    // A document that does not parse, in another file.
    std::fs::write(dir.path().join("b.yaml"), "kind: [\n").unwrap();
    let report = validate(&bootstrap(dir.path(), false));
    assert!(report.loaded.is_none());
    let all = [
        &report.errors[..],
        &report.isolated[..],
        &report.warnings[..],
    ]
    .concat();
    for want in [
        "b.yaml:1: kind: invalid YAML",
        "ServiceEntry/default/bad: spec.hosts[0]",
        "DestinationRule/default/a: spec.trafficPolicy.tls",
        "missing-ca.pem",
        "insecureSkipVerify",
    ] {
        assert!(
            all.iter().any(|l| l.contains(want)),
            "{want:?} not reported:\n{}",
            all.join("\n")
        );
    }
    // The credential error is isolated; the others stop the load.
    assert!(report.isolated.iter().any(|l| l.contains("missing-ca.pem")));
    assert!(report.errors.iter().all(|l| !l.contains("missing-ca.pem")));
    assert!(
        report
            .warnings
            .iter()
            .any(|l| l.contains("insecureSkipVerify"))
    );
}

#[test]
fn a_credential_error_alone_is_served_without_it_unless_strict() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = [
        se("a", "a.example.com"),
        dr(
            "a",
            "a.example.com",
            &format!(
                "{{mode: SIMPLE, caCertificates: {}}}",
                dir.path().join("missing-ca.pem").display()
            ),
        ),
    ]
    .join("---\n");
    std::fs::write(dir.path().join("a.yaml"), yaml).unwrap();
    let report = validate(&bootstrap(dir.path(), false));
    let loaded = report.loaded.expect("served without the credential");
    assert_eq!(loaded.isolated.len(), 1, "{:?}", loaded.isolated);
    assert!(loaded.creds.trust.is_empty());
    let strict = validate(&bootstrap(dir.path(), true));
    assert!(strict.loaded.is_none());
    assert_eq!(strict.errors.len(), 1, "{:?}", strict.errors);
    assert!(strict.isolated.is_empty());
}
