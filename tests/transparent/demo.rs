//! `meshgate demo --transparent`: the seed scenario with real capture, run
//! as a user runs it (the binary, as root), and what it leaves behind.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::binary::{meshgate, run_with_timeout, show, text};
use crate::netns::{self, APP_UID, MESHGATE, Skip};

/// How long one run of the demo may take.
const LIMIT: Duration = Duration::from_secs(15);

/// Whether this machine can run the demo; otherwise prints `skipped:
/// <reason>`, or panics under `CI=true`, as the harness does.
fn can_run() -> bool {
    let Some(Skip(reason)) = netns::require() else {
        return true;
    };
    let ci = std::env::var("CI").unwrap_or_default();
    if ci.eq_ignore_ascii_case("true") || ci == "1" {
        panic!(
            "transparent tests cannot run (CI is set, so this fails instead of skipping): {reason}"
        );
    }
    eprintln!("skipped: {reason}");
    false
}

/// The names of the namespaces the demo with process id `pid` makes.
fn demo_namespaces(pid: u32) -> [String; 2] {
    [
        format!("meshgate-demo-{pid}-pod"),
        format!("meshgate-demo-{pid}-world"),
    ]
}

/// Asserts nothing the demo `pid` made is left: namespaces, their
/// /etc/netns directories, its files.
fn assert_removed(pid: u32, output: &str) {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .expect("ip netns list");
    let list = text(&out.stdout);
    for name in demo_namespaces(pid) {
        assert!(
            !list
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&name)),
            "namespace {name} left behind:\n{list}\n{output}"
        );
        assert!(
            !Path::new("/run/netns").join(&name).exists(),
            "/run/netns/{name} left behind"
        );
        assert!(
            !Path::new("/etc/netns").join(&name).exists(),
            "/etc/netns/{name} left behind"
        );
    }
    let dir = format!("/tmp/meshgate-demo-transparent-{pid}");
    assert!(!Path::new(&dir).exists(), "{dir} left behind");
}

/// `meshgate demo --transparent <args>` started with stdout piped, and a
/// thread handing its lines over.
fn spawn_demo(args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = meshgate()
        .args(["demo", "--transparent"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meshgate demo");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Lines from `rx` into `seen` until one satisfies `want`; that line.
/// Panics with what was seen when `until` passes.
fn wait_line(
    rx: &mpsc::Receiver<String>,
    seen: &mut Vec<String>,
    until: Instant,
    want: impl Fn(&str) -> bool,
) -> String {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if want(&line) {
                    return line;
                }
            }
            Err(e) => panic!("no such line ({e}); the demo printed:\n{}", seen.join("\n")),
        }
    }
}

/// Waits for `child` until `until`, killing it (by its id) when it does
/// not exit.
fn wait_exit(mut child: Child, until: Instant) -> Output {
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("demo output");
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let out = child.wait_with_output().expect("demo output");
            panic!("the demo did not exit in time:\n{}", show(&out));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn demo_help_documents_transparent() {
    let out = meshgate()
        .args(["demo", "--help"])
        .output()
        .expect("demo --help");
    assert!(out.status.success(), "{}", show(&out));
    let help = text(&out.stdout);
    assert!(
        help.contains("--transparent") && help.contains("interceptionMode: REDIRECT"),
        "{help}"
    );
}

#[test]
fn the_transparent_demo_shows_plain_http_captured_and_sent_as_tls() {
    if !can_run() {
        return;
    }
    let mut cmd = meshgate();
    cmd.args(["demo", "--transparent", "--once"]);
    let start = Instant::now();
    let (child_pid, out) = {
        // The demo's process id names its namespaces.
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn meshgate demo");
        let pid = child.id();
        (pid, wait_exit(child, start + LIMIT))
    };
    let shown = show(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let stdout = text(&out.stdout);
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim_start().strip_prefix(name).map(str::trim))
            .unwrap_or_else(|| panic!("no {name:?} line:\n{shown}"))
            .to_string()
    };
    // The app sent plain HTTP; the external service saw TLS with the SNI.
    assert!(
        stdout.contains(&format!("uid {APP_UID} in the pod, no proxy settings"))
            && stdout.contains("curl -sS http://api.external.com/"),
        "{shown}"
    );
    assert!(field("TLS version").starts_with("TLSv1_"), "{shown}");
    assert_eq!(field("SNI"), "api.external.com", "{shown}");
    assert!(
        field("verified name").starts_with("api.external.com "),
        "{shown}"
    );
    assert!(
        field("body").contains(r#""sni":"api.external.com""#),
        "{shown}"
    );
    // Captured: the access log names the address the app dialled.
    let conn = stdout
        .lines()
        .find(|l| l.contains("connection ") && l.contains("original_dst="))
        .unwrap_or_else(|| panic!("no captured connection line:\n{shown}"));
    assert!(
        conn.contains("original_dst=10.99.1.1:80") && conn.contains("protocol=http"),
        "{conn}"
    );
    assert!(start.elapsed() < LIMIT, "took {:?}", start.elapsed());
    assert_removed(child_pid, &shown);
}

#[test]
fn ctrl_c_stops_the_transparent_demo_and_removes_what_it_made() {
    if !can_run() {
        return;
    }
    let until = Instant::now() + LIMIT;
    let (child, rx) = spawn_demo(&[]);
    let pid = child.id();
    let mut seen = Vec::new();
    // The command it offers, run as printed (without sudo: we are root).
    let offered = wait_line(&rx, &mut seen, until, |l| {
        l.trim_start().starts_with("sudo ip netns exec") && l.contains(" curl http://")
    });
    let [pod, _] = demo_namespaces(pid);
    assert!(offered.contains(&pod), "{offered}");
    let argv: Vec<&str> = offered.split_whitespace().skip(1).collect();
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .arg("-sS")
        .stdin(Stdio::null())
        .output()
        .expect("the offered command");
    assert!(out.status.success(), "{offered}: {}", show(&out));
    assert!(
        text(&out.stdout).contains(r#""sni":"api.external.com""#),
        "{}",
        show(&out)
    );
    // The demo prints the access log of that request as it comes.
    wait_line(&rx, &mut seen, until, |l| l.contains("path=/ "));
    wait_line(&rx, &mut seen, until, |l| {
        l.contains("original_dst=10.99.1.1:80") && l.contains("protocol=http")
    });
    // meshgate, in the pod, as uid 1337.
    let pids = Command::new("ip")
        .args(["netns", "pids", &pod])
        .output()
        .expect("ip netns pids");
    let in_pod: Vec<String> = text(&pids.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!in_pod.is_empty(), "nothing runs in the pod");
    let status = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill -INT");
    assert!(status.success());
    let out = wait_exit(child, until);
    // The rest of its stdout (the reader thread ends at its end).
    seen.extend(rx.iter());
    let mut printed = seen.join("\n");
    printed.push('\n');
    printed.push_str(&show(&out));
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        seen.iter().any(|l| l.starts_with("interrupted: ")),
        "{printed}"
    );
    for p in &in_pod {
        assert!(
            !Path::new("/proc").join(p).exists(),
            "process {p} of the pod still runs:\n{printed}"
        );
    }
    assert_removed(pid, &printed);
}

#[test]
fn without_root_the_transparent_demo_says_what_is_missing() {
    if !can_run() {
        return;
    }
    // The binary as an ordinary user (it is readable: the harness runs it
    // as uid 1337 too).
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={APP_UID}"))
        .arg(format!("--regid={APP_UID}"))
        .args([
            "--clear-groups",
            "--",
            MESHGATE,
            "demo",
            "--transparent",
            "--once",
        ])
        .env_remove("RUST_LOG")
        .env_remove("MESHGATE_LOG_LEVEL");
    let out = run_with_timeout(cmd, LIMIT);
    let shown = show(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(out.stdout.is_empty(), "{shown}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "one line: {shown}");
    assert!(
        stderr.starts_with("meshgate demo: --transparent needs root")
            && stderr.contains("sudo meshgate demo --transparent"),
        "{shown}"
    );
}

#[test]
fn a_signal_during_setup_still_removes_everything() {
    if !can_run() {
        return;
    }
    let until = Instant::now() + LIMIT;
    let (child, rx) = spawn_demo(&["--once"]);
    let pid = child.id();
    let [pod, _] = demo_namespaces(pid);
    // As soon as the first namespace exists, well before meshgate is up.
    while !Path::new("/run/netns").join(&pod).exists() {
        assert!(Instant::now() < until, "{pod} never appeared");
        std::thread::sleep(Duration::from_millis(1));
    }
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let out = wait_exit(child, until);
    let seen: Vec<String> = rx.iter().collect();
    let printed = format!("{}\n{}", seen.join("\n"), show(&out));
    assert_eq!(out.status.code(), Some(0), "{printed}");
    assert!(
        seen.iter().any(|l| l.starts_with("terminated: ")),
        "stopped during setup: {printed}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("original_dst=")),
        "it got as far as the request: {printed}"
    );
    assert_removed(pid, &printed);
}

#[test]
fn namespaces_of_a_killed_demo_are_removed_by_the_next() {
    if !can_run() {
        return;
    }
    // The process id of a demo that no longer runs.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    gone.wait().expect("wait");
    let dead = gone.id();
    let [pod, world] = demo_namespaces(dead);
    for name in [&pod, &world] {
        let out = Command::new("ip")
            .args(["netns", "add", name])
            .output()
            .expect("ip netns add");
        assert!(out.status.success(), "{}", show(&out));
    }
    std::fs::create_dir_all(Path::new("/etc/netns").join(&pod)).expect("/etc/netns dir");
    // What the killed demo left running in its pod.
    let mut left = Command::new("ip")
        .args(["netns", "exec", &pod, "sleep", "30"])
        .stdin(Stdio::null())
        .spawn()
        .expect("sleep in the stale pod");
    let start = Instant::now();
    let mut cmd = meshgate();
    cmd.args(["demo", "--transparent", "--once"]);
    let out = run_with_timeout(cmd, LIMIT);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let killed = loop {
        if let Some(status) = left.try_wait().expect("try_wait") {
            break status;
        }
        if start.elapsed() > LIMIT {
            let _ = left.kill();
            panic!("the process in the stale pod still runs");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!killed.success(), "killed, not finished: {killed}");
    for name in [&pod, &world] {
        assert!(
            !Path::new("/run/netns").join(name).exists(),
            "stale namespace {name} left"
        );
    }
    assert!(!Path::new("/etc/netns").join(&pod).exists());
}

#[test]
fn a_binary_uid_1337_cannot_reach_is_run_from_the_demos_directory() {
    if !can_run() {
        return;
    }
    // As under a home directory closed to other users: a 0700 directory
    // (a hard link keeps it cheap; a copy where links do not work).
    let closed = tempfile::tempdir_in(Path::new(MESHGATE).parent().expect("bin dir"))
        .expect("temporary directory");
    let exe = closed.path().join("meshgate");
    if std::fs::hard_link(MESHGATE, &exe).is_err() {
        std::fs::copy(MESHGATE, &exe).expect("copy the binary");
    }
    let mut cmd = Command::new(&exe);
    cmd.args(["demo", "--transparent", "--once"])
        .env_remove("RUST_LOG")
        .env_remove("MESHGATE_LOG_LEVEL");
    let out = run_with_timeout(cmd, LIMIT);
    let shown = show(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.contains(" as uid 1337 in the pod"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no meshgate line: {shown}"));
    assert!(
        line.contains("/tmp/meshgate-demo-transparent-") && line.contains("/meshgate as uid"),
        "{line}"
    );
}
