use super::*;

const EGRESS: &str = r#"# Istio "Egress TLS Origination" task
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: edition-cnn-com
spec:
  hosts:
  - edition.cnn.com
  ports:
  - number: 80
    name: http-port
    protocol: HTTP
    targetPort: 443
  - number: 443
    name: https-port
    protocol: HTTPS
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: edition-cnn-com
spec:
  host: edition.cnn.com
  trafficPolicy:
    portLevelSettings:
    - port:
        number: 80
      tls:
        mode: SIMPLE # initiates HTTPS when accessing edition.cnn.com
"#;

#[test]
fn loads_the_istio_egress_task() {
    let c = load_str("egress.yaml", EGRESS).expect("loads");
    assert_eq!(c.service_entries.len(), 1);
    assert_eq!(c.destination_rules.len(), 1);
    let se = &c.service_entries[0];
    assert_eq!(se.source.line, 2);
    assert_eq!(se.source.resource(), "ServiceEntry/default/edition-cnn-com");
    assert_eq!(se.spec.ports[0].target_port, Some(443));
    assert_eq!(c.destination_rules[0].source.line, 19);
}

#[test]
fn type_error_names_file_line_resource_and_field() {
    let bad = EGRESS.replace("number: 443", "number: \"x\"");
    let errs = load_str("egress.yaml", &bad).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    let e = &errs.0[0];
    let msg = e.to_string();
    assert_eq!(e.line, 14, "{msg}");
    assert_eq!(
        e.resource.as_deref(),
        Some("ServiceEntry/default/edition-cnn-com")
    );
    assert_eq!(e.field.as_deref(), Some("spec.ports[1].number"), "{msg}");
    assert!(
        msg.starts_with(
            "egress.yaml:14: ServiceEntry/default/edition-cnn-com: spec.ports[1].number:"
        ),
        "{msg}"
    );
}

#[test]
fn all_errors_are_reported_and_good_documents_still_load() {
    let text = format!(
        "{EGRESS}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: two\nspec:\n  host: a.example.com\n  trafficPolicy:\n    tls:\n      mode: SIMPEL\n---\nkind: [unclosed\n"
    );
    let errs = load_str("many.yaml", &text).unwrap_err();
    assert_eq!(errs.0.len(), 2, "{errs}");
    let first = errs.0[0].to_string();
    assert!(first.contains("DestinationRule/default/two"), "{first}");
    assert!(first.contains("spec.trafficPolicy.tls.mode"), "{first}");
    assert!(first.contains("SIMPEL"), "{first}");
    assert_eq!(errs.0[0].line, 40, "{first}");
    let second = errs.0[1].to_string();
    assert!(second.contains("invalid YAML"), "{second}");
}

#[test]
fn unknown_field_is_an_error_not_ignored() {
    let bad = EGRESS.replace("resolution: DNS", "resolution: DNS\n  resolutoin: STATIC");
    let errs = load_str("f.yaml", &bad).unwrap_err();
    let msg = errs.to_string();
    assert!(msg.contains("resolutoin"), "{msg}");
}

#[test]
fn unknown_kinds_are_skipped_with_a_warning() {
    let text = format!(
        "{EGRESS}---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec: {{}}\n"
    );
    let c = load_str("k.yaml", &text).expect("loads");
    assert_eq!(c.warnings.len(), 1);
    assert!(
        c.warnings[0].starts_with("k.yaml:32: skipping Deployment"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn secrets_decode_data_and_string_data() {
    let text = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: client\n  namespace: istio-system\ndata:\n  tls.crt: aGVsbG8=\nstringData:\n  ca.crt: plain\n";
    let c = load_str("s.yaml", text).expect("loads");
    assert_eq!(c.secrets[0].data["tls.crt"], b"hello");
    assert_eq!(c.secrets[0].data["ca.crt"], b"plain");
    let bad = text.replace("aGVsbG8=", "not*base64");
    let msg = load_str("s.yaml", &bad).unwrap_err().to_string();
    assert!(
        msg.contains("Secret/istio-system/client: data.tls.crt: not valid base64"),
        "{msg}"
    );
}

#[test]
fn split_keeps_line_numbers() {
    let docs = split_documents("---\na: 1\n---\n# only a comment\n---\nb: 2\n");
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].first_line, 2);
    assert_eq!(docs[1].first_line, 6);
}

#[test]
fn an_alias_bomb_is_refused_early_naming_the_file() {
    // Nine levels of nine aliases: 9^9 nodes if expanded.
    let mut labels = String::from(
        "    a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        let refs = vec![format!("*{}", w[0]); 9].join(",");
        labels.push_str(&format!("    {}: &{} [{refs}]\n", w[1], w[1]));
    }
    let text = format!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: bomb\n  labels:\n{labels}spec:\n  hosts: [x.test]\n"
    );
    let errs = load_str("bomb.yaml", &text).unwrap_err();
    let msg = errs.to_string();
    // Refused by the replay limit, long before the node limit (250,000).
    assert!(
        msg.contains("bomb.yaml") && msg.contains("RecordedAnchorEvents"),
        "{msg}"
    );
}

#[test]
fn a_later_definition_of_the_same_object_replaces_the_earlier_with_a_warning() {
    let gateway = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: shop}}\nspec:\n  servers:\n  - port: {{number: 443, name: https, protocol: HTTPS}}\n    hosts: [a.test]\n    tls: {{mode: {mode}, credentialName: c}}\n"
        )
    };
    let secret = |v: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: c, namespace: shop}}\nstringData: {{cert: {v}}}\n"
        )
    };
    let text = [
        gateway("MUTUAL"),
        secret("one"),
        // Same name, another namespace: another object.
        gateway("SIMPLE").replace("namespace: shop", "namespace: other"),
        gateway("SIMPLE"),
        secret("two"),
    ]
    .join("---\n");
    let c = load_str("dup.yaml", &text).expect("loads");
    assert_eq!(c.gateways.len(), 2);
    let shop = c
        .gateways
        .iter()
        .find(|g| g.source.namespace == "shop")
        .unwrap();
    assert_eq!(shop.source.line, 24, "the later definition is used");
    assert_eq!(c.secrets.len(), 1);
    assert_eq!(c.secrets[0].data["cert"], b"two");
    assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
    assert!(
        c.warnings[0].contains("dup.yaml:24: Gateway/shop/gw")
            && c.warnings[0].contains("replaces the definition at dup.yaml:1"),
        "{:?}",
        c.warnings
    );
    assert!(
        c.warnings[1].contains("Secret/shop/c") && c.warnings[1].contains("dup.yaml:10"),
        "{:?}",
        c.warnings
    );
}

#[test]
fn a_kubectl_list_is_expanded_into_its_items() {
    let text = r#"# kubectl get se,dr -o yaml
apiVersion: v1
kind: List
metadata:
  resourceVersion: ""
items:
- apiVersion: networking.istio.io/v1
  kind: ServiceEntry
  metadata: {name: api, namespace: shop, resourceVersion: "123", uid: abc}
  spec:
    hosts: [api.example.com]
    ports: [{number: 443, name: https, protocol: HTTPS}]
    resolution: DNS
- apiVersion: networking.istio.io/v1
  kind: DestinationRule
  metadata: {name: api, namespace: shop}
  spec:
    host: api.example.com
    trafficPolicy: {tls: {mode: SIMPEL}}
"#;
    let errs = load_str("list.yaml", text).unwrap_err();
    assert_eq!(errs.0.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!(e.line, 2, "{errs}");
    assert_eq!(
        e.resource.as_deref(),
        Some("DestinationRule/shop/api"),
        "{errs}"
    );
    assert!(errs.to_string().contains("SIMPEL"), "{errs}");
    let good = text.replace("SIMPEL", "SIMPLE");
    let c = load_str("list.yaml", &good).expect("loads");
    assert_eq!(c.service_entries.len(), 1);
    assert_eq!(
        c.service_entries[0].source.resource(),
        "ServiceEntry/shop/api"
    );
    assert_eq!(c.destination_rules.len(), 1);
}

#[test]
fn a_missing_api_version_names_the_resource_at_its_first_line() {
    let text = "# the egress rule\n# for api\nkind: DestinationRule\nmetadata: {name: api, namespace: shop}\nspec: {host: api.example.com}\n";
    let errs = load_str("noversion.yaml", text).unwrap_err();
    let e = &errs.0[0];
    assert_eq!(e.line, 3, "{errs}");
    assert_eq!(
        e.resource.as_deref(),
        Some("DestinationRule/shop/api"),
        "{errs}"
    );
    assert_eq!(e.field.as_deref(), Some("apiVersion"), "{errs}");
    let text = "metadata: {name: api}\nspec: {host: api.example.com}\n";
    let errs = load_str("nokind.yaml", text).unwrap_err();
    assert_eq!(errs.0[0].resource.as_deref(), Some("default/api"), "{errs}");
    assert_eq!(errs.0[0].field.as_deref(), Some("kind"), "{errs}");
}

/// An object read from the API server, as `crate::source` hands it over:
/// one JSON document under the origin `kubernetes:<ns>/<Kind>/<name>`.
fn kubernetes_document(kind_and_spec: &str, ns: &str, name: &str) -> (PathBuf, String) {
    let (kind, spec) = kind_and_spec.split_once(' ').unwrap();
    let (api, kind) = kind.split_once('|').unwrap();
    (
        PathBuf::from(format!("kubernetes:{ns}/{kind}/{name}")),
        format!(
            r#"{{"apiVersion":"{api}","kind":"{kind}","metadata":{{"name":"{name}","namespace":"{ns}","resourceVersion":"7","uid":"u"}},"spec":{spec}}}"#
        ),
    )
}

#[test]
fn objects_from_the_api_server_are_named_by_namespace_kind_and_name() {
    let (origin, good) = kubernetes_document(
        r#"networking.istio.io/v1|ServiceEntry {"hosts":["api.example.com"],"ports":[{"number":443,"name":"https","protocol":"HTTPS"}],"resolution":"DNS"}"#,
        "shop",
        "api",
    );
    let (bad_origin, bad) = kubernetes_document(
        r#"networking.istio.io/v1|DestinationRule {"host":"api.example.com","trafficPolicy":{"tls":{"mode":"SIMPLE","sni":7,"bogus":1}}}"#,
        "shop",
        "api",
    );
    let (config, errors) = load_documents(
        [
            (origin.as_path(), good.as_str()),
            (bad_origin.as_path(), bad.as_str()),
        ],
        &[],
    );
    assert_eq!(config.service_entries.len(), 1);
    let se = &config.service_entries[0].source;
    assert_eq!(se.to_string(), "shop/ServiceEntry/api", "no file, no line");
    assert_eq!(se.location(), "shop/ServiceEntry/api");
    assert_eq!(se.resource(), "ServiceEntry/shop/api");
    assert_eq!(errors.0.len(), 1, "{errors}");
    let msg = errors.0[0].to_string();
    assert!(
        msg.starts_with("shop/DestinationRule/api: spec.trafficPolicy.tls."),
        "{msg}"
    );
    assert!(
        !msg.contains("kubernetes:") && !msg.contains(":1:"),
        "{msg}"
    );
}

#[test]
fn a_file_overrides_the_object_of_the_same_kind_namespace_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let se = |host: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  hosts: [{host}]\n  ports: [{{number: 443, name: https, protocol: HTTPS}}]\n"
        )
    };
    let file = dir.path().join("local.yaml");
    std::fs::write(&file, se("local.example.com")).unwrap();
    let (origin, text) = kubernetes_document(
        r#"networking.istio.io/v1|ServiceEntry {"hosts":["cluster.example.com"],"ports":[{"number":443,"name":"https","protocol":"HTTPS"}]}"#,
        "shop",
        "api",
    );
    let (config, errors) = load_documents([(origin.as_path(), text.as_str())], &[file]);
    assert!(errors.0.is_empty(), "{errors}");
    assert_eq!(config.service_entries.len(), 1);
    assert_eq!(
        config.service_entries[0].spec.hosts,
        vec!["local.example.com".to_string()],
        "the file is read after the cluster's objects"
    );
    assert!(
        config.warnings.len() == 1
            && config.warnings[0].contains("local.yaml:1: ServiceEntry/shop/api")
            && config.warnings[0].contains("replaces the definition at shop/ServiceEntry/api"),
        "{:?}",
        config.warnings
    );
}

#[test]
fn a_secret_as_the_api_server_serves_it_is_read() {
    // `data` base64, `type`, and metadata the API server adds.
    let text = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"gw-cert","namespace":"shop","resourceVersion":"9","uid":"x","creationTimestamp":"2025-01-01T00:00:00Z","labels":{"a":"b"}},"type":"kubernetes.io/tls","data":{"tls.crt":"Y2VydA==","tls.key":"a2V5","ca.crt":"Y2E="}}"#;
    let origin = PathBuf::from("kubernetes:shop/Secret/gw-cert");
    let (config, errors) = load_documents([(origin.as_path(), text)], &[]);
    assert!(errors.0.is_empty(), "{errors}");
    let s = &config.secrets[0];
    assert_eq!(s.source.to_string(), "shop/Secret/gw-cert");
    assert_eq!(s.data["tls.crt"], b"cert");
    assert_eq!(s.data["tls.key"], b"key");
    assert_eq!(s.data["ca.crt"], b"ca");
    let opaque = r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"ca","namespace":"shop"},"type":"Opaque","data":{"ca.crt":"Y2E="}}"#;
    let (config, errors) = load_documents([(origin.as_path(), opaque)], &[]);
    assert!(errors.0.is_empty(), "{errors}");
    assert_eq!(config.secrets[0].data["ca.crt"], b"ca");
}

/// A file large enough to be parsed on several threads reads exactly as
/// it would one document at a time: order, replacements, errors and their
/// lines.
#[test]
fn a_large_file_reads_as_one_document_at_a_time() {
    let n = 4099;
    let mut docs: Vec<String> = (0..n)
        .map(|i| {
            format!(
                "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata:\n  name: s{i}\nspec:\n  hosts: [s{i}.example.com]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n"
            )
        })
        .collect();
    // A type error, the two-pass form (spec first) and a replacement of
    // an earlier object, in different batches.
    docs[2500] = docs[2500].replace("number: 80", "number: eighty");
    docs[3000] = "spec:\n  hosts: [late.example.com]\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: late}\n".into();
    docs.push(docs[10].replace("s10.example.com", "replaced.example.com"));
    let text = docs.join("---\n");
    let (c, errs) = load_documents([(Path::new("big.yaml"), text.as_str())], &[]);
    assert_eq!(errs.0.len(), 1, "{errs}");
    let line_of_2500 = docs[..2500]
        .iter()
        .map(|d| d.lines().count() + 1)
        .sum::<usize>()
        + 1;
    assert_eq!(errs.0[0].line, line_of_2500 + 6, "{}", errs.0[0]);
    assert!(errs.0[0].to_string().contains("ServiceEntry/default/s2500"));
    assert_eq!(c.service_entries.len(), n - 1);
    let hosts = |i: usize| c.service_entries[i].spec.hosts.clone();
    assert_eq!(hosts(0), ["s0.example.com"]);
    assert_eq!(hosts(10), ["replaced.example.com"], "replaced in place");
    assert_eq!(hosts(2999), ["late.example.com"], "after s2500 left out");
    assert_eq!(hosts(n - 2), [format!("s{}.example.com", n - 1)]);
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].contains("replaces the definition"));
}
