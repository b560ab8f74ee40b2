//! Matching, rewrites, destinations, headers, redirects and direct responses.

use super::*;

// === matching ===

#[test]
fn match_conditions() {
    let table: Vec<(&str, Vec<(Req, bool)>)> = vec![
        (
            "[{uri: {prefix: /api}}]",
            vec![
                (get("/api"), true),
                (get("/api/x?y=1"), true),
                (get("/apix"), true), // a string prefix, as Envoy
                (get("/ap"), false),
                (get("/API"), false),
            ],
        ),
        (
            "[{uri: {exact: /api}}]",
            vec![
                (get("/api"), true),
                (get("/api?x=1"), true), // the query is not part of the path
                (get("/api/"), false),
                (get("/API"), false),
            ],
        ),
        (
            r#"[{uri: {regex: "/v[0-9]+/.*"}}]"#,
            vec![
                (get("/v1/x"), true),
                (get("/v12/"), true),
                (get("/v1/x?q=1"), true),
                (get("/x/v1/x"), false), // anchored: full match
                (get("/v1"), false),
            ],
        ),
        (
            r#"[{uri: {regex: "/a|/b"}}]"#,
            vec![(get("/a"), true), (get("/b"), true), (get("/a/b"), false)],
        ),
        (
            "[{uri: {prefix: /Api/}, ignoreUriCase: true}]",
            vec![(get("/aPI/x"), true), (get("/api"), false)],
        ),
        (
            "[{uri: {exact: /Api}, ignoreUriCase: true}]",
            vec![
                (get("/API"), true),
                (get("/api?X=1"), true),
                (get("/apix"), false),
            ],
        ),
        (
            r#"[{uri: {regex: "/api/[a-z]+"}, ignoreUriCase: true}]"#,
            vec![(get("/API/Users"), true), (get("/api/1"), false)],
        ),
        (
            "[{authority: {exact: web.example.com}}]",
            vec![
                (get("/"), true),
                (get("/").authority("WEB.Example.com"), true),
                (get("/").authority("web.example.com:8080"), false), // as sent
                (get("/").authority("api.example.com"), false),
            ],
        ),
        (
            "[{authority: {prefix: web.example.com}}]",
            vec![
                (get("/").authority("web.example.com:8080"), true),
                (get("/").authority("Web.Example.Com"), true),
            ],
        ),
        (
            r#"[{authority: {regex: 'web\.example\.com(:[0-9]+)?'}}]"#,
            vec![
                (get("/").authority("web.example.com:8080"), true),
                (get("/").authority("xweb.example.com"), false),
            ],
        ),
        (
            "[{scheme: {exact: https}}]",
            vec![(get("/").scheme("https"), true), (get("/"), false)],
        ),
        (
            "[{method: {exact: POST}}]",
            vec![
                (get("/").method("POST"), true),
                (get("/").method("post"), false), // case-sensitive
                (get("/"), false),
            ],
        ),
        (
            r#"[{method: {regex: "GET|HEAD"}}]"#,
            vec![
                (get("/"), true),
                (get("/").method("HEAD"), true),
                (get("/").method("GETX"), false),
            ],
        ),
        (
            "[{headers: {X-User: {exact: jason}}}]",
            vec![
                (get("/").header("x-user", "jason"), true),
                (get("/").header("x-user", "Jason"), false),
                (get("/"), false), // absent header never matches
            ],
        ),
        (
            "[{headers: {x-ver: {prefix: v2}}}]",
            vec![
                (get("/").header("x-ver", "v2.1"), true),
                (get("/").header("x-ver", "v1"), false),
                (get("/"), false),
            ],
        ),
        (
            r#"[{headers: {x-id: {regex: "[0-9]+"}}}]"#,
            vec![
                (get("/").header("x-id", "123"), true),
                (get("/").header("x-id", "12a"), false),
                (get("/"), false),
            ],
        ),
        (
            "[{headers: {x-list: {exact: 'a,b'}}}]",
            vec![
                // several values are joined with ',' as Envoy does
                (get("/").header("x-list", "a").header("x-list", "b"), true),
                (get("/").header("x-list", "a"), false),
            ],
        ),
        (
            "[{headers: {x-any: {}}}]",
            vec![
                (get("/").header("x-any", ""), true),
                (get("/").header("x-any", "v"), true),
                (get("/"), false),
            ],
        ),
        (
            "[{withoutHeaders: {x-debug: {exact: '1'}}}]",
            vec![
                (get("/"), true),
                (get("/").header("x-debug", "0"), true),
                (get("/").header("x-debug", "1"), false),
            ],
        ),
        (
            "[{withoutHeaders: {x-debug: {}}}]",
            vec![(get("/"), true), (get("/").header("x-debug", "0"), false)],
        ),
        (
            "[{withoutHeaders: {x-debug: {regex: '*'}}}]",
            vec![(get("/"), true), (get("/").header("x-debug", "0"), false)],
        ),
        (
            "[{queryParams: {q: {exact: '1'}}}]",
            vec![
                (get("/p?q=1"), true),
                (get("/p?a=2&q=1"), true),
                (get("/p?q=1&q=2"), true), // the first occurrence counts
                (get("/p?q=2&q=1"), false),
                (get("/p?q=2"), false),
                (get("/p"), false),
                (get("/p?qq=1"), false),
            ],
        ),
        (
            r#"[{queryParams: {v: {regex: "[0-9]+"}, flag: {exact: ""}}}]"#,
            vec![
                (get("/p?v=10&flag"), true),
                (get("/p?v=10&flag="), true),
                (get("/p?v=1x&flag"), false),
                (get("/p?v=10"), false),
            ],
        ),
        (
            "[{port: 8080}]",
            vec![(get("/").port(8080), true), (get("/"), false)],
        ),
        (
            // OR between matches, AND within one
            "[{uri: {prefix: /a}, method: {exact: POST}}, {headers: {x-canary: {exact: '1'}}}]",
            vec![
                (get("/a").method("POST"), true),
                (get("/a"), false),
                (get("/b").header("x-canary", "1"), true),
                (get("/a").header("x-canary", "1"), true),
                (get("/b").method("POST"), false),
            ],
        ),
    ];
    for (matches, cases) in &table {
        let r = route(&with_match(matches));
        for (req, want) in cases {
            assert_eq!(
                r.matched(&req.view()).is_some(),
                *want,
                "match {matches}\nrequest {} {}://{}{} port {} headers {:?}",
                req.method,
                req.scheme,
                req.authority,
                req.path,
                req.port,
                req.headers
            );
        }
    }
}

#[test]
fn route_without_matches_matches_everything() {
    let r = route(&format!("- {TO}"));
    assert!(r.matches.is_empty());
    for req in [get("/"), get("/x?y").method("DELETE").port(9)] {
        assert_eq!(
            r.matched(&req.view()),
            Some(Matched {
                uri_prefix: Some("/")
            })
        );
    }
}

#[test]
fn matched_reports_the_prefix_of_the_match_that_fit() {
    let table = [
        ("[{uri: {prefix: /api/}}]", "/api/x", Some("/api/")),
        ("[{uri: {exact: /api}}]", "/api", None),
        (r#"[{uri: {regex: "/a.*"}}]"#, "/abc", None),
        // no uri condition: Envoy's prefix "/"
        ("[{method: {exact: GET}}]", "/abc", Some("/")),
        (
            "[{uri: {prefix: /one}}, {uri: {prefix: /two}}]",
            "/two/x",
            Some("/two"),
        ),
    ];
    for (matches, path, want) in table {
        let r = route(&with_match(matches));
        let m = r.matched(&get(path).view()).expect("matches");
        assert_eq!(m.uri_prefix, want, "{matches} {path}");
    }
}

#[test]
fn gateways_filter_matches() {
    let http = "
        - match:
          - uri: {prefix: /edge}
            gateways: [edge]
          - uri: {prefix: /mesh}
            gateways: [mesh]
          - uri: {prefix: /both}
          route: [{destination: {host: app.example.com}}]
    ";
    let only = |name: &'static str| move |g: &[String]| g.is_empty() || g.iter().any(|x| x == name);
    let (mesh, diag) = compile_at(http, 0, &only("mesh"));
    assert!(diag.errors.is_empty());
    let mesh = mesh.expect("mesh route");
    assert_eq!(mesh.matches.len(), 2);
    assert!(mesh.matched(&get("/mesh").view()).is_some());
    assert!(mesh.matched(&get("/both").view()).is_some());
    assert!(mesh.matched(&get("/edge").view()).is_none());

    let (edge, _) = compile_at(http, 0, &only("edge"));
    let edge = edge.expect("edge route");
    assert!(edge.matched(&get("/edge").view()).is_some());
    assert!(edge.matched(&get("/mesh").view()).is_none());

    // Every match belongs to another gateway: no route, and no error even
    // though that match is broken.
    let elsewhere = "
        - match:
          - uri: {regex: '('}
            gateways: [edge]
          route: [{destination: {host: app.example.com}}]
    ";
    let (plan, diag) = compile_at(elsewhere, 0, &only("mesh"));
    assert!(plan.is_none());
    assert!(diag.errors.is_empty() && diag.warnings.is_empty());

    // A route without matches applies to every listener.
    let (plan, _) = compile_at(&format!("- {TO}"), 0, &|_: &[String]| false);
    assert!(plan.is_some());
}

// === rewrite ===

#[test]
fn rewrite_path() {
    let table = [
        (
            "[{uri: {prefix: /api/}}]",
            "/",
            "/api/v1/x?y=1",
            "/v1/x?y=1",
        ),
        ("[{uri: {exact: /api/v1}}]", "/v2", "/api/v1?y=1", "/v2?y=1"),
        (
            r#"[{uri: {regex: "/v1/.*"}}]"#,
            "/new",
            "/v1/abc?x",
            "/new?x",
        ),
        // Envoy swaps exactly the prefix: "/api" + "/" gives "//x".
        ("[{uri: {prefix: /api}}]", "/", "/api/x", "//x"),
        (
            "[{uri: {prefix: /API/}, ignoreUriCase: true}]",
            "/",
            "/api/x",
            "/x",
        ),
        // no uri condition: the leading "/" is the matched prefix
        ("[{method: {exact: GET}}]", "/v2/", "/x?q", "/v2/x?q"),
        ("[{uri: {prefix: ''}}]", "/path", "/x", "/path/x"),
    ];
    for (matches, uri, path, want) in table {
        let r = route(&format!(
            "- match: {matches}\n  rewrite: {{uri: '{uri}'}}\n  {TO}"
        ));
        let m = r.matched(&get(path).view()).expect("matches");
        let rw = r.rewrite.as_ref().expect("rewrite");
        assert_eq!(
            rw.rewrite_path(path, &m).as_deref(),
            Some(want),
            "{matches} rewrite {uri} {path}"
        );
    }
    // Authority only: the path is left alone.
    let r = route(&format!(
        "- rewrite: {{authority: api.internal:8080}}\n  {TO}"
    ));
    let rw = r.rewrite.as_ref().expect("rewrite");
    assert_eq!(rw.authority.as_deref(), Some("api.internal:8080"));
    let m = r.matched(&get("/x").view()).expect("matches");
    assert_eq!(rw.rewrite_path("/x", &m), None);
}

// === destinations ===

#[test]
fn weighted_pick() {
    let r = route(
        "
        - route:
          - destination: {host: App.Example.com., subset: v1, port: {number: 8080}}
            weight: 90
          - destination: {host: app.example.com, subset: v2}
            weight: 10
        ",
    );
    let d = &r.destinations;
    assert_eq!(d[0].host, "app.example.com");
    assert_eq!(
        (d[0].port, d[0].subset.as_deref(), d[0].weight),
        (Some(8080), Some("v1"), 90)
    );
    assert_eq!(
        (d[1].port, d[1].subset.as_deref(), d[1].weight),
        (None, Some("v2"), 10)
    );
    let subset = |pick| r.pick(pick).and_then(|d| d.subset.as_deref());
    assert_eq!(subset(0), Some("v1"));
    assert_eq!(subset(89), Some("v1"));
    assert_eq!(subset(90), Some("v2"));
    assert_eq!(subset(99), Some("v2"));
    assert_eq!(subset(100), Some("v1"));
    assert_eq!(subset(90), subset(90), "deterministic");
    let v2 = (0..1000).filter(|p| subset(*p) == Some("v2")).count();
    assert_eq!(v2, 100);

    let table: [(&str, Vec<Option<&str>>); 3] = [
        // one destination without a weight takes everything
        (
            "[{destination: {host: a.example.com}}]",
            vec![Some("a.example.com"); 3],
        ),
        // weight 0 gets no traffic
        (
            "[{destination: {host: a.example.com}, weight: 0}, {destination: {host: b.example.com}, weight: 100}]",
            vec![Some("b.example.com"); 3],
        ),
        // weights are relative (Istio ≥ 1.15): 2:1
        (
            "[{destination: {host: a.example.com}, weight: 2}, {destination: {host: b.example.com}, weight: 1}]",
            vec![
                Some("a.example.com"),
                Some("a.example.com"),
                Some("b.example.com"),
            ],
        ),
    ];
    for (dests, want) in table {
        let r = route(&format!("- route: {dests}"));
        let got: Vec<Option<&str>> = (0..3).map(|p| r.pick(p).map(|d| d.host.as_str())).collect();
        assert_eq!(got, want, "{dests}");
    }
}

// === headers ===

#[test]
fn header_operations() {
    let r = route(
        "
        - headers:
            request:
              set: {X-A: new, x-s: one, x-pct: '100%%'}
              add: {x-b: '2'}
              remove: [x-a, X-C]
            response:
              set: {cache-control: no-store}
          route:
          - destination: {host: app.example.com}
            headers:
              request:
                add: {x-dest: v1}
              response:
                remove: [server]
        ",
    );
    let req = &r.request_headers;
    assert_eq!(
        req.set,
        vec![
            ("x-a".to_string(), "new".to_string()),
            ("x-pct".to_string(), "100%".to_string()),
            ("x-s".to_string(), "one".to_string())
        ]
    );
    assert_eq!(req.add, vec![("x-b".to_string(), "2".to_string())]);
    assert_eq!(req.remove, vec!["x-a".to_string(), "x-c".to_string()]);
    assert_eq!(r.response_headers.set.len(), 1);
    assert_eq!(r.destinations[0].request_headers.add.len(), 1);
    assert_eq!(r.destinations[0].response_headers.remove, vec!["server"]);

    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("old"));
    h.append("x-s", HeaderValue::from_static("1"));
    h.append("x-s", HeaderValue::from_static("2"));
    h.insert("x-b", HeaderValue::from_static("1"));
    h.insert("x-c", HeaderValue::from_static("gone"));
    req.apply(&mut h);
    let all = |n: &str| -> Vec<&str> { h.get_all(n).iter().map(|v| v.to_str().unwrap()).collect() };
    // remove, then set: a removed-and-set header carries the new value
    assert_eq!(all("x-a"), ["new"]);
    assert_eq!(all("x-s"), ["one"]);
    assert_eq!(all("x-b"), ["1", "2"]);
    assert!(all("x-c").is_empty());
    assert_eq!(all("x-pct"), ["100%"]);
}

#[test]
fn host_header_becomes_authority_rewrite() {
    let r = route(&format!(
        "- headers: {{request: {{set: {{Host: api.internal}}}}}}\n  {TO}"
    ));
    assert!(r.request_headers.is_empty());
    let rw = r.rewrite.expect("rewrite");
    assert_eq!(rw.authority.as_deref(), Some("api.internal"));
    assert_eq!(rw.uri, None);
}

// === redirect and direct response ===

#[test]
fn redirects() {
    let r = route(
        "- redirect: {uri: /new, authority: other.example.com, port: 8443, scheme: https, redirectCode: 302}",
    );
    let rd = r.redirect.as_ref().expect("redirect");
    assert_eq!(rd.uri.as_deref(), Some("/new"));
    assert_eq!(rd.authority.as_deref(), Some("other.example.com"));
    assert_eq!(
        (rd.port, rd.scheme.as_deref(), rd.code),
        (Some(8443), Some("https"), 302)
    );
    assert!(r.destinations.is_empty());

    let table = [
        (
            "{scheme: https}",
            "web.example.com:80",
            "https://web.example.com/old?x=1",
        ),
        (
            "{scheme: https}",
            "web.example.com",
            "https://web.example.com/old?x=1",
        ),
        (
            "{uri: /new}",
            "web.example.com:80",
            "http://web.example.com:80/new?x=1",
        ),
        (
            "{uri: '/new?y=2'}",
            "web.example.com",
            "http://web.example.com/new?y=2",
        ),
        (
            "{port: 8443}",
            "web.example.com:80",
            "http://web.example.com:8443/old?x=1",
        ),
        (
            "{authority: b.example.com}",
            "web.example.com:80",
            "http://b.example.com/old?x=1",
        ),
        (
            "{scheme: https, port: 8443}",
            "[::1]:80",
            "https://[::1]:8443/old?x=1",
        ),
        (
            "{authority: 'b.example.com:9000', port: 8443}",
            "web.example.com",
            "http://b.example.com:8443/old?x=1",
        ),
    ];
    for (redirect, authority, want) in table {
        let r = route(&format!("- redirect: {redirect}"));
        let rd = r.redirect.as_ref().expect("redirect");
        assert_eq!(rd.code, 301, "default code");
        let req = get("/old?x=1").authority(authority);
        assert_eq!(
            rd.location(&req.view()),
            want,
            "{redirect} from {authority}"
        );
    }
}

#[test]
fn direct_responses() {
    let table = [
        (
            "{status: 503, body: {string: unavailable}}",
            503,
            Some("unavailable"),
        ),
        ("{status: 204}", 204, None),
        ("{status: 200, body: {bytes: aGVsbG8=}}", 200, Some("hello")),
    ];
    for (dr, status, body) in table {
        let r = route(&format!("- directResponse: {dr}"));
        let d = r.direct_response.as_ref().expect("direct response");
        assert_eq!((d.status, d.body.as_deref()), (status, body), "{dr}");
        assert!(r.destinations.is_empty() && r.redirect.is_none());
    }
}

// === other fields ===

#[test]
fn name_timeout_and_serialization() {
    let r = route(&format!(
        "- name: api\n  timeout: 1.5s\n  match: [{{uri: {{regex: '/v[0-9]'}}, headers: {{x: {{}}}}}}]\n  {TO}"
    ));
    assert_eq!(r.name.as_deref(), Some("api"));
    assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
    let json = serde_json::to_value(&r).expect("serializes");
    assert_eq!(json["timeout"], "1.5s");
    assert_eq!(json["matches"][0]["uri"]["regex"], "/v[0-9]");
    assert_eq!(json["matches"][0]["headers"][0][1], "present");
    assert_eq!(json["destinations"][0]["host"], "app.example.com");
}

#[test]
fn gateway_route_retries_are_compiled() {
    let (plan, diag) = compile_at(
        &format!("- retries: {{attempts: 3, perTryTimeout: 2s, retryOn: \"5xx,502\"}}\n  {TO}"),
        0,
        &any_gateway,
    );
    let plan = plan.expect("compiles");
    assert!(diag.errors.is_empty(), "{:?}", diag.errors);
    assert!(diag.warnings.is_empty(), "{:?}", diag.warnings);
    assert_eq!(plan.retries.attempts, 3);
    assert_eq!(
        plan.retries.per_try_timeout,
        Some(std::time::Duration::from_secs(2))
    );
    assert_eq!(plan.retries.retriable_status_codes, vec![502]);
    // A route without `retries` has Istio's default policy and no warning.
    let (plan, diag) = compile_at(&format!("- {TO}"), 0, &any_gateway);
    assert!(diag.warnings.is_empty(), "{:?}", diag.warnings);
    assert_eq!(
        *plan.expect("compiles").retries,
        crate::plan::route::RetryPlan::istio_default()
    );
}
