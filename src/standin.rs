//! An in-process stand-in for an external HTTPS service: real sockets, real
//! rustls, HTTP/1.1 and HTTP/2 by ALPN. Every response is a JSON echo of what
//! the service saw (SNI, TLS version, cipher, key-exchange group, client
//! certificate, Host, path), so the demo can show and tests can assert
//! what crossed the wire. Not used on the data path; only built with the
//! `demo` feature (on by default, and turned on by `testing`).

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

use crate::creds::{self, CertInfo, CredError};

/// Why a stand-in service, a client connection or a request failed. The
/// text is the underlying library's, with the address where it helps.
#[derive(Debug, thiserror::Error)]
pub enum StandInError {
    /// A certificate or CA PEM does not parse.
    #[error(transparent)]
    Pem(#[from] CredError),
    /// A private key PEM does not parse.
    #[error(transparent)]
    Key(#[from] rustls_pki_types::pem::Error),
    /// rustls refused the configuration (versions, certificate, key).
    #[error(transparent)]
    Tls(#[from] rustls::Error),
    /// The client-certificate verifier cannot be built.
    #[error(transparent)]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    /// The stand-in cannot listen on its address.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The listener's address cannot be read.
    #[error(transparent)]
    LocalAddr(std::io::Error),
    /// A plain HTTP request cannot connect.
    #[error("connect {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// A TLS client cannot connect (TCP).
    #[error(transparent)]
    TcpConnect(std::io::Error),
    /// The TLS handshake failed (alerts, verification failures).
    #[error(transparent)]
    Handshake(std::io::Error),
    /// The SNI is not a valid server name.
    #[error(transparent)]
    ServerName(#[from] rustls_pki_types::InvalidDnsNameError),
    /// The request cannot be built.
    #[error(transparent)]
    Request(#[from] http::Error),
    /// The HTTP handshake, sending, or reading the response failed.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// Sending on a reused HTTPS connection failed; the text includes the
    /// error's sources (the alert or reset behind it).
    #[error("{}", with_sources(.0))]
    Exchange(hyper::Error),
    /// An [`HttpsConn`] without a connection.
    #[error("no connection")]
    NoConnection,
}

/// `e: source: source of source ...`.
fn with_sources(e: &hyper::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}

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
    requests: Arc<AtomicU64>,
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
    pub async fn start(addr: SocketAddr, cfg: StandInConfig) -> Result<StandIn, StandInError> {
        let acceptor = Self::acceptor(&cfg)?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StandInError::Bind { addr, source })?;
        Self::serve(listener, acceptor)
    }

    /// [`StandIn::start`] on a listener the caller bound (e.g. inside
    /// another network namespace).
    pub async fn start_on(
        listener: TcpListener,
        cfg: StandInConfig,
    ) -> Result<StandIn, StandInError> {
        let acceptor = Self::acceptor(&cfg)?;
        Self::serve(listener, acceptor)
    }

    fn acceptor(cfg: &StandInConfig) -> Result<TlsAcceptor, StandInError> {
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
            .with_protocol_versions(&versions)?;
        let builder = match &cfg.client_ca_pem {
            Some(ca) => {
                let roots = creds::roots_from_pem(ca.as_bytes())?;
                let v =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                        .build()?;
                builder.with_client_cert_verifier(v)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(
            chain,
            PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes())?,
        )?;
        config.alpn_protocols = if cfg.h2 {
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        } else {
            vec![b"http/1.1".to_vec()]
        };
        Ok(TlsAcceptor::from(Arc::new(config)))
    }

    fn serve(listener: TcpListener, acceptor: TlsAcceptor) -> Result<StandIn, StandInError> {
        let addr = listener.local_addr().map_err(StandInError::LocalAddr)?;
        let s = StandIn {
            addr,
            handshakes: Arc::default(),
            requests: Arc::default(),
            failures: Arc::default(),
            last: Arc::default(),
            shutdown: CancellationToken::new(),
        };
        let requests = s.requests.clone();
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
                let requests = requests.clone();
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
                        requests.fetch_add(1, Ordering::SeqCst);
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

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
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
) -> Result<Fetched, StandInError> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| StandInError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let mut req = Request::builder().method(method).uri(target);
    if let Some(h) = host {
        req = req.header(http::header::HOST, h);
    }
    let req = req.body(http_body_util::Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Fetched {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// How a client (the demo's external client, tests) connects over TLS.
#[derive(Clone, Default)]
pub struct ClientOpts {
    /// SNI to send (`None`: no SNI).
    pub sni: Option<String>,
    /// CA certificate PEM to trust.
    pub ca_pem: String,
    /// Client certificate and key PEM.
    pub identity: Option<(String, String)>,
    /// Offer only HTTP/2 by ALPN (else only http/1.1).
    pub h2: bool,
    /// Restrict TLS versions (empty: 1.2 and 1.3).
    pub versions: Vec<&'static rustls::SupportedProtocolVersion>,
    /// Cipher suites offered, in this order (empty: the defaults).
    pub cipher_suites: Vec<rustls::SupportedCipherSuite>,
}

/// A TLS client connection to `addr`, or the handshake error.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    opts: &ClientOpts,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, StandInError> {
    use std::sync::Arc;
    let mut provider = crate::tls::provider();
    if !opts.cipher_suites.is_empty() {
        provider.cipher_suites = opts.cipher_suites.clone();
    }
    let provider = Arc::new(provider);
    let versions = if opts.versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        opts.versions.clone()
    };
    let roots = crate::creds::roots_from_pem(opts.ca_pem.as_bytes())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)?
        .with_root_certificates(roots);
    let mut config = match &opts.identity {
        Some((c, k)) => {
            let chain = crate::creds::certs_from_pem(c.as_bytes())?;
            let key = {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes())?
            };
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let name = match &opts.sni {
        Some(s) => rustls_pki_types::ServerName::try_from(s.clone())?,
        None => {
            config.enable_sni = false;
            rustls_pki_types::ServerName::try_from("no-sni.invalid")?
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(StandInError::TcpConnect)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(StandInError::Handshake)
}

/// One HTTPS request (HTTP/1.1 or HTTP/2 per `opts.h2`) with `Host` /
/// `:authority` = `authority`. Errors include handshake failures and alerts.
pub async fn https_get(
    addr: std::net::SocketAddr,
    opts: &ClientOpts,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, StandInError> {
    let tls = tls_connect(addr, opts).await?;
    let mut conn = HttpsConn::new(tls, opts.h2).await?;
    conn.get(authority, path, headers).await
}

/// A client HTTPS connection that can carry several requests.
pub struct HttpsConn {
    h1: Option<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
    h2: Option<hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>>,
}

impl HttpsConn {
    /// Wraps an established TLS stream.
    pub async fn new(
        tls: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
        h2: bool,
    ) -> Result<HttpsConn, StandInError> {
        let io = hyper_util::rt::TokioIo::new(tls);
        if h2 {
            let (s, c) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await?;
            tokio::spawn(c);
            Ok(HttpsConn {
                h1: None,
                h2: Some(s),
            })
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(c);
            Ok(HttpsConn {
                h1: Some(s),
                h2: None,
            })
        }
    }

    /// GET `path` on this connection.
    pub async fn get(
        &mut self,
        authority: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Fetched, StandInError> {
        use http_body_util::BodyExt;
        let mut b = http::Request::builder().method("GET");
        if self.h2.is_some() {
            b = b.uri(format!("https://{authority}{path}"));
        } else {
            b = b.uri(path).header(http::header::HOST, authority);
        }
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(http_body_util::Empty::new())?;
        // Wait until the connection can take the next request (the previous
        // response may still be finishing).
        let resp = match (&mut self.h1, &mut self.h2) {
            (Some(s), _) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            (_, Some(s)) => match s.ready().await {
                Ok(()) => s.send_request(req).await,
                Err(e) => Err(e),
            },
            _ => return Err(StandInError::NoConnection),
        }
        .map_err(StandInError::Exchange)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Fetched {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// A plain HTTP/1.1 + h2c "local service" (the app behind the sidecar) on
/// 127.0.0.1 that echoes what it received as JSON: method, path, version
/// and every header. Panics if it cannot bind (tests only).
pub async fn echo_service() -> std::net::SocketAddr {
    start_echo_service(([127, 0, 0, 1], 0).into())
        .await
        .expect("bind echo service")
}

/// [`echo_service`] on `addr`.
pub async fn start_echo_service(
    addr: std::net::SocketAddr,
) -> std::io::Result<std::net::SocketAddr> {
    let l = tokio::net::TcpListener::bind(addr).await?;
    serve_echo_service(l)
}

/// [`echo_service`] on a listener the caller bound (e.g. inside another
/// network namespace); its address.
pub fn serve_echo_service(l: tokio::net::TcpListener) -> std::io::Result<std::net::SocketAddr> {
    let addr = l.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { return };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let headers: serde_json::Map<String, serde_json::Value> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.to_string(),
                                    serde_json::Value::String(v.to_str().unwrap_or("").to_string()),
                                )
                            })
                            .collect();
                        let body = serde_json::json!({
                            "method": req.method().as_str(),
                            "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                            "version": format!("{:?}", req.version()),
                            "headers": headers,
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                        ))
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
    Ok(addr)
}
