//! `outboundTlsPolicy` (force encryption): under `REQUIRE` no byte leaves
//! the pod in plain text. Every outbound connection is TLS that meshgate
//! originates (a DestinationRule) or the app's own TLS passed through;
//! plain text goes only to a `host:port` listed in `exceptions`.
//!
//! The decision is `OutboundPlan::plaintext_allowed`, pure, so the
//! runtime (`runtime::outbound`) and `meshgate explain` agree; the caller
//! asks it only for traffic that would leave in plain text (a destination
//! that does not originate TLS, and bytes that are not a TLS record).
//! `validate` warns about each ServiceEntry port plain text to which would
//! be refused ([`check::check_services`]).

use std::net::IpAddr;

use serde::Serialize;

use crate::bootstrap::{OutboundTlsPolicy, TlsPolicyMode};
use crate::plan::host::{HostPattern, normalize};

/// The compiled `outboundTlsPolicy`.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsPolicyPlan {
    /// ALLOW (default) or REQUIRE.
    pub mode: TlsPolicyMode,
    /// Destinations plain text may go to under REQUIRE.
    pub exceptions: Vec<TlsException>,
}

/// One `exceptions` entry: `host:port`, the host an exact name, a
/// left-most wildcard (`*.example.com`), `*` or an IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub struct TlsException {
    host: ExceptionHost,
    port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum ExceptionHost {
    Ip(IpAddr),
    Name(HostPattern),
    /// Not a valid name (the bootstrap refuses those; a `Bootstrap` built
    /// in code may hold one): compared as written.
    Text(String),
}

impl TlsException {
    /// From a parsed `host:port` (`bootstrap::parse_exception`).
    pub fn new(host: &str, port: u16) -> TlsException {
        let host = normalize(host.trim_start_matches('[').trim_end_matches(']'));
        let host = match host.parse::<IpAddr>() {
            Ok(ip) => ExceptionHost::Ip(ip),
            Err(_) => match HostPattern::parse(&host) {
                Ok(p) => ExceptionHost::Name(p),
                Err(_) => ExceptionHost::Text(host),
            },
        };
        TlsException { host, port }
    }

    /// Whether plain text to `host:port` (`host` normalized, an IP or a
    /// name) falls under this exception.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match &self.host {
            ExceptionHost::Name(HostPattern::Any) => true,
            ExceptionHost::Ip(ip) => host.parse::<IpAddr>().is_ok_and(|h| h == *ip),
            ExceptionHost::Name(p) => host.parse::<IpAddr>().is_err() && p.matches(host),
            ExceptionHost::Text(t) => t == host,
        }
    }

    /// Whether it covers every name `pattern` (a ServiceEntry host)
    /// stands for on `port`.
    pub fn covers(&self, pattern: &HostPattern, port: u16) -> bool {
        if port != self.port {
            return false;
        }
        match (&self.host, pattern) {
            (ExceptionHost::Name(HostPattern::Any), _) => true,
            (_, HostPattern::Exact(h)) => self.matches(h, port),
            (ExceptionHost::Name(HostPattern::Wildcard(mine)), HostPattern::Wildcard(theirs)) => {
                theirs.ends_with(mine.as_str())
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for TlsException {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.host {
            ExceptionHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]:{}", self.port),
            ExceptionHost::Ip(ip) => write!(f, "{ip}:{}", self.port),
            ExceptionHost::Name(p) => write!(f, "{p}:{}", self.port),
            ExceptionHost::Text(t) => write!(f, "{t}:{}", self.port),
        }
    }
}

impl From<TlsException> for String {
    fn from(e: TlsException) -> String {
        e.to_string()
    }
}

/// Why plain text may go to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlaintextGrant {
    /// `outboundTlsPolicy` is ALLOW.
    AllowMode,
    /// REQUIRE, and this exception (`host:port` as written) lists it.
    Exception(String),
}

/// Plain text to `host:port` refused under REQUIRE (`plaintext_refused`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaintextRefusal {
    /// The host the app addressed (normalized).
    pub host: String,
    /// The port it addressed.
    pub port: u16,
}

impl PlaintextRefusal {
    /// `host:port`, an IPv6 host in brackets.
    pub fn authority(&self) -> String {
        match self.host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{}]:{}", self.host, self.port),
            Err(_) => format!("{}:{}", self.host, self.port),
        }
    }

    /// What happens and why.
    pub fn reason(&self) -> String {
        format!(
            "plain text to {} is refused: outboundTlsPolicy is REQUIRE and no DestinationRule \
             originates TLS to it",
            self.authority()
        )
    }

    /// How to allow it.
    pub fn fix(&self) -> String {
        format!(
            "add a DestinationRule for {} with tls.mode SIMPLE, MUTUAL or ISTIO_MUTUAL on port {}, \
             or list \"{}\" in outboundTlsPolicy.exceptions, or have the app speak TLS itself",
            self.host,
            self.port,
            self.authority()
        )
    }
}

impl std::fmt::Display for PlaintextRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}; to allow it, {}", self.reason(), self.fix())
    }
}

impl TlsPolicyPlan {
    /// From the bootstrap's `outboundTlsPolicy`.
    pub fn compile(policy: &OutboundTlsPolicy) -> TlsPolicyPlan {
        TlsPolicyPlan {
            mode: policy.mode,
            exceptions: policy
                .exceptions
                .iter()
                .map(|(h, p)| TlsException::new(h, *p))
                .collect(),
        }
    }

    /// See [`OutboundPlan::plaintext_allowed`](super::OutboundPlan::plaintext_allowed).
    pub fn plaintext_allowed(
        &self,
        host: &str,
        port: u16,
    ) -> Result<PlaintextGrant, PlaintextRefusal> {
        if self.mode == TlsPolicyMode::Allow {
            return Ok(PlaintextGrant::AllowMode);
        }
        let host = normalize(host.trim_start_matches('[').trim_end_matches(']'));
        match self.exceptions.iter().find(|e| e.matches(&host, port)) {
            Some(e) => Ok(PlaintextGrant::Exception(e.to_string())),
            None => Err(PlaintextRefusal { host, port }),
        }
    }
}

pub(crate) mod check;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::Bootstrap;

    fn policy(mode: TlsPolicyMode, exceptions: &[&str]) -> TlsPolicyPlan {
        TlsPolicyPlan::compile(&OutboundTlsPolicy {
            mode,
            exceptions: exceptions
                .iter()
                .map(|e| crate::bootstrap::parse_exception(e).unwrap())
                .collect(),
        })
    }

    fn allowed(p: &TlsPolicyPlan, host: &str, port: u16) -> Option<String> {
        match p.plaintext_allowed(host, port) {
            Ok(PlaintextGrant::Exception(e)) => Some(e),
            Ok(PlaintextGrant::AllowMode) => Some("ALLOW".into()),
            Err(_) => None,
        }
    }

    #[test]
    fn allow_mode_allows_everything() {
        let p = policy(TlsPolicyMode::Allow, &[]);
        assert_eq!(
            p.plaintext_allowed("anything.example", 80),
            Ok(PlaintextGrant::AllowMode)
        );
        assert_eq!(
            TlsPolicyPlan::default().plaintext_allowed("10.0.0.1", 5432),
            Ok(PlaintextGrant::AllowMode),
            "ALLOW is the default"
        );
    }

    #[test]
    fn require_refuses_what_no_exception_lists() {
        let p = policy(TlsPolicyMode::Require, &[]);
        let r = p.plaintext_allowed("API.example.com", 80).unwrap_err();
        assert_eq!((r.host.as_str(), r.port), ("api.example.com", 80));
        let text = r.to_string();
        assert!(text.contains("api.example.com:80"), "{text}");
        assert!(text.contains("DestinationRule"), "{text}");
        assert!(text.contains("outboundTlsPolicy.exceptions"), "{text}");
        let v6 = p.plaintext_allowed("[fd00::1]", 8080).unwrap_err();
        assert_eq!(v6.authority(), "[fd00::1]:8080");
    }

    #[test]
    fn exact_exceptions_match_host_and_port() {
        let p = policy(TlsPolicyMode::Require, &["Legacy.internal:80"]);
        assert_eq!(
            allowed(&p, "legacy.internal", 80).as_deref(),
            Some("legacy.internal:80")
        );
        assert_eq!(
            allowed(&p, "LEGACY.internal.", 80).as_deref(),
            Some("legacy.internal:80"),
            "case and a trailing dot do not matter"
        );
        assert_eq!(allowed(&p, "legacy.internal", 8080), None, "another port");
        assert_eq!(allowed(&p, "a.legacy.internal", 80), None, "a subdomain");
        assert_eq!(allowed(&p, "other.internal", 80), None);
    }

    #[test]
    fn wildcard_exceptions_match_subdomains_only() {
        let p = policy(TlsPolicyMode::Require, &["*.legacy.internal:8080"]);
        assert_eq!(
            allowed(&p, "a.legacy.internal", 8080).as_deref(),
            Some("*.legacy.internal:8080")
        );
        assert!(allowed(&p, "a.b.legacy.internal", 8080).is_some());
        assert_eq!(allowed(&p, "legacy.internal", 8080), None, "not the apex");
        assert_eq!(allowed(&p, "a.legacy.internal", 80), None, "another port");
        assert_eq!(allowed(&p, "xlegacy.internal", 8080), None);
    }

    #[test]
    fn ip_exceptions_match_the_address_in_any_spelling() {
        let p = policy(TlsPolicyMode::Require, &["10.1.2.3:5432", "[FD00::1]:80"]);
        assert_eq!(
            allowed(&p, "10.1.2.3", 5432).as_deref(),
            Some("10.1.2.3:5432")
        );
        assert_eq!(allowed(&p, "10.1.2.4", 5432), None);
        assert_eq!(allowed(&p, "10.1.2.3", 5433), None);
        assert_eq!(
            allowed(&p, "fd00:0:0::1", 80).as_deref(),
            Some("[fd00::1]:80")
        );
        assert_eq!(
            allowed(&p, "[fd00::1]", 80).as_deref(),
            Some("[fd00::1]:80")
        );
        assert_eq!(allowed(&p, "fd00::2", 80), None);
    }

    #[test]
    fn a_star_exception_lists_every_host_on_its_port() {
        let p = policy(TlsPolicyMode::Require, &["*:80"]);
        assert!(allowed(&p, "anything.example", 80).is_some());
        assert!(allowed(&p, "192.0.2.1", 80).is_some());
        assert_eq!(allowed(&p, "anything.example", 81), None);
    }

    #[test]
    fn exceptions_cover_service_entry_hosts() {
        let e = TlsException::new("*.example.com", 80);
        let wild = HostPattern::parse("*.example.com").unwrap();
        let deeper = HostPattern::parse("*.api.example.com").unwrap();
        let wider = HostPattern::parse("*.com").unwrap();
        let exact = HostPattern::parse("a.example.com").unwrap();
        assert!(e.covers(&wild, 80) && e.covers(&deeper, 80) && e.covers(&exact, 80));
        assert!(!e.covers(&wider, 80) && !e.covers(&wild, 443));
        let one = TlsException::new("a.example.com", 80);
        assert!(one.covers(&exact, 80) && !one.covers(&wild, 80));
    }

    const YAML: &str = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: plain}
spec:
  hosts: [plain.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: originated}
spec:
  hosts: [tls.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: originated}
spec:
  host: tls.example.com
  trafficPolicy:
    tls: {mode: SIMPLE}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: legacy}
spec:
  hosts: [db.legacy.internal]
  ports:
  - {number: 5432, name: tcp, protocol: TCP}
  resolution: DNS
"#;

    fn warnings(mode: TlsPolicyMode, exceptions: &[&str]) -> Vec<String> {
        let config = crate::config::load_str("mesh.yaml", YAML).unwrap();
        let b = Bootstrap {
            outbound_tls_policy: OutboundTlsPolicy {
                mode,
                exceptions: exceptions
                    .iter()
                    .map(|e| crate::bootstrap::parse_exception(e).unwrap())
                    .collect(),
            },
            ..Bootstrap::default()
        };
        let plan = crate::plan::compile(&config, &b).unwrap();
        assert_eq!(
            plan.outbound.tls_policy.mode, mode,
            "the plan has the policy"
        );
        plan.warnings
            .into_iter()
            .filter(|w| w.contains("outboundTlsPolicy"))
            .collect()
    }

    #[test]
    fn validate_warns_of_service_entry_ports_that_would_be_refused() {
        assert!(warnings(TlsPolicyMode::Allow, &[]).is_empty());
        let w = warnings(TlsPolicyMode::Require, &[]);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("mesh.yaml:1")
                && w[0].contains("ServiceEntry/default/plain")
                && w[0].contains("spec.ports[0]")
                && w[0].contains("plain.example.com:80"),
            "{w:#?}"
        );
        assert!(
            w[1].contains("spec.ports[0]") && w[1].contains("db.legacy.internal:5432"),
            "{w:#?}"
        );
        assert!(
            !w.iter()
                .any(|w| w.contains("tls.example.com") || w.contains(":443")),
            "originated TLS and an HTTPS port are fine: {w:#?}"
        );
        let w = warnings(
            TlsPolicyMode::Require,
            &["*.legacy.internal:5432", "unknown.example:80"],
        );
        assert_eq!(
            w.len(),
            1,
            "excepted, and an unknown exception is fine: {w:#?}"
        );
        assert!(w[0].contains("plain.example.com:80"), "{w:#?}");
    }

    #[test]
    fn a_route_to_an_originating_port_counts_as_originated() {
        let yaml = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: api}
spec:
  hosts: [api.example.com]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  - {number: 443, name: https, protocol: HTTPS}
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  http:
  - route:
    - destination: {host: api.example.com, port: {number: 443}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: api}
spec:
  host: api.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {number: 443}
      tls: {mode: SIMPLE}
"#;
        let config = crate::config::load_str("mesh.yaml", yaml).unwrap();
        let mut b = Bootstrap::default();
        b.outbound_tls_policy.mode = TlsPolicyMode::Require;
        let plan = crate::plan::compile(&config, &b).unwrap();
        assert!(
            !plan
                .warnings
                .iter()
                .any(|w| w.contains("outboundTlsPolicy")),
            "{:#?}",
            plan.warnings
        );
    }
}
