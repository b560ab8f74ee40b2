//! Client certificates, CA rotation, expired replacements, files written after the config.

use super::*;

// ===================================================================
// 6. Client side (egress) rotation
// ===================================================================

fn egress_yaml(upstream_port: u16, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: [{EGRESS_HOST}]
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 443
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: {upstream_port}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: external
spec:
  host: {EGRESS_HOST}
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      connectionPool:
        http:
          maxRequestsPerConnection: 1
      tls:
        mode: MUTUAL
        caCertificates: {ca}
        clientCertificate: {cert}
        privateKey: {key}
"#,
        ca = ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_client_certificate_rotation() {
    let ca = DevCa::new("egress CA");
    let dir = tempdir();
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let server = ca.issue(&LeafSpec::server(&[EGRESS_HOST]));
    let mut cfg = StandInConfig::new(&server.cert_pem, &server.key_pem);
    cfg.client_ca_pem = Some(ca.cert_pem.clone());
    let up = StandIn::start(([127, 0, 0, 1], 0).into(), cfg)
        .await
        .unwrap();
    let v1 = ca.issue(&LeafSpec::client("v1.client.test"));
    let v2 = ca.issue(&LeafSpec::client("v2.client.test"));
    let (v1_sha, v2_sha) = (
        fingerprint(&v1.cert_pem).sha256,
        fingerprint(&v2.cert_pem).sha256,
    );
    let (cert, key) = v1.write(dir.path(), "client").unwrap();
    let yaml = egress_yaml(up.addr.port(), &ca_file, &cert, &key);
    let p = start(dir, &yaml, None).await;

    let get = || async {
        let r = p.get(EGRESS_HOST, "/rotate").await;
        assert_eq!(r.status, 200, "every request succeeds: {}", r.body);
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        v["tls"]["client_cert"].as_str().unwrap_or("").to_string()
    };
    for _ in 0..3 {
        assert_eq!(get().await, "CN=v1.client.test");
    }
    let hs = up.handshakes();
    assert!(hs >= 3, "one upstream connection per request: {hs}");
    assert_eq!(
        up.last().unwrap().client_cert.as_deref(),
        Some("CN=v1.client.test")
    );

    replace_pair(&cert, &key, &v2);
    let (_, took) = eventually(
        "a new upstream connection presents the new client certificate",
        || async { (get().await == "CN=v2.client.test").then_some(()) },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(
            get().await,
            "CN=v2.client.test",
            "later connections keep presenting the new certificate"
        );
    }
    assert_eq!(
        up.last().unwrap().client_cert.as_deref(),
        Some("CN=v2.client.test")
    );
    assert!(up.handshakes() > hs);
    assert!(
        up.failures().is_empty(),
        "the upstream saw no failed handshake: {:?}",
        up.failures()
    );
    assert!(took <= ROTATION_SLO, "in service after {took:?}");
    assert_expiry_metric(&p, "client", &v2_sha, &v1_sha).await;
    eprintln!("egress client certificate: new one presented after {took:?}");
}

// ===================================================================
// 7. CA rotation for MUTUAL clients
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_ca_rotation_bundle_then_new_only() {
    let server_ca = DevCa::new("server CA");
    let old_ca = DevCa::new("old client CA");
    let new_ca = DevCa::new("new client CA");
    let dir = tempdir();
    let (cert, key) = server_ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir.path(), "server")
        .unwrap();
    let ca_file = old_ca.write_cert(dir.path(), "client-ca.crt").unwrap();
    let tls = vec![
        "mode: MUTUAL".to_string(),
        format!("serverCertificate: {}", cert.display()),
        format!("privateKey: {}", key.display()),
        format!("caCertificates: {}", ca_file.display()),
    ];
    let yaml = gateway_yaml(&tls, echo_service().await);
    let p = start(dir, &yaml, None).await;
    let addr = p.proxy.inbound()[&443];
    let client = |ca: &DevCa, cn: &str| {
        let l = ca.issue(&LeafSpec::client(cn));
        ClientOpts {
            identity: Some((l.cert_pem, l.key_pem)),
            ..client_opts(&server_ca)
        }
    };
    let old_client = client(&old_ca, "old.client.test");
    let new_client = client(&new_ca, "new.client.test");

    probe(addr, &old_client)
        .await
        .expect("old-CA client accepted at first");
    assert!(
        probe(addr, &new_client).await.is_err(),
        "new-CA client refused at first"
    );

    // Step 1: trust both.
    replace_file(&ca_file, &format!("{}{}", old_ca.cert_pem, new_ca.cert_pem));
    let (_, took_bundle) = eventually("the new-CA client is accepted with the bundle", || async {
        probe(addr, &new_client).await.ok()
    })
    .await;
    for _ in 0..3 {
        probe(addr, &old_client)
            .await
            .expect("old-CA client still accepted with the bundle");
        probe(addr, &new_client)
            .await
            .expect("new-CA client accepted with the bundle");
    }

    // Step 2: the new CA only.
    const UNKNOWN_CA: &str =
        "meshgate_tls_handshake_failures_total{direction=\"inbound\",reason=\"unknown_ca\"}";
    let unknown_ca0 = p.metric(UNKNOWN_CA).await;
    replace_file(&ca_file, &new_ca.cert_pem);
    let (err, took_new_only) = eventually("the old-CA client is refused", || async {
        probe(addr, &old_client).await.err()
    })
    .await;
    for _ in 0..3 {
        assert!(
            probe(addr, &old_client).await.is_err(),
            "old-CA client stays refused"
        );
        probe(addr, &new_client)
            .await
            .expect("new-CA client accepted with the new CA only");
    }
    assert!(
        took_bundle <= ROTATION_SLO,
        "bundle in service after {took_bundle:?}"
    );
    assert!(
        took_new_only <= ROTATION_SLO,
        "new-only CA in service after {took_new_only:?}"
    );
    eventually(
        "the old-CA client's refusals are counted as unknown_ca",
        || async { (p.metric(UNKNOWN_CA).await >= unknown_ca0 + 4.0).then_some(()) },
    )
    .await;
    eprintln!(
        "client CA rotation: bundle in service after {took_bundle:?}, new-only after \
         {took_new_only:?} (old client then got: {err})"
    );
}

// ===================================================================
// 8. An expired replacement is refused
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_replacement_is_refused_and_the_old_certificate_keeps_serving() {
    let ca = DevCa::new("rotation CA");
    let old = ca.issue(&LeafSpec::server(&[HOST]));
    let expired = ca.issue(&LeafSpec::server(&[HOST]).expired());
    let (old_sha, expired_sha) = (
        fingerprint(&old.cert_pem).sha256,
        fingerprint(&expired.cert_pem).sha256,
    );
    let g = file_gateway(&ca, &old).await;
    let addr = g.p.proxy.inbound()[&443];
    let opts = client_opts(&ca);
    let fail0 = refused_reloads(&g.p).await;
    let ok0 = g.p.metric(RELOAD_OK).await;

    replace_pair(&g.cert, &g.key, &expired);
    eventually("the expired certificate is refused", || async {
        (refused_reloads(&g.p).await > fail0).then_some(())
    })
    .await;
    assert_keeps_serving(addr, &opts, &old_sha, "after an expired replacement").await;
    assert_eq!(
        g.p.metric(RELOAD_OK).await,
        ok0,
        "the expired certificate was never published"
    );
    assert_expiry_metric(&g.p, "server", &old_sha, &expired_sha).await;
}

// ===================================================================
// 9. A config change naming files that are written afterwards
// ===================================================================

/// Rotating by pointing the Gateway at new file names: the config is saved
/// first and refused (the new files do not exist yet), then the files are
/// written. The watcher must notice them, as it notices a half-written file
/// being completed (test 4), rather than keep the old certificate until some
/// unrelated change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_naming_files_written_afterwards_is_picked_up_once_they_exist() {
    let ca = DevCa::new("rotation CA");
    let old = ca.issue(&LeafSpec::server(&[HOST]));
    let new = ca.issue(&LeafSpec::server(&[HOST]));
    let (old_sha, new_sha) = (
        fingerprint(&old.cert_pem).sha256,
        fingerprint(&new.cert_pem).sha256,
    );
    let g = file_gateway(&ca, &old).await;
    let addr = g.p.proxy.inbound()[&443];
    let opts = client_opts(&ca);
    let fail0 = refused_reloads(&g.p).await;

    let config = std::fs::read_to_string(g.p.config_path()).unwrap();
    let edited = config
        .replace("server.crt", "server-v2.crt")
        .replace("server.key", "server-v2.key");
    assert_ne!(config, edited);
    replace_file(&g.p.config_path(), &edited);
    eventually("the config naming missing files is refused", || async {
        (refused_reloads(&g.p).await > fail0).then_some(())
    })
    .await;
    assert_keeps_serving(addr, &opts, &old_sha, "while the new files are missing").await;

    new.write(g.p.dir.path(), "server-v2").unwrap();
    let (_, took) = eventually(
        "the files named by the refused config are picked up once written",
        || async {
            let s = probe(addr, &opts).await.expect("requests keep succeeding");
            (s.sha256 == new_sha).then_some(())
        },
    )
    .await;
    assert!(took <= ROTATION_SLO, "in service after {took:?}");
    assert_expiry_metric(&g.p, "server", &new_sha, &old_sha).await;
}

/// One broken credential holds back only the server that uses it: another
/// host on the same port rotates to its new certificate in the same reload,
/// while the broken one keeps its last good certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_credential_holds_back_only_its_own_server() {
    const OTHER: &str = "other.rotation.test";
    let ca = DevCa::new("isolation CA");
    let dir = tempdir();
    let a_old = ca.issue(&LeafSpec::server(&[HOST]));
    let b_old = ca.issue(&LeafSpec::server(&[OTHER]));
    let (a_cert, a_key) = a_old.write(dir.path(), "a").unwrap();
    let (b_cert, b_key) = b_old.write(dir.path(), "b").unwrap();
    let backend = echo_service().await;
    let server = |host: &str, cert: &Path, key: &Path| {
        format!(
            "  - port: {{number: 443, name: https-{h}, protocol: HTTPS}}\n    hosts: [\"{host}\"]\n    tls: {{mode: SIMPLE, serverCertificate: {c}, privateKey: {k}}}\n",
            h = host.len(),
            c = cert.display(),
            k = key.display()
        )
    };
    let yaml = format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: ingress}}\nspec:\n  servers:\n{}{}---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: app}}\nspec:\n  hosts: [\"{HOST}\", \"{OTHER}\"]\n  gateways: [ingress]\n  http:\n  - route:\n    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}\n",
        server(HOST, &a_cert, &a_key),
        server(OTHER, &b_cert, &b_key),
        backend.port()
    );
    let p = start(dir, &yaml, None).await;
    let addr = p.proxy.inbound()[&443];
    let opts_a = client_opts(&ca);
    let opts_b = ClientOpts {
        sni: Some(OTHER.into()),
        ..client_opts(&ca)
    };
    // Break a.test's key and rotate b.test, together.
    replace_file(
        &a_key,
        "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n",
    );
    let b_new = ca.issue(&LeafSpec::server(&[OTHER]));
    replace_pair(&b_cert, &b_key, &b_new);
    let want_b = fingerprint(&b_new.cert_pem).sha256;
    eventually("b.test serves its new certificate", || async {
        probe_sni(addr, &opts_b, OTHER)
            .await
            .ok()
            .filter(|s| *s == want_b)
    })
    .await;
    let a_seen = probe_sni(addr, &opts_a, HOST)
        .await
        .expect("a.test keeps serving");
    assert_eq!(
        a_seen,
        fingerprint(&a_old.cert_pem).sha256,
        "a.test keeps its last good certificate"
    );
    assert!(
        p.metric(RELOAD_PARTIAL).await >= 1.0,
        "counted as a partial reload"
    );
    // Per credential: b.test rotated, a.test's change was refused.
    let m = p.metrics().await;
    let b_source = format!("{} + {}", b_cert.display(), b_key.display());
    let a_source = format!("{} + {}", a_cert.display(), a_key.display());
    assert!(
        meshgate::test_util::metric_value(
            &m,
            &format!("meshgate_cert_reloads_total{{credential=\"{b_source}\",result=\"success\"}}")
        ) >= 1.0,
        "{m}"
    );
    assert!(
        meshgate::test_util::metric_value(
            &m,
            &format!("meshgate_cert_reloads_total{{credential=\"{a_source}\",result=\"failure\"}}")
        ) >= 1.0,
        "{m}"
    );
    assert_eq!(
        p.metric("meshgate_config_stale").await,
        1.0,
        "what is served is older than the files"
    );
}

/// The SHA-256 of the certificate served for `sni`, after one request.
async fn probe_sni(addr: SocketAddr, opts: &ClientOpts, host: &str) -> Result<String, String> {
    let tls = tls_connect(addr, opts).await.map_err(|e| e.to_string())?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no server certificate")?;
    let mut conn = HttpsConn::new(tls, false)
        .await
        .map_err(|e| e.to_string())?;
    let r = conn.get(host, "/", &[]).await.map_err(|e| e.to_string())?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    Ok(CertInfo::parse(&der).map_err(|e| e.to_string())?.sha256)
}
