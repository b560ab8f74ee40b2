//! HTTP on an inbound listener, decided as `runtime::inbound_http` decides
//! it: the path normalised, 421 for a host outside the connection's server,
//! the server by Host on plain ports, `httpsRedirect`, then the bound
//! VirtualService's first route that `HttpRoutePlan::matched` accepts, its
//! fault, redirect or direct response, and its destination resolved by
//! `plan::destination::resolve`.

use std::sync::Arc;

use super::model::{Explanation, Matched, Refusal, RetryInfo, RouteInfo, secs};
use super::request::{InboundRequest, header_map};
use super::server::{best_host, hosts_of, set_server};
use super::upstream;
use crate::bootstrap::Bootstrap;
use crate::load::Loaded;
use crate::plan::authz::{Attributes, HttpAttributes, peer_principal, remote_ip};
use crate::plan::destination::{self, Speak};
use crate::plan::inbound::{ListenerPlan, ServerPlan};
use crate::plan::route::{FaultPlan, HttpRoutePlan, Matched as RouteMatched, RequestView, Share};
use crate::runtime::http::parse_authority;

/// The request on a connection served by `conn_server` (chosen by SNI, or
/// the first server for PERMISSIVE plain text); `None` on a plain port,
/// where the Host picks the server. `tls`: the client spoke TLS.
pub fn explain(
    ex: &mut Explanation,
    loaded: &Loaded,
    bootstrap: &Bootstrap,
    req: &InboundRequest,
    listener: &ListenerPlan,
    conn_server: Option<&Arc<ServerPlan>>,
    tls: bool,
) {
    ex.request.method = Some(req.method.clone());
    let Some(authority) = req.host.clone().or_else(|| req.sni.clone()) else {
        ex.refuse(Refusal::status(
            "bad_request",
            400,
            "the request has no Host (give --host, or --sni which it defaults to)".into(),
            Some("pass --host".into()),
        ));
        return;
    };
    let auth = match parse_authority(&authority) {
        Ok(a) => a,
        Err(why) => {
            ex.refuse(Refusal::status("bad_request", 400, why.into(), None));
            return;
        }
    };
    let host = auth.host.as_str();
    ex.request.host = Some(host.to_string());
    let path = match crate::plan::path::normalize(&req.path, bootstrap.path_normalization) {
        Ok(p) => p.into_owned(),
        Err(why) => {
            ex.refuse(Refusal::status(
                "path_normalization_failed",
                400,
                format!("the path {:?} is refused: {why}", req.path),
                None,
            ));
            return;
        }
    };
    ex.request.path = Some(path.clone());
    let port = listener.port;
    let server = match conn_server {
        Some(s) if !s.serves(host) || listener.owned_elsewhere(s, host) => {
            let other = listener
                .server_for_host(host)
                .filter(|o| !Arc::ptr_eq(o, s));
            ex.refuse(Refusal::status(
                "misdirected_request",
                421,
                format!(
                    "{host} is not served on this connection (it was opened for {}){}",
                    hosts_of(s),
                    other
                        .map(|o| format!("; {} serves it", o.origin))
                        .unwrap_or_default()
                ),
                Some(format!("open a new connection with SNI {host}")),
            ));
            return;
        }
        Some(s) => s.clone(),
        None => {
            let Some(s) = listener.server_for_host(host) else {
                ex.refuse(Refusal::status(
                    "no_route",
                    404,
                    format!("no server on port {port} serves {host}"),
                    Some(format!(
                        "add {host} to the hosts of a server on port {port}"
                    )),
                ));
                return;
            };
            let by = format!(
                "Host {host} matches {}",
                best_host(s, host).unwrap_or_else(|| "*".into())
            );
            set_server(ex, listener, s, by);
            s.clone()
        }
    };
    if !authorize(
        ex,
        loaded,
        req,
        // The mesh listener's requests are for the app's port (as the
        // runtime decides them).
        (
            &auth.text,
            &path,
            match bootstrap.app_addr {
                Some(app) if listener.mesh => app.port(),
                _ => port,
            },
            if tls { "https" } else { "http" },
        ),
        bootstrap.num_trusted_proxies,
    ) {
        return;
    }
    if server.https_redirect && !tls {
        ex.refuse(Refusal::status(
            "https_redirect",
            301,
            format!("the server has tls.httpsRedirect: redirected to https://{host}{path}"),
            Some("send the request over TLS".into()),
        ));
        return;
    }
    let headers = header_map(&req.headers);
    let view = RequestView {
        method: &req.method,
        scheme: if tls { "https" } else { "http" },
        authority: &auth.text,
        path_and_query: &path,
        headers: &headers,
        port,
    };
    let routes = server.routes_for(host);
    let chosen = routes.and_then(|vs| {
        vs.http.iter().enumerate().find_map(|(i, r)| {
            r.matched(&view)
                .map(|m| (vs, i, r, m.uri_prefix.map(str::to_string)))
        })
    });
    let Some((vs, index, route, prefix)) = chosen else {
        no_route(
            ex,
            &server,
            routes.map(|vs| vs.resource.as_str()),
            host,
            &path,
            &req.method,
        );
        return;
    };
    ex.matched.push(Matched {
        kind: "VirtualService".into(),
        at: vs.resource.clone(),
        detail: format!(
            "http route {index}{} (of those bound to this server) matches {} {host}{path}",
            route
                .name
                .as_ref()
                .map(|n| format!(" {n:?}"))
                .unwrap_or_default(),
            req.method
        ),
    });
    let mut info = RouteInfo {
        at: vs.resource.clone(),
        index: Some(index),
        name: route.name.clone(),
        action: "forward".into(),
        timeout: route.timeout.map(secs),
        retries: Some(RetryInfo::of(&route.retries)),
        rewrite: None,
        fault: route.fault.as_ref().map(describe_fault),
    };
    let refused = local_answer(ex, route, &view, &mut info);
    if !refused {
        forward(
            ex,
            loaded,
            &server,
            route,
            &path,
            prefix.as_deref(),
            &mut info,
        );
    }
    ex.route = Some(info);
}

/// AuthorizationPolicy, decided by `AuthzPlan::decide` as the runtime
/// does (`runtime::authz`): the peer identity is the `--client-cert`'s
/// when the server accepts it, the address `--source-ip`. `false` when
/// denied (recorded as the refusal).
fn authorize(
    ex: &mut Explanation,
    loaded: &Loaded,
    req: &InboundRequest,
    (authority, path, port, scheme): (&str, &str, u16, &str),
    trusted: u32,
) -> bool {
    let plan = &loaded.plan.authz;
    if !loaded.plan.authn.rules.is_empty() {
        ex.notes.push(
            "RequestAuthentication applies: explain does not validate tokens, so the request is \
             decided without a request principal (as a request without a token)"
                .into(),
        );
    }
    if plan.is_empty() {
        return true;
    }
    let principal = ex
        .client_certificate
        .as_ref()
        .filter(|c| c.accepted == Some(true))
        .and_then(|c| peer_principal(&c.sans, &c.subject));
    let headers = header_map(&req.headers);
    let source_ip = req
        .source_ip
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    let bare = path.split_once('?').map_or(path, |(p, _)| p);
    let attrs = Attributes {
        source_ip,
        remote_ip: remote_ip(source_ip, &headers, trusted),
        principal: principal.as_deref(),
        destination_ip: None,
        destination_port: port,
        sni: req.sni.as_deref(),
        http: Some(HttpAttributes {
            host: authority,
            method: &req.method,
            path: bare,
            path_and_query: path,
            scheme,
            headers: &headers,
            auth: None,
        }),
    };
    let verdict = plan.decide(&attrs);
    let origin = |name: &str| {
        plan.deny
            .iter()
            .chain(&plan.allow)
            .chain(&plan.audit)
            .find(|p| &*p.name == name)
            .map_or_else(|| name.to_string(), |p| p.origin.clone())
    };
    if let Some(a) = &verdict.audit {
        ex.matched.push(Matched {
            kind: "AuthorizationPolicy".into(),
            at: origin(&a.policy),
            detail: format!(
                "AUDIT rule {} matches: the request is marked in the access log",
                a.rule
            ),
        });
    }
    match (&verdict.by, verdict.allowed) {
        (Some(by), allowed) => {
            let action = if allowed { "ALLOW" } else { "DENY" };
            ex.matched.push(Matched {
                kind: "AuthorizationPolicy".into(),
                at: origin(&by.policy),
                detail: format!(
                    "{action} rule {} (spec.rules[{}]) matches",
                    by.rule, by.rule
                ),
            });
            if !allowed {
                ex.refuse(Refusal::status(
                    crate::runtime::authz::DENIED,
                    403,
                    format!(
                        "denied by AuthorizationPolicy {} spec.rules[{}] (RBAC: access denied)",
                        by.policy, by.rule
                    ),
                    Some(format!("change {} or the request", origin(&by.policy))),
                ));
            }
        }
        (None, false) => {
            let names: Vec<&str> = plan.allow.iter().map(|p| &*p.name).collect();
            ex.refuse(Refusal::status(
                crate::runtime::authz::DENIED,
                403,
                format!(
                    "ALLOW policies apply ({}) and none of their rules matches (RBAC: access denied)",
                    names.join(", ")
                ),
                Some("add an ALLOW rule that matches the request".into()),
            ));
        }
        (None, true) => {}
    }
    verdict.allowed
}

/// No route: the Sidecar's `defaultEndpoint`, else 404.
fn no_route(
    ex: &mut Explanation,
    server: &ServerPlan,
    vs: Option<&str>,
    host: &str,
    path: &str,
    method: &str,
) {
    if let Some(ep) = server
        .default_endpoint
        .as_ref()
        .and_then(|e| e.parse::<std::net::SocketAddr>().ok())
    {
        ex.notes
            .push("no route matched: the request goes to the Sidecar's defaultEndpoint".into());
        ex.destination = Some(upstream::plain(
            "defaultEndpoint",
            &ep.ip().to_string(),
            ep.port(),
            server.h2c_upstream(),
        ));
        return;
    }
    let suggestion = match vs {
        None => format!(
            "no VirtualService bound to this server has a host matching {host}: add one with hosts: [{host}] and gateways: [{}]",
            if server.gateway.is_empty() {
                "<gateway>"
            } else {
                &server.gateway
            }
        ),
        Some(vs) => format!("{vs} has no http route matching {method} {path}: add a match for it"),
    };
    ex.refuse(Refusal::status(
        "no_route",
        404,
        format!(
            "no route matched {host}{path} on port {} (server {})",
            ex.request.port, server.origin
        ),
        Some(suggestion),
    ));
}

/// A fault abort for every request, a redirect or a direct response:
/// answered by meshgate. Returns whether the request stops here.
fn local_answer(
    ex: &mut Explanation,
    route: &HttpRoutePlan,
    view: &RequestView,
    info: &mut RouteInfo,
) -> bool {
    if let Some(f) = &route.fault {
        if let Some((delay, share)) = f.delay {
            ex.notes.push(format!(
                "the route delays {} of requests by {}",
                percent(share),
                secs(delay)
            ));
        }
        if let Some((status, share)) = f.abort {
            if share == Share::ALL {
                info.action = "faultAbort".into();
                ex.refuse(Refusal::status(
                    "fault_abort",
                    status,
                    format!("the route's fault injection aborts every request with {status}"),
                    Some("remove fault.abort from the route (or lower its percentage)".into()),
                ));
                return true;
            }
            ex.notes.push(format!(
                "the route aborts {} of requests with {status}",
                percent(share)
            ));
        }
    }
    if let Some(r) = &route.redirect {
        info.action = "redirect".into();
        ex.refuse(Refusal::status(
            "redirect",
            r.code,
            format!("the route answers with a redirect to {}", r.location(view)),
            None,
        ));
        return true;
    }
    if let Some(d) = &route.direct_response {
        info.action = "directResponse".into();
        ex.refuse(Refusal::status(
            "direct_response",
            d.status,
            format!("the route answers {} itself (directResponse)", d.status),
            None,
        ));
        return true;
    }
    false
}

/// The route's destination (weighted: the first draw), with any rewrite.
fn forward(
    ex: &mut Explanation,
    loaded: &Loaded,
    server: &ServerPlan,
    route: &HttpRoutePlan,
    path: &str,
    prefix: Option<&str>,
    info: &mut RouteInfo,
) {
    let Some(d) = route.pick(0) else {
        ex.refuse(Refusal::status(
            "no_route",
            503,
            "the route has no destination".into(),
            None,
        ));
        return;
    };
    if route.destinations.len() > 1 {
        ex.notes
            .push("a weighted route: other requests may go to its other destinations".into());
    }
    if let Some(rw) = &route.rewrite {
        let matched = RouteMatched { uri_prefix: prefix };
        let new_path = rw.rewrite_path(path, &matched);
        let mut parts = Vec::new();
        if let Some(p) = new_path {
            parts.push(format!("path {path} → {p}"));
        }
        if let Some(a) = &rw.authority {
            parts.push(format!("authority → {a}"));
        }
        info.rewrite = (!parts.is_empty()).then(|| parts.join(", "));
    }
    // `runtime::inbound_http::route_destination`.
    let target = destination::resolve(
        &loaded.plan.outbound,
        &d.host,
        d.port,
        d.subset.as_deref(),
        Speak::Http {
            h2c: server.h2c_upstream(),
        },
    );
    ex.destination = Some(upstream::route_target(ex, loaded, &target, true));
}

fn describe_fault(f: &FaultPlan) -> String {
    let mut parts = Vec::new();
    if let Some((d, share)) = f.delay {
        parts.push(format!("delay {} for {}", secs(d), percent(share)));
    }
    if let Some((status, share)) = f.abort {
        parts.push(format!("abort {status} for {}", percent(share)));
    }
    parts.join(", ")
}

fn percent(share: Share) -> String {
    format!("{}%", f64::from(share.0) / 10_000.0)
}
