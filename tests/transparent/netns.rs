//! Network namespaces for the transparent-mode tests.
//!
//! A [`Topology`] is two namespaces joined by a veth pair: "pod", where the
//! app (uid [`APP_UID`]) and meshgate (uid [`PROXY_UID`]) run and where the
//! capture rules go, and "world", which holds the pod's default gateway and
//! the "external" addresses ([`Topology::ext`]). Istio's OUTPUT rules let
//! traffic that leaves through `lo` pass uncaptured, so external servers
//! must be reached through a real interface: the veth.
//!
//! ```text
//!  pod                                  world
//!  lo  127.0.0.1, ::1                   lo   10.N.1.1-9/32, fd00:N:1::1-9/128
//!  eth0 10.N.0.2/24, fd00:N::2/64 ───── pod0 10.N.0.1/24, fd00:N::1/64
//!  default via 10.N.0.1, fd00:N::1
//!  /etc/hosts = /etc/netns/<pod>/hosts  (names → external addresses)
//! ```
//!
//! The test process stays in the host namespace: sockets are created in a
//! namespace by a short-lived thread that enters it first ([`Topology::run_in`]);
//! a socket keeps the namespace it was created in, so in-process servers
//! serve a listener bound in "world" or "pod" from the test's runtime.
//! Programs run there through `ip netns exec` and `setpriv`
//! ([`Topology::command`]).
//!
//! Everything is removed when the `Topology` is dropped, also when the test
//! panics; namespaces left by a test process that was killed are removed by
//! the next `Topology::new`.

#![allow(dead_code)]

use std::fs;
use std::io::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd as _;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rustix::thread::{Gid, LinkNameSpaceType, Uid};

pub use crate::common::binary::BIN as MESHGATE;
use crate::common::binary::show;
use crate::common::read_lossy;

/// The proxy's uid and gid (Istio's 1337).
pub const PROXY_UID: u32 = 1337;
/// The app's uid and gid.
pub const APP_UID: u32 = 1000;

/// Prefix of every namespace name: `mgt<pid>-<seq>-pod` / `-world`.
const PREFIX: &str = "mgt";
/// How long a connect from inside a namespace may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static SEQ: AtomicU32 = AtomicU32::new(0);
/// `ip netns add` makes /run/netns a shared mount the first time; running
/// two at once can race on that, so namespaces are created one at a time.
static CREATE: Mutex<()> = Mutex::new(());

/// One of the two namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    /// Where the app, meshgate and the capture rules are.
    Pod,
    /// The pod's default gateway, holding the external addresses.
    World,
}

/// Why the transparent tests cannot run here.
#[derive(Debug)]
pub struct Skip(pub String);

/// Checks what the tests need: root, `ip`, `iptables`, `nft`, `setpriv`,
/// `curl`, `ip netns add`, and NAT with the owner match in a fresh
/// namespace. `None` when everything is there. Checked once per process.
pub fn require() -> Option<Skip> {
    static CHECKED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    CHECKED.get_or_init(missing).clone().map(Skip)
}

/// The topology, or `None` after printing `skipped: <reason>` when this
/// machine cannot run the tests ([`require`]). With `CI=true` in the
/// environment it panics with the reason instead: in CI these tests must
/// fail, not skip. Once the machine passes the checks, a topology that
/// cannot be built is a failure (panic), never a skip.
///
/// `let Some(t) = netns::setup() else { return };`
pub fn setup() -> Option<Topology> {
    let Some(Skip(reason)) = require() else {
        // The machine can: a failure now is the harness's, not a skip.
        return Some(Topology::new().unwrap_or_else(|e| panic!("{e}")));
    };
    let ci = std::env::var("CI").unwrap_or_default();
    if ci.eq_ignore_ascii_case("true") || ci == "1" {
        panic!(
            "transparent tests cannot run (CI is set, so this fails instead of skipping): {reason}"
        );
    }
    eprintln!("skipped: {reason}");
    None
}

fn missing() -> Option<String> {
    match fs::metadata("/proc/self") {
        Ok(m) if m.uid() == 0 => {}
        Ok(m) => return Some(format!("not root (uid {})", m.uid())),
        Err(e) => return Some(format!("cannot read /proc/self: {e}")),
    }
    for tool in ["ip", "iptables", "nft", "setpriv", "curl", "unshare"] {
        if which(tool).is_none() {
            return Some(format!("`{tool}` is not installed"));
        }
    }
    let probe = format!("{PREFIX}{}-probe", std::process::id());
    let added = ip(&["netns", "add", &probe]);
    remove(&probe);
    if let Err(e) = added {
        return Some(e);
    }
    // NAT REDIRECT with the owner match, with both front ends, in a
    // throw-away namespace (kernel modules, permissions).
    for probe in [
        "iptables -t nat -A OUTPUT -p tcp -m owner ! --uid-owner 1337 -j REDIRECT --to-ports 15001",
        "nft add table inet probe && nft add chain inet probe out '{ type nat hook output priority -100; }' && nft add rule inet probe out meta skuid != 1337 meta l4proto tcp redirect to :15001",
    ] {
        match Command::new("unshare")
            .args(["-n", "sh", "-c", probe])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                return Some(format!(
                    "`{probe}` fails in a new network namespace: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ));
            }
            Err(e) => return Some(format!("cannot run unshare: {e}")),
        }
    }
    None
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A pod and a world namespace joined by a veth pair; removed on drop.
pub struct Topology {
    pod: String,
    world: String,
    n: u8,
}

impl Topology {
    /// Creates both namespaces, the veth pair, the addresses and routes,
    /// and the pod's /etc/hosts (localhost only; see [`Topology::add_host`])
    /// and /etc/resolv.conf (a nameserver on the pod's loopback that does
    /// not exist, so a name missing from the hosts file fails at once).
    /// `Err` names the command that failed.
    pub fn new() -> Result<Topology, String> {
        let _one_at_a_time = CREATE.lock().unwrap_or_else(|p| p.into_inner());
        remove_stale();
        let seq = SEQ.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let t = Topology {
            pod: format!("{PREFIX}{pid}-{seq}-pod"),
            world: format!("{PREFIX}{pid}-{seq}-world"),
            // Each pair has its own address space; distinct prefixes only
            // keep traces of concurrent tests apart.
            n: (seq % 250 + 1) as u8,
        };
        // From here on, an error drops `t`, which removes what was made.
        ip(&["netns", "add", &t.pod])?;
        ip(&["netns", "add", &t.world])?;
        let etc = t.etc_dir();
        fs::create_dir_all(&etc).map_err(|e| format!("create {}: {e}", etc.display()))?;
        write_text(
            &etc.join("hosts"),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        )?;
        write_text(
            &etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        ip(&[
            "link", "add", "eth0", "netns", &t.pod, "type", "veth", "peer", "name", "pod0",
            "netns", &t.world,
        ])?;
        let n = t.n;
        // `nodad`: the IPv6 addresses are usable at once.
        let pod = vec![
            "link set lo up".to_string(),
            "link set eth0 up".into(),
            format!("addr add 10.{n}.0.2/24 dev eth0"),
            format!("addr add fd00:{n:x}::2/64 dev eth0 nodad"),
            format!("route add default via 10.{n}.0.1"),
            format!("route add default via fd00:{n:x}::1"),
        ];
        let mut world = vec![
            "link set lo up".to_string(),
            "link set pod0 up".into(),
            format!("addr add 10.{n}.0.1/24 dev pod0"),
            format!("addr add fd00:{n:x}::1/64 dev pod0 nodad"),
        ];
        for i in 1..=9 {
            world.push(format!("addr add 10.{n}.1.{i}/32 dev lo"));
            world.push(format!("addr add fd00:{n:x}:1::{i}/128 dev lo nodad"));
        }
        ip_batch(&t.pod, &pod)?;
        ip_batch(&t.world, &world)?;
        Ok(t)
    }

    /// The namespace's name (for `ip netns exec`, `ip -n`).
    pub fn name(&self, ns: Ns) -> &str {
        match ns {
            Ns::Pod => &self.pod,
            Ns::World => &self.world,
        }
    }

    /// The pod's IPv4 address (eth0), 10.N.0.2.
    pub fn pod_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, 0, 2)
    }

    /// The pod's IPv6 address, fd00:N::2.
    pub fn pod_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.n.into(), 0, 0, 0, 0, 0, 2)
    }

    /// The world's side of the veth (the pod's gateway), 10.N.0.1.
    pub fn world_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, self.n, 0, 1)
    }

    /// The world's side of the veth, fd00:N::1.
    pub fn world_ip6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, self.n.into(), 0, 0, 0, 0, 0, 1)
    }

    /// External address `i` (1..=9) held by world, 10.N.1.i: the pod
    /// reaches it through the veth.
    pub fn ext(&self, i: u8) -> Ipv4Addr {
        assert!(
            (1..=9).contains(&i),
            "external addresses are 1..=9, not {i}"
        );
        Ipv4Addr::new(10, self.n, 1, i)
    }

    /// External IPv6 address `i` (1..=9), fd00:N:1::i.
    pub fn ext6(&self, i: u8) -> Ipv6Addr {
        assert!(
            (1..=9).contains(&i),
            "external addresses are 1..=9, not {i}"
        );
        Ipv6Addr::new(0xfd00, self.n.into(), 1, 0, 0, 0, 0, i.into())
    }

    /// Makes `name` resolve to `ip` inside the pod (a line in
    /// /etc/netns/<pod>/hosts, which `ip netns exec` mounts over
    /// /etc/hosts), for the app and meshgate alike. Applies to programs
    /// started afterwards.
    pub fn add_host(&self, name: &str, ip: impl Into<IpAddr>) {
        let path = self.etc_dir().join("hosts");
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        writeln!(f, "{} {name}", ip.into())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }

    /// Runs `f` on a new thread that has entered `ns`; sockets it creates
    /// stay in `ns` after the thread ends.
    pub fn run_in<T, F>(&self, ns: Ns, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        in_namespace(self.ns_path(ns), 0, f)
    }

    /// Like [`Topology::run_in`], with the thread's uid and gid (real,
    /// effective, saved) set to `uid` and no supplementary groups first:
    /// sockets it creates belong to `uid` for iptables' owner match.
    pub fn run_in_as<T, F>(&self, ns: Ns, uid: u32, f: F) -> io::Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> io::Result<T> + Send + 'static,
    {
        in_namespace(self.ns_path(ns), uid, f)
    }

    /// A blocking listener on `addr` inside `ns` (port 0 for any). Panics
    /// if it cannot bind.
    pub fn bind_in(&self, ns: Ns, addr: impl Into<SocketAddr>) -> std::net::TcpListener {
        let addr = addr.into();
        self.run_in(ns, move || std::net::TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr} in {}: {e}", self.name(ns)))
    }

    /// [`Topology::bind_in`] as a tokio listener (call inside a runtime),
    /// e.g. for `meshgate::standin::serve_echo_service` or
    /// `StandIn::start_on`.
    pub fn listen_in(&self, ns: Ns, addr: impl Into<SocketAddr>) -> tokio::net::TcpListener {
        let l = self.bind_in(ns, addr);
        l.set_nonblocking(true).expect("set_nonblocking");
        tokio::net::TcpListener::from_std(l).expect("tokio listener")
    }

    /// A blocking connection from inside `ns` as root (5 s connect timeout).
    pub fn connect_in(
        &self,
        ns: Ns,
        addr: impl Into<SocketAddr>,
    ) -> io::Result<std::net::TcpStream> {
        let addr = addr.into();
        self.run_in(ns, move || {
            std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        })
    }

    /// A blocking connection from inside `ns` whose socket belongs to `uid`
    /// (for the owner match: `APP_UID` is captured, `PROXY_UID` is not).
    pub fn connect_in_as(
        &self,
        ns: Ns,
        uid: u32,
        addr: impl Into<SocketAddr>,
    ) -> io::Result<std::net::TcpStream> {
        let addr = addr.into();
        self.run_in_as(ns, uid, move || {
            std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        })
    }

    /// [`Topology::connect_in_as`] as a tokio stream, without blocking the
    /// runtime; uid 0 connects as root.
    pub async fn tokio_connect_in(
        &self,
        ns: Ns,
        uid: u32,
        addr: impl Into<SocketAddr>,
    ) -> io::Result<tokio::net::TcpStream> {
        let addr = addr.into();
        let path = self.ns_path(ns);
        let s = tokio::task::spawn_blocking(move || {
            in_namespace(path, uid, move || {
                std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            })
        })
        .await
        .map_err(io::Error::other)??;
        s.set_nonblocking(true)?;
        tokio::net::TcpStream::from_std(s)
    }

    /// `ip netns exec <ns> setpriv --reuid=<uid> --regid=<uid>
    /// --clear-groups -- <program>`, or without `setpriv` for uid 0. The
    /// program sees the pod's /etc/hosts and /etc/resolv.conf. Files it
    /// must read need modes that let `uid` in ([`make_readable`]).
    pub fn command(&self, ns: Ns, uid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.name(ns)]);
        if uid != 0 {
            c.arg("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={uid}"))
                .args(["--clear-groups", "--"]);
        }
        c.arg(program).stdin(Stdio::null());
        c
    }

    /// Runs `args` as root in `ns` and returns its stdout; panics with the
    /// output when it fails. For `iptables`, `ip`, `nft` etc.
    pub fn exec_ok(&self, ns: Ns, args: &[&str]) -> String {
        let (program, rest) = args.split_first().expect("a program");
        let out = self
            .command(ns, 0, program)
            .args(rest)
            .output()
            .unwrap_or_else(|e| panic!("run {args:?} in {}: {e}", self.name(ns)));
        assert!(
            out.status.success(),
            "{args:?} in {} failed ({}):\n{}",
            self.name(ns),
            out.status,
            show(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Loads an nft script (`nft -f -`) in `ns`; panics with nft's message
    /// when it fails.
    pub fn nft(&self, ns: Ns, script: &str) {
        let mut child = self
            .command(ns, 0, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn nft");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("write the nft script");
        let out = child.wait_with_output().expect("wait for nft");
        assert!(
            out.status.success(),
            "nft -f - in {} failed:\n{script}\n{}",
            self.name(ns),
            show(&out)
        );
    }

    /// The namespace's netfilter rules (`nft list ruleset`, which shows
    /// iptables-nft rules too), for failure messages.
    pub fn rules(&self, ns: Ns) -> String {
        match self
            .command(ns, 0, "nft")
            .args(["list", "ruleset"])
            .output()
        {
            Ok(o) => show(&o),
            Err(e) => format!("<nft list ruleset: {e}>"),
        }
    }

    /// Starts `program args` in `ns` as `uid`, stdout and stderr captured
    /// to files ([`Proc::output`]); killed when the `Proc` is dropped.
    pub fn spawn(&self, ns: Ns, uid: u32, program: &str, args: &[&str]) -> Proc {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let child = self
            .command(ns, uid, program)
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("MESHGATE_LOG_LEVEL")
            .stdout(fs::File::create(&out).expect("stdout file"))
            .stderr(fs::File::create(&err).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {program} in {}: {e}", self.name(ns)));
        Proc {
            child,
            label: format!("{program} {}", args.join(" ")),
            out,
            err,
            _dir: dir,
        }
    }

    /// `meshgate <args>` as [`PROXY_UID`] in the pod, once its readiness
    /// endpoint `ready` (an address inside the pod, e.g. meshgate's
    /// default 127.0.0.1:15021) answers 200. Panics with meshgate's output
    /// if it exits first or is not ready within 20 s.
    pub async fn start_meshgate(&self, args: &[&str], ready: SocketAddr) -> Proc {
        let mut p = self.spawn(Ns::Pod, PROXY_UID, MESHGATE, args);
        if let Err(why) = p.wait_ready(self, ready, Duration::from_secs(20)).await {
            panic!("{why}");
        }
        p
    }

    /// `curl <args>` as [`APP_UID`] in the pod.
    pub async fn curl(&self, args: &[&str]) -> Curl {
        self.curl_as(Ns::Pod, APP_UID, args).await
    }

    /// `curl -q -sS --max-time 5 <args>` in `ns` as `uid` (0: root), run
    /// off the runtime. `args` may override the time limit.
    pub async fn curl_as(&self, ns: Ns, uid: u32, args: &[&str]) -> Curl {
        let mut c = self.command(ns, uid, "curl");
        c.args([
            "-q",
            "-sS",
            "--max-time",
            "5",
            "-w",
            "\n<<curl-status:%{http_code}>>",
        ])
        .args(args);
        let shown = format!("curl {} (uid {uid} in {})", args.join(" "), self.name(ns));
        let out = tokio::task::spawn_blocking(move || c.output())
            .await
            .expect("curl task")
            .unwrap_or_else(|e| panic!("{shown}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, status) = match stdout.rsplit_once("\n<<curl-status:") {
            Some((body, rest)) => (
                body.to_string(),
                rest.trim_end_matches(">>").parse().unwrap_or(0),
            ),
            None => (stdout, 0),
        };
        Curl {
            status,
            body,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            exit: out.status.code(),
        }
    }

    fn ns_path(&self, ns: Ns) -> PathBuf {
        Path::new("/run/netns").join(self.name(ns))
    }

    fn etc_dir(&self) -> PathBuf {
        Path::new("/etc/netns").join(&self.pod)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for name in [&self.pod, &self.world] {
            remove(name);
        }
    }
}

/// Removes namespace `name` and its /etc/netns directory; what does not
/// exist is skipped.
fn remove(name: &str) {
    if Path::new("/run/netns").join(name).exists() {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stdin(Stdio::null())
            .output();
    }
    let _ = fs::remove_dir_all(Path::new("/etc/netns").join(name));
}

/// Namespaces of test processes that no longer run (killed before their
/// `Topology` was dropped).
fn remove_stale() {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists() {
            remove(&name);
        }
    }
}

/// Runs `f` on a new thread that has entered the namespace at `path` and,
/// unless `uid` is 0, taken `uid` as its uid and gid with no supplementary
/// groups. Linux credentials and namespaces are per thread: the rest of the
/// process keeps its own.
fn in_namespace<T, F>(path: PathBuf, uid: u32, f: F) -> io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> io::Result<T> + Send + 'static,
{
    std::thread::spawn(move || {
        let file = fs::File::open(&path)?;
        rustix::thread::move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))?;
        if uid != 0 {
            rustix::thread::set_thread_groups(&[])?;
            let gid = Gid::from_raw(uid);
            rustix::thread::set_thread_res_gid(gid, gid, gid)?;
            let u = Uid::from_raw(uid);
            rustix::thread::set_thread_res_uid(u, u, u)?;
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| {
        Err(io::Error::other(
            "the thread entering the namespace panicked",
        ))
    })
}

/// A program started by [`Topology::spawn`]; killed (SIGKILL) on drop.
pub struct Proc {
    child: Child,
    label: String,
    out: PathBuf,
    err: PathBuf,
    _dir: tempfile::TempDir,
}

impl Proc {
    /// Its process id (`ip netns exec` and `setpriv` exec the program, so
    /// this is the program itself).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Its exit status, if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// What it printed so far, stdout then stderr, for failure messages.
    pub fn output(&self) -> String {
        format!(
            "--- {} stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            read_lossy(&self.out),
            read_lossy(&self.err)
        )
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.err)
    }

    /// Polls `GET /healthz/ready` on `ready` inside the pod until it
    /// answers 200; `Err` with its output if it exits or `limit` passes.
    pub async fn wait_ready(
        &mut self,
        t: &Topology,
        ready: SocketAddr,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "exited ({status}) before it was ready:\n{}",
                    self.output()
                ));
            }
            let last = match ready_status(t, ready).await {
                Ok(200) => return Ok(()),
                Ok(code) => format!("status {code}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready on {ready} within {limit:?} (last: {last}):\n{}",
                    self.output()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The status code of `GET /healthz/ready` on `ready` in the pod.
async fn ready_status(t: &Topology, ready: SocketAddr) -> io::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = t.tokio_connect_in(Ns::Pod, 0, ready).await?;
    s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut head = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut head))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no response in 2 s"))??;
    let text = String::from_utf8_lossy(&head);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("not an HTTP response: {text:?}")))
}

/// What a curl run returned.
#[derive(Debug)]
pub struct Curl {
    /// The HTTP status, 0 when there was no response.
    pub status: u16,
    /// The response body.
    pub body: String,
    /// curl's messages (`-sS`: errors only).
    pub stderr: String,
    /// curl's exit code (7: connection refused, 28: timeout, 35: TLS).
    pub exit: Option<i32>,
}

/// A temporary directory other uids can read (tempfile creates them 0700;
/// this one is 0755). Files written into it later with the usual umask are
/// 0644, so meshgate (uid 1337) and the app (uid 1000) read them; call
/// [`make_readable`] for files created with a stricter mode. Test keys in
/// it are readable by every uid on the machine.
pub fn shared_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    make_readable(dir.path());
    dir
}

/// Adds read permission for every uid to `path` and, for a directory,
/// everything below it (directories also get search permission).
pub fn make_readable(path: &Path) {
    let meta =
        fs::symlink_metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    if meta.file_type().is_symlink() {
        return;
    }
    let add = if meta.is_dir() { 0o555 } else { 0o444 };
    let mode = meta.permissions().mode() | add;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
    if meta.is_dir() {
        for e in fs::read_dir(path).unwrap_or_else(|e| panic!("list {}: {e}", path.display())) {
            make_readable(&e.expect("directory entry").path());
        }
    }
}

/// Gives `path` and everything below it to `uid` (gid `uid`), for a
/// directory meshgate writes to (e.g. an identity directory it fills).
pub fn give_to(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for e in fs::read_dir(path).unwrap_or_else(|e| panic!("list {}: {e}", path.display())) {
            give_to(&e.expect("directory entry").path(), uid);
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `ip -n <ns> -batch -` on `lines`.
fn ip_batch(ns: &str, lines: &[String]) -> Result<(), String> {
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    let script = lines.join("\n") + "\n";
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .map_err(|e| format!("write to ip -batch: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("wait for ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip -n {ns} -batch -` failed on:\n{script}{}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn write_text(path: &Path, text: &str) -> Result<(), String> {
    fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
