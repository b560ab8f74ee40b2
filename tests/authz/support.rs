//! What the authorization tests share: apps that record what reached them,
//! proxies started from YAML with their config ports on 127.0.0.1:0,
//! certificates made at test time, and clients that send exactly the bytes
//! a test names.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshgate::bootstrap::Bootstrap;
use meshgate::ca::{MeshCa, spiffe_id};
use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{ClientOpts, TestProxy, metric_value, tempdir};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Envoy's body for a request RBAC denied.
pub const RBAC_BODY: &str = "RBAC: access denied";
/// The error header meshgate adds to a denial.
pub const RBAC_FLAG: &str = "rbac_access_denied";
/// The identities of Istio's examples.
pub const ONE: &str = "spiffe://cluster.local/ns/a/sa/one";
pub const TWO: &str = "spiffe://cluster.local/ns/b/sa/two";
/// The name the app is reached by.
pub const HOST: &str = "app.test";
/// Longest any wait may take before a test gives up.
pub const DEADLINE: Duration = Duration::from_secs(5);
const DAY: Duration = Duration::from_secs(86400);

// === apps ===

/// An HTTP/1.1 + h2c app that answers 200 with JSON (method, path as
/// received, headers) and records every request that reached it.
pub struct App {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
}

impl App {
    pub async fn start() -> App {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let record = record.clone();
                            async move {
                                let path = req
                                    .uri()
                                    .path_and_query()
                                    .map_or("/", |p| p.as_str())
                                    .to_string();
                                record.lock().unwrap().push(path.clone());
                                let headers: serde_json::Map<String, serde_json::Value> = req
                                    .headers()
                                    .iter()
                                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
                                    .collect();
                                let body = serde_json::json!({
                                    "method": req.method().as_str(),
                                    "path": path,
                                    "headers": headers,
                                });
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                                ))
                            }
                        },
                    );
                    let _ = hyper_util::server::conn::auto::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
                });
            }
        });
        App { addr, seen }
    }

    /// Every request target that reached the app, in order.
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

/// A TCP echo app that counts the connections it accepted.
pub struct TcpApp {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
}

impl TcpApp {
    pub async fn start() -> TcpApp {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        TcpApp { addr, accepted }
    }

    /// Connections the app accepted.
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

// === configuration ===

/// An AuthorizationPolicy `default/<name>` with `spec` (YAML lines at
/// column 0).
pub fn policy(name: &str, spec: &str) -> String {
    let spec: String = spec
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("  {l}\n"))
        .collect();
    let spec = if spec.is_empty() {
        " {}\n".to_string()
    } else {
        format!("\n{spec}")
    };
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: default}}\nspec:{spec}"
    )
}

/// A Gateway `default/gw` with one plain HTTP server on config port 8080
/// for [`HOST`], and a VirtualService sending everything to `app`.
pub fn plain_gateway(app: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [{HOST}]
{vs}"#,
        vs = virtual_service(app)
    )
}

/// A VirtualService bound to `gw` sending every request for [`HOST`] to
/// `app`.
pub fn virtual_service(app: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: app, namespace: default}}
spec:
  hosts: [{HOST}]
  gateways: [gw]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}
"#,
        port = app.port()
    )
}

/// Starts a proxy on `yaml` with each config port of `ports` on
/// 127.0.0.1:0.
pub async fn start(yaml: &str, ports: &[u16], tweak: impl FnOnce(&mut Bootstrap)) -> TestProxy {
    start_in(tempdir(), yaml, ports, tweak).await
}

/// [`start`] with files already written in `dir`.
pub async fn start_in(
    dir: tempfile::TempDir,
    yaml: &str,
    ports: &[u16],
    tweak: impl FnOnce(&mut Bootstrap),
) -> TestProxy {
    let ports = ports.to_vec();
    match TestProxy::start(dir, yaml, move |b| {
        for p in ports {
            b.port_map.insert(p, "127.0.0.1:0".parse().unwrap());
        }
        tweak(b);
    })
    .await
    {
        Ok(p) => p,
        Err(e) => panic!("proxy failed to start: {e}\n--- config ---\n{yaml}"),
    }
}

/// `meshgate_authz_decisions_total{action,policy}`.
pub fn decisions(action: &str, policy: &str) -> String {
    format!("meshgate_authz_decisions_total{{action=\"{action}\",policy=\"{policy}\"}}")
}

/// Polls the proxy's metric `key` until it reaches `want` (at most
/// [`DEADLINE`]); returns the last value.
pub async fn wait_metric(p: &TestProxy, key: &str, want: f64) -> f64 {
    let start = Instant::now();
    loop {
        let v = metric_value(&p.metrics().await, key);
        if v == want || start.elapsed() > DEADLINE {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// === certificates ===

/// A mutual-TLS Gateway's certificates: the server's (for [`HOST`]) and two
/// clients' with the SPIFFE IDs [`ONE`] and [`TWO`], from a client CA.
pub struct GatewayPki {
    pub server_ca: DevCa,
    pub client_ca: DevCa,
    pub one: (String, String),
    pub two: (String, String),
}

impl GatewayPki {
    pub fn new() -> GatewayPki {
        let client_ca = DevCa::new("client CA");
        let client = |id: &str, cn: &str| {
            let leaf = client_ca.issue(&LeafSpec {
                uris: vec![id.into()],
                ..LeafSpec::client(cn)
            });
            (leaf.cert_pem, leaf.key_pem)
        };
        let one = client(ONE, "one");
        let two = client(TWO, "two");
        GatewayPki {
            server_ca: DevCa::new("server CA"),
            client_ca,
            one,
            two,
        }
    }

    /// A Gateway `default/gw` with a MUTUAL HTTPS server on config port 443
    /// for [`HOST`] (files written to `dir`), routed to `app`.
    pub fn gateway(&self, dir: &Path, app: SocketAddr) -> String {
        let (cert, key) = self
            .server_ca
            .issue(&LeafSpec::server(&[HOST]))
            .write(dir, "server")
            .unwrap();
        let ca = self.client_ca.write_cert(dir, "client-ca.crt").unwrap();
        format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {ca}}}
{vs}"#,
            cert = cert.display(),
            key = key.display(),
            ca = ca.display(),
            vs = virtual_service(app)
        )
    }

    /// A client presenting `identity` (`None`: no certificate).
    pub fn client(&self, identity: Option<&(String, String)>, h2: bool) -> ClientOpts {
        ClientOpts {
            sni: Some(HOST.into()),
            ca_pem: self.server_ca.cert_pem.clone(),
            identity: identity.cloned(),
            h2,
            ..Default::default()
        }
    }
}

/// The mesh: a CA of trust domain cluster.local, the workload identity of
/// the proxy under test (`default/httpbin`, written to `dir/identity`) and
/// two peers' identities [`ONE`] and [`TWO`].
pub struct MeshPki {
    pub root_pem: String,
    pub identity_dir: std::path::PathBuf,
    pub one: (String, String),
    pub two: (String, String),
}

/// The DNS name in the workload certificate, which clients check.
pub const WORKLOAD_DNS: &str = "httpbin.default.svc.cluster.local";

impl MeshPki {
    pub fn new(dir: &Path) -> MeshPki {
        let ca = MeshCa::init(&dir.join("ca"), "cluster.local", true, DAY).unwrap();
        let identity_dir = dir.join("identity");
        ca.issue(
            &spiffe_id("cluster.local", "default", "httpbin"),
            &[WORKLOAD_DNS.into()],
            DAY,
        )
        .unwrap()
        .write(&identity_dir)
        .unwrap();
        let peer = |id: &str| {
            let i = ca.issue(id, &[], DAY).unwrap();
            (i.cert_chain_pem, i.key_pem)
        };
        MeshPki {
            root_pem: ca.root_pem.clone(),
            identity_dir,
            one: peer(ONE),
            two: peer(TWO),
        }
    }

    /// A peer presenting `identity` (`None`: no certificate).
    pub fn client(&self, identity: Option<&(String, String)>, h2: bool) -> ClientOpts {
        ClientOpts {
            sni: Some(WORKLOAD_DNS.into()),
            ca_pem: self.root_pem.clone(),
            identity: identity.cloned(),
            h2,
            ..Default::default()
        }
    }
}

/// A PeerAuthentication `default/default` in `mode`.
pub fn peer_authentication(mode: &str) -> String {
    format!(
        "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: default, namespace: default}}\nspec:\n  mtls: {{mode: {mode}}}\n"
    )
}

// === clients ===

/// A response as the client read it.
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: u16,
    /// The head, header names lower-cased.
    pub head: String,
    pub body: String,
}

impl Raw {
    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.eq_ignore_ascii_case(name)).then(|| v.trim())
        })
    }
}

/// Sends `GET <target>` exactly as written (with `Host` and `headers`,
/// `Connection: close`) on `s`, and reads the whole response.
pub async fn raw_get<S>(mut s: S, host: &str, target: &str, headers: &[(&str, &str)]) -> Raw
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "GET {target}: no complete response within {DEADLINE:?}: {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {target}: no response head in {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("GET {target}: no status in {head:?}"));
    let body = match head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().to_string())
        })
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(n) => body.get(..n).unwrap_or(body).to_string(),
        None => body.to_string(),
    };
    Raw {
        status,
        head: head.to_string(),
        body,
    }
}

/// [`raw_get`] over a new plain TCP connection to `addr`.
pub async fn plain_get(addr: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Raw {
    let s = TcpStream::connect(addr).await.unwrap();
    raw_get(s, HOST, target, headers).await
}

/// Asserts a denial as Envoy's RBAC filter answers it: 403, the body
/// exactly `RBAC: access denied`.
pub fn assert_denied(status: u16, body: &str, what: &str) {
    assert_eq!(status, 403, "{what}: expected 403, got {status}: {body}");
    assert_eq!(body, RBAC_BODY, "{what}: the body");
}
