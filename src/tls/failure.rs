//! Stable, actionable reasons for TLS and connection failures.
//!
//! A reason is short and bounded (safe as a metric label and in the
//! `x-meshgate-error` header); the details (expected vs presented names,
//! issuer, notAfter) go to the log only.

use std::error::Error as StdError;
use std::fmt;

use rustls::{AlertDescription, CertificateError};

/// Why an upstream connection or handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureReason {
    /// The certificate does not chain to a trusted CA.
    UnknownCa,
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// None of the expected names is in the certificate.
    SanMismatch,
    /// The certificate is revoked by a configured CRL.
    Revoked,
    /// The certificate cannot be used (X.509 v1, unsupported algorithm, bad encoding).
    BadCertificate,
    /// The peer requires a client certificate and none was configured.
    ClientCertRequired,
    /// The peer rejected the client certificate.
    ClientCertRejected,
    /// The client rejected meshgate's server certificate (its alert, seen
    /// by an inbound listener).
    ServerCertRejected,
    /// No TLS version in common.
    ProtocolVersion,
    /// No cipher suite in common (or, seen from a client, the server
    /// refused the ClientHello before answering it).
    NoSharedCipher,
    /// Any other handshake failure (no shared group, bad message).
    HandshakeFailure,
    /// The peer answered in plain text, not TLS.
    NotTls,
    /// TCP connection refused.
    ConnectRefused,
    /// TCP connect (or TLS handshake) took longer than the connect timeout.
    ConnectTimeout,
    /// The host name did not resolve.
    DnsFailure,
    /// The destination has no endpoints (a ServiceEntry whose endpoints
    /// are workloads meshgate cannot know, or STATIC without any; Envoy's
    /// "no healthy upstream").
    NoEndpoints,
    /// The connection was reset or closed during the exchange.
    ConnectionReset,
    /// The destination is meshgate's own listener.
    LoopDetected,
    /// The client sent no certificate where one is required.
    NoClientCert,
    /// The client certificate's SANs are not in `subjectAltNames`.
    SanNotAllowed,
    /// The client certificate matches neither `verifyCertificateHash` nor
    /// `verifyCertificateSpki`.
    CertNotAllowed,
    /// No server on the port serves the requested SNI.
    UnknownSni,
    /// The client did not finish its handshake in time.
    HandshakeTimeout,
    /// The upstream did not answer within the route's timeout.
    RequestTimeout,
    /// No route for the request, SNI or connection.
    NoRoute,
    /// The network has no route to the upstream's address.
    NoRouteToHost,
    /// TCP connect failed for another reason (address not available, ...).
    ConnectFailed,
    /// A credential the destination's TLS settings need is not loaded.
    CredentialUnavailable,
    /// The SNI to send is not a valid server name.
    InvalidSni,
    /// A client sent an SNI that is not a valid host name (too long, not
    /// UTF-8, not a DNS name).
    BadSni,
}

impl FailureReason {
    /// The stable name used in headers, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::UnknownCa => "unknown_ca",
            FailureReason::Expired => "expired",
            FailureReason::NotYetValid => "not_yet_valid",
            FailureReason::SanMismatch => "san_mismatch",
            FailureReason::Revoked => "revoked",
            FailureReason::BadCertificate => "bad_certificate",
            FailureReason::ClientCertRequired => "client_cert_required",
            FailureReason::ClientCertRejected => "client_cert_rejected",
            FailureReason::ServerCertRejected => "server_cert_rejected",
            FailureReason::ProtocolVersion => "protocol_version",
            FailureReason::NoSharedCipher => "no_shared_cipher",
            FailureReason::HandshakeFailure => "handshake_failure",
            FailureReason::NotTls => "not_tls",
            FailureReason::ConnectRefused => "connect_refused",
            FailureReason::ConnectTimeout => "connect_timeout",
            FailureReason::DnsFailure => "dns_failure",
            FailureReason::NoEndpoints => "no_endpoints",
            FailureReason::ConnectionReset => "upstream_reset",
            FailureReason::LoopDetected => "loop_detected",
            FailureReason::NoClientCert => "no_client_cert",
            FailureReason::SanNotAllowed => "san_not_allowed",
            FailureReason::CertNotAllowed => "cert_not_allowed",
            FailureReason::UnknownSni => "unknown_sni",
            FailureReason::HandshakeTimeout => "handshake_timeout",
            FailureReason::RequestTimeout => "request_timeout",
            FailureReason::NoRoute => "no_route",
            FailureReason::NoRouteToHost => "no_route_to_host",
            FailureReason::ConnectFailed => "connect_error",
            FailureReason::CredentialUnavailable => "credential_unavailable",
            FailureReason::InvalidSni => "invalid_sni",
            FailureReason::BadSni => "bad_sni",
        }
    }

    /// The reason as an inbound listener sees it: a certificate alert
    /// received there is the client rejecting meshgate's server
    /// certificate, not a client certificate being rejected.
    pub fn as_server(self) -> FailureReason {
        match self {
            FailureReason::ClientCertRejected => FailureReason::ServerCertRejected,
            other => other,
        }
    }

    /// Whether this is a TLS-level failure (counted as a handshake failure).
    pub fn is_tls(self) -> bool {
        !matches!(
            self,
            FailureReason::ConnectRefused
                | FailureReason::ConnectTimeout
                | FailureReason::DnsFailure
                | FailureReason::NoEndpoints
                | FailureReason::ConnectionReset
                | FailureReason::LoopDetected
                | FailureReason::RequestTimeout
                | FailureReason::NoRouteToHost
                | FailureReason::ConnectFailed
                | FailureReason::CredentialUnavailable
                | FailureReason::InvalidSni
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A verification failure with its reason and human details, carried
/// through rustls as `CertificateError::Other`.
#[derive(Debug)]
pub struct VerifyFailure {
    /// Classified reason.
    pub reason: FailureReason,
    /// Expected vs presented names, issuer, validity.
    pub detail: String,
}

impl fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

impl StdError for VerifyFailure {}

/// Finds a rustls error in an error chain (through `io::Error` wrappers)
/// and classifies it. `None` when the chain holds no TLS error.
pub fn classify(err: &(dyn StdError + 'static)) -> Option<(FailureReason, String)> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(t) = e.downcast_ref::<rustls::Error>() {
            return Some(classify_rustls(t));
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && let Some(t) = io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
        {
            return Some(classify_rustls(t));
        }
        cur = e.source();
    }
    None
}

/// The alert the peer sent, if the error chain holds one.
pub fn alert_of(err: &(dyn StdError + 'static)) -> Option<AlertDescription> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        let t = e.downcast_ref::<rustls::Error>().or_else(|| {
            e.downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|i| i.downcast_ref::<rustls::Error>())
        });
        if let Some(rustls::Error::AlertReceived(a)) = t {
            return Some(*a);
        }
        cur = e.source();
    }
    None
}

/// Classifies one rustls error.
pub fn classify_rustls(e: &rustls::Error) -> (FailureReason, String) {
    use FailureReason as R;
    let reason = match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Other(other) => {
                if let Some(v) = other.0.downcast_ref::<VerifyFailure>() {
                    return (v.reason, v.detail.clone());
                }
                R::BadCertificate
            }
            CertificateError::UnknownIssuer => R::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => R::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                R::NotYetValid
            }
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                R::SanMismatch
            }
            CertificateError::Revoked => R::Revoked,
            _ => R::BadCertificate,
        },
        rustls::Error::AlertReceived(a) => match a {
            AlertDescription::CertificateRequired => R::ClientCertRequired,
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateUnknown
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateRevoked
            | AlertDescription::UnsupportedCertificate
            | AlertDescription::AccessDenied => R::ClientCertRejected,
            AlertDescription::ProtocolVersion => R::ProtocolVersion,
            _ => R::HandshakeFailure,
        },
        rustls::Error::NoCertificatesPresented => R::NoClientCert,
        rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType)
        | rustls::Error::InvalidMessage(rustls::InvalidMessage::UnknownProtocolVersion) => {
            R::NotTls
        }
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoCipherSuitesInCommon) => {
            R::NoSharedCipher
        }
        rustls::Error::PeerIncompatible(p) => {
            // e.g. Tls12NotOffered, Tls12NotOfferedOrEnabled,
            // SupportedVersionsExtensionRequired
            let name = format!("{p:?}");
            if name.contains("Version") || name.starts_with("Tls1") {
                R::ProtocolVersion
            } else {
                R::HandshakeFailure
            }
        }
        rustls::Error::PeerMisbehaved(rustls::PeerMisbehaved::ServerNameMustContainOneHostName)
        | rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidServerName) => R::BadSni,
        _ => R::HandshakeFailure,
    };
    let detail = match (reason, e) {
        (R::NotTls, _) => "the upstream answered in plain text on a TLS connection (is this port plain HTTP? use tls.mode DISABLE)".to_string(),
        (R::UnknownCa, rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "the peer's certificate does not chain to a trusted CA".to_string(),
        (R::ClientCertRequired, _) => "the upstream requires a client certificate; use tls.mode MUTUAL with clientCertificate/privateKey or credentialName".to_string(),
        (R::NoSharedCipher, rustls::Error::PeerIncompatible(_)) => "the client offered no cipher suite this server accepts (TLS 1.2 and 1.3 AEAD suites only: AES-GCM, ChaCha20-Poly1305)".to_string(),
        _ => e.to_string(),
    };
    (reason, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_through_io_wrappers() {
        let io = std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer),
        );
        let (r, _) = classify(&io).unwrap();
        assert_eq!(r, FailureReason::UnknownCa);
        let alert = std::io::Error::other(rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired,
        ));
        assert_eq!(
            classify(&alert).unwrap().0,
            FailureReason::ClientCertRequired
        );
        let plain = std::io::Error::other("nope");
        assert!(classify(&plain).is_none());
    }

    #[test]
    fn names_are_stable() {
        assert_eq!(FailureReason::SanMismatch.as_str(), "san_mismatch");
        assert_eq!(FailureReason::ConnectRefused.as_str(), "connect_refused");
        assert!(!FailureReason::ConnectTimeout.is_tls());
        assert!(FailureReason::UnknownCa.is_tls());
    }
}
