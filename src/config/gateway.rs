//! `Gateway` (networking.istio.io): server-side listeners, and the
//! `ServerTLSSettings` shared with `Sidecar` ingress listeners.

use serde::{Deserialize, Serialize};

/// `Gateway.spec`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewaySpec {
    /// Servers (port + hosts + TLS).
    #[serde(default)]
    pub servers: Vec<Server>,
    /// Labels of the proxies it applies to (`plan::selector`).
    #[serde(default)]
    pub selector: std::collections::BTreeMap<String, String>,
}

/// `Server`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Server {
    /// Listening port.
    pub port: Option<ServerPort>,
    /// Bind address.
    pub bind: Option<String>,
    /// Hosts served, `[ns/]host`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Server TLS settings.
    pub tls: Option<ServerTls>,
    /// Not implemented in Istio either.
    pub default_endpoint: Option<String>,
    /// Server name.
    pub name: Option<String>,
}

/// `Port`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerPort {
    /// Port number.
    pub number: Option<u32>,
    /// Protocol: HTTP, HTTPS, GRPC, GRPC-WEB, HTTP2, MONGO, TCP, TLS.
    pub protocol: Option<String>,
    /// Port name.
    pub name: Option<String>,
    /// Deprecated target port.
    pub target_port: Option<u32>,
}

/// `ServerTLSSettings`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServerTls {
    /// Redirect plain HTTP to HTTPS with a 301.
    pub https_redirect: Option<bool>,
    /// PASSTHROUGH (proto default), SIMPLE, MUTUAL, AUTO_PASSTHROUGH,
    /// ISTIO_MUTUAL, OPTIONAL_MUTUAL.
    pub mode: Option<ServerTlsMode>,
    /// Server certificate file.
    pub server_certificate: Option<String>,
    /// Server key file.
    pub private_key: Option<String>,
    /// CA bundle for client certificates.
    pub ca_certificates: Option<String>,
    /// CRL file for client certificates.
    pub ca_crl: Option<String>,
    /// Secret with the server certificate (and CA).
    pub credential_name: Option<String>,
    /// One or two Secrets (RSA + ECDSA).
    #[serde(default)]
    pub credential_names: Vec<String>,
    /// One or two certificate/key file pairs (RSA + ECDSA).
    #[serde(default)]
    pub tls_certificates: Vec<TlsCertificate>,
    /// Secret or ConfigMap holding the CA for client certificates.
    pub ca_cert_credential_name: Option<String>,
    /// Client SANs allowed.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
    /// Allowed base64 SHA-256 SPKI hashes of client certificates.
    #[serde(default)]
    pub verify_certificate_spki: Vec<String>,
    /// Allowed hex SHA-256 hashes of client certificates.
    #[serde(default)]
    pub verify_certificate_hash: Vec<String>,
    /// Lowest TLS version.
    pub min_protocol_version: Option<TlsProtocol>,
    /// Highest TLS version.
    pub max_protocol_version: Option<TlsProtocol>,
    /// TLS 1.2 cipher suites (OpenSSL names).
    #[serde(default)]
    pub cipher_suites: Vec<String>,
    /// Accept clients whose certificate fails validation.
    pub insecure_skip_verify: Option<bool>,
}

/// `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS bytes by SNI.
    Passthrough,
    /// Terminate TLS.
    Simple,
    /// Terminate, client certificate required.
    Mutual,
    /// SNI-routed mesh passthrough.
    AutoPassthrough,
    /// Mesh mTLS.
    IstioMutual,
    /// Terminate, client certificate verified when sent.
    OptionalMutual,
}

/// `ServerTLSSettings.TLSProtocol`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsProtocol {
    /// Automatic.
    #[serde(rename = "TLS_AUTO")]
    TlsAuto,
    /// TLS 1.0.
    #[serde(rename = "TLSV1_0")]
    TlsV1_0,
    /// TLS 1.1.
    #[serde(rename = "TLSV1_1")]
    TlsV1_1,
    /// TLS 1.2.
    #[serde(rename = "TLSV1_2")]
    TlsV1_2,
    /// TLS 1.3.
    #[serde(rename = "TLSV1_3")]
    TlsV1_3,
}

/// `ServerTLSSettings.TLSCertificate`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TlsCertificate {
    /// Certificate file.
    pub server_certificate: Option<String>,
    /// Key file.
    pub private_key: Option<String>,
    /// CA file (hidden field).
    pub ca_certificates: Option<String>,
}
