//! Faulty files written while serving (catalogue 2.E): a corrupt server
//! certificate and a half-written configuration are refused, counted, and
//! the last good ones keep serving open and new connections.

use meshgate::creds::{CertInfo, certs_from_pem};
use meshgate::test_util::HttpsConn;

use super::*;

const WATCH: Duration = Duration::from_millis(100);
const RELOADS: &str = "meshgate_config_reloads_total";

/// A Gateway whose files are watched every [`WATCH`], after the watcher's
/// first look (which reloads once).
async fn watched_gateway() -> Gateway {
    let g = gateway(&[HOST], &[], |b| b.watch_interval = WATCH).await;
    wait_metric(&g.p, "the watcher's first reload", |m| {
        metric_sum(m, RELOADS, &[]) >= 1.0
    })
    .await;
    g
}

/// The SHA-256 of the certificate a new connection is shown, after a
/// successful request on it.
async fn served_certificate(g: &Gateway) -> String {
    let tls = tls_connect(g.addr, &g.client(HOST))
        .await
        .expect("TLS handshake");
    let der = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    let mut conn = HttpsConn::new(tls, false).await.unwrap();
    let r = conn.get(HOST, "/probe", &[]).await.expect("a request");
    assert_eq!(r.status, 200, "{}", r.body);
    CertInfo::parse(&der).unwrap().sha256
}

fn sha256_of(pem: &str) -> String {
    CertInfo::parse(&certs_from_pem(pem.as_bytes()).unwrap()[0])
        .unwrap()
        .sha256
}

/// Reloads that did not put the new files in service.
fn refused(m: &str) -> f64 {
    metric_sum(m, RELOADS, &["result=\"failure\""])
        + metric_sum(m, RELOADS, &["result=\"partial\""])
}

/// Writes `text` over `path`, then waits until the reload it causes is
/// refused; checks that the old certificate keeps serving an open
/// connection and new ones throughout; then restores `good` and waits for
/// a clean reload.
async fn refused_while_serving(g: &Gateway, path: &std::path::Path, text: &str, good: &str) {
    let old = sha256_of(&g.leaf.cert_pem);
    assert_eq!(served_certificate(g).await, old);
    let mut open = HttpsConn::new(tls_connect(g.addr, &g.client(HOST)).await.unwrap(), false)
        .await
        .unwrap();
    assert_eq!(open.get(HOST, "/open", &[]).await.unwrap().status, 200);
    let before = refused(&g.p.metrics().await);
    let bystander = g.bystander();

    std::fs::write(path, text).unwrap();
    wait_metric(
        &g.p,
        "the broken file is refused and the config marked stale",
        |m| refused(m) > before && metric_sum(m, "meshgate_config_stale", &[]) == 1.0,
    )
    .await;
    // Several watch intervals later it is still refused, never published.
    for _ in 0..4 {
        assert_eq!(
            served_certificate(g).await,
            old,
            "the last good certificate serves"
        );
        tokio::time::sleep(WATCH).await;
    }
    let r = open.get(HOST, "/still-open", &[]).await.unwrap();
    assert_eq!(r.status, 200, "the open connection keeps working");
    bystander.finish("while the broken file is on disk").await;

    std::fs::write(path, good).unwrap();
    wait_metric(&g.p, "the restored file is accepted", |m| {
        metric_sum(m, "meshgate_config_stale", &[]) == 0.0
    })
    .await;
    assert_eq!(served_certificate(g).await, old);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_server_certificate_keeps_the_last_good_one() {
    bounded(async {
        let g = watched_gateway().await;
        let cert = g.p.path("server.crt");
        let good = g.leaf.cert_pem.clone();
        // Half a PEM block: what a writer caught mid-write leaves.
        let half = &good[..good.len() / 2];
        refused_while_serving(&g, &cert, half, &good).await;
        // The credential kept its previous version: a partial reload.
        let m = g.p.metrics().await;
        assert!(
            metric_sum(&m, RELOADS, &["result=\"partial\""]) >= 1.0,
            "{m}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_written_config_keeps_the_last_good_one() {
    bounded(async {
        let g = watched_gateway().await;
        let config = g.p.config_path();
        let good = std::fs::read_to_string(&config).unwrap();
        let half = &good[..good.len() / 2];
        refused_while_serving(&g, &config, half, &good).await;
        let m = g.p.metrics().await;
        assert!(
            metric_sum(&m, RELOADS, &["result=\"failure\""]) >= 1.0,
            "{m}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_or_mismatched_server_certificate_keeps_the_last_good_one() {
    bounded(async {
        let g = watched_gateway().await;
        let cert = g.p.path("server.crt");
        let good = g.leaf.cert_pem.clone();
        // A well-formed certificate for the same name that cannot be put
        // in service: expired, then one whose key is not the key on disk.
        let expired = g.ca.issue(&LeafSpec::server(&[HOST]).expired()).cert_pem;
        let other_key = g.ca.issue(&LeafSpec::server(&[HOST])).cert_pem;
        for (what, bad) in [("expired", expired), ("key mismatch", other_key)] {
            let failed = |m: &str| {
                metric_sum(
                    m,
                    "meshgate_cert_reloads_total",
                    &["result=\"failure\"", "server.crt"],
                )
            };
            let before = failed(&g.p.metrics().await);
            refused_while_serving(&g, &cert, &bad, &good).await;
            let m = g.p.metrics().await;
            assert!(
                failed(&m) > before,
                "{what}: the refused certificate is counted\n{m}"
            );
            assert!(
                metric_sum(&m, RELOADS, &["result=\"partial\""]) >= 1.0,
                "{what}\n{m}"
            );
        }
    })
    .await;
}
