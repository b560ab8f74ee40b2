//! `meshgate run --kube` against the fake API server: the first sync,
//! changes applied as reloads, broken objects isolated, and what meshgate
//! asks of the API server.

use super::proxy::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_cluster_configuration_and_follows_its_changes() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(
        sni(&p).await,
        Ok("one.example.test".into()),
        "TLS originated per the DestinationRule"
    );

    // Modified: the next request follows.
    e.fake.apply(destination_rule("two.example.test"));
    wait_sni(&p, Ok("two.example.test")).await;
    assert!(
        p.metric("meshgate_config_reloads_total{result=\"success\"}")
            .await
            >= 2.0,
        "the first load and the change are reloads"
    );

    // Deleted: REGISTRY_ONLY refuses the host.
    assert!(
        e.fake
            .delete("networking.istio.io/v1", "ServiceEntry", "default", "api")
    );
    wait_sni(&p, Err(502)).await;

    // List, then watch with bookmarks; Secrets only by name, never listed
    // whole; the root namespace for Istio's kinds only.
    let requests = e.fake.requests();
    let secrets: Vec<&String> = requests.iter().filter(|r| r.contains("/secrets")).collect();
    assert!(!secrets.is_empty(), "{requests:#?}");
    assert!(
        secrets
            .iter()
            .all(|r| r.contains("fieldSelector=metadata.name%3Dapi-ca")
                && r.contains("/namespaces/default/")),
        "{secrets:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r
                .contains("/apis/networking.istio.io/v1/namespaces/istio-system/serviceentries")),
        "{requests:#?}"
    );
    assert!(!requests.iter().any(|r| r.contains("istio-system/secrets")));
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/namespaces/default/destinationrules?")
                && r.contains("watch=true")
                && r.contains("allowWatchBookmarks=true")),
        "{requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_object_is_refused_and_its_version_in_force_keeps_serving() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));
    let errors = || p.proxy.state.snapshot().isolated.clone();

    // A field Istio does not have (the fake, like a CRD without a schema,
    // stores it): refused, the version in force stays.
    let mut broken = destination_rule("broken.example.test");
    broken["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["sniff"] = 1.into();
    let rv = e.fake.apply(broken)["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let msg = wait_for("the broken version reported", || async {
        errors()
            .into_iter()
            .find(|e| e.starts_with("default/DestinationRule/api: "))
    })
    .await;
    assert!(
        msg.contains("spec.trafficPolicy.portLevelSettings[0].tls")
            && msg.contains("sniff")
            && msg.contains(&format!("resourceVersion {rv} is refused")),
        "{msg}"
    );
    assert!(
        !msg.contains("kubernetes:") && !msg.contains(".yaml"),
        "{msg}"
    );
    assert_eq!(
        sni(&p).await,
        Ok("one.example.test".into()),
        "the last good version serves"
    );
    assert_eq!(p.metric("meshgate_config_errors").await, 1.0);

    // A new object that never loaded is left out; the others are served.
    let mut other = service_entry(1);
    other["metadata"]["name"] = "other".into();
    other["spec"]["hosts"] = serde_json::json!(["other.example.test"]);
    other["spec"]["resolution"] = "SOMETIMES".into();
    e.fake.apply(other);
    wait_for("the new broken object reported", || async {
        errors()
            .iter()
            .any(|e| {
                e.starts_with("default/ServiceEntry/other: ")
                    && e.contains("not served until fixed")
            })
            .then_some(())
    })
    .await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));

    // Fixed: served, and its error is gone.
    e.fake.apply(destination_rule("two.example.test"));
    wait_sni(&p, Ok("two.example.test")).await;
    let now = errors();
    assert!(
        now.len() == 1 && now[0].starts_with("default/ServiceEntry/other: "),
        "{now:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_overrides_the_cluster_object_of_the_same_name() {
    let e = Egress::start("cluster.example.test").await;
    let dir = meshgate::test_util::tempdir();
    let local = meshgate::test_util::write(
        dir.path(),
        "local.yaml",
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: api\n  namespace: default\nspec:\n  host: {HOST}\n  trafficPolicy:\n    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {{mode: SIMPLE, credentialName: api-ca, sni: local.example.test}}\n"
        ),
    );
    let p = start(&e.fake, |b| b.config_paths = vec![local]).await;
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("local.example.test".into()));
    // A change in the cluster does not move the override.
    e.fake.apply(destination_rule("cluster2.example.test"));
    let rv = e.fake.resource_version();
    wait_for("the change loaded", || async {
        (p.metric("meshgate_config_reloads_total{result=\"success\"}")
            .await
            >= 2.0)
            .then_some(())
    })
    .await;
    assert_eq!(
        sni(&p).await,
        Ok("local.example.test".into()),
        "after resourceVersion {rv}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unenforceable_policy_in_the_cluster_is_refused_as_from_files() {
    // CUSTOM: an external authorizer meshgate does not call.
    let e = Egress::start("one.example.test").await;
    e.fake.apply(serde_json::json!({
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": "deny-all", "namespace": "istio-system"},
        "spec": {"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]},
    }));
    let p = start(&e.fake, |_| {}).await;
    let body = wait_for("the first configuration refused", || async {
        let (status, body) = p.readiness().await;
        assert_eq!(status, 503, "{body}");
        body.contains("refused").then_some(body)
    })
    .await;
    assert!(
        body.contains("the configuration from Kubernetes is refused"),
        "{body}"
    );
    assert_eq!(sni(&p).await, Err(502), "nothing served");
    assert!(
        p.metric("meshgate_config_reloads_total{result=\"failure\"}")
            .await
            >= 1.0,
        "{}",
        p.metrics().await
    );

    // Removed: served.
    assert!(e.fake.delete(
        "security.istio.io/v1",
        "AuthorizationPolicy",
        "istio-system",
        "deny-all"
    ));
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kinds_the_api_server_does_not_serve_are_read_as_none() {
    // Istio's security CRDs not installed: the networking ones still serve.
    let e = Egress::start("one.example.test").await;
    e.fake.set_installed("security.istio.io", false);
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));
    let requests = e.fake.requests();
    for version in ["v1", "v1beta1"] {
        assert!(
            requests.iter().any(|r| r.contains(&format!(
                "/apis/security.istio.io/{version}/namespaces/default/peerauthentications"
            ))),
            "every served version tried: {requests:#?}"
        );
    }
    assert_eq!(p.metric("meshgate_config_stale").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_a_local_file_names_is_watched_once_the_file_names_it() {
    use meshgate::devpki::{DevCa, LeafSpec};
    use meshgate::test_util::{ClientOpts, echo_service, https_get};
    const GW_HOST: &str = "local.example.test";
    let fake = super::common::fake_kube::FakeKube::start().await;
    let ca = DevCa::new("kube local CA");
    let leaf = ca.issue(&LeafSpec::server(&[GW_HOST]));
    fake.apply(tls_secret("gw-cert", &leaf.cert_pem, &leaf.key_pem));
    let backend = echo_service().await;
    let dir = meshgate::test_util::tempdir();
    let local = meshgate::test_util::write(dir.path(), "local.yaml", "# nothing yet\n");
    let p = start(&fake, |b| {
        b.config_paths = vec![local.clone()];
        b.watch_interval = std::time::Duration::from_millis(100);
    })
    .await;
    ready(&p).await;
    assert!(
        !fake.requests().iter().any(|r| r.contains("/secrets")),
        "no Secret is named yet"
    );
    std::fs::write(
        &local,
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: local, namespace: default}}\nspec:\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [{GW_HOST}]\n    tls: {{mode: SIMPLE, credentialName: gw-cert}}\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: local, namespace: default}}\nspec:\n  hosts: [{GW_HOST}]\n  gateways: [local]\n  http:\n  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
            backend.port()
        ),
    )
    .unwrap();
    let opts = ClientOpts {
        sni: Some(GW_HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    };
    let status = wait_for("the Gateway served with the cluster's Secret", || async {
        let addr = *p.proxy.inbound().get(&443)?;
        let r = https_get(addr, &opts, GW_HOST, "/", &[]).await.ok()?;
        Some(r.status)
    })
    .await;
    assert_eq!(status, 200);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("/namespaces/default/secrets?")
                && r.contains("metadata.name%3Dgw-cert")),
        "{:#?}",
        fake.requests()
    );
}
