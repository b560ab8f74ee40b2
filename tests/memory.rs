//! Memory across reloads, on the real binary: a 10,000-service
//! configuration edited and reloaded ten times settles back to what one
//! configuration needs (within 1.2× of the resident size after start),
//! instead of keeping every reload's transient parse; and the memory a
//! load freed is handed back when it ends, not seconds later: the resident
//! size when readiness is first reported, and when each reload is counted,
//! is within 1.3× of the settled size. Each reload follows an edit: a
//! reload of unchanged files keeps the compiled plan and parses nothing.
//!
//! Its own test binary, so nothing else runs beside it.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::devpki::DevCa;
use meshgate::standin::fetch;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
const SERVICES: usize = 10_000;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// 10,000 ServiceEntries and as many DestinationRules originating TLS with
/// one CA file, in 20 files: half port 443 HTTPS with the rule's top-level
/// TLS, half port 80 → 443 with port-level TLS (Istio's egress shape).
fn write_config(dir: &Path, ca: &Path) {
    let ca = ca.display();
    for file in 0..20 {
        let mut yaml = String::new();
        for i in file * SERVICES / 20..(file + 1) * SERVICES / 20 {
            let host = format!("svc-{i:05}.example.com");
            let (ports, policy) = if i % 2 == 0 {
                (
                    "  - {number: 443, name: https, protocol: HTTPS}".to_string(),
                    format!("    tls: {{mode: SIMPLE, sni: {host}, caCertificates: {ca}}}"),
                )
            } else {
                (
                    "  - {number: 80, name: http, protocol: HTTP, targetPort: 443}".to_string(),
                    format!(
                        "    portLevelSettings:\n    - port: {{number: 80}}\n      tls: {{mode: SIMPLE, caCertificates: {ca}}}"
                    ),
                )
            };
            yaml.push_str(&format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc-{i:05}, namespace: default}}\nspec:\n  hosts: [{host}]\n  ports:\n{ports}\n  resolution: DNS\n  location: MESH_EXTERNAL\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc-{i:05}, namespace: default}}\nspec:\n  host: {host}\n  trafficPolicy:\n{policy}\n---\n"
            ));
        }
        std::fs::write(dir.join(format!("services-{file:02}.yaml")), yaml).unwrap();
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// The resident size once it stops falling (background purging runs for
/// some seconds after a load): the lowest of the readings over a quiet
/// stretch, at most 40 s.
async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut low = rss_kib(pid);
    let mut since_low = Instant::now();
    while Instant::now() < deadline && since_low.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        // A new low by more than 1 %: still falling.
        if now * 100 < low * 99 {
            since_low = Instant::now();
        }
        low = low.min(now);
    }
    low
}

async fn reloads(stats: SocketAddr) -> f64 {
    let m = fetch(stats, "GET", "/stats/prometheus", Some("localhost"))
        .await
        .map(|r| r.body)
        .unwrap_or_default();
    m.lines()
        .filter(|l| l.starts_with("meshgate_config_reloads_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rss_after_ten_reloads_of_ten_thousand_services_stays_near_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = DevCa::new("memory CA")
        .write_cert(dir.path(), "ca.pem")
        .unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    write_config(&conf, &ca);
    let (ready, stats) = (free_addr(), free_addr());
    let log = dir.path().join("meshgate.log");
    let mut child = Command::new(BIN)
        .env_remove("RUST_LOG")
        .args(["--log-level", "warn", "run", "--config"])
        .arg(&conf)
        .args(["--outbound-addr", &free_addr().to_string()])
        .args(["--admin-addr", &free_addr().to_string()])
        .args(["--stats-addr", &stats.to_string()])
        .args(["--ready-addr", &ready.to_string()])
        .args(["--watch-interval", "0s"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id();
    let result = async {
        let deadline = Instant::now() + Duration::from_secs(180);
        while !fetch(ready, "GET", "/healthz/ready", Some("localhost"))
            .await
            .is_ok_and(|r| r.status == 200)
        {
            assert!(child.try_wait().unwrap().is_none(), "exited early");
            assert!(Instant::now() < deadline, "not ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let at_ready = rss_kib(pid);
        let start = settled_rss(pid).await;
        let mut after = Vec::new();
        for i in 1..=10 {
            // An edit (a comment), so the reload parses and compiles
            // everything: one of unchanged files keeps the plan in force.
            let file = conf.join(format!("services-{:02}.yaml", i % 20));
            let mut text = std::fs::read_to_string(&file).unwrap();
            text.push_str(&format!("# reload {i}\n"));
            std::fs::write(&file, text).unwrap();
            assert!(
                Command::new("kill")
                    .args(["-HUP", &pid.to_string()])
                    .status()
                    .unwrap()
                    .success()
            );
            let deadline = Instant::now() + Duration::from_secs(180);
            while reloads(stats).await < f64::from(i) {
                assert!(Instant::now() < deadline, "reload {i} did not finish");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            after.push(rss_kib(pid));
        }
        let end = settled_rss(pid).await;
        (at_ready, start, after, end)
    }
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let (at_ready, start, after, end) = result;
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        at_ready * 10 <= start * 13,
        "RSS at readiness {at_ready} KiB vs {start} KiB settled ({:.2}×): the start's transient parse is still resident\n{log}",
        at_ready as f64 / start as f64
    );
    let highest = after.iter().copied().max().unwrap_or_default();
    assert!(
        highest * 10 <= start * 13,
        "RSS right after a reload {highest} KiB vs {start} KiB settled after start ({:.2}×): the reload's transient parse is still resident; after each: {after:?} KiB\n{log}",
        highest as f64 / start as f64
    );
    assert!(
        end * 10 <= start * 12,
        "RSS after 10 reloads {end} KiB vs {start} KiB after start ({:.2}×); right after each reload: {after:?} KiB\n{log}",
        end as f64 / start as f64
    );
    eprintln!(
        "RSS: {at_ready} KiB at readiness, {start} KiB after start, {end} KiB after 10 reloads ({:.2}×); right after each: {after:?}",
        end as f64 / start as f64
    );
}
