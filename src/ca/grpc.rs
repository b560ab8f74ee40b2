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

use super::{CaError, MeshCa};
use crate::creds::CredError;

/// The method's path.
pub const PATH: &str = "/istio.v1.auth.IstioCertificateService/CreateCertificate";

/// Why a certificate request failed, on either side: a malformed message,
/// the CA refusing to sign, or the client unable to reach or use the CA.
#[derive(Debug, thiserror::Error)]
pub enum GrpcError {
    /// A message or frame ends early (`varint`, `field`, `fixed64`,
    /// `fixed32`, `gRPC frame`).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A varint longer than 64 bits.
    #[error("varint too long")]
    VarintTooLong,
    /// A protobuf wire type this decoder does not know (3 or 4: groups).
    #[error("unsupported wire type {0}")]
    WireType(u64),
    /// A request without a CSR.
    #[error("no csr")]
    NoCsr,
    /// A body shorter than the 5-byte gRPC frame header.
    #[error("short gRPC frame")]
    ShortFrame,
    /// A compressed gRPC message.
    #[error("compressed gRPC messages are not supported")]
    Compressed,
    /// The CA could not sign the request.
    #[error(transparent)]
    Sign(#[from] CaError),
    /// Making the workload's key or CSR failed.
    #[error(transparent)]
    Csr(rcgen::Error),
    /// The CA root does not parse.
    #[error(transparent)]
    Roots(#[from] CredError),
    /// The TLS client cannot be set up.
    #[error(transparent)]
    TlsConfig(#[from] rustls::Error),
    /// The CA's name is not a valid TLS server name.
    #[error(transparent)]
    ServerName(#[from] rustls::pki_types::InvalidDnsNameError),
    /// The CA cannot be reached.
    #[error("CA {addr}: {source}")]
    Connect {
        /// The CA's address.
        addr: std::net::SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS handshake with the CA failed.
    #[error("CA {addr}: TLS: {source}")]
    Tls {
        /// The CA's address.
        addr: std::net::SocketAddr,
        /// The handshake error.
        source: std::io::Error,
    },
    /// The HTTP/2 connection, or reading the answer, failed.
    #[error(transparent)]
    Http(hyper::Error),
    /// The request cannot be built.
    #[error(transparent)]
    Request(#[from] http::Error),
    /// Sending the request failed.
    #[error("CA request: {0}")]
    SendRequest(#[source] hyper::Error),
    /// The CA answered with an HTTP status other than 200.
    #[error("CA answered HTTP {0}")]
    HttpStatus(StatusCode),
    /// The CA answered with a gRPC error.
    #[error(
        "CA refused the request: grpc-status {status} ({}): {message}",
        status_name(status)
    )]
    Refused {
        /// `grpc-status` (`2` when absent).
        status: String,
        /// `grpc-message`.
        message: String,
    },
    /// The CA's answer holds no certificate.
    #[error("CA returned no certificate")]
    NoCertificate,
}

/// How a refusal's `grpc-status` is named in messages.
fn status_name(status: &str) -> &'static str {
    if status == "16" {
        "UNAUTHENTICATED"
    } else {
        "error"
    }
}

// === protobuf ===

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, GrpcError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(GrpcError::Truncated("varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(GrpcError::VarintTooLong)
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
) -> Result<(), GrpcError> {
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => f(field, Ok(get_varint(&mut buf)?)),
            2 => {
                let len = get_varint(&mut buf)? as usize;
                if len > buf.len() {
                    return Err(GrpcError::Truncated("field"));
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                f(field, Err(v));
            }
            1 => buf = buf.get(8..).ok_or(GrpcError::Truncated("fixed64"))?,
            5 => buf = buf.get(4..).ok_or(GrpcError::Truncated("fixed32"))?,
            w => return Err(GrpcError::WireType(w)),
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
pub fn decode_request(buf: &[u8]) -> Result<(String, u64), GrpcError> {
    let (mut csr, mut validity) = (None, 0);
    fields(buf, |field, v| match (field, v) {
        (1, Err(b)) => csr = Some(String::from_utf8_lossy(b).into_owned()),
        (3, Ok(n)) => validity = n,
        _ => {}
    })?;
    Ok((csr.ok_or(GrpcError::NoCsr)?, validity))
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
pub fn decode_response(buf: &[u8]) -> Result<Vec<String>, GrpcError> {
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

fn unframe(mut body: Bytes) -> Result<Bytes, GrpcError> {
    if body.len() < 5 {
        return Err(GrpcError::ShortFrame);
    }
    if body[0] != 0 {
        return Err(GrpcError::Compressed);
    }
    let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
    body.advance(5);
    if body.len() < len {
        return Err(GrpcError::Truncated("gRPC frame"));
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
                Ok(self.ca.sign_csr(&csr, &identity, validity)?)
            });
        match signed {
            Ok(issued) => {
                info!(identity = %identity, "certificate issued");
                let chain = split_pem(&issued.cert_chain_pem);
                grpc_response(Some(frame(&encode_response(&chain))), 0, "")
            }
            Err(e) => grpc_response(None, 3, &e.to_string()),
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
) -> Result<(String, String), GrpcError> {
    let key = rcgen::KeyPair::generate().map_err(GrpcError::Csr)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(GrpcError::Csr)?;
    let roots = crate::creds::roots_from_pem(root_pem.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::creds::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| GrpcError::Connect { addr, source })?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| GrpcError::Tls { addr, source })?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(GrpcError::Http)?;
    tokio::spawn(conn);
    let req = Request::post(format!("https://{server_name}{PATH}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(frame(&encode_request(&csr, validity))))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(GrpcError::SendRequest)?;
    if resp.status() != StatusCode::OK {
        return Err(GrpcError::HttpStatus(resp.status()));
    }
    let collected = resp.into_body().collect().await.map_err(GrpcError::Http)?;
    let status = collected
        .trailers()
        .and_then(|t| t.get("grpc-status"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("2")
        .to_string();
    if status != "0" {
        let message = collected
            .trailers()
            .and_then(|t| t.get("grpc-message"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        return Err(GrpcError::Refused { status, message });
    }
    let chain = decode_response(&unframe(collected.to_bytes())?)?;
    if chain.is_empty() {
        return Err(GrpcError::NoCertificate);
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
