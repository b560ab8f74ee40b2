//! Server TLS settings (`ServerTLSSettings`) of Gateway servers and Sidecar
//! ingress listeners, checked the way Istio validates them.

use std::path::PathBuf;

use base64::Engine as _;

use super::*;
use crate::config::Source;
use crate::config::gateway::{ServerTls, ServerTlsMode, TlsProtocol};
use crate::plan::diagnostics::Diagnostics;

pub(super) fn compile_server_tls(
    t: &ServerTls,
    src: &Source,
    field: &str,
    sidecar: bool,
    diag: &mut Diagnostics,
) -> Option<ServerTlsPlan> {
    let before = diag.errors.len();
    let mode = match t.mode {
        None | Some(ServerTlsMode::Passthrough) => TlsServerMode::Passthrough,
        Some(ServerTlsMode::Simple) => TlsServerMode::Simple,
        Some(ServerTlsMode::Mutual) => TlsServerMode::Mutual,
        Some(ServerTlsMode::OptionalMutual) => TlsServerMode::OptionalMutual,
        Some(m @ (ServerTlsMode::IstioMutual | ServerTlsMode::AutoPassthrough)) => {
            diag.error(
                src,
                format!("{field}.mode"),
                format!("{} is not supported yet (it needs mesh workload identity); use SIMPLE, MUTUAL or PASSTHROUGH", yaml_name(&m)),
            );
            return None;
        }
    };
    let name = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let mut certs = Vec::new();
    let cred = name(&t.credential_name);
    let sources = [
        cred.is_some(),
        !t.credential_names.is_empty(),
        !t.tls_certificates.is_empty(),
    ];
    if sources.iter().filter(|s| **s).count() > 1 {
        diag.error(
            src,
            field.to_string(),
            "credentialName, credentialNames and tlsCertificates are mutually exclusive",
        );
    }
    let mut cred_ref = None;
    let creds_list: Vec<(String, String)> = match (&cred, t.credential_names.is_empty()) {
        (Some(c), _) => vec![(format!("{field}.credentialName"), c.clone())],
        (None, false) => t
            .credential_names
            .iter()
            .enumerate()
            .map(|(i, c)| (format!("{field}.credentialNames[{i}]"), c.clone()))
            .collect(),
        _ => Vec::new(),
    };
    if t.credential_names.len() > 2 {
        diag.error(
            src,
            format!("{field}.credentialNames"),
            "at most two (one RSA and one ECDSA)",
        );
    }
    for (f, c) in creds_list {
        match CredentialRef::parse(&c) {
            Ok(r) => {
                cred_ref.get_or_insert(r.clone());
                certs.push(ServerCertSource::Credential(r));
            }
            Err(e) => diag.error(src, f, e.to_string()),
        }
    }
    if t.tls_certificates.len() > 2 {
        diag.error(
            src,
            format!("{field}.tlsCertificates"),
            "at most two (one RSA and one ECDSA)",
        );
    }
    for (i, c) in t.tls_certificates.iter().enumerate() {
        match (name(&c.server_certificate), name(&c.private_key)) {
            (Some(cert), Some(key)) => certs.push(ServerCertSource::Files {
                cert: cert.into(),
                key: key.into(),
            }),
            _ => diag.error(
                src,
                format!("{field}.tlsCertificates[{i}]"),
                "serverCertificate and privateKey are both required",
            ),
        }
    }
    match (name(&t.server_certificate), name(&t.private_key)) {
        (Some(cert), Some(key)) if certs.is_empty() => certs.push(ServerCertSource::Files {
            cert: cert.into(),
            key: key.into(),
        }),
        (Some(_), Some(_)) => diag.warn(
            src,
            field,
            "serverCertificate/privateKey are ignored when a credential or tlsCertificates is set",
        ),
        (Some(_), None) => diag.error(
            src,
            format!("{field}.privateKey"),
            "required with serverCertificate",
        ),
        (None, Some(_)) => diag.error(
            src,
            format!("{field}.serverCertificate"),
            "required with privateKey",
        ),
        (None, None) => {}
    }
    let mutual = matches!(mode, TlsServerMode::Mutual | TlsServerMode::OptionalMutual);
    if mode == TlsServerMode::Passthrough {
        if !certs.is_empty() {
            let why = if t.mode.is_none() {
                "tls.mode is not set, so it is PASSTHROUGH (Istio's default), which"
            } else {
                "PASSTHROUGH"
            };
            diag.error(
                src,
                format!("{field}.mode"),
                format!(
                    "{why} does not use certificates; set mode: SIMPLE (or MUTUAL) to terminate TLS"
                ),
            );
        }
        if sidecar {
            diag.error(
                src,
                format!("{field}.mode"),
                "a Sidecar ingress listener supports SIMPLE and MUTUAL only",
            );
        }
    } else if certs.is_empty() {
        diag.error(src, field.to_string(), "a server certificate is required: credentialName, credentialNames, tlsCertificates or serverCertificate + privateKey");
    }
    let client_ca = if let Some(c) = name(&t.ca_cert_credential_name) {
        match CredentialRef::parse(&c) {
            Ok(r) => Some(ClientCaSource::CaCredential(r)),
            Err(e) => {
                diag.error(src, format!("{field}.caCertCredentialName"), e.to_string());
                None
            }
        }
    } else if let Some(r) = &cred_ref {
        if t.ca_certificates.is_some() {
            diag.warn(
                src,
                field,
                "credentialName is set, so caCertificates is ignored (as in Istio)",
            );
        }
        mutual.then(|| ClientCaSource::Credential(r.clone()))
    } else {
        name(&t.ca_certificates).map(|p| ClientCaSource::File(p.into()))
    };
    if mutual && client_ca.is_none() {
        diag.error(src, format!("{field}.caCertificates"), "required for MUTUAL and OPTIONAL_MUTUAL (or caCertCredentialName, or a credentialName whose Secret holds ca.crt)");
    }
    if !mutual
        && (!t.subject_alt_names.is_empty()
            || !t.verify_certificate_spki.is_empty()
            || !t.verify_certificate_hash.is_empty())
    {
        diag.warn(src, field, "subjectAltNames / verifyCertificateSpki / verifyCertificateHash only apply to MUTUAL and OPTIONAL_MUTUAL");
    }
    let mut spki_sha256 = Vec::new();
    for (i, v) in t.verify_certificate_spki.iter().enumerate() {
        match base64::engine::general_purpose::STANDARD.decode(v.trim()) {
            Ok(b) if b.len() == 32 => spki_sha256.push(b),
            _ => diag.error(
                src,
                format!("{field}.verifyCertificateSpki[{i}]"),
                "expected the base64 SHA-256 of a SubjectPublicKeyInfo (44 characters)",
            ),
        }
    }
    let mut cert_sha256 = Vec::new();
    for (i, v) in t.verify_certificate_hash.iter().enumerate() {
        let hex: String = v.chars().filter(|c| *c != ':').collect();
        let bytes: Option<Vec<u8>> = (hex.len() == 64
            && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| {
            (0..32)
                .map(|k| u8::from_str_radix(&hex[2 * k..2 * k + 2], 16).ok())
                .collect()
        })
        .flatten();
        match bytes {
            Some(b) => cert_sha256.push(b),
            None => diag.error(
                src,
                format!("{field}.verifyCertificateHash[{i}]"),
                "expected a hex SHA-256 (64 digits, colons allowed)",
            ),
        }
    }
    let version =
        |v: Option<TlsProtocol>, f: &str, default: TlsVersion, diag: &mut Diagnostics| match v {
            None | Some(TlsProtocol::TlsAuto) => default,
            Some(TlsProtocol::TlsV1_2) => TlsVersion::Tls12,
            Some(TlsProtocol::TlsV1_3) => TlsVersion::Tls13,
            Some(other) => {
                diag.error(
                    src,
                    format!("{field}.{f}"),
                    format!(
                        "{}: meshgate speaks TLS 1.2 and 1.3 only",
                        yaml_name(&other)
                    ),
                );
                default
            }
        };
    let min_version = version(
        t.min_protocol_version,
        "minProtocolVersion",
        TlsVersion::Tls12,
        diag,
    );
    let max_version = version(
        t.max_protocol_version,
        "maxProtocolVersion",
        TlsVersion::Tls13,
        diag,
    );
    if min_version > max_version {
        diag.error(
            src,
            format!("{field}.minProtocolVersion"),
            "is above maxProtocolVersion",
        );
    }
    let mut cipher_suites = Vec::new();
    for (i, c) in t.cipher_suites.iter().enumerate() {
        let c = c.trim();
        match CIPHER_SUITES.iter().find(|(ossl, iana)| *ossl == c || *iana == c) {
            Some((_, iana)) => cipher_suites.push(iana.to_string()),
            None => diag.error(
                src,
                format!("{field}.cipherSuites[{i}]"),
                format!(
                    "{c:?} is not available: rustls implements only AEAD suites with ECDHE key exchange (no CBC, 3DES or static-RSA suites); use {}",
                    CIPHER_SUITES.iter().map(|(o, _)| *o).collect::<Vec<_>>().join(", ")
                ),
            ),
        }
    }
    if !cipher_suites.is_empty() && min_version == TlsVersion::Tls13 {
        diag.warn(
            src,
            &format!("{field}.cipherSuites"),
            "only TLS 1.2 suites are configurable; with TLS 1.3 only they have no effect",
        );
    }
    let insecure_skip_verify = t.insecure_skip_verify == Some(true);
    if insecure_skip_verify {
        diag.warn(
            src,
            &format!("{field}.insecureSkipVerify"),
            "client certificates that fail validation are accepted",
        );
    }
    (diag.errors.len() == before).then(|| ServerTlsPlan {
        mode,
        certs,
        client_ca,
        crl: name(&t.ca_crl).map(PathBuf::from),
        subject_alt_names: t.subject_alt_names.clone(),
        spki_sha256,
        cert_sha256,
        min_version,
        max_version,
        cipher_suites,
        insecure_skip_verify,
        origin: format!("{src}: {field}"),
    })
}
