//! Istio's certificate-signing API, `istio.v1.auth.IstioCertificateService/
//! CreateCertificate` (gRPC over TLS, bearer-token authentication): the
//! server side for `meshgate ca serve` and the client a sidecar uses to get
//! its workload certificate. The messages are small enough to encode by hand,
//! field for field as Istio's `security/v1alpha1/ca.proto` defines them:
//! `IstioCertificateRequest { string csr = 1; int64 validity_duration = 3;
//! google.protobuf.Struct metadata = 4; }` and
//! `IstioCertificateResponse { repeated string cert_chain = 1; }` (leaf
//! first, root last). `metadata` is a `Struct`
//! (`map<string, Value> fields = 1`, `Value.string_value = 3`); its string
//! values are decoded, the rest skipped.
//!
//! The `ClusterID` request header is Istio's agent's: the client sends it
//! when it knows its cluster, and a server started with a cluster ID refuses
//! a request that names another cluster (`UNAUTHENTICATED`, as istiod does
//! for a cluster it does not know); without the header the request is for
//! the server's own cluster.

use std::collections::{BTreeMap, HashMap};
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
    #[error("CA server name {name:?}: {source}")]
    ServerName {
        /// The name.
        name: String,
        /// rustls's reason.
        source: rustls::pki_types::InvalidDnsNameError,
    },
    /// The CA's host name does not resolve.
    #[error("CA {addr}: cannot resolve: {source}")]
    Resolve {
        /// The CA's address as given.
        addr: CaAddress,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The CA cannot be reached.
    #[error("CA {addr}: {source}")]
    Connect {
        /// The CA's address as given.
        addr: CaAddress,
        /// The OS error (of the last address tried).
        source: std::io::Error,
    },
    /// The TLS handshake with the CA failed.
    #[error("CA {addr}: TLS: {source}")]
    Tls {
        /// The CA's address as given.
        addr: CaAddress,
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
    /// The CA answered with an HTTP status other than 200 and no gRPC status.
    #[error("CA answered HTTP {0}")]
    HttpStatus(StatusCode),
    /// The CA answered with a gRPC error.
    #[error(
        "CA refused the request: grpc-status {status} ({}): {message}",
        status_name(status)
    )]
    Refused {
        /// `grpc-status` (`2`, UNKNOWN, when absent).
        status: u32,
        /// `grpc-message`, percent-decoded.
        message: String,
    },
    /// The CA's answer holds no certificate.
    #[error("CA returned no certificate")]
    NoCertificate,
}

impl GrpcError {
    /// The gRPC status code this error is answered with by the server.
    fn code(&self) -> u32 {
        match self {
            GrpcError::Sign(CaError::Csr(_)) => INVALID_ARGUMENT,
            GrpcError::Sign(_) => INTERNAL,
            _ => INVALID_ARGUMENT,
        }
    }
}

/// gRPC status codes used here.
const OK: u32 = 0;
const UNKNOWN: u32 = 2;
const INVALID_ARGUMENT: u32 = 3;
const UNIMPLEMENTED: u32 = 12;
const INTERNAL: u32 = 13;
const UNAUTHENTICATED: u32 = 16;

/// A gRPC status code's name, as messages show it.
pub fn status_name(status: &u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .get(*status as usize)
        .copied()
        .unwrap_or("unknown code")
}

/// The metadata key Istio uses to ask for a certificate for another
/// identity (ztunnel, for the pods on its node).
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The request header Istio's agent names its cluster in.
pub const CLUSTER_ID_HEADER: &str = "clusterid";

/// A CA address, `HOST:PORT`: a host name (resolved with the system
/// resolver at each connection), an IPv4 address or a bracketed IPv6
/// address, e.g. `istiod.istio-system.svc:15012`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaAddress {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// A CA address that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("{0:?}: expected HOST:PORT, e.g. istiod.istio-system.svc:15012")]
pub struct CaAddressError(String);

impl std::str::FromStr for CaAddress {
    type Err = CaAddressError;

    fn from_str(s: &str) -> Result<CaAddress, CaAddressError> {
        let bad = || CaAddressError(s.to_string());
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(h) => h
                .strip_suffix(']')
                .filter(|h| h.parse::<std::net::Ipv6Addr>().is_ok())
                .ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(bad());
        }
        Ok(CaAddress {
            host: host.to_string(),
            port: port.parse().map_err(|_| bad())?,
        })
    }
}

impl std::fmt::Display for CaAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl From<std::net::SocketAddr> for CaAddress {
    fn from(a: std::net::SocketAddr) -> CaAddress {
        CaAddress {
            host: a.ip().to_string(),
            port: a.port(),
        }
    }
}

/// Percent-encodes a `grpc-message` as the gRPC protocol asks (bytes
/// outside printable ASCII, and `%`).
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded `grpc-message`; malformed escapes stay as
/// they are.
fn percent_decode(message: &[u8]) -> String {
    let mut out = Vec::with_capacity(message.len());
    let mut i = 0;
    while i < message.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (message[i], message.get(i + 1), message.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
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

/// An `IstioCertificateRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateRequest {
    /// `csr` (field 1): the PEM certificate signing request.
    pub csr: String,
    /// `validity_duration` (field 3): requested lifetime in seconds; zero or
    /// negative asks for the CA's default.
    pub validity_secs: i64,
    /// `metadata` (field 4, a `google.protobuf.Struct`): its entries with a
    /// string value (`ImpersonatedIdentity`, `CertSigner`, `ClusterID`,
    /// `WorkloadName`, ...); entries of other kinds are skipped.
    pub metadata: BTreeMap<String, String>,
}

/// Encodes an `IstioCertificateRequest`; `metadata` becomes a `Struct` of
/// string values.
pub fn encode_request(csr: &str, validity: Duration, metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, csr.as_bytes());
    put_varint(&mut out, 3 << 3);
    put_varint(&mut out, validity.as_secs().min(i64::MAX as u64));
    if !metadata.is_empty() {
        let mut fields = Vec::new();
        for (k, v) in metadata {
            // Value { string_value = 3 }
            let mut value = Vec::new();
            put_bytes(&mut value, 3, v.as_bytes());
            // FieldsEntry { key = 1; value = 2 }
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, k.as_bytes());
            put_bytes(&mut entry, 2, &value);
            // Struct { map<string, Value> fields = 1 }
            put_bytes(&mut fields, 1, &entry);
        }
        put_bytes(&mut out, 4, &fields);
    }
    out
}

/// Decodes a `google.protobuf.Struct`'s string-valued entries.
fn decode_struct(buf: &[u8], out: &mut BTreeMap<String, String>) -> Result<(), GrpcError> {
    let mut entries = Vec::new();
    fields(buf, |field, v| {
        if let (1, Err(entry)) = (field, v) {
            entries.push(entry);
        }
    })?;
    for entry in entries {
        let (mut key, mut value) = (String::new(), None);
        fields(entry, |field, v| match (field, v) {
            (1, Err(k)) => key = String::from_utf8_lossy(k).into_owned(),
            (2, Err(v)) => value = Some(v),
            _ => {}
        })?;
        let mut string = None;
        if let Some(v) = value {
            fields(v, |field, v| {
                if let (3, Err(s)) = (field, v) {
                    string = Some(String::from_utf8_lossy(s).into_owned());
                }
            })?;
        }
        if let Some(s) = string {
            out.insert(key, s);
        }
    }
    Ok(())
}

/// Decodes an `IstioCertificateRequest`.
pub fn decode_request(buf: &[u8]) -> Result<CertificateRequest, GrpcError> {
    let (mut csr, mut validity, mut metadata) = (None, 0, None);
    fields(buf, |field, v| match (field, v) {
        (1, Err(b)) => csr = Some(String::from_utf8_lossy(b).into_owned()),
        // int64: a negative value is its two's complement as a varint.
        (3, Ok(n)) => validity = n as i64,
        (4, Err(b)) => metadata = Some(b),
        _ => {}
    })?;
    let mut request = CertificateRequest {
        csr: csr.ok_or(GrpcError::NoCsr)?,
        validity_secs: validity,
        metadata: BTreeMap::new(),
    };
    if let Some(m) = metadata {
        decode_struct(m, &mut request.metadata)?;
    }
    Ok(request)
}

/// `IstioCertificateResponse.cert_chain`'s field number.
const CERT_CHAIN: u64 = 1;

/// Encodes an `IstioCertificateResponse`.
pub fn encode_response(chain: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chain {
        put_bytes(&mut out, CERT_CHAIN, c.as_bytes());
    }
    out
}

/// Decodes an `IstioCertificateResponse`.
pub fn decode_response(buf: &[u8]) -> Result<Vec<String>, GrpcError> {
    let mut chain = Vec::new();
    fields(buf, |field, v| {
        if let (CERT_CHAIN, Err(b)) = (field, v) {
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

/// A gRPC response body: one message, then the status trailers; or nothing
/// at all (a trailers-only response, whose status is in the headers).
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

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }
}

fn status_headers(status: u32, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("grpc-status", HeaderValue::from(status));
    if !message.is_empty()
        && let Ok(v) = HeaderValue::from_str(&percent_encode(message))
    {
        h.insert("grpc-message", v);
    }
    h
}

fn with_content_type(mut r: Response<GrpcBody>) -> Response<GrpcBody> {
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    r
}

/// A response carrying one message, with `grpc-status: 0` in the trailers.
fn grpc_ok(message: &[u8]) -> Response<GrpcBody> {
    with_content_type(Response::new(GrpcBody {
        data: Some(frame(message)),
        trailers: Some(status_headers(OK, "")),
    }))
}

/// An error as gRPC servers answer one found before any message: a
/// trailers-only response (one HEADERS frame that ends the stream, with
/// `grpc-status` and `grpc-message`).
fn grpc_error(status: u32, message: &str) -> Response<GrpcBody> {
    let mut r = Response::new(GrpcBody {
        data: None,
        trailers: None,
    });
    *r.headers_mut() = status_headers(status, message);
    with_content_type(r)
}

/// What the CA server knows.
pub struct Signer {
    /// The CA.
    pub ca: MeshCa,
    /// Bearer token → SPIFFE ID it stands for.
    pub tokens: HashMap<String, String>,
    /// Longest validity handed out (requests asking more get this).
    pub max_validity: Duration,
    /// The cluster this CA serves: a request whose `ClusterID` header names
    /// another is refused. `None` accepts any.
    pub cluster_id: Option<String>,
}

impl Signer {
    async fn handle(&self, req: Request<Incoming>) -> Response<GrpcBody> {
        if req.uri().path() != PATH {
            return grpc_error(UNIMPLEMENTED, "unimplemented method");
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
            return grpc_error(UNAUTHENTICATED, "missing or unknown bearer token");
        };
        let cluster = req
            .headers()
            .get(CLUSTER_ID_HEADER)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        if let (Some(ours), Some(theirs)) = (&self.cluster_id, &cluster)
            && ours != theirs
        {
            warn!(identity = %identity, cluster = %theirs, "certificate request refused: another cluster");
            return grpc_error(
                UNAUTHENTICATED,
                &format!("client claims to be in cluster {theirs:?}; this CA serves {ours:?}"),
            );
        }
        let body = match Limited::new(req.into_body(), 64 * 1024).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return grpc_error(INVALID_ARGUMENT, &format!("request body: {e}")),
        };
        let request = match unframe(body).and_then(|m| decode_request(&m)) {
            Ok(r) => r,
            Err(e) => return grpc_error(e.code(), &e.to_string()),
        };
        if let Some(other) = request.metadata.get(IMPERSONATED_IDENTITY)
            && !other.is_empty()
        {
            // Istio allows this only to node agents it trusts
            // (CA_TRUSTED_NODE_ACCOUNTS); meshgate has no such list.
            warn!(identity = %identity, impersonated = %other, "certificate request refused: impersonation is not supported");
            return grpc_error(
                UNAUTHENTICATED,
                "request impersonation authentication failure",
            );
        }
        let validity = match u64::try_from(request.validity_secs) {
            Ok(s) if s > 0 => Duration::from_secs(s).min(self.max_validity),
            _ => self.max_validity,
        };
        match self.ca.sign_csr(&request.csr, &identity, validity) {
            Ok(issued) => {
                info!(identity = %identity, cluster = ?cluster, "certificate issued");
                let chain = split_pem(&issued.cert_chain_pem);
                grpc_ok(&encode_response(&chain))
            }
            Err(e) => {
                let e = GrpcError::Sign(e);
                warn!(identity = %identity, error = %e, "certificate request refused");
                grpc_error(e.code(), &e.to_string())
            }
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

/// How to reach the CA and what to ask it.
#[derive(Debug, Clone)]
pub struct CaClient {
    /// CA address (`HOST:PORT`; host names are resolved at each connection).
    pub addr: CaAddress,
    /// Name the CA's certificate must carry (Istio's `ISTIOD_SAN`); `None`:
    /// the host of `addr`.
    pub server_name: Option<String>,
    /// Roots that sign the CA's certificate (and the mesh root).
    pub root_pem: String,
    /// Bearer token (the one read at start when `token_file` is set).
    pub token: String,
    /// Where the token lives: read again for every request, so a projected
    /// service-account token the kubelet rotates is used as it is renewed.
    pub token_file: Option<std::path::PathBuf>,
    /// Sent as the `ClusterID` header when set (Istio's `CLUSTER_ID`).
    pub cluster_id: Option<String>,
    /// Requested certificate lifetime.
    pub validity: Duration,
}

impl CaClient {
    /// The bearer token to send now: `token_file`'s current content, else
    /// (no file, or it cannot be read or is empty) `token`.
    pub fn bearer(&self) -> String {
        self.token_file
            .as_deref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| self.token.clone())
    }

    /// The name the CA's certificate is verified against.
    pub fn tls_name(&self) -> &str {
        self.server_name.as_deref().unwrap_or(&self.addr.host)
    }
}

/// Resolves `addr` and connects to the first address that answers.
async fn connect(addr: &CaAddress) -> Result<tokio::net::TcpStream, GrpcError> {
    let addrs: Vec<_> = tokio::net::lookup_host((addr.host.as_str(), addr.port))
        .await
        .map_err(|source| GrpcError::Resolve {
            addr: addr.clone(),
            source,
        })?
        .collect();
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
    for a in addrs {
        match tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(a)).await
        {
            Ok(Ok(tcp)) => return Ok(tcp),
            Ok(Err(e)) => last = e,
            Err(_) => last = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"),
        }
    }
    Err(GrpcError::Connect {
        addr: addr.clone(),
        source: last,
    })
}

/// The gRPC status of an answer: from the trailers, or from the headers of
/// a trailers-only answer; `None` when neither carries one.
fn grpc_status(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> Option<(u32, String)> {
    [trailers, Some(headers)]
        .into_iter()
        .flatten()
        .find_map(|h| {
            let status = h.get("grpc-status")?;
            let status = std::str::from_utf8(status.as_bytes())
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(UNKNOWN);
            let message = h
                .get("grpc-message")
                .map(|m| percent_decode(m.as_bytes()))
                .unwrap_or_default();
            Some((status, message))
        })
}

/// Asks the CA for a certificate, with a key made here that never leaves.
/// Returns (certificate chain PEM, key PEM).
pub async fn create_certificate(ca: &CaClient) -> Result<(String, String), GrpcError> {
    let key = rcgen::KeyPair::generate().map_err(GrpcError::Csr)?;
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(GrpcError::Csr)?;
    let roots = crate::creds::roots_from_pem(ca.root_pem.as_bytes())?;
    let mut config = rustls::ClientConfig::builder_with_provider(crate::creds::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server_name = ca.tls_name();
    let name =
        rustls::pki_types::ServerName::try_from(server_name.to_string()).map_err(|source| {
            GrpcError::ServerName {
                name: server_name.to_string(),
                source,
            }
        })?;
    let tcp = connect(&ca.addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| GrpcError::Tls {
            addr: ca.addr.clone(),
            source,
        })?;
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .map_err(GrpcError::Http)?;
    tokio::spawn(conn);
    let mut req = Request::post(format!("https://{}{PATH}", ca.addr))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("te", "trailers")
        .header(
            http::header::AUTHORIZATION,
            format!("Bearer {}", ca.bearer()),
        );
    if let Some(cluster) = &ca.cluster_id {
        req = req.header(CLUSTER_ID_HEADER, cluster);
    }
    let req = req.body(Full::new(frame(&encode_request(&csr, ca.validity, &[]))))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(GrpcError::SendRequest)?;
    let (head, body) = resp.into_parts();
    // A trailers-only answer carries its status in the headers; its body is
    // empty, so reading it costs nothing.
    let collected = body.collect().await.map_err(GrpcError::Http)?;
    let status = grpc_status(&head.headers, collected.trailers());
    if let Some((status, message)) = status.clone()
        && status != OK
    {
        return Err(GrpcError::Refused { status, message });
    }
    if head.status != StatusCode::OK {
        return Err(GrpcError::HttpStatus(head.status));
    }
    if status.is_none() {
        return Err(GrpcError::Refused {
            status: UNKNOWN,
            message: "no grpc-status in the answer".into(),
        });
    }
    let chain = decode_response(&unframe(collected.to_bytes())?)?;
    if chain.is_empty() {
        return Err(GrpcError::NoCertificate);
    }
    // Istio's elements may hold several certificates, with or without a
    // final newline.
    let pem = chain.iter().fold(String::new(), |mut pem, c| {
        pem.push_str(c.trim_end());
        pem.push('\n');
        pem
    });
    Ok((pem, key.serialize_pem()))
}

#[cfg(test)]
mod tests;
