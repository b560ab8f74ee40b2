use super::*;

fn doc(ns: &str, kind: &str, name: &str, version: &str, body: &str) -> Document {
    let api = match kind {
        "Secret" | "ConfigMap" => "v1",
        _ => "networking.istio.io/v1",
    };
    Document {
        key: ObjectKey::new(ns, kind, name),
        version: version.into(),
        text: format!(
            r#"{{"apiVersion":"{api}","kind":"{kind}","metadata":{{"name":"{name}","namespace":"{ns}"}},{body}}}"#
        ),
    }
}

fn service_entry(version: &str) -> Document {
    doc(
        "default",
        "ServiceEntry",
        "api",
        version,
        r#""spec":{"hosts":["api.example.com"],"ports":[{"number":443,"name":"https","protocol":"HTTPS"}],"resolution":"DNS"}"#,
    )
}

fn destination_rule(version: &str, sni: &str) -> Document {
    doc(
        "default",
        "DestinationRule",
        "api",
        version,
        &format!(
            r#""spec":{{"host":"api.example.com","trafficPolicy":{{"tls":{{"mode":"SIMPLE","sni":"{sni}"}}}}}}"#
        ),
    )
}

/// A DestinationRule that parses but does not compile.
fn uncompilable_rule(version: &str) -> Document {
    doc(
        "default",
        "DestinationRule",
        "api",
        version,
        r#""spec":{"host":"api.example.com","trafficPolicy":{"tls":{"mode":"SIMPLE","credentialName":"sds://x"}}}"#,
    )
}

fn store_with(docs: Vec<Document>) -> (Arc<Store>, Sources) {
    let store = Arc::new(Store::default());
    for d in docs {
        store.apply(d);
    }
    (store.clone(), Sources::with_store(store))
}

fn sni_in_force(loaded: &Loaded) -> Option<String> {
    loaded
        .plan
        .outbound
        .rules
        .iter()
        .find_map(|r| r.default.tls.sni.clone())
}

#[test]
fn objects_are_read_before_files_and_named_without_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.yaml");
    std::fs::write(
        &file,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\nspec:\n  host: api.example.com\n  trafficPolicy:\n    tls: {mode: SIMPLE, sni: local.example.com}\n",
    )
    .unwrap();
    let (_, sources) = store_with(vec![
        service_entry("1"),
        destination_rule("1", "cluster.example.com"),
    ]);
    let bootstrap = Bootstrap {
        config_paths: vec![file],
        ..Bootstrap::default()
    };
    let loading = sources.report(&bootstrap, None);
    let loaded = loading.report.loaded.as_ref().expect("loads");
    assert_eq!(
        sni_in_force(loaded).as_deref(),
        Some("local.example.com"),
        "the file overrides the cluster's object"
    );
    assert!(
        loading
            .report
            .warnings
            .iter()
            .any(|w| w.contains("local.yaml:1: DestinationRule/default/api: replaces the definition at default/DestinationRule/api")),
        "{:?}",
        loading.report.warnings
    );
}

#[test]
fn a_new_object_that_does_not_parse_is_left_out_and_the_rest_loads() {
    let mut broken = service_entry("5");
    broken.key.name = "other".into();
    broken.text = broken
        .text
        .replace("\"name\":\"api\"", "\"name\":\"other\"")
        .replace("\"DNS\"", "\"SOMETIMES\"");
    let (_, sources) = store_with(vec![
        service_entry("1"),
        destination_rule("2", "a.example.com"),
        broken,
    ]);
    let loading = sources.report(&Bootstrap::default(), None);
    let report = &loading.report;
    let loaded = report.loaded.as_ref().expect("the rest loads");
    assert_eq!(loaded.plan.outbound.services.len(), 1);
    assert_eq!(sni_in_force(loaded).as_deref(), Some("a.example.com"));
    assert_eq!(report.isolated.len(), 1, "{:?}", report.isolated);
    let msg = &report.isolated[0];
    assert!(
        msg.starts_with("default/ServiceEntry/other: spec.resolution")
            && msg.contains("SOMETIMES")
            && msg.contains("resourceVersion 5 is refused; not served until fixed"),
        "{msg}"
    );
    assert_eq!(
        loaded.isolated, report.isolated,
        "counted and shown as errors"
    );
}

#[test]
fn a_new_guarding_object_that_does_not_load_refuses_the_whole_change() {
    // Serving the ServiceEntry without the DestinationRule would send its
    // traffic in plain text.
    let mut broken = destination_rule("5", "x");
    broken.text = broken.text.replace("\"sni\"", "\"snii\"");
    let (store, sources) = store_with(vec![service_entry("1"), broken]);
    let errors = sources
        .load(&Bootstrap::default(), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        errors.contains("default/DestinationRule/api: spec.trafficPolicy.tls")
            && errors.contains(
                "default/DestinationRule/api: a new DestinationRule that does not load refuses the whole change"
            ),
        "{errors}"
    );

    // A CUSTOM AuthorizationPolicy is refused as from files: meshgate has
    // no external authorizer, and serving without it would leave open what
    // it closes.
    store.apply(destination_rule("6", "a.example.com"));
    store.apply(Document {
        key: ObjectKey::new("default", "AuthorizationPolicy", "ext"),
        version: "7".into(),
        text: r#"{"apiVersion":"security.istio.io/v1","kind":"AuthorizationPolicy","metadata":{"name":"ext","namespace":"default"},"spec":{"action":"CUSTOM","provider":{"name":"opa"},"rules":[{}]}}"#.into(),
    });
    let errors = sources
        .load(&Bootstrap::default(), None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        errors.contains("default/AuthorizationPolicy/ext: spec.action: CUSTOM"),
        "{errors}"
    );
}

#[test]
fn a_broken_change_keeps_the_version_in_force() {
    let (store, sources) = store_with(vec![
        service_entry("1"),
        destination_rule("2", "one.example.com"),
    ]);
    let bootstrap = Bootstrap::default();
    let (loaded, used) = sources.load(&bootstrap, None).expect("loads");
    assert_eq!(sni_in_force(&loaded).as_deref(), Some("one.example.com"));
    sources.commit(used);
    let previous = || Previous {
        creds: &loaded.creds,
        server_tls: &loaded.server_tls,
        isolated: &loaded.isolated,
        plan: &loaded.plan,
        inputs: loaded.inputs.as_ref(),
    };

    // A change that does not compile: the version in force stays.
    assert!(store.apply(uncompilable_rule("3")));
    let loading = sources.report(&bootstrap, Some(previous()));
    let now = loading.report.loaded.as_ref().expect("the rest loads");
    assert_eq!(sni_in_force(now).as_deref(), Some("one.example.com"));
    let msg = loading.report.isolated.join("\n");
    assert!(
        msg.starts_with("default/DestinationRule/api: spec.trafficPolicy.tls.credentialName")
            && msg.contains("resourceVersion 3 is refused, 2 stays in force"),
        "{msg}"
    );

    // Fixed: served.
    assert!(store.apply(destination_rule("4", "two.example.com")));
    let (now, _) = sources.load(&bootstrap, Some(previous())).expect("loads");
    assert_eq!(sni_in_force(&now).as_deref(), Some("two.example.com"));
    assert!(now.isolated.is_empty(), "{:?}", now.isolated);
}

#[test]
fn strict_refuses_the_whole_change() {
    let (_, sources) = store_with(vec![service_entry("1"), uncompilable_rule("2")]);
    let bootstrap = Bootstrap {
        strict: true,
        ..Bootstrap::default()
    };
    let errors = match sources.load(&bootstrap, None) {
        Ok(_) => panic!("strict: refused"),
        Err(e) => e.to_string(),
    };
    assert!(
        errors.starts_with("default/DestinationRule/api: "),
        "{errors}"
    );
}

#[test]
fn an_error_in_an_object_nobody_changed_refuses_the_change() {
    // A file is not an object: its errors are not isolated.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: x}\nspec: {bogus: 1}\n").unwrap();
    let (_, sources) = store_with(vec![service_entry("1")]);
    let bootstrap = Bootstrap {
        config_paths: vec![file],
        ..Bootstrap::default()
    };
    let errors = sources
        .load(&bootstrap, None)
        .err()
        .expect("refused")
        .to_string();
    assert!(
        errors.contains("bad.yaml:4: ServiceEntry/default/x"),
        "{errors}"
    );
}

#[test]
fn messages_name_objects_exactly() {
    let secret = ObjectKey::new("shop", "Secret", "gw-cert");
    assert!(secret.named_in("shop/Secret/gw-cert: data.tls.crt: not valid base64"));
    assert!(secret.named_in(
        "shop/Gateway/gw: spec.servers[0].tls.credentialName: kubernetes://gw-cert (Secret shop/gw-cert, keys tls.crt/tls.key): no certificate"
    ));
    assert!(!secret.named_in("shop/Gateway/gw: Secret shop/gw-cert-cacert has keys: x"));
    assert!(!secret.named_in("shop/Secret/gw-cert-2: bad"));
    let gw = ObjectKey::new("shop", "Gateway", "gw");
    assert!(
        !gw.named_in("x Gateway shop/gw y"),
        "only Secrets and ConfigMaps are quoted"
    );
    assert_eq!(gw.origin(), PathBuf::from("kubernetes:shop/Gateway/gw"));
}

#[test]
fn store_changes_are_content_changes() {
    let store = Store::default();
    assert!(store.apply(service_entry("1")));
    assert!(
        !store.apply(service_entry("2")),
        "a new resourceVersion alone"
    );
    assert!(store.apply(destination_rule("3", "a")));
    // A relist of DestinationRules that no longer holds it.
    assert!(store.replace(|k| k.kind == "DestinationRule", Vec::new()));
    assert_eq!(store.objects().len(), 1);
    assert!(!store.replace(|k| k.kind == "DestinationRule", Vec::new()));
    assert!(store.set_failing("secrets in default", Some("forbidden".into())));
    assert!(!store.set_failing("gateways in default", Some("down".into())));
    assert!(!store.set_failing("secrets in default", None));
    assert!(store.set_failing("gateways in default", None));
}
