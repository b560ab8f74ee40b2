//! Findings that load but are warned (they reach `meshgate validate` and
//! the log through `Credentials::warnings`): private keys readable by
//! group or others, and server certificates whose chain cannot be built
//! to the CA given with them.

use super::*;

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

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn key_warnings(creds: &Credentials) -> Vec<&String> {
    creds
        .warnings
        .iter()
        .filter(|w| w.contains("readable by group/others"))
        .collect()
}

fn chain_warnings(creds: &Credentials) -> Vec<&String> {
    creds
        .warnings
        .iter()
        .filter(|w| w.contains("cannot be chained to its CA"))
        .collect()
}

#[test]
fn a_private_key_readable_by_group_or_others_is_warned() {
    let pki = Pki::new();
    let leaf = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let (cert, key) = leaf.write(pki.dir.path(), "server").unwrap();
    let yaml = gateway(&format!(
        "mode: SIMPLE\nserverCertificate: {}\nprivateKey: {}",
        cert.display(),
        key.display()
    ));
    set_mode(&key, 0o600);
    assert!(key_warnings(&loads(&yaml)).is_empty(), "0600 is fine");
    set_mode(&key, 0o644);
    let creds = loads(&yaml);
    let w = key_warnings(&creds);
    assert_eq!(w.len(), 1, "{:?}", creds.warnings);
    assert_eq!(
        *w[0],
        format!(
            "private key {} is readable by group/others (mode 0644); restrict it to 0600",
            key.display()
        )
    );
    set_mode(&key, 0o640);
    assert!(key_warnings(&loads(&yaml))[0].contains("(mode 0640)"));
    // The same for a DestinationRule's client key.
    let client = pki.client("client.test");
    let (ccert, ckey) = client.write(pki.dir.path(), "client").unwrap();
    set_mode(&ckey, 0o604);
    let creds = loads(&dr(
        "mutual",
        &format!(
            "mode: MUTUAL\nclientCertificate: {}\nprivateKey: {}",
            ccert.display(),
            ckey.display()
        ),
    ));
    assert!(
        key_warnings(&creds)
            .iter()
            .any(|w| w.contains(&ckey.display().to_string()) && w.contains("(mode 0604)")),
        "{:?}",
        creds.warnings
    );
}

#[test]
fn keys_in_a_mounted_secret_are_not_warned() {
    let pki = Pki::new();
    let leaf = pki.ca.issue(&LeafSpec::server(&[HOST]));
    // The kubelet's layout: <dir>/..2024_x/<files>, ..data -> ..2024_x,
    // <key> -> ..data/<key>; the Secret's defaultMode is often 0644.
    let mount = pki.path("mount");
    let version = mount.join("..2024_01_01");
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join("tls.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(version.join("tls.key"), &leaf.key_pem).unwrap();
    set_mode(&version.join("tls.key"), 0o644);
    std::os::unix::fs::symlink("..2024_01_01", mount.join("..data")).unwrap();
    for f in ["tls.crt", "tls.key"] {
        std::os::unix::fs::symlink(format!("..data/{f}"), mount.join(f)).unwrap();
    }
    // Named as files (a mounted Secret, the older Istio way)...
    let creds = loads(&gateway(&format!(
        "mode: SIMPLE\nserverCertificate: {}\nprivateKey: {}",
        mount.join("tls.crt").display(),
        mount.join("tls.key").display()
    )));
    assert!(key_warnings(&creds).is_empty(), "{:?}", creds.warnings);
    // ...and by credentialName from the secrets directory.
    let secrets = pki.path("secrets");
    std::fs::create_dir_all(&secrets).unwrap();
    std::os::unix::fs::symlink(&mount, secrets.join("gw-cert")).unwrap();
    let bootstrap = Bootstrap {
        secrets_dir: Some(secrets),
        ..Bootstrap::default()
    };
    let creds = loads_with(
        &gateway("mode: SIMPLE\ncredentialName: gw-cert"),
        &bootstrap,
    );
    assert!(key_warnings(&creds).is_empty(), "{:?}", creds.warnings);
}

/// A root, an intermediate it signed, and a server leaf the intermediate
/// signed: (root PEM, intermediate PEM, leaf PEM, leaf key PEM).
fn three_level_chain() -> (String, String, String, String) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        p
    };
    let root_params = ca_params("chain root");
    let root_key = KeyPair::generate().unwrap();
    let root_pem = root_params.self_signed(&root_key).unwrap().pem();
    let root = Issuer::new(root_params, root_key);
    let mid_params = ca_params("chain intermediate");
    let mid_key = KeyPair::generate().unwrap();
    let mid_pem = mid_params.signed_by(&mid_key, &root).unwrap().pem();
    let mid = Issuer::new(mid_params, mid_key);
    let mut leaf_params = CertificateParams::new(vec![HOST.to_string()]).unwrap();
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, HOST);
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_pem = leaf_params.signed_by(&leaf_key, &mid).unwrap().pem();
    (root_pem, mid_pem, leaf_pem, leaf_key.serialize_pem())
}

#[test]
fn a_server_chain_missing_its_intermediate_is_warned() {
    let pki = Pki::new();
    let (root, mid, leaf, key) = three_level_chain();
    let root_file = pki.write("root.crt", &root);
    let key_file = pki.write("server.key", &key);
    set_mode(&key_file, 0o600);
    let leaf_only = pki.write("leaf-only.crt", &leaf);
    let full = pki.write("full.crt", &format!("{leaf}{mid}"));
    let server = |cert: &Path| {
        gateway(&format!(
            "mode: MUTUAL\nserverCertificate: {}\nprivateKey: {}\ncaCertificates: {}",
            cert.display(),
            key_file.display(),
            root_file.display()
        ))
    };
    // Loads (a warning, not an error), and says what to do.
    let creds = loads(&server(&leaf_only));
    let w = chain_warnings(&creds);
    assert_eq!(w.len(), 1, "{:?}", creds.warnings);
    for part in [
        "Gateway/default/gw",
        &leaf_only.display().to_string(),
        &root_file.display().to_string(),
        "CN=chain intermediate",
        "missing intermediate",
    ] {
        assert!(w[0].contains(part), "{part:?} in {}", w[0]);
    }
    // With the intermediate in the file, nothing to say.
    let creds = loads(&server(&full));
    assert!(chain_warnings(&creds).is_empty(), "{:?}", creds.warnings);
    // A credentialName Secret with its own CA: the same check.
    let secret = |crt: &str| {
        docs(&[
            secret_data(
                "gw-cert",
                None,
                &[("tls.crt", crt), ("tls.key", &key), ("ca.crt", &root)],
            ),
            gateway("mode: SIMPLE\ncredentialName: gw-cert"),
        ])
    };
    let creds = loads(&secret(&leaf));
    assert_eq!(chain_warnings(&creds).len(), 1, "{:?}", creds.warnings);
    let creds = loads(&secret(&format!("{leaf}{mid}")));
    assert!(chain_warnings(&creds).is_empty(), "{:?}", creds.warnings);
}

#[test]
fn a_certificate_is_warned_for_the_names_it_misses_but_not_for_a_star_host() {
    let pki = Pki::new();
    // A certificate for another name.
    let leaf = pki.ca.issue(&LeafSpec::server(&["other.example.com"]));
    let (cert, key) = leaf.write(pki.dir.path(), "server").unwrap();
    set_mode(&key, 0o600);
    let tls = format!(
        "mode: SIMPLE\nserverCertificate: {}\nprivateKey: {}",
        cert.display(),
        key.display()
    );
    let uncovered = |creds: &Credentials| -> Vec<String> {
        creds
            .warnings
            .iter()
            .filter(|w| w.contains("does not cover"))
            .cloned()
            .collect()
    };
    let named = uncovered(&loads(&gateway(&tls)));
    assert_eq!(named.len(), 1, "{named:?}");
    assert!(named[0].contains(HOST), "{named:?}");
    // `*` serves any SNI: no certificate names it.
    let star = gateway(&tls).replace(&format!("[\"{HOST}\"]"), "[\"*\"]");
    assert!(uncovered(&loads(&star)).is_empty());
}
