//! gRPC through meshgate with real gRPC peers (grpc-core, through Python's
//! `grpcio`): a gRPC server as the app behind an inbound TLS listener, and
//! a gRPC client with TLS calling through it. Unary and streaming calls,
//! metadata both ways, trailers (`grpc-status`, `grpc-message`, custom
//! trailing metadata) and a large message. grpc-core refuses a request
//! without `te: trailers`, so a passing call proves meshgate forwards it.
//!
//! The outbound direction: the app's gRPC client reaches a gRPC server
//! through the outbound listener's HTTP CONNECT (grpc-core's
//! `grpc.http_proxy`); the outbound listener speaks HTTP/1.1 only, so a
//! CONNECT tunnel is how a gRPC client uses it.
//!
//! Needs `python3` with `grpcio` (`.ci/run` installs it). Without it the
//! tests say why and pass, except under `CI=true`, where they fail.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{TestProxy, tempdir};

/// The name the client asks for (SNI and `:authority`).
const HOST: &str = "grpc.interop.test";

/// The app: a gRPC server with generic handlers (raw bytes, no codegen).
/// `/test.Echo/Echo` answers the request, with initial metadata and, as
/// trailing metadata, the request's `x-token` and the time left before
/// the call's deadline (from `grpc-timeout`);
/// `/test.Echo/Stream` answers each message of a stream, upper-cased;
/// `/test.Echo/Fail` ends with NOT_FOUND and a message. Prints its port.
const SERVER_PY: &str = r#"
import sys
from concurrent import futures
import grpc

def echo(request, context):
    md = dict(context.invocation_metadata())
    context.send_initial_metadata((("x-initial", "yes"),))
    remaining = context.time_remaining()
    context.set_trailing_metadata((
        ("x-token-seen", md.get("x-token", "")),
        ("x-time-remaining", "none" if remaining is None else "%.3f" % remaining),
    ))
    return request

def stream(requests, context):
    for r in requests:
        yield r.upper()

def fail(request, context):
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())

handler = grpc.method_handlers_generic_handler("test.Echo", {
    "Echo": grpc.unary_unary_rpc_method_handler(echo),
    "Stream": grpc.stream_stream_rpc_method_handler(stream),
    "Fail": grpc.unary_unary_rpc_method_handler(fail),
})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                     options=[("grpc.max_receive_message_length", 8 << 20),
                              ("grpc.max_send_message_length", 8 << 20)])
server.add_generic_rpc_handlers((handler,))
port = server.add_insecure_port("127.0.0.1:0")
server.start()
print(port, flush=True)
sys.stdin.read()  # runs until the test closes stdin (or is gone)
server.stop(0)
"#;

/// The client: `client.py TARGET MODE [CA_FILE] [PROXY]`. MODE `tls`
/// verifies the server against CA_FILE with the name `HOST`; `plain` is
/// h2c, through PROXY (`grpc.http_proxy`) when given. Prints one line per
/// check, `ok <name>` or `FAIL <name>: <why>`.
const CLIENT_PY: &str = r#"
import sys
import grpc

target, mode = sys.argv[1], sys.argv[2]
host = sys.argv[3]
options = [("grpc.max_receive_message_length", 8 << 20),
           ("grpc.max_send_message_length", 8 << 20),
           ("grpc.enable_retries", 0)]
if mode == "tls":
    creds = grpc.ssl_channel_credentials(root_certificates=open(sys.argv[4], "rb").read())
    options += [("grpc.ssl_target_name_override", host), ("grpc.default_authority", host)]
    channel = grpc.secure_channel(target, creds, options=options)
else:
    if len(sys.argv) > 4:
        options.append(("grpc.http_proxy", sys.argv[4]))
    channel = grpc.insecure_channel(target, options=options)

failed = False
def check(name, cond, why=""):
    global failed
    if cond:
        print("ok", name, flush=True)
    else:
        failed = True
        print("FAIL", name + ":", why, flush=True)

try:
    grpc.channel_ready_future(channel).result(timeout=10)
    check("channel ready", True)
except Exception as e:
    check("channel ready", False, repr(e))
    sys.exit(1)

echo = channel.unary_unary("/test.Echo/Echo")
try:
    resp, call = echo.with_call(b"hello through meshgate", timeout=10,
                                metadata=(("x-token", "abc123"),))
    check("unary echo", resp == b"hello through meshgate", repr(resp))
    check("unary status OK", call.code() == grpc.StatusCode.OK, str(call.code()))
    initial = dict(call.initial_metadata())
    check("initial metadata", initial.get("x-initial") == "yes", repr(initial))
    trailing = dict(call.trailing_metadata())
    check("trailing metadata", trailing.get("x-token-seen") == "abc123", repr(trailing))
    # grpc-timeout reached the server: it knows the call's deadline.
    remaining = trailing.get("x-time-remaining", "none")
    check("deadline propagated",
          remaining != "none" and 0 < float(remaining) <= 11, repr(remaining))
except grpc.RpcError as e:
    check("unary echo", False, "%s %s %r" % (e.code(), e.details(), e.debug_error_string()))

try:
    big = bytes(range(256)) * 8192  # 2 MiB: several flow-control windows
    resp = echo(big, timeout=20)
    check("large unary message", resp == big, "%d bytes back" % len(resp))
except grpc.RpcError as e:
    check("large unary message", False, "%s %s" % (e.code(), e.details()))

stream = channel.stream_stream("/test.Echo/Stream")
try:
    msgs = [b"one", b"two", b"three"] * 20
    got = list(stream(iter(msgs), timeout=10))
    check("bidi stream", got == [m.upper() for m in msgs], repr(got[:5]))
except grpc.RpcError as e:
    check("bidi stream", False, "%s %s" % (e.code(), e.details()))

fail = channel.unary_unary("/test.Echo/Fail")
try:
    fail(b"widget", timeout=10)
    check("error status in trailers", False, "the call succeeded")
except grpc.RpcError as e:
    check("error status in trailers",
          e.code() == grpc.StatusCode.NOT_FOUND and e.details() == "no such thing: widget",
          "%s %r" % (e.code(), e.details()))

channel.close()
sys.exit(1 if failed else 0)
"#;

/// The interpreter, or `None` (skip) outside CI; under CI a missing peer
/// fails the test.
fn python_or_skip(test: &str) -> Option<String> {
    common::python::python_or_skip(test, "grpcio", "import grpc; print(grpc.__version__)")
}

/// The Python gRPC server, stopped when dropped.
struct GrpcApp {
    child: Child,
    port: u16,
}

impl Drop for GrpcApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl GrpcApp {
    fn start(py: &str, dir: &Path) -> GrpcApp {
        let script = dir.join("grpc_server.py");
        std::fs::write(&script, SERVER_PY).unwrap();
        let mut child = Command::new(py)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python gRPC server");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut app = GrpcApp { child, port: 0 };
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the gRPC server prints its port within 20 s");
        app.port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the gRPC server printed {line:?}, not a port"));
        app
    }
}

/// Runs the Python client (at most 60 s); its report, and whether every
/// check passed.
async fn run_client(py: &str, dir: &Path, args: &[String]) -> (bool, String) {
    let script = dir.join("grpc_client.py");
    std::fs::write(&script, CLIENT_PY).unwrap();
    let mut cmd = Command::new("timeout");
    cmd.arg("60").arg(py).arg(&script).args(args);
    // The proxy is chosen explicitly where wanted; nothing from the
    // environment.
    for v in [
        "http_proxy",
        "https_proxy",
        "grpc_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("run the Python client"))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The checks the client must report as passed.
const CHECKS: &[&str] = &[
    "channel ready",
    "unary echo",
    "unary status OK",
    "initial metadata",
    "trailing metadata",
    "large unary message",
    "bidi stream",
    "error status in trailers",
    "deadline propagated",
];

fn assert_all_passed(what: &str, ok: bool, report: &str, diagnostics: &str) {
    for c in CHECKS {
        assert!(
            report.lines().any(|l| l == format!("ok {c}")),
            "{what}: check {c:?} did not pass\n--- client ---\n{report}\n{diagnostics}"
        );
    }
    assert!(
        ok,
        "{what}: the client failed\n--- client ---\n{report}\n{diagnostics}"
    );
}

/// Sum of the `name{...}` lines whose labels contain every part (and of
/// `name value`, a metric without labels).
fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    let (labelled, plain) = (format!("{name}{{"), format!("{name} "));
    text.lines()
        .filter(|l| l.starts_with(&labelled) || l.starts_with(&plain))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// The proxy's metrics once `ok` holds on them (a request is recorded
/// when it ends, which may be after the client has its answer), or after
/// 5 s whatever they say.
async fn settled_metrics(p: &TestProxy, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = p.metrics().await;
        if ok(&m) || std::time::Instant::now() > deadline {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Certificates for `HOST` in `dir`: (server cert, key, CA file).
fn pki(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let ca = DevCa::new("gRPC interop CA");
    let leaf = ca.issue(&LeafSpec::server(&[HOST]));
    let (cert, key) = leaf.write(dir, "server").unwrap();
    let ca_file = ca.write_cert(dir, "ca.crt").unwrap();
    (cert, key, ca_file)
}

/// A Gateway HTTPS server (TLS terminated) routed to a ServiceEntry whose
/// port is GRPC: the app is spoken to in h2c.
fn gateway_config(cert: &Path, key: &Path, app_port: u16) -> String {
    let (cert, key) = (cert.display(), key.display());
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: grpc}}
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["{HOST}"]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-app}}
spec:
  hosts: [grpc-app.internal]
  location: MESH_INTERNAL
  ports: [{{number: 50051, name: grpc, protocol: GRPC, targetPort: {app_port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: ["{HOST}"]
  gateways: [grpc]
  http:
  - route:
    - destination: {{host: grpc-app.internal, port: {{number: 50051}}}}
"#
    )
}

/// A Sidecar ingress listener whose own port is GRPC, with TLS, sending
/// everything to its `defaultEndpoint`.
fn sidecar_config(cert: &Path, key: &Path, app_port: u16) -> String {
    let (cert, key) = (cert.display(), key.display());
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: default}}
spec:
  ingress:
  - port: {{number: 8443, name: grpc, protocol: GRPC}}
    defaultEndpoint: 127.0.0.1:{app_port}
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
"#
    )
}

/// The gRPC client with TLS calls the gRPC app through a proxy started
/// from `config` (listening on config port `port`); every check passes
/// and every call is counted as served.
async fn inbound_case(what: &str, port: u16, config: fn(&Path, &Path, u16) -> String) {
    let Some(py) = python_or_skip(what) else {
        return;
    };
    let scratch = tempdir();
    let app = GrpcApp::start(&py, scratch.path());
    let dir = tempdir();
    let (cert, key, ca_file) = pki(dir.path());
    let yaml = config(&cert, &key, app.port);
    let p = TestProxy::start(dir, &yaml, |b| {
        b.port_map.insert(port, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap_or_else(|e| panic!("{what}: proxy: {e}\n{yaml}"));
    let addr = p.proxy.inbound()[&port];
    let (ok, report) = run_client(
        &py,
        scratch.path(),
        &[
            addr.to_string(),
            "tls".into(),
            HOST.into(),
            ca_file.display().to_string(),
        ],
    )
    .await;
    let served = |m: &str| {
        metric_sum(
            m,
            "istio_requests_total",
            &["reporter=\"destination\"", "response_code=\"200\""],
        )
    };
    let m = settled_metrics(&p, |m| served(m) >= 4.0).await;
    let diagnostics = format!(
        "--- config ---\n{yaml}\n--- metrics ---\n{}",
        m.lines()
            .filter(|l| l.starts_with("istio_requests_total")
                || l.starts_with("meshgate_upstream")
                || l.starts_with("meshgate_tls_handshake_failures"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_all_passed(what, ok, &report, &diagnostics);
    // Each call was one HTTP request answered 200 (gRPC's own status
    // travels in the trailers, NOT_FOUND included): 4 calls.
    let served = served(&m);
    assert!(
        served >= 4.0,
        "{what}: {served} requests counted\n{diagnostics}"
    );
    assert_eq!(
        metric_sum(&m, "istio_requests_total", &["response_code=\"503\""]),
        0.0,
        "{what}: no request failed upstream\n{diagnostics}"
    );
    eprintln!("{what}: {served} gRPC requests through meshgate\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_through_a_gateway_https_server_to_a_grpc_service_port() {
    inbound_case(
        "Gateway HTTPS server, GRPC ServiceEntry port",
        443,
        gateway_config,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_through_a_sidecar_ingress_grpc_port_with_tls() {
    inbound_case("Sidecar ingress GRPC port with TLS", 8443, sidecar_config).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_client_reaches_a_grpc_server_through_the_outbound_connect_proxy() {
    let Some(py) = python_or_skip("grpc outbound") else {
        return;
    };
    let scratch = tempdir();
    let app = GrpcApp::start(&py, scratch.path());
    // A registered gRPC service; the client's CONNECT names it.
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: grpc-upstream}}
spec:
  hosts: [grpc-upstream.internal]
  location: MESH_EXTERNAL
  ports: [{{number: 50051, name: grpc, protocol: GRPC, targetPort: {port}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1}}]
"#,
        port = app.port
    );
    let p = TestProxy::start(tempdir(), &yaml, |_| {})
        .await
        .unwrap_or_else(|e| panic!("proxy: {e}\n{yaml}"));
    let proxy = format!("http://{}", p.proxy.outbound);
    let (ok, report) = run_client(
        &py,
        scratch.path(),
        &[
            "grpc-upstream.internal:50051".into(),
            "plain".into(),
            "grpc-upstream.internal".into(),
            proxy,
        ],
    )
    .await;
    let tunnels = |m: &str| metric_sum(m, "meshgate_connect_tunnels_total", &[]);
    let m = settled_metrics(&p, |m| tunnels(m) >= 1.0).await;
    let diagnostics = format!(
        "--- config ---\n{yaml}\n--- metrics ---\n{}",
        m.lines()
            .filter(|l| l.starts_with("meshgate_connect_tunnels")
                || l.starts_with("istio_tcp")
                || l.starts_with("istio_requests_total"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_all_passed("outbound CONNECT", ok, &report, &diagnostics);
    assert!(
        tunnels(&m) >= 1.0,
        "the calls went through a CONNECT tunnel\n{diagnostics}"
    );
    eprintln!("outbound CONNECT:\n{report}");
}
