//! The fake API server under the real kube client.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::runtime::watcher;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

fn api(client: &Client, namespace: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), namespace, &service_entries())
}

fn names(items: &[DynamicObject]) -> Vec<String> {
    items.iter().map(|o| o.name_any()).collect()
}

fn api_error(result: Result<impl std::fmt::Debug, kube::Error>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn lists_and_gets_service_entries_as_dynamic_objects() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let stored = fake.apply(service_entry("default", "api", "api.example.com"));
    fake.apply(service_entry("other", "db", "db.example.com"));

    let list = api(&client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&list.items), ["api"]);
    assert_eq!(
        list.metadata.resource_version.as_deref(),
        Some(fake.resource_version().as_str())
    );
    let item = &list.items[0];
    assert_eq!(
        item.types.as_ref().unwrap().api_version,
        "networking.istio.io/v1"
    );
    assert_eq!(item.types.as_ref().unwrap().kind, "ServiceEntry");
    assert_eq!(item.data["spec"]["hosts"][0], "api.example.com");
    assert_eq!(
        item.metadata.resource_version.as_deref(),
        stored["metadata"]["resourceVersion"].as_str()
    );
    assert!(item.metadata.uid.is_some());
    assert!(item.metadata.creation_timestamp.is_some());
    assert_eq!(item.metadata.namespace.as_deref(), Some("default"));

    // The same object under another served version of the group.
    let beta = resource(
        "networking.istio.io",
        "v1beta1",
        "ServiceEntry",
        "serviceentries",
    );
    let got = Api::<DynamicObject>::namespaced_with(client.clone(), "default", &beta)
        .get("api")
        .await
        .unwrap();
    assert_eq!(
        got.types.unwrap().api_version,
        "networking.istio.io/v1beta1"
    );
    assert_eq!(got.data["spec"]["hosts"][0], "api.example.com");

    // Every namespace.
    let all = Api::<DynamicObject>::all_with(client.clone(), &service_entries())
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(names(&all.items), ["api", "db"]);

    // A missing object: the API server's 404 Status.
    let status = api_error(api(&client, "default").get("nope").await);
    assert_eq!(status.code, 404);
    assert_eq!(status.reason, "NotFound");
    assert_eq!(
        status.message,
        "serviceentries.networking.istio.io \"nope\" not found"
    );
    assert!(
        api(&client, "default")
            .get_opt("nope")
            .await
            .unwrap()
            .is_none()
    );

    let requests = fake.requests();
    assert!(
        requests
            .iter()
            .any(|r| r
                .starts_with("GET /apis/networking.istio.io/v1/namespaces/default/serviceentries")),
        "{requests:?}"
    );
    assert!(requests.contains(
        &"GET /apis/networking.istio.io/v1beta1/namespaces/default/serviceentries/api".to_string()
    ));
}

#[tokio::test]
async fn secrets_by_field_and_label_selector() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let b64 = |s: &str| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, s);
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cert-a", "namespace": "default", "labels": {"app": "gw"}},
        "type": "kubernetes.io/tls",
        "data": {"tls.crt": b64("CRT"), "tls.key": b64("KEY")},
    }));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cert-b", "namespace": "default", "labels": {"app": "other"}},
        "type": "Opaque",
        "data": {"cacert": b64("CA")},
    }));
    fake.apply(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "cert-a", "namespace": "elsewhere"},
        "type": "Opaque",
    }));
    // The kubeconfig's context namespace is `default`.
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());
    let list_names = |l: kube::core::ObjectList<Secret>| -> Vec<String> {
        l.items.iter().map(|s| s.name_any()).collect()
    };

    let by_name = secrets
        .list(&ListParams::default().fields("metadata.name=cert-a"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let a = &by_name.items[0];
    assert_eq!(a.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(a.data.as_ref().unwrap()["tls.crt"].0, b"CRT");
    assert!(
        fake.requests().iter().any(|r| r.starts_with(
            "GET /api/v1/namespaces/default/secrets?&fieldSelector=metadata.name%3Dcert-a"
        )),
        "{:?}",
        fake.requests()
    );

    for (selector, want) in [
        ("app=gw", vec!["cert-a"]),
        ("app!=gw", vec!["cert-b"]),
        ("app in (gw,other)", vec!["cert-a", "cert-b"]),
        ("app notin (gw)", vec!["cert-b"]),
        ("app,!missing", vec!["cert-a", "cert-b"]),
    ] {
        let l = secrets
            .list(&ListParams::default().labels(selector))
            .await
            .unwrap();
        assert_eq!(list_names(l), want, "labelSelector {selector}");
    }
    let tls = secrets
        .list(&ListParams::default().fields("type=kubernetes.io/tls,metadata.name!=cert-b"))
        .await
        .unwrap();
    assert_eq!(list_names(tls), ["cert-a"]);

    let b = secrets.get("cert-b").await.unwrap();
    assert_eq!(b.data.unwrap()["cacert"].0, b"CA");

    // Every namespace, by name.
    let everywhere = Api::<Secret>::all(client.clone())
        .list(&ListParams::default().fields("metadata.name=cert-a"))
        .await
        .unwrap();
    assert_eq!(everywhere.items.len(), 2);

    let status = api_error(
        secrets
            .list(&ListParams::default().fields("data.x=1"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(status.message, "field label not supported: data.x");
}

#[tokio::test]
async fn watcher_sees_apply_modify_delete_in_order() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    fake.apply(service_entry("default", "a", "a.example.com"));
    let listed_at = fake.resource_version();

    let mut w = watch_service_entries(&client, "default");
    assert_eq!(take(&mut w, 3).await, ["Init", "InitApply(a)", "InitDone"]);

    fake.apply(service_entry("default", "b", "b.example.com"));
    fake.apply(service_entry("other", "x", "x.example.com"));
    fake.apply(service_entry("default", "a", "a2.example.com"));
    assert!(fake.delete("networking.istio.io/v1", "serviceentries", "default", "b"));
    assert!(!fake.delete("networking.istio.io/v1", "ServiceEntry", "default", "b"));

    let mut seen = Vec::new();
    for _ in 0..3 {
        match next(&mut w).await.unwrap() {
            watcher::Event::Apply(o) => seen.push(format!(
                "Apply({}, {})",
                o.name_any(),
                o.data["spec"]["hosts"][0]
            )),
            watcher::Event::Delete(o) => seen.push(format!("Delete({})", o.name_any())),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [
            "Apply(b, \"b.example.com\")",
            "Apply(a, \"a2.example.com\")",
            "Delete(b)"
        ]
    );

    // What kube 5's watcher sends (its query strings start with `?&`): a
    // list with limit=500, then a watch from the list's resourceVersion with
    // bookmarks and a 290 s timeout.
    let requests = fake.requests();
    assert_eq!(requests[0], format!("GET {SES}?&limit=500"), "{requests:?}");
    assert_eq!(
        requests[1],
        format!(
            "GET {SES}?&watch=true&timeoutSeconds=290&allowWatchBookmarks=true&resourceVersion={listed_at}"
        ),
        "{requests:?}"
    );
}

#[tokio::test]
async fn watcher_relists_after_compaction_and_disconnect() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    fake.apply(service_entry("default", "a", "a.example.com"));
    fake.apply(service_entry("default", "b", "b.example.com"));
    let mut w = watch_service_entries(&client, "default");
    assert_eq!(
        take(&mut w, 4).await,
        ["Init", "InitApply(a)", "InitApply(b)", "InitDone"]
    );
    // An event through the watch: the watch is open.
    fake.apply(service_entry("default", "c", "c.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(c)"]);
    let at_c = fake.resource_version();
    let listed = lists(&fake, SES);

    // Changes the watcher misses, then history forgotten.
    fake.disconnect();
    assert!(fake.delete("networking.istio.io/v1", "serviceentries", "default", "a"));
    fake.apply(service_entry("default", "d", "d.example.com"));
    fake.compact();

    let seen = until(&mut w, |e| e == "InitDone").await;
    assert_eq!(
        seen,
        [
            format!(
                "error: error returned by apiserver during watch: too old resource version: {at_c} ({}): Expired",
                fake.resource_version()
            ),
            "Init".to_string(),
            "InitApply(b)".to_string(),
            "InitApply(c)".to_string(),
            "InitApply(d)".to_string(),
            "InitDone".to_string(),
        ]
    );
    assert_eq!(
        lists(&fake, SES),
        listed + 1,
        "a new list request: {:?}",
        fake.requests()
    );

    // Converged and watching again.
    fake.apply(service_entry("default", "e", "e.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(e)"]);
}

#[tokio::test]
async fn watcher_resumes_without_relist_after_disconnect() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let mut w = watch_service_entries(&client, "default");
    assert_eq!(take(&mut w, 2).await, ["Init", "InitDone"]);
    fake.apply(service_entry("default", "a", "a.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(a)"]);
    let at = fake.resource_version();
    let listed = lists(&fake, SES);

    fake.disconnect();
    fake.apply(service_entry("default", "b", "b.example.com"));
    assert_eq!(
        until(&mut w, |e| e.starts_with("Apply")).await,
        ["Apply(b)"]
    );
    assert_eq!(lists(&fake, SES), listed);
    let rewatch = format!("resourceVersion={at}");
    assert_eq!(
        fake.requests()
            .iter()
            .filter(|r| r.ends_with(&rewatch))
            .count(),
        1,
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn bookmarks_do_not_disturb_the_watcher_and_spare_a_relist() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    // Watches of 2 s: each ends cleanly, after everything sent on it.
    let config = watcher::Config::default().timeout(2);
    let mut w = watcher(api(&client, "default"), config).boxed();
    assert_eq!(take(&mut w, 2).await, ["Init", "InitDone"]);
    fake.apply(service_entry("default", "a", "a.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(a)"]);

    // Changes elsewhere move the resourceVersion past the watcher's; a
    // bookmark tells it; then the history is forgotten.
    fake.apply(service_entry("other", "x", "x.example.com"));
    fake.apply(service_entry("other", "y", "y.example.com"));
    let marked = fake.resource_version();
    fake.bookmark();
    fake.compact();

    // Nothing surfaces; when the watch ends the watcher resumes from the
    // bookmark's resourceVersion, which the compaction did not expire (from
    // Apply(a)'s it would have: 410 and a relist).
    let rewatch = format!("&resourceVersion={marked}");
    let start = Instant::now();
    while !fake.requests().iter().any(|r| r.ends_with(&rewatch)) {
        assert!(
            start.elapsed() < DEADLINE,
            "no watch from the bookmark: {:?}",
            fake.requests()
        );
        if let Ok(item) = tokio::time::timeout(Duration::from_millis(20), w.next()).await {
            panic!("unexpected {:?}", item.map(|i| describe(&i)));
        }
    }
    fake.apply(service_entry("default", "b", "b.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(b)"]);
    assert_eq!(lists(&fake, SES), 1, "{:?}", fake.requests());
}

#[tokio::test]
async fn raw_watch_lines_bookmark_and_410() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let ses = api(&client, "default");
    fake.apply(service_entry("default", "a", "a.example.com"));
    let old = fake.resource_version();
    fake.apply(service_entry("default", "b", "b.example.com"));

    // From a resourceVersion: the later changes, then live ones, then a
    // bookmark carrying only the resourceVersion.
    let mut s = ses
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next(&mut s).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "b"),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fake.open_watches(), 1);
    fake.apply(service_entry("default", "a", "a2.example.com"));
    match next(&mut s).await.unwrap() {
        WatchEvent::Modified(o) => assert_eq!(o.data["spec"]["hosts"][0], "a2.example.com"),
        other => panic!("unexpected {other:?}"),
    }
    fake.bookmark();
    match next(&mut s).await.unwrap() {
        WatchEvent::Bookmark(bm) => {
            assert_eq!(bm.metadata.resource_version, fake.resource_version());
            assert_eq!(bm.types.kind, "ServiceEntry");
            assert_eq!(bm.types.api_version, "networking.istio.io/v1");
        }
        other => panic!("unexpected {other:?}"),
    }

    // Without allowWatchBookmarks there are none.
    let now = fake.resource_version();
    let mut quiet = ses
        .watch(&WatchParams::default().disable_bookmarks(), &now)
        .await
        .unwrap()
        .boxed();
    fake.bookmark();
    fake.apply(service_entry("default", "c", "c.example.com"));
    match next(&mut quiet).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("unexpected {other:?}"),
    }

    // From before the compaction: one ERROR event, 410 Expired, then the end.
    fake.compact();
    let mut gone = ses
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match next(&mut gone).await.unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
            assert_eq!(
                status.message,
                format!(
                    "too old resource version: {old} ({})",
                    fake.resource_version()
                )
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(
        tokio::time::timeout(DEADLINE, gone.next())
            .await
            .unwrap()
            .is_none()
    );

    // The first watch saw the second bookmark and c too.
    assert!(matches!(
        next(&mut s).await.unwrap(),
        WatchEvent::Bookmark(_)
    ));
    match next(&mut s).await.unwrap() {
        WatchEvent::Added(o) => assert_eq!(o.name_any(), "c"),
        other => panic!("unexpected {other:?}"),
    }
    // Disconnect ends open watches; the client sees the stream end.
    fake.disconnect();
    assert!(
        tokio::time::timeout(DEADLINE, s.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        tokio::time::timeout(DEADLINE, quiet.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let start = Instant::now();
    let mut s = api(&client, "default")
        .watch(&WatchParams::default().timeout(1), &fake.resource_version())
        .await
        .unwrap()
        .boxed();
    assert!(
        tokio::time::timeout(DEADLINE, s.next())
            .await
            .unwrap()
            .is_none()
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.contains("timeoutSeconds=1&")),
        "{:?}",
        fake.requests()
    );
}

#[tokio::test]
async fn watcher_with_streaming_lists() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    fake.apply(service_entry("default", "a", "a.example.com"));
    let mut w = watcher(
        api(&client, "default"),
        watcher::Config::default().streaming_lists(),
    )
    .boxed();
    assert_eq!(take(&mut w, 3).await, ["Init", "InitApply(a)", "InitDone"]);
    fake.apply(service_entry("default", "b", "b.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(b)"]);
    let requests = fake.requests();
    assert!(
        requests[0].contains("sendInitialEvents=true")
            && requests[0].ends_with("resourceVersion=0"),
        "{requests:?}"
    );
}

#[tokio::test]
async fn denied_resource_is_403_with_the_rbac_message() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    fake.deny("secrets", Some("default"));
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let text = "secrets is forbidden: User \"system:serviceaccount:default:meshgate\" cannot list resource \"secrets\" in API group \"\" in the namespace \"default\"";

    let status = api_error(secrets.list(&ListParams::default()).await);
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(status.message, text);

    let mut w = watcher(secrets.clone(), watcher::Config::default()).boxed();
    assert_eq!(describe(&next(&mut w).await), "Init");
    let err = next(&mut w).await.unwrap_err();
    assert!(
        matches!(&err, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 403),
        "{err:?}"
    );
    assert!(err.to_string().contains(text), "{err}");

    let status = api_error(secrets.get("tls").await);
    assert_eq!(
        status.message,
        "secrets \"tls\" is forbidden: User \"system:serviceaccount:default:meshgate\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
    );

    // Another namespace is allowed; all namespaces are not.
    Api::<Secret>::namespaced(client.clone(), "other")
        .list(&ListParams::default())
        .await
        .unwrap();
    let status = api_error(
        Api::<Secret>::all(client.clone())
            .list(&ListParams::default())
            .await,
    );
    assert!(
        status.message.ends_with("at the cluster scope"),
        "{}",
        status.message
    );

    // A path prefix.
    fake.deny("/apis/security.istio.io/", None);
    let pa = resource(
        "security.istio.io",
        "v1",
        "PeerAuthentication",
        "peerauthentications",
    );
    let status = api_error(
        Api::<DynamicObject>::namespaced_with(client.clone(), "istio-system", &pa)
            .list(&ListParams::default())
            .await,
    );
    assert_eq!(
        status.message,
        "peerauthentications.security.istio.io is forbidden: User \"system:serviceaccount:default:meshgate\" cannot list resource \"peerauthentications\" in API group \"security.istio.io\" in the namespace \"istio-system\""
    );

    // Allowed again: the watcher recovers.
    fake.allow("secrets", Some("default"));
    assert_eq!(
        until(&mut w, |e| e == "InitDone").await.last().unwrap(),
        "InitDone"
    );
    secrets.list(&ListParams::default()).await.unwrap();
}

#[tokio::test]
async fn down_fails_fast_and_the_watcher_recovers() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let mut w = watch_service_entries(&client, "default");
    assert_eq!(take(&mut w, 2).await, ["Init", "InitDone"]);
    fake.apply(service_entry("default", "a", "a.example.com"));
    assert_eq!(take(&mut w, 1).await, ["Apply(a)"]);

    fake.set_down(true);
    let start = Instant::now();
    for _ in 0..3 {
        assert!(
            api(&client, "default")
                .list(&ListParams::default())
                .await
                .is_err()
        );
    }
    let item = next(&mut w).await;
    assert!(item.is_err(), "{}", describe(&item));
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    assert!(fake.refused_connections() > 0);

    fake.set_down(false);
    fake.apply(service_entry("default", "b", "b.example.com"));
    assert_eq!(
        until(&mut w, |e| e.starts_with("Apply")).await,
        ["Apply(b)"]
    );
    api(&client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn wrong_or_missing_token_is_401() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    for token in [Some("not-the-token"), None] {
        let client = client_from(&fake.kubeconfig_with(dir.path(), token, "default")).await;
        let status = api_error(api(&client, "default").list(&ListParams::default()).await);
        assert_eq!((status.code, status.reason.as_str()), (401, "Unauthorized"));
    }
    assert_eq!(fake.requests().len(), 2);
    let client = client(&fake, dir.path()).await;
    api(&client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn removed_crds_are_404_until_installed() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    fake.apply(service_entry("default", "a", "a.example.com"));
    fake.set_installed("networking.istio.io", false);
    let status = api_error(api(&client, "default").list(&ListParams::default()).await);
    assert_eq!(status.code, 404);
    assert!(status.message.contains("404 page not found"), "{status:?}");

    let mut w = watch_service_entries(&client, "default");
    assert_eq!(describe(&next(&mut w).await), "Init");
    let err = next(&mut w).await.unwrap_err();
    assert!(
        matches!(&err, watcher::Error::InitialListFailed(kube::Error::Api(s)) if s.code == 404),
        "{err:?}"
    );
    fake.set_installed("networking.istio.io", true);
    assert_eq!(
        until(&mut w, |e| e == "InitDone").await,
        ["Init", "InitApply(a)", "InitDone"]
    );
}

#[tokio::test]
async fn odd_requests_get_status_errors() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let ses = "/apis/networking.istio.io/v1/namespaces/default/serviceentries";
    let cases: &[(&str, String, u16, &str)] = &[
        ("POST", ses.to_string(), 405, "MethodNotAllowed"),
        ("DELETE", format!("{ses}/a"), 405, "MethodNotAllowed"),
        (
            "GET",
            format!("{ses}?watch=true&resourceVersion=abc"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{ses}?watch=1&timeoutSeconds=soon"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{ses}?labelSelector=app%20in%20(a"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{ses}?labelSelector=%3D%3Dx"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{ses}?fieldSelector=spec.hosts%3Dx"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            format!("{ses}?fieldSelector=nonsense"),
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/apis/unknown.example.com/v1/namespaces/default/things".into(),
            404,
            "",
        ),
        (
            "GET",
            "/apis/networking.istio.io/v9/namespaces/default/serviceentries".into(),
            404,
            "",
        ),
        (
            "GET",
            "/apis/networking.istio.io/v1/namespaces/default/foos".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/apis/networking.istio.io/v1/serviceentries/a".into(),
            404,
            "NotFound",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/secrets/a/status".into(),
            404,
            "NotFound",
        ),
        ("GET", "/api/v2/secrets".into(), 404, ""),
        ("GET", "/apis".into(), 404, ""),
        ("GET", "/apis//v1/x".into(), 404, ""),
        ("GET", "/%ff%00".into(), 404, ""),
    ];
    for (method, path, code, reason) in cases {
        let req = http::Request::builder()
            .method(*method)
            .uri(path.as_str())
            .body(Vec::new())
            .unwrap();
        let status = api_error(client.request_text(req).await);
        assert_eq!(status.code, *code, "{method} {path}: {status:?}");
        if !reason.is_empty() {
            assert_eq!(status.reason, *reason, "{method} {path}: {status:?}");
        }
    }

    // Not HTTP at all, over TLS: the connection is closed, nothing else.
    let roots = meshgate::creds::roots_from_pem(fake.ca_pem().as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(fake.addr()).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"\x00\x01 garbage \r\n\r\n").await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(DEADLINE, tls.read_to_end(&mut reply))
        .await
        .unwrap();
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"),
        "{reply:?}"
    );

    // Still serving.
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(version.git_version, "v1.34.0-fake");
    api(&client, "default")
        .list(&ListParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn concurrent_watches_see_their_own_events() {
    let fake = FakeKube::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client = client(&fake, dir.path()).await;
    let dr = resource(
        "networking.istio.io",
        "v1beta1",
        "DestinationRule",
        "destinationrules",
    );
    let watches: Vec<(&str, Watch, usize)> = vec![
        ("ns a", watch_service_entries(&client, "a"), 2),
        ("ns b", watch_service_entries(&client, "b"), 2),
        (
            "all",
            watcher(
                Api::<DynamicObject>::all_with(client.clone(), &service_entries()),
                watcher::Config::default(),
            )
            .boxed(),
            4,
        ),
        (
            "rules",
            watcher(
                Api::<DynamicObject>::namespaced_with(client.clone(), "a", &dr),
                watcher::Config::default(),
            )
            .boxed(),
            1,
        ),
        (
            "labelled",
            watcher(
                api(&client, "a"),
                watcher::Config::default().labels("app=x"),
            )
            .boxed(),
            2,
        ),
    ];
    let mut tasks = Vec::new();
    for (what, mut w, n) in watches {
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        tasks.push((
            what,
            synced_rx,
            tokio::spawn(async move {
                assert_eq!(take(&mut w, 2).await, ["Init", "InitDone"], "{what}");
                let _ = synced_tx.send(());
                let mut seen = Vec::new();
                for _ in 0..n {
                    let item = next(&mut w).await;
                    seen.push(match item {
                        Ok(watcher::Event::Apply(o)) => {
                            format!("Apply({}, {})", o.name_any(), version(&o))
                        }
                        Ok(watcher::Event::Delete(o)) => {
                            format!("Delete({}, {})", o.name_any(), version(&o))
                        }
                        other => describe(&other),
                    });
                }
                seen
            }),
        ));
    }
    let mut handles = Vec::new();
    for (what, synced, handle) in tasks {
        tokio::time::timeout(DEADLINE, synced)
            .await
            .unwrap_or_else(|_| panic!("{what} did not sync"))
            .unwrap();
        handles.push((what, handle));
    }

    let mut labelled = service_entry("a", "one", "one.example.com");
    labelled["metadata"]["labels"] = json!({"app": "x"});
    fake.apply(labelled.clone());
    fake.apply(service_entry("b", "two", "two.example.com"));
    fake.apply(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
        "metadata": {"name": "rule", "namespace": "a"},
        "spec": {"host": "one.example.com"},
    }));
    labelled["metadata"]["labels"] = json!({"app": "y"});
    fake.apply(labelled);
    assert!(fake.delete("networking.istio.io/v1", "serviceentries", "b", "two"));

    let mut results = Vec::new();
    for (what, handle) in handles {
        let seen = tokio::time::timeout(DEADLINE, handle)
            .await
            .unwrap()
            .unwrap();
        results.push((what, seen));
    }
    let v1 = "networking.istio.io/v1";
    let expect = |v: &[&str]| v.iter().map(|x| x.replace("V1", v1)).collect::<Vec<_>>();
    assert_eq!(
        results,
        [
            ("ns a", expect(&["Apply(one, V1)", "Apply(one, V1)"])),
            ("ns b", expect(&["Apply(two, V1)", "Delete(two, V1)"])),
            (
                "all",
                expect(&[
                    "Apply(one, V1)",
                    "Apply(two, V1)",
                    "Apply(one, V1)",
                    "Delete(two, V1)"
                ])
            ),
            (
                "rules",
                expect(&["Apply(rule, networking.istio.io/v1beta1)"])
            ),
            // The label change moves it out of the selector: DELETED.
            ("labelled", expect(&["Apply(one, V1)", "Delete(one, V1)"])),
        ]
    );
}

fn version(o: &DynamicObject) -> String {
    o.types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_default()
}
