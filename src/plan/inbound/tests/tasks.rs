//! The Istio "Secure Gateways" and "SNI passthrough" tasks.

use super::*;

// === 1. the Istio "Secure Gateways" task ===

/// The task's Gateway for one host, with `{MODE}` for SIMPLE or MUTUAL.
const SECURE_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: https
      protocol: HTTPS
    tls:
      mode: {MODE}
      credentialName: httpbin-credential # must be the same as secret
    hosts:
    - httpbin.example.com
"#;

const HTTPBIN_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: httpbin
spec:
  hosts:
  - "httpbin.example.com"
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        prefix: /status
    - uri:
        prefix: /delay
    route:
    - destination:
        port:
          number: 8000
        host: httpbin
"#;

/// The task's "Configure a TLS ingress gateway for multiple hosts" Gateway.
const MULTI_HOST_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: https-httpbin
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: httpbin-credential
    hosts:
    - httpbin.example.com
  - port:
      number: 443
      name: https-helloworld
      protocol: HTTPS
    tls:
      mode: SIMPLE
      credentialName: helloworld-credential
    hosts:
    - helloworld.example.com
"#;

const HELLOWORLD_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: helloworld
spec:
  hosts:
  - helloworld.example.com
  gateways:
  - mygateway
  http:
  - match:
    - uri:
        exact: /hello
    route:
    - destination:
        host: helloworld
        port:
          number: 5000
"#;

#[test]
fn secure_gateways_task() {
    struct Want {
        hosts: &'static [&'static str],
        mode: TlsServerMode,
        cert: &'static str,
        client_ca: Option<ClientCaSource>,
        routes: &'static [&'static str],
    }
    let httpbin = |mode, client_ca| Want {
        hosts: &["httpbin.example.com"],
        mode,
        cert: "httpbin-credential",
        client_ca,
        routes: &["VirtualService/default/httpbin"],
    };
    let rows: Vec<(&str, String, Vec<Want>)> = vec![
        (
            "single host, SIMPLE",
            docs(&[&SECURE_GATEWAY.replace("{MODE}", "SIMPLE"), HTTPBIN_VS]),
            vec![httpbin(TlsServerMode::Simple, None)],
        ),
        (
            "multiple hosts on one port",
            docs(&[MULTI_HOST_GATEWAY, HTTPBIN_VS, HELLOWORLD_VS]),
            vec![
                httpbin(TlsServerMode::Simple, None),
                Want {
                    hosts: &["helloworld.example.com"],
                    mode: TlsServerMode::Simple,
                    cert: "helloworld-credential",
                    client_ca: None,
                    routes: &["VirtualService/default/helloworld"],
                },
            ],
        ),
        (
            "MUTUAL: the client CA comes from the same credential",
            docs(&[&SECURE_GATEWAY.replace("{MODE}", "MUTUAL"), HTTPBIN_VS]),
            vec![httpbin(
                TlsServerMode::Mutual,
                Some(ClientCaSource::Credential(cred("httpbin-credential"))),
            )],
        ),
    ];
    let mut failures = Vec::new();
    for (case, yaml, want) in rows {
        let plan = compiled(&yaml);
        let l = only_listener(&plan);
        let mut got = Vec::new();
        got.push(format!(
            "port {} bind {:?} tls {} servers {}",
            l.port,
            l.bind,
            l.tls,
            l.servers.len()
        ));
        for s in &l.servers {
            let t = server_tls(s);
            got.push(format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}-{:?} {:?}",
                s.protocol,
                host_strings(&s.hosts),
                t.mode,
                t.certs,
                t.client_ca,
                bound(s),
                t.min_version,
                t.max_version,
                s.gateway,
            ));
        }
        let mut expected = vec![format!(
            "port 443 bind None tls true servers {}",
            want.len()
        )];
        for w in &want {
            expected.push(format!(
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?}-{:?} {:?}",
                ServerProtocol::Https,
                strings(w.hosts),
                w.mode,
                vec![ServerCertSource::Credential(cred(w.cert))],
                w.client_ca,
                strings(w.routes),
                TlsVersion::Tls12,
                TlsVersion::Tls13,
                "default/mygateway",
            ));
        }
        if got != expected {
            failures.push(format!("{case}:\n  got  {got:#?}\n  want {expected:#?}"));
        }
        for (i, s) in l.servers.iter().enumerate() {
            if !s
                .origin
                .ends_with(&format!("Gateway/default/mygateway: spec.servers[{i}]"))
                || !s.terminates()
                || s.https_redirect
                || s.default_endpoint.is_some()
            {
                failures.push(format!("{case}: server {i}: {s:#?}"));
            }
        }
    }
    assert_no_failures(&failures);
}

#[test]
fn secure_gateway_routes_compile_with_the_task_matches() {
    let plan = compiled(&docs(&[MULTI_HOST_GATEWAY, HTTPBIN_VS, HELLOWORLD_VS]));
    let l = only_listener(&plan);
    let httpbin = &l.servers[0].routes[0];
    assert_eq!(host_strings(&httpbin.hosts), ["httpbin.example.com"]);
    assert_eq!(httpbin.http.len(), 1);
    let r = &httpbin.http[0];
    let prefixes: Vec<String> = r
        .matches
        .iter()
        .map(|m| match &m.uri {
            Some(StrMatch::Prefix(p)) => p.clone(),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(prefixes, ["/status", "/delay"]);
    assert_eq!(r.destinations.len(), 1);
    assert_eq!(r.destinations[0].host, "httpbin");
    assert_eq!(r.destinations[0].port, Some(8000));
    let hello = &l.servers[1].routes[0].http[0];
    assert!(
        matches!(&hello.matches[0].uri, Some(StrMatch::Exact(p)) if p == "/hello"),
        "{hello:#?}"
    );
    assert_eq!(
        (
            hello.destinations[0].host.as_str(),
            hello.destinations[0].port
        ),
        ("helloworld", Some(5000))
    );
}

// === 2. the SNI passthrough task ===

const PASSTHROUGH_GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: mygateway
spec:
  selector:
    istio: ingressgateway # use istio default ingress gateway
  servers:
  - port:
      number: 443
      name: tls
      protocol: {PROTOCOL}
    tls:
      mode: PASSTHROUGH
    hosts:
    - nginx.example.com
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: nginx
spec:
  hosts:
  - nginx.example.com
  gateways:
  - mygateway
  tls:
  - match:
    - port: 443
      sniHosts:
      - nginx.example.com
    route:
    - destination:
        host: my-nginx.mesh-external.svc.cluster.local
        port:
          number: 443
"#;

#[test]
fn sni_passthrough_task() {
    let rows = [
        ("TLS", ServerProtocol::Tls),
        ("HTTPS", ServerProtocol::Https),
    ];
    for (protocol, want) in rows {
        let plan = compiled(&PASSTHROUGH_GATEWAY.replace("{PROTOCOL}", protocol));
        let l = only_listener(&plan);
        assert!(l.tls, "{protocol}: {l:#?}");
        let s = only_server(&plan);
        assert_eq!(s.protocol, want, "{protocol}");
        let t = server_tls(s);
        assert_eq!(t.mode, TlsServerMode::Passthrough, "{protocol}");
        assert!(
            t.certs.is_empty() && t.client_ca.is_none(),
            "{protocol}: {t:#?}"
        );
        assert!(!s.terminates(), "{protocol}");
        assert_eq!(s.routes.len(), 1, "{protocol}: {s:#?}");
        let vs = &s.routes[0];
        assert!(
            vs.http.is_empty() && vs.tcp.is_empty(),
            "{protocol}: {vs:#?}"
        );
        assert_eq!(vs.tls.len(), 1, "{protocol}: {vs:#?}");
        let r = &vs.tls[0];
        assert_eq!(
            host_strings(&r.sni_hosts),
            ["nginx.example.com"],
            "{protocol}"
        );
        assert_eq!(r.ports, [443], "{protocol}");
        assert_eq!(r.destinations.len(), 1, "{protocol}");
        let d = &r.destinations[0];
        assert_eq!(
            (d.host.as_str(), d.port, d.subset.as_deref()),
            ("my-nginx.mesh-external.svc.cluster.local", Some(443), None),
            "{protocol}"
        );
    }
}
