//! `meshgate iptables` for real: the rules applied, re-applied, printed and
//! removed in private network namespaces (`ip netns add`, deleted when the
//! test ends), read back with `iptables-save`, `ip6tables-save` and `nft
//! list ruleset`; and real connections: the app's (another uid) landing on
//! the outbound port, a peer's on the inbound port, the proxy's own and
//! meshgate's readiness port left alone.
//!
//! These need root, network namespaces and the iptables/nftables tools.
//! Without them a test prints `skipped: <reason>` and passes, except under
//! `CI=true`, where it fails (`.ci/run` installs the tools).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::binary::{BIN, show, text};

/// Where the tools are looked for (they live in /usr/sbin).
fn find(tool: &str) -> Option<String> {
    let path = std::env::var("PATH").unwrap_or_default();
    path.split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin", "/usr/bin", "/bin"])
        .map(|d| format!("{d}/{tool}"))
        .find(|p| std::path::Path::new(p).is_file())
}

/// `None` when the test can run; otherwise skips (or fails under CI).
fn skip_unless(test: &str, tools: &[&str]) -> Option<()> {
    let why = (|| {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let root = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("0"));
        if !root {
            return Some("not running as root (network namespaces and iptables need it)".into());
        }
        for t in tools {
            if find(t).is_none() {
                return Some(format!("`{t}` is not installed"));
            }
        }
        None
    })();
    match why {
        None => Some(()),
        Some(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "{test}: CI=true but it cannot run: {why}");
            eprintln!("skipped: {test}: {why}");
            None
        }
    }
}

/// A private network namespace, deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    /// A new namespace with `lo` up; `Err` when namespaces are not available.
    fn new(tag: &str) -> Result<Netns, String> {
        let name = format!("mg-ipt-{}-{tag}", std::process::id());
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .map_err(|e| format!("cannot run `ip`: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "`ip netns add` failed: {}",
                text(&out.stderr).trim()
            ));
        }
        let ns = Netns { name };
        ns.ok(&["ip", "link", "set", "lo", "up"]);
        Ok(ns)
    }

    /// `prog` run inside the namespace.
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, prog]);
        c.env_remove("RUST_LOG").env_remove("MESHGATE_LOG_LEVEL");
        c
    }

    /// Runs `args` inside the namespace, at most 10 s.
    fn run(&self, args: &[&str]) -> Output {
        let mut c = self.cmd(args[0]);
        c.args(&args[1..]);
        common::binary::run_with_timeout(c, Duration::from_secs(10))
    }

    /// Runs `args`, which must succeed; their stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}\n{}", show(&out));
        text(&out.stdout)
    }

    /// `meshgate iptables ARGS` inside the namespace.
    fn meshgate(&self, args: &[&str]) -> Output {
        let mut all = vec![BIN, "iptables"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    /// `meshgate iptables ARGS`, which must succeed; its stdout.
    fn meshgate_ok(&self, args: &[&str]) -> String {
        let out = self.meshgate(args);
        assert!(
            out.status.success(),
            "meshgate iptables {args:?}\n{}",
            show(&out)
        );
        text(&out.stdout)
    }

    /// `iptables-save -t nat` (or ip6tables-save) without its timestamp
    /// comments.
    fn save(&self, tool: &str) -> String {
        self.ok(&[tool, "-t", "nat"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .output();
    }
}

/// A namespace for `test`, or `None` (skipped) when there is none.
fn netns_or_skip(test: &str, tag: &str) -> Option<Netns> {
    match Netns::new(tag) {
        Ok(ns) => Some(ns),
        Err(why) => {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!ci, "{test}: CI=true but it cannot run: {why}");
            eprintln!("skipped: {test}: {why}");
            None
        }
    }
}

/// The `-A` lines of a save.
fn rules(save: &str) -> Vec<&str> {
    save.lines().filter(|l| l.starts_with("-A ")).collect()
}

#[test]
fn iptables_apply_twice_then_cleanup() {
    let test = "iptables_apply_twice_then_cleanup";
    let Some(()) = skip_unless(test, &["ip", "iptables-save", "iptables-restore"]) else {
        return;
    };
    let Some(ns) = netns_or_skip(test, "ipt") else {
        return;
    };
    let v6 = find("ip6tables-save").is_some() && find("ip6tables-restore").is_some();
    let before = ns.save("iptables-save");
    let before6 = if v6 {
        ns.save("ip6tables-save")
    } else {
        String::new()
    };

    let out = ns.meshgate_ok(&["--backend", "iptables", "-o", "22", "-x", "10.1.0.0/16"]);
    assert!(out.contains("iptables: capture rules applied"), "{out}");
    let applied = ns.save("iptables-save");
    let got = rules(&applied);
    for want in [
        "-A PREROUTING -p tcp -j ISTIO_INBOUND",
        "-A OUTPUT -j ISTIO_OUTPUT",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15000 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15020 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -m tcp --dport 15021 -j RETURN",
        "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_OUTPUT -p tcp -m tcp --dport 22 -j RETURN",
        "-A ISTIO_OUTPUT -p udp -m udp --dport 22 -j RETURN",
        "-A ISTIO_OUTPUT -s 127.0.0.6/32 -o lo -j RETURN",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
        "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
        "-A ISTIO_OUTPUT -d 10.1.0.0/16 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(got.contains(&want), "missing {want}\n{applied}");
    }
    assert_eq!(got.len(), 20, "{applied}");

    // Again: the same table, one set of rules.
    ns.meshgate_ok(&["--backend", "iptables", "-o", "22", "-x", "10.1.0.0/16"]);
    assert_eq!(ns.save("iptables-save"), applied);

    if v6 {
        let applied6 = ns.save("ip6tables-save");
        let got6 = rules(&applied6);
        for want in [
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_OUTPUT -s ::6/128 -o lo -j RETURN",
            "-A ISTIO_OUTPUT ! -d ::1/128 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -d ::1/128 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ] {
            assert!(got6.contains(&want), "missing {want}\n{applied6}");
        }
        assert!(
            !applied6.contains("127.0.0") && !applied6.contains("10.1.0.0"),
            "{applied6}"
        );
        assert_eq!(got6.len(), 19, "{applied6}");
    }

    // Other flags replace the rules: no inbound capture, one range.
    ns.meshgate_ok(&["--backend", "iptables", "-b", "", "-i", "10.0.0.0/8"]);
    let changed = ns.save("iptables-save");
    let got = rules(&changed);
    assert!(
        !changed.contains("PREROUTING -p tcp -j ISTIO_INBOUND"),
        "{changed}"
    );
    assert_eq!(
        got.iter().filter(|l| l.starts_with("-A OUTPUT")).count(),
        1,
        "{changed}"
    );
    assert!(
        got.contains(&"-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT"),
        "{changed}"
    );
    assert!(
        !got.contains(&"-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
        "{changed}"
    );

    // Cleanup: back to what the namespace had, twice.
    let out = ns.meshgate_ok(&["--backend", "iptables", "--cleanup"]);
    assert!(out.contains("iptables: capture rules removed"), "{out}");
    assert_eq!(ns.save("iptables-save"), before);
    if v6 {
        assert_eq!(ns.save("ip6tables-save"), before6);
    }
    let out = ns.meshgate_ok(&["--backend", "iptables", "--cleanup"]);
    assert!(
        out.contains("iptables: no capture rules to remove"),
        "{out}"
    );
    assert_eq!(ns.save("iptables-save"), before);
}

#[test]
fn ipv6_false_leaves_ip6tables_alone() {
    let test = "ipv6_false_leaves_ip6tables_alone";
    let Some(()) = skip_unless(
        test,
        &[
            "ip",
            "iptables-save",
            "iptables-restore",
            "ip6tables-save",
            "ip6tables-restore",
        ],
    ) else {
        return;
    };
    let Some(ns) = netns_or_skip(test, "v4") else {
        return;
    };
    let before6 = ns.save("ip6tables-save");
    let out = ns.meshgate_ok(&["--backend", "iptables", "--ipv6=false"]);
    assert!(!out.contains("ip6tables"), "{out}");
    assert!(ns.save("iptables-save").contains("ISTIO_OUTPUT"));
    assert_eq!(ns.save("ip6tables-save"), before6);
    ns.meshgate_ok(&["--backend", "iptables", "--ipv6=false", "--cleanup"]);
}

#[test]
fn nftables_apply_twice_then_cleanup() {
    let test = "nftables_apply_twice_then_cleanup";
    let Some(()) = skip_unless(test, &["ip", "nft"]) else {
        return;
    };
    let Some(ns) = netns_or_skip(test, "nft") else {
        return;
    };
    let before = ns.ok(&["nft", "list", "ruleset"]);
    let out = ns.meshgate_ok(&[
        "--backend",
        "nftables",
        "-b",
        "8080,9090",
        "-i",
        "10.0.0.0/8,fd00::/8",
    ]);
    assert!(
        out.contains("nft: capture rules applied (table inet istio-proxy-nat)"),
        "{out}"
    );
    let applied = ns.ok(&["nft", "list", "ruleset"]);
    for want in [
        "table inet istio-proxy-nat {",
        "chain prerouting {",
        "type nat hook prerouting priority dstnat; policy accept;",
        "meta l4proto tcp counter packets 0 bytes 0 jump istio-inbound",
        "type nat hook output priority -100; policy accept;",
        "counter packets 0 bytes 0 jump istio-output",
        "tcp dport 15021 counter packets 0 bytes 0 return",
        "tcp dport 8080 counter packets 0 bytes 0 jump istio-in-redirect",
        "meta l4proto tcp counter packets 0 bytes 0 redirect to :15001",
        "meta l4proto tcp counter packets 0 bytes 0 redirect to :15006",
        "oifname \"lo\" ip saddr 127.0.0.6 counter packets 0 bytes 0 return",
        "oifname \"lo\" ip6 saddr ::6 counter packets 0 bytes 0 return",
        "oifname \"lo\" ip daddr != 127.0.0.1 meta skuid 1337 counter packets 0 bytes 0 jump istio-in-redirect",
        "oifname \"lo\" meta skgid != 1337 counter packets 0 bytes 0 return",
        "ip6 daddr ::1 counter packets 0 bytes 0 return",
        "ip daddr 10.0.0.0/8 counter packets 0 bytes 0 jump istio-redirect",
        "ip6 daddr fd00::/8 counter packets 0 bytes 0 jump istio-redirect",
    ] {
        assert!(applied.contains(want), "missing {want}\n{applied}");
    }
    assert_eq!(applied.matches("table ").count(), 1, "{applied}");

    ns.meshgate_ok(&[
        "--backend",
        "nftables",
        "-b",
        "8080,9090",
        "-i",
        "10.0.0.0/8,fd00::/8",
    ]);
    assert_eq!(ns.ok(&["nft", "list", "ruleset"]), applied);

    // Other flags replace the table: the prerouting chain goes with -b ''.
    ns.meshgate_ok(&["--backend", "nftables", "-b", ""]);
    let changed = ns.ok(&["nft", "list", "ruleset"]);
    assert!(!changed.contains("prerouting"), "{changed}");
    assert_eq!(changed.matches("table ").count(), 1, "{changed}");

    let out = ns.meshgate_ok(&["--backend", "nftables", "--cleanup"]);
    assert!(out.contains("nft: capture rules removed"), "{out}");
    assert_eq!(ns.ok(&["nft", "list", "ruleset"]), before);
    ns.meshgate_ok(&["--backend", "nftables", "--cleanup"]);
    assert_eq!(ns.ok(&["nft", "list", "ruleset"]), before);
}

#[test]
fn dry_run_prints_the_rules_and_changes_nothing() {
    let test = "dry_run_prints_the_rules_and_changes_nothing";
    let Some(()) = skip_unless(test, &["ip", "iptables-save", "nft"]) else {
        return;
    };
    let Some(ns) = netns_or_skip(test, "dry") else {
        return;
    };
    let before = ns.save("iptables-save");
    let before_nft = ns.ok(&["nft", "list", "ruleset"]);

    let out = ns.meshgate_ok(&["--backend", "iptables", "--dry-run", "--ipv6=true"]);
    assert!(
        out.contains("# iptables-restore --noflush\n*nat\n:ISTIO_INBOUND - [0:0]\n"),
        "{out}"
    );
    assert!(
        out.contains("-A PREROUTING -p tcp -j ISTIO_INBOUND\n"),
        "{out}"
    );
    assert!(out.contains("# ip6tables-restore --noflush\n"), "{out}");
    assert!(
        out.contains("-A ISTIO_OUTPUT -o lo -s ::6/128 -j RETURN\n"),
        "{out}"
    );
    let out = ns.meshgate_ok(&["--backend", "iptables", "-n", "--cleanup"]);
    assert!(out.contains("-X ISTIO_OUTPUT\n"), "{out}");
    let out = ns.meshgate_ok(&["--backend", "nftables", "--dry-run"]);
    assert!(
        out.contains("# nft -f -\nadd table inet istio-proxy-nat\n"),
        "{out}"
    );
    let out = ns.meshgate_ok(&["--backend", "nftables", "--dry-run", "--cleanup"]);
    assert!(
        out.ends_with("delete table inet istio-proxy-nat\n"),
        "{out}"
    );

    assert_eq!(ns.save("iptables-save"), before);
    assert_eq!(ns.ok(&["nft", "list", "ruleset"]), before_nft);
}

/// A TCP listener on ADDR PORT that prints "ready", then for each
/// accepted connection its original destination (`SO_ORIGINAL_DST`, as
/// meshgate's listeners read it), or `direct` when it was not redirected.
const LISTENER: &str = r#"
import socket, struct, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        raw = c.getsockopt(socket.SOL_IP, 80, 16)
        dst = "%s:%d" % (socket.inet_ntoa(raw[4:8]), struct.unpack("!H", raw[2:4])[0])
        local = "%s:%d" % c.getsockname()
        print("direct" if dst == local else dst, flush=True)
    except OSError:
        print("direct", flush=True)
    c.close()
"#;

/// A running [`LISTENER`], killed on drop.
struct Listener {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Listener {
    /// Starts one inside `ns` and waits until it listens.
    fn start(ns: &Netns, addr: &str, port: u16) -> Listener {
        let mut cmd = ns.cmd(&find("python3").unwrap());
        cmd.args(["-c", LISTENER, addr, &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("start the listener");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let l = Listener { child, lines: rx };
        assert_eq!(
            l.next().as_deref(),
            Some("ready"),
            "listener on {addr}:{port}"
        );
        l
    }

    /// The next connection it reports (waits up to 5 s).
    fn next(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(5)).ok()
    }

    /// Nothing more was reported.
    fn nothing_more(&self, what: &str) {
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(self.lines.try_recv().ok(), None, "{what}");
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects to `dest` from inside `ns` as `uid` (bash's /dev/tcp, at most
/// 2 s): whether the connection was accepted.
fn connect_as(ns: &Netns, uid: u32, dest: &str) -> bool {
    let (host, port) = dest.split_once(':').unwrap();
    let out = ns.run(&[
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={uid}"),
        "--clear-groups",
        "timeout",
        "2",
        "bash",
        "-c",
        &format!("exec 3<>/dev/tcp/{host}/{port}"),
    ]);
    out.status.success()
}

/// The pod (10.9.0.1) and a peer (10.9.0.2) joined by a veth pair; the
/// rules applied in the pod with `backend`; connections from the app
/// (uid 1000), the proxy (uid 1337) and the peer checked.
fn capture_lands_on_the_proxy_ports(test: &str, backend: &str, needs: &[&str]) {
    let mut tools = vec!["ip", "setpriv", "timeout", "bash", "python3"];
    tools.extend_from_slice(needs);
    let Some(()) = skip_unless(test, &tools) else {
        return;
    };
    let Some(pod) = netns_or_skip(test, &format!("{backend}-pod")) else {
        return;
    };
    let Some(peer) = netns_or_skip(test, &format!("{backend}-peer")) else {
        return;
    };
    pod.ok(&[
        "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1",
    ]);
    pod.ok(&["ip", "link", "set", "d1", "netns", &peer.name]);
    pod.ok(&["ip", "addr", "add", "10.9.0.1/24", "dev", "d0"]);
    pod.ok(&["ip", "link", "set", "d0", "up"]);
    peer.ok(&["ip", "addr", "add", "10.9.0.2/24", "dev", "d1"]);
    peer.ok(&["ip", "link", "set", "d1", "up"]);

    let outbound = Listener::start(&pod, "127.0.0.1", 16001);
    let inbound = Listener::start(&pod, "0.0.0.0", 16006);
    let external = Listener::start(&peer, "10.9.0.2", 81);

    // Before: nothing listens on the peer's port 80.
    assert!(!connect_as(&pod, 1000, "10.9.0.2:80"));
    let apply = [
        "--backend",
        backend,
        "-p",
        "16001",
        "-z",
        "16006",
        "--ipv6=false",
    ];
    pod.meshgate_ok(&apply);

    // The app (uid 1000): captured; the proxy port sees where it was going.
    assert!(
        connect_as(&pod, 1000, "10.9.0.2:80"),
        "the app's connection was not captured"
    );
    assert_eq!(outbound.next().as_deref(), Some("10.9.0.2:80"));
    // The proxy (uid 1337): not captured, it reaches the peer itself.
    assert!(
        connect_as(&pod, 1337, "10.9.0.2:81"),
        "the proxy's connection did not get out"
    );
    assert_eq!(external.next().as_deref(), Some("direct"));
    // Localhost is never captured (nothing listens on :81 there).
    assert!(!connect_as(&pod, 1000, "127.0.0.1:81"));
    outbound.nothing_more("only the app's connection reached the outbound port");

    // Inbound: the peer's connection to an app port lands on -z…
    assert!(
        connect_as(&peer, 0, "10.9.0.1:8080"),
        "inbound was not captured"
    );
    assert_eq!(inbound.next().as_deref(), Some("10.9.0.1:8080"));
    // …but not one to meshgate's readiness port (nothing listens there).
    assert!(!connect_as(&peer, 0, "10.9.0.1:15021"));
    inbound.nothing_more("the readiness port was captured");

    // An excluded outbound port is not captured, the others still are.
    let mut exclude = apply.to_vec();
    exclude.extend(["-o", "80"]);
    pod.meshgate_ok(&exclude);
    assert!(
        !connect_as(&pod, 1000, "10.9.0.2:80"),
        "an excluded port was captured"
    );
    assert!(connect_as(&pod, 1000, "10.9.0.2:443"));
    assert_eq!(outbound.next().as_deref(), Some("10.9.0.2:443"));

    // After cleanup nothing is captured.
    pod.meshgate_ok(&["--backend", backend, "--cleanup"]);
    assert!(!connect_as(&pod, 1000, "10.9.0.2:443"));
    outbound.nothing_more("captured after cleanup");
}

#[test]
fn iptables_capture_lands_on_the_proxy_ports() {
    capture_lands_on_the_proxy_ports(
        "iptables_capture_lands_on_the_proxy_ports",
        "iptables",
        &["iptables-save", "iptables-restore"],
    );
}

#[test]
fn nftables_capture_lands_on_the_proxy_ports() {
    capture_lands_on_the_proxy_ports(
        "nftables_capture_lands_on_the_proxy_ports",
        "nftables",
        &["nft"],
    );
}

/// Runs `meshgate iptables ARGS` here (no namespace: these are refused
/// before anything runs).
fn refused(args: &[&str]) -> String {
    let mut c = Command::new(BIN);
    c.arg("iptables").args(args);
    let out = common::binary::run_with_timeout(c, Duration::from_secs(10));
    assert_eq!(out.status.code(), Some(2), "{args:?}\n{}", show(&out));
    assert!(out.stdout.is_empty(), "{}", show(&out));
    text(&out.stderr)
}

#[test]
fn bad_flags_are_refused_with_the_flag_and_value() {
    let e = refused(&["-m", "TPROXY", "--dry-run"]);
    assert!(e.contains("--istio-inbound-interception-mode"), "{e}");
    assert!(e.contains("TPROXY is not supported"), "{e}");
    let e = refused(&["-i", "10.0.0.0/8,10.0.0.1", "--dry-run"]);
    assert!(
        e.contains("--istio-service-cidr") && e.contains("'10.0.0.1' is not a CIDR"),
        "{e}"
    );
    let e = refused(&["-b", "8080,15021", "--dry-run", "--backend", "nftables"]);
    assert!(
        e.contains("meshgate iptables: -b/--istio-inbound-ports 15021"),
        "{e}"
    );
    assert!(e.contains("readiness port is never captured"), "{e}");
}

#[test]
fn dry_run_needs_no_privileges_and_help_lists_the_flags() {
    let mut c = Command::new(BIN);
    c.args([
        "iptables",
        "--dry-run",
        "--backend",
        "iptables",
        "--ipv6=false",
    ]);
    let out = common::binary::run_with_timeout(c, Duration::from_secs(10));
    assert!(out.status.success(), "{}", show(&out));
    let printed = text(&out.stdout);
    assert!(
        printed.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT\nCOMMIT\n"),
        "{printed}"
    );
    assert!(!printed.contains("ip6tables"), "{printed}");

    let mut c = Command::new(BIN);
    c.args(["iptables", "--help"]);
    let out = common::binary::run_with_timeout(c, Duration::from_secs(10));
    let help = text(&out.stdout);
    assert!(help.contains("as Istio's istio-iptables does"), "{help}");
    for flag in [
        "--proxy-port",
        "--inbound-capture-port",
        "--proxy-uid",
        "--proxy-gid",
        "--istio-inbound-interception-mode",
        "--istio-inbound-ports",
        "--istio-local-exclude-ports",
        "--istio-local-outbound-ports-exclude",
        "--istio-service-cidr",
        "--istio-service-exclude-cidr",
        "--dry-run",
        "--cleanup",
        "--backend",
        "--ipv6",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help\n{help}");
    }
}
