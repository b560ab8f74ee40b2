//! Compiling Gateway servers and Sidecar ingress listeners into listeners:
//! one listener per (port, bind address), its servers in order.

use std::sync::Arc;

use super::binding::gateway_ref_matches;
use super::gateway::compile_gateway_server;
use super::sidecar::{compile_sidecar_listener, mesh_inbound};
use super::{InboundPlan, ListenerPlan, ServerPlan, ServerProtocol};
use crate::config::{Config, Source};
use crate::plan::diagnostics::Diagnostics;

pub(crate) fn compile(config: &Config, diag: &mut Diagnostics) -> InboundPlan {
    let mut servers: Vec<(u16, Option<String>, ServerPlan, Source, String)> = Vec::new();
    for gw in &config.gateways {
        let gw_id = format!("{}/{}", gw.source.namespace, gw.source.name);
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            if let Some((port, plan)) = compile_gateway_server(gw, &gw_id, s, &field, config, diag)
            {
                let bind = s.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, gw.source.clone(), field));
            }
        }
    }
    for sc in &config.sidecars {
        for (i, l) in sc.spec.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            if let Some((port, plan)) = compile_sidecar_listener(&sc.source, l, &field, diag) {
                let bind = l.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, sc.source.clone(), field));
            }
        }
    }
    // Istio's IST0101: a VirtualService naming a Gateway that is not there.
    for vs in &config.virtual_services {
        for g in vs.spec.gateways.iter().filter(|g| *g != "mesh") {
            let known = config.gateways.iter().any(|gw| {
                let id = format!("{}/{}", gw.source.namespace, gw.source.name);
                gateway_ref_matches(g, &vs.source.namespace, &id)
            });
            if !known {
                diag.warn(
                    &vs.source,
                    "spec.gateways",
                    format!("gateway {g:?} is not in the configuration; routes bound to it are not served"),
                );
            }
        }
    }
    let mut listeners: Vec<ListenerPlan> = Vec::new();
    for (port, bind, server, src, field) in servers {
        // A Sidecar ingress HTTP2/GRPC port with `tls` terminates too; its
        // protocol stays the app's (spoken to in h2c).
        let tls = matches!(server.protocol, ServerProtocol::Https | ServerProtocol::Tls)
            || (matches!(
                server.protocol,
                ServerProtocol::Http2 | ServerProtocol::Grpc
            ) && server.tls.is_some());
        match listeners.iter_mut().find(|l| l.port == port && l.bind == bind) {
            Some(l) if l.tls != tls => diag.error(
                &src,
                format!("{field}.port"),
                format!(
                    "port {port} would mix TLS and plain-text servers (the other is {}); use separate ports",
                    l.servers[0].origin
                ),
            ),
            Some(l) => {
                for other in &l.servers {
                    for h in &server.hosts {
                        if other.hosts.contains(h) {
                            diag.warnings.push(format!(
                                "{}: host {h} on port {port} is also served by {}; the first one wins",
                                server.origin, other.origin
                            ));
                        }
                    }
                }
                l.servers.push(Arc::new(server));
            }
            None => listeners.push(ListenerPlan {
                port,
                bind,
                tls,
                permissive: false,
                mesh: false,
                servers: vec![Arc::new(server)],
            }),
        }
    }
    listeners.sort_by_key(|l| l.port);
    listeners.extend(mesh_inbound(config, diag));
    InboundPlan { listeners }
}
