//! Outbound TLS origination, end to end: the proxy in-process on port 0, a
//! stand-in upstream with real rustls, certificates made here with rcgen.

use meshgate::bootstrap::OutboundTrafficPolicy;
use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::standin::{StandIn, StandInConfig, fetch};
use meshgate::test_util::{TestProxy, tempdir, write};

const HOST: &str = "api.external.test";

/// ServiceEntry (port 80 → targetPort 443, STATIC endpoint on the stand-in)
/// plus a DestinationRule whose port-level tls block is `tls`.
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

struct Pki {
    ca: DevCa,
    dir: tempfile::TempDir,
    ca_file: std::path::PathBuf,
}

fn pki() -> Pki {
    let dir = tempdir();
    let ca = DevCa::new("test CA");
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    Pki { ca, dir, ca_file }
}

async fn upstream(pki: &Pki, spec: LeafSpec) -> StandIn {
    let leaf = pki.ca.issue(&spec);
    StandIn::start(
        ([127, 0, 0, 1], 0).into(),
        StandInConfig::new(&leaf.cert_pem, &leaf.key_pem),
    )
    .await
    .unwrap()
}

fn simple(ca: &std::path::Path) -> String {
    format!(
        "        mode: SIMPLE\n        caCertificates: {}",
        ca.display()
    )
}

async fn proxy(pki: Pki, yaml: &str) -> TestProxy {
    TestProxy::start(pki.dir, yaml, |_| {}).await.unwrap()
}

/// A plain HTTP/1.1 server answering `plain:<path>`.
async fn plain_server() -> std::net::SocketAddr {
    use http_body_util::Full;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            bytes::Bytes::from(format!("plain:{}", req.uri().path())),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A CONNECT to `target` (`host:port`) through the proxy, answered 200.
async fn connect_tunnel(p: &TestProxy, target: &str) -> tokio::net::TcpStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // The head only, a byte at a time: what follows it (a server that
    // speaks first) stays in the stream for the caller.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        let n = s.read(&mut byte).await.unwrap();
        assert_eq!(n, 1, "the tunnel closed in its head: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s
}

mod connect_tls;
mod fidelity;
mod isolation;
mod lifecycle;
mod mesh_routes;
mod operations;
mod parity;
mod revocation;
mod routing;
mod tls;
mod tls_policy;
