//! An in-process fake Kubernetes API server, for tests that run the real
//! kube client against it.
//!
//! It speaks HTTP/1.1 over TLS (a certificate for `127.0.0.1` and
//! `localhost` from a fresh `DevCa`), requires `Authorization: Bearer
//! <token>` (401 otherwise), and serves namespaced resources read-only:
//!
//! - `GET /api/v1/namespaces/{ns}/{plural}[/{name}]` (core: secrets,
//!   configmaps) and `/apis/{group}/{version}/namespaces/{ns}/{plural}
//!   [/{name}]` (Istio's networking and security groups; an object stored
//!   under one version is served under every version of its group with
//!   `apiVersion` rewritten), plus the all-namespaces lists
//!   `/api/v1/{plural}` and `/apis/{group}/{version}/{plural}`;
//! - lists (`fieldSelector` on `metadata.name`/`metadata.namespace`, and
//!   `type` for secrets; `labelSelector` with `=`, `==`, `!=`, `in`,
//!   `notin`, `k`, `!k`; `limit`/`continue` ignored: everything in one
//!   page, no continue token);
//! - watches (`watch=1|true`, `resourceVersion`, `allowWatchBookmarks`,
//!   `timeoutSeconds`, `sendInitialEvents`): a chunked stream of JSON lines
//!   `{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": …}` with
//!   every change after the resourceVersion, then live ones; a
//!   resourceVersion older than the last `compact()` gets one `ERROR` event
//!   (Status 410 `Expired`, as the API server sends it) and the stream ends.
//!   An object that starts or stops matching a label selector is `ADDED` or
//!   `DELETED` for that watch, as the API server's watch cache does.
//!
//! The test drives it through [`FakeKube`]: objects (`apply`, `delete`),
//! history (`compact`), `bookmark`, `disconnect`, `set_down`, RBAC denials
//! (`deny`, `allow`), removing a group's CRDs (`set_installed`) or all but
//! some of its versions (`set_served_versions`), and the request log
//! (`requests`). Odd requests get a Status error (400, 404, 405),
//! never a panic; the control methods panic only on a malformed object
//! passed by the test itself.
//!
//! Use it from a test binary through the shared module:
//!
//! ```ignore
//! #[path = "../common/mod.rs"]
//! mod common;
//! use common::fake_kube::FakeKube;
//!
//! let fake = FakeKube::start().await;
//! let kubeconfig = fake.kubeconfig(dir.path());
//! ```

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use meshgate::devpki::{DevCa, LeafSpec};
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// The user named in 403 messages, as the API server names a service account.
pub const USER: &str = "system:serviceaccount:default:meshgate";

/// How long a watch lasts when the request names no `timeoutSeconds`.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(1800);

/// A running fake API server. Dropping it stops the server and closes every
/// connection.
pub struct FakeKube {
    inner: Arc<Inner>,
    addr: SocketAddr,
    ca_pem: String,
    accept: tokio::task::JoinHandle<()>,
}

struct Inner {
    state: Mutex<State>,
    token: String,
    down: AtomicBool,
    refused: AtomicUsize,
    requests: Mutex<Vec<String>>,
    /// Cancels everything at drop; `conns` is a child replaced on every
    /// `disconnect()`.
    shutdown: CancellationToken,
    conns: Mutex<CancellationToken>,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    group: String,
    plural: String,
    namespace: String,
    name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One change in the history: `obj` is what a watch sends (for a deletion,
/// the last state with the deletion's resourceVersion); `old` the state
/// before a modification, to tell selector transitions.
struct Change {
    rv: u64,
    group: String,
    plural: String,
    namespace: String,
    kind: ChangeKind,
    old: Option<Value>,
    obj: Value,
}

struct GroupInfo {
    versions: BTreeSet<String>,
    /// plural -> Kind
    resources: BTreeMap<String, String>,
    installed: bool,
}

struct State {
    rv: u64,
    /// Watches from a resourceVersion below this one get 410 Gone.
    compacted: u64,
    uid_seq: u64,
    objects: BTreeMap<Key, Value>,
    /// Every change with a resourceVersion above `compacted`.
    history: Vec<Change>,
    watchers: Vec<Watcher>,
    groups: BTreeMap<String, GroupInfo>,
    /// (resource or path prefix, namespace or every namespace)
    denied: Vec<(String, Option<String>)>,
}

/// What one request (list or watch) selects.
#[derive(Clone)]
struct Filter {
    group: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

struct Watcher {
    filter: Filter,
    api_version: String,
    kind: String,
    bookmarks: bool,
    tx: mpsc::UnboundedSender<Bytes>,
}

impl FakeKube {
    /// Starts a server on a free loopback port with a fresh CA and token.
    pub async fn start() -> FakeKube {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let ca = DevCa::new("fake-kube-ca");
        let leaf = ca.issue(&LeafSpec::server(&["localhost", "127.0.0.1"]));
        let chain = meshgate::creds::certs_from_pem(leaf.cert_pem.as_bytes())
            .expect("fake kube server certificate");
        let key =
            PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).expect("fake kube server key");
        let config = ServerConfig::builder_with_provider(meshgate::creds::provider())
            .with_safe_default_protocol_versions()
            .expect("TLS versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("fake kube server TLS config");
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake kube server");
        let addr = listener.local_addr().expect("local_addr");
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            token: random_token(),
            down: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
            conns: Mutex::new(shutdown.child_token()),
            shutdown,
        });
        let accept = tokio::spawn(accept_loop(listener, acceptor, inner.clone()));
        FakeKube {
            inner,
            addr,
            ca_pem: ca.cert_pem.clone(),
            accept,
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bearer token the server accepts.
    pub fn token(&self) -> String {
        self.inner.token.clone()
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> String {
        self.ca_pem.clone()
    }

    /// Writes `dir/kubeconfig` (server URL, CA data, the token, namespace
    /// `default`) and returns its path.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        self.kubeconfig_with(dir, Some(&self.inner.token), "default")
    }

    /// Writes `dir/kubeconfig` with the given token (none: no credentials)
    /// and context namespace.
    pub fn kubeconfig_with(&self, dir: &Path, token: Option<&str>, namespace: &str) -> PathBuf {
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        let user = match token {
            Some(t) => format!("    token: {}\n", yaml_str(t)),
            None => "    {}\n".to_string(),
        };
        let text = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: fake
  cluster:
    server: {server}
    certificate-authority-data: {ca}
users:
- name: fake
  user:
{user}contexts:
- name: fake
  context:
    cluster: fake
    user: fake
    namespace: {ns}
current-context: fake
preferences: {{}}
",
            server = self.url(),
            ns = yaml_str(namespace),
        );
        let path = dir.join("kubeconfig");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Creates or replaces an object (`apiVersion`, `kind`, `metadata.name`
    /// required; `metadata.namespace` defaults to `default`). Bumps the
    /// resourceVersion, sets `metadata.resourceVersion` (and `uid`,
    /// `creationTimestamp` when missing, kept across replacements), sends
    /// ADDED or MODIFIED to the watches, and returns the stored object.
    /// A kind the server does not know yet is registered (plural: lowercase
    /// kind + s/es/ies) under its group and version.
    pub fn apply(&self, mut obj: Value) -> Value {
        let api_version = obj
            .get("apiVersion")
            .and_then(Value::as_str)
            .expect("apply: object without apiVersion")
            .to_string();
        let kind = obj
            .get("kind")
            .and_then(Value::as_str)
            .expect("apply: object without kind")
            .to_string();
        let (group, version) = split_api_version(&api_version);
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("apply: object without metadata");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .expect("apply: object without metadata.name")
            .to_string();
        let namespace = match meta.get("namespace").and_then(Value::as_str) {
            Some(ns) => ns.to_string(),
            None => {
                meta.insert("namespace".into(), json!("default"));
                "default".to_string()
            }
        };
        let mut st = self.inner.state();
        let plural = st.register(&group, &version, &kind);
        let key = Key {
            group: group.clone(),
            plural: plural.clone(),
            namespace: namespace.clone(),
            name,
        };
        let old = st.objects.get(&key).cloned();
        st.rv += 1;
        let rv = st.rv;
        let old_meta = old.as_ref().and_then(|o| o.get("metadata"));
        let uid = match old_meta.and_then(|m| m.get("uid")) {
            Some(uid) => uid.clone(),
            None => {
                st.uid_seq += 1;
                json!(format!("00000000-0000-4000-8000-{:012x}", st.uid_seq))
            }
        };
        let created = old_meta
            .and_then(|m| m.get("creationTimestamp"))
            .cloned()
            .unwrap_or_else(|| json!(now_rfc3339()));
        let meta = obj
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .expect("metadata checked above");
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.entry("uid").or_insert(uid);
        meta.entry("creationTimestamp").or_insert(created);
        st.objects.insert(key, obj.clone());
        let kind = if old.is_some() {
            ChangeKind::Modified
        } else {
            ChangeKind::Added
        };
        st.record(Change {
            rv,
            group,
            plural,
            namespace,
            kind,
            old,
            obj: obj.clone(),
        });
        obj
    }

    /// Deletes an object named by apiVersion, plural (or Kind), namespace
    /// and name; sends DELETED (the last state, with the deletion's
    /// resourceVersion) to the watches. False when there was no such object.
    pub fn delete(
        &self,
        api_version: &str,
        plural_or_kind: &str,
        namespace: &str,
        name: &str,
    ) -> bool {
        let (group, _) = split_api_version(api_version);
        let mut st = self.inner.state();
        let plural = st.plural_of(&group, plural_or_kind);
        let key = Key {
            group: group.clone(),
            plural: plural.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
        };
        let Some(mut obj) = st.objects.remove(&key) else {
            return false;
        };
        st.rv += 1;
        let rv = st.rv;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv.to_string()));
        }
        st.record(Change {
            rv,
            group,
            plural,
            namespace: namespace.to_string(),
            kind: ChangeKind::Deleted,
            old: None,
            obj,
        });
        true
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> String {
        self.inner.state().rv.to_string()
    }

    /// Forgets the history up to now: a watch from an older resourceVersion
    /// gets `ERROR` 410 Expired. Open watches are not affected.
    pub fn compact(&self) {
        let mut st = self.inner.state();
        st.compacted = st.rv;
        st.history.clear();
    }

    /// Sends a BOOKMARK with the current resourceVersion to every open
    /// watch that asked for bookmarks (`allowWatchBookmarks=true`).
    pub fn bookmark(&self) {
        let mut st = self.inner.state();
        let rv = st.rv.to_string();
        st.watchers.retain(|w| {
            if !w.bookmarks {
                return !w.tx.is_closed();
            }
            let line = event_line(
                "BOOKMARK",
                &json!({
                    "apiVersion": w.api_version,
                    "kind": w.kind,
                    "metadata": {"resourceVersion": rv},
                }),
            );
            w.tx.send(line).is_ok()
        });
    }

    /// Closes every open connection at once (no TLS close_notify, no final
    /// chunk): open watches end as a dropped connection ends them.
    pub fn disconnect(&self) {
        {
            let mut conns = self.inner.conns.lock().unwrap_or_else(|p| p.into_inner());
            conns.cancel();
            *conns = self.inner.shutdown.child_token();
        }
        self.inner.state().watchers.clear();
    }

    /// While down, every new connection is reset as soon as it is accepted
    /// (before TLS); going down also closes every open connection.
    pub fn set_down(&self, down: bool) {
        self.inner.down.store(down, Ordering::SeqCst);
        if down {
            self.disconnect();
        }
    }

    /// Connections reset while down.
    pub fn refused_connections(&self) -> usize {
        self.inner.refused.load(Ordering::SeqCst)
    }

    /// Answers 403 Forbidden (the API server's RBAC message) to requests for
    /// `what` — a plural (`secrets`), `plural.group`
    /// (`serviceentries.networking.istio.io`) or a path prefix (starting with
    /// `/`) — in `namespace` (and to all-namespaces requests for it), or in
    /// every namespace when `None`.
    pub fn deny(&self, what: &str, namespace: Option<&str>) {
        let rule = (what.to_string(), namespace.map(str::to_string));
        let mut st = self.inner.state();
        if !st.denied.contains(&rule) {
            st.denied.push(rule);
        }
    }

    /// Lifts a `deny` with the same arguments.
    pub fn allow(&self, what: &str, namespace: Option<&str>) {
        let rule = (what.to_string(), namespace.map(str::to_string));
        self.inner.state().denied.retain(|r| *r != rule);
    }

    /// Removes (false) or restores (true) every version of a group, as
    /// deleting or installing its CRDs would: its paths answer 404 `404 page
    /// not found` while removed. Objects are kept.
    pub fn set_installed(&self, group: &str, installed: bool) {
        let mut st = self.inner.state();
        if let Some(g) = st.groups.get_mut(group) {
            g.installed = installed;
        }
    }

    /// Serves `group` at `versions` only, as a cluster whose CRDs have
    /// other served versions: the others answer 404 `404 page not found`.
    /// Objects are kept (served under each of `versions`); `apply` of an
    /// object at another version serves that version again.
    pub fn set_served_versions(&self, group: &str, versions: &[&str]) {
        let mut st = self.inner.state();
        if let Some(g) = st.groups.get_mut(group) {
            g.versions = versions.iter().map(|v| v.to_string()).collect();
        }
    }

    /// Every request received so far, as `METHOD /path?query` (query as
    /// sent, percent-encoded), in order.
    pub fn requests(&self) -> Vec<String> {
        self.inner
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Watches currently open (their connection still reading).
    pub fn open_watches(&self) -> usize {
        let mut st = self.inner.state();
        st.watchers.retain(|w| !w.tx.is_closed());
        st.watchers.len()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.inner.shutdown.cancel();
        self.accept.abort();
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl State {
    fn new() -> State {
        let mut groups = BTreeMap::new();
        let mut add = |group: &str, versions: &[&str], kinds: &[&str]| {
            groups.insert(
                group.to_string(),
                GroupInfo {
                    versions: versions.iter().map(|v| v.to_string()).collect(),
                    resources: kinds
                        .iter()
                        .map(|k| (plural_of(k), k.to_string()))
                        .collect(),
                    installed: true,
                },
            );
        };
        add("", &["v1"], &["Secret", "ConfigMap"]);
        add(
            "networking.istio.io",
            &["v1", "v1beta1", "v1alpha3"],
            &[
                "ServiceEntry",
                "DestinationRule",
                "Gateway",
                "VirtualService",
                "Sidecar",
                "WorkloadEntry",
            ],
        );
        add(
            "security.istio.io",
            &["v1", "v1beta1"],
            &[
                "PeerAuthentication",
                "AuthorizationPolicy",
                "RequestAuthentication",
            ],
        );
        State {
            rv: 1,
            compacted: 0,
            uid_seq: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            watchers: Vec::new(),
            groups,
            denied: Vec::new(),
        }
    }

    /// The plural for `kind` in `group`, registering the group, version and
    /// kind when new.
    fn register(&mut self, group: &str, version: &str, kind: &str) -> String {
        let g = self
            .groups
            .entry(group.to_string())
            .or_insert_with(|| GroupInfo {
                versions: BTreeSet::new(),
                resources: BTreeMap::new(),
                installed: true,
            });
        g.versions.insert(version.to_string());
        if let Some((plural, _)) = g.resources.iter().find(|(_, k)| *k == kind) {
            return plural.clone();
        }
        let plural = plural_of(kind);
        g.resources.insert(plural.clone(), kind.to_string());
        plural
    }

    /// `word` as a plural of `group`: itself if it is one, the plural of the
    /// Kind it names, or else taken as a plural.
    fn plural_of(&self, group: &str, word: &str) -> String {
        if let Some(g) = self.groups.get(group) {
            if g.resources.contains_key(word) {
                return word.to_string();
            }
            if let Some((plural, _)) = g.resources.iter().find(|(_, k)| *k == word) {
                return plural.clone();
            }
        }
        word.to_string()
    }

    fn kind_of(&self, group: &str, plural: &str) -> Option<String> {
        self.groups.get(group)?.resources.get(plural).cloned()
    }

    /// Sends a change to the watches it concerns and keeps it in history.
    fn record(&mut self, change: Change) {
        self.watchers
            .retain(|w| match watch_event(&w.filter, &change) {
                Some(kind) => {
                    w.tx.send(event_line(kind, &served(&change.obj, &w.api_version)))
                        .is_ok()
                }
                None => !w.tx.is_closed(),
            });
        self.history.push(change);
    }

    fn denied(&self, path: &str, t: &Target) -> bool {
        let qualified = format!("{}.{}", t.plural, t.group);
        self.denied.iter().any(|(what, ns)| {
            let resource = if what.starts_with('/') {
                path.starts_with(what.as_str())
            } else {
                *what == t.plural || *what == qualified
            };
            let namespace = match (ns, &t.namespace) {
                (None, _) | (Some(_), None) => true,
                (Some(rule), Some(ns)) => rule == ns,
            };
            resource && namespace
        })
    }
}

/// The event type a watch with `filter` sees for `change`, if any. A
/// modification that moves an object into or out of a selector's match is
/// ADDED or DELETED for that watch.
fn watch_event(filter: &Filter, change: &Change) -> Option<&'static str> {
    if filter.group != change.group
        || filter.plural != change.plural
        || filter
            .namespace
            .as_ref()
            .is_some_and(|ns| *ns != change.namespace)
    {
        return None;
    }
    let now = filter.matches(&change.obj);
    match change.kind {
        ChangeKind::Added => now.then_some("ADDED"),
        ChangeKind::Deleted => now.then_some("DELETED"),
        ChangeKind::Modified => {
            let before = change.old.as_ref().is_some_and(|o| filter.matches(o));
            match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            }
        }
    }
}

impl Filter {
    fn matches(&self, obj: &Value) -> bool {
        let meta = obj.get("metadata");
        let name = meta.and_then(|m| m.get("name")).and_then(Value::as_str);
        if let Some(want) = &self.name
            && name != Some(want.as_str())
        {
            return false;
        }
        let empty = serde_json::Map::new();
        let labels = meta
            .and_then(|m| m.get("labels"))
            .and_then(Value::as_object)
            .unwrap_or(&empty);
        self.labels.iter().all(|r| r.matches(labels)) && self.fields.iter().all(|r| r.matches(obj))
    }
}

#[derive(Clone, Debug)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl LabelReq {
    fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => labels.contains_key(k),
            LabelReq::NotExists(k) => !labels.contains_key(k),
        }
    }
}

#[derive(Clone, Debug)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

impl FieldReq {
    fn matches(&self, obj: &Value) -> bool {
        let mut v = obj;
        for part in self.path.split('.') {
            match v.get(part) {
                Some(next) => v = next,
                None => return !self.equal && !self.value.is_empty(),
            }
        }
        let actual = v.as_str().unwrap_or_default();
        (actual == self.value) == self.equal
    }
}

/// Splits at commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn valid_label_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 316
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, String> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    let bad = |t: &str| {
        format!("unable to parse requirement: found '{t}', expected: valid label selector")
    };
    for term in split_terms(s) {
        let t = term.trim();
        let pair = |op: &str| -> Result<(String, String), String> {
            let (k, v) = t.split_once(op).ok_or_else(|| bad(t))?;
            let (k, v) = (k.trim(), v.trim());
            if valid_label_key(k) && valid_label_value(v) {
                Ok((k.to_string(), v.to_string()))
            } else {
                Err(bad(t))
            }
        };
        let req = if let Some(k) = t.strip_prefix('!') {
            let k = k.trim();
            if !valid_label_key(k) {
                return Err(bad(t));
            }
            LabelReq::NotExists(k.to_string())
        } else if t.contains("!=") {
            let (k, v) = pair("!=")?;
            LabelReq::Ne(k, v)
        } else if t.contains("==") {
            let (k, v) = pair("==")?;
            LabelReq::Eq(k, v)
        } else if t.contains('=') {
            let (k, v) = pair("=")?;
            LabelReq::Eq(k, v)
        } else if let Some(open) = t.find('(') {
            let head: Vec<&str> = t[..open].split_whitespace().collect();
            let list = t[open + 1..].strip_suffix(')').ok_or_else(|| bad(t))?;
            let values: Vec<String> = list.split(',').map(|v| v.trim().to_string()).collect();
            if values.iter().any(|v| v.is_empty() || !valid_label_value(v)) {
                return Err(bad(t));
            }
            match head.as_slice() {
                [k, "in"] if valid_label_key(k) => LabelReq::In(k.to_string(), values),
                [k, "notin"] if valid_label_key(k) => LabelReq::NotIn(k.to_string(), values),
                _ => return Err(bad(t)),
            }
        } else if valid_label_key(t) {
            LabelReq::Exists(t.to_string())
        } else {
            return Err(bad(t));
        };
        out.push(req);
    }
    Ok(out)
}

fn parse_field_selector(s: &str, group: &str, plural: &str) -> Result<Vec<FieldReq>, String> {
    let mut out = Vec::new();
    if s.trim().is_empty() {
        return Ok(out);
    }
    for term in s.split(',') {
        let t = term.trim();
        let (path, value, equal) = if let Some((k, v)) = t.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = t.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = t.split_once('=') {
            (k, v, true)
        } else {
            return Err(format!("invalid selector: '{s}'; can't understand '{t}'"));
        };
        let path = path.trim();
        let supported = matches!(path, "metadata.name" | "metadata.namespace")
            || (group.is_empty() && plural == "secrets" && path == "type");
        if !supported {
            return Err(format!("field label not supported: {path}"));
        }
        out.push(FieldReq {
            path: path.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(out)
}

/// A request path taken apart.
#[derive(Debug)]
struct Target {
    group: String,
    version: String,
    namespace: Option<String>,
    plural: String,
    name: Option<String>,
}

enum Route {
    Resource(Target),
    Version,
    /// A path the API server has no handler for: plain `404 page not found`.
    NoHandler,
    /// A known group version, but no such resource (or form): 404 Status.
    NoResource,
}

fn route(path: &str) -> Route {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] | ["version", ""] => return Route::Version,
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !g.is_empty() => (*g, *v, rest),
        _ => return Route::NoHandler,
    };
    if version.is_empty() || rest.iter().any(|s| s.is_empty()) {
        return Route::NoHandler;
    }
    let (namespace, plural, name) = match rest {
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        _ => return Route::NoResource,
    };
    Route::Resource(Target {
        group: group.to_string(),
        version: version.to_string(),
        namespace: namespace.map(str::to_string),
        plural: plural.to_string(),
        name: name.map(str::to_string),
    })
}

type Body = BoxBody<Bytes, Infallible>;

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, inner: Arc<Inner>) {
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if inner.down.load(Ordering::SeqCst) {
            inner.refused.fetch_add(1, Ordering::SeqCst);
            // A reset, not an orderly close: the client fails at once.
            let _ = socket2::SockRef::from(&tcp).set_linger(Some(Duration::ZERO));
            drop(tcp);
            continue;
        }
        let cancel = inner
            .conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let acceptor = acceptor.clone();
        let inner = inner.clone();
        tokio::spawn(async move {
            let tls = tokio::select! {
                r = acceptor.accept(tcp) => match r {
                    Ok(tls) => tls,
                    Err(_) => return,
                },
                _ = cancel.cancelled() => return,
            };
            let svc = service_fn(move |req: Request<Incoming>| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(handle(&inner, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(tls), svc);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
            }
        });
    }
}

fn handle(inner: &Inner, req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let raw_query = req.uri().query().unwrap_or_default().to_string();
    let line = if raw_query.is_empty() {
        format!("{} {path}", req.method())
    } else {
        format!("{} {path}?{raw_query}", req.method())
    };
    inner
        .requests
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(line);

    let authorized = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == inner.token);
    if !authorized {
        return status(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "Unauthorized",
            json!(null),
        );
    }
    let target = match route(&path) {
        Route::Version => {
            if req.method() != Method::GET {
                return method_not_allowed();
            }
            return json_response(StatusCode::OK, &version_info());
        }
        Route::NoHandler => return page_not_found(),
        Route::NoResource => return no_resource(),
        Route::Resource(t) => t,
    };
    let query = parse_query(&raw_query);
    let param = |k: &str| {
        query
            .iter()
            .find(|(qk, _)| qk == k)
            .map(|(_, v)| v.as_str())
    };
    let watch = matches!(param("watch"), Some("1" | "true"));

    let st = inner.state();
    let Some(group) = st.groups.get(&target.group) else {
        return page_not_found();
    };
    if !group.installed || !group.versions.contains(&target.version) {
        return page_not_found();
    }
    let Some(kind) = group.resources.get(&target.plural).cloned() else {
        return no_resource();
    };
    if target.name.is_some() && target.namespace.is_none() {
        // These resources are all namespaced: no cluster-scoped objects.
        return no_resource();
    }
    if req.method() != Method::GET {
        return method_not_allowed();
    }
    if st.denied(&path, &target) {
        let verb = if watch {
            "watch"
        } else if target.name.is_some() {
            "get"
        } else {
            "list"
        };
        return forbidden(&target, verb);
    }
    let labels = match parse_label_selector(param("labelSelector").unwrap_or_default()) {
        Ok(l) => l,
        Err(e) => return bad_request(&e),
    };
    let fields = match parse_field_selector(
        param("fieldSelector").unwrap_or_default(),
        &target.group,
        &target.plural,
    ) {
        Ok(f) => f,
        Err(e) => return bad_request(&e),
    };
    let api_version = if target.group.is_empty() {
        target.version.clone()
    } else {
        format!("{}/{}", target.group, target.version)
    };
    let filter = Filter {
        group: target.group.clone(),
        plural: target.plural.clone(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        labels,
        fields,
    };

    if watch {
        let timeout = match param("timeoutSeconds") {
            None | Some("") => DEFAULT_WATCH_TIMEOUT,
            Some(s) => match s.parse::<u64>() {
                Ok(n) => Duration::from_secs(n),
                Err(_) => {
                    return bad_request(&format!(
                        "timeoutSeconds: Invalid value: \"{s}\": must be an integer"
                    ));
                }
            },
        };
        let rv = param("resourceVersion").unwrap_or_default();
        let bookmarks = param("allowWatchBookmarks") == Some("true");
        let initial_events = param("sendInitialEvents") == Some("true");
        drop(st);
        return start_watch(
            inner,
            filter,
            api_version,
            kind,
            rv,
            bookmarks,
            initial_events,
            timeout,
        );
    }

    if let Some(name) = &target.name {
        let key = Key {
            group: target.group.clone(),
            plural: target.plural.clone(),
            namespace: target.namespace.clone().unwrap_or_default(),
            name: name.clone(),
        };
        return match st.objects.get(&key) {
            Some(obj) => json_response(StatusCode::OK, &served(obj, &api_version)),
            None => not_found(&target, name),
        };
    }

    let items: Vec<Value> = st
        .objects
        .iter()
        .filter(|(k, obj)| {
            k.group == filter.group
                && k.plural == filter.plural
                && filter
                    .namespace
                    .as_ref()
                    .is_none_or(|ns| *ns == k.namespace)
                && filter.matches(obj)
        })
        .map(|(_, obj)| served(obj, &api_version))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "apiVersion": api_version,
            "kind": format!("{kind}List"),
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        }),
    )
}

#[allow(clippy::too_many_arguments)]
fn start_watch(
    inner: &Inner,
    filter: Filter,
    api_version: String,
    kind: String,
    rv: &str,
    bookmarks: bool,
    initial_events: bool,
    timeout: Duration,
) -> Response<Body> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut st = inner.state();
    if rv.is_empty() || rv == "0" {
        // "Start at any / the most recent": the current objects as ADDED.
        let mut current: Vec<&Value> = st
            .objects
            .iter()
            .filter(|(k, obj)| {
                k.group == filter.group
                    && k.plural == filter.plural
                    && filter
                        .namespace
                        .as_ref()
                        .is_none_or(|ns| *ns == k.namespace)
                    && filter.matches(obj)
            })
            .map(|(_, obj)| obj)
            .collect();
        current.sort_by_key(|o| resource_version_of(o));
        for obj in current {
            let _ = tx.send(event_line("ADDED", &served(obj, &api_version)));
        }
        if initial_events && bookmarks {
            let _ = tx.send(event_line(
                "BOOKMARK",
                &json!({
                    "apiVersion": api_version,
                    "kind": kind,
                    "metadata": {
                        "resourceVersion": st.rv.to_string(),
                        "annotations": {"k8s.io/initial-events-end": "true"},
                    },
                }),
            ));
        }
    } else {
        let Ok(from) = rv.parse::<u64>() else {
            return bad_request(&format!(
                "resourceVersion: Invalid value: \"{rv}\": must be an integer"
            ));
        };
        if from < st.compacted {
            let gone = status_value(
                410,
                &format!("too old resource version: {from} ({})", st.compacted),
                "Expired",
                json!(null),
            );
            let _ = tx.send(event_line("ERROR", &gone));
            drop(tx);
            return watch_response(rx, timeout);
        }
        for change in st.history.iter().filter(|c| c.rv > from) {
            if let Some(t) = watch_event(&filter, change) {
                let _ = tx.send(event_line(t, &served(&change.obj, &api_version)));
            }
        }
    }
    st.watchers.push(Watcher {
        filter,
        api_version,
        kind,
        bookmarks,
        tx,
    });
    watch_response(rx, timeout)
}

/// A watch body: the lines sent to the channel as they come, ending when
/// the channel closes or the watch's timeout passes.
struct WatchBody {
    rx: mpsc::UnboundedReceiver<Bytes>,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(line)) => return Poll::Ready(Some(Ok(Frame::data(line)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        match this.deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

fn watch_response(rx: mpsc::UnboundedReceiver<Bytes>, timeout: Duration) -> Response<Body> {
    let body = WatchBody {
        rx,
        deadline: Box::pin(tokio::time::sleep(timeout)),
    };
    let mut resp = Response::new(body.boxed());
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    resp
}

fn event_line(kind: &str, obj: &Value) -> Bytes {
    let mut line =
        serde_json::to_vec(&json!({"type": kind, "object": obj})).expect("a JSON value serializes");
    line.push(b'\n');
    Bytes::from(line)
}

/// The object as served under `api_version` (its group's other versions
/// serve the same object).
fn served(obj: &Value, api_version: &str) -> Value {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        map.insert("apiVersion".into(), json!(api_version));
    }
    obj
}

fn resource_version_of(obj: &Value) -> u64 {
    obj.get("metadata")
        .and_then(|m| m.get("resourceVersion"))
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn json_response(code: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).expect("a JSON value serializes");
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp.headers_mut().insert(
        hyper::header::CACHE_CONTROL,
        hyper::header::HeaderValue::from_static("no-cache, private"),
    );
    resp
}

fn status_value(code: u16, message: &str, reason: &str, details: Value) -> Value {
    let mut v = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if !details.is_null() {
        v["details"] = details;
    }
    v
}

fn status(code: StatusCode, message: &str, reason: &str, details: Value) -> Response<Body> {
    json_response(code, &status_value(code.as_u16(), message, reason, details))
}

fn bad_request(message: &str) -> Response<Body> {
    status(StatusCode::BAD_REQUEST, message, "BadRequest", json!(null))
}

fn method_not_allowed() -> Response<Body> {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "the server does not allow this method on the requested resource",
        "MethodNotAllowed",
        json!(null),
    )
}

fn no_resource() -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        "the server could not find the requested resource",
        "NotFound",
        json!({}),
    )
}

fn page_not_found() -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"404 page not found\n")).boxed());
    *resp.status_mut() = StatusCode::NOT_FOUND;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `secrets` or `serviceentries.networking.istio.io`, as the API server
/// names a resource in messages.
fn qualified(t: &Target) -> String {
    if t.group.is_empty() {
        t.plural.clone()
    } else {
        format!("{}.{}", t.plural, t.group)
    }
}

fn not_found(t: &Target, name: &str) -> Response<Body> {
    status(
        StatusCode::NOT_FOUND,
        &format!("{} \"{name}\" not found", qualified(t)),
        "NotFound",
        json!({"name": name, "group": t.group, "kind": t.plural}),
    )
}

fn forbidden(t: &Target, verb: &str) -> Response<Body> {
    let subject = match &t.name {
        Some(name) => format!("{} \"{name}\"", qualified(t)),
        None => qualified(t),
    };
    let scope = match &t.namespace {
        Some(ns) => format!("in the namespace \"{ns}\""),
        None => "at the cluster scope".to_string(),
    };
    let message = format!(
        "{subject} is forbidden: User \"{USER}\" cannot {verb} resource \"{}\" in API group \"{}\" {scope}",
        t.plural, t.group
    );
    let mut details = json!({"group": t.group, "kind": t.plural});
    if let Some(name) = &t.name {
        details["name"] = json!(name);
    }
    status(StatusCode::FORBIDDEN, &message, "Forbidden", details)
}

fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "34",
        "gitVersion": "v1.34.0-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn split_api_version(api_version: &str) -> (String, String) {
    match api_version.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), api_version.to_string()),
    }
}

/// Kubernetes' default plural of a Kind: lowercase, then `ies` for a
/// consonant + `y`, `es` after s/x/z/ch/sh, else `s`.
fn plural_of(kind: &str) -> String {
    let lower = kind.to_ascii_lowercase();
    if let Some(stem) = lower.strip_suffix('y')
        && !stem.ends_with(['a', 'e', 'i', 'o', 'u'])
    {
        return format!("{stem}ies");
    }
    if lower.ends_with(['s', 'x', 'z']) || lower.ends_with("ch") || lower.ends_with("sh") {
        return format!("{lower}es");
    }
    format!("{lower}s")
}

fn parse_query(q: &str) -> Vec<(String, String)> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// A YAML double-quoted scalar.
fn yaml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string serializes")
}

fn random_token() -> String {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("random bytes");
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("fake-kube-{hex}")
}

fn now_rfc3339() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
