//! Parity with Istio's validation of ServiceEntries (`ValidateServiceEntry`,
//! its test cases and CRD test data in `pkg/config/validation`) and with the
//! `istioctl analyze` checks that apply to configuration files (message
//! codes IST0101, IST0109, IST0112, IST0128, IST0129, IST0173, IST0174,
//! IST0177). The YAML is Istio's own where it has some.

use super::*;

const SE: &str = "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\n";

/// A ServiceEntry named `name` (namespace default) with `spec`.
fn se(name: &str, spec: &str) -> String {
    format!("{SE}metadata: {{name: {name}}}\nspec:\n{}", indent(spec, 2))
}

/// The warnings that contain every one of `parts`.
fn warned<'a>(plan: &'a Plan, parts: &[&str]) -> Vec<&'a String> {
    plan.warnings
        .iter()
        .filter(|w| parts.iter().all(|p| w.contains(p)))
        .collect()
}

/// Asserts exactly one warning contains every one of `parts`.
fn assert_warned(plan: &Plan, parts: &[&str]) {
    let w = warned(plan, parts);
    assert_eq!(
        w.len(),
        1,
        "want one warning with {parts:?}, got:\n{:#?}",
        plan.warnings
    );
}

/// Asserts no warning mentions `code`.
fn assert_not_warned(plan: &Plan, code: &str) {
    assert!(
        warned(plan, &[code]).is_empty(),
        "unexpected {code}:\n{:#?}",
        plan.warnings
    );
}

/// Asserts `yaml` is refused with an error at `field` whose reason holds
/// every one of `reason`.
fn assert_refused(yaml: &str, field: &str, reason: &[&str]) {
    let errs = compile_errors(FILE, yaml);
    let found = errs
        .0
        .iter()
        .any(|e| e.field.as_deref() == Some(field) && reason.iter().all(|r| e.reason.contains(r)));
    assert!(
        found,
        "want an error at {field} with {reason:?}, got:\n{errs}"
    );
}

// === ServiceEntries Istio accepts ===

/// Istio's `serviceentry-valid.yaml` CRD test data, unmodified: a selector
/// with DNS, `workloadSelector: {}`, a partial wildcard and a CIDR with no
/// ports, an IPv6 address with a zero-padded group (quoted here: a YAML
/// 1.2 parser reads the trailing `:` before `]` as a mapping).
const ISTIO_VALID: &str = r##"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: full
  namespace: default
spec:
  hosts: ["example.com"]
  workloadSelector:
    labels:
      foo: bar
  addresses: [1.2.3.4, "001:db8::"]
  exportTo: [foo, .]
  location: MESH_EXTERNAL
  ports:
    - name: foo
      protocol: HTTP
      number: 1234
      targetPort: 2345
  subjectAltNames: [sa]
  resolution: DNS
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: static-endpoints
spec:
  hosts: ["example.com"]
  endpoints:
    - address: "sub.example.com"
  ports:
    - name: foo
      protocol: HTTP
      number: 1234
      targetPort: 2345
  resolution: DNS
---
# Weird case but we allow it
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: empty-selector
spec:
  workloadSelector: {}
  hosts: ["example.com"]
---
# Weird case but we allow it
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: partial-wildcard
spec:
  hosts: ["*x"]
---
# Weird case but we allow it
apiVersion: networking.istio.io/v1alpha3
kind: ServiceEntry
metadata:
  name: none-cidr
spec:
  hosts: ["example.com"]
  addresses:
  - 1.1.1.1/32
"##;

#[test]
fn istios_valid_service_entries_load() {
    let plan = compiled(ISTIO_VALID);
    assert_warned(
        &plan,
        &[
            "ServiceEntry/default/empty-selector",
            "spec.workloadSelector",
            "without labels",
        ],
    );
    assert_warned(
        &plan,
        &[
            "ServiceEntry/default/full",
            "spec.workloadSelector",
            "no endpoints",
        ],
    );
    for name in ["empty-selector", "partial-wildcard", "none-cidr"] {
        assert_warned(
            &plan,
            &[
                &format!("ServiceEntry/default/{name}"),
                "spec.ports",
                "declares no port",
            ],
        );
    }
    // The entries without ports register nothing.
    let names: Vec<&str> = plan
        .outbound
        .services
        .iter()
        .map(|s| s.resource.as_str())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

#[test]
fn a_service_entry_without_ports_registers_nothing() {
    let yaml = se(
        "no-ports",
        "hosts: [api.example.com]\nresolution: STATIC\nendpoints: [{address: 10.0.0.1}]",
    );
    for policy in [
        OutboundTrafficPolicy::AllowAny,
        OutboundTrafficPolicy::RegistryOnly,
    ] {
        let plan = plan_with(&yaml, policy);
        assert_warned(
            &plan,
            &[
                "spec.ports",
                "declares no port",
                "its endpoints are not used",
            ],
        );
        assert!(plan.outbound.services.is_empty());
        match (policy, plan.outbound.route("api.example.com", 443, 0)) {
            (OutboundTrafficPolicy::AllowAny, Decision::Passthrough { host, port }) => {
                assert_eq!((host.as_str(), port), ("api.example.com", 443));
            }
            (OutboundTrafficPolicy::RegistryOnly, Decision::Refused { .. }) => {}
            (p, other) => panic!("{p:?}: {other:?}"),
        }
    }
}

#[test]
fn partial_wildcard_hosts_load_with_istios_warning() {
    // Istio's "partial wildcard hosts" case (valid, with a warning).
    let yaml = se(
        "news",
        r#"hosts: ["*.nytimes.com", "*washingtonpost.com"]
ports: [{number: 443, protocol: HTTPS, name: https-nytimes}]
resolution: NONE"#,
    );
    let plan = compiled(&yaml);
    assert_warned(
        &plan,
        &[
            "spec.hosts[1]",
            "partial wildcard \"*washingtonpost.com\" not allowed",
        ],
    );
    // Envoy's suffix match: longer names ending in the suffix.
    for (host, registered) in [
        ("www.washingtonpost.com", true),
        ("thewashingtonpost.com", true),
        ("washingtonpost.com", false),
        ("www.nytimes.com", true),
    ] {
        let got = matches!(plan.outbound.route(host, 443, 0), Decision::Registered(_));
        assert_eq!(got, registered, "{host}");
    }
    // DYNAMIC_DNS takes partial wildcards without a warning, and a
    // DestinationRule may name the same host.
    let yaml = format!(
        "{}---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: wp}}\nspec:\n  host: \"*washingtonpost.com\"\n  trafficPolicy: {{tls: {{mode: SIMPLE, caCertificates: /ca.pem}}}}\n",
        se(
            "wp",
            r#"hosts: ["*washingtonpost.com"]
ports: [{number: 80, protocol: HTTP, name: http}]
resolution: DYNAMIC_DNS"#,
        )
    );
    let plan = compiled(&yaml);
    assert!(
        warned(&plan, &["partial wildcard"]).is_empty(),
        "{:?}",
        plan.warnings
    );
    let t = registered(&plan, "www.washingtonpost.com", 80);
    assert_eq!(t.policy.tls.mode, TlsMode::Simple);
}

#[test]
fn a_workload_selector_entry_has_no_endpoints_and_fails_closed() {
    // Istio's "selector and resolution DNS" case: the endpoints are the
    // selected workloads (not the host); meshgate knows none.
    let dns = se(
        "google",
        r#"hosts: [google.com]
workloadSelector: {labels: {foo: bar}}
ports: [{number: 80, protocol: http, name: http-valid1}]
resolution: DNS"#,
    );
    let plan = compiled(&dns);
    assert_warned(&plan, &["spec.workloadSelector", "no endpoints", "503"]);
    let t = registered(&plan, "google.com", 80);
    assert!(t.endpoints().is_empty(), "{:?}", t.endpoints());
    // STATIC with a selector, and Istio's "discovery type static, missing
    // endpoints": registered, no endpoints.
    for spec in [
        "hosts: [db.example.com]\nworkloadSelector: {labels: {app: db}}\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: STATIC",
        "hosts: [db.example.com]\naddresses: [172.1.2.16]\nports: [{number: 5432, name: tcp, protocol: TCP}]\nresolution: STATIC",
    ] {
        let plan = plan_with(&se("db", spec), OutboundTrafficPolicy::RegistryOnly);
        assert_warned(
            &plan,
            &["spec.endpoints", "no endpoints", "never go elsewhere"],
        );
        let t = registered(&plan, "db.example.com", 5432);
        assert!(t.endpoints().is_empty(), "{spec}: {:?}", t.endpoints());
    }
    // With NONE the selector does nothing (Istio warns); the app's address.
    let none = se(
        "google",
        "hosts: [google.com]\nworkloadSelector: {labels: {foo: bar}}\nports: [{number: 80, protocol: HTTP, name: http}]\nresolution: NONE",
    );
    let plan = compiled(&none);
    assert_warned(&plan, &["should not be set when resolution mode is NONE"]);
    let t = registered(&plan, "google.com", 80);
    assert_eq!(t.endpoints(), endpoints(&[("google.com", 80)]));
}

#[test]
fn ipv6_endpoints_as_istio_parses_them() {
    let yaml = se(
        "v6",
        r#"hosts: [v6.example.com]
ports: [{number: 443, name: https, protocol: HTTPS}]
resolution: STATIC
endpoints:
- address: "2001:DB8::1"
- address: "::ffff:1.2.3.4"
- address: "fe80::1%eth0""#,
    );
    let t = registered(&compiled(&yaml), "v6.example.com", 443);
    assert_eq!(
        t.endpoints(),
        endpoints(&[
            ("2001:db8::1", 443),
            ("::ffff:1.2.3.4", 443),
            ("fe80::1%eth0", 443)
        ])
    );
    // Brackets are not an address (Go's netip), nor a DNS name.
    for resolution in ["STATIC", "DNS"] {
        let yaml = se(
            "v6",
            &format!(
                "hosts: [v6.example.com]\nports: [{{number: 443, name: https, protocol: HTTPS}}]\nresolution: {resolution}\nendpoints: [{{address: \"[::1]\"}}]"
            ),
        );
        assert_refused(
            &yaml,
            "spec.endpoints[0].address",
            &["\"[::1]\"", "not a valid"],
        );
    }
}

#[test]
fn an_empty_protocol_and_istios_other_protocols_are_accepted() {
    // Istio's "empty protocol" case.
    let yaml = se(
        "google",
        r#"hosts: [google.com]
addresses: [172.1.2.16/16]
ports:
- {number: 80, protocol: http, name: http-valid1}
- {number: 8080, name: http-valid2}
- {number: 6379, protocol: Redis, name: redis}
- {number: 3306, protocol: MySQL, name: mysql}
- {number: 3128, protocol: HTTP_PROXY, name: proxy}
resolution: NONE"#,
    );
    let t = registered(&compiled(&yaml), "google.com", 8080);
    assert_eq!(t.port.protocol, "");
}

#[test]
fn an_endpoint_on_another_network_is_warned_and_not_used() {
    // Istio's "network set with no address on endpoint" case.
    let yaml = se(
        "www",
        r#"hosts: [www.example.com]
ports: [{number: 443, protocol: HTTPS, name: https-example}]
endpoints: [{network: cluster-1}]
resolution: STATIC"#,
    );
    let plan = compiled(&yaml);
    assert_warned(&plan, &["spec.endpoints[0].address", "cluster-1"]);
    assert!(
        registered(&plan, "www.example.com", 443)
            .endpoints()
            .is_empty()
    );
}

// === ServiceEntries Istio refuses, for its reason ===

#[test]
fn duplicate_port_names_are_refused() {
    // Istio's "discovery type none, conflicting port names".
    let yaml = se(
        "google",
        r#"hosts: [google.com]
ports:
- {number: 80, protocol: http, name: http-conflict}
- {number: 8080, protocol: http, name: http-conflict}
resolution: NONE"#,
    );
    assert_refused(
        &yaml,
        "spec.ports[1].name",
        &["service entry port name \"http-conflict\" already defined"],
    );
}

#[test]
fn port_names_must_be_rfc1123_labels() {
    let yaml = se(
        "api",
        "hosts: [api.example.com]\nports: [{number: 443, protocol: HTTPS, name: https_443}]",
    );
    assert_refused(
        &yaml,
        "spec.ports[0].name",
        &["invalid port name: https_443"],
    );
}

#[test]
fn hosts_are_checked_as_istio_checks_domains() {
    for (host, reason) in [
        ("foo_bar.example.com", "label \"foo_bar\" invalid"),
        ("1.2.3.4", "top level domain \"4\" cannot be all-numeric"),
        ("-", "label \"-\" invalid"),
        ("foo*.example.com", "label \"foo*\" invalid"),
    ] {
        let yaml = se(
            "api",
            &format!("hosts: [\"{host}\"]\nports: [{{number: 443, protocol: HTTPS, name: https}}]"),
        );
        assert_refused(&yaml, "spec.hosts[0]", &[reason]);
    }
}

#[test]
fn dns_endpoints_must_be_ips_or_names() {
    // Istio's "discovery type DNS, non-FQDN endpoint".
    let yaml = se(
        "google",
        r#"hosts: ["*.google.com"]
ports: [{number: 80, protocol: http, name: http-valid1}]
endpoints:
- {address: "*.lon.google.com", ports: {http-valid1: 8080}}
- {address: in.google.com}
resolution: DNS"#,
    );
    assert_refused(
        &yaml,
        "spec.endpoints[0].address",
        &["\"*.lon.google.com\" is not a valid FQDN or an IP address"],
    );
}

#[test]
fn a_selector_with_endpoints_or_wildcards_is_refused() {
    // Istio's "selector-and-endpoints" and "bad-selector-value" CRD cases.
    let both = se(
        "both",
        r#"hosts: ["example.com"]
workloadSelector: {}
endpoints:
  - address: "1.2.3.4"
ports: [{number: 80, name: http, protocol: HTTP}]
resolution: STATIC"#,
    );
    assert_refused(
        &both,
        "spec.workloadSelector",
        &["only one of WorkloadSelector or Endpoints"],
    );
    let wild = se(
        "wild",
        r#"hosts: ["example.com"]
workloadSelector:
  labels:
    "val": "*"
ports: [{number: 80, name: http, protocol: HTTP}]"#,
    );
    assert_refused(
        &wild,
        "spec.workloadSelector.labels.val",
        &["wildcard is not supported in selector: \"val=*\""],
    );
}

#[test]
fn several_hosts_need_http_or_tls_ports() {
    let yaml = se(
        "dbs",
        r#"hosts: [a.db.example.com, b.db.example.com]
ports: [{number: 5432, protocol: TCP, name: tcp}]
resolution: DNS"#,
    );
    assert_refused(
        &yaml,
        "spec.ports[0].protocol",
        &["multiple hosts provided with non-HTTP, non-TLS ports"],
    );
    // With NONE the hosts are not used: accepted.
    compiled(&yaml.replace("resolution: DNS", "resolution: NONE"));
}

#[test]
fn dynamic_dns_rules() {
    // Istio's "discovery type DYNAMIC_DNS, unsupported TCP protocol",
    // "... endpoints set" and a host that is not a wildcard.
    let tcp = se(
        "google",
        r#"hosts: ["*.google.com"]
ports:
- {number: 80, protocol: http, name: http-valid1}
- {number: 81, protocol: TCP, name: tcp-valid1}
resolution: DYNAMIC_DNS"#,
    );
    assert_refused(
        &tcp,
        "spec.ports[1].protocol",
        &["only HTTP, TLS, GRPC, and HTTP2 protocols are supported"],
    );
    let eps = se(
        "google",
        r#"hosts: ["*.google.com"]
ports: [{number: 80, protocol: http, name: http-valid1}]
endpoints: [{address: in.google.com, ports: {http-valid1: 9080}}]
resolution: DYNAMIC_DNS"#,
    );
    assert_refused(&eps, "spec.endpoints", &["endpoints cannot be set"]);
    let exact = se(
        "google",
        r#"hosts: ["*.google.com", google.com]
ports: [{number: 80, protocol: http, name: http-valid1}]
resolution: DYNAMIC_DNS"#,
    );
    assert_refused(&exact, "spec.hosts[1]", &["host must be wildcarded"]);
}

#[test]
fn export_to_is_checked() {
    for (export_to, field, reason) in [
        (
            "[default, .]",
            "spec.exportTo[1]",
            "duplicate entries in exportTo: . and current namespace default",
        ),
        (
            "[a, a]",
            "spec.exportTo[1]",
            "duplicate entries in exportTo for entry a",
        ),
        (
            "[\"*\", a]",
            "spec.exportTo",
            "cannot have both public (*) and non-public",
        ),
        (
            "[\"~\", a]",
            "spec.exportTo",
            "cannot export service entry to no one (~) and someone",
        ),
        (
            "[Not_A_Namespace]",
            "spec.exportTo[0]",
            "only .,*, or a valid DNS 1123 label",
        ),
    ] {
        let yaml = se(
            "api",
            &format!(
                "hosts: [api.example.com]\nports: [{{number: 443, protocol: HTTPS, name: https}}]\nexportTo: {export_to}"
            ),
        );
        assert_refused(&yaml, field, &[reason]);
    }
    compiled(&se(
        "api",
        "hosts: [api.example.com]\nports: [{number: 443, protocol: HTTPS, name: https}]\nexportTo: [\"~\"]",
    ));
}

#[test]
fn endpoint_labels_are_kubernetes_labels() {
    let yaml = se(
        "api",
        r#"hosts: [api.example.com]
ports: [{number: 443, protocol: HTTPS, name: https}]
resolution: STATIC
endpoints: [{address: 10.0.0.1, labels: {"bad key!": v1}}]"#,
    );
    assert_refused(
        &yaml,
        "spec.endpoints[0].labels.bad key!",
        &["invalid tag key: \"bad key!\""],
    );
}

// === istioctl analyze codes ===

#[test]
fn ist0128_tls_without_ca_certificates() {
    // Istio's testdata destinationrule-simple-destination.yaml.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: db-tls
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
      clientCertificate: /etc/certs/myclientcert.pem
      privateKey: /etc/certs/client_private_key.pem
"#;
    let plan = compiled(yaml);
    assert_warned(
        &plan,
        &[
            "mesh.yaml:1: DestinationRule/default/db-tls: spec.trafficPolicy.tls: IST0128: \
             DestinationRule default/db-tls in namespace default has TLS mode set to SIMPLE but \
             no caCertificates are set to validate server identity for host: \
             mydbserver.prod.svc.cluster.local",
            "system's root certificates",
        ],
    );
    // With a CA, or a credentialName on a rule with a workloadSelector:
    // nothing (Istio's destinationrule-with-ca and -credentialname-selector).
    let with_ca = yaml.replace(
        "      mode: SIMPLE\n",
        "      mode: SIMPLE\n      caCertificates: /etc/certs/ca.pem\n",
    );
    assert_not_warned(&compiled(&with_ca), "IST0128");
    let selector = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: db-tls
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    tls:
      mode: SIMPLE
      credentialName: db-credential
  workloadSelector:
      matchLabels:
        app: db
"#;
    assert_not_warned(&compiled(selector), "IST0128");
}

#[test]
fn ist0129_port_level_tls_without_ca_certificates() {
    // Istio's testdata destinationrule-mutual-port.yaml.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: db-mtls
spec:
  host: mydbserver.prod.svc.cluster.local
  trafficPolicy:
    portLevelSettings:
      - port:
          number: 443
        tls:
          mode: MUTUAL
          clientCertificate: /etc/certs/myclientcert.pem
          privateKey: /etc/certs/client_private_key.pem
          sni: my-nginx.mesh-external.svc.cluster.local
"#;
    let plan = compiled(yaml);
    assert_warned(
        &plan,
        &[
            "spec.trafficPolicy.portLevelSettings[0].tls: IST0129:",
            "has TLS mode set to MUTUAL but no caCertificates are set",
            "at port 443",
        ],
    );
    assert_not_warned(&plan, "IST0128");
}

#[test]
fn ist0101_missing_gateway_and_undeclared_destination_port() {
    let yaml = format!(
        "{}---\n{}",
        se(
            "api",
            "hosts: [api.example.com]\nports: [{number: 443, protocol: HTTPS, name: https}]\nresolution: DNS",
        ),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api}
spec:
  hosts: [api.example.com]
  gateways: [mesh, nowhere]
  http:
  - route:
    - destination: {host: api.example.com, port: {number: 8443}}
"#
    );
    let plan = compiled(&yaml);
    assert_warned(
        &plan,
        &["spec.gateways: IST0101: Referenced gateway not found: gateway \"nowhere\""],
    );
    assert_warned(
        &plan,
        &[
            "spec.http[0].route[0].destination.port.number: IST0101: Referenced host:port not \
             found: \"api.example.com:8443\"",
        ],
    );
}

#[test]
fn ist0109_mesh_virtual_services_with_the_same_host() {
    // The first two of Istio's virtualservice_conflictingmeshgatewayhosts.yaml,
    // with one bound to a gateway that does not conflict.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: productpage
  namespace: foo
spec:
  hosts:
  - productpage # should generate an error as this conflicts with VirtualService foo/bogus
  http:
  - route:
    - destination:
        host: productpage
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: bogus-productpage
  namespace: foo
spec:
  hosts:
  - productpage # should generate an error as this conflicts with VirtualService foo/productpage
  http:
  - route:
    - destination:
        host: reviews
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: foo
spec:
  hosts:
  - reviews # shouldn't generate an error as there's no conflicting VirtualService
  http:
  - route:
    - destination:
        host: reviews
"#;
    let plan = compiled(yaml);
    for name in ["productpage", "bogus-productpage"] {
        assert_warned(
            &plan,
            &[
                &format!("VirtualService/foo/{name}: spec.hosts: IST0109:"),
                "The VirtualServices foo/bogus-productpage,foo/productpage associated with mesh \
                 gateway define the same host productpage.foo.svc.cluster.local",
                "first loaded, VirtualService/foo/productpage",
            ],
        );
    }
    assert_eq!(warned(&plan, &["IST0109"]).len(), 2, "{:#?}", plan.warnings);
}

#[test]
fn ist0112_mesh_destination_without_port_to_several_ports() {
    let yaml = format!(
        "{}---\n{}",
        se(
            "web",
            "hosts: [web.example.com]\nports:\n- {number: 80, protocol: HTTP, name: http}\n- {number: 443, protocol: HTTPS, name: https}\nresolution: DNS",
        ),
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: web}
spec:
  hosts: [web.example.com]
  http:
  - route:
    - destination: {host: web.example.com}
"#
    );
    let plan = compiled(&yaml);
    assert_warned(
        &plan,
        &[
            "spec.http[0].route[0].destination.port: IST0112: This VirtualService routes to a \
             service \"web.example.com\" that exposes multiple ports [80 443]",
        ],
    );
}

#[test]
fn ist0173_subsets_whose_labels_select_no_endpoint() {
    let yaml = format!(
        "{}---\n{}",
        se(
            "reviews",
            r#"hosts: [reviews.example.com]
ports: [{number: 80, protocol: HTTP, name: http}]
resolution: STATIC
endpoints:
- {address: 10.0.0.1, labels: {version: v1}}
- {address: 10.0.0.2, labels: {version: v2}}"#,
        ),
        r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews}
spec:
  host: reviews.example.com
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v3, labels: {version: v3}}
  - {name: all}
"#
    );
    let plan = compiled(&yaml);
    assert_warned(
        &plan,
        &[
            "spec.subsets[1].labels: IST0173: The Subset v3 defined in the DestinationRule does \
             not select any endpoint of ServiceEntry/default/reviews",
            "answered 503",
        ],
    );
    assert_eq!(
        warned(&plan, &["spec.subsets["]).len(),
        1,
        "{:#?}",
        plan.warnings
    );
    // Subsets pick endpoints by their labels, as in Istio.
    let eps = |subset: Option<&str>| {
        plan.outbound
            .registered("reviews.example.com", "reviews.example.com", 80, subset)
            .unwrap()
            .endpoints()
    };
    let ep = |a: &str| (a.to_string(), 80u16);
    assert_eq!(eps(Some("v1")), vec![ep("10.0.0.1")]);
    assert_eq!(eps(Some("v3")), vec![]);
    assert_eq!(eps(Some("all")), vec![ep("10.0.0.1"), ep("10.0.0.2")]);
    assert_eq!(eps(None), vec![ep("10.0.0.1"), ep("10.0.0.2")]);
    // A subset no rule defines selects nothing (Istio: no such cluster).
    assert_eq!(eps(Some("v9")), vec![]);
}

#[test]
fn a_labelled_subset_of_a_dns_service_without_endpoints_selects_nothing() {
    let yaml = format!(
        "{}---\n{}",
        se(
            "api",
            "hosts: [api.example.com]\nports: [{number: 443, protocol: TLS, name: tls}]\nresolution: DNS",
        ),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: api}\nspec:\n  host: api.example.com\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: any}\n"
    );
    let plan = compiled(&yaml);
    let eps = |subset: Option<&str>| {
        plan.outbound
            .registered("api.example.com", "api.example.com", 443, subset)
            .unwrap()
            .endpoints()
    };
    assert_eq!(eps(Some("v1")), vec![]);
    assert_eq!(eps(Some("any")), vec![("api.example.com".to_string(), 443)]);
}

#[test]
fn ist0174_rules_for_hosts_no_service_entry_declares() {
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ghost}
spec:
  host: ghost.example.com
  trafficPolicy:
    connectionPool: {tcp: {connectTimeout: 3s}}
"#;
    let plan = compiled(yaml);
    assert_warned(
        &plan,
        &[
            "spec.host: IST0174: The host ghost.example.com defined in the DestinationRule does \
             not match any services in the mesh",
            "this rule is not used",
        ],
    );
}

#[test]
fn ist0177_service_entries_with_conflicting_protocols() {
    // Istio's testdata serviceentry-conflicting-protocol.yaml.
    let yaml = r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: se-https
  namespace: default
spec:
  hosts:
  - example.com
  ports:
  - name: https-13835
    number: 13835
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: se-http
  namespace: default
spec:
  hosts:
  - example.com
  ports:
  - name: http-13835
    number: 13835
    protocol: HTTP
  resolution: DNS
  location: MESH_EXTERNAL
---
# No conflict: same host, same port, same protocol
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: se-no-conflict
  namespace: default
spec:
  hosts:
  - other.com
  ports:
  - name: https-443
    number: 443
    protocol: HTTPS
  resolution: DNS
  location: MESH_EXTERNAL
"#;
    let plan = compiled(yaml);
    for name in ["se-https", "se-http"] {
        assert_warned(
            &plan,
            &[
                &format!("ServiceEntry/default/{name}: spec.ports: IST0177:"),
                "Multiple ServiceEntries (default/se-http, default/se-https) define the same host \
                 \"example.com\" and port 13835 with conflicting protocols (HTTP, HTTPS)",
            ],
        );
    }
    assert_eq!(warned(&plan, &["IST0177"]).len(), 2);
}

#[test]
fn ist0101_missing_credential_name_secret() {
    // Refused when credentials load (an error, not a warning: the
    // destination or server would have no certificate).
    use crate::creds::SecretError;
    for e in [
        SecretError::NotFoundNoDir {
            credential: cred(None, "db-credential"),
            namespace: "default".into(),
            elsewhere: Vec::new(),
        },
        SecretError::NotFound {
            credential: cred(None, "db-credential"),
            namespace: "default".into(),
            dir: PathBuf::from("/var/run/secrets"),
            elsewhere: Vec::new(),
        },
    ] {
        let text = e.to_string();
        assert!(
            text.starts_with(
                "IST0101: kubernetes://db-credential: Secret default/db-credential not found"
            ),
            "{text}"
        );
    }
}

// === DestinationRule TLS settings Istio refuses together ===

#[test]
fn credential_name_with_files_and_skip_verify_with_a_ca_are_refused() {
    let dr = |tls: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: api}}\nspec:\n  host: api.example.com\n  trafficPolicy:\n    tls: {tls}\n"
        )
    };
    for tls in [
        "{mode: SIMPLE, credentialName: api, caCertificates: /etc/ca.pem}",
        "{mode: MUTUAL, credentialName: api, clientCertificate: /c.pem, privateKey: /k.pem}",
        "{mode: SIMPLE, credentialName: api, caCrl: /etc/ca.crl}",
    ] {
        assert_refused(
            &dr(tls),
            "spec.trafficPolicy.tls.credentialName",
            &["cannot specify client certificates or CA certificate or CA CRL"],
        );
    }
    for tls in [
        "{mode: SIMPLE, insecureSkipVerify: true, caCertificates: /etc/ca.pem}",
        "{mode: SIMPLE, insecureSkipVerify: true, credentialName: api}",
        "{mode: MUTUAL, insecureSkipVerify: true, subjectAltNames: [a], clientCertificate: /c.pem, privateKey: /k.pem}",
    ] {
        assert_refused(
            &dr(tls),
            "spec.trafficPolicy.tls.insecureSkipVerify",
            &["cannot specify CaCertificates or CredentialName or SubjectAltNames"],
        );
    }
    // MUTUAL with credentialName and insecureSkipVerify: the Secret may
    // hold only the identity, as Istio allows.
    let ok = dr("{mode: MUTUAL, insecureSkipVerify: true, credentialName: api}");
    let config = crate::config::load_str(FILE, &ok).unwrap();
    assert!(crate::plan::compile(&config, &crate::bootstrap::Bootstrap::default()).is_ok());
}
