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

/// A reload whose files did not change reuses the plan in force and loads
/// the credentials again (a certificate renewed on disk is picked up); a
/// changed file is parsed and compiled again.
#[test]
fn unchanged_files_reuse_the_plan_and_reload_the_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let rule = dr(
        "a",
        "a.example.com",
        &format!("{{mode: SIMPLE, caCertificates: {}}}", ca.display()),
    );
    std::fs::write(
        dir.path().join("a.yaml"),
        [se("a", "a.example.com"), rule.clone()].join("---\n"),
    )
    .unwrap();
    let boot = bootstrap(dir.path(), false);
    let first = validate(&boot).loaded.expect("served without the CA");
    assert!(!first.reused);
    assert!(first.inputs.is_some());
    assert_eq!(first.isolated.len(), 1, "{:?}", first.isolated);
    assert!(first.creds.trust.is_empty());
    let previous = |l: &Loaded| -> Report {
        report(
            &boot,
            Some(Previous {
                creds: &l.creds,
                server_tls: &l.server_tls,
                isolated: &l.isolated,
                plan: &l.plan,
                inputs: l.inputs.as_ref(),
            }),
        )
    };

    // The CA file appears; no configuration file changed.
    crate::devpki::DevCa::new("reuse CA")
        .write_cert(dir.path(), "ca.pem")
        .unwrap();
    let second = previous(&first).loaded.expect("loads");
    assert!(second.reused);
    assert!(
        Arc::ptr_eq(&second.plan, &first.plan),
        "shared, not rebuilt"
    );
    assert!(second.isolated.is_empty(), "{:?}", second.isolated);
    assert_eq!(second.creds.trust.len(), 1);
    assert_eq!(
        serde_json::to_string(&second.plan).unwrap(),
        serde_json::to_string(&first.plan).unwrap()
    );

    // A file changes: parsed and compiled again.
    std::fs::write(
        dir.path().join("a.yaml"),
        [se("a", "a.example.com"), rule, se("b", "b.example.com")].join("---\n"),
    )
    .unwrap();
    let third = previous(&second).loaded.expect("loads");
    assert!(!third.reused);
    assert_eq!(third.plan.outbound.services.len(), 2);

    // A file added to the directory is a change too.
    std::fs::write(dir.path().join("b.yaml"), se("c", "c.example.com")).unwrap();
    let fourth = previous(&third).loaded.expect("loads");
    assert!(!fourth.reused);
    assert_eq!(fourth.plan.outbound.services.len(), 3);
    let fifth = previous(&fourth).loaded.expect("loads");
    assert!(fifth.reused);
    assert_eq!(fifth.plan.outbound.services.len(), 3);
}
