//! Ingress interop tests: the real `meshgate` binary terminating (or passing
//! through) TLS for real outside clients.
//!
//! * `curl`, `openssl s_client` and `h2load` play the external clients,
//!   connecting to a Gateway server (config port 443, rebound by a bootstrap
//!   file's `portMap` to a free loopback port);
//! * an in-test echo service (`meshgate::test_util::echo_service`) plays the
//!   local app the VirtualService routes to, echoing what it received;
//! * `nginx` plays the HTTPS backend for PASSTHROUGH.
//!
//! Every test gets its own tempdir (certificates, Istio YAML, bootstrap,
//! nginx prefix) and its own free loopback ports, so the tests can run in
//! parallel. curl, openssl, h2load (nghttp2-client) and nginx are required:
//! if one is missing the test fails with the reason (never silently skipped).

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::echo_service;

mod common;
use common::nginx::Nginx;
use common::{StartError, free_addr, metric_value, read_lossy, tail, write_file};

const HOST: &str = "service.internal.test";
const CLIENT_CN: &str = "meshgate-interop-client";
/// Longest any outside program may run before it is killed.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Ports and small helpers
// ---------------------------------------------------------------------------

/// Minimal HTTP/1.1 GET (`Connection: close`): status code and body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {text:.80?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

// ---------------------------------------------------------------------------
// Outside programs
// ---------------------------------------------------------------------------

/// What an outside program did.
struct Run {
    cmdline: String,
    exit: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.exit, self.stdout, self.stderr
        )
    }

    fn ok(&self) -> bool {
        self.exit == Some(0)
    }

    /// stdout and stderr together (openssl splits its report between them).
    fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

/// Runs `program args...` with stdin from /dev/null (so `s_client` closes
/// after the handshake), proxy variables removed, and output captured in
/// files; killed after `TOOL_TIMEOUT`.
fn run(program: &str, args: &[&str]) -> Run {
    let dir = tempfile::tempdir().expect("tool tempdir");
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path).expect("stdout file"))
        .stderr(fs::File::create(&err_path).expect("stderr file"));
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
    let cmdline = format!("{program} {}", args.join(" "));
    let mut child = cmd.spawn().unwrap_or_else(|e| {
        panic!("cannot run {program} (install curl, openssl, nghttp2-client): {e}")
    });
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let exit = loop {
        match child.try_wait().expect("try_wait tool") {
            Some(status) => break status.code(),
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{cmdline} did not finish within {TOOL_TIMEOUT:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    read_lossy(&out_path),
                    read_lossy(&err_path)
                );
            }
            None => sleep(Duration::from_millis(20)),
        }
    };
    Run {
        cmdline,
        exit,
        stdout: read_lossy(&out_path),
        stderr: read_lossy(&err_path),
    }
}

/// What curl did: `-w '%{http_code} %{http_version}'`, body kept apart.
struct Curl {
    run: Run,
    code: u16,
    http_version: String,
    /// Every response head curl saw (`-D`).
    headers: String,
    body: String,
}

impl Curl {
    fn describe(&self) -> String {
        format!(
            "{}\nhttp_code: {}  http_version: {}\n--- headers ---\n{}--- body ---\n{}",
            self.run.describe(),
            self.code,
            self.http_version,
            self.headers,
            self.body
        )
    }

    /// The body as the echo service's JSON.
    fn echo(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not the echo service's JSON ({e})\n{}",
                self.describe()
            )
        })
    }
}

/// Runs `curl -q -sS --max-time 30 <args>`.
fn curl(args: &[&str]) -> Curl {
    let dir = tempfile::tempdir().expect("curl tempdir");
    let body_path = dir.path().join("body");
    let body_arg = path_str(&body_path);
    let hdr_path = dir.path().join("headers");
    let hdr_arg = path_str(&hdr_path);
    let mut all = vec![
        "-q",
        "-sS",
        "--max-time",
        "30",
        "-D",
        &hdr_arg,
        "-o",
        &body_arg,
        "-w",
        "%{http_code} %{http_version}",
    ];
    all.extend_from_slice(args);
    let run = run("curl", &all);
    let mut w = run.stdout.split_whitespace();
    let code = w.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    let http_version = w.next().unwrap_or("").to_string();
    let read = |p: &Path| {
        if p.exists() {
            read_lossy(p)
        } else {
            String::new()
        }
    };
    Curl {
        run,
        code,
        http_version,
        headers: read(&hdr_path),
        body: read(&body_path),
    }
}

// ---------------------------------------------------------------------------
// Certificates (meshgate::devpki)
// ---------------------------------------------------------------------------

/// The ingress PKI: one CA that signs meshgate's server certificate for
/// `HOST` and the external client's certificate.
struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    fn generate(dir: &Path) -> Pki {
        let ca = DevCa::new("meshgate ingress interop CA");
        let ca_path = ca.write_cert(dir, "ca.pem").expect("write ca.pem");
        let (server_cert, server_key) = ca
            .issue(&LeafSpec::server(&[HOST]))
            .write(dir, "server")
            .expect("write server cert");
        let (client_cert, client_key) = ca
            .issue(&LeafSpec::client(CLIENT_CN))
            .write(dir, "client")
            .expect("write client cert");
        Pki {
            ca: ca_path,
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }
}

// ---------------------------------------------------------------------------
// Istio YAML
// ---------------------------------------------------------------------------

/// A Gateway `ingress` with one HTTPS server on port 443 for `HOST` and the
/// given `tls:` block, and a VirtualService routing every path to `backend`.
fn terminating_config(tls_block: &str, backend: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - {HOST}
    tls:
{tls_block}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts:
  - {HOST}
  gateways:
  - ingress
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port:
          number: {port}
"#,
        port = backend.port()
    )
}

fn simple_tls(pki: &Pki) -> String {
    format!(
        "      mode: SIMPLE\n      serverCertificate: \"{}\"\n      privateKey: \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display()
    )
}

fn mutual_tls(pki: &Pki) -> String {
    format!(
        "      mode: MUTUAL\n      serverCertificate: \"{}\"\n      privateKey: \"{}\"\n      caCertificates: \"{}\"\n",
        pki.server_cert.display(),
        pki.server_key.display(),
        pki.ca.display()
    )
}

/// A TLS server on port 443 in PASSTHROUGH mode (no certificate at all) and
/// a VirtualService `tls:` route by SNI to `backend`.
fn passthrough_config(backend_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
  - port:
      number: 443
      name: tls
      protocol: TLS
    hosts:
    - {HOST}
    tls:
      mode: PASSTHROUGH
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
  namespace: default
spec:
  hosts:
  - {HOST}
  gateways:
  - ingress
  tls:
  - match:
    - port: 443
      sniHosts:
      - {HOST}
    route:
    - destination:
        host: 127.0.0.1
        port:
          number: {backend_port}
"#
    )
}

// ---------------------------------------------------------------------------
// meshgate
// ---------------------------------------------------------------------------

struct Meshgate {
    child: Child,
    /// Where the Gateway's port 443 listens.
    gateway: SocketAddr,
    /// Prometheus listener.
    stats: SocketAddr,
    log: PathBuf,
}

impl Meshgate {
    /// Writes `yaml` and a bootstrap file rebinding config port 443 to a
    /// free loopback port, runs `meshgate run` on them (every other
    /// listener on a fresh loopback port too) and waits for
    /// `/healthz/ready` to say 200 and the Gateway port to accept.
    ///
    /// Ports are picked free and then handed to meshgate, so another
    /// process (often a client's ephemeral source port) can take one in
    /// between; then meshgate is started again on fresh ports.
    fn start(dir: &Path, yaml: &str) -> Meshgate {
        let config = dir.join("istio.yaml");
        write_file(&config, yaml);
        let mut last = String::new();
        for attempt in 1..=5 {
            match Meshgate::try_start(dir, &config, yaml, attempt) {
                Ok(mg) => return mg,
                Err(StartError::PortTaken(report)) => last = report,
                Err(StartError::Fatal(report)) => panic!("{report}"),
            }
        }
        panic!("meshgate could not bind its ports in 5 attempts; last:\n{last}");
    }

    fn try_start(
        dir: &Path,
        config: &Path,
        yaml: &str,
        attempt: u32,
    ) -> Result<Meshgate, StartError> {
        let gateway = free_addr();
        let bootstrap = dir.join("bootstrap.yaml");
        write_file(
            &bootstrap,
            &format!("portMap:\n  443: \"{gateway}\"\nhandshakeTimeout: 2s\n"),
        );
        let outbound = free_addr();
        let admin = free_addr();
        let stats = free_addr();
        let ready = free_addr();
        let log = dir.join(format!("meshgate-{attempt}.log"));
        let log_file = fs::File::create(&log).expect("meshgate log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .arg("--bootstrap")
            .arg(&bootstrap)
            .arg("--outbound-addr")
            .arg(outbound.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--stats-addr")
            .arg(stats.to_string())
            .arg("--ready-addr")
            .arg(ready.to_string())
            .arg("--log-level")
            .arg("debug")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log fd"))
            .stderr(log_file);
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn meshgate: {e}"));
        let mut mg = Meshgate {
            child,
            gateway,
            stats,
            log,
        };

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = mg.child.try_wait().expect("try_wait meshgate") {
                let log = tail(&mg.log, 6000);
                let report = format!(
                    "meshgate exited before becoming ready ({status}).\ncommand: {cmdline}\n--- istio.yaml ---\n{yaml}\n--- meshgate log ---\n{log}"
                );
                return Err(if log.contains("Address already in use") {
                    StartError::PortTaken(report)
                } else {
                    StartError::Fatal(report)
                });
            }
            // Ready, and really this meshgate: a port picked free may have
            // gone to another test's meshgate in between (then ours exits
            // and is retried above), so its admin endpoint must name our
            // config file. Listeners serve only once all are bound.
            let last = match http_get(ready, "/healthz/ready") {
                Ok((200, _)) => match http_get(admin, "/config_dump") {
                    Ok((200, dump)) if dump.contains(&*config.to_string_lossy()) => {
                        match TcpStream::connect_timeout(&gateway, Duration::from_millis(500)) {
                            Ok(_) => return Ok(mg),
                            Err(e) => format!("ready, but gateway port {gateway}: {e}"),
                        }
                    }
                    Ok((code, _)) => {
                        format!("ready, but /config_dump on {admin} is not ours (HTTP {code})")
                    }
                    Err(e) => format!("ready, but /config_dump on {admin}: {e}"),
                },
                Ok((code, _)) => format!("HTTP {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                return Err(StartError::Fatal(format!(
                    "meshgate not ready within 20s (last: {last}).\ncommand: {cmdline}\n--- meshgate log ---\n{}",
                    tail(&mg.log, 6000)
                )));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn port(&self) -> u16 {
        self.gateway.port()
    }

    /// `https://service.internal.test:<port><path>`.
    fn url(&self, path: &str) -> String {
        format!("https://{HOST}:{}{path}", self.port())
    }

    /// curl's `--resolve` pinning `HOST` to the Gateway's loopback address.
    fn resolve(&self) -> String {
        format!("{HOST}:{}:127.0.0.1", self.port())
    }

    fn diagnostics(&self) -> String {
        format!("--- meshgate log ---\n{}", tail(&self.log, 6000))
    }

    /// `/stats/prometheus`.
    fn prometheus(&self) -> String {
        match http_get(self.stats, "/stats/prometheus") {
            Ok((200, body)) => body,
            other => panic!(
                "stats endpoint did not answer 200: {other:?}\n{}",
                self.diagnostics()
            ),
        }
    }
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// Tests
//
// The echo service runs on this test's tokio runtime (multi-threaded, so it
// keeps serving while the test body blocks on the outside programs).
// ---------------------------------------------------------------------------

/// SIMPLE termination: curl verifies meshgate's certificate for `HOST`
/// against the test CA; the app sees plain HTTP with `x-forwarded-proto:
/// https` and no client-supplied XFCC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_curl_https_to_echo() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let (ca, resolve) = (path_str(&pki.ca), mg.resolve());
    let url = mg.url("/x?y=1");
    let r = curl(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        "-H",
        "x-forwarded-client-cert: By=forged;Hash=00",
        &url,
    ]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.run.ok(), "curl failed\n{}", diag());
    assert_eq!(r.code, 200, "{}", diag());
    let v = r.echo();
    assert_eq!(v["method"], "GET", "{}", diag());
    assert_eq!(v["path"], "/x?y=1", "{}", diag());
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", diag());
    assert!(
        v["headers"]["host"]
            .as_str()
            .is_some_and(|h| h.starts_with(HOST)),
        "the app should see Host {HOST}\n{}",
        diag()
    );
    assert!(
        v["headers"].get("x-forwarded-client-cert").is_none(),
        "a client-sent XFCC must be removed (no client certificate here)\n{}",
        diag()
    );

    // HTTP/1.1 explicitly, too.
    let r = curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert_eq!(r.code, 200, "{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.http_version, "1.1", "{}", r.describe());
    assert_eq!(r.echo()["headers"]["x-forwarded-proto"], "https");
}

/// MUTUAL: with the client certificate the app gets an XFCC naming it;
/// without, the handshake is refused and curl fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_curl_client_cert_and_xfcc() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&mutual_tls(&pki), echo));

    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/x"));
    let (cert, key) = (path_str(&pki.client_cert), path_str(&pki.client_key));
    let r = curl(&[
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "--resolve",
        &resolve,
        &url,
    ]);
    let diag = |r: &Curl| format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.run.ok(), "curl with a client certificate\n{}", diag(&r));
    assert_eq!(r.code, 200, "{}", diag(&r));
    let v = r.echo();
    let xfcc = v["headers"]["x-forwarded-client-cert"]
        .as_str()
        .unwrap_or_else(|| panic!("the app should get x-forwarded-client-cert\n{}", diag(&r)))
        .to_string();
    assert!(
        xfcc.contains(&format!("Subject=\"CN={CLIENT_CN}\"")),
        "XFCC should name the client certificate's subject: {xfcc}\n{}",
        diag(&r)
    );
    assert!(xfcc.contains("Hash="), "XFCC should carry Hash=: {xfcc}");
    // The hash is the SHA-256 of the client certificate's DER.
    let der = run(
        "openssl",
        &["x509", "-in", &cert, "-noout", "-fingerprint", "-sha256"],
    );
    let fingerprint = der
        .stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap_or("")
        .replace(':', "")
        .to_ascii_lowercase();
    assert!(
        !fingerprint.is_empty() && xfcc.contains(&format!("Hash={fingerprint}")),
        "XFCC Hash should be the certificate's SHA-256 ({fingerprint}): {xfcc}\n{}",
        der.describe()
    );
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");

    // No client certificate: refused during the handshake, whatever HTTP
    // version curl would have spoken, and no request reaches the app.
    for version in ["--http2", "--http1.1"] {
        let r = curl(&[version, "--cacert", &ca, "--resolve", &resolve, &url]);
        eprintln!(
            "MUTUAL without a client certificate, curl {version} says (exit {:?}): {}",
            r.run.exit,
            r.run.stderr.trim()
        );
        assert!(
            !r.run.ok(),
            "curl {version} without a client certificate must fail\n{}",
            diag(&r)
        );
        assert_eq!(r.code, 0, "no HTTP response expected\n{}", diag(&r));
    }
    // With HTTP/1.1 curl reads before it writes again, so the TLS 1.3
    // `certificate_required` alert reliably reaches it.
    let r = curl(&["--http1.1", "--cacert", &ca, "--resolve", &resolve, &url]);
    assert!(
        r.run
            .stderr
            .to_ascii_lowercase()
            .contains("alert certificate required"),
        "curl should report the server's certificate_required alert\n{}",
        diag(&r)
    );
    // TLS 1.2: refused inside the handshake itself.
    let r = curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &url,
    ]);
    eprintln!(
        "MUTUAL without a client certificate over TLS 1.2, curl says (exit {:?}): {}",
        r.run.exit,
        r.run.stderr.trim()
    );
    assert!(
        !r.run.ok(),
        "TLS 1.2 without a client certificate\n{}",
        diag(&r)
    );
    assert_eq!(r.code, 0, "{}", diag(&r));
    assert!(
        r.run.stderr.to_ascii_lowercase().contains("alert"),
        "curl should report the server's alert\n{}",
        diag(&r)
    );
    let metrics = mg.prometheus();
    let refused = metric_value(
        &metrics,
        "meshgate_tls_handshake_failures_total",
        &[("direction", "inbound"), ("reason", "no_client_cert")],
    );
    assert_eq!(
        refused,
        Some(4.0),
        "each refused handshake should count as reason=no_client_cert\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}

/// MUTUAL without a client certificate, curl's default (ALPN h2): curl
/// sends its HTTP/2 preface right after its Finished, before the server has
/// checked the (empty) Certificate. Dropping the socket with the preface
/// unread would make the kernel answer with a RST that destroys the
/// `certificate_required` alert (curl: `getpeername() failed with errno
/// 107`); meshgate shuts down its write side and drains briefly instead, so
/// curl names the alert.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_refusal_alert_survives_early_client_data() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&mutual_tls(&pki), echo));
    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/x"));
    let mut said = Vec::new();
    for _ in 0..10 {
        let r = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
        assert!(!r.run.ok(), "{}", r.describe());
        said.push(r.run.stderr.trim().to_string());
    }
    let lost = said
        .iter()
        .filter(|s| !s.contains("alert certificate required"))
        .count();
    assert_eq!(
        lost,
        0,
        "curl should name the certificate_required alert every time; {lost}/10 did not:\n{}\n{}",
        said.join("\n"),
        mg.diagnostics()
    );
}

/// curl `--http2`: ALPN h2 end to end with the client; the request reaches
/// the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_http2() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let (ca, resolve, url) = (path_str(&pki.ca), mg.resolve(), mg.url("/h2/path"));
    let r = curl(&["--http2", "--cacert", &ca, "--resolve", &resolve, &url]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.code, 200, "{}", diag());
    assert_eq!(r.http_version, "2", "curl should report HTTP/2\n{}", diag());
    let v = r.echo();
    assert_eq!(v["path"], "/h2/path", "{}", diag());
    assert_eq!(v["headers"]["x-forwarded-proto"], "https", "{}", diag());
}

/// `openssl s_client`: a verified handshake for `HOST`; an unknown SNI and
/// no SNI at all are refused with an alert (no `*` server here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_s_client_sni() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));
    let connect = mg.gateway.to_string();
    let ca = path_str(&pki.ca);

    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-brief",
        ],
    );
    let diag = |r: &Run| format!("{}\n{}", r.describe(), mg.diagnostics());
    let out = r.all();
    assert!(r.ok(), "s_client with SNI {HOST}\n{}", diag(&r));
    assert!(
        out.contains("CONNECTION ESTABLISHED"),
        "handshake should complete\n{}",
        diag(&r)
    );
    assert!(
        out.contains("Protocol version: TLSv1.3") || out.contains("Protocol version: TLSv1.2"),
        "negotiated protocol should be shown\n{}",
        diag(&r)
    );
    assert!(
        out.contains("Verification: OK"),
        "meshgate's certificate should verify against the test CA\n{}",
        diag(&r)
    );
    assert!(
        out.contains(&format!("CN = {HOST}")) || out.contains(&format!("CN={HOST}")),
        "the peer certificate should be the one for {HOST}\n{}",
        diag(&r)
    );

    // `-brief` leaves ALPN out; the full report names it.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-alpn",
            "h2,http/1.1",
        ],
    );
    assert!(
        r.ok() && r.all().contains("ALPN protocol: h2"),
        "ALPN should pick h2 when offered\n{}",
        diag(&r)
    );

    // An SNI no server serves: an alert, never another host's certificate.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            "unknown.test",
            "-CAfile",
            &ca,
            "-brief",
        ],
    );
    let out = r.all();
    eprintln!("s_client -servername unknown.test says:\n{}", out.trim());
    assert!(!r.ok(), "unknown SNI must fail\n{}", diag(&r));
    assert!(
        !out.contains("CONNECTION ESTABLISHED"),
        "no handshake for an unknown SNI\n{}",
        diag(&r)
    );
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("unrecognized name") || lower.contains("alert"),
        "openssl should report the server's alert\n{}",
        diag(&r)
    );
    assert!(
        !out.contains(&format!("CN = {HOST}")),
        "the certificate for {HOST} must not be shown to another SNI\n{}",
        diag(&r)
    );

    // No SNI at all, and no `*` server: refused too.
    let r = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-noservername",
            "-CAfile",
            &ca,
            "-brief",
        ],
    );
    let out = r.all();
    eprintln!("s_client -noservername says:\n{}", out.trim());
    assert!(!r.ok(), "no SNI must fail\n{}", diag(&r));
    assert!(
        !out.contains("CONNECTION ESTABLISHED"),
        "no handshake without SNI\n{}",
        diag(&r)
    );
    assert!(
        out.to_ascii_lowercase().contains("alert"),
        "openssl should report the server's alert\n{}",
        diag(&r)
    );
    let metrics = mg.prometheus();
    assert_eq!(
        metric_value(
            &metrics,
            "meshgate_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "unknown_sni")],
        ),
        Some(2.0),
        "both refusals should count as reason=unknown_sni\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}

/// h2load: 200 requests over 4 HTTP/2 connections, 10 streams each, all 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn h2load_many_streams() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    // The URI's host is the SNI and :authority; --connect-to says where to
    // connect. (h2load does not verify the certificate.)
    let connect_to = mg.gateway.to_string();
    let url = mg.url("/load");
    let r = run(
        "h2load",
        &[
            "-n",
            "200",
            "-c",
            "4",
            "-m",
            "10",
            "--connect-to",
            &connect_to,
            &url,
        ],
    );
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert!(r.ok(), "h2load failed\n{}", diag());
    assert!(
        r.stdout.contains("Application protocol: h2"),
        "h2load should negotiate h2\n{}",
        diag()
    );
    assert!(
        r.stdout.contains("200 succeeded, 0 failed, 0 errored"),
        "all 200 requests should succeed\n{}",
        diag()
    );
    assert!(
        r.stdout
            .contains("status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx"),
        "all 200 responses should be 2xx\n{}",
        diag()
    );
}

/// PASSTHROUGH: meshgate has no certificate; it routes the client's TLS by
/// SNI to nginx, and curl verifies nginx's own certificate end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_curl_to_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    // nginx's certificate comes from a CA meshgate never sees.
    let backend_ca = DevCa::new("nginx backend CA");
    let backend_ca_path = backend_ca
        .write_cert(tmp.path(), "backend-ca.pem")
        .expect("write backend CA");
    let (cert, key) = backend_ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(tmp.path(), "nginx-server")
        .expect("write nginx cert");
    let nginx = Nginx::start(tmp.path(), HOST, &cert, &key, None);
    let yaml = passthrough_config(nginx.port);
    assert!(
        !yaml.contains(".crt") && !yaml.contains(".key") && !yaml.contains(".pem"),
        "the PASSTHROUGH config must not name any certificate"
    );
    let mg = Meshgate::start(tmp.path(), &yaml);

    let (ca, resolve, url) = (path_str(&backend_ca_path), mg.resolve(), mg.url("/pt?q=1"));
    let r = curl(&["--cacert", &ca, "--resolve", &resolve, &url]);
    let diag = |r: &Curl| {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert!(
        r.run.ok(),
        "curl through PASSTHROUGH, trusting nginx's CA\n{}",
        diag(&r)
    );
    assert_eq!(r.code, 200, "{}", diag(&r));
    assert!(
        r.body.contains("hello from nginx"),
        "not nginx's body\n{}",
        diag(&r)
    );
    assert!(
        r.body.contains(&format!("sni={HOST} ")),
        "nginx should see the client's own SNI\n{}",
        diag(&r)
    );
    assert!(r.body.contains("uri=/pt?q=1"), "{}", diag(&r));
    assert!(
        nginx.access_log().contains("GET /pt?q=1"),
        "the request should reach nginx\n{}",
        diag(&r)
    );

    // Trusting an unrelated CA instead, curl must reject what it receives:
    // nginx's certificate, untouched.
    let other = DevCa::new("unrelated CA")
        .write_cert(tmp.path(), "other-ca.pem")
        .expect("write other CA");
    let other = path_str(&other);
    let r = curl(&["--cacert", &other, "--resolve", &resolve, &url]);
    assert_eq!(
        r.run.exit,
        Some(60),
        "curl should refuse nginx's certificate when trusting another CA (exit 60)\n{}",
        diag(&r)
    );

    // openssl sees nginx's certificate, issued by the backend CA.
    let connect = mg.gateway.to_string();
    let s = run(
        "openssl",
        &[
            "s_client",
            "-connect",
            &connect,
            "-servername",
            HOST,
            "-CAfile",
            &ca,
            "-verify_return_error",
            "-brief",
        ],
    );
    assert!(
        s.ok() && s.all().contains("Verification: OK"),
        "s_client through PASSTHROUGH should verify against nginx's CA\n{}\n{}",
        s.describe(),
        mg.diagnostics()
    );
}

/// Plain HTTP on the TLS port: a readable 400 instead of a reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_tls_port_gets_400() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let echo = echo_service().await;
    let mg = Meshgate::start(tmp.path(), &terminating_config(&simple_tls(&pki), echo));

    let url = format!("http://{}/", mg.gateway);
    let r = curl(&[&url]);
    let diag = || format!("{}\n{}", r.describe(), mg.diagnostics());
    assert_eq!(r.code, 400, "plain HTTP to the TLS port\n{}", diag());
    assert!(
        r.body.contains("TLS"),
        "the 400 body should say the port expects TLS\n{}",
        diag()
    );
    assert!(
        r.headers
            .to_ascii_lowercase()
            .contains("x-meshgate-error: not_tls"),
        "x-meshgate-error: not_tls expected\n{}",
        diag()
    );
    let metrics = mg.prometheus();
    assert_eq!(
        metric_value(
            &metrics,
            "meshgate_tls_handshake_failures_total",
            &[("direction", "inbound"), ("reason", "not_tls")],
        ),
        Some(1.0),
        "plain HTTP should count as reason=not_tls\n--- /stats/prometheus ---\n{metrics}\n{}",
        mg.diagnostics()
    );
}
