//! What a ClientHello says before rustls judges it: the raw `server_name`
//! and the versions offered, read from the record bytes. rustls reads an
//! SNI that is not a valid DNS name as "no SNI", and a TLS 1.0-only hello
//! is only refused once a config is chosen; the SNI router needs both
//! earlier, to answer with the right alert instead of routing the client
//! as if it had sent no name.
//!
//! Pure and total: any input gives an answer, never a panic.

/// Largest host name a DNS name can be (RFC 1035, without the final dot).
const MAX_NAME: usize = 253;

/// A fatal TLS alert record (TLS 1.2 record version, level 2) with
/// `description`, for writing before any handshake state exists.
pub const fn fatal_alert(description: u8) -> [u8; 7] {
    [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, description]
}

/// `handshake_failure` (40).
pub const HANDSHAKE_FAILURE: u8 = 40;
/// `illegal_parameter` (47).
pub const ILLEGAL_PARAMETER: u8 = 47;
/// `protocol_version` (70).
pub const PROTOCOL_VERSION: u8 = 70;
/// `unrecognized_name` (112).
pub const UNRECOGNIZED_NAME: u8 = 112;

/// The `host_name` a ClientHello carries, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawSni {
    /// No `server_name` extension, or no `host_name` entry in it.
    Absent,
    /// The `host_name` bytes.
    Name(Vec<u8>),
    /// The bytes are not a complete ClientHello this parser can read.
    Unreadable,
}

/// Why a `host_name` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSni {
    /// Not UTF-8.
    #[error("the SNI is not valid UTF-8 ({len} bytes)")]
    NotUtf8 {
        /// Its length in bytes.
        len: usize,
    },
    /// Longer than a DNS name can be.
    #[error("the SNI is {len} bytes long; a DNS name has at most {MAX_NAME}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
    },
    /// UTF-8, but not a DNS name (empty label, a label over 63 bytes,
    /// characters a host name cannot hold).
    #[error("the SNI {name:?} is not a valid DNS name")]
    NotDnsName {
        /// The name, cut to 64 characters for the log.
        name: String,
    },
}

/// Checks a `host_name` as sent. An IP address is not refused (RFC 6066
/// forbids it, but some clients send one; it routes as no SNI).
pub fn check_host_name(name: &[u8]) -> Result<(), BadSni> {
    let text = std::str::from_utf8(name).map_err(|_| BadSni::NotUtf8 { len: name.len() })?;
    let trimmed = text.strip_suffix('.').unwrap_or(text);
    if trimmed.len() > MAX_NAME {
        return Err(BadSni::TooLong { len: name.len() });
    }
    if trimmed.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    rustls_pki_types::DnsName::try_from(trimmed)
        .map(|_| ())
        .map_err(|_| BadSni::NotDnsName {
            name: trimmed.chars().take(64).collect(),
        })
}

/// The ClientHello's `host_name`, read from the record bytes a client
/// sent (one or more handshake records).
pub fn raw_server_name(records: &[u8]) -> RawSni {
    let Some(hello) = client_hello_body(records) else {
        return RawSni::Unreadable;
    };
    match find_sni(&hello) {
        Some(Some(name)) => RawSni::Name(name.to_vec()),
        Some(None) => RawSni::Absent,
        None => RawSni::Unreadable,
    }
}

/// Whether the ClientHello offers TLS 1.2 or later: its legacy version is
/// TLS 1.2 (0x0303) or the `supported_versions` extension lists 1.2 or
/// 1.3. `None` when the bytes cannot be read.
pub fn offers_tls12_or_later(records: &[u8]) -> Option<bool> {
    let body = client_hello_body(records)?;
    let legacy = u16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let extensions = extensions(&body)?;
    for (kind, data) in extensions {
        if kind == 43 {
            // supported_versions: u8 length, then u16 versions.
            let len = usize::from(*data.first()?);
            let list = data.get(1..1 + len)?;
            return Some(list.chunks_exact(2).any(|v| {
                let v = u16::from_be_bytes([v[0], v[1]]);
                v == 0x0303 || v == 0x0304
            }));
        }
    }
    Some(legacy >= 0x0303)
}

/// Reassembles the ClientHello body from handshake records (a hello may
/// be split across several); `None` when the bytes are incomplete,
/// malformed or another message.
fn client_hello_body(mut records: &[u8]) -> Option<Vec<u8>> {
    let mut message = Vec::new();
    loop {
        if *records.first()? != 0x16 {
            return None;
        }
        let len = usize::from(u16::from_be_bytes([*records.get(3)?, *records.get(4)?]));
        message.extend_from_slice(records.get(5..5 + len)?);
        records = &records[5 + len..];
        if message.len() >= 4 {
            if message[0] != 1 {
                return None;
            }
            let body = usize::from(message[1]) << 16
                | usize::from(message[2]) << 8
                | usize::from(message[3]);
            if message.len() >= 4 + body {
                message.truncate(4 + body);
                message.drain(..4);
                return Some(message);
            }
        }
    }
}

/// The extensions of a ClientHello body, `(type, data)`.
fn extensions(body: &[u8]) -> Option<Vec<(u16, &[u8])>> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    let sid = usize::from(r.u8()?);
    r.take(sid)?;
    let suites = usize::from(r.u16()?);
    r.take(suites)?;
    let compression = usize::from(r.u8()?);
    r.take(compression)?;
    if r.0.is_empty() {
        return Some(Vec::new());
    }
    let total = usize::from(r.u16()?);
    let mut ext = Reader(r.take(total)?);
    let mut out = Vec::new();
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let len = usize::from(ext.u16()?);
        out.push((kind, ext.take(len)?));
    }
    Some(out)
}

/// `Some(Some(name))`, `Some(None)` without a `host_name`, `None` when
/// malformed.
fn find_sni(body: &[u8]) -> Option<Option<&[u8]>> {
    for (kind, data) in extensions(body)? {
        if kind != 0 {
            continue;
        }
        let mut r = Reader(data);
        let list = usize::from(r.u16()?);
        let mut list = Reader(r.take(list)?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let len = usize::from(list.u16()?);
            let name = list.take(len)?;
            if name_type == 0 {
                return Some(Some(name));
            }
        }
        return Some(None);
    }
    Some(None)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello record with `sni` (raw bytes) and the given versions.
    fn hello(sni: Option<&[u8]>, legacy: u16, supported: &[u16]) -> Vec<u8> {
        let mut ext = Vec::new();
        if let Some(name) = sni {
            let mut entry = vec![0u8];
            entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
            entry.extend_from_slice(name);
            let mut data = (entry.len() as u16).to_be_bytes().to_vec();
            data.extend_from_slice(&entry);
            ext.extend_from_slice(&0u16.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        if !supported.is_empty() {
            let mut data = vec![(supported.len() * 2) as u8];
            for v in supported {
                data.extend_from_slice(&v.to_be_bytes());
            }
            ext.extend_from_slice(&43u16.to_be_bytes());
            ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
            ext.extend_from_slice(&data);
        }
        let mut body = legacy.to_be_bytes().to_vec();
        body.extend_from_slice(&[7u8; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn reads_the_host_name_as_sent() {
        let h = hello(Some(b"a.example"), 0x0303, &[0x0304, 0x0303]);
        assert_eq!(raw_server_name(&h), RawSni::Name(b"a.example".to_vec()));
        assert_eq!(raw_server_name(&hello(None, 0x0303, &[])), RawSni::Absent);
        assert_eq!(raw_server_name(&h[..h.len() - 3]), RawSni::Unreadable);
        assert_eq!(raw_server_name(b""), RawSni::Unreadable);
    }

    #[test]
    fn reassembles_a_hello_split_across_records() {
        let h = hello(Some(b"split.example"), 0x0303, &[0x0304]);
        let payload = &h[5..];
        let mut split = Vec::new();
        for part in [&payload[..3], &payload[3..20], &payload[20..]] {
            split.extend_from_slice(&[0x16, 0x03, 0x01]);
            split.extend_from_slice(&(part.len() as u16).to_be_bytes());
            split.extend_from_slice(part);
        }
        assert_eq!(
            raw_server_name(&split),
            RawSni::Name(b"split.example".to_vec())
        );
        assert_eq!(offers_tls12_or_later(&split), Some(true));
    }

    #[test]
    fn judges_host_names() {
        assert_eq!(check_host_name(b"a.example"), Ok(()));
        assert_eq!(check_host_name(b"a.example."), Ok(()));
        assert_eq!(check_host_name(b"10.0.0.1"), Ok(()));
        assert!(matches!(
            check_host_name(b"\xff\xfe.example"),
            Err(BadSni::NotUtf8 { .. })
        ));
        let long = "a.".repeat(150);
        assert!(matches!(
            check_host_name(long.as_bytes()),
            Err(BadSni::TooLong { .. })
        ));
        let label = format!("{}.example", "a".repeat(64));
        assert!(matches!(
            check_host_name(label.as_bytes()),
            Err(BadSni::NotDnsName { .. })
        ));
        assert!(check_host_name(b"sp ace.example").is_err());
    }

    #[test]
    fn tells_old_only_clients() {
        assert_eq!(
            offers_tls12_or_later(&hello(None, 0x0301, &[])),
            Some(false)
        );
        assert_eq!(
            offers_tls12_or_later(&hello(None, 0x0302, &[])),
            Some(false)
        );
        assert_eq!(offers_tls12_or_later(&hello(None, 0x0303, &[])), Some(true));
        assert_eq!(
            offers_tls12_or_later(&hello(None, 0x0303, &[0x0304])),
            Some(true)
        );
        assert_eq!(
            offers_tls12_or_later(&hello(None, 0x0303, &[0x0302, 0x0301])),
            Some(false)
        );
        assert_eq!(offers_tls12_or_later(b"\x16\x03\x01"), None);
    }

    #[test]
    fn any_bytes_give_an_answer() {
        // Every prefix and every single-byte change of a real hello.
        let h = hello(Some(b"a.example"), 0x0303, &[0x0304]);
        for n in 0..h.len() {
            let _ = raw_server_name(&h[..n]);
            let _ = offers_tls12_or_later(&h[..n]);
        }
        for i in 0..h.len() {
            for b in [0u8, 1, 0x7f, 0xff] {
                let mut m = h.clone();
                m[i] = b;
                let _ = raw_server_name(&m);
                let _ = offers_tls12_or_later(&m);
            }
        }
    }
}
