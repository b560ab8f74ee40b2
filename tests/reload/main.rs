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
        let tls = tls_connect(addr, opts).await.map_err(|e| e.to_string())?;
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .cloned()
            .ok_or("no server certificate")?;
        let info = CertInfo::parse(&der).map_err(|e| e.to_string())?;
        let mut conn = HttpsConn::new(tls, false)
            .await
            .map_err(|e| e.to_string())?;
        let r = conn
            .get(HOST, "/rotation", &[])
            .await
            .map_err(|e| e.to_string())?;
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
        // The watcher's first look reloads once when a file is as new as
        // the load (these were just written); tests count reloads from
        // after it.
        Ok(p) => {
            tokio::time::sleep(WATCH * 3).await;
            eventually("the watcher's first look", || async {
                let now = p.metric(RELOAD_OK).await + refused_reloads(&p).await;
                tokio::time::sleep(WATCH * 2).await;
                let later = p.metric(RELOAD_OK).await + refused_reloads(&p).await;
                (now == later).then_some(())
            })
            .await;
            p
        }
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
    let seen = probe(p.proxy.inbound()[&443], &client_opts(ca))
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

mod clients;
mod server;
mod watcher;
