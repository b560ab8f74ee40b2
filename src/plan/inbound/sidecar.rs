//! Sidecar ingress listeners and the mesh inbound listener (Istio's 15006):
//! the workload's own listeners, as opposed to Gateway servers.

use std::sync::Arc;

use super::gateway::parse_protocol;
use super::tls::compile_server_tls;
use super::*;
use crate::config::{Config, Source};
use crate::plan::diagnostics::Diagnostics;
use crate::plan::port::port_number;

/// The mesh inbound listener: mutual TLS from other workloads of the trust
/// domain (the workload's own identity as server certificate, the mesh root
/// for clients), PeerAuthentication deciding whether plain text is also
/// accepted, everything forwarded to the local app with the caller's SPIFFE
/// ID in `X-Forwarded-Client-Cert`. Without capture, only with an identity
/// and an app address. With capture (`interceptionMode: REDIRECT`) it also
/// serves every captured inbound connection that no Sidecar ingress or
/// Gateway listener takes, delivering it to the port the client dialled
/// (no `defaultEndpoint`); without an identity it relays those bytes as
/// they are, and refuses a STRICT PeerAuthentication it could not honour.
pub(super) fn mesh_inbound(config: &Config, diag: &mut Diagnostics) -> Option<ListenerPlan> {
    use crate::config::peer_authentication::MtlsMode;
    let capture = diag.capture;
    let app = diag.mesh.as_ref().and_then(|m| m.app_addr);
    if !capture && app.is_none() {
        return None;
    }
    // Workload over namespace over mesh policy (`plan::selector`).
    let (mode, origin) = crate::plan::selector::peer_mode(&config.peer_authentications);
    for pa in &config.peer_authentications {
        if !pa.spec.port_level_mtls.is_empty() {
            diag.warn(
                &pa.source,
                "spec.portLevelMtls",
                "not implemented yet; the workload-wide mode applies",
            );
        }
    }
    let Some(mesh) = diag.mesh.clone() else {
        if mode == MtlsMode::Strict
            && let Some(pa) = config
                .peer_authentications
                .iter()
                .find(|pa| pa.spec.mtls.as_ref().and_then(|m| m.mode) == Some(MtlsMode::Strict))
        {
            diag.error(
                &pa.source,
                "spec.mtls.mode",
                "STRICT needs the workload's mesh identity (--identity-dir or --ca-address) \
                 to terminate mutual TLS on captured inbound traffic; without one it would be \
                 let through unauthenticated",
            );
            return None;
        }
        return Some(ListenerPlan {
            port: 15006,
            bind: None,
            tls: false,
            permissive: false,
            mesh: true,
            servers: vec![Arc::new(ServerPlan {
                origin: format!("captured inbound, no mesh identity ({origin})"),
                gateway: String::new(),
                protocol: ServerProtocol::Tcp,
                hosts: vec![HostPattern::Any],
                tls: None,
                https_redirect: false,
                routes: Vec::new(),
                default_endpoint: None,
            })],
        });
    };
    let plain = mode == MtlsMode::Disable;
    let tls = (!plain).then(|| ServerTlsPlan {
        mode: TlsServerMode::Mutual,
        certs: vec![ServerCertSource::Files {
            cert: mesh.dir.join("cert-chain.pem"),
            key: mesh.dir.join("key.pem"),
        }],
        client_ca: Some(ClientCaSource::File(mesh.dir.join("root-cert.pem"))),
        crl: None,
        subject_alt_names: vec![format!("spiffe://{}/*", mesh.trust_domain)],
        spki_sha256: Vec::new(),
        cert_sha256: Vec::new(),
        min_version: TlsVersion::Tls12,
        max_version: TlsVersion::Tls13,
        cipher_suites: Vec::new(),
        insecure_skip_verify: false,
        origin: format!("mesh inbound ({origin})"),
    });
    Some(ListenerPlan {
        port: 15006,
        bind: None,
        tls: !plain,
        permissive: matches!(mode, MtlsMode::Permissive | MtlsMode::Unset),
        mesh: true,
        servers: vec![Arc::new(ServerPlan {
            origin: format!("mesh inbound ({origin})"),
            gateway: String::new(),
            // Captured ports carry whatever the app speaks: relayed as is.
            protocol: if plain && capture {
                ServerProtocol::Tcp
            } else if plain {
                ServerProtocol::Http
            } else {
                ServerProtocol::Https
            },
            hosts: vec![HostPattern::Any],
            tls,
            https_redirect: false,
            routes: Vec::new(),
            default_endpoint: app.map(|a| a.to_string()),
        })],
    })
}

pub(super) fn compile_sidecar_listener(
    src: &Source,
    l: &crate::config::sidecar::IngressListener,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<(u16, ServerPlan)> {
    let before = diag.errors.len();
    let port = l.port.as_ref();
    let number = port_number(
        port.and_then(|p| p.number),
        src,
        &format!("{field}.port.number"),
        diag,
    );
    let app_protocol = parse_protocol(
        port.and_then(|p| p.protocol.as_deref()),
        src,
        &format!("{field}.port.protocol"),
        diag,
    );
    let endpoint = l.default_endpoint.clone().unwrap_or_default();
    if endpoint.is_empty() {
        diag.error(
            src,
            format!("{field}.defaultEndpoint"),
            "required (e.g. 127.0.0.1:8080)",
        );
    } else if endpoint.starts_with("unix://") {
        diag.error(
            src,
            format!("{field}.defaultEndpoint"),
            "unix domain sockets are not supported yet",
        );
    } else if !endpoint
        .parse::<std::net::SocketAddr>()
        .is_ok_and(|a| a.ip().is_loopback() || a.ip().is_unspecified())
    {
        // Istio's rule: the sidecar forwards to its own workload only.
        diag.error(
            src,
            format!("{field}.defaultEndpoint"),
            format!("{endpoint:?}: must be 127.0.0.1:<port>, 0.0.0.0:<port>, [::1]:<port> or [::]:<port>"),
        );
    }
    let tls = match &l.tls {
        Some(t) => {
            let plan = compile_server_tls(t, src, &format!("{field}.tls"), true, diag);
            if plan
                .as_ref()
                .is_some_and(|p| !matches!(p.mode, TlsServerMode::Simple | TlsServerMode::Mutual))
            {
                diag.error(
                    src,
                    format!("{field}.tls.mode"),
                    "a Sidecar ingress listener supports SIMPLE and MUTUAL only",
                );
            }
            plan
        }
        None => None,
    };
    let (Some(number), Some(app_protocol)) = (number, app_protocol) else {
        return None;
    };
    if diag.errors.len() != before {
        return None;
    }
    // The port's protocol is the app's; with TLS the client speaks TLS to us
    // (an HTTP2/GRPC app keeps its protocol: it is spoken to in h2c).
    let protocol = match (tls.is_some(), app_protocol) {
        (true, p @ (ServerProtocol::Http2 | ServerProtocol::Grpc)) => p,
        (true, p) if p.is_http() => ServerProtocol::Https,
        (true, _) => ServerProtocol::Tls,
        // HTTPS or TLS without `tls`: the app terminates; relay the bytes.
        (false, ServerProtocol::Https | ServerProtocol::Tls) => ServerProtocol::Tcp,
        (false, p) => p,
    };
    Some((
        number,
        ServerPlan {
            origin: format!("{src}: {field}"),
            gateway: String::new(),
            protocol,
            hosts: vec![HostPattern::Any],
            tls,
            https_redirect: false,
            routes: Vec::new(),
            default_endpoint: Some(endpoint),
        },
    ))
}
