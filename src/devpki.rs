//! A development PKI made with rcgen: a CA and the leaves it signs. Used by
//! `meshgate demo` and by the tests, which make fresh certificates on every
//! run (valid, expired, wrong host, wrong CA, client certificates, and
//! revocation lists naming some of them). Only
//! built with the `demo` feature (on by default, and turned on by
//! `testing`); the mesh CA (`ca`) does not depend on it.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevocationReason, RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

/// A certificate authority that can sign leaves.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
    /// The CA certificate, DER.
    pub cert_der: CertificateDer<'static>,
}

/// A signed leaf certificate with its key.
#[derive(Clone)]
pub struct Leaf {
    /// Leaf certificate, PEM.
    pub cert_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

/// What to put in a leaf.
#[derive(Clone, Debug)]
pub struct LeafSpec {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// Usable as a server certificate.
    pub server: bool,
    /// Usable as a client certificate.
    pub client: bool,
    /// Validity start relative to now.
    pub not_before: Duration,
    /// Validity end relative to now.
    pub not_after: Duration,
}

impl LeafSpec {
    /// A server certificate for `names`, valid from an hour ago for 30 days.
    pub fn server(names: &[&str]) -> LeafSpec {
        LeafSpec {
            common_name: names.first().copied().unwrap_or("server").to_string(),
            dns: names.iter().map(|s| s.to_string()).collect(),
            uris: Vec::new(),
            server: true,
            client: false,
            not_before: Duration::hours(-1),
            not_after: Duration::days(30),
        }
    }

    /// A client certificate with common name `cn` (also a DNS SAN).
    pub fn client(cn: &str) -> LeafSpec {
        LeafSpec {
            server: false,
            client: true,
            ..LeafSpec::server(&[cn])
        }
    }

    /// The same certificate, but expired a day ago.
    pub fn expired(mut self) -> LeafSpec {
        self.not_before = Duration::days(-30);
        self.not_after = Duration::days(-1);
        self
    }

    /// The same certificate, valid only from tomorrow.
    pub fn not_yet_valid(mut self) -> LeafSpec {
        self.not_before = Duration::days(1);
        self.not_after = Duration::days(30);
        self
    }
}

impl DevCa {
    /// A new self-signed CA with the given common name.
    pub fn new(common_name: &str) -> DevCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = OffsetDateTime::now_utc() - Duration::hours(1);
        params.not_after = OffsetDateTime::now_utc() + Duration::days(365);
        let key = KeyPair::generate().expect("key generation with aws-lc-rs");
        let cert = params.self_signed(&key).expect("self-signing a CA");
        DevCa {
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// Signs a leaf per `spec`.
    pub fn issue(&self, spec: &LeafSpec) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name = dn(&spec.common_name);
        let mut sans = Vec::new();
        for d in &spec.dns {
            sans.push(match d.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(d.clone().try_into().expect("valid DNS SAN")),
            });
        }
        for u in &spec.uris {
            sans.push(SanType::URI(u.clone().try_into().expect("valid URI SAN")));
        }
        params.subject_alt_names = sans;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        if spec.server {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        if spec.client {
            params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        let now = OffsetDateTime::now_utc();
        params.not_before = now + spec.not_before;
        params.not_after = now + spec.not_after;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key generation with aws-lc-rs");
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("signing a leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A revocation list (PEM) signed by this CA that revokes `revoked`
    /// (leaves it issued, found by their serial numbers), valid from an hour
    /// ago for a week.
    pub fn crl_pem(&self, revoked: &[&Leaf]) -> String {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = revoked
            .iter()
            .map(|leaf| RevokedCertParams {
                serial_number: leaf.serial(),
                revocation_time: now - Duration::minutes(5),
                reason_code: Some(RevocationReason::KeyCompromise),
                invalidity_date: None,
            })
            .collect();
        CertificateRevocationListParams {
            this_update: now - Duration::hours(1),
            next_update: now + Duration::days(7),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .expect("signing a CRL")
        .pem()
        .expect("PEM-encoding a CRL")
    }

    /// Writes the CA certificate to `dir/name`, returning the path.
    pub fn write_cert(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, &self.cert_pem)?;
        Ok(p)
    }
}

impl Leaf {
    /// The certificate's serial number (as a CRL names it).
    pub fn serial(&self) -> SerialNumber {
        use rustls_pki_types::pem::PemObject as _;
        use x509_parser::prelude::{FromDer as _, X509Certificate};
        let der =
            CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("a leaf's own PEM");
        let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("a leaf's own DER");
        let raw = cert.raw_serial();
        // DER keeps a leading zero byte for a positive number with its top
        // bit set; the CRL writer adds it back where needed.
        let start = raw
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(raw.len().saturating_sub(1));
        SerialNumber::from_slice(&raw[start..])
    }

    /// Writes `<stem>.crt` and `<stem>.key` to `dir`, returning both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> std::io::Result<(PathBuf, PathBuf)> {
        let c = dir.join(format!("{stem}.crt"));
        let k = dir.join(format!("{stem}.key"));
        std::fs::write(&c, &self.cert_pem)?;
        write_private(&k, self.key_pem.as_bytes())?;
        Ok((c, k))
    }
}

/// Writes a private key readable by the owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}
