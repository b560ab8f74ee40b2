//! HTTP operations (task "HTTP traffic").

use super::*;

/// Task "HTTP traffic": allow-nothing, then `productpage-viewer` allows
/// GET; POST stays denied.
#[test]
fn http_task_get_allowed_post_denied() {
    let yaml = ap("allow-nothing", "")
        + &ap(
            "productpage-viewer",
            r#"selector:
  matchLabels:
    app: httpbin
action: ALLOW
rules:
- to:
  - operation:
      methods: ["GET"]"#,
        );
    let p = plan(&yaml);
    expect(
        &p,
        &[
            ("GET /productpage", get("/productpage"), ALLOWED),
            ("POST /productpage", req("POST", "/productpage"), DENIED),
            ("get (methods are case-sensitive)", req("get", "/"), DENIED),
            ("HEAD /", req("HEAD", "/"), DENIED),
        ],
    );
}

/// Reference: "Exact `abc`, prefix `abc*` (matches `abc` and `abcd`),
/// suffix `*abc` (matches `abc` and `xabc`), presence `*`", on paths.
#[test]
fn paths_exact_prefix_suffix_and_presence() {
    let p = plan(&ap(
        "paths",
        r#"rules:
- to:
  - operation:
      paths: ["/productpage", "/api/*", "*/info", "/static*"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/productpage"), ALLOWED),
            ("exact, one more segment", get("/productpage/x"), DENIED),
            ("exact, trailing slash", get("/productpage/"), DENIED),
            ("exact is case-sensitive", get("/ProductPage"), DENIED),
            ("prefix", get("/api/v1/users"), ALLOWED),
            ("prefix, itself", get("/api/"), ALLOWED),
            ("prefix needs its slash", get("/api"), DENIED),
            ("prefix abc* matches abc", get("/static"), ALLOWED),
            (
                "prefix abc* matches abcd",
                get("/staticfiles/a.css"),
                ALLOWED,
            ),
            ("suffix", get("/v1/info"), ALLOWED),
            ("suffix, itself", get("/info"), ALLOWED),
            ("suffix, more after", get("/v1/info/x"), DENIED),
            ("neither", get("/details"), DENIED),
        ],
    );
    let any = plan(&ap(
        "any",
        "rules:\n- to:\n  - operation:\n      paths: [\"*\"]",
    ));
    expect(
        &any,
        &[
            ("presence, root", get("/"), ALLOWED),
            ("presence, deep", get("/a/b/c"), ALLOWED),
            (
                "presence on TCP: an HTTP field never matches",
                tcp(80),
                DENIED,
            ),
        ],
    );
}

/// Reference: `notPaths` and `notMethods` ("the path doesn't have prefix
/// `/admin`").
#[test]
fn not_paths_and_not_methods() {
    let p = plan(&ap(
        "not",
        r#"rules:
- to:
  - operation:
      hosts: ["*.example.com"]
      methods: ["GET", "HEAD"]
      notPaths: ["/admin*"]
- to:
  - operation:
      notMethods: ["DELETE", "PUT"]
      paths: ["/data/*"]"#,
    ));
    expect(
        &p,
        &[
            (
                "GET /x on a.example.com",
                get("/x").host("a.example.com"),
                ALLOWED,
            ),
            ("HEAD /x", req("HEAD", "/x").host("a.example.com"), ALLOWED),
            ("GET /admin", get("/admin").host("a.example.com"), DENIED),
            (
                "GET /admin/users",
                get("/admin/users").host("a.example.com"),
                DENIED,
            ),
            (
                "GET /administrator",
                get("/administrator").host("a.example.com"),
                DENIED,
            ),
            (
                "GET /x/admin",
                get("/x/admin").host("a.example.com"),
                ALLOWED,
            ),
            ("POST /x", req("POST", "/x").host("a.example.com"), DENIED),
            (
                "GET /x on example.com",
                get("/x").host("example.com"),
                DENIED,
            ),
            ("POST /data/1", req("POST", "/data/1"), ALLOWED),
            ("DELETE /data/1", req("DELETE", "/data/1"), DENIED),
            ("PUT /data/1", req("PUT", "/data/1"), DENIED),
            ("POST /other", req("POST", "/other"), DENIED),
        ],
    );
}

/// Reference: "hosts ... The match is case-insensitive"; the builder
/// matches `:authority` exactly (`(?i)example\.com`), so a port in the
/// authority is part of it (security best practices, "Writing host match
/// policies").
#[test]
fn hosts_are_case_insensitive_and_exact_on_the_authority() {
    let p = plan(&ap(
        "hosts",
        r#"rules:
- to:
  - operation:
      hosts: ["example.com", "prefix.example.*", "*.example.org", "api.example.net:8443"]
      notHosts: ["blocked.example.org"]"#,
    ));
    expect(
        &p,
        &[
            ("exact", get("/").host("example.com"), ALLOWED),
            ("exact, other case", get("/").host("EXAMPLE.Com"), ALLOWED),
            (
                "exact, with a port",
                get("/").host("example.com:80"),
                DENIED,
            ),
            (
                "exact, another name",
                get("/").host("www.example.com"),
                DENIED,
            ),
            ("prefix", get("/").host("prefix.example.io"), ALLOWED),
            (
                "prefix, other case",
                get("/").host("PREFIX.example.io:8080"),
                ALLOWED,
            ),
            ("suffix", get("/").host("a.example.org"), ALLOWED),
            (
                "suffix, other case",
                get("/").host("A.EXAMPLE.ORG"),
                ALLOWED,
            ),
            (
                "suffix, port breaks it",
                get("/").host("a.example.org:80"),
                DENIED,
            ),
            ("notHosts", get("/").host("blocked.example.org"), DENIED),
            (
                "notHosts, other case",
                get("/").host("Blocked.Example.Org"),
                DENIED,
            ),
            (
                "with a port",
                get("/").host("api.example.net:8443"),
                ALLOWED,
            ),
            ("without the port", get("/").host("api.example.net"), DENIED),
        ],
    );
}

/// Reference: path templates. "`/foo/{*}` matches `/foo/bar` but not
/// `/foo/bar/baz`"; "`/foo/{**}/` matches `/foo/bar/` ... and `/foo//` but
/// not `/foo/bar`"; "`/foo/{*}/bar/{**}` matches `/foo/buzz/bar/` and
/// `/foo/buzz/bar/baz`". Envoy's uri_template (which Istio hands them to,
/// `{*}` → `*`, `{**}` → `**`) reads `*` as `[pchar]+` and `**` as
/// `[pchar/]*`, fully matched, so `/foo/{**}` needs the `/` after `/foo`.
#[test]
fn path_templates_as_istio_documents_them() {
    let p = plan(&ap(
        "templates",
        r#"rules:
- to:
  - operation:
      paths: ["/one/{*}", "/any/{**}", "/foo/{*}/bar/{**}", "/{*}/items"]"#,
    ));
    expect(
        &p,
        &[
            ("{*}: one segment", get("/one/bar"), ALLOWED),
            ("{*}: not two", get("/one/bar/baz"), DENIED),
            ("{*}: not none", get("/one/"), DENIED),
            ("{*}: not without the slash", get("/one"), DENIED),
            ("{**}: zero segments after the slash", get("/any/"), ALLOWED),
            ("{**}: several", get("/any/a/b/c.txt"), ALLOWED),
            ("{**}: not without the slash", get("/any"), DENIED),
            ("{**}: not another prefix", get("/anything"), DENIED),
            (
                "/foo/{*}/bar/{**}: /foo/buzz/bar/",
                get("/foo/buzz/bar/"),
                ALLOWED,
            ),
            (
                "/foo/{*}/bar/{**}: /foo/buzz/bar/baz",
                get("/foo/buzz/bar/baz"),
                ALLOWED,
            ),
            ("/foo/{*}/bar/{**}: /foo/bar/", get("/foo/bar/"), DENIED),
            ("/{*}/items", get("/shop/items"), ALLOWED),
            ("/{*}/items, two segments", get("/a/b/items"), DENIED),
        ],
    );
}

/// Reference: "`/foo/{**}/` matches `/foo/bar/` ... and `/foo//` but not
/// `/foo/bar`". Istio's `CheckValidPathTemplate` trims the leading and
/// trailing `/` before checking that `{**}` is last, so this template is
/// valid.
#[test]
fn a_trailing_slash_after_the_any_template_is_valid() {
    let p = plan(&ap(
        "trailing",
        "rules:\n- to:\n  - operation:\n      paths: [\"/foo/{**}/\"]",
    ));
    expect(
        &p,
        &[
            ("/foo/bar/", get("/foo/bar/"), ALLOWED),
            ("/foo//", get("/foo//"), ALLOWED),
            ("/foo/bar", get("/foo/bar"), DENIED),
        ],
    );
}

/// Reference: "`/*/baz/{*}` ... `/**/baz/{*}` ... `/{**}/foo/{*}` ...
/// `/foo/{*}.txt` is invalid"; "`{` or `}` beyond a supported path template"
/// (`CheckValidPathTemplate`).
#[test]
fn bad_path_templates_are_refused() {
    for bad in [
        "/*/baz/{*}",
        "/**/baz/{*}",
        "/{**}/foo/{*}",
        "/foo/{*}.txt",
        "/foo/{id}",
        "/foo/{",
    ] {
        let yaml = ap(
            "bad-path",
            &format!("rules:\n- to:\n  - operation:\n      paths: [{bad:?}]"),
        );
        assert_error(
            &yaml,
            "bad-path",
            "spec.rules[0].to[0].operation.paths[0]",
            "",
        );
    }
    let not_paths = ap(
        "bad-not-path",
        "rules:\n- to:\n  - operation:\n      notPaths: [\"/{**}/x\"]",
    );
    assert_error(
        &not_paths,
        "bad-not-path",
        "spec.rules[0].to[0].operation.notPaths[0]",
        "",
    );
}
