//! Release builds lay out the binary's code in the order named by
//! `build/symbol-order.txt`: the functions a proxy runs while it starts and
//! while it serves come first, together, so a running proxy maps a few
//! megabytes of its code instead of pages scattered over all of it (the
//! kernel maps code in 64 KiB chunks around each first touch). The file is
//! made by `bench/symbol_order.py`. The names carry hashes that change with
//! the compiler, the dependencies, the features and the release profile; a
//! name a build does not have is skipped, so a stale file costs only the
//! saving, and `bench/run.sh` reports how much of the file a binary follows.
//!
//! The ordering is a linker option of LLD (and mold), the linker rustc uses
//! by default for x86_64-unknown-linux-gnu since Rust 1.90; other targets
//! and older compilers link as before. Where the build machine's glibc can
//! load them (2.36 and later), the relative relocations are packed too.
//! `MESHGATE_LINK_ARGS=off` leaves both out, for a build that links with
//! something else (GNU ld rejects the ordering option).

use std::env;
use std::path::Path;
use std::process::Command;

const ORDER_FILE: &str = "build/symbol-order.txt";

fn main() {
    println!("cargo::rerun-if-changed={ORDER_FILE}");
    println!("cargo::rerun-if-env-changed=MESHGATE_LINK_ARGS");
    if env::var("PROFILE").as_deref() != Ok("release")
        || env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var("MESHGATE_LINK_ARGS").as_deref() == Ok("off")
        || !links_with_lld_by_default()
    {
        return;
    }
    if env::var("HOST") == env::var("TARGET") && glibc_at_least(2, 36) {
        // Relative relocations packed (DT_RELR): the table the loader reads
        // at start shrinks from about 0.6 MB to a few KB. The binary then
        // needs glibc 2.36 or later, as it needs the build machine's glibc
        // or a later one anyway.
        println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    let dir = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let order = Path::new(&dir).join(ORDER_FILE);
    if !order.is_file() {
        return;
    }
    println!(
        "cargo::rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
        order.display()
    );
    println!("cargo::rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
}

/// Whether this machine's glibc is `major.minor` or later.
fn glibc_at_least(major: u32, minor: u32) -> bool {
    let Ok(out) = Command::new("getconf").arg("GNU_LIBC_VERSION").output() else {
        return false;
    };
    // "glibc 2.36"
    let text = String::from_utf8_lossy(&out.stdout);
    version(text.split_whitespace().nth(1).unwrap_or_default()) >= (major, minor)
}

/// The first two numbers of a dotted version ("1.95.0" is (1, 95)); zeros
/// where there are none.
fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|n| n.parse::<u32>().unwrap_or(0));
    (parts.next().unwrap_or(0), parts.next().unwrap_or(0))
}

/// Whether the compiler is 1.90 or later, which links this target with its
/// own LLD unless told otherwise.
fn links_with_lld_by_default() -> bool {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let Ok(out) = Command::new(rustc).arg("-V").output() else {
        return false;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    version(text.split_whitespace().nth(1).unwrap_or_default()) >= (1, 90)
}
