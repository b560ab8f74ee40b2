//! Path normalisation before routing (MeshConfig `pathNormalization`):
//! every spelling of `/admin` meets the `/admin` route, and the app sees
//! the normalised path, on inbound and outbound listeners.

use super::*;

/// Sends one raw HTTP/1.1 request target and returns (status, body).
async fn raw_get(addr: SocketAddr, host: &str, target: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let got = String::from_utf8_lossy(&read_for(&mut s, Duration::from_secs(5)).await).into_owned();
    let status = got
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{target}: no status in {got:?}"));
    let body = got
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The path the JSON backend saw.
fn seen_path(body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    v["path"].as_str().unwrap().to_string()
}

fn deny_admin(app: SocketAddr) -> String {
    plain_gateway(
        "\"app.test\"",
        &format!(
            "  - match: [{{uri: {{prefix: /admin}}}}]\n    directResponse: {{status: 403}}\n{}",
            route_to(app)
        ),
    )
}

#[tokio::test]
async fn every_spelling_of_a_denied_path_meets_its_route() {
    let app = backend("app").await;
    let p = start(&deny_admin(app), |_| {}).await;
    let addr = p.proxy.inbound()[&8080];
    for target in [
        "/admin",
        "/x/../admin",
        "/./admin",
        "/%2e/admin",
        "/%2E%2E/admin",
        "/%61dmin",
        "/x/%2e%2e/admin/users",
        "/x/..;y/admin",
    ] {
        let (status, body) = raw_get(addr, "app.test", target).await;
        assert_eq!(status, 403, "{target} is denied: {body}");
    }
    // Not the denied route: forwarded, with the normalised path.
    let (status, body) = raw_get(addr, "app.test", "/a/b/../c/%7Euser?q=/../x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        seen_path(&body),
        "/a/c/~user?q=/../x",
        "the query is untouched"
    );
    // An escaped slash is kept in BASE (Istio's table): not /admin.
    let (status, body) = raw_get(addr, "app.test", "/admin%2Fx").await;
    assert_eq!(status, 403, "{body}");
    let (status, body) = raw_get(addr, "app.test", "/x%2F..%2Fadmin").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_path(&body), "/x%2F..%2Fadmin");
    // BASE does not merge slashes: `//admin` is another path (Istio
    // recommends MERGE_SLASHES for this; see the next test).
    let (status, body) = raw_get(addr, "app.test", "//admin").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_path(&body), "//admin");
    // An encoded NUL is refused, counted, and nobody else is affected.
    let (status, _) = raw_get(addr, "app.test", "/a%00b").await;
    assert_eq!(status, 400);
    let m = p.metrics().await;
    assert!(
        m.lines()
            .any(|l| l.starts_with("istio_requests_total") && l.contains("response_code=\"400\"")),
        "the refusal is counted:\n{m}"
    );
    let (status, _) = raw_get(addr, "app.test", "/fine").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn merge_slashes_and_decoding_are_selectable() {
    let app = backend("app").await;
    let p = start(&deny_admin(app), |b| {
        b.path_normalization = meshgate::bootstrap::PathNormalization::MergeSlashes;
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    for target in ["//admin", "/x/..//admin", "///./admin"] {
        assert_eq!(raw_get(addr, "app.test", target).await.0, 403, "{target}");
    }
    let (_, body) = raw_get(addr, "app.test", "/a//b").await;
    assert_eq!(seen_path(&body), "/a/b");
    // `%2F` is still an escaped slash in MERGE_SLASHES.
    assert_eq!(raw_get(addr, "app.test", "/x%2F..%2Fadmin").await.0, 200);

    let p = start(&deny_admin(app), |b| {
        b.path_normalization = meshgate::bootstrap::PathNormalization::DecodeAndMergeSlashes;
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    for target in ["/x%2F..%2Fadmin", "/%2Fadmin", "/x%5C..%5Cadmin"] {
        assert_eq!(raw_get(addr, "app.test", target).await.0, 403, "{target}");
    }

    let p = start(&deny_admin(app), |b| {
        b.path_normalization = meshgate::bootstrap::PathNormalization::None;
    })
    .await;
    let addr = p.proxy.inbound()[&8080];
    let (status, body) = raw_get(addr, "app.test", "/x/../admin").await;
    assert_eq!(status, 200, "NONE forwards the path as sent");
    assert_eq!(seen_path(&body), "/x/../admin");
}

#[tokio::test]
async fn outbound_requests_are_normalised_too() {
    let app = backend("app").await;
    let p = start("", |_| {}).await;
    let host = format!("127.0.0.1:{}", app.port());
    let (status, body) = raw_get(p.proxy.outbound, &host, "/x/./y/../%7Ez").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_path(&body), "/x/~z");
    // Absolute-form (HTTP_PROXY): the path is normalised, the authority kept.
    let (status, body) = raw_get(p.proxy.outbound, &host, &format!("http://{host}/a/../b")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(seen_path(&body), "/b");
}
