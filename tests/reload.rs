//! Certificate rotation while serving: the file watcher (`watch_interval`)
//! notices replaced certificates, keys, CAs and Kubernetes Secret volumes,
//! reloads, and puts the new credential in service for new connections,
//! without failing a request; broken or expired replacements are refused and
//! the last good credential keeps serving.
//!
//! Every wait is a poll with a deadline; no fixed sleep decides an outcome.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate::creds::{CertInfo, certs_from_pem};
use meshgate::devpki::{DevCa, Leaf, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig};
use meshgate::test_util::{ClientOpts, HttpsConn, TestProxy, echo_service, tempdir, tls_connect};

const HOST: &str = "service.internal.test";
const EGRESS_HOST: &str = "api.external.test";
const WATCH: Duration = Duration::from_millis(100);
/// How soon a valid replacement must be in service.
const ROTATION_SLO: Duration = Duration::from_secs(2);
/// Longest any single wait may take before the test gives up.
const DEADLINE: Duration = Duration::from_secs(5);

const RELOAD_OK: &str = "meshgate_config_reloads_total{result=\"success\"}";
const RELOAD_FAIL: &str = "meshgate_config_reloads_total{result=\"failure\"}";
/// A reload in which a credential kept its last good version.
const RELOAD_PARTIAL: &str = "meshgate_config_reloads_total{result=\"partial\"}";

/// Reloads that did not put the new files in service: refused outright, or
/// applied with the broken credential kept at its last good version.
async fn refused_reloads(p: &meshgate::test_util::TestProxy) -> f64 {
    p.metric(RELOAD_FAIL).await + p.metric(RELOAD_PARTIAL).await
}
const EXPIRY: &str = "meshgate_cert_expiry_timestamp_seconds";

// ===================================================================
// Helpers
// ===================================================================

/// Polls `f` every 20 ms until it returns `Some`, at most `DEADLINE`.
/// Returns the value and how long it took; panics naming `what` otherwise.
async fn eventually<T, F, Fut>(what: &str, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return (v, start.elapsed());
        }
        if start.elapsed() > DEADLINE {
            panic!("timed out after {DEADLINE:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The SHA-256 and serial of a PEM certificate (its first block).
fn fingerprint(cert_pem: &str) -> CertInfo {
    let chain = certs_from_pem(cert_pem.as_bytes()).expect("certificate PEM");
    CertInfo::parse(&chain[0]).expect("parsable certificate")
}

/// Writes `contents` to a temporary file next to `path`, then renames it
/// over `path` (an atomic replacement of one file).
fn write_tmp(path: &Path, contents: &str) -> PathBuf {
    let name = path.file_name().unwrap().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, contents).expect("write temporary file");
    tmp
}

fn replace_file(path: &Path, contents: &str) {
    let tmp = write_tmp(path, contents);
    std::fs::rename(&tmp, path).expect("rename over the original");
}

/// Replaces a certificate and its key the way careful tooling does: both
/// written to temporary files in the same directory, then each renamed into
/// place. The two renames are not atomic together: a reload in between sees
/// a mismatched pair (and must refuse it).
fn replace_pair(cert: &Path, key: &Path, leaf: &Leaf) {
    let tc = write_tmp(cert, &leaf.cert_pem);
    let tk = write_tmp(key, &leaf.key_pem);
    std::fs::rename(&tc, cert).expect("rename certificate");
    std::fs::rename(&tk, key).expect("rename key");
}

fn client_opts(ca: &DevCa) -> ClientOpts {
    ClientOpts {
        sni: Some(HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    }
}

/// What one HTTPS request through the Gateway saw.
#[derive(Debug, Clone)]
struct Seen {
    sha256: String,
    serial: String,
}

/// One new TLS connection (verified against `opts.ca_pem`), one request on
/// it. The server certificate it was shown, or the error.
async fn probe(addr: SocketAddr, opts: &ClientOpts) -> Result<Seen, String> {
    let attempt = async {
        let tls = tls_connect(addr, opts).await?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no server certificate")?;
        let info = CertInfo::parse(&der)?;
        let mut conn = HttpsConn::new(tls, false).await?;
        let r = conn.get(HOST, "/rotation", &[]).await?;
        if r.status != 200 {
            return Err(format!("status {}: {}", r.status, r.body));
        }
        Ok(Seen {
            sha256: info.sha256,
            serial: info.serial,
        })
    };
    match tokio::time::timeout(DEADLINE, attempt).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {DEADLINE:?}")),
    }
}

/// Gateway `ingress` on port 443 with these `tls:` lines, and a
/// VirtualService sending everything for `HOST` to `backend`.
fn gateway_yaml(tls: &[String], backend: SocketAddr) -> String {
    let tls: String = tls.iter().map(|l| format!("      {l}\n")).collect();
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["{HOST}"]
    tls:
{tls}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts: ["{HOST}"]
  gateways: [ingress]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        port = backend.port()
    )
}

/// Starts a proxy that polls its files every `WATCH`, with config port 443
/// on an ephemeral port.
async fn start(dir: tempfile::TempDir, yaml: &str, secrets_dir: Option<PathBuf>) -> TestProxy {
    match TestProxy::start(dir, yaml, move |b| {
        b.watch_interval = WATCH;
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        b.secrets_dir = secrets_dir;
    })
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("proxy failed to start: {e}\n--- config ---\n{yaml}"),
    }
}

/// A Gateway serving `leaf` from `server.crt` / `server.key` in a fresh
/// directory, in front of an echo service.
struct FileGateway {
    p: TestProxy,
    cert: PathBuf,
    key: PathBuf,
}

async fn file_gateway(ca: &DevCa, leaf: &Leaf) -> FileGateway {
    let dir = tempdir();
    let (cert, key) = leaf.write(dir.path(), "server").unwrap();
    let tls = vec![
        "mode: SIMPLE".to_string(),
        format!("serverCertificate: {}", cert.display()),
        format!("privateKey: {}", key.display()),
    ];
    let yaml = gateway_yaml(&tls, echo_service().await);
    let p = start(dir, &yaml, None).await;
    // Sanity: the first certificate serves.
    let seen = probe(p.proxy.inbound[&443], &client_opts(ca))
        .await
        .expect("the initial certificate serves");
    assert_eq!(seen.sha256, fingerprint(&leaf.cert_pem).sha256);
    FileGateway { p, cert, key }
}

/// `meshgate_cert_expiry_timestamp_seconds` lines.
fn expiry_lines(metrics: &str) -> Vec<String> {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{EXPIRY}{{")))
        .map(str::to_string)
        .collect()
}

/// Asserts the expiry gauge lists `new` (with `role`) and not `old`.
async fn assert_expiry_metric(p: &TestProxy, role: &str, new: &str, old: &str) {
    let m = p.metrics().await;
    let lines = expiry_lines(&m);
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("role=\"{role}\""))
                && l.contains(&format!("sha256=\"{new}\""))),
        "expiry gauge lists the new {role} certificate {new}:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains(old)),
        "expiry gauge no longer lists the replaced certificate {old}:\n{}",
        lines.join("\n")
    );
}

/// Waits until a new connection is served `want`; returns how long it took.
async fn wait_served(addr: SocketAddr, opts: &ClientOpts, want: &str, what: &str) -> Duration {
    let (_, took) = eventually(what, || async {
        match probe(addr, opts).await {
            Ok(s) if s.sha256 == want => Some(()),
            Ok(_) => None,
            Err(e) => panic!("{what}: a request failed while waiting: {e}"),
        }
    })
    .await;
    took
}

/// For `span`, every new connection still gets `want` and succeeds. (A
/// refused replacement must stay refused: this covers several watch
/// intervals after the refusal was counted.)
async fn assert_keeps_serving(addr: SocketAddr, opts: &ClientOpts, want: &str, why: &str) {
    let span = WATCH * 6;
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < span || n < 3 {
        let seen = probe(addr, opts)
            .await
            .unwrap_or_else(|e| panic!("{why}: request {n} failed: {e}"));
        assert_eq!(
            seen.sha256, want,
            "{why}: request {n} was served another certificate"
        );
        n += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// --- continuous load ---

struct Record {
    start: Instant,
    end: Instant,
    result: Result<Seen, String>,
}

/// Clients making one new TLS connection per request, in a loop, until
/// stopped (or 15 s, a safety net).
struct Load {
    records: Arc<Mutex<Vec<Record>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, opts: ClientOpts, clients: usize) -> Load {
        let records = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients)
            .map(|_| {
                let (records, stop, opts) = (records.clone(), stop.clone(), opts.clone());
                tokio::spawn(async move {
                    let began = Instant::now();
                    while !stop.load(Ordering::Relaxed) && began.elapsed() < Duration::from_secs(15)
                    {
                        let start = Instant::now();
                        let result = probe(addr, &opts).await;
                        let end = Instant::now();
                        records.lock().unwrap().push(Record { start, end, result });
                    }
                })
            })
            .collect();
        Load {
            records,
            stop,
            tasks,
        }
    }

    /// Waits until `n` requests that started at or after `since` completed.
    async fn wait_requests(&self, since: Instant, n: usize, what: &str) {
        eventually(what, || async {
            let r = self.records.lock().unwrap();
            (r.iter().filter(|r| r.start >= since).count() >= n).then_some(())
        })
        .await;
    }

    /// Waits until a request that started at or after `since` saw `sha`;
    /// returns when it completed.
    async fn wait_seen(&self, since: Instant, sha: &str, what: &str) -> Instant {
        let (end, _) = eventually(what, || async {
            let r = self.records.lock().unwrap();
            r.iter()
                .filter(|r| r.start >= since)
                .filter(|r| matches!(&r.result, Ok(s) if s.sha256 == sha))
                .map(|r| r.end)
                .min()
        })
        .await;
        end
    }

    async fn finish(self) -> Vec<Record> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("load task");
        }
        Arc::try_unwrap(self.records)
            .ok()
            .expect("no other owner")
            .into_inner()
            .unwrap()
    }
}

/// Checks a load run around one rotation: no failed request; only `old`
/// before `replaced_at`; only `new` for connections started after the first
/// one that saw `new` completed (no flapping back). Returns the number of
/// requests.
fn check_run(records: &[Record], started_at: Instant, old: &str, new: &str) -> usize {
    let failures: Vec<String> = records
        .iter()
        .filter_map(|r| r.result.as_ref().err())
        .cloned()
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed during the rotation: {failures:?}",
        failures.len(),
        records.len()
    );
    let sha = |r: &Record| r.result.as_ref().unwrap().sha256.clone();
    for r in records.iter().filter(|r| r.end < started_at) {
        assert_eq!(sha(r), old, "before the rotation only the old certificate");
    }
    let first_new = records
        .iter()
        .filter(|r| sha(r) == new)
        .map(|r| r.end)
        .min()
        .expect("the new certificate was seen");
    for r in records.iter().filter(|r| r.start > first_new) {
        assert_eq!(
            sha(r),
            new,
            "once the new certificate served, every later connection gets it"
        );
    }
    for r in records {
        let s = sha(r);
        assert!(s == old || s == new, "an unexpected certificate {s}");
    }
    records.len()
}

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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = p.proxy.inbound[&443];
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
    let addr = p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = g.p.proxy.inbound[&443];
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
    let addr = p.proxy.inbound[&443];
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
    let tls = tls_connect(addr, opts).await?;
    let der = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .cloned()
        .ok_or("no server certificate")?;
    let mut conn = HttpsConn::new(tls, false).await?;
    let r = conn.get(host, "/", &[]).await?;
    if r.status != 200 {
        return Err(format!("status {}", r.status));
    }
    Ok(CertInfo::parse(&der)?.sha256)
}
