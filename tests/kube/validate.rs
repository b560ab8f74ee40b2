//! `meshgate validate --kube`: one list of everything, checked as `run
//! --kube` loads it, errors named `<namespace>/<Kind>/<name>`.

use std::time::Duration;

use super::common::binary::{meshgate, run_with_timeout, show, text};
use super::proxy::*;

async fn validate(e: &Egress, extra: &[&str]) -> std::process::Output {
    let dir = meshgate::test_util::tempdir();
    let kubeconfig = e.fake.kubeconfig(dir.path());
    let mut cmd = meshgate();
    cmd.args([
        "validate",
        "--kube",
        "--namespace",
        "default",
        "--kubeconfig",
    ])
    .arg(&kubeconfig)
    .args(extra);
    tokio::task::spawn_blocking(move || {
        let out = run_with_timeout(cmd, Duration::from_secs(20));
        drop(dir);
        out
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_lists_once_and_names_objects() {
    let e = Egress::start("one.example.test").await;
    let out = validate(&e, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("ok: 1 ServiceEntry, 1 DestinationRule"),
        "{}",
        show(&out)
    );
    assert!(
        !e.fake.requests().iter().any(|r| r.contains("watch=")),
        "one list, no watch: {:#?}",
        e.fake.requests()
    );

    let mut broken = destination_rule("x");
    broken["spec"]["host"] = serde_json::Value::Null;
    e.fake.apply(broken);
    let out = validate(&e, &["--strict"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let err = text(&out.stderr);
    assert!(
        err.lines()
            .any(|l| l.starts_with("error: default/DestinationRule/api: spec.host")),
        "{}",
        show(&out)
    );

    e.fake
        .deny("serviceentries.networking.istio.io", Some("istio-system"));
    let out = validate(&e, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        text(&out.stderr).contains(
            "error: forbidden to list serviceentries.networking.istio.io in namespace istio-system: grant get/list/watch on serviceentries.networking.istio.io in namespace istio-system"
        ),
        "{}",
        show(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_reads_the_cluster_as_validate_does() {
    let e = Egress::start("one.example.test").await;
    let dir = meshgate::test_util::tempdir();
    let kubeconfig = e.fake.kubeconfig(dir.path());
    let mut cmd = meshgate();
    cmd.args([
        "explain",
        "--kube",
        "--namespace",
        "default",
        "--kubeconfig",
    ])
    .arg(&kubeconfig)
    .args(["outbound", &format!("http://{HOST}/")]);
    let out = tokio::task::spawn_blocking(move || run_with_timeout(cmd, Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("default/ServiceEntry/api")
            && stdout.contains("default/DestinationRule/api")
            && stdout.contains("one.example.test"),
        "{}",
        show(&out)
    );
}
