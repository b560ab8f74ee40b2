//! `meshgate explain`: the arguments, the load, the output and the exit
//! status (0 served, 1 refused, 2 bad arguments, 64 configuration that
//! does not load).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::client_cert::ClientChain;
use super::inbound;
use super::model::Explanation;
use super::outbound;
use super::request::{self, InboundRequest, OutboundRequest};
use super::text;
use crate::flags::ConfigFlags;

/// Exit status when the request would be refused.
pub const EXIT_REFUSED: u8 = 1;
/// Exit status for arguments that cannot be used (as clap's own).
pub const EXIT_USAGE: u8 = 2;
/// Exit status when the configuration does not load (EX_USAGE, as `run`).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// `meshgate explain`.
#[derive(Args, Debug, Clone)]
#[command(subcommand_precedence_over_arg = true)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Print one JSON object (camelCase fields) instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub what: ExplainWhat,
}

/// Which way the request goes.
#[derive(Subcommand, Debug, Clone)]
pub enum ExplainWhat {
    /// A request from the local app through the outbound listener.
    Outbound(OutboundArgs),
    /// A connection (and request) arriving on a Gateway server or Sidecar
    /// ingress port.
    Inbound(InboundArgs),
}

/// `explain outbound`.
#[derive(Args, Debug, Clone)]
pub struct OutboundArgs {
    /// `http://host[:port][/path]` (plain HTTP from the app),
    /// `https://host[:port][/path]` (the app speaks TLS itself through a
    /// CONNECT tunnel, as `curl -x` does) or `host:port` (a CONNECT tunnel).
    #[arg(value_name = "URL|HOST:PORT", value_parser = request::parse_target)]
    pub target: OutboundRequest,
    /// Method (HTTP).
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `name: value` (HTTP). Repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
}

/// `explain inbound`.
#[derive(Args, Debug, Clone)]
pub struct InboundArgs {
    /// Listener port, as in the config (before any --port-map).
    #[arg(long)]
    pub port: u16,
    /// Bind IP of the listener, when servers on the port bind several.
    #[arg(long)]
    pub bind: Option<String>,
    /// SNI the client sends (none if absent).
    #[arg(long)]
    pub sni: Option<String>,
    /// The client speaks plain text, not TLS, to a TLS port.
    #[arg(long)]
    pub plaintext: bool,
    /// Host (or `:authority`), `host[:port]` [default: the SNI].
    #[arg(long)]
    pub host: Option<String>,
    /// Path and query.
    #[arg(long, default_value = "/")]
    pub path: String,
    /// Method.
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `name: value`. Repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Client certificate chain (PEM, leaf first) the client presents:
    /// checked against the server's client CA and allow-lists.
    #[arg(long, value_name = "FILE")]
    pub client_cert: Option<PathBuf>,
    /// The client's address, for AuthorizationPolicy ipBlocks and
    /// source.ip.
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    pub source_ip: std::net::IpAddr,
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?}: expected NAME: VALUE"))?;
    let name = name.trim().to_ascii_lowercase();
    http::HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("{name:?} is not a header name"))?;
    let value = value.trim().to_string();
    http::HeaderValue::from_str(&value).map_err(|_| format!("{value:?} is not a header value"))?;
    Ok((name, value))
}

/// Runs `meshgate explain`.
pub fn run(args: &ExplainArgs) -> ExitCode {
    let bootstrap = match args.config.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // The load `run` and `validate` use: what is explained is what is
    // served (in strict mode or not, as the flags say).
    let report = match crate::source::once::read_once(&bootstrap) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in report.errors.iter().chain(&report.isolated) {
        eprintln!("error: {e}");
    }
    let Some(loaded) = report.loaded else {
        eprintln!("{} error(s)", report.errors.len());
        if args.json {
            let v = serde_json::json!({ "configErrors": report.errors });
            println!("{v}");
        }
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let ex = match &args.what {
        ExplainWhat::Outbound(o) => {
            let mut req = o.target.clone();
            if req.kind == super::model::RequestKind::Http {
                req.method.clone_from(&o.method);
                req.headers.clone_from(&o.headers);
            }
            outbound::explain(&loaded, &bootstrap, &req)
        }
        ExplainWhat::Inbound(i) => {
            let client = match i.client_cert.as_deref().map(ClientChain::load).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: --client-cert {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            };
            let req = InboundRequest {
                port: i.port,
                bind: i.bind.clone(),
                sni: i.sni.clone(),
                plaintext: i.plaintext,
                host: i.host.clone(),
                path: i.path.clone(),
                method: i.method.clone(),
                headers: i.headers.clone(),
                client_cert: i.client_cert.clone(),
                source_ip: Some(i.source_ip),
            };
            inbound::explain(&loaded, &bootstrap, &req, client.as_ref())
        }
    };
    print(&ex, args.json);
    if ex.served {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_REFUSED)
    }
}

fn print(ex: &Explanation, json: bool) {
    if json {
        match serde_json::to_string_pretty(ex) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: {e}"),
        }
    } else {
        print!("{}", text::render(ex));
    }
}
