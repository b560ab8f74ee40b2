//! The rules as one nftables script for `nft -f -`: a single `inet` table
//! (both families), named and laid out as Istio's nftables mode
//! (`istio-proxy-nat`, base chains `prerouting`/`output` at the dstnat
//! priority, regular chains `istio-inbound`, `istio-redirect`,
//! `istio-in-redirect`, `istio-output`; a counter on every rule).
//!
//! The script is one transaction that first deletes the table (after
//! adding it, so the delete never fails) and then builds it again: applying
//! twice leaves one table. Cleanup is the add-and-delete alone, which
//! succeeds when there is no table.
//!
//! Without IPv6, the IPv6 rules are left out and the jumps from the base
//! chains match IPv4 only (`meta nfproto ipv4`), so IPv6 traffic is not
//! captured, as with iptables when ip6tables is left alone.

use std::fmt::Write as _;

use super::config::Family;
use super::rules::{Chain, Rule, Target};

/// The table, Istio's name for it.
pub const TABLE: &str = "istio-proxy-nat";

/// A rule's expression and verdict, as `add rule inet TABLE CHAIN` takes
/// them. Without `ipv6`, jumps from the base chains match IPv4 only.
pub fn expr(rule: &Rule, ipv6: bool) -> String {
    let mut w = Vec::<String>::new();
    if rule.chain.is_builtin() && !ipv6 {
        w.push("meta nfproto ipv4".into());
    }
    if rule.out_lo {
        w.push("oifname lo".into());
    }
    if let Some(proto) = rule.proto {
        w.push(format!("meta l4proto {}", proto.name()));
    }
    let family = |f: Family| match f {
        Family::V4 => "ip",
        Family::V6 => "ip6",
    };
    if let Some(src) = rule.source {
        w.push(format!("{} saddr {src}", family(src.family())));
    }
    if let Some((dst, negated)) = rule.dest {
        let op = if negated { "!= " } else { "" };
        w.push(format!("{} daddr {op}{dst}", family(dst.family())));
    }
    if let (Some(proto), Some(port)) = (rule.proto, rule.dport) {
        w.push(format!("{} dport {port}", proto.name()));
    }
    if let Some(owner) = rule.owner {
        let key = if owner.group { "skgid" } else { "skuid" };
        let op = if owner.negated { "!= " } else { "" };
        w.push(format!("{key} {op}{}", owner.id));
    }
    w.push("counter".into());
    w.push(match rule.target {
        Target::Return => "return".into(),
        Target::Jump(chain) => format!("jump {}", chain.nft()),
        Target::Redirect(port) => format!("redirect to :{port}"),
    });
    w.join(" ")
}

/// The `nft -f -` script that installs `rules` (the IPv6 ones too when
/// `ipv6`), replacing the table if it exists.
pub fn apply(rules: &[Rule], ipv6: bool) -> String {
    let rules: Vec<&Rule> = rules
        .iter()
        .filter(|r| ipv6 || r.applies_to(Family::V4))
        .collect();
    let mut out = cleanup();
    let _ = writeln!(out, "add table inet {TABLE}");
    for (chain, hook) in [(Chain::Prerouting, "prerouting"), (Chain::Output, "output")] {
        // A base chain only when something jumps from it (as Istio).
        if rules.iter().any(|r| r.chain == chain) {
            let _ = writeln!(
                out,
                "add chain inet {TABLE} {} {{ type nat hook {hook} priority -100 ; }}",
                chain.nft()
            );
        }
    }
    for chain in Chain::OURS {
        let _ = writeln!(out, "add chain inet {TABLE} {}", chain.nft());
    }
    for rule in rules {
        let _ = writeln!(
            out,
            "add rule inet {TABLE} {} {}",
            rule.chain.nft(),
            expr(rule, ipv6)
        );
    }
    out
}

/// The `nft -f -` script that removes the table (and succeeds without one).
pub fn cleanup() -> String {
    format!("add table inet {TABLE}\ndelete table inet {TABLE}\n")
}
