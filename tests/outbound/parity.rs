//! ServiceEntries Istio accepts but meshgate cannot give endpoints to fail
//! closed: a `workloadSelector` (meshgate has no workload registry) or
//! resolution STATIC without endpoints is a 503, never the host resolved
//! by DNS.

use super::*;

/// A ServiceEntry for `localhost:{port}` whose spec ends with `tail`.
fn localhost_entry(port: u16, tail: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: selected
spec:
  hosts: [localhost]
  ports:
  - number: {port}
    name: http
    protocol: HTTP
{tail}
"#
    )
}

#[tokio::test]
async fn entries_without_endpoints_answer_503_and_go_nowhere() {
    // A server where DNS resolution of the host would lead.
    let server = plain_server().await;
    let port = server.port();
    for tail in [
        "  resolution: DNS\n  workloadSelector:\n    labels: {app: db}",
        "  resolution: STATIC\n  workloadSelector:\n    labels: {app: db}",
        "  resolution: STATIC",
    ] {
        let p = TestProxy::start(tempdir(), &localhost_entry(port, tail), |_| {})
            .await
            .unwrap_or_else(|e| panic!("{tail}: {e}"));
        let got = p.get(&format!("localhost:{port}"), "/secret").await;
        assert_eq!(got.status, 503, "{tail}: {got:?}");
        assert_eq!(
            got.headers
                .get("x-meshgate-error")
                .and_then(|v| v.to_str().ok()),
            Some("no_endpoints"),
            "{tail}: {got:?}"
        );
        assert!(!got.body.contains("plain:/secret"), "{tail}: {got:?}");
    }
    // The same entry without a selector resolves the host: the server is
    // there (so the 503s above are the missing endpoints, not the server).
    let p = TestProxy::start(
        tempdir(),
        &localhost_entry(port, "  resolution: DNS"),
        |_| {},
    )
    .await
    .unwrap();
    let got = p.get(&format!("localhost:{port}"), "/secret").await;
    assert_eq!((got.status, got.body.as_str()), (200, "plain:/secret"));
}
