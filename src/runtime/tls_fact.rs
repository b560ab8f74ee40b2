//! What TLS did on one downstream connection, decided once and used by the
//! access log, metric labels and `X-Forwarded-Client-Cert`.

use std::fmt;
use std::sync::Arc;

use crate::creds::CertInfo;

/// A downstream connection's TLS outcome.
#[derive(Debug, Clone)]
pub enum TlsFact {
    /// The proxy terminated TLS.
    Established {
        /// The SNI the client sent.
        sni: Option<Arc<str>>,
        /// The protocol ALPN chose.
        alpn: Option<&'static str>,
        /// The client's verified certificate, when it sent one.
        client: Option<Arc<CertInfo>>,
    },
    /// TLS passed through untouched, routed by SNI.
    Passthrough {
        /// The SNI the client sent.
        sni: Option<Arc<str>>,
    },
    /// No TLS.
    NoTls(NoTls),
}

/// Why a connection carries no TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoTls {
    /// Nothing decided yet (the connection ended before).
    #[default]
    Undecided,
    /// A plain-text listener (the outbound port, plain Gateway servers).
    Plaintext,
    /// Plain text on a port that also takes TLS (PeerAuthentication PERMISSIVE).
    Permissive,
    /// A TLS port whose handshake did not complete.
    HandshakeFailed,
}

impl TlsFact {
    /// Istio's `connection_security_policy` label: `mutual_tls` when the
    /// client presented a verified certificate, `none` otherwise.
    pub fn security_policy(&self) -> &'static str {
        match self {
            TlsFact::Established {
                client: Some(_), ..
            } => "mutual_tls",
            _ => "none",
        }
    }

    /// The client's verified certificate, if any.
    pub fn client(&self) -> Option<&Arc<CertInfo>> {
        match self {
            TlsFact::Established { client, .. } => client.as_ref(),
            _ => None,
        }
    }

    /// Whether the client spoke TLS to the proxy (terminated here).
    pub fn terminated(&self) -> bool {
        matches!(self, TlsFact::Established { .. })
    }
}

impl fmt::Display for TlsFact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFact::Established { sni, alpn, client } => {
                f.write_str("established")?;
                if let Some(s) = sni {
                    write!(f, " sni={s}")?;
                }
                if let Some(a) = alpn {
                    write!(f, " alpn={a}")?;
                }
                if let Some(c) = client {
                    match c.sans.iter().find_map(|s| s.strip_prefix("URI:")) {
                        Some(uri) => write!(f, " client={uri}"),
                        None => write!(f, " client={:?}", c.subject),
                    }?;
                }
                Ok(())
            }
            TlsFact::Passthrough { sni } => match sni {
                Some(s) => write!(f, "passthrough sni={s}"),
                None => f.write_str("passthrough"),
            },
            TlsFact::NoTls(NoTls::Undecided) => f.write_str("-"),
            TlsFact::NoTls(NoTls::Plaintext) => f.write_str("none"),
            TlsFact::NoTls(NoTls::Permissive) => f.write_str("none (permissive)"),
            TlsFact::NoTls(NoTls::HandshakeFailed) => f.write_str("handshake_failed"),
        }
    }
}

impl Default for TlsFact {
    fn default() -> Self {
        TlsFact::NoTls(NoTls::Undecided)
    }
}
