//! The real `meshgate` binary: `validate`, `run` (exit codes, readiness,
//! system roots from SSL_CERT_FILE), `demo --once` and `--help`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig, fetch};

mod common;
use common::binary::{meshgate, run_with_timeout, show, text};

const HOST: &str = "api.external.test";

/// A free loopback port (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// ServiceEntry (port 80 → the stand-in) and a DestinationRule with the
/// given tls lines (8-space indented) at port 80.
fn egress_yaml(upstream_port: u16, tls: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
spec:
  hosts: [{HOST}]
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
  host: {HOST}
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
{tls}
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

// === validate ===

#[test]
fn validate_good_config_prints_one_ok_line() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("cli CA")
        .write_cert(dir.path(), "ca.crt")
        .unwrap();
    let yaml = egress_yaml(
        8443,
        &format!(
            "        mode: SIMPLE\n        caCertificates: {}",
            ca.display()
        ),
    );
    let good = write(dir.path(), "good.yaml", &yaml);
    let out = run_with_timeout(
        {
            let mut c = meshgate();
            c.args(["validate", "--config"]).arg(&good);
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", show(&out));
    assert!(lines[0].starts_with("ok:"), "{}", show(&out));
    assert!(
        lines[0].contains("1 ServiceEntry") && lines[0].contains("1 DestinationRule"),
        "{}",
        show(&out)
    );
}

/// Three broken documents in one file of a config directory: a parse-level
/// problem (unknown tls.mode) and two compile-level ones (port out of
/// range, DestinationRule without host).
const BROKEN: &str = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: bad-mode
spec:
  host: api.example.com
  trafficPolicy:
    tls:
      mode: SIMPEL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: bad-port
spec:
  hosts: [api.example.com]
  ports:
  - number: 70000
    name: http
    protocol: HTTP
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: no-host
spec:
  trafficPolicy:
    tls:
      mode: SIMPLE
"#;

fn validate_dir(dir: &Path) -> Output {
    let mut c = meshgate();
    c.args(["validate", "--config"]).arg(dir);
    run_with_timeout(c, Duration::from_secs(30))
}

/// `error:` lines of stderr.
fn error_lines(out: &Output) -> Vec<String> {
    text(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error: "))
        .map(str::to_string)
        .collect()
}

/// Asserts one `error:` line is `file:line: Kind/ns/name: field: reason`.
fn assert_error_line(
    lines: &[String],
    file: &Path,
    line: usize,
    resource: &str,
    field: &str,
    reason: &str,
    out: &Output,
) {
    let prefix = format!("error: {}:{line}: {resource}: {field}: ", file.display());
    let found = lines.iter().find(|l| l.starts_with(&prefix));
    let Some(l) = found else {
        panic!("no error line starting {prefix:?}\n{}", show(out));
    };
    assert!(
        l.contains(reason),
        "{l:?} should say {reason:?}\n{}",
        show(out)
    );
}

#[test]
fn validate_directory_reports_every_broken_document() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "broken.yaml", BROKEN);
    let out = validate_dir(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(text(&out.stdout).trim().is_empty(), "{}", show(&out));
    let lines = error_lines(&out);
    assert_error_line(
        &lines,
        &file,
        9,
        "DestinationRule/default/bad-mode",
        "spec.trafficPolicy.tls.mode",
        "SIMPEL",
        &out,
    );
    assert_error_line(
        &lines,
        &file,
        11,
        "ServiceEntry/default/bad-port",
        "spec.ports[0].number",
        "70000",
        &out,
    );
    assert_error_line(
        &lines,
        &file,
        23,
        "DestinationRule/default/no-host",
        "spec.host",
        "required",
        &out,
    );
    assert_eq!(lines.len(), 3, "one error line per problem\n{}", show(&out));
}

#[test]
fn validate_directory_reports_every_compile_error() {
    // Same check with only compile-level problems (the documents all parse).
    let dir = tempfile::tempdir().unwrap();
    let yaml = BROKEN.replace("mode: SIMPEL", "mode: SIMPLE").replace(
        "  hosts: [api.example.com]\n  ports:\n  - number: 70000",
        "  hosts: []\n  ports:\n  - number: 70000",
    );
    let file = write(dir.path(), "broken.yaml", &yaml);
    let out = validate_dir(dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let lines = error_lines(&out);
    assert_error_line(
        &lines,
        &file,
        11,
        "ServiceEntry/default/bad-port",
        "spec.hosts",
        "at least one host",
        &out,
    );
    assert_error_line(
        &lines,
        &file,
        11,
        "ServiceEntry/default/bad-port",
        "spec.ports[0].number",
        "70000",
        &out,
    );
    assert_error_line(
        &lines,
        &file,
        23,
        "DestinationRule/default/no-host",
        "spec.host",
        "required",
        &out,
    );
    assert_eq!(lines.len(), 3, "one error line per problem\n{}", show(&out));
    assert!(text(&out.stderr).contains("3 error(s)"), "{}", show(&out));
}

#[test]
fn validate_the_unmodified_istio_egress_task() {
    let example =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/egress-tls-origination.yaml");
    let mut c = meshgate();
    c.args(["validate", "--config"]).arg(&example);
    let out = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).starts_with("ok:"), "{}", show(&out));
}

// === run: refused configuration ===

fn run_args(c: &mut Command, config: &Path) {
    c.arg("run").arg("--config").arg(config);
    for flag in [
        "--outbound-addr",
        "--admin-addr",
        "--stats-addr",
        "--ready-addr",
    ] {
        c.arg(flag).arg("127.0.0.1:0");
    }
}

#[test]
fn run_with_a_config_that_does_not_load_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "broken.yaml", BROKEN);
    let mut c = meshgate();
    run_args(&mut c, &file);
    let out = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("error: ")
            && stderr.contains("broken.yaml:9")
            && stderr.contains("DestinationRule/default/bad-mode")
            && stderr.contains("configuration refused"),
        "{}",
        show(&out)
    );
}

#[test]
fn run_strict_with_unreadable_credentials_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.crt");
    let yaml = egress_yaml(
        8443,
        &format!(
            "        mode: SIMPLE\n        caCertificates: {}",
            missing.display()
        ),
    );
    let file = write(dir.path(), "config.yaml", &yaml);
    let mut c = meshgate();
    run_args(&mut c, &file);
    c.arg("--strict");
    let out = run_with_timeout(c, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("DestinationRule/default/external")
            && stderr.contains("cannot read")
            && stderr.contains("no-such-ca.crt"),
        "{}",
        show(&out)
    );
    // validate says the same: without --strict the credential is left out
    // (what uses it fails closed) and the rest would be served.
    let out = meshgate()
        .arg("validate")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stderr).contains("error: ") && text(&out.stderr).contains("no-such-ca.crt"));
    assert!(
        text(&out.stdout).contains("1 error(s): what they name is left out"),
        "{}",
        show(&out)
    );
    let out = meshgate()
        .arg("validate")
        .arg("--strict")
        .arg("-c")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
}

// === run: SIMPLE with the system roots from SSL_CERT_FILE ===

/// A `meshgate run` child, killed (by its own id) when dropped.
struct Running {
    child: Child,
    stderr: PathBuf,
    outbound: SocketAddr,
    ready: SocketAddr,
}

impl Running {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Polls `/healthz/ready` until 200, failing early if the process exits.
    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("meshgate exited early ({status}):\n{}", self.stderr());
            }
            if let Ok(r) = fetch(self.ready, "GET", "/healthz/ready", Some("localhost")).await
                && r.status == 200
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not ready within 20 s:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_run(dir: &Path, config: &Path, ssl_cert_file: &Path) -> Running {
    let (outbound, admin, stats, ready) = (free_addr(), free_addr(), free_addr(), free_addr());
    let stderr = dir.join("meshgate.stderr");
    let empty_cert_dir = dir.join("empty-cert-dir");
    std::fs::create_dir_all(&empty_cert_dir).unwrap();
    let child = meshgate()
        .arg("run")
        .arg("--config")
        .arg(config)
        .arg("--outbound-addr")
        .arg(outbound.to_string())
        .arg("--admin-addr")
        .arg(admin.to_string())
        .arg("--stats-addr")
        .arg(stats.to_string())
        .arg("--ready-addr")
        .arg(ready.to_string())
        .env("SSL_CERT_FILE", ssl_cert_file)
        .env("SSL_CERT_DIR", &empty_cert_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .expect("spawn meshgate run");
    Running {
        child,
        stderr,
        outbound,
        ready,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_without_ca_certificates_uses_ssl_cert_file() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("system roots stand-in CA");
    let ca_file = ca.write_cert(dir.path(), "system-ca.crt").unwrap();
    let leaf = ca.issue(&LeafSpec::server(&[HOST]));
    let up = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &egress_yaml(up.addr.port(), "        mode: SIMPLE"),
    );
    let mut p = spawn_run(dir.path(), &config, &ca_file);
    p.wait_ready().await;
    let r = fetch(p.outbound, "GET", "/access-check", Some(HOST))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}\n{}", r.body, p.stderr());
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], HOST);
    // One access log line per request at the default level.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !p.stderr().contains("path=/access-check") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = p.stderr();
    let line = log
        .lines()
        .find(|l| l.contains("path=/access-check"))
        .unwrap_or_else(|| panic!("no access log line:\n{log}"));
    for field in [
        "access",
        "method=GET",
        "status=200",
        "destination=",
        "upstream=127.0.0.1:",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert_eq!(
        up.last()
            .expect("the stand-in saw a handshake")
            .sni
            .as_deref(),
        Some(HOST)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_without_ca_certificates_refuses_an_unknown_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("upstream CA");
    let leaf = ca.issue(&LeafSpec::server(&[HOST]));
    let up = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    // The "system" bundle holds an unrelated CA only.
    let unrelated = DevCa::new("unrelated CA")
        .write_cert(dir.path(), "unrelated.crt")
        .unwrap();
    let config = write(
        dir.path(),
        "config.yaml",
        &egress_yaml(up.addr.port(), "        mode: SIMPLE"),
    );
    let mut p = spawn_run(dir.path(), &config, &unrelated);
    p.wait_ready().await;
    let r = fetch(p.outbound, "GET", "/", Some(HOST)).await.unwrap();
    assert_eq!(r.status, 503, "{}\n{}", r.body, p.stderr());
    assert_eq!(r.headers["x-meshgate-error"], "unknown_ca", "{}", r.body);
    assert_eq!(up.handshakes(), 0);
}

// === demo ===

#[test]
fn demo_once_prints_the_negotiated_tls() {
    let mut c = meshgate();
    c.args([
        "demo",
        "--once",
        "--outbound-addr",
        "127.0.0.1:0",
        "--ingress-addr",
        "127.0.0.1:0",
    ]);
    let out = run_with_timeout(c, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    for expected in [
        "TLSv1_3",
        "X25519MLKEM768",
        "SNI             api.external.com",
        "upstream TLS handshakes so far: 1",
        // The termination half: MUTUAL verified, identity passed to the app.
        "SNI             service.internal.com",
        "x-forwarded-proto        https",
        "Subject=\"CN=external-client.example.org\"",
        "without a client certificate: refused",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?}\n{}",
            show(&out)
        );
    }
}

#[test]
fn demo_leaves_no_keys_behind_when_it_fails() {
    let tmp = tempfile::tempdir().unwrap();
    // A port another socket holds: the demo fails after writing its keys.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut c = meshgate();
    c.env("TMPDIR", tmp.path()).args([
        "demo",
        "--once",
        "--outbound-addr",
        &held.local_addr().unwrap().to_string(),
        "--ingress-addr",
        "127.0.0.1:0",
    ]);
    let out = run_with_timeout(c, Duration::from_secs(60));
    assert_ne!(out.status.code(), Some(0), "{}", show(&out));
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{}", show(&out));
}

// === help ===

#[test]
fn help_exits_zero_and_documents_the_flags() {
    let out = run_with_timeout(
        {
            let mut c = meshgate();
            c.arg("--help");
            c
        },
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let top = text(&out.stdout);
    for cmd in ["run", "validate", "demo"] {
        assert!(top.contains(cmd), "top-level help lists {cmd}\n{top}");
    }
    for sub in ["run", "validate"] {
        let out = run_with_timeout(
            {
                let mut c = meshgate();
                c.args([sub, "--help"]);
                c
            },
            Duration::from_secs(30),
        );
        assert_eq!(out.status.code(), Some(0), "{}", show(&out));
        let help = text(&out.stdout);
        assert!(help.contains("--config"), "{sub} --help\n{help}");
        assert!(
            help.contains("--outbound-traffic-policy"),
            "{sub} --help\n{help}"
        );
        assert!(help.contains("REGISTRY_ONLY"), "{sub} --help\n{help}");
    }
}

/// An AuthorizationPolicy meshgate cannot enforce (CUSTOM: an external
/// authorizer) refuses the config with the resource, field and reason; an
/// enforced one validates.
#[test]
fn a_custom_authorization_policy_refuses_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |action: &str| {
        format!(
            "{}---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ext\n  namespace: default\nspec:\n  action: {action}\n  rules:\n  - {{}}\n",
            egress_yaml(8443, "        mode: SIMPLE")
        )
    };
    let validate = |file: &Path| {
        let mut c = meshgate();
        c.args(["validate", "--config"]).arg(file);
        run_with_timeout(c, Duration::from_secs(30))
    };
    let custom = write(
        dir.path(),
        "custom.yaml",
        &policy("CUSTOM\n  provider:\n    name: opa"),
    );
    let out = validate(&custom);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        error_lines(&out).iter().any(|l| l.contains("custom.yaml")
            && l.contains("AuthorizationPolicy/default/ext")
            && l.contains("spec.action")
            && l.contains("CUSTOM")),
        "{}",
        show(&out)
    );
    let deny = write(dir.path(), "deny.yaml", &policy("DENY"));
    let out = validate(&deny);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
}

/// Every configuration shipped under examples/ validates (the demo's
/// templates are `.tmpl` files, not configurations).
#[test]
fn every_example_validates() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let out = validate_dir(&examples);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).starts_with("ok:"), "{}", show(&out));
}
