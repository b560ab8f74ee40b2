//! `meshgate explain` run as a binary on configs and certificates made at
//! test time: outbound TLS origination and REGISTRY_ONLY refusals, inbound
//! MUTUAL with accepted and rejected client certificates, unknown SNI, no
//! route, `--json`, and the exit statuses.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use meshgate::devpki::{DevCa, LeafSpec};
use serde_json::Value;

mod common;
use common::binary::{meshgate, run_with_timeout, show, text};

/// Runs `meshgate explain <args>` to completion (killed after 30 s).
fn explain(args: &[&str]) -> Output {
    let mut c = meshgate();
    c.arg("explain").args(args);
    run_with_timeout(c, Duration::from_secs(30))
}

/// `--json` output, parsed.
fn json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(out)))
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p
}

/// The 1-based line where `needle` starts in `body`.
fn line_of(body: &str, needle: &str) -> usize {
    let at = body.find(needle).expect("needle in body");
    body[..at].lines().count() + 1
}

/// Whether a line of `out` reads `key`, then (after padding) `value`.
fn has_line(out: &str, key: &str, value: &str) -> bool {
    out.lines().any(|l| {
        l.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(' ') && rest.trim() == value)
    })
}

/// The `matched` entry of `kind`.
fn matched<'a>(v: &'a Value, kind: &str) -> &'a Value {
    v["matched"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} in {v:#}"))
}

// === outbound ===

const API: &str = "api.external.test";

/// A ServiceEntry (port 80 → targetPort 443, endpoint port 8443) and a
/// DestinationRule originating SIMPLE TLS on port 80, in one file; returns
/// the file and the DestinationRule's line.
fn egress(dir: &Path) -> (PathBuf, usize) {
    let ca = DevCa::new("explain CA").write_cert(dir, "ca.crt").unwrap();
    let body = format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: api
spec:
  hosts: [{API}]
  location: MESH_EXTERNAL
  ports:
  - number: 80
    name: http
    protocol: HTTP
    targetPort: 443
  resolution: STATIC
  endpoints:
  - address: 127.0.0.1
    ports:
      http: 8443
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: api
spec:
  host: {API}
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 80}}
      connectionPool:
        tcp: {{connectTimeout: 3s, maxConnections: 7}}
      tls:
        mode: SIMPLE
        sni: {API}
        subjectAltNames: [{API}, alt.external.test]
        caCertificates: {}
"#,
        ca.display()
    );
    let file = write(dir, "egress.yaml", &body);
    let line = line_of(
        &body,
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule",
    );
    (file, line)
}

#[test]
fn outbound_registered_with_tls_origination() {
    let dir = tempfile::tempdir().unwrap();
    let (file, dr_line) = egress(dir.path());
    let cfg = file.to_str().unwrap();
    let url = format!("http://{API}/v1");
    let out = explain(&["-c", cfg, "outbound", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    let ca = dir.path().join("ca.crt");
    for want in [
        "SERVED: to api.external.test:80 over TLS (SIMPLE)".to_string(),
        format!("egress.yaml:{dr_line}: DestinationRule/default/api"),
        "portLevelSettings port 80".into(),
        "127.0.0.1:8443".into(),
        "connect timeout 3s".into(),
    ] {
        assert!(stdout.contains(&want), "missing {want:?}\n{}", show(&out));
    }
    for (key, value) in [
        ("SNI", API.to_string()),
        ("expected SANs", format!("{API}, alt.external.test")),
        ("CA", format!("caCertificates {} (1 root)", ca.display())),
        ("client cert", "none".into()),
        ("versions", "TLSV1_2 – TLSV1_3".into()),
    ] {
        assert!(
            has_line(&stdout, key, &value),
            "missing {key}: {value}\n{}",
            show(&out)
        );
    }

    let out = explain(&["-c", cfg, "--json", "outbound", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["served"], true);
    assert!(v["refusal"].is_null());
    let dr = matched(&v, "DestinationRule");
    let at = dr["at"].as_str().unwrap();
    assert!(
        at.ends_with(&format!(
            "egress.yaml:{dr_line}: DestinationRule/default/api"
        )),
        "{at}"
    );
    assert!(
        dr["detail"]
            .as_str()
            .unwrap()
            .contains("portLevelSettings port 80")
    );
    let se = matched(&v, "ServiceEntry");
    assert!(
        se["at"]
            .as_str()
            .unwrap()
            .contains("egress.yaml:1: ServiceEntry/default/api")
    );
    let d = &v["destination"];
    assert_eq!(d["kind"], "registered");
    assert_eq!(d["host"], API);
    assert_eq!(d["port"], 80);
    assert_eq!(d["endpoints"], serde_json::json!(["127.0.0.1:8443"]));
    let tls = &d["tls"];
    assert_eq!(tls["mode"], "SIMPLE");
    assert_eq!(tls["sni"], API);
    assert_eq!(
        tls["expectedSans"],
        serde_json::json!([API, "alt.external.test"])
    );
    assert!(
        tls["ca"]
            .as_str()
            .unwrap()
            .contains(&ca.display().to_string())
    );
    assert!(tls["clientCertificate"].is_null());
    assert_eq!(tls["minVersion"], "TLSV1_2");
    assert!(
        tls["at"]
            .as_str()
            .unwrap()
            .ends_with("spec.trafficPolicy.portLevelSettings[0].tls"),
        "{tls:#}"
    );
    assert_eq!(d["pool"]["maxConnections"], 7);
}

#[test]
fn outbound_connect_with_the_apps_own_tls_does_not_originate() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = egress(dir.path());
    let url = format!("https://{API}:80/v1");
    let out = explain(&["-c", file.to_str().unwrap(), "--json", "outbound", &url]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["request"]["kind"], "connect");
    assert!(v["destination"]["tls"].is_null(), "{v:#}");
    let notes = v["notes"].to_string();
    assert!(notes.contains("passes through untouched"), "{notes}");
}

#[test]
fn outbound_refused_under_registry_only() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = egress(dir.path());
    let cfg = file.to_str().unwrap();
    let args = [
        "-c",
        cfg,
        "--outbound-traffic-policy",
        "REGISTRY_ONLY",
        "outbound",
        "http://unknown.example.com/x",
    ];
    let out = explain(&args);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    for want in [
        "REFUSED (502 registry_only)",
        "REGISTRY_ONLY",
        "add a ServiceEntry for unknown.example.com port 80",
    ] {
        assert!(stdout.contains(want), "missing {want:?}\n{}", show(&out));
    }

    let mut with_json = args.to_vec();
    with_json.push("--json");
    let out = explain(&with_json);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["served"], false);
    assert_eq!(v["refusal"]["code"], "registry_only");
    assert_eq!(v["refusal"]["status"], 502);
    assert!(
        v["refusal"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("add a ServiceEntry for unknown.example.com port 80")
    );
    assert!(v["destination"].is_null());

    // A declared host on an undeclared port: the fix names the ServiceEntry.
    let out = explain(&[
        "-c",
        cfg,
        "--outbound-traffic-policy",
        "REGISTRY_ONLY",
        "--json",
        "outbound",
        &format!("http://{API}:8080/"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    let fix = v["refusal"]["suggestion"].as_str().unwrap();
    assert!(
        fix.contains("ServiceEntry/default/api") && fix.contains("add port 8080"),
        "{fix}"
    );
}

#[test]
fn outbound_mesh_route_matches_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = egress(dir.path());
    let vs = write(
        dir.path(),
        "vs.yaml",
        &format!(
            r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: api
spec:
  hosts: [{API}]
  http:
  - name: v1
    match:
    - uri: {{prefix: /v1}}
    timeout: 5s
    route:
    - destination:
        host: {API}
        port: {{number: 80}}
"#
        ),
    );
    let (se, vs) = (file.to_str().unwrap(), vs.to_str().unwrap());
    let out = explain(&[
        "-c",
        se,
        vs,
        "--json",
        "outbound",
        &format!("http://{API}/v1/items"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert!(
        matched(&v, "VirtualService")["at"]
            .as_str()
            .unwrap()
            .ends_with("vs.yaml:1: VirtualService/default/api")
    );
    assert_eq!(v["route"]["name"], "v1");
    assert_eq!(v["route"]["index"], 0);
    assert_eq!(v["route"]["timeout"], "5s");
    assert_eq!(v["destination"]["tls"]["mode"], "SIMPLE");

    let out = explain(&[
        "-c",
        se,
        vs,
        "--json",
        "outbound",
        &format!("http://{API}/v2"),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_route");
    assert_eq!(v["refusal"]["status"], 404);
    assert!(
        v["refusal"]["reason"]
            .as_str()
            .unwrap()
            .contains("VirtualService/default/api")
    );
}

// === inbound ===

const HOST: &str = "h.example.com";

/// A Gateway server on 443 (MUTUAL, client SANs restricted to
/// `allowed.client.test`) with a route for `/x`; returns the config file,
/// the client CA and the Gateway's line.
fn ingress(dir: &Path) -> (PathBuf, DevCa, usize) {
    let server_ca = DevCa::new("server CA");
    let (cert, key) = server_ca
        .issue(&LeafSpec::server(&[HOST]))
        .write(dir, "server")
        .unwrap();
    let client_ca = DevCa::new("client CA");
    let ca = client_ca.write_cert(dir, "client-ca.crt").unwrap();
    let body = format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: app
spec:
  hosts: [{HOST}]
  gateways: [ingress]
  http:
  - name: x
    match:
    - uri: {{prefix: /x}}
    route:
    - destination:
        host: backend.internal
        port: {{number: 8080}}
---
apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: ingress
spec:
  servers:
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls:
      mode: MUTUAL
      serverCertificate: {}
      privateKey: {}
      caCertificates: {}
      subjectAltNames: [allowed.client.test]
"#,
        cert.display(),
        key.display(),
        ca.display()
    );
    let file = write(dir, "ingress.yaml", &body);
    let line = line_of(&body, "apiVersion: networking.istio.io/v1\nkind: Gateway");
    (file, client_ca, line)
}

#[test]
fn inbound_mutual_with_accepted_and_rejected_client_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let (file, client_ca, gw_line) = ingress(dir.path());
    let cfg = file.to_str().unwrap();
    let good = client_ca
        .issue(&LeafSpec::client("allowed.client.test"))
        .write(dir.path(), "good")
        .unwrap()
        .0;
    let base = [
        "-c", cfg, "inbound", "--port", "443", "--sni", HOST, "--path", "/x/1",
    ];
    let with = |cert: &Path, json: bool| {
        let mut a: Vec<&str> = base.to_vec();
        a.extend(["--client-cert", cert.to_str().unwrap()]);
        if json {
            a.push("--json");
        }
        explain(&a)
    };

    let out = with(&good, false);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let stdout = text(&out.stdout);
    for want in [
        format!("ingress.yaml:{gw_line}: Gateway/default/ingress: spec.servers[0]"),
        "MUTUAL".into(),
        "covers the SNI".into(),
        "good.crt: ACCEPTED".into(),
        "http route 0 \"x\"".into(),
        "SERVED: to backend.internal:8080 in plain text".into(),
    ] {
        assert!(stdout.contains(&want), "missing {want:?}\n{}", show(&out));
    }

    let out = with(&good, true);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["served"], true);
    assert_eq!(v["listener"]["port"], 443);
    assert_eq!(v["listener"]["tls"], true);
    assert!(v["server"]["at"].as_str().unwrap().ends_with(&format!(
        "ingress.yaml:{gw_line}: Gateway/default/ingress: spec.servers[0]"
    )));
    assert_eq!(v["serverTls"]["mode"], "MUTUAL");
    assert_eq!(v["serverTls"]["coversSni"], true);
    assert_eq!(v["serverTls"]["clientCertificate"], "required");
    assert_eq!(v["clientCertificate"]["accepted"], true);
    assert_eq!(v["route"]["name"], "x");
    assert_eq!(v["route"]["index"], 0);
    assert!(
        v["route"]["at"]
            .as_str()
            .unwrap()
            .contains("ingress.yaml:1: VirtualService/default/app")
    );
    assert_eq!(v["destination"]["host"], "backend.internal");
    assert_eq!(v["destination"]["port"], 8080);
    assert_eq!(v["destination"]["kind"], "host");

    // Another CA: unknown_ca, refused in the handshake.
    let stranger = DevCa::new("someone else's CA")
        .issue(&LeafSpec::client("allowed.client.test"))
        .write(dir.path(), "stranger")
        .unwrap()
        .0;
    let out = with(&stranger, false);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("stranger.crt: REJECTED (unknown_ca)"),
        "{}",
        show(&out)
    );
    assert!(stdout.contains("TLS alert unknown_ca"), "{}", show(&out));
    let v = json(&with(&stranger, true));
    assert_eq!(v["served"], false);
    assert_eq!(v["clientCertificate"]["accepted"], false);
    assert_eq!(v["clientCertificate"]["reason"], "unknown_ca");
    assert_eq!(v["refusal"]["alert"], "unknown_ca");

    // The right CA, a SAN the server does not allow.
    let other = client_ca
        .issue(&LeafSpec::client("other.client.test"))
        .write(dir.path(), "other")
        .unwrap()
        .0;
    let out = with(&other, true);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["clientCertificate"]["reason"], "san_not_allowed");
    assert!(
        v["clientCertificate"]["detail"]
            .as_str()
            .unwrap()
            .contains("allowed.client.test")
    );

    // No certificate at all.
    let mut a = base.to_vec();
    a.push("--json");
    let out = explain(&a);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_client_cert");
    assert_eq!(v["refusal"]["alert"], "certificate_required");
}

#[test]
fn inbound_unknown_sni_is_refused_with_unrecognized_name() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _, _) = ingress(dir.path());
    let cfg = file.to_str().unwrap();
    let args = [
        "-c",
        cfg,
        "inbound",
        "--port",
        "443",
        "--sni",
        "other.example.com",
    ];
    let out = explain(&args);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    for want in [
        "TLS alert unrecognized_name",
        "no server on port 443 serves SNI \"other.example.com\"",
        "add other.example.com to the hosts of a server on port 443",
    ] {
        assert!(stdout.contains(want), "missing {want:?}\n{}", show(&out));
    }
    let mut a = args.to_vec();
    a.push("--json");
    let v = json(&explain(&a));
    assert_eq!(v["direction"], "inbound");
    assert_eq!(v["refusal"]["code"], "unknown_sni");
    assert_eq!(v["refusal"]["alert"], "unrecognized_name");
    assert!(v["server"].is_null());
}

#[test]
fn inbound_request_without_a_route_is_404_and_a_host_of_another_server_421() {
    let dir = tempfile::tempdir().unwrap();
    let (file, client_ca, _) = ingress(dir.path());
    let good = client_ca
        .issue(&LeafSpec::client("allowed.client.test"))
        .write(dir.path(), "good")
        .unwrap()
        .0;
    let cfg = file.to_str().unwrap();
    let cert = good.to_str().unwrap();
    let common = [
        "-c", cfg, "--json", "inbound", "--port", "443", "--sni", HOST,
    ];
    let run = |extra: &[&str]| {
        let mut a = common.to_vec();
        a.extend(["--client-cert", cert]);
        a.extend(extra);
        explain(&a)
    };
    let out = run(&["--path", "/elsewhere"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_route");
    assert_eq!(v["refusal"]["status"], 404);
    assert!(
        v["refusal"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("VirtualService/default/app")
    );

    let out = run(&["--host", "not-here.example.com", "--path", "/x"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "misdirected_request");
    assert_eq!(v["refusal"]["status"], 421);
}

#[test]
fn a_config_that_does_not_load_exits_64_with_its_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = write(
        dir.path(),
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: broken\nspec:\n  trafficPolicy: {}\n",
    );
    let out = explain(&[
        "-c",
        bad.to_str().unwrap(),
        "outbound",
        "http://a.example.com/",
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("bad.yaml:1: DestinationRule/default/broken")
            && stderr.contains("spec.host"),
        "{}",
        show(&out)
    );
}

#[test]
fn a_server_left_out_is_reported_and_strict_refuses_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (egress, _) = egress(dir.path());
    let broken = write(
        dir.path(),
        "gw.yaml",
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: broken\nspec:\n  servers:\n  - port: {number: 8443, name: https, protocol: HTTPS}\n    hosts: [b.example.com]\n",
    );
    let (e, b) = (egress.to_str().unwrap(), broken.to_str().unwrap());
    let out = explain(&[
        "-c",
        e,
        b,
        "--json",
        "inbound",
        "--port",
        "8443",
        "--sni",
        "b.example.com",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_listener");
    let left_out = v["leftOut"].as_array().unwrap();
    assert!(
        !left_out.is_empty()
            && left_out.iter().all(|e| e
                .as_str()
                .unwrap()
                .contains("gw.yaml:1: Gateway/default/broken")),
        "{v:#}"
    );
    assert!(
        v["refusal"]["suggestion"]
            .as_str()
            .unwrap()
            .contains("did not load"),
        "{v:#}"
    );
    assert!(
        text(&out.stderr).contains("Gateway/default/broken"),
        "{}",
        show(&out)
    );

    // The rest is served.
    let out = explain(&["-c", e, b, "outbound", &format!("http://{API}/")]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(text(&out.stdout).contains("left out"), "{}", show(&out));

    let out = explain(&[
        "-c",
        e,
        b,
        "--strict",
        "outbound",
        &format!("http://{API}/"),
    ]);
    assert_eq!(out.status.code(), Some(64), "{}", show(&out));
}

#[test]
fn outbound_to_a_static_entry_without_endpoints_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let se = write(
        dir.path(),
        "se.yaml",
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: empty\nspec:\n  hosts: [empty.example.com]\n  ports: [{number: 80, name: http, protocol: HTTP}]\n  resolution: STATIC\n",
    );
    let out = explain(&[
        "-c",
        se.to_str().unwrap(),
        "--json",
        "outbound",
        "http://empty.example.com/",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_endpoints");
    assert_eq!(v["refusal"]["status"], 503);
    assert!(
        v["refusal"]["reason"]
            .as_str()
            .unwrap()
            .contains("se.yaml:1: ServiceEntry/default/empty")
    );
    assert_eq!(v["destination"]["endpoints"], serde_json::json!([]));
}

#[test]
fn inbound_passthrough_routes_by_sni() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        dir.path(),
        "pt.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  servers:
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: ["*.pt.example.com"]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: pt
spec:
  hosts: ["*.pt.example.com"]
  gateways: [gw]
  tls:
  - match:
    - sniHosts: [a.pt.example.com]
    route:
    - destination: {host: backend-a.internal, port: {number: 8443}}
"#,
    );
    let cfg = cfg.to_str().unwrap();
    let run = |sni: &str| {
        explain(&[
            "-c", cfg, "--json", "inbound", "--port", "443", "--sni", sni,
        ])
    };
    let out = run("a.pt.example.com");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["serverTls"]["mode"], "PASSTHROUGH");
    assert!(
        matched(&v, "VirtualService")["at"]
            .as_str()
            .unwrap()
            .ends_with("pt.yaml:11: VirtualService/default/pt")
    );
    assert_eq!(
        v["destination"]["endpoints"],
        serde_json::json!(["backend-a.internal:8443"])
    );
    assert!(v["destination"]["tls"].is_null());

    let out = run("b.pt.example.com");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "no_route");
    assert!(v["refusal"]["status"].is_null() && v["refusal"]["alert"].is_null());
}

#[test]
fn outbound_tls_policy_require_shows_the_decision() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _) = egress(dir.path());
    let plain = write(
        dir.path(),
        "plain.yaml",
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: plain
spec:
  hosts: [plain.external.test, legacy.external.test]
  ports:
  - {number: 80, name: http, protocol: HTTP}
  resolution: DNS
"#,
    );
    let boot = write(
        dir.path(),
        "bootstrap.yaml",
        "outboundTlsPolicy:\n  mode: REQUIRE\n  exceptions: [\"legacy.external.test:80\"]\n",
    );
    let (cfg, plain, boot) = (
        file.to_str().unwrap(),
        plain.to_str().unwrap(),
        boot.to_str().unwrap(),
    );
    let run = |target: &str, json: bool| {
        let mut args = vec!["-c", cfg, "-c", plain, "--bootstrap", boot];
        if json {
            args.push("--json");
        }
        args.extend(["outbound", target]);
        explain(&args)
    };

    // Plain HTTP with nothing to originate TLS: 403, with the fix.
    let out = run("http://plain.external.test/x", false);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let stdout = text(&out.stdout);
    for want in [
        "REFUSED (403 plaintext_refused): plain text to plain.external.test:80 is refused",
        "outboundTlsPolicy.exceptions",
        "REQUIRE refused: plain text to plain.external.test:80 is refused (plaintext_refused)",
    ] {
        assert!(stdout.contains(want), "missing {want:?}\n{}", show(&out));
    }
    let v = json(&run("http://plain.external.test/x", true));
    assert_eq!(v["served"], false);
    assert_eq!(v["refusal"]["code"], "plaintext_refused");
    assert_eq!(v["refusal"]["status"], 403);
    assert_eq!(v["tlsPolicy"]["mode"], "REQUIRE");
    assert_eq!(v["tlsPolicy"]["decision"], "refused");
    assert_eq!(v["tlsPolicy"]["because"], "plaintext");

    // A tunnel's plain bytes close it; the app's own TLS passes through.
    let out = run("plain.external.test:80", true);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "plaintext_refused");
    assert!(v["refusal"]["status"].is_null(), "a closed tunnel: {v:#}");
    let out = run("https://plain.external.test:80/", true);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert_eq!(json(&out)["tlsPolicy"]["because"], "appTls");

    // Originated TLS, and the exception.
    let out = run(&format!("http://{API}/v1"), false);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    assert!(
        text(&out.stdout).contains("REQUIRE allowed: meshgate originates TLS (SIMPLE"),
        "{}",
        show(&out)
    );
    let v = json(&run("http://legacy.external.test/", true));
    assert_eq!(v["served"], true, "{v:#}");
    assert_eq!(v["tlsPolicy"]["because"], "exception");
    assert_eq!(v["tlsPolicy"]["exception"], "legacy.external.test:80");

    // validate-style warnings name what would be refused.
    let stderr = text(&run("http://legacy.external.test/", false).stderr);
    assert!(
        stderr.contains("plain.external.test:80 will be refused under outboundTlsPolicy REQUIRE")
            && !stderr.contains("legacy.external.test:80 will be refused"),
        "{stderr}"
    );

    // Under ALLOW (the default) JSON says so, and text has no line for it.
    let out = explain(&[
        "-c",
        cfg,
        "-c",
        plain,
        "--json",
        "outbound",
        "http://plain.external.test/",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["tlsPolicy"]["mode"], "ALLOW");
    assert_eq!(v["tlsPolicy"]["because"], "allowMode");
}

/// `explain inbound` decides AuthorizationPolicy as the proxy does and
/// names the policy (file, line) and rule; `--source-ip` is the client.
#[test]
fn inbound_authorization_names_the_deciding_policy_and_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (file, client_ca, _) = ingress(dir.path());
    let policies = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-secrets, namespace: default}
spec:
  action: DENY
  rules:
  - to: [{operation: {paths: ['/x/secret*']}}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: from-ten, namespace: default}
spec:
  rules:
  - from: [{source: {ipBlocks: [10.0.0.0/8]}}]
";
    let pfile = write(dir.path(), "policies.yaml", policies);
    let good = client_ca
        .issue(&LeafSpec::client("allowed.client.test"))
        .write(dir.path(), "good")
        .unwrap()
        .0;
    let run = |path: &str, ip: &str| {
        explain(&[
            "-c",
            file.to_str().unwrap(),
            "-c",
            pfile.to_str().unwrap(),
            "inbound",
            "--port",
            "443",
            "--sni",
            HOST,
            "--client-cert",
            good.to_str().unwrap(),
            "--path",
            path,
            "--source-ip",
            ip,
            "--json",
        ])
    };

    let out = run("/x/1", "10.1.2.3");
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let v = json(&out);
    assert!(
        matched(&v, "AuthorizationPolicy")["at"]
            .as_str()
            .unwrap()
            .ends_with("policies.yaml:9: AuthorizationPolicy/default/from-ten"),
        "{v:#}"
    );

    let out = run("/x/1", "192.0.2.1");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert_eq!(v["refusal"]["code"], "rbac_access_denied", "{v:#}");
    assert_eq!(v["refusal"]["status"], 403);
    assert!(
        v["refusal"]["reason"]
            .as_str()
            .unwrap()
            .contains("default/from-ten"),
        "{v:#}"
    );

    let out = run("/x/secret/a", "10.1.2.3");
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    let v = json(&out);
    assert!(
        v["refusal"]["reason"]
            .as_str()
            .unwrap()
            .contains("default/no-secrets spec.rules[0]"),
        "{v:#}"
    );
    assert!(
        matched(&v, "AuthorizationPolicy")["at"]
            .as_str()
            .unwrap()
            .ends_with("policies.yaml:1: AuthorizationPolicy/default/no-secrets"),
        "{v:#}"
    );
}
