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

// === 1. credentialName from in-config Secrets ===

#[test]
fn tls_secret_with_base64_data_loads_identity_and_ca() {
    let pki = Pki::new();
    let client = pki.client("frontend.client");
    let yaml = docs(&[
        secret_data(
            "client-tls",
            None,
            &[
                ("tls.crt", &client.cert_pem),
                ("tls.key", &client.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: client-tls"),
    ]);
    let creds = loads(&yaml);
    let id = cred_identity(&creds, "client-tls");
    assert_eq!(id.leaf.subject, "CN=frontend.client");
    assert_eq!(id.leaf.version, 3);
    assert_mentions(
        &id.source,
        &[
            "kubernetes://client-tls",
            "Secret default/client-tls",
            "tls.crt/tls.key",
        ],
    );
    let trust = cred_trust(&creds, "client-tls");
    assert!(single_root_named(trust, "creds test CA"), "{trust:?}");
    assert_mentions(&trust.source, &["kubernetes://client-tls", "key ca.crt"]);
    assert!(trust.crls.is_empty());
}

#[test]
fn generic_secret_with_string_data_loads_identity_and_ca() {
    let pki = Pki::new();
    let client = pki.client("generic.client");
    let yaml = docs(&[
        secret_string_data(
            "client-generic",
            None,
            &[
                ("cert", &client.cert_pem),
                ("key", &client.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr(
            "mtls",
            "mode: MUTUAL\ncredentialName: kubernetes://client-generic",
        ),
    ]);
    let creds = loads(&yaml);
    assert_eq!(
        cred_identity(&creds, "client-generic").leaf.subject,
        "CN=generic.client"
    );
    let trust = cred_trust(&creds, "client-generic");
    assert!(single_root_named(trust, "creds test CA"));
    assert_mentions(&trust.source, &["key cacert"]);
}

#[test]
fn simple_with_credential_name_loads_only_the_ca() {
    let pki = Pki::new();
    let yaml = docs(&[
        secret_string_data("ca-only", None, &[("cacert", &pki.ca.cert_pem)]),
        dr("simple", "mode: SIMPLE\ncredentialName: ca-only"),
    ]);
    let creds = loads(&yaml);
    assert!(
        creds.identities.is_empty(),
        "SIMPLE presents no client certificate"
    );
    assert!(single_root_named(
        cred_trust(&creds, "ca-only"),
        "creds test CA"
    ));
}

#[test]
fn credential_name_with_namespace_looks_in_that_namespace() {
    let pki = Pki::new();
    let in_default = pki.client("default.client");
    let in_istio = pki.client("istio-system.client");
    let yaml = docs(&[
        secret_string_data(
            "egress-client",
            None,
            &[
                ("cert", &in_default.cert_pem),
                ("key", &in_default.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        secret_string_data(
            "egress-client",
            Some("istio-system"),
            &[
                ("cert", &in_istio.cert_pem),
                ("key", &in_istio.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr(
            "mtls",
            "mode: MUTUAL\ncredentialName: kubernetes://istio-system/egress-client",
        ),
    ]);
    let creds = loads(&yaml);
    let id = creds
        .identities
        .get(&IdentitySource::Credential(CredentialRef {
            name: "egress-client".into(),
            namespace: Some("istio-system".into()),
        }))
        .expect("identity for kubernetes://istio-system/egress-client");
    assert_eq!(id.leaf.subject, "CN=istio-system.client");
    assert_mentions(&id.source, &["Secret istio-system/egress-client"]);
}

#[test]
fn plain_credential_name_uses_the_proxy_namespace() {
    let pki = Pki::new();
    let client = pki.client("team-a.client");
    let yaml = docs(&[
        secret_string_data(
            "egress-client",
            Some("team-a"),
            &[
                ("cert", &client.cert_pem),
                ("key", &client.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress-client"),
    ]);
    let bootstrap = Bootstrap {
        namespace: "team-a".into(),
        ..Bootstrap::default()
    };
    let creds = loads_with(&yaml, &bootstrap);
    assert_eq!(
        cred_identity(&creds, "egress-client").leaf.subject,
        "CN=team-a.client"
    );
    // With the default namespace the same Secret is not visible.
    let e = errors(&yaml);
    assert!(
        e.iter()
            .all(|m| m.contains("Secret default/egress-client not found")),
        "{e:#?}"
    );
}

// === 2. key precedence ===

#[test]
fn cert_and_key_win_over_tls_crt_and_tls_key() {
    let pki = Pki::new();
    let generic = pki.client("generic.wins");
    let tls = pki.client("tls.loses");
    let yaml = docs(&[
        secret_data(
            "both",
            None,
            &[
                ("tls.crt", &tls.cert_pem),
                ("tls.key", &tls.key_pem),
                ("cert", &generic.cert_pem),
                ("key", &generic.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: both"),
    ]);
    let creds = loads(&yaml);
    let id = cred_identity(&creds, "both");
    assert_eq!(id.leaf.subject, "CN=generic.wins");
    assert_mentions(&id.source, &["keys cert/key"]);
}

#[test]
fn empty_cert_and_key_count_as_missing() {
    let pki = Pki::new();
    let tls = pki.client("tls.used");
    let yaml = docs(&[
        secret_string_data(
            "empty-generic",
            None,
            &[
                ("cert", ""),
                ("key", ""),
                ("tls.crt", &tls.cert_pem),
                ("tls.key", &tls.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: empty-generic"),
    ]);
    let creds = loads(&yaml);
    assert_eq!(
        cred_identity(&creds, "empty-generic").leaf.subject,
        "CN=tls.used"
    );
}

// === 3. CA from <name>-cacert, else <name> ===

#[test]
fn cacert_secret_is_preferred_over_the_ca_in_the_main_secret() {
    let pki = Pki::new();
    let client = pki.client("client");
    let other = DevCa::new("CA in the main secret");
    let preferred = DevCa::new("CA in the cacert secret");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[
                ("tls.crt", &client.cert_pem),
                ("tls.key", &client.key_pem),
                ("ca.crt", &other.cert_pem),
            ],
        ),
        secret_data("egress-cacert", None, &[("cacert", &preferred.cert_pem)]),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let creds = loads(&yaml);
    let trust = cred_trust(&creds, "egress");
    assert!(
        single_root_named(trust, "CA in the cacert secret"),
        "{trust:?}"
    );
    assert_mentions(
        &trust.source,
        &["Secret default/egress-cacert", "key cacert"],
    );
    // The identity still comes from <name>.
    assert_eq!(cred_identity(&creds, "egress").leaf.subject, "CN=client");
}

#[test]
fn ca_falls_back_to_the_main_secret_without_a_cacert_secret() {
    let pki = Pki::new();
    let client = pki.client("client");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[
                ("tls.crt", &client.cert_pem),
                ("tls.key", &client.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let creds = loads(&yaml);
    let trust = cred_trust(&creds, "egress");
    assert!(single_root_named(trust, "creds test CA"));
    assert_mentions(&trust.source, &["Secret default/egress,", "key ca.crt"]);
    assert!(!trust.source.contains("egress-cacert"), "{}", trust.source);
}

#[test]
fn cacert_key_is_preferred_over_ca_crt() {
    let a = DevCa::new("CA under cacert");
    let b = DevCa::new("CA under ca.crt");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[("ca.crt", &b.cert_pem), ("cacert", &a.cert_pem)],
        ),
        dr("simple", "mode: SIMPLE\ncredentialName: egress"),
    ]);
    let creds = loads(&yaml);
    assert!(single_root_named(
        cred_trust(&creds, "egress"),
        "CA under cacert"
    ));
}

#[test]
fn secret_without_any_ca_lists_what_it_has() {
    let pki = Pki::new();
    let client = pki.client("client");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[("tls.crt", &client.cert_pem), ("tls.key", &client.key_pem)],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let e = one_error(&yaml);
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "kubernetes://egress",
            "no CA certificate",
            "cacert or ca.crt",
            "has keys: tls.crt, tls.key",
        ],
    );
}

// === 4. missing keys ===

#[test]
fn missing_identity_keys_list_the_keys_found() {
    let pki = Pki::new();
    let client = pki.client("client");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[("foo", "bar"), ("tls.crt", &client.cert_pem)],
        ),
        secret_data("egress-cacert", None, &[("cacert", &pki.ca.cert_pem)]),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let e = one_error(&yaml);
    assert_mentions(
        &e,
        &[
            FILE,
            &resource("mtls"),
            "kubernetes://egress",
            "Secret default/egress",
            "(cert and key) or (tls.crt and tls.key)",
            "found: foo, tls.crt",
        ],
    );
}

// === 5. Secret not found ===

#[test]
fn secret_not_found_names_the_credential_and_namespace() {
    let yaml = dr(
        "mtls",
        "mode: MUTUAL\ncredentialName: kubernetes://prod/nowhere",
    );
    let e = errors(&yaml);
    assert!(!e.is_empty());
    for m in &e {
        assert_mentions(
            m,
            &[
                &resource("mtls"),
                "kubernetes://prod/nowhere",
                "Secret prod/nowhere not found",
                "--secrets-dir",
            ],
        );
    }
}

#[test]
fn secret_not_found_with_a_secrets_dir_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = Bootstrap {
        secrets_dir: Some(dir.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let yaml = dr("simple", "mode: SIMPLE\ncredentialName: nowhere");
    let e = one_error_with(&yaml, &bootstrap);
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "kubernetes://nowhere",
            "Secret default/nowhere not found",
            &dir.path().display().to_string(),
        ],
    );
}

fn one_error_with(yaml: &str, bootstrap: &Bootstrap) -> String {
    let e = errors_with(yaml, bootstrap);
    assert_eq!(
        e.len(),
        1,
        "expected exactly one error, got:\n{}",
        e.join("\n")
    );
    e.into_iter().next().unwrap()
}

// === 6. Secrets directory as Kubernetes mounts it ===

/// Writes `<root>/<name>/` the way the kubelet does: files in a timestamped
/// directory, `..data` pointing at it, and each key a symlink through
/// `..data`.
fn mount_secret(root: &Path, name: &str, data: &[(&str, &str)]) {
    use std::os::unix::fs::symlink;
    let dir = root.join(name);
    let version = "..2026_11_26_00_00_00.000";
    std::fs::create_dir_all(dir.join(version)).unwrap();
    for (k, v) in data {
        std::fs::write(dir.join(version).join(k), v).unwrap();
    }
    symlink(version, dir.join("..data")).unwrap();
    for (k, _) in data {
        symlink(format!("..data/{k}"), dir.join(k)).unwrap();
    }
}

#[test]
fn secrets_dir_with_kubelet_symlinks_loads() {
    let pki = Pki::new();
    let client = pki.client("mounted.client");
    let root = tempfile::tempdir().unwrap();
    mount_secret(
        root.path(),
        "egress",
        &[
            ("tls.crt", &client.cert_pem),
            ("tls.key", &client.key_pem),
            ("ca.crt", &pki.ca.cert_pem),
        ],
    );
    // Sanity: the layout really is symlinks through ..data.
    let link = std::fs::read_link(root.path().join("egress/tls.crt")).unwrap();
    assert_eq!(link, Path::new("..data/tls.crt"));
    let bootstrap = Bootstrap {
        secrets_dir: Some(root.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let creds = loads_with(
        &dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
        &bootstrap,
    );
    let id = cred_identity(&creds, "egress");
    assert_eq!(id.leaf.subject, "CN=mounted.client");
    assert_mentions(&id.source, &["secret directory", "tls.crt/tls.key"]);
    assert!(single_root_named(
        cred_trust(&creds, "egress"),
        "creds test CA"
    ));
}

#[test]
fn secrets_dir_cacert_directory_and_missing_keys() {
    let pki = Pki::new();
    let client = pki.client("mounted.client");
    let root = tempfile::tempdir().unwrap();
    // The kubelet's hidden entries are not reported as keys.
    mount_secret(
        root.path(),
        "egress",
        &[("foo", "x"), ("tls.crt", &client.cert_pem)],
    );
    mount_secret(
        root.path(),
        "egress-cacert",
        &[("cacert", &pki.ca.cert_pem)],
    );
    let bootstrap = Bootstrap {
        secrets_dir: Some(root.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let e = one_error_with(
        &dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
        &bootstrap,
    );
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "kubernetes://egress",
            "found: foo, tls.crt",
        ],
    );
    assert!(!e.contains("..data"), "{e}");
}

#[test]
fn config_secret_wins_over_the_secrets_dir() {
    let pki = Pki::new();
    let in_config = pki.client("from.config");
    let in_dir = pki.client("from.dir");
    let root = tempfile::tempdir().unwrap();
    mount_secret(
        root.path(),
        "egress",
        &[
            ("tls.crt", &in_dir.cert_pem),
            ("tls.key", &in_dir.key_pem),
            ("ca.crt", &pki.ca.cert_pem),
        ],
    );
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[
                ("tls.crt", &in_config.cert_pem),
                ("tls.key", &in_config.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let bootstrap = Bootstrap {
        secrets_dir: Some(root.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let creds = loads_with(&yaml, &bootstrap);
    assert_eq!(
        cred_identity(&creds, "egress").leaf.subject,
        "CN=from.config"
    );
}

// === 7. key does not match the certificate ===

#[test]
fn key_of_another_leaf_does_not_match() {
    let pki = Pki::new();
    let a = pki.client("leaf.a");
    let b = pki.client("leaf.b");
    let ca = pki.ca_file();
    let cert = pki.write("a.crt", &a.cert_pem);
    let key = pki.write("b.key", &b.key_pem);
    let e = one_error(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "does not match",
            "CN=leaf.a",
            &cert.display().to_string(),
            &key.display().to_string(),
        ],
    );
}

#[test]
fn key_of_another_leaf_in_a_secret_does_not_match() {
    let pki = Pki::new();
    let a = pki.client("leaf.a");
    let b = pki.client("leaf.b");
    let yaml = docs(&[
        secret_data(
            "egress",
            None,
            &[
                ("tls.crt", &a.cert_pem),
                ("tls.key", &b.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: egress"),
    ]);
    let e = one_error(&yaml);
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "kubernetes://egress",
            "does not match",
            "CN=leaf.a",
        ],
    );
}

// === 8. validity dates ===

#[test]
fn expired_client_certificate_is_refused() {
    let pki = Pki::new();
    let leaf = pki.ca.issue(&LeafSpec::client("old.client").expired());
    let ca = pki.ca_file();
    let (cert, key) = leaf.write(pki.dir.path(), "client").unwrap();
    let e = one_error(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "CN=old.client",
            "expired",
            &cert.display().to_string(),
        ],
    );
}

#[test]
fn not_yet_valid_client_certificate_is_refused() {
    let pki = Pki::new();
    let leaf = pki
        .ca
        .issue(&LeafSpec::client("future.client").not_yet_valid());
    let ca = pki.ca_file();
    let (cert, key) = leaf.write(pki.dir.path(), "client").unwrap();
    let e = one_error(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    assert_mentions(
        &e,
        &[&resource("mtls"), "CN=future.client", "not valid until"],
    );
}

#[test]
fn valid_client_certificate_files_load() {
    let pki = Pki::new();
    let leaf = pki.client("files.client");
    let ca = pki.ca_file();
    let (cert, key) = leaf.write(pki.dir.path(), "client").unwrap();
    let creds = loads(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    let id = &creds.identities[&IdentitySource::Files {
        cert: cert.clone(),
        key: key.clone(),
    }];
    assert_eq!(id.leaf.subject, "CN=files.client");
    assert!(
        id.leaf.sans.contains(&"DNS:files.client".to_string()),
        "{:?}",
        id.leaf.sans
    );
    assert!(creds.trust.contains_key(&(TrustSource::File(ca), None)));
}

// === 9. caCertificates file problems ===

#[test]
fn ca_certificates_not_pem_names_the_path() {
    let pki = Pki::new();
    let bad = pki.write("not-a-ca.pem", "this is not a certificate\n");
    let e = one_error(&dr(
        "simple",
        &format!("mode: SIMPLE\ncaCertificates: {}", bad.display()),
    ));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCertificates",
            &bad.display().to_string(),
            "no CERTIFICATE",
        ],
    );
}

#[test]
fn ca_certificates_empty_file_names_the_path() {
    let pki = Pki::new();
    let empty = pki.write("empty.pem", "");
    let e = one_error(&dr(
        "simple",
        &format!("mode: SIMPLE\ncaCertificates: {}", empty.display()),
    ));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCertificates",
            &empty.display().to_string(),
            "no CERTIFICATE",
        ],
    );
}

#[test]
fn ca_certificates_with_only_a_key_is_refused() {
    // A key where the CA bundle should be: refused, and the key stays out of the message.
    let pki = Pki::new();
    let leaf = pki.client("c");
    let wrong = pki.write("key-as-ca.pem", &leaf.key_pem);
    let e = one_error(&dr(
        "simple",
        &format!("mode: SIMPLE\ncaCertificates: {}", wrong.display()),
    ));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            &wrong.display().to_string(),
            "no CERTIFICATE",
        ],
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
}

#[test]
fn ca_certificates_missing_file_cannot_read() {
    let pki = Pki::new();
    let missing = pki.path("does-not-exist.pem");
    let e = one_error(&dr(
        "simple",
        &format!("mode: SIMPLE\ncaCertificates: {}", missing.display()),
    ));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCertificates",
            "cannot read",
            &missing.display().to_string(),
        ],
    );
}

#[test]
fn missing_client_certificate_and_key_files_cannot_read() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let cert = pki.path("no.crt");
    let key = pki.path("no.key");
    let e = one_error(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "clientCertificate",
            "cannot read",
            &cert.display().to_string(),
        ],
    );
}

// === 10. X.509 v1 client certificate (openssl x509 -req, no extensions) ===

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "openssl {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn x509_v1_client_certificate_is_refused_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        &[
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.crt",
            "-subj", "/CN=ca", "-days", "30",
        ],
    );
    openssl(
        d,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "k.pem",
            "-subj",
            "/CN=client.example.com",
            "-out",
            "c.csr",
        ],
    );
    // As in older Istio docs: no -extfile, so no extensions.
    openssl(
        d,
        &[
            "x509",
            "-req",
            "-in",
            "c.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "1",
            "-days",
            "30",
            "-out",
            "c.crt",
        ],
    );
    // Precondition: this OpenSSL really made a v1 certificate (3.0 does;
    // 3.2+ add extensions and make v3 by default).
    let pem = std::fs::read(d.join("c.crt")).unwrap();
    let info = CertInfo::parse(&certs_from_pem(&pem).unwrap()[0]).unwrap();
    assert_eq!(
        info.version, 1,
        "openssl x509 -req made a v{} certificate on this machine",
        info.version
    );
    assert!(info.sans.is_empty());

    let yaml = dr(
        "mtls",
        &mutual_files(&d.join("ca.crt"), &d.join("c.crt"), &d.join("k.pem")),
    );
    let e = one_error(&yaml);
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            &d.join("c.crt").display().to_string(),
            "CN=client.example.com",
            "v1",
            "subjectAltName",
        ],
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
}

// === 11. caCrl ===

/// A CRL signed by a fresh CA (PEM).
fn crl_pem() -> String {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::new(params, key);
    let now = time::OffsetDateTime::now_utc();
    CertificateRevocationListParams {
        this_update: now - time::Duration::hours(1),
        next_update: now + time::Duration::days(7),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: Vec::new(),
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&issuer)
    .unwrap()
    .pem()
    .unwrap()
}

#[test]
fn ca_crl_that_is_not_a_crl_is_an_error() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    // A certificate where the CRL should be.
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        ca.display()
    );
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCrl",
            &ca.display().to_string(),
            "CRL",
        ],
    );
    // Garbage text.
    let junk = pki.write("junk.crl", "not a crl");
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        junk.display()
    );
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCrl",
            &junk.display().to_string(),
            "CRL",
        ],
    );
    // Missing.
    let missing = pki.path("missing.crl");
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        missing.display()
    );
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCrl",
            "cannot read",
            &missing.display().to_string(),
        ],
    );
}

#[test]
fn ca_crl_that_is_a_crl_loads() {
    let pki = Pki::new();
    let ca = pki.ca_file();
    let crl = pki.write("ca.crl", &crl_pem());
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        crl.display()
    );
    let creds = loads(&dr("simple", &tls));
    let trust = &creds.trust[&(TrustSource::File(ca), Some(crl))];
    assert_eq!(trust.crls.len(), 1);
}

// === 12. no secrets or key material in errors ===

/// The base64 body lines of a PEM (without the armour lines).
fn pem_body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_string)
        .collect()
}

#[test]
fn errors_never_contain_key_material() {
    let pki = Pki::new();
    let a = pki.client("leaf.a");
    let b = pki.client("leaf.b");
    let expired = pki.ca.issue(&LeafSpec::client("old").expired());
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut messages = Vec::new();
    let mut secrets_used: Vec<String> = Vec::new();

    // Mismatched key via a Secret (base64 data).
    messages.extend(errors(&docs(&[
        secret_data(
            "mismatch",
            None,
            &[
                ("tls.crt", &a.cert_pem),
                ("tls.key", &b.key_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("mismatch", "mode: MUTUAL\ncredentialName: mismatch"),
    ])));
    secrets_used.push(b.key_pem.clone());
    // Expired certificate with its key, via stringData.
    messages.extend(errors(&docs(&[
        secret_string_data(
            "old",
            None,
            &[
                ("cert", &expired.cert_pem),
                ("key", &expired.key_pem),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr("old", "mode: MUTUAL\ncredentialName: old"),
    ])));
    secrets_used.push(expired.key_pem.clone());
    // Key and certificate swapped.
    messages.extend(errors(&docs(&[
        secret_data(
            "swapped",
            None,
            &[
                ("tls.crt", &a.key_pem),
                ("tls.key", &a.cert_pem),
                ("ca.crt", &pki.ca.cert_pem),
            ],
        ),
        dr("swapped", "mode: MUTUAL\ncredentialName: swapped"),
    ])));
    secrets_used.push(a.key_pem.clone());
    // A damaged key (body cut short).
    let lines: Vec<&str> = b.key_pem.lines().collect();
    let damaged = format!(
        "{}\n{}\n{}\n",
        lines[0],
        &lines[1][..30],
        lines[lines.len() - 1]
    );
    messages.extend(errors(&docs(&[
        secret_string_data(
            "damaged",
            None,
            &[
                ("cert", &b.cert_pem),
                ("key", &damaged),
                ("cacert", &pki.ca.cert_pem),
            ],
        ),
        dr("damaged", "mode: MUTUAL\ncredentialName: damaged"),
    ])));
    // Missing keys: the names are listed, never the values.
    messages.extend(errors(&docs(&[
        secret_data(
            "partial",
            None,
            &[("key", &a.key_pem), ("ca.crt", &pki.ca.cert_pem)],
        ),
        dr("partial", "mode: MUTUAL\ncredentialName: partial"),
    ])));
    // A key where the CA bundle should be.
    messages.extend(errors(&docs(&[
        secret_data("key-as-ca", None, &[("ca.crt", &a.key_pem)]),
        dr("keyasca", "mode: SIMPLE\ncredentialName: key-as-ca"),
    ])));
    // Files: mismatched key.
    let ca = pki.ca_file();
    let cert = pki.write("a.crt", &a.cert_pem);
    let key = pki.write("b.key", &b.key_pem);
    messages.extend(errors(&dr("files", &mutual_files(&ca, &cert, &key))));
    // A Secret with a broken base64 value is a config error; it must not echo the value.
    let broken = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: broken\ndata:\n  tls.key: {}!!\n",
        b64.encode(&a.key_pem)
    );
    let config_err = load_str(FILE, &broken)
        .expect_err("invalid base64 is refused")
        .to_string();
    assert!(
        config_err.contains("Secret/default/broken") && config_err.contains("tls.key"),
        "{config_err}"
    );
    messages.push(config_err);

    assert!(messages.len() >= 8, "{messages:#?}");
    for m in &messages {
        assert!(!m.contains("PRIVATE KEY"), "key armour in an error: {m}");
        assert!(!m.contains("BEGIN"), "PEM armour in an error: {m}");
        for pem in &secrets_used {
            for line in pem_body_lines(pem) {
                assert!(!m.contains(&line[..16]), "key bytes in an error: {m}");
            }
            let encoded = b64.encode(pem);
            assert!(
                !m.contains(&encoded[..40]),
                "base64 of the Secret value in an error: {m}"
            );
        }
    }
}
