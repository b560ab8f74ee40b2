//! The reloader: one task serves every reason to reload (a file change
//! seen by the watcher, SIGHUP, a renewed workload certificate, a caller
//! asking), one reload at a time.
//!
//! The load pipeline (file reads, YAML, compilation, rustls builds) runs on
//! a blocking thread, so admin, stats and readiness keep answering while it
//! runs. A new configuration is checked completely before it is published;
//! then the running proxy is reconciled with it: listeners added are bound,
//! removed ones stop accepting and drain, unchanged ones keep their sockets,
//! and upstream pools and client configs no longer in use are evicted.
//! Requests that arrive while a reload runs are served together by the next
//! one, which starts after they were made.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::load::{self, LoadErrors};
use crate::metrics::ReloadLabels;
use crate::runtime::state::State;
use crate::runtime::workers::{self, Workers};

/// Why a reload was asked for (for the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// The watcher saw config, certificate or Secret files change.
    Files,
    /// SIGHUP.
    Signal,
    /// The workload certificate was renewed.
    Identity,
    /// A caller asked (the API, tests).
    Request,
    /// Objects watched on the Kubernetes API server changed.
    Kubernetes,
}

type Reply = oneshot::Sender<Result<(), LoadErrors>>;

/// Asks the reloader for reloads. Cheap to clone.
#[derive(Clone)]
pub struct Reloads(mpsc::UnboundedSender<(Cause, Option<Reply>)>);

/// The reloader's end of [`Reloads`].
pub struct Requests(mpsc::UnboundedReceiver<(Cause, Option<Reply>)>);

/// A connected pair.
pub fn channel() -> (Reloads, Requests) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Reloads(tx), Requests(rx))
}

impl Reloads {
    /// Asks for a reload without waiting for it.
    pub fn trigger(&self, cause: Cause) {
        let _ = self.0.send((cause, None));
    }

    /// Asks for a reload and waits for its result: a reload that started
    /// after this call.
    pub async fn reload(&self, cause: Cause) -> Result<(), LoadErrors> {
        let (tx, rx) = oneshot::channel();
        if self.0.send((cause, Some(tx))).is_err() {
            return Err(LoadErrors(vec!["the proxy is shutting down".into()]));
        }
        rx.await
            .unwrap_or_else(|_| Err(LoadErrors(vec!["the proxy is shutting down".into()])))
    }
}

/// Serves reload requests until `shutdown`.
pub async fn run(
    mut requests: Requests,
    state: Arc<State>,
    workers: Arc<Workers>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            r = requests.0.recv() => match r { Some(r) => r, None => return },
            () = shutdown.cancelled() => return,
        };
        // Everything asked for until now is served by this one reload.
        let mut asked = vec![first];
        while let Ok(more) = requests.0.try_recv() {
            asked.push(more);
        }
        let causes: Vec<Cause> = asked.iter().map(|(c, _)| *c).collect();
        let result = reload(&state, &workers, &causes).await;
        for (_, reply) in asked {
            if let Some(reply) = reply {
                let _ = reply.send(result.clone());
            }
        }
    }
}

/// One reload: load off the async threads, then publish and reconcile, or
/// keep the last good configuration and say why.
async fn reload(state: &Arc<State>, workers: &Workers, causes: &[Cause]) -> Result<(), LoadErrors> {
    let label = |r| ReloadLabels { result: r };
    if !state.sources.loadable() {
        // Part of the objects would be served as the whole configuration.
        return Err(LoadErrors(vec![
            "nothing is loaded before the Kubernetes source's first complete sync".into(),
        ]));
    }
    let previous = state.snapshot();
    let bootstrap = state.bootstrap.clone();
    let sources = state.sources.clone();
    let prev = previous.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        let previous = load::Previous {
            creds: &prev.creds,
            server_tls: &prev.server_tls,
            isolated: &prev.isolated,
            plan: &prev.plan,
            inputs: prev.inputs.as_ref(),
        };
        sources.load(&bootstrap, Some(previous))
    })
    .await
    .unwrap_or_else(|e| Err(LoadErrors(vec![format!("the load failed: {e}")])));
    let (loaded, used) = match loaded {
        Ok(l) => l,
        Err(e) => {
            let _ = tokio::task::spawn_blocking(crate::memory::release).await;
            state
                .metrics
                .config_reloads
                .get_or_create(&label("failure"))
                .inc();
            state.metrics.config_stale.set(1);
            for line in &e.0 {
                warn!("reload refused, keeping the last good configuration: {line}");
            }
            return Err(e);
        }
    };
    // A warning the configuration in force already had was logged when it
    // loaded: a reload logs what is new (10,000 services without
    // `caCertificates` are not 10,000 lines per reload).
    let known: std::collections::HashSet<&str> = previous
        .plan
        .warnings
        .iter()
        .chain(&previous.creds.warnings)
        .map(String::as_str)
        .collect();
    let mut unchanged = 0usize;
    for w in loaded.warnings() {
        if known.contains(w.as_str()) {
            unchanged += 1;
        } else {
            warn!("{w}");
        }
    }
    if unchanged > 0 {
        info!(
            unchanged,
            "warnings already logged for the configuration in force are not repeated (`meshgate validate` lists every one)"
        );
    }
    for e in &loaded.isolated {
        error!("{e}; left out, the rest is served");
    }
    state
        .metrics
        .config_errors
        .set(loaded.isolated.len() as i64);
    state.metrics.set_certificates(&loaded.creds);
    state
        .metrics
        .count_rotations(&previous.creds, &loaded.creds);
    drop(previous);
    if loaded.reused {
        info!(
            "no configuration file changed: the compiled plan in force is kept, credentials were loaded again"
        );
    }
    let stale = !loaded.creds.stale.is_empty();
    let loaded_isolated = loaded.isolated.len();
    let want = workers::desired(&loaded.plan, &state.bootstrap);
    let generation = state.publish(loaded);
    crate::runtime::jwks::prefetch(state);
    state.sources.commit(used);
    let changes = workers.reconcile(&want).await;
    state.upstreams.evict(generation);
    // The transient parse and the replaced configuration (unless
    // connections still hold it) are freed: resident no longer.
    let _ = tokio::task::spawn_blocking(crate::memory::release).await;
    let result = if stale || !changes.failed.is_empty() || loaded_isolated > 0 {
        "partial"
    } else {
        "success"
    };
    state
        .metrics
        .config_reloads
        .get_or_create(&label(result))
        .inc();
    // Stale too while a source cannot be read (the API server is away).
    state
        .metrics
        .config_stale
        .set(i64::from(stale || state.sources.stale()));
    info!(
        generation,
        ?causes,
        listeners_added = changes.added.len(),
        listeners_removed = changes.removed.len(),
        listeners_failed = changes.failed.len(),
        "configuration reloaded"
    );
    Ok(())
}
