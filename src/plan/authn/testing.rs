//! Signing keys and tokens for tests (unit tests and the `testing`
//! feature): key pairs generated with aws-lc-rs at test time, their public
//! JWKs, and JSON Web Tokens signed with them.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    self, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RsaKeyPair, RsaPublicKeyComponents,
};
use serde_json::{Value, json};

use super::token::b64url;

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair, &'static str),
    Ed(Ed25519KeyPair),
    Hmac(Vec<u8>),
}

/// A key that signs tokens with one algorithm.
pub struct SigningKey {
    /// The JWS algorithm (`RS256`, `PS384`, `ES256`, `EdDSA`, `HS256`...).
    pub alg: &'static str,
    /// The `kid` put in the JWK and in tokens, if any.
    pub kid: Option<String>,
    pair: Pair,
}

impl SigningKey {
    /// A new key for `alg` with key id `kid`.
    ///
    /// # Panics
    /// On an algorithm not listed above (tests only).
    pub fn new(alg: &'static str, kid: Option<&str>) -> SigningKey {
        let pair = match alg {
            "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => Pair::Rsa(
                RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).expect("RSA key generation"),
            ),
            "ES256" => Pair::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING)
                    .expect("P-256 key"),
                "P-256",
            ),
            "ES384" => Pair::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P384_SHA384_FIXED_SIGNING)
                    .expect("P-384 key"),
                "P-384",
            ),
            "ES512" => Pair::Ec(
                EcdsaKeyPair::generate(&signature::ECDSA_P521_SHA512_FIXED_SIGNING)
                    .expect("P-521 key"),
                "P-521",
            ),
            "EdDSA" => Pair::Ed(Ed25519KeyPair::generate().expect("Ed25519 key")),
            "HS256" | "HS384" | "HS512" => {
                let mut k = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut k).expect("random");
                Pair::Hmac(k)
            }
            other => panic!("no test key for {other}"),
        };
        SigningKey {
            alg,
            kid: kid.map(str::to_string),
            pair,
        }
    }

    /// The public JWK (with `kid` and `alg`).
    pub fn jwk(&self) -> Value {
        let mut v = match &self.pair {
            Pair::Rsa(k) => {
                let c = RsaPublicKeyComponents::<Vec<u8>>::from(k.public_key());
                json!({"kty": "RSA", "n": b64url(&c.n), "e": b64url(&c.e)})
            }
            Pair::Ec(k, crv) => {
                let point = k.public_key().as_ref();
                let len = (point.len() - 1) / 2;
                json!({
                    "kty": "EC",
                    "crv": crv,
                    "x": b64url(&point[1..=len]),
                    "y": b64url(&point[1 + len..]),
                })
            }
            Pair::Ed(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(k.public_key().as_ref())})
            }
            Pair::Hmac(k) => json!({"kty": "oct", "k": b64url(k)}),
        };
        v["alg"] = json!(self.alg);
        if let Some(kid) = &self.kid {
            v["kid"] = json!(kid);
        }
        v
    }

    /// A token with these claims, its header `alg` and `kid`.
    pub fn sign(&self, claims: &Value) -> String {
        let mut header = json!({"alg": self.alg, "typ": "JWT"});
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        self.sign_with_header(&header, claims)
    }

    /// A token with this header and these claims.
    ///
    /// # Panics
    /// When signing fails (tests only).
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let signed = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let sig = match &self.pair {
            Pair::Rsa(k) => {
                let encoding: &'static dyn signature::RsaEncoding = match self.alg {
                    "RS256" => &signature::RSA_PKCS1_SHA256,
                    "RS384" => &signature::RSA_PKCS1_SHA384,
                    "RS512" => &signature::RSA_PKCS1_SHA512,
                    "PS256" => &signature::RSA_PSS_SHA256,
                    "PS384" => &signature::RSA_PSS_SHA384,
                    _ => &signature::RSA_PSS_SHA512,
                };
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(encoding, &SystemRandom::new(), signed.as_bytes(), &mut sig)
                    .expect("RSA signature");
                sig
            }
            Pair::Ec(k, _) => k
                .sign(&SystemRandom::new(), signed.as_bytes())
                .expect("ECDSA signature")
                .as_ref()
                .to_vec(),
            Pair::Ed(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
            Pair::Hmac(secret) => {
                let alg = match self.alg {
                    "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                    "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => aws_lc_rs::hmac::HMAC_SHA256,
                };
                aws_lc_rs::hmac::sign(&aws_lc_rs::hmac::Key::new(alg, secret), signed.as_bytes())
                    .as_ref()
                    .to_vec()
            }
        };
        format!("{signed}.{}", b64url(&sig))
    }
}

/// A key set holding these keys' public JWKs.
pub fn jwks(keys: &[&SigningKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
