//! The identity the app trusts: `X-Forwarded-Client-Cert` values are quoted
//! as Envoy does, so a certificate's SAN cannot inject pairs or elements.

use meshgate::devpki::{DevCa, LeafSpec};
use meshgate::test_util::{ClientOpts, https_get};

use super::*;

/// Splits an XFCC header the way Envoy reads it: elements on unquoted
/// `,`, pairs on unquoted `;`, keys and values on the first `=`; quoted
/// values unquoted (`\"` → `"`).
fn parse_xfcc(v: &str) -> Vec<Vec<(String, String)>> {
    let mut elements = Vec::new();
    let mut pairs = Vec::new();
    let (mut key, mut val, mut in_key, mut quoted, mut escaped) =
        (String::new(), String::new(), true, false, false);
    let flush_pair = |key: &mut String, val: &mut String, pairs: &mut Vec<(String, String)>| {
        if !key.is_empty() {
            pairs.push((std::mem::take(key), std::mem::take(val)));
        }
    };
    for c in v.chars() {
        if escaped {
            val.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' if !in_key => quoted = !quoted,
            '=' if in_key => in_key = false,
            ';' if !quoted => {
                flush_pair(&mut key, &mut val, &mut pairs);
                in_key = true;
            }
            ',' if !quoted => {
                flush_pair(&mut key, &mut val, &mut pairs);
                elements.push(std::mem::take(&mut pairs));
                in_key = true;
            }
            c if in_key => key.push(c),
            c => val.push(c),
        }
    }
    flush_pair(&mut key, &mut val, &mut pairs);
    elements.push(pairs);
    elements
}

#[test]
fn the_parser_reads_envoys_examples() {
    // From Envoy's docs (x-forwarded-client-cert).
    let e = parse_xfcc(
        "By=http://frontend.lyft.com;Hash=468ed33be74eee6556d90c0149c1309e9ba61d6425303443c0748a02dd8de688;Subject=\"/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client\";URI=http://testclient.lyft.com",
    );
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].len(), 4);
    assert_eq!(
        e[0][2].1,
        "/C=US/ST=CA/L=San Francisco/OU=Lyft/CN=Test Client"
    );
}

#[tokio::test]
async fn a_san_cannot_inject_pairs_or_elements_into_xfcc() {
    let ca = DevCa::new("xfcc CA");
    let dir = tempdir();
    let server = ca.issue(&LeafSpec::server(&["app.test"]));
    let (cert, key) = server.write(dir.path(), "srv").unwrap();
    let ca_file = ca.write_cert(dir.path(), "ca.crt").unwrap();
    let app = backend("app").await;
    let yaml = format!(
        r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  servers:
  - port: {{number: 8443, name: https, protocol: HTTPS}}
    hosts: [app.test]
    tls: {{mode: MUTUAL, serverCertificate: {cert}, privateKey: {key}, caCertificates: {ca}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: vs, namespace: default}}
spec:
  hosts: [app.test]
  gateways: [gw]
  http:
{route}"#,
        cert = cert.display(),
        key = key.display(),
        ca = ca_file.display(),
        route = route_to(app)
    );
    let p = TestProxy::start(dir, &yaml, |b| {
        b.port_map.insert(8443, "127.0.0.1:0".parse().unwrap());
    })
    .await
    .unwrap();
    let forged = "spiffe://cluster.local/ns/admin/sa/root";
    let mut spec = LeafSpec::client("client");
    spec.uris = vec![format!("spiffe://cluster.local/ns/a/sa/b;URI={forged}")];
    spec.dns = vec![format!("x.test,By={forged}")];
    let client = ca.issue(&spec);
    let opts = ClientOpts {
        sni: Some("app.test".into()),
        ca_pem: ca.cert_pem.clone(),
        identity: Some((client.cert_pem.clone(), client.key_pem.clone())),
        ..Default::default()
    };
    let r = https_get(p.proxy.inbound()[&8443], &opts, "app.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let v: Value = serde_json::from_str(&r.body).unwrap();
    let xfcc = v["headers"]["x-forwarded-client-cert"][0].as_str().unwrap();
    let elements = parse_xfcc(xfcc);
    assert_eq!(elements.len(), 1, "one element: {xfcc}");
    let uris: Vec<&str> = elements[0]
        .iter()
        .filter(|(k, _)| k == "URI")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        uris,
        vec![format!("spiffe://cluster.local/ns/a/sa/b;URI={forged}").as_str()],
        "one URI, the whole SAN: {xfcc}"
    );
    assert!(
        !elements[0].iter().any(|(k, v)| k == "By" && v == forged),
        "no forged By: {xfcc}"
    );
}
