//! Interop tests: the real `meshgate` binary between real outside programs.
//!
//! * `curl` plays the application, talking plain HTTP (or CONNECT) to
//!   meshgate's outbound listener;
//! * `nginx` plays the external HTTPS service that meshgate originates TLS to.
//!
//! Every test gets its own tempdir (certificates, Istio YAML, nginx prefix)
//! and its own free loopback ports, so the tests can run in parallel.
//! nginx and curl are required: if either is missing or nginx cannot start,
//! the test fails with the reason (it is never silently skipped).

use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

mod common;
use common::nginx::Nginx;
use common::{free_addr, metric_value, read_lossy, tail, write_file};

const HOST: &str = "api.external.test";
const CLIENT_CN: &str = "meshgate-interop-client";

// ---------------------------------------------------------------------------
// Ports and small helpers
// ---------------------------------------------------------------------------

/// Minimal HTTP/1.1 GET returning only the status code (used for readiness).
fn http_status(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        let n = s.read(&mut buf[got..])?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let head = String::from_utf8_lossy(&buf[..got]);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head:?}")))
}

// ---------------------------------------------------------------------------
// Certificates (rcgen)
// ---------------------------------------------------------------------------

struct Pki {
    /// CA that signed nginx's server cert and meshgate's client cert.
    ca: PathBuf,
    /// A second CA that signed nothing used here.
    other_ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshgate interop");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

fn leaf_params(cn: &str, dns: &str, eku: ExtendedKeyUsagePurpose) -> CertificateParams {
    let mut params = CertificateParams::new(vec![dns.to_string()]).expect("leaf SAN");
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshgate interop");
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![eku];
    params.use_authority_key_identifier_extension = true;
    params
}

impl Pki {
    fn generate(dir: &Path) -> Pki {
        // The CA that matters.
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_p = ca_params("meshgate interop CA");
        let ca_cert = ca_p.self_signed(&ca_key).expect("ca self-sign");
        let issuer = Issuer::new(ca_p, ca_key);

        // An unrelated CA, same shape, different key.
        let other_key = KeyPair::generate().expect("other ca key");
        let other_cert = ca_params("meshgate interop UNRELATED CA")
            .self_signed(&other_key)
            .expect("other ca self-sign");

        let server_key = KeyPair::generate().expect("server key");
        let server_cert = leaf_params(HOST, HOST, ExtendedKeyUsagePurpose::ServerAuth)
            .signed_by(&server_key, &issuer)
            .expect("server cert");

        let client_key = KeyPair::generate().expect("client key");
        let client_cert = leaf_params(
            CLIENT_CN,
            "client.meshgate.test",
            ExtendedKeyUsagePurpose::ClientAuth,
        )
        .signed_by(&client_key, &issuer)
        .expect("client cert");

        let pki = Pki {
            ca: dir.join("ca.pem"),
            other_ca: dir.join("other-ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server-key.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
        };
        write_file(&pki.ca, &ca_cert.pem());
        write_file(&pki.other_ca, &other_cert.pem());
        write_file(&pki.server_cert, &server_cert.pem());
        write_file(&pki.server_key, &server_key.serialize_pem());
        write_file(&pki.client_cert, &client_cert.pem());
        write_file(&pki.client_key, &client_key.serialize_pem());
        pki
    }
}

// ---------------------------------------------------------------------------
// meshgate
// ---------------------------------------------------------------------------

struct Meshgate {
    child: Child,
    outbound: SocketAddr,
    stats: SocketAddr,
    log: PathBuf,
}

impl Meshgate {
    /// Runs `meshgate run` with the given config paths and extra flags, on
    /// four fresh loopback ports, and waits for `/healthz/ready` to say 200.
    fn start(dir: &Path, configs: &[&Path], extra: &[&str]) -> Meshgate {
        let outbound = free_addr();
        let admin = free_addr();
        let stats = free_addr();
        let ready = free_addr();
        let log = dir.join("meshgate.log");
        let log_file = fs::File::create(&log).expect("meshgate log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshgate"));
        cmd.arg("run");
        for c in configs {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--outbound-addr")
            .arg(outbound.to_string())
            .arg("--admin-addr")
            .arg(admin.to_string())
            .arg("--stats-addr")
            .arg(stats.to_string())
            .arg("--ready-addr")
            .arg(ready.to_string())
            .arg("--log-level")
            .arg("debug")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log fd"))
            .stderr(log_file);
        let cmdline = format!("{cmd:?}");
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn meshgate: {e}"));
        let mut mg = Meshgate {
            child,
            outbound,
            stats,
            log,
        };

        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = mg.child.try_wait().expect("try_wait meshgate") {
                panic!(
                    "meshgate exited before becoming ready ({status}).\ncommand: {cmdline}\n--- meshgate log ---\n{}",
                    tail(&mg.log, 6000)
                );
            }
            let last = match http_status(ready, "/healthz/ready") {
                Ok(200) => return mg,
                Ok(code) => format!("HTTP {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() > deadline {
                panic!(
                    "meshgate not ready within 20s (last /healthz/ready: {last}).\ncommand: {cmdline}\n--- meshgate log ---\n{}",
                    tail(&mg.log, 6000)
                );
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn proxy_url(&self) -> String {
        format!("http://{}", self.outbound)
    }

    fn prometheus(&self) -> String {
        let url = format!("http://{}/stats/prometheus", self.stats);
        let r = curl(&[&url]);
        assert_eq!(
            r.code,
            200,
            "stats endpoint did not answer 200\n{}\n{}",
            r.describe(),
            self.diagnostics()
        );
        r.body
    }

    fn diagnostics(&self) -> String {
        format!("--- meshgate log ---\n{}", tail(&self.log, 6000))
    }
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

struct CurlResult {
    cmdline: String,
    exit: Option<i32>,
    /// `%{http_code}`: the final response's status, 0 if there was none.
    code: u16,
    /// Every response head curl saw (`-D`), CONNECT's included.
    headers: String,
    body: String,
    stderr: String,
}

impl CurlResult {
    fn describe(&self) -> String {
        format!(
            "command: {}\nexit: {:?}  http_code: {}\n--- headers ---\n{}--- body ---\n{}\n--- stderr ---\n{}",
            self.cmdline, self.exit, self.code, self.headers, self.body, self.stderr
        )
    }

    /// Value of the last occurrence of header `name` (case-insensitive).
    fn header(&self, name: &str) -> Option<String> {
        self.headers
            .lines()
            .filter_map(|l| l.split_once(':'))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .next_back()
    }
}

/// Runs `curl -q -sS <args>`, capturing headers, body and status code.
/// Proxy environment variables are removed so only explicit `-x` counts.
fn curl(args: &[&str]) -> CurlResult {
    let dir = tempfile::tempdir().expect("curl tempdir");
    let hdr = dir.path().join("headers");
    let body = dir.path().join("body");
    let mut cmd = Command::new("curl");
    cmd.arg("-q")
        .arg("-sS")
        .arg("--max-time")
        .arg("30")
        .arg("-D")
        .arg(&hdr)
        .arg("-o")
        .arg(&body)
        .arg("-w")
        .arg("%{http_code}")
        .args(args);
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
    let cmdline = format!("curl -sS {}", args.join(" "));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run curl (install curl): {e}"));
    let code_text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    CurlResult {
        cmdline,
        exit: out.status.code(),
        code: code_text.parse().unwrap_or(0),
        headers: if hdr.exists() {
            read_lossy(&hdr)
        } else {
            String::new()
        },
        body: if body.exists() {
            read_lossy(&body)
        } else {
            String::new()
        },
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// Istio YAML
// ---------------------------------------------------------------------------

/// ServiceEntry for `api.external.test`: port 80 (HTTP, targetPort 443) with
/// a STATIC endpoint on 127.0.0.1 whose `ports` map sends `http` to
/// `http_port`. `extra_tls_port` additionally declares a TLS port named
/// `https` (same number on the endpoint), for CONNECT.
fn service_entry(http_port: u16, extra_tls_port: Option<u16>) -> String {
    let mut ports =
        String::from("  - number: 80\n    name: http\n    protocol: HTTP\n    targetPort: 443\n");
    let mut ep_ports = format!("      http: {http_port}\n");
    if let Some(p) = extra_tls_port {
        let _ = write!(
            ports,
            "  - number: {p}\n    name: https\n    protocol: TLS\n"
        );
        let _ = writeln!(ep_ports, "      https: {p}");
    }
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api-external
  namespace: default
spec:
  hosts:
  - {HOST}
  ports:
{ports}  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints:
  - address: 127.0.0.1
    ports:
{ep_ports}"#
    )
}

enum Tls<'a> {
    Simple {
        ca: &'a Path,
    },
    Mutual {
        ca: &'a Path,
        cert: &'a Path,
        key: &'a Path,
    },
}

/// DestinationRule originating TLS on port 80, as in Istio's
/// "Egress TLS Origination" task.
fn destination_rule(tls: Tls<'_>) -> String {
    let tls_block = match tls {
        Tls::Simple { ca } => format!(
            "        mode: SIMPLE\n        caCertificates: \"{}\"\n",
            ca.display()
        ),
        Tls::Mutual { ca, cert, key } => format!(
            "        mode: MUTUAL\n        clientCertificate: \"{}\"\n        privateKey: \"{}\"\n        caCertificates: \"{}\"\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
    };
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api-external
  namespace: default
spec:
  host: {HOST}
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
{tls_block}"#
    )
}

/// Writes the ServiceEntry and DestinationRule as one multi-document file.
fn write_config(dir: &Path, se: &str, dr: &str) -> PathBuf {
    let path = dir.join("istio.yaml");
    write_file(&path, &format!("{se}---\n{dr}"));
    path
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn simple_origination_curl_to_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(tmp.path(), HOST, &pki.server_cert, &pki.server_key, None);
    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, None),
        &destination_rule(Tls::Simple { ca: &pki.ca }),
    );
    let mg = Meshgate::start(tmp.path(), &[&cfg], &[]);
    let diag = || format!("{}\n{}", mg.diagnostics(), nginx.diagnostics());

    // Absolute-form, the way an app with http_proxy set talks.
    let url = format!("http://{HOST}/v1/items");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    assert_eq!(
        r.code,
        200,
        "absolute-form request\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains("hello from nginx"),
        "not nginx's body\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains(&format!("sni={HOST} ")),
        "nginx did not see SNI {HOST}\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains("proto=TLSv1.3 ") || r.body.contains("proto=TLSv1.2 "),
        "expected TLSv1.3 or TLSv1.2 to nginx\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains("uri=/v1/items"),
        "path not forwarded\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains("client_dn= "),
        "SIMPLE mode must not present a client certificate\n{}",
        r.describe()
    );

    // Origin-form with a Host header, the way a sidecar-captured app talks.
    let url = format!("{}/v1/items", mg.proxy_url());
    let host = format!("Host: {HOST}");
    let r = curl(&["-H", &host, &url]);
    assert_eq!(
        r.code,
        200,
        "origin-form request\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(
        r.body.contains("hello from nginx") && r.body.contains(&format!("sni={HOST} ")),
        "not nginx's body with SNI {HOST}\n{}\n{}",
        r.describe(),
        diag()
    );
    assert!(r.body.contains("uri=/v1/items"), "{}", r.describe());

    // Both requests really reached nginx.
    let access = nginx.access_log();
    assert_eq!(
        access.matches("GET /v1/items").count(),
        2,
        "nginx access log should hold both requests\n{}",
        diag()
    );
}

#[test]
fn mutual_origination_curl_to_nginx() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(
        tmp.path(),
        HOST,
        &pki.server_cert,
        &pki.server_key,
        Some(&pki.ca),
    );
    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, None),
        &destination_rule(Tls::Mutual {
            ca: &pki.ca,
            cert: &pki.client_cert,
            key: &pki.client_key,
        }),
    );
    let mg = Meshgate::start(tmp.path(), &[&cfg], &[]);

    let url = format!("http://{HOST}/v1/items");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    let diag = || {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert_eq!(r.code, 200, "MUTUAL origination\n{}", diag());
    assert!(r.body.contains("hello from nginx"), "{}", diag());
    assert!(
        r.body.contains(&format!("CN={CLIENT_CN}")),
        "nginx's $ssl_client_s_dn should name the client certificate\n{}",
        diag()
    );
    assert!(
        r.body.contains("verify=SUCCESS"),
        "nginx should have verified the client certificate\n{}",
        diag()
    );
    assert!(r.body.contains(&format!("sni={HOST} ")), "{}", diag());
}

/// nginx demands a client certificate but the DestinationRule says SIMPLE.
///
/// Observed behaviour (nginx 1.22 / OpenSSL 3, TLS 1.3 and 1.2 alike): nginx
/// does NOT abort the handshake. `ssl_verify_client on` makes OpenSSL send a
/// CertificateRequest but without SSL_VERIFY_FAIL_IF_NO_PEER_CERT, so the
/// handshake completes with an empty client Certificate and nginx answers
/// the HTTP request with `400 Bad Request` / "No required SSL certificate was
/// sent". From meshgate's point of view the TLS origination succeeded and
/// the upstream gave an HTTP answer, so the right thing is to relay that 400
/// as is: not a 503, and no `x-meshgate-error`, and no handshake-failure
/// count. (A server that aborts the handshake instead, e.g. with TLS 1.3's
/// `certificate_required` alert, is where `client_cert_required` applies.)
#[test]
fn mutual_required_but_simple_configured() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(
        tmp.path(),
        HOST,
        &pki.server_cert,
        &pki.server_key,
        Some(&pki.ca),
    );

    // First, nginx's own behaviour without meshgate: curl with no client cert.
    let direct_url = format!("https://{HOST}:{}/v1/items", nginx.port);
    let resolve = format!("{HOST}:{}:127.0.0.1", nginx.port);
    let ca = pki.ca.display().to_string();
    let direct = curl(&["--cacert", &ca, "--resolve", &resolve, &direct_url]);
    assert_eq!(
        direct.code,
        400,
        "precondition: nginx answers a certificate-less client with HTTP 400\n{}\n{}",
        direct.describe(),
        nginx.diagnostics()
    );
    assert!(
        direct.body.contains("No required SSL certificate was sent"),
        "{}",
        direct.describe()
    );

    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, None),
        &destination_rule(Tls::Simple { ca: &pki.ca }),
    );
    let mg = Meshgate::start(tmp.path(), &[&cfg], &[]);

    let url = format!("http://{HOST}/v1/items");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    let diag = || {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert_eq!(
        r.code,
        400,
        "meshgate should relay nginx's 400 (the TLS handshake itself succeeds)\n{}",
        diag()
    );
    assert!(
        r.body.contains("No required SSL certificate was sent"),
        "body should be nginx's own 400 page\n{}",
        diag()
    );
    assert_eq!(
        r.header("x-meshgate-error"),
        None,
        "an upstream HTTP answer is not a meshgate error\n{}",
        diag()
    );
}

#[test]
fn unknown_ca_gives_503() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(tmp.path(), HOST, &pki.server_cert, &pki.server_key, None);
    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, None),
        &destination_rule(Tls::Simple { ca: &pki.other_ca }),
    );
    let mg = Meshgate::start(tmp.path(), &[&cfg], &[]);

    let url = format!("http://{HOST}/v1/items");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    let diag = || {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert_eq!(r.code, 503, "untrusted upstream certificate\n{}", diag());
    assert_eq!(
        r.header("x-meshgate-error").as_deref(),
        Some("unknown_ca"),
        "x-meshgate-error\n{}",
        diag()
    );
    assert!(
        !r.body.contains("hello from nginx"),
        "nginx's body must not leak through\n{}",
        diag()
    );
    assert!(
        !nginx.access_log().contains("GET /v1/items"),
        "no HTTP request should reach nginx\n{}",
        diag()
    );

    let metrics = mg.prometheus();
    let value = metric_value(
        &metrics,
        "meshgate_tls_handshake_failures_total",
        &[("direction", "outbound"), ("reason", "unknown_ca")],
    );
    assert_eq!(
        value,
        Some(1.0),
        "meshgate_tls_handshake_failures_total{{direction=\"outbound\",reason=\"unknown_ca\"}} should be 1\n--- /stats/prometheus ---\n{metrics}\n{}",
        diag()
    );
}

#[test]
fn connect_tunnel_through_meshgate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(tmp.path(), HOST, &pki.server_cert, &pki.server_key, None);
    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, Some(nginx.port)),
        &destination_rule(Tls::Simple { ca: &pki.ca }),
    );
    let mg = Meshgate::start(
        tmp.path(),
        &[&cfg],
        &["--outbound-traffic-policy", "REGISTRY_ONLY"],
    );

    // curl does the TLS itself inside the tunnel and verifies nginx's
    // certificate against the test CA: meshgate only relays bytes.
    let url = format!("https://{HOST}:{}/v1/items", nginx.port);
    let ca = pki.ca.display().to_string();
    let r = curl(&["-p", "-x", &mg.proxy_url(), "--cacert", &ca, &url]);
    let diag = |r: &CurlResult| {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };
    assert_eq!(r.code, 200, "CONNECT tunnel\n{}", diag(&r));
    assert!(
        r.headers.lines().next().is_some_and(|l| l.contains(" 200")),
        "CONNECT should be answered 2xx\n{}",
        diag(&r)
    );
    assert!(r.body.contains("hello from nginx"), "{}", diag(&r));
    assert!(
        r.body.contains(&format!("sni={HOST} ")),
        "curl's own SNI should reach nginx\n{}",
        diag(&r)
    );
    assert!(r.body.contains("uri=/v1/items"), "{}", diag(&r));

    // Untouched bytes: trusting only the unrelated CA, curl must reject the
    // certificate it receives through the tunnel (nginx's, not one meshgate
    // made up). curl's exit code 60 = peer certificate cannot be authenticated.
    let other = pki.other_ca.display().to_string();
    let r = curl(&["-p", "-x", &mg.proxy_url(), "--cacert", &other, &url]);
    assert_eq!(
        r.exit,
        Some(60),
        "curl should refuse nginx's certificate when trusting another CA\n{}",
        diag(&r)
    );
}

#[test]
fn registry_only_refuses_unknown_host() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let nginx = Nginx::start(tmp.path(), HOST, &pki.server_cert, &pki.server_key, None);
    let cfg = write_config(
        tmp.path(),
        &service_entry(nginx.port, None),
        &destination_rule(Tls::Simple { ca: &pki.ca }),
    );
    let mg = Meshgate::start(
        tmp.path(),
        &[&cfg],
        &["--outbound-traffic-policy", "REGISTRY_ONLY"],
    );
    let diag = |r: &CurlResult| {
        format!(
            "{}\n{}\n{}",
            r.describe(),
            mg.diagnostics(),
            nginx.diagnostics()
        )
    };

    let r = curl(&["-x", &mg.proxy_url(), "http://not-registered.test/"]);
    assert_eq!(
        r.code,
        502,
        "unregistered host under REGISTRY_ONLY\n{}",
        diag(&r)
    );
    let body = r.body.to_ascii_lowercase();
    assert!(
        body.contains("not-registered.test")
            && (body.contains("registry") || body.contains("not registered")),
        "the 502 body should name the host and say it is not in the registry\n{}",
        diag(&r)
    );

    // The registered host still goes through on the same listener.
    let url = format!("http://{HOST}/");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    assert_eq!(
        r.code,
        200,
        "registered host under REGISTRY_ONLY\n{}",
        diag(&r)
    );
    assert!(r.body.contains("hello from nginx"), "{}", diag(&r));
}

// ---------------------------------------------------------------------------
// openssl s_server as the upstream
// ---------------------------------------------------------------------------

/// `openssl s_server -www` on a fresh loopback port with the interop
/// server certificate and `extra` flags; killed when dropped.
struct SServer {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl SServer {
    fn start(dir: &Path, pki: &Pki, extra: &[&str]) -> SServer {
        let port = free_addr().port();
        let log = dir.join("s_server.log");
        let out = fs::File::create(&log).expect("s_server log");
        let child = Command::new("openssl")
            .arg("s_server")
            .arg("-accept")
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(&pki.server_cert)
            .arg("-key")
            .arg(&pki.server_key)
            .arg("-www")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone fd"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run openssl s_server: {e}"));
        let mut s = SServer { child, port, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while read_lossy(&s.log).lines().all(|l| l.trim() != "ACCEPT") {
            if let Some(status) = s.child.try_wait().expect("try_wait s_server") {
                panic!(
                    "openssl s_server exited ({status}):\n{}",
                    read_lossy(&s.log)
                );
            }
            assert!(
                Instant::now() < deadline,
                "openssl s_server not accepting within 10 s:\n{}",
                read_lossy(&s.log)
            );
            sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for SServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Requests `http://HOST/v1/items` through meshgate, which originates TLS
/// (SIMPLE, the interop CA) to `upstream`; expects a 503 naming `reason`,
/// counted once as an outbound handshake failure with that reason.
fn assert_upstream_refused(tmp: &Path, pki: &Pki, upstream: &SServer, reason: &str) {
    let cfg = write_config(
        tmp,
        &service_entry(upstream.port, None),
        &destination_rule(Tls::Simple { ca: &pki.ca }),
    );
    let mg = Meshgate::start(tmp, &[&cfg], &[]);
    let url = format!("http://{HOST}/v1/items");
    let r = curl(&["-x", &mg.proxy_url(), &url]);
    let diag = || {
        format!(
            "{}\n{}\n--- s_server ---\n{}",
            r.describe(),
            mg.diagnostics(),
            read_lossy(&upstream.log)
        )
    };
    assert_eq!(r.code, 503, "{}", diag());
    assert_eq!(
        r.header("x-meshgate-error").as_deref(),
        Some(reason),
        "x-meshgate-error\n{}",
        diag()
    );
    let metrics = mg.prometheus();
    let value = metric_value(
        &metrics,
        "meshgate_tls_handshake_failures_total",
        &[("direction", "outbound"), ("reason", reason)],
    );
    assert_eq!(
        value,
        Some(1.0),
        "outbound {reason} counted once\n--- /stats/prometheus ---\n{metrics}\n{}",
        diag()
    );
}

/// A TLS 1.2 server that requires a client certificate aborts the
/// handshake with a bare `handshake_failure` alert when none comes; meshgate
/// saw the CertificateRequest, so it says what is missing.
#[test]
fn tls12_upstream_requiring_a_client_certificate_is_client_cert_required() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let upstream = SServer::start(
        tmp.path(),
        &pki,
        &[
            "-tls1_2",
            "-Verify",
            "1",
            "-CAfile",
            &pki.ca.display().to_string(),
        ],
    );
    assert_upstream_refused(tmp.path(), &pki, &upstream, "client_cert_required");
}

/// An upstream that accepts only CBC suites (which meshgate does not
/// offer) refuses the ClientHello: `no_shared_cipher`.
#[test]
fn cipher_mismatch_with_an_upstream_is_no_shared_cipher() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = Pki::generate(tmp.path());
    let upstream = SServer::start(
        tmp.path(),
        &pki,
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA:ECDHE-RSA-AES128-SHA:AES128-SHA",
        ],
    );
    assert_upstream_refused(tmp.path(), &pki, &upstream, "no_shared_cipher");
}
