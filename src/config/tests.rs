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
