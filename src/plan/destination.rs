//! Where an inbound route's destination goes, decided here once for the
//! runtime to carry out: the registered service (its ServiceEntry and
//! DestinationRule) when one declares the host, else the host itself,
//! over TLS when a DestinationRule for it originates TLS on that port
//! (never plain text where a rule asks for TLS), else in plain text.
//!
//! Istio's rules: a destination without a port takes the service's port
//! when it has exactly one (a gateway route to a service with several must
//! name one: refused at compile), else 80 for a host without a ServiceEntry; a registered backend speaks its own
//! port's protocol — h2c for a port declared HTTP2 or GRPC when no TLS is
//! originated — whatever the gateway server's protocol; a host no
//! ServiceEntry declares has no protocol of its own, so an HTTP2/GRPC server
//! port's protocol is kept for it; TLS and TCP routes relay bytes as they
//! are, so no TLS is originated for them.

use std::sync::Arc;

use super::host::normalize;
use super::outbound::{OutboundPlan, Target};
use super::tls::{ClientTlsPlan, TlsMode};

/// How the proxy talks to a route destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speak {
    /// HTTP; `h2c` when the server port is HTTP2 or GRPC (used only for a
    /// host without a ServiceEntry, which has no protocol of its own).
    Http {
        /// The server port is HTTP2 or GRPC.
        h2c: bool,
    },
    /// Bytes relayed as they are (TLS passthrough, TCP routes).
    Bytes,
}

/// A resolved route destination.
#[derive(Debug, Clone)]
pub enum RouteTarget {
    /// A registered service, with the policy to use.
    Registered(Box<Target>),
    /// A host no ServiceEntry declares (a Kubernetes Service name, an IP,
    /// `/etc/hosts`) and no DestinationRule asks TLS for, reached in plain
    /// text.
    Host {
        /// The host, normalized.
        host: String,
        /// The port.
        port: u16,
        /// Spoken to in h2c (an HTTP2/GRPC server port).
        h2c: bool,
    },
}

/// Resolves the route destination `host[:port]` (with `subset`).
pub fn resolve(
    outbound: &OutboundPlan,
    host: &str,
    port: Option<u16>,
    subset: Option<&str>,
    speak: Speak,
) -> RouteTarget {
    let host = normalize(host);
    let port = port
        .or_else(|| {
            outbound
                .service_for(&host, None)
                .filter(|s| s.ports.len() == 1)
                .map(|s| s.ports[0].number)
        })
        .unwrap_or(80);
    let registered = outbound.registered(&host, &host, port, subset);
    // A DestinationRule that originates TLS to a host no ServiceEntry
    // declares: TLS as the rule says, as outbound does (Istio answers 503
    // here; meshgate never sends such a host plain text). TLS and TCP
    // routes relay the client's bytes, so no rule applies to them.
    let rule_only = || match speak {
        Speak::Http { .. } => outbound.rule_only(&host, &host, port, subset),
        Speak::Bytes => None,
    };
    let Some(mut t) = registered.or_else(rule_only) else {
        let h2c = speak == Speak::Http { h2c: true };
        return RouteTarget::Host { host, port, h2c };
    };
    match speak {
        Speak::Bytes => Arc::make_mut(&mut t.policy).tls = ClientTlsPlan::disabled(),
        // A registered backend speaks its own port's protocol (Istio's
        // cluster protocol), whatever the server's.
        Speak::Http { .. } => {
            let app_h2 = matches!(t.port.protocol.as_str(), "HTTP2" | "GRPC" | "GRPC-WEB");
            if t.policy.tls.mode == TlsMode::Disable && app_h2 && !t.policy.h2 {
                Arc::make_mut(&mut t.policy).h2 = true;
            }
        }
    }
    RouteTarget::Registered(Box::new(t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Bootstrap;
    use crate::config::load_str;

    const YAML: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: grpc}
spec:
  hosts: [grpc.internal]
  ports: [{number: 9000, name: grpc, protocol: GRPC}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: web}
spec:
  hosts: [web.internal]
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  - {number: 8443, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: single}
spec:
  hosts: [single.internal]
  ports: [{number: 7070, name: http, protocol: HTTP}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: web}
spec:
  host: web.internal
  trafficPolicy:
    portLevelSettings:
    - port: {number: 8443}
      tls: {mode: SIMPLE}
"#;

    fn outbound() -> OutboundPlan {
        let config = load_str("d.yaml", YAML).unwrap();
        crate::plan::compile(&config, &Bootstrap::default())
            .unwrap()
            .outbound
    }

    /// (port, TLS mode, h2) of a registered target; `None` for a host.
    fn shape(t: &RouteTarget) -> Option<(u16, TlsMode, bool)> {
        match t {
            RouteTarget::Registered(t) => Some((t.port.number, t.policy.tls.mode, t.policy.h2)),
            RouteTarget::Host { .. } => None,
        }
    }

    #[test]
    fn destinations_as_istio_resolves_them() {
        let o = outbound();
        let http = Speak::Http { h2c: false };
        let h2c = Speak::Http { h2c: true };
        for (host, port, speak, want) in [
            // A GRPC app port is h2c whatever the server port.
            (
                "grpc.internal",
                None,
                http,
                Some((9000, TlsMode::Disable, true)),
            ),
            // An HTTP app port is HTTP/1.1 whatever the server port: the
            // backend's protocol is its own port's (Istio's cluster
            // protocol), never the gateway server's.
            (
                "web.internal",
                Some(8080),
                http,
                Some((8080, TlsMode::Disable, false)),
            ),
            (
                "web.internal",
                Some(8080),
                h2c,
                Some((8080, TlsMode::Disable, false)),
            ),
            // TLS originated: never h2c.
            (
                "web.internal",
                Some(8443),
                h2c,
                Some((8443, TlsMode::Simple, false)),
            ),
            // TCP / TLS routes relay bytes: no TLS origination.
            (
                "web.internal",
                Some(8443),
                Speak::Bytes,
                Some((8443, TlsMode::Disable, false)),
            ),
            // No port: the single service port.
            (
                "single.internal",
                None,
                http,
                Some((7070, TlsMode::Disable, false)),
            ),
            (
                "SINGLE.internal.",
                None,
                http,
                Some((7070, TlsMode::Disable, false)),
            ),
        ] {
            let t = resolve(&o, host, port, None, speak);
            assert_eq!(shape(&t), want, "{host} {port:?} {speak:?}: {t:?}");
        }
    }

    #[test]
    fn unregistered_hosts_are_reached_as_they_are() {
        let o = outbound();
        let t = resolve(&o, "127.0.0.1", Some(8080), None, Speak::Http { h2c: true });
        assert!(
            matches!(&t, RouteTarget::Host { host, port: 8080, h2c: true } if host == "127.0.0.1"),
            "{t:?}"
        );
        // Several ports and none given: 80, as Istio.
        let t = resolve(&o, "web.internal", None, None, Speak::Http { h2c: false });
        assert!(
            matches!(
                &t,
                RouteTarget::Host {
                    port: 80,
                    h2c: false,
                    ..
                }
            ),
            "{t:?}"
        );
        let t = resolve(&o, "app.local", None, None, Speak::Bytes);
        assert!(
            matches!(
                &t,
                RouteTarget::Host {
                    port: 80,
                    h2c: false,
                    ..
                }
            ),
            "{t:?}"
        );
    }
}
