//! The Kubernetes configuration source (`meshgate run --kube`, bootstrap
//! `source: kubernetes`): Istio's resources and the Secrets they name, read
//! from the API server with list+watch and kept in the source's
//! [`Store`](crate::source::Store) as documents, which every load parses
//! with the files (see `crate::source`).
//!
//! - What is watched: `networking.istio.io` ServiceEntry, DestinationRule,
//!   Gateway, VirtualService, Sidecar and `security.istio.io`
//!   PeerAuthentication, AuthorizationPolicy, RequestAuthentication (so
//!   meshgate's refusal of the policies it does not enforce still holds), in
//!   the proxy's namespace and in Istio's root namespace; `v1` first,
//!   older served versions when the list answers 404. Secrets, and the
//!   ConfigMaps `caCertCredentialName` may name, only by name, one watch
//!   (`fieldSelector=metadata.name=…`) per name the configuration's
//!   `credentialName`s may read (`credentials`), started and stopped as the
//!   configuration changes.
//! - Watching is `kube::runtime::watcher` (`watch`): list, then watch from
//!   the list's resourceVersion with bookmarks, relist on `410 Gone`,
//!   reconnect with the default backoff (0.8 s doubling to 30 s).
//! - The driver (`driver`) applies every event to the store and asks the
//!   reloader once per burst. Nothing is loaded before every watch has
//!   completed its first list (and the Secret watches that list started
//!   theirs): until then readiness answers 503 naming what it waits for and
//!   the outbound listener refuses everything (REGISTRY_ONLY with an empty
//!   registry); the other listeners are bound by the first load.
//! - A failing watch (API server unreachable, 403, ...) keeps the last good
//!   configuration in service, sets `meshgate_config_stale`, counts
//!   `meshgate_kubernetes_watch_errors_total{resource,namespace,reason}`
//!   and says what failed (a 403: what to grant) at most every 30 s per
//!   watch; the next event of that watch clears it.
//! - Secrets are read only by name and never logged: a document's `Debug`
//!   and every message carry names only.

mod credentials;
mod driver;
mod failure;
mod kinds;
mod render;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use ::kube::api::{Api, DynamicObject, ListParams};
use ::kube::config::{KubeConfigOptions, Kubeconfig};
use ::kube::{Client, Config};

pub use driver::run;
pub use kinds::{CONFIG_MAPS, ISTIO_KINDS, Kind, SECRETS, Scope};

use credentials::credential_scopes;
use kinds::istio_scopes;

use crate::bootstrap::Bootstrap;
use crate::load::Report;
use crate::source::{Sources, Store};

/// Why the API server cannot be reached at all.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The `--kubeconfig` file cannot be used.
    #[error("{}: {source}", path.display())]
    Kubeconfig {
        /// The file.
        path: PathBuf,
        /// Why.
        source: ::kube::config::KubeconfigError,
    },
    /// Neither the pod's service account nor a kubeconfig is there.
    #[error(
        "no Kubernetes credentials: not in a pod (no service account) and no kubeconfig ({0}); give --kubeconfig FILE"
    )]
    Infer(::kube::config::InferConfigError),
    /// The client cannot be built from the configuration.
    #[error("cannot build the Kubernetes client: {0}")]
    Client(::kube::Error),
}

/// A client for the API server: `bootstrap.kubeconfig` (`--kubeconfig`),
/// else the pod's service account (in-cluster), else the default
/// kubeconfig (`KUBECONFIG`, `~/.kube/config`). TLS is rustls with
/// meshgate's aws-lc-rs provider.
pub async fn client(bootstrap: &Bootstrap) -> Result<Client, ClientError> {
    // The kube client builds its rustls configs with the process default
    // provider: make it meshgate's (the first caller wins; it is the same).
    let _ = rustls::crypto::CryptoProvider::install_default(crate::tls::provider());
    let config = match &bootstrap.kubeconfig {
        Some(path) => {
            let error = |source| ClientError::Kubeconfig {
                path: path.clone(),
                source,
            };
            let file = Kubeconfig::read_from(path).map_err(error)?;
            Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                .await
                .map_err(error)?
        }
        None => match Config::incluster() {
            Ok(c) => c,
            Err(_) => Config::infer().await.map_err(ClientError::Infer)?,
        },
    };
    Client::try_from(config).map_err(ClientError::Client)
}

/// `meshgate validate --kube`: lists every watched kind once, then the
/// Secrets and ConfigMaps they name, and checks the result with the files
/// as `run` would load it. Listing failures are errors of the report.
pub async fn validate(client: &Client, bootstrap: &Bootstrap) -> Report {
    let store = Arc::new(Store::default());
    let mut failures = Vec::new();
    for scope in istio_scopes(bootstrap) {
        list_into(client, &scope, &store, &mut failures).await;
    }
    let wanted = credential_scopes(&store, bootstrap);
    for scope in wanted {
        list_into(client, &scope, &store, &mut failures).await;
    }
    let sources = Sources::with_store(store);
    let mut report = sources.report(bootstrap, None).report;
    if !failures.is_empty() {
        report.errors.splice(0..0, failures);
        report.loaded = None;
    }
    report
}

/// One list of `scope` into `store`, trying older versions on 404.
async fn list_into(client: &Client, scope: &Scope, store: &Store, failures: &mut Vec<String>) {
    for version in scope.kind.versions {
        let resource = scope.kind.api_resource(version);
        let api =
            Api::<DynamicObject>::namespaced_with(client.clone(), &scope.namespace, &resource);
        let mut params = ListParams::default();
        if let Some(name) = &scope.name {
            params = params.fields(&format!("metadata.name={name}"));
        }
        match api.list(&params).await {
            Ok(list) => {
                for obj in &list.items {
                    if let Some(doc) = render::render(obj, &resource, &scope.namespace) {
                        store.apply(doc);
                    }
                }
                return;
            }
            Err(e) => {
                let f = failure::classify_client("list", &e);
                if f == failure::Failure::NotFound {
                    continue;
                }
                failures.push(failure::message(&f, scope));
                return;
            }
        }
    }
    if scope.kind.is_istio() {
        tracing::warn!("{}", failure::message(&failure::Failure::NotFound, scope));
    }
}
