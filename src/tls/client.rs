//! Client (origination) TLS: one `ClientConfig` per distinct (settings,
//! expected names), so TLS sessions are resumed across pooled connections.
//!
//! Verification follows Istio: the chain against `caCertificates` or the
//! system roots, then the server's names against `subjectAltNames` (any one),
//! else the request's host. SNI is chosen by the caller. Verification is
//! skipped only when `insecureSkipVerify: true` is configured.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::failure::{FailureReason, VerifyFailure};
use crate::creds::{CertInfo, Credentials};
use crate::plan::{ClientTlsPlan, TlsMode};

/// ALPN for HTTP/1.1 only.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";
/// ALPN for HTTP/2.
pub const ALPN_H2: &[u8] = b"h2";

/// Builds the rustls client config for `tls`, verifying the server against
/// `names`. `h2` offers HTTP/2 by ALPN. Errors name the missing credential.
pub fn build(
    tls: &ClientTlsPlan,
    names: &[String],
    h2: bool,
    creds: &Credentials,
) -> Result<Arc<ClientConfig>, ClientTlsError> {
    debug_assert!(tls.mode != TlsMode::Disable);
    let provider = crate::creds::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ClientTlsError::Versions)?
        .dangerous();
    let verifier: Arc<dyn ServerCertVerifier> = if tls.insecure_skip_verify {
        Arc::new(NoVerify(provider.clone()))
    } else {
        let trust = creds
            .trust
            .get(&(tls.trust.clone(), tls.crl.clone()))
            .ok_or_else(|| ClientTlsError::TrustNotLoaded {
                origin: tls.origin.clone(),
            })?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(trust.roots.clone(), provider.clone())
                .with_crls(trust.crls.clone())
                .build()
                .map_err(|source| ClientTlsError::Verifier {
                    origin: tls.origin.clone(),
                    source,
                })?;
        Arc::new(NamesVerifier::new(inner, names, trust.source.clone()))
    };
    let builder = builder.with_custom_certificate_verifier(verifier);
    let mut config = match (&tls.mode, &tls.identity) {
        (TlsMode::Mutual, Some(id)) => {
            let identity =
                creds
                    .identities
                    .get(id)
                    .ok_or_else(|| ClientTlsError::IdentityNotLoaded {
                        origin: tls.origin.clone(),
                    })?;
            builder.with_client_cert_resolver(Arc::new(FixedClientCert(identity.certified.clone())))
        }
        // No certificate to present; the resolver notes that one was asked
        // for, for the failure's reason. One resolver for every connection,
        // so sessions resume (rustls resumes only under the same one).
        _ => builder.with_client_cert_resolver(Arc::new(NoCertNoted)),
    };
    config.alpn_protocols = if h2 {
        vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()]
    } else if tls.mesh_trust_domain.is_some() {
        // What Istio sidecars offer for mesh mTLS, so an Envoy inbound
        // listener recognises it; plain http/1.1 for other peers.
        vec![
            b"istio-http/1.1".to_vec(),
            b"istio".to_vec(),
            ALPN_HTTP11.to_vec(),
        ]
    } else {
        vec![ALPN_HTTP11.to_vec()]
    };
    Ok(Arc::new(config))
}

/// Why a client config could not be built (a credential the plan names is
/// not loaded, or rustls refused the settings).
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The trust roots were not loaded.
    #[error("{origin}: trust roots were not loaded")]
    TrustNotLoaded {
        /// The referencing setting.
        origin: String,
    },
    /// The client certificate was not loaded.
    #[error("{origin}: client certificate was not loaded")]
    IdentityNotLoaded {
        /// The referencing setting.
        origin: String,
    },
    /// rustls refused the verifier settings.
    #[error("{origin}: verifier: {source}")]
    Verifier {
        /// The referencing setting.
        origin: String,
        /// rustls' reason.
        source: rustls::client::VerifierBuilderError,
    },
    /// rustls refused the protocol versions.
    #[error("TLS versions: {0}")]
    Versions(rustls::Error),
}

/// Presents one fixed client certificate.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

// === impl NamesVerifier ===

/// Verifies the chain with webpki, then accepts the certificate if any of
/// the expected names (DNS, IP or URI SANs) is present. Failures carry a
/// classified reason and the details a user needs.
#[derive(Debug)]
pub struct NamesVerifier {
    inner: Arc<WebPkiServerVerifier>,
    server_names: Vec<ServerName<'static>>,
    uris: Vec<String>,
    expected: Vec<String>,
    trust_source: String,
}

impl NamesVerifier {
    fn new(inner: Arc<WebPkiServerVerifier>, names: &[String], trust_source: String) -> Self {
        let mut server_names = Vec::new();
        let mut uris = Vec::new();
        for n in names {
            if n.contains("://") {
                uris.push(n.clone());
            } else if let Ok(sn) = ServerName::try_from(n.clone()) {
                server_names.push(sn);
            }
        }
        NamesVerifier {
            inner,
            server_names,
            uris,
            expected: names.to_vec(),
            trust_source,
        }
    }

    fn failure(
        &self,
        reason: FailureReason,
        end_entity: &CertificateDer<'_>,
        what: String,
    ) -> rustls::Error {
        let presented = CertInfo::parse(end_entity)
            .map(|i| {
                let mut s = i.summary();
                if i.version < 3 {
                    s.push_str(&format!(
                        "; it is an X.509 v{} certificate, which TLS clients reject: re-issue it as v3 with a subjectAltName",
                        i.version
                    ));
                } else if reason == FailureReason::SanMismatch && i.sans.is_empty() {
                    s.push_str("; it has no subjectAltName (a CN-only certificate is not accepted for any name): re-issue it with subjectAltName=DNS:<host>");
                }
                s
            })
            .unwrap_or_else(|e| e.to_string());
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            VerifyFailure {
                reason,
                detail: format!("{what}; presented certificate: {presented}"),
            },
        ))))
    }
}

impl ServerCertVerifier for NamesVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // A name that no certificate has, to check the chain alone when only
        // URI SANs are expected.
        let placeholder = ServerName::try_from("meshgate.invalid").expect("static name");
        let first = self.server_names.first().unwrap_or(&placeholder);
        let chain_ok =
            match self
                .inner
                .verify_server_cert(end_entity, intermediates, first, ocsp, now)
            {
                Ok(v) => return Ok(v),
                Err(rustls::Error::InvalidCertificate(
                    CertificateError::NotValidForName
                    | CertificateError::NotValidForNameContext { .. },
                )) => true,
                Err(rustls::Error::InvalidCertificate(ce)) => {
                    let (reason, what) = match &ce {
                        CertificateError::UnknownIssuer => (
                            FailureReason::UnknownCa,
                            format!(
                                "the certificate chain does not lead to a CA in {}",
                                self.trust_source
                            ),
                        ),
                        CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                            FailureReason::Expired,
                            format!("certificate expired ({ce})"),
                        ),
                        CertificateError::NotValidYet
                        | CertificateError::NotValidYetContext { .. } => (
                            FailureReason::NotYetValid,
                            format!("certificate not valid yet ({ce})"),
                        ),
                        CertificateError::Revoked => (
                            FailureReason::Revoked,
                            "certificate revoked by the configured CRL".into(),
                        ),
                        _ => (
                            FailureReason::BadCertificate,
                            format!("certificate rejected: {ce}"),
                        ),
                    };
                    return Err(self.failure(reason, end_entity, what));
                }
                Err(e) => return Err(e),
            };
        debug_assert!(chain_ok);
        for name in self.server_names.iter().skip(1) {
            if let Ok(v) = self
                .inner
                .verify_server_cert(end_entity, intermediates, name, ocsp, now)
            {
                return Ok(v);
            }
        }
        // A URI ending in `/*` (ISTIO_MUTUAL's "any workload of the trust
        // domain") matches by prefix; others exactly.
        let uri_ok = |u: &str| {
            self.uris.iter().any(|x| match x.strip_suffix('*') {
                Some(prefix) => u.starts_with(prefix),
                None => x == u,
            })
        };
        if !self.uris.is_empty()
            && let Ok(info) = CertInfo::parse(end_entity)
            && info
                .sans
                .iter()
                .filter_map(|s| s.strip_prefix("URI:"))
                .any(uri_ok)
        {
            return Ok(ServerCertVerified::assertion());
        }
        Err(self.failure(
            FailureReason::SanMismatch,
            end_entity,
            format!(
                "expected one of [{}] in the certificate's subjectAltName",
                self.expected.join(", ")
            ),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

// === impl NoVerify ===

/// `insecureSkipVerify: true`: any certificate is accepted, but handshake
/// signatures are still checked.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// === connect ===

/// A failed client handshake: its reason and the details for the log.
#[derive(Debug, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct HandshakeError {
    /// Classified reason.
    pub reason: FailureReason,
    /// What happened, for the log.
    pub detail: String,
}

/// Runs a client TLS handshake over `io` with `config`, classifying a
/// failure with what the handshake reached: an upstream that asked for a
/// client certificate meshgate has none for is `client_cert_required`
/// (TLS 1.2 servers say only `handshake_failure`), and one that refused
/// the ClientHello itself with `handshake_failure` is `no_shared_cipher`.
pub async fn connect<IO>(
    config: &Arc<ClientConfig>,
    sni: ServerName<'static>,
    io: IO,
) -> Result<tokio_rustls::client::TlsStream<Watched<IO>>, HandshakeError>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let progress = Arc::new(Progress::default());
    let io = Watched {
        io,
        progress: progress.clone(),
    };
    let handshake = tokio_rustls::TlsConnector::from(config.clone()).connect(sni, io);
    let e = match HANDSHAKE.scope(progress.clone(), handshake).await {
        Ok(tls) => return Ok(tls),
        Err(e) => e,
    };
    let Some((reason, detail)) = super::failure::classify(&e) else {
        return Err(HandshakeError {
            reason: FailureReason::HandshakeFailure,
            detail: format!("TLS handshake: {e}"),
        });
    };
    let first_alert = progress
        .first_record
        .load(std::sync::atomic::Ordering::Relaxed)
        == ALERT_RECORD;
    let asked = progress
        .cert_asked
        .load(std::sync::atomic::Ordering::Relaxed);
    Err(match reason {
        FailureReason::HandshakeFailure | FailureReason::ClientCertRejected if asked => {
            HandshakeError {
                reason: FailureReason::ClientCertRequired,
                detail: format!(
                    "the upstream asked for a client certificate and none is configured ({detail}); use tls.mode MUTUAL with clientCertificate/privateKey or credentialName"
                ),
            }
        }
        FailureReason::HandshakeFailure
            if first_alert
                && matches!(
                    super::failure::alert_of(&e),
                    Some(rustls::AlertDescription::HandshakeFailure)
                ) =>
        {
            HandshakeError {
                reason: FailureReason::NoSharedCipher,
                detail: format!(
                    "the upstream refused the ClientHello ({detail}): no cipher suite in common (meshgate offers TLS 1.3 and TLS 1.2 ECDHE AEAD suites only: AES-GCM, ChaCha20-Poly1305), or no key-exchange group or signature scheme in common"
                ),
            }
        }
        reason => HandshakeError { reason, detail },
    })
}

/// What a client handshake reached, for [`connect`] to classify its failure.
#[derive(Debug, Default)]
struct Progress {
    /// The content type of the first record the server sent (0 before any).
    first_record: std::sync::atomic::AtomicU8,
    /// The server asked for a client certificate.
    cert_asked: std::sync::atomic::AtomicBool,
}

/// The TLS record content type of an alert.
const ALERT_RECORD: u8 = 0x15;

tokio::task_local! {
    /// The handshake [`connect`] is running in this task.
    static HANDSHAKE: Arc<Progress>;
}

/// No client certificate; notes in the running handshake ([`HANDSHAKE`])
/// that one was asked for.
#[derive(Debug)]
struct NoCertNoted;

impl ResolvesClientCert for NoCertNoted {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        let _ = HANDSHAKE.try_with(|p| {
            p.cert_asked
                .store(true, std::sync::atomic::Ordering::Relaxed);
        });
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

/// A connection's transport, noting the first record type the server sent.
#[derive(Debug)]
pub struct Watched<IO> {
    io: IO,
    progress: Arc<Progress>,
}

impl<IO> Watched<IO> {
    /// The transport.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

impl<IO: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.io).poll_read(cx, buf);
        if let Some(&first) = buf.filled().get(before) {
            let _ = self.progress.first_record.compare_exchange(
                0,
                first,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            );
        }
        res
    }
}

impl<IO: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
