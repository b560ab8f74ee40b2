//! The mesh CA: a root (and optional intermediate) for development and
//! tests, and workload certificates with SPIFFE identities
//! (`spiffe://<trust-domain>/ns/<ns>/sa/<sa>`), written in Istio's layouts.
//!
//! CA directory (Istio's "plugin CA" layout): `ca-cert.pem`, `ca-key.pem`,
//! `cert-chain.pem`, `root-cert.pem`. Workload directory (Istio's
//! file-mounted layout): `cert-chain.pem`, `key.pem`, `root-cert.pem`.

pub mod cli;
pub mod grpc;

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use time::OffsetDateTime;

/// Why a CA operation failed. The text names the file or name involved.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// `init` on a directory that already holds a CA.
    #[error("{}: a CA already exists here (ca-key.pem); refusing to overwrite it", dir.display())]
    Exists {
        /// The CA directory.
        dir: PathBuf,
    },
    /// A file or directory cannot be created, written or read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Making the CA's keys or certificates failed.
    #[error("generating the CA: {0}")]
    Generate(#[source] rcgen::Error),
    /// A CA file (`ca-key.pem`, `ca-cert.pem`) is not usable.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// A SPIFFE ID or DNS name cannot go into a certificate.
    #[error("{name:?}: {source}")]
    Name {
        /// The ID or name.
        name: String,
        /// rcgen's reason.
        source: rcgen::Error,
    },
    /// Making a workload key or signing its certificate failed.
    #[error(transparent)]
    Issue(rcgen::Error),
    /// The certificate signing request does not parse.
    #[error("invalid CSR: {0}")]
    Csr(#[source] rcgen::Error),
}

/// Wraps an OS error about `path`.
fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CaError + '_ {
    move |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A workload's SPIFFE ID.
pub fn spiffe_id(trust_domain: &str, namespace: &str, service_account: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}")
}

/// A loaded signing CA.
pub struct MeshCa {
    issuer: Issuer<'static, KeyPair>,
    /// The signing certificate's chain up to and including the root (PEM).
    pub chain_pem: String,
    /// The root certificate (PEM).
    pub root_pem: String,
}

/// A signed workload certificate.
pub struct Issued {
    /// Leaf, then the CA chain (PEM), as `cert-chain.pem`.
    pub cert_chain_pem: String,
    /// The workload's key (PEM); empty when signing a CSR.
    pub key_pem: String,
    /// The mesh root (PEM).
    pub root_pem: String,
}

fn ca_params(cn: &str, validity: Duration, path_len: Option<u8>) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "meshgate");
    dn.push(DnType::CommonName, cn);
    p.distinguished_name = dn;
    p.is_ca = match path_len {
        Some(n) => IsCa::Ca(BasicConstraints::Constrained(n)),
        None => IsCa::Ca(BasicConstraints::Unconstrained),
    };
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::minutes(5);
    p.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
    p
}

fn write(dir: &Path, name: &str, text: &str, private: bool) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&path)
        .map_err(io_error(&path))?;
    f.write_all(text.as_bytes()).map_err(io_error(&path))
}

fn read(dir: &Path, name: &str) -> Result<String, CaError> {
    let path = dir.join(name);
    std::fs::read_to_string(&path).map_err(io_error(&path))
}

impl MeshCa {
    /// Creates a root (and, with `intermediate`, a signing intermediate
    /// under it) in `dir`, refusing to overwrite an existing CA.
    pub fn init(
        dir: &Path,
        trust_domain: &str,
        intermediate: bool,
        validity: Duration,
    ) -> Result<MeshCa, CaError> {
        if dir.join("ca-key.pem").exists() {
            return Err(CaError::Exists {
                dir: dir.to_path_buf(),
            });
        }
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let err = CaError::Generate;
        let root_key = KeyPair::generate().map_err(err)?;
        let root_params = ca_params(&format!("{trust_domain} root CA"), validity, None);
        let root = root_params.self_signed(&root_key).map_err(err)?;
        let root_pem = root.pem();
        write(dir, "root-cert.pem", &root_pem, false)?;
        write(dir, "root-key.pem", &root_key.serialize_pem(), true)?;
        let root_issuer = Issuer::new(root_params, root_key);
        let (ca_pem, ca_key, chain_pem) = if intermediate {
            let key = KeyPair::generate().map_err(err)?;
            let params = ca_params(
                &format!("{trust_domain} intermediate CA"),
                validity / 2,
                Some(0),
            );
            let cert = params.signed_by(&key, &root_issuer).map_err(err)?;
            let pem = cert.pem();
            (pem.clone(), key, format!("{pem}{root_pem}"))
        } else {
            let key = KeyPair::from_pem(&read(dir, "root-key.pem")?).map_err(err)?;
            (root_pem.clone(), key, root_pem.clone())
        };
        write(dir, "ca-cert.pem", &ca_pem, false)?;
        write(dir, "ca-key.pem", &ca_key.serialize_pem(), true)?;
        write(dir, "cert-chain.pem", &chain_pem, false)?;
        MeshCa::load(dir)
    }

    /// Loads a CA directory (`ca-cert.pem`, `ca-key.pem`, `cert-chain.pem`,
    /// `root-cert.pem`).
    pub fn load(dir: &Path) -> Result<MeshCa, CaError> {
        let pem_error = |name: &str| {
            let path = dir.join(name);
            move |source| CaError::Pem { path, source }
        };
        let key = KeyPair::from_pem(&read(dir, "ca-key.pem")?).map_err(pem_error("ca-key.pem"))?;
        let cert = read(dir, "ca-cert.pem")?;
        let issuer = Issuer::from_ca_cert_pem(&cert, key).map_err(pem_error("ca-cert.pem"))?;
        Ok(MeshCa {
            issuer,
            chain_pem: read(dir, "cert-chain.pem")?,
            root_pem: read(dir, "root-cert.pem")?,
        })
    }

    fn leaf_params(
        &self,
        spiffe: &str,
        dns: &[String],
        validity: Duration,
    ) -> Result<CertificateParams, CaError> {
        let name_error = |name: &str| {
            let name = name.to_string();
            move |source| CaError::Name { name, source }
        };
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        let mut sans = vec![SanType::URI(
            spiffe.to_string().try_into().map_err(name_error(spiffe))?,
        )];
        for d in dns {
            // An IP address becomes an IP SAN (a client connecting to
            // `10.0.0.1:15012` verifies that), anything else a DNS name.
            sans.push(match d.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(d.clone().try_into().map_err(name_error(d))?),
            });
        }
        p.subject_alt_names = sans;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        p.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::minutes(1);
        p.not_after = now + time::Duration::seconds(validity.as_secs() as i64);
        Ok(p)
    }

    /// Issues a workload certificate for `spiffe` (plus DNS names, and IP
    /// addresses as IP SANs) with a fresh key.
    pub fn issue(
        &self,
        spiffe: &str,
        dns: &[String],
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let params = self.leaf_params(spiffe, dns, validity)?;
        let key = KeyPair::generate().map_err(CaError::Issue)?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(CaError::Issue)?;
        Ok(Issued {
            cert_chain_pem: format!("{}{}", cert.pem(), self.chain_pem),
            key_pem: key.serialize_pem(),
            root_pem: self.root_pem.clone(),
        })
    }

    /// Signs a CSR for `spiffe`: the certificate carries exactly the
    /// identity the caller was authenticated as, whatever the CSR asks for
    /// (Istio's CA does the same), with the requester's public key.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        spiffe: &str,
        validity: Duration,
    ) -> Result<Issued, CaError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(CaError::Csr)?;
        let signed = CertificateSigningRequestParams {
            params: self.leaf_params(spiffe, &[], validity)?,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(CaError::Issue)?;
        Ok(Issued {
            cert_chain_pem: format!("{}{}", signed.pem(), self.chain_pem),
            key_pem: String::new(),
            root_pem: self.root_pem.clone(),
        })
    }
}

impl Issued {
    /// Writes Istio's file-mounted layout into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), CaError> {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        write(dir, "cert-chain.pem", &self.cert_chain_pem, false)?;
        if !self.key_pem.is_empty() {
            write(dir, "key.pem", &self.key_pem, true)?;
        }
        write(dir, "root-cert.pem", &self.root_pem, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::creds::{CertInfo, certs_from_pem, identity_from_pem, provider, roots_from_pem};

    /// Verifies `chain_pem` as a client certificate chain under `root_pem`;
    /// panics when the PEM does not parse.
    fn verify(chain_pem: &str, root_pem: &str) -> Result<(), rustls::Error> {
        use rustls::server::WebPkiClientVerifier;
        let chain = certs_from_pem(chain_pem.as_bytes()).expect("chain PEM");
        let roots = std::sync::Arc::new(roots_from_pem(root_pem.as_bytes()).expect("root PEM"));
        let v = WebPkiClientVerifier::builder_with_provider(roots, provider())
            .build()
            .expect("client verifier");
        v.verify_client_cert(&chain[0], &chain[1..], rustls::pki_types::UnixTime::now())
            .map(|_| ())
    }

    #[test]
    fn init_issue_and_verify_with_and_without_intermediate() {
        for intermediate in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let ca = MeshCa::init(
                dir.path(),
                "cluster.local",
                intermediate,
                Duration::from_secs(86400),
            )
            .unwrap();
            let id = spiffe_id("cluster.local", "default", "frontend");
            let issued = ca
                .issue(
                    &id,
                    &["frontend.default.svc".into()],
                    Duration::from_secs(3600),
                )
                .unwrap();
            verify(&issued.cert_chain_pem, &issued.root_pem).unwrap();
            let leaf =
                CertInfo::parse(&certs_from_pem(issued.cert_chain_pem.as_bytes()).unwrap()[0])
                    .unwrap();
            assert!(leaf.sans.contains(&format!("URI:{id}")), "{:?}", leaf.sans);
            assert!(leaf.sans.contains(&"DNS:frontend.default.svc".to_string()));
            assert!(leaf.not_after - leaf.not_before <= 3600 + 60);
            identity_from_pem(
                issued.cert_chain_pem.as_bytes(),
                issued.key_pem.as_bytes(),
                &provider(),
                "t",
            )
            .unwrap();
            // Reloaded from disk, the CA signs the same way.
            let again = MeshCa::load(dir.path()).unwrap();
            verify(
                &again
                    .issue(&id, &[], Duration::from_secs(60))
                    .unwrap()
                    .cert_chain_pem,
                &issued.root_pem,
            )
            .unwrap();
            assert!(
                MeshCa::init(
                    dir.path(),
                    "cluster.local",
                    intermediate,
                    Duration::from_secs(60)
                )
                .is_err(),
                "no overwrite"
            );
        }
    }

    #[test]
    fn csr_gets_the_authenticated_identity_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = MeshCa::init(
            dir.path(),
            "cluster.local",
            true,
            Duration::from_secs(86400),
        )
        .unwrap();
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.subject_alt_names = vec![SanType::URI(
            "spiffe://cluster.local/ns/kube-system/sa/admin"
                .to_string()
                .try_into()
                .unwrap(),
        )];
        let csr = p.serialize_request(&key).unwrap().pem().unwrap();
        let want = spiffe_id("cluster.local", "default", "frontend");
        let issued = ca.sign_csr(&csr, &want, Duration::from_secs(600)).unwrap();
        let leaf =
            CertInfo::parse(&certs_from_pem(issued.cert_chain_pem.as_bytes()).unwrap()[0]).unwrap();
        assert_eq!(leaf.sans, vec![format!("URI:{want}")]);
        identity_from_pem(
            issued.cert_chain_pem.as_bytes(),
            key.serialize_pem().as_bytes(),
            &provider(),
            "t",
        )
        .unwrap();
        verify(&issued.cert_chain_pem, &issued.root_pem).unwrap();
        assert!(
            ca.sign_csr("not a csr", &want, Duration::from_secs(60))
                .is_err()
        );
    }
}
