//! The rule layout against Istio's own golden outputs
//! (tools/istio-iptables/pkg/capture/testdata and
//! tools/istio-nftables/pkg/capture/testdata in istio/istio), the
//! reconciliation with an existing table, and the flags.
//!
//! meshgate differs from Istio in three documented ways, applied to
//! Istio's lines before comparing: its own ports 15000/15020/15021 take
//! the place of Istio's tunnel port 15008 in ISTIO_INBOUND; it has no
//! tunnel port, so the proxy-to-itself rules carry no `-p tcp ! --dport
//! 15008`; and those rules exist only when inbound capture is on.

use clap::Parser;

use super::cli::{Backend, IptablesArgs, Ipv6};
use super::config::{CaptureConfig, Cidr, Family, InboundPorts, OutboundRanges};
use super::iptables::{self, NatState};
use super::nft;
use super::rules::{self, Chain};

/// Istio's lines made meshgate's (see the module comment).
fn istio_to_meshgate(golden: &str, inbound: bool) -> Vec<String> {
    let mut out = Vec::new();
    for line in golden.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("--dport 15008 -j RETURN") {
            for p in [15000, 15020, 15021] {
                out.push(line.replace("15008", &p.to_string()));
            }
            continue;
        }
        if line.contains("dport 15008 counter return") {
            for p in [15000, 15020, 15021] {
                out.push(line.replace("15008", &p.to_string()));
            }
            continue;
        }
        if line.contains("ISTIO_IN_REDIRECT") && line.contains("-owner") && !inbound {
            continue;
        }
        if line.contains("jump istio-in-redirect") && line.contains("sk") && !inbound {
            continue;
        }
        out.push(
            line.replace(" -p tcp ! --dport 15008", "")
                .replace(
                    " meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008",
                    " ip daddr != 127.0.0.1/32",
                )
                .replace(
                    " meta l4proto tcp ip6 daddr != ::1/128 tcp dport != 15008",
                    " ip6 daddr != ::1/128",
                ),
        );
    }
    out
}

/// The rule lines of a restore input (no declarations, no COMMIT).
fn rule_lines(restore: &str) -> Vec<String> {
    restore
        .lines()
        .filter(|l| l.starts_with("-A ") || l.starts_with("-D "))
        .map(String::from)
        .collect()
}

fn cfg(inbound: InboundPorts, outbound: OutboundRanges) -> CaptureConfig {
    CaptureConfig {
        inbound_ports: inbound,
        outbound_ranges: outbound,
        ..CaptureConfig::default()
    }
}

fn cidrs(list: &[&str]) -> Vec<Cidr> {
    list.iter().map(|c| Cidr::parse(c).unwrap()).collect()
}

/// Istio's inbound-ports-wildcard.golden (`-b '*'`, no outbound ranges).
const ISTIO_INBOUND_WILDCARD: &str = "
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
";

#[test]
fn inbound_wildcard_is_istios_layout() {
    let rules = rules::build(&cfg(InboundPorts::All, OutboundRanges::Only(vec![])));
    let restore = iptables::restore(&rules, Family::V4);
    assert_eq!(
        rule_lines(&restore),
        istio_to_meshgate(ISTIO_INBOUND_WILDCARD, true)
    );
    // Declarations first, in Istio's order, and one transaction.
    let head: Vec<&str> = restore.lines().take(5).collect();
    assert_eq!(
        head,
        [
            "*nat",
            ":ISTIO_INBOUND - [0:0]",
            ":ISTIO_REDIRECT - [0:0]",
            ":ISTIO_IN_REDIRECT - [0:0]",
            ":ISTIO_OUTPUT - [0:0]"
        ]
    );
    assert_eq!(restore.lines().last(), Some("COMMIT"));
}

#[test]
fn defaults_capture_everything_but_own_ports_and_localhost() {
    let rules = rules::build(&CaptureConfig::default());
    let mut want = istio_to_meshgate(ISTIO_INBOUND_WILDCARD, true);
    // `-i '*'`: everything else goes to the proxy (Istio's
    // handleOutboundIncludeRules).
    want.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
    assert_eq!(rule_lines(&iptables::restore(&rules, Family::V4)), want);
}

/// Istio's ipv6-inbound-ports.golden, its ip6tables half (`-b 4000,5000`).
const ISTIO_IPV6_INBOUND_PORTS: &str = "
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 4000 -j ISTIO_IN_REDIRECT
-A ISTIO_INBOUND -p tcp --dport 5000 -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d ::1/128 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d ::1/128 -j RETURN
";

#[test]
fn inbound_port_list_and_the_ipv6_mirror_are_istios() {
    let rules = rules::build(&cfg(
        InboundPorts::Only(vec![4000, 5000]),
        OutboundRanges::Only(vec![]),
    ));
    let v6 = iptables::restore(&rules, Family::V6);
    assert_eq!(
        rule_lines(&v6),
        istio_to_meshgate(ISTIO_IPV6_INBOUND_PORTS, true)
    );
    // The IPv4 table is the same with IPv4 addresses.
    let v4 = iptables::restore(&rules, Family::V4);
    let want: Vec<String> = istio_to_meshgate(ISTIO_IPV6_INBOUND_PORTS, true)
        .into_iter()
        .map(|l| {
            l.replace("::6/128", "127.0.0.6/32")
                .replace("::1/128", "127.0.0.1/32")
        })
        .collect();
    assert_eq!(rule_lines(&v4), want);
    assert!(!v4.contains("::"), "{v4}");
    assert!(!v6.contains("127.0.0"), "{v6}");
}

/// Istio's ipnets.golden (`-i 10.0.0.0/8`, no inbound capture).
const ISTIO_IPNETS: &str = "
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT
";

#[test]
fn outbound_cidrs_without_inbound_capture() {
    let rules = rules::build(&cfg(
        InboundPorts::None,
        OutboundRanges::Only(cidrs(&["10.0.0.0/8"])),
    ));
    let v4 = rule_lines(&iptables::restore(&rules, Family::V4));
    assert_eq!(v4, istio_to_meshgate(ISTIO_IPNETS, false));
    // No PREROUTING jump, no proxy-to-app redirect.
    assert!(!v4.iter().any(|l| l.contains("PREROUTING")));
    assert!(
        !v4.iter()
            .any(|l| l.contains("-owner 1337 -j ISTIO_IN_REDIRECT"))
    );
    // IPv6: the range is IPv4, so nothing is captured outbound.
    let v6 = rule_lines(&iptables::restore(&rules, Family::V6));
    assert!(
        !v6.iter().any(|l| l.ends_with("-j ISTIO_REDIRECT")),
        "{v6:?}"
    );
}

#[test]
fn excluded_and_included_cidrs_per_family() {
    let c = CaptureConfig {
        outbound_ranges: OutboundRanges::Only(cidrs(&["fd00::/8", "10.0.0.0/8"])),
        outbound_ranges_exclude: cidrs(&["2001:db8::/32", "10.1.0.0/16", "192.168.1.7/32"]),
        ..CaptureConfig::default()
    };
    let rules = rules::build(&c);
    let tail = |f| {
        let lines = rule_lines(&iptables::restore(&rules, f));
        let at = lines
            .iter()
            .position(|l| {
                l.contains("-d 127.0.0.1/32 -j RETURN") || l.contains("-d ::1/128 -j RETURN")
            })
            .unwrap();
        lines[at + 1..].to_vec()
    };
    assert_eq!(
        tail(Family::V4),
        [
            "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN",
            "-A ISTIO_OUTPUT -d 192.168.1.7/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
        ]
    );
    assert_eq!(
        tail(Family::V6),
        [
            "-A ISTIO_OUTPUT -d 2001:db8::/32 -j RETURN",
            "-A ISTIO_OUTPUT -d fd00::/8 -j ISTIO_REDIRECT",
        ]
    );
    // With `-i '*'` the exclusions still come first, then one catch-all.
    let c = CaptureConfig {
        outbound_ranges_exclude: cidrs(&["10.1.0.0/16"]),
        ..CaptureConfig::default()
    };
    let lines = rule_lines(&iptables::restore(&rules::build(&c), Family::V4));
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT"
        ]
    );
}

#[test]
fn outbound_port_exclusions_come_first_for_tcp_and_udp() {
    let c = CaptureConfig {
        outbound_ports_exclude: vec![22, 443],
        ..CaptureConfig::default()
    };
    let lines = rule_lines(&iptables::restore(&rules::build(&c), Family::V4));
    let at = lines
        .iter()
        .position(|l| l == "-A OUTPUT -j ISTIO_OUTPUT")
        .unwrap();
    assert_eq!(
        lines[at + 1..at + 6],
        [
            "-A ISTIO_OUTPUT -p tcp --dport 22 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 22 -j RETURN",
            "-A ISTIO_OUTPUT -p tcp --dport 443 -j RETURN",
            "-A ISTIO_OUTPUT -p udp --dport 443 -j RETURN",
            "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
        ]
    );
}

#[test]
fn inbound_exclusions_with_wildcard_and_own_ports() {
    let c = CaptureConfig {
        inbound_ports_exclude: vec![9090, 15021, 22],
        ..CaptureConfig::default()
    };
    let lines = rule_lines(&iptables::restore(&rules::build(&c), Family::V4));
    let inbound: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("-A ISTIO_INBOUND"))
        .collect();
    assert_eq!(
        inbound,
        [
            "-A ISTIO_INBOUND -p tcp --dport 15000 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 9090 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 22 -j RETURN",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        ]
    );
}

#[test]
fn proxy_uids_and_gids_in_istios_order() {
    // Istio's ip-range.golden: -u 3,4 -g 1,2 (without its DNS rules).
    let c = CaptureConfig {
        proxy_uids: vec![3, 4],
        proxy_gids: vec![1, 2],
        proxy_port: 16001,
        inbound_capture_port: 16006,
        ..CaptureConfig::default()
    };
    let lines = rule_lines(&iptables::restore(&rules::build(&c), Family::V4));
    let owners: Vec<&str> = lines
        .iter()
        .filter(|l| l.contains("-owner"))
        .map(String::as_str)
        .collect();
    let mut want = Vec::new();
    for (kind, id) in [("uid", 3), ("uid", 4), ("gid", 1), ("gid", 2)] {
        want.push(format!("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --{kind}-owner {id} -j ISTIO_IN_REDIRECT"));
        want.push(format!(
            "-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {id} -j RETURN"
        ));
        want.push(format!(
            "-A ISTIO_OUTPUT -m owner --{kind}-owner {id} -j RETURN"
        ));
    }
    assert_eq!(owners, want);
    assert!(lines.contains(&"-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 16001".to_string()));
    assert!(
        lines.contains(&"-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 16006".to_string())
    );
}

#[test]
fn a_loopback_range_in_i_captures_apps_calling_themselves() {
    // Istio's loopback-outbound-iprange case: no `-o lo ! --uid-owner` RETURN.
    let c = CaptureConfig {
        outbound_ranges: OutboundRanges::Only(cidrs(&["127.1.2.3/32"])),
        ..CaptureConfig::default()
    };
    let lines = rule_lines(&iptables::restore(&rules::build(&c), Family::V4));
    assert!(
        !lines.iter().any(|l| l.contains("-o lo -m owner !")),
        "{lines:?}"
    );
    assert!(lines.contains(&"-A ISTIO_OUTPUT -d 127.1.2.3/32 -j ISTIO_REDIRECT".to_string()));
}

/// Istio's nftables ipv6-inbound-ports.golden (`-b 4000,5000`).
const ISTIO_NFT_IPV6_INBOUND_PORTS: &str = "
add table inet istio-proxy-nat
flush table inet istio-proxy-nat
add chain inet istio-proxy-nat prerouting { type nat hook prerouting priority -100 ; }
add chain inet istio-proxy-nat output { type nat hook output priority -100 ; }
add chain inet istio-proxy-nat istio-inbound
add chain inet istio-proxy-nat istio-redirect
add chain inet istio-proxy-nat istio-in-redirect
add chain inet istio-proxy-nat istio-output
add rule inet istio-proxy-nat istio-inbound meta l4proto tcp tcp dport 15008 counter return
add rule inet istio-proxy-nat istio-redirect meta l4proto tcp counter redirect to :15001
add rule inet istio-proxy-nat istio-in-redirect meta l4proto tcp counter redirect to :15006
add rule inet istio-proxy-nat prerouting meta l4proto tcp counter jump istio-inbound
add rule inet istio-proxy-nat istio-inbound meta l4proto tcp tcp dport 4000 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-inbound meta l4proto tcp tcp dport 5000 counter jump istio-in-redirect
add rule inet istio-proxy-nat output counter jump istio-output
add rule inet istio-proxy-nat istio-output oifname lo ip saddr 127.0.0.6/32 counter return
add rule inet istio-proxy-nat istio-output oifname lo ip6 saddr ::6/128 counter return
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008 skuid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip6 daddr != ::1/128 tcp dport != 15008 skuid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo skuid != 1337 counter return
add rule inet istio-proxy-nat istio-output skuid 1337 counter return
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip daddr != 127.0.0.1/32 tcp dport != 15008 skgid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo meta l4proto tcp ip6 daddr != ::1/128 tcp dport != 15008 skgid 1337 counter jump istio-in-redirect
add rule inet istio-proxy-nat istio-output oifname lo skgid != 1337 counter return
add rule inet istio-proxy-nat istio-output skgid 1337 counter return
add rule inet istio-proxy-nat istio-output ip daddr 127.0.0.1/32 counter return
add rule inet istio-proxy-nat istio-output ip6 daddr ::1/128 counter return
";

#[test]
fn nft_script_is_istios_inet_table() {
    let rules = rules::build(&cfg(
        InboundPorts::Only(vec![4000, 5000]),
        OutboundRanges::Only(vec![]),
    ));
    let script = nft::apply(&rules, true);
    let mut want = vec![
        "add table inet istio-proxy-nat".to_string(),
        "delete table inet istio-proxy-nat".to_string(),
    ];
    // Istio flushes the table; meshgate deletes and rebuilds it, so a
    // base chain an earlier run added and this one does not goes too.
    want.extend(
        istio_to_meshgate(ISTIO_NFT_IPV6_INBOUND_PORTS, true)
            .into_iter()
            .filter(|l| !l.starts_with("flush table")),
    );
    assert_eq!(script.lines().collect::<Vec<_>>(), want);
}

#[test]
fn nft_without_inbound_or_ipv6() {
    let rules = rules::build(&cfg(
        InboundPorts::None,
        OutboundRanges::Only(cidrs(&["10.0.0.0/8", "fd00::/8"])),
    ));
    let script = nft::apply(&rules, false);
    // No prerouting base chain without inbound capture (as Istio).
    assert!(
        !script.contains("chain inet istio-proxy-nat prerouting"),
        "{script}"
    );
    // IPv6 is left alone: no ip6 rules, and the base chain takes IPv4 only.
    assert!(!script.contains("ip6"), "{script}");
    assert!(script.contains(
        "add rule inet istio-proxy-nat output meta nfproto ipv4 counter jump istio-output\n"
    ));
    assert!(script.contains(
        "add rule inet istio-proxy-nat istio-output ip daddr 10.0.0.0/8 counter jump istio-redirect\n"
    ));
    // With IPv6: both ranges, and the base chain takes both families.
    let script = nft::apply(&rules, true);
    assert!(script.contains("add rule inet istio-proxy-nat output counter jump istio-output\n"));
    assert!(script.contains("istio-output ip6 daddr fd00::/8 counter jump istio-redirect\n"));
    // The wildcard is one family-free rule.
    let all = nft::apply(&rules::build(&CaptureConfig::default()), true);
    assert!(
        all.ends_with("add rule inet istio-proxy-nat istio-output counter jump istio-redirect\n"),
        "{all}"
    );
    assert_eq!(
        nft::cleanup(),
        "add table inet istio-proxy-nat\ndelete table inet istio-proxy-nat\n"
    );
}

#[test]
fn nft_excluded_outbound_ports() {
    let c = CaptureConfig {
        outbound_ports_exclude: vec![22],
        ..CaptureConfig::default()
    };
    let script = nft::apply(&rules::build(&c), true);
    assert!(script.contains(
        "istio-output meta l4proto tcp tcp dport 22 counter return\nadd rule inet istio-proxy-nat istio-output meta l4proto udp udp dport 22 counter return\n"
    ), "{script}");
}

/// `iptables-save -t nat` of a namespace where the rules were applied
/// (by hand: a second PREROUTING jump, and one with another shape).
const SAVED: &str = "# Generated by iptables-save v1.8.9 (nf_tables)
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:ISTIO_INBOUND - [0:0]
:ISTIO_IN_REDIRECT - [0:0]
:ISTIO_OUTPUT - [0:0]
:ISTIO_REDIRECT - [0:0]
:OTHER - [0:0]
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A PREROUTING -p tcp -j OTHER
-A OUTPUT -p tcp -j ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN
-A OTHER -j ISTIO_REDIRECT
COMMIT
";

#[test]
fn saved_state_is_read() {
    let state = NatState::parse(SAVED);
    assert_eq!(
        state.chains,
        [
            Chain::Inbound,
            Chain::InRedirect,
            Chain::IstioOutput,
            Chain::Redirect
        ]
    );
    assert_eq!(
        state.jumps,
        [
            (Chain::Prerouting, "-p tcp -j ISTIO_INBOUND".to_string()),
            (Chain::Prerouting, "-p tcp -j ISTIO_INBOUND".to_string()),
            (Chain::Output, "-p tcp -j ISTIO_OUTPUT".to_string()),
        ]
    );
    assert!(NatState::parse("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n").is_empty());
}

#[test]
fn applying_over_existing_rules_leaves_one_set() {
    let rules = rules::build(&CaptureConfig::default());
    let text = iptables::apply(&rules, Family::V4, &NatState::parse(SAVED));
    let lines = rule_lines(&text);
    // The wanted PREROUTING jump stays (once), the duplicate and the
    // OUTPUT jump of another shape go, the wanted OUTPUT jump is added.
    assert_eq!(
        lines[..2],
        [
            "-D PREROUTING -p tcp -j ISTIO_INBOUND",
            "-D OUTPUT -p tcp -j ISTIO_OUTPUT"
        ]
    );
    assert!(!lines.contains(&"-A PREROUTING -p tcp -j ISTIO_INBOUND".to_string()));
    assert!(lines.contains(&"-A OUTPUT -j ISTIO_OUTPUT".to_string()));
    // Every chain is declared, so emptied before its rules are appended.
    for c in Chain::OURS {
        assert!(text.contains(&format!("\n:{} - [0:0]\n", c.iptables())));
    }
    // Nothing there: the whole set.
    let fresh = iptables::apply(&rules, Family::V4, &NatState::default());
    assert_eq!(fresh, iptables::restore(&rules, Family::V4));
    assert!(fresh.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND\n"));
}

#[test]
fn cleanup_removes_jumps_then_chains() {
    assert_eq!(iptables::cleanup(&NatState::default()), None);
    let text = iptables::cleanup(&NatState::parse(SAVED)).unwrap();
    assert_eq!(
        text,
        "*nat
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D PREROUTING -p tcp -j ISTIO_INBOUND
-D OUTPUT -p tcp -j ISTIO_OUTPUT
-F ISTIO_INBOUND
-F ISTIO_IN_REDIRECT
-F ISTIO_OUTPUT
-F ISTIO_REDIRECT
-X ISTIO_INBOUND
-X ISTIO_IN_REDIRECT
-X ISTIO_OUTPUT
-X ISTIO_REDIRECT
COMMIT
"
    );
    let rules = rules::build(&CaptureConfig::default());
    let dry = iptables::cleanup_of(&rules, Family::V6);
    assert!(dry.starts_with("*nat\n-D PREROUTING -p tcp -j ISTIO_INBOUND\n-D OUTPUT -j ISTIO_OUTPUT\n-F ISTIO_INBOUND\n"), "{dry}");
}

/// The command's flags, parsed as `meshgate iptables` parses them.
#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: IptablesArgs,
}

fn parse(args: &[&str]) -> Result<IptablesArgs, String> {
    Cmd::try_parse_from(std::iter::once("iptables").chain(args.iter().copied()))
        .map(|c| c.args)
        .map_err(|e| e.to_string())
}

#[test]
fn flag_defaults_are_the_default_config() {
    let a = parse(&[]).unwrap();
    assert_eq!(a.config(), CaptureConfig::default());
    assert_eq!(a.backend, None);
    assert_eq!(a.ipv6, Ipv6::Auto);
    assert!(!a.dry_run && !a.cleanup);
}

#[test]
fn flags_in_istios_spelling() {
    let a = parse(&[
        "-p",
        "16001",
        "-z",
        "16006",
        "-u",
        "3,4",
        "-b",
        "8080,9090",
        "-d",
        "22",
        "-o",
        "25",
        "-i",
        "10.0.0.0/8,fd00::/8",
        "-x",
        "10.1.0.0/16",
        "-m",
        "REDIRECT",
        "-n",
        "--backend",
        "nft",
        "--ipv6=false",
    ])
    .unwrap();
    let c = a.config();
    assert_eq!((c.proxy_port, c.inbound_capture_port), (16001, 16006));
    assert_eq!(c.proxy_uids, [3, 4]);
    assert_eq!(c.proxy_gids, [3, 4], "-g defaults to the -u ids");
    assert_eq!(c.inbound_ports, InboundPorts::Only(vec![8080, 9090]));
    assert_eq!(c.inbound_ports_exclude, [22]);
    assert_eq!(c.outbound_ports_exclude, [25]);
    assert_eq!(
        c.outbound_ranges,
        OutboundRanges::Only(cidrs(&["10.0.0.0/8", "fd00::/8"]))
    );
    assert_eq!(c.outbound_ranges_exclude, cidrs(&["10.1.0.0/16"]));
    assert!(a.dry_run);
    assert_eq!(a.backend, Some(Backend::Nftables));
    assert_eq!(a.ipv6, Ipv6::False);
    let a = parse(&[
        "--envoy-port",
        "1",
        "--inbound-capture-port",
        "2",
        "--proxy-uid",
        "5",
        "--proxy-gid",
        "6",
        "--istio-inbound-ports",
        "",
        "--istio-local-exclude-ports",
        "7",
        "--istio-local-outbound-ports-exclude",
        "8",
        "--istio-service-cidr",
        "",
        "--istio-service-exclude-cidr",
        "",
        "--istio-inbound-interception-mode",
        "redirect",
        "--cleanup-only",
        "--dry-run",
        "--backend",
        "iptables",
    ])
    .unwrap();
    let c = a.config();
    assert_eq!((c.proxy_port, c.inbound_capture_port), (1, 2));
    assert_eq!((c.proxy_uids, c.proxy_gids), (vec![5], vec![6]));
    assert_eq!(c.inbound_ports, InboundPorts::None);
    assert_eq!(c.outbound_ranges, OutboundRanges::Only(vec![]));
    assert!(a.cleanup && a.dry_run);
}

#[test]
fn bad_flag_values_name_the_flag_and_the_value() {
    for (args, flag, why) in [
        (&["-p", "0"][..], "--proxy-port", "port 0 is out of range"),
        (
            &["-z", "65536"][..],
            "--inbound-capture-port",
            "port 65536 is out of range",
        ),
        (
            &["-u", "proxy"][..],
            "--proxy-uid",
            "'proxy' is not a numeric id",
        ),
        (&["-g", ""][..], "--proxy-gid", "at least one numeric id"),
        (
            &["-m", "TPROXY"][..],
            "--istio-inbound-interception-mode",
            "TPROXY is not supported",
        ),
        (
            &["-b", "80,http"][..],
            "--istio-inbound-ports",
            "'http' is not a port number",
        ),
        (
            &["-b", "*,80"][..],
            "--istio-inbound-ports",
            "cannot be combined",
        ),
        (&["-d", "0"][..], "--istio-local-exclude-ports", "port 0"),
        (
            &["-o", "99999"][..],
            "--istio-local-outbound-ports-exclude",
            "port 99999",
        ),
        (
            &["-i", "10.0.0.0"][..],
            "--istio-service-cidr",
            "'10.0.0.0' is not a CIDR",
        ),
        (
            &["-i", "10.0.0.0/40"][..],
            "--istio-service-cidr",
            "prefix length '40'",
        ),
        (
            &["-x", "*"][..],
            "--istio-service-exclude-cidr",
            "'*' is not accepted",
        ),
        (
            &["-x", "fd00::/8,nope/8"][..],
            "--istio-service-exclude-cidr",
            "'nope' is not an IP address",
        ),
        (&["--backend", "ebpf"][..], "--backend", "ebpf"),
        (&["--ipv6", "maybe"][..], "--ipv6", "maybe"),
    ] {
        let e = parse(args)
            .err()
            .unwrap_or_else(|| panic!("{args:?} accepted"));
        assert!(e.contains(flag), "{args:?}: {e}");
        assert!(e.contains(why), "{args:?}: {e}");
        assert!(e.contains(args[1]) || args[1].is_empty(), "{args:?}: {e}");
    }
}
