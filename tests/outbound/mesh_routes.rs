//! Mesh VirtualServices on the app's traffic: HTTP routes by path and
//! header to two TLS upstreams (origination as each DestinationRule says),
//! rewrites and header operations, 404 when no route matches, and CONNECT
//! tunnels steered by a TLS route (the ClientHello's SNI) or a TCP route.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A ServiceEntry for `host` (port 80, TLS originated to 443 on the
/// stand-in at `port`) and its DestinationRule trusting `ca`.
fn tls_backend(host: &str, port: u16, ca: &std::path::Path) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}}}
spec:
  hosts: [{host}]
  ports: [{{number: 80, name: http, protocol: HTTP, targetPort: 443}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: {host}}}
spec:
  host: {host}
  trafficPolicy:
    tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
"#,
        ca = ca.display()
    )
}

/// A ServiceEntry for `host` on `number` (protocol `protocol`) reached at
/// 127.0.0.1:`port`, no TLS of meshgate's own.
fn plain_backend(host: &str, number: u16, protocol: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: {host}}}
spec:
  hosts: [{host}]
  ports: [{{number: {number}, name: p, protocol: {protocol}}}]
  resolution: STATIC
  endpoints: [{{address: 127.0.0.1, ports: {{p: {port}}}}}]
---
"#
    )
}

/// A mesh VirtualService for HOST with `spec` after its hosts.
fn mesh_vs(spec: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: api}}\nspec:\n  \
         hosts: [{HOST}]\n{spec}"
    )
}

/// Two TLS stand-ins (both certified for HOST: the app addressed HOST, so
/// that is the SNI and the name checked) behind v1.backend.test and
/// rest.backend.test, and a proxy with `routes` (the VirtualService's
/// `http:` block).
async fn two_upstreams(routes: &str) -> (TestProxy, StandIn, StandIn) {
    let pki = pki();
    let v1 = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let rest = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = tls_backend("v1.backend.test", v1.addr.port(), &pki.ca_file)
        + &tls_backend("rest.backend.test", rest.addr.port(), &pki.ca_file)
        + &mesh_vs(routes);
    (proxy(pki, &yaml).await, v1, rest)
}

/// A request as the app sends it (origin-form, `Host: host`) with extra
/// headers: status, headers and body.
async fn get_with(
    p: &TestProxy,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, http::HeaderMap, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(p.proxy.outbound)
        .await
        .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header(http::header::HOST, host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(
            req.body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status.as_u16(),
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn a_path_prefix_goes_to_one_upstream_and_the_rest_to_another() {
    let (p, v1, rest) = two_upstreams(
        r#"  http:
  - match: [{uri: {prefix: /v1/}}]
    rewrite: {uri: /api/}
    headers: {response: {add: {x-routed: v1}}}
    route: [{destination: {host: v1.backend.test}}]
  - route: [{destination: {host: rest.backend.test}}]
"#,
    )
    .await;
    let (status, headers, body) = get_with(&p, HOST, "/v1/users?page=2", &[]).await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(
        v["path"], "/api/users?page=2",
        "rewritten prefix, query kept"
    );
    assert_eq!(
        v["tls"]["sni"], HOST,
        "meshgate's TLS, SNI of the app's host"
    );
    assert_eq!(headers["x-routed"], "v1");
    assert_eq!((v1.requests(), rest.requests()), (1, 0));

    // Dot segments are normalised before matching: /v1/../v2 is /v2.
    let (status, headers, body) = get_with(&p, HOST, "/v1/../v2/orders", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["path"], "/v2/orders");
    assert!(!headers.contains_key("x-routed"));
    assert_eq!((v1.requests(), rest.requests()), (1, 1));
    assert!(v1.failures().is_empty() && rest.failures().is_empty());
}

#[tokio::test]
async fn a_header_match_picks_the_upstream() {
    let (p, v1, rest) = two_upstreams(
        r#"  http:
  - match: [{headers: {x-canary: {exact: "yes"}}}]
    route: [{destination: {host: v1.backend.test}}]
  - route: [{destination: {host: rest.backend.test}}]
"#,
    )
    .await;
    for (canary, want) in [(Some("yes"), (1, 0)), (Some("no"), (1, 1)), (None, (1, 2))] {
        let headers: Vec<(&str, &str)> = canary.map(|c| ("x-canary", c)).into_iter().collect();
        let (status, _, body) = get_with(&p, HOST, "/x", &headers).await;
        assert_eq!(status, 200, "{canary:?}: {body}");
        assert_eq!((v1.requests(), rest.requests()), want, "{canary:?}");
    }
}

#[tokio::test]
async fn no_matching_route_is_404() {
    let (p, v1, rest) = two_upstreams(
        r#"  http:
  - match: [{uri: {prefix: /v1/}}]
    route: [{destination: {host: v1.backend.test}}]
"#,
    )
    .await;
    let (status, headers, body) = get_with(&p, HOST, "/v2/x", &[]).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(headers["x-meshgate-error"], "no_route");
    assert!(body.contains("VirtualService/default/api"), "{body}");
    assert_eq!((v1.requests(), rest.requests()), (0, 0));
    assert_eq!(get_with(&p, HOST, "/v1/x", &[]).await.0, 200);
}

#[tokio::test]
async fn request_header_operations_and_the_authority_rewrite_reach_the_upstream() {
    let pki = pki();
    let echo = meshgate::standin::echo_service().await;
    let yaml = plain_backend("echo.backend.test", 80, "HTTP", echo.port())
        + &mesh_vs(
            r#"  http:
  - rewrite: {authority: echo.backend.test}
    headers:
      request: {set: {x-route: mesh}, remove: [x-secret]}
    route:
    - destination: {host: echo.backend.test}
      headers: {request: {add: {x-dest: echo}}}
"#,
        );
    let p = proxy(pki, &yaml).await;
    let (status, _, body) = get_with(
        &p,
        HOST,
        "/hello",
        &[("x-secret", "s3cr3t"), ("x-route", "app")],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["path"], "/hello");
    assert_eq!(v["headers"]["host"], "echo.backend.test");
    assert_eq!(v["headers"]["x-route"], "mesh");
    assert_eq!(v["headers"]["x-dest"], "echo");
    assert!(v["headers"].get("x-secret").is_none(), "{body}");
}

#[tokio::test]
async fn a_tls_route_steers_a_tunnel_by_the_client_hellos_sni() {
    let pki = pki();
    let direct = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let firewall = upstream(&pki, LeafSpec::server(&[HOST])).await;
    let yaml = plain_backend(HOST, 443, "TLS", direct.addr.port())
        + &plain_backend("firewall.test", 443, "TLS", firewall.addr.port())
        + &mesh_vs(
            r#"  tls:
  - match: [{sniHosts: [api.external.test], port: 443}]
    route: [{destination: {host: firewall.test}}]
"#,
        );
    let ca_pem = pki.ca.cert_pem.clone();
    let p = proxy(pki, &yaml).await;
    let roots = meshgate::creds::roots_from_pem(ca_pem.as_bytes()).unwrap();
    let cfg = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let s = connect_tunnel(&p, &format!("{HOST}:443")).await;
    let mut tls = tokio_rustls::TlsConnector::from(cfg.clone())
        .connect(HOST.try_into().unwrap(), s)
        .await
        .expect("the app's own TLS reaches the route's destination");
    tls.write_all(
        format!("GET /through HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    let _ = tls.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 200") && out.contains("/through"),
        "{out}"
    );
    assert_eq!(firewall.last().unwrap().sni.as_deref(), Some(HOST));
    assert_eq!(
        direct.handshakes(),
        0,
        "the tunnel did not go to the host itself"
    );

    // A ClientHello for a name no TLS route takes: the tunnel is closed
    // (Envoy finds no filter chain), it does not fall back to the host.
    let s = connect_tunnel(&p, &format!("{HOST}:443")).await;
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(cfg).connect("other.external.test".try_into().unwrap(), s),
    )
    .await
    .expect("closed promptly");
    assert!(refused.is_err(), "no route for that SNI");
    assert_eq!(direct.handshakes() + firewall.handshakes(), 1);
}

#[tokio::test]
async fn a_tcp_route_steers_a_tunnel_of_plain_bytes() {
    let pki = pki();
    let plain = plain_server().await;
    let yaml = plain_backend("db.backend.test", 9000, "TCP", plain.port())
        + &mesh_vs(
            r#"  tcp:
  - match: [{port: 9000}]
    route: [{destination: {host: db.backend.test}}]
"#,
        );
    let p = proxy(pki, &yaml).await;
    let mut s = connect_tunnel(&p, &format!("{HOST}:9000")).await;
    s.write_all(b"GET /tcp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(5),
        s.read_to_string(&mut out),
    )
    .await
    .expect("answered")
    .ok();
    assert!(out.ends_with("plain:/tcp"), "{out}");
    let m = p.metrics().await;
    assert!(
        m.contains("destination_service=\"db.backend.test\""),
        "the tunnel is counted for its route's destination: {m}"
    );
}

#[tokio::test]
async fn a_tcp_route_does_not_hold_up_a_server_that_speaks_first() {
    let pki = pki();
    // A server that greets before the client says anything (SMTP, MySQL).
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            let _ = s.write_all(b"220 banner\r\n").await;
        }
    });
    let yaml = plain_backend("smtp.backend.test", 2525, "TCP", port)
        + &mesh_vs(
            r#"  tcp:
  - match: [{port: 2525}]
    route: [{destination: {host: smtp.backend.test}}]
"#,
        );
    let p = TestProxy::start(pki.dir, &yaml, |b| {
        b.request_header_timeout = std::time::Duration::from_secs(30)
    })
    .await
    .unwrap();
    let mut s = connect_tunnel(&p, &format!("{HOST}:2525")).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the greeting arrives without waiting for the client")
        .unwrap();
    assert_eq!(&buf[..n], b"220 banner\r\n");
}
