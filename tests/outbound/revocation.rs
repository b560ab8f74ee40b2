//! Revocation of the upstream's certificate by the `ca.crl` of a
//! DestinationRule's `credentialName` Secret: the request is refused with
//! 503 and `x-meshgate-error: revoked`, and succeeds without the list.

use super::*;

/// A `kind: Secret` `default/<name>` with plain `stringData`.
fn string_secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\nstringData:\n"
    );
    for (k, v) in data {
        s.push_str(&format!("  {k}: |\n"));
        for line in v.lines() {
            s.push_str(&format!("    {line}\n"));
        }
    }
    s
}

const CREDENTIAL: &str = "        mode: SIMPLE\n        credentialName: egress-ca";

fn revoked_key() -> String {
    "meshgate_tls_handshake_failures_total{direction=\"outbound\",reason=\"revoked\"}".into()
}

#[tokio::test]
async fn credential_name_ca_crl_revoking_the_upstream_refuses_the_request() {
    let pki = pki();
    let leaf = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let up = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    // Another certificate of the same CA is revoked: the upstream is served.
    let other = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let cases = [
        ("no ca.crl", None, 200),
        ("ca.crl revoking another certificate", Some(&other), 200),
        (
            "ca.crl revoking the upstream's certificate",
            Some(&leaf),
            503,
        ),
    ];
    for (what, revoked, status) in cases {
        let crl = revoked.map(|l| pki.ca.crl_pem(&[l]));
        let mut data = vec![("ca.crt", pki.ca.cert_pem.as_str())];
        data.extend(crl.as_deref().map(|c| ("ca.crl", c)));
        let yaml = egress_yaml(up.addr.port(), CREDENTIAL) + &string_secret("egress-ca", &data);
        let p = TestProxy::start(tempdir(), &yaml, |_| {}).await.unwrap();
        let r = p.get(HOST, "/").await;
        assert_eq!(r.status, status, "{what}: {}", r.body);
        if status == 503 {
            assert_eq!(
                r.headers["x-meshgate-error"], "revoked",
                "{what}: {}",
                r.body
            );
            assert!(r.body.contains("revoked"), "{what}: {}", r.body);
            assert!(!r.body.contains("BEGIN"), "no PEM in responses");
            assert_eq!(p.metric(&revoked_key()).await, 1.0, "{what}: counted");
        }
    }
}

#[tokio::test]
async fn ca_crl_added_to_the_secret_is_applied_on_reload() {
    let pki = pki();
    let leaf = pki.ca.issue(&LeafSpec::server(&[HOST]));
    let up = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    let base = egress_yaml(up.addr.port(), CREDENTIAL);
    let yaml = base.clone() + &string_secret("egress-ca", &[("ca.crt", &pki.ca.cert_pem)]);
    let p = TestProxy::start(tempdir(), &yaml, |b| b.concurrency = 1)
        .await
        .unwrap();
    let r = p.get(HOST, "/before").await;
    assert_eq!(r.status, 200, "{}", r.body);
    // The CRL arrives in the Secret: the pooled connection, verified
    // without it, is not used again.
    let crl = pki.ca.crl_pem(&[&leaf]);
    let yaml = base
        + &string_secret(
            "egress-ca",
            &[("ca.crt", &pki.ca.cert_pem), ("ca.crl", &crl)],
        );
    std::fs::write(p.config_path(), yaml).unwrap();
    p.proxy.reload().await.unwrap();
    let r = p.get(HOST, "/after").await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.headers["x-meshgate-error"], "revoked", "{}", r.body);
}
