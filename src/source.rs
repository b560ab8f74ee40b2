//! Where the configuration comes from, and how every source feeds the one
//! pipeline.
//!
//! Two sources: files (`-c`, the bootstrap's `config_paths`, polled by
//! `watch`) and, with `--kube`, the Istio objects and the Secrets they
//! name, watched on the Kubernetes API server (`source::kubernetes`) and
//! held here in a [`Store`] as documents. A load reads the store's
//! documents first, then the files, and hands them all to `config` →
//! `plan` → `load`: one parser, one compiler, one set of checks. An
//! object's messages name it `<namespace>/<Kind>/<name>` where a file's
//! name `file:line`.
//!
//! Precedence: a resource in a file with the kind, namespace and name of
//! an object from the cluster replaces it (files are local overrides); the
//! replacement is warned about, naming both.
//!
//! Objects are isolated from each other. When the configuration made of
//! every object's latest version is refused, each changed object an error
//! names (by its name, or a Secret or ConfigMap by the credential message
//! that quotes it) goes back to the version in force, or is left out when
//! it is new, and the rest is loaded again (a few rounds at most). The
//! refused versions are reported with their errors, counted in
//! `meshgate_config_errors`, and served once fixed. A new object of a kind
//! that guards others (DestinationRule, PeerAuthentication,
//! AuthorizationPolicy, RequestAuthentication, Sidecar) is not left out:
//! serving its change without it could leave traffic unprotected (a
//! ServiceEntry without the DestinationRule that originates TLS to it), so
//! the whole change is refused and the configuration in force keeps
//! serving, as with files; so is the first configuration holding one (an
//! AuthorizationPolicy is refused, as from files). `--strict` turns
//! isolation off: any error refuses the whole change.
//!
//! Pure and synchronous: the watching is `source::kubernetes`'.

#[cfg(feature = "kubernetes")]
pub mod kubernetes;
pub mod once;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::bootstrap::Bootstrap;
use crate::config::{self, meta::KUBERNETES_ORIGIN};
use crate::load::{self, LoadErrors, Loaded, Previous, Report};

/// How many times a load drops the objects its errors name and tries
/// again before it refuses the change.
const MAX_ROUNDS: usize = 4;

/// An object's identity: namespace, kind and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `kind`, e.g. `ServiceEntry`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

impl ObjectKey {
    /// The key of `namespace`/`kind`/`name`.
    pub fn new(namespace: &str, kind: &str, name: &str) -> ObjectKey {
        ObjectKey {
            namespace: namespace.into(),
            kind: kind.into(),
            name: name.into(),
        }
    }

    /// The origin the document is parsed under:
    /// `kubernetes:<namespace>/<Kind>/<name>` (see
    /// `config::meta::kubernetes_object`).
    pub fn origin(&self) -> PathBuf {
        PathBuf::from(format!("{KUBERNETES_ORIGIN}{self}"))
    }

    /// Whether `message` is about this object: it starts with the object's
    /// name, as every message about a resource does; a Secret or ConfigMap
    /// is also named by the credential messages that quote it
    /// (`Secret <namespace>/<name>`).
    fn named_in(&self, message: &str) -> bool {
        let own = message
            .strip_prefix(&self.to_string())
            .is_some_and(|rest| rest.starts_with(':'));
        let quote = format!("{} {}/{}", self.kind, self.namespace, self.name);
        let quoted = matches!(self.kind.as_str(), "Secret" | "ConfigMap")
            && message.match_indices(&quote).any(|(at, _)| {
                // The whole name: `Secret ns/a` is not `Secret ns/a-cacert`.
                !message[at + quote.len()..]
                    .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            });
        own || quoted
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}/{}", self.namespace, self.kind, self.name)
    }
}

/// One object as a document for the parser. Its `Debug` leaves the text
/// out: a Secret's keys are in it.
#[derive(Clone, PartialEq, Eq)]
pub struct Document {
    /// Which object.
    pub key: ObjectKey,
    /// Its `metadata.resourceVersion` (named in messages).
    pub version: String,
    /// The object as JSON (which is YAML), without what the parser must
    /// not see (status, managed fields, last-applied annotations).
    pub text: String,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("key", &self.key)
            .field("version", &self.version)
            .field("bytes", &self.text.len())
            .finish()
    }
}

/// Objects by key, each at one version.
pub type Objects = BTreeMap<ObjectKey, Arc<Document>>;

/// The objects of an in-memory source (the API server's), the versions
/// the configuration in force was built from, and the source's health.
#[derive(Debug, Default)]
pub struct Store {
    inner: Mutex<Inner>,
    /// Signalled at every load (see [`Store::loaded`]).
    loaded: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct Inner {
    /// Every object's latest version.
    current: Objects,
    /// The versions in the configuration in force.
    in_force: Objects,
    /// What readiness waits for, when it waits for this source.
    waiting: Option<String>,
    /// The first complete sync is done: loads may read the objects.
    synced: bool,
    /// Resources whose watch fails now, with why: the configuration in
    /// force may be out of date.
    failing: BTreeMap<String, String>,
}

impl Store {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The maps stay consistent whatever a panicking holder did.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or updates an object; whether its content changed.
    pub fn apply(&self, doc: Document) -> bool {
        let mut inner = self.lock();
        match inner.current.get(&doc.key) {
            Some(old) if old.text == doc.text => false,
            _ => {
                inner.current.insert(doc.key.clone(), Arc::new(doc));
                true
            }
        }
    }

    /// Removes an object; whether it was there.
    pub fn delete(&self, key: &ObjectKey) -> bool {
        self.lock().current.remove(key).is_some()
    }

    /// After a (re)list: the objects `in_scope` are exactly `docs` (one
    /// that is not listed was deleted meanwhile). Whether anything changed.
    pub fn replace(&self, in_scope: impl Fn(&ObjectKey) -> bool, docs: Vec<Document>) -> bool {
        let mut inner = self.lock();
        let listed: std::collections::BTreeSet<ObjectKey> =
            docs.iter().map(|d| d.key.clone()).collect();
        let before = inner.current.len();
        inner
            .current
            .retain(|k, _| !in_scope(k) || listed.contains(k));
        let mut changed = inner.current.len() != before;
        drop(inner);
        for d in docs {
            changed |= self.apply(d);
        }
        changed
    }

    /// Removes every object `in_scope` (a watch that stopped: its objects
    /// are no longer needed). Whether any was there.
    pub fn remove_all(&self, in_scope: impl Fn(&ObjectKey) -> bool) -> bool {
        self.replace(in_scope, Vec::new())
    }

    /// The latest version of every object.
    pub fn objects(&self) -> Objects {
        self.lock().current.clone()
    }

    /// Sets what readiness waits for (`None`: nothing from this source).
    pub fn set_waiting(&self, what: Option<String>) {
        self.lock().waiting = what;
    }

    /// What readiness waits for.
    pub fn waiting(&self) -> Option<String> {
        self.lock().waiting.clone()
    }

    /// Marks the first complete sync done: from now on loads read the
    /// objects (before, a load would serve part of the configuration).
    pub fn set_synced(&self) {
        self.lock().synced = true;
    }

    /// Records that the watch of `resource` fails (`Some(why)`) or works
    /// again (`None`); whether the source as a whole changed between
    /// healthy and failing.
    pub fn set_failing(&self, resource: &str, why: Option<String>) -> bool {
        let mut inner = self.lock();
        let was = inner.failing.is_empty();
        match why {
            Some(why) => inner.failing.insert(resource.to_string(), why),
            None => inner.failing.remove(resource),
        };
        was != inner.failing.is_empty()
    }

    /// The resources whose watch fails now, with why.
    pub fn failing(&self) -> BTreeMap<String, String> {
        self.lock().failing.clone()
    }

    fn snapshot(&self) -> (Objects, Objects) {
        let inner = self.lock();
        (inner.current.clone(), inner.in_force.clone())
    }

    fn commit(&self, used: Objects) {
        self.lock().in_force = used;
    }

    /// Waits until a load has read this store (any reload, published or
    /// refused: the files read with it may have changed).
    pub async fn loaded(&self) {
        self.loaded.notified().await;
    }
}

/// The object versions one load used; [`Sources::commit`] them once the
/// configuration is published.
#[derive(Debug, Default)]
pub struct Used(Option<Objects>);

/// One load from every source: what `load` reports, and the versions used.
pub struct Loading {
    /// Everything the load found; the isolated errors include the object
    /// versions that were refused.
    pub report: Report,
    /// The object versions in `report.loaded`.
    pub used: Used,
}

impl Loading {
    /// The configuration and the versions it uses, or every error.
    pub fn into_result(self) -> Result<(Loaded, Used), LoadErrors> {
        let used = self.used;
        self.report.into_result().map(|l| (l, used))
    }
}

/// The sources a configuration is read from: the bootstrap's files and,
/// when set, an in-memory [`Store`]. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    store: Option<Arc<Store>>,
}

impl Sources {
    /// Files only.
    pub fn files() -> Sources {
        Sources::default()
    }

    /// The objects of `store`, then the files.
    pub fn with_store(store: Arc<Store>) -> Sources {
        Sources { store: Some(store) }
    }

    /// The in-memory store, when there is one.
    pub fn store(&self) -> Option<&Arc<Store>> {
        self.store.as_ref()
    }

    /// Reads every source, compiles and checks, isolating objects that do
    /// not load (see the module documentation).
    pub fn report(&self, bootstrap: &Bootstrap, previous: Option<Previous<'_>>) -> Loading {
        let Some(store) = &self.store else {
            return Loading {
                report: load::report(bootstrap, previous),
                used: Used(None),
            };
        };
        let read_at = std::time::SystemTime::now();
        // A permit is kept when nobody waits: no load goes unseen.
        store.loaded.notify_one();
        let (current, in_force) = store.snapshot();
        let mut used = current;
        let mut refused: Vec<String> = Vec::new();
        let mut round = 1;
        loop {
            let origins: Vec<(PathBuf, &str)> = used
                .values()
                .map(|d| (d.key.origin(), d.text.as_str()))
                .collect();
            let (config, parse_errors) = config::load_documents(
                origins.iter().map(|(o, t)| (o.as_path(), *t)),
                &bootstrap.config_paths,
            );
            let mut report =
                load::report_parsed(&config, &parse_errors, bootstrap, previous, read_at);
            let culprits: Vec<ObjectKey> =
                if report.loaded.is_none() && !bootstrap.strict && round < MAX_ROUNDS {
                    match blame(&report.errors, &used, &in_force) {
                        Ok(culprits) => culprits,
                        Err(guard) => {
                            report.errors.push(format!(
                                "{guard}: a new {} that does not load refuses the whole change \
                                 (serving the rest without it could weaken security); the \
                                 configuration in force keeps serving",
                                guard.kind
                            ));
                            Vec::new()
                        }
                    }
                } else {
                    Vec::new()
                };
            if culprits.is_empty() {
                if let Some(loaded) = &mut report.loaded {
                    loaded.isolated.extend(refused.iter().cloned());
                }
                report.isolated.extend(refused);
                return Loading {
                    report,
                    used: Used(Some(used)),
                };
            }
            for key in culprits {
                let Some(doc) = used.get(&key).cloned() else {
                    continue;
                };
                let kept = in_force.get(&key);
                let outcome = match kept {
                    Some(old) => format!(
                        "resourceVersion {} is refused, {} stays in force",
                        doc.version, old.version
                    ),
                    None => format!(
                        "resourceVersion {} is refused; not served until fixed",
                        doc.version
                    ),
                };
                refused.extend(
                    report
                        .errors
                        .iter()
                        .filter(|e| key.named_in(e))
                        .map(|e| format!("{e} ({outcome})")),
                );
                match kept {
                    Some(old) => used.insert(key, old.clone()),
                    None => used.remove(&key),
                };
            }
            round += 1;
        }
    }

    /// [`Sources::report`] as a result.
    pub fn load(
        &self,
        bootstrap: &Bootstrap,
        previous: Option<Previous<'_>>,
    ) -> Result<(Loaded, Used), LoadErrors> {
        self.report(bootstrap, previous).into_result()
    }

    /// Records the object versions of the configuration just published:
    /// what a later load falls back to.
    pub fn commit(&self, used: Used) {
        if let (Some(store), Some(objects)) = (&self.store, used.0) {
            store.commit(objects);
        }
    }

    /// Whether a load may read the sources now: not before an in-memory
    /// source's first complete sync.
    pub fn loadable(&self) -> bool {
        self.store.as_ref().is_none_or(|s| s.lock().synced)
    }

    /// What readiness waits for from the sources, if anything.
    pub fn waiting(&self) -> Option<String> {
        self.store.as_ref().and_then(|s| s.waiting())
    }

    /// Whether a source cannot be read now (the configuration in force
    /// may be out of date).
    pub fn stale(&self) -> bool {
        self.store.as_ref().is_some_and(|s| !s.failing().is_empty())
    }
}

/// Kinds whose absence can leave traffic less protected than the change
/// meant (a ServiceEntry without the DestinationRule originating TLS to
/// it, a port without its policy, egress without the Sidecar narrowing
/// it): a new one that does not load is not left out while the rest of
/// its change is served.
const GUARDS: [&str; 5] = [
    "DestinationRule",
    "PeerAuthentication",
    "AuthorizationPolicy",
    "RequestAuthentication",
    "Sidecar",
];

/// The changed objects `errors` name (their latest version is not the one
/// in force), or a new guarding object among them (see [`GUARDS`]): then
/// the change is refused whole.
fn blame(
    errors: &[String],
    used: &Objects,
    in_force: &Objects,
) -> Result<Vec<ObjectKey>, ObjectKey> {
    let named: Vec<ObjectKey> = used
        .iter()
        .filter(|(key, doc)| in_force.get(*key) != Some(*doc))
        .filter(|(key, _)| errors.iter().any(|e| key.named_in(e)))
        .map(|(key, _)| key.clone())
        .collect();
    match named
        .iter()
        .find(|k| !in_force.contains_key(*k) && GUARDS.contains(&k.kind.as_str()))
    {
        Some(guard) => Err(guard.clone()),
        None => Ok(named),
    }
}

/// Where the service account's namespace is mounted in a pod.
pub const SERVICE_ACCOUNT_NAMESPACE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The pod's namespace, when meshgate runs in one: `POD_NAMESPACE` (the
/// downward API, as Istio's injector sets it), else the service account's
/// namespace file.
pub fn pod_namespace() -> Option<String> {
    let from_env = std::env::var("POD_NAMESPACE")
        .ok()
        .map(|n| n.trim().to_string());
    from_env.filter(|n| !n.is_empty()).or_else(|| {
        std::fs::read_to_string(SERVICE_ACCOUNT_NAMESPACE)
            .ok()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
    })
}

#[cfg(test)]
mod tests;
