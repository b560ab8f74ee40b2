//! One broken server or credential at start: the rest is served, the
//! broken part fails closed; `--strict` refuses the whole configuration.

use super::*;

/// A Gateway with a good server on 443 and, on 8443, a MUTUAL one whose
/// credentialName Secret does not exist.
fn two_ports(dir: &Path, leaf: &Leaf, backend: SocketAddr) -> String {
    let missing = vec![
        "mode: MUTUAL".to_string(),
        "credentialName: no-such-secret".to_string(),
    ];
    [
        gateway(&[
            server(443, "HTTPS", &[HOST], &simple_tls(dir, leaf, "good")),
            server(8443, "HTTPS", &["mutual.internal.test"], &missing),
        ]),
        route_all("app", &[HOST, "mutual.internal.test"], backend),
    ]
    .concat()
}

#[tokio::test]
async fn a_missing_credential_leaves_its_server_out_and_the_rest_serves() {
    let s = setup();
    let leaf =
        s.ca.issue(&LeafSpec::server(&[HOST, "mutual.internal.test"]));
    let backend = echo_service().await;
    let yaml = two_ports(s.dir.path(), &leaf, backend);
    let o = opts(&s.ca);
    let p = start_ports(s.dir, &yaml, &[443, 8443], |_| {}).await;
    let isolated = p.proxy.state.snapshot().isolated.clone();
    assert_eq!(isolated.len(), 1, "{isolated:#?}");
    assert!(
        isolated[0].contains("spec.servers[1].tls") && isolated[0].contains("no-such-secret"),
        "{isolated:#?}"
    );
    assert_eq!(p.metric("meshgate_config_errors").await, 1.0);
    // The good server serves.
    let r = https_get(p.proxy.inbound()[&443], &o, HOST, "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    // The broken one refuses its handshakes: never served without its
    // client-certificate check.
    let mutual = ClientOpts {
        sni: Some("mutual.internal.test".into()),
        ..o.clone()
    };
    let err = tls_connect(p.proxy.inbound()[&8443], &mutual).await;
    assert!(
        err.is_err(),
        "the server without its credential must not handshake"
    );
}

#[tokio::test]
async fn strict_refuses_the_configuration() {
    let s = setup();
    let leaf = s.ca.issue(&LeafSpec::server(&[HOST]));
    let backend = echo_service().await;
    let yaml = two_ports(s.dir.path(), &leaf, backend);
    let started = TestProxy::start(s.dir, &yaml, |b| {
        b.strict = true;
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        b.port_map.insert(8443, "127.0.0.1:0".parse().unwrap());
    })
    .await;
    let Err(e) = started else {
        panic!("--strict must refuse a configuration with a missing credential")
    };
    assert!(e.to_string().contains("no-such-secret"), "{e}");
}

#[tokio::test]
async fn what_was_left_out_does_not_block_reloads_and_comes_back_when_fixed() {
    let s = setup();
    let leaf =
        s.ca.issue(&LeafSpec::server(&[HOST, "mutual.internal.test"]));
    let backend = echo_service().await;
    let yaml = two_ports(s.dir.path(), &leaf, backend);
    let o = opts(&s.ca);
    let ca_pem = s.ca.cert_pem.clone();
    let client = s.ca.issue(&LeafSpec::client("client"));
    let p = start_ports(s.dir, &yaml, &[443, 8443], |_| {}).await;
    // An unrelated edit that moves every line: still left out, reloaded.
    std::fs::write(p.config_path(), format!("# edited\n\n{yaml}")).unwrap();
    p.proxy.reload().await.expect("the reload is not refused");
    assert_eq!(p.proxy.state.snapshot().isolated.len(), 1);
    assert_eq!(p.metric("meshgate_config_errors").await, 1.0);
    // A new broken part is refused as any reload error is.
    let broken = yaml.replace("no-such-secret", "another-missing-secret");
    std::fs::write(p.config_path(), &broken).unwrap();
    assert!(p.proxy.reload().await.is_err());
    // The missing credential appears: served.
    let secret = super::revocation::string_secret(
        "no-such-secret",
        &[
            ("tls.crt", &leaf.cert_pem),
            ("tls.key", &leaf.key_pem),
            ("ca.crt", &ca_pem),
        ],
    );
    std::fs::write(p.config_path(), format!("{yaml}{secret}")).unwrap();
    p.proxy.reload().await.expect("fixed");
    assert!(p.proxy.state.snapshot().isolated.is_empty());
    assert_eq!(p.metric("meshgate_config_errors").await, 0.0);
    let mutual = ClientOpts {
        sni: Some("mutual.internal.test".into()),
        identity: Some((client.cert_pem, client.key_pem)),
        ..o.clone()
    };
    let r = https_get(
        p.proxy.inbound()[&8443],
        &mutual,
        "mutual.internal.test",
        "/",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
}
