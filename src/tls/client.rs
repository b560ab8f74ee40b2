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
        _ => builder.with_no_client_auth(),
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
