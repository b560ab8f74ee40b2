//! What can go wrong on the way to an upstream, classified.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::FailureReason;
use crate::tls::client::ClientTlsError;

/// The `x-meshgate-error` value and access-log flag of a request refused by
/// a destination's connection-pool limits (Envoy's `UO` response flag).
pub const OVERFLOW: &str = "overflow";

/// Which `connectionPool` limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverflowKind {
    /// `http.http1MaxPendingRequests`: too many requests already waiting
    /// for a connection (Envoy's `upstream_rq_pending_overflow`).
    Pending,
    /// `http.http2MaxRequests`: too many requests in flight (Envoy's
    /// `upstream_rq_overflow`).
    Requests,
    /// `tcp.maxConnections`: no connection became free within the connect
    /// timeout while waiting.
    PendingTimeout,
}

impl OverflowKind {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowKind::Pending => "pending",
            OverflowKind::Requests => "requests",
            OverflowKind::PendingTimeout => "pending_timeout",
        }
    }

    /// The DestinationRule field that sets the limit.
    fn field(self) -> &'static str {
        match self {
            OverflowKind::Pending => "http1MaxPendingRequests",
            OverflowKind::Requests => "http2MaxRequests",
            OverflowKind::PendingTimeout => "maxConnections",
        }
    }
}

/// A failed upstream step, with what a user needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The host name did not resolve.
    #[error("{host}: {detail}")]
    Dns {
        /// The name looked up.
        host: String,
        /// The resolver's answer.
        detail: String,
    },
    /// The destination has no endpoints.
    #[error("no endpoints")]
    NoEndpoints,
    /// TCP connect failed.
    #[error("connect to {addr} ({host}): {source}")]
    Connect {
        /// The endpoint's name.
        host: String,
        /// The address tried.
        addr: SocketAddr,
        /// The OS error (refused, unreachable, ...).
        source: io::Error,
    },
    /// TCP connect took longer than the connect timeout.
    #[error("connect to {addr} ({host}) took longer than {timeout:?}")]
    ConnectTimeout {
        /// The endpoint's name.
        host: String,
        /// The address tried.
        addr: SocketAddr,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The destination is the proxy's own outbound listener.
    #[error("{host}:{port} resolves to {addr}, meshgate's own outbound listener")]
    Loop {
        /// The endpoint's name.
        host: String,
        /// Its port.
        port: u16,
        /// The address it resolved to.
        addr: SocketAddr,
    },
    /// The TLS client settings could not be built (a credential is missing).
    #[error(transparent)]
    Credential(#[from] ClientTlsError),
    /// The SNI is not a valid server name.
    #[error("{0:?} cannot be sent as SNI")]
    InvalidSni(String),
    /// The TLS handshake failed.
    #[error("{detail}")]
    Tls {
        /// Classified reason.
        reason: FailureReason,
        /// Expected vs presented names, issuer, validity.
        detail: String,
    },
    /// The TLS handshake took longer than the connect timeout.
    #[error("TLS handshake took longer than {0:?}")]
    HandshakeTimeout(Duration),
    /// The HTTP exchange failed (a reset, an alert after the handshake).
    #[error("upstream: {detail}")]
    Exchange {
        /// Classified reason.
        reason: FailureReason,
        /// What happened.
        detail: String,
    },
    /// No response within the route's timeout.
    #[error("no response within the route timeout of {0:?}")]
    RouteTimeout(Duration),
    /// No response within the retry policy's `perTryTimeout`, on the last
    /// try allowed.
    #[error("no response within the per-try timeout of {0:?}")]
    PerTryTimeout(Duration),
    /// A pooled connection closed before the request could be sent, and so
    /// did a new one.
    #[error("pooled connection closed before the request could be sent, and so did a new one")]
    ClosedTwice,
    /// A `connectionPool` limit of the destination refused the request.
    #[error("{} of {limit} reached (connectionPool {})", kind.as_str(), kind.field())]
    Overflow {
        /// Which limit.
        kind: OverflowKind,
        /// Its value.
        limit: u32,
    },
}

impl UpstreamError {
    /// The stable reason (header, metric label). An overflow has no
    /// connection failure behind it: it reports `ConnectFailed` here, and
    /// [`UpstreamError::code`] says `overflow`.
    pub fn reason(&self) -> FailureReason {
        match self {
            UpstreamError::Dns { .. } => FailureReason::DnsFailure,
            UpstreamError::NoEndpoints => FailureReason::NoEndpoints,
            UpstreamError::Connect { source, .. } => match source.kind() {
                io::ErrorKind::ConnectionRefused => FailureReason::ConnectRefused,
                io::ErrorKind::TimedOut => FailureReason::ConnectTimeout,
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    FailureReason::NoRouteToHost
                }
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                    FailureReason::ConnectionReset
                }
                _ => FailureReason::ConnectFailed,
            },
            UpstreamError::ConnectTimeout { .. } | UpstreamError::HandshakeTimeout(_) => {
                FailureReason::ConnectTimeout
            }
            UpstreamError::Loop { .. } => FailureReason::LoopDetected,
            UpstreamError::Credential(_) => FailureReason::CredentialUnavailable,
            UpstreamError::InvalidSni(_) => FailureReason::InvalidSni,
            UpstreamError::Tls { reason, .. } | UpstreamError::Exchange { reason, .. } => *reason,
            UpstreamError::RouteTimeout(_) | UpstreamError::PerTryTimeout(_) => {
                FailureReason::RequestTimeout
            }
            UpstreamError::ClosedTwice => FailureReason::ConnectionReset,
            UpstreamError::Overflow { .. } => FailureReason::ConnectFailed,
        }
    }

    /// Whether a `connectionPool` limit refused the request.
    pub fn is_overflow(&self) -> bool {
        matches!(self, UpstreamError::Overflow { .. })
    }

    /// The `x-meshgate-error` value and access-log flag.
    pub fn code(&self) -> &'static str {
        if self.is_overflow() {
            OVERFLOW
        } else {
            self.reason().as_str()
        }
    }

    /// Whether no connection could be made (Envoy's `connect-failure`):
    /// the request never left the proxy.
    pub fn is_connect_failure(&self) -> bool {
        matches!(
            self,
            UpstreamError::Dns { .. }
                | UpstreamError::Connect { .. }
                | UpstreamError::ConnectTimeout { .. }
                | UpstreamError::HandshakeTimeout(_)
                | UpstreamError::ClosedTwice
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_errors_are_classified_by_what_happened() {
        let addr: SocketAddr = ([192, 0, 2, 1], 443).into();
        let connect = |kind| UpstreamError::Connect {
            host: "api.test".into(),
            addr,
            source: io::Error::from(kind),
        };
        for (e, want) in [
            (connect(io::ErrorKind::ConnectionRefused), "connect_refused"),
            (connect(io::ErrorKind::TimedOut), "connect_timeout"),
            (connect(io::ErrorKind::HostUnreachable), "no_route_to_host"),
            (
                connect(io::ErrorKind::NetworkUnreachable),
                "no_route_to_host",
            ),
            (connect(io::ErrorKind::ConnectionReset), "upstream_reset"),
            (connect(io::ErrorKind::AddrNotAvailable), "connect_error"),
            (
                UpstreamError::ConnectTimeout {
                    host: "api.test".into(),
                    addr,
                    timeout: Duration::from_secs(1),
                },
                "connect_timeout",
            ),
            (
                UpstreamError::Dns {
                    host: "api.test".into(),
                    detail: "no addresses".into(),
                },
                "dns_failure",
            ),
            (
                UpstreamError::Credential(ClientTlsError::TrustNotLoaded {
                    origin: "dr.yaml:3: DestinationRule/default/api".into(),
                }),
                "credential_unavailable",
            ),
            (UpstreamError::InvalidSni("a b".into()), "invalid_sni"),
            (
                UpstreamError::RouteTimeout(Duration::from_secs(1)),
                "request_timeout",
            ),
            (
                UpstreamError::PerTryTimeout(Duration::from_secs(1)),
                "request_timeout",
            ),
        ] {
            assert_eq!(e.reason().as_str(), want, "{e}");
            assert_eq!(e.code(), want, "{e}");
        }
        // Only handshake failures count as TLS failures.
        assert!(!FailureReason::CredentialUnavailable.is_tls());
        assert!(!FailureReason::NoRouteToHost.is_tls());
    }

    #[test]
    fn overflow_has_its_own_code_and_says_which_limit() {
        let e = UpstreamError::Overflow {
            kind: OverflowKind::Pending,
            limit: 7,
        };
        assert_eq!(e.code(), OVERFLOW);
        assert!(e.is_overflow() && !e.reason().is_tls());
        assert!(e.to_string().contains("http1MaxPendingRequests"), "{e}");
        assert!(!e.is_connect_failure());
    }
}
