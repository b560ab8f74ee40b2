//! Admin, Prometheus and readiness endpoints (Istio's 15000, 15020, 15021).
//!
//! Never serves key material: `config_dump` is the plan (file paths and
//! Secret names only) and certificate facts (subject, SANs, serial,
//! validity, fingerprint).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};

use crate::creds::CertInfo;
use crate::runtime::conn::{Connection, Direction, Listener, accept_loop, serve_until_stopped};
use crate::runtime::copy::Counted;
use crate::runtime::drain::Drain;
use crate::runtime::state::State;
use crate::runtime::tls_fact::{NoTls, TlsFact};

/// Which endpoint set a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// 15000: everything, loopback only.
    Admin,
    /// 15020: Prometheus text.
    Stats,
    /// 15021: readiness.
    Ready,
}

/// Serves `role`'s endpoints until shutdown; connections are tasks of
/// `drain`, with a guard each, like the proxy's own.
pub async fn run(listener: TcpListener, role: Role, state: Arc<State>, drain: Drain) {
    let label: Arc<str> = Arc::from(match role {
        Role::Admin => "admin",
        Role::Stats => "stats",
        Role::Ready => "ready",
    });
    let port = listener.local_addr().map_or(0, |a| a.port());
    let l = Arc::new(Listener::new(
        label,
        port,
        None,
        Direction::Admin,
        drain.shutdown().clone(),
    ));
    let metrics = state.metrics.clone();
    accept_loop(listener, l, metrics, drain, move |stream, conn| {
        serve(stream, conn, role, state.clone())
    })
    .await;
}

async fn serve(stream: Counted<TcpStream>, conn: Arc<Connection>, role: Role, state: Arc<State>) {
    conn.set_tls(TlsFact::NoTls(NoTls::Plaintext));
    let svc = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(role, &state, &req)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(TokioIo::new(stream), svc);
    let stop = conn.listener.stop.clone();
    serve_until_stopped(Box::pin(served), stop, |c| c.as_mut().graceful_shutdown()).await;
}

fn handle(role: Role, state: &State, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
    }
    let path = req.uri().path();
    match (role, path) {
        (Role::Admin | Role::Stats, "/stats/prometheus" | "/metrics") => {
            let mut r = text(StatusCode::OK, state.metrics.encode());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        }
        (Role::Ready, "/healthz/ready") | (Role::Admin, "/ready") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "LIVE\n".into())
            } else {
                let why = state.sources.waiting().unwrap_or_else(|| "listeners or config not loaded yet".into());
                text(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {why}\n"))
            }
        }
        (Role::Admin, "/config_dump") => json(&config_dump(state)),
        (Role::Admin, "/certs") => json(&certs(state)),
        (Role::Admin, "/") => text(
            StatusCode::OK,
            "meshgate admin\n  /config_dump  compiled configuration (JSON)\n  /certs        certificates in use\n  /ready        readiness\n  /stats/prometheus  metrics\n".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n")),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CertView {
    role: &'static str,
    source: String,
    #[serde(flatten)]
    info: CertInfo,
}

fn certs(state: &State) -> Vec<CertView> {
    let snap = state.snapshot();
    let mut v: Vec<CertView> = snap
        .creds
        .identities
        .values()
        .map(|id| CertView {
            role: "client",
            source: id.source.clone(),
            info: id.leaf.clone(),
        })
        .chain(snap.creds.servers.values().map(|id| CertView {
            role: "server",
            source: id.source.clone(),
            info: id.leaf.clone(),
        }))
        .collect();
    v.sort_by(|a, b| a.source.cmp(&b.source));
    v
}

fn config_dump(state: &State) -> serde_json::Value {
    let snap = state.snapshot();
    serde_json::json!({
        "generation": snap.generation,
        "errors": snap.isolated,
        "upstreamPools": state.upstreams.pools(),
        "bootstrap": state.bootstrap,
        "plan": *snap.plan,
        "certificates": certs(state),
        "trustSources": snap.creds.trust.values().map(|t| serde_json::json!({
            "source": t.source, "roots": t.roots.len(), "crls": t.crls.len()
        })).collect::<Vec<_>>(),
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json<T: Serialize>(v: &T) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(v) {
        Ok(s) => {
            let mut r = text(StatusCode::OK, s + "\n");
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render: {e}\n"),
        ),
    }
}
