//! The `meshgate run` process as an operator meets it: a second proxy on
//! the same ports refused while the first keeps serving, SIGTERM draining a
//! tunnel (and logging it), SIGHUP binding and closing Gateway ports with a
//! log line for each.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::standin::fetch;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_meshgate");

/// A free loopback port (bound, then released).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// The proxy's own ports.
#[derive(Clone, Copy)]
struct Ports {
    outbound: SocketAddr,
    admin: SocketAddr,
    stats: SocketAddr,
    ready: SocketAddr,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            outbound: free_addr(),
            admin: free_addr(),
            stats: free_addr(),
            ready: free_addr(),
        }
    }
}

/// A `meshgate run` process, killed when dropped.
struct Running {
    child: Child,
    log: PathBuf,
    ports: Ports,
}

impl Running {
    fn start(dir: &Path, name: &str, ports: Ports, extra: &[String]) -> Running {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(BIN)
            .env_remove("RUST_LOG")
            .env_remove("MESHGATE_LOG_LEVEL")
            .arg("run")
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .args(["--outbound-addr", &ports.outbound.to_string()])
            .args(["--admin-addr", &ports.admin.to_string()])
            .args(["--stats-addr", &ports.stats.to_string()])
            .args(["--ready-addr", &ports.ready.to_string()])
            .args(["--watch-interval", "0s"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn meshgate run");
        Running { child, log, ports }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts a proxy on fresh ports and waits for it to be ready. A port
    /// picked free can be taken by another process before meshgate binds
    /// it; then it starts again on other ports. `make` gives the extra
    /// arguments (and whatever the test keeps of them) for each attempt.
    async fn start_ready<T>(
        dir: &Path,
        name: &str,
        make: impl Fn() -> (Vec<String>, T),
    ) -> (Running, T) {
        let mut last = String::new();
        for attempt in 1..=5 {
            let (extra, kept) = make();
            let mut p = Running::start(dir, &format!("{name}-{attempt}"), Ports::free(), &extra);
            match p.try_ready().await {
                Ok(()) => return (p, kept),
                Err(log) if log.contains("in use") => last = log,
                Err(log) => panic!("meshgate exited early:\n{log}"),
            }
        }
        panic!("meshgate could not bind its ports in 5 attempts; last:\n{last}");
    }

    async fn wait_ready(&mut self) {
        if let Err(log) = self.try_ready().await {
            panic!("meshgate exited early:\n{log}");
        }
    }

    /// Waits for readiness; the log if the process exited first.
    async fn try_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("({status})\n{}", self.log()));
            }
            if let Ok(r) = fetch(self.ports.ready, "GET", "/healthz/ready", Some("localhost")).await
                && r.status == 200
            {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "not ready:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    /// Waits for the process to exit, at most `limit`.
    async fn exited(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "still running after {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the log has a line containing every one of `parts`.
    async fn log_line(&self, parts: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let log = self.log();
            if let Some(l) = log.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return l.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {parts:?}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 app answering `app:<path>`.
async fn app() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(format!(
                                "app:{}",
                                req.uri().path()
                            ))),
                        ))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

/// A plain HTTP Gateway server on config port `port` routing to `app`.
fn gateway(port: u16, app: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: web}}
spec:
  servers:
  - port: {{number: {port}, name: http, protocol: HTTP}}
    hosts: [web.test]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: web}}
spec:
  hosts: [web.test]
  gateways: [web]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {}}}}}
"#,
        app.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_proxy_on_the_same_ports_is_refused_while_the_first_serves() {
    let dir = tempfile::tempdir().unwrap();
    let app = app().await;
    let gw = free_addr();
    std::fs::write(dir.path().join("config.yaml"), gateway(8080, app)).unwrap();
    let ports = Ports::free();
    let map = vec!["--port-map".to_string(), format!("8080={gw}")];
    let mut first = Running::start(dir.path(), "first", ports, &map);
    first.wait_ready().await;
    // Traffic to the first proxy the whole time.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (addr, host, path) in [
                    (ports.outbound, app.to_string(), "/out"),
                    (gw, "web.test".to_string(), "/in"),
                ] {
                    match fetch(addr, "GET", path, Some(&host)).await {
                        Ok(r) if r.status == 200 && r.body == format!("app:{path}") => ok += 1,
                        other => {
                            failed.push(format!("{addr}: {:?}", other.map(|r| (r.status, r.body))))
                        }
                    }
                }
            }
            (ok, failed)
        })
    };
    // The same ports, all of them, then only the Gateway port.
    for (name, second_ports, conflict) in [
        ("second", ports, ports.outbound.to_string()),
        ("third", Ports::free(), gw.to_string()),
    ] {
        let mut second = Running::start(dir.path(), name, second_ports, &map);
        let status = second.exited(Duration::from_secs(10)).await;
        let log = second.log();
        assert!(!status.success(), "{name} must not start:\n{log}");
        assert!(
            log.contains(&conflict) && log.contains("in use by another process"),
            "{name}: the error names the port and says another process holds it:\n{log}"
        );
        assert!(
            !log.contains("listener bound"),
            "{name} bound nothing:\n{log}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    assert!(ok > 0);
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    assert!(
        first.child.try_wait().unwrap().is_none(),
        "the first keeps running"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_tunnel_and_logs_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    std::fs::write(
        dir.path().join("bootstrap.yaml"),
        "terminationDrainDuration: 500ms\n",
    )
    .unwrap();
    let echo = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    };
    let bootstrap = dir.path().join("bootstrap.yaml").display().to_string();
    let (mut p, ()) = Running::start_ready(dir.path(), "proxy", || {
        (vec!["--bootstrap".into(), bootstrap.clone()], ())
    })
    .await;
    let mut s = tokio::net::TcpStream::connect(p.ports.outbound)
        .await
        .unwrap();
    s.write_all(format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 256];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    s.write_all(b"0123456789").await.unwrap();
    s.read_exact(&mut buf[..10]).await.unwrap();
    let started = Instant::now();
    p.signal("TERM");
    let status = p.exited(Duration::from_secs(5)).await;
    assert!(status.success(), "{status}\n{}", p.log());
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "the tunnel got the drain limit, no more: {took:?}"
    );
    let end = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .unwrap();
    assert!(matches!(end, Ok(0) | Err(_)), "{end:?}");
    let line = p
        .log_line(&["access", "connection", "listener=outbound"])
        .await;
    // Every byte of the connection: the CONNECT exchange, then the tunnel.
    let connect_head = format!("CONNECT {echo} HTTP/1.1\r\nHost: {echo}\r\n\r\n").len();
    for field in [
        "destination=PassthroughCluster",
        &format!("upstream={echo}"),
        &format!("bytes_received={}", connect_head + 10),
        "flag=\"drained\"",
        "requests=1",
        "tls=none",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_binds_an_added_gateway_port_and_closes_a_removed_one() {
    let dir = tempfile::tempdir().unwrap();
    let app = app().await;
    std::fs::write(dir.path().join("config.yaml"), gateway(8080, app)).unwrap();
    let (p, (a, b)) = Running::start_ready(dir.path(), "proxy", || {
        let (a, b) = (free_addr(), free_addr());
        let extra = vec![
            "--port-map".into(),
            format!("8080={a}"),
            "--port-map".into(),
            format!("8081={b}"),
        ];
        (extra, (a, b))
    })
    .await;
    assert_eq!(
        fetch(a, "GET", "/a", Some("web.test")).await.unwrap().body,
        "app:/a"
    );
    std::fs::write(dir.path().join("config.yaml"), gateway(8081, app)).unwrap();
    p.signal("HUP");
    let added = p
        .log_line(&["listener added", "inbound port 8081", &b.to_string()])
        .await;
    let removed = p
        .log_line(&["listener removed", "inbound port 8080", &a.to_string()])
        .await;
    p.log_line(&[
        "configuration reloaded",
        "listeners_added=1",
        "listeners_removed=1",
    ])
    .await;
    let r = fetch(b, "GET", "/b", Some("web.test")).await;
    assert_eq!(r.map(|r| r.body).ok().as_deref(), Some("app:/b"), "{added}");
    assert!(
        tokio::net::TcpStream::connect(a).await.is_err(),
        "{a} is closed: {removed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_client_goes_away_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.yaml"), "").unwrap();
    // An upstream that takes requests and never answers.
    let silent = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        addr
    };
    let (p, ()) = Running::start_ready(dir.path(), "proxy", || (Vec::new(), ())).await;
    let mut s = tokio::net::TcpStream::connect(p.ports.outbound)
        .await
        .unwrap();
    let request = format!("GET /abandoned HTTP/1.1\r\nHost: {silent}\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(s);
    let line = p.log_line(&["access", "path=/abandoned"]).await;
    for field in [
        "status=0",
        "flag=\"downstream_disconnect\"",
        "reporter=\"source\"",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    let conn = p
        .log_line(&["access", "connection", "listener=outbound", "requests=1"])
        .await;
    for field in [
        format!("bytes_received={}", request.len()),
        "bytes_sent=0".into(),
        "tls=none".into(),
    ] {
        assert!(conn.contains(&field), "{field} missing: {conn}");
    }
}

/// A ServiceEntry and a DestinationRule with SIMPLE TLS and no
/// `caCertificates` (Istio's IST0128 warning) for `host`.
fn unverified(host: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}}}
spec:
  hosts: [{host}.example.com]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 443}}]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}.example.com
  trafficPolicy: {{tls: {{mode: SIMPLE}}}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_logs_only_the_warnings_that_are_new() {
    let dir = tempfile::tempdir().unwrap();
    let app = app().await;
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, gateway(8080, app) + &unverified("one")).unwrap();
    let (p, ()) = Running::start_ready(dir.path(), "proxy", || {
        (
            vec!["--port-map".into(), format!("8080={}", free_addr())],
            (),
        )
    })
    .await;
    let count = |needle: &str| p.log().lines().filter(|l| l.contains(needle)).count();
    let one = "IST0128: DestinationRule default/one";
    let two = "IST0128: DestinationRule default/two";
    p.log_line(&[one]).await;

    // Nothing changed: the warning is not logged again, and that is said.
    p.signal("HUP");
    p.log_line(&["are not repeated", "unchanged=1"]).await;
    p.log_line(&["configuration reloaded"]).await;
    assert_eq!(count(one), 1, "{}", p.log());

    // A new warning is logged, the old one still not.
    std::fs::write(
        &config,
        gateway(8080, app) + &unverified("one") + &unverified("two"),
    )
    .unwrap();
    p.signal("HUP");
    p.log_line(&[two]).await;
    p.log_line(&["are not repeated", "unchanged=1"]).await;
    assert_eq!(count(one), 1, "{}", p.log());
    assert_eq!(count(two), 1, "{}", p.log());
}
