//! The settings of `meshgate iptables`, parsed and validated: ports, proxy
//! ids, CIDRs. Every parser returns a message naming the value and why it
//! is refused; clap adds the flag.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// meshgate's own ports, never captured inbound whatever the flags say:
/// admin, stats (Prometheus) and readiness.
pub const OWN_PORTS: [(u16, &str); 3] = [(15000, "admin"), (15020, "stats"), (15021, "readiness")];

/// Source address of meshgate's connections to the app (inbound
/// passthrough), IPv4; never captured again.
pub const PASSTHROUGH_V4: Cidr = Cidr::host(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 6)));
/// IPv6 passthrough source, `::6/128` as Istio.
pub const PASSTHROUGH_V6: Cidr = Cidr::host(IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6)));
/// Localhost: traffic to it is never captured, IPv4.
pub const LOCALHOST_V4: Cidr = Cidr::host(IpAddr::V4(Ipv4Addr::LOCALHOST));
/// Localhost, IPv6.
pub const LOCALHOST_V6: Cidr = Cidr::host(IpAddr::V6(Ipv6Addr::LOCALHOST));

/// An IP family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 (`iptables`, nft `ip`).
    V4,
    /// IPv6 (`ip6tables`, nft `ip6`).
    V6,
}

/// An address range, stored as its network address (host bits cleared, as
/// `iptables-save` and `nft list` print it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    /// One address (`/32` or `/128`).
    pub const fn host(addr: IpAddr) -> Cidr {
        let len = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        Cidr { addr, len }
    }

    /// Parses `ADDR/LEN`, as Istio does (a prefix length is required).
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let Some((addr, len)) = s.split_once('/') else {
            return Err(format!(
                "'{s}' is not a CIDR: expected ADDRESS/PREFIX-LENGTH, e.g. 10.0.0.0/8 or fd00::/8"
            ));
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("'{s}' is not a CIDR: '{addr}' is not an IP address"))?;
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        let len: u8 =
            len.parse().ok().filter(|l| *l <= max).ok_or_else(|| {
                format!("'{s}' is not a CIDR: prefix length '{len}' is not 0-{max}")
            })?;
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, len })
    }

    /// The family of the range.
    pub fn family(&self) -> Family {
        match self.addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether the range's address is a loopback address (127/8, `::1`),
    /// Istio's test for "loopback explicitly included".
    pub fn is_loopback(&self) -> bool {
        self.addr.is_loopback()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// The comma-separated entries of a flag value: trimmed, empty ones
/// skipped (Istio accepts `6000,7000,`).
fn entries(s: &str) -> impl Iterator<Item = &str> {
    s.split(',').map(str::trim).filter(|e| !e.is_empty())
}

/// A TCP port, 1-65535.
pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u32>() {
        Ok(p @ 1..=65535) => Ok(p as u16),
        Ok(p) => Err(format!("port {p} is out of range 1-65535")),
        Err(_) => Err(format!("'{}' is not a port number (1-65535)", s.trim())),
    }
}

/// A comma-separated list of ports (may be empty), duplicates dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortList(pub Vec<u16>);

/// Parses [`PortList`].
pub fn parse_port_list(s: &str) -> Result<PortList, String> {
    let mut ports = Vec::new();
    for e in entries(s) {
        if e == "*" {
            return Err("'*' is not accepted here: list the ports".into());
        }
        let p = parse_port(e)?;
        if !ports.contains(&p) {
            ports.push(p);
        }
    }
    Ok(PortList(ports))
}

/// A non-empty comma-separated list of numeric user or group ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdList(pub Vec<u32>);

/// Parses [`IdList`].
pub fn parse_id_list(s: &str) -> Result<IdList, String> {
    let mut ids = Vec::new();
    for e in entries(s) {
        let id = e
            .parse::<u32>()
            .map_err(|_| format!("'{e}' is not a numeric id (0-4294967295)"))?;
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    if ids.is_empty() {
        return Err("at least one numeric id is needed".into());
    }
    Ok(IdList(ids))
}

/// Which inbound ports are captured (`-b`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundPorts {
    /// Empty value: no inbound capture.
    None,
    /// `*`: every port but the excluded ones.
    All,
    /// These ports only.
    Only(Vec<u16>),
}

/// Parses [`InboundPorts`].
pub fn parse_inbound_ports(s: &str) -> Result<InboundPorts, String> {
    if s.trim() == "*" {
        return Ok(InboundPorts::All);
    }
    if entries(s).any(|e| e == "*") {
        return Err(format!(
            "'{s}': '*' captures every port and cannot be combined with a list"
        ));
    }
    let PortList(ports) = parse_port_list(s)?;
    Ok(if ports.is_empty() {
        InboundPorts::None
    } else {
        InboundPorts::Only(ports)
    })
}

/// Which outbound destinations are captured (`-i`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundRanges {
    /// `*`: every destination but the excluded ones.
    All,
    /// These ranges only (empty: no outbound capture).
    Only(Vec<Cidr>),
}

/// Parses [`OutboundRanges`].
pub fn parse_outbound_ranges(s: &str) -> Result<OutboundRanges, String> {
    if s.trim() == "*" {
        return Ok(OutboundRanges::All);
    }
    if entries(s).any(|e| e == "*") {
        return Err(format!(
            "'{s}': '*' captures every destination and cannot be combined with a list"
        ));
    }
    Ok(OutboundRanges::Only(parse_cidr_list(s)?.0))
}

/// A comma-separated list of CIDRs (may be empty), duplicates dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidrList(pub Vec<Cidr>);

/// Parses [`CidrList`]; `*` is refused (Istio: excluding everything is
/// not an exclusion).
pub fn parse_cidr_list(s: &str) -> Result<CidrList, String> {
    let mut cidrs = Vec::new();
    for e in entries(s) {
        if e == "*" {
            return Err("'*' is not accepted here: list the CIDRs".into());
        }
        let c = Cidr::parse(e)?;
        if !cidrs.contains(&c) {
            cidrs.push(c);
        }
    }
    Ok(CidrList(cidrs))
}

/// `-m`: how inbound connections are captured. Only REDIRECT: meshgate's
/// inbound listener reads the destination with `SO_ORIGINAL_DST`, which
/// TPROXY does not set (it needs a transparent socket and policy routing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterceptionMode {
    /// NAT `REDIRECT` to the inbound capture port.
    Redirect,
}

/// Parses [`InterceptionMode`] (case-insensitive).
pub fn parse_interception_mode(s: &str) -> Result<InterceptionMode, String> {
    match s.trim().to_ascii_uppercase().as_str() {
        "REDIRECT" => Ok(InterceptionMode::Redirect),
        "TPROXY" => Err(
            "TPROXY is not supported: meshgate captures inbound connections with \
             REDIRECT only (its inbound listener reads SO_ORIGINAL_DST); use REDIRECT"
                .into(),
        ),
        _ => Err(format!(
            "'{s}' is not an interception mode: expected REDIRECT"
        )),
    }
}

/// Everything the rules are built from, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureConfig {
    /// `-p`: where outbound connections are redirected (15001).
    pub proxy_port: u16,
    /// `-z`: where inbound connections are redirected (15006).
    pub inbound_capture_port: u16,
    /// `-u`: the proxy's user ids, whose traffic is never captured.
    pub proxy_uids: Vec<u32>,
    /// `-g`: the proxy's group ids, likewise.
    pub proxy_gids: Vec<u32>,
    /// `-b`: inbound ports captured.
    pub inbound_ports: InboundPorts,
    /// `-d`: inbound ports not captured (with `-b '*'`), besides
    /// [`OWN_PORTS`].
    pub inbound_ports_exclude: Vec<u16>,
    /// `-o`: outbound ports never captured.
    pub outbound_ports_exclude: Vec<u16>,
    /// `-i`: outbound ranges captured.
    pub outbound_ranges: OutboundRanges,
    /// `-x`: outbound ranges never captured.
    pub outbound_ranges_exclude: Vec<Cidr>,
}

impl Default for CaptureConfig {
    /// The defaults of `meshgate iptables` (an injected Istio sidecar's:
    /// every inbound port, every outbound destination).
    fn default() -> Self {
        CaptureConfig {
            proxy_port: 15001,
            inbound_capture_port: 15006,
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            inbound_ports: InboundPorts::All,
            inbound_ports_exclude: Vec::new(),
            outbound_ports_exclude: Vec::new(),
            outbound_ranges: OutboundRanges::All,
            outbound_ranges_exclude: Vec::new(),
        }
    }
}

impl CaptureConfig {
    /// Checks what no single flag can: meshgate's own ports in the `-b`
    /// list are refused (capturing readiness or stats would send the
    /// kubelet's probes and scrapes into the proxy). Returns warnings.
    pub fn check(&self) -> Result<Vec<String>, String> {
        let mut warnings = Vec::new();
        if let InboundPorts::Only(ports) = &self.inbound_ports {
            for p in ports {
                if let Some((_, what)) = OWN_PORTS.iter().find(|(own, _)| own == p) {
                    return Err(format!(
                        "-b/--istio-inbound-ports {p}: meshgate's {what} port is never captured; \
                         remove it from the list"
                    ));
                }
            }
            if !self.inbound_ports_exclude.is_empty() {
                warnings.push(
                    "-d/--istio-local-exclude-ports applies only with -b '*' (as Istio); \
                     with a list of inbound ports it is ignored"
                        .to_string(),
                );
            }
        }
        Ok(warnings)
    }

    /// Whether `-i` names a loopback range: then traffic an app sends to
    /// itself over `lo` is captured too (Istio leaves out its `-o lo …
    /// ! --uid-owner … RETURN` rules).
    pub fn includes_loopback(&self) -> bool {
        match &self.outbound_ranges {
            OutboundRanges::All => false,
            OutboundRanges::Only(c) => c.iter().any(Cidr::is_loopback),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_mask_and_refuse() {
        assert_eq!(Cidr::parse("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("0.0.0.0/0").unwrap().to_string(), "0.0.0.0/0");
        assert_eq!(
            Cidr::parse("2001:db8::1/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(Cidr::parse("::/0").unwrap().to_string(), "::/0");
        assert_eq!(Cidr::parse("::1/128").unwrap().family(), Family::V6);
        let e = Cidr::parse("10.0.0.1").unwrap_err();
        assert!(e.contains("'10.0.0.1' is not a CIDR"), "{e}");
        let e = Cidr::parse("10.0.0.0/33").unwrap_err();
        assert!(e.contains("prefix length '33' is not 0-32"), "{e}");
        let e = Cidr::parse("fd00::/129").unwrap_err();
        assert!(e.contains("0-128"), "{e}");
        let e = Cidr::parse("10.0.0.300/8").unwrap_err();
        assert!(e.contains("'10.0.0.300' is not an IP address"), "{e}");
        assert!(Cidr::parse("10.0.0.0/x").is_err());
    }

    #[test]
    fn loopback_ranges() {
        for c in ["127.0.0.1/32", "127.1.2.3/32", "127.0.0.0/8", "::1/128"] {
            assert!(Cidr::parse(c).unwrap().is_loopback(), "{c}");
        }
        for c in ["10.0.0.0/8", "0.0.0.0/0", "fd00::/8", "::/0"] {
            assert!(!Cidr::parse(c).unwrap().is_loopback(), "{c}");
        }
    }

    #[test]
    fn ports_and_lists() {
        assert_eq!(parse_port("15001"), Ok(15001));
        assert_eq!(
            parse_port("0").unwrap_err(),
            "port 0 is out of range 1-65535"
        );
        assert_eq!(
            parse_port("70000").unwrap_err(),
            "port 70000 is out of range 1-65535"
        );
        assert_eq!(
            parse_port("http").unwrap_err(),
            "'http' is not a port number (1-65535)"
        );
        assert_eq!(
            parse_port_list("6000, 7000,,6000,").unwrap(),
            PortList(vec![6000, 7000])
        );
        assert_eq!(parse_port_list("").unwrap(), PortList(vec![]));
        assert!(parse_port_list("80,x").unwrap_err().contains("'x'"));
        assert!(parse_port_list("*").is_err());
    }

    #[test]
    fn inbound_ports_values() {
        assert_eq!(parse_inbound_ports("*"), Ok(InboundPorts::All));
        assert_eq!(parse_inbound_ports(""), Ok(InboundPorts::None));
        assert_eq!(parse_inbound_ports(" , "), Ok(InboundPorts::None));
        assert_eq!(
            parse_inbound_ports("8080,9090"),
            Ok(InboundPorts::Only(vec![8080, 9090]))
        );
        assert!(
            parse_inbound_ports("*,80")
                .unwrap_err()
                .contains("cannot be combined")
        );
        assert!(
            parse_inbound_ports("80,65536")
                .unwrap_err()
                .contains("65536")
        );
    }

    #[test]
    fn outbound_ranges_values() {
        assert_eq!(parse_outbound_ranges("*"), Ok(OutboundRanges::All));
        assert_eq!(parse_outbound_ranges(""), Ok(OutboundRanges::Only(vec![])));
        let OutboundRanges::Only(c) = parse_outbound_ranges("10.0.0.0/8,fd00::/8").unwrap() else {
            panic!("a list")
        };
        assert_eq!(c.len(), 2);
        assert!(parse_outbound_ranges("10.0.0.0/8,*").is_err());
        assert!(parse_outbound_ranges("10.0.0.0").is_err());
        assert!(
            parse_cidr_list("*")
                .unwrap_err()
                .contains("'*' is not accepted")
        );
    }

    #[test]
    fn ids_and_modes() {
        assert_eq!(parse_id_list("1337"), Ok(IdList(vec![1337])));
        assert_eq!(parse_id_list("3,4,3"), Ok(IdList(vec![3, 4])));
        assert!(parse_id_list("").unwrap_err().contains("at least one"));
        assert!(
            parse_id_list("istio-proxy")
                .unwrap_err()
                .contains("'istio-proxy' is not a numeric id")
        );
        assert!(parse_id_list("-1").is_err());
        assert_eq!(
            parse_interception_mode("REDIRECT"),
            Ok(InterceptionMode::Redirect)
        );
        assert_eq!(
            parse_interception_mode("redirect"),
            Ok(InterceptionMode::Redirect)
        );
        let e = parse_interception_mode("TPROXY").unwrap_err();
        assert!(e.contains("TPROXY is not supported"), "{e}");
        assert!(
            parse_interception_mode("DNAT")
                .unwrap_err()
                .contains("expected REDIRECT")
        );
    }

    #[test]
    fn own_ports_in_an_inbound_list_are_refused() {
        let cfg = CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![8080, 15021]),
            ..CaptureConfig::default()
        };
        let e = cfg.check().unwrap_err();
        assert!(e.contains("-b/--istio-inbound-ports 15021"), "{e}");
        assert!(e.contains("readiness"), "{e}");
        let cfg = CaptureConfig {
            inbound_ports: InboundPorts::Only(vec![8080]),
            inbound_ports_exclude: vec![9090],
            ..CaptureConfig::default()
        };
        let w = cfg.check().unwrap();
        assert!(w[0].contains("applies only with -b '*'"), "{w:?}");
        assert_eq!(CaptureConfig::default().check(), Ok(vec![]));
    }
}
