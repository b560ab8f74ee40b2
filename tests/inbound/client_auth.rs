//! Client certificate accept/reject matrix; XFCC and forwarding headers.

use super::*;

// ===================================================================
// 1. Client certificate accept/reject matrix
// ===================================================================

/// `(client, expectation)` rows of a matrix.
type Cases<'a> = &'a [(&'a str, Expect)];

struct ClientCerts {
    ca: DevCa,
    wrong_ca: DevCa,
    good: Leaf,
    other: Leaf,
}

impl ClientCerts {
    fn new() -> ClientCerts {
        let ca = DevCa::new("client CA");
        let wrong_ca = DevCa::new("someone else's CA");
        let good = ca.issue(&LeafSpec {
            uris: vec!["spiffe://cluster.local/ns/default/sa/allowed".into()],
            ..LeafSpec::client("allowed.client.test")
        });
        let other = ca.issue(&LeafSpec::client("other.client.test"));
        ClientCerts {
            ca,
            wrong_ca,
            good,
            other,
        }
    }

    /// The identity a named client presents.
    fn identity(&self, client: &str) -> Identity {
        let leaf = match client {
            "none" => return None,
            "good" => self.good.clone(),
            "other" => self.other.clone(),
            "wrong_ca" => self
                .wrong_ca
                .issue(&LeafSpec::client("allowed.client.test")),
            "expired" => self
                .ca
                .issue(&LeafSpec::client("allowed.client.test").expired()),
            "not_yet_valid" => self
                .ca
                .issue(&LeafSpec::client("allowed.client.test").not_yet_valid()),
            other => panic!("unknown client {other}"),
        };
        Some((leaf.cert_pem, leaf.key_pem))
    }
}

/// Starts a Gateway whose server TLS is `mode` plus `extra` lines, with the
/// client CA of `certs`, and runs every `(client, expectation)`.
async fn run_client_matrix(
    certs: &ClientCerts,
    mode: &str,
    extra: &[String],
    cases: &[(&str, Expect)],
) {
    let server_ca = DevCa::new("server CA");
    let dir = tempdir();
    let backend = backend("app", Duration::ZERO).await;
    let mut tls = simple_tls(
        dir.path(),
        &server_ca.issue(&LeafSpec::server(&[HOST])),
        "srv",
    );
    tls[0] = format!("mode: {mode}");
    if mode != "SIMPLE" {
        let ca = certs.ca.write_cert(dir.path(), "client-ca.crt").unwrap();
        tls.push(format!("caCertificates: {}", ca.display()));
    }
    tls.extend(extra.iter().cloned());
    let yaml =
        gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], backend);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];
    for (client, expect) in cases {
        let what = format!("mode {mode} {extra:?}, client {client}");
        let o = ClientOpts {
            sni: Some(HOST.into()),
            ca_pem: server_ca.cert_pem.clone(),
            identity: certs.identity(client),
            ..Default::default()
        };
        match expect {
            Expect::Ok { xfcc } => {
                let r = https_get(addr, &o, HOST, "/matrix", &[])
                    .await
                    .unwrap_or_else(|e| panic!("{what}: expected success, got {e}"));
                assert_eq!(r.status, 200, "{what}: {}", r.body);
                let v = body_json(&r);
                let seen = seen_header(&v, "x-forwarded-client-cert");
                assert_eq!(!seen.is_empty(), *xfcc, "{what}: XFCC {seen:?}");
            }
            Expect::Reject(reason) => {
                let key = failure_key(reason);
                let before = p.metric(&key).await;
                let r = https_get(addr, &o, HOST, "/matrix", &[]).await;
                assert!(r.is_err(), "{what}: expected rejection, got {r:?}");
                let after = wait_metric(&p, &key, before + 1.0).await;
                assert_eq!(
                    after,
                    before + 1.0,
                    "{what}: failure reason {reason} counted once\n{}",
                    p.metrics().await
                );
            }
        }
    }
}

#[tokio::test]
async fn client_certificate_matrix_by_tls_mode() {
    use Expect::{Ok, Reject};
    let certs = ClientCerts::new();
    let table: &[(&str, &[(&str, Expect)])] = &[
        (
            "SIMPLE",
            &[
                ("none", Ok { xfcc: false }),
                ("wrong_ca", Ok { xfcc: false }),
                ("expired", Ok { xfcc: false }),
                ("good", Ok { xfcc: false }),
            ],
        ),
        (
            "MUTUAL",
            &[
                ("none", Reject("no_client_cert")),
                ("wrong_ca", Reject("unknown_ca")),
                ("expired", Reject("expired")),
                ("not_yet_valid", Reject("not_yet_valid")),
                ("good", Ok { xfcc: true }),
                ("other", Ok { xfcc: true }),
            ],
        ),
        (
            "OPTIONAL_MUTUAL",
            &[
                ("none", Ok { xfcc: false }),
                ("wrong_ca", Reject("unknown_ca")),
                ("expired", Reject("expired")),
                ("not_yet_valid", Reject("not_yet_valid")),
                ("good", Ok { xfcc: true }),
            ],
        ),
    ];
    for (mode, cases) in table {
        run_client_matrix(&certs, mode, &[], cases).await;
    }
}

#[tokio::test]
async fn client_certificate_allow_lists() {
    use Expect::{Ok, Reject};
    let certs = ClientCerts::new();
    let spki = spki_sha256_b64(&certs.good.cert_pem);
    let hash = cert_sha256(&certs.good.cert_pem);
    // Istio accepts both plain and colon-separated hex; openssl prints the
    // colon form in upper case.
    let hash_colons = hash
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let unrelated_spki = spki_sha256_b64(&DevCa::new("x").issue(&LeafSpec::client("x")).cert_pem);
    let lists: Vec<(Vec<String>, Cases)> = vec![
        (
            vec!["subjectAltNames: [allowed.client.test]".into()],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("san_not_allowed")),
                ("none", Reject("no_client_cert")),
            ],
        ),
        (
            // A URI SAN (SPIFFE ID) is matched too.
            vec!["subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/allowed\"]".into()],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("san_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateSpki: [\"{spki}\"]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateHash: [\"{hash_colons}\"]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateHash: [{hash}]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            // Envoy: a match in either list accepts the certificate.
            vec![
                format!("verifyCertificateSpki: [\"{unrelated_spki}\"]"),
                format!("verifyCertificateHash: [{hash}]"),
            ],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            // The chain is still verified before the lists.
            vec!["subjectAltNames: [allowed.client.test]".into()],
            &[("wrong_ca", Reject("unknown_ca"))],
        ),
    ];
    for mode in ["MUTUAL", "OPTIONAL_MUTUAL"] {
        for (extra, cases) in &lists {
            let cases: Vec<(&str, Expect)> = cases
                .iter()
                .map(|(c, e)| match (mode, *c) {
                    // OPTIONAL_MUTUAL: no certificate is fine, lists or not.
                    ("OPTIONAL_MUTUAL", "none") => (*c, Ok { xfcc: false }),
                    _ => (*c, *e),
                })
                .collect();
            run_client_matrix(&certs, mode, extra, &cases).await;
        }
    }
}

// ===================================================================
// 2. XFCC and forwarding headers
// ===================================================================

#[tokio::test]
async fn xfcc_describes_the_verified_client_certificate() {
    struct Case {
        name: &'static str,
        server_uri: Option<&'static str>,
        client_uris: Vec<String>,
        h2: bool,
    }
    let cases = [
        Case {
            name: "DNS SAN only, HTTP/1.1",
            server_uri: None,
            client_uris: vec![],
            h2: false,
        },
        Case {
            name: "SPIFFE URI SAN, HTTP/2",
            server_uri: None,
            client_uris: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
            h2: true,
        },
        Case {
            name: "server has a URI SAN (By=)",
            server_uri: Some("spiffe://cluster.local/ns/istio-system/sa/ingress"),
            client_uris: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
            h2: false,
        },
    ];
    for c in cases {
        let ca = DevCa::new("ingress CA");
        let dir = tempdir();
        let server_leaf = ca.issue(&LeafSpec {
            uris: c.server_uri.iter().map(|u| u.to_string()).collect(),
            ..LeafSpec::server(&[HOST])
        });
        let mut tls = simple_tls(dir.path(), &server_leaf, "srv");
        tls[0] = "mode: MUTUAL".into();
        let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
        tls.push(format!("caCertificates: {}", ca_file.display()));
        let client = ca.issue(&LeafSpec {
            uris: c.client_uris.clone(),
            ..LeafSpec::client("client.test")
        });
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            sni: Some(HOST.into()),
            ca_pem: ca.cert_pem.clone(),
            identity: Some((client.cert_pem.clone(), client.key_pem.clone())),
            h2: c.h2,
            ..Default::default()
        };
        let r = https_get(
            p.proxy.inbound()[&443],
            &o,
            HOST,
            "/id",
            &[
                (
                    "x-forwarded-client-cert",
                    "By=forged;Hash=00;Subject=\"CN=root\"",
                ),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-proto", "http"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(r.status, 200, "{}: {}", c.name, r.body);
        let v = body_json(&r);
        let mut want = String::new();
        if let Some(by) = c.server_uri {
            want.push_str(&format!("By={by};"));
        }
        want.push_str(&format!(
            "Hash={};Subject=\"CN=client.test\"",
            cert_sha256(&client.cert_pem)
        ));
        for u in &c.client_uris {
            want.push_str(&format!(";URI={u}"));
        }
        want.push_str(";DNS=client.test");
        assert_eq!(
            seen_header(&v, "x-forwarded-client-cert"),
            vec![want],
            "{}: the client's XFCC is replaced, not appended",
            c.name
        );
        assert_eq!(
            seen_header(&v, "x-forwarded-proto"),
            vec!["https"],
            "{}",
            c.name
        );
        assert_eq!(
            seen_header(&v, "x-forwarded-for"),
            vec!["10.1.2.3, 127.0.0.1"],
            "{}",
            c.name
        );
    }
}

#[tokio::test]
async fn optional_mutual_without_certificate_strips_client_xfcc() {
    let ca = DevCa::new("ingress CA");
    let dir = tempdir();
    let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    tls[0] = "mode: OPTIONAL_MUTUAL".into();
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    tls.push(format!("caCertificates: {}", ca_file.display()));
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let r = https_get(
        p.proxy.inbound()[&443],
        &opts(&ca),
        HOST,
        "/",
        &[("x-forwarded-client-cert", "Hash=forged")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert!(
        seen_header(&v, "x-forwarded-client-cert").is_empty(),
        "{}",
        r.body
    );
    assert_eq!(seen_header(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
}
