//! Errors name their field, with route and match indexes.

use super::*;

// === errors ===

#[test]
fn errors_name_their_field() {
    let m = |matches: &str| with_match(matches);
    let r = |fields: &str| format!("- {fields}\n  {TO}");
    let table: Vec<(String, &str, &str)> = vec![
        // string matches
        (
            m("[{uri: {}}]"),
            "spec.http[0].match[0].uri",
            "one of exact, prefix or regex is required",
        ),
        (
            m("[{uri: {exact: /a, prefix: /b}}]"),
            "spec.http[0].match[0].uri",
            "only one of exact, prefix or regex",
        ),
        (
            m("[{uri: {regex: '('}}]"),
            "spec.http[0].match[0].uri.regex",
            "not a valid RE2-style regex",
        ),
        (
            m("[{uri: {regex: ''}}]"),
            "spec.http[0].match[0].uri.regex",
            "must not be empty",
        ),
        (
            m(&format!("[{{uri: {{regex: '{}'}}}}]", "a".repeat(1025))),
            "spec.http[0].match[0].uri.regex",
            "too large",
        ),
        (
            m("[{method: {prefix: ''}}]"),
            "spec.http[0].match[0].method.prefix",
            "must not be empty",
        ),
        (
            m("[{scheme: {}}]"),
            "spec.http[0].match[0].scheme",
            "one of exact, prefix or regex",
        ),
        (
            m("[{authority: {regex: '[z-a]'}}]"),
            "spec.http[0].match[0].authority.regex",
            "not a valid",
        ),
        (
            m("[{headers: {'bad header': {exact: x}}}]"),
            "spec.http[0].match[0].headers.bad header",
            "not a valid header name",
        ),
        (
            m("[{headers: {'@request.auth.claims.sub': {exact: x}}}]"),
            "spec.http[0].match[0].headers.@request.auth.claims.sub",
            "JWT claim routing",
        ),
        (
            m("[{headers: {x: {regex: '('}}}]"),
            "spec.http[0].match[0].headers.x.regex",
            "not a valid",
        ),
        (
            m("[{withoutHeaders: {x: {exact: a, regex: b}}}]"),
            "spec.http[0].match[0].withoutHeaders.x",
            "only one of",
        ),
        (
            m("[{queryParams: {q: {prefix: a}}}]"),
            "spec.http[0].match[0].queryParams.q.prefix",
            "not supported for query parameters",
        ),
        (
            m("[{queryParams: {q: {}}}]"),
            "spec.http[0].match[0].queryParams.q",
            "one of exact, prefix or regex",
        ),
        (
            m("[{port: 0}]"),
            "spec.http[0].match[0].port",
            "not a valid port",
        ),
        (
            m("[{port: 70000}]"),
            "spec.http[0].match[0].port",
            "not a valid port",
        ),
        (
            m("[{uri: {prefix: /}}, {sourceLabels: {app: x}}]"),
            "spec.http[0].match[1].sourceLabels",
            "not supported yet",
        ),
        (
            m("[{sourceNamespace: ns}]"),
            "spec.http[0].match[0].sourceNamespace",
            "not supported yet",
        ),
        (
            m("[{statPrefix: s}]"),
            "spec.http[0].match[0].statPrefix",
            "not supported yet",
        ),
        (
            m("[{bogus: 1}]"),
            "spec.http[0].match[0].bogus",
            "unknown field",
        ),
        // route fields
        (
            r("timeout: 5 parsecs"),
            "spec.http[0].timeout",
            "unknown unit",
        ),
        (
            r("fault: {abort: {httpStatus: 700, percentage: {value: 100}}}"),
            "spec.http[0].fault.abort.httpStatus",
            "range 200-599",
        ),
        (
            r("fault: {abort: {grpcStatus: UNAVAILABLE}}"),
            "spec.http[0].fault.abort.grpcStatus",
            "not supported yet",
        ),
        (
            r("mirror: {host: m.example.com}"),
            "spec.http[0].mirror",
            "not supported yet",
        ),
        (
            r("mirrors: [{destination: {host: m.example.com}}]"),
            "spec.http[0].mirrors",
            "not supported yet",
        ),
        (
            r("mirrorPercentage: {value: 5}"),
            "spec.http[0].mirrorPercentage",
            "not supported yet",
        ),
        (
            r("corsPolicy: {allowOrigins: [{exact: x}]}"),
            "spec.http[0].corsPolicy",
            "not supported yet",
        ),
        (
            "- delegate: {name: d}".to_string(),
            "spec.http[0].delegate",
            "not supported yet",
        ),
        (r("bogus: 1"), "spec.http[0].bogus", "unknown field"),
        // rewrite
        (
            r("rewrite: {uriRegexRewrite: {match: a, rewrite: b}}"),
            "spec.http[0].rewrite.uriRegexRewrite",
            "not supported yet",
        ),
        (
            r("rewrite: {}"),
            "spec.http[0].rewrite",
            "must set uri or authority",
        ),
        (
            r("rewrite: {uri: v2}"),
            "spec.http[0].rewrite.uri",
            "must start with",
        ),
        (
            r("rewrite: {authority: 'bad host'}"),
            "spec.http[0].rewrite.authority",
            "not a valid host",
        ),
        (
            r(
                "rewrite: {authority: a.example.com}\n  headers: {request: {set: {host: b.example.com}}}",
            ),
            "spec.http[0].headers.request",
            "authority set twice",
        ),
        // header operations
        (
            r("headers: {request: {set: {'bad name': v}}}"),
            "spec.http[0].headers.request.set.bad name",
            "not a valid header name",
        ),
        (
            r("headers: {response: {add: {x: \"a\\nb\"}}}"),
            "spec.http[0].headers.response.add.x",
            "not a valid header value",
        ),
        (
            r("headers: {request: {set: {x: '%DOWNSTREAM_REMOTE_ADDRESS%'}}}"),
            "spec.http[0].headers.request.set.x",
            "command operators are not supported",
        ),
        (
            r("headers: {request: {set: {x: '50%'}}}"),
            "spec.http[0].headers.request.set.x",
            "unterminated %",
        ),
        (
            r("headers: {request: {remove: [a, Host]}}"),
            "spec.http[0].headers.request.remove[1]",
            "cannot be removed",
        ),
        (
            r("headers: {response: {set: {':status': '200'}}}"),
            "spec.http[0].headers.response.set.:status",
            "pseudo-header",
        ),
        (
            r("headers: {response: {set: {host: x}}}"),
            "spec.http[0].headers.response.set.host",
            "cannot be modified",
        ),
        (
            "- route: [{destination: {host: a.example.com}, headers: {request: {set: {host: b}}}}]"
                .to_string(),
            "spec.http[0].route[0].headers.request.set.host",
            "use rewrite.authority",
        ),
        // redirect
        (
            "- redirect: {uri: /x, derivePort: FROM_REQUEST_PORT}".to_string(),
            "spec.http[0].redirect.derivePort",
            "not supported yet",
        ),
        (
            "- redirect: {uri: /x, redirectCode: 305}".to_string(),
            "spec.http[0].redirect.redirectCode",
            "305 is not supported",
        ),
        (
            "- redirect: {scheme: ftp}".to_string(),
            "spec.http[0].redirect.scheme",
            "must be \"http\" or \"https\"",
        ),
        (
            "- redirect: {port: 0x}".to_string(),
            "spec.http[0].redirect.port",
            "invalid type",
        ),
        (
            "- redirect: {port: 70000}".to_string(),
            "spec.http[0].redirect.port",
            "not a valid port",
        ),
        (
            "- redirect: {url: /x}".to_string(),
            "spec.http[0].redirect.url",
            "unknown field `url`",
        ),
        (
            "- redirect: {}".to_string(),
            "spec.http[0].redirect",
            "must set uri, authority, scheme or port",
        ),
        (
            "- redirect: {uri: x y}".to_string(),
            "spec.http[0].redirect.uri",
            "must start with",
        ),
        (
            r("redirect: {uri: /x}"),
            "spec.http[0].route",
            "cannot be combined with redirect",
        ),
        (
            "- redirect: {uri: /x}\n  rewrite: {uri: /y}".to_string(),
            "spec.http[0].rewrite",
            "cannot be combined with redirect",
        ),
        (
            "- redirect: {uri: /x}\n  directResponse: {status: 200}".to_string(),
            "spec.http[0].directResponse",
            "cannot be combined with redirect",
        ),
        // direct response
        (
            r("directResponse: {status: 503}"),
            "spec.http[0].route",
            "cannot be combined with directResponse",
        ),
        (
            "- directResponse: {status: 503}\n  rewrite: {uri: /y}".to_string(),
            "spec.http[0].rewrite",
            "cannot be combined with directResponse",
        ),
        (
            "- directResponse: {body: {string: x}}".to_string(),
            "spec.http[0].directResponse.status",
            "required",
        ),
        (
            "- directResponse: {status: 700}".to_string(),
            "spec.http[0].directResponse.status",
            "200-599",
        ),
        (
            "- directResponse: {status: 200, body: {string: a, bytes: YQ==}}".to_string(),
            "spec.http[0].directResponse.body",
            "only one of string or bytes",
        ),
        (
            "- directResponse: {status: 200, body: {}}".to_string(),
            "spec.http[0].directResponse.body",
            "one of string or bytes is required",
        ),
        (
            "- directResponse: {status: 200, body: {bytes: '!!'}}".to_string(),
            "spec.http[0].directResponse.body.bytes",
            "invalid base64",
        ),
        (
            "- directResponse: {status: 200, body: {bytes: //79}}".to_string(),
            "spec.http[0].directResponse.body.bytes",
            "UTF-8",
        ),
        (
            "- directResponse: {status: 200, body: {text: x}}".to_string(),
            "spec.http[0].directResponse.body.text",
            "unknown field `text`",
        ),
        // destinations
        (
            "- name: nothing".to_string(),
            "spec.http[0]",
            "one of route, redirect or directResponse is required",
        ),
        (
            "- route: [{weight: 100}]".to_string(),
            "spec.http[0].route[0].destination",
            "required",
        ),
        (
            "- route: [{destination: {subset: v1}}]".to_string(),
            "spec.http[0].route[0].destination.host",
            "required",
        ),
        (
            "- route: [{destination: {host: '*.example.com'}}]".to_string(),
            "spec.http[0].route[0].destination.host",
            "not a wildcard",
        ),
        (
            "- route: [{destination: {host: 'bad host'}}]".to_string(),
            "spec.http[0].route[0].destination.host",
            "not a valid DNS name",
        ),
        (
            "- route: [{destination: {host: a.example.com, port: {number: 0}}}]".to_string(),
            "spec.http[0].route[0].destination.port.number",
            "not a valid port",
        ),
        (
            "- route: [{destination: {host: a.example.com}}, {destination: {host: b.example.com}}]"
                .to_string(),
            "spec.http[0].route",
            "total destination weight = 0",
        ),
    ];
    for (http, field, reason) in &table {
        let errors = errors_at(http, 0);
        let found = errors
            .iter()
            .any(|e| e.field.as_deref() == Some(*field) && e.reason.contains(reason));
        let got: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
        assert!(found, "{http}\nwant {field}: ...{reason}...\ngot {got:#?}");
        assert_eq!(errors.len(), 1, "{http}\none error expected, got {got:#?}");
        for e in &errors {
            assert_eq!(e.file.to_str(), Some(FILE));
            assert_eq!(e.resource.as_deref(), Some("VirtualService/shop/web"));
        }
    }
}

#[test]
fn error_paths_use_route_and_match_indexes() {
    let http =
        format!("- {TO}\n- match: [{{uri: {{prefix: /ok}}}}, {{uri: {{regex: '('}}}}]\n  {TO}");
    let errors = errors_at(&http, 1);
    assert_eq!(errors.len(), 1);
    let text = errors[0].to_string();
    assert!(
        text.starts_with(
            "routes.yaml:1: VirtualService/shop/web: spec.http[1].match[1].uri.regex: "
        ),
        "{text}"
    );
    assert!(text.contains("unclosed group"), "{text}");
}
