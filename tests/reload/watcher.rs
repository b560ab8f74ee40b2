//! The watcher reloads when files change, not because it started.

use super::*;

#[tokio::test]
async fn nothing_changed_means_no_reload_after_start() {
    let ca = DevCa::new("watcher CA");
    let dir = tempdir();
    let (cert, key) = ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir.path(), "server")
        .unwrap();
    let tls = vec![
        "mode: SIMPLE".to_string(),
        format!("serverCertificate: {}", cert.display()),
        format!("privateKey: {}", key.display()),
    ];
    let yaml = gateway_yaml(&tls, echo_service().await);
    // Files last written well before the proxy reads them.
    let past = std::time::SystemTime::now() - Duration::from_secs(60);
    let age = |path: &Path| {
        std::fs::File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(past))
            .unwrap();
    };
    age(&cert);
    age(&key);
    let p = TestProxy::start(dir, &yaml, |b| {
        b.watch_interval = WATCH;
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        let config = &b.config_paths[0];
        age(config);
    })
    .await
    .unwrap();
    tokio::time::sleep(WATCH * 10).await;
    assert_eq!(
        p.metric(RELOAD_OK).await,
        0.0,
        "reloaded with nothing changed"
    );
    assert_eq!(refused_reloads(&p).await, 0.0);
    // A change is still seen.
    let text = std::fs::read_to_string(p.config_path()).unwrap();
    replace_file(&p.config_path(), &format!("{text}\n# touched\n"));
    eventually("the reload after a change", || async {
        (p.metric(RELOAD_OK).await == 1.0).then_some(())
    })
    .await;
}
