//! Helpers for integration tests (feature `testing`): a proxy started
//! in-process on port 0 from YAML text, with files in a temporary directory.

use std::path::{Path, PathBuf};

use crate::app::{self, Proxy};
use crate::bootstrap::Bootstrap;
use crate::standin::{Fetched, fetch};

/// A proxy running in-process, and the directory holding its files.
pub struct TestProxy {
    /// The running proxy (addresses, state).
    pub proxy: Proxy,
    /// Temporary directory for config and certificates.
    pub dir: tempfile::TempDir,
}

/// A fresh temporary directory.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temporary directory")
}

impl TestProxy {
    /// Writes `yaml` to `<dir>/config.yaml` and starts a proxy on it with
    /// every listener on port 0. `tweak` adjusts the bootstrap.
    pub async fn start(
        dir: tempfile::TempDir,
        yaml: &str,
        tweak: impl FnOnce(&mut Bootstrap),
    ) -> Result<TestProxy, String> {
        let config = dir.path().join("config.yaml");
        std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
        let mut bootstrap = Bootstrap {
            config_paths: vec![config],
            ..Bootstrap::ephemeral()
        };
        tweak(&mut bootstrap);
        let loaded = app::load(&bootstrap).map_err(|e| e.to_string())?;
        let proxy = app::build(bootstrap, loaded)
            .await
            .map_err(|e| e.to_string())?;
        Ok(TestProxy { proxy, dir })
    }

    /// The config file path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Path of a file in the test directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// GET `path` with `Host: host`, as the app would (origin-form).
    pub async fn get(&self, host: &str, path: &str) -> Fetched {
        fetch(self.proxy.outbound, "GET", path, Some(host))
            .await
            .expect("the proxy answers")
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        fetch(
            self.proxy.stats,
            "GET",
            "/stats/prometheus",
            Some("localhost"),
        )
        .await
        .expect("stats endpoint answers")
        .body
    }

    /// The value of one metric line (exact labels as printed), 0 if absent.
    pub async fn metric(&self, name_and_labels: &str) -> f64 {
        metric_value(&self.metrics().await, name_and_labels)
    }
}

/// The value of `name{labels}` in Prometheus text, 0 when absent.
pub fn metric_value(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name_and_labels).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Writes `text` to `dir/name`, returning the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

/// How a test HTTPS client connects.
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
}

/// A TLS client connection to `addr`, or the handshake error.
pub async fn tls_connect(
    addr: std::net::SocketAddr,
    opts: &ClientOpts,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    use std::sync::Arc;
    let provider = crate::creds::provider();
    let versions = if opts.versions.is_empty() {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        opts.versions.clone()
    };
    let roots = crate::creds::roots_from_pem(opts.ca_pem.as_bytes())?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots);
    let mut config = match &opts.identity {
        Some((c, k)) => {
            let chain = crate::creds::certs_from_pem(c.as_bytes())?;
            let key = {
                use rustls_pki_types::pem::PemObject;
                rustls_pki_types::PrivateKeyDer::from_pem_slice(k.as_bytes())
                    .map_err(|e| e.to_string())?
            };
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| e.to_string())?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = if opts.h2 {
        vec![b"h2".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    let name = match &opts.sni {
        Some(s) => rustls_pki_types::ServerName::try_from(s.clone()).map_err(|e| e.to_string())?,
        None => {
            config.enable_sni = false;
            rustls_pki_types::ServerName::try_from("no-sni.invalid").map_err(|e| e.to_string())?
        }
    };
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// One HTTPS request (HTTP/1.1 or HTTP/2 per `opts.h2`) with `Host` /
/// `:authority` = `authority`. Errors include handshake failures and alerts.
pub async fn https_get(
    addr: std::net::SocketAddr,
    opts: &ClientOpts,
    authority: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Fetched, String> {
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
    ) -> Result<HttpsConn, String> {
        let io = hyper_util::rt::TokioIo::new(tls);
        if h2 {
            let (s, c) =
                hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(c);
            Ok(HttpsConn {
                h1: None,
                h2: Some(s),
            })
        } else {
            let (s, c) = hyper::client::conn::http1::handshake(io)
                .await
                .map_err(|e| e.to_string())?;
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
    ) -> Result<Fetched, String> {
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
        let req = b
            .body(http_body_util::Empty::new())
            .map_err(|e| e.to_string())?;
        let resp = match (&mut self.h1, &mut self.h2) {
            (Some(s), _) => s.send_request(req).await,
            (_, Some(s)) => s.send_request(req).await,
            _ => unreachable!("one sender is always set"),
        }
        .map_err(|e| {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            msg
        })?;
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
}

/// A plain HTTP/1.1 + h2c "local service" that echoes what it received as
/// JSON: method, path, host and every header.
pub async fn echo_service() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind echo service");
    let addr = l.local_addr().expect("local addr");
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
    addr
}
