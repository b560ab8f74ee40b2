//! Remote JSON Web Key Sets (RequestAuthentication `jwksUri`, or the
//! issuer's OpenID discovery document): fetched in the background as soon
//! as a configuration names them (at start and at every reload), cached,
//! and refreshed every 5 minutes (the cache duration Istio gives Envoy);
//! a failed fetch is tried again after 1 s, doubling up to a minute.
//!
//! A request waits for a first fetch at most its rule's `timeout`; with no
//! key set (the fetch failed or has not answered) a token is refused with
//! Envoy's `Jwks remote fetch is failed` (or the reason the document is
//! not a key set). Once fetched, a key set stays in service while
//! refreshes fail, for at most 7 days (istiod's eviction time). As in
//! Envoy, a token whose `kid` is not in the cached set does not trigger a
//! fetch: a rotated key is picked up at the next refresh.
//!
//! Key sets are kept by URL across reloads; those a new configuration no
//! longer names are dropped and their refresh stopped.
//!
//! The fetch goes where the outbound plan routes the URL's host and port:
//! a registered host (ServiceEntry) is reached at its endpoints with its
//! DestinationRule's TLS (trust roots, SAN checks, client certificate);
//! an `https` URL of another host (or of a registered one its rule does not
//! originate TLS for) is verified against the system roots. Bodies are read
//! up to 1 MiB; nothing of a key set or a token is logged.

mod env;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::prepared::Destination;
use super::upstream::{PolicyRef, Upstreams};
use crate::creds::Credentials;
use crate::metrics::{JwksFetchLabels, Metrics};
use crate::plan::authn::token::Status;
use crate::plan::authn::{Jwks, Remote};
use crate::plan::outbound::Decision;
use crate::plan::{Plan, TlsMode};

/// How often a fetched key set is fetched again (Envoy's `cache_duration`
/// as Istio sets it).
pub const REFRESH: Duration = Duration::from_secs(5 * 60);

/// The first wait after a failed fetch; it doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between failed fetches.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a key set stays in service while refreshes fail (istiod's
/// `JwtPubKeyEvictionDuration`).
const MAX_STALE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The largest key set or discovery document read.
pub const MAX_BODY: usize = 1 << 20;

/// What is known of one key set.
#[derive(Clone)]
enum Fetched {
    /// The first fetch has not finished.
    Pending,
    /// A key set, and when it was fetched.
    Keys(Arc<Jwks>, Instant),
    /// No key set: why.
    Failed(Status),
}

struct Entry {
    /// The longest `timeout` of the rules using it, in milliseconds.
    timeout_ms: AtomicU64,
    state: watch::Sender<Fetched>,
    stop: CancellationToken,
}

impl Entry {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }
}

/// What the refresh tasks share with the cache.
struct Shared {
    refresh_ms: AtomicU64,
    /// Wakes every task to fetch now (the interval changed).
    wake: Notify,
    /// The system roots' client config, once loaded.
    system: Mutex<Option<Arc<ClientConfig>>>,
}

/// The key sets of the configuration in force, by where they come from.
pub struct JwksCache {
    entries: Mutex<HashMap<Remote, Arc<Entry>>>,
    shared: Arc<Shared>,
    /// The runtime refresh tasks run on (the one that first synced).
    runtime: OnceLock<tokio::runtime::Handle>,
}

impl Default for JwksCache {
    fn default() -> Self {
        JwksCache {
            entries: Mutex::new(HashMap::new()),
            shared: Arc::new(Shared {
                refresh_ms: AtomicU64::new(REFRESH.as_millis() as u64),
                wake: Notify::new(),
                system: Mutex::new(None),
            }),
            runtime: OnceLock::new(),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What fetching needs from the running proxy (`runtime::state::State`,
/// see `env.rs`).
pub trait Env: Send + Sync + 'static {
    /// The cache itself.
    fn jwks(&self) -> &JwksCache;
    /// The configuration in force.
    fn view(&self) -> View;
    /// Upstream connections and client TLS configs.
    fn upstreams(&self) -> &Upstreams;
    /// Metrics.
    fn metrics(&self) -> &Metrics;
    /// A value for round robin over endpoints.
    fn pick(&self) -> u64;
}

/// One configuration: its plan and credentials.
pub struct View {
    /// The plan (the outbound routing of the key set's host).
    pub plan: Arc<Plan>,
    /// Its credentials (a DestinationRule's trust roots).
    pub creds: Arc<Credentials>,
    /// Its generation.
    pub generation: u64,
}

/// Starts fetching the key sets the configuration in force names, stops
/// refreshing those it no longer does. Called at start and after every
/// reload, on the main runtime.
pub fn prefetch<E: Env>(env: &Arc<E>) {
    let plan = env.view().plan;
    env.jwks().sync(env, &plan.authn.remotes());
}

impl JwksCache {
    /// Keeps exactly the key sets of `wanted`, starting the new ones.
    fn sync<E: Env>(&self, env: &Arc<E>, wanted: &[(Remote, Duration)]) {
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let _ = self.runtime.set(h);
        }
        let mut entries = lock(&self.entries);
        entries.retain(|remote, entry| {
            let keep = wanted.iter().any(|(w, _)| w == remote);
            if !keep {
                entry.stop.cancel();
            }
            keep
        });
        for (remote, timeout) in wanted {
            self.ensure(&mut entries, env, remote, *timeout);
        }
    }

    fn ensure<E: Env>(
        &self,
        entries: &mut HashMap<Remote, Arc<Entry>>,
        env: &Arc<E>,
        remote: &Remote,
        timeout: Duration,
    ) -> Arc<Entry> {
        if let Some(e) = entries.get(remote) {
            e.timeout_ms
                .fetch_max(timeout.as_millis() as u64, Ordering::Relaxed);
            return e.clone();
        }
        let entry = Arc::new(Entry {
            timeout_ms: AtomicU64::new(timeout.as_millis() as u64),
            state: watch::Sender::new(Fetched::Pending),
            stop: CancellationToken::new(),
        });
        entries.insert(remote.clone(), entry.clone());
        let task = refresh(
            Arc::downgrade(env),
            self.shared.clone(),
            remote.clone(),
            entry.clone(),
        );
        match self
            .runtime
            .get()
            .cloned()
            .or_else(|| tokio::runtime::Handle::try_current().ok())
        {
            Some(h) => {
                h.spawn(task);
            }
            None => {
                entry
                    .state
                    .send_replace(Fetched::Failed(Status::JwksFetchFail));
            }
        }
        entry
    }

    /// The key set of `remote`, waiting at most `timeout` for a first
    /// fetch; `Err` is the status a token is refused with.
    pub async fn keys<E: Env>(
        &self,
        env: &Arc<E>,
        remote: &Remote,
        timeout: Duration,
    ) -> Result<Arc<Jwks>, Status> {
        let entry = {
            let mut entries = lock(&self.entries);
            self.ensure(&mut entries, env, remote, timeout)
        };
        let mut rx = entry.state.subscribe();
        let fetched =
            match tokio::time::timeout(timeout, rx.wait_for(|f| !matches!(f, Fetched::Pending)))
                .await
            {
                Ok(Ok(f)) => f.clone(),
                _ => return Err(Status::JwksFetchFail),
            };
        match fetched {
            Fetched::Keys(jwks, at) if at.elapsed() < MAX_STALE => Ok(jwks),
            Fetched::Failed(status) => Err(status),
            _ => Err(Status::JwksFetchFail),
        }
    }

    /// Sets how often key sets are fetched again (5 minutes by default)
    /// and fetches every one now.
    pub fn set_refresh_interval(&self, every: Duration) {
        self.shared
            .refresh_ms
            .store(every.as_millis().max(1) as u64, Ordering::Relaxed);
        self.shared.wake.notify_waiters();
    }

    /// How many key sets are kept.
    pub fn len(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Whether no key set is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One key set's task: fetch, then refresh, until the entry is dropped or
/// the proxy is gone.
async fn refresh<E: Env>(env: Weak<E>, shared: Arc<Shared>, remote: Remote, entry: Arc<Entry>) {
    let url = remote.url();
    let mut failures: u32 = 0;
    loop {
        let Some(st) = env.upgrade() else { return };
        let result = tokio::select! {
            r = fetch(&*st, &shared, &remote, entry.timeout()) => r,
            () = entry.stop.cancelled() => return,
        };
        let outcome = if result.is_ok() { "success" } else { "failure" };
        st.metrics()
            .jwks_fetches
            .get_or_create(&JwksFetchLabels { result: outcome })
            .inc();
        drop(st);
        let wait = match result {
            Ok(jwks) => {
                if failures > 0 || matches!(*entry.state.borrow(), Fetched::Pending) {
                    info!(url = %url, keys = jwks.keys().len(), "JSON Web Key Set fetched");
                }
                failures = 0;
                entry
                    .state
                    .send_replace(Fetched::Keys(Arc::new(jwks), Instant::now()));
                Duration::from_millis(shared.refresh_ms.load(Ordering::Relaxed))
            }
            Err((status, why)) => {
                failures = failures.saturating_add(1);
                let kept = matches!(*entry.state.borrow(), Fetched::Keys(..));
                warn!(
                    url = %url,
                    reason = %why,
                    keeping_last_keys = kept,
                    "JSON Web Key Set fetch failed"
                );
                entry.state.send_if_modified(|f| match f {
                    Fetched::Keys(..) => false,
                    _ => {
                        *f = Fetched::Failed(status);
                        true
                    }
                });
                FIRST_BACKOFF
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_BACKOFF)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.wake.notified() => {}
            () = entry.stop.cancelled() => return,
        }
    }
}

/// Why a key set could not be fetched.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// Nothing (complete) within the rule's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The URL cannot be fetched.
    #[error("{0}")]
    Url(&'static str),
    /// Not reachable, or the TLS to it could not be set up.
    #[error("{0}")]
    Upstream(#[from] super::upstream::UpstreamError),
    /// The system roots cannot be read.
    #[error("{0}")]
    Roots(#[from] crate::creds::CredError),
    /// The TLS handshake failed.
    #[error("TLS: {0}")]
    Tls(#[from] crate::tls::client::HandshakeError),
    /// The server name is not one TLS can name.
    #[error("{0:?} is not a valid server name")]
    ServerName(String),
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// A status other than 2xx.
    #[error("status {0}")]
    Status(u16),
    /// The body could not be read (or is over the limit).
    #[error("reading the body: {0}")]
    Body(String),
}

/// Fetches and reads one key set: `Err` is the status a token would be
/// refused with and what went wrong (for the log).
async fn fetch<E: Env>(
    env: &E,
    shared: &Shared,
    remote: &Remote,
    timeout: Duration,
) -> Result<Jwks, (Status, String)> {
    let fail = |why: String| (Status::JwksFetchFail, why);
    let mut body = get(env, shared, &remote.url(), timeout)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if let Remote::Discovery(_) = remote {
        let doc: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("the OpenID discovery document is not JSON: {e}")))?;
        let Some(uri) = doc.get("jwks_uri").and_then(|u| u.as_str()) else {
            return Err(fail(
                "the OpenID discovery document has no jwks_uri string".into(),
            ));
        };
        body = get(env, shared, uri, timeout).await.map_err(|e| {
            // The document is the server's: its URL is logged bounded.
            let shown: String = uri.chars().take(256).collect();
            fail(format!("{shown}: {e}"))
        })?;
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| (Status::JwksParseError, "the key set is not UTF-8".into()))?;
    Jwks::parse(text)
        .map(|(jwks, _)| jwks)
        .map_err(|status| (status, format!("not a usable key set: {status}")))
}

/// GETs `url` within `timeout`, reading at most [`MAX_BODY`] bytes; only
/// a 2xx answer counts.
async fn get<E: Env>(
    env: &E,
    shared: &Shared,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    match tokio::time::timeout(timeout, get_inner(env, shared, url, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout(timeout)),
    }
}

async fn get_inner<E: Env>(
    env: &E,
    shared: &Shared,
    url: &str,
    timeout: Duration,
) -> Result<Bytes, FetchError> {
    let uri: http::Uri = url.parse().map_err(|_| FetchError::Url("not a URL"))?;
    let https = match uri.scheme_str() {
        Some("https") => true,
        Some("http") => false,
        _ => return Err(FetchError::Url("only http and https URLs are fetched")),
    };
    let host = uri
        .host()
        .ok_or(FetchError::Url("the URL has no host"))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = uri
        .authority()
        .map_or_else(|| host.clone(), |a| a.as_str().to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let view = env.view();
    let pick = env.pick();
    let mut endpoints = vec![(host.clone(), port)];
    let mut tls = None;
    if let Decision::Registered(target) = view.plan.outbound.route(&host, port, pick) {
        let dest = Destination::registered(&target);
        endpoints = dest.endpoints.clone();
        if dest.policy.tls.mode != TlsMode::Disable {
            let config = env.upstreams().tls_config(
                &PolicyRef(dest.policy.clone()),
                &dest.names,
                &view.creds,
                view.generation,
            )?;
            let sni = dest.sni.clone().unwrap_or_else(|| host.clone());
            tls = Some((config, sni));
        }
    }
    if tls.is_none() && https {
        tls = Some((system_config(shared)?, host.clone()));
    }
    let tcp = env
        .upstreams()
        .connect_tcp(&endpoints, timeout, pick)
        .await?;
    match tls {
        Some((config, sni)) => {
            let name =
                ServerName::try_from(sni.clone()).map_err(|_| FetchError::ServerName(sni))?;
            let stream = crate::tls::client::connect(&config, name, tcp).await?;
            let h2 = stream.get_ref().1.alpn_protocol() == Some(crate::tls::client::ALPN_H2);
            request(stream, h2, &authority, &path).await
        }
        None => request(tcp, false, &authority, &path).await,
    }
}

/// The client config verifying servers against the system roots.
fn system_config(shared: &Shared) -> Result<Arc<ClientConfig>, FetchError> {
    let mut cached = lock(&shared.system);
    if let Some(c) = &*cached {
        return Ok(c.clone());
    }
    let roots = crate::creds::system_roots()?;
    let mut config = ClientConfig::builder_with_provider(crate::creds::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|_| FetchError::Url("TLS 1.2 and 1.3 are not available"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![crate::tls::client::ALPN_HTTP11.to_vec()];
    let config = Arc::new(config);
    *cached = Some(config.clone());
    Ok(config)
}

async fn request<S>(io: S, h2: bool, authority: &str, path: &str) -> Result<Bytes, FetchError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    // The URL was parsed already: these requests are well formed.
    let bad = |_| FetchError::Url("the URL does not make a request");
    if h2 {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        let req = Request::get(format!("https://{authority}{path}"))
            .body(Empty::<Bytes>::new())
            .map_err(bad)?;
        drive(
            conn,
            async move { body(sender.send_request(req).await?).await },
        )
        .await
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        let req = Request::get(path)
            .header(header::HOST, authority)
            .header(header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(bad)?;
        drive(
            conn,
            async move { body(sender.send_request(req).await?).await },
        )
        .await
    }
}

/// Runs the exchange `work` while driving its connection `conn` in the
/// same task, so the connection ends with the fetch (its timeout
/// included) instead of outliving it.
async fn drive<C, W>(conn: C, work: W) -> Result<Bytes, FetchError>
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
    W: std::future::Future<Output = Result<Bytes, FetchError>>,
{
    tokio::pin!(conn);
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => r,
        c = &mut conn => match c {
            Err(e) => Err(e.into()),
            // Closed after the response: what was read still completes.
            Ok(()) => work.await,
        },
    }
}

/// The response's body, bounded, when its status is a success.
async fn body(resp: http::Response<hyper::body::Incoming>) -> Result<Bytes, FetchError> {
    if !resp.status().is_success() {
        return Err(FetchError::Status(resp.status().as_u16()));
    }
    Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .map_err(|e| FetchError::Body(e.to_string()))
}
