//! The `meshgate` command: the CLI over the library.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use meshgate::bootstrap::ConfigSource;
use meshgate::ca::cli::CaCommand;
use meshgate::capture::cli::IptablesArgs;
use meshgate::explain::cli::ExplainArgs;
use meshgate::flags::{ConfigFlags, RunFlags};

// The process's allocator: jemalloc with background purging, so memory a
// reload frees (the old configuration, the new one's transient parse) goes
// back to the system instead of staying resident.
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Hands every page jemalloc holds freed back to the system now, rather
/// than over the ten seconds of its background decay: registered with
/// [`meshgate::memory::set_release`], called when a load has ended.
#[cfg(not(target_env = "msvc"))]
#[allow(unsafe_code, reason = "jemalloc's control interface is a C call")]
fn purge_freed_pages() {
    // `arena.<MALLCTL_ARENAS_ALL>.purge` (4096: every arena) reads and
    // writes nothing.
    // SAFETY: the name is a NUL-terminated static string; the value
    // pointers are null with a zero length, which this control requires.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            c"arena.4096.purge".as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if status != 0 {
        tracing::debug!(status, "jemalloc purge failed");
    }
}

/// Exit status of `run` when the configuration does not load (EX_USAGE).
const EXIT_BAD_CONFIG: u8 = 64;

/// `--help`'s description, without the pointer to the demo.
macro_rules! long_about {
    () => {
        "meshgate sits beside a service and handles TLS for it. The app sends plain \
HTTP to its sidecar (127.0.0.1:15001, as an explicit proxy or with the Host header); meshgate \
recognises the host from a ServiceEntry, applies the DestinationRule's TLS settings \
(SIMPLE / MUTUAL, SNI, SANs, CA) and relays the request over verified TLS."
    };
}

/// `--help`'s description (the `demo` feature adds where to start).
#[cfg(feature = "demo")]
const LONG_ABOUT: &str = concat!(long_about!(), "\n\nStart with `meshgate demo`.");
#[cfg(not(feature = "demo"))]
const LONG_ABOUT: &str = long_about!();

#[derive(Parser)]
#[command(
    name = "meshgate",
    version,
    about = "A TLS sidecar proxy for service meshes, configured with Istio's own resources",
    long_about = LONG_ABOUT
)]
struct Cli {
    /// Log filter: error, warn, info, debug, trace, or a tracing filter
    /// such as `meshgate=debug` (RUST_LOG overrides it)
    #[cfg_attr(
        feature = "demo",
        doc = "[default: info; warn for the demo, so its own output stays readable]."
    )]
    #[cfg_attr(not(feature = "demo"), doc = "[default: info].")]
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
    Run(Box<RunFlags>),
    /// Load and check the configuration, print every error and warning; exit 1 if it would not be served (with --strict: on any error).
    Validate(ConfigFlags),
    /// What meshgate would do with a request, without sending it: the
    /// resources that match, the destination, the TLS, or why it is refused.
    /// Exit 0 if served, 1 if refused, 64 if the configuration does not load.
    Explain(ExplainArgs),
    /// Run the built-in demo: TLS origination to a stand-in external HTTPS
    /// service, and mutual-TLS termination in front of a local service.
    #[cfg(feature = "demo")]
    Demo(DemoArgs),
    /// The mesh CA: create one, issue workload certificates.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Install, print (--dry-run) or remove (--cleanup) the iptables or
    /// nftables rules that capture the pod's traffic, as istio-iptables.
    #[command(long_about = meshgate::capture::cli::LONG_ABOUT)]
    Iptables(IptablesArgs),
    /// Print Kubernetes manifests with meshgate added to their pods (the
    /// init container with the capture rules and the sidecar), as
    /// `istioctl kube-inject`.
    #[command(long_about = meshgate::inject::cli::LONG_ABOUT)]
    Inject(meshgate::inject::cli::InjectArgs),
}

#[cfg(feature = "demo")]
#[derive(clap::Args)]
struct DemoArgs {
    /// Outbound listener the demo's app uses.
    #[arg(long, default_value = "127.0.0.1:15001")]
    outbound_addr: std::net::SocketAddr,
    /// Where the demo Gateway's port 443 listens.
    #[arg(long, default_value = "127.0.0.1:15443")]
    ingress_addr: std::net::SocketAddr,
    /// Send the request, print the result and exit instead of staying up.
    #[arg(long)]
    once: bool,
    /// The same scenario with real traffic capture, as in a pod: a pod and
    /// a world network namespace, meshgate as uid 1337 with
    /// `interceptionMode: REDIRECT` and `meshgate iptables` rules, the app
    /// (curl, uid 1000) calling http://api.external.com/ with no proxy
    /// settings. Needs root, `ip`, iptables or nftables, `setpriv` and
    /// `curl`; everything it makes is removed when it ends.
    #[arg(long, conflicts_with_all = ["outbound_addr", "ingress_addr"])]
    transparent: bool,
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
    #[cfg(feature = "demo")]
    let demo = matches!(cli.command, Command::Demo(_));
    #[cfg(not(feature = "demo"))]
    let demo = false;
    let default_level = if demo { "warn" } else { "info" };
    init_logging(
        cli.log_level.as_deref().unwrap_or(default_level),
        cli.log_json,
    );
    #[cfg(not(target_env = "msvc"))]
    meshgate::memory::set_release(purge_freed_pages);
    // The proxy ports get their own worker threads (`--concurrency`); this
    // runtime runs the admin ports, reloads, file watching and renewal.
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
        Command::Validate(flags) => validate(&flags),
        Command::Explain(args) => meshgate::explain::cli::run(&args),
        Command::Run(flags) => runtime.block_on(run(*flags)),
        Command::Iptables(args) => meshgate::capture::cli::main(&args),
        Command::Inject(args) => meshgate::inject::cli::main(&args),
        Command::Ca(cmd) => match meshgate::ca::cli::run(cmd) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("meshgate ca: {e}");
                ExitCode::FAILURE
            }
        },
        #[cfg(feature = "demo")]
        Command::Demo(args) => runtime.block_on(async {
            let result = if args.transparent {
                meshgate::demo::transparent::run(args.once)
                    .await
                    .map_err(|e| e.to_string())
            } else {
                meshgate::demo::run(args.outbound_addr, args.ingress_addr, args.once)
                    .await
                    .map_err(|e| e.to_string())
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("meshgate demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }),
    }
}

fn validate(flags: &ConfigFlags) -> ExitCode {
    let bootstrap = match flags.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    // With --kube: one list of everything, checked as `run --kube` loads it.
    let report = match meshgate::source::once::read_once(&bootstrap) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::from(1);
        }
    };
    for w in &report.warnings {
        eprintln!("warning: {w}");
    }
    for e in report.errors.iter().chain(&report.isolated) {
        eprintln!("error: {e}");
    }
    if report.loaded.is_some() {
        println!("{}", report.summary());
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", report.summary());
        ExitCode::from(1)
    }
}

/// Why `--kube` cannot be used in a build without the `kubernetes` feature.
#[cfg(not(feature = "kubernetes"))]
const NO_KUBERNETES: &str = "this meshgate is built without the kubernetes feature: --kube (source: kubernetes) is not available";

/// Starts the proxy on the Kubernetes source: nothing is loaded before the
/// first complete sync (readiness says what it waits for).
#[cfg(feature = "kubernetes")]
async fn start_kube(
    bootstrap: meshgate::bootstrap::Bootstrap,
) -> Result<meshgate::app::Proxy, ExitCode> {
    let client = meshgate::source::kubernetes::client(&bootstrap)
        .await
        .map_err(|e| {
            eprintln!("meshgate: {e}");
            ExitCode::from(EXIT_BAD_CONFIG)
        })?;
    meshgate::app::build_kube(bootstrap, client)
        .await
        .map_err(|e| {
            eprintln!("meshgate: {e}");
            ExitCode::FAILURE
        })
}

#[cfg(not(feature = "kubernetes"))]
async fn start_kube(_: meshgate::bootstrap::Bootstrap) -> Result<meshgate::app::Proxy, ExitCode> {
    eprintln!("meshgate: {NO_KUBERNETES}");
    Err(ExitCode::from(EXIT_BAD_CONFIG))
}

async fn run(flags: RunFlags) -> ExitCode {
    let bootstrap = match flags.bootstrap() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    // The workload certificate comes first: the configuration may need it.
    let mut ca_client = None;
    if let (Some(addr), Some(root), Some(token)) =
        (flags.ca_address, &flags.ca_root, &flags.ca_token_file)
    {
        let Some(dir) = bootstrap.identity_dir.clone() else {
            eprintln!(
                "meshgate: --ca-address needs --identity-dir (where the certificate is written)"
            );
            return ExitCode::from(EXIT_BAD_CONFIG);
        };
        let client = match meshgate::identity::CaClient::from_files(
            addr,
            &flags.ca_server_name,
            root,
            token,
        ) {
            Ok(c) => c,
            Err(e) => {
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
    if bootstrap.source == ConfigSource::Kubernetes {
        let proxy = match start_kube(bootstrap).await {
            Ok(p) => p,
            Err(code) => return code,
        };
        return serve(proxy, ca_client).await;
    }
    let report = meshgate::load::validate(&bootstrap);
    let Some(loaded) = report.loaded else {
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        for e in &report.errors {
            eprintln!("error: {e}");
        }
        eprintln!(
            "meshgate: configuration refused ({} error(s))",
            report.errors.len()
        );
        return ExitCode::from(EXIT_BAD_CONFIG);
    };
    let proxy = match meshgate::app::build(bootstrap, loaded).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("meshgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    serve(proxy, ca_client).await
}

/// Serves until SIGTERM/SIGINT (SIGHUP reloads), renewing the workload
/// certificate when a CA is given, then drains.
async fn serve(
    proxy: meshgate::app::Proxy,
    ca_client: Option<(
        meshgate::identity::CaClient,
        std::path::PathBuf,
        std::time::Duration,
    )>,
) -> ExitCode {
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
    // Open connections finish (up to terminationDrainDuration).
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
