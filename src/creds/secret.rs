//! `credentialName` lookup with Istio's rules: `kind: Secret` documents in
//! the config first, then a directory laid out as Kubernetes mounts Secrets
//! (`<dir>/<name>/<key>`, `..data` symlinks followed). Keys: `cert`/`key`
//! before `tls.crt`/`tls.key`; CA from `<name>-cacert` before `<name>`,
//! `cacert` before `ca.crt`; the revocation list (`ca.crl` or `crl`) from
//! the Secret the CA comes from. Empty values count as missing.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::bootstrap::Bootstrap;
use crate::config::Config;
use crate::plan::CredentialRef;

/// Why a `credentialName` does not give what was asked for. The text starts
/// with the reference (`kubernetes://[ns/]name`; after Istio's analyzer
/// code IST0101 when the Secret is missing) and says where was looked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// No such Secret in the config documents or the secrets directory.
    #[error("IST0101: {credential}: Secret {namespace}/{} not found in the config or in {}{}", credential.name, dir.display(), elsewhere_hint(credential, elsewhere))]
    NotFound {
        /// The reference.
        credential: CredentialRef,
        /// The namespace looked in.
        namespace: String,
        /// The secrets directory looked in.
        dir: PathBuf,
        /// Namespaces of the config holding a Secret of that name.
        elsewhere: Vec<String>,
    },
    /// No such Secret in the config documents, and no secrets directory.
    #[error("IST0101: {credential}: Secret {namespace}/{} not found in the config (no --secrets-dir given){}", credential.name, elsewhere_hint(credential, elsewhere))]
    NotFoundNoDir {
        /// The reference.
        credential: CredentialRef,
        /// The namespace looked in.
        namespace: String,
        /// Namespaces of the config holding a Secret of that name.
        elsewhere: Vec<String>,
    },
    /// The Secret has neither `cert`/`key` nor `tls.crt`/`tls.key`.
    #[error(
        "{credential}: found {found_in}, but it does not have the expected keys with content (cert and key) or (tls.crt and tls.key); found: {}",
        key_list(keys)
    )]
    NoIdentityKeys {
        /// The reference.
        credential: CredentialRef,
        /// Where the Secret was found.
        found_in: String,
        /// The keys it has (non-empty values or not).
        keys: Vec<String>,
    },
    /// Neither `<name>-cacert` nor `<name>` has `cacert` or `ca.crt`.
    #[error(
        "{credential}: no CA certificate (key cacert or ca.crt) in {name}-cacert or {name}; {}",
        looked.join("; "),
        name = credential.name
    )]
    NoCa {
        /// The reference.
        credential: CredentialRef,
        /// For each Secret found: where, and its keys.
        looked: Vec<String>,
    },
    /// The Secret or ConfigMap (`caCertCredentialName`) has no `cacert` or
    /// `ca.crt`.
    #[error(
        "{credential}: {found_in} has no CA certificate (key cacert or ca.crt); found: {}",
        key_list(keys)
    )]
    NoCaExact {
        /// The reference.
        credential: CredentialRef,
        /// Where the Secret or ConfigMap was found.
        found_in: String,
        /// The keys it has.
        keys: Vec<String>,
    },
}

/// A CA bundle found in a Secret or ConfigMap, with the revocation lists
/// kept next to it.
#[derive(Debug, Clone)]
pub struct SecretCa {
    /// The CA certificates (PEM).
    pub pem: Vec<u8>,
    /// Where they were found (`kubernetes://name (Secret ns/name, key ca.crt)`).
    pub source: String,
    /// Revocation lists from the same Secret (keys `ca.crl` and `crl`,
    /// non-empty ones only): the PEM and where it was found, named as
    /// `source` is.
    pub crls: Vec<(Vec<u8>, String)>,
}

/// Keys holding a CA's revocation list: Istio's `ca.crl` (next to
/// `ca.crt`) and `crl` (next to `cacert`). Both are read when both are set,
/// so a revocation is never dropped for being under the other key.
const CRL_KEYS: [&str; 2] = ["ca.crl", "crl"];

/// Where Secrets are looked up.
pub struct SecretSource {
    docs: Vec<(String, String, BTreeMap<String, Vec<u8>>)>,
    maps: Vec<(String, String, BTreeMap<String, Vec<u8>>)>,
    dir: Option<PathBuf>,
    namespace: String,
}

impl SecretSource {
    /// Secrets from the config documents and the bootstrap's directory.
    pub fn new(config: &Config, bootstrap: &Bootstrap) -> SecretSource {
        SecretSource {
            docs: named(&config.secrets),
            maps: named(&config.config_maps),
            dir: bootstrap.secrets_dir.clone(),
            namespace: bootstrap.namespace.clone(),
        }
    }

    /// The Secret's key/value map and a description of where it was found.
    fn find(&self, name: &str, namespace: Option<&str>) -> Option<Found> {
        let ns = namespace.unwrap_or(&self.namespace);
        if let Some((_, _, data)) = self
            .docs
            .iter()
            .find(|(n_ns, n, _)| n == name && n_ns == ns)
        {
            return Some(Found {
                data: data.clone(),
                src: format!("Secret {ns}/{name}"),
                unreadable: Vec::new(),
            });
        }
        let dir = self.dir.as_ref()?.join(name);
        let entries = std::fs::read_dir(&dir).ok()?;
        let mut data = BTreeMap::new();
        let mut unreadable = Vec::new();
        for e in entries.flatten() {
            let key = e.file_name().to_string_lossy().to_string();
            if key.starts_with('.') {
                continue; // `..data`, `..2024_...` — the kubelet's own entries
            }
            // Follows the `key -> ..data/key` symlink to the current version.
            match std::fs::read(e.path()) {
                Ok(v) => {
                    data.insert(key, v);
                }
                Err(err) => unreadable.push(format!("{key} (cannot read: {err})")),
            }
        }
        Some(Found {
            data,
            src: format!("secret directory {}", dir.display()),
            unreadable,
        })
    }

    /// Client/server identity: (`cert`, `key`) or (`tls.crt`, `tls.key`).
    pub fn identity(&self, r: &CredentialRef) -> Result<(Vec<u8>, Vec<u8>, String), SecretError> {
        let found = self
            .find(&r.name, r.namespace.as_deref())
            .ok_or_else(|| self.not_found(r))?;
        let (data, src) = (&found.data, &found.src);
        for (c, k) in [("cert", "key"), ("tls.crt", "tls.key")] {
            if let (Some(cv), Some(kv)) = (non_empty(data, c), non_empty(data, k)) {
                return Ok((
                    cv.to_vec(),
                    kv.to_vec(),
                    format!("{r} ({src}, keys {c}/{k})"),
                ));
            }
        }
        Err(SecretError::NoIdentityKeys {
            credential: r.clone(),
            found_in: found.src.clone(),
            keys: found.keys(),
        })
    }

    /// CA bundle: from `<name>-cacert`, else `<name>`; key `cacert` or
    /// `ca.crt`; with the revocation lists of the Secret it comes from.
    pub fn ca(&self, r: &CredentialRef) -> Result<SecretCa, SecretError> {
        let mut looked = Vec::new();
        for name in [format!("{}-cacert", r.name), r.name.clone()] {
            if let Some(found) = self.find(&name, r.namespace.as_deref()) {
                if let Some(ca) = ca_in(&found.data, r, &found.src) {
                    return Ok(ca);
                }
                looked.push(format!(
                    "{} has keys: {}",
                    found.src,
                    key_list(&found.keys())
                ));
            }
        }
        if looked.is_empty() {
            return Err(self.not_found(r));
        }
        Err(SecretError::NoCa {
            credential: r.clone(),
            looked,
        })
    }

    /// `caCertCredentialName`: the CA in exactly this Secret or ConfigMap,
    /// with its revocation lists.
    pub fn ca_exact(&self, r: &CredentialRef) -> Result<SecretCa, SecretError> {
        let ns = r.namespace.as_deref().unwrap_or(&self.namespace);
        let found = self.find(&r.name, r.namespace.as_deref()).or_else(|| {
            self.maps
                .iter()
                .find(|(m_ns, n, _)| n == &r.name && m_ns == ns)
                .map(|(_, _, d)| Found {
                    data: d.clone(),
                    src: format!("ConfigMap {ns}/{}", r.name),
                    unreadable: Vec::new(),
                })
        });
        let found = found.ok_or_else(|| self.not_found(r))?;
        if let Some(ca) = ca_in(&found.data, r, &found.src) {
            return Ok(ca);
        }
        Err(SecretError::NoCaExact {
            credential: r.clone(),
            found_in: found.src.clone(),
            keys: found.keys(),
        })
    }

    fn not_found(&self, r: &CredentialRef) -> SecretError {
        let namespace = r
            .namespace
            .clone()
            .unwrap_or_else(|| self.namespace.clone());
        let elsewhere: Vec<String> = self
            .docs
            .iter()
            .filter(|(ns, n, _)| n == &r.name && ns != &namespace)
            .map(|(ns, _, _)| ns.clone())
            .collect();
        match &self.dir {
            Some(d) => SecretError::NotFound {
                credential: r.clone(),
                namespace,
                dir: d.clone(),
                elsewhere,
            },
            None => SecretError::NotFoundNoDir {
                credential: r.clone(),
                namespace,
                elsewhere,
            },
        }
    }
}

/// "; a Secret of that name is in namespace X: ..." when there is one.
fn elsewhere_hint(credential: &CredentialRef, elsewhere: &[String]) -> String {
    let Some(ns) = elsewhere.first() else {
        return String::new();
    };
    format!(
        "; a Secret of that name is in namespace {}: write credentialName: kubernetes://{ns}/{} or run meshgate with --namespace {ns}",
        elsewhere.join(", "),
        credential.name
    )
}

fn named(list: &[crate::config::Secret]) -> Vec<(String, String, BTreeMap<String, Vec<u8>>)> {
    list.iter()
        .map(|s| {
            (
                s.source.namespace.clone(),
                s.source.name.clone(),
                s.data.clone(),
            )
        })
        .collect()
}

/// The CA (key `cacert`, else `ca.crt`) and revocation lists of one Secret
/// or ConfigMap found at `src`; `None` without a CA.
fn ca_in(data: &BTreeMap<String, Vec<u8>>, r: &CredentialRef, src: &str) -> Option<SecretCa> {
    let (key, pem) = ["cacert", "ca.crt"]
        .into_iter()
        .find_map(|k| non_empty(data, k).map(|v| (k, v)))?;
    let crls = CRL_KEYS
        .into_iter()
        .filter_map(|k| non_empty(data, k).map(|v| (v.to_vec(), format!("{r} ({src}, key {k})"))))
        .collect();
    Some(SecretCa {
        pem: pem.to_vec(),
        source: format!("{r} ({src}, key {key})"),
        crls,
    })
}

fn non_empty<'a>(data: &'a BTreeMap<String, Vec<u8>>, key: &str) -> Option<&'a [u8]> {
    data.get(key).map(Vec::as_slice).filter(|v| !v.is_empty())
}

/// One Secret (or ConfigMap) as found.
struct Found {
    /// Its readable keys and values.
    data: BTreeMap<String, Vec<u8>>,
    /// Where it was found.
    src: String,
    /// Keys of a mounted Secret whose files cannot be read, with why.
    unreadable: Vec<String>,
}

impl Found {
    /// The keys as a message lists them: empty values and files that
    /// cannot be read are said to be so, never reported as absent.
    fn keys(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .data
            .iter()
            .map(|(k, v)| {
                if v.is_empty() {
                    format!("{k} (empty)")
                } else {
                    k.clone()
                }
            })
            .collect();
        out.extend(self.unreadable.iter().cloned());
        out.sort();
        out
    }
}

/// `a, b, c`, or `(none)`.
fn key_list(keys: &[String]) -> String {
    if keys.is_empty() {
        "(none)".into()
    } else {
        keys.join(", ")
    }
}
