//! An in-process stand-in for an external HTTPS service: real sockets, real
//! rustls, HTTP/1.1 and HTTP/2 by ALPN. Every response is a JSON echo of what
//! the service saw (SNI, TLS version, cipher, key-exchange group, client
//! certificate, Host, path), so the demo can show and tests can assert
//! what crossed the wire. Not used on the data path.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::creds::{self, CertInfo};

/// What the stand-in saw on one TLS connection.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Seen {
    /// SNI the client sent.
    pub sni: Option<String>,
    /// Negotiated TLS version.
    pub version: String,
    /// Negotiated cipher suite.
    pub cipher: String,
    /// Negotiated key-exchange group.
    pub group: String,
    /// ALPN protocol.
    pub alpn: String,
    /// Subject of the client certificate, if one was presented.
    pub client_cert: Option<String>,
    /// Whether the session was resumed.
    pub resumed: bool,
}

/// A running stand-in service.
pub struct StandIn {
    /// Where it listens.
    pub addr: SocketAddr,
    handshakes: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    last: Arc<Mutex<Option<Seen>>>,
    shutdown: CancellationToken,
}

/// How the stand-in presents itself.
pub struct StandInConfig {
    /// Certificate chain PEM and key PEM.
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// Require client certificates signed by this CA (PEM).
    pub client_ca_pem: Option<String>,
    /// Offer HTTP/2 by ALPN.
    pub h2: bool,
    /// Allowed TLS versions (empty: 1.2 and 1.3).
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

impl StandInConfig {
    /// A server with this certificate and key, no client auth.
    pub fn new(cert_pem: &str, key_pem: &str) -> Self {
        StandInConfig {
            cert_pem: cert_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
            h2: false,
            versions: Vec::new(),
        }
    }
}

impl StandIn {
    /// Starts the service on `addr` (port 0 for any).
    pub async fn start(addr: SocketAddr, cfg: StandInConfig) -> Result<StandIn, String> {
        let provider = creds::provider();
        // No validity checks here: tests serve expired and not-yet-valid
        // certificates on purpose.
        let chain = creds::certs_from_pem(cfg.cert_pem.as_bytes())?;
        let versions = if cfg.versions.is_empty() {
            vec![&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            cfg.versions.clone()
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&versions)
            .map_err(|e| e.to_string())?;
        let builder = match &cfg.client_ca_pem {
            Some(ca) => {
                let roots = creds::roots_from_pem(ca.as_bytes())?;
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()
                        .map_err(|e| e.to_string())?;
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(
                chain,
                PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes()).map_err(|e| e.to_string())?,
            )
            .map_err(|e| e.to_string())?;
        config.alpn_protocols = if cfg.h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("bind {addr}: {e}"))?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let s = StandIn {
            addr,
            handshakes: Arc::default(),
            failures: Arc::default(),
            last: Arc::default(),
            shutdown: CancellationToken::new(),
        };
        let (handshakes, failures, last, shutdown) = (
            s.handshakes.clone(),
            s.failures.clone(),
            s.last.clone(),
            s.shutdown.clone(),
        );
        tokio::spawn(async move {
            loop {
                let (tcp, _) = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = listener.accept() => match r { Ok(x) => x, Err(_) => continue },
                };
                let acceptor = acceptor.clone();
                let (handshakes, failures, last) =
                    (handshakes.clone(), failures.clone(), last.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(t) => t,
                        Err(e) => {
                            failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push(e.to_string());
                            return;
                        }
                    };
                    handshakes.fetch_add(1, Ordering::SeqCst);
                    let (_, conn) = tls.get_ref();
                    let seen = Seen {
                        sni: conn.server_name().map(str::to_string),
                        version: conn
                            .protocol_version()
                            .map(|v| format!("{v:?}"))
                            .unwrap_or_default(),
                        cipher: conn
                            .negotiated_cipher_suite()
                            .map(|c| format!("{:?}", c.suite()))
                            .unwrap_or_default(),
                        group: conn
                            .negotiated_key_exchange_group()
                            .map(|g| format!("{:?}", g.name()))
                            .unwrap_or_default(),
                        alpn: conn
                            .alpn_protocol()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                            .unwrap_or_default(),
                        client_cert: conn
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .and_then(|c| CertInfo::parse(c).ok())
                            .map(|i| i.subject),
                        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                    };
                    *last.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen.clone());
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(echo(req, &seen).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Ok(s)
    }

    /// TLS handshakes completed so far.
    pub fn handshakes(&self) -> u64 {
        self.handshakes.load(Ordering::SeqCst)
    }

    /// Handshake errors seen by the server.
    pub fn failures(&self) -> Vec<String> {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// What the most recent connection negotiated.
    pub fn last(&self) -> Option<Seen> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn echo(req: Request<Incoming>, seen: &Seen) -> Response<Full<Bytes>> {
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    let method = req.method().to_string();
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let version = format!("{:?}", req.version());
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let v = serde_json::json!({
        "service": "stand-in external service",
        "method": method, "path": path, "host": host, "http": version, "bodyBytes": body,
        "tls": seen,
    });
    let mut r = Response::new(Full::new(Bytes::from(v.to_string() + "\n")));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}

/// A response as a plain client saw it.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// Status code.
    pub status: u16,
    /// Response headers.
    pub headers: http::HeaderMap,
    /// Body as text.
    pub body: String,
}

/// Sends one plain HTTP/1.1 request to `addr` with the given request target
/// (origin-form `/path` or absolute-form `http://host/path`) and `Host`
/// header, like an application behind the sidecar.
pub async fn fetch(
    addr: SocketAddr,
    method: &str,
    target: &str,
    host: Option<&str>,
) -> Result<Fetched, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target);
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    let req = req
        .body(http_body_util::Empty::<Bytes>::new())
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
