//! Fuzz-style property tests on stable Rust, no fuzzing crate: random and
//! mutated inputs for the two parsers a hostile party can reach.
//!
//! - Istio YAML through the entry point `meshgate validate` uses
//!   (`load::validate`): mutated valid configurations (byte flips,
//!   truncation, lines deleted, duplicated or swapped, values of another
//!   type, huge numbers, deep nesting, very long strings, invalid UTF-8,
//!   anchor/alias bombs). Properties: no panic, no hang (each case under a
//!   deadline), and every error names the file it is about.
//! - ClientHello bytes: straight into the SNI peek (`tls::hello`) and
//!   rustls' `Acceptor` as the inbound listener uses them, then through a
//!   real inbound listener (terminating and PASSTHROUGH servers): every
//!   connection is answered or closed before the handshake deadline, no
//!   panic anywhere in the process, and a good client is served after.
//!
//! Deterministic: a splitmix64 generator with a fixed seed. Run longer or
//! elsewhere with `MESHGATE_FUZZ_SEED=<n>` and `MESHGATE_FUZZ_CASES=<n>`
//! (cases per test; by default the listener test runs half as many). A failure
//! prints the seed of the failing case: `MESHGATE_FUZZ_SEED=<that>
//! MESHGATE_FUZZ_CASES=1` replays exactly that case.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use meshgate::bootstrap::Bootstrap;
use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{ClientOpts, TestProxy, https_get, tempdir};
use meshgate::tls::hello;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The seed when `MESHGATE_FUZZ_SEED` is not set.
const DEFAULT_SEED: u64 = 0x6d65_7368_6761_7465; // "meshgate"

/// The longest one YAML case may take to load (a debug build, a shared
/// machine).
const YAML_CASE_LIMIT: Duration = Duration::from_secs(10);

// ===================================================================
// A small deterministic generator
// ===================================================================

/// splitmix64: tiny, fast, and good enough to pick mutations.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    fn byte(&mut self) -> u8 {
        self.next() as u8
    }
}

fn env_number(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// The run's seed and number of cases (`default` unless set).
fn plan(default: usize) -> (u64, usize) {
    let seed = env_number("MESHGATE_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let cases = env_number("MESHGATE_FUZZ_CASES").map_or(default, |n| n as usize);
    eprintln!("fuzz: MESHGATE_FUZZ_SEED={seed:#x} MESHGATE_FUZZ_CASES={cases}");
    (seed, cases)
}

/// Case `i` of a run has its own seed, so it replays alone.
fn case_seed(seed: u64, i: usize) -> u64 {
    seed.wrapping_add(i as u64)
}

fn replay(seed: u64) -> String {
    format!("replay: MESHGATE_FUZZ_SEED={seed:#x} MESHGATE_FUZZ_CASES=1")
}

// ===================================================================
// Panics anywhere in the process
// ===================================================================

/// The tests of this file (their threads' names).
const TESTS: &[&str] = &[
    "yaml_seeds_load_as_given",
    "yaml_alias_bombs_are_refused_within_bounds",
    "mutated_yaml_never_panics_or_hangs_and_errors_name_the_file",
    "random_client_hellos_never_panic_or_hang_the_sni_peek",
    "random_client_hellos_on_a_listener_are_closed_and_good_clients_served",
];

/// Panics seen by the hook (any thread: the proxy's workers too).
static PANICS: AtomicUsize = AtomicUsize::new(0);
static PANIC_TEXT: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Counts every panic in the process, then reports it as usual. A task
/// that panics inside the proxy is caught by tokio; this still sees it.
fn watch_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let thread = std::thread::current();
            // A test's own assertion fails that test; the count is for
            // panics inside meshgate.
            if thread.name().is_some_and(|n| TESTS.contains(&n)) {
                return default(info);
            }
            PANICS.fetch_add(1, Ordering::SeqCst);
            PANIC_TEXT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(format!("thread {:?}: {info}", thread.name().unwrap_or("?")));
            default(info);
        }));
    });
}

fn panics_so_far() -> (usize, Vec<String>) {
    let text = PANIC_TEXT.lock().unwrap_or_else(|e| e.into_inner()).clone();
    (PANICS.load(Ordering::SeqCst), text)
}

// ===================================================================
// YAML
// ===================================================================

/// Valid configurations covering every kind meshgate reads, with their
/// certificate files written in `dir`.
fn yaml_seeds(dir: &Path) -> Vec<String> {
    let server_ca = DevCa::new("fuzz server CA");
    let client_ca = DevCa::new("fuzz client CA");
    let leaf = server_ca.issue(&LeafSpec::server(&[
        "service.fuzz.test",
        "*.fuzz.test",
        "api.external.com",
        "service.internal.com",
    ]));
    let (cert, key) = leaf.write(dir, "server").unwrap();
    let ca = server_ca.write_cert(dir, "ca.crt").unwrap();
    let client_ca_file = client_ca.write_cert(dir, "client-ca.crt").unwrap();
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let (cert, key, ca, client_ca_file) = (
        cert.display().to_string(),
        key.display().to_string(),
        ca.display().to_string(),
        client_ca_file.display().to_string(),
    );
    let demo_egress = meshgate::demo::DEMO_YAML
        .replace("${STANDIN_PORT}", "8443")
        .replace("${CA_FILE}", &ca);
    let demo_ingress = meshgate::demo::DEMO_INGRESS_YAML
        .replace("${SERVER_CERT}", &cert)
        .replace("${SERVER_KEY}", &key)
        .replace("${CA_FILE}", &client_ca_file)
        .replace("${APP_PORT}", "8080");
    let egress = format!(
        r#"# Egress with TLS origination, routes and policies
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: external
  namespace: default
  labels: {{app: web, tier: "1"}}
spec:
  hosts:
  - api.fuzz.test
  - "*.wild.fuzz.test"
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 443
  - {{number: 8443, name: tls, protocol: TLS}}
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports: {{http: 9443}}
    labels: {{version: v1}}
  - address: 127.0.0.2
    labels: {{version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: external
spec:
  host: api.fuzz.test
  trafficPolicy:
    tls:
      mode: SIMPLE
      caCertificates: {ca}
      sni: api.fuzz.test
      subjectAltNames: [api.fuzz.test]
    connectionPool:
      tcp: {{maxConnections: 100, connectTimeout: 2s}}
      http: {{http1MaxPendingRequests: 10, maxRequestsPerConnection: 5, idleTimeout: 30s}}
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
      maxEjectionPercent: 50
    portLevelSettings:
    - port: {{number: 80}}
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
  subsets:
  - name: v1
    labels: {{version: v1}}
  - name: v2
    labels: {{version: v2}}
    trafficPolicy:
      tls: {{mode: SIMPLE, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: external
spec:
  hosts: [api.fuzz.test]
  http:
  - name: admin
    match:
    - port: 80
    route:
    - destination: {{host: api.fuzz.test, subset: v2, port: {{number: 80}}}}
      weight: 10
    - destination: {{host: api.fuzz.test, subset: v1}}
      weight: 90
    timeout: 1.5s
    retries: {{attempts: 2, perTryTimeout: 500ms, retryOn: "connect-failure,refused-stream"}}
  - route:
    - destination: {{host: api.fuzz.test}}
"#
    );
    let gateway = format!(
        r#"apiVersion: networking.istio.io/v1beta1
kind: Gateway
metadata:
  name: ingress
  namespace: default
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["service.fuzz.test", "*.fuzz.test"]
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
      minProtocolVersion: TLSV1_2
  - port: {{number: 8443, name: mutual, protocol: HTTPS}}
    hosts: [service.fuzz.test]
    tls:
      mode: MUTUAL
      serverCertificate: {cert}
      privateKey: {key}
      caCertificates: {client_ca_file}
      subjectAltNames: [client.fuzz.test]
  - port: {{number: 9443, name: pass, protocol: TLS}}
    hosts: [pass.fuzz.test]
    tls: {{mode: PASSTHROUGH}}
  - port: {{number: 8080, name: http, protocol: HTTP}}
    hosts: ["*"]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ingress
spec:
  hosts: ["service.fuzz.test", "pass.fuzz.test", "*"]
  gateways: [ingress]
  http:
  - name: api
    match:
    - uri: {{prefix: /api}}
      headers:
        x-user: {{exact: root}}
      queryParams:
        debug: {{regex: "^(1|true)$"}}
      ignoreUriCase: true
    - uri: {{regex: "/v[0-9]+/.*"}}
      method: {{exact: GET}}
      authority: {{prefix: service}}
    rewrite: {{uri: /, authority: app.local}}
    headers:
      request:
        set: {{x-a: "1"}}
        add: {{x-b: two}}
        remove: [x-c]
      response:
        set: {{x-served-by: meshgate}}
    timeout: 2s
    route:
    - destination:
        host: 127.0.0.1
        port: {{number: 8081}}
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: 8080}}}}
  tls:
  - match:
    - sniHosts: [pass.fuzz.test]
      port: 9443
    route:
    - destination: {{host: 127.0.0.1, port: {{number: 9444}}}}
"#
    );
    let secret = format!(
        r#"apiVersion: v1
kind: Secret
metadata:
  name: fuzz-credential
type: kubernetes.io/tls
data:
  tls.crt: {c}
  tls.key: {k}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: fuzz-ca
data:
  ca.crt: |
{ca_text}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: by-secret
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [service.fuzz.test]
    tls:
      mode: SIMPLE
      credentialName: fuzz-credential
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: by-secret
spec:
  hosts: [service.fuzz.test]
  gateways: [by-secret]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: 8080}}}}
"#,
        c = b64(&leaf.cert_pem),
        k = b64(&leaf.key_pem),
        ca_text = server_ca
            .cert_pem
            .lines()
            .map(|l| format!("    {l}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let sidecar = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Sidecar
metadata:
  name: default
  namespace: default
spec:
  ingress:
  - port: {{number: 8443, protocol: HTTP, name: http}}
    defaultEndpoint: 127.0.0.1:8080
    tls:
      mode: SIMPLE
      serverCertificate: {cert}
      privateKey: {key}
  - port: {{number: 9090, protocol: GRPC, name: grpc}}
    defaultEndpoint: 127.0.0.1:9091
  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
spec:
  mtls: {{mode: PERMISSIVE}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: tcp}}
spec:
  hosts: [db.fuzz.test]
  addresses: [10.1.2.3/32]
  ports: [{{number: 5432, name: tcp, protocol: TCP}}]
  resolution: NONE
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: tcp}}
spec:
  hosts: [db.fuzz.test]
  tcp:
  - match: [{{port: 5432}}]
    route:
    - destination: {{host: db.fuzz.test, port: {{number: 5432}}}}
"#
    );
    let json = r#"{"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry",
 "metadata": {"name": "json", "namespace": "web"},
 "spec": {"hosts": ["json.fuzz.test"], "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
          "resolution": "DNS", "location": "MESH_EXTERNAL"}}
"#
    .to_string();
    vec![
        demo_egress,
        demo_ingress,
        egress,
        gateway,
        secret,
        sidecar,
        json,
    ]
}

/// Values of another type (and the edges of each type) for type swaps.
const VALUES: &[&str] = &[
    "\"a string\"",
    "12345",
    "-1",
    "0",
    "65536",
    "4294967296",
    "18446744073709551616",
    "-9223372036854775809",
    "99999999999999999999999999999999999999999",
    "1e400",
    "-0.0",
    ".inf",
    ".nan",
    "0x7fffffff",
    "0o777",
    "true",
    "null",
    "~",
    "[]",
    "{}",
    "[1, \"two\", {three: 3}]",
    "{a: 1, b: [2]}",
    "!!binary aGVsbG8=",
    "!!str 80",
    "!custom tag",
    "|\n  block\n  text",
    ">-\n  folded",
    "'single ''quoted'''",
    "\"\\u0000\\x01\\uD800\"",
    "\"\\U0010FFFF\"",
    "*undefined_alias",
    "&anchor value",
    "? complex\n: key",
    "[unclosed",
    "{unclosed: 1",
    "\"unterminated",
    "@reserved",
    "`reserved",
    "- a\n- b",
    "\t",
    "1h2m3.5s",
    "-5s",
    "999999999999h",
    "0s",
];

/// A string of `n` nested flow collections (`[[[...]]]`, `{a: {a: ...}}`),
/// closed or not.
fn deep_nesting(rng: &mut Rng) -> String {
    let n = *rng.pick(&[100, 1_000, 10_000, 100_000]);
    let closed = rng.chance(2);
    if rng.chance(2) {
        let mut s = "[".repeat(n);
        if closed {
            s.push_str(&"]".repeat(n));
        }
        s
    } else {
        let mut s = "{a: ".repeat(n);
        s.push('1');
        if closed {
            s.push_str(&"}".repeat(n));
        }
        s
    }
}

/// Block-style nesting: `n` indented mappings.
fn deep_block(rng: &mut Rng) -> String {
    let n = *rng.pick(&[100, 500, 1_500]);
    let mut s = String::from("\n");
    for i in 0..n {
        s.push_str(&" ".repeat(i + 1));
        s.push_str("k:\n");
    }
    s.push_str(&" ".repeat(n + 1));
    s.push('v');
    s
}

/// "Billion laughs" anchors: level 0 is five strings, each next level ten
/// aliases of the one before (10^8 strings at nine levels), each line
/// indented by `indent`.
fn laughs(levels: usize, indent: &str) -> String {
    let mut s = format!("{indent}x-l0: &l0 [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n");
    for i in 1..levels {
        let refs = vec![format!("*l{}", i - 1); 10].join(", ");
        s.push_str(&format!("{indent}x-l{i}: &l{i} [{refs}]\n"));
    }
    s
}

/// YAML bombs, each in a place serde reads: (what, document).
fn alias_bombs() -> Vec<(&'static str, String)> {
    const LEVELS: usize = 9;
    let top = format!("*l{}", LEVELS - 1);
    let mut maps = String::from("    m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5}\n");
    for i in 1..LEVELS {
        let merged = (0..10)
            .map(|j| format!("k{j}: *m{}", i - 1))
            .collect::<Vec<_>>()
            .join(", ");
        maps.push_str(&format!("    m{i}: &m{i} {{{merged}}}\n"));
    }
    vec![
        (
            "a document of anchors alone",
            format!("{}bomb: {top}\n", laughs(LEVELS, "")),
        ),
        (
            "hosts",
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: bomb\n  annotations:\n{}spec:\n  hosts: {top}\n",
                laughs(LEVELS, "    ")
            ),
        ),
        (
            "header maps",
            format!(
                "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: bomb\n  annotations:\n{maps}spec:\n  hosts: [a.test]\n  http:\n  - route: [{{destination: {{host: a.test}}}}]\n    headers: {{request: {{set: *m{}}}}}\n",
                LEVELS - 1
            ),
        ),
    ]
}

/// Replaces the value of a random `key: value` line.
fn swap_value(rng: &mut Rng, text: &[u8], value: &str) -> Vec<u8> {
    let lines: Vec<&[u8]> = text.split_inclusive(|b| *b == b'\n').collect();
    let candidates: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].windows(2).any(|w| w == b": "))
        .collect();
    if candidates.is_empty() {
        return text.to_vec();
    }
    let i = *rng.pick(&candidates);
    let line = lines[i];
    let colon = line.windows(2).position(|w| w == b": ").unwrap();
    let mut out = Vec::with_capacity(text.len() + value.len());
    for l in &lines[..i] {
        out.extend_from_slice(l);
    }
    out.extend_from_slice(&line[..colon + 2]);
    out.extend_from_slice(value.as_bytes());
    out.push(b'\n');
    for l in &lines[i + 1..] {
        out.extend_from_slice(l);
    }
    out
}

/// Replaces a random run of digits with `number`.
fn swap_number(rng: &mut Rng, text: &[u8], number: &str) -> Vec<u8> {
    let starts: Vec<usize> = (0..text.len())
        .filter(|&i| text[i].is_ascii_digit() && (i == 0 || !text[i - 1].is_ascii_digit()))
        .collect();
    if starts.is_empty() {
        return text.to_vec();
    }
    let s = *rng.pick(&starts);
    let e = s + text[s..].iter().take_while(|b| b.is_ascii_digit()).count();
    [&text[..s], number.as_bytes(), &text[e..]].concat()
}

/// One mutation of a YAML text; the name says which (for the report).
fn mutate_yaml(rng: &mut Rng, text: &[u8], seeds: &[String]) -> (Vec<u8>, &'static str) {
    let lines = |t: &[u8]| -> Vec<Vec<u8>> {
        t.split_inclusive(|b| *b == b'\n')
            .map(<[u8]>::to_vec)
            .collect()
    };
    match rng.below(17) {
        0 => {
            // Flip bits in a few bytes.
            let mut t = text.to_vec();
            for _ in 0..=rng.below(8) {
                if t.is_empty() {
                    break;
                }
                let i = rng.below(t.len());
                t[i] ^= 1 << rng.below(8);
            }
            (t, "bit flips")
        }
        1 => {
            // Random bytes at random places.
            let mut t = text.to_vec();
            for _ in 0..=rng.below(8) {
                if t.is_empty() {
                    break;
                }
                let i = rng.below(t.len());
                t[i] = *rng.pick(b":-[]{}&*!|>'\"#%@`,?\t\n \\0x");
            }
            (t, "YAML punctuation")
        }
        2 => {
            let cut = rng.below(text.len() + 1);
            (text[..cut].to_vec(), "truncation")
        }
        3 => {
            let mut l = lines(text);
            if !l.is_empty() {
                let i = rng.below(l.len());
                l.remove(i);
            }
            (l.concat(), "line deleted")
        }
        4 => {
            let mut l = lines(text);
            if !l.is_empty() {
                let i = rng.below(l.len());
                let times = 1 + rng.below(3);
                for _ in 0..times {
                    l.insert(i, l[i].clone());
                }
            }
            (l.concat(), "line duplicated")
        }
        5 => {
            let mut l = lines(text);
            if l.len() > 1 {
                let (a, b) = (rng.below(l.len()), rng.below(l.len()));
                l.swap(a, b);
            }
            (l.concat(), "lines swapped")
        }
        6 => {
            let v = *rng.pick(VALUES);
            (swap_value(rng, text, v), "type swap")
        }
        7 => {
            let n = *rng.pick(&[
                "0",
                "65535",
                "65536",
                "4294967295",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                "340282366920938463463374607431768211456",
                "1e308",
                "-1",
            ]);
            (swap_number(rng, text, n), "huge number")
        }
        8 => {
            let nest = deep_nesting(rng);
            (swap_value(rng, text, &nest), "deep flow nesting")
        }
        9 => {
            let nest = deep_block(rng);
            (swap_value(rng, text, &nest), "deep block nesting")
        }
        10 => {
            let n = *rng.pick(&[10_000, 100_000, 1_000_000]);
            let c = *rng.pick(&['a', '.', '*', 'é', '/']);
            let long: String = std::iter::repeat_n(c, n).collect();
            let v = if rng.chance(2) {
                long
            } else {
                format!("\"{long}\"")
            };
            (swap_value(rng, text, &v), "very long string")
        }
        11 => {
            let mut t = text.to_vec();
            let i = rng.below(t.len() + 1);
            let bad: &[u8] = rng.pick::<&[u8]>(&[
                &b"\xff\xfe"[..],
                b"\xc3\x28",
                b"\xe2\x82",
                b"\xed\xa0\x80",
                b"\xf4\x90\x80\x80",
                b"\x80",
                b"\x00",
                b"\xef\xbb\xbf",
            ]);
            t.splice(i..i, bad.iter().copied());
            (t, "invalid UTF-8 or control bytes")
        }
        12 => {
            // A small alias, anchors and merge keys (the bombs have their
            // own test: each costs seconds in a debug build).
            let anchored = swap_value(rng, text, "&shared [a, b, c]");
            let line: &[u8] = rng.pick::<&[u8]>(&[
                &b"  alias: *shared\n"[..],
                b"<<: {merged: 1}\n",
                b"  <<: *shared\n",
                b"self: &self [*self]\n",
            ]);
            let mut l = lines(&anchored);
            let at = rng.below(l.len() + 1);
            l.insert(at, line.to_vec());
            (l.concat(), "anchors and aliases")
        }
        13 => {
            let mut t = text.to_vec();
            t.extend_from_slice(text);
            (t, "document repeated")
        }
        14 => {
            // Lines of another seed spliced in.
            let other = rng.pick(seeds).as_bytes();
            let mut l = lines(text);
            let o = lines(other);
            if !o.is_empty() {
                let at = rng.below(l.len() + 1);
                let from = rng.below(o.len());
                let n = 1 + rng.below(10);
                let piece: Vec<Vec<u8>> = o[from..(from + n).min(o.len())].to_vec();
                l.splice(at..at, piece);
            }
            (l.concat(), "lines of another document")
        }
        15 => {
            let mut l = lines(text);
            let at = rng.below(l.len() + 1);
            let token: &[u8] = rng.pick::<&[u8]>(&[
                &b"---\n"[..],
                b"...\n",
                b"--- !!map\n",
                b"%YAML 1.2\n---\n",
                b"%TAG ! tag:x,2000:\n",
                b"<<: *missing\n",
                b"? [a, b]\n: c\n",
                b"\t- tab\n",
                b"apiVersion: networking.istio.io/v1\n",
                b"kind: Gateway\n",
                b"metadata: {name: dup}\n",
                b"spec: null\n",
                b"&a a: *a\n",
            ]);
            l.insert(at, token.to_vec());
            (l.concat(), "YAML token line")
        }
        _ => {
            // Random bytes, sometimes printable.
            let n = rng.below(2048);
            let printable = rng.chance(2);
            let t = (0..n)
                .map(|_| {
                    if printable {
                        *rng.pick(b"abcdefgh :-[]{}\n\"'&*!|>#0123456789 \n  ")
                    } else {
                        rng.byte()
                    }
                })
                .collect();
            (t, "random bytes")
        }
    }
}

/// What one YAML case did.
enum Outcome {
    Loaded,
    Refused(Vec<String>),
}

/// Runs `load::validate` on `file` on its own thread, as `meshgate
/// validate` would; `Err` on a panic or when it takes longer than `limit`.
fn validate_bounded(file: &Path, limit: Duration) -> Result<(Outcome, Duration), String> {
    let bootstrap = Bootstrap {
        config_paths: vec![file.to_path_buf()],
        // Every error refuses, whatever part it is in.
        strict: true,
        ..Bootstrap::default()
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let started = Instant::now();
    let worker = std::thread::Builder::new()
        .name("validate".into())
        .spawn(move || {
            let r = match meshgate::load::validate(&bootstrap).into_result() {
                Ok(_) => Outcome::Loaded,
                Err(e) => Outcome::Refused(e.0),
            };
            let _ = tx.send(r);
        })
        .expect("spawn a thread");
    match rx.recv_timeout(limit) {
        Ok(r) => {
            let _ = worker.join();
            Ok((r, started.elapsed()))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => Err(format!(
            "no answer within {limit:?} (hang or unbounded work)"
        )),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let why = match worker.join() {
                Err(p) => p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "a panic".into()),
                Ok(()) => "the thread ended without an answer".into(),
            };
            Err(format!("panicked: {why}"))
        }
    }
}

/// Keeps a failing input where it can be read after the test.
fn keep_input(bytes: &[u8], seed: u64) -> PathBuf {
    let p = std::env::temp_dir().join(format!("meshgate-fuzz-{seed:#x}.yaml"));
    let _ = std::fs::write(&p, bytes);
    p
}

#[test]
fn yaml_seeds_load_as_given() {
    // The seeds are real configurations: a mutation starts from something
    // that loads, so what it breaks is the mutation's doing.
    let dir = tempdir();
    for (i, seed) in yaml_seeds(dir.path()).iter().enumerate() {
        let file = dir.path().join(format!("seed-{i}.yaml"));
        std::fs::write(&file, seed).unwrap();
        match validate_bounded(&file, YAML_CASE_LIMIT) {
            Ok((Outcome::Loaded, _)) => {}
            Ok((Outcome::Refused(e), _)) => panic!("seed {i} refused:\n{}\n{seed}", e.join("\n")),
            Err(e) => panic!("seed {i}: {e}"),
        }
    }
}

#[test]
fn yaml_alias_bombs_are_refused_within_bounds() {
    let dir = tempdir();
    for (i, (what, text)) in alias_bombs().into_iter().enumerate() {
        let name = format!("bomb-{i}.yaml");
        let file = dir.path().join(&name);
        std::fs::write(&file, &text).unwrap();
        let (outcome, took) = validate_bounded(&file, YAML_CASE_LIMIT)
            .unwrap_or_else(|e| panic!("a YAML bomb in {what}: {e}\n{text}"));
        let Outcome::Refused(errors) = outcome else {
            panic!("a YAML bomb in {what} was loaded\n{text}");
        };
        assert!(
            errors.iter().all(|e| e.contains(&name)),
            "{what}: every error names the file: {errors:?}"
        );
        assert!(
            errors.iter().any(|e| e.contains("budget")),
            "{what}: refused for its size: {errors:?}"
        );
        eprintln!("YAML bomb in {what}: refused in {took:?}: {}", errors[0]);
    }
}

#[test]
fn mutated_yaml_never_panics_or_hangs_and_errors_name_the_file() {
    watch_panics();
    let (seed, cases) = plan(400);
    let dir = tempdir();
    let seeds = yaml_seeds(dir.path());
    let started = Instant::now();
    let (mut loaded, mut refused) = (0usize, 0usize);
    let mut slowest = (Duration::ZERO, String::new());
    for i in 0..cases {
        let cs = case_seed(seed, i);
        let mut rng = Rng::new(cs);
        let mut text = rng.pick(&seeds).clone().into_bytes();
        let mut applied = Vec::new();
        for _ in 0..=rng.below(3) {
            let (t, what) = mutate_yaml(&mut rng, &text, &seeds);
            text = t;
            applied.push(what);
        }
        let name = format!("case-{i}.yaml");
        let file = dir.path().join(&name);
        std::fs::write(&file, &text).unwrap();
        let fail = |why: String| -> ! {
            let kept = keep_input(&text, cs);
            panic!(
                "YAML case {i} ({applied:?}): {why}\ninput kept in {}\n{}",
                kept.display(),
                replay(cs)
            )
        };
        match validate_bounded(&file, YAML_CASE_LIMIT) {
            Err(why) => fail(why),
            Ok((outcome, took)) => {
                if took > slowest.0 {
                    slowest = (took, format!("case {i} {applied:?}"));
                }
                match outcome {
                    Outcome::Loaded => loaded += 1,
                    Outcome::Refused(errors) => {
                        refused += 1;
                        if errors.is_empty() {
                            fail("refused with no error".into());
                        }
                        for e in &errors {
                            if !e.contains(&name) {
                                fail(format!("an error does not name the file {name}: {e}"));
                            }
                        }
                    }
                }
            }
        }
        let _ = std::fs::remove_file(&file);
    }
    let (panics, text) = panics_so_far();
    assert_eq!(panics, 0, "panics seen: {text:?}");
    eprintln!(
        "fuzz YAML: {cases} cases in {:?}: {loaded} loaded, {refused} refused; slowest {:?} ({})",
        started.elapsed(),
        slowest.0,
        slowest.1
    );
}

// ===================================================================
// ClientHello
// ===================================================================

/// Names the Gateway below serves (and some it does not).
const TERMINATED: &str = "service.fuzz.test";
const PASSTHROUGH: &str = "pass.fuzz.test";

/// Real first flights of rustls clients: TLS 1.3 and 1.2, with and without
/// ALPN, for each name.
fn real_hellos() -> Vec<Vec<u8>> {
    let ca = DevCa::new("fuzz hello CA");
    let roots = meshgate::creds::roots_from_pem(ca.cert_pem.as_bytes()).unwrap();
    let mut out = Vec::new();
    for sni in [TERMINATED, PASSTHROUGH, "unknown.fuzz.test", "127.0.0.1"] {
        for (versions, alpn) in [
            (&[&rustls::version::TLS13][..], false),
            (&[&rustls::version::TLS12][..], true),
            (
                &[&rustls::version::TLS13, &rustls::version::TLS12][..],
                true,
            ),
        ] {
            let mut cfg = rustls::ClientConfig::builder_with_provider(meshgate::creds::provider())
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            if alpn {
                cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            }
            let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
            let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
            let mut bytes = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut bytes).unwrap();
            }
            out.push(bytes);
        }
    }
    out
}

/// A ClientHello record built by hand from random fields: the SNI bytes
/// (anything), versions, suites and extra extensions.
fn random_hello(rng: &mut Rng) -> Vec<u8> {
    fn ext(out: &mut Vec<u8>, kind: u16, data: &[u8]) {
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
    let mut exts = Vec::new();
    let names: [&[u8]; 8] = [
        TERMINATED.as_bytes(),
        PASSTHROUGH.as_bytes(),
        b"",
        b"\xff\xfe.test",
        b"a..b",
        b"bad name.test",
        b"SERVICE.FUZZ.TEST.",
        b"*.fuzz.test",
    ];
    if !rng.chance(5) {
        let name: Vec<u8> = match rng.below(4) {
            0 => vec![b'a'; rng.below(70_000).min(65_000)],
            1 => (0..rng.below(300)).map(|_| rng.byte()).collect(),
            _ => rng.pick(&names).to_vec(),
        };
        let mut entry = vec![if rng.chance(6) { rng.byte() } else { 0 }];
        entry.extend_from_slice(&(name.len() as u16).to_be_bytes());
        entry.extend_from_slice(&name);
        if rng.chance(4) {
            // A second entry in the list.
            entry.extend_from_slice(&[0, 0, 3, b'a', b'.', b'b']);
        }
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        ext(&mut exts, 0, &data);
        if rng.chance(6) {
            ext(&mut exts, 0, &data);
        }
    }
    ext(&mut exts, 10, &[0, 4, 0, 29, 0, 23]);
    ext(&mut exts, 13, &[0, 6, 4, 3, 8, 4, 4, 1]);
    if rng.chance(2) {
        let versions: &[u16] = rng.pick::<&[u16]>(&[
            &[0x0304][..],
            &[0x0303],
            &[0x0302, 0x0301],
            &[0x0304, 0x0303],
            &[],
            &[0x7f1c, 0xfafa],
        ]);
        let mut data = vec![(versions.len() * 2) as u8];
        for v in versions {
            data.extend_from_slice(&v.to_be_bytes());
        }
        ext(&mut exts, 43, &data);
    }
    if rng.chance(3) {
        // key_share with a random (usually wrong) x25519 share.
        let share: Vec<u8> = (0..32).map(|_| rng.byte()).collect();
        let mut entry = vec![0, 29, 0, 32];
        entry.extend_from_slice(&share);
        let mut data = (entry.len() as u16).to_be_bytes().to_vec();
        data.extend_from_slice(&entry);
        ext(&mut exts, 51, &data);
    }
    if rng.chance(3) {
        ext(&mut exts, 16, &[0, 3, 2, b'h', b'2']);
    }
    for _ in 0..rng.below(4) {
        let kind = rng.next() as u16;
        let data: Vec<u8> = (0..rng.below(64)).map(|_| rng.byte()).collect();
        ext(&mut exts, kind, &data);
    }
    let legacy = *rng.pick(&[0x0303u16, 0x0301, 0x0302, 0x0300, 0x0304, 0xffff]);
    let mut body = legacy.to_be_bytes().to_vec();
    body.extend((0..32).map(|_| rng.byte()));
    let sid = rng.below(33);
    body.push(sid as u8);
    body.extend((0..sid).map(|_| rng.byte()));
    let suites: &[u16] = rng.pick::<&[u16]>(&[
        &[0x1301, 0x1302, 0xc02f][..],
        &[0x002f, 0xc013],
        &[],
        &[0x00ff],
    ]);
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]);
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![1];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    records(rng, &hs)
}

/// Wraps a handshake message in records, sometimes fragmented (legal) or
/// with zero-length records (not).
fn records(rng: &mut Rng, hs: &[u8]) -> Vec<u8> {
    let max = if rng.chance(3) {
        1 + rng.below(64)
    } else {
        16_384
    };
    let mut out = Vec::new();
    for piece in hs.chunks(max) {
        if rng.chance(20) {
            out.extend_from_slice(&[0x16, 0x03, 0x01, 0, 0]);
        }
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(piece.len() as u16).to_be_bytes());
        out.extend_from_slice(piece);
    }
    out
}

/// One mutation of ClientHello bytes.
fn mutate_hello(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(9) {
        0 => {
            for _ in 0..=rng.below(6) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len());
                b[i] ^= 1 << rng.below(8);
            }
        }
        1 => {
            for _ in 0..=rng.below(4) {
                if b.is_empty() {
                    break;
                }
                let i = rng.below(b.len());
                b[i] = rng.byte();
            }
        }
        2 => b.truncate(rng.below(b.len() + 1)),
        3 => {
            // A length field (record, handshake, or anywhere) set to an
            // extreme.
            let anywhere = rng.below(b.len().max(1));
            let at = *rng.pick(&[3usize, 6, 7, 8, 43, 44, anywhere]);
            let v: [u8; 2] = *rng.pick(&[[0xff, 0xff], [0, 0], [0x40, 0x01], [0, 1]]);
            if at + 1 < b.len() {
                b[at] = v[0];
                b[at + 1] = v[1];
            }
        }
        4 => {
            // The record re-fragmented into small records.
            if b.len() > 5 && b[0] == 0x16 {
                let hs = b[5..].to_vec();
                b = records(rng, &hs);
            }
        }
        5 => {
            // Garbage after the hello (the client's next flight, or not).
            b.extend((0..rng.below(512)).map(|_| rng.byte()));
        }
        6 => {
            // A chunk deleted.
            if !b.is_empty() {
                let s = rng.below(b.len());
                let e = (s + 1 + rng.below(32)).min(b.len());
                b.drain(s..e);
            }
        }
        7 => {
            // A chunk duplicated.
            if !b.is_empty() {
                let s = rng.below(b.len());
                let e = (s + 1 + rng.below(64)).min(b.len());
                let piece = b[s..e].to_vec();
                b.splice(s..s, piece);
            }
        }
        _ => {
            // Entirely random, starting as a handshake record.
            b = vec![0x16, 0x03, rng.byte()];
            b.extend((0..rng.below(600)).map(|_| rng.byte()));
        }
    }
    b
}

/// The bytes of hello case `cs`.
fn hello_case(cs: u64, real: &[Vec<u8>]) -> Vec<u8> {
    let mut rng = Rng::new(cs);
    let mut b = if rng.chance(2) {
        rng.pick(real).clone()
    } else {
        random_hello(&mut rng)
    };
    for _ in 0..rng.below(4) {
        b = mutate_hello(&mut rng, &b);
    }
    b
}

/// What the inbound listener does with the bytes before the handshake:
/// the SNI peek and rustls' `Acceptor`, fed in the chunks a socket may
/// deliver.
fn parse_like_the_listener(bytes: &[u8], chunk: usize) {
    let _ = hello::raw_server_name(bytes);
    let _ = hello::offers_tls12_or_later(bytes);
    if let hello::RawSni::Name(n) = hello::raw_server_name(bytes) {
        let _ = hello::check_host_name(&n);
    }
    let mut acceptor = rustls::server::Acceptor::default();
    for piece in bytes.chunks(chunk.max(1)) {
        let mut fresh: &[u8] = piece;
        while !fresh.is_empty() {
            if acceptor.read_tls(&mut fresh).is_err() {
                return;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => {
                let hello = accepted.client_hello();
                let _ = hello.server_name().map(str::to_ascii_lowercase);
                let _ = hello.alpn().map(|a| a.count());
                return;
            }
            Ok(None) => {}
            Err(_) => return,
        }
    }
}

#[test]
fn random_client_hellos_never_panic_or_hang_the_sni_peek() {
    watch_panics();
    let (seed, cases) = plan(20_000);
    let real = real_hellos();
    // The whole batch runs on a thread with a deadline: a loop that never
    // ends would otherwise hang the test instead of failing it.
    let current = Arc::new(AtomicUsize::new(usize::MAX));
    let (tx, rx) = std::sync::mpsc::channel();
    let at = current.clone();
    let started = Instant::now();
    std::thread::spawn(move || {
        for i in 0..cases {
            at.store(i, Ordering::SeqCst);
            let cs = case_seed(seed, i);
            let bytes = hello_case(cs, &real);
            let chunk = 1 + Rng::new(cs ^ 0xc0ffee).below(bytes.len().max(1));
            parse_like_the_listener(&bytes, chunk);
        }
        let _ = tx.send(());
    });
    let limit = Duration::from_secs(20).max(Duration::from_millis(2 * cases as u64));
    match rx.recv_timeout(limit) {
        Ok(()) => {}
        Err(e) => {
            let i = current.load(Ordering::SeqCst);
            let cs = case_seed(seed, i);
            let what = if matches!(e, std::sync::mpsc::RecvTimeoutError::Timeout) {
                "did not finish in time"
            } else {
                "panicked"
            };
            panic!(
                "ClientHello case {i} {what}: {:02x?}\n{}",
                hello_case(cs, &real_hellos()),
                replay(cs)
            );
        }
    }
    let (panics, text) = panics_so_far();
    assert_eq!(panics, 0, "panics seen: {text:?}");
    eprintln!(
        "fuzz ClientHello parse: {cases} cases in {:?}",
        started.elapsed()
    );
}

// --- through a real listener ---

/// Every `meshgate_tls_handshake_failures_total` line, summed.
fn handshake_failures(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("meshgate_tls_handshake_failures_total{"))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// An upstream for the PASSTHROUGH server: reads what comes for at most
/// 300 ms, then closes (a TLS server would wait for the client's next
/// flight, which a fuzz case never sends).
async fn sink() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let until = tokio::time::Instant::now() + Duration::from_millis(300);
                while let Ok(Ok(n)) = tokio::time::timeout_at(until, s.read(&mut buf)).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Sends `bytes` (then half-closes, or not) and reads until the proxy
/// closes; `Err` with what came back if it is still open after `limit`.
async fn send_hello(
    addr: SocketAddr,
    bytes: &[u8],
    half_close: bool,
    limit: Duration,
) -> Result<Vec<u8>, Vec<u8>> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    // The proxy may refuse before reading everything: a failed write is
    // one of the outcomes.
    let _ = s.write_all(bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return Err(got),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_client_hellos_on_a_listener_are_closed_and_good_clients_served() {
    watch_panics();
    let (seed, cases) = plan(400);
    let cases = if std::env::var("MESHGATE_FUZZ_CASES").is_ok() {
        cases
    } else {
        cases / 2
    };
    const HANDSHAKE: Duration = Duration::from_millis(500);
    let dir = tempdir();
    let ca = DevCa::new("fuzz listener CA");
    let leaf = ca.issue(&LeafSpec::server(&[TERMINATED]));
    let (cert, key) = leaf.write(dir.path(), "server").unwrap();
    let upstream = sink().await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: fuzz}}
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: ["{TERMINATED}"]
    tls: {{mode: SIMPLE, serverCertificate: {cert}, privateKey: {key}}}
  - port: {{number: 443, name: pass, protocol: TLS}}
    hosts: ["{PASSTHROUGH}"]
    tls: {{mode: PASSTHROUGH}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: fuzz}}
spec:
  hosts: ["{TERMINATED}", "{PASSTHROUGH}"]
  gateways: [fuzz]
  http:
  - route:
    - destination: {{host: 127.0.0.1, port: {{number: {app}}}}}
  tls:
  - match: [{{sniHosts: ["{PASSTHROUGH}"]}}]
    route:
    - destination: {{host: 127.0.0.1, port: {{number: {up}}}}}
"#,
        cert = cert.display(),
        key = key.display(),
        app = meshgate::test_util::echo_service().await.port(),
        up = upstream.port(),
    );
    let p = TestProxy::start(dir, &yaml, |b| {
        b.port_map.insert(443, "127.0.0.1:0".parse().unwrap());
        b.handshake_timeout = HANDSHAKE;
    })
    .await
    .unwrap_or_else(|e| panic!("proxy: {e}\n{yaml}"));
    let addr = p.proxy.inbound()[&443];
    let good = ClientOpts {
        sni: Some(TERMINATED.into()),
        ca_pem: ca.cert_pem.clone(),
        ..Default::default()
    };
    let served = |why: &'static str| {
        let good = good.clone();
        async move {
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                https_get(addr, &good, TERMINATED, "/good", &[]),
            )
            .await
            .unwrap_or_else(|_| panic!("{why}: a good client got no answer in 3 s"));
            match r {
                Ok(r) => assert_eq!(r.status, 200, "{why}: {}", r.body),
                Err(e) => panic!("{why}: a good client failed: {e}"),
            }
        }
    };
    served("before the fuzz cases").await;

    let real = real_hellos();
    let started = Instant::now();
    // Connections at a time: enough to overlap the deadline waits, few
    // enough for a shared machine.
    const PARALLEL: usize = 20;
    let limit = HANDSHAKE + Duration::from_secs(3);
    let failures0 = handshake_failures(&p.metrics().await);
    // Closed silently, with an alert first, with a handshake record first,
    // with an HTTP 400 (not TLS).
    let mut outcomes = [0usize; 4];
    let mut i = 0;
    while i < cases {
        let mut batch = tokio::task::JoinSet::new();
        for j in i..(i + PARALLEL).min(cases) {
            let cs = case_seed(seed, j);
            let bytes = hello_case(cs, &real);
            // Mostly half-closed (fast); some left open, which only the
            // handshake deadline ends.
            let half_close = !Rng::new(cs ^ 0x5eed).chance(4);
            batch.spawn(async move {
                let r = send_hello(addr, &bytes, half_close, limit).await;
                (j, cs, half_close, bytes, r)
            });
        }
        while let Some(r) = batch.join_next().await {
            let (j, cs, half_close, bytes, r) = r.expect("a case task");
            match &r {
                Ok(got) if got.is_empty() => outcomes[0] += 1,
                // Bytes that do not start a TLS record are not TLS: plain
                // HTTP gets a 400 saying so.
                Ok(got) if bytes.first() != Some(&0x16) => {
                    let text = String::from_utf8_lossy(got);
                    assert!(
                        text.starts_with("HTTP/1.1 400 ") && text.contains("not_tls"),
                        "ClientHello case {j} (not a TLS record): {text:?}\n{}",
                        replay(cs)
                    );
                    outcomes[3] += 1;
                }
                // Alerts, or a handshake going on: TLS records only.
                Ok(got) if got[0] == 0x15 => outcomes[1] += 1,
                Ok(got) if got[0] == 0x16 => outcomes[2] += 1,
                Ok(got) => panic!(
                    "ClientHello case {j}: the TLS port answered with something not TLS: {got:02x?}\nsent: {bytes:02x?}\n{}",
                    replay(cs)
                ),
                Err(_) => {}
            }
            if let Err(got) = r {
                panic!(
                    "ClientHello case {j} (half-closed: {half_close}) still open after {limit:?}; {} bytes came back\nsent: {bytes:02x?}\n{}",
                    got.len(),
                    replay(cs)
                );
            }
        }
        i += PARALLEL;
        // Someone else is served while the cases run.
        served("between fuzz batches").await;
    }
    served("after every fuzz case").await;
    // Every fuzz connection was released.
    let label = format!(
        "meshgate_downstream_connections_active{{listener=\"{}_443\"}}",
        addr.ip()
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let open = p.metric(&label).await;
        if open == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} connection(s) still open on the listener after the fuzz cases"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (panics, text) = panics_so_far();
    assert_eq!(panics, 0, "panics seen in the process: {text:?}");
    // Refusals are counted (most cases are malformed).
    let refused = handshake_failures(&p.metrics().await) - failures0;
    assert!(
        cases < 20 || refused > 0.0,
        "no handshake failure counted for {cases} hostile ClientHellos"
    );
    eprintln!(
        "fuzz ClientHello listener: {cases} connections in {:?}: {} closed silently, {} alerts, {} handshake replies, {} not-TLS 400s; {refused} handshake failures counted",
        started.elapsed(),
        outcomes[0],
        outcomes[1],
        outcomes[2],
        outcomes[3],
    );
}
