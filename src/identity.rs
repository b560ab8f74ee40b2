//! The workload's mesh identity from a CA that speaks Istio's signing API:
//! fetched into Istio's file-mounted layout in the identity directory (where
//! the credential watcher picks it up like any rotated certificate), renewed
//! at half its lifetime, retried with backoff on failure while the current
//! certificate keeps serving.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ca::grpc::GrpcError;
use crate::creds::{CertError, CertInfo, CredError, certs_from_pem};
use crate::reload::{Cause, Reloads};

/// Why the workload certificate could not be obtained or written.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The CA root or token file cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The identity directory or a file in it cannot be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The CA could not be asked, or refused.
    #[error(transparent)]
    Ca(#[from] GrpcError),
    /// The certificate chain the CA returned does not parse.
    #[error(transparent)]
    Chain(#[from] CredError),
    /// The leaf certificate the CA returned does not parse.
    #[error(transparent)]
    Leaf(#[from] CertError),
}

/// Wraps an OS error about writing `path`.
fn write_error(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Write {
        path: path.to_path_buf(),
        source,
    }
}

pub use crate::ca::grpc::{CaAddress, CaClient};

impl CaClient {
    /// A client for the CA at `addr`, verified with the roots in `root` and
    /// authenticated with the token in `token_file` (Istio's `CA_ADDR`, root
    /// cert and JWT path). The CA's certificate must name `server_name`
    /// (Istio's `ISTIOD_SAN`), else the host of `addr`. The `ClusterID`
    /// header is sent from `CLUSTER_ID` in the environment, as Istio's agent
    /// does, and left out when that is unset (the CA's own cluster).
    pub fn from_files(
        addr: CaAddress,
        server_name: &Option<String>,
        root: &Path,
        token_file: &Path,
    ) -> Result<CaClient, IdentityError> {
        let read = |p: &Path| {
            std::fs::read_to_string(p).map_err(|source| IdentityError::Read {
                path: p.to_path_buf(),
                source,
            })
        };
        Ok(CaClient {
            addr,
            server_name: server_name.clone().filter(|n| !n.is_empty()),
            root_pem: read(root)?,
            token: read(token_file)?.trim().to_string(),
            token_file: Some(token_file.to_path_buf()),
            cluster_id: std::env::var("CLUSTER_ID").ok().filter(|c| !c.is_empty()),
            // Istio's default workload certificate lifetime.
            validity: Duration::from_secs(86400),
        })
    }
}

/// Time until renewal: half the certificate's lifetime after `not_before`.
pub fn half_life(not_before: i64, not_after: i64, now: i64) -> Duration {
    let due = not_before + (not_after - not_before) / 2;
    Duration::from_secs(due.saturating_sub(now).max(0) as u64)
}

fn write_atomic(dir: &Path, name: &str, text: &str, private: bool) -> Result<(), IdentityError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp: PathBuf = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(write_error(&tmp))?;
    f.write_all(text.as_bytes()).map_err(write_error(&tmp))?;
    std::fs::rename(&tmp, dir.join(name)).map_err(write_error(dir))
}

/// Gets a certificate and writes `cert-chain.pem`, `key.pem` and
/// `root-cert.pem` into `dir`. Returns the time until it should be renewed.
pub async fn fetch_into(ca: &CaClient, dir: &Path) -> Result<Duration, IdentityError> {
    let (chain, key) = crate::ca::grpc::create_certificate(ca).await?;
    let certs = certs_from_pem(chain.as_bytes())?;
    let Some(first) = certs.first() else {
        return Err(GrpcError::NoCertificate.into());
    };
    let leaf = CertInfo::parse(first)?;
    std::fs::create_dir_all(dir).map_err(write_error(dir))?;
    // Key first: a watcher that sees the new chain with the old key refuses
    // the pair and retries; the chain last completes it.
    write_atomic(dir, "key.pem", &key, true)?;
    write_atomic(dir, "root-cert.pem", &ca.root_pem, false)?;
    write_atomic(dir, "cert-chain.pem", &chain, false)?;
    info!(identity = ?leaf.sans, not_after = %crate::creds::info::fmt_time(leaf.not_after), "workload certificate obtained");
    Ok(half_life(
        leaf.not_before,
        leaf.not_after,
        crate::creds::info::now(),
    ))
}

/// Renews the identity in `dir` every half-life until `shutdown`, and asks
/// for a reload after each renewal (so the new certificate is in service
/// whether or not files are watched); on failure retries with backoff (1 s
/// doubling to 60 s), keeping the files.
pub async fn renew(
    ca: CaClient,
    dir: PathBuf,
    first: Duration,
    reloads: Reloads,
    shutdown: CancellationToken,
) {
    let mut next = first;
    let mut backoff = Duration::from_secs(1);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
        match fetch_into(&ca, &dir).await {
            Ok(half) => {
                next = half;
                backoff = Duration::from_secs(1);
                reloads.trigger(Cause::Identity);
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "certificate renewal failed; the current certificate stays in service");
                next = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(60));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_half_life() {
        assert_eq!(
            half_life(1000, 1000 + 86400, 1000),
            Duration::from_secs(43200)
        );
        assert_eq!(
            half_life(1000, 1000 + 86400, 1000 + 43000),
            Duration::from_secs(200)
        );
        assert_eq!(
            half_life(1000, 1000 + 86400, 1000 + 50000),
            Duration::ZERO,
            "overdue: now"
        );
    }
}
