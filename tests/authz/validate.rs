//! `meshgate validate` refuses what cannot be enforced: a CUSTOM policy
//! (there is no external authorizer) exits 1 naming the file and line, the
//! resource and the field; nothing is silently allowed.

use std::process::{Command, Stdio};

use meshgate::test_util::tempdir;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

const CUSTOM: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ext-authz
  namespace: default
spec:
  action: CUSTOM
  provider:
    name: my-ext-authz
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#;

fn validate(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .env_remove("RUST_LOG")
        .env_remove("MESHGATE_LOG_LEVEL")
        .args(["validate", "--config"])
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run meshgate validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn validate_refuses_a_custom_policy() {
    let dir = tempdir();
    // A valid resource before it, so the policy's line is not 1.
    let gateway = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  servers:\n  - port: {number: 8080, name: http, protocol: HTTP}\n    hosts: [app.test]\n---\n";
    let file = dir.path().join("policies.yaml");
    std::fs::write(&file, format!("{gateway}{CUSTOM}")).unwrap();
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("AuthorizationPolicy/default/ext-authz"))
        .unwrap_or_else(|| panic!("no line names the policy:\n{out}"));
    assert!(
        line.contains(&format!("{}:9", file.display())),
        "the file and the policy's first line: {line}"
    );
    assert!(line.contains("spec.action"), "the field: {line}");
    assert!(line.contains("CUSTOM"), "the reason: {line}");
}

#[test]
fn validate_accepts_the_istio_examples_it_enforces() {
    let dir = tempdir();
    let yaml = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: default}
spec: {}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-post-dev, namespace: default}
spec:
  action: DENY
  rules:
  - from:
    - source:
        namespaces: ["dev"]
    to:
    - operation:
        methods: ["POST"]
        ports: ["8080"]
"#;
    std::fs::write(dir.path().join("ok.yaml"), yaml).unwrap();
    let (code, out) = validate(dir.path());
    assert_eq!(code, Some(0), "{out}");
}
