//! Prometheus metrics: one explicit registry, typed label sets, bounded
//! label values only (never peer addresses or wire-supplied names).
//!
//! Names follow Istio where Istio has one (`istio_requests_total`), and are
//! `meshgate_*` otherwise.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `meshgate_tls_handshake_failures_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// Stable reason, see `tls::FailureReason`.
    pub reason: &'static str,
}

/// `meshgate_tls_handshakes_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandshakeLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// `outbound`, or the inbound listener's `ip_port`.
    pub listener: std::sync::Arc<str>,
    /// `TLSv1_3` / `TLSv1_2`.
    pub version: std::borrow::Cow<'static, str>,
    /// Key-exchange group, e.g. `X25519MLKEM768`.
    pub group: std::borrow::Cow<'static, str>,
    /// Whether the session was resumed.
    pub resumed: bool,
}

/// `istio_requests_total` labels (the subset meshgate knows).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `source` for outbound (the sidecar of the calling workload).
    pub reporter: &'static str,
    /// Registry host (pattern) of the destination, or Istio's
    /// `PassthroughCluster` / `BlackHoleCluster`.
    pub destination_service: std::sync::Arc<str>,
    /// HTTP status sent to the app.
    pub response_code: u16,
    /// meshgate's error reason, empty on success.
    pub response_flags: &'static str,
    /// `mutual_tls` when the client presented a verified certificate to
    /// the proxy, `none` otherwise.
    pub connection_security_policy: &'static str,
}

/// Labels of captured connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CapturedLabels {
    /// `outbound` (15001) or `inbound` (15006).
    pub direction: &'static str,
    /// What the first bytes showed: `http`, `tls`, `tcp`; `loop` for a
    /// connection whose original destination was meshgate itself.
    pub protocol: &'static str,
}

/// Labels of per-listener connection counts (Envoy's `downstream_cx_*`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `outbound`, an inbound listener's `ip_port`, or an admin role.
    pub listener: std::sync::Arc<str>,
}

/// Istio's TCP metric labels (spliced traffic: tunnels, upgrades,
/// passthrough, TCP routes).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// `source` (outbound) or `destination` (inbound).
    pub reporter: &'static str,
    /// Registry host (pattern) of the destination, or Istio's
    /// `PassthroughCluster`.
    pub destination_service: std::sync::Arc<str>,
}

/// `meshgate_config_reloads_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success`; `partial` (applied, but a broken credential kept its last
    /// good version, or a new listener could not be bound); `failure`
    /// (refused, nothing changed).
    pub result: &'static str,
}

/// `meshgate_cert_expiry_timestamp_seconds` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertLabels {
    /// `server` or `client`.
    pub role: &'static str,
    /// Where it was loaded from (file paths or `kubernetes://name`).
    pub source: String,
    /// SHA-256 fingerprint of the certificate in service.
    pub sha256: String,
}

/// `meshgate_cert_reloads_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertReloadLabels {
    /// Where the credential is loaded from (paths or `kubernetes://name`).
    pub credential: String,
    /// `success` (a new version is in service) or `failure` (the change was
    /// refused; the last good version stays).
    pub result: &'static str,
}

/// `meshgate_listener_changes_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChangeLabels {
    /// `added`, `removed` or `bind_failed`.
    pub change: &'static str,
}

/// `meshgate_downstream_timeouts_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// `request_header_timeout`, `idle_timeout` or `stream_idle_timeout`.
    pub kind: &'static str,
}

/// `meshgate_upstream_overflow_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OverflowLabels {
    /// Registry host (pattern) of the destination.
    pub destination_service: std::sync::Arc<str>,
    /// `pending` (http1MaxPendingRequests, Envoy's
    /// `upstream_rq_pending_overflow`), `requests` (http2MaxRequests,
    /// `upstream_rq_overflow`) or `pending_timeout` (maxConnections: no
    /// connection freed within the connect timeout).
    pub kind: &'static str,
}

/// Labels with only a destination.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    /// Registry host (pattern) of the destination.
    pub destination_service: std::sync::Arc<str>,
}

/// `meshgate_plaintext_refused_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaintextLabels {
    /// `http` (a plain HTTP request) or `tcp` (a tunnel's plain bytes).
    pub kind: &'static str,
}

/// `meshgate_authz_decisions_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuthzLabels {
    /// `allow`, `deny`, `audit`, or what the dry-run policies would decide:
    /// `dry_run_allow`, `dry_run_deny`.
    pub action: &'static str,
    /// `<namespace>/<name>` of the policy whose rule matched; empty when a
    /// request was denied because no ALLOW rule matched.
    pub policy: std::sync::Arc<str>,
}

/// `meshgate_jwt_authn_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwtAuthnLabels {
    /// `allowed` (a valid token), `denied` (401/403) or `no_token`.
    pub result: &'static str,
    /// Why a token was refused (`plan::authn::token::Status::reason`),
    /// empty otherwise.
    pub reason: &'static str,
}

/// `meshgate_jwks_fetches_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JwksFetchLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Labels with only a direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DirectionLabels {
    /// `outbound` or `inbound`.
    pub direction: &'static str,
}

/// `meshgate_kubernetes_watch_errors_total` labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchErrorLabels {
    /// The resource as RBAC names it (`secrets`,
    /// `serviceentries.networking.istio.io`).
    pub resource: String,
    /// The namespace watched.
    pub namespace: String,
    /// `forbidden`, `unreachable`, `error`, `not_found` or `gone`.
    pub reason: &'static str,
}

/// All metrics of one proxy.
pub struct Metrics {
    registry: Registry,
    /// Failed upstream/downstream handshakes by reason.
    pub tls_failures: Family<FailureLabels, Counter>,
    /// Completed handshakes by version and group.
    pub tls_handshakes: Family<HandshakeLabels, Counter>,
    /// Requests relayed to the app, by outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Request duration in milliseconds (Istio's histogram).
    pub request_duration: Family<RequestLabels, Histogram>,
    /// Upstream connections opened.
    pub upstream_connections: Counter,
    /// Upstream connections currently open.
    pub upstream_connections_active: Gauge,
    /// CONNECT tunnels opened.
    pub tunnels: Counter,
    /// Connections that capture rules redirected here, by what they were.
    pub captured: Family<CapturedLabels, Counter>,
    /// Downstream connections accepted, per listener.
    pub downstream_connections: Family<ListenerLabels, Counter>,
    /// Downstream connections open, per listener.
    pub downstream_connections_active: Family<ListenerLabels, Gauge>,
    /// Spliced connections opened (Istio's `istio_tcp_connections_opened_total`).
    pub tcp_opened: Family<TcpLabels, Counter>,
    /// Spliced connections closed.
    pub tcp_closed: Family<TcpLabels, Counter>,
    /// Bytes received from clients on spliced connections.
    pub tcp_received_bytes: Family<TcpLabels, Counter>,
    /// Bytes sent to clients on spliced connections.
    pub tcp_sent_bytes: Family<TcpLabels, Counter>,
    /// Listener changes made by reloads (`added`, `removed`, `bind_failed`).
    pub listener_changes: Family<ChangeLabels, Counter>,
    /// Configuration reloads by result.
    pub config_reloads: Family<ReloadLabels, Counter>,
    /// notAfter of every certificate in service.
    pub cert_expiry: Family<CertLabels, Gauge>,
    /// 1 while the files on disk differ from what is served because their
    /// last reload was refused.
    pub config_stale: Gauge,
    /// Errors of the configuration in force whose parts are left out.
    pub config_errors: Gauge,
    /// Failed lists and watches of the Kubernetes source.
    pub kubernetes_watch_errors: Family<WatchErrorLabels, Counter>,
    /// Credential rotations by credential and result.
    pub cert_reloads: Family<CertReloadLabels, Counter>,
    /// Time to complete TLS handshakes, by direction.
    pub handshake_duration: Family<DirectionLabels, Histogram>,
    /// Downstream connections and requests ended by a time bound.
    pub downstream_timeouts: Family<TimeoutLabels, Counter>,
    /// Requests refused by a destination's connectionPool limits.
    pub upstream_overflow: Family<OverflowLabels, Counter>,
    /// Endpoints ejected by outlier detection.
    pub upstream_ejections: Family<DestinationLabels, Counter>,
    /// Requests tried again per the route's retry policy.
    pub upstream_retries: Family<DestinationLabels, Counter>,
    /// Outbound plain text refused under `outboundTlsPolicy: REQUIRE`.
    pub plaintext_refused: Family<PlaintextLabels, Counter>,
    /// AuthorizationPolicy decisions on inbound traffic.
    pub authz_decisions: Family<AuthzLabels, Counter>,
    /// RequestAuthentication outcomes on inbound requests.
    pub jwt_authn: Family<JwtAuthnLabels, Counter>,
    /// Fetches of remote JSON Web Key Sets.
    pub jwks_fetches: Family<JwksFetchLabels, Counter>,
    /// CPU seconds the process has used (Prometheus' standard name).
    process_cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    /// Resident memory (Prometheus' standard name).
    process_rss: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let tls_failures = Family::default();
        registry.register(
            "meshgate_tls_handshake_failures",
            "TLS handshakes (and upstream connects) that failed, by direction and reason",
            tls_failures.clone(),
        );
        let tls_handshakes = Family::default();
        registry.register(
            "meshgate_tls_handshakes",
            "Completed TLS handshakes by direction, version and key-exchange group",
            tls_handshakes.clone(),
        );
        let requests = Family::default();
        registry.register(
            "istio_requests",
            "Requests handled by the proxy",
            requests.clone(),
        );
        let request_duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(1.0, 2.0, 16))
        });
        registry.register(
            "istio_request_duration_milliseconds",
            "Time from request received to response headers sent",
            request_duration.clone(),
        );
        let upstream_connections = Counter::default();
        registry.register(
            "meshgate_upstream_connections",
            "Upstream connections opened (TLS or plain)",
            upstream_connections.clone(),
        );
        let upstream_connections_active = Gauge::default();
        registry.register(
            "meshgate_upstream_connections_active",
            "Upstream connections currently open",
            upstream_connections_active.clone(),
        );
        let tunnels = Counter::default();
        registry.register(
            "meshgate_connect_tunnels",
            "CONNECT tunnels opened",
            tunnels.clone(),
        );
        let captured = Family::default();
        registry.register(
            "meshgate_captured_connections",
            "Connections redirected to the proxy by capture rules, by direction and sniffed protocol",
            captured.clone(),
        );
        let downstream_connections = Family::default();
        registry.register(
            "meshgate_downstream_connections",
            "Downstream connections accepted, per listener",
            downstream_connections.clone(),
        );
        let downstream_connections_active = Family::default();
        registry.register(
            "meshgate_downstream_connections_active",
            "Downstream connections open, per listener",
            downstream_connections_active.clone(),
        );
        let tcp_opened = Family::default();
        registry.register(
            "istio_tcp_connections_opened",
            "Spliced connections (CONNECT tunnels, upgrades, passthrough, TCP) opened",
            tcp_opened.clone(),
        );
        let tcp_closed = Family::default();
        registry.register(
            "istio_tcp_connections_closed",
            "Spliced connections closed",
            tcp_closed.clone(),
        );
        let tcp_received_bytes = Family::default();
        registry.register(
            "istio_tcp_received_bytes",
            "Bytes received from clients on spliced connections",
            tcp_received_bytes.clone(),
        );
        let tcp_sent_bytes = Family::default();
        registry.register(
            "istio_tcp_sent_bytes",
            "Bytes sent to clients on spliced connections",
            tcp_sent_bytes.clone(),
        );
        let listener_changes = Family::default();
        registry.register(
            "meshgate_listener_changes",
            "Listeners added, removed, or refused (port in use) by configuration reloads",
            listener_changes.clone(),
        );
        let config_reloads = Family::default();
        registry.register(
            "meshgate_config_reloads",
            "Configuration reloads by result (a failed reload keeps the last good config)",
            config_reloads.clone(),
        );
        let cert_expiry = Family::default();
        registry.register(
            "meshgate_cert_expiry_timestamp_seconds",
            "notAfter (Unix seconds) of each certificate in service, with its source and fingerprint",
            cert_expiry.clone(),
        );
        let config_stale = Gauge::default();
        registry.register(
            "meshgate_config_stale",
            "1 while what is served may be older than its sources: configuration or certificate files (or watched objects) changed but were refused, or the Kubernetes API server cannot be watched",
            config_stale.clone(),
        );
        let config_errors = Gauge::default();
        registry.register(
            "meshgate_config_errors",
            "Errors in the configuration in force: the servers and credentials they name are left out (their ports and users fail closed) while the rest is served; 0 when it loaded cleanly",
            config_errors.clone(),
        );
        let kubernetes_watch_errors = Family::default();
        registry.register(
            "meshgate_kubernetes_watch_errors",
            "Failed lists and watches of the Kubernetes source, by resource, namespace and reason (forbidden: RBAC denies it; unreachable; error: the API server answered one; not_found: the kind is not served; gone: relisted after 410)",
            kubernetes_watch_errors.clone(),
        );
        let handshake_duration = Family::<DirectionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0001, 2.0, 16))
        });
        registry.register(
            "meshgate_tls_handshake_duration_seconds",
            "Time to complete TLS handshakes (inbound: from the first ClientHello byte; outbound: after TCP connect)",
            handshake_duration.clone(),
        );
        let process_cpu = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            process_cpu.clone(),
        );
        let process_rss = Gauge::default();
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            process_rss.clone(),
        );
        let cert_reloads = Family::default();
        registry.register(
            "meshgate_cert_reloads",
            "Credential changes put in service (success) or refused with the last good version kept (failure)",
            cert_reloads.clone(),
        );
        let downstream_timeouts = Family::default();
        registry.register(
            "meshgate_downstream_timeouts",
            "Downstream connections closed before their first request head (request_header_timeout) or idle (idle_timeout), and requests whose body stalled (stream_idle_timeout)",
            downstream_timeouts.clone(),
        );
        let upstream_overflow = Family::default();
        registry.register(
            "meshgate_upstream_overflow",
            "Requests answered 503 overflow by a destination's connectionPool limits, by limit",
            upstream_overflow.clone(),
        );
        let upstream_ejections = Family::default();
        registry.register(
            "meshgate_upstream_ejections",
            "Endpoints ejected by outlier detection, per destination",
            upstream_ejections.clone(),
        );
        let upstream_retries = Family::default();
        registry.register(
            "meshgate_upstream_retries",
            "Requests tried again per the route's retry policy, per destination",
            upstream_retries.clone(),
        );
        let plaintext_refused = Family::default();
        registry.register(
            "meshgate_plaintext_refused",
            "Outbound plain text refused under outboundTlsPolicy REQUIRE (no DestinationRule originates TLS and no exception lists the destination), by kind: http requests answered 403, tcp tunnels closed",
            plaintext_refused.clone(),
        );
        let authz_decisions = Family::default();
        registry.register(
            "meshgate_authz_decisions",
            "AuthorizationPolicy decisions on inbound requests and connections, by action (allow: an ALLOW rule matched; deny: a DENY rule matched, or ALLOW policies apply and none matched, policy empty; audit: an AUDIT rule matched; dry_run_allow, dry_run_deny: what the istio.io/dry-run policies would decide, not enforced) and policy",
            authz_decisions.clone(),
        );
        let jwt_authn = Family::default();
        registry.register(
            "meshgate_jwt_authn",
            "RequestAuthentication on inbound requests when JWT rules apply, by result (allowed: a valid token; denied: 401 or 403; no_token: none found) and reason (why a token was refused)",
            jwt_authn.clone(),
        );
        let jwks_fetches = Family::default();
        registry.register(
            "meshgate_jwks_fetches",
            "Fetches of remote JSON Web Key Sets (jwksUri, OpenID discovery), by result",
            jwks_fetches.clone(),
        );
        Metrics {
            registry,
            jwt_authn,
            jwks_fetches,
            plaintext_refused,
            authz_decisions,
            upstream_overflow,
            upstream_ejections,
            upstream_retries,
            downstream_timeouts,
            cert_reloads,
            cert_expiry,
            config_stale,
            config_errors,
            kubernetes_watch_errors,
            handshake_duration,
            process_cpu,
            process_rss,
            tls_failures,
            tls_handshakes,
            requests,
            request_duration,
            upstream_connections,
            upstream_connections_active,
            tunnels,
            captured,
            downstream_connections,
            downstream_connections_active,
            tcp_opened,
            tcp_closed,
            tcp_received_bytes,
            tcp_sent_bytes,
            listener_changes,
            config_reloads,
        }
    }

    /// Counts one connection or request ended by the time bound `kind`.
    pub fn count_timeout(&self, kind: &'static str) {
        self.downstream_timeouts
            .get_or_create(&TimeoutLabels { kind })
            .inc();
    }

    /// Counts a request refused by the `kind` limit of `destination`.
    pub fn upstream_overflow(&self, destination: &std::sync::Arc<str>, kind: &'static str) {
        self.upstream_overflow
            .get_or_create(&OverflowLabels {
                destination_service: destination.clone(),
                kind,
            })
            .inc();
    }

    /// Counts plain text refused under `outboundTlsPolicy: REQUIRE`
    /// (`kind`: `http` or `tcp`).
    pub fn count_plaintext_refused(&self, kind: &'static str) {
        self.plaintext_refused
            .get_or_create(&PlaintextLabels { kind })
            .inc();
    }

    /// Counts an endpoint of `destination` ejected.
    pub fn upstream_ejection(&self, destination: &std::sync::Arc<str>) {
        self.upstream_ejections
            .get_or_create(&DestinationLabels {
                destination_service: destination.clone(),
            })
            .inc();
    }

    /// Counts a retry to `destination`.
    pub fn upstream_retry(&self, destination: &std::sync::Arc<str>) {
        self.upstream_retries
            .get_or_create(&DestinationLabels {
                destination_service: destination.clone(),
            })
            .inc();
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        self.sample_process();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Reads this process's CPU time and RSS from /proc (Linux), so TLS cost
    /// per request can be watched in production, not only in benchmarks.
    fn sample_process(&self) {
        // utime and stime are fields 14 and 15, in clock ticks (USER_HZ,
        // 100 on Linux); the command name (field 2) may contain spaces, so
        // count from the closing parenthesis.
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some((_, rest)) = stat.rsplit_once(')')
        {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            let cpu = (ticks(11) + ticks(12)) / 100.0;
            let delta = cpu - self.process_cpu.get();
            if delta > 0.0 {
                self.process_cpu.inc_by(delta);
            }
        }
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm")
            && let Some(pages) = statm
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i64>().ok())
        {
            self.process_rss.set(pages * 4096);
        }
    }

    /// Publishes the expiry of every certificate in `creds` (replacing the
    /// previous set, so a rotated certificate's old fingerprint disappears).
    pub fn set_certificates(&self, creds: &crate::creds::Credentials) {
        self.cert_expiry.clear();
        let all = creds
            .identities
            .values()
            .map(|i| ("client", i))
            .chain(creds.servers.values().map(|i| ("server", i)));
        for (role, id) in all {
            self.cert_expiry
                .get_or_create(&CertLabels {
                    role,
                    source: id.source.clone(),
                    sha256: id.leaf.sha256.clone(),
                })
                .set(id.leaf.not_after);
        }
    }

    /// Counts per-credential rotations between `previous` and `next`.
    pub fn count_rotations(
        &self,
        previous: &crate::creds::Credentials,
        next: &crate::creds::Credentials,
    ) {
        let changed = |prev: Option<&std::sync::Arc<crate::creds::Identity>>,
                       new: &crate::creds::Identity| {
            prev.is_some_and(|p| p.leaf.sha256 != new.leaf.sha256)
        };
        let rotated = next
            .identities
            .iter()
            .filter(|(k, v)| changed(previous.identities.get(*k), v))
            .map(|(_, v)| v.source.clone())
            .chain(
                next.servers
                    .iter()
                    .filter(|(k, v)| changed(previous.servers.get(*k), v))
                    .map(|(_, v)| v.source.clone()),
            );
        for credential in rotated {
            self.cert_reloads
                .get_or_create(&CertReloadLabels {
                    credential,
                    result: "success",
                })
                .inc();
        }
        for (credential, _) in &next.stale {
            self.cert_reloads
                .get_or_create(&CertReloadLabels {
                    credential: credential.clone(),
                    result: "failure",
                })
                .inc();
        }
    }

    /// Counts one completed handshake and its duration.
    pub fn handshake_done(
        &self,
        direction: &'static str,
        listener: &std::sync::Arc<str>,
        conn: &rustls::CommonState,
        took: std::time::Duration,
    ) {
        use std::borrow::Cow;
        self.handshake_duration
            .get_or_create(&DirectionLabels { direction })
            .observe(took.as_secs_f64());
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => Cow::Borrowed("TLSv1_3"),
            Some(rustls::ProtocolVersion::TLSv1_2) => Cow::Borrowed("TLSv1_2"),
            Some(v) => Cow::Owned(format!("{v:?}")),
            None => Cow::Borrowed(""),
        };
        let group = match conn.negotiated_key_exchange_group().map(|g| g.name()) {
            Some(rustls::NamedGroup::X25519MLKEM768) => Cow::Borrowed("X25519MLKEM768"),
            Some(rustls::NamedGroup::X25519) => Cow::Borrowed("X25519"),
            Some(rustls::NamedGroup::secp256r1) => Cow::Borrowed("secp256r1"),
            Some(rustls::NamedGroup::secp384r1) => Cow::Borrowed("secp384r1"),
            Some(g) => Cow::Owned(format!("{g:?}")),
            None => Cow::Borrowed(""),
        };
        self.tls_handshakes
            .get_or_create(&HandshakeLabels {
                direction,
                listener: listener.clone(),
                version,
                group,
                resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            })
            .inc();
    }

    /// Counts one failure.
    pub fn tls_failure(&self, direction: &'static str, reason: crate::tls::FailureReason) {
        self.tls_failures
            .get_or_create(&FailureLabels {
                direction,
                reason: reason.as_str(),
            })
            .inc();
    }
}
