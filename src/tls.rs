//! rustls configuration built from plans and credentials, and the
//! classification of handshake failures into stable reasons.
//!
//! The only module that builds rustls configs; keeping them in one place
//! keeps a future rustls 0.24 migration cheap.

pub mod client;
pub mod failure;
pub mod hello;
pub mod server;
pub mod server_configs;

pub use failure::{FailureReason, classify};

/// The crypto provider for every TLS config: aws-lc-rs, with AES-128-GCM
/// ahead of AES-256-GCM and ChaCha20 within each TLS version, the order
/// BoringSSL (Envoy) uses. AES-128-GCM is as safe for TLS and cheaper per
/// byte, and its SHA-256 key schedule runs on the SHA extensions of current
/// x86 CPUs where SHA-384's does not (about a tenth of a full handshake's
/// CPU here).
pub fn provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider
        .cipher_suites
        .sort_by_key(|s| (s.version() != &rustls::version::TLS13, bulk_rank(s.suite())));
    provider
}

fn bulk_rank(suite: rustls::CipherSuite) -> u8 {
    use rustls::CipherSuite as C;
    match suite {
        C::TLS13_AES_128_GCM_SHA256
        | C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        | C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => 0,
        C::TLS13_AES_256_GCM_SHA384
        | C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        | C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => 1,
        _ => 2,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn provider_prefers_aes_128_gcm_in_each_version() {
        let names: Vec<String> = super::provider()
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(names[0], "TLS13_AES_128_GCM_SHA256", "{names:?}");
        assert_eq!(names[1], "TLS13_AES_256_GCM_SHA384", "{names:?}");
        let first12 = names.iter().position(|n| !n.starts_with("TLS13")).unwrap();
        assert!(names[first12].contains("AES_128_GCM"), "{names:?}");
        assert!(names[..first12].iter().all(|n| n.starts_with("TLS13")));
    }
}
