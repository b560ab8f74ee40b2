//! The fake Kubernetes API server (`tests/common/fake_kube.rs`) proven with
//! the real kube client: a `kube::Client` built from the kubeconfig file the
//! fake writes (TLS with its CA, bearer token) and `kube::runtime::watcher`
//! over its lists and watches, resourceVersions, 410 Gone, bookmarks, 403,
//! disconnects and outages. Then meshgate itself on the Kubernetes source
//! (`run --kube`, `validate --kube`) against the fake: `source`, `kinds`
//! (each kind added, modified, deleted; served versions; the root
//! namespace's Sidecar), `outage`, `rotation`, `validate`, `run` (the
//! binary), with the helpers in `proxy`.
//!
//! Every wait has a deadline; no fixed sleep decides an outcome.

#![cfg(feature = "kubernetes")]

use std::path::Path;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::{ApiResource, DynamicObject};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};

#[path = "../common/mod.rs"]
mod common;

mod fake;
mod kinds;
mod outage;
mod proxy;
mod rotation;
mod run;
mod source;
mod validate;

use common::fake_kube::FakeKube;

/// Longest any single wait may take.
const DEADLINE: Duration = Duration::from_secs(4);

/// A client from a kubeconfig file, as the Kubernetes source builds one.
async fn client_from(path: &Path) -> Client {
    let kubeconfig = Kubeconfig::read_from(path).expect("read the kubeconfig");
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("a client config from the kubeconfig");
    Client::try_from(config).expect("a kube client")
}

/// A client of `fake` with its own kubeconfig written in `dir`.
async fn client(fake: &FakeKube, dir: &Path) -> Client {
    client_from(&fake.kubeconfig(dir)).await
}

fn resource(group: &str, version: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: format!("{group}/{version}"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// networking.istio.io/v1 ServiceEntry.
fn service_entries() -> ApiResource {
    resource(
        "networking.istio.io",
        "v1",
        "ServiceEntry",
        "serviceentries",
    )
}

fn service_entry(namespace: &str, name: &str, host: &str) -> Value {
    json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "hosts": [host],
            "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
            "resolution": "DNS",
        },
    })
}

type Watch<K = DynamicObject> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

/// `kube::runtime::watcher` with the default config over ServiceEntries in
/// `namespace`.
fn watch_service_entries(client: &Client, namespace: &str) -> Watch {
    let api =
        kube::Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &service_entries());
    watcher(api, watcher::Config::default()).boxed()
}

/// The next item of a stream, within the deadline.
async fn next<S: Stream + Unpin>(s: &mut S) -> S::Item {
    tokio::time::timeout(DEADLINE, s.next())
        .await
        .expect("nothing came within the deadline")
        .expect("the stream ended")
}

/// A watcher item as text: `Init`, `InitApply(name)`, `InitDone`,
/// `Apply(name)`, `Delete(name)` or `error: …`.
fn describe<K: ResourceExt>(item: &Result<watcher::Event<K>, watcher::Error>) -> String {
    match item {
        Ok(event) => event.to_string(),
        Err(e) => format!("error: {e}"),
    }
}

/// The next `n` watcher items, described.
async fn take<K: ResourceExt>(w: &mut Watch<K>, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(describe(&next(w).await));
    }
    out
}

/// Items up to and including the first one `stop` accepts, skipping
/// transport errors (a pooled connection the server closed, a reset): the
/// watcher retries those by itself. Other errors are kept.
async fn until<K: ResourceExt>(w: &mut Watch<K>, stop: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    loop {
        let item = next(w).await;
        let text = describe(&item);
        let transport = matches!(
            item,
            Err(watcher::Error::WatchStartFailed(ref e)
                | watcher::Error::InitialListFailed(ref e)
                | watcher::Error::WatchFailed(ref e))
                if !matches!(e, kube::Error::Api(_))
        );
        if !transport {
            out.push(text.clone());
        }
        if stop(&text) {
            return out;
        }
    }
}

/// How many list requests (GET without `watch=`) `fake` got for `path`.
fn lists(fake: &FakeKube, path: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| {
            r.strip_prefix("GET ")
                .and_then(|r| r.strip_prefix(path))
                .is_some_and(|q| (q.is_empty() || q.starts_with('?')) && !q.contains("watch="))
        })
        .count()
}

/// The ServiceEntry collection path in `default`.
const SES: &str = "/apis/networking.istio.io/v1/namespaces/default/serviceentries";
