//! The two messages of Istio's certificate-signing API, encoded and decoded
//! by hand, field for field as `security/v1alpha1/ca.proto` defines them
//! (see the parent module).

use std::collections::BTreeMap;
use std::time::Duration;

use super::GrpcError;

pub(super) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(buf: &mut &[u8]) -> Result<u64, GrpcError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first().ok_or(GrpcError::Truncated("varint"))?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(GrpcError::VarintTooLong)
}

pub(super) fn put_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    put_varint(out, (field << 3) | 2);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Visits every field: (field number, varint value or length-delimited bytes).
fn fields<'a>(
    mut buf: &'a [u8],
    mut f: impl FnMut(u64, Result<u64, &'a [u8]>),
) -> Result<(), GrpcError> {
    while !buf.is_empty() {
        let key = get_varint(&mut buf)?;
        let (field, wire) = (key >> 3, key & 7);
        match wire {
            0 => f(field, Ok(get_varint(&mut buf)?)),
            2 => {
                let len = get_varint(&mut buf)? as usize;
                if len > buf.len() {
                    return Err(GrpcError::Truncated("field"));
                }
                let (v, rest) = buf.split_at(len);
                buf = rest;
                f(field, Err(v));
            }
            1 => buf = buf.get(8..).ok_or(GrpcError::Truncated("fixed64"))?,
            5 => buf = buf.get(4..).ok_or(GrpcError::Truncated("fixed32"))?,
            w => return Err(GrpcError::WireType(w)),
        }
    }
    Ok(())
}

/// An `IstioCertificateRequest`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CertificateRequest {
    /// `csr` (field 1): the PEM certificate signing request.
    pub csr: String,
    /// `validity_duration` (field 3): requested lifetime in seconds; zero or
    /// negative asks for the CA's default.
    pub validity_secs: i64,
    /// `metadata` (field 4, a `google.protobuf.Struct`): its entries with a
    /// string value (`ImpersonatedIdentity`, `CertSigner`, `ClusterID`,
    /// `WorkloadName`, ...); entries of other kinds are skipped.
    pub metadata: BTreeMap<String, String>,
}

/// Encodes an `IstioCertificateRequest`; `metadata` becomes a `Struct` of
/// string values.
pub fn encode_request(csr: &str, validity: Duration, metadata: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    put_bytes(&mut out, 1, csr.as_bytes());
    put_varint(&mut out, 3 << 3);
    put_varint(&mut out, validity.as_secs().min(i64::MAX as u64));
    if !metadata.is_empty() {
        let mut fields = Vec::new();
        for (k, v) in metadata {
            // Value { string_value = 3 }
            let mut value = Vec::new();
            put_bytes(&mut value, 3, v.as_bytes());
            // FieldsEntry { key = 1; value = 2 }
            let mut entry = Vec::new();
            put_bytes(&mut entry, 1, k.as_bytes());
            put_bytes(&mut entry, 2, &value);
            // Struct { map<string, Value> fields = 1 }
            put_bytes(&mut fields, 1, &entry);
        }
        put_bytes(&mut out, 4, &fields);
    }
    out
}

/// Decodes a `google.protobuf.Struct`'s string-valued entries.
fn decode_struct(buf: &[u8], out: &mut BTreeMap<String, String>) -> Result<(), GrpcError> {
    let mut entries = Vec::new();
    fields(buf, |field, v| {
        if let (1, Err(entry)) = (field, v) {
            entries.push(entry);
        }
    })?;
    for entry in entries {
        let (mut key, mut value) = (String::new(), None);
        fields(entry, |field, v| match (field, v) {
            (1, Err(k)) => key = String::from_utf8_lossy(k).into_owned(),
            (2, Err(v)) => value = Some(v),
            _ => {}
        })?;
        let mut string = None;
        if let Some(v) = value {
            fields(v, |field, v| {
                if let (3, Err(s)) = (field, v) {
                    string = Some(String::from_utf8_lossy(s).into_owned());
                }
            })?;
        }
        if let Some(s) = string {
            out.insert(key, s);
        }
    }
    Ok(())
}

/// Decodes an `IstioCertificateRequest`.
pub fn decode_request(buf: &[u8]) -> Result<CertificateRequest, GrpcError> {
    let (mut csr, mut validity, mut metadata) = (None, 0, None);
    fields(buf, |field, v| match (field, v) {
        (1, Err(b)) => csr = Some(String::from_utf8_lossy(b).into_owned()),
        // int64: a negative value is its two's complement as a varint.
        (3, Ok(n)) => validity = n as i64,
        (4, Err(b)) => metadata = Some(b),
        _ => {}
    })?;
    let mut request = CertificateRequest {
        csr: csr.ok_or(GrpcError::NoCsr)?,
        validity_secs: validity,
        metadata: BTreeMap::new(),
    };
    if let Some(m) = metadata {
        decode_struct(m, &mut request.metadata)?;
    }
    Ok(request)
}

/// `IstioCertificateResponse.cert_chain`'s field number.
const CERT_CHAIN: u64 = 1;

/// Encodes an `IstioCertificateResponse`.
pub fn encode_response(chain: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in chain {
        put_bytes(&mut out, CERT_CHAIN, c.as_bytes());
    }
    out
}

/// Decodes an `IstioCertificateResponse`.
pub fn decode_response(buf: &[u8]) -> Result<Vec<String>, GrpcError> {
    let mut chain = Vec::new();
    fields(buf, |field, v| {
        if let (CERT_CHAIN, Err(b)) = (field, v) {
            chain.push(String::from_utf8_lossy(b).into_owned());
        }
    })?;
    Ok(chain)
}
