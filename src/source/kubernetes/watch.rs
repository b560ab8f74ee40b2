//! One watch: `kube::runtime::watcher` over one [`Scope`], its events
//! rendered as documents and sent to the driver.
//!
//! The watcher lists, then watches from the list's resourceVersion with
//! bookmarks (so a reconnect resumes where the last bookmark left it), and
//! lists again after `410 Gone`. Errors are passed on and retried after the
//! default backoff. A list answering 404 moves to the kind's next version;
//! when no version is served the kind is reported absent (no objects) and
//! tried again from `v1` after [`RECHECK`].

use std::time::Duration;

use ::kube::Client;
use ::kube::api::{Api, DynamicObject, ListParams};
use ::kube::runtime::WatchStreamExt as _;
use ::kube::runtime::watcher::{self, Event};
use futures::StreamExt as _;
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::failure::{self, Failure};
use super::kinds::Scope;
use super::render;
use crate::source::{Document, ObjectKey};

/// How long a kind no version of which is served waits before it is
/// looked for again (its CRD may be installed later).
pub const RECHECK: Duration = Duration::from_secs(60);

/// The first wait before a failing watch's probe; it doubles to
/// [`PROBE_MAX`].
const PROBE_FIRST: Duration = Duration::from_millis(500);
const PROBE_MAX: Duration = Duration::from_secs(30);

/// What a watch tells the driver.
#[derive(Debug)]
pub enum Update {
    /// A complete (re)list: the scope's objects are exactly these.
    Listed(Vec<Document>),
    /// An object was added or modified.
    Applied(Document),
    /// An object was deleted.
    Deleted(ObjectKey),
    /// The list or watch failed; the watcher retries after a backoff.
    Failed(Failure),
    /// No version of the kind is served: it has no objects.
    Absent,
    /// After failures, a probe list succeeded: the API server answers and
    /// allows the list again (the watcher resumes by itself; an idle
    /// resumed watch sends nothing that would say so).
    Reachable,
}

/// One update of one watch.
#[derive(Debug)]
pub struct Report {
    /// The watch.
    pub scope: Scope,
    /// What happened.
    pub update: Update,
}

/// Watches `scope` until `stop`, sending every update to `tx`.
pub async fn run(
    client: Client,
    scope: Scope,
    tx: UnboundedSender<Report>,
    stop: CancellationToken,
) {
    let send = |update| {
        tx.send(Report {
            scope: scope.clone(),
            update,
        })
        .is_ok()
    };
    let versions = scope.kind.versions;
    let mut version = 0;
    loop {
        let resource = scope.kind.api_resource(versions[version]);
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), &scope.namespace, &resource);
        let mut config = watcher::Config::default();
        if let Some(name) = &scope.name {
            config = config.fields(&format!("metadata.name={name}"));
        }
        let mut events = watcher::watcher(api.clone(), config)
            .default_backoff()
            .boxed();
        let mut listing: Vec<Document> = Vec::new();
        // While failing: when to probe next, and the wait after that.
        let mut probe: Option<(tokio::time::Instant, Duration)> = None;
        loop {
            let probe_at = probe.map(|(at, _)| at);
            let item = tokio::select! {
                () = stop.cancelled() => return,
                item = events.next() => item,
                () = sleep_until(probe_at), if probe_at.is_some() => {
                    probe = match answers(&api, scope.name.as_deref()).await {
                        true => None,
                        false => probe.map(|(_, wait)| {
                            (tokio::time::Instant::now() + wait, (wait * 2).min(PROBE_MAX))
                        }),
                    };
                    if probe.is_none() && !send(Update::Reachable) {
                        return;
                    }
                    continue;
                }
            };
            // The watcher's stream does not end; if it did, start over.
            let Some(item) = item else { break };
            let update = match item {
                Ok(Event::Init) => {
                    listing.clear();
                    continue;
                }
                Ok(Event::InitApply(obj)) => {
                    listing.extend(render::render(&obj, &resource, &scope.namespace));
                    continue;
                }
                Ok(Event::InitDone) => Update::Listed(std::mem::take(&mut listing)),
                Ok(Event::Apply(obj)) => match render::render(&obj, &resource, &scope.namespace) {
                    Some(doc) => Update::Applied(doc),
                    None => continue,
                },
                Ok(Event::Delete(obj)) => match render::key(&obj, &resource, &scope.namespace) {
                    Some(key) => Update::Deleted(key),
                    None => continue,
                },
                Err(e) => match failure::classify(&e) {
                    Failure::NotFound => break,
                    f => {
                        if f.is_stale() && probe.is_none() {
                            probe =
                                Some((tokio::time::Instant::now() + PROBE_FIRST, PROBE_FIRST * 2));
                        }
                        Update::Failed(f)
                    }
                },
            };
            if !matches!(update, Update::Failed(_)) {
                probe = None;
            }
            if !send(update) {
                return;
            }
        }
        // The list answered 404: the next version, or none is served.
        if version + 1 < versions.len() {
            version += 1;
            continue;
        }
        if !send(Update::Absent) {
            return;
        }
        version = 0;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECHECK) => {}
        }
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether a one-object list of the watch's objects succeeds.
async fn answers(api: &Api<DynamicObject>, name: Option<&str>) -> bool {
    let mut params = ListParams::default().limit(1);
    if let Some(name) = name {
        params = params.fields(&format!("metadata.name={name}"));
    }
    api.list_metadata(&params).await.is_ok()
}
