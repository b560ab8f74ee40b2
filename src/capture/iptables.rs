//! The rules as `iptables-restore` input, one nat table per family
//! (`iptables-restore` / `ip6tables-restore`, both run with `--noflush`).
//!
//! Applying is one transaction per family: declaring meshgate's chains
//! (`:ISTIO_INBOUND - [0:0]`) creates them, or empties them when they
//! exist, and the jumps from PREROUTING and OUTPUT are reconciled with
//! what `iptables-save -t nat` shows — a wanted jump already there stays,
//! any other jump to meshgate's chains is deleted, a missing one is
//! appended. Applying twice leaves one set of rules. Cleaning up deletes
//! those jumps, then flushes and deletes the chains that exist.

use std::fmt::Write as _;

use super::config::Family;
use super::rules::{Chain, Rule, Target};

/// The command's name for `family`.
pub fn command(family: Family) -> &'static str {
    match family {
        Family::V4 => "iptables",
        Family::V6 => "ip6tables",
    }
}

/// A rule's match and target, as `iptables -A CHAIN` takes them (the
/// order Istio prints).
pub fn spec(rule: &Rule) -> String {
    let mut w = Vec::<String>::new();
    if rule.out_lo {
        w.extend(["-o".into(), "lo".into()]);
    }
    if let Some(src) = rule.source {
        w.extend(["-s".into(), src.to_string()]);
    }
    if let Some((dst, negated)) = rule.dest {
        if negated {
            w.push("!".into());
        }
        w.extend(["-d".into(), dst.to_string()]);
    }
    if let Some(proto) = rule.proto {
        w.extend(["-p".into(), proto.name().into()]);
    }
    if let Some(port) = rule.dport {
        w.extend(["--dport".into(), port.to_string()]);
    }
    if let Some(owner) = rule.owner {
        w.extend(["-m".into(), "owner".into()]);
        if owner.negated {
            w.push("!".into());
        }
        let flag = if owner.group {
            "--gid-owner"
        } else {
            "--uid-owner"
        };
        w.extend([flag.into(), owner.id.to_string()]);
    }
    match rule.target {
        Target::Return => w.extend(["-j".into(), "RETURN".into()]),
        Target::Jump(chain) => w.extend(["-j".into(), chain.iptables().into()]),
        Target::Redirect(port) => w.extend([
            "-j".into(),
            "REDIRECT".into(),
            "--to-ports".into(),
            port.to_string(),
        ]),
    }
    w.join(" ")
}

/// What the nat table holds of meshgate's, from `iptables-save -t nat`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatState {
    /// meshgate's chains that exist.
    pub chains: Vec<Chain>,
    /// Rules in PREROUTING or OUTPUT that jump to one of them: (chain,
    /// spec as saved).
    pub jumps: Vec<(Chain, String)>,
}

impl NatState {
    /// Reads `iptables-save -t nat` output.
    pub fn parse(save: &str) -> NatState {
        let mut state = NatState::default();
        for line in save.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            if let Some(name) = words.first().and_then(|w| w.strip_prefix(':')) {
                if let Some(c) = Chain::OURS.into_iter().find(|c| c.iptables() == name) {
                    state.chains.push(c);
                }
                continue;
            }
            let ["-A", chain, rest @ ..] = words.as_slice() else {
                continue;
            };
            let Some(chain) = [Chain::Prerouting, Chain::Output]
                .into_iter()
                .find(|c| c.iptables() == *chain)
            else {
                continue;
            };
            let ours = rest.windows(2).any(|w| {
                matches!(w[0], "-j" | "-g") && Chain::OURS.iter().any(|c| c.iptables() == w[1])
            });
            if ours {
                state.jumps.push((chain, rest.join(" ")));
            }
        }
        state
    }

    /// Whether nothing of meshgate's is there.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.jumps.is_empty()
    }
}

fn declare_chains(out: &mut String) {
    out.push_str("*nat\n");
    for chain in Chain::OURS {
        let _ = writeln!(out, ":{} - [0:0]", chain.iptables());
    }
}

/// The `iptables-restore --noflush` input that installs `rules` for
/// `family` in a table that holds none of meshgate's rules: what
/// `--dry-run` prints.
pub fn restore(rules: &[Rule], family: Family) -> String {
    apply(rules, family, &NatState::default())
}

/// The `iptables-restore --noflush` input that installs `rules` for
/// `family` given what the table holds now.
pub fn apply(rules: &[Rule], family: Family, now: &NatState) -> String {
    let wanted: Vec<(Chain, String)> = rules
        .iter()
        .filter(|r| r.applies_to(family) && r.chain.is_builtin())
        .map(|r| (r.chain, spec(r)))
        .collect();
    // Existing jumps: the first copy of each wanted one stays, the rest go.
    let mut kept = Vec::new();
    let mut out = String::new();
    declare_chains(&mut out);
    for jump in &now.jumps {
        if wanted.contains(jump) && !kept.contains(jump) {
            kept.push(jump.clone());
        } else {
            let _ = writeln!(out, "-D {} {}", jump.0.iptables(), jump.1);
        }
    }
    for rule in rules.iter().filter(|r| r.applies_to(family)) {
        let line = (rule.chain, spec(rule));
        if rule.chain.is_builtin() && kept.contains(&line) {
            continue;
        }
        let _ = writeln!(out, "-A {} {}", rule.chain.iptables(), line.1);
    }
    out.push_str("COMMIT\n");
    out
}

/// The `iptables-restore --noflush` input that removes what the table
/// holds of meshgate's; `None` when there is nothing.
pub fn cleanup(now: &NatState) -> Option<String> {
    if now.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for (chain, spec) in &now.jumps {
        let _ = writeln!(out, "-D {} {spec}", chain.iptables());
    }
    // Flush them all first: they jump to each other.
    for chain in &now.chains {
        let _ = writeln!(out, "-F {}", chain.iptables());
    }
    for chain in &now.chains {
        let _ = writeln!(out, "-X {}", chain.iptables());
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// What cleanup would run on a table holding exactly `rules` (for
/// `--cleanup --dry-run`, which does not read the table).
pub fn cleanup_of(rules: &[Rule], family: Family) -> String {
    let state = NatState {
        chains: Chain::OURS.to_vec(),
        jumps: rules
            .iter()
            .filter(|r| r.applies_to(family) && r.chain.is_builtin())
            .map(|r| (r.chain, spec(r)))
            .collect(),
    };
    cleanup(&state).unwrap_or_default()
}
