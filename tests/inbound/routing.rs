//! VirtualService HTTP routing; plain HTTP servers and httpsRedirect.

use super::*;

// ===================================================================
// 7. VirtualService HTTP routing
// ===================================================================

struct RouteFixture {
    p: TestProxy,
    o: ClientOpts,
}

async fn route_fixture() -> RouteFixture {
    let ca = DevCa::new("route CA");
    let dir = tempdir();
    let a = backend("A", Duration::ZERO).await.port();
    let b = backend("B", Duration::ZERO).await.port();
    let slow = backend("slow", Duration::from_secs(3)).await.port();
    let tls = simple_tls(
        dir.path(),
        &ca.issue(&LeafSpec::server(&["svc.test", "svc2.test"])),
        "srv",
    );
    let to = |port: u16| {
        format!("    route:\n    - destination: {{host: 127.0.0.1, port: {{number: {port}}}}}\n")
    };
    let yaml = gateway(&[server(443, "HTTPS", &["svc.test", "svc2.test"], &tls)])
        + &format!(
            r#"---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: routes
  namespace: default
spec:
  hosts: [svc.test, svc2.test]
  gateways: [ingress]
  http:
  - name: by-authority
    match:
    - authority: {{exact: svc2.test}}
{to_b}  - name: exact
    match:
    - uri: {{exact: /exact}}
{to_a}  - name: regex
    match:
    - uri: {{regex: "/re/[0-9]+"}}
{to_b}  - name: header
    match:
    - headers: {{x-pick: {{exact: b}}}}
{to_b}  - name: method
    match:
    - method: {{exact: POST}}
      uri: {{prefix: /m/}}
{to_b}  - name: rewrite
    match:
    - uri: {{prefix: /api/}}
    rewrite: {{uri: /v2/}}
{to_a}  - name: rewrite-authority
    match:
    - uri: {{prefix: /moved-host/}}
    rewrite: {{authority: inner.test}}
{to_a}  - name: header-ops
    match:
    - uri: {{prefix: /hdr}}
    headers:
      request:
        set: {{x-set: one}}
        add: {{x-add: two}}
        remove: [x-drop]
      response:
        set: {{x-resp: three}}
{to_a}  - name: split
    match:
    - uri: {{prefix: /split}}
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {a}}}}}
      weight: 50
    - destination: {{host: 127.0.0.1, port: {{number: {b}}}}}
      weight: 50
  - name: slow
    match:
    - uri: {{prefix: /slow}}
    timeout: 300ms
{to_slow}  - name: no-timeout
    match:
    - uri: {{prefix: /zero}}
    timeout: 0s
{to_a}  - name: redirect
    match:
    - uri: {{prefix: /old}}
    redirect: {{uri: /new, authority: moved.test}}
  - name: direct
    match:
    - uri: {{exact: /direct}}
    directResponse: {{status: 418, body: {{string: short and stout}}}}
"#,
            to_a = to(a),
            to_b = to(b),
            to_slow = to(slow),
        );
    let p = start_ports(dir, &yaml, &[443], |_| {}).await;
    RouteFixture {
        p,
        o: ClientOpts {
            sni: Some("svc.test".into()),
            ca_pem: ca.cert_pem.clone(),
            ..Default::default()
        },
    }
}

#[tokio::test]
async fn virtual_service_match_conditions_pick_the_backend() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound()[&443];
    // (method, host, path, headers, status, backend, path the backend saw)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static [(&'static str, &'static str)],
        u16,
        Option<&'static str>,
        &'static str,
    );
    let table: &[Row] = &[
        ("GET", "svc.test", "/exact", &[], 200, Some("A"), "/exact"),
        (
            "GET",
            "svc.test",
            "/exact?x=1",
            &[],
            200,
            Some("A"),
            "/exact?x=1",
        ),
        ("GET", "svc.test", "/exact/more", &[], 404, None, ""),
        ("GET", "svc.test", "/re/123", &[], 200, Some("B"), "/re/123"),
        ("GET", "svc.test", "/re/12a", &[], 404, None, ""),
        (
            "GET",
            "svc.test",
            "/any",
            &[("x-pick", "b")],
            200,
            Some("B"),
            "/any",
        ),
        ("GET", "svc.test", "/any", &[("x-pick", "c")], 404, None, ""),
        ("POST", "svc.test", "/m/x", &[], 200, Some("B"), "/m/x"),
        ("GET", "svc.test", "/m/x", &[], 404, None, ""),
        (
            "GET",
            "svc.test",
            "/api/users?id=7",
            &[],
            200,
            Some("A"),
            "/v2/users?id=7",
        ),
        ("GET", "svc2.test", "/exact", &[], 200, Some("B"), "/exact"),
        (
            "GET",
            "SVC2.test",
            "/whatever",
            &[],
            200,
            Some("B"),
            "/whatever",
        ),
    ];
    for (method, host, path, headers, status, backend, seen_path) in table {
        let what = format!("{method} {host}{path} {headers:?}");
        let r = send(addr, &f.o, method, host, path, headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, *status, "{what}: {}", r.body);
        if let Some(b) = backend {
            let v = body_json(&r);
            assert_eq!(v["backend"], *b, "{what}");
            assert_eq!(v["method"], *method, "{what}");
            assert_eq!(v["path"], *seen_path, "{what}");
            // The app sees the request's own Host (lower-case here as sent).
            assert_eq!(seen_header(&v, "host"), vec![*host], "{what}");
        } else {
            assert!(
                r.body.contains("no route matched"),
                "{what}: the 404 says why: {}",
                r.body
            );
            assert_eq!(
                r.headers
                    .get("x-meshgate-error")
                    .map(|v| v.to_str().unwrap()),
                Some("no_route"),
                "{what}"
            );
        }
    }
}

#[tokio::test]
async fn virtual_service_rewrites_the_authority() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound()[&443];
    let r = send(addr, &f.o, "GET", "svc.test", "/moved-host/x?q=1", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert_eq!(seen_header(&v, "host"), vec!["inner.test"]);
    assert_eq!(v["path"], "/moved-host/x?q=1", "the path is kept");
}

#[tokio::test]
async fn virtual_service_header_operations() {
    let f = route_fixture().await;
    let r = send(
        f.p.proxy.inbound()[&443],
        &f.o,
        "GET",
        "svc.test",
        "/hdr/x",
        &[
            ("x-set", "zero"),
            ("x-add", "one"),
            ("x-drop", "yes"),
            ("x-keep", "k"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v = body_json(&r);
    assert_eq!(seen_header(&v, "x-set"), vec!["one"], "set overwrites");
    assert_eq!(seen_header(&v, "x-add"), vec!["one", "two"], "add appends");
    assert!(seen_header(&v, "x-drop").is_empty(), "remove: {}", r.body);
    assert_eq!(seen_header(&v, "x-keep"), vec!["k"]);
    let resp: Vec<_> = r.headers.get_all("x-resp").iter().collect();
    assert_eq!(resp, vec!["three"], "response set overwrites the backend's");
}

#[tokio::test]
async fn virtual_service_weights_spread_requests() {
    let f = route_fixture().await;
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..20 {
        let r = send(
            f.p.proxy.inbound()[&443],
            &f.o,
            "GET",
            "svc.test",
            &format!("/split/{i}"),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        *seen
            .entry(body_json(&r)["backend"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    assert!(
        seen.get("A").is_some_and(|n| *n > 0) && seen.get("B").is_some_and(|n| *n > 0),
        "a 50/50 split reaches both backends within 20 requests: {seen:?}"
    );
}

#[tokio::test]
async fn virtual_service_timeout_redirect_and_direct_response() {
    let f = route_fixture().await;
    let addr = f.p.proxy.inbound()[&443];
    let started = Instant::now();
    let r = send(addr, &f.o, "GET", "svc.test", "/slow", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(
        r.headers.get("x-meshgate-error").unwrap(),
        "request_timeout"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the route timeout (300ms) applies: {:?}",
        started.elapsed()
    );
    // `timeout: 0s` is no timeout, as in Istio.
    let r = send(addr, &f.o, "GET", "svc.test", "/zero", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);

    for (path, location) in [
        ("/old", "https://moved.test/new"),
        ("/old?q=1", "https://moved.test/new?q=1"),
    ] {
        let r = send(addr, &f.o, "GET", "svc.test", path, &[])
            .await
            .unwrap();
        assert_eq!(r.status, 301, "{path}: {}", r.body);
        assert_eq!(r.headers.get("location").unwrap(), location, "{path}");
    }

    let r = send(addr, &f.o, "GET", "svc.test", "/direct", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 418);
    assert_eq!(r.body, "short and stout");
}

// ===================================================================
// 8. Plain HTTP servers: hosts and httpsRedirect
// ===================================================================

#[tokio::test]
async fn plain_http_server_hosts_and_https_redirect() {
    let dir = tempdir();
    let b = backend("web", Duration::ZERO).await;
    let yaml = gateway(&[
        server(80, "HTTP", &["web.test"], &[]),
        server(
            80,
            "HTTP",
            &["secure.test"],
            &["httpsRedirect: true".into()],
        ),
    ]) + &route_all("web", &["web.test", "secure.test"], b);
    let p = start_ports(dir, &yaml, &[80], |_| {}).await;
    let addr = p.proxy.inbound()[&80];

    let r = fetch(addr, "GET", "/p?q=1", Some("web.test"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(body_json(&r)["path"], "/p?q=1");
    assert_eq!(
        seen_header(&body_json(&r), "x-forwarded-proto"),
        vec!["http"]
    );

    let r = fetch(addr, "GET", "/p", Some("other.test")).await.unwrap();
    assert_eq!(
        r.status, 404,
        "a host outside the servers' hosts: {}",
        r.body
    );

    let r = fetch(addr, "GET", "/p?q=1", Some("secure.test"))
        .await
        .unwrap();
    assert_eq!(r.status, 301, "{}", r.body);
    assert_eq!(
        r.headers.get("location").unwrap(),
        "https://secure.test/p?q=1"
    );
}
