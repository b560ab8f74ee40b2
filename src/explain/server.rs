//! The inbound server that takes a connection, and its TLS as loaded:
//! certificates (and whether they cover the SNI), client-certificate
//! requirement and CA, versions.

use super::model::{Explanation, Matched, ServerCertInfo, ServerInfo, ServerTlsInfo, yaml_name};
use crate::creds::info::fmt_time;
use crate::load::Loaded;
use crate::plan::host::HostPattern;
use crate::plan::inbound::{ListenerPlan, ServerPlan, ServerTlsPlan, TlsServerMode};

/// The host pattern of `server` that `name` matches most specifically.
pub fn best_host(server: &ServerPlan, name: &str) -> Option<String> {
    server
        .hosts
        .iter()
        .filter(|h| h.matches(name))
        .max_by_key(|h| h.specificity())
        .map(ToString::to_string)
}

/// Records the server that takes the connection (or request).
pub fn set_server(
    ex: &mut Explanation,
    listener: &ListenerPlan,
    server: &ServerPlan,
    selected_by: String,
) {
    let kind = if !server.gateway.is_empty() {
        "Gateway"
    } else if listener.mesh {
        "mesh inbound"
    } else {
        "Sidecar"
    };
    ex.matched.push(Matched {
        kind: kind.into(),
        at: server.origin.clone(),
        detail: format!(
            "{} server on port {}, hosts {}; {selected_by}",
            yaml_name(&server.protocol),
            listener.port,
            hosts_of(server)
        ),
    });
    ex.server = Some(ServerInfo {
        at: server.origin.clone(),
        protocol: yaml_name(&server.protocol),
        hosts: server.hosts.iter().map(ToString::to_string).collect(),
        selected_by,
    });
}

pub fn hosts_of(s: &ServerPlan) -> String {
    s.hosts
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn server_tls(loaded: &Loaded, tls: &ServerTlsPlan, sni: Option<&str>) -> ServerTlsInfo {
    let creds = &loaded.creds;
    let certificates: Vec<ServerCertInfo> = tls
        .certs
        .iter()
        .filter_map(|src| creds.servers.get(src))
        .map(|id| ServerCertInfo {
            source: id.source.clone(),
            subject: id.leaf.subject.clone(),
            sans: id.leaf.sans.clone(),
            not_after: fmt_time(id.leaf.not_after),
            covers_sni: sni.map(|s| id.leaf.covers(&HostPattern::Exact(s.to_string()))),
        })
        .collect();
    let covers_sni = match (sni, certificates.is_empty()) {
        (Some(_), false) => Some(certificates.iter().any(|c| c.covers_sni == Some(true))),
        _ => None,
    };
    let client_ca = tls.client_ca.as_ref().map(|ca| {
        match creds.client_cas.get(&(ca.clone(), tls.crl.clone())) {
            Some(t) => {
                let n = t.roots.len();
                format!("{} ({n} root{})", t.source, if n == 1 { "" } else { "s" })
            }
            None => format!("{ca:?}"),
        }
    });
    ServerTlsInfo {
        mode: yaml_name(&tls.mode),
        at: tls.origin.clone(),
        certificates,
        covers_sni,
        client_certificate: match tls.mode {
            TlsServerMode::Mutual => "required",
            TlsServerMode::OptionalMutual => "optional",
            TlsServerMode::Simple | TlsServerMode::Passthrough => "notRequested",
        }
        .into(),
        client_ca,
        client_subject_alt_names: tls.subject_alt_names.clone(),
        min_version: yaml_name(&tls.min_version),
        max_version: yaml_name(&tls.max_version),
        insecure_skip_verify: tls.insecure_skip_verify,
    }
}
