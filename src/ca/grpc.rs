//! Istio's certificate-signing API, `istio.v1.auth.IstioCertificateService/
//! CreateCertificate` (gRPC over TLS, bearer-token authentication): the
//! server side for `meshgate ca serve` and the client a sidecar uses to get
//! its workload certificate. The two messages are small enough to encode by
//! hand:
//! `IstioCertificateRequest { string csr = 1; int64 validity_duration = 3; Struct metadata = 4; }`,
//! `IstioCertificateResponse { repeated string cert_chain = 200; }`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::MeshCa;

/// The method's path.
pub const PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

// === protobuf ===

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or("truncated varint")?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long".into())
}

fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Visits every field: (field number, varint value or length-delimited bytes).
fn fields<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u64, Result<u64, &'a [u8]>),
) -> Result<(), String> {
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => f(field, Ok(get_varint(&mut buf)?)),
            2 => {
                let len = get_varint(&mut buf)? as usize;
                if len > buf.len() {
                    return Err("truncated field".into());
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                f(field, Err(v));
            }
            1 => buf = buf.get(8..).ok_or("truncated fixed64")?,
            5 => buf = buf.get(4..).ok_or("truncated fixed32")?,
            w => return Err(format!("unsupported wire type {w}")),
        }
    }
    Ok(())
}

/// Encodes an `IstioCertificateRequest`.
pub fn encode_request(csr: &str, validity: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, csr.as_bytes());
    put_varint(&mut out, 3 << 3);
    put_varint(&mut out, validity.as_secs());
    out
}

/// Decodes an `IstioCertificateRequest` into (csr, validity seconds).
pub fn decode_request(buf: &[u8]) -> Result<(String, u64), String> {
    let (mut csr, mut validity) = (None, 0);
    fields(buf, |field, v| match (field, v) {
        (1, Err(b)) => csr = Some(String::from_utf8_lossy(b).into_owned()),
        (3, Ok(n)) => validity = n,
        _ => {}
    })?;
    Ok((csr.ok_or("no csr")?, validity))
}

/// Encodes an `IstioCertificateResponse`.
pub fn encode_response(chain: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chain {
        put_bytes(&mut out, 200, c.as_bytes());
    }
    out
}

/// Decodes an `IstioCertificateResponse`.
pub fn decode_response(buf: &[u8]) -> Result<Vec<String>, String> {
    let mut chain = Vec::new();
    fields(buf, |field, v| {
        if let (200, Err(b)) = (field, v) {
            chain.push(String::from_utf8_lossy(b).into_owned());
        }
    })?;
    Ok(chain)
}

fn frame(msg: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(msg.len() + 5);
    out.push(0);
    out.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    out.extend_from_slice(msg);
    Bytes::from(out)
}

fn unframe(mut body: Bytes) -> Result<Bytes, String> {
    if body.len() < 5 {
        return Err("short gRPC frame".into());
    }
    if body[0] != 0 {
        return Err("compressed gRPC messages are not supported".into());
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.advance(5);
    if body.len() < len {
        return Err("truncated gRPC frame".into());
    }
    Ok(body.split_to(len))
}

// === server ===

/// A gRPC response body: one message, then the status trailers.
struct GrpcBody {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl hyper::body::Body for GrpcBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if let Some(d) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }
}

fn grpc_response(data: Option<Bytes>, status: u32, message: &str) -> Response<GrpcBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from(status));
    if let Ok(v) = HeaderValue::from_str(message) {
        trailers.insert("grpc-message", v);
    }
    let mut r = Response::new(GrpcBody {
        data,
        trailers: Some(trailers),
    });
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// What the CA server knows.
pub struct Signer {
    /// The CA.
    pub ca: MeshCa,
    /// Bearer token → SPIFFE ID it stands for.
    pub tokens: HashMap<String, String>,
    /// Longest validity handed out (requests asking more get this).
    pub max_validity: Duration,
}

impl Signer {
    async fn handle(&self, req: Request<Incoming>) -> Response<GrpcBody> {
        if req.uri().path() != PATH {
            return grpc_response(None, 12, "unimplemented method");
        }
        let identity = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .and_then(|t| self.tokens.get(t.trim()))
            .cloned();
        let Some(identity) = identity else {
            warn!("certificate request refused: missing or unknown bearer token");
            return grpc_response(None, 16, "missing or unknown bearer token");
        };
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return grpc_response(None, 3, &format!("request body: {e}")),
        };
        let signed = unframe(body)
            .and_then(|m| decode_request(&m))
            .and_then(|(csr, secs)| {
                let validity = Duration::from_secs(secs).min(self.max_validity);
                let validity = if validity.is_zero() {
                    self.max_validity
                } else {
                    validity
                };
                self.ca.sign_csr(&csr, &identity, validity)
            });
        match signed {
            Ok(issued) => {
                info!(identity = %identity, "certificate issued");
                let chain = split_pem(&issued.cert_chain_pem);
                grpc_response(Some(frame(&encode_response(&chain))), 0, "")
            }
            Err(e) => grpc_response(None, 3, &e),
        }
    }
}

/// Splits a PEM bundle into one string per certificate.
fn split_pem(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .map(|c| c.trim().to_string())
        .filter(|c| c.starts_with("-----BEGIN"))
        .map(|c| c + "\n")
        .collect()
}

/// Serves the signing API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    signer: Arc<Signer>,
    shutdown: CancellationToken,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
        };
        let (tls, signer) = (tls.clone(), signer.clone());
        tokio::spawn(async move {
            let Ok(stream) = tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            else {
                return;
            };
            let Ok(stream) = stream else { return };
            let svc = hyper::service::service_fn(move |req| {
                let signer = signer.clone();
                async move { Ok::<_, Infallible>(signer.handle(req).await) }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                debug!(%peer, error = %e, "CA connection ended with an error");
            }
        });
    }
}

// === client ===

/// Asks the CA at `addr` (TLS name `server_name`, trusted through
/// `root_pem`) for a certificate, with a key made here that never leaves.
/// Returns (certificate chain PEM, key PEM).
pub async fn create_certificate(
    addr: std::net::SocketAddr,
    server_name: &str,
    root_pem: &str,
    token: &str,
    validity: Duration,
) -> Result<(String, String), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|e| e.to_string())?;
    let roots = crate::creds::roots_from_pem(root_pem.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::creds::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("CA {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("CA {addr}: TLS: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::post(format!("https://{server_name}{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(frame(&encode_request(&csr, validity))))
        .map_err(|e| e.to_string())?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("CA request: {e}"))?;
    if resp.status() != StatusCode::OK {
        return Err(format!("CA answered HTTP {}", resp.status()));
    }
    let collected = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("2")
        .to_string();
    if status != "0" {
        let msg = collected
            .trailers()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let name = if status == "16" {
            "UNAUTHENTICATED"
        } else {
            "error"
        };
        return Err(format!(
            "CA refused the request: grpc-status {status} ({name}): {msg}"
        ));
    }
    let chain = decode_response(&unframe(collected.to_bytes())?)?;
    if chain.is_empty() {
        return Err("CA returned no certificate".into());
    }
    Ok((chain.concat(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response_round_trip() {
        let enc = encode_request(
            "-----BEGIN CERTIFICATE REQUEST-----\nx\n",
            Duration::from_secs(86400),
        );
        assert_eq!(
            decode_request(&enc).unwrap(),
            ("-----BEGIN CERTIFICATE REQUEST-----\nx\n".into(), 86400)
        );
        let chain = vec!["a".to_string(), "b".repeat(300)];
        assert_eq!(decode_response(&encode_response(&chain)).unwrap(), chain);
        assert_eq!(
            &encode_response(&["z".into()])[..2],
            &[0xC2, 0x0C],
            "field 200, wire type 2"
        );
        assert!(
            decode_request(&[0x0A, 0x05, b'x']).is_err(),
            "truncated input is an error, not a panic"
        );
        assert!(unframe(Bytes::from_static(&[0, 0, 0, 0, 9, 1])).is_err());
    }
}
