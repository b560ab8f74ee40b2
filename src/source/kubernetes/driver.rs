//! The Kubernetes source's driver: starts the watches, applies what they
//! report to the store, follows the Secrets the configuration names, and
//! asks the reloader, once per burst of events.
//!
//! The first load waits for the first complete sync: every Istio watch
//! listed, then every Secret watch that list called for listed. Until it
//! is in service readiness says what it waits for. After it, a change is
//! loaded once every watch has listed or is failing (a Secret watch just
//! started gets its list in before the objects naming it are loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use ::kube::Client;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::credentials::credential_scopes;
use super::failure::{self, Failure};
use super::kinds::{Scope, istio_scopes};
use super::watch::{self, Report, Update};
use crate::metrics::WatchErrorLabels;
use crate::reload::{Cause, Reloads};
use crate::runtime::state::State;
use crate::source::Store;

/// Events that arrive within this of each other are one reload.
const BURST: Duration = Duration::from_millis(50);

/// The shortest time between two log lines about one failing watch (the
/// same failure; a different one is logged at once).
const LOG_EVERY: Duration = Duration::from_secs(30);

/// One running watch.
struct Watch {
    stop: CancellationToken,
    /// It has completed a list since it started.
    listed: bool,
    /// Why it fails now.
    failing: Option<String>,
    /// When its failure was last logged, and the failures left out since.
    logged: Option<(Instant, String)>,
    suppressed: u64,
}

struct Driver {
    client: Client,
    store: Arc<Store>,
    state: Arc<State>,
    reloads: Reloads,
    tx: mpsc::UnboundedSender<Report>,
    watches: BTreeMap<Scope, Watch>,
    /// The store changed since the last reload asked for.
    dirty: bool,
    /// Istio objects changed since the Secrets to watch were worked out.
    names_stale: bool,
    /// The first configuration from this source is in service.
    loaded: bool,
    /// A first load was tried and refused (try again on a change).
    refused: bool,
}

/// Runs the Kubernetes source of `state` (its `sources` hold the store)
/// until `shutdown`.
pub async fn run(client: Client, state: Arc<State>, reloads: Reloads, shutdown: CancellationToken) {
    let Some(store) = state.sources.store().cloned() else {
        warn!("the Kubernetes source has no store; not watching");
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut driver = Driver {
        client,
        store,
        state,
        reloads,
        tx,
        watches: BTreeMap::new(),
        dirty: false,
        names_stale: true,
        loaded: false,
        refused: false,
    };
    for scope in istio_scopes(&driver.state.bootstrap) {
        driver.start(scope);
    }
    driver.show_waiting();
    // Files may name Secrets too: a load that read changed files (the file
    // watcher's, SIGHUP) is followed by a look at the names.
    let files = !driver.state.bootstrap.config_paths.is_empty();
    let store = driver.store.clone();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => break,
            r = rx.recv() => r,
            () = store.loaded(), if files => {
                if driver.loaded && driver.istio_settled() {
                    driver.follow_credentials().await;
                    driver.step().await;
                }
                continue;
            }
        };
        let Some(first) = first else { break };
        driver.handle(first);
        // A burst of events is one reload.
        while let Ok(Some(more)) = tokio::time::timeout(BURST, rx.recv()).await {
            driver.handle(more);
        }
        if driver.names_stale && driver.istio_settled() {
            driver.follow_credentials().await;
        }
        driver.step().await;
    }
    for w in driver.watches.values() {
        w.stop.cancel();
    }
}

impl Driver {
    fn start(&mut self, scope: Scope) {
        let stop = CancellationToken::new();
        debug!(watch = %scope, "watch started");
        tokio::spawn(watch::run(
            self.client.clone(),
            scope.clone(),
            self.tx.clone(),
            stop.clone(),
        ));
        self.watches.insert(
            scope,
            Watch {
                stop,
                listed: false,
                failing: None,
                logged: None,
                suppressed: 0,
            },
        );
    }

    fn stop(&mut self, scope: &Scope) {
        if let Some(w) = self.watches.remove(scope) {
            w.stop.cancel();
            debug!(watch = %scope, "watch stopped");
        }
        self.dirty |= self.store.remove_all(|k| scope.contains(k));
        if self.store.set_failing(&scope.to_string(), None) {
            self.dirty = true;
        }
    }

    fn handle(&mut self, report: Report) {
        let Report { scope, update } = report;
        if !self.watches.contains_key(&scope) {
            return; // a watch stopped since
        }
        let changed = match update {
            Update::Listed(docs) => {
                let changed = self.store.replace(|k| scope.contains(k), docs);
                if let Some(w) = self.watches.get_mut(&scope) {
                    w.listed = true;
                }
                changed
            }
            Update::Applied(doc) => self.store.apply(doc),
            Update::Deleted(key) => self.store.delete(&key),
            Update::Absent => {
                let first = self.watches.get(&scope).is_some_and(|w| !w.listed);
                if first {
                    warn!(
                        "{}; meshgate reads none and looks again every {}s",
                        failure::message(&Failure::NotFound, &scope),
                        watch::RECHECK.as_secs()
                    );
                }
                if let Some(w) = self.watches.get_mut(&scope) {
                    w.listed = true;
                }
                self.store.remove_all(|k| scope.contains(k))
            }
            Update::Failed(f) => {
                self.failed(&scope, &f);
                return;
            }
            Update::Reachable => false,
        };
        self.recovered(&scope);
        if changed {
            self.dirty = true;
            if scope.kind.is_istio() {
                self.names_stale = true;
            }
        }
    }

    fn failed(&mut self, scope: &Scope, f: &Failure) {
        let message = failure::message(f, scope);
        self.state
            .metrics
            .kubernetes_watch_errors
            .get_or_create(&WatchErrorLabels {
                resource: scope.kind.resource(),
                namespace: scope.namespace.clone(),
                reason: f.reason(),
            })
            .inc();
        if !f.is_stale() {
            info!(watch = %scope, "{message}");
            return;
        }
        let Some(w) = self.watches.get_mut(scope) else {
            return;
        };
        w.failing = Some(message.clone());
        let now = Instant::now();
        if log_due(w.logged.as_ref(), &message, now) {
            let left_out = match w.suppressed {
                0 => String::new(),
                n => format!(" ({n} more since the last line)"),
            };
            warn!(
                watch = %scope,
                "{message}; retrying with backoff, the last good configuration keeps serving (meshgate_config_stale=1){left_out}"
            );
            w.logged = Some((now, message.clone()));
            w.suppressed = 0;
        } else {
            w.suppressed += 1;
        }
        self.store.set_failing(&scope.to_string(), Some(message));
        self.state.metrics.config_stale.set(1);
        if !self.loaded {
            self.show_waiting();
        }
    }

    fn recovered(&mut self, scope: &Scope) {
        let Some(w) = self.watches.get_mut(scope) else {
            return;
        };
        if w.failing.take().is_none() {
            return;
        }
        w.logged = None;
        w.suppressed = 0;
        info!(watch = %scope, "watching again");
        if self.store.set_failing(&scope.to_string(), None) {
            // Every watch works again: a reload brings what was missed and
            // clears meshgate_config_stale.
            self.dirty = true;
        }
    }

    /// Every Istio watch has listed or fails.
    fn istio_settled(&self) -> bool {
        self.watches
            .iter()
            .filter(|(s, _)| s.kind.is_istio())
            .all(|(_, w)| w.listed || w.failing.is_some())
    }

    /// Starts and stops Secret and ConfigMap watches to match what the
    /// configuration names.
    async fn follow_credentials(&mut self) {
        self.names_stale = false;
        let store = self.store.clone();
        let bootstrap = self.state.bootstrap.clone();
        let wanted =
            tokio::task::spawn_blocking(move || credential_scopes(&store, &bootstrap)).await;
        let Ok(wanted) = wanted else {
            return;
        };
        let running: BTreeSet<Scope> = self
            .watches
            .keys()
            .filter(|s| !s.kind.is_istio())
            .cloned()
            .collect();
        for scope in running.difference(&wanted) {
            self.stop(scope);
        }
        for scope in wanted.difference(&running) {
            self.start(scope.clone());
        }
    }

    /// Loads what changed, when it is time.
    async fn step(&mut self) {
        if !self.loaded {
            let synced = !self.names_stale && self.watches.values().all(|w| w.listed);
            if !synced || (self.refused && !self.dirty) {
                self.show_waiting();
                return;
            }
            self.first_load().await;
            return;
        }
        let settled = self
            .watches
            .values()
            .all(|w| w.listed || w.failing.is_some());
        if self.dirty && settled {
            self.dirty = false;
            self.reloads.trigger(Cause::Kubernetes);
        }
    }

    async fn first_load(&mut self) {
        self.dirty = false;
        self.store.set_synced();
        self.store.set_waiting(Some(
            "the first configuration from Kubernetes is loading".into(),
        ));
        match self.reloads.reload(Cause::Kubernetes).await {
            Ok(()) => {
                self.loaded = true;
                self.store.set_waiting(None);
                self.state.ready.store(true, Ordering::Release);
                info!(
                    objects = self.store.objects().len(),
                    watches = self.watches.len(),
                    "first configuration from Kubernetes in service; ready"
                );
            }
            Err(e) => {
                self.refused = true;
                self.store.set_waiting(Some(format!(
                    "the configuration from Kubernetes is refused ({} error(s), see the log); \
                     waiting for a change",
                    e.0.len()
                )));
            }
        }
    }

    /// Readiness text before the first load: what is not listed yet.
    fn show_waiting(&self) {
        if self.loaded || self.refused {
            return;
        }
        let pending: Vec<String> = self
            .watches
            .iter()
            .filter(|(_, w)| !w.listed)
            .map(|(s, w)| match &w.failing {
                Some(why) => format!("{s} ({why})"),
                None => s.to_string(),
            })
            .collect();
        let text = if pending.is_empty() {
            "the Secrets the configuration names".to_string()
        } else {
            pending.join(", ")
        };
        self.store
            .set_waiting(Some(format!("waiting for the first list of {text}")));
    }
}

/// Whether a watch's failure `message` is logged now, given the last line
/// logged for it: the first failure, a different one, or the same one
/// [`LOG_EVERY`] later.
fn log_due(logged: Option<&(Instant, String)>, message: &str, now: Instant) -> bool {
    match logged {
        None => true,
        Some((at, last)) => last != message || now.duration_since(*at) >= LOG_EVERY,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_watch_is_logged_at_most_every_30_seconds() {
        let t0 = Instant::now();
        let down = "cannot watch secrets in namespace default: connection refused";
        assert!(log_due(None, down, t0), "the first failure");
        let logged = (t0, down.to_string());
        assert!(!log_due(Some(&logged), down, t0 + Duration::from_secs(29)));
        assert!(log_due(Some(&logged), down, t0 + LOG_EVERY));
        assert!(
            log_due(
                Some(&logged),
                "forbidden to watch secrets",
                t0 + Duration::from_secs(1)
            ),
            "a different failure at once"
        );
    }
}
