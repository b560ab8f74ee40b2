//! `--client-cert`: whether a server would accept a client certificate,
//! checked by the verifier the server's own TLS config is built with
//! (`tls::server::client_verifier`: the client CA and CRL loaded by
//! `creds`, then `subjectAltNames`, `verifyCertificateSpki` and
//! `verifyCertificateHash`).

use std::path::Path;
use std::sync::Arc;

use rustls::AlertDescription;
use rustls::pki_types::{CertificateDer, UnixTime};

use super::model::{ClientCertCheck, Refusal};
use crate::creds::info::fmt_time;
use crate::creds::{CertInfo, Credentials};
use crate::plan::inbound::{ServerTlsPlan, TlsServerMode};
use crate::tls::failure::classify_rustls;

/// A client certificate chain read from a PEM file (leaf first).
#[derive(Debug, Clone)]
pub struct ClientChain {
    /// The file, as given.
    pub file: String,
    /// The chain.
    pub chain: Vec<CertificateDer<'static>>,
    /// What the leaf says.
    pub leaf: CertInfo,
}

impl ClientChain {
    /// Reads `path` with the PEM reader credentials are loaded with.
    pub fn load(path: &Path) -> Result<ClientChain, String> {
        let file = path.display().to_string();
        let pem = std::fs::read(path).map_err(|e| format!("cannot read {file}: {e}"))?;
        let chain = crate::creds::certs_from_pem(&pem).map_err(|e| format!("{file}: {e}"))?;
        let leaf = chain
            .first()
            .ok_or_else(|| format!("{file}: no certificate"))
            .and_then(|c| CertInfo::parse(c).map_err(|e| format!("{file}: {e}")))?;
        Ok(ClientChain { file, chain, leaf })
    }
}

/// What the server makes of `client` (or of no certificate), and the
/// refusal when the handshake fails.
pub fn check(
    tls: &ServerTlsPlan,
    creds: &Credentials,
    client: Option<&ClientChain>,
) -> (Option<ClientCertCheck>, Option<Refusal>) {
    let Some(client) = client else {
        if tls.mode == TlsServerMode::Mutual {
            let refusal = Refusal::alert(
                "no_client_cert",
                "certificate_required",
                "MUTUAL: the server requires a client certificate and the client sends none".into(),
                Some(
                    "present a certificate issued by the server's client CA; pass --client-cert FILE to check one"
                        .into(),
                ),
            );
            return (None, Some(refusal));
        }
        return (None, None);
    };
    let mut out = ClientCertCheck {
        file: client.file.clone(),
        subject: client.leaf.subject.clone(),
        sans: client.leaf.sans.clone(),
        not_after: fmt_time(client.leaf.not_after),
        accepted: None,
        reason: None,
        detail: None,
    };
    if !matches!(
        tls.mode,
        TlsServerMode::Mutual | TlsServerMode::OptionalMutual
    ) {
        out.detail = Some(format!(
            "{}: the server does not ask for a client certificate",
            super::model::yaml_name(&tls.mode)
        ));
        return (Some(out), None);
    }
    // Verified as if insecureSkipVerify were off, so a certificate it lets
    // through is still reported with what is wrong with it.
    let strict = ServerTlsPlan {
        insecure_skip_verify: false,
        ..tls.clone()
    };
    let provider = Arc::new(crate::tls::provider());
    let verdict = match crate::tls::server::client_verifier(&strict, creds, &provider) {
        Ok(Some(v)) => v
            .verify_client_cert(&client.chain[0], &client.chain[1..], UnixTime::now())
            .map(|_| ()),
        Ok(None) => Ok(()),
        Err(e) => {
            out.accepted = Some(false);
            out.reason = Some("credential_unavailable".into());
            out.detail = Some(e.to_string());
            return (Some(out), None);
        }
    };
    match verdict {
        Ok(()) => out.accepted = Some(true),
        Err(e) => {
            let (reason, detail) = classify_rustls(&e);
            out.reason = Some(reason.as_str().into());
            if tls.insecure_skip_verify {
                out.accepted = Some(true);
                out.detail = Some(format!(
                    "accepted only because insecureSkipVerify is set: {detail}"
                ));
                return (Some(out), None);
            }
            out.accepted = Some(false);
            out.detail = Some(detail.clone());
            let refusal = Refusal::alert(
                reason.as_str(),
                &alert_name(&e),
                format!("the client certificate is rejected: {detail}"),
                Some(
                    "use a certificate that chains to the server's client CA and is allowed by its subjectAltNames / verifyCertificate* lists".into(),
                ),
            );
            return (Some(out), Some(refusal));
        }
    }
    (Some(out), None)
}

/// The alert rustls sends for a rejected certificate.
fn alert_name(e: &rustls::Error) -> String {
    let alert = match e {
        rustls::Error::InvalidCertificate(c) => AlertDescription::from(c.clone()),
        _ => AlertDescription::BadCertificate,
    };
    match alert {
        AlertDescription::BadCertificate => "bad_certificate".into(),
        AlertDescription::CertificateExpired => "certificate_expired".into(),
        AlertDescription::CertificateRevoked => "certificate_revoked".into(),
        AlertDescription::CertificateUnknown => "certificate_unknown".into(),
        AlertDescription::UnknownCA => "unknown_ca".into(),
        AlertDescription::DecryptError => "decrypt_error".into(),
        AlertDescription::UnsupportedCertificate => "unsupported_certificate".into(),
        AlertDescription::AccessDenied => "access_denied".into(),
        other => format!("{other:?}"),
    }
}
