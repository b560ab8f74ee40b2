//! `meshgate run --kube` as the binary: not ready until the first sync,
//! then serving; SIGTERM ends it cleanly.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshgate::standin::fetch;

use super::common::binary::meshgate;
use super::common::free_addr;
use super::proxy::*;

/// The process, killed (by its own id) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_kube_serves_once_synced_and_stops_on_sigterm() {
    let e = Egress::start("one.example.test").await;
    e.fake
        .deny("destinationrules.networking.istio.io", Some("default"));
    let dir = meshgate::test_util::tempdir();
    let kubeconfig = e.fake.kubeconfig(dir.path());
    let (outbound, ready) = (free_addr(), free_addr());
    let mut cmd: Command = meshgate();
    cmd.args(["run", "--kube", "--namespace", "default", "--kubeconfig"])
        .arg(&kubeconfig)
        .args([
            "--outbound-traffic-policy",
            "REGISTRY_ONLY",
            "--watch-interval",
            "0s",
        ])
        .args(["--outbound-addr", &outbound.to_string()])
        .args(["--admin-addr", &free_addr().to_string()])
        .args(["--stats-addr", &free_addr().to_string()])
        .args(["--ready-addr", &ready.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut p = Running(cmd.spawn().expect("spawn meshgate"));

    let body = wait_for("readiness naming what it waits for", || async {
        let r = fetch(ready, "GET", "/healthz/ready", Some("localhost"))
            .await
            .ok()?;
        (r.status == 503
            && r.body
                .contains("destinationrules.networking.istio.io in default (forbidden"))
        .then_some(r.body)
    })
    .await;
    assert!(body.contains("grant get/list/watch"), "{body}");
    let r = fetch(outbound, "GET", "/", Some(HOST)).await.unwrap();
    assert_eq!(
        r.status, 502,
        "nothing served before the first sync: {}",
        r.body
    );

    e.fake
        .allow("destinationrules.networking.istio.io", Some("default"));
    wait_for("ready", || async {
        let r = fetch(ready, "GET", "/healthz/ready", Some("localhost"))
            .await
            .ok()?;
        (r.status == 200).then_some(())
    })
    .await;
    let r = fetch(outbound, "GET", "/", Some(HOST)).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("one.example.test"), "{}", r.body);

    let term = Command::new("kill")
        .args(["-TERM", &p.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(term.success());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = p.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(8),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status:?}");
}
