//! The original client address `remote.ip` and `remoteIpBlocks` match.

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

#[cfg(test)]
mod tests {
    use super::*;

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
