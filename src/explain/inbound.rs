//! `meshgate explain inbound`: which listener and server take a
//! connection (SNI selection by `plan::inbound::select_server`, as
//! `runtime::inbound` does), its TLS, the client certificate, and for TLS
//! passthrough and TCP the route and destination. HTTP routing is in
//! `inbound_http`.

use super::client_cert::{self, ClientChain};
use super::inbound_http;
use super::model::{
    Direction, Explanation, ListenerInfo, Matched, Refusal, RequestInfo, RequestKind,
};
use super::request::InboundRequest;
use super::server::{best_host, server_tls, set_server};
use super::upstream;
use crate::bootstrap::Bootstrap;
use crate::load::Loaded;
use crate::plan::destination::{self, Speak};
use crate::plan::host::normalize;
use crate::plan::inbound::{
    GatewayRoutes, L4RoutePlan, ListenerPlan, ServerPlan, TlsServerMode, select_server,
};
use crate::runtime::http::parse_authority;

/// Explains `req` under `loaded`; `client` is the loaded `--client-cert`.
pub fn explain(
    loaded: &Loaded,
    bootstrap: &Bootstrap,
    req: &InboundRequest,
    client: Option<&ClientChain>,
) -> Explanation {
    let sni = req.sni.as_deref().map(normalize);
    let target = describe_request(req);
    let mut ex = Explanation::new(
        Direction::Inbound,
        RequestInfo {
            target,
            kind: if req.plaintext {
                RequestKind::Plaintext
            } else {
                RequestKind::Tls
            },
            host: req
                .host
                .as_deref()
                .map(|h| parse_authority(h).map_or_else(|_| h.to_string(), |a| a.host))
                .or_else(|| sni.clone()),
            port: req.port,
            path: Some(req.path.clone()),
            method: Some(req.method.clone()),
            sni: sni.clone(),
        },
    );
    ex.left_out(&loaded.isolated);
    let listeners: Vec<&ListenerPlan> = loaded
        .plan
        .inbound
        .listeners
        .iter()
        .filter(|l| l.port == req.port && (req.bind.is_none() || l.bind == req.bind))
        .collect();
    let Some(&listener) = listeners.first() else {
        let port_text = format!("port {} ", req.port);
        let left_out_port = loaded.isolated.iter().any(|e| e.contains(&port_text));
        let ports: Vec<String> = loaded
            .plan
            .inbound
            .listeners
            .iter()
            .map(|l| l.port.to_string())
            .collect();
        ex.refuse(Refusal::closed(
            "no_listener",
            format!(
                "no Gateway server or Sidecar ingress listener is on port {}{}: the connection is refused",
                req.port,
                req.bind.as_deref().map(|b| format!(" bound to {b}")).unwrap_or_default()
            ),
            Some(if left_out_port {
                format!(
                    "a server on port {} did not load and is left out: fix the errors in leftOut",
                    req.port
                )
            } else if ports.is_empty() {
                format!("add a Gateway server (or Sidecar ingress listener) on port {}", req.port)
            } else {
                format!(
                    "add a server on port {}, or explain a configured port ({})",
                    req.port,
                    ports.join(", ")
                )
            }),
        ));
        return ex.finish();
    };
    if listeners.len() > 1 {
        ex.notes.push(format!(
            "port {} has {} listeners (bind addresses {}); this is the first, choose one with --bind",
            req.port,
            listeners.len(),
            listeners
                .iter()
                .map(|l| l.bind.as_deref().unwrap_or("default"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    ex.listener = Some(ListenerInfo {
        port: listener.port,
        bind: listener.bind.clone(),
        tls: listener.tls,
        permissive: listener.permissive,
        mesh: listener.mesh,
        servers: listener.servers.len(),
    });
    if !listener.tls {
        ex.request.kind = RequestKind::Plaintext;
        if sni.is_some() {
            ex.notes.push(format!(
                "port {} is plain text: no TLS, so --sni is not used",
                req.port
            ));
        }
        if listener.servers.iter().all(|s| s.protocol.is_http()) {
            inbound_http::explain(&mut ex, loaded, bootstrap, req, listener, None, false);
        } else if let Some(server) = listener.servers.first() {
            set_server(
                &mut ex,
                listener,
                server,
                "plain TCP: the port's first server".into(),
            );
            tcp(&mut ex, loaded, listener, server);
        }
        return ex.finish();
    }
    if req.plaintext {
        if !listener.permissive {
            ex.refuse(Refusal::status(
                "not_tls",
                400,
                format!(
                    "port {} expects TLS; plain text is answered with 400 and closed",
                    req.port
                ),
                Some("connect with TLS (without --plaintext)".into()),
            ));
            return ex.finish();
        }
        let Some(server) = listener.servers.first() else {
            return ex.finish();
        };
        set_server(
            &mut ex,
            listener,
            server,
            "PERMISSIVE: plain text goes to the port's first server".into(),
        );
        inbound_http::explain(
            &mut ex,
            loaded,
            bootstrap,
            req,
            listener,
            Some(server),
            false,
        );
        return ex.finish();
    }
    let Some(server) = select_server(&listener.servers, sni.as_deref()) else {
        let hosts: Vec<String> = listener
            .servers
            .iter()
            .flat_map(|s| s.hosts.iter().map(ToString::to_string))
            .collect();
        let (reason, suggestion) = match &sni {
            Some(s) => (
                format!(
                    "no server on port {} serves SNI {s:?} (hosts served: {})",
                    req.port,
                    hosts.join(", ")
                ),
                format!(
                    "add {s} to the hosts of a server on port {}, or send an SNI it serves",
                    req.port
                ),
            ),
            None => (
                format!(
                    "the client sends no SNI and no server on port {} serves \"*\"",
                    req.port
                ),
                format!(
                    "send an SNI (one of {}), or add a server with hosts [\"*\"]",
                    hosts.join(", ")
                ),
            ),
        };
        ex.refuse(Refusal::alert(
            "unknown_sni",
            "unrecognized_name",
            reason,
            Some(suggestion),
        ));
        return ex.finish();
    };
    let selected_by = match &sni {
        Some(s) => format!(
            "SNI {s} matches {}",
            best_host(server, s).unwrap_or_else(|| "*".into())
        ),
        None => "no SNI: the server for \"*\"".into(),
    };
    set_server(&mut ex, listener, server, selected_by);
    let Some(tls) = &server.tls else {
        ex.refuse(Refusal::closed(
            "no_tls_settings",
            "the server has no TLS settings: the connection is closed".into(),
            None,
        ));
        return ex.finish();
    };
    ex.server_tls = Some(server_tls(loaded, tls, sni.as_deref()));
    if ex.server_tls.as_ref().and_then(|t| t.covers_sni) == Some(false) {
        ex.notes.push(format!(
            "no certificate of the server covers SNI {}: clients that verify the name reject it",
            sni.as_deref().unwrap_or_default()
        ));
    }
    if tls.mode == TlsServerMode::Passthrough {
        if client.is_some() {
            ex.notes.push(
                "PASSTHROUGH: meshgate never sees the client certificate; the backend verifies it"
                    .into(),
            );
        }
        passthrough(&mut ex, loaded, listener, server, sni.as_deref());
        return ex.finish();
    }
    let (check, refusal) = client_cert::check(tls, &loaded.creds, client);
    ex.client_certificate = check;
    if let Some(r) = refusal {
        ex.refuse(r);
        ex.notes
            .push("the handshake fails first; what follows applies to a client it accepts".into());
    }
    if server.protocol.is_http() {
        inbound_http::explain(
            &mut ex,
            loaded,
            bootstrap,
            req,
            listener,
            Some(server),
            true,
        );
    } else {
        tcp(&mut ex, loaded, listener, server);
    }
    ex.finish()
}

fn describe_request(req: &InboundRequest) -> String {
    let mut parts = vec![format!("port {}", req.port)];
    if let Some(s) = &req.sni {
        parts.push(format!("sni {s}"));
    }
    if req.plaintext {
        parts.push("plain text".into());
    }
    if let Some(h) = &req.host {
        parts.push(format!("host {h}"));
    }
    parts.push(format!("{} {}", req.method, req.path));
    parts.join(", ")
}

/// PASSTHROUGH: the TLS route chosen by SNI, then its destination.
fn passthrough(
    ex: &mut Explanation,
    loaded: &Loaded,
    listener: &ListenerPlan,
    server: &ServerPlan,
    sni: Option<&str>,
) {
    // Bytes, not requests: no method or path is looked at.
    (ex.request.method, ex.request.path) = (None, None);
    let Some(sni) = sni else {
        ex.refuse(Refusal::closed(
            "no_sni",
            "PASSTHROUGH routes by SNI and the client sends none: the connection is closed".into(),
            Some("send an SNI".into()),
        ));
        return;
    };
    ex.notes.push(
        "PASSTHROUGH: the client's TLS goes to the destination untouched; the backend's certificate must cover the SNI".into(),
    );
    let Some(route) = server.tls_route(listener.port, sni) else {
        ex.refuse(Refusal::closed(
            "no_route",
            format!("no TLS route of the server matches SNI {sni:?} on port {}: the connection is closed", listener.port),
            Some(format!(
                "add a VirtualService bound to this server with a tls route matching sniHosts [{sni}]"
            )),
        ));
        return;
    };
    l4_route(ex, loaded, server, route, |vs| &vs.tls, "tls");
}

/// Terminated TLS or plain TCP: the TCP route, else the Sidecar's
/// `defaultEndpoint`.
fn tcp(ex: &mut Explanation, loaded: &Loaded, listener: &ListenerPlan, server: &ServerPlan) {
    (ex.request.method, ex.request.path) = (None, None);
    if let Some(route) = server.tcp_route(listener.port) {
        l4_route(ex, loaded, server, route, |vs| &vs.tcp, "tcp");
    } else if let Some(ep) = server
        .default_endpoint
        .as_ref()
        .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
    {
        ex.destination = Some(upstream::plain(
            "defaultEndpoint",
            &ep.ip().to_string(),
            ep.port(),
            false,
        ));
    } else {
        ex.refuse(Refusal::closed(
            "no_route",
            format!(
                "no TCP route on port {}: the connection is closed",
                listener.port
            ),
            Some("add a VirtualService bound to this server with a tcp route".into()),
        ));
    }
}

/// A TLS or TCP route: the VirtualService it is in, and where it goes.
fn l4_route(
    ex: &mut Explanation,
    loaded: &Loaded,
    server: &ServerPlan,
    route: &L4RoutePlan,
    list: impl Fn(&GatewayRoutes) -> &Vec<L4RoutePlan>,
    what: &str,
) {
    if let Some(vs) = server
        .routes
        .iter()
        .find(|vs| list(vs).iter().any(|r| std::ptr::eq(r, route)))
    {
        let index = list(vs).iter().position(|r| std::ptr::eq(r, route));
        ex.matched.push(Matched {
            kind: "VirtualService".into(),
            at: vs.resource.clone(),
            detail: format!("{what} route {} (of those bound here)", index.unwrap_or(0)),
        });
    }
    // `runtime::inbound::l4_destination`: weighted, then resolved.
    let Some(d) = crate::plan::pick_weighted(&route.destinations, |d| d.weight, 0) else {
        ex.refuse(Refusal::closed(
            "no_route",
            "the route has no destination".into(),
            None,
        ));
        return;
    };
    if route.destinations.len() > 1 {
        ex.notes
            .push("a weighted route: other connections may go to its other destinations".into());
    }
    let resolved = destination::resolve(
        &loaded.plan.outbound,
        &d.host,
        d.port,
        d.subset.as_deref(),
        Speak::Bytes,
    );
    ex.destination = Some(upstream::route_target(ex, loaded, &resolved, false));
}
