//! IP networks as Istio writes them: a ServiceEntry's `addresses` (VIPs and
//! CIDR blocks) and a TLS or TCP route's `destinationSubnets`. Istio's
//! `ValidateIPSubnet`: a string with one `/` is a CIDR block (`10.0.0.0/8`,
//! `2001:db8::/32`), anything else a single IP address. Bits set past the
//! prefix are accepted and masked, as Envoy's `CidrRange` does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

use crate::config::Source;
use crate::config::service_entry::Resolution;
use crate::plan::diagnostics::Diagnostics;

/// An IP network: an address and how many leading bits of it count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub struct IpNetwork {
    /// The network address, bits past the prefix cleared.
    addr: IpAddr,
    /// Leading bits that count (32 or 128 for a single address).
    prefix: u8,
}

/// Why a string is not an IP address or CIDR block.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    /// Not an IP address.
    #[error("{0:?} is not a valid IP address")]
    Address(String),
    /// A `/` with something around it that is not a CIDR block.
    #[error("{0:?} is not a valid CIDR block (address/prefix length)")]
    Cidr(String),
}

impl IpNetwork {
    /// Parses an address (`10.1.2.3`, `2001:db8::1`) or a CIDR block
    /// (`10.0.0.0/8`, `2001:db8::/32`).
    pub fn parse(raw: &str) -> Result<IpNetwork, NetError> {
        let text = raw.trim();
        if text.matches('/').count() == 1 {
            let (addr, bits) = text.split_once('/').unwrap_or((text, ""));
            let addr: IpAddr = addr.parse().map_err(|_| NetError::Cidr(raw.into()))?;
            let max = max_prefix(addr);
            // Go's netip.ParsePrefix: decimal digits only, no leading zero.
            let prefix = (!bits.is_empty()
                && bits.bytes().all(|b| b.is_ascii_digit())
                && (bits == "0" || !bits.starts_with('0')))
            .then(|| bits.parse::<u8>().ok())
            .flatten()
            .filter(|p| *p <= max)
            .ok_or_else(|| NetError::Cidr(raw.into()))?;
            return Ok(IpNetwork {
                addr: mask(addr, prefix),
                prefix,
            });
        }
        let addr: IpAddr = text.parse().map_err(|_| NetError::Address(raw.into()))?;
        Ok(IpNetwork {
            addr,
            prefix: max_prefix(addr),
        })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts
    /// as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let same_family = matches!(
            (self.addr, ip),
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_))
        );
        same_family && mask(ip, self.prefix) == self.addr
    }

    /// Leading bits that count: larger is more specific.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Whether this is a block rather than one address.
    pub fn is_block(&self) -> bool {
        self.prefix < max_prefix(self.addr)
    }
}

impl std::fmt::Display for IpNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_block() {
            write!(f, "{}/{}", self.addr, self.prefix)
        } else {
            write!(f, "{}", self.addr)
        }
    }
}

impl From<IpNetwork> for String {
    fn from(n: IpNetwork) -> String {
        n.to_string()
    }
}

fn max_prefix(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// Parses a list of networks found at `field` (`field[i]` in errors).
pub(crate) fn parse_networks(
    list: &[String],
    src: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Vec<IpNetwork> {
    let mut out = Vec::new();
    for (i, raw) in list.iter().enumerate() {
        match IpNetwork::parse(raw) {
            Ok(n) => out.push(n),
            Err(e) => diag.error(src, format!("{field}[{i}]"), e.to_string()),
        }
    }
    out
}

/// A ServiceEntry's `spec.addresses`, with Istio's rules on which
/// resolutions may have them: CIDR blocks only with NONE or STATIC, none at
/// all with DYNAMIC_DNS.
pub(crate) fn parse_addresses(
    list: &[String],
    resolution: Resolution,
    src: &Source,
    diag: &mut Diagnostics,
) -> Vec<IpNetwork> {
    let out = parse_networks(list, src, "spec.addresses", diag);
    if list.is_empty() {
        return out;
    }
    match resolution {
        Resolution::DynamicDns => diag.error(
            src,
            "spec.addresses",
            "addresses cannot be set with resolution DYNAMIC_DNS (the destination is the host the app names)",
        ),
        Resolution::None | Resolution::Static => {}
        _ => {
            if let Some(i) = list.iter().position(|a| a.contains('/')) {
                diag.error(
                    src,
                    format!("spec.addresses[{i}]"),
                    format!(
                        "{:?}: CIDR blocks are allowed only with resolution NONE or STATIC",
                        list[i]
                    ),
                );
            }
        }
    }
    out
}
