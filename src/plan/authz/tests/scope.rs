//! Which policies apply.

use super::*;

/// Reference: "metadata/namespace tells which namespace the policy
/// applies. If set to root namespace, the policy applies to all
/// namespaces in a mesh."
#[test]
fn namespace_and_root_namespace_scope() {
    let other = ap_in("bar", "allow-nothing", "");
    let c = compiled_as(&other, &bootstrap());
    assert!(error_lines(&c).is_empty());
    assert!(
        c.plan.authz.is_empty(),
        "another namespace's policy applies"
    );
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("bar/allow-nothing")),
        "the policy left out is named: {:?}",
        c.plan.warnings
    );
    let root = ap_in("istio-system", "allow-nothing", "");
    let p = plan(&root);
    assert_eq!(p.allow.len(), 1, "the root namespace's policy applies");
    assert_eq!(&*p.allow[0].name, "istio-system/allow-nothing");
    expect(&p, &[("GET /", get("/"), DENIED)]);
    // Another root namespace.
    let b = Bootstrap {
        root_namespace: "mesh-root".into(),
        ..bootstrap()
    };
    assert!(plan_as(&root, &b).is_empty());
    assert_eq!(plan_as(&ap_in("mesh-root", "x", ""), &b).allow.len(), 1);
}

/// Reference: "applies to workloads containing label `app: httpbin`";
/// "label `version: v1` in all namespaces" (root namespace with a
/// selector).
#[test]
fn selectors_against_the_workload_labels() {
    let selecting = |ns: &str, labels: &str| {
        ap_in(
            ns,
            "allow-nothing",
            &format!("selector:\n  matchLabels:\n    {labels}"),
        )
    };
    assert_eq!(plan(&selecting("foo", "app: httpbin")).allow.len(), 1);
    assert_eq!(
        plan(&selecting("foo", "{app: httpbin, version: v1}"))
            .allow
            .len(),
        1
    );
    assert!(plan(&selecting("foo", "app: productpage")).is_empty());
    assert!(plan(&selecting("foo", "{app: httpbin, version: v2}")).is_empty());
    assert_eq!(
        plan(&selecting("istio-system", "version: v1")).allow.len(),
        1
    );
    assert!(plan(&selecting("istio-system", "version: v2")).is_empty());
    assert!(plan(&selecting("bar", "app: httpbin")).is_empty());
}

/// `targetRefs` attach a policy to Gateway API gateways and waypoints, not
/// to a sidecar: not applied, and said so.
#[test]
fn target_refs_are_not_applied() {
    let yaml = ap(
        "waypoint-only",
        "targetRefs:\n- kind: Gateway\n  group: gateway.networking.k8s.io\n  name: waypoint\nrules:\n- {}\naction: DENY",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(error_lines(&c).is_empty(), "{:?}", error_lines(&c));
    assert!(c.plan.authz.is_empty());
    assert!(
        c.plan
            .warnings
            .iter()
            .any(|w| w.contains("foo/waypoint-only") && w.contains("targetRef")),
        "{:?}",
        c.plan.warnings
    );
}

/// An error in a policy that does not apply to this proxy is still an
/// error (`validate` checks the whole configuration, as Istio's webhook
/// does for every policy).
#[test]
fn a_policy_for_another_workload_is_still_validated() {
    let yaml = ap(
        "other-workload",
        "selector:\n  matchLabels:\n    app: productpage\naction: DENY\nrules:\n- from:\n  - source:\n      ipBlocks: [\"nope\"]",
    );
    assert_error(
        &yaml,
        "other-workload",
        "spec.rules[0].from[0].source.ipBlocks[0]",
        "",
    );
}

/// A CUSTOM policy selecting another workload does not apply to this proxy
/// (reference: "workload `selector` can be used to further restrict where
/// a policy applies"), so it has no external authorizer to miss: this
/// proxy's configuration still loads (a warning may name it), and its
/// decisions are unchanged.
#[test]
fn a_custom_policy_for_another_workload_does_not_stop_this_proxy() {
    let yaml = ap(
        "ext-authz",
        "selector:\n  matchLabels:\n    app: productpage\naction: CUSTOM\nprovider:\n  name: my-ext-authz\nrules:\n- {}",
    );
    let c = compiled_as(&yaml, &bootstrap());
    assert!(
        error_lines(&c).is_empty(),
        "a CUSTOM policy for app: productpage stops the httpbin proxy:\n{}",
        error_lines(&c).join("\n")
    );
    assert!(c.plan.authz.is_empty());
}

/// Task "Explicit deny": `deny-method-get` denies GET unless
/// `x-token: admin`; then `allow-path-ip` allows only GET `/ip` with that
/// token; adding `deny-path-ip` denies `/ip` even with it.
#[test]
fn explicit_deny_task() {
    let deny_get = ap(
        "deny-method-get",
        r#"action: DENY
rules:
- to:
  - operation:
      methods: ["GET"]
  when:
  - key: request.headers[x-token]
    notValues: ["admin"]"#,
    );
    let admin = |r: Req| r.header("x-token", "admin");
    expect(
        &plan(&deny_get),
        &[
            ("GET /get", get("/get"), DENIED),
            ("POST /post", req("POST", "/post"), ALLOWED),
            ("GET /get as admin", admin(get("/get")), ALLOWED),
            (
                "GET /get as guest",
                get("/get").header("x-token", "guest"),
                DENIED,
            ),
        ],
    );
    let allow_ip = ap(
        "allow-path-ip",
        r#"action: ALLOW
rules:
- to:
  - operation:
      paths: ["/ip"]"#,
    );
    let with_allow = deny_get.clone() + &allow_ip;
    expect(
        &plan(&with_allow),
        &[
            ("GET /ip as admin", admin(get("/ip")), ALLOWED),
            ("GET /get as admin", admin(get("/get")), DENIED),
            ("GET /ip", get("/ip"), DENIED),
        ],
    );
    let deny_ip = ap(
        "deny-path-ip",
        r#"action: DENY
rules:
- to:
  - operation:
      paths: ["/ip"]"#,
    );
    let all = with_allow + &deny_ip;
    let p = plan(&all);
    expect(&p, &[("GET /ip as admin", admin(get("/ip")), DENIED)]);
    assert_eq!(
        decide(&p, &admin(get("/ip"))).by,
        rule(Action::Deny, "foo/deny-path-ip", 0)
    );
}

/// Task "HTTP traffic" (Bookinfo): `details-viewer` allows GET from the
/// productpage's service account only.
#[test]
fn http_task_details_viewer() {
    let yaml = ap("allow-nothing", "")
        + &ap(
            "details-viewer",
            r#"selector:
  matchLabels:
    app: httpbin
action: ALLOW
rules:
- from:
  - source:
      principals: ["cluster.local/ns/foo/sa/bookinfo-productpage"]
  to:
  - operation:
      methods: ["GET"]"#,
        );
    expect(
        &plan(&yaml),
        &[
            (
                "productpage GET",
                get("/details/0").peer("foo", "bookinfo-productpage"),
                ALLOWED,
            ),
            (
                "productpage POST",
                req("POST", "/details/0").peer("foo", "bookinfo-productpage"),
                DENIED,
            ),
            (
                "reviews GET",
                get("/details/0").peer("foo", "bookinfo-reviews"),
                DENIED,
            ),
            ("plain text GET", get("/details/0"), DENIED),
        ],
    );
}

/// Labels unknown (no `--workload-labels`): whether a selecting policy
/// applies cannot be known. Applying an ALLOW policy that selects another
/// workload adds its rules to this proxy's: with `rules: [{}]` it would
/// allow every request this proxy's own ALLOW policy refuses, which Istio
/// never does. Either the configuration is refused naming the selector, or
/// the uncertain ALLOW policy can only deny (fail closed).
#[test]
fn unknown_labels_never_widen_what_allow_policies_allow() {
    let yaml = ap(
        "frontend-only",
        "rules:\n- from:\n  - source:\n      namespaces: [\"frontend\"]",
    ) + &ap(
        "public-allow-all",
        "selector:\n  matchLabels:\n    app: public\nrules:\n- {}",
    );
    let unknown = Bootstrap {
        workload_labels: None,
        ..bootstrap()
    };
    let c = compiled_as(&yaml, &unknown);
    let errors = error_lines(&c);
    if errors.iter().any(|e| e.contains("spec.selector")) {
        return;
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    expect(
        &c.plan.authz,
        &[
            ("frontend", get("/").peer("frontend", "a"), ALLOWED),
            (
                "another namespace, allowed only if this proxy were app: public",
                get("/").peer("evil", "a"),
                DENIED,
            ),
            ("plain text", get("/"), DENIED),
        ],
    );
}

/// Envoy's header matchers see the request's pseudo-headers (`:method`,
/// `:authority`, `:path`), and Istio writes conditions on them (builder
/// testdata `tcp/deny-both-http-tcp`, rule 8:
/// `request.headers[:method]`). A DENY on `:method` must deny.
#[test]
fn when_request_pseudo_headers() {
    let p = plan(&ap(
        "deny-get",
        "action: DENY\nrules:\n- when:\n  - key: \"request.headers[:method]\"\n    values: [\"GET\"]",
    ));
    expect(
        &p,
        &[
            ("GET", get("/"), DENIED),
            ("POST", req("POST", "/"), ALLOWED),
        ],
    );
    let p = plan(&ap(
        "pseudo",
        r#"rules:
- when:
  - key: "request.headers[:authority]"
    values: ["httpbin.foo"]
  - key: "request.headers[:path]"
    values: ["/status/*"]"#,
    ));
    expect(
        &p,
        &[
            ("authority and path", get("/status/200"), ALLOWED),
            ("another path", get("/headers"), DENIED),
            (
                "another authority",
                get("/status/200").host("other.foo"),
                DENIED,
            ),
        ],
    );
}
