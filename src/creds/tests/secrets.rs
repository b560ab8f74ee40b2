//! credentialName: Secrets in the config and in a Kubernetes-style directory, key precedence, missing keys.

use super::*;

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
    // With the default namespace the same Secret is not visible; the
    // error says where it is and how to point meshgate there.
    let e = errors(&yaml);
    assert!(
        e.iter()
            .all(|m| m.contains("Secret default/egress-client not found")
                && m.contains("a Secret of that name is in namespace team-a")
                && m.contains("kubernetes://team-a/egress-client")
                && m.contains("--namespace team-a")),
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

pub(super) fn one_error_with(yaml: &str, bootstrap: &Bootstrap) -> String {
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
pub(super) fn mount_secret(root: &Path, name: &str, data: &[(&str, &str)]) {
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

#[test]
fn empty_and_unreadable_keys_are_said_to_be_so() {
    let pki = Pki::new();
    let tls = pki.client("tls.used");
    // An empty tls.crt is listed as empty, not as if it were absent.
    let yaml = docs(&[
        secret_string_data(
            "empty-cert",
            None,
            &[("tls.crt", ""), ("tls.key", &tls.key_pem)],
        ),
        dr("mtls", "mode: MUTUAL\ncredentialName: empty-cert"),
    ]);
    let e = errors(&yaml).join("\n");
    assert_mentions(&e, &["found: tls.crt (empty), tls.key"]);
    // A mounted key that cannot be read says why (a directory here: root
    // reads any file whatever its mode).
    let dir = tempfile::tempdir().unwrap();
    mount_secret(dir.path(), "unreadable", &[("tls.crt", &tls.cert_pem)]);
    std::fs::create_dir(dir.path().join("unreadable").join("tls.key")).unwrap();
    let bootstrap = Bootstrap {
        secrets_dir: Some(dir.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let yaml = dr("mtls", "mode: MUTUAL\ncredentialName: unreadable");
    let e = errors_with(&yaml, &bootstrap).join("\n");
    assert_mentions(&e, &["found: tls.crt, tls.key (cannot read: "]);
}
