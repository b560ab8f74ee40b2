//! Helpers shared by the tests that run programs: the meshgate binary,
//! free ports, log tails, files, Prometheus text.

#![allow(dead_code)]

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

/// Running the meshgate binary.
pub mod binary;

/// An in-process fake Kubernetes API server for the kube client.
pub mod fake_kube;

/// The nginx binary from Debian's packages.
pub mod nginx;

/// A Python interpreter for gRPC peers.
pub mod python;

/// Why a start attempt of a test peer failed.
pub enum StartError {
    /// A port picked by `free_addr` was taken before the process bound it:
    /// worth another try with fresh ports.
    PortTaken(String),
    /// Anything else: the test fails with this report.
    Fatal(String),
}

pub const NGINX: &str = "/usr/sbin/nginx";

/// A loopback address whose port was free a moment ago.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr")
}

/// A file's text, or a note saying why it could not be read.
pub fn read_lossy(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<could not read {}: {e}>", path.display()),
    }
}

/// The last `max` bytes of a (log) file, for failure messages.
pub fn tail(path: &Path, max: usize) -> String {
    let text = read_lossy(path);
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    format!("...{}", &text[start..])
}

/// Writes a test file, panicking with the path on failure.
pub fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// The value of metric `name` whose labels include all of `labels`.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (label_text, value) = rest.split_once('}')?;
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.split_whitespace().next()?.parse().ok())?
        })
        .next()
}
