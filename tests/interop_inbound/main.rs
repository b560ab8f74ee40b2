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

#[path = "../common/mod.rs"]
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
                return Err(
                    if log.contains("Address already in use")
                        || log.contains("is in use by another process")
                    {
                        StartError::PortTaken(report)
                    } else {
                        StartError::Fatal(report)
                    },
                );
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

mod curl;
mod tools;
