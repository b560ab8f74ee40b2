//! Revocation lists kept next to the CA in a `credentialName` Secret (or a
//! `caCertCredentialName` ConfigMap): keys `ca.crl` and `crl`, checked as a
//! `caCrl` file is, errors naming the Secret and key, and part of the
//! credential's fingerprint.

use super::secrets::{mount_secret, one_error_with};
use super::*;
use crate::plan::inbound::ClientCaSource;

/// A Gateway `default/gw` with one HTTPS server for `HOST` whose `tls`
/// block is `tls_lines`.
fn gateway(tls_lines: &str) -> String {
    let tls: String = tls_lines.lines().map(|l| format!("      {l}\n")).collect();
    format!(
        "apiVersion: networking.istio.io/v1\n\
         kind: Gateway\n\
         metadata:\n  name: gw\n\
         spec:\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [\"{HOST}\"]\n    tls:\n{tls}"
    )
}

/// `origin` prefix of errors about `gateway(..)`'s tls block.
const GATEWAY: &str = "Gateway/default/gw: spec.servers[0].tls";

fn client_ca(creds: &Credentials, source: ClientCaSource, crl: Option<PathBuf>) -> &Trust {
    let key = (source, crl);
    creds.client_cas.get(&key).unwrap_or_else(|| {
        panic!(
            "no client CA {key:?}: {:?}",
            creds.client_cas.keys().collect::<Vec<_>>()
        )
    })
}

/// A Secret with an identity issued by `pki`'s CA, the CA, and `extra`.
fn tls_secret(pki: &Pki, name: &str, extra: &[(&str, &str)]) -> String {
    let client = pki.client("crl.client");
    let mut data = vec![
        ("tls.crt", client.cert_pem.as_str()),
        ("tls.key", client.key_pem.as_str()),
        ("ca.crt", pki.ca.cert_pem.as_str()),
    ];
    data.extend_from_slice(extra);
    secret_string_data(name, None, &data)
}

/// A server Secret for the Gateway (certificate only, no CA).
fn server_secret(pki: &Pki, name: &str) -> String {
    let server = pki.ca.issue(&LeafSpec::server(&[HOST]));
    secret_string_data(
        name,
        None,
        &[("tls.crt", &server.cert_pem), ("tls.key", &server.key_pem)],
    )
}

// === DestinationRule credentialName ===

#[test]
fn ca_crl_in_the_destination_rule_secret_is_loaded() {
    let pki = Pki::new();
    let revoked = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let crl = pki.ca.crl_pem(&[&revoked]);
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", &crl)]),
        dr("mtls", "mode: MUTUAL\ncredentialName: client-tls"),
    ]);
    let creds = loads(&yaml);
    let trust = cred_trust(&creds, "client-tls");
    assert_eq!(trust.crls.len(), 1, "{trust:?}");
}

#[test]
fn crl_key_next_to_cacert_is_loaded_and_both_keys_are_applied() {
    let pki = Pki::new();
    let a = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let b = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let yaml = docs(&[
        secret_string_data(
            "generic",
            None,
            &[
                ("cacert", &pki.ca.cert_pem),
                ("crl", &pki.ca.crl_pem(&[&a])),
            ],
        ),
        dr("simple", "mode: SIMPLE\ncredentialName: generic"),
    ]);
    assert_eq!(cred_trust(&loads(&yaml), "generic").crls.len(), 1);
    let yaml = docs(&[
        tls_secret(
            &pki,
            "both",
            &[
                ("ca.crl", &pki.ca.crl_pem(&[&a])),
                ("crl", &pki.ca.crl_pem(&[&b])),
            ],
        ),
        dr("simple", "mode: SIMPLE\ncredentialName: both"),
    ]);
    assert_eq!(cred_trust(&loads(&yaml), "both").crls.len(), 2);
}

#[test]
fn empty_ca_crl_counts_as_missing() {
    let pki = Pki::new();
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", "")]),
        dr("mtls", "mode: MUTUAL\ncredentialName: client-tls"),
    ]);
    assert!(cred_trust(&loads(&yaml), "client-tls").crls.is_empty());
}

#[test]
fn the_crl_is_part_of_the_fingerprint() {
    let pki = Pki::new();
    let revoked = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let yaml = |extra: &[(&str, &str)]| {
        docs(&[
            tls_secret(&pki, "client-tls", extra),
            dr("simple", "mode: SIMPLE\ncredentialName: client-tls"),
        ])
    };
    // The identity leaf differs per call, the CA does not: the trust
    // fingerprint only changes with the CRL.
    let without = cred_trust(&loads(&yaml(&[])), "client-tls").fingerprint;
    let again = cred_trust(&loads(&yaml(&[])), "client-tls").fingerprint;
    assert_eq!(without, again);
    let crl = pki.ca.crl_pem(&[&revoked]);
    let with = cred_trust(&loads(&yaml(&[("ca.crl", &crl)])), "client-tls").fingerprint;
    assert_ne!(without, with);
}

#[test]
fn crl_from_another_ca_in_a_secret_is_refused_naming_the_secret_and_key() {
    let pki = Pki::new();
    let other = DevCa::new("another CA");
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", &other.crl_pem(&[]))]),
        dr("mtls", "mode: MUTUAL\ncredentialName: client-tls"),
    ]);
    let e = one_error(&yaml);
    assert_mentions(
        &e,
        &[
            &resource("mtls"),
            "kubernetes://client-tls",
            "Secret default/client-tls",
            "key ca.crl",
            "CRL #1",
            "CN=another CA",
            "not the CA it accompanies",
            "CN=creds test CA",
        ],
    );
    assert!(!e.contains("PRIVATE KEY"), "{e}");
}

#[test]
fn crl_in_a_secret_whose_signature_does_not_verify_is_refused() {
    let pki = Pki::new();
    // Same name, another key: the CRL names the Secret's CA as its issuer.
    let forger = DevCa::new("creds test CA");
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", &forger.crl_pem(&[]))]),
        dr("simple", "mode: SIMPLE\ncredentialName: client-tls"),
    ]);
    assert_mentions(
        &one_error(&yaml),
        &[
            "Secret default/client-tls",
            "key ca.crl",
            "signature does not verify",
        ],
    );
}

#[test]
fn a_secret_crl_that_is_not_a_crl_is_refused() {
    let pki = Pki::new();
    // Text with no PEM block.
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("crl", "not a crl")]),
        dr("simple", "mode: SIMPLE\ncredentialName: client-tls"),
    ]);
    assert_mentions(
        &one_error(&yaml),
        &["Secret default/client-tls", "key crl", "no X509 CRL block"],
    );
    // A certificate where the CRL should be.
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", &pki.ca.cert_pem)]),
        dr("simple", "mode: SIMPLE\ncredentialName: client-tls"),
    ]);
    assert_mentions(&one_error(&yaml), &["key ca.crl", "no X509 CRL block"]);
    // A CRL block that is not base64.
    let broken = "-----BEGIN X509 CRL-----\n!!!!\n-----END X509 CRL-----\n";
    let yaml = docs(&[
        tls_secret(&pki, "client-tls", &[("ca.crl", broken)]),
        dr("simple", "mode: SIMPLE\ncredentialName: client-tls"),
    ]);
    assert_mentions(&one_error(&yaml), &["key ca.crl", "invalid PEM"]);
}

// === Gateway MUTUAL client CA ===

#[test]
fn gateway_client_ca_crl_comes_from_the_secret_holding_the_ca() {
    let pki = Pki::new();
    let revoked = pki.client("revoked.client");
    let crl = pki.ca.crl_pem(&[&revoked]);
    // The CA and its CRL in `<name>-cacert`.
    let yaml = docs(&[
        server_secret(&pki, "gw-cred"),
        secret_string_data(
            "gw-cred-cacert",
            None,
            &[("ca.crt", &pki.ca.cert_pem), ("ca.crl", &crl)],
        ),
        gateway("mode: MUTUAL\ncredentialName: gw-cred"),
    ]);
    let creds = loads(&yaml);
    let ca = client_ca(&creds, ClientCaSource::Credential(cref("gw-cred")), None);
    assert_eq!(ca.crls.len(), 1);
    assert_mentions(&ca.source, &["gw-cred-cacert", "key ca.crt"]);
    // All in one Secret.
    let yaml = docs(&[
        tls_secret(&pki, "gw-one", &[("ca.crl", &crl)]),
        gateway("mode: OPTIONAL_MUTUAL\ncredentialName: gw-one"),
    ]);
    let creds = loads(&yaml);
    let ca = client_ca(&creds, ClientCaSource::Credential(cref("gw-one")), None);
    assert_eq!(ca.crls.len(), 1);
}

#[test]
fn gateway_foreign_crl_in_the_cacert_secret_is_refused() {
    let pki = Pki::new();
    let other = DevCa::new("another CA");
    let yaml = docs(&[
        server_secret(&pki, "gw-cred"),
        secret_string_data(
            "gw-cred-cacert",
            None,
            &[("cacert", &pki.ca.cert_pem), ("crl", &other.crl_pem(&[]))],
        ),
        gateway("mode: MUTUAL\ncredentialName: gw-cred"),
    ]);
    assert_mentions(
        &one_error(&yaml),
        &[
            GATEWAY,
            "Secret default/gw-cred-cacert",
            "key crl",
            "CN=another CA",
            "not the CA it accompanies",
        ],
    );
}

#[test]
fn gateway_ca_crl_file_and_secret_crl_are_both_applied() {
    let pki = Pki::new();
    let a = pki.client("a.client");
    let b = pki.client("b.client");
    let file = pki.write("ca.crl", &pki.ca.crl_pem(&[&a]));
    let yaml = docs(&[
        tls_secret(&pki, "gw-one", &[("ca.crl", &pki.ca.crl_pem(&[&b]))]),
        gateway(&format!(
            "mode: MUTUAL\ncredentialName: gw-one\ncaCrl: {}",
            file.display()
        )),
    ]);
    let creds = loads(&yaml);
    let ca = client_ca(
        &creds,
        ClientCaSource::Credential(cref("gw-one")),
        Some(file),
    );
    assert_eq!(ca.crls.len(), 2);
}

#[test]
fn ca_cert_credential_name_config_map_crl_is_loaded() {
    let pki = Pki::new();
    let revoked = pki.client("revoked.client");
    let indent = |pem: &str| {
        pem.lines()
            .map(|l| format!("    {l}\n"))
            .collect::<String>()
    };
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: client-ca\ndata:\n  ca.crt: |\n{}  ca.crl: |\n{}",
        indent(&pki.ca.cert_pem),
        indent(&pki.ca.crl_pem(&[&revoked]))
    );
    let yaml = docs(&[
        server_secret(&pki, "gw-cred"),
        config_map,
        gateway("mode: MUTUAL\ncredentialName: gw-cred\ncaCertCredentialName: client-ca"),
    ]);
    let creds = loads(&yaml);
    let ca = client_ca(
        &creds,
        ClientCaSource::CaCredential(cref("client-ca")),
        None,
    );
    assert_eq!(ca.crls.len(), 1);
    assert_mentions(&ca.source, &["ConfigMap default/client-ca"]);
}

// === Secrets directory ===

#[test]
fn secrets_dir_ca_crl_is_loaded_and_changes_the_fingerprint() {
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
    let bootstrap = Bootstrap {
        secrets_dir: Some(root.path().to_path_buf()),
        ..Bootstrap::default()
    };
    let yaml = dr("mtls", "mode: MUTUAL\ncredentialName: egress");
    let before = loads_with(&yaml, &bootstrap);
    let before = cred_trust(&before, "egress");
    assert!(before.crls.is_empty());
    let revoked = pki.ca.issue(&LeafSpec::server(&[HOST]));
    std::fs::write(
        root.path().join("egress/ca.crl"),
        pki.ca.crl_pem(&[&revoked]),
    )
    .unwrap();
    let after = loads_with(&yaml, &bootstrap);
    let after = cred_trust(&after, "egress");
    assert_eq!(after.crls.len(), 1);
    assert_ne!(before.fingerprint, after.fingerprint);
    // A broken one names the directory and key.
    std::fs::write(root.path().join("egress/ca.crl"), "junk").unwrap();
    assert_mentions(
        &one_error_with(&yaml, &bootstrap),
        &[
            "secret directory",
            "egress",
            "key ca.crl",
            "no X509 CRL block",
        ],
    );
}

// === devpki ===

#[test]
fn dev_crl_names_the_revoked_serials() {
    use x509_parser::prelude::{CertificateRevocationList, FromDer as _};
    let pki = Pki::new();
    let a = pki.client("a.client");
    let b = pki.client("b.client");
    let pem = pki.ca.crl_pem(&[&a]);
    let der = CertificateRevocationListDer::from_pem_slice(pem.as_bytes()).unwrap();
    let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).unwrap();
    let serials: Vec<Vec<u8>> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial().to_vec())
        .collect();
    assert_eq!(serials.len(), 1);
    let strip = |s: &[u8]| {
        s.iter()
            .skip_while(|b| **b == 0)
            .copied()
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&serials[0]), strip(a.serial().as_ref()));
    assert_ne!(strip(&serials[0]), strip(b.serial().as_ref()));
}
