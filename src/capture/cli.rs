//! `meshgate iptables`: the flags (istio-iptables' names), choosing the
//! backend and the families, and applying, printing or removing the rules.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use super::config::{
    CaptureConfig, CidrList, Family, IdList, InboundPorts, InterceptionMode, OutboundRanges,
    PortList, parse_cidr_list, parse_id_list, parse_inbound_ports, parse_interception_mode,
    parse_outbound_ranges, parse_port, parse_port_list,
};
use super::exec::{self, ExecError};
use super::{iptables, nft, rules};

/// `meshgate iptables --help`'s description.
pub const LONG_ABOUT: &str = "Install the rules that send a pod's TCP traffic through meshgate, \
as Istio's istio-iptables does (same flags, chains ISTIO_INBOUND, ISTIO_IN_REDIRECT, \
ISTIO_OUTPUT and ISTIO_REDIRECT in the nat table; with nftables, Istio's inet table \
istio-proxy-nat). Outbound connections go to the proxy port (-p), inbound ones to the \
inbound capture port (-z); the proxy's own traffic (-u/-g), localhost, and meshgate's \
admin (15000), stats (15020) and readiness (15021) ports are never captured.

Run it as root (or with CAP_NET_ADMIN) in the pod's network namespace before the app \
starts. Applying again replaces the rules (one set stays); --cleanup removes them; \
--dry-run prints them and changes nothing. IPv6 gets the same rules (ip6tables, or the \
same inet table) when the kernel has IPv6.";

/// Which tool installs the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// iptables-restore / ip6tables-restore into the nat tables.
    Iptables,
    /// One `nft -f -` transaction into an inet table.
    #[value(alias = "nft")]
    Nftables,
}

/// Whether the IPv6 rules are installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Ipv6 {
    /// When the kernel has IPv6 (/proc/net/if_inet6) and, with iptables,
    /// ip6tables is installed.
    Auto,
    /// Always; an error when IPv6 or ip6tables is missing.
    True,
    /// Never: IPv6 traffic is not captured.
    False,
}

/// `meshgate iptables` flags.
#[derive(clap::Args, Debug)]
pub struct IptablesArgs {
    /// Port outbound TCP connections are redirected to (meshgate's outbound
    /// listener).
    #[arg(short = 'p', long = "proxy-port", visible_alias = "envoy-port", value_name = "PORT",
          default_value = "15001", value_parser = parse_port)]
    pub proxy_port: u16,
    /// Port inbound TCP connections are redirected to (meshgate's inbound
    /// capture listener).
    #[arg(short = 'z', long, value_name = "PORT", default_value = "15006", value_parser = parse_port)]
    pub inbound_capture_port: u16,
    /// User id(s) of the proxy, comma-separated: their traffic is never
    /// captured.
    #[arg(short = 'u', long, value_name = "UIDS", default_value = "1337", value_parser = parse_id_list)]
    pub proxy_uid: IdList,
    /// Group id(s) of the proxy, likewise [default: the -u ids].
    #[arg(short = 'g', long, value_name = "GIDS", value_parser = parse_id_list)]
    pub proxy_gid: Option<IdList>,
    /// How inbound connections are captured: REDIRECT (TPROXY is not
    /// supported).
    #[arg(short = 'm', long = "istio-inbound-interception-mode", value_name = "MODE",
          default_value = "REDIRECT", value_parser = parse_interception_mode)]
    pub interception_mode: InterceptionMode,
    /// Inbound ports captured, comma-separated; `*` for all; empty for none.
    #[arg(short = 'b', long = "istio-inbound-ports", value_name = "PORTS", default_value = "*",
          value_parser = parse_inbound_ports)]
    pub inbound_ports: InboundPorts,
    /// Inbound ports not captured, comma-separated (only with -b '*', as
    /// Istio). 15000, 15020 and 15021 are never captured.
    #[arg(short = 'd', long = "istio-local-exclude-ports", value_name = "PORTS",
          value_parser = parse_port_list)]
    pub inbound_ports_exclude: Option<PortList>,
    /// Outbound destination ports not captured, comma-separated.
    #[arg(short = 'o', long = "istio-local-outbound-ports-exclude", value_name = "PORTS",
          value_parser = parse_port_list)]
    pub outbound_ports_exclude: Option<PortList>,
    /// Outbound destinations captured: CIDRs, comma-separated, IPv4 and
    /// IPv6 mixed; `*` for all; empty for none.
    #[arg(short = 'i', long = "istio-service-cidr", value_name = "CIDRS", default_value = "*",
          value_parser = parse_outbound_ranges)]
    pub outbound_ranges: OutboundRanges,
    /// Outbound destinations never captured: CIDRs, comma-separated.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", value_name = "CIDRS",
          value_parser = parse_cidr_list)]
    pub outbound_ranges_exclude: Option<CidrList>,
    /// Print the rules (the input of iptables-restore or nft) and change
    /// nothing; needs no privileges.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Remove the rules instead: the jumps from PREROUTING and OUTPUT and
    /// the ISTIO_* chains (nftables: the istio-proxy-nat table). Succeeds
    /// when there is nothing to remove.
    #[arg(long, visible_alias = "cleanup-only")]
    pub cleanup: bool,
    /// Tool to install the rules with [default: iptables when the
    /// `iptables` command is installed, else nftables when `nft` is].
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// Install the IPv6 rules too: auto, true or false.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto")]
    pub ipv6: Ipv6,
}

impl IptablesArgs {
    /// The validated settings.
    pub fn config(&self) -> CaptureConfig {
        CaptureConfig {
            proxy_port: self.proxy_port,
            inbound_capture_port: self.inbound_capture_port,
            proxy_uids: self.proxy_uid.0.clone(),
            proxy_gids: self.proxy_gid.as_ref().unwrap_or(&self.proxy_uid).0.clone(),
            inbound_ports: self.inbound_ports.clone(),
            inbound_ports_exclude: self.inbound_ports_exclude.clone().unwrap_or_default().0,
            outbound_ports_exclude: self.outbound_ports_exclude.clone().unwrap_or_default().0,
            outbound_ranges: self.outbound_ranges.clone(),
            outbound_ranges_exclude: self.outbound_ranges_exclude.clone().unwrap_or_default().0,
        }
    }
}

/// Why `meshgate iptables` failed.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// Flags that do not go together.
    #[error("{0}")]
    Usage(String),
    /// Neither backend is installed.
    #[error(
        "neither `iptables` nor `nft` was found (PATH, /usr/sbin, /sbin, /usr/local/sbin): \
         install the iptables or the nftables package, or pass --backend"
    )]
    NoBackend,
    /// A tool the backend needs is missing.
    #[error(
        "`{0}` was not found (PATH, /usr/sbin, /sbin, /usr/local/sbin): install the {1} package"
    )]
    MissingTool(&'static str, &'static str),
    /// `--ipv6=true` without IPv6 in the kernel.
    #[error(
        "--ipv6=true, but the kernel has no IPv6 here ({} does not exist)",
        exec::IF_INET6
    )]
    NoIpv6,
    /// A tool failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// Writing the output failed.
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

impl CaptureError {
    fn exit_code(&self) -> u8 {
        match self {
            CaptureError::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the command; errors go to stderr, `meshgate iptables: …`.
pub fn main(args: &IptablesArgs) -> ExitCode {
    match run(args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate iptables: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn tool(name: &'static str, package: &'static str) -> Result<PathBuf, CaptureError> {
    exec::find_tool(name).ok_or(CaptureError::MissingTool(name, package))
}

fn save_restore(family: Family) -> (&'static str, &'static str) {
    match family {
        Family::V4 => ("iptables-save", "iptables-restore"),
        Family::V6 => ("ip6tables-save", "ip6tables-restore"),
    }
}

/// The backend: the one asked for, else iptables if installed, else nft.
fn backend(asked: Option<Backend>) -> Result<Backend, CaptureError> {
    match asked {
        Some(b) => Ok(b),
        None if exec::find_tool("iptables").is_some() => Ok(Backend::Iptables),
        None if exec::find_tool("nft").is_some() => Ok(Backend::Nftables),
        None => Err(CaptureError::NoBackend),
    }
}

/// Whether the IPv6 rules are installed.
fn ipv6(asked: Ipv6, backend: Backend) -> Result<bool, CaptureError> {
    let (save, restore) = save_restore(Family::V6);
    // The ip6tables tool that is missing, if one is.
    let missing = || match backend {
        Backend::Nftables => None,
        Backend::Iptables => [save, restore]
            .into_iter()
            .find(|t| exec::find_tool(t).is_none()),
    };
    match asked {
        Ipv6::False => Ok(false),
        Ipv6::Auto => Ok(exec::kernel_has_ipv6() && missing().is_none()),
        Ipv6::True if !exec::kernel_has_ipv6() => Err(CaptureError::NoIpv6),
        Ipv6::True => match missing() {
            Some(tool) => Err(CaptureError::MissingTool(tool, "iptables")),
            None => Ok(true),
        },
    }
}

/// Runs `meshgate iptables`, writing what it prints to `out`.
pub fn run(args: &IptablesArgs, out: &mut impl Write) -> Result<(), CaptureError> {
    let cfg = args.config();
    for w in cfg.check().map_err(CaptureError::Usage)? {
        eprintln!("meshgate iptables: warning: {w}");
    }
    let backend = backend(args.backend)?;
    let ipv6 = ipv6(args.ipv6, backend)?;
    let rules = rules::build(&cfg);
    let families: &[Family] = if ipv6 {
        &[Family::V4, Family::V6]
    } else {
        &[Family::V4]
    };
    let what = if args.cleanup { "removes" } else { "installs" };
    let fams = if ipv6 { "IPv4 and IPv6" } else { "IPv4 only" };

    match backend {
        Backend::Iptables if args.dry_run => {
            writeln!(
                out,
                "# meshgate iptables --dry-run: what it {what} with iptables ({fams}); nothing was changed"
            )?;
            for &family in families {
                let (_, restore) = save_restore(family);
                writeln!(out, "# {restore} --noflush")?;
                if args.cleanup {
                    writeln!(
                        out,
                        "# (every jump from PREROUTING and OUTPUT to these chains is deleted)"
                    )?;
                    write!(out, "{}", iptables::cleanup_of(&rules, family))?;
                } else {
                    write!(out, "{}", iptables::restore(&rules, family))?;
                }
            }
        }
        Backend::Iptables => {
            for &family in families {
                let (save, restore) = save_restore(family);
                let save = tool(save, "iptables")?;
                let restore = tool(restore, "iptables")?;
                let now = iptables::NatState::parse(&exec::run(&save, &["-t", "nat"], None)?);
                let input = if args.cleanup {
                    iptables::cleanup(&now)
                } else {
                    Some(iptables::apply(&rules, family, &now))
                };
                let name = iptables::command(family);
                match input {
                    Some(input) => {
                        exec::run(&restore, &["--noflush", "--wait"], Some(&input))?;
                        let done = if args.cleanup { "removed" } else { "applied" };
                        writeln!(out, "{name}: capture rules {done}")?;
                    }
                    None => writeln!(out, "{name}: no capture rules to remove")?,
                }
            }
        }
        Backend::Nftables => {
            let script = if args.cleanup {
                nft::cleanup()
            } else {
                nft::apply(&rules, ipv6)
            };
            if args.dry_run {
                writeln!(
                    out,
                    "# meshgate iptables --dry-run: what it {what} with nftables ({fams}); nothing was changed"
                )?;
                writeln!(out, "# nft -f -")?;
                write!(out, "{script}")?;
            } else {
                exec::run(&tool("nft", "nftables")?, &["-f", "-"], Some(&script))?;
                let done = if args.cleanup { "removed" } else { "applied" };
                writeln!(out, "nft: capture rules {done} (table inet {})", nft::TABLE)?;
            }
        }
    }
    Ok(())
}
