//! The subset reader is held to one rule: whatever it reads, the general
//! parser reads the same way. Checked on every document in the sources
//! and tests, and on YAML's traps put in every kind of position.

use std::path::Path;

use serde::Deserialize;

use super::{Node, NodeDeserializer, read};
use crate::config::document::parse_options;
use crate::config::single_pass::{parse_general, parse_simple};
use crate::config::split_documents;

/// Asserts the rule for one document; returns whether the subset read it.
fn check(text: &str) -> bool {
    let Some(node) = read(text) else {
        return false;
    };
    // As an untyped value...
    let general: serde_json::Value = serde_saphyr::from_str_with_options(text, parse_options())
        .unwrap_or_else(|e| panic!("the subset read what the parser refuses ({e}):\n{text}"));
    let simple = serde_json::Value::deserialize(NodeDeserializer(&node))
        .unwrap_or_else(|_| panic!("a read node is a value:\n{text}"));
    assert_eq!(simple, general, "untyped:\n{text}");
    // ...and typed, as the configuration reads it.
    if let Some(simple) = parse_simple(text) {
        let general =
            parse_general(text).unwrap_or_else(|| panic!("typed by the subset only:\n{text}"));
        assert_eq!(
            format!("{simple:?}"),
            format!("{general:?}"),
            "typed:\n{text}"
        );
    }
    true
}

const SERVICE_ENTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc1
  namespace: default
  labels:
    app.kubernetes.io/name: svc
    version: v1
spec:
  hosts:
  - svc1.example.com
  - \"*.wild.example.com\"
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 8443
  resolution: STATIC
  location: MESH_EXTERNAL
  endpoints:
  - address: 127.0.0.1
    labels: {}
";

const DESTINATION_RULE: &str = "\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: svc1
  namespace: default
spec:
  host: svc1.example.com
  trafficPolicy:
    connectionPool:
      tcp:
        connectTimeout: 10s
        maxConnections: 100
    portLevelSettings:
      - port:
          number: 80
        tls:
          mode: SIMPLE
          caCertificates: /etc/certs/ca.pem
          sni: 'svc1.example.com'
          insecureSkipVerify: false
";

const GATEWAY_AND_ROUTES: [&str; 2] = [
    "\
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    hosts:
    - gw0.example.com
    - ns/gw1.example.com
    tls:
      mode: MUTUAL
      credentialName: gw-cert
",
    "\
# routes for the gateway
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: vs
spec:
  hosts:
  - gw0.example.com
  gateways:
  - gw
  http:
  - match:
    - uri:
        prefix: /api
      headers:
        x-env:
          exact: prod
    route:
    - destination:
        host: svc1.example.com
        port:
          number: 80
      weight: 100
    timeout: 1.5s
",
];

#[test]
fn everyday_resources_are_read_by_the_subset_as_the_parser_reads_them() {
    for text in [SERVICE_ENTRY, DESTINATION_RULE]
        .into_iter()
        .chain(GATEWAY_AND_ROUTES)
    {
        assert!(check(text), "not read by the subset:\n{text}");
        assert!(
            parse_simple(text).is_some(),
            "not typed by the subset:\n{text}"
        );
    }
}

/// Values YAML reads as something other than they look, or that the
/// subset must leave alone.
const TRAPS: &[&str] = &[
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "N",
    "~",
    "null",
    "Null",
    "NULL",
    "true",
    "True",
    "TRUE",
    "false",
    "FALSE",
    "1",
    "0",
    "007",
    "0o17",
    "0x1F",
    "0b11",
    "1e3",
    "1E3",
    "1.5",
    "-1",
    "+1",
    ".5",
    "5.",
    ".inf",
    "-.inf",
    ".nan",
    "nan",
    "NaN",
    "inf",
    "Infinity",
    "1_000",
    "12:30",
    "2001-12-14",
    "2001-12-14t21:59:43.10-05:00",
    "127.0.0.1",
    "10.0.0.300",
    "1.2.3",
    "1.2.3.4.5",
    "10s",
    "1.5m",
    "100ms",
    "1.5.2s",
    "10S",
    "1h30m",
    "0s",
    "00s",
    "*.example.com",
    "\"*.example.com\"",
    "'*.example.com'",
    "\"a\\nb\"",
    "\"a\\\"b\"",
    "'it''s'",
    "\"\"",
    "''",
    "a b",
    "a  b",
    "a:b",
    "a: b",
    "a:",
    "a :b",
    "http://x/y:80",
    "a #b",
    "a#b",
    "&a x",
    "*a",
    "!!str 80",
    "!!int \"80\"",
    "!x y",
    "|",
    "|-",
    ">",
    "> x",
    "[a]",
    "[a, b]",
    "{a: b}",
    "{}",
    "[]",
    "-",
    "- x",
    "-x",
    "? x",
    "%x",
    "@x",
    "`x`",
    "a,b",
    "\"80\"",
    "'80'",
    "\"true\"",
    "18446744073709551615",
    "18446744073709551616",
    "99999999999999999999",
    "4294967296",
    "65536",
    "65535",
    "256",
    "0.0.0.0",
    "x\ty",
    "é",
    "<<",
    "=",
    "/",
    "_",
    "a=b",
    "a+b",
    "a@b",
    "\"a'b\"",
    "'a\"b'",
    "'a\\b'",
    "\"#\"",
    "a \"b\"",
    "'a' b",
    "\"a\" b",
    "::1",
    "[::1]",
];

/// Documents with one `{V}` to fill with a trap: in string, integer,
/// boolean, enum, map-value and untyped positions, as keys, and as a
/// whole block.
const TEMPLATES: &[&str] = &[
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: {V}\n  labels:\n    k: {V}\nspec:\n  hosts:\n  - {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\nspec:\n  hosts: [a]\n  ports:\n  - number: {V}\n    name: http\n  resolution: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\nspec:\n  hosts:\n  - a\n  ports:\n  - number: 80\n    name: {V}\n    targetPort: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: a\nspec:\n  host: {V}\n  trafficPolicy:\n    tls:\n      mode: {V}\n      insecureSkipVerify: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: a\nspec:\n  host: a\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        connectTimeout: {V}\n        maxConnections: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: a\nspec:\n  hosts:\n  - a\n  http:\n  - route:\n    - destination:\n        host: a\n      weight: {V}\n    timeout: {V}\n    retries:\n      attempts: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\n  annotations:\n    {V}: x\nspec:\n  hosts:\n  - a\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\nstatus:\n  {V}: {V}\nspec:\n  hosts:\n  - a\n",
    "apiVersion: {V}\nkind: ServiceEntry\nmetadata:\n  name: a\nspec:\n  hosts:\n  - a\n",
    "apiVersion: networking.istio.io/v1\nkind: {V}\nmetadata:\n  name: a\nspec:\n  hosts:\n  - a\n",
    "apiVersion: v1\nkind: Secret\nmetadata:\n  name: a\ndata:\n  {V}: {V}\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a\nspec:\n  hosts: [{V}]\n  addresses: [a, {V}]\n",
    "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: a # {V}\nspec:\n  hosts:\n  - a # {V}\n",
];

#[test]
fn yaml_traps_are_read_as_the_parser_reads_them_or_left_to_it() {
    let mut read_by_subset = 0;
    for template in TEMPLATES {
        for trap in TRAPS {
            if check(&template.replace("{V}", trap)) {
                read_by_subset += 1;
            }
        }
    }
    // The rule holds trivially if nothing is read: make sure much is.
    assert!(read_by_subset > 200, "{read_by_subset}");
}

/// Layouts around the same content: indentation, comments, blank lines,
/// repeated keys, continuation lines, odd spacing.
const LAYOUTS: &[&str] = &[
    "a: 1\nb:\n- x\n- q\nc: z\n",
    "a: 1\nb:\n  - x\n  - q\nc: z\n",
    "a:\n   - x\n   -   q: 1\n       z: 2\n   - w\n",
    "a:\n- x: 1\n  q: 2\n- x: 3\n",
    "a:\n- x: 1\n   q: 2\n",
    "a:\n- x: 1\n q: 2\n",
    "a:\n  b: 1\n   c: 2\n",
    "a:\n   b: 1\n  c: 2\n",
    "a:\n  b: 1\n c: 2\n",
    "a: 1\na: 2\n",
    "a:\n  b: 1\n  b: 1\n",
    "a:\n- b: 1\n  b: 2\n",
    "a: one\n  two\n",
    "a: one\n  # two\nb: 1\n",
    "a:\n  # comment\n  b: 1\n# comment\n\n\nc: 2\n",
    "a: 1   \nb:   x q   \n",
    "a:\n",
    "a:\nb: 1\n",
    "a:\n  b:\n",
    "a:\n  x\n",
    "a:\n- - x\n",
    "a:\n-\n  x: 1\n",
    "- a\n- b\n",
    "  a: 1\n  b: 2\n",
    "a: 1\n  b: 2\n",
    "? a\n: 1\n",
    "a: &x 1\nb: *x\n",
    "a: !!str 1\n",
    "%YAML 1.2\n---\na: 1\n",
    "a: 1\n...\n",
    "a: 1\r\nb: 2\r\n",
    "a:\tb\n",
    "\ta: 1\n",
    "a: 1 # note\n",
    "a: [x, q]\n",
    "a: {x: 1}\n",
    "a: |\n  text\n",
    "a: >\n  text\n",
    "\"a\": 1\n",
    "a b: 1\n",
    "<<: {x: 1}\n",
    "a:b: 1\n",
    "a: 'x\n  q'\n",
    "a: \"x\n  q\"\n",
    "",
    "# onlq a comment\n",
    "a: 1\n\n",
    "a:\n  b:\n    c:\n      d:\n        e: 1\n",
    "a: x # c\nb: 1 #c\n",
    "a: x# c\n",
    "a: 'x' # c\n",
    "a: \"x # c\"\n",
    "a: \"x\" # c\nb: 'q'   # c\n",
    "a: 'x' \"# c\"\n",
    "a: \"x'\" # c\n",
    "a: \"x\" \"q # z\"\n",
    "a: \"x\"# c\n",
    "a: x #\n",
    "a: x ##\n",
    "a: # c\n  b: 1\n",
    "a: # c\n- x\n",
    "a:\n- x # c\n- q # c\n",
    "a: [x, q] # c\n",
    "a: [x,q]\n",
    "a: [ x , q ]\n",
    "a: [x, ]\n",
    "a: [,]\n",
    "a: [x,,q]\n",
    "a: [\"x\", 'q']\n",
    "a: [x, [q]]\n",
    "a: [x: 1]\n",
    "a: [1, 2, 007]\n",
    "a: [1, 2]\n",
    "a: [true, x]\n",
    "a: [x,\n  q]\n",
    "a: [{}, []]\n",
    "a: [\"x, q\"]\n",
];

#[test]
fn layouts_are_read_as_the_parser_reads_them_or_left_to_it() {
    let mut read_by_subset = 0;
    for text in LAYOUTS {
        if check(text) {
            read_by_subset += 1;
        }
    }
    assert!(read_by_subset >= 10, "{read_by_subset}");
    // What the subset gives for a few of them, spelled out.
    let map = |entries: Vec<(&'static str, Node<'static>)>| Node::Map(entries);
    assert_eq!(
        read("a: 1\nb:\n- x\n- q\nc: z\n"),
        Some(map(vec![
            ("a", Node::Int("1")),
            ("b", Node::Seq(vec![Node::Str("x"), Node::Str("q")])),
            ("c", Node::Str("z")),
        ]))
    );
    assert_eq!(
        read("a:\n   - x\n   -   q: 1\n       z: 2\n"),
        Some(map(vec![(
            "a",
            Node::Seq(vec![
                Node::Str("x"),
                map(vec![("q", Node::Int("1")), ("z", Node::Int("2"))]),
            ])
        )]))
    );
    for refused in [
        "a: 1\na: 2\n",
        "a: one\n  two\n",
        "a:\n",
        "a: 1# note\n",
        "a:\n- x: 1\n   q: 2\n",
    ] {
        assert_eq!(read(refused), None, "{refused}");
    }
}

#[test]
fn limits_leave_large_and_deep_documents_to_the_parser() {
    // Depth: each level a mapping.
    let mut deep = String::new();
    for level in 0..40 {
        deep.push_str(&" ".repeat(level * 2));
        deep.push_str("a:\n");
    }
    deep.push_str(&" ".repeat(80));
    deep.push_str("b: 1\n");
    assert_eq!(read(&deep), None);
    // Nodes: a long sequence.
    let mut long = String::from("a:\n");
    for _ in 0..(super::MAX_NODES + 1) {
        long.push_str("- x\n");
    }
    assert_eq!(read(&long), None);
    // Mappings past the pairwise check.
    let wide: String = (0..=super::MAX_MAP_LEN)
        .map(|i| format!("k{i}: v\n"))
        .collect();
    assert_eq!(read(&wide), None);
    assert!(check(
        &wide[..wide.len() - format!("k{}: v\n", super::MAX_MAP_LEN).len()]
    ));
}

/// Every YAML document in the repository's sources, tests, examples and
/// deployment files, including those written inline in Rust string
/// literals.
#[test]
fn every_document_in_the_repository_is_read_as_the_parser_reads_it() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut texts = Vec::new();
    for dir in ["src", "tests", "examples", "deploy", "bench"] {
        collect(&root.join(dir), &mut texts);
    }
    let mut documents = 0;
    let mut read_by_subset = 0;
    for text in &texts {
        for doc in split_documents(text) {
            documents += 1;
            if check(doc.text) {
                read_by_subset += 1;
            }
        }
    }
    assert!(documents > 300, "{documents}");
    assert!(read_by_subset > 50, "{read_by_subset} of {documents}");
}

/// YAML files as they are, and the string literals in Rust files that
/// hold a document.
fn collect(dir: &Path, texts: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, texts);
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        match path.extension().and_then(|e| e.to_str()) {
            Some("yaml" | "yml") => texts.push(text),
            Some("rs") => texts.extend(literals(&text).filter(|l| l.contains("kind:"))),
            _ => {}
        }
    }
}

/// The contents of the string literals of a Rust file, roughly: raw
/// strings as written, others with their common escapes undone.
fn literals(source: &str) -> impl Iterator<Item = String> + '_ {
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find('"') {
        let before = &rest[..at];
        let hashes = before.len() - before.trim_end_matches('#').len();
        let raw = before.trim_end_matches('#').ends_with('r');
        let body = &rest[at + 1..];
        if raw {
            let close = format!("\"{}", "#".repeat(hashes));
            let Some(end) = body.find(&close) else { break };
            out.push(body[..end].to_string());
            rest = &body[end + close.len()..];
        } else {
            let mut text = String::new();
            let mut chars = body.char_indices();
            let mut end = body.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    '\\' => match chars.next() {
                        Some((_, 'n')) => text.push('\n'),
                        Some((_, 't')) => text.push('\t'),
                        Some((_, '\n')) => {
                            // A continued line: leading spaces are skipped.
                            while chars.clone().next().is_some_and(|(_, c)| c == ' ') {
                                chars.next();
                            }
                        }
                        Some((_, other)) => text.push(other),
                        None => {}
                    },
                    _ => text.push(c),
                }
            }
            out.push(text);
            rest = &body[end.min(body.len())..];
        }
    }
    out.into_iter()
}
