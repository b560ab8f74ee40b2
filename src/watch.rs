//! Change detection for everything a configuration is made of: config
//! files and directories, the Secrets directory, and every certificate, key,
//! CA and CRL file the plan names. A change triggers a full reload, which
//! validates before it publishes: a half-written or broken file is refused
//! (the last good configuration keeps serving) and picked up once complete.
//!
//! Polling `stat` is used rather than inotify: it sees the Kubernetes
//! `..data` symlink swap, atomic renames and edits in place alike, needs no
//! watch descriptors, and costs a few syscalls per file per interval.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::reload::{Cause, Reloads};
use crate::runtime::state::State;

/// What identifies a file's content for change detection.
type Stamp = (PathBuf, Option<(SystemTime, u64, u64)>);

/// Polls every `bootstrap.watch_interval` until `shutdown`.
pub async fn run(state: Arc<State>, reloads: Reloads, shutdown: CancellationToken) {
    let interval = state.bootstrap.watch_interval;
    // Files named by a configuration that was refused: watched too, so
    // writing them afterwards brings that configuration into service.
    let mut attempted: Vec<PathBuf> = Vec::new();
    // The files as the configuration in force saw them; one changed since
    // that load began (or within the file system's timestamp resolution
    // of it) makes the first tick reload.
    let read_at = state.read_at - Duration::from_secs(1);
    let mut last: Vec<Stamp> = fingerprint(&state, &attempted).await;
    if last
        .iter()
        .any(|(_, m)| m.is_some_and(|(modified, _, _)| modified >= read_at))
    {
        last.clear();
    }
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        ticks += 1;
        let now = fingerprint(&state, &attempted).await;
        if now != last {
            debug!("configuration or certificate files changed; reloading");
            if reloads.reload(Cause::Files).await.is_ok() {
                attempted.clear();
            } else {
                attempted = attempted_files(&state).await;
            }
            // Keep what was read before the reload, so a change made while
            // it ran is seen on the next tick; only a different set of files
            // (a new plan names others) takes a fresh reading.
            let after = fingerprint(&state, &attempted).await;
            let same_files =
                after.len() == now.len() && after.iter().zip(&now).all(|(a, b)| a.0 == b.0);
            last = if same_files { now } else { after };
            warn_expiring(&state);
        } else if ticks % 3600 == 1 {
            warn_expiring(&state);
        }
    }
}

/// Logs every certificate in service that expires within the warning window.
fn warn_expiring(state: &State) {
    let window = state.bootstrap.expiry_warning.as_secs() as i64;
    let now = crate::creds::info::now();
    let snap = state.snapshot();
    for id in snap
        .creds
        .identities
        .values()
        .chain(snap.creds.servers.values())
    {
        let left = id.leaf.not_after - now;
        if expires_soon(left, id.leaf.not_after - id.leaf.not_before, window) {
            warn!(
                source = %id.source,
                not_after = %crate::creds::info::fmt_time(id.leaf.not_after),
                days_left = left / 86400,
                "certificate in service expires soon; rotate it"
            );
        }
    }
}

/// Whether a certificate with `left` seconds to go out of a `lifetime` is
/// worth a warning: within the window, and, for a certificate that lives
/// shorter than three windows (a workload certificate renewed at half its
/// lifetime), only in its last third: renewal should have replaced it.
fn expires_soon(left: i64, lifetime: i64, window: i64) -> bool {
    left < window.min(lifetime / 3)
}

/// The files the configuration on disk names, whether or not it loads.
async fn attempted_files(state: &State) -> Vec<PathBuf> {
    let bootstrap = state.bootstrap.clone();
    tokio::task::spawn_blocking(move || {
        let (config, _) = crate::config::load_partial(&bootstrap.config_paths);
        // Every file a refused configuration names, including those of
        // parts with errors.
        crate::plan::compile_all(&config, &bootstrap)
            .plan
            .referenced_files()
    })
    .await
    .unwrap_or_default()
}

async fn fingerprint(state: &State, extra: &[PathBuf]) -> Vec<Stamp> {
    let mut roots: Vec<PathBuf> = state.bootstrap.config_paths.clone();
    roots.extend(state.bootstrap.secrets_dir.clone());
    roots.extend(state.snapshot().plan.referenced_files());
    roots.extend(extra.iter().cloned());
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        for r in &roots {
            walk(r, &mut out, 0);
        }
        out
    })
    .await
    .unwrap_or_default()
}

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt as _;
    // `metadata` follows symlinks, so a `..data` swap changes the inode.
    let meta = std::fs::metadata(path).ok();
    (
        path.to_path_buf(),
        meta.map(|m| {
            (
                m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                m.len(),
                m.ino(),
            )
        }),
    )
}

fn walk(path: &Path, out: &mut Vec<Stamp>, depth: usize) {
    let s = stamp(path);
    let is_dir = std::fs::metadata(path).map(|m| m.is_dir()).unwrap_or(false);
    out.push(s);
    if !is_dir || depth > 8 {
        return;
    }
    if let Ok(rd) = std::fs::read_dir(path) {
        let mut children: Vec<PathBuf> = rd.filter_map(|e| e.ok().map(|e| e.path())).collect();
        children.sort();
        for c in children {
            walk(&c, out, depth + 1);
        }
    } else {
        warn!(path = %path.display(), "cannot list directory for change detection");
    }
}

#[cfg(test)]
mod tests {
    use super::expires_soon;

    #[test]
    fn short_lived_certificates_warn_only_when_renewal_is_overdue() {
        let (day, week) = (86_400, 7 * 86_400);
        // A 90-day certificate: the 7-day window.
        assert!(!expires_soon(8 * day, 90 * day, week));
        assert!(expires_soon(6 * day, 90 * day, week));
        // A 24 h workload certificate, renewed at 12 h: quiet until 8 h.
        assert!(!expires_soon(23 * 3600, day, week));
        assert!(!expires_soon(9 * 3600, day, week));
        assert!(expires_soon(7 * 3600, day, week));
    }
}
