//! `meshgate explain outbound`: what the outbound listener does with a
//! request from the local app, decided by the plan's own routing (the mesh
//! route by `explain::mesh`, then `OutboundPlan::decide`), as
//! `runtime::outbound` does.

use super::mesh;
use super::model::{Direction, Explanation, Refusal, RequestInfo, RequestKind};
use super::request::OutboundRequest;
use super::upstream;
use crate::bootstrap::Bootstrap;
use crate::load::Loaded;
use crate::plan::Decision;
use crate::plan::outbound::MeshRouting;
use crate::plan::path::normalize;

/// Explains `req` under `loaded`.
pub fn explain(loaded: &Loaded, bootstrap: &Bootstrap, req: &OutboundRequest) -> Explanation {
    let http = req.kind == RequestKind::Http;
    let mut ex = Explanation::new(
        Direction::Outbound,
        RequestInfo {
            target: req.target.clone(),
            kind: req.kind,
            host: Some(req.host.clone()),
            port: req.port,
            path: None,
            method: Some(req.method.clone()),
            sni: None,
        },
    );
    ex.left_out(&loaded.isolated);
    if let (true, Some(path)) = (http, &req.path) {
        // As `runtime::exchange::admit`: routing sees the normalised path.
        match normalize(path, bootstrap.path_normalization) {
            Ok(p) => ex.request.path = Some(p.into_owned()),
            Err(why) => {
                ex.refuse(Refusal::status(
                    "path_normalization_failed",
                    400,
                    format!("the path {path:?} is refused: {why}"),
                    None,
                ));
                return ex.finish();
            }
        }
    }
    let outbound = &loaded.plan.outbound;
    let path = ex.request.path.clone().unwrap_or_else(|| "/".into());
    let routing = mesh::select(outbound, req, &path, &mut ex.notes);
    if let Some((m, info)) = mesh::describe(&routing, req) {
        ex.matched.push(m);
        ex.route = Some(info);
    }
    if let MeshRouting::NoMatch(vs) = routing {
        no_route(&mut ex, req, &vs.resource);
        return ex.finish();
    }
    match outbound.decide(&req.host, req.port, &routing) {
        Decision::NoRoute { route } => no_route(&mut ex, req, &route),
        Decision::Refused { reason } => {
            let suggestion = match outbound.service_for(&req.host, None) {
                Some(se) => format!(
                    "{} declares {} on port(s) {} only: add port {} to it, or send the request to a declared port",
                    se.resource,
                    req.host,
                    se.ports
                        .iter()
                        .map(|p| p.number.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    req.port
                ),
                None => format!(
                    "add a ServiceEntry for {} port {} (hosts: [{}], ports: [{{number: {}, name: {}, protocol: {}}}], resolution: DNS), or set outboundTrafficPolicy to ALLOW_ANY",
                    req.host,
                    req.port,
                    req.host,
                    req.port,
                    if http { "http" } else { "tcp" },
                    if http { "HTTP" } else { "TLS" },
                ),
            };
            // `runtime::outbound::refused`: 502 from BlackHoleCluster.
            ex.refuse(Refusal::status(
                "registry_only",
                502,
                reason,
                Some(suggestion),
            ));
        }
        Decision::Passthrough { host, port } => {
            ex.notes.push(format!(
                "no ServiceEntry declares {}:{} and outboundTrafficPolicy is ALLOW_ANY: {} as is, resolved by DNS (Istio's PassthroughCluster)",
                req.host,
                req.port,
                if http { "forwarded in plain HTTP" } else { "the tunnel carries the app's bytes" }
            ));
            ex.destination = Some(upstream::plain("passthrough", &host, port, false));
        }
        Decision::Registered(t) => {
            let (mut dest, matched) = upstream::target(loaded, &t);
            ex.matched.extend(matched);
            if let Some(tls) = dest.tls.take() {
                match (req.kind, req.app_tls) {
                    (RequestKind::Connect, true) => ex.notes.push(format!(
                        "the app speaks TLS itself in the CONNECT tunnel: its ClientHello passes through untouched, so the DestinationRule's {} ({}) is not applied and the app verifies the server",
                        tls.mode, tls.at
                    )),
                    (RequestKind::Connect, _) => {
                        ex.notes.push(
                            "CONNECT tunnel: a ClientHello from the app passes through untouched; anything else is wrapped in the TLS below".into(),
                        );
                        dest.tls = Some(tls);
                    }
                    _ => dest.tls = Some(tls),
                }
            } else if http && matches!(t.port.protocol.as_str(), "HTTPS" | "TLS") {
                ex.notes.push(format!(
                    "port {} is declared {} but no DestinationRule originates TLS: the request goes out in plain HTTP; add a DestinationRule for {} with tls.mode SIMPLE on port {}, or have the app use https://",
                    t.port.number, t.port.protocol, t.host, t.port.number
                ));
            }
            upstream::without_endpoints(&mut ex, &t, true);
            if let Some(own) = dest.endpoints.iter().find(|e| is_own(e, bootstrap)) {
                ex.refuse(Refusal::status(
                    "loop_detected",
                    503,
                    format!("the endpoint {own} is meshgate's own outbound listener: the request would loop"),
                    Some(format!("give {} an endpoint that is not the proxy", t.host)),
                ));
            }
            ex.destination = Some(dest);
        }
    }
    ex.finish()
}

/// The host's mesh VirtualService has routes for this traffic and none
/// matches: 404 for a request, a closed tunnel.
fn no_route(ex: &mut Explanation, req: &OutboundRequest, vs: &str) {
    let suggestion = Some(format!(
        "add a route to {vs} that matches this {}, or one without match conditions as a default",
        if req.kind == RequestKind::Http {
            "request"
        } else {
            "tunnel"
        }
    ));
    let reason = format!("no route of {vs} matches {}:{}", req.host, req.port);
    ex.refuse(if req.kind == RequestKind::Http {
        Refusal::status("no_route", 404, reason, suggestion)
    } else {
        Refusal::closed(
            "no_route",
            format!("{reason}: the tunnel is closed"),
            suggestion,
        )
    });
}

/// Whether `endpoint` (`ip:port`) is the proxy's outbound listener.
fn is_own(endpoint: &str, bootstrap: &Bootstrap) -> bool {
    let Ok(addr) = endpoint.parse::<std::net::SocketAddr>() else {
        return false;
    };
    let own = bootstrap.outbound_addr;
    addr.port() == own.port()
        && (addr.ip() == own.ip() || (own.ip().is_unspecified() && addr.ip().is_loopback()))
}
