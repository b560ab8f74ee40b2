//! Compile errors (Istio's validation).

use super::*;

#[test]
fn custom_is_refused() {
    let yaml = ap(
        "ext-authz",
        "action: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- to:\n  - operation:\n      paths: [\"/headers\"]",
    );
    assert_error(&yaml, "ext-authz", "spec.action", "CUSTOM");
}

/// validation.go: "DENY action without `rules` is meaningless".
#[test]
fn deny_without_rules_is_refused() {
    assert_error(
        &ap("deny-nothing", "action: DENY"),
        "deny-nothing",
        "spec.rules",
        "DENY",
    );
}

/// validation.go: "`from.source` must not be empty", "`to.operation` must
/// not be empty", "`from` must not be empty" (a `from: []` list), "`to`
/// must not be empty".
#[test]
fn empty_sources_and_operations_are_refused() {
    assert_error(
        &ap("empty-source", "rules:\n- from:\n  - source: {}"),
        "empty-source",
        "spec.rules[0].from[0].source",
        "empty",
    );
    assert_error(
        &ap("empty-op", "rules:\n- to:\n  - operation: {}"),
        "empty-op",
        "spec.rules[0].to[0].operation",
        "empty",
    );
    assert_error(
        &ap("nil-source", "rules:\n- from:\n  - {}"),
        "nil-source",
        "spec.rules[0].from[0].source",
        "",
    );
}

/// validation.go: `rule.From != nil && len(rule.From) == 0` → "`from` must
/// not be empty" (and the same for `to`). An ALLOW rule `{from: []}`
/// accepted as "any source" would allow everything.
#[test]
fn an_empty_from_or_to_list_is_refused() {
    assert_error(
        &ap("empty-from", "rules:\n- from: []"),
        "empty-from",
        "spec.rules[0].from",
        "empty",
    );
    assert_error(
        &ap("empty-to", "rules:\n- to: []"),
        "empty-to",
        "spec.rules[0].to",
        "empty",
    );
}

/// security.go `ValidateAttribute`: unknown keys, keys replaced by other
/// fields, and bracketed keys without a name are refused.
#[test]
fn bad_condition_keys_are_refused() {
    for (key, reason) in [
        ("request.unknown", "unknown"),
        ("destination.labels[version]", ""),
        ("destination.namespace", ""),
        ("destination.name", ""),
        ("request.headers", ""),
        ("request.headers[]", ""),
        ("request.auth.claims", ""),
    ] {
        let yaml = ap(
            "bad-key",
            &format!("rules:\n- when:\n  - key: {key:?}\n    values: [\"x\"]"),
        );
        assert_error(&yaml, "bad-key", "spec.rules[0].when[0]", reason);
    }
    let no_values = ap("no-values", "rules:\n- when:\n  - key: request.headers[x]");
    assert_error(&no_values, "no-values", "spec.rules[0].when[0]", "values");
}

/// security.go `ValidateIPs`, `ValidatePorts`, `CheckEmptyValues`.
#[test]
fn bad_values_are_refused() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "from:\n  - source:\n      ipBlocks: [\"10.0.0.0/33\"]",
            "spec.rules[0].from[0].source.ipBlocks[0]",
            "",
        ),
        (
            "from:\n  - source:\n      notIpBlocks: [\"not-an-ip\"]",
            "spec.rules[0].from[0].source.notIpBlocks[0]",
            "",
        ),
        (
            "from:\n  - source:\n      remoteIpBlocks: [\"300.1.1.1\"]",
            "spec.rules[0].from[0].source.remoteIpBlocks[0]",
            "",
        ),
        (
            "when:\n  - key: source.ip\n    values: [\"10.0.0.0/x\"]",
            "spec.rules[0].when[0]",
            "",
        ),
        (
            "to:\n  - operation:\n      ports: [\"http\"]",
            "spec.rules[0].to[0].operation.ports[0]",
            "port",
        ),
        (
            "to:\n  - operation:\n      notPorts: [\"70000\"]",
            "spec.rules[0].to[0].operation.notPorts[0]",
            "port",
        ),
        (
            "when:\n  - key: destination.port\n    values: [\"-1\"]",
            "spec.rules[0].when[0]",
            "port",
        ),
        (
            "from:\n  - source:\n      principals: [\"\"]",
            "spec.rules[0].from[0].source.principals[0]",
            "empty",
        ),
        (
            "to:\n  - operation:\n      methods: [\"GET\", \"\"]",
            "spec.rules[0].to[0].operation.methods[1]",
            "empty",
        ),
        (
            "from:\n  - source:\n      serviceAccounts: [\"foo/*\"]",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "wildcard",
        ),
        (
            "from:\n  - source:\n      serviceAccounts: [\"a/b/c\"]",
            "spec.rules[0].from[0].source.serviceAccounts[0]",
            "",
        ),
    ];
    for (rule_yaml, field, reason) in cases {
        let yaml = ap("bad-value", &format!("rules:\n- {rule_yaml}"));
        assert_error(&yaml, "bad-value", field, reason);
    }
}

/// validation.go: "cannot set serviceAccounts with namespaces or
/// principals".
#[test]
fn service_accounts_with_namespaces_or_principals_are_refused() {
    for other in ["namespaces: [\"foo\"]", "notPrincipals: [\"x\"]"] {
        let yaml = ap(
            "sa-and-ns",
            &format!(
                "rules:\n- from:\n  - source:\n      serviceAccounts: [\"sleep\"]\n      {other}"
            ),
        );
        assert_error(
            &yaml,
            "sa-and-ns",
            "spec.rules[0].from[0].source",
            "serviceAccounts",
        );
    }
}

/// validation.go: `provider` with a non-CUSTOM action.
#[test]
fn a_provider_without_custom_is_refused() {
    let yaml = ap(
        "provider",
        "action: DENY\nprovider:\n  name: x\nrules:\n- {}",
    );
    assert_error(&yaml, "provider", "spec.provider", "provider");
}

/// validation.go warns: "configured AuthorizationPolicy will deny all
/// traffic to TCP ports under its scope due to the use of only HTTP
/// attributes in a DENY rule; it is recommended to explicitly specify the
/// port".
#[test]
fn a_deny_rule_with_only_http_attributes_is_warned() {
    let yaml = ap(
        "deny-get",
        "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(error_lines(&c).is_empty());
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/deny-get") && w.contains("TCP")),
        "no warning that the rule denies every TCP connection: {:?}",
        c.plan.warnings
    );
    // With a port, no such warning.
    let scoped = ap(
        "deny-get",
        "action: DENY\nrules:\n- to:\n  - operation:\n      methods: [\"GET\"]\n      ports: [\"8000\"]",
    );
    let c = compiled_as(&scoped, &bootstrap());
    assert!(
        !c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/deny-get") && w.contains("deny all")),
        "{:?}",
        c.plan.warnings
    );
}
