//! The configuration read once, for `validate` and `explain`: apart from
//! the source module itself, which the running proxy's state depends on,
//! so reading once (which drives the Kubernetes client) does not make the
//! state depend on the reloader.

#[cfg(feature = "kubernetes")]
use super::kubernetes;
use crate::bootstrap::Bootstrap;
use crate::load::{self, Report};

/// The bootstrap's configuration read once and checked, as `validate` and
/// `explain` see it: the files, or with `source: kubernetes` one list of
/// the cluster's objects and the files (this blocks on its own runtime).
pub fn read_once(bootstrap: &Bootstrap) -> Result<Report, String> {
    match bootstrap.source {
        crate::bootstrap::ConfigSource::Files => Ok(load::validate(bootstrap)),
        #[cfg(feature = "kubernetes")]
        crate::bootstrap::ConfigSource::Kubernetes => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start a runtime: {e}"))?;
            runtime.block_on(async {
                let client = kubernetes::client(bootstrap)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(kubernetes::validate(&client, bootstrap).await)
            })
        }
        #[cfg(not(feature = "kubernetes"))]
        crate::bootstrap::ConfigSource::Kubernetes => Err(
            "this meshgate is built without the kubernetes feature: --kube (source: kubernetes) \
             is not available"
                .into(),
        ),
    }
}
