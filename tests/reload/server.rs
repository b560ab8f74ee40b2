//! Server certificates: rotation under load, open connections, corrupt, half-written and symlink-swapped replacements.

use super::*;

// ===================================================================
// 1. Rotation under continuous load, server side
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_rotation_under_continuous_load() {
    let ca = DevCa::new("rotation CA");
    let old = ca.issue(&LeafSpec::server(&[HOST]));
    let new = ca.issue(&LeafSpec::server(&[HOST]));
    let (old_info, new_info) = (fingerprint(&old.cert_pem), fingerprint(&new.cert_pem));
    let g = file_gateway(&ca, &old).await;
    let addr = g.p.proxy.inbound()[&443];
    let ok_before = g.p.metric(RELOAD_OK).await;
    let fail_before = refused_reloads(&g.p).await;

    let t0 = Instant::now();
    let load = Load::start(addr, client_opts(&ca), 2);
    load.wait_requests(t0, 10, "load running before the rotation")
        .await;
    // About a second of load before the rotation, three in all (these only
    // set the load's length; every outcome is checked by polling).
    tokio::time::sleep_until((t0 + Duration::from_secs(1)).into()).await;

    let rotating = Instant::now();
    replace_pair(&g.cert, &g.key, &new);
    let replaced = Instant::now();
    let in_service = load
        .wait_seen(
            replaced,
            &new_info.sha256,
            "a new handshake sees the new certificate",
        )
        .await;
    let latency = in_service.saturating_duration_since(replaced);
    // Keep the load going a while longer: no flapping back, no failures.
    load.wait_requests(in_service, 20, "load continuing after the rotation")
        .await;
    tokio::time::sleep_until((t0 + Duration::from_secs(3)).into()).await;
    let records = load.finish().await;
    let total = check_run(&records, rotating, &old_info.sha256, &new_info.sha256);

    let serials: std::collections::BTreeSet<&str> = records
        .iter()
        .map(|r| r.result.as_ref().unwrap().serial.as_str())
        .collect();
    assert_eq!(
        serials,
        [old_info.serial.as_str(), new_info.serial.as_str()]
            .into_iter()
            .collect(),
        "clients saw exactly the old and the new serial"
    );
    assert!(
        latency <= ROTATION_SLO,
        "new certificate in service {latency:?} after the replacement (want <= {ROTATION_SLO:?})"
    );
    assert_expiry_metric(&g.p, "server", &new_info.sha256, &old_info.sha256).await;
    let ok = g.p.metric(RELOAD_OK).await;
    let fail = refused_reloads(&g.p).await;
    assert!(
        ok >= ok_before + 1.0,
        "a successful reload was counted: {ok}"
    );
    eprintln!(
        "server rotation under load: new certificate in service {latency:?} after the \
         replacement; {total} requests, 0 failed; reloads: {} ok, {} refused (mismatched pair)",
        ok - ok_before,
        fail - fail_before
    );
}

/// The window between the two renames, held open on purpose: the watcher
/// sees the new certificate with the old key, refuses the pair and keeps
/// serving; once the key follows, the consistent pair is picked up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mismatched_pair_between_the_renames_is_refused_then_the_pair_is_picked_up() {
    let ca = DevCa::new("rotation CA");
    let old = ca.issue(&LeafSpec::server(&[HOST]));
    let new = ca.issue(&LeafSpec::server(&[HOST]));
    let (old_sha, new_sha) = (
        fingerprint(&old.cert_pem).sha256,
        fingerprint(&new.cert_pem).sha256,
    );
    let g = file_gateway(&ca, &old).await;
    let addr = g.p.proxy.inbound()[&443];
    let fail0 = refused_reloads(&g.p).await;
    let ok0 = g.p.metric(RELOAD_OK).await;

    let t0 = Instant::now();
    let load = Load::start(addr, client_opts(&ca), 2);
    load.wait_requests(t0, 10, "load running").await;
    let rotating = Instant::now();
    let tc = write_tmp(&g.cert, &new.cert_pem);
    let tk = write_tmp(&g.key, &new.key_pem);
    std::fs::rename(&tc, &g.cert).unwrap();
    eventually("the mismatched pair is refused", || async {
        (refused_reloads(&g.p).await > fail0).then_some(())
    })
    .await;
    // Requests keep succeeding with the old certificate in the window.
    let refused = Instant::now();
    load.wait_requests(refused, 10, "load continuing in the window")
        .await;
    assert_eq!(g.p.metric(RELOAD_OK).await, ok0, "nothing was published");
    std::fs::rename(&tk, &g.key).unwrap();
    let replaced = Instant::now();
    let in_service = load
        .wait_seen(replaced, &new_sha, "the consistent pair is picked up")
        .await;
    load.wait_requests(in_service, 10, "load continuing after the rotation")
        .await;
    let records = load.finish().await;
    for r in records
        .iter()
        .filter(|r| r.start >= refused && r.end < replaced)
    {
        assert_eq!(
            r.result.as_ref().map(|s| s.sha256.as_str()),
            Ok(old_sha.as_str()),
            "in the window the old certificate serves"
        );
    }
    let total = check_run(&records, rotating, &old_sha, &new_sha);
    let latency = in_service.saturating_duration_since(replaced);
    assert!(latency <= ROTATION_SLO, "in service after {latency:?}");
    assert_expiry_metric(&g.p, "server", &new_sha, &old_sha).await;
    eprintln!(
        "mismatched pair: refused, then the consistent pair in service {latency:?} after the \
         second rename; {total} requests, 0 failed"
    );
}

// ===================================================================
// 2. Connections already open continue
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_keepalive_connection_survives_rotation_with_old_certificate() {
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

    let tls = tls_connect(addr, &opts).await.unwrap();
    let held_sha = CertInfo::parse(&tls.get_ref().1.peer_certificates().unwrap()[0])
        .unwrap()
        .sha256;
    assert_eq!(held_sha, old_sha);
    let mut conn = KeepAlive::new(tls).await;
    for i in 0..2 {
        let (status, body) = conn
            .get(&format!("/before/{i}"))
            .await
            .unwrap_or_else(|e| panic!("request {i} before the rotation: {e}"));
        assert_eq!(status, 200, "{body}");
    }

    replace_pair(&g.cert, &g.key, &new);
    let took = wait_served(
        addr,
        &opts,
        &new_sha,
        "new connections get the new certificate",
    )
    .await;
    assert!(took <= ROTATION_SLO, "in service after {took:?}");

    for i in 0..3 {
        let (status, body) = conn.get(&format!("/after/{i}")).await.unwrap_or_else(|e| {
            panic!("request {i} on the connection opened before the rotation: {e}")
        });
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["path"], format!("/after/{i}"));
    }
    // It is the same TLS session, so it still shows the old certificate,
    // while a new connection gets the new one.
    assert_eq!(held_sha, old_sha);
    assert_eq!(probe(addr, &opts).await.unwrap().sha256, new_sha);
}

/// An HTTP/1.1 keep-alive client on one TLS connection. (Unlike
/// `HttpsConn::get`, it waits for the connection to be ready before each
/// request, so a second request never races the end of the first.)
struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl KeepAlive {
    async fn new(tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> KeepAlive {
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .expect("HTTP/1.1 handshake");
        tokio::spawn(conn);
        KeepAlive { sender }
    }

    async fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        use http_body_util::BodyExt as _;
        let attempt = async {
            self.sender
                .ready()
                .await
                .map_err(|e| format!("connection no longer usable: {e}"))?;
            let req = http::Request::get(path)
                .header(http::header::HOST, HOST)
                .body(http_body_util::Empty::new())
                .map_err(|e| e.to_string())?;
            let resp = self
                .sender
                .send_request(req)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(DEADLINE, attempt)
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {DEADLINE:?}")))
    }
}

// ===================================================================
// 3. Corrupt replacement keeps the old credential
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_key_is_refused_and_a_valid_pair_is_then_picked_up() {
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
    let ok0 = g.p.metric(RELOAD_OK).await;

    std::fs::write(&g.key, "this is not a private key\n").unwrap();
    let (fails, _) = eventually("the corrupt key is refused", || async {
        let f = refused_reloads(&g.p).await;
        (f > fail0).then_some(f)
    })
    .await;
    assert_keeps_serving(addr, &opts, &old_sha, "after the corrupt key").await;
    assert_eq!(
        g.p.metric(RELOAD_OK).await,
        ok0,
        "the corrupt key was never published"
    );
    assert_expiry_metric(&g.p, "server", &old_sha, &new_sha).await;

    replace_pair(&g.cert, &g.key, &new);
    let took = wait_served(addr, &opts, &new_sha, "the valid pair is picked up").await;
    assert!(took <= ROTATION_SLO, "in service after {took:?}");
    assert!(g.p.metric(RELOAD_OK).await > ok0);
    assert_expiry_metric(&g.p, "server", &new_sha, &old_sha).await;
    eprintln!(
        "corrupt key: {} refused reload(s); valid pair in service after {took:?}",
        fails - fail0
    );
}

// ===================================================================
// 4. Half-written, then completed file
// ===================================================================

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_certificate_is_refused_then_picked_up_once_complete() {
    use std::io::Write as _;
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
    let ok0 = g.p.metric(RELOAD_OK).await;

    // An in-place write caught half way: the key already matches the new
    // certificate, but the certificate file holds only its first half.
    let (first, rest) = new.cert_pem.split_at(new.cert_pem.len() / 2);
    std::fs::write(&g.cert, first).unwrap();
    std::fs::write(&g.key, &new.key_pem).unwrap();
    eventually("the half-written certificate is refused", || async {
        (refused_reloads(&g.p).await > fail0).then_some(())
    })
    .await;
    assert_keeps_serving(
        addr,
        &opts,
        &old_sha,
        "while the certificate is half written",
    )
    .await;
    assert_eq!(g.p.metric(RELOAD_OK).await, ok0, "nothing was published");

    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&g.cert)
        .unwrap();
    f.write_all(rest.as_bytes()).unwrap();
    drop(f);
    let took = wait_served(addr, &opts, &new_sha, "the completed certificate serves").await;
    assert!(
        took <= ROTATION_SLO,
        "completed certificate in service after {took:?}"
    );
    assert_expiry_metric(&g.p, "server", &new_sha, &old_sha).await;
    eprintln!("half-written certificate: completed file in service after {took:?}");
}

// ===================================================================
// 5. Kubernetes `..data` symlink swap
// ===================================================================

/// A Secret volume as the kubelet writes it: the files live in a
/// timestamped directory, `..data` points at it, each key is a symlink
/// through `..data`.
struct KubeletSecret {
    dir: PathBuf,
    current: String,
}

impl KubeletSecret {
    fn create(dir: PathBuf, leaf: &Leaf) -> KubeletSecret {
        use std::os::unix::fs::symlink;
        std::fs::create_dir_all(&dir).unwrap();
        let ts = "..2026_11_26_00_00_01.000".to_string();
        Self::write_version(&dir, &ts, leaf);
        symlink(&ts, dir.join("..data")).unwrap();
        for k in ["tls.crt", "tls.key"] {
            symlink(format!("..data/{k}"), dir.join(k)).unwrap();
        }
        KubeletSecret { dir, current: ts }
    }

    fn write_version(dir: &Path, ts: &str, leaf: &Leaf) {
        let v = dir.join(ts);
        std::fs::create_dir(&v).unwrap();
        std::fs::write(v.join("tls.crt"), &leaf.cert_pem).unwrap();
        std::fs::write(v.join("tls.key"), &leaf.key_pem).unwrap();
    }

    /// The kubelet's update: new timestamped directory, `..data_tmp`
    /// renamed over `..data`, old directory removed. Returns when the swap
    /// (the rename) happened.
    fn rotate(&mut self, ts: &str, leaf: &Leaf) -> Instant {
        Self::write_version(&self.dir, ts, leaf);
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(ts, &tmp).unwrap();
        std::fs::rename(&tmp, self.dir.join("..data")).unwrap();
        let swapped = Instant::now();
        std::fs::remove_dir_all(self.dir.join(&self.current)).unwrap();
        self.current = ts.to_string();
        swapped
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_data_symlink_swap_rotates_without_failed_requests() {
    let ca = DevCa::new("rotation CA");
    let old = ca.issue(&LeafSpec::server(&[HOST]));
    let new = ca.issue(&LeafSpec::server(&[HOST]));
    let (old_sha, new_sha) = (
        fingerprint(&old.cert_pem).sha256,
        fingerprint(&new.cert_pem).sha256,
    );
    let dir = tempdir();
    let secrets = dir.path().join("secrets");
    let mut secret = KubeletSecret::create(secrets.join("gw-cred"), &old);
    let tls = vec!["mode: SIMPLE".into(), "credentialName: gw-cred".into()];
    let yaml = gateway_yaml(&tls, echo_service().await);
    let p = start(dir, &yaml, Some(secrets)).await;
    let addr = p.proxy.inbound()[&443];
    let opts = client_opts(&ca);
    assert_eq!(probe(addr, &opts).await.unwrap().sha256, old_sha);
    let ok0 = p.metric(RELOAD_OK).await;

    let t0 = Instant::now();
    let load = Load::start(addr, opts.clone(), 2);
    load.wait_requests(t0, 10, "load running before the swap")
        .await;
    let rotating = Instant::now();
    let swapped = secret.rotate("..2026_11_26_00_00_02.000", &new);
    let removed = Instant::now();
    let in_service = load
        .wait_seen(swapped, &new_sha, "a new handshake sees the swapped Secret")
        .await;
    let latency = in_service.saturating_duration_since(swapped);
    // Past the old directory's removal, and several watch intervals on.
    load.wait_requests(
        removed.max(in_service),
        20,
        "load continuing after the swap",
    )
    .await;
    let records = load.finish().await;
    let total = check_run(&records, rotating, &old_sha, &new_sha);
    assert!(
        latency <= ROTATION_SLO,
        "swapped Secret in service {latency:?} after the ..data rename (want <= {ROTATION_SLO:?})"
    );
    assert!(p.metric(RELOAD_OK).await > ok0);
    assert_expiry_metric(&p, "server", &new_sha, &old_sha).await;
    eprintln!(
        "..data swap: new certificate in service {latency:?} after the rename; {total} requests, 0 failed"
    );
}
