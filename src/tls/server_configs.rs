//! Every server config of one configuration, built so that the next
//! configuration reuses what did not change: a server whose settings and
//! credential content are the same keeps its config, and sessions resume
//! across reloads because session-ticket keys live as long as the
//! client-verification policy they were issued under.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::ServerConfig;

use super::server::{Resumption, ServerTlsError, build};
use crate::creds::{Credentials, Fingerprint};
use crate::plan::inbound::{ServerPlan, ServerTlsPlan, TlsServerMode};

/// What a server config is built from: its settings (without where they
/// were written) and the content of its certificates and client CA.
#[derive(Clone, PartialEq, Eq, Hash)]
struct BuildKey {
    tls: ServerTlsPlan,
    http: bool,
    certs: Vec<Fingerprint>,
    client_ca: Option<Fingerprint>,
}

/// What decides which clients a server accepts: sessions issued under one
/// policy only resume under the same policy.
#[derive(Clone, PartialEq, Eq, Hash)]
struct VerifyKey {
    mode: TlsServerMode,
    client_ca: Option<Fingerprint>,
    subject_alt_names: Vec<String>,
    spki_sha256: Vec<Vec<u8>>,
    cert_sha256: Vec<Vec<u8>>,
    insecure_skip_verify: bool,
}

/// The server configs of one configuration.
#[derive(Default)]
pub struct ServerConfigs {
    /// By server origin (what connections look up).
    by_origin: HashMap<String, Arc<ServerConfig>>,
    /// By what they were built from (what the next configuration reuses).
    built: HashMap<BuildKey, Arc<ServerConfig>>,
    /// Resumption state per client-verification policy.
    resumption: HashMap<VerifyKey, Resumption>,
}

impl ServerConfigs {
    /// Builds a config for every terminating server of `servers`, reusing
    /// `previous` where nothing changed. Every error is returned.
    pub fn build<'a>(
        servers: impl IntoIterator<Item = &'a ServerPlan>,
        creds: &Credentials,
        previous: Option<&ServerConfigs>,
    ) -> Result<ServerConfigs, Vec<ServerTlsError>> {
        let (out, errors) = Self::build_partial(servers, creds, previous);
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }

    /// [`ServerConfigs::build`], returning the configs that could be built
    /// with every error: a server without one refuses its handshakes.
    pub fn build_partial<'a>(
        servers: impl IntoIterator<Item = &'a ServerPlan>,
        creds: &Credentials,
        previous: Option<&ServerConfigs>,
    ) -> (ServerConfigs, Vec<ServerTlsError>) {
        let mut out = ServerConfigs::default();
        let mut errors = Vec::new();
        for server in servers {
            let Some(tls) = server.tls.as_ref().filter(|_| server.terminates()) else {
                continue;
            };
            let client_ca = tls
                .client_ca
                .as_ref()
                .and_then(|ca| creds.client_cas.get(&(ca.clone(), tls.crl.clone())))
                .map(|t| t.fingerprint);
            let key = BuildKey {
                tls: ServerTlsPlan {
                    origin: String::new(),
                    ..tls.clone()
                },
                http: server.protocol.is_http(),
                certs: tls
                    .certs
                    .iter()
                    .filter_map(|c| creds.servers.get(c).map(|i| i.fingerprint))
                    .collect(),
                client_ca,
            };
            let verify = VerifyKey {
                mode: tls.mode,
                client_ca,
                subject_alt_names: tls.subject_alt_names.clone(),
                spki_sha256: tls.spki_sha256.clone(),
                cert_sha256: tls.cert_sha256.clone(),
                insecure_skip_verify: tls.insecure_skip_verify,
            };
            let known = out
                .resumption
                .get(&verify)
                .or_else(|| previous.and_then(|p| p.resumption.get(&verify)))
                .cloned();
            let resumption = match known {
                Some(r) => r,
                None => match Resumption::new() {
                    Ok(r) => r,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            out.resumption.insert(verify, resumption.clone());
            // A config from `previous` with the same key was built with the
            // same resumption state (one per policy).
            let reused = out
                .built
                .get(&key)
                .or_else(|| previous.and_then(|p| p.built.get(&key)))
                .cloned();
            let config = match reused {
                Some(c) => c,
                None => match build(tls, key.http, creds, &resumption) {
                    Ok(c) => c,
                    Err(e) => {
                        errors.push(e);
                        continue;
                    }
                },
            };
            out.built.insert(key, config.clone());
            out.by_origin.insert(server.origin.clone(), config);
        }
        (out, errors)
    }

    /// The config of the server written at `origin`.
    pub fn get(&self, origin: &str) -> Option<&Arc<ServerConfig>> {
        self.by_origin.get(origin)
    }
}
