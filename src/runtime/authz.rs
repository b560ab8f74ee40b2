//! AuthorizationPolicy at request and connection time: the attributes
//! `plan::authz` decides on, read from the connection and the request;
//! the decision counted, logged and, when it denies, carried out (403 with
//! Envoy's body for HTTP, the connection closed for TCP).

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use tracing::info;

use super::exchange::{Ctx, Outcome, Reply};
use super::http::{ERROR_HEADER, boxed};
use crate::metrics::AuthzLabels;
use crate::plan::authz::{Attributes, HttpAttributes, RequestAuth, Verdict};

/// The reason (response flag, `x-meshgate-error`) of a denial.
pub const DENIED: &str = "rbac_access_denied";

/// Envoy's body for a request RBAC denied.
const BODY: &str = "RBAC: access denied";

/// One HTTP request as authorization sees it.
pub(super) struct HttpRequest<'a> {
    /// The authority as sent.
    pub host: &'a str,
    /// The method.
    pub method: &'a str,
    /// `http` or `https`.
    pub scheme: &'a str,
    /// The normalised path, query included or not.
    pub path_and_query: &'a str,
    /// The headers.
    pub headers: &'a HeaderMap,
    /// The validated token.
    pub auth: Option<&'a RequestAuth>,
    /// The destination port policies see (`inbound_http::policy_port`).
    pub port: u16,
}

/// Decides an HTTP request: `Err` is the 403 to send.
pub(super) fn check_request(ctx: &Ctx, req: &HttpRequest) -> Result<(), Box<Reply>> {
    // The policies in force now, not when the connection opened: a
    // reload that tightens a policy holds for keep-alive connections too.
    let snapshot = ctx.state.current();
    let plan = &snapshot.plan.authz;
    if plan.is_empty() {
        return Ok(());
    }
    let path = req
        .path_and_query
        .split_once('?')
        .map_or(req.path_and_query, |(p, _)| p);
    let fact = ctx.conn.tls();
    let principal = fact
        .client()
        .and_then(|c| crate::plan::authz::peer_principal(&c.sans, &c.subject));
    let sni = sni_of(&fact);
    let mut a = connection_attributes(ctx, principal.as_deref(), sni.as_deref(), req.port);
    a.remote_ip = crate::plan::authz::remote_ip(
        ctx.conn.peer.ip(),
        req.headers,
        ctx.state.bootstrap.num_trusted_proxies,
    );
    a.http = Some(HttpAttributes {
        host: req.host,
        method: req.method,
        path,
        path_and_query: req.path_and_query,
        scheme: req.scheme,
        headers: req.headers,
        auth: req.auth,
    });
    let verdict = plan.decide(&a);
    record(ctx, &verdict, Some((req.method, path)));
    if let Some(shadow) = plan.dry_run(&a) {
        dry_run(ctx, &shadow, Some((req.method, path)));
    }
    if verdict.allowed {
        return Ok(());
    }
    let mut resp = Response::new(boxed(http_body_util::Full::new(bytes::Bytes::from_static(
        BODY.as_bytes(),
    ))));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(ERROR_HEADER, HeaderValue::from_static(DENIED));
    Err(Box::new(Reply {
        resp,
        outcome: Outcome::local("-", StatusCode::FORBIDDEN, DENIED),
    }))
}

/// Decides a TCP connection (opaque, TLS-terminated TCP, passthrough):
/// `false` when it must be closed (flagged and logged here).
pub(super) fn check_connection(ctx: &Ctx, sni: Option<&str>, port: u16) -> bool {
    let snapshot = ctx.state.current();
    let plan = &snapshot.plan.authz;
    if plan.is_empty() {
        return true;
    }
    let fact = ctx.conn.tls();
    let principal = fact
        .client()
        .and_then(|c| crate::plan::authz::peer_principal(&c.sans, &c.subject));
    let own_sni = sni_of(&fact);
    let a = connection_attributes(ctx, principal.as_deref(), sni.or(own_sni.as_deref()), port);
    let verdict = plan.decide(&a);
    record(ctx, &verdict, None);
    if let Some(shadow) = plan.dry_run(&a) {
        dry_run(ctx, &shadow, None);
    }
    if !verdict.allowed {
        ctx.conn.set_flag(DENIED);
    }
    verdict.allowed
}

fn connection_attributes<'a>(
    ctx: &Ctx,
    principal: Option<&'a str>,
    sni: Option<&'a str>,
    port: u16,
) -> Attributes<'a> {
    Attributes {
        source_ip: ctx.conn.peer.ip(),
        remote_ip: ctx.conn.peer.ip(),
        principal,
        destination_ip: ctx.conn.destination().map(|d| d.ip()),
        destination_port: port,
        sni,
        http: None,
    }
}

fn sni_of(fact: &super::tls_fact::TlsFact) -> Option<String> {
    match fact {
        super::tls_fact::TlsFact::Established { sni, .. }
        | super::tls_fact::TlsFact::Passthrough { sni } => sni.as_deref().map(str::to_string),
        super::tls_fact::TlsFact::NoTls(_) => None,
    }
}

/// Counts and logs what the dry-run policies would have decided
/// (`dry_run_allow`, `dry_run_deny`); nothing is enforced.
fn dry_run(ctx: &Ctx, v: &Verdict, request: Option<(&str, &str)>) {
    let action = if v.allowed {
        "dry_run_allow"
    } else {
        "dry_run_deny"
    };
    let policy =
        v.by.as_ref()
            .map_or_else(|| std::sync::Arc::from(""), |r| r.policy.clone());
    ctx.conn
        .metrics()
        .authz_decisions
        .get_or_create(&AuthzLabels { action, policy })
        .inc();
    if super::conn::access_log_on() {
        let (method, path) = request.unwrap_or(("-", "-"));
        let by = v.by.as_ref().map_or("-".to_string(), |r| {
            format!("{}/rules[{}]", r.policy, r.rule)
        });
        info!(
            target: "access",
            peer = %ctx.conn.peer,
            method,
            path,
            allowed = v.allowed,
            policy = %by,
            "authorization dry run"
        );
    }
}

/// Counts the decision and marks the log (AUDIT, denials).
fn record(ctx: &Ctx, v: &Verdict, request: Option<(&str, &str)>) {
    let metrics = ctx.conn.metrics();
    let count = |action: &'static str, policy: std::sync::Arc<str>| {
        metrics
            .authz_decisions
            .get_or_create(&AuthzLabels { action, policy })
            .inc();
    };
    match (&v.by, v.allowed) {
        (Some(by), true) => count("allow", by.policy.clone()),
        (Some(by), false) => count("deny", by.policy.clone()),
        (None, false) => count("deny", std::sync::Arc::from("")),
        (None, true) => {}
    }
    if let Some(audit) = &v.audit {
        count("audit", audit.policy.clone());
    }
    if !super::conn::access_log_on() || (v.allowed && v.audit.is_none()) {
        return;
    }
    let (method, path) = request.unwrap_or(("-", "-"));
    let by = v.by.as_ref().map_or("-".to_string(), |r| {
        format!("{}/rules[{}]", r.policy, r.rule)
    });
    let audit = v.audit.as_ref().map_or("-".to_string(), |r| {
        format!("{}/rules[{}]", r.policy, r.rule)
    });
    info!(
        target: "access",
        peer = %ctx.conn.peer,
        method,
        path,
        allowed = v.allowed,
        policy = %by,
        audit = %audit,
        "authorization"
    );
}
