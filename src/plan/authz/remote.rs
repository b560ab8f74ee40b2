//! Who the peer is: the original client address `remote.ip` and
//! `remoteIpBlocks` match, and the identity `principals` match.

use std::net::IpAddr;

/// The original client: with `trusted` proxies in front, the `trusted`-th
/// `X-Forwarded-For` entry from the right (Envoy's `xff_num_trusted_hops`);
/// the peer when 0, or when the header is missing, short or not an
/// address.
pub fn remote_ip(peer: IpAddr, headers: &http::HeaderMap, trusted: u32) -> IpAddr {
    if trusted == 0 {
        return peer;
    }
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let n = trusted as usize;
    if entries.len() < n {
        return peer;
    }
    entries[entries.len() - n].parse().unwrap_or(peer)
}

/// The peer's authenticated principal as Envoy's RBAC reads it from a
/// verified certificate: its URI SAN, else its DNS SAN, else its subject.
pub fn peer_principal(sans: &[String], subject: &str) -> Option<String> {
    let find = |prefix: &str| {
        sans.iter()
            .find_map(|s| s.strip_prefix(prefix).map(str::to_string))
    };
    find("URI:")
        .or_else(|| find("DNS:"))
        .or_else(|| (!subject.is_empty()).then(|| subject.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_principal_is_the_uri_san_else_the_dns_san_else_the_subject() {
        let sans = vec![
            "DNS:a.example".to_string(),
            "URI:spiffe://td/ns/a/sa/b".to_string(),
        ];
        assert_eq!(
            peer_principal(&sans, "CN=x").as_deref(),
            Some("spiffe://td/ns/a/sa/b")
        );
        assert_eq!(
            peer_principal(&sans[..1], "CN=x").as_deref(),
            Some("a.example")
        );
        assert_eq!(peer_principal(&[], "CN=x").as_deref(), Some("CN=x"));
        assert_eq!(peer_principal(&[], ""), None);
    }

    #[test]
    fn remote_ip_trusts_only_the_configured_hops() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut h = http::HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("1.1.1.1, 2.2.2.2, 3.3.3.3"),
        );
        assert_eq!(remote_ip(peer, &h, 0), peer, "no trusted proxy: the peer");
        assert_eq!(remote_ip(peer, &h, 1), "3.3.3.3".parse::<IpAddr>().unwrap());
        assert_eq!(remote_ip(peer, &h, 3), "1.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(remote_ip(peer, &h, 4), peer, "fewer entries than hops");
        h.insert(
            "x-forwarded-for",
            http::HeaderValue::from_static("nonsense"),
        );
        assert_eq!(remote_ip(peer, &h, 1), peer);
    }
}
