//! Resource exhaustion on the real binary (catalogue F7): `meshgate run`
//! under a 64-descriptor limit, flooded with more connections than it has
//! descriptors. Accept errors back off (logged, no busy loop), an open
//! connection keeps working, and new connections are served once the
//! flood goes away.

use std::process::{Child, Command, Stdio};

use meshgate::standin::fetch;

use super::*;

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");
/// The descriptor limit the proxy runs under.
const NOFILE: usize = 64;

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A `meshgate run` process, killed when dropped.
struct Running {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// User + system CPU time so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        // Fields after the command name, which is in parentheses.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    }

    fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn clock_ticks_per_second() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100)
}

/// An HTTP/1.1 keep-alive connection from a client of the Gateway port.
async fn keep_alive(
    addr: SocketAddr,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>> {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
    path: &str,
) -> Result<u16, String> {
    sender.ready().await.map_err(|e| e.to_string())?;
    let req = ::http::Request::get(path)
        .header(::http::header::HOST, "web.hostile.test")
        .body(http_body_util::Empty::new())
        .unwrap();
    let r = sender.send_request(req).await.map_err(|e| e.to_string())?;
    Ok(r.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn descriptor_exhaustion_backs_off_and_recovers() {
    bounded(async {
        let dir = tempdir();
        let app = App::start(Duration::ZERO).await;
        let gw = free_addr();
        let ready = free_addr();
        let stats = free_addr();
        std::fs::write(
            dir.path().join("config.yaml"),
            format!(
                r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  servers:
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: [web.hostile.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.hostile.test]
  gateways: [web]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
                app.addr.port()
            ),
        )
        .unwrap();
        let log = dir.path().join("meshgate.log");
        let child = Command::new("sh")
            .args(["-c", &format!("ulimit -n {NOFILE} && exec \"$0\" \"$@\"")])
            .arg(BIN)
            .env_remove("RUST_LOG")
            .env_remove("MESHGATE_LOG_LEVEL")
            .arg("run")
            .arg("--config")
            .arg(dir.path().join("config.yaml"))
            .args(["--outbound-addr", &free_addr().to_string()])
            .args(["--admin-addr", &free_addr().to_string()])
            .args(["--stats-addr", &stats.to_string()])
            .args(["--ready-addr", &ready.to_string()])
            .args(["--watch-interval", "0s", "--concurrency", "1"])
            .args(["--port-map", &format!("8080={gw}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshgate run");
        let mut proxy = Running { child, log };
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                panic!("meshgate exited ({status}):\n{}", proxy.log());
            }
            if let Ok(r) = fetch(ready, "GET", "/healthz/ready", Some("localhost")).await
                && r.status == 200
            {
                break;
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", proxy.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A client connected before the flood, with a pooled upstream.
        let mut open = keep_alive(gw).await;
        assert_eq!(get_on(&mut open, "/before").await, Ok(200));
        let fds_before = proxy.open_fds();

        // Twice as many connections as the proxy has descriptors: the
        // kernel completes them all (backlog); the proxy runs out.
        let mut flood = Vec::new();
        for _ in 0..2 * NOFILE {
            flood.push(TcpStream::connect(gw).await.unwrap());
        }
        let started = Instant::now();
        while !proxy.log().contains("accept failed") {
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "no accept error logged with {fds_before} descriptors open before the flood:\n{}",
                proxy.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Out of descriptors for two seconds: CPU stays low and the
        // accept errors are a handful, not a busy loop.
        let window = Duration::from_secs(2);
        let (cpu0, errors0) = (proxy.cpu_ticks(), proxy.log().matches("accept failed").count());
        tokio::time::sleep(window).await;
        let (cpu1, errors1) = (proxy.cpu_ticks(), proxy.log().matches("accept failed").count());
        let cpu = Duration::from_millis((cpu1 - cpu0) * 1000 / clock_ticks_per_second());
        eprintln!(
            "out of descriptors for {window:?}: {cpu:?} CPU, {} accept errors logged ({} open before the flood)",
            errors1 - errors0,
            fds_before
        );
        assert!(cpu < window / 4, "{cpu:?} of CPU in {window:?} while out of descriptors");
        assert!(
            errors1 - errors0 <= 20,
            "{} accept errors in {window:?}: no back-off",
            errors1 - errors0
        );
        let log = proxy.log();
        let line = log.lines().find(|l| l.contains("accept failed")).unwrap();
        assert!(line.contains("os error 24") || line.contains("Too many open files"), "{line}");

        // The connection opened before still works.
        assert_eq!(
            get_on(&mut open, "/during").await,
            Ok(200),
            "an open connection while out of descriptors"
        );

        // The flood goes away; new clients are served again.
        drop(flood);
        let recovered = Instant::now();
        loop {
            match tokio::time::timeout(
                Duration::from_secs(1),
                fetch(gw, "GET", "/after", Some("web.hostile.test")),
            )
            .await
            {
                Ok(Ok(r)) if r.status == 200 => break,
                other => assert!(
                    recovered.elapsed() < Duration::from_secs(4),
                    "not served again after the flood: {:?}\n{}",
                    other.map(|r| r.map(|r| r.status)),
                    proxy.log()
                ),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("served again {:?} after the flood closed", recovered.elapsed());
        assert!(proxy.child.try_wait().unwrap().is_none(), "the proxy keeps running");
        assert!(app.seen().iter().any(|l| l.starts_with("GET /after ")));

        // The metrics: the flood connections the proxy did accept were
        // counted and released; only the connection opened before the
        // flood is still open.
        let listener = format!("listener=\"{}_8080\"", gw.ip());
        let settled = Instant::now();
        loop {
            let m = fetch(stats, "GET", "/stats/prometheus", Some("localhost"))
                .await
                .map(|r| r.body)
                .unwrap_or_default();
            let active = metric_sum(&m, "meshgate_downstream_connections_active", &[&listener]);
            let total = metric_sum(&m, "meshgate_downstream_connections_total", &[&listener]);
            if active == 1.0 && total > 3.0 {
                eprintln!("{total} connections accepted on the Gateway port, 1 still open");
                break;
            }
            assert!(
                settled.elapsed() < Duration::from_secs(3),
                "{active} connection(s) open and {total} accepted on the Gateway port after the flood\n{}",
                m.lines()
                    .filter(|l| l.starts_with("meshgate_downstream"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            get_on(&mut open, "/last").await,
            Ok(200),
            "the connection opened before the flood still works"
        );
    })
    .await;
}
