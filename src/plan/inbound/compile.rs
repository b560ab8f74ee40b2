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
    let mut broken = Broken::default();
    for gw in &config.gateways {
        let gw_id = format!("{}/{}", gw.source.namespace, gw.source.name);
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let mark = diag.errors.len();
            if let Some((port, plan)) = compile_gateway_server(gw, &gw_id, s, &field, config, diag)
            {
                let bind = s.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, gw.source.clone(), field));
            } else {
                let port = s.port.as_ref().and_then(|p| p.number);
                broken.note(port, &gw.source, &field, mark, diag);
            }
        }
    }
    for sc in &config.sidecars {
        for (i, l) in sc.spec.ingress.iter().enumerate() {
            let field = format!("spec.ingress[{i}]");
            let mark = diag.errors.len();
            if let Some((port, plan)) = compile_sidecar_listener(&sc.source, l, &field, diag) {
                let bind = l.bind.clone().filter(|b| !b.is_empty());
                servers.push((port, bind, plan, sc.source.clone(), field));
            } else {
                let port = l.port.as_ref().and_then(|p| p.number);
                broken.note(port, &sc.source, &field, mark, diag);
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
                    format!("IST0101: Referenced gateway not found: gateway {g:?} is not in the configuration; routes bound to it are not served"),
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
        match listeners
            .iter_mut()
            .find(|l| l.port == port && l.bind == bind)
        {
            Some(l) if l.tls != tls => {
                let mark = diag.errors.len();
                diag.error(
                    &src,
                    format!("{field}.port"),
                    format!(
                        "port {port} would mix TLS and plain-text servers (the other is {}); use separate ports",
                        l.servers[0].origin
                    ),
                );
                broken.note(Some(u32::from(port)), &src, &field, mark, diag);
            }
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
    broken.remove_from(&mut listeners, diag);
    listeners.sort_by_key(|l| l.port);
    listeners.extend(mesh_inbound(config, diag));
    InboundPlan { listeners }
}

/// Ports with a server that does not compile. Such a port is not served
/// at all, whichever bind address its servers have: serving its other
/// servers could hand the broken server's clients to a weaker one (a
/// `*` SIMPLE server taking the SNI of a MUTUAL server that failed).
/// Every other port is served.
#[derive(Default)]
struct Broken(Vec<(u16, Source, String)>);

impl Broken {
    /// Records the server at `field` of `src`, whose errors start at
    /// `mark`, and isolates those errors. A server without a usable port
    /// cannot be served anywhere and takes no port down.
    fn note(
        &mut self,
        port: Option<u32>,
        src: &Source,
        field: &str,
        mark: usize,
        diag: &mut Diagnostics,
    ) {
        if diag.errors.len() == mark {
            return;
        }
        diag.isolate_since(mark);
        if let Some(port) = port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p != 0)
            && !self.0.iter().any(|(p, _, _)| *p == port)
        {
            self.0.push((port, src.clone(), field.to_string()));
        }
    }

    fn remove_from(self, listeners: &mut Vec<ListenerPlan>, diag: &mut Diagnostics) {
        for (port, src, field) in self.0 {
            let served: Vec<String> = listeners
                .iter()
                .filter(|l| l.port == port)
                .flat_map(|l| l.servers.iter().map(|s| s.origin.clone()))
                .collect();
            listeners.retain(|l| l.port != port);
            let others = if served.is_empty() {
                String::new()
            } else {
                format!(" (nor its other servers: {})", served.join("; "))
            };
            let mark = diag.errors.len();
            diag.error(
                &src,
                field.clone(),
                format!(
                    "port {port} is not served{others}: this server has errors; the rest of the configuration is served"
                ),
            );
            diag.isolate_since(mark);
        }
    }
}
