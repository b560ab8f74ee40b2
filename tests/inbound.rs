//! Ingress TLS termination end to end: Gateway + VirtualService in front of
//! an in-process local service, real rustls clients, rcgen certificates.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use meshgate::bootstrap::Bootstrap;
use meshgate::creds::CertInfo;
use meshgate::devpki::{DevCa, Leaf, LeafSpec};
use meshgate::standin::{Fetched, StandIn, StandInConfig, fetch};
use meshgate::test_util::{
    ClientOpts, HttpsConn, TestProxy, echo_service, https_get, tempdir, tls_connect,
};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "service.internal.test";

struct Setup {
    ca: DevCa,
    dir: tempfile::TempDir,
}

fn setup() -> Setup {
    Setup {
        ca: DevCa::new("ingress CA"),
        dir: tempdir(),
    }
}

/// Gateway on config port 443 (rebound to port 0) + a VirtualService routing
/// every path to the local service.
fn gateway_yaml(tls: &str, backend: std::net::SocketAddr, hosts: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{hosts}]
    tls:
{tls}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
spec:
  hosts: [{hosts}]
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

async fn start(s: Setup, yaml: &str) -> TestProxy {
    TestProxy::start(s.dir, yaml, |b| {
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap()
}

fn opts(ca: &DevCa) -> ClientOpts {
    ClientOpts {
        sni: Some(HOST.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    }
}

#[tokio::test]
async fn simple_terminates_and_forwards_plain_http_with_identity_headers() {
    let s = setup();
    let (cert, key) =
        s.ca.issue(&LeafSpec::server(&[HOST]))
            .write(s.dir.path(), "server")
            .unwrap();
    let backend = echo_service().await;
    let tls = format!(
        "      mode: SIMPLE\n      serverCertificate: {}\n      privateKey: {}",
        cert.display(),
        key.display()
    );
    let yaml = gateway_yaml(&tls, backend, HOST);
    let o = opts(&s.ca);
    let p = start(s, &yaml).await;
    let addr = p.proxy.inbound[&443];
    let r = https_get(
        addr,
        &o,
        HOST,
        "/hello?x=1",
        &[
            ("x-forwarded-client-cert", "By=forged"),
            ("x-forwarded-for", "10.9.9.9"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["path"], "/hello?x=1");
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(v["headers"]["x-forwarded-for"], "10.9.9.9, 127.0.0.1");
    assert!(
        v["headers"].get("x-forwarded-client-cert").is_none(),
        "client-sent XFCC removed: {}",
        r.body
    );
}

// ===================================================================
// Istio Gateway semantics, end to end.
// ===================================================================

// --- YAML builders ---

/// One `spec.servers[]` entry. `tls` lines go under `tls:` as written.
fn server(port: u16, protocol: &str, hosts: &[&str], tls: &[String]) -> String {
    let name = format!(
        "{}-{port}-{}",
        protocol.to_ascii_lowercase(),
        hosts[0].replace(['.', '*'], "x")
    );
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    let mut s = format!(
        "  - port: {{number: {port}, name: {name}, protocol: {protocol}}}\n    hosts: [{}]\n",
        hosts.join(", ")
    );
    if !tls.is_empty() {
        s.push_str("    tls:\n");
        for l in tls {
            s.push_str(&format!("      {l}\n"));
        }
    }
    s
}

/// Gateway `default/ingress` with these servers.
fn gateway(servers: &[String]) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: ingress\n  namespace: default\nspec:\n  servers:\n{}",
        servers.concat()
    )
}

/// A VirtualService bound to `ingress` sending every request for `hosts`
/// to `backend`.
fn route_all(name: &str, hosts: &[&str], backend: SocketAddr) -> String {
    let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
    format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: {name}
  namespace: default
spec:
  hosts: [{hosts}]
  gateways: [ingress]
  http:
  - route:
    - destination:
        host: 127.0.0.1
        port: {{number: {port}}}
"#,
        hosts = hosts.join(", "),
        port = backend.port()
    )
}

/// `mode: SIMPLE` with the leaf written to `dir`.
fn simple_tls(dir: &Path, leaf: &Leaf, stem: &str) -> Vec<String> {
    let (c, k) = leaf.write(dir, stem).unwrap();
    vec![
        "mode: SIMPLE".into(),
        format!("serverCertificate: {}", c.display()),
        format!("privateKey: {}", k.display()),
    ]
}

/// Starts a proxy with the given config ports rebound to 127.0.0.1:0.
async fn start_ports(
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

// --- metrics ---

fn failure_key(reason: &str) -> String {
    format!("meshgate_tls_handshake_failures_total{{direction=\"inbound\",reason=\"{reason}\"}}")
}

/// Polls until `key` reaches `want` (the proxy counts after the client has
/// already seen the outcome); returns the last value seen.
async fn wait_metric(p: &TestProxy, key: &str, want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = p.metric(key).await;
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sum of every `name{...}` line whose labels contain all of `parts`.
fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Polls until the `meshgate_tls_handshakes_total` lines with all of
/// `parts` sum to `want`; returns the last sum.
async fn wait_sum(p: &TestProxy, parts: &[&str], want: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let v = metric_sum(&p.metrics().await, "meshgate_tls_handshakes_total", parts);
        if v == want || Instant::now() > deadline {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// --- certificates ---

fn der_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of the certificate DER, lower-case hex.
fn cert_sha256(pem: &str) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der_of(pem).as_ref()).as_ref())
}

/// Base64 SHA-256 of the SubjectPublicKeyInfo (Istio's
/// `verifyCertificateSpki`), cross-checked with `openssl` when present.
fn spki_sha256_b64(pem: &str) -> String {
    let der = der_of(pem);
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
    let digest = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        cert.tbs_certificate.subject_pki.raw,
    );
    let b64 = base64::engine::general_purpose::STANDARD.encode(digest.as_ref());
    let dir = tempdir();
    let f = dir.path().join("c.pem");
    std::fs::write(&f, pem).unwrap();
    let cmd = format!(
        "openssl x509 -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | openssl enc -base64",
        f.display()
    );
    if let Ok(out) = std::process::Command::new("sh").arg("-c").arg(cmd).output()
        && out.status.success()
    {
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            b64,
            "SPKI digest agrees with openssl"
        );
    }
    b64
}

fn subject_of(cert: &CertificateDer<'_>) -> String {
    CertInfo::parse(cert).unwrap().subject
}

/// The leaf the server presented on `tls`.
fn peer_subject(tls: &tokio_rustls::client::TlsStream<TcpStream>) -> String {
    let chain = tls.get_ref().1.peer_certificates().expect("a server chain");
    subject_of(&chain[0])
}

/// A CA made directly with rcgen, to sign leaves DevCa cannot make (RSA).
struct RawCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pem: String,
}

fn dn(cn: &str) -> rcgen::DistinguishedName {
    let mut d = rcgen::DistinguishedName::new();
    d.push(rcgen::DnType::CommonName, cn);
    d
}

fn raw_ca(cn: &str) -> RawCa {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = dn(cn);
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    RawCa {
        pem: cert.pem(),
        issuer: rcgen::Issuer::new(params, key),
    }
}

fn raw_server_leaf(ca: &RawCa, cn: &str, dns: &[&str], key: rcgen::KeyPair) -> Leaf {
    let mut params =
        rcgen::CertificateParams::new(dns.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    params.distinguished_name = dn(cn);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &ca.issuer).unwrap();
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

// --- clients ---

/// Web PKI server verification that offers only `only` signature schemes
/// in the ClientHello (all of the inner verifier's when `None`).
#[derive(Debug)]
struct Schemes {
    inner: Arc<rustls::client::WebPkiServerVerifier>,
    only: Option<Vec<SignatureScheme>>,
}

impl rustls::client::danger::ServerCertVerifier for Schemes {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        match &self.only {
            Some(s) => s.clone(),
            None => self.inner.supported_verify_schemes(),
        }
    }
}

/// A rustls client config built here (so it can be reused for resumption
/// and restricted to signature schemes). ALPN http/1.1.
fn client_config(
    ca_pem: &str,
    versions: &[&'static rustls::SupportedProtocolVersion],
    only: Option<&[SignatureScheme]>,
) -> Arc<rustls::ClientConfig> {
    let provider = meshgate::creds::provider();
    let roots = Arc::new(meshgate::creds::roots_from_pem(ca_pem.as_bytes()).unwrap());
    let inner =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Schemes {
            inner,
            only: only.map(<[_]>::to_vec),
        }))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn connect_with(
    addr: SocketAddr,
    cfg: Arc<rustls::ClientConfig>,
    sni: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())
}

/// A real ClientHello (the first flight of a rustls client), as bytes.
fn client_hello(sni: &str) -> Vec<u8> {
    let ca = DevCa::new("unused");
    let cfg = client_config(&ca.cert_pem, &[&rustls::version::TLS13], None);
    let mut conn =
        rustls::ClientConnection::new(cfg, ServerName::try_from(sni.to_string()).unwrap()).unwrap();
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    assert_eq!(out[0], 0x16, "a TLS handshake record");
    out
}

/// One HTTPS/1.1 request with any method, on a new connection.
async fn send(
    addr: SocketAddr,
    opts: &ClientOpts,
    method: &str,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, String> {
    use http_body_util::BodyExt;
    let tls = tls_connect(addr, opts).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut b = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, authority);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Fetched {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

// --- backends ---

/// A plain HTTP/1.1 + h2c backend answering, after `delay`, with JSON: its
/// `tag`, method, path, version and every request header (all values, in
/// order). It sets `x-resp: backend` on its responses.
async fn backend(tag: &'static str, delay: Duration) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: http::Request<hyper::body::Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        let mut headers = serde_json::Map::new();
                        for (k, v) in req.headers() {
                            if let Value::Array(a) =
                                headers.entry(k.as_str().to_string()).or_insert(json!([]))
                            {
                                a.push(json!(v.to_str().unwrap_or("")));
                            }
                        }
                        let body = json!({
                            "backend": tag,
                            "method": req.method().as_str(),
                            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                            "version": format!("{:?}", req.version()),
                            "headers": headers,
                        });
                        let mut resp = http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body.to_string()),
                        ));
                        resp.headers_mut()
                            .insert("x-resp", http::HeaderValue::from_static("backend"));
                        Ok::<_, std::convert::Infallible>(resp)
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
    addr
}

fn body_json(r: &Fetched) -> Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("JSON body ({e}): {}", r.body))
}

/// Every value the backend saw for header `name`.
fn seen_header(v: &Value, name: &str) -> Vec<String> {
    v["headers"][name]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| x.as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// Reads until `\r\n\r\n`, one byte at a time (nothing after it is taken).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await? == 0 {
            break;
        }
        head.push(b[0]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// Reads until EOF or an error; `Err` only on timeout.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> Result<Vec<u8>, Vec<u8>> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(got),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

// ===================================================================
// 1. Client certificate accept/reject matrix
// ===================================================================

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 200; whether the app sees an XFCC header.
    Ok { xfcc: bool },
    /// The request fails; this failure reason is counted.
    Reject(&'static str),
}

/// `(client, expectation)` rows of a matrix.
type Cases<'a> = &'a [(&'a str, Expect)];

/// A client certificate and key, PEM.
type Identity = Option<(String, String)>;

struct ClientCerts {
    ca: DevCa,
    wrong_ca: DevCa,
    good: Leaf,
    other: Leaf,
}

impl ClientCerts {
    fn new() -> ClientCerts {
        let ca = DevCa::new("client CA");
        let wrong_ca = DevCa::new("someone else's CA");
        let good = ca.issue(&LeafSpec {
            uris: vec!["spiffe://cluster.local/ns/default/sa/allowed".into()],
            ..LeafSpec::client("allowed.client.test")
        });
        let other = ca.issue(&LeafSpec::client("other.client.test"));
        ClientCerts {
            ca,
            wrong_ca,
            good,
            other,
        }
    }

    /// The identity a named client presents.
    fn identity(&self, client: &str) -> Identity {
        let leaf = match client {
            "none" => return None,
            "good" => self.good.clone(),
            "other" => self.other.clone(),
            "wrong_ca" => self
                .wrong_ca
                .issue(&LeafSpec::client("allowed.client.test")),
            "expired" => self
                .ca
                .issue(&LeafSpec::client("allowed.client.test").expired()),
            "not_yet_valid" => self
                .ca
                .issue(&LeafSpec::client("allowed.client.test").not_yet_valid()),
            other => panic!("unknown client {other}"),
        };
        Some((leaf.cert_pem, leaf.key_pem))
    }
}

/// Starts a Gateway whose server TLS is `mode` plus `extra` lines, with the
/// client CA of `certs`, and runs every `(client, expectation)`.
async fn run_client_matrix(
    certs: &ClientCerts,
    mode: &str,
    extra: &[String],
    cases: &[(&str, Expect)],
) {
    let server_ca = DevCa::new("server CA");
    let dir = tempdir();
    let backend = backend("app", Duration::ZERO).await;
    let mut tls = simple_tls(
        dir.path(),
        &server_ca.issue(&LeafSpec::server(&[HOST])),
        "srv",
    );
    tls[0] = format!("mode: {mode}");
    if mode != "SIMPLE" {
        let ca = certs.ca.write_cert(dir.path(), "client-ca.crt").unwrap();
        tls.push(format!("caCertificates: {}", ca.display()));
    }
    tls.extend(extra.iter().cloned());
    let yaml =
        gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], backend);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound[&443];
    for (client, expect) in cases {
        let what = format!("mode {mode} {extra:?}, client {client}");
        let o = ClientOpts {
            sni: Some(HOST.into()),
            ca_pem: server_ca.cert_pem.clone(),
            identity: certs.identity(client),
            ..Default::default()
        };
        match expect {
            Expect::Ok { xfcc } => {
                let r = https_get(addr, &o, HOST, "/matrix", &[])
                    .await
                    .unwrap_or_else(|e| panic!("{what}: expected success, got {e}"));
                assert_eq!(r.status, 200, "{what}: {}", r.body);
                let v = body_json(&r);
                let seen = seen_header(&v, "x-forwarded-client-cert");
                assert_eq!(!seen.is_empty(), *xfcc, "{what}: XFCC {seen:?}");
            }
            Expect::Reject(reason) => {
                let key = failure_key(reason);
                let before = p.metric(&key).await;
                let r = https_get(addr, &o, HOST, "/matrix", &[]).await;
                assert!(r.is_err(), "{what}: expected rejection, got {r:?}");
                let after = wait_metric(&p, &key, before + 1.0).await;
                assert_eq!(
                    after,
                    before + 1.0,
                    "{what}: failure reason {reason} counted once\n{}",
                    p.metrics().await
                );
            }
        }
    }
}

#[tokio::test]
async fn client_certificate_matrix_by_tls_mode() {
    use Expect::{Ok, Reject};
    let certs = ClientCerts::new();
    let table: &[(&str, &[(&str, Expect)])] = &[
        (
            "SIMPLE",
            &[
                ("none", Ok { xfcc: false }),
                ("wrong_ca", Ok { xfcc: false }),
                ("expired", Ok { xfcc: false }),
                ("good", Ok { xfcc: false }),
            ],
        ),
        (
            "MUTUAL",
            &[
                ("none", Reject("no_client_cert")),
                ("wrong_ca", Reject("unknown_ca")),
                ("expired", Reject("expired")),
                ("not_yet_valid", Reject("not_yet_valid")),
                ("good", Ok { xfcc: true }),
                ("other", Ok { xfcc: true }),
            ],
        ),
        (
            "OPTIONAL_MUTUAL",
            &[
                ("none", Ok { xfcc: false }),
                ("wrong_ca", Reject("unknown_ca")),
                ("expired", Reject("expired")),
                ("not_yet_valid", Reject("not_yet_valid")),
                ("good", Ok { xfcc: true }),
            ],
        ),
    ];
    for (mode, cases) in table {
        run_client_matrix(&certs, mode, &[], cases).await;
    }
}

#[tokio::test]
async fn client_certificate_allow_lists() {
    use Expect::{Ok, Reject};
    let certs = ClientCerts::new();
    let spki = spki_sha256_b64(&certs.good.cert_pem);
    let hash = cert_sha256(&certs.good.cert_pem);
    // Istio accepts both plain and colon-separated hex; openssl prints the
    // colon form in upper case.
    let hash_colons = hash
        .as_bytes()
        .chunks(2)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(":");
    let unrelated_spki = spki_sha256_b64(&DevCa::new("x").issue(&LeafSpec::client("x")).cert_pem);
    let lists: Vec<(Vec<String>, Cases)> = vec![
        (
            vec!["subjectAltNames: [allowed.client.test]".into()],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("san_not_allowed")),
                ("none", Reject("no_client_cert")),
            ],
        ),
        (
            // A URI SAN (SPIFFE ID) is matched too.
            vec!["subjectAltNames: [\"spiffe://cluster.local/ns/default/sa/allowed\"]".into()],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("san_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateSpki: [\"{spki}\"]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateHash: [\"{hash_colons}\"]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            vec![format!("verifyCertificateHash: [{hash}]")],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            // Envoy: a match in either list accepts the certificate.
            vec![
                format!("verifyCertificateSpki: [\"{unrelated_spki}\"]"),
                format!("verifyCertificateHash: [{hash}]"),
            ],
            &[
                ("good", Ok { xfcc: true }),
                ("other", Reject("cert_not_allowed")),
            ],
        ),
        (
            // The chain is still verified before the lists.
            vec!["subjectAltNames: [allowed.client.test]".into()],
            &[("wrong_ca", Reject("unknown_ca"))],
        ),
    ];
    for mode in ["MUTUAL", "OPTIONAL_MUTUAL"] {
        for (extra, cases) in &lists {
            let cases: Vec<(&str, Expect)> = cases
                .iter()
                .map(|(c, e)| match (mode, *c) {
                    // OPTIONAL_MUTUAL: no certificate is fine, lists or not.
                    ("OPTIONAL_MUTUAL", "none") => (*c, Ok { xfcc: false }),
                    _ => (*c, *e),
                })
                .collect();
            run_client_matrix(&certs, mode, extra, &cases).await;
        }
    }
}

// ===================================================================
// 2. XFCC and forwarding headers
// ===================================================================

#[tokio::test]
async fn xfcc_describes_the_verified_client_certificate() {
    struct Case {
        name: &'static str,
        server_uri: Option<&'static str>,
        client_uris: Vec<String>,
        h2: bool,
    }
    let cases = [
        Case {
            name: "DNS SAN only, HTTP/1.1",
            server_uri: None,
            client_uris: vec![],
            h2: false,
        },
        Case {
            name: "SPIFFE URI SAN, HTTP/2",
            server_uri: None,
            client_uris: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
            h2: true,
        },
        Case {
            name: "server has a URI SAN (By=)",
            server_uri: Some("spiffe://cluster.local/ns/istio-system/sa/ingress"),
            client_uris: vec!["spiffe://cluster.local/ns/default/sa/client".into()],
            h2: false,
        },
    ];
    for c in cases {
        let ca = DevCa::new("ingress CA");
        let dir = tempdir();
        let server_leaf = ca.issue(&LeafSpec {
            uris: c.server_uri.iter().map(|u| u.to_string()).collect(),
            ..LeafSpec::server(&[HOST])
        });
        let mut tls = simple_tls(dir.path(), &server_leaf, "srv");
        tls[0] = "mode: MUTUAL".into();
        let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
        tls.push(format!("caCertificates: {}", ca_file.display()));
        let client = ca.issue(&LeafSpec {
            uris: c.client_uris.clone(),
            ..LeafSpec::client("client.test")
        });
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            sni: Some(HOST.into()),
            ca_pem: ca.cert_pem.clone(),
            identity: Some((client.cert_pem.clone(), client.key_pem.clone())),
            h2: c.h2,
            ..Default::default()
        };
        let r = https_get(
            p.proxy.inbound[&443],
            &o,
            HOST,
            "/id",
            &[
                (
                    "x-forwarded-client-cert",
                    "By=forged;Hash=00;Subject=\"CN=root\"",
                ),
                ("x-forwarded-for", "10.1.2.3"),
                ("x-forwarded-proto", "http"),
            ],
        )
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        assert_eq!(r.status, 200, "{}: {}", c.name, r.body);
        let v = body_json(&r);
        let mut want = String::new();
        if let Some(by) = c.server_uri {
            want.push_str(&format!("By={by};"));
        }
        want.push_str(&format!(
            "Hash={};Subject=\"CN=client.test\"",
            cert_sha256(&client.cert_pem)
        ));
        for u in &c.client_uris {
            want.push_str(&format!(";URI={u}"));
        }
        want.push_str(";DNS=client.test");
        assert_eq!(
            seen_header(&v, "x-forwarded-client-cert"),
            vec![want],
            "{}: the client's XFCC is replaced, not appended",
            c.name
        );
        assert_eq!(
            seen_header(&v, "x-forwarded-proto"),
            vec!["https"],
            "{}",
            c.name
        );
        assert_eq!(
            seen_header(&v, "x-forwarded-for"),
            vec!["10.1.2.3, 127.0.0.1"],
            "{}",
            c.name
        );
    }
}

#[tokio::test]
async fn optional_mutual_without_certificate_strips_client_xfcc() {
    let ca = DevCa::new("ingress CA");
    let dir = tempdir();
    let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    tls[0] = "mode: OPTIONAL_MUTUAL".into();
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    tls.push(format!("caCertificates: {}", ca_file.display()));
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let r = https_get(
        p.proxy.inbound[&443],
        &opts(&ca),
        HOST,
        "/",
        &[("x-forwarded-client-cert", "Hash=forged")],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert!(
        seen_header(&v, "x-forwarded-client-cert").is_empty(),
        "{}",
        r.body
    );
    assert_eq!(seen_header(&v, "x-forwarded-for"), vec!["127.0.0.1"]);
}

// ===================================================================
// 3. SNI selection
// ===================================================================

#[tokio::test]
async fn sni_selects_the_server_and_its_certificate() {
    let ca = DevCa::new("sni CA");
    // Without a "*" server, then with one.
    for with_catch_all in [false, true] {
        let dir = tempdir();
        let b = backend("app", Duration::ZERO).await;
        let mut servers = vec![
            server(
                443,
                "HTTPS",
                &["a.test"],
                &simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&["a.test"])), "a"),
            ),
            server(
                443,
                "HTTPS",
                &["b.test"],
                &simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&["b.test"])), "b"),
            ),
        ];
        if with_catch_all {
            // tls_connect verifies a no-SNI connection as "no-sni.invalid".
            let leaf = ca.issue(&LeafSpec::server(&["default.test", "no-sni.invalid"]));
            servers.push(server(
                443,
                "HTTPS",
                &["*"],
                &simple_tls(dir.path(), &leaf, "any"),
            ));
        }
        let yaml = gateway(&servers) + &route_all("app", &["*"], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let addr = p.proxy.inbound[&443];
        let with_sni = |sni: Option<&str>| ClientOpts {
            sni: sni.map(str::to_string),
            ca_pem: ca.cert_pem.clone(),
            ..Default::default()
        };
        for (sni, subject) in [("a.test", "CN=a.test"), ("b.test", "CN=b.test")] {
            let tls = tls_connect(addr, &with_sni(Some(sni))).await.unwrap();
            assert_eq!(peer_subject(&tls), subject, "SNI {sni}");
            let mut conn = HttpsConn::new(tls, false).await.unwrap();
            let r = conn.get(sni, "/", &[]).await.unwrap();
            assert_eq!(r.status, 200, "SNI {sni}: {}", r.body);
        }
        if with_catch_all {
            for sni in [None, Some("unknown.test")] {
                let opts = ClientOpts {
                    // The catch-all certificate does not name unknown.test.
                    sni: sni.map(str::to_string),
                    ca_pem: ca.cert_pem.clone(),
                    ..Default::default()
                };
                match sni {
                    None => {
                        let tls = tls_connect(addr, &opts).await.unwrap();
                        assert_eq!(peer_subject(&tls), "CN=default.test", "no SNI → \"*\"");
                    }
                    Some(s) => {
                        let e = tls_connect(addr, &opts).await.unwrap_err();
                        assert!(
                            !e.contains("UnrecognisedName")
                                && e.contains("invalid peer certificate"),
                            "{s} is served by \"*\" (only its certificate is unverifiable): {e}"
                        );
                    }
                }
            }
            assert_eq!(p.metric(&failure_key("unknown_sni")).await, 0.0);
        } else {
            for (i, sni) in [Some("unknown.test"), None].into_iter().enumerate() {
                let e = tls_connect(addr, &with_sni(sni))
                    .await
                    .expect_err("no server for this SNI");
                assert!(
                    e.contains("UnrecognisedName"),
                    "SNI {sni:?}: an unrecognized_name alert, got {e}"
                );
                let n = wait_metric(&p, &failure_key("unknown_sni"), (i + 1) as f64).await;
                assert_eq!(n, (i + 1) as f64, "SNI {sni:?}");
            }
        }
    }
}

// ===================================================================
// 4. Dual certificates (RSA + ECDSA)
// ===================================================================

#[tokio::test]
async fn dual_certificates_follow_the_client_signature_schemes() {
    const NAME: &str = "dual.test";
    let ca = raw_ca("dual CA");
    let rsa_key =
        rcgen::KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048)
            .unwrap();
    let rsa = raw_server_leaf(&ca, "rsa.dual.test", &[NAME], rsa_key);
    let ecdsa = raw_server_leaf(
        &ca,
        "ecdsa.dual.test",
        &[NAME],
        rcgen::KeyPair::generate().unwrap(),
    );
    let rsa_only = [
        SignatureScheme::RSA_PSS_SHA256,
        SignatureScheme::RSA_PSS_SHA384,
        SignatureScheme::RSA_PKCS1_SHA256,
    ];
    let ecdsa_only = [
        SignatureScheme::ECDSA_NISTP256_SHA256,
        SignatureScheme::ECDSA_NISTP384_SHA384,
    ];
    // Envoy: "the first RSA certificate is used for clients that only
    // support RSA and the first ECDSA certificate is used for clients that
    // support ECDSA" — whatever the order in the list.
    let mut wrong = Vec::new();
    for rsa_first in [true, false] {
        let dir = tempdir();
        let (rc, rk) = rsa.write(dir.path(), "rsa").unwrap();
        let (ec, ek) = ecdsa.write(dir.path(), "ecdsa").unwrap();
        let rsa_entry = format!(
            "- {{serverCertificate: {}, privateKey: {}}}",
            rc.display(),
            rk.display()
        );
        let ec_entry = format!(
            "- {{serverCertificate: {}, privateKey: {}}}",
            ec.display(),
            ek.display()
        );
        let (first, second) = if rsa_first {
            (rsa_entry, ec_entry)
        } else {
            (ec_entry, rsa_entry)
        };
        let tls = vec![
            "mode: SIMPLE".into(),
            "tlsCertificates:".into(),
            format!("  {first}"),
            format!("  {second}"),
        ];
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[NAME], &tls)]) + &route_all("app", &[NAME], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let addr = p.proxy.inbound[&443];
        for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let cases: [(&str, Option<&[SignatureScheme]>, &str); 3] = [
                ("default client", None, "CN=ecdsa.dual.test"),
                ("RSA-only client", Some(&rsa_only), "CN=rsa.dual.test"),
                ("ECDSA-only client", Some(&ecdsa_only), "CN=ecdsa.dual.test"),
            ];
            for (what, only, want) in cases {
                let cfg = client_config(&ca.pem, &[version], only);
                let tls = connect_with(addr, cfg, NAME)
                    .await
                    .unwrap_or_else(|e| panic!("{what} {version:?} rsa_first={rsa_first}: {e}"));
                let got = peer_subject(&tls);
                if got != want {
                    wrong.push(format!(
                        "{what}, {version:?}, RSA listed first: {rsa_first}: got {got}, want {want}"
                    ));
                }
                let mut conn = HttpsConn::new(tls, false).await.unwrap();
                assert_eq!(conn.get(NAME, "/", &[]).await.unwrap().status, 200);
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "wrong certificate chosen:\n{}",
        wrong.join("\n")
    );
}

// ===================================================================
// 5. Protocol versions
// ===================================================================

#[tokio::test]
async fn server_order_picks_the_cipher_suite() {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    use rustls::version::TLS12;
    struct Case {
        setting: Option<&'static str>,
        client: Vec<rustls::SupportedCipherSuite>,
        versions: Vec<&'static rustls::SupportedProtocolVersion>,
        want: &'static str,
    }
    let cases = [
        // A client preferring AES-256 (OpenSSL's default order) gets
        // AES-128-GCM, as from Envoy.
        Case {
            setting: None,
            client: vec![
                cs::TLS13_AES_256_GCM_SHA384,
                cs::TLS13_CHACHA20_POLY1305_SHA256,
                cs::TLS13_AES_128_GCM_SHA256,
            ],
            versions: Vec::new(),
            want: "TLS13_AES_128_GCM_SHA256",
        },
        // A client that only speaks AES-256 still gets it.
        Case {
            setting: None,
            client: vec![cs::TLS13_AES_256_GCM_SHA384],
            versions: Vec::new(),
            want: "TLS13_AES_256_GCM_SHA384",
        },
        // The Gateway's cipherSuites order decides for TLS 1.2.
        Case {
            setting: Some(
                "cipherSuites: [ECDHE-ECDSA-AES256-GCM-SHA384, ECDHE-ECDSA-AES128-GCM-SHA256]",
            ),
            client: vec![
                cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            ],
            versions: vec![&TLS12],
            want: "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        },
    ];
    for c in cases {
        let ca = DevCa::new("cipher CA");
        let dir = tempdir();
        let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        if let Some(setting) = c.setting {
            tls.push(setting.into());
        }
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            cipher_suites: c.client.clone(),
            versions: c.versions.clone(),
            ..opts(&ca)
        };
        let what = format!("{:?} offering {:?}", c.setting, c.client);
        let tls = tls_connect(p.proxy.inbound[&443], &o)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let got = tls.get_ref().1.negotiated_cipher_suite().unwrap();
        assert_eq!(format!("{:?}", got.suite()), c.want, "{what}");
        let mut conn = HttpsConn::new(tls, false).await.unwrap();
        assert_eq!(
            conn.get(HOST, "/", &[]).await.unwrap().status,
            200,
            "{what}"
        );
    }
}

#[tokio::test]
async fn min_and_max_protocol_versions() {
    use rustls::version::{TLS12, TLS13};
    struct Case {
        setting: &'static str,
        client: Vec<&'static rustls::SupportedProtocolVersion>,
        /// Negotiated version, or the failure reason.
        want: Result<&'static str, &'static str>,
    }
    let cases = [
        Case {
            setting: "minProtocolVersion: TLSV1_3",
            client: vec![&TLS12],
            want: Err("protocol_version"),
        },
        Case {
            setting: "minProtocolVersion: TLSV1_3",
            client: vec![&TLS13, &TLS12],
            want: Ok("TLSv1_3"),
        },
        Case {
            setting: "maxProtocolVersion: TLSV1_2",
            client: vec![&TLS13, &TLS12],
            want: Ok("TLSv1_2"),
        },
        Case {
            setting: "maxProtocolVersion: TLSV1_2",
            client: vec![&TLS13],
            want: Err("protocol_version"),
        },
    ];
    let mut wrong = Vec::new();
    for c in cases {
        let ca = DevCa::new("version CA");
        let dir = tempdir();
        let mut tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        tls.push(c.setting.into());
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let o = ClientOpts {
            versions: c.client.clone(),
            ..opts(&ca)
        };
        let what = format!("{} with a client speaking {:?}", c.setting, c.client);
        match c.want {
            Ok(version) => {
                let tls = tls_connect(p.proxy.inbound[&443], &o)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                assert_eq!(
                    format!("{:?}", tls.get_ref().1.protocol_version().unwrap()),
                    version,
                    "{what}"
                );
                let mut conn = HttpsConn::new(tls, false).await.unwrap();
                assert_eq!(conn.get(HOST, "/", &[]).await.unwrap().status, 200);
                let m = p.metrics().await;
                assert_eq!(
                    metric_sum(
                        &m,
                        "meshgate_tls_handshakes_total",
                        &["direction=\"inbound\"", &format!("version=\"{version}\"")]
                    ),
                    1.0,
                    "{what}\n{m}"
                );
            }
            Err(reason) => {
                let r = https_get(p.proxy.inbound[&443], &o, HOST, "/", &[]).await;
                let e = r.expect_err(&what);
                assert!(e.contains("ProtocolVersion"), "{what}: alert: {e}");
                if wait_metric(&p, &failure_key(reason), 1.0).await != 1.0 {
                    let m = p.metrics().await;
                    let counted: Vec<&str> = m
                        .lines()
                        .filter(|l| l.starts_with("meshgate_tls_handshake_failures_total"))
                        .collect();
                    wrong.push(format!("{what}: want reason {reason}, counted {counted:?}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

// ===================================================================
// 6. 421 Misdirected Request on a reused connection
// ===================================================================

#[tokio::test]
async fn request_for_another_servers_host_on_a_connection_is_421() {
    let ca = DevCa::new("shared CA");
    let dir = tempdir();
    // One certificate naming both hosts, so a client could coalesce.
    let shared = ca.issue(&LeafSpec::server(&["a.test", "b.test"]));
    let a = backend("A", Duration::ZERO).await;
    let b = backend("B", Duration::ZERO).await;
    let yaml = gateway(&[
        server(
            443,
            "HTTPS",
            &["a.test"],
            &simple_tls(dir.path(), &shared, "a"),
        ),
        server(
            443,
            "HTTPS",
            &["b.test"],
            &simple_tls(dir.path(), &shared, "b"),
        ),
    ]) + &route_all("a", &["a.test"], a)
        + &route_all("b", &["b.test"], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound[&443];
    for h2 in [true, false] {
        let o = ClientOpts {
            sni: Some("a.test".into()),
            ca_pem: ca.cert_pem.clone(),
            h2,
            ..Default::default()
        };
        let mut conn = HttpsConn::new(tls_connect(addr, &o).await.unwrap(), h2)
            .await
            .unwrap();
        let r = conn.get("a.test", "/one", &[]).await.unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        assert_eq!(body_json(&r)["backend"], "A");
        let r = conn.get("b.test", "/two", &[]).await.unwrap();
        assert_eq!(r.status, 421, "h2={h2}: {}", r.body);
        // The connection stays usable for its own host; the port in the
        // Host header does not matter.
        let r = conn.get("a.test:443", "/three", &[]).await.unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        assert_eq!(body_json(&r)["backend"], "A");
    }
    // A fresh connection for b.test reaches B.
    let o = ClientOpts {
        sni: Some("b.test".into()),
        ca_pem: ca.cert_pem.clone(),
        h2: true,
        ..Default::default()
    };
    let r = https_get(addr, &o, "b.test", "/", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["backend"], "B");
}

// ===================================================================
// 7. VirtualService HTTP routing
// ===================================================================

struct RouteFixture {
    p: TestProxy,
    o: ClientOpts,
}

async fn route_fixture() -> RouteFixture {
    let ca = DevCa::new("route CA");
    let dir = tempdir();
    let a = backend("A", Duration::ZERO).await.port();
    let b = backend("B", Duration::ZERO).await.port();
    let slow = backend("slow", Duration::from_secs(3)).await.port();
    let tls = simple_tls(
        dir.path(),
        &ca.issue(&LeafSpec::server(&["svc.test", "svc2.test"])),
        "srv",
    );
    let to = |port: u16| {
        format!("    route:\n    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}\n")
    };
    let yaml = gateway(&[server(443, "HTTPS", &["svc.test", "svc2.test"], &tls)])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: routes
  namespace: default
spec:
  hosts: [svc.test, svc2.test]
  gateways: [ingress]
  http:
  - name: by-authority
    match:
    - authority: {{exact: svc2.test}}
{to_b}  - name: exact
    match:
    - uri: {{exact: /exact}}
{to_a}  - name: regex
    match:
    - uri: {{regex: "/re/[0-9]+"}}
{to_b}  - name: header
    match:
    - headers: {{x-pick: {{exact: b}}}}
{to_b}  - name: method
    match:
    - method: {{exact: POST}}
      uri: {{prefix: /m/}}
{to_b}  - name: rewrite
    match:
    - uri: {{prefix: /api/}}
    rewrite: {{uri: /v2/}}
{to_a}  - name: rewrite-authority
    match:
    - uri: {{prefix: /moved-host/}}
    rewrite: {{authority: inner.test}}
{to_a}  - name: header-ops
    match:
    - uri: {{prefix: /hdr}}
    headers:
      request:
        set: {{x-set: one}}
        add: {{x-add: two}}
        remove: [x-drop]
      response:
        set: {{x-resp: three}}
{to_a}  - name: split
    match:
    - uri: {{prefix: /split}}
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {a}}}}}
      weight: 50
    - destination: {{host: 127.0.0.1, port: {{number: {b}}}}}
      weight: 50
  - name: slow
    match:
    - uri: {{prefix: /slow}}
    timeout: 300ms
{to_slow}  - name: redirect
    match:
    - uri: {{prefix: /old}}
    redirect: {{uri: /new, authority: moved.test}}
  - name: direct
    match:
    - uri: {{exact: /direct}}
    directResponse: {{status: 418, body: {{string: short and stout}}}}
"#,
            to_a = to(a),
            to_b = to(b),
            to_slow = to(slow),
        );
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    RouteFixture {
        p,
        o: ClientOpts {
            sni: Some("svc.test".into()),
            ca_pem: ca.cert_pem.clone(),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn virtual_service_match_conditions_pick_the_backend() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound[&443];
    // (method, host, path, headers, status, backend, path the backend saw)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        u16,
        Option<&'static str>,
        &'static str,
    );
    let table: &[Row] = &[
        ("GET", "svc.test", "/exact", &[], 200, Some("A"), "/exact"),
        (
            "GET",
            "svc.test",
            "/exact?x=1",
            &[],
            200,
            Some("A"),
            "/exact?x=1",
        ),
        ("GET", "svc.test", "/exact/more", &[], 404, None, ""),
        ("GET", "svc.test", "/re/123", &[], 200, Some("B"), "/re/123"),
        ("GET", "svc.test", "/re/12a", &[], 404, None, ""),
        (
            "GET",
            "svc.test",
            "/any",
            &[("x-pick", "b")],
            200,
            Some("B"),
            "/any",
        ),
        ("GET", "svc.test", "/any", &[("x-pick", "c")], 404, None, ""),
        ("POST", "svc.test", "/m/x", &[], 200, Some("B"), "/m/x"),
        ("GET", "svc.test", "/m/x", &[], 404, None, ""),
        (
            "GET",
            "svc.test",
            "/api/users?id=7",
            &[],
            200,
            Some("A"),
            "/v2/users?id=7",
        ),
        ("GET", "svc2.test", "/exact", &[], 200, Some("B"), "/exact"),
        (
            "GET",
            "SVC2.test",
            "/whatever",
            &[],
            200,
            Some("B"),
            "/whatever",
        ),
    ];
    for (method, host, path, headers, status, backend, seen_path) in table {
        let what = format!("{method} {host}{path} {headers:?}");
        let r = send(addr, &f.o, method, host, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        if let Some(b) = backend {
            let v = body_json(&r);
            assert_eq!(v["backend"], *b, "{what}");
            assert_eq!(v["method"], *method, "{what}");
            assert_eq!(v["path"], *seen_path, "{what}");
            // The app sees the request's own Host (lower-case here as sent).
            assert_eq!(seen_header(&v, "host"), vec![*host], "{what}");
        } else {
            assert!(
                r.body.contains("no route matched"),
                "{what}: the 404 says why: {}",
                r.body
            );
            assert_eq!(
                r.headers
                    .get("x-meshgate-error")
                    .map(|v| v.to_str().unwrap()),
                Some("no_route"),
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn virtual_service_rewrites_the_authority() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound[&443];
    let r = send(addr, &f.o, "GET", "svc.test", "/moved-host/x?q=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert_eq!(seen_header(&v, "host"), vec!["inner.test"]);
    assert_eq!(v["path"], "/moved-host/x?q=1", "the path is kept");
}

#[tokio::test]
async fn virtual_service_header_operations() {
    let f = route_fixture().await;
    let r = send(
        f.p.proxy.inbound[&443],
        &f.o,
        "GET",
        "svc.test",
        "/hdr/x",
        &[
            ("x-set", "zero"),
            ("x-add", "one"),
            ("x-drop", "yes"),
            ("x-keep", "k"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert_eq!(seen_header(&v, "x-set"), vec!["one"], "set overwrites");
    assert_eq!(seen_header(&v, "x-add"), vec!["one", "two"], "add appends");
    assert!(seen_header(&v, "x-drop").is_empty(), "remove: {}", r.body);
    assert_eq!(seen_header(&v, "x-keep"), vec!["k"]);
    let resp: Vec<_> = r.headers.get_all("x-resp").iter().collect();
    assert_eq!(resp, vec!["three"], "response set overwrites the backend's");
}

#[tokio::test]
async fn virtual_service_weights_spread_requests() {
    let f = route_fixture().await;
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..20 {
        let r = send(
            f.p.proxy.inbound[&443],
            &f.o,
            "GET",
            "svc.test",
            &format!("/split/{i}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        *seen
            .entry(body_json(&r)["backend"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        seen.get("A").is_some_and(|n| *n > 0) && seen.get("B").is_some_and(|n| *n > 0),
        "a 50/50 split reaches both backends within 20 requests: {seen:?}"
    );
}

#[tokio::test]
async fn virtual_service_timeout_redirect_and_direct_response() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound[&443];
    let started = Instant::now();
    let r = send(addr, &f.o, "GET", "svc.test", "/slow", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        r.headers.get("x-meshgate-error").unwrap(),
        "request_timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the route timeout (300ms) applies: {:?}",
        started.elapsed()
    );

    for (path, location) in [
        ("/old", "https://moved.test/new"),
        ("/old?q=1", "https://moved.test/new?q=1"),
    ] {
        let r = send(addr, &f.o, "GET", "svc.test", path, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 301, "{path}: {}", r.body);
        assert_eq!(r.headers.get("location").unwrap(), location, "{path}");
    }

    let r = send(addr, &f.o, "GET", "svc.test", "/direct", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "short and stout");
}

// ===================================================================
// 8. Plain HTTP servers: hosts and httpsRedirect
// ===================================================================

#[tokio::test]
async fn plain_http_server_hosts_and_https_redirect() {
    let dir = tempdir();
    let b = backend("web", Duration::ZERO).await;
    let yaml = gateway(&[
        server(80, "HTTP", &["web.test"], &[]),
        server(
            80,
            "HTTP",
            &["secure.test"],
            &["httpsRedirect: true".into()],
        ),
    ]) + &route_all("web", &["web.test", "secure.test"], b);
    let p = start_ports(dir, &yaml, &[80], |_| {}).await;
    let addr = p.proxy.inbound[&80];

    let r = fetch(addr, "GET", "/p?q=1", Some("web.test"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["path"], "/p?q=1");
    assert_eq!(
        seen_header(&body_json(&r), "x-forwarded-proto"),
        vec!["http"]
    );

    let r = fetch(addr, "GET", "/p", Some("other.test")).await.unwrap();
    assert_eq!(
        r.status, 404,
        "a host outside the servers' hosts: {}",
        r.body
    );

    let r = fetch(addr, "GET", "/p?q=1", Some("secure.test"))
        .await
        .unwrap();
    assert_eq!(r.status, 301, "{}", r.body);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://secure.test/p?q=1"
    );
}

// ===================================================================
// 9. PASSTHROUGH
// ===================================================================

/// A raw TCP backend that records every byte until the client closes its
/// side, then answers `reply` and closes.
async fn recorder(reply: &'static [u8]) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let Ok((mut s, _)) = l.accept().await else {
            return;
        };
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        let _ = tx.send(got);
        let _ = s.write_all(reply).await;
        let _ = s.shutdown().await;
    });
    (addr, rx)
}

#[tokio::test]
async fn passthrough_routes_by_sni_end_to_end() {
    const REPLY: &[u8] = b"\x16\x03\x03\x00\x05backend-bytes\x00\xff";
    let backend_ca = DevCa::new("backend CA");
    let leaf = backend_ca.issue(&LeafSpec::server(&["pass.test"]));
    let standin = StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap();
    let (raw_addr, raw_rx) = recorder(REPLY).await;
    let dir = tempdir();
    let yaml = gateway(&[server(
        443,
        "TLS",
        &["pass.test", "raw.test"],
        &["mode: PASSTHROUGH".into()],
    )]) + &format!(
        r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: passthrough
  namespace: default
spec:
  hosts: [pass.test, raw.test]
  gateways: [ingress]
  tls:
  - match:
    - sniHosts: [pass.test]
      port: 443
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {standin}}}}}
  - match:
    - sniHosts: [raw.test]
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {raw}}}}}
"#,
        standin = standin.addr.port(),
        raw = raw_addr.port()
    );
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound[&443];

    // The client trusts only the backend's CA: the session is end to end.
    let o = ClientOpts {
        sni: Some("pass.test".into()),
        ca_pem: backend_ca.cert_pem.clone(),
        ..Default::default()
    };
    let tls = tls_connect(addr, &o).await.unwrap();
    assert_eq!(peer_subject(&tls), "CN=pass.test");
    let chain = tls.get_ref().1.peer_certificates().unwrap();
    assert_eq!(
        chain[0],
        der_of(&leaf.cert_pem),
        "the backend's own certificate"
    );
    let mut conn = HttpsConn::new(tls, false).await.unwrap();
    let r = conn.get("pass.test", "/through", &[]).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], "pass.test", "{}", r.body);
    assert_eq!(
        standin.last().and_then(|s| s.sni).as_deref(),
        Some("pass.test")
    );
    assert_eq!(
        metric_sum(
            &p.metrics().await,
            "meshgate_tls_handshakes_total",
            &["direction=\"inbound\""]
        ),
        0.0,
        "meshgate did not terminate"
    );

    // Byte for byte: a real ClientHello in two pieces, then arbitrary bytes.
    let hello = client_hello("raw.test");
    let trailer: &[u8] = b"\x17\x03\x03\x00\x10after-the-hello\x00\xff\x80";
    let mut sent = Vec::new();
    let mut s = TcpStream::connect(addr).await.unwrap();
    for piece in [&hello[..10], &hello[10..], trailer] {
        s.write_all(piece).await.unwrap();
        sent.extend_from_slice(piece);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    s.shutdown().await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(5), raw_rx)
        .await
        .expect("the backend saw the client close")
        .unwrap();
    assert_eq!(got, sent, "the backend received exactly the client's bytes");
    let back = read_until_closed(&mut s, Duration::from_secs(5))
        .await
        .expect("the proxy closes after the backend");
    assert_eq!(
        back, REPLY,
        "the client received exactly the backend's bytes"
    );
}

// ===================================================================
// 10. Handshake deadline, plain text on the TLS port
// ===================================================================

#[tokio::test]
async fn handshake_deadline_disconnects_slow_clients() {
    let ca = DevCa::new("deadline CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |b| {
        b.handshake_timeout = Duration::from_millis(300);
    })
    .await;
    let addr = p.proxy.inbound[&443];
    let hello = client_hello(HOST);
    let cases: [(&str, &[u8]); 3] = [
        ("nothing sent", &[]),
        ("half a ClientHello (20 bytes)", &hello[..20]),
        ("a whole ClientHello, then silence", &hello),
    ];
    for (i, (what, bytes)) in cases.into_iter().enumerate() {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(bytes).await.unwrap();
        let started = Instant::now();
        read_until_closed(&mut s, Duration::from_secs(3))
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after 3s"));
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_secs(2),
            "{what}: closed after {took:?}"
        );
        let n = wait_metric(&p, &failure_key("handshake_timeout"), (i + 1) as f64).await;
        assert_eq!(n, (i + 1) as f64, "{what}");
    }
    // A normal client still gets through.
    let r = https_get(addr, &opts(&ca), HOST, "/", &[]).await.unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn plain_text_on_the_tls_port() {
    let ca = DevCa::new("not-tls CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let b = backend("app", Duration::ZERO).await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let addr = p.proxy.inbound[&443];

    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("closed after the answer");
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("TLS"), "{text}");
    assert_eq!(wait_metric(&p, &failure_key("not_tls"), 1.0).await, 1.0);

    // Not HTTP either: closed without an answer.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01\x02garbage").await.unwrap();
    let got = read_until_closed(&mut s, Duration::from_secs(3))
        .await
        .expect("closed");
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(wait_metric(&p, &failure_key("not_tls"), 2.0).await, 2.0);
}

// ===================================================================
// 11. Sidecar ingress TLS
// ===================================================================

#[tokio::test]
async fn sidecar_ingress_simple_tls_reaches_the_default_endpoint() {
    let ca = DevCa::new("sidecar CA");
    let dir = tempdir();
    let (c, k) = ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir.path(), "srv")
        .unwrap();
    let app = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  ingress:
  - port: {{number: 8443, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:{port}
    tls:
      mode: SIMPLE
      serverCertificate: {c}
      privateKey: {k}
"#,
        port = app.port(),
        c = c.display(),
        k = k.display()
    );
    let p = start_ports(dir, &yaml, &[8443], |_| {}).await;
    for h2 in [false, true] {
        let o = ClientOpts { h2, ..opts(&ca) };
        let r = https_get(p.proxy.inbound[&8443], &o, HOST, "/side?car=1", &[])
            .await
            .unwrap();
        assert_eq!(r.status, 200, "h2={h2}: {}", r.body);
        let v = body_json(&r);
        assert_eq!(v["path"], "/side?car=1");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    let m = p.metrics().await;
    assert_eq!(
        metric_sum(
            &m,
            "meshgate_tls_handshakes_total",
            &["direction=\"inbound\"", "listener=\"127.0.0.1_8443\""]
        ),
        2.0,
        "{m}"
    );
}

// ===================================================================
// 12. Session resumption
// ===================================================================

#[tokio::test]
async fn second_handshake_from_the_same_client_is_resumed() {
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let ca = DevCa::new("resume CA");
        let dir = tempdir();
        let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
        let b = backend("app", Duration::ZERO).await;
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("app", &[HOST], b);
        let p = start_ports(dir, &yaml, &[443], |_| {}).await;
        let cfg = client_config(&ca.cert_pem, &[version], None);
        let vname = format!("{:?}", version.version);
        for (i, want) in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed]
            .into_iter()
            .enumerate()
        {
            let tls = connect_with(p.proxy.inbound[&443], cfg.clone(), HOST)
                .await
                .unwrap();
            assert_eq!(
                tls.get_ref().1.handshake_kind(),
                Some(want),
                "{vname} handshake #{}",
                i + 1
            );
            // A request, so the client reads its session tickets.
            let mut conn = HttpsConn::new(tls, false).await.unwrap();
            assert_eq!(conn.get(HOST, "/", &[]).await.unwrap().status, 200);
        }
        // The group label is left out of the match: an abbreviated TLS 1.2
        // handshake negotiates no key exchange.
        let version = format!("version=\"{vname}\"");
        let labels = |resumed: &'static str| {
            [
                "direction=\"inbound\"",
                "listener=\"127.0.0.1_443\"",
                resumed,
                version.as_str(),
            ]
        };
        let resumed = wait_sum(&p, &labels("resumed=\"true\""), 1.0).await;
        let m = p.metrics().await;
        assert_eq!(resumed, 1.0, "{vname}\n{m}");
        assert_eq!(
            metric_sum(
                &m,
                "meshgate_tls_handshakes_total",
                &labels("resumed=\"false\"")
            ),
            1.0,
            "{vname}\n{m}"
        );
    }
}

// ===================================================================
// 13. credentialName from in-config Secrets
// ===================================================================

fn secret(name: &str, data: &[(&str, &str)]) -> String {
    let mut s = format!(
        "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: default\ntype: kubernetes.io/tls\ndata:\n"
    );
    for (k, v) in data {
        s.push_str(&format!(
            "  {k}: {}\n",
            base64::engine::general_purpose::STANDARD.encode(v)
        ));
    }
    s
}

#[tokio::test]
async fn credential_name_from_config_secrets() {
    let server_ca = DevCa::new("server CA");
    let client_ca = DevCa::new("client CA");
    let decoy_ca = DevCa::new("decoy CA");
    let srv = server_ca.issue(&LeafSpec::server(&[HOST]));
    let client = client_ca.issue(&LeafSpec::client("client.test"));
    let decoy_client = decoy_ca.issue(&LeafSpec::client("client.test"));
    let id = |l: &Leaf| Some((l.cert_pem.clone(), l.key_pem.clone()));
    struct Case {
        name: &'static str,
        mode: &'static str,
        secrets: String,
        clients: Vec<(&'static str, Identity, Expect)>,
    }
    let cases = [
        Case {
            name: "SIMPLE, tls.crt/tls.key",
            mode: "SIMPLE",
            secrets: secret(
                "gw-cred",
                &[("tls.crt", &srv.cert_pem), ("tls.key", &srv.key_pem)],
            ),
            clients: vec![("no cert", None, Expect::Ok { xfcc: false })],
        },
        Case {
            name: "MUTUAL, ca.crt in the same Secret",
            mode: "MUTUAL",
            secrets: secret(
                "gw-cred",
                &[
                    ("tls.crt", &srv.cert_pem),
                    ("tls.key", &srv.key_pem),
                    ("ca.crt", &client_ca.cert_pem),
                ],
            ),
            clients: vec![
                ("client CA cert", id(&client), Expect::Ok { xfcc: true }),
                ("no cert", None, Expect::Reject("no_client_cert")),
                (
                    "decoy CA cert",
                    id(&decoy_client),
                    Expect::Reject("unknown_ca"),
                ),
            ],
        },
        Case {
            name: "MUTUAL, CA from <name>-cacert (wins over the Secret's own ca.crt)",
            mode: "MUTUAL",
            secrets: secret(
                "gw-cred",
                &[
                    ("tls.crt", &srv.cert_pem),
                    ("tls.key", &srv.key_pem),
                    ("ca.crt", &decoy_ca.cert_pem),
                ],
            ) + &secret("gw-cred-cacert", &[("ca.crt", &client_ca.cert_pem)]),
            clients: vec![
                ("client CA cert", id(&client), Expect::Ok { xfcc: true }),
                (
                    "decoy CA cert",
                    id(&decoy_client),
                    Expect::Reject("unknown_ca"),
                ),
            ],
        },
    ];
    for c in cases {
        let b = backend("app", Duration::ZERO).await;
        let tls = vec![
            format!("mode: {}", c.mode),
            "credentialName: gw-cred".into(),
        ];
        let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)])
            + &route_all("app", &[HOST], b)
            + &c.secrets;
        let p = start_ports(tempdir(), &yaml, &[443], |_| {}).await;
        for (who, identity, expect) in c.clients {
            let what = format!("{}: {who}", c.name);
            let o = ClientOpts {
                identity,
                ..opts(&server_ca)
            };
            let r = https_get(p.proxy.inbound[&443], &o, HOST, "/", &[]).await;
            match expect {
                Expect::Ok { xfcc } => {
                    let r = r.unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert_eq!(r.status, 200, "{what}: {}", r.body);
                    assert_eq!(
                        !seen_header(&body_json(&r), "x-forwarded-client-cert").is_empty(),
                        xfcc,
                        "{what}"
                    );
                }
                Expect::Reject(reason) => {
                    assert!(r.is_err(), "{what}: {r:?}");
                    assert_eq!(
                        wait_metric(&p, &failure_key(reason), 1.0).await,
                        1.0,
                        "{what}: {reason}\n{}",
                        p.metrics().await
                    );
                }
            }
        }
    }
}

// ===================================================================
// 14. WebSocket-style Upgrade
// ===================================================================

/// A raw backend that answers an Upgrade request with 101 and then echoes
/// bytes. Records each request head.
async fn upgrade_backend() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(head) = read_head(&mut s).await else {
                    return;
                };
                seen.lock().unwrap().push(head);
                let _ = s
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await;
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn websocket_upgrade_passes_through() {
    let ca = DevCa::new("ws CA");
    let dir = tempdir();
    let tls = simple_tls(dir.path(), &ca.issue(&LeafSpec::server(&[HOST])), "srv");
    let (ws, heads) = upgrade_backend().await;
    let yaml = gateway(&[server(443, "HTTPS", &[HOST], &tls)]) + &route_all("ws", &[HOST], ws);
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    let mut tls = tls_connect(p.proxy.inbound[&443], &opts(&ca))
        .await
        .unwrap();
    tls.write_all(
        format!(
            "GET /chat HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let head = tokio::time::timeout(Duration::from_secs(5), read_head(&mut tls))
        .await
        .expect("a response head")
        .unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    let backend_head = heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(
        backend_head.contains("upgrade: websocket"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("connection: upgrade"),
        "{backend_head}"
    );
    assert!(
        backend_head.contains("sec-websocket-key: dghlihnhbxbszsbub25jzq=="),
        "{backend_head}"
    );
    for msg in [
        &b"\x81\x05hello"[..],
        b"\x82\x03\x00\x01\x02 and more bytes",
    ] {
        tls.write_all(msg).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut back))
            .await
            .expect("echoed bytes arrive after the 101")
            .unwrap();
        assert_eq!(back, msg);
    }
}

/// Servers on one port with different `bind` IPs are separate listeners,
/// each serving its own hosts.
#[tokio::test]
async fn servers_binding_different_ips_on_one_port() {
    let a = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: split}}
spec:
  servers:
  - port: {{number: 8080, name: http-a, protocol: HTTP}}
    bind: 127.0.0.1
    hosts: [a.test]
  - port: {{number: 8080, name: http-b, protocol: HTTP}}
    bind: 127.0.0.2
    hosts: [b.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: both}}
spec:
  hosts: [a.test, b.test]
  gateways: [split]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        a.port()
    );
    let p = TestProxy::start(tempdir(), &yaml, |b| {
        b.port_map.insert(8080, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let listeners = &p.proxy.state.snapshot().plan.inbound.listeners;
    assert_eq!(listeners.len(), 2, "one listener per bind");
    // Each bound address answers for its own host only.
    let first = p.proxy.inbound[&8080];
    let ip = first.ip().to_string();
    let (own, other) = if ip == "127.0.0.1" {
        ("a.test", "b.test")
    } else {
        ("b.test", "a.test")
    };
    let r = meshgate::standin::fetch(first, "GET", "/", Some(own))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let r = meshgate::standin::fetch(first, "GET", "/", Some(other))
        .await
        .unwrap();
    assert_eq!(r.status, 404, "{}", r.body);
}

/// An HTTP2/GRPC server port: the app behind it is spoken to in h2c.
#[tokio::test]
async fn grpc_server_port_speaks_h2c_to_the_app() {
    let app = echo_service().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: grpc}}
spec:
  servers:
  - port: {{number: 9090, name: grpc, protocol: GRPC}}
    hosts: [grpc.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: grpc}}
spec:
  hosts: [grpc.test]
  gateways: [grpc]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        app.port()
    );
    let p = TestProxy::start(tempdir(), &yaml, |b| {
        b.port_map.insert(9090, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let r = meshgate::standin::fetch(
        p.proxy.inbound[&9090],
        "GET",
        "/svc/Method",
        Some("grpc.test"),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["version"], "HTTP/2.0", "h2c to the app: {}", r.body);
}
