//! Credentials: loading PEM files and Secrets, validating them, and keeping
//! the results for the TLS builders.
//!
//! Validate, then publish: a key is checked against its leaf, validity dates
//! are checked, and a certificate made the way older Istio docs make it
//! (X.509 v1, CN only) is refused with a fix. Never logs or returns key
//! material. Synchronous and pure apart from file reads.

pub mod info;
pub mod secret;

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};

pub use info::{CertError, CertInfo};
pub use secret::{SecretCa, SecretError};

use crate::bootstrap::Bootstrap;
use crate::config::Config;
use crate::plan::host::HostPattern;
use crate::plan::inbound::{ClientCaSource, ServerCertSource, ServerPlan, TlsServerMode};
use crate::plan::{IdentitySource, Plan, TrustSource};

/// A client or server identity: a certificate chain with its key.
#[derive(Debug)]
pub struct Identity {
    /// Chain (leaf first) and signing key, ready for rustls.
    pub certified: Arc<CertifiedKey>,
    /// What the leaf says (for logs and the admin view).
    pub leaf: CertInfo,
    /// Where it was loaded from (paths or `kubernetes://name`).
    pub source: String,
    /// SHA-256 over the chain: the same content loaded again has the same
    /// fingerprint, so what was built from it can be kept across reloads.
    pub fingerprint: Fingerprint,
}

/// A SHA-256 digest identifying loaded credential content.
pub type Fingerprint = [u8; 32];

/// The SHA-256 of `parts`, each length-prefixed.
pub fn fingerprint<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> Fingerprint {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A set of trust anchors and optional CRLs.
#[derive(Debug)]
pub struct Trust {
    /// The roots.
    pub roots: Arc<RootCertStore>,
    /// Revocation lists checked against the server's chain.
    pub crls: Vec<CertificateRevocationListDer<'static>>,
    /// Where they were loaded from.
    pub source: String,
    /// SHA-256 over the roots and CRLs (see [`Identity::fingerprint`]).
    pub fingerprint: Fingerprint,
}

/// Everything the plan references, loaded and checked.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Trust anchors per source (+ CRL file).
    pub trust: HashMap<(TrustSource, Option<PathBuf>), Arc<Trust>>,
    /// Client identities per source.
    pub identities: HashMap<IdentitySource, Arc<Identity>>,
    /// Server certificates per source.
    pub servers: HashMap<ServerCertSource, Arc<Identity>>,
    /// CAs (+ CRL) for client certificates, per source.
    pub client_cas: HashMap<(ClientCaSource, Option<PathBuf>), Arc<Trust>>,
    /// Findings that do not stop the proxy (certificate names not covering
    /// a server's hosts, credentials kept at their last good version).
    pub warnings: Vec<String>,
    /// Credentials whose files changed but failed to load, so their last
    /// good version is still served: (where it is loaded from, the reason).
    pub stale: Vec<(String, String)>,
}

/// One credential problem, naming the resource that referenced it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{origin}: {reason}")]
pub struct CredentialError {
    /// `file:line: Kind/ns/name: field` of the referencing setting.
    pub origin: String,
    /// What is wrong, with the path or secret name.
    #[source]
    pub reason: CredError,
    /// Which credential failed (to fall back to its last good version).
    pub key: Option<CredentialKey>,
}

/// Why a credential cannot be loaded or used. The text names the file,
/// Secret or setting, and what is wrong with it; never key material.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CredError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// A file named by a setting (`serverCertificate`, `privateKey`,
    /// `clientCertificate`, `caCrl`) cannot be read or used.
    #[error("{field} {}: {source}", path.display())]
    File {
        /// The setting's name.
        field: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: Box<CredError>,
    },
    /// The `caCertificates` file cannot be read.
    #[error("caCertificates: {source}")]
    CaCertificates {
        /// Why ([`CredError::Read`], with the path).
        source: Box<CredError>,
    },
    /// A `credentialName` lookup failed.
    #[error(transparent)]
    Secret(#[from] SecretError),
    /// A PEM bundle does not parse.
    #[error("invalid PEM: {}", pem_reason(.0))]
    Pem(#[source] Arc<rustls_pki_types::pem::Error>),
    /// A bundle has no certificate.
    #[error("no CERTIFICATE block found")]
    NoCertificate,
    /// A CRL file has no CRL.
    #[error("no X509 CRL block found")]
    NoCrl,
    /// A CRL does not parse.
    #[error("CRL #{number} is not a valid X.509 CRL: {reason}")]
    CrlInvalid {
        /// Its position in the file, from 1.
        number: usize,
        /// The parser's reason.
        reason: String,
    },
    /// A CRL was issued by none of the CAs it accompanies: webpki would
    /// then find no usable revocation status for any client certificate.
    #[error(
        "CRL #{number} was issued by {issuer:?}, which is not the CA it accompanies ({loaded_from}: {})",
        cas.join(", ")
    )]
    CrlIssuer {
        /// Its position in the file, from 1.
        number: usize,
        /// The CRL's issuer DN.
        issuer: String,
        /// Where the CA was loaded from.
        loaded_from: String,
        /// The CA subjects.
        cas: Vec<String>,
    },
    /// A CRL's signature does not verify with the key of the CA named as
    /// its issuer.
    #[error(
        "CRL #{number} names {issuer:?} as its issuer, but its signature does not verify with that CA's key ({loaded_from})"
    )]
    CrlSignature {
        /// Its position in the file, from 1.
        number: usize,
        /// The CRL's issuer DN.
        issuer: String,
        /// Where the CA was loaded from.
        loaded_from: String,
    },
    /// A revocation list kept in a Secret or ConfigMap next to its CA (key
    /// `ca.crl` or `crl`) cannot be used.
    #[error("{loaded_from}: {source}")]
    SecretCrl {
        /// The Secret and key (`kubernetes://name (Secret ns/name, key ca.crl)`).
        loaded_from: String,
        /// What is wrong with it.
        source: Box<CredError>,
    },
    /// A CA certificate in a bundle is not a usable trust anchor.
    #[error("CA certificate #{number} is not usable: {source}")]
    UnusableCa {
        /// Its position in the bundle, from 1.
        number: usize,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// A CA bundle (`caCertificates`, a Secret's CA) is unusable.
    #[error("{loaded_from}: {source}")]
    Roots {
        /// Where it was loaded from (`caCertificates <path>`, the Secret).
        loaded_from: String,
        /// What is wrong with it.
        source: Box<CredError>,
    },
    /// The OS trust bundle has no usable certificate.
    #[error(
        "no usable system CA certificates found{}; install the ca-certificates package, \
         set SSL_CERT_FILE, or give caCertificates",
        first.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    NoSystemRoots {
        /// The first error met while reading the bundle, if any.
        first: Option<Arc<rustls_native_certs::Error>>,
    },
    /// An identity's certificate chain does not parse.
    #[error("{loaded_from}: certificate: {source}")]
    Chain {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// Why ([`CredError::Pem`] or [`CredError::NoCertificate`]).
        source: Box<CredError>,
    },
    /// An identity's leaf certificate does not parse.
    #[error("{loaded_from}: certificate: {source}")]
    Leaf {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// Why.
        source: CertError,
    },
    /// More than one problem with one credential, all reported at once.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; and "))]
    Several(Vec<CredError>),
    /// An identity's leaf cannot be presented (X.509 v1, expired, not yet
    /// valid).
    #[error("{loaded_from}: {source}")]
    UnusableLeaf {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// Why.
        source: CertError,
    },
    /// An identity's private key does not parse.
    #[error("{loaded_from}: private key: {source}")]
    KeyPem {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// The PEM parser's reason (never key bytes).
        source: Arc<rustls_pki_types::pem::Error>,
    },
    /// An identity's private key is not the leaf's.
    #[error("{loaded_from}: the private key does not match the certificate ({subject})")]
    KeyMismatch {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// The leaf's subject.
        subject: String,
    },
    /// An identity's private key is not usable.
    #[error("{loaded_from}: private key: {source}")]
    Key {
        /// Where the identity was loaded from.
        loaded_from: String,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// Identifies one loaded credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CredentialKey {
    /// A client identity.
    Identity(IdentitySource),
    /// Upstream trust roots (+ CRL).
    Trust((TrustSource, Option<PathBuf>)),
    /// A server certificate.
    Server(ServerCertSource),
    /// A client CA (+ CRL).
    ClientCa((ClientCaSource, Option<PathBuf>)),
}

/// Loads every credential the plan references. All problems are returned.
pub fn load(
    plan: &Plan,
    config: &Config,
    bootstrap: &Bootstrap,
) -> Result<Credentials, Vec<CredentialError>> {
    load_with_fallback(plan, config, bootstrap, None)
}

/// Like [`load`], but a credential that fails to load and was loaded before
/// (same file paths or Secret) keeps its last good version from `previous`:
/// one broken or half-rotated credential then never holds back the others.
/// Each such fallback is reported in `warnings`.
pub fn load_with_fallback(
    plan: &Plan,
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<&Credentials>,
) -> Result<Credentials, Vec<CredentialError>> {
    let (creds, errors) = load_partial(plan, config, bootstrap, previous);
    if errors.is_empty() {
        Ok(creds)
    } else {
        Err(errors)
    }
}

/// [`load_with_fallback`], returning what did load with every problem: a
/// credential that failed is absent, so what uses it fails closed (a
/// server's handshake, an upstream's TLS) while the rest is served.
pub fn load_partial(
    plan: &Plan,
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<&Credentials>,
) -> (Credentials, Vec<CredentialError>) {
    let secrets = secret::SecretSource::new(config, bootstrap);
    let provider = provider();
    let mut creds = Credentials::default();
    let mut errors = Vec::new();
    let mut system: Option<Result<Arc<RootCertStore>, CredError>> = None;
    let mut failed = HashSet::new();
    let policies = plan.outbound.rules.iter().flat_map(|r| {
        std::iter::once(&r.default).chain(r.ports.values()).chain(
            r.subsets
                .values()
                .flat_map(|s| std::iter::once(&s.default).chain(s.ports.values())),
        )
    });
    for policy in policies {
        let tls = &policy.tls;
        if tls.mode == crate::plan::TlsMode::Disable || tls.insecure_skip_verify {
            // insecureSkipVerify: no roots are consulted.
            if let Some(id) = &tls.identity {
                load_identity(
                    id,
                    &tls.origin,
                    &secrets,
                    &provider,
                    &mut creds,
                    &mut errors,
                );
            }
            continue;
        }
        let key = (tls.trust.clone(), tls.crl.clone());
        if let Entry::Vacant(slot) = creds.trust.entry(key.clone())
            && !failed.contains(&key)
        {
            match load_trust(&tls.trust, tls.crl.as_deref(), &secrets, &mut system) {
                Ok(trust) => {
                    slot.insert(Arc::new(trust));
                }
                Err(reason) => {
                    failed.insert(key.clone());
                    errors.push(CredentialError {
                        origin: tls.origin.clone(),
                        reason,
                        key: Some(CredentialKey::Trust(key)),
                    });
                }
            }
        }
        if let Some(id) = &tls.identity {
            load_identity(
                id,
                &tls.origin,
                &secrets,
                &provider,
                &mut creds,
                &mut errors,
            );
        }
    }
    for server in plan.inbound.listeners.iter().flat_map(|l| l.servers.iter()) {
        load_server(server, &secrets, &provider, &mut creds, &mut errors);
    }
    if let Some(prev) = previous {
        errors.retain(|e| {
            let kept: Option<String> = match &e.key {
                Some(CredentialKey::Identity(k)) => prev.identities.get(k).map(|v| {
                    creds.identities.insert(k.clone(), v.clone());
                    v.source.clone()
                }),
                Some(CredentialKey::Trust(k)) => prev.trust.get(k).map(|v| {
                    creds.trust.insert(k.clone(), v.clone());
                    v.source.clone()
                }),
                Some(CredentialKey::Server(k)) => prev.servers.get(k).map(|v| {
                    creds.servers.insert(k.clone(), v.clone());
                    v.source.clone()
                }),
                Some(CredentialKey::ClientCa(k)) => prev.client_cas.get(k).map(|v| {
                    creds.client_cas.insert(k.clone(), v.clone());
                    v.source.clone()
                }),
                None => None,
            };
            let Some(source) = kept else { return true };
            creds.warnings.push(format!(
                "{e}; keeping the last good version of this credential in service"
            ));
            creds.stale.push((source, e.to_string()));
            false
        });
    }
    // One missing Secret can be named by both the CA and the identity.
    let mut seen = HashSet::new();
    errors.retain(|e| seen.insert(e.to_string()));
    (creds, errors)
}

/// Server certificates and client CA of one Gateway server.
fn load_server(
    server: &ServerPlan,
    secrets: &secret::SecretSource,
    provider: &CryptoProvider,
    creds: &mut Credentials,
    errors: &mut Vec<CredentialError>,
) {
    let Some(tls) = &server.tls else { return };
    if tls.mode == TlsServerMode::Passthrough {
        return;
    }
    let error = |reason: CredError, key: CredentialKey| CredentialError {
        origin: tls.origin.clone(),
        reason,
        key: Some(key),
    };
    if let Some(ca) = &tls.client_ca {
        let key = (ca.clone(), tls.crl.clone());
        if let Entry::Vacant(slot) = creds.client_cas.entry(key.clone()) {
            let ca_pem = match ca {
                ClientCaSource::File(path) => read(path)
                    .map(|pem| SecretCa {
                        pem,
                        source: format!("caCertificates {}", path.display()),
                        crls: Vec::new(),
                    })
                    .map_err(ca_certificates_error),
                ClientCaSource::Credential(r) => secrets.ca(r).map_err(CredError::from),
                ClientCaSource::CaCredential(r) => secrets.ca_exact(r).map_err(CredError::from),
            };
            // A `caCrl` file and the CA's own Secret keys are all applied.
            let loaded = ca_pem.and_then(|ca| {
                let mut inputs: Vec<CrlInput<'_>> =
                    tls.crl.as_deref().map(CrlInput::File).into_iter().collect();
                inputs.extend(ca.crls.iter().map(|(pem, from)| CrlInput::Secret {
                    pem,
                    loaded_from: from,
                }));
                trust_from_pem(&ca.pem, ca.source.clone(), &inputs)
            });
            match loaded {
                Ok(trust) => {
                    slot.insert(Arc::new(trust));
                }
                Err(e) => errors.push(error(e, CredentialKey::ClientCa(key))),
            }
        }
    }
    for source in &tls.certs {
        let identity = match creds.servers.get(source) {
            Some(i) => i.clone(),
            None => {
                let loaded = match source {
                    ServerCertSource::Files { cert, key } => read(cert)
                        .map_err(|e| file_error("serverCertificate", cert, e))
                        .and_then(|c| {
                            read(key)
                                .map_err(|e| file_error("privateKey", key, e))
                                .map(|k| (c, k))
                        })
                        .and_then(|(c, k)| {
                            let src = format!("{} + {}", cert.display(), key.display());
                            identity_from_pem(&c, &k, provider, &src)
                        }),
                    ServerCertSource::Credential(r) => secrets
                        .identity(r)
                        .map_err(CredError::from)
                        .and_then(|(c, k, src)| identity_from_pem(&c, &k, provider, &src)),
                };
                match loaded {
                    Ok(i) => {
                        let i = Arc::new(i);
                        creds.servers.insert(source.clone(), i.clone());
                        // The CA given with the certificate: the Secret's
                        // own CA, or the server's caCertificates.
                        let ca = match source {
                            ServerCertSource::Files { key, .. } => {
                                creds.warnings.extend(key_mode_warning(key));
                                tls.client_ca.as_ref().and_then(|ca| {
                                    creds
                                        .client_cas
                                        .get(&(ca.clone(), tls.crl.clone()))
                                        .cloned()
                                })
                            }
                            ServerCertSource::Credential(r) => secrets
                                .ca(r)
                                .ok()
                                .and_then(|ca| trust_from_pem(&ca.pem, ca.source, &[]).ok())
                                .map(Arc::new),
                        };
                        if let Some(ca) = ca {
                            creds.warnings.extend(
                                chain_warning(&i, &ca, provider)
                                    .map(|w| format!("{}: {w}", tls.origin)),
                            );
                        }
                        i
                    }
                    Err(e) => {
                        errors.push(error(e, CredentialKey::Server(source.clone())));
                        continue;
                    }
                }
            }
        };
        let uncovered: Vec<String> = server
            .hosts
            .iter()
            // `*` (any SNI) is no name a certificate could carry.
            .filter(|h| **h != HostPattern::Any && !identity.leaf.covers(h))
            .map(ToString::to_string)
            .collect();
        if !uncovered.is_empty() {
            creds.warnings.push(format!(
                "{}: certificate {} ({}) does not cover host(s) {}; clients verifying the name will reject it",
                tls.origin,
                identity.source,
                identity.leaf.sans.join(", "),
                uncovered.join(", ")
            ));
        }
    }
}

/// Roots (+ CRLs) for one trust source. The system bundle is read once.
fn load_trust(
    source: &TrustSource,
    crl: Option<&Path>,
    secrets: &secret::SecretSource,
    system: &mut Option<Result<Arc<RootCertStore>, CredError>>,
) -> Result<Trust, CredError> {
    let pem = match source {
        TrustSource::System => {
            let roots = system.get_or_insert_with(system_roots).clone()?;
            let crls = crl.map(load_crls).transpose()?.unwrap_or_default();
            let fingerprint = fingerprint(
                std::iter::once(&b"system roots"[..]).chain(crls.iter().map(|c| c.as_ref())),
            );
            return Ok(Trust {
                roots,
                crls,
                source: "system roots".into(),
                fingerprint,
            });
        }
        TrustSource::File(path) => read(path)
            .map(|pem| SecretCa {
                pem,
                source: format!("caCertificates {}", path.display()),
                crls: Vec::new(),
            })
            .map_err(ca_certificates_error)?,
        TrustSource::Credential(c) => secrets.ca(c)?,
    };
    let mut inputs: Vec<CrlInput<'_>> = crl.map(CrlInput::File).into_iter().collect();
    inputs.extend(pem.crls.iter().map(|(p, from)| CrlInput::Secret {
        pem: p,
        loaded_from: from,
    }));
    trust_from_pem(&pem.pem, pem.source.clone(), &inputs)
}

/// Where a revocation list comes from.
#[derive(Debug, Clone, Copy)]
enum CrlInput<'a> {
    /// A `caCrl` file.
    File(&'a Path),
    /// A key of the Secret or ConfigMap holding the CA (`ca.crl`, `crl`).
    Secret {
        /// Its content.
        pem: &'a [u8],
        /// The Secret and key, for errors.
        loaded_from: &'a str,
    },
}

/// Roots from a PEM bundle (named `source` in errors) plus revocation lists,
/// each checked to be issued and signed by one of those roots.
fn trust_from_pem(pem: &[u8], source: String, inputs: &[CrlInput<'_>]) -> Result<Trust, CredError> {
    let roots = roots_from_pem(pem).map_err(|e| CredError::Roots {
        loaded_from: source.clone(),
        source: Box::new(e),
    })?;
    let mut crls = Vec::new();
    if !inputs.is_empty() {
        let cas = certs_from_pem(pem)?;
        for input in inputs {
            let list = match *input {
                CrlInput::File(path) => {
                    let list = load_crls(path)?;
                    check_crls(&list, &cas, &source).map_err(|e| file_error("caCrl", path, e))?;
                    list
                }
                CrlInput::Secret { pem, loaded_from } => {
                    let wrap = |e| CredError::SecretCrl {
                        loaded_from: loaded_from.to_string(),
                        source: Box::new(e),
                    };
                    let list = crls_from_pem(pem).map_err(wrap)?;
                    check_crls(&list, &cas, &source).map_err(wrap)?;
                    list
                }
            };
            crls.extend(list);
        }
    }
    let fingerprint = fingerprint(std::iter::once(pem).chain(crls.iter().map(|c| c.as_ref())));
    Ok(Trust {
        roots: Arc::new(roots),
        crls,
        source,
        fingerprint,
    })
}

fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, CredError> {
    read(path)
        .and_then(|pem| crls_from_pem(&pem))
        .map_err(|e| file_error("caCrl", path, e))
}

/// Checks that every CRL was issued and signed by one of `cas` (the CA
/// bundle it accompanies, loaded from `loaded_from`).
fn check_crls(
    crls: &[CertificateRevocationListDer<'_>],
    cas: &[CertificateDer<'_>],
    loaded_from: &str,
) -> Result<(), CredError> {
    use x509_parser::prelude::{CertificateRevocationList, FromDer, X509Certificate};
    let parsed: Vec<X509Certificate<'_>> = cas
        .iter()
        .filter_map(|c| X509Certificate::from_der(c.as_ref()).ok().map(|(_, c)| c))
        .collect();
    for (i, der) in crls.iter().enumerate() {
        let number = i + 1;
        let (_, crl) = CertificateRevocationList::from_der(der.as_ref()).map_err(|e| {
            CredError::CrlInvalid {
                number,
                reason: e.to_string(),
            }
        })?;
        let issuer = crl.issuer();
        let named: Vec<&X509Certificate<'_>> = parsed
            .iter()
            .filter(|ca| ca.subject().as_raw() == issuer.as_raw())
            .collect();
        if named.is_empty() {
            return Err(CredError::CrlIssuer {
                number,
                issuer: issuer.to_string(),
                loaded_from: loaded_from.to_string(),
                cas: parsed
                    .iter()
                    .map(|c| format!("{:?}", c.subject().to_string()))
                    .collect(),
            });
        }
        if !named
            .iter()
            .any(|ca| crl.verify_signature(ca.public_key()).is_ok())
        {
            return Err(CredError::CrlSignature {
                number,
                issuer: issuer.to_string(),
                loaded_from: loaded_from.to_string(),
            });
        }
    }
    Ok(())
}

/// A warning when the private key file at `path` can be read by group or
/// others. Keys in a directory laid out as a mounted Kubernetes Secret
/// (with `..data`) are left alone: their mode is set by the Secret's
/// `defaultMode`, not by a file the operator manages.
fn key_mode_warning(path: &Path) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if path
            .parent()
            .is_some_and(|dir| dir.join("..data").symlink_metadata().is_ok())
        {
            return None;
        }
        let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
        (mode & 0o077 != 0).then(|| {
            format!(
                "private key {} is readable by group/others (mode {mode:04o}); restrict it to 0600",
                path.display()
            )
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// A warning when `identity`'s chain cannot be built to `ca` (the CA given
/// with it): an intermediate is missing from the certificate file, so
/// clients that trust only that CA reject it.
fn chain_warning(identity: &Identity, ca: &Trust, provider: &CryptoProvider) -> Option<String> {
    use rustls::client::danger::ServerCertVerifier;
    let chain = &identity.certified.cert;
    let (leaf, intermediates) = chain.split_first()?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        ca.roots.clone(),
        Arc::new(provider.clone()),
    )
    .build()
    .ok()?;
    // Any name: only whether a path to the CA exists is asked (webpki
    // builds the path before it looks at names).
    let name = rustls_pki_types::ServerName::try_from("chain.check.invalid").ok()?;
    let now = rustls_pki_types::UnixTime::now();
    match verifier.verify_server_cert(leaf, intermediates, &name, &[], now) {
        Err(rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer)) => {
            Some(format!(
                "certificate {} cannot be chained to its CA ({}): its issuer {:?} is neither in the certificate file nor in that CA. If it is an intermediate CA, append it to the certificate file after the leaf (a missing intermediate); clients that trust only that CA will reject the certificate",
                identity.source, ca.source, identity.leaf.issuer
            ))
        }
        _ => None,
    }
}

/// `e` about the file a setting names.
/// A PEM parser error in words: its markers as text, not byte arrays.
fn pem_reason(e: &rustls_pki_types::pem::Error) -> String {
    use rustls_pki_types::pem::Error as E;
    match e {
        E::MissingSectionEnd { end_marker } => format!(
            "a section has no end marker (expected \"-----END {}-----\")",
            String::from_utf8_lossy(end_marker)
        ),
        E::IllegalSectionStart { line } => format!(
            "malformed section start {:?}",
            String::from_utf8_lossy(line)
        ),
        other => other.to_string(),
    }
}

fn file_error(field: &'static str, path: &Path, e: CredError) -> CredError {
    CredError::File {
        field,
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

/// `e` about the `caCertificates` file.
fn ca_certificates_error(e: CredError) -> CredError {
    CredError::CaCertificates {
        source: Box::new(e),
    }
}

/// The crypto provider used everywhere (aws-lc-rs, post-quantum hybrid key
/// exchange preferred).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(crate::tls::provider())
}

fn load_identity(
    id: &IdentitySource,
    origin: &str,
    secrets: &secret::SecretSource,
    provider: &CryptoProvider,
    creds: &mut Credentials,
    errors: &mut Vec<CredentialError>,
) {
    if creds.identities.contains_key(id) {
        return;
    }
    let loaded = match id {
        IdentitySource::Files { cert, key } => read(cert)
            .map_err(|e| file_error("clientCertificate", cert, e))
            .and_then(|c| {
                read(key)
                    .map_err(|e| file_error("privateKey", key, e))
                    .map(|k| (c, k))
            })
            .and_then(|(c, k)| {
                let source = format!("{} + {}", cert.display(), key.display());
                identity_from_pem(&c, &k, provider, &source)
            }),
        IdentitySource::Credential(c) => secrets
            .identity(c)
            .map_err(CredError::from)
            .and_then(|(c, k, src)| identity_from_pem(&c, &k, provider, &src)),
    };
    match loaded {
        Ok(identity) => {
            if let IdentitySource::Files { key, .. } = id {
                creds.warnings.extend(key_mode_warning(key));
            }
            creds.identities.insert(id.clone(), Arc::new(identity));
        }
        Err(reason) => errors.push(CredentialError {
            origin: origin.to_string(),
            reason,
            key: Some(CredentialKey::Identity(id.clone())),
        }),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, CredError> {
    std::fs::read(path).map_err(|e| CredError::Read {
        path: path.to_path_buf(),
        source: Arc::new(e),
    })
}

/// The OS trust bundle (honours `SSL_CERT_FILE` and `SSL_CERT_DIR`).
pub fn system_roots() -> Result<Arc<RootCertStore>, CredError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(CredError::NoSystemRoots {
            first: found.errors.into_iter().next().map(Arc::new),
        });
    }
    Ok(Arc::new(store))
}

/// Certificates in a PEM bundle; an error when there are none.
pub fn certs_from_pem(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, CredError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredError::Pem(Arc::new(e)))?;
    if certs.is_empty() {
        return Err(CredError::NoCertificate);
    }
    Ok(certs)
}

/// A root store from a PEM bundle; every certificate must parse.
pub fn roots_from_pem(pem: &[u8]) -> Result<RootCertStore, CredError> {
    let certs = certs_from_pem(pem)?;
    let mut store = RootCertStore::empty();
    for (i, c) in certs.into_iter().enumerate() {
        store.add(c).map_err(|source| CredError::UnusableCa {
            number: i + 1,
            source,
        })?;
    }
    Ok(store)
}

fn crls_from_pem(pem: &[u8]) -> Result<Vec<CertificateRevocationListDer<'static>>, CredError> {
    let crls = CertificateRevocationListDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CredError::Pem(Arc::new(e)))?;
    if crls.is_empty() {
        return Err(CredError::NoCrl);
    }
    Ok(crls)
}

/// Builds an identity from PEM cert chain + key, with every check applied.
pub fn identity_from_pem(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
    source: &str,
) -> Result<Identity, CredError> {
    let loaded_from = || source.to_string();
    let chain = certs_from_pem(cert_pem).map_err(|e| CredError::Chain {
        loaded_from: loaded_from(),
        source: Box::new(e),
    })?;
    // pki-types' message never includes key bytes.
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CredError::KeyPem {
        loaded_from: loaded_from(),
        source: Arc::new(e),
    })?;
    let leaf = CertInfo::parse(&chain[0]).map_err(|e| CredError::Leaf {
        loaded_from: loaded_from(),
        source: e,
    })?;
    let fingerprint = fingerprint(chain.iter().map(|c| c.as_ref()));
    // Every problem at once: an expired certificate whose key does not
    // match is two things to fix, not one and then another.
    let unusable = leaf
        .check_usable_leaf()
        .err()
        .map(|e| CredError::UnusableLeaf {
            loaded_from: loaded_from(),
            source: e,
        });
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => CredError::KeyMismatch {
            loaded_from: loaded_from(),
            subject: leaf.subject.clone(),
        },
        other => CredError::Key {
            loaded_from: loaded_from(),
            source: other,
        },
    });
    let certified = match (unusable, certified) {
        (None, Ok(c)) => c,
        (Some(e), Ok(_)) | (None, Err(e)) => return Err(e),
        (Some(a), Err(b)) => return Err(CredError::Several(vec![a, b])),
    };
    Ok(Identity {
        certified: Arc::new(certified),
        leaf,
        source: source.to_string(),
        fingerprint,
    })
}

#[cfg(test)]
mod tests;
