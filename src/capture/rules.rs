//! The capture rules as data: one ordered list, laid out as istio-iptables
//! lays out its nat table, that the iptables and nft renderers print.
//!
//! Rules whose addresses belong to one family (`127.0.0.6/32` / `::6/128`,
//! the `-i`/`-x` CIDRs) are kept once per family, IPv4 first; the others
//! apply to both. `iptables` takes the IPv4 and family-free rules,
//! `ip6tables` the IPv6 and family-free ones, and nft's single `inet`
//! table all of them, in order.

use super::config::{
    CaptureConfig, Cidr, Family, InboundPorts, LOCALHOST_V4, LOCALHOST_V6, OWN_PORTS,
    OutboundRanges, PASSTHROUGH_V4, PASSTHROUGH_V6,
};

/// A chain of the nat table: the two built-in ones meshgate jumps from, and
/// Istio's four.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chain {
    /// Built in: packets arriving (inbound).
    Prerouting,
    /// Built in: packets sent by local processes (outbound).
    Output,
    /// `ISTIO_INBOUND`: which inbound ports are captured.
    Inbound,
    /// `ISTIO_REDIRECT`: to the outbound port (`-p`).
    Redirect,
    /// `ISTIO_IN_REDIRECT`: to the inbound capture port (`-z`).
    InRedirect,
    /// `ISTIO_OUTPUT`: which outbound connections are captured.
    IstioOutput,
}

impl Chain {
    /// meshgate's own chains, in the order they are declared.
    pub const OURS: [Chain; 4] = [
        Chain::Inbound,
        Chain::Redirect,
        Chain::InRedirect,
        Chain::IstioOutput,
    ];

    /// The iptables name.
    pub fn iptables(self) -> &'static str {
        match self {
            Chain::Prerouting => "PREROUTING",
            Chain::Output => "OUTPUT",
            Chain::Inbound => "ISTIO_INBOUND",
            Chain::Redirect => "ISTIO_REDIRECT",
            Chain::InRedirect => "ISTIO_IN_REDIRECT",
            Chain::IstioOutput => "ISTIO_OUTPUT",
        }
    }

    /// The nft name (Istio's nftables mode).
    pub fn nft(self) -> &'static str {
        match self {
            Chain::Prerouting => "prerouting",
            Chain::Output => "output",
            Chain::Inbound => "istio-inbound",
            Chain::Redirect => "istio-redirect",
            Chain::InRedirect => "istio-in-redirect",
            Chain::IstioOutput => "istio-output",
        }
    }

    /// Whether the chain is a built-in (base) chain.
    pub fn is_builtin(self) -> bool {
        matches!(self, Chain::Prerouting | Chain::Output)
    }
}

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// The name both iptables and nft use.
    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// An owner match on the sending socket (`-m owner`, nft `skuid`/`skgid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// Group id rather than user id.
    pub group: bool,
    /// The id.
    pub id: u32,
    /// Matches every other owner.
    pub negated: bool,
}

/// What a matching packet does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Leave the chain: not captured here.
    Return,
    /// Continue in one of meshgate's chains.
    Jump(Chain),
    /// NAT the destination to this local port.
    Redirect(u16),
}

/// One rule. Empty fields match everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The chain it is appended to.
    pub chain: Chain,
    /// Leaves through the loopback interface (`-o lo`).
    pub out_lo: bool,
    /// Source range (`-s`).
    pub source: Option<Cidr>,
    /// Destination range (`-d`), negated when the flag is set (`! -d`).
    pub dest: Option<(Cidr, bool)>,
    /// Protocol (`-p`).
    pub proto: Option<Proto>,
    /// Destination port (`--dport`; needs `proto`).
    pub dport: Option<u16>,
    /// Sending socket's owner.
    pub owner: Option<Owner>,
    /// The verdict.
    pub target: Target,
}

impl Rule {
    fn new(chain: Chain, target: Target) -> Rule {
        Rule {
            chain,
            out_lo: false,
            source: None,
            dest: None,
            proto: None,
            dport: None,
            owner: None,
            target,
        }
    }

    fn tcp(mut self) -> Rule {
        self.proto = Some(Proto::Tcp);
        self
    }

    fn port(mut self, proto: Proto, port: u16) -> Rule {
        self.proto = Some(proto);
        self.dport = Some(port);
        self
    }

    fn lo(mut self) -> Rule {
        self.out_lo = true;
        self
    }

    fn to(mut self, cidr: Cidr, negated: bool) -> Rule {
        self.dest = Some((cidr, negated));
        self
    }

    fn from(mut self, cidr: Cidr) -> Rule {
        self.source = Some(cidr);
        self
    }

    fn owned(mut self, owner: Owner) -> Rule {
        self.owner = Some(owner);
        self
    }

    /// The family the rule's addresses belong to; `None` for both.
    pub fn family(&self) -> Option<Family> {
        self.source
            .or(self.dest.map(|(c, _)| c))
            .map(|c| c.family())
    }

    /// Whether the rule belongs in the `family` table.
    pub fn applies_to(&self, family: Family) -> bool {
        self.family().is_none_or(|f| f == family)
    }
}

/// The rules for `cfg`, in Istio's order.
pub fn build(cfg: &CaptureConfig) -> Vec<Rule> {
    use Chain::*;
    let mut rules = Vec::new();
    let inbound = cfg.inbound_ports != InboundPorts::None;

    // meshgate's own ports are never captured (Istio: its tunnel port).
    for (port, _) in OWN_PORTS {
        rules.push(Rule::new(Inbound, Target::Return).port(Proto::Tcp, port));
    }
    rules.push(Rule::new(Redirect, Target::Redirect(cfg.proxy_port)).tcp());
    rules.push(Rule::new(InRedirect, Target::Redirect(cfg.inbound_capture_port)).tcp());

    match &cfg.inbound_ports {
        InboundPorts::None => {}
        InboundPorts::All => {
            rules.push(Rule::new(Prerouting, Target::Jump(Inbound)).tcp());
            for &port in &cfg.inbound_ports_exclude {
                if !OWN_PORTS.iter().any(|(own, _)| *own == port) {
                    rules.push(Rule::new(Inbound, Target::Return).port(Proto::Tcp, port));
                }
            }
            rules.push(Rule::new(Inbound, Target::Jump(InRedirect)).tcp());
        }
        InboundPorts::Only(ports) => {
            rules.push(Rule::new(Prerouting, Target::Jump(Inbound)).tcp());
            for &port in ports {
                rules.push(Rule::new(Inbound, Target::Jump(InRedirect)).port(Proto::Tcp, port));
            }
        }
    }

    rules.push(Rule::new(Output, Target::Jump(IstioOutput)));
    // Port exclusions come before everything else (Istio: "must be applied
    // before connections back to self are redirected").
    for &port in &cfg.outbound_ports_exclude {
        rules.push(Rule::new(IstioOutput, Target::Return).port(Proto::Tcp, port));
        rules.push(Rule::new(IstioOutput, Target::Return).port(Proto::Udp, port));
    }
    // meshgate's inbound passthrough connections to the app.
    for src in [PASSTHROUGH_V4, PASSTHROUGH_V6] {
        rules.push(Rule::new(IstioOutput, Target::Return).lo().from(src));
    }
    let owners = cfg
        .proxy_uids
        .iter()
        .map(|&id| (false, id))
        .chain(cfg.proxy_gids.iter().map(|&id| (true, id)));
    for (group, id) in owners {
        let is = Owner {
            group,
            id,
            negated: false,
        };
        let is_not = Owner {
            negated: true,
            ..is
        };
        // The proxy reaching an app of this pod through its own address (a
        // service VIP led there): through the inbound side, as a peer would.
        if inbound {
            for localhost in [LOCALHOST_V4, LOCALHOST_V6] {
                rules.push(
                    Rule::new(IstioOutput, Target::Jump(InRedirect))
                        .lo()
                        .to(localhost, true)
                        .owned(is),
                );
            }
        }
        // An app calling itself over lo is not captured…
        if !cfg.includes_loopback() {
            rules.push(Rule::new(IstioOutput, Target::Return).lo().owned(is_not));
        }
        // …nor is anything the proxy sends (no loops).
        rules.push(Rule::new(IstioOutput, Target::Return).owned(is));
    }
    for localhost in [LOCALHOST_V4, LOCALHOST_V6] {
        rules.push(Rule::new(IstioOutput, Target::Return).to(localhost, false));
    }
    for family in [Family::V4, Family::V6] {
        for &cidr in cfg
            .outbound_ranges_exclude
            .iter()
            .filter(|c| c.family() == family)
        {
            rules.push(Rule::new(IstioOutput, Target::Return).to(cidr, false));
        }
    }
    match &cfg.outbound_ranges {
        OutboundRanges::All => rules.push(Rule::new(IstioOutput, Target::Jump(Redirect))),
        OutboundRanges::Only(cidrs) => {
            for family in [Family::V4, Family::V6] {
                for &cidr in cidrs.iter().filter(|c| c.family() == family) {
                    rules.push(Rule::new(IstioOutput, Target::Jump(Redirect)).to(cidr, false));
                }
            }
        }
    }
    rules
}
