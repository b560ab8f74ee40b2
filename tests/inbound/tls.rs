//! SNI selection, dual certificates, protocol versions, 421 on a reused connection.

use super::*;

// ===================================================================
// 3. SNI selection
// ===================================================================

#[tokio::test]
async fn sni_selects_the_server_and_its_certificate() {
    let ca = DevCa::new("sni CA");
    // Without a "*" server, then with one.
    for with_catch_all in [false, true] {
        let dir = tempdir();
        let b = backend("app", Duration::ZERO).await;
        let mut servers = vec![
            server(
                443,
                "HTTPS",
                &["a.test"],
                &simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&["a.test"])), "a"),
            ),
            server(
                443,
                "HTTPS",
                &["b.test"],
                &simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&["b.test"])), "b"),
            ),
        ];
        if with_catch_all {
            // tls_connect verifies a no-SNI connection as "no-sni.invalid".
            let leaf = ca.issue(&LeafSpec::server(&["default.test", "no-sni.invalid"]));
            servers.push(server(
                443,
                "HTTPS",
                &["*"],
                &simple_tls(dir.path(), &leaf, "any"),
            ));
        }
        let yaml = gateway(&servers) + &route_all("app", &["*"], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let addr = p.proxy.inbound()[&443];
        let with_sni = |sni: Option<&str>| ClientOpts {
            sni: sni.map(str::to_string),
            ca_pem: ca.cert_pem.clone(),
            ..Default::default()
        };
        for (sni, subject) in [("a.test", "CN=a.test"), ("b.test", "CN=b.test")] {
            let tls = tls_connect(addr, &with_sni(Some(sni))).await.unwrap();
            assert_eq!(peer_subject(&tls), subject, "SNI {sni}");
            let mut conn = HttpsConn::new(tls, false).await.unwrap();
            let r = conn.get(sni, "/", &[]).await.unwrap();
            assert_eq!(r.status, 200, "SNI {sni}: {}", r.body);
        }
        if with_catch_all {
            for sni in [None, Some("unknown.test")] {
                let opts = ClientOpts {
                    // The catch-all certificate does not name unknown.test.
                    sni: sni.map(str::to_string),
                    ca_pem: ca.cert_pem.clone(),
                    ..Default::default()
                };
                match sni {
                    None => {
                        let tls = tls_connect(addr, &opts).await.unwrap();
                        assert_eq!(peer_subject(&tls), "CN=default.test", "no SNI → \"*\"");
                    }
                    Some(s) => {
                        let e = tls_connect(addr, &opts).await.unwrap_err().to_string();
                        assert!(
                            !e.contains("UnrecognisedName")
                                && e.contains("invalid peer certificate"),
                            "{s} is served by \"*\" (only its certificate is unverifiable): {e}"
                        );
                    }
                }
            }
            assert_eq!(p.metric(&failure_key("unknown_sni")).await, 0.0);
        } else {
            for (i, sni) in [Some("unknown.test"), None].into_iter().enumerate() {
                let e = tls_connect(addr, &with_sni(sni))
                    .await
                    .expect_err("no server for this SNI")
                    .to_string();
                assert!(
                    e.contains("UnrecognisedName"),
                    "SNI {sni:?}: an unrecognized_name alert, got {e}"
                );
                let n = wait_metric(&p, &failure_key("unknown_sni"), (i + 1) as f64).await;
                assert_eq!(n, (i + 1) as f64, "SNI {sni:?}");
            }
        }
    }
}

// ===================================================================
// 4. Dual certificates (RSA + ECDSA)
// ===================================================================

#[tokio::test]
async fn dual_certificates_follow_the_client_signature_schemes() {
    const NAME: &str = "dual.test";
    let ca = raw_ca("dual CA");
    let rsa_key =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap();
    let rsa = raw_server_leaf(&ca, "rsa.dual.test", &[NAME], rsa_key);
    let ecdsa = raw_server_leaf(
        &ca,
        "ecdsa.dual.test",
        &[NAME],
        rcgen::KeyPair::generate().unwrap(),
    );
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_only = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
    ];
    // Envoy: "the first RSA certificate is used for clients that only
    // support RSA and the first ECDSA certificate is used for clients that
    // support ECDSA" — whatever the order in the list.
    let mut wrong = Vec::new();
    for rsa_first in [true, false] {
        let dir = tempdir();
        let (rc, rk) = rsa.write(dir.path(), "rsa").unwrap();
        let (ec, ek) = ecdsa.write(dir.path(), "ecdsa").unwrap();
        let rsa_entry = format!(
            "- {{serverCertificate: {}, privateKey: {}}}",
            rc.display(),
            rk.display()
        );
        let ec_entry = format!(
            "- {{serverCertificate: {}, privateKey: {}}}",
            ec.display(),
            ek.display()
        );
        let (first, second) = if rsa_first {
            (rsa_entry, ec_entry)
        } else {
            (ec_entry, rsa_entry)
        };
        let tls = vec![
            "mode: SIMPLE".into(),
            "tlsCertificates:".into(),
            format!("  {first}"),
            format!("  {second}"),
        ];
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[NAME], &tls)]) + &route_all("app", &[NAME], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let addr = p.proxy.inbound()[&443];
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let cases: [(&str, Option<&[SignatureScheme]>, &str); 3] = [
                ("default client", None, "CN=ecdsa.dual.test"),
                ("RSA-only client", Some(&rsa_only), "CN=rsa.dual.test"),
                ("ECDSA-only client", Some(&ecdsa_only), "CN=ecdsa.dual.test"),
            ];
            for (what, only, want) in cases {
                let cfg = client_config(&ca.pem, &[version], only);
                let tls = connect_with(addr, cfg, NAME)
                    .await
                    .unwrap_or_else(|e| panic!("{what} {version:?} rsa_first={rsa_first}: {e}"));
                let got = peer_subject(&tls);
                if got != want {
                    wrong.push(format!(
                        "{what}, {version:?}, RSA listed first: {rsa_first}: got {got}, want {want}"
                    ));
                }
                let mut conn = HttpsConn::new(tls, false).await.unwrap();
                assert_eq!(conn.get(NAME, "/", &[]).await.unwrap().status, 200);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong certificate chosen:\n{}",
        wrong.join("\n")
    );
}

// ===================================================================
// 5. Protocol versions
// ===================================================================

#[tokio::test]
async fn server_order_picks_the_cipher_suite() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::version::TLS12;
    struct Case {
        setting: Option<&'static str>,
        client: Vec<rustls::SupportedCipherSuite>,
        versions: Vec<&'static rustls::SupportedProtocolVersion>,
        want: &'static str,
    }
    let cases = [
        // A client preferring AES-256 (OpenSSL's default order) gets
        // AES-128-GCM, as from Envoy.
        Case {
            setting: None,
            client: vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            versions: Vec::new(),
            want: "TLS13_AES_128_GCM_SHA256",
        },
        // A client that only speaks AES-256 still gets it.
        Case {
            setting: None,
            client: vec![cs::TLS13_AES_256_GCM_SHA384],
            versions: Vec::new(),
            want: "TLS13_AES_256_GCM_SHA384",
        },
        // The Gateway's cipherSuites order decides for TLS 1.2.
        Case {
            setting: Some(
                "cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256]",
            ),
            client: vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            versions: vec![&TLS12],
            want: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        },
    ];
    for c in cases {
        let ca = DevCa::new("cipher CA");
        let dir = tempdir();
        let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        if let Some(setting) = c.setting {
            tls.push(setting.into());
        }
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            cipher_suites: c.client.clone(),
            versions: c.versions.clone(),
            ..opts(&ca)
        };
        let what = format!("{:?} offering {:?}", c.setting, c.client);
        let tls = tls_connect(p.proxy.inbound()[&443], &o)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = tls.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(format!("{:?}", got.suite()), c.want, "{what}");
        let mut conn = HttpsConn::new(tls, false).await.unwrap();
        assert_eq!(
            conn.get(HOST, "/", &[]).await.unwrap().status,
            200,
            "{what}"
        );
    }
}

#[tokio::test]
async fn min_and_max_protocol_versions() {
    use rustls::version::{TLS12, TLS13};
    struct Case {
        setting: &'static str,
        client: Vec<&'static rustls::SupportedProtocolVersion>,
        /// Negotiated version, or the failure reason.
        want: Result<&'static str, &'static str>,
    }
    let cases = [
        Case {
            setting: "minProtocolVersion: TLSV1_3",
            client: vec![&TLS12],
            want: Err("protocol_version"),
        },
        Case {
            setting: "minProtocolVersion: TLSV1_3",
            client: vec![&TLS13, &TLS12],
            want: Ok("TLSv1_3"),
        },
        Case {
            setting: "maxProtocolVersion: TLSV1_2",
            client: vec![&TLS13, &TLS12],
            want: Ok("TLSv1_2"),
        },
        Case {
            setting: "maxProtocolVersion: TLSV1_2",
            client: vec![&TLS13],
            want: Err("protocol_version"),
        },
    ];
    let mut wrong = Vec::new();
    for c in cases {
        let ca = DevCa::new("version CA");
        let dir = tempdir();
        let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        tls.push(c.setting.into());
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            versions: c.client.clone(),
            ..opts(&ca)
        };
        let what = format!("{} with a client speaking {:?}", c.setting, c.client);
        match c.want {
            Ok(version) => {
                let tls = tls_connect(p.proxy.inbound()[&443], &o)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    format!("{:?}", tls.get_ref().1.protocol_version().unwrap()),
                    version,
                    "{what}"
                );
                let mut conn = HttpsConn::new(tls, false).await.unwrap();
                assert_eq!(conn.get(HOST, "/", &[]).await.unwrap().status, 200);
                let m = p.metrics().await;
                assert_eq!(
                    metric_sum(
                        &m,
                        "meshgate_tls_handshakes_total",
                        &["direction=\"inbound\"", &format!("version=\"{version}\"")]
                    ),
                    1.0,
                    "{what}\n{m}"
                );
            }
            Err(reason) => {
                let r = https_get(p.proxy.inbound()[&443], &o, HOST, "/", &[]).await;
                let e = r.expect_err(&what).to_string();
                assert!(e.contains("ProtocolVersion"), "{what}: alert: {e}");
                if wait_metric(&p, &failure_key(reason), 1.0).await != 1.0 {
                    let m = p.metrics().await;
                    let counted: Vec<&str> = m
                        .lines()
                        .filter(|l| l.starts_with("meshgate_tls_handshake_failures_total"))
                        .collect();
                    wrong.push(format!("{what}: want reason {reason}, counted {counted:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ===================================================================
// 6. 421 Misdirected Request on a reused connection
// ===================================================================

#[tokio::test]
async fn request_for_another_servers_host_on_a_connection_is_421() {
    let ca = DevCa::new("shared CA");
    let dir = tempdir();
    // One certificate naming both hosts, so a client could coalesce.
    let shared = ca.issue(&LeafSpec::server(&["a.test", "b.test"]));
    let a = backend("A", Duration::ZERO).await;
    let b = backend("B", Duration::ZERO).await;
    let yaml = gateway(&[
        server(
            443,
            "HTTPS",
            &["a.test"],
            &simple_tls(dir.path(), &shared, "a"),
        ),
        server(
            443,
            "HTTPS",
            &["b.test"],
            &simple_tls(dir.path(), &shared, "b"),
        ),
    ]) + &route_all("a", &["a.test"], a)
        + &route_all("b", &["b.test"], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];
    for h2 in [true, false] {
        let o = ClientOpts {
            sni: Some("a.test".into()),
            ca_pem: ca.cert_pem.clone(),
            h2,
            ..Default::default()
        };
        let mut conn = HttpsConn::new(tls_connect(addr, &o).await.unwrap(), h2)
            .await
            .unwrap();
        let r = conn.get("a.test", "/one", &[]).await.unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        assert_eq!(body_json(&r)["backend"], "A");
        let r = conn.get("b.test", "/two", &[]).await.unwrap();
        assert_eq!(r.status, 421, "h2={h2}: {}", r.body);
        // The connection stays usable for its own host; the port in the
        // Host header does not matter.
        let r = conn.get("a.test:443", "/three", &[]).await.unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        assert_eq!(body_json(&r)["backend"], "A");
    }
    // A fresh connection for b.test reaches B.
    let o = ClientOpts {
        sni: Some("b.test".into()),
        ca_pem: ca.cert_pem.clone(),
        h2: true,
        ..Default::default()
    };
    let r = https_get(addr, &o, "b.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["backend"], "B");
}

/// Istio's hardening case: a SIMPLE server for `*` and a MUTUAL one for
/// `secure.test` on one port. A client that opened its connection for the
/// SIMPLE server (no client certificate) and asks for `secure.test` gets
/// 421, not the MUTUAL server's routes through the `*` server.
#[tokio::test]
async fn a_host_of_a_more_specific_server_is_421_on_a_wildcard_servers_connection() {
    let ca = DevCa::new("shared CA");
    let dir = tempdir();
    let shared = ca.issue(&LeafSpec::server(&["open.test", "secure.test"]));
    let open = backend("OPEN", Duration::ZERO).await;
    let secure = backend("SECURE", Duration::ZERO).await;
    let ca_file = ca.write_cert(dir.path(), "client-ca.crt").unwrap();
    let mut mutual = simple_tls(dir.path(), &shared, "secure");
    mutual[0] = "mode: MUTUAL".into();
    mutual.push(format!("caCertificates: {}", ca_file.display()));
    let yaml = gateway(&[
        server(
            443,
            "HTTPS",
            &["*"],
            &simple_tls(dir.path(), &shared, "open"),
        ),
        server(443, "HTTPS", &["secure.test"], &mutual),
    ]) + &route_all("open", &["*"], open)
        + &route_all("secure", &["secure.test"], secure);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];
    for h2 in [true, false] {
        let o = ClientOpts {
            sni: Some("open.test".into()),
            ca_pem: ca.cert_pem.clone(),
            h2,
            ..Default::default()
        };
        let mut conn = HttpsConn::new(tls_connect(addr, &o).await.unwrap(), h2)
            .await
            .unwrap();
        let r = conn.get("open.test", "/", &[]).await.unwrap();
        assert_eq!(body_json(&r)["backend"], "OPEN", "h2={h2}");
        let r = conn.get("secure.test", "/", &[]).await.unwrap();
        assert_eq!(r.status, 421, "h2={h2}: {}", r.body);
    }
}

/// A client that does not trust meshgate's certificate refuses it with an
/// alert: counted as `server_cert_rejected`, not as a client-certificate
/// failure.
#[tokio::test]
async fn a_client_rejecting_the_servers_certificate_is_server_cert_rejected() {
    let ca = DevCa::new("server CA");
    let stranger = DevCa::new("another CA");
    let dir = tempdir();
    let leaf = ca.issue(&LeafSpec::server(&["a.test"]));
    let app = backend("A", Duration::ZERO).await;
    let yaml = gateway(&[server(
        443,
        "HTTPS",
        &["a.test"],
        &simple_tls(dir.path(), &leaf, "a"),
    )]) + &route_all("a", &["a.test"], app);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound()[&443];
    let o = ClientOpts {
        sni: Some("a.test".into()),
        ca_pem: stranger.cert_pem.clone(),
        ..Default::default()
    };
    assert!(tls_connect(addr, &o).await.is_err(), "the client refuses");
    assert_eq!(
        wait_metric(&p, &failure_key("server_cert_rejected"), 1.0).await,
        1.0
    );
    assert_eq!(
        p.metric(&failure_key("client_cert_rejected")).await,
        0.0,
        "not a client-certificate failure"
    );
}
