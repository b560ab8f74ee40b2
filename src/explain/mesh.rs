//! The mesh VirtualService route an outbound request or tunnel follows,
//! chosen by the plan's own selection (`OutboundPlan::select` for a
//! request; `select_tls` or `select_tunnel` for a tunnel, as
//! `runtime::outbound` asks them), and what it says.

use super::model::{Matched, RequestKind, RetryInfo, RouteInfo, secs};
use super::request::{OutboundRequest, header_map};
use crate::plan::outbound::{MeshRouting, OutboundPlan, RequestFacts};
use crate::plan::route::RequestView;

/// The mesh routing of `req`; `path` is the normalised path (HTTP).
pub fn select<'p>(
    outbound: &'p OutboundPlan,
    req: &OutboundRequest,
    path: &str,
    notes: &mut Vec<String>,
) -> MeshRouting<'p> {
    let (host, port) = (req.host.as_str(), req.port);
    if req.kind == RequestKind::Http {
        // As `runtime::outbound::forward` sees an absolute-form request.
        let authority = if port == 80 {
            host.to_string()
        } else {
            format!("{host}:{port}")
        };
        let headers = header_map(&req.headers);
        let facts = RequestFacts {
            host,
            request: RequestView {
                method: &req.method,
                scheme: "http",
                authority: &authority,
                path_and_query: path,
                headers: &headers,
                port,
            },
        };
        return outbound.select(&facts, 0);
    }
    // As `runtime::outbound::connect`: a tunnel is routed by its first
    // bytes when the host's VirtualService has TLS routes for the port.
    let dest_ip = host.parse::<std::net::IpAddr>().ok();
    if outbound.routes_by_sni(host, port).is_none() {
        return outbound.select_tunnel(host, port, dest_ip, 0);
    }
    if req.app_tls {
        notes.push(format!(
            "the tunnel is routed by its first bytes: the app's ClientHello (SNI {host}) picks a tls route"
        ));
        match outbound.select_tls(host, port, Some(host), dest_ip, 0) {
            MeshRouting::Unrouted => outbound.select_connection(host, port, 0),
            r => r,
        }
    } else {
        notes.push(
            "the tunnel is routed by its first bytes: this is for bytes that are not TLS; for a ClientHello, explain https://HOST:PORT/"
                .into(),
        );
        outbound.select_tunnel(host, port, dest_ip, 0)
    }
}

/// The VirtualService and route that `routing` followed.
pub fn describe(routing: &MeshRouting<'_>, req: &OutboundRequest) -> Option<(Matched, RouteInfo)> {
    let MeshRouting::Routed(c) = routing else {
        return None;
    };
    let dest = format!(
        "{}{}{}",
        c.dest.host,
        c.dest.port.map(|p| format!(":{p}")).unwrap_or_default(),
        c.dest
            .subset
            .as_ref()
            .map(|s| format!(" (subset {s})"))
            .unwrap_or_default()
    );
    let (what, index, info) = match c.http {
        Some((r, m)) => {
            let index = c.vs.http.iter().position(|x| std::ptr::eq(x, r));
            let rewrite = r.rewrite.as_ref().and_then(|rw| {
                let mut parts = Vec::new();
                if let (Some(path), Some(new)) = (
                    req.path.as_deref(),
                    req.path.as_deref().and_then(|p| rw.rewrite_path(p, &m)),
                ) {
                    parts.push(format!("path {path} → {new}"));
                }
                if let Some(a) = &rw.authority {
                    parts.push(format!("authority → {a}"));
                }
                (!parts.is_empty()).then(|| parts.join(", "))
            });
            let info = RouteInfo {
                at: c.vs.resource.clone(),
                index,
                name: r.name.clone(),
                action: "forward".into(),
                timeout: r.timeout.map(secs),
                retries: Some(RetryInfo::of(&r.retries)),
                rewrite,
                fault: None,
            };
            ("http", index, info)
        }
        None => {
            let tls =
                c.vs.tls
                    .iter()
                    .position(|r| r.destinations.iter().any(|d| std::ptr::eq(d, c.dest)));
            let (what, index) = match tls {
                Some(i) => ("tls", Some(i)),
                None => (
                    "tcp",
                    c.vs.tcp
                        .iter()
                        .position(|r| r.destinations.iter().any(|d| std::ptr::eq(d, c.dest))),
                ),
            };
            let info = RouteInfo {
                at: c.vs.resource.clone(),
                index,
                name: None,
                action: "forward".into(),
                timeout: None,
                retries: None,
                rewrite: None,
                fault: None,
            };
            (what, index, info)
        }
    };
    let matched = Matched {
        kind: "VirtualService".into(),
        at: c.vs.resource.clone(),
        detail: format!(
            "{what} route {} sends {}:{} to {dest}{}",
            index.map_or_else(|| "?".into(), |i| i.to_string()),
            req.host,
            req.port,
            if c.weighted {
                " (weighted: other requests may go to its other destinations)"
            } else {
                ""
            }
        ),
    };
    Some((matched, info))
}
