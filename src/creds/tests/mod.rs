//! Credential loading, driven the way the proxy drives it: YAML text →
//! `config::load_str` → `plan::compile` → `creds::load`, with certificates
//! made fresh by `devpki` (and, for the X.509 v1 case, by the `openssl`
//! command) in a temporary directory. No sockets.

use std::path::{Path, PathBuf};

use base64::Engine as _;

use super::*;
use crate::bootstrap::Bootstrap;
use crate::config::load_str;
use crate::devpki::{DevCa, Leaf, LeafSpec};
use crate::plan::CredentialRef;

const FILE: &str = "creds.yaml";
const HOST: &str = "api.external.test";

// === YAML builders ===

/// A DestinationRule `default/<name>` whose top-level `tls` block is
/// `tls_lines` (one `key: value` per line, unindented).
fn dr(name: &str, tls_lines: &str) -> String {
    let tls: String = tls_lines.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\n\
         kind: DestinationRule\n\
         metadata:\n  name: {name}\n\
         spec:\n  host: {HOST}\n  trafficPolicy:\n    tls:\n{tls}"
    )
}

/// `origin` prefix of errors about `dr(name, ..)`'s tls block.
fn resource(name: &str) -> String {
    format!("DestinationRule/default/{name}: spec.trafficPolicy.tls")
}

fn metadata(name: &str, ns: Option<&str>) -> String {
    match ns {
        Some(ns) => format!("metadata:\n  name: {name}\n  namespace: {ns}\n"),
        None => format!("metadata:\n  name: {name}\n"),
    }
}

/// A `kind: Secret` with base64 `data`.
fn secret_data(name: &str, ns: Option<&str>, data: &[(&str, &str)]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\n{}type: kubernetes.io/tls\ndata:\n",
        metadata(name, ns)
    );
    for (k, v) in data {
        s.push_str(&format!("  {k}: {}\n", b64.encode(v)));
    }
    s
}

/// A `kind: Secret` with plain `stringData` (block scalars).
fn secret_string_data(name: &str, ns: Option<&str>, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Secret\n{}stringData:\n",
        metadata(name, ns)
    );
    for (k, v) in data {
        if v.is_empty() {
            s.push_str(&format!("  {k}: \"\"\n"));
            continue;
        }
        s.push_str(&format!("  {k}: |\n"));
        for line in v.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s
}

fn docs(parts: &[String]) -> String {
    parts.join("---\n")
}

// === loading ===

fn try_load(yaml: &str, bootstrap: &Bootstrap) -> Result<Credentials, Vec<String>> {
    let config = load_str(FILE, yaml)
        .unwrap_or_else(|e| panic!("config does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let plan = crate::plan::compile(&config, bootstrap)
        .unwrap_or_else(|e| panic!("plan does not compile:\n{e}\n--- yaml ---\n{yaml}"));
    load(&plan, &config, bootstrap).map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn loads(yaml: &str) -> Credentials {
    loads_with(yaml, &Bootstrap::default())
}

fn loads_with(yaml: &str, bootstrap: &Bootstrap) -> Credentials {
    try_load(yaml, bootstrap).unwrap_or_else(|e| {
        panic!(
            "expected credentials to load, got:\n{}\n--- yaml ---\n{yaml}",
            e.join("\n")
        )
    })
}

fn errors(yaml: &str) -> Vec<String> {
    errors_with(yaml, &Bootstrap::default())
}

fn errors_with(yaml: &str, bootstrap: &Bootstrap) -> Vec<String> {
    match try_load(yaml, bootstrap) {
        Ok(c) => panic!("expected credential errors, but it loaded: {c:?}\n--- yaml ---\n{yaml}"),
        Err(e) => e,
    }
}

/// The single error, or a panic listing them.
fn one_error(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(
        e.len(),
        1,
        "expected exactly one error, got:\n{}",
        e.join("\n")
    );
    e.into_iter().next().unwrap()
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for p in parts {
        assert!(msg.contains(p), "expected {p:?} in the error:\n{msg}");
    }
}

fn cref(name: &str) -> CredentialRef {
    CredentialRef {
        name: name.into(),
        namespace: None,
    }
}

fn cred_identity<'a>(creds: &'a Credentials, name: &str) -> &'a Identity {
    creds
        .identities
        .get(&IdentitySource::Credential(cref(name)))
        .unwrap_or_else(|| {
            panic!(
                "no identity for {name}: {:?}",
                creds.identities.keys().collect::<Vec<_>>()
            )
        })
}

fn cred_trust<'a>(creds: &'a Credentials, name: &str) -> &'a Trust {
    creds
        .trust
        .get(&(TrustSource::Credential(cref(name)), None))
        .unwrap_or_else(|| {
            panic!(
                "no trust for {name}: {:?}",
                creds.trust.keys().collect::<Vec<_>>()
            )
        })
}

/// Whether `trust` holds exactly one root whose subject contains `cn`.
fn single_root_named(trust: &Trust, cn: &str) -> bool {
    trust.roots.roots.len() == 1
        && trust.roots.roots[0]
            .subject
            .as_ref()
            .windows(cn.len())
            .any(|w| w == cn.as_bytes())
}

struct Pki {
    ca: DevCa,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: DevCa::new("creds test CA"),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn client(&self, cn: &str) -> Leaf {
        self.ca.issue(&LeafSpec::client(cn))
    }

    fn ca_file(&self) -> PathBuf {
        self.ca.write_cert(self.dir.path(), "ca.crt").unwrap()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

/// MUTUAL tls lines with files.
fn mutual_files(ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "mode: MUTUAL\ncaCertificates: {}\nclientCertificate: {}\nprivateKey: {}",
        ca.display(),
        cert.display(),
        key.display()
    )
}

mod crl;
mod secrets;
mod validation;
mod warnings;
