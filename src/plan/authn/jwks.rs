//! JSON Web Key Sets as Envoy's `jwt_verify` library reads them: a JSON
//! object with a `keys` array (RSA, EC P-256/P-384/P-521, OKP Ed25519 and
//! `oct` keys), or Google's older form, an object of `kid` → PEM X.509
//! certificate (RSA). A key that does not parse is skipped; a set with no
//! usable key is refused with Envoy's reason.
//!
//! Keys are checked with aws-lc-rs when read (an EC point must be on its
//! curve, an Ed25519 key 32 bytes); meshgate also skips RSA keys shorter
//! than 2048 bits (which Envoy would use), so a token signed with one is
//! refused. Key material never appears in `Debug` or `Serialize` output.

use std::fmt;

use aws_lc_rs::signature::{self, ParsedPublicKey, RsaPublicKeyComponents};
use base64::Engine as _;
use serde::Serialize;
use serde::ser::SerializeStruct;
use serde_json::{Map, Value};

use super::status::{B64URL, Status};

/// A parsed key set.
#[derive(Clone, Default)]
pub struct Jwks {
    keys: Vec<Jwk>,
}

/// What reading a key set found besides its keys, for warnings.
#[derive(Debug, Clone, Default)]
pub struct Findings {
    /// Keys left out: their index in `keys` (or their `kid` in the X.509
    /// form) and why.
    pub skipped: Vec<(String, String)>,
    /// Indexes of keys that carry private key material (`d`, or an `oct`
    /// secret), which only a signer needs.
    pub private: Vec<usize>,
}

/// One usable key.
#[derive(Clone)]
pub struct Jwk {
    /// `kid`, empty without one.
    pub kid: String,
    /// `alg`, empty without one.
    pub alg: String,
    key: Key,
}

#[derive(Clone)]
enum Key {
    /// Modulus and exponent, big-endian without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        crv: Curve,
        key: ParsedPublicKey,
    },
    Ed25519(ParsedPublicKey),
    /// An HMAC secret.
    Oct(Vec<u8>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }

    fn verification(self) -> &'static signature::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &signature::ECDSA_P521_SHA512_FIXED,
        }
    }

    /// The JWS algorithm that signs with this curve (RFC 7518 §3.4).
    fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
        }
    }
}

impl Key {
    fn kty(&self) -> &'static str {
        match self {
            Key::Rsa { .. } => "RSA",
            Key::Ec { .. } => "EC",
            Key::Ed25519(_) => "OKP",
            Key::Oct(_) => "oct",
        }
    }
}

impl fmt::Debug for Jwk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Jwk");
        d.field("kty", &self.key.kty())
            .field("kid", &self.kid)
            .field("alg", &self.alg);
        if let Key::Ec { crv, .. } = &self.key {
            d.field("crv", &crv.name());
        }
        d.finish_non_exhaustive()
    }
}

impl fmt::Debug for Jwks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.keys).finish()
    }
}

impl Serialize for Jwk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Jwk", 3)?;
        st.serialize_field("kty", self.key.kty())?;
        st.serialize_field("kid", &self.kid)?;
        st.serialize_field("alg", &self.alg)?;
        st.end()
    }
}

impl Serialize for Jwks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.keys.serialize(s)
    }
}

impl Jwk {
    /// Verifies `signature` of `signed` for a token of algorithm `alg`:
    /// `Ok(false)` when this key does not verify it (the next one is
    /// tried), `Err` when the token is unusable whatever the key. Keys are
    /// used only with the algorithms of their type (no HMAC with an RSA
    /// token's `alg`, no EC key with another curve's algorithm).
    pub(super) fn verify(&self, alg: &str, signed: &[u8], sig: &[u8]) -> Result<bool, Status> {
        Ok(match &self.key {
            Key::Rsa { n, e } => {
                let params: &signature::RsaParameters = match alg {
                    "RS256" => &signature::RSA_PKCS1_2048_8192_SHA256,
                    "RS384" => &signature::RSA_PKCS1_2048_8192_SHA384,
                    "RS512" => &signature::RSA_PKCS1_2048_8192_SHA512,
                    "PS256" => &signature::RSA_PSS_2048_8192_SHA256,
                    "PS384" => &signature::RSA_PSS_2048_8192_SHA384,
                    "PS512" => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return Ok(false),
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, signed, sig)
                    .is_ok()
            }
            Key::Ec { crv, key } => crv.alg() == alg && key.verify_sig(signed, sig).is_ok(),
            Key::Ed25519(key) => {
                if alg != "EdDSA" {
                    return Ok(false);
                }
                if sig.len() != 64 {
                    return Err(Status::JwtEd25519SignatureWrongLength);
                }
                key.verify_sig(signed, sig).is_ok()
            }
            Key::Oct(secret) => {
                let algorithm = match alg {
                    "HS256" => aws_lc_rs::hmac::HMAC_SHA256,
                    "HS384" => aws_lc_rs::hmac::HMAC_SHA384,
                    "HS512" => aws_lc_rs::hmac::HMAC_SHA512,
                    _ => return Ok(false),
                };
                let key = aws_lc_rs::hmac::Key::new(algorithm, secret);
                aws_lc_rs::hmac::verify(&key, signed, sig).is_ok()
            }
        })
    }
}

impl Jwks {
    /// The usable keys, in document order.
    pub fn keys(&self) -> &[Jwk] {
        &self.keys
    }

    /// Reads a key set (`Jwks::createFrom(.., JWKS)`): `Err` with Envoy's
    /// reason when it is not one or holds no usable key.
    pub fn parse(text: &str) -> Result<(Jwks, Findings), Status> {
        let doc: Map<String, Value> = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(m)) => m,
            _ => return Err(Status::JwksParseError),
        };
        let mut findings = Findings::default();
        let Some(keys) = doc.get("keys") else {
            if is_x509_set(&doc) {
                return x509_set(&doc).map(|j| (j, findings));
            }
            return Err(Status::JwksNoKeys);
        };
        let Value::Array(keys) = keys else {
            return Err(Status::JwksBadKeys);
        };
        let mut out = Vec::new();
        let mut first_error = None;
        for (i, k) in keys.iter().enumerate() {
            let Value::Object(k) = k else {
                findings
                    .skipped
                    .push((i.to_string(), "not a JSON object".into()));
                continue;
            };
            if k.contains_key("d") || k.get("kty").and_then(Value::as_str) == Some("oct") {
                findings.private.push(i);
            }
            match jwk(k) {
                Ok(key) => out.push(key),
                Err(why) => {
                    first_error.get_or_insert(why.status());
                    findings.skipped.push((i.to_string(), why.to_string()));
                }
            }
        }
        if out.is_empty() {
            // Envoy keeps the first key's failure, else "no valid keys".
            return Err(first_error.unwrap_or(Status::JwksNoValidKeys));
        }
        Ok((Jwks { keys: out }, findings))
    }
}

/// Why one key is left out.
enum KeyError {
    /// Envoy refuses it too.
    Envoy(Status),
    /// Envoy would use it; meshgate does not.
    Refused(&'static str),
}

impl KeyError {
    fn status(&self) -> Status {
        match self {
            KeyError::Envoy(s) => *s,
            KeyError::Refused(_) => Status::JwksNoValidKeys,
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Envoy(s) => f.write_str(s.as_str()),
            KeyError::Refused(why) => f.write_str(why),
        }
    }
}

impl From<Status> for KeyError {
    fn from(s: Status) -> Self {
        KeyError::Envoy(s)
    }
}

/// A string member: `Ok(None)` when absent, `missing`/`wrong` per Envoy.
fn member<'a>(
    k: &'a Map<String, Value>,
    name: &str,
    wrong: Status,
) -> Result<Option<&'a str>, Status> {
    match k.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(wrong),
    }
}

fn required<'a>(
    k: &'a Map<String, Value>,
    name: &str,
    missing: Status,
    wrong: Status,
) -> Result<&'a str, Status> {
    member(k, name, wrong)?.ok_or(missing)
}

fn jwk(k: &Map<String, Value>) -> Result<Jwk, KeyError> {
    let kty = required(k, "kty", Status::JwksMissingKty, Status::JwksBadKty)?;
    // Optional; another type than a string counts as absent (Envoy).
    let kid = k
        .get("kid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let alg = k
        .get("alg")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let key = match kty {
        "RSA" => rsa(k, &alg)?,
        "EC" => ec(k, &alg)?,
        "OKP" => okp(k, &alg)?,
        "oct" => oct(k, &alg)?,
        _ => return Err(Status::JwksNotImplementedKty.into()),
    };
    Ok(Jwk { kid, alg, key })
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    let start = b.iter().position(|x| *x != 0).unwrap_or(b.len());
    b[start..].to_vec()
}

fn rsa_key(n: &[u8], e: &[u8]) -> Result<Key, KeyError> {
    let (n, e) = (strip_zeros(n), strip_zeros(e));
    // Envoy: only the standard exponents.
    if e != [3] && e != [1, 0, 1] {
        return Err(Status::JwksRsaParseError.into());
    }
    let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
    if bits < 2048 {
        return Err(KeyError::Refused(
            "RSA key shorter than 2048 bits (meshgate does not verify with it)",
        ));
    }
    if bits > 8192 {
        return Err(KeyError::Refused("RSA key longer than 8192 bits"));
    }
    Ok(Key::Rsa { n, e })
}

fn rsa(k: &Map<String, Value>, alg: &str) -> Result<Key, KeyError> {
    if !alg.is_empty() && !alg.starts_with("RS") && !alg.starts_with("PS") {
        return Err(Status::JwksRsaKeyBadAlg.into());
    }
    let n = required(k, "n", Status::JwksRsaKeyMissingN, Status::JwksRsaKeyBadN)?;
    let e = required(k, "e", Status::JwksRsaKeyMissingE, Status::JwksRsaKeyBadE)?;
    let (Ok(n), Ok(e)) = (B64URL.decode(n), B64URL.decode(e)) else {
        return Err(Status::JwksRsaParseError.into());
    };
    rsa_key(&n, &e)
}

fn ec(k: &Map<String, Value>, alg: &str) -> Result<Key, KeyError> {
    if !alg.is_empty() && !alg.starts_with("ES") {
        return Err(Status::JwksEcKeyBadAlg.into());
    }
    let crv = member(k, "crv", Status::JwksEcKeyBadCrv)?.unwrap_or("");
    if !alg.is_empty()
        && !crv.is_empty()
        && !matches!(
            (alg, crv),
            ("ES256", "P-256") | ("ES384", "P-384") | ("ES512", "P-521")
        )
    {
        return Err(Status::JwksEcKeyAlgNotCompatibleWithCrv.into());
    }
    let curve = if (alg.is_empty() && crv.is_empty()) || alg == "ES256" || crv == "P-256" {
        Curve::P256
    } else if alg == "ES384" || crv == "P-384" {
        Curve::P384
    } else if alg == "ES512" || crv == "P-521" {
        Curve::P521
    } else {
        return Err(Status::JwksEcKeyAlgOrCrvUnsupported.into());
    };
    let x = required(k, "x", Status::JwksEcKeyMissingX, Status::JwksEcKeyBadX)?;
    let y = required(k, "y", Status::JwksEcKeyMissingY, Status::JwksEcKeyBadY)?;
    let (Ok(x), Ok(y)) = (B64URL.decode(x), B64URL.decode(y)) else {
        return Err(Status::JwksEcXorYBadBase64.into());
    };
    let len = curve.coordinate_len();
    let (x, y) = (strip_zeros(&x), strip_zeros(&y));
    if x.len() > len || y.len() > len {
        return Err(Status::JwksEcParseError.into());
    }
    let mut point = vec![4u8];
    for c in [&x, &y] {
        point.extend(std::iter::repeat_n(0u8, len - c.len()));
        point.extend_from_slice(c);
    }
    let key = ParsedPublicKey::new(curve.verification(), point)
        .map_err(|_| KeyError::from(Status::JwksEcParseError))?;
    Ok(Key::Ec { crv: curve, key })
}

fn okp(k: &Map<String, Value>, alg: &str) -> Result<Key, KeyError> {
    if !alg.is_empty() && alg != "EdDSA" {
        return Err(Status::JwksOkpKeyBadAlg.into());
    }
    let crv = required(
        k,
        "crv",
        Status::JwksOkpKeyMissingCrv,
        Status::JwksOkpKeyBadCrv,
    )?;
    if crv != "Ed25519" {
        return Err(Status::JwksOkpKeyCrvUnsupported.into());
    }
    let x = required(k, "x", Status::JwksOkpKeyMissingX, Status::JwksOkpKeyBadX)?;
    let x = B64URL
        .decode(x)
        .map_err(|_| KeyError::from(Status::JwksOkpXBadBase64))?;
    if x.len() != 32 {
        return Err(Status::JwksOkpXWrongLength.into());
    }
    let key = ParsedPublicKey::new(&signature::ED25519, x)
        .map_err(|_| KeyError::from(Status::JwksOkpXWrongLength))?;
    Ok(Key::Ed25519(key))
}

fn oct(k: &Map<String, Value>, alg: &str) -> Result<Key, KeyError> {
    if !alg.is_empty() && !matches!(alg, "HS256" | "HS384" | "HS512") {
        return Err(Status::JwksHmacKeyBadAlg.into());
    }
    let secret = required(k, "k", Status::JwksHmacKeyMissingK, Status::JwksHmacKeyBadK)?;
    match B64URL.decode(secret) {
        Ok(s) if !s.is_empty() => Ok(Key::Oct(s)),
        _ => Err(Status::JwksOctBadBase64.into()),
    }
}

const X509_PREFIX: &str = "-----BEGIN CERTIFICATE-----\n";
const X509_SUFFIX: &str = "\n-----END CERTIFICATE-----\n";

/// Google's `kid` → PEM certificate form (`shouldCheckX509`).
fn is_x509_set(doc: &Map<String, Value>) -> bool {
    !doc.is_empty()
        && doc.iter().all(|(kid, v)| {
            !kid.is_empty()
                && v.as_str()
                    .is_some_and(|c| c.starts_with(X509_PREFIX) && c.ends_with(X509_SUFFIX))
        })
}

/// Every certificate must hold an RSA key (`createFromX509`).
fn x509_set(doc: &Map<String, Value>) -> Result<Jwks, Status> {
    let mut keys = Vec::new();
    for (kid, pem) in doc {
        let pem = pem.as_str().unwrap_or_default();
        let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes()) else {
            return Err(Status::JwksX509ParseError);
        };
        let Ok(cert) = pem.parse_x509() else {
            return Err(Status::JwksX509ParseError);
        };
        let Ok(x509_parser::public_key::PublicKey::RSA(rsa)) = cert.public_key().parsed() else {
            return Err(Status::JwksX509GetPubkeyError);
        };
        let key = rsa_key(rsa.modulus, rsa.exponent).map_err(|e| e.status())?;
        keys.push(Jwk {
            kid: kid.clone(),
            alg: String::new(),
            key,
        });
    }
    Ok(Jwks { keys })
}
