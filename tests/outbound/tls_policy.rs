//! `outboundTlsPolicy: REQUIRE` (force encryption): plain text from the
//! app leaves the pod only inside TLS that meshgate originates or to a
//! listed exception; the app's own TLS passes through a CONNECT tunnel;
//! anything else is refused (`plaintext_refused`: 403 for a request, a
//! closed tunnel) before a byte reaches the upstream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use meshgate::bootstrap::{Bootstrap, TlsPolicyMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// No ServiceEntry origination: a DestinationRule-less host.
const PLAIN: &str = "plain.external.test";
/// Listed in `exceptions`.
const LEGACY: &str = "legacy.external.test";
/// A TLS port the app speaks TLS to itself.
const APP_TLS: &str = "apptls.external.test";

/// A plain TCP server that counts connections and the bytes it receives,
/// and answers any bytes with a plain HTTP response `plain`.
#[derive(Clone)]
struct Recorder {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
}

impl Recorder {
    async fn start() -> Recorder {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let r = Recorder {
            addr: l.local_addr().unwrap(),
            connections: Arc::default(),
            bytes: Arc::default(),
        };
        let seen = r.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else {
                    return;
                };
                seen.connections.fetch_add(1, Ordering::SeqCst);
                let bytes = seen.bytes.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            return;
                        }
                        bytes.fetch_add(n as u64, Ordering::SeqCst);
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            let _ = s
                                .write_all(
                                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nplain",
                                )
                                .await;
                            return;
                        }
                    }
                });
            }
        });
        r
    }

    fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }
}

/// A ServiceEntry for `host` port `port` (protocol `protocol`) with one
/// STATIC endpoint on `to`.
fn entry(name: &str, host: &str, port: u16, protocol: &str, to: std::net::SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
spec:
  hosts: [{host}]
  location: MESH_EXTERNAL
  ports:
  - number: {port}
    name: p
    protocol: {protocol}
  resolution: STATIC
  endpoints:
  - address: {ip}
    ports:
      p: {to_port}
---
"#,
        ip = to.ip(),
        to_port = to.port()
    )
}

struct Setup {
    proxy: TestProxy,
    /// The TLS stand-in behind `HOST` (originated) and `APP_TLS`.
    up: StandIn,
    plain: Recorder,
    legacy: Recorder,
    ca_pem: String,
}

/// `HOST:80` originated with SIMPLE TLS to a stand-in, `PLAIN:80` and
/// `LEGACY:80` plain recorders, `APP_TLS:443` (TLS) the same stand-in;
/// `tweak` adjusts the bootstrap.
async fn setup(tweak: impl FnOnce(&mut Bootstrap, &Recorder)) -> Setup {
    let pki = pki();
    let up = upstream(&pki, LeafSpec::server(&[HOST, APP_TLS])).await;
    let plain = Recorder::start().await;
    let legacy = Recorder::start().await;
    let yaml = format!(
        "{}{}{}---\n{}",
        entry("plain", PLAIN, 80, "HTTP", plain.addr),
        entry("legacy", LEGACY, 80, "HTTP", legacy.addr),
        entry("apptls", APP_TLS, 443, "TLS", up.addr),
        egress_yaml(up.addr.port(), &simple(&pki.ca_file)),
    );
    let ca_pem = pki.ca.cert_pem.clone();
    let recorder = plain.clone();
    let proxy = TestProxy::start(pki.dir, &yaml, |b| tweak(b, &recorder))
        .await
        .unwrap();
    Setup {
        proxy,
        up,
        plain,
        legacy,
        ca_pem,
    }
}

/// REQUIRE, with `LEGACY:80` as the exception.
fn require(b: &mut Bootstrap, _: &Recorder) {
    b.outbound_tls_policy.mode = TlsPolicyMode::Require;
    b.outbound_tls_policy.exceptions = vec![(LEGACY.into(), 80)];
    // A silent tunnel is decided quickly.
    b.request_header_timeout = Duration::from_millis(500);
}

fn assert_refused(r: &meshgate::standin::Fetched, authority: &str) {
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.headers
            .get("x-meshgate-error")
            .and_then(|v| v.to_str().ok()),
        Some("plaintext_refused"),
        "{:?}",
        r.headers
    );
    for want in [authority, "DestinationRule", "outboundTlsPolicy.exceptions"] {
        assert!(r.body.contains(want), "{want:?} in {}", r.body);
    }
}

#[tokio::test]
async fn plain_http_leaves_only_inside_originated_tls_or_to_an_exception() {
    let s = setup(require).await;
    let p = &s.proxy;

    // Originated: verified TLS, as the DestinationRule says.
    let r = p.get(HOST, "/originated").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["tls"]["sni"], HOST);
    assert_eq!(v["path"], "/originated");

    // No origination: 403, and the upstream saw nothing.
    assert_refused(&p.get(PLAIN, "/x").await, "plain.external.test:80");
    // An https:// absolute-form request is plain text from the app too.
    let r = fetch(
        p.proxy.outbound,
        "GET",
        &format!("https://{PLAIN}:80/x"),
        None,
    )
    .await
    .unwrap();
    assert_refused(&r, "plain.external.test:80");
    // ALLOW_ANY passthrough to a host no ServiceEntry declares.
    let unknown = format!("127.0.0.1:{}", s.plain.addr.port());
    let r = fetch(
        p.proxy.outbound,
        "GET",
        &format!("http://{unknown}/x"),
        None,
    )
    .await
    .unwrap();
    assert_refused(&r, &unknown);
    assert_eq!(s.plain.connections(), 0, "nothing was dialled");

    // The exception: plain text as before.
    let r = p.get(LEGACY, "/legacy").await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));
    assert!(s.legacy.bytes() > 0);

    assert_eq!(
        p.metric("meshgate_plaintext_refused_total{kind=\"http\"}")
            .await,
        3.0
    );
    assert_eq!(
        p.metric("meshgate_plaintext_refused_total{kind=\"tcp\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn allow_mode_and_an_ip_exception_send_plain_text() {
    // ALLOW (the default): as before.
    let s = setup(|_, _| {}).await;
    let r = s.proxy.get(PLAIN, "/x").await;
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));
    drop(s);

    // REQUIRE with the passthrough destination's IP and port listed.
    let s = setup(|b, plain| {
        require(b, plain);
        b.outbound_tls_policy
            .exceptions
            .push(("127.0.0.1".into(), plain.addr.port()));
    })
    .await;
    let r = fetch(
        s.proxy.proxy.outbound,
        "GET",
        &format!("http://127.0.0.1:{}/x", s.plain.addr.port()),
        None,
    )
    .await
    .unwrap();
    assert_eq!((r.status, r.body.as_str()), (200, "plain"));
    // The ServiceEntry host on the same endpoint is not listed.
    assert_refused(&s.proxy.get(PLAIN, "/x").await, "plain.external.test:80");
}

/// Everything the tunnel's upstream side sends back until it closes
/// (bounded by 5 s).
async fn read_all(s: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the tunnel was not closed");
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_tunnel_carries_the_apps_tls_and_closes_on_plain_bytes() {
    let s = setup(require).await;
    let p = &s.proxy;

    // The app's own TLS, verified by the app, to a port nothing originates.
    let tunnel = connect_tunnel(p, &format!("{APP_TLS}:443")).await;
    let roots = meshgate::creds::roots_from_pem(s.ca_pem.as_bytes()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(APP_TLS.try_into().unwrap(), tunnel)
        .await
        .expect("the app's TLS passes through");
    tls.write_all(
        format!("GET /own HTTP/1.1\r\nHost: {APP_TLS}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/own"),
        "{out}"
    );

    // Plain bytes to a host nothing originates: closed, nothing sent.
    let mut t = connect_tunnel(p, &format!("{PLAIN}:80")).await;
    t.write_all(format!("GET /x HTTP/1.1\r\nHost: {PLAIN}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_all(&mut t).await, "", "closed without an answer");
    // Silence (a protocol whose server speaks first) is not TLS either.
    let mut t = connect_tunnel(p, &format!("{PLAIN}:80")).await;
    assert_eq!(read_all(&mut t).await, "");
    assert_eq!(s.plain.bytes(), 0, "no byte reached the upstream");

    // Plain bytes to an originating host are wrapped in its TLS.
    let mut t = connect_tunnel(p, &format!("{HOST}:80")).await;
    t.write_all(
        format!("GET /wrapped HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let out = read_all(&mut t).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/wrapped"),
        "{out}"
    );
    assert_eq!(s.up.last().unwrap().sni.as_deref(), Some(HOST));

    // And to the exception, as they are.
    let mut t = connect_tunnel(p, &format!("{LEGACY}:80")).await;
    t.write_all(format!("GET /l HTTP/1.1\r\nHost: {LEGACY}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let out = read_all(&mut t).await;
    assert!(out.ends_with("plain"), "{out}");

    assert_eq!(
        p.metric("meshgate_plaintext_refused_total{kind=\"tcp\"}")
            .await,
        2.0
    );
}
