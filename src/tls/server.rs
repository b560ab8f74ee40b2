//! Server (termination) TLS: a rustls `ServerConfig` per Gateway server,
//! built from its plan and loaded credentials.
//!
//! Dual certificates (RSA + ECDSA) are chosen per ClientHello; client
//! certificates are verified against the server's CA and CRL, then against
//! `subjectAltNames`, `verifyCertificateSpki` and `verifyCertificateHash`.

use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureAlgorithm,
    SignatureScheme,
};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::failure::{FailureReason, VerifyFailure};
use crate::creds::{CertInfo, Credentials};
use crate::plan::inbound::{ServerTlsPlan, TlsServerMode, TlsVersion};

/// Why a server config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ServerTlsError {
    /// rustls refused the protocol versions.
    #[error("{origin}: {source}")]
    Versions {
        /// The server.
        origin: String,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// The client CA was not loaded.
    #[error("{origin}: client CA was not loaded")]
    ClientCaNotLoaded {
        /// The server.
        origin: String,
    },
    /// rustls refused the client verifier.
    #[error("{origin}: client verifier: {source}")]
    Verifier {
        /// The server.
        origin: String,
        /// rustls' reason.
        source: rustls::server::VerifierBuilderError,
    },
    /// A server certificate was not loaded.
    #[error("{origin}: server certificate was not loaded")]
    CertNotLoaded {
        /// The server.
        origin: String,
    },
    /// Session tickets could not be set up.
    #[error("session tickets: {0}")]
    Tickets(rustls::Error),
}

/// TLS session resumption state that outlives configurations: a session
/// ticket key set (rotated by rustls on its own schedule) and a session
/// cache. One per client-verification policy, because a resumed session
/// keeps the client identity verified when it was issued: a ticket issued
/// under one policy must never resume under another.
#[derive(Clone)]
pub struct Resumption {
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    cache: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Resumption {
    /// Fresh keys and an empty cache.
    pub fn new() -> Result<Resumption, ServerTlsError> {
        Ok(Resumption {
            ticketer: rustls::crypto::aws_lc_rs::Ticketer::new()
                .map_err(ServerTlsError::Tickets)?,
            cache: rustls::server::ServerSessionMemoryCache::new(4096),
        })
    }
}

/// ALPN offered by HTTP servers, in the server's order of preference.
pub const ALPN_HTTP: [&[u8]; 3] = [b"h2", b"http/1.1", b"http/1.0"];

/// Builds the server config for `tls`; `http` offers ALPN h2, http/1.1
/// and http/1.0. Sessions resume with `resumption`.
pub fn build(
    tls: &ServerTlsPlan,
    http: bool,
    creds: &Credentials,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, ServerTlsError> {
    let mut provider = crate::tls::provider();
    if !tls.cipher_suites.is_empty() {
        // Istio's cipherSuites restrict TLS 1.2, in the order given; TLS 1.3
        // suites stay (as in Envoy, they are not configurable).
        let rank = |s: &rustls::SupportedCipherSuite| {
            let name = format!("{:?}", s.suite());
            tls.cipher_suites.iter().position(|n| *n == name)
        };
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13 || rank(s).is_some());
        provider
            .cipher_suites
            .sort_by_key(|s| (s.version() != &rustls::version::TLS13, rank(s)));
    }
    let provider = Arc::new(provider);
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = [
        (TlsVersion::Tls13, &rustls::version::TLS13),
        (TlsVersion::Tls12, &rustls::version::TLS12),
    ]
    .into_iter()
    .filter(|(v, _)| *v >= tls.min_version && *v <= tls.max_version)
    .map(|(_, p)| p)
    .collect();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|source| ServerTlsError::Versions {
            origin: tls.origin.clone(),
            source,
        })?;
    let builder = match client_verifier(tls, creds, &provider)? {
        None => builder.with_no_client_auth(),
        Some(verifier) => builder.with_client_cert_verifier(verifier),
    };
    let mut keys = Vec::new();
    for source in &tls.certs {
        let id = creds
            .servers
            .get(source)
            .ok_or_else(|| ServerTlsError::CertNotLoaded {
                origin: tls.origin.clone(),
            })?;
        keys.push(id.certified.clone());
    }
    let mut config = builder.with_cert_resolver(Arc::new(CertChooser { keys }));
    config.alpn_protocols = if http {
        // `http/1.0` too, as nginx and HAProxy accept it: `curl --http1.0`
        // offers only that, and rustls refuses a client whose ALPN list
        // has nothing in common with the server's.
        ALPN_HTTP.iter().map(|p| p.to_vec()).collect()
    } else {
        Vec::new()
    };
    // The server's order decides, as with Envoy: AES-128-GCM first, or
    // the order of the Gateway's `cipherSuites`.
    config.ignore_client_order = true;
    config.ticketer = resumption.ticketer.clone();
    config.session_storage = resumption.cache.clone();
    Ok(Arc::new(config))
}

/// The verifier of client certificates of a MUTUAL or OPTIONAL_MUTUAL
/// server: the client CA and CRL, then Istio's allow-lists. `None` for
/// modes that ask for no client certificate.
pub fn client_verifier(
    tls: &ServerTlsPlan,
    creds: &Credentials,
    provider: &Arc<rustls::crypto::CryptoProvider>,
) -> Result<Option<Arc<dyn ClientCertVerifier>>, ServerTlsError> {
    if matches!(tls.mode, TlsServerMode::Simple | TlsServerMode::Passthrough) {
        return Ok(None);
    }
    let ca = tls
        .client_ca
        .as_ref()
        .and_then(|ca| creds.client_cas.get(&(ca.clone(), tls.crl.clone())))
        .ok_or_else(|| ServerTlsError::ClientCaNotLoaded {
            origin: tls.origin.clone(),
        })?;
    let mut inner = WebPkiClientVerifier::builder_with_provider(ca.roots.clone(), provider.clone())
        .with_crls(ca.crls.clone());
    if tls.mode == TlsServerMode::OptionalMutual {
        inner = inner.allow_unauthenticated();
    }
    let inner = inner.build().map_err(|source| ServerTlsError::Verifier {
        origin: tls.origin.clone(),
        source,
    })?;
    Ok(Some(Arc::new(PolicyVerifier {
        inner,
        sans: tls.subject_alt_names.clone(),
        spki: tls.spki_sha256.clone(),
        hashes: tls.cert_sha256.clone(),
        insecure: tls.insecure_skip_verify,
        trust_source: ca.source.clone(),
    })))
}

/// Chooses between an ECDSA and an RSA certificate by what the client
/// signs with; the first certificate otherwise.
#[derive(Debug)]
struct CertChooser {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for CertChooser {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let schemes = hello.signature_schemes();
        let supports = |alg: SignatureAlgorithm| {
            schemes.iter().any(|s| match alg {
                SignatureAlgorithm::ECDSA => matches!(
                    s,
                    SignatureScheme::ECDSA_NISTP256_SHA256
                        | SignatureScheme::ECDSA_NISTP384_SHA384
                        | SignatureScheme::ECDSA_NISTP521_SHA512
                ),
                SignatureAlgorithm::ED25519 => *s == SignatureScheme::ED25519,
                SignatureAlgorithm::RSA => matches!(
                    s,
                    SignatureScheme::RSA_PSS_SHA256
                        | SignatureScheme::RSA_PSS_SHA384
                        | SignatureScheme::RSA_PSS_SHA512
                        | SignatureScheme::RSA_PKCS1_SHA256
                        | SignatureScheme::RSA_PKCS1_SHA384
                        | SignatureScheme::RSA_PKCS1_SHA512
                ),
                _ => false,
            })
        };
        // As Envoy: ECDSA for clients that can verify it, else RSA,
        // whatever order the certificates were listed in.
        [
            SignatureAlgorithm::ECDSA,
            SignatureAlgorithm::ED25519,
            SignatureAlgorithm::RSA,
        ]
        .into_iter()
        .filter(|alg| supports(*alg))
        .find_map(|alg| self.keys.iter().find(|k| k.key.algorithm() == alg))
        .or_else(|| self.keys.first())
        .cloned()
    }
}

/// Web PKI verification, then Istio's allow-lists for client certificates.
#[derive(Debug)]
struct PolicyVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    sans: Vec<String>,
    spki: Vec<Vec<u8>>,
    hashes: Vec<Vec<u8>>,
    insecure: bool,
    trust_source: String,
}

impl PolicyVerifier {
    fn refuse(reason: FailureReason, detail: String) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
            VerifyFailure { reason, detail },
        ))))
    }

    fn check_lists(&self, end_entity: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let info = CertInfo::parse(end_entity)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        if !self.sans.is_empty() {
            let ok = info.sans.iter().any(|san| {
                let value = san.split_once(':').map(|(_, v)| v).unwrap_or(san);
                // `spiffe://<domain>/*`: any workload of the trust domain.
                self.sans
                    .iter()
                    .any(|allowed| match allowed.strip_suffix('*') {
                        Some(prefix) => value.starts_with(prefix),
                        None => allowed == value,
                    })
            });
            if !ok {
                return Err(Self::refuse(
                    FailureReason::SanNotAllowed,
                    format!(
                        "client certificate {:?} has SANs [{}], none in subjectAltNames [{}]",
                        info.subject,
                        info.sans.join(", "),
                        self.sans.join(", ")
                    ),
                ));
            }
        }
        if !self.spki.is_empty() || !self.hashes.is_empty() {
            let cert_hash =
                aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity.as_ref());
            let spki_hash = X509Certificate::from_der(end_entity.as_ref())
                .map(|(_, c)| {
                    aws_lc_rs::digest::digest(
                        &aws_lc_rs::digest::SHA256,
                        c.tbs_certificate.subject_pki.raw,
                    )
                })
                .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
            let ok = self
                .hashes
                .iter()
                .any(|h| h.as_slice() == cert_hash.as_ref())
                || self.spki.iter().any(|h| h.as_slice() == spki_hash.as_ref());
            if !ok {
                return Err(Self::refuse(
                    FailureReason::CertNotAllowed,
                    format!(
                        "client certificate {:?} (sha256 {}) matches neither verifyCertificateHash nor verifyCertificateSpki",
                        info.subject, info.sha256
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl ClientCertVerifier for PolicyVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verdict = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
            .inspect_err(|e| {
                // The error stays rustls' own, so the client gets the alert
                // OpenSSL and BoringSSL (Envoy) send: `unknown_ca` for a
                // certificate from another CA, not `certificate_unknown`.
                if let rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) = e {
                    tracing::debug!(
                        client = %CertInfo::parse(end_entity)
                            .map(|i| i.summary())
                            .unwrap_or_default(),
                        trust = %self.trust_source,
                        "client certificate does not chain to the client CA"
                    );
                }
            })
            .and_then(|v| self.check_lists(end_entity).map(|()| v));
        match verdict {
            Err(e) if self.insecure => {
                tracing::warn!(error = %e, "client certificate accepted despite failing validation (insecureSkipVerify)");
                Ok(ClientCertVerified::assertion())
            }
            other => other,
        }
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
