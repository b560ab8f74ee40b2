//! What a certificate says, for checks, logs and the admin view. Never
//! holds key material.

use rustls_pki_types::CertificateDer;
use serde::Serialize;
use x509_parser::error::X509Error;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// The facts about one certificate that operators ask for.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CertInfo {
    /// Subject DN.
    pub subject: String,
    /// Issuer DN.
    pub issuer: String,
    /// SANs as `DNS:name`, `IP:addr`, `URI:uri`.
    pub sans: Vec<String>,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// X.509 version (1 or 3).
    pub version: u32,
    /// Whether it is a CA certificate.
    pub is_ca: bool,
    /// SHA-256 of the DER, hex.
    pub sha256: String,
}

/// Why a certificate cannot be read, or cannot be presented by meshgate.
/// The text names the certificate by its subject.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CertError {
    /// The DER does not parse as an X.509 certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Invalid(#[source] x509_parser::nom::Err<X509Error>),
    /// An X.509 v1 (or v2) certificate: no extensions, so no SANs.
    #[error(
        "certificate {subject:?} is X.509 v{version} with no extensions (as `openssl x509 -req` makes \
         without -extfile, e.g. in older Istio docs); TLS peers reject it. Re-issue it as \
         v3 with a subjectAltName, e.g. `openssl x509 -req ... -extfile <(printf \
         \"subjectAltName=DNS:name\")`"
    )]
    Version {
        /// Subject DN.
        subject: String,
        /// The X.509 version (1 or 2).
        version: u32,
    },
    /// Past its notAfter.
    #[error("certificate {subject:?} expired at {} (serial {serial})", fmt_time(*.not_after))]
    Expired {
        /// Subject DN.
        subject: String,
        /// End of validity, Unix seconds.
        not_after: i64,
        /// Serial number, hex.
        serial: String,
    },
    /// Before its notBefore.
    #[error("certificate {subject:?} is not valid until {} (serial {serial})", fmt_time(*.not_before))]
    NotYetValid {
        /// Subject DN.
        subject: String,
        /// Start of validity, Unix seconds.
        not_before: i64,
        /// Serial number, hex.
        serial: String,
    },
}

impl CertInfo {
    /// Parses a DER certificate.
    pub fn parse(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
        let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(CertError::Invalid)?;
        let mut sans = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for n in &ext.value.general_names {
                match n {
                    GeneralName::DNSName(d) => sans.push(format!("DNS:{d}")),
                    GeneralName::URI(u) => sans.push(format!("URI:{u}")),
                    GeneralName::IPAddress(ip) => sans.push(match ip.len() {
                        4 => format!("IP:{}", std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3])),
                        16 => {
                            let mut b = [0u8; 16];
                            b.copy_from_slice(ip);
                            format!("IP:{}", std::net::Ipv6Addr::from(b))
                        }
                        _ => "IP:?".into(),
                    }),
                    other => sans.push(format!("{other:?}")),
                }
            }
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
        Ok(CertInfo {
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            sans,
            serial: cert.raw_serial_as_string().replace(':', ""),
            not_before: cert.validity().not_before.timestamp(),
            not_after: cert.validity().not_after.timestamp(),
            version: cert.version().0 + 1,
            is_ca: cert.is_ca(),
            sha256: hex(digest.as_ref()),
        })
    }

    /// Checks a certificate that meshgate will present: X.509 v3, within its
    /// validity period, not a CA.
    pub fn check_usable_leaf(&self) -> Result<(), CertError> {
        if self.version < 3 {
            return Err(CertError::Version {
                subject: self.subject.clone(),
                version: self.version,
            });
        }
        let now = now();
        if now > self.not_after {
            return Err(CertError::Expired {
                subject: self.subject.clone(),
                not_after: self.not_after,
                serial: self.serial.clone(),
            });
        }
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                subject: self.subject.clone(),
                not_before: self.not_before,
                serial: self.serial.clone(),
            });
        }
        Ok(())
    }

    /// Whether a DNS SAN of this certificate matches every name `host`
    /// stands for (exact, or a `*.` SAN for a name one level below).
    pub fn covers(&self, host: &crate::plan::host::HostPattern) -> bool {
        use crate::plan::host::HostPattern;
        self.sans
            .iter()
            .filter_map(|s| s.strip_prefix("DNS:"))
            .any(|san| {
                let san = san.to_ascii_lowercase();
                match host {
                    HostPattern::Exact(h) => {
                        san == *h
                            || san.strip_prefix("*.").is_some_and(|suffix| {
                                h.split_once('.').is_some_and(|(_, rest)| rest == suffix)
                            })
                    }
                    HostPattern::Wildcard(suffix) => {
                        san.strip_prefix('*').is_some_and(|s| s == suffix)
                    }
                    HostPattern::Any => true,
                }
            })
    }

    /// One line for logs: subject, issuer, SANs, validity.
    pub fn summary(&self) -> String {
        format!(
            "subject={:?} issuer={:?} sans=[{}] notAfter={}",
            self.subject,
            self.issuer,
            self.sans.join(", "),
            fmt_time(self.not_after)
        )
    }
}

/// Current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// RFC 3339 UTC rendering of a Unix time.
pub fn fmt_time(unix: i64) -> String {
    x509_parser::time::ASN1Time::from_timestamp(unix)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| unix.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
