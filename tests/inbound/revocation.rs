//! Revocation end to end: a client certificate named in the client CA's
//! revocation list (a `caCrl` file, or `ca.crl` in the `credentialName`
//! Secret) is refused during the handshake with `certificate_revoked` and
//! counted under `revoked`; a client of the same CA that is not revoked is
//! served.

use super::*;

/// A server certificate, and two clients of one client CA.
struct Certs {
    server_ca: DevCa,
    server: Leaf,
    client_ca: DevCa,
    good: Leaf,
    revoked: Leaf,
}

fn certs() -> Certs {
    let server_ca = DevCa::new("revocation server CA");
    let client_ca = DevCa::new("revocation client CA");
    Certs {
        server: server_ca.issue(&LeafSpec::server(&[HOST])),
        server_ca,
        good: client_ca.issue(&LeafSpec::client("good.client.test")),
        revoked: client_ca.issue(&LeafSpec::client("revoked.client.test")),
        client_ca,
    }
}

impl Certs {
    /// A revocation list of the client CA naming `revoked`.
    fn crl(&self) -> String {
        self.client_ca.crl_pem(&[&self.revoked])
    }

    fn opts(&self, client: &Leaf) -> ClientOpts {
        ClientOpts {
            identity: Some((client.cert_pem.clone(), client.key_pem.clone())),
            ..opts(&self.server_ca)
        }
    }
}

/// A `kind: Secret` with plain `stringData`.
pub(super) fn string_secret(name: &str, data: &[(&str, &str)]) -> String {
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

/// The rustls error inside an I/O error, if that is what it is.
fn rustls_error(e: &std::io::Error) -> Option<rustls::Error> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .cloned()
}

/// What a client sees.
#[derive(Debug)]
enum Seen {
    /// Served: the response head.
    Served(String),
    /// Refused with this TLS error (the alert received).
    Refused(rustls::Error),
    /// Anything else (shown in assertion messages).
    Other(#[allow(dead_code)] String),
}

/// Connects with `o`, sends one GET and reads the answer. With TLS 1.3 the
/// client finishes its handshake before the server has checked its
/// certificate, so the server's alert arrives on the first read.
async fn visit(addr: SocketAddr, o: &ClientOpts) -> Seen {
    let mut tls = match tls_connect(addr, o).await {
        Ok(t) => t,
        Err(meshgate::standin::StandInError::Handshake(e)) => {
            return rustls_error(&e).map_or_else(|| Seen::Other(e.to_string()), Seen::Refused);
        }
        Err(e) => return Seen::Other(e.to_string()),
    };
    let req = format!("GET /revocation HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n");
    if let Err(e) = tls.write_all(req.as_bytes()).await {
        return rustls_error(&e).map_or_else(|| Seen::Other(e.to_string()), Seen::Refused);
    }
    let mut got = Vec::new();
    match tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut got)).await {
        Err(_) => Seen::Other("timed out".into()),
        Ok(Ok(_)) => Seen::Served(
            String::from_utf8_lossy(&got)
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        Ok(Err(e)) => rustls_error(&e).map_or_else(|| Seen::Other(e.to_string()), Seen::Refused),
    }
}

fn assert_served(seen: &Seen, what: &str) {
    assert!(
        matches!(seen, Seen::Served(head) if head.starts_with("HTTP/1.1 200")),
        "{what}: expected 200, got {seen:?}"
    );
}

/// Connects as the revoked client (TLS 1.3, then TLS 1.2) and checks the
/// `certificate_revoked` alert and that each refusal is counted.
async fn assert_revoked_refused(p: &TestProxy, c: &Certs, what: &str) {
    let addr = p.proxy.inbound()[&443];
    let key = failure_key("revoked");
    for versions in [vec![&rustls::version::TLS13], vec![&rustls::version::TLS12]] {
        let what = format!("{what}, {:?}", versions[0].version);
        let before = p.metric(&key).await;
        let o = ClientOpts {
            versions,
            ..c.opts(&c.revoked)
        };
        let seen = visit(addr, &o).await;
        assert!(
            matches!(
                seen,
                Seen::Refused(rustls::Error::AlertReceived(
                    rustls::AlertDescription::CertificateRevoked
                ))
            ),
            "{what}: a certificate_revoked alert, got {seen:?}"
        );
        assert_eq!(
            wait_metric(p, &key, before + 1.0).await,
            before + 1.0,
            "{what}: counted under revoked\n{}",
            p.metrics().await
        );
    }
}

#[tokio::test]
async fn mutual_with_ca_crl_file_refuses_a_revoked_client() {
    let c = certs();
    let dir = tempdir();
    let mut tls = simple_tls(dir.path(), &c.server, "srv");
    tls[0] = "mode: MUTUAL".into();
    let ca = c.client_ca.write_cert(dir.path(), "client-ca.crt").unwrap();
    let crl = meshgate::test_util::write(dir.path(), "client-ca.crl", &c.crl());
    tls.push(format!("caCertificates: {}", ca.display()));
    tls.push(format!("caCrl: {}", crl.display()));
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    assert_revoked_refused(&p, &c, "caCrl file").await;
    assert_served(
        &visit(p.proxy.inbound()[&443], &c.opts(&c.good)).await,
        "caCrl file, a client that is not revoked",
    );
}

#[tokio::test]
async fn credential_name_secret_ca_crl_refuses_a_revoked_client() {
    let c = certs();
    let crl = c.crl();
    let srv = [
        ("tls.crt", c.server.cert_pem.as_str()),
        ("tls.key", c.server.key_pem.as_str()),
    ];
    let ca = ("ca.crt", c.client_ca.cert_pem.as_str());
    let cases = [
        (
            "MUTUAL, ca.crt and ca.crl in the credential's Secret",
            "MUTUAL",
            string_secret("gw-cred", &[srv[0], srv[1], ca, ("ca.crl", crl.as_str())]),
        ),
        (
            "OPTIONAL_MUTUAL, cacert and crl in <name>-cacert",
            "OPTIONAL_MUTUAL",
            string_secret("gw-cred", &srv)
                + &string_secret(
                    "gw-cred-cacert",
                    &[
                        ("cacert", c.client_ca.cert_pem.as_str()),
                        ("crl", crl.as_str()),
                    ],
                ),
        ),
    ];
    for (what, mode, secrets) in cases {
        let b = backend("app", Duration::ZERO).await;
        let tls = vec![format!("mode: {mode}"), "credentialName: gw-cred".into()];
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)])
            + &route_all("app", &[HOST], b)
            + &secrets;
        let p = start_ports(tempdir(), &yaml, &[443], |_| {}).await;
        assert_revoked_refused(&p, &c, what).await;
        assert_served(
            &visit(p.proxy.inbound()[&443], &c.opts(&c.good)).await,
            &format!("{what}: a client that is not revoked"),
        );
    }
}

#[tokio::test]
async fn ca_crl_added_to_the_mounted_secret_is_applied_on_reload() {
    let c = certs();
    let dir = tempdir();
    let secrets = dir.path().join("secrets");
    let gw = secrets.join("gw-cred");
    std::fs::create_dir_all(&gw).unwrap();
    std::fs::write(gw.join("tls.crt"), &c.server.cert_pem).unwrap();
    std::fs::write(gw.join("tls.key"), &c.server.key_pem).unwrap();
    std::fs::write(gw.join("ca.crt"), &c.client_ca.cert_pem).unwrap();
    let b = backend("app", Duration::ZERO).await;
    let tls = vec!["mode: MUTUAL".into(), "credentialName: gw-cred".into()];
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let dir_for_proxy = secrets.clone();
    let p = start_ports(dir, &yaml, &[443], move |b| {
        b.secrets_dir = Some(dir_for_proxy);
    })
    .await;
    let addr = p.proxy.inbound()[&443];
    assert_served(
        &visit(addr, &c.opts(&c.revoked)).await,
        "before the CRL, the soon-revoked client",
    );
    std::fs::write(gw.join("ca.crl"), c.crl()).unwrap();
    p.proxy.reload().await.unwrap();
    assert_revoked_refused(&p, &c, "after adding ca.crl and reloading").await;
    assert_served(
        &visit(addr, &c.opts(&c.good)).await,
        "after the reload, a client that is not revoked",
    );
}
