//! Client (origination) TLS settings, compiled from `ClientTLSSettings`.
//!
//! Only names files and credentials; loading and checking them is `creds`'
//! job, building rustls configs is `tls`'.

use std::path::PathBuf;

use serde::Serialize;

use super::diagnostics::Diagnostics;
use crate::config::Source;
use crate::config::destination_rule::{ClientTls, ClientTlsMode};

/// How the upstream connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsMode {
    /// Plain text (Istio's DISABLE; also the default).
    Disable,
    /// TLS with the server verified.
    Simple,
    /// TLS with the server verified and a client certificate presented.
    Mutual,
}

/// A `credentialName` reference, with Istio's `kubernetes://[ns/]name`
/// prefix understood.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct CredentialRef {
    /// The Secret's name.
    pub name: String,
    /// Its namespace when given (`kubernetes://ns/name`); the proxy's
    /// namespace otherwise.
    pub namespace: Option<String>,
}

/// Why a `credentialName` is not usable. The text quotes it as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialRefError {
    /// A `scheme://` other than `kubernetes://` (e.g. SDS names).
    #[error(
        "{raw:?}: unsupported credential type; meshgate reads plain names and kubernetes://[namespace/]name"
    )]
    UnsupportedType {
        /// The reference as written.
        raw: String,
    },
    /// An empty name, or more than one `/`.
    #[error("{raw:?}: not a valid Secret name")]
    InvalidName {
        /// The reference as written.
        raw: String,
    },
}

impl CredentialRef {
    /// Parses `name`, `kubernetes://name` or `kubernetes://ns/name`.
    pub fn parse(raw: &str) -> Result<CredentialRef, CredentialRefError> {
        let rest = if let Some(r) = raw.strip_prefix("kubernetes://") {
            r
        } else if raw.contains("://") {
            return Err(CredentialRefError::UnsupportedType { raw: raw.into() });
        } else {
            raw
        };
        let (namespace, name) = match rest.split_once('/') {
            Some((ns, n)) => (Some(ns.to_string()), n.to_string()),
            None => (None, rest.to_string()),
        };
        if name.is_empty() || name.contains('/') {
            return Err(CredentialRefError::InvalidName { raw: raw.into() });
        }
        Ok(CredentialRef { name, namespace })
    }
}

impl std::fmt::Display for CredentialRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "kubernetes://{ns}/{}", self.name),
            None => write!(f, "kubernetes://{}", self.name),
        }
    }
}

/// Where the roots for verifying the upstream come from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum TrustSource {
    /// The OS bundle (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured); Istio's
    /// behaviour when `caCertificates` is empty.
    System,
    /// A PEM bundle file (`caCertificates`).
    File(PathBuf),
    /// The CA inside a credential (`cacert` / `ca.crt`, `<name>-cacert` first).
    Credential(CredentialRef),
}

/// Where the client certificate for MUTUAL comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum IdentitySource {
    /// `clientCertificate` + `privateKey` files.
    Files {
        /// Certificate chain, leaf first.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
    },
    /// `cert`/`key` or `tls.crt`/`tls.key` of a Secret.
    Credential(CredentialRef),
}

/// Compiled client TLS settings for one (rule, port) pair.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientTlsPlan {
    /// DISABLE / SIMPLE / MUTUAL.
    pub mode: TlsMode,
    /// SNI override; the request's host when `None`.
    pub sni: Option<String>,
    /// Names accepted on the server certificate; when empty, the
    /// ServiceEntry's, else `sni` when set, else the request's host
    /// (Istio's automatic SAN validation); see `Target::verify_names`.
    pub subject_alt_names: Vec<String>,
    /// Roots for chain verification.
    pub trust: TrustSource,
    /// Client certificate (MUTUAL only).
    pub identity: Option<IdentitySource>,
    /// CRL for the server certificate.
    pub crl: Option<PathBuf>,
    /// Skip chain and name checks (explicitly requested; warned at load).
    pub insecure_skip_verify: bool,
    /// ISTIO_MUTUAL: the mesh trust domain whose workloads are accepted when
    /// no `subjectAltNames` say which (any `spiffe://<domain>/...`).
    pub mesh_trust_domain: Option<String>,
    /// Where these settings came from, e.g.
    /// `dr.yaml:3: DestinationRule/default/x: spec.trafficPolicy.tls`.
    pub origin: String,
}

impl ClientTlsPlan {
    /// Plain text, for hosts with no TLS settings.
    pub fn disabled() -> ClientTlsPlan {
        ClientTlsPlan {
            mode: TlsMode::Disable,
            sni: None,
            subject_alt_names: Vec::new(),
            trust: TrustSource::System,
            identity: None,
            crl: None,
            insecure_skip_verify: false,
            mesh_trust_domain: None,
            origin: String::new(),
        }
    }
}

/// Compiles one `tls` block found at `field` of `source`.
pub(crate) fn compile(
    tls: &ClientTls,
    source: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<ClientTlsPlan> {
    let mode = match tls.mode.unwrap_or(ClientTlsMode::Disable) {
        ClientTlsMode::Disable => TlsMode::Disable,
        ClientTlsMode::Simple => TlsMode::Simple,
        ClientTlsMode::Mutual => TlsMode::Mutual,
        ClientTlsMode::IstioMutual => return compile_istio_mutual(tls, source, field, diag),
    };
    let mut plan = ClientTlsPlan {
        mode,
        origin: format!("{source}: {field}"),
        ..ClientTlsPlan::disabled()
    };
    if mode == TlsMode::Disable {
        let set = tls.client_certificate.is_some()
            || tls.ca_certificates.is_some()
            || tls.credential_name.is_some()
            || tls.sni.is_some()
            || !tls.subject_alt_names.is_empty();
        if set {
            diag.warn(
                source,
                field,
                "mode is DISABLE, so the other TLS fields are ignored",
            );
        }
        return Some(plan);
    }
    let errors_before = diag.errors.len();
    let credential = match tls.credential_name.as_deref().map(CredentialRef::parse) {
        Some(Ok(c)) => Some(c),
        Some(Err(e)) => {
            diag.error(source, format!("{field}.credentialName"), e.to_string());
            None
        }
        None => None,
    };
    // Istio's validation refuses both combinations: which of two CAs (or
    // identities) was meant is not for meshgate to guess.
    if tls.insecure_skip_verify == Some(true) {
        let ca = non_empty(&tls.ca_certificates).is_some()
            || (mode == TlsMode::Simple && tls.credential_name.is_some());
        if ca || !tls.subject_alt_names.is_empty() {
            diag.error(
                source,
                format!("{field}.insecureSkipVerify"),
                "cannot specify CaCertificates or CredentialName or SubjectAltNames when \
                 InsecureSkipVerify is set true (Istio's validation)",
            );
        }
    }
    if let Some(cred) = &credential {
        if non_empty(&tls.client_certificate).is_some()
            || non_empty(&tls.private_key).is_some()
            || non_empty(&tls.ca_certificates).is_some()
            || non_empty(&tls.ca_crl).is_some()
        {
            diag.error(
                source,
                format!("{field}.credentialName"),
                "cannot specify client certificates or CA certificate or CA CRL If credentialName \
                 is set (Istio's validation); with credentialName the CRL goes in the Secret that \
                 holds the CA (key `ca.crl` or `crl`)",
            );
        }
        plan.trust = TrustSource::Credential(cred.clone());
        if mode == TlsMode::Mutual {
            plan.identity = Some(IdentitySource::Credential(cred.clone()));
        }
    } else {
        if let Some(ca) = non_empty(&tls.ca_certificates) {
            plan.trust = TrustSource::File(ca.into());
        }
        plan.crl = non_empty(&tls.ca_crl).map(PathBuf::from);
        let cert = non_empty(&tls.client_certificate);
        let key = non_empty(&tls.private_key);
        match (mode, cert, key) {
            (TlsMode::Mutual, Some(c), Some(k)) => {
                plan.identity = Some(IdentitySource::Files {
                    cert: c.into(),
                    key: k.into(),
                });
            }
            (TlsMode::Mutual, None, _) => diag.error(
                source,
                format!("{field}.clientCertificate"),
                "required for MUTUAL (or set credentialName)",
            ),
            (TlsMode::Mutual, Some(_), None) => diag.error(
                source,
                format!("{field}.privateKey"),
                "required with clientCertificate for MUTUAL",
            ),
            (_, Some(_), _) | (_, _, Some(_)) => diag.warn(
                source,
                field,
                "clientCertificate/privateKey are only used in MUTUAL mode; ignored for SIMPLE",
            ),
            _ => {}
        }
    }
    if let Some(sni) = non_empty(&tls.sni) {
        if super::host::HostPattern::parse(sni).is_err() && sni.parse::<std::net::IpAddr>().is_err()
        {
            diag.error(
                source,
                format!("{field}.sni"),
                format!("{sni:?} is not a valid server name"),
            );
        }
        plan.sni = Some(super::host::normalize(sni));
    }
    for (i, san) in tls.subject_alt_names.iter().enumerate() {
        if san.trim().is_empty() {
            diag.error(
                source,
                format!("{field}.subjectAltNames[{i}]"),
                "empty name",
            );
        }
    }
    plan.subject_alt_names = tls.subject_alt_names.clone();
    if tls.insecure_skip_verify == Some(true) {
        plan.insecure_skip_verify = true;
        diag.warn(
            source,
            &format!("{field}.insecureSkipVerify"),
            "upstream certificate chain and name are NOT verified for this destination",
        );
    }
    (diag.errors.len() == errors_before).then_some(plan)
}

/// ISTIO_MUTUAL: the workload's own identity (Istio's file-mounted layout
/// in the bootstrap's identity directory) and the mesh root; the server must
/// be a workload of the trust domain (or one of `subjectAltNames`).
fn compile_istio_mutual(
    tls: &ClientTls,
    source: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<ClientTlsPlan> {
    let before = diag.errors.len();
    for (name, set) in [
        ("clientCertificate", tls.client_certificate.is_some()),
        ("privateKey", tls.private_key.is_some()),
        ("caCertificates", tls.ca_certificates.is_some()),
        ("credentialName", tls.credential_name.is_some()),
        ("caCrl", tls.ca_crl.is_some()),
        ("insecureSkipVerify", tls.insecure_skip_verify.is_some()),
    ] {
        if set {
            diag.error(
                source,
                format!("{field}.{name}"),
                "must be empty with ISTIO_MUTUAL (the mesh identity is used)",
            );
        }
    }
    let Some(mesh) = diag.mesh.clone() else {
        diag.error(
            source,
            format!("{field}.mode"),
            "ISTIO_MUTUAL needs this workload's mesh identity: start meshgate with --identity-dir \
             DIR holding Istio's cert-chain.pem, key.pem and root-cert.pem (e.g. from `meshgate ca issue`)",
        );
        return None;
    };
    if diag.errors.len() != before {
        return None;
    }
    Some(ClientTlsPlan {
        mode: TlsMode::Mutual,
        sni: non_empty(&tls.sni).map(super::host::normalize),
        subject_alt_names: tls.subject_alt_names.clone(),
        trust: TrustSource::File(mesh.dir.join("root-cert.pem")),
        identity: Some(IdentitySource::Files {
            cert: mesh.dir.join("cert-chain.pem"),
            key: mesh.dir.join("key.pem"),
        }),
        crl: None,
        insecure_skip_verify: false,
        mesh_trust_domain: Some(mesh.trust_domain),
        origin: format!("{source}: {field}"),
    })
}

fn non_empty(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}
