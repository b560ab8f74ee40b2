//! Helpers for integration tests (feature `testing`): a proxy started
//! in-process on port 0 from YAML text, with files in a temporary directory.

use std::path::{Path, PathBuf};

use crate::app::{self, Proxy};
use crate::bootstrap::Bootstrap;
use crate::load::LoadErrors;
use crate::standin::{Fetched, fetch};

/// Why a [`TestProxy`] did not start.
#[derive(Debug, thiserror::Error)]
pub enum TestProxyError {
    /// The config file cannot be written.
    #[error("{source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration does not load (one line per problem).
    #[error(transparent)]
    Load(#[from] LoadErrors),
    /// The proxy cannot start (binding a port).
    #[error(transparent)]
    Start(std::io::Error),
}

/// A proxy running in-process, and the directory holding its files.
pub struct TestProxy {
    /// The running proxy (addresses, state).
    pub proxy: Proxy,
    /// Temporary directory for config and certificates.
    pub dir: tempfile::TempDir,
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

impl TestProxy {
    /// Writes `yaml` to `<dir>/config.yaml` and starts a proxy on it with
    /// every listener on port 0. `tweak` adjusts the bootstrap.
    pub async fn start(
        dir: tempfile::TempDir,
        yaml: &str,
        tweak: impl FnOnce(&mut Bootstrap),
    ) -> Result<TestProxy, TestProxyError> {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).map_err(|source| TestProxyError::Write {
            path: config.clone(),
            source,
        })?;
        let mut bootstrap = Bootstrap {
            config_paths: vec![config],
            ..Bootstrap::ephemeral()
        };
        tweak(&mut bootstrap);
        let loaded = crate::load::load(&bootstrap)?;
        let proxy = app::build(bootstrap, loaded)
            .await
            .map_err(TestProxyError::Start)?;
        Ok(TestProxy { proxy, dir })
    }

    /// Starts a proxy on the Kubernetes source: the API server of
    /// `kubeconfig`, the proxy's namespace `default`, every listener on
    /// port 0, files only if `tweak` adds config paths. It returns at once:
    /// not ready before the first complete sync (see
    /// [`TestProxy::readiness`]).
    #[cfg(feature = "kubernetes")]
    pub async fn start_kube(
        dir: tempfile::TempDir,
        kubeconfig: &Path,
        tweak: impl FnOnce(&mut Bootstrap),
    ) -> Result<TestProxy, TestProxyError> {
        let mut bootstrap = Bootstrap {
            source: crate::bootstrap::ConfigSource::Kubernetes,
            kubeconfig: Some(kubeconfig.to_path_buf()),
            ..Bootstrap::ephemeral()
        };
        tweak(&mut bootstrap);
        let client = crate::source::kubernetes::client(&bootstrap)
            .await
            .map_err(|e| TestProxyError::Start(std::io::Error::other(e.to_string())))?;
        let proxy = app::build_kube(bootstrap, client)
            .await
            .map_err(TestProxyError::Start)?;
        Ok(TestProxy { proxy, dir })
    }

    /// The readiness endpoint's status and body.
    pub async fn readiness(&self) -> (u16, String) {
        let r = fetch(self.proxy.ready, "GET", "/healthz/ready", Some("localhost"))
            .await
            .expect("readiness endpoint answers");
        (r.status, r.body)
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Path of a file in the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// GET `path` with `Host: host`, as the app would (origin-form).
    pub async fn get(&self, host: &str, path: &str) -> Fetched {
        fetch(self.proxy.outbound, "GET", path, Some(host))
            .await
            .expect("the proxy answers")
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        fetch(
            self.proxy.stats,
            "GET",
            "/stats/prometheus",
            Some("localhost"),
        )
        .await
        .expect("stats endpoint answers")
        .body
    }

    /// The value of one metric line (exact labels as printed), 0 if absent.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        metric_value(&self.metrics().await, name_and_labels)
    }
}

/// The value of `name{labels}` in Prometheus text, 0 when absent.
pub fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Writes `text` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

pub use crate::standin::{ClientOpts, HttpsConn, echo_service, https_get, tls_connect};
