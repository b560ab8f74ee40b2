//! The Kubernetes source when the API server is away, forgets history
//! (410) or forbids a resource: readiness before the first sync, the last
//! good configuration kept, `meshgate_config_stale`, and what to grant.

use super::proxy::*;

const STALE: &str = "meshgate_config_stale";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_the_first_sync_and_a_403_names_what_to_grant() {
    let e = Egress::start("one.example.test").await;
    e.fake.deny("secrets", Some("default"));
    let p = start(&e.fake, |_| {}).await;
    let body = wait_for("readiness to name the forbidden Secret", || async {
        let (status, body) = p.readiness().await;
        assert_eq!(status, 503, "{body}");
        body.contains("forbidden").then_some(body)
    })
    .await;
    assert!(
        body.contains("waiting for the first list of secrets/api-ca")
            && body.contains("in default (forbidden to list secrets in namespace default: grant get/list/watch on secrets in namespace default to the pod's service account"),
        "{body}"
    );
    // Nothing is served before the first sync.
    assert_eq!(sni(&p).await, Err(502));
    assert!(
        p.metric("meshgate_kubernetes_watch_errors_total{resource=\"secrets\",namespace=\"default\",reason=\"forbidden\"}")
            .await
            >= 1.0,
        "{}",
        p.metrics().await
    );
    assert_eq!(p.metric(STALE).await, 1.0);

    e.fake.allow("secrets", Some("default"));
    ready(&p).await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()));
    wait_for("meshgate_config_stale back to 0", || async {
        (p.metric(STALE).await == 0.0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_away_keeps_the_last_good_configuration_and_marks_it_stale() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    assert_eq!(p.metric(STALE).await, 0.0);

    e.fake.set_down(true);
    wait_for("meshgate_config_stale", || async {
        (p.metric(STALE).await == 1.0).then_some(())
    })
    .await;
    assert_eq!(sni(&p).await, Ok("one.example.test".into()), "still served");
    let text = p.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("meshgate_kubernetes_watch_errors_total{")
                && l.contains("reason=\"unreachable\"")),
        "{text}"
    );
    let (status, _) = p.readiness().await;
    assert_eq!(
        status, 200,
        "ready stays ready on the last good configuration"
    );

    e.fake.set_down(false);
    wait_for("meshgate_config_stale back to 0", || async {
        (p.metric(STALE).await == 0.0).then_some(())
    })
    .await;
    // Watching again.
    e.fake.apply(destination_rule("two.example.test"));
    wait_sni(&p, Ok("two.example.test")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_gone_is_relisted_and_missed_changes_converge() {
    let e = Egress::start("one.example.test").await;
    let p = start(&e.fake, |_| {}).await;
    ready(&p).await;
    let dr_requests = |watch: bool| -> Vec<String> {
        e.fake
            .requests()
            .into_iter()
            .filter(|r| {
                r.contains("/namespaces/default/destinationrules?") && r.contains("watch=") == watch
            })
            .collect()
    };
    let touch = || e.fake.apply(service_entry(e.upstream.addr.port()));

    // A bookmark moves the DestinationRule watch to the latest
    // resourceVersion: resuming from it after history is forgotten needs
    // no new list.
    touch();
    e.fake.bookmark();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let lists = dr_requests(false).len();
    let watches = dr_requests(true).len();
    let bookmarked = e.fake.resource_version();
    e.fake.compact();
    e.fake.disconnect();
    let resumed = wait_for("the watch resumed", || async {
        dr_requests(true).get(watches).cloned()
    })
    .await;
    assert!(
        resumed.ends_with(&format!("resourceVersion={bookmarked}")),
        "{resumed}"
    );

    // Without one, resuming from a compacted resourceVersion is 410 Gone:
    // listed again.
    touch();
    e.fake.compact();
    e.fake.disconnect();
    wait_for("a relist after 410", || async {
        (dr_requests(false).len() > lists).then_some(())
    })
    .await;

    // Changes made while meshgate could not watch are found by the relist:
    // a modification and a deletion.
    e.fake.set_down(true);
    e.fake.apply(destination_rule("two.example.test"));
    let mut other = service_entry(e.upstream.addr.port());
    other["metadata"]["name"] = "gone".into();
    other["spec"]["hosts"] = serde_json::json!(["gone.example.test"]);
    e.fake.apply(other);
    e.fake.compact();
    e.fake.set_down(false);
    wait_sni(&p, Ok("two.example.test")).await;
    let gone_known = || {
        p.proxy
            .state
            .snapshot()
            .plan
            .outbound
            .services
            .iter()
            .any(|s| format!("{s:?}").contains("gone.example.test"))
    };
    wait_for("the added ServiceEntry", || async {
        gone_known().then_some(())
    })
    .await;
    e.fake.set_down(true);
    assert!(
        e.fake
            .delete("networking.istio.io/v1", "ServiceEntry", "default", "gone")
    );
    e.fake.compact();
    e.fake.set_down(false);
    wait_for("the ServiceEntry deleted meanwhile gone", || async {
        (!gone_known()).then_some(())
    })
    .await;
    assert_eq!(sni(&p).await, Ok("two.example.test".into()));
}
