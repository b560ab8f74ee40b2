//! `meshgate demo --transparent`: the seed scenario with real traffic
//! capture, as meshgate runs beside an app in a Kubernetes pod.
//!
//! Two network namespaces joined by a veth pair: "pod", where meshgate runs
//! as uid 1337 under `interceptionMode: REDIRECT` with the rules of
//! `meshgate iptables`, and where the app (curl, uid 1000, no proxy
//! settings) calls `http://api.external.com/`; and "world", which holds the
//! address `api.external.com` resolves to in the pod and the stand-in HTTPS
//! service listening there. Istio's rules let traffic through `lo` pass
//! uncaptured, so the external service must be behind a real interface.
//!
//! ```text
//!  pod  meshgate-demo-<pid>-pod              world  meshgate-demo-<pid>-world
//!  eth0 10.99.0.2/24 ──────────────────────── pod0 10.99.0.1/24
//!  default via 10.99.0.1                      lo   10.99.1.1/32  (api.external.com:443)
//!  /etc/hosts: 10.99.1.1 api.external.com     (/etc/netns/<pod>/hosts)
//! ```
//!
//! Everything made here (namespaces, their /etc/netns directories, the
//! processes in them, the demo's directory) is removed when the demo ends:
//! after `--once`, at Ctrl-C or SIGTERM, and on errors, by guards dropped in
//! order. Namespaces left by a demo that was killed (SIGKILL) are removed,
//! with what still runs in them, by the next one.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rustix::thread::LinkNameSpaceType;

use crate::bootstrap::Bootstrap;
use crate::capture::exec::find_tool;
use crate::devpki::{DevCa, LeafSpec};
use crate::load::LoadErrors;
use crate::plan::Decision;
use crate::standin::{Seen, StandIn, StandInConfig, StandInError};

/// The transparent demo's egress resources, with `${CA_FILE}`.
pub const TRANSPARENT_YAML: &str = include_str!("../../examples/demo/egress-transparent.yaml.tmpl");

/// The external host of the seed scenario.
const HOST: &str = "api.external.com";
/// Namespace and directory names: `meshgate-demo-<pid>-pod` / `-world`.
const PREFIX: &str = "meshgate-demo-";
/// The pod's address (eth0).
const POD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 2);
/// The world's side of the veth: the pod's default gateway.
const WORLD_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The address `api.external.com` resolves to in the pod, held by world.
const EXTERNAL_IP: Ipv4Addr = Ipv4Addr::new(10, 99, 1, 1);
/// meshgate's uid and gid (Istio's 1337), never captured.
const PROXY_UID: u32 = 1337;
/// The app's uid and gid.
const APP_UID: u32 = 1000;
/// meshgate's readiness endpoint inside the pod (its default).
const READY: SocketAddr = SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 15021);
/// How long meshgate may take to become ready.
const READY_LIMIT: Duration = Duration::from_secs(20);
/// The proxy variables the app must not have: it knows nothing of meshgate.
const PROXY_VARS: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// Why the transparent demo stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransparentError {
    /// The machine cannot run it (not root, a tool missing, namespaces not
    /// allowed): what is missing and how to get it, on one line.
    #[error("{0}")]
    Unavailable(String),
    /// A command that sets up the namespaces failed.
    #[error("{0}")]
    Setup(String),
    /// A file or directory cannot be written.
    #[error("{}: {source}", path.display())]
    Write {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The stand-in external service cannot start.
    #[error(transparent)]
    StandIn(#[from] StandInError),
    /// The demo configuration does not load.
    #[error(transparent)]
    Load(#[from] LoadErrors),
    /// The demo configuration does not route `api.external.com:80`.
    #[error("the demo configuration does not register api.external.com:80")]
    NotRegistered,
    /// meshgate did not become ready, or stopped.
    #[error("meshgate {0}")]
    Meshgate(String),
    /// The app's request did not get a 200 through the capture.
    #[error("the app's request failed: {0}")]
    App(String),
}

/// Wraps an OS error about writing `path`.
fn write_error(path: &Path) -> impl FnOnce(io::Error) -> TransparentError + '_ {
    move |source| TransparentError::Write {
        path: path.to_path_buf(),
        source,
    }
}

/// The tools the demo runs, found in PATH or the sbin directories.
struct Tools {
    ip: PathBuf,
    setpriv: PathBuf,
    curl: PathBuf,
    /// `iptables` or `nft`, the one `meshgate iptables` picks.
    backend: &'static str,
}

impl Tools {
    /// The tools, or what is missing and how to get it.
    fn find() -> Result<Tools, TransparentError> {
        let root = rustix::process::geteuid().is_root();
        let has = |t: &str| find_tool(t).is_some();
        if let Some(why) = unmet(root, &has) {
            return Err(TransparentError::Unavailable(why));
        }
        let found = |t: &str| find_tool(t).unwrap_or_else(|| PathBuf::from(t));
        Ok(Tools {
            ip: found("ip"),
            setpriv: found("setpriv"),
            curl: found("curl"),
            backend: if has("iptables") { "iptables" } else { "nft" },
        })
    }
}

/// What the machine lacks to run the demo and how to get it, on one line
/// (`None`: nothing). `root`: running as root; `has`: whether a tool is
/// installed.
fn unmet(root: bool, has: &dyn Fn(&str) -> bool) -> Option<String> {
    let mut missing = Vec::new();
    let mut packages = Vec::new();
    if !root {
        missing.push("root");
    }
    if !has("iptables") && !has("nft") {
        missing.push("iptables or nftables");
        packages.push("iptables");
    }
    for (tool, what, package) in [
        ("ip", "`ip` (iproute2)", "iproute2"),
        ("setpriv", "`setpriv` (util-linux)", "util-linux"),
        ("curl", "`curl`", "curl"),
    ] {
        if !has(tool) {
            missing.push(what);
            packages.push(package);
        }
    }
    if missing.is_empty() {
        return None;
    }
    let mut how = Vec::new();
    if !packages.is_empty() {
        let p = packages.join(" ");
        how.push(format!("install {p} (apt-get install {p})"));
    }
    if !root {
        how.push("run as root (sudo meshgate demo --transparent)".to_string());
    }
    Some(format!(
        "--transparent needs {}: {}; plain `meshgate demo` needs none of this",
        and_list(&missing),
        how.join(", then ")
    ))
}

/// `a`, `a and b`, `a, b and c`.
fn and_list(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// Runs the demo. With `once`, exits after the app's request; otherwise
/// stays up, printing the access log, until Ctrl-C (or SIGTERM, SIGHUP).
/// Whatever it made is removed on every way out.
pub async fn run(once: bool) -> Result<(), TransparentError> {
    let tools = Tools::find()?;
    // Caught from here on, so an interrupt during setup cleans up too.
    let signals = Signals::new();
    tokio::select! {
        biased;
        name = signals.recv() => {
            // Dropping `demo` ran its guards: meshgate stopped, namespaces
            // and the directory removed.
            println!("\n{name}: meshgate stopped, namespaces and files removed");
            Ok(())
        }
        r = demo(&tools, once) => r,
    }
}

/// The signals that end the demo: SIGINT (Ctrl-C), SIGTERM, SIGHUP.
struct Signals {
    int: Option<tokio::signal::unix::Signal>,
    term: Option<tokio::signal::unix::Signal>,
    hup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    /// Catches them from now on.
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            int: signal(SignalKind::interrupt()).ok(),
            term: signal(SignalKind::terminate()).ok(),
            hup: signal(SignalKind::hangup()).ok(),
        }
    }

    /// Waits for the first of them; what it means.
    async fn recv(mut self) -> &'static str {
        async fn one(s: &mut Option<tokio::signal::unix::Signal>) {
            match s {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = one(&mut self.int) => "interrupted",
            _ = one(&mut self.term) => "terminated",
            _ = one(&mut self.hup) => "hung up",
        }
    }
}

async fn demo(tools: &Tools, once: bool) -> Result<(), TransparentError> {
    let pid = std::process::id();
    // Guards, dropped in reverse order: meshgate stops, then the stand-in,
    // the directory and last the namespaces.
    let ns = Namespaces::create(tools, pid)?;
    let dir = DemoDir::create(pid)?;

    let ca = DevCa::new("meshgate demo CA");
    let ca_file = dir.write("ca.crt", &ca.cert_pem)?;
    let leaf = ca.issue(&LeafSpec::server(&[HOST]));
    let listener = in_netns(&ns.world, || {
        let l = std::net::TcpListener::bind((EXTERNAL_IP, 443))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })
    .and_then(tokio::net::TcpListener::from_std)
    .map_err(|e| {
        TransparentError::Setup(format!(
            "cannot listen on {EXTERNAL_IP}:443 in {}: {e}",
            ns.world
        ))
    })?;
    let external =
        StandIn::start_on(listener, StandInConfig::new(&leaf.cert_pem, &leaf.key_pem)).await?;

    let yaml = TRANSPARENT_YAML.replace("${CA_FILE}", &ca_file.display().to_string());
    let config_file = dir.write("egress.yaml", &yaml)?;
    let bootstrap_file = dir.write(
        "bootstrap.yaml",
        "# meshgate demo --transparent: the app's traffic is captured by NAT REDIRECT\n\
         interceptionMode: REDIRECT\n\
         concurrency: 1\n",
    )?;
    // What meshgate will decide, for the printout (and a configuration
    // error reported before anything starts).
    let loaded = crate::load::load(&Bootstrap {
        config_paths: vec![config_file.clone()],
        ..Bootstrap::ephemeral()
    })?;
    let Decision::Registered(target) = loaded.plan.outbound.route(HOST, 80, 0) else {
        return Err(TransparentError::NotRegistered);
    };

    let exe = proxy_exe(tools, &dir)?;
    let log_file = dir.path.join("meshgate.log");
    let mut meshgate = Meshgate::start(tools, &ns, &exe, &config_file, &bootstrap_file, &log_file)?;
    meshgate.wait_ready(&ns).await?;
    ns.pod_exec(&exe, &["iptables"]).map_err(|e| {
        TransparentError::Setup(format!(
            "applying the capture rules (meshgate iptables): {e}"
        ))
    })?;

    println!("meshgate demo --transparent: the seed scenario with traffic capture\n");
    println!(
        "  namespaces        pod {} ({POD_IP}) ── veth ── world {} ({WORLD_IP})",
        ns.pod, ns.world
    );
    println!(
        "  external service  https://{HOST} (stand-in on {EXTERNAL_IP}:443 in world, cert from a fresh dev CA);"
    );
    println!(
        "                    {HOST} is {EXTERNAL_IP} in the pod (/etc/netns/{}/hosts)",
        ns.pod
    );
    println!(
        "  config            {} (ServiceEntry resolution DNS, DestinationRule SIMPLE)",
        config_file.display()
    );
    println!(
        "  bootstrap         {} (interceptionMode: REDIRECT)",
        bootstrap_file.display()
    );
    println!(
        "  meshgate          {} as uid {PROXY_UID} in the pod, ready on {READY} · log {}",
        exe.display(),
        log_file.display()
    );
    println!(
        "  capture rules     meshgate iptables ({}): the pod's TCP connections → 127.0.0.1:15001, except uid {PROXY_UID}'s\n",
        tools.backend
    );

    let url = format!("http://{HOST}/");
    println!(
        "app (uid {APP_UID} in the pod, no proxy settings) → curl -sS {url}   (plain HTTP to port 80)"
    );
    let start = Instant::now();
    let (status, body) = app_request(tools, &ns, &url).await?;
    let latency = start.elapsed();
    if status != 200 {
        return Err(TransparentError::App(format!(
            "{status} {}\n{}",
            body.trim(),
            meshgate.log()
        )));
    }
    let Some(seen) = external.last() else {
        return Err(TransparentError::App(format!(
            "the external service saw no TLS connection\n{}",
            meshgate.log()
        )));
    };
    println!(
        "  ← {status} in {:.1} ms, captured by meshgate and relayed over TLS:",
        latency.as_secs_f64() * 1000.0
    );
    print_seen(&seen);
    println!(
        "     verified name   {} (chain checked by meshgate against {})",
        target.verify_names().join(", "),
        ca_file.display()
    );
    println!(
        "     via             {} → {}",
        target.service.resource,
        target.rule.as_deref().unwrap_or("-")
    );
    println!("     body            {}", body.trim());
    let mut log = LogTail::new(&log_file);
    let lines = log.wait_for_capture(Duration::from_secs(5)).await;
    for (i, line) in lines.iter().enumerate() {
        let label = if i == 0 { "access log" } else { "" };
        println!("  {label:<18}{line}");
    }
    println!();
    if once {
        return Ok(());
    }
    println!("try it yourself (Ctrl-C to stop and remove the namespaces):");
    println!(
        "  sudo ip netns exec {} setpriv --reuid={APP_UID} --regid={APP_UID} --clear-groups curl http://{HOST}/",
        ns.pod
    );
    match tools.backend {
        "iptables" => println!(
            "  sudo ip netns exec {} iptables-save -t nat              # the capture rules",
            ns.pod
        ),
        _ => println!(
            "  sudo ip netns exec {} nft list table inet istio-proxy-nat   # the capture rules",
            ns.pod
        ),
    }
    println!(
        "  sudo ip netns exec {} curl -sS http://127.0.0.1:15020/stats/prometheus | grep meshgate_captured",
        ns.pod
    );
    println!("access log of the app's requests and captured connections, as they end:");
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for line in log.new_lines() {
            println!("  {line}");
        }
        if let Some(status) = meshgate.exited() {
            return Err(TransparentError::Meshgate(format!(
                "exited ({status}):\n{}",
                meshgate.log()
            )));
        }
    }
}

/// What the external service saw, as the plain demo prints it.
fn print_seen(seen: &Seen) {
    println!("     TLS version     {}", seen.version);
    println!("     cipher suite    {}", seen.cipher);
    println!("     key exchange    {}", seen.group);
    println!(
        "     SNI             {}",
        seen.sni.as_deref().unwrap_or("(none)")
    );
}

/// The app's request: curl as [`APP_UID`] in the pod with no proxy
/// variables. Its status (0: no response) and body.
async fn app_request(
    tools: &Tools,
    ns: &Namespaces,
    url: &str,
) -> Result<(u16, String), TransparentError> {
    let mut c = ns.pod_command(tools, APP_UID, &tools.curl);
    c.args(["-sS", "--max-time", "10", "-w", "\n%{http_code}", url]);
    for v in PROXY_VARS {
        c.env_remove(v);
    }
    let out = tokio::task::spawn_blocking(move || c.output())
        .await
        .map_err(|e| TransparentError::App(e.to_string()))?
        .map_err(|e| TransparentError::App(format!("cannot run curl: {e}")))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let (body, code) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
    let status = code.trim().parse().unwrap_or(0);
    if status == 0 {
        return Err(TransparentError::App(format!(
            "curl: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok((status, body.to_string()))
}

/// The meshgate binary uid [`PROXY_UID`] runs: this one, or a link to it
/// (a copy on another file system) in the demo's directory when that uid
/// cannot run it where it is (under a home directory closed to others).
fn proxy_exe(tools: &Tools, dir: &DemoDir) -> Result<PathBuf, TransparentError> {
    let exe = std::env::current_exe()
        .map_err(|e| TransparentError::Setup(format!("cannot find the meshgate binary: {e}")))?;
    if runs_as_proxy(tools, &exe) {
        return Ok(exe);
    }
    let copy = dir.path.join("meshgate");
    if fs::hard_link(&exe, &copy).is_ok() && runs_as_proxy(tools, &copy) {
        return Ok(copy);
    }
    let _ = fs::remove_file(&copy);
    fs::copy(&exe, &copy).map_err(write_error(&copy))?;
    set_mode(&copy, 0o755)?;
    Ok(copy)
}

/// Whether uid [`PROXY_UID`] can run `exe`.
fn runs_as_proxy(tools: &Tools, exe: &Path) -> bool {
    Command::new(&tools.setpriv)
        .args(as_user(PROXY_UID))
        .arg(exe)
        .arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// `setpriv`'s arguments to run the rest as `uid` (gid `uid`, no
/// supplementary groups).
fn as_user(uid: u32) -> [String; 4] {
    [
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".into(),
        "--".into(),
    ]
}

fn set_mode(path: &Path, mode: u32) -> Result<(), TransparentError> {
    use std::os::unix::fs::PermissionsExt as _;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).map_err(write_error(path))
}

/// The pod and world namespaces, the veth between them and the pod's
/// /etc/netns files; removed on drop, with any process still in them.
struct Namespaces {
    ip: PathBuf,
    pod: String,
    world: String,
}

impl Namespaces {
    fn create(tools: &Tools, pid: u32) -> Result<Namespaces, TransparentError> {
        remove_stale(&tools.ip);
        // The guard exists before the first namespace: whatever step fails,
        // what was made is removed.
        let ns = Namespaces {
            ip: tools.ip.clone(),
            pod: format!("{PREFIX}{pid}-pod"),
            world: format!("{PREFIX}{pid}-world"),
        };
        if let Err(e) = ns.ip(&["netns", "add", &ns.pod]) {
            return Err(TransparentError::Unavailable(format!(
                "--transparent cannot create a network namespace ({e}): run it as root on the \
                 host or in a privileged container, or run `meshgate demo` without it"
            )));
        }
        ns.ip(&["netns", "add", &ns.world])?;
        let etc = ns.etc_dir();
        fs::create_dir_all(&etc).map_err(write_error(&etc))?;
        let hosts = etc.join("hosts");
        fs::write(
            &hosts,
            format!(
                "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{EXTERNAL_IP} {HOST}\n"
            ),
        )
        .map_err(write_error(&hosts))?;
        // No name server: a name the hosts file lacks fails at once.
        let resolv = etc.join("resolv.conf");
        fs::write(
            &resolv,
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .map_err(write_error(&resolv))?;
        for f in [&etc, &hosts, &resolv] {
            set_mode(f, if f.is_dir() { 0o755 } else { 0o644 })?;
        }
        ns.ip(&[
            "link", "add", "eth0", "netns", &ns.pod, "type", "veth", "peer", "name", "pod0",
            "netns", &ns.world,
        ])?;
        ns.batch(
            &ns.pod,
            &[
                "link set lo up".into(),
                "link set eth0 up".into(),
                format!("addr add {POD_IP}/24 dev eth0"),
                format!("route add default via {WORLD_IP}"),
            ],
        )?;
        ns.batch(
            &ns.world,
            &[
                "link set lo up".into(),
                "link set pod0 up".into(),
                format!("addr add {WORLD_IP}/24 dev pod0"),
                format!("addr add {EXTERNAL_IP}/32 dev lo"),
            ],
        )?;
        Ok(ns)
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.pod)
    }

    /// `ip args…`; `Err` names the command and its stderr.
    fn ip(&self, args: &[&str]) -> Result<(), TransparentError> {
        let out = Command::new(&self.ip)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TransparentError::Setup(format!("cannot run ip: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(TransparentError::Setup(format!(
                "`ip {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    }

    /// `ip -n <ns> -batch -` on `lines`.
    fn batch(&self, ns: &str, lines: &[String]) -> Result<(), TransparentError> {
        let script = lines.join("\n") + "\n";
        let failed = |why: String| {
            TransparentError::Setup(format!("`ip -n {ns} -batch -` failed on:\n{script}{why}"))
        };
        let mut child = Command::new(&self.ip)
            .args(["-n", ns, "-batch", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| failed(e.to_string()))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(script.as_bytes())
                .map_err(|e| failed(e.to_string()))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(String::from_utf8_lossy(&out.stderr).trim().into()))
        }
    }

    /// `ip netns exec <pod> [setpriv as uid --] program`: what it runs sees
    /// the pod's /etc/hosts and /etc/resolv.conf.
    fn pod_command(&self, tools: &Tools, uid: u32, program: &Path) -> Command {
        let mut c = Command::new(&self.ip);
        c.args(["netns", "exec", &self.pod]);
        if uid != 0 {
            c.arg(&tools.setpriv).args(as_user(uid));
        }
        c.arg(program).stdin(Stdio::null());
        c
    }

    /// Runs `program args` as root in the pod; its stdout, or its stderr
    /// as the error.
    fn pod_exec(&self, program: &Path, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.ip)
            .args(["netns", "exec", &self.pod])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in [&self.pod, &self.world] {
            remove(&self.ip, name);
        }
    }
}

/// Kills what runs in namespace `name`, deletes it and its /etc/netns
/// directory; what does not exist is skipped.
fn remove(ip: &Path, name: &str) {
    if Path::new("/run/netns").join(name).exists() {
        // `ip netns del` only unmounts the name: a process left inside
        // would keep the namespace, and itself, alive.
        if let Ok(out) = Command::new(ip)
            .args(["netns", "pids", name])
            .stdin(Stdio::null())
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Some(pid) = pid.parse().ok().and_then(rustix::process::Pid::from_raw) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                }
            }
        }
        let _ = Command::new(ip)
            .args(["netns", "del", name])
            .stdin(Stdio::null())
            .output();
    }
    let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// Removes the namespaces of demos that no longer run (killed before they
/// could clean up).
fn remove_stale(ip: &Path) {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = stale_pid(&name) else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            remove(ip, &name);
        }
    }
}

/// The demo process id in a namespace name this demo makes.
fn stale_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, side) = rest.split_once('-')?;
    matches!(side, "pod" | "world")
        .then(|| pid.parse().ok())
        .flatten()
}

/// Runs `f` on a new thread that has entered namespace `name`; sockets it
/// creates stay in that namespace. A fresh thread each time: a thread's
/// namespace is its own, and pool threads are shared.
fn in_netns<T, F>(name: &str, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    let path = Path::new("/run/netns").join(name);
    std::thread::spawn(move || {
        let file = fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(io::Error::other(
            "the thread entering the namespace panicked",
        ))
    })
}

/// The demo's files (the dev CA certificate, the configuration, the
/// bootstrap, meshgate's log), readable by uid 1337; removed on drop. In
/// /tmp rather than TMPDIR, which may be private to the user who ran sudo.
/// No private key is written: the stand-in's stays in memory.
struct DemoDir {
    path: PathBuf,
}

impl DemoDir {
    fn create(pid: u32) -> Result<DemoDir, TransparentError> {
        let path = PathBuf::from(format!("/tmp/{PREFIX}transparent-{pid}"));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).map_err(write_error(&path))?;
        let dir = DemoDir { path };
        set_mode(&dir.path, 0o755)?;
        Ok(dir)
    }

    /// Writes `name` (mode 0644); its path.
    fn write(&self, name: &str, text: &str) -> Result<PathBuf, TransparentError> {
        let p = self.path.join(name);
        fs::write(&p, text).map_err(write_error(&p))?;
        set_mode(&p, 0o644)?;
        Ok(p)
    }
}

impl Drop for DemoDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// meshgate as uid [`PROXY_UID`] in the pod; killed on drop.
struct Meshgate {
    child: std::process::Child,
    log: PathBuf,
}

impl Meshgate {
    fn start(
        tools: &Tools,
        ns: &Namespaces,
        exe: &Path,
        config: &Path,
        bootstrap: &Path,
        log: &Path,
    ) -> Result<Meshgate, TransparentError> {
        let out = fs::File::create(log).map_err(write_error(log))?;
        let err = out.try_clone().map_err(write_error(log))?;
        let mut c = ns.pod_command(tools, PROXY_UID, exe);
        c.arg("run")
            .arg("-c")
            .arg(config)
            .arg("--bootstrap")
            .arg(bootstrap)
            // The access log is at info.
            .args(["--log-level", "info"])
            .env_remove("RUST_LOG")
            .env_remove("MESHGATE_LOG_LEVEL")
            .stdout(out)
            .stderr(err)
            // Its own process group: a Ctrl-C in the terminal reaches the
            // demo, which stops it, rather than both at once.
            .process_group(0);
        let child = c
            .spawn()
            .map_err(|e| TransparentError::Meshgate(format!("cannot start: {e}")))?;
        Ok(Meshgate {
            child,
            log: log.to_path_buf(),
        })
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Its log so far, for error messages.
    fn log(&self) -> String {
        let text = fs::read(&self.log).unwrap_or_default();
        format!(
            "--- meshgate's log ({}) ---\n{}",
            self.log.display(),
            String::from_utf8_lossy(&text).trim_end()
        )
    }

    /// Polls `GET /healthz/ready` inside the pod until it answers 200.
    async fn wait_ready(&mut self, ns: &Namespaces) -> Result<(), TransparentError> {
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.exited() {
                return Err(TransparentError::Meshgate(format!(
                    "exited ({status}) before it was ready:\n{}",
                    self.log()
                )));
            }
            let pod = ns.pod.clone();
            let last = match tokio::task::spawn_blocking(move || in_netns(&pod, ready_status))
                .await
                .map_err(io::Error::other)
                .and_then(|r| r)
            {
                Ok(200) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(TransparentError::Meshgate(format!(
                    "not ready on {READY} in the pod within {READY_LIMIT:?} (last: {last}):\n{}",
                    self.log()
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Meshgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status of `GET /healthz/ready` on [`READY`] (call in the pod).
fn ready_status() -> io::Result<u16> {
    let mut s = std::net::TcpStream::connect_timeout(&READY, Duration::from_secs(1))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp)?;
    let text = String::from_utf8_lossy(&resp);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:?}")))
}

/// meshgate's log, read as it grows, for its access-log lines of captured
/// connections.
struct LogTail {
    path: PathBuf,
    /// Bytes already looked at (up to the last complete line).
    seen: usize,
}

impl LogTail {
    fn new(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            seen: 0,
        }
    }

    /// The access-log lines of the app's traffic written since the last
    /// call, shortened by [`access_line`].
    fn new_lines(&mut self) -> Vec<String> {
        let Ok(bytes) = fs::read(&self.path) else {
            return Vec::new();
        };
        let Some(end) = bytes
            .get(self.seen..)
            .and_then(|rest| rest.iter().rposition(|b| *b == b'\n'))
        else {
            return Vec::new();
        };
        let text = String::from_utf8_lossy(&bytes[self.seen..self.seen + end]).into_owned();
        self.seen += end + 1;
        text.lines().filter_map(access_line).collect()
    }

    /// The access-log lines up to the first captured connection's, waiting
    /// up to `limit` for it (it is written when the connection closes).
    async fn wait_for_capture(&mut self, limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        let mut lines = Vec::new();
        loop {
            for line in self.new_lines() {
                let captured = line.starts_with("connection ");
                lines.push(line);
                if captured {
                    return lines;
                }
            }
            if Instant::now() >= deadline {
                lines.push(format!("(no captured connection logged within {limit:?})"));
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// An access-log line about the app's traffic, from its message on
/// (without the time, level and target): a request (not to meshgate's
/// own ports), or a connection with an original destination (captured).
/// `None` for any other line.
fn access_line(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" access: ")?;
    let rest = rest.trim_end();
    let mut fields = rest.split_whitespace();
    let keep = match fields.next()? {
        "request" => !fields.any(|kv| kv == "reporter=\"admin\""),
        "connection" => fields.any(|kv| kv.strip_prefix("original_dst=").is_some_and(|v| v != "-")),
        _ => false,
    };
    keep.then(|| rest.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_missing_is_said_with_how_to_get_it() {
        let all = |_: &str| true;
        assert_eq!(unmet(true, &all), None);
        let only_nft = |t: &str| t != "iptables";
        assert_eq!(unmet(true, &only_nft), None, "nft alone is enough");
        assert_eq!(
            unmet(false, &all).as_deref(),
            Some(
                "--transparent needs root: run as root (sudo meshgate demo --transparent); \
                 plain `meshgate demo` needs none of this"
            )
        );
        let bare = |t: &str| t == "ip";
        assert_eq!(
            unmet(false, &bare).as_deref(),
            Some(
                "--transparent needs root, iptables or nftables, `setpriv` (util-linux) and \
                 `curl`: install iptables util-linux curl (apt-get install iptables util-linux \
                 curl), then run as root (sudo meshgate demo --transparent); plain \
                 `meshgate demo` needs none of this"
            )
        );
        let msg = unmet(true, &|t: &str| t != "curl").unwrap();
        assert!(!msg.contains('\n') && !msg.contains("sudo"), "{msg}");
    }

    #[test]
    fn only_this_demos_namespaces_are_taken_for_stale() {
        assert_eq!(stale_pid("meshgate-demo-42-pod"), Some(42));
        assert_eq!(stale_pid("meshgate-demo-42-world"), Some(42));
        assert_eq!(stale_pid("meshgate-demo-42-other"), None);
        assert_eq!(stale_pid("meshgate-demo-x-pod"), None);
        assert_eq!(stale_pid("mgt42-0-pod"), None);
    }

    #[test]
    fn the_access_log_lines_of_the_apps_traffic_are_picked() {
        let captured = "2025-01-01T00:00:00.000000Z  INFO access: connection reporter=\"source\" \
                        listener=outbound peer=10.99.0.2:40000 tls=none \
                        original_dst=10.99.1.1:80 protocol=http requests=1";
        assert_eq!(
            access_line(captured).as_deref(),
            Some(
                "connection reporter=\"source\" listener=outbound peer=10.99.0.2:40000 \
                 tls=none original_dst=10.99.1.1:80 protocol=http requests=1"
            )
        );
        let request = "2025-01-01T00:00:00.000000Z  INFO access: request reporter=\"source\" \
                       method=GET path=/ status=200";
        assert_eq!(
            access_line(request).as_deref(),
            Some("request reporter=\"source\" method=GET path=/ status=200")
        );
        // The readiness probe's connection, an admin request, other logs.
        let uncaptured = captured.replace("original_dst=10.99.1.1:80", "original_dst=-");
        assert_eq!(access_line(&uncaptured), None);
        let admin = request.replace("\"source\"", "\"admin\"");
        assert_eq!(access_line(&admin), None);
        assert_eq!(
            access_line("2025-01-01T00:00:00Z  INFO meshgate::app: listeners bound; ready"),
            None
        );
    }

    /// The template, filled in, is the seed scenario by DNS: port 80
    /// registered, TLS originated to api.external.com:443, verified.
    #[test]
    fn the_transparent_template_originates_tls_to_the_host_by_dns() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DevCa::new("test CA");
        let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
        let config = dir.path().join("egress.yaml");
        fs::write(
            &config,
            TRANSPARENT_YAML.replace("${CA_FILE}", &ca_file.display().to_string()),
        )
        .unwrap();
        let report = crate::load::validate(&Bootstrap {
            config_paths: vec![config],
            ..Bootstrap::ephemeral()
        });
        assert!(
            report.errors.is_empty() && report.warnings.is_empty(),
            "{:?} {:?}",
            report.errors,
            report.warnings
        );
        let loaded = report.loaded.expect("loads");
        let Decision::Registered(target) = loaded.plan.outbound.route(HOST, 80, 0) else {
            panic!("api.external.com:80 is not registered");
        };
        assert_eq!(target.verify_names(), vec![HOST.to_string()]);
        assert!(target.rule.is_some(), "the DestinationRule applies");
    }
}
