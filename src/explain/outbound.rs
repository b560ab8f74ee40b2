//! `meshgate explain outbound`: what the outbound listener does with a
//! request from the local app, decided by the plan's own routing (the mesh
//! route by `explain::mesh`, then `OutboundPlan::decide`), as
//! `runtime::outbound` does.

use super::mesh;
use super::model::{
    Direction, Explanation, Refusal, RequestInfo, RequestKind, TlsPolicyInfo, UpstreamTlsInfo,
    yaml_name,
};
use super::request::OutboundRequest;
use super::upstream;
use crate::bootstrap::Bootstrap;
use crate::load::Loaded;
use crate::plan::Decision;
use crate::plan::outbound::tls_policy::PlaintextGrant;
use crate::plan::outbound::{MeshRouting, OutboundPlan};
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
            tls_policy(&mut ex, outbound, req, None);
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
            // As the runtime: a request's plain text is refused before
            // anything is dialled; a tunnel's once it is open (its first
            // bytes decide).
            if http {
                tls_policy(&mut ex, outbound, req, dest.tls.as_ref());
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
            if !http {
                tls_policy(&mut ex, outbound, req, dest.tls.as_ref());
            }
            ex.destination = Some(dest);
        }
    }
    ex.finish()
}

/// The `outboundTlsPolicy` decision (`OutboundPlan::plaintext_allowed`,
/// as `runtime::outbound` asks it): TLS meshgate originates and the app's
/// own TLS are allowed; plain text needs ALLOW or an exception, else a
/// request is answered 403 and a tunnel's plain bytes close it. A
/// `host:port` tunnel is explained for bytes that are not TLS.
fn tls_policy(
    ex: &mut Explanation,
    outbound: &OutboundPlan,
    req: &OutboundRequest,
    originated: Option<&UpstreamTlsInfo>,
) {
    let mode = yaml_name(&outbound.tls_policy.mode);
    let info =
        |decision: &str, because: &str, exception: Option<String>, detail: String| TlsPolicyInfo {
            mode: mode.clone(),
            decision: decision.into(),
            because: because.into(),
            exception,
            detail,
        };
    let http = req.kind == RequestKind::Http;
    let decided = if let Some(tls) = originated {
        info(
            "allowed",
            "originatedTls",
            None,
            format!(
                "meshgate originates TLS ({}, {}){}",
                tls.mode,
                tls.at,
                if http {
                    ""
                } else {
                    "; a ClientHello from the app passes through"
                }
            ),
        )
    } else if req.app_tls {
        info(
            "allowed",
            "appTls",
            None,
            "the app's own TLS passes through the tunnel untouched".into(),
        )
    } else {
        match outbound.plaintext_allowed(&req.host, req.port) {
            Ok(PlaintextGrant::AllowMode) => info(
                "allowed",
                "allowMode",
                None,
                "plain text may leave the pod (outboundTlsPolicy ALLOW)".into(),
            ),
            Ok(PlaintextGrant::Exception(e)) => info(
                "allowed",
                "exception",
                Some(e.clone()),
                format!("plain text, listed in outboundTlsPolicy.exceptions as {e}"),
            ),
            Err(r) => {
                ex.refuse(if http {
                    Refusal::status("plaintext_refused", 403, r.reason(), Some(r.fix()))
                } else {
                    Refusal::closed(
                        "plaintext_refused",
                        format!(
                            "{}: a tunnel whose first bytes are not a TLS ClientHello is closed",
                            r.reason()
                        ),
                        Some(format!(
                            "{} (explain https://{}/ shows a tunnel carrying the app's TLS)",
                            r.fix(),
                            r.authority()
                        )),
                    )
                });
                info(
                    "refused",
                    "plaintext",
                    None,
                    format!(
                        "plain text to {} is refused (plaintext_refused){}",
                        r.authority(),
                        if http {
                            ""
                        } else {
                            "; the app's own TLS would pass through"
                        }
                    ),
                )
            }
        }
    };
    ex.tls_policy = Some(decided);
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
