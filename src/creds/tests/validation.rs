//! Validation: key/certificate match, validity dates, CA files, X.509 v1, CRLs, no key material in errors.

use super::*;

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
fn an_expired_certificate_with_the_wrong_key_reports_both() {
    let pki = Pki::new();
    let leaf = pki.ca.issue(&LeafSpec::client("old.client").expired());
    let other = pki.client("other.client");
    let ca = pki.ca_file();
    let (cert, _) = leaf.write(pki.dir.path(), "client").unwrap();
    let (_, key) = other.write(pki.dir.path(), "other").unwrap();
    let e = one_error(&dr("mtls", &mutual_files(&ca, &cert, &key)));
    assert_mentions(
        &e,
        &[&resource("mtls"), "CN=old.client", "expired", "; and "],
    );
    assert!(
        e.contains("the private key does not match the certificate"),
        "{e}"
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
/// A CA named `cn` (PEM) and an empty CRL it signed (PEM).
fn crl_and_ca(cn: &str) -> (String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, SerialNumber,
    };
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate().unwrap();
    let ca_pem = params.self_signed(&key).unwrap().pem();
    let issuer = Issuer::new(params, key);
    let now = time::OffsetDateTime::now_utc();
    let crl = CertificateRevocationListParams {
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
    .unwrap();
    (ca_pem, crl)
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
    let (ca_pem, crl_pem) = crl_and_ca("CRL test CA");
    let ca = pki.write("crl-ca.crt", &ca_pem);
    let crl = pki.write("ca.crl", &crl_pem);
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        crl.display()
    );
    let creds = loads(&dr("simple", &tls));
    let trust = &creds.trust[&(TrustSource::File(ca), Some(crl))];
    assert_eq!(trust.crls.len(), 1);
}

#[test]
fn ca_crl_from_another_ca_is_refused_naming_the_file() {
    let pki = Pki::new();
    let (ca_pem, _) = crl_and_ca("the CA");
    let (_, foreign_crl) = crl_and_ca("another CA");
    let ca = pki.write("the-ca.crt", &ca_pem);
    let crl = pki.write("foreign.crl", &foreign_crl);
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        crl.display()
    );
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCrl",
            &crl.display().to_string(),
            "CN=another CA",
            "not the CA it accompanies",
            "CN=the CA",
        ],
    );
}

#[test]
fn ca_crl_whose_signature_does_not_verify_is_refused() {
    let pki = Pki::new();
    // Two CAs with the same name and different keys: the CRL names the
    // first as its issuer but was signed by the second.
    let (ca_pem, _) = crl_and_ca("same name CA");
    let (_, forged_crl) = crl_and_ca("same name CA");
    let ca = pki.write("same.crt", &ca_pem);
    let crl = pki.write("forged.crl", &forged_crl);
    let tls = format!(
        "mode: SIMPLE\ncaCertificates: {}\ncaCrl: {}",
        ca.display(),
        crl.display()
    );
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            "caCrl",
            &crl.display().to_string(),
            "signature does not verify",
        ],
    );
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

#[test]
fn a_truncated_pem_is_described_in_words() {
    let pki = Pki::new();
    let full = pki.ca.cert_pem.clone();
    let cut = &full[..full.find("-----END").unwrap()];
    let ca = pki.write("cut-ca.crt", cut);
    let tls = format!("mode: SIMPLE\ncaCertificates: {}", ca.display());
    let e = one_error(&dr("simple", &tls));
    assert_mentions(
        &e,
        &[
            &resource("simple"),
            "caCertificates",
            "no end marker",
            "-----END CERTIFICATE-----",
        ],
    );
    assert!(!e.contains("[45, 45"), "{e}");
}
