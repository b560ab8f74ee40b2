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
    let addr = p.proxy.inbound()[&443];
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
    let tls = tls_connect(addr, opts).await.map_err(|e| e.to_string())?;
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

/// What a client should see.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// 200; whether the app sees an XFCC header.
    Ok { xfcc: bool },
    /// The request fails; this failure reason is counted.
    Reject(&'static str),
}

/// A client certificate and key, PEM.
type Identity = Option<(String, String)>;

mod client_auth;
mod connections;
mod fault;
mod isolation;
mod lifecycle;
mod revocation;
mod routing;
mod scoping;
mod selection;
mod tls;
