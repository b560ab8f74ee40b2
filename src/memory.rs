//! Handing freed memory back to the system when a load ends.
//!
//! A load (the start's, or a reload's) frees its transient parse and, on a
//! reload, the configuration it replaces: tens of MiB for 10,000 services.
//! An allocator that purges on a timer keeps them resident for seconds
//! after the load, and a sidecar's resident size is what the pod is billed
//! and limited on. The process's allocator is chosen by the binary, so the
//! binary registers how to release with [`set_release`]; the library calls
//! [`release`] when a load has ended and its garbage is freed.

use std::sync::OnceLock;

static RELEASE: OnceLock<fn()> = OnceLock::new();

/// Registers how the process's allocator hands freed pages back to the
/// system. The first registration wins.
pub fn set_release(release: fn()) {
    let _ = RELEASE.set(release);
}

/// Hands freed memory back to the system, if the binary said how. Blocks
/// for as long as the allocator's purge takes (milliseconds): call it off
/// the async threads.
pub fn release() {
    if let Some(release) = RELEASE.get() {
        release();
    }
}
