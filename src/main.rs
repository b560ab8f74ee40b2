//! The `meshgate` command: thin CLI over the library.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use meshgate::bootstrap::{Bootstrap, OutboundTrafficPolicy};

/// Exit status of `run` when the configuration does not load (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A TLS sidecar proxy for service meshes, configured with Istio's own resources",
    long_about = "meshgate sits beside a service and handles TLS for it. The app sends plain \
HTTP to its sidecar (127.0.0.1:15001, as an explicit proxy or with the Host header); meshgate \
recognises the host from a ServiceEntry, applies the DestinationRule's TLS settings \
(SIMPLE / MUTUAL, SNI, SANs, CA) and relays the request over verified TLS.\n\n\
Start with `meshgate demo`."
)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing filter
    /// such as `meshgate=debug` (RUST_LOG overrides it) [default: info; warn
    /// for the demo, so its own output stays readable].
    #[arg(long, global = true, env = "MESHGATE_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy on Istio YAML (ServiceEntry, DestinationRule, VirtualService, Secret).
    Run(Box<RunArgs>),
    /// Load and compile configuration, print every error; exit 1 if any.
    Validate(ConfigArgs),
    /// Run the built-in demo: TLS origination to a stand-in external HTTPS
    /// service, and mutual-TLS termination in front of a local service.
    Demo(DemoArgs),
    /// The mesh CA: create one, issue workload certificates.
    #[command(subcommand)]
    Ca(CaCommand),
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create a root (and optional intermediate) CA in Istio's plugin-CA
    /// layout: ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem.
    Init {
        /// Directory to create the CA in.
        #[arg(long)]
        dir: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Sign workloads with an intermediate under the root.
        #[arg(long)]
        intermediate: bool,
        /// Root validity, e.g. 3650d.
        #[arg(long, default_value = "3650d", value_parser = |s: &str| meshgate::plan::duration::parse(s))]
        validity: std::time::Duration,
    },
    /// Issue a workload certificate (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)
    /// into Istio's file-mounted layout: cert-chain.pem, key.pem, root-cert.pem.
    Issue {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Where to write the workload's files.
        #[arg(long)]
        out: PathBuf,
        /// Workload namespace.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// Workload service account.
        #[arg(long)]
        service_account: String,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Extra DNS names. Repeatable.
        #[arg(long)]
        dns: Vec<String>,
        /// Certificate lifetime (Istio's default is 24h).
        #[arg(long, default_value = "24h", value_parser = |s: &str| meshgate::plan::duration::parse(s))]
        validity: std::time::Duration,
    },
    /// Serve Istio's certificate-signing API (IstioCertificateService/
    /// CreateCertificate, gRPC over TLS) so sidecars get workload
    /// certificates; callers authenticate with a bearer token.
    Serve {
        /// The CA directory.
        #[arg(long)]
        dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:15012")]
        listen: SocketAddr,
        /// Token file: one `TOKEN NAMESPACE SERVICE-ACCOUNT` per line.
        #[arg(long)]
        tokens: PathBuf,
        /// SPIFFE trust domain.
        #[arg(long, default_value = "cluster.local")]
        trust_domain: String,
        /// Longest certificate lifetime handed out.
        #[arg(long, default_value = "24h", value_parser = |s: &str| meshgate::plan::duration::parse(s))]
        max_validity: std::time::Duration,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// Config files or directories (multi-document YAML). Repeatable.
    #[arg(long = "config", short = 'c', value_name = "PATH", required = true, num_args = 1..)]
    config: Vec<PathBuf>,
    /// Bootstrap file: MeshConfig-style `outboundTrafficPolicy.mode`, listen
    /// addresses, `secretsDir`, `namespace`. Flags override it.
    #[arg(long, value_name = "FILE")]
    bootstrap: Option<PathBuf>,
    /// Directory of Secrets as Kubernetes mounts them (`DIR/<name>/tls.crt`),
    /// for `credentialName`.
    #[arg(long, value_name = "DIR")]
    secrets_dir: Option<PathBuf>,
    /// Namespace the proxy runs in (where `credentialName` Secrets are looked up).
    #[arg(long)]
    namespace: Option<String>,
    /// What to do with hosts that no ServiceEntry declares (default ALLOW_ANY, as in Istio).
    #[arg(long, value_enum)]
    outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    /// This workload's mesh identity for ISTIO_MUTUAL, in Istio's
    /// file-mounted layout: cert-chain.pem, key.pem, root-cert.pem (e.g. from
    /// `meshgate ca issue`); rotated files are picked up.
    #[arg(long, value_name = "DIR")]
    identity_dir: Option<PathBuf>,
    /// SPIFFE trust domain of the mesh [default: cluster.local].
    #[arg(long)]
    trust_domain: Option<String>,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Outbound listener [default: 127.0.0.1:15001].
    #[arg(long)]
    outbound_addr: Option<SocketAddr>,
    /// Admin listener (/config_dump, /certs) [default: 127.0.0.1:15000].
    #[arg(long)]
    admin_addr: Option<SocketAddr>,
    /// Prometheus listener (/stats/prometheus) [default: 127.0.0.1:15020].
    #[arg(long)]
    stats_addr: Option<SocketAddr>,
    /// Readiness listener (/healthz/ready) [default: 127.0.0.1:15021].
    #[arg(long)]
    ready_addr: Option<SocketAddr>,
    /// IP that Gateway and Sidecar ingress listeners bind to when a server
    /// has no `bind` [default: 0.0.0.0].
    #[arg(long)]
    inbound_bind: Option<std::net::IpAddr>,
    /// Rebind a config port: `443=127.0.0.1:8443` serves the Gateway's port
    /// 443 on 127.0.0.1:8443 (a server with its own `bind` keeps that IP).
    /// Repeatable.
    #[arg(long, value_name = "PORT=ADDR", value_parser = parse_port_map)]
    port_map: Vec<(u16, SocketAddr)>,
    /// How often config, certificate and Secret files are checked for
    /// changes, e.g. `1s`; `0s` disables (reload with SIGHUP) [default: 1s].
    #[arg(long, value_parser = |s: &str| meshgate::plan::duration::parse(s))]
    watch_interval: Option<std::time::Duration>,
    /// Where the local app listens; with --identity-dir, the mesh inbound
    /// listener accepts mutual TLS from other workloads and forwards to it.
    #[arg(long)]
    app_addr: Option<SocketAddr>,
    /// The mesh inbound listener (PeerAuthentication applies) [default: 0.0.0.0:15006].
    #[arg(long)]
    mesh_inbound_addr: Option<SocketAddr>,
    /// Worker threads serving the proxy ports, each with its own socket per
    /// port (Istio's `concurrency`); 0: one per CPU [default: 2].
    #[arg(long, value_name = "N")]
    concurrency: Option<usize>,
    /// Get the workload certificate from this CA (Istio's signing API, e.g.
    /// `meshgate ca serve` or istiod) into --identity-dir, and renew it at
    /// half its lifetime.
    #[arg(long, requires_all = ["ca_root", "ca_token_file"])]
    ca_address: Option<SocketAddr>,
    /// Name on the CA's certificate.
    #[arg(long, default_value = "meshgate-ca")]
    ca_server_name: String,
    /// Root certificate(s) to verify the CA with (the mesh root).
    #[arg(long)]
    ca_root: Option<PathBuf>,
    /// File holding the bearer token for the CA.
    #[arg(long)]
    ca_token_file: Option<PathBuf>,
}

fn parse_port_map(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PORT=IP:PORT, e.g. 443=127.0.0.1:8443"))?;
    let port = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not IP:PORT"))?;
    Ok((port, addr))
}

#[derive(Args)]
struct DemoArgs {
    /// Outbound listener the demo's app uses.
    #[arg(long, default_value = "127.0.0.1:15001")]
    outbound_addr: SocketAddr,
    /// Where the demo Gateway's port 443 listens.
    #[arg(long, default_value = "127.0.0.1:15443")]
    ingress_addr: SocketAddr,
    /// Send the request, print the result and exit instead of staying up.
    #[arg(long)]
    once: bool,
}

fn bootstrap_from(args: &ConfigArgs) -> Result<Bootstrap, String> {
    let mut b = Bootstrap::default();
    if let Some(f) = &args.bootstrap {
        b.apply_file(f)?;
    }
    b.config_paths = args.config.clone();
    if args.secrets_dir.is_some() {
        b.secrets_dir = args.secrets_dir.clone();
    }
    if let Some(ns) = &args.namespace {
        b.namespace = ns.clone();
    }
    if let Some(p) = args.outbound_traffic_policy {
        b.outbound_traffic_policy = p;
    }
    if args.identity_dir.is_some() {
        b.identity_dir = args.identity_dir.clone();
    }
    if let Some(td) = &args.trust_domain {
        b.trust_domain = td.clone();
    }
    Ok(b)
}

fn init_logging(filter: &str, json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(filter))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal as _;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Demo(_)) {
        "warn"
    } else {
        "info"
    };
    init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_json,
    );
    // The proxy ports get their own worker threads (`--concurrency`); this
    // runtime runs the admin ports, file watching and renewal.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshgate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Validate(args) => validate(&args),
        Command::Run(args) => runtime.block_on(run(*args)),
        Command::Ca(cmd) => ca(cmd),
        Command::Demo(args) => runtime.block_on(async {
            match meshgate::demo::run(args.outbound_addr, args.ingress_addr, args.once).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn ca(cmd: CaCommand) -> ExitCode {
    use meshgate::ca::{MeshCa, spiffe_id};
    let result = match cmd {
        CaCommand::Init { dir, trust_domain, intermediate, validity } => {
            MeshCa::init(&dir, &trust_domain, intermediate, validity).map(|_| {
                println!(
                    "created a {} CA for trust domain {trust_domain} in {} (ca-cert.pem, ca-key.pem, cert-chain.pem, root-cert.pem)",
                    if intermediate { "root + intermediate" } else { "root" },
                    dir.display()
                );
            })
        }
        CaCommand::Serve { dir, listen, tokens, trust_domain, max_validity } => serve_ca(dir, listen, tokens, trust_domain, max_validity),
        CaCommand::Issue { dir, out, namespace, service_account, trust_domain, dns, validity } => {
            let id = spiffe_id(&trust_domain, &namespace, &service_account);
            MeshCa::load(&dir)
                .and_then(|ca| ca.issue(&id, &dns, validity))
                .and_then(|issued| issued.write(&out))
                .map(|()| println!("issued {id} into {} (cert-chain.pem, key.pem, root-cert.pem)", out.display()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("meshgate ca: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_ca(
    dir: PathBuf,
    listen: SocketAddr,
    tokens: PathBuf,
    trust_domain: String,
    max_validity: std::time::Duration,
) -> Result<(), String> {
    use meshgate::ca::{MeshCa, spiffe_id};
    let ca = MeshCa::load(&dir)?;
    let text =
        std::fs::read_to_string(&tokens).map_err(|e| format!("{}: {e}", tokens.display()))?;
    let mut map = std::collections::HashMap::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [token, ns, sa] = parts[..] else {
            return Err(format!(
                "{}:{}: expected `TOKEN NAMESPACE SERVICE-ACCOUNT`",
                tokens.display(),
                i + 1
            ));
        };
        map.insert(token.to_string(), spiffe_id(&trust_domain, ns, sa));
    }
    // The CA's own serving certificate, from itself.
    let own = ca.issue(
        &spiffe_id(&trust_domain, "istio-system", "meshgate-ca"),
        &["meshgate-ca".into(), "localhost".into()],
        max_validity.max(std::time::Duration::from_secs(86400)),
    )?;
    let provider = meshgate::creds::provider();
    let id = meshgate::creds::identity_from_pem(
        own.cert_chain_pem.as_bytes(),
        own.key_pem.as_bytes(),
        &provider,
        "CA server",
    )?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_cert_resolver(std::sync::Arc::new(rustls::sign::SingleCertAndKey::from(
            id.certified.as_ref().clone(),
        )));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let signer = std::sync::Arc::new(meshgate::ca::grpc::Signer {
        ca,
        tokens: map,
        max_validity,
    });
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        println!(
            "serving IstioCertificateService/CreateCertificate on {listen} (TLS name meshgate-ca)"
        );
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(meshgate::ca::grpc::serve(
            listener,
            tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config)),
            signer,
            stop.clone(),
        ));
        let _ = tokio::signal::ctrl_c().await;
        stop.cancel();
        let _ = task.await;
        Ok(())
    })
}

fn validate(args: &ConfigArgs) -> ExitCode {
    let bootstrap = match bootstrap_from(args) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // Documents that parse are compiled even if others do not: every
    // problem is reported in one run.
    let (config, parse_errors) = meshgate::config::load_partial(&bootstrap.config_paths);
    let mut errors: Vec<String> = parse_errors.0.iter().map(ToString::to_string).collect();
    match meshgate::load::check(&config, &bootstrap) {
        Ok(_) if !errors.is_empty() => {}
        Ok(loaded) => {
            let warnings: Vec<&String> = loaded
                .plan
                .warnings
                .iter()
                .chain(&loaded.creds.warnings)
                .collect();
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            let o = &loaded.plan.outbound;
            let servers: usize = loaded
                .plan
                .inbound
                .listeners
                .iter()
                .map(|l| l.servers.len())
                .sum();
            println!(
                "ok: {} ServiceEntry, {} DestinationRule, {} VirtualService (mesh), {} inbound listener(s) with {} server(s), {} Secret; {} warning(s); outbound policy {:?}",
                o.services.len(),
                o.rules.len(),
                o.routes.len(),
                loaded.plan.inbound.listeners.len(),
                servers,
                config.secrets.len(),
                warnings.len(),
                o.policy
            );
            return ExitCode::SUCCESS;
        }
        Err(errs) => errors.extend(errs.0),
    }
    for e in &errors {
        eprintln!("error: {e}");
    }
    eprintln!("{} error(s)", errors.len());
    ExitCode::from(1)
}

async fn run(args: RunArgs) -> ExitCode {
    let mut bootstrap = match bootstrap_from(&args.config) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    bootstrap.outbound_addr = args.outbound_addr.unwrap_or(bootstrap.outbound_addr);
    bootstrap.admin_addr = args.admin_addr.unwrap_or(bootstrap.admin_addr);
    bootstrap.stats_addr = args.stats_addr.unwrap_or(bootstrap.stats_addr);
    bootstrap.ready_addr = args.ready_addr.unwrap_or(bootstrap.ready_addr);
    bootstrap.inbound_bind = args.inbound_bind.unwrap_or(bootstrap.inbound_bind);
    bootstrap.port_map.extend(args.port_map);
    bootstrap.watch_interval = args.watch_interval.unwrap_or(bootstrap.watch_interval);
    bootstrap.concurrency = args.concurrency.unwrap_or(bootstrap.concurrency);
    if args.app_addr.is_some() {
        bootstrap.app_addr = args.app_addr;
    }
    bootstrap.mesh_inbound_addr = args
        .mesh_inbound_addr
        .unwrap_or(bootstrap.mesh_inbound_addr);
    let mut ca_client = None;
    if let Some(addr) = args.ca_address {
        let Some(dir) = bootstrap.identity_dir.clone() else {
            eprintln!(
                "meshgate: --ca-address needs --identity-dir (where the certificate is written)"
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        };
        let read = |p: &Option<PathBuf>| {
            p.as_ref()
                .map(|p| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display())))
                .unwrap_or_else(|| Err("missing".into()))
        };
        let client = match (read(&args.ca_root), read(&args.ca_token_file)) {
            (Ok(root_pem), Ok(token)) => meshgate::identity::CaClient {
                addr,
                server_name: args.ca_server_name.clone(),
                root_pem,
                token: token.trim().to_string(),
                validity: std::time::Duration::from_secs(86400),
            },
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("meshgate: {e}");
                return ExitCode::from(EXIT_BAD_CONFIG);
            }
        };
        match meshgate::identity::fetch_into(&client, &dir).await {
            Ok(next) => ca_client = Some((client, dir, next)),
            Err(e) => {
                eprintln!("meshgate: cannot get the workload certificate: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let loaded = match meshgate::load::load(&bootstrap) {
        Ok(l) => l,
        Err(errs) => {
            for e in &errs.0 {
                eprintln!("error: {e}");
            }
            eprintln!(
                "meshgate: configuration refused ({} error(s))",
                errs.0.len()
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let proxy = match meshgate::app::build(bootstrap, loaded).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let renewals = tokio_util::sync::CancellationToken::new();
    if let Some((client, dir, next)) = ca_client {
        tokio::spawn(meshgate::identity::renew(
            client,
            dir,
            next,
            proxy.reloads(),
            renewals.clone(),
        ));
    }
    wait_for_signals(&proxy).await;
    renewals.cancel();
    proxy.shutdown();
    // Open connections finish their current request (bounded).
    proxy.stopped().await;
    ExitCode::SUCCESS
}

/// Reloads on SIGHUP; returns on SIGINT or SIGTERM.
async fn wait_for_signals(proxy: &meshgate::app::Proxy) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut hup), Ok(mut term)) = (
        signal(SignalKind::hangup()),
        signal(SignalKind::terminate()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => proxy.reloads().trigger(meshgate::reload::Cause::Signal),
            _ = term.recv() => return,
            _ = tokio::signal::ctrl_c() => return,
        }
    }
}
