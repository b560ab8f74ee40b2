use super::yaml::{self, Node};
use super::*;

fn run(text: &str) -> Injected {
    inject("in.yaml", text, &Options::default()).unwrap_or_else(|e| {
        panic!(
            "inject failed: {}",
            e.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn errors(text: &str) -> Vec<String> {
    match inject("in.yaml", text, &Options::default()) {
        Ok(out) => panic!("expected errors, got:\n{}", out.output),
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

fn names(list: Option<&Node>) -> Vec<String> {
    match list {
        Some(Node::Seq(items)) => items
            .iter()
            .filter_map(|c| c.get_str("name").map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The pod template (or the pod) of the only document of `out`.
fn pod_of(out: &str) -> Node {
    let doc = yaml::parse(out).expect("output parses");
    match doc.get_str("kind") {
        Some("Pod") => doc,
        _ => doc
            .get("spec")
            .and_then(|s| s.get("template"))
            .cloned()
            .expect("spec.template"),
    }
}

fn annotation(pod: &Node, key: &str) -> Option<String> {
    pod.get("metadata")?
        .get("annotations")?
        .get_str(key)
        .map(str::to_string)
}

const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      initContainers:
      - name: migrate
        image: web:1
      containers:
      - name: web
        image: web:1
        ports:
        - containerPort: 8080
";

#[test]
fn the_template_parses_and_takes_the_images() {
    let s = Sidecar::new(&Options {
        image: "reg.example/meshgate:1.2".into(),
        init_image: "reg.example/meshgate-init:1.2".into(),
    })
    .unwrap();
    assert_eq!(
        names(Some(&Node::Seq(s.containers.clone()))),
        [SIDECAR_NAME]
    );
    assert_eq!(
        names(Some(&Node::Seq(s.init_containers.clone()))),
        [INIT_NAME]
    );
    assert_eq!(
        s.containers[0].get_str("image"),
        Some("reg.example/meshgate:1.2")
    );
    assert_eq!(
        s.init_containers[0].get_str("image"),
        Some("reg.example/meshgate-init:1.2")
    );
    assert_eq!(
        s.status(),
        r#"{"initContainers":["meshgate-init"],"containers":["meshgate"],"volumes":["meshgate-bootstrap","meshgate-podinfo","meshgate-identity","meshgate-token","meshgate-ca-root","meshgate-init-run"]}"#
    );
}

#[test]
fn a_deployment_gets_the_init_container_last_the_sidecar_last_and_annotations() {
    let out = run(DEPLOYMENT);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    let pod = pod_of(&out.output);
    let spec = pod.get("spec").unwrap();
    assert_eq!(names(spec.get("initContainers")), ["migrate", INIT_NAME]);
    assert_eq!(names(spec.get("containers")), ["web", SIDECAR_NAME]);
    assert_eq!(names(spec.get("volumes")).len(), 6);
    assert_eq!(
        annotation(&pod, "kubectl.kubernetes.io/default-container").as_deref(),
        Some("web")
    );
    assert_eq!(
        annotation(&pod, "prometheus.io/port").as_deref(),
        Some("15020")
    );
    assert_eq!(
        annotation(&pod, "prometheus.io/path").as_deref(),
        Some("/stats/prometheus")
    );
    assert_eq!(
        annotation(&pod, "prometheus.io/scrape").as_deref(),
        Some("true")
    );
    assert!(annotation(&pod, STATUS_ANNOTATION).is_some());
    // The rest of the document is kept, in its order.
    let doc = yaml::parse(&out.output).unwrap();
    let Node::Map(top) = &doc else { panic!() };
    let keys: Vec<_> = top.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    assert_eq!(
        doc.get("spec")
            .and_then(|s| s.get("selector"))
            .and_then(|s| s.get("matchLabels"))
            .and_then(|m| m.get_str("app")),
        Some("web")
    );
}

#[test]
fn injecting_twice_changes_nothing() {
    let once = run(DEPLOYMENT).output;
    let twice = run(&once);
    assert_eq!(twice.output, once);
    assert_eq!(twice.warnings.len(), 1);
    assert!(
        twice.warnings[0].contains("meshgate is already injected"),
        "{:?}",
        twice.warnings
    );
}

#[test]
fn a_container_named_meshgate_counts_as_injected() {
    let text = DEPLOYMENT.replace("      - name: web\n", "      - name: meshgate\n");
    let out = run(&text);
    assert_eq!(out.output, text);
    assert!(out.warnings[0].contains("already injected"));
}

#[test]
fn istio_injected_pods_are_left_alone_with_a_warning() {
    let text = DEPLOYMENT.replace("      - name: web\n", "      - name: istio-proxy\n");
    let out = run(&text);
    assert_eq!(out.output, text);
    assert!(
        out.warnings[0].contains("Istio's sidecar"),
        "{:?}",
        out.warnings
    );
    let text = DEPLOYMENT.replace(
        "      labels:\n        app: web\n",
        "      labels:\n        app: web\n      annotations:\n        sidecar.istio.io/status: '{}'\n",
    );
    assert_eq!(run(&text).output, text);
}

#[test]
fn opting_out_label_wins_over_annotation() {
    let with = |labels: &str, annotations: &str| {
        DEPLOYMENT.replace(
            "      labels:\n        app: web\n",
            &format!("      labels:\n        app: web\n{labels}      annotations:\n{annotations}"),
        )
    };
    let false_annotation = with("", "        sidecar.istio.io/inject: \"false\"\n");
    let out = run(&false_annotation);
    assert_eq!(out.output, false_annotation);
    assert!(out.warnings[0].contains("annotation sidecar.istio.io/inject is \"false\""));

    let false_label = with(
        "        sidecar.istio.io/inject: \"false\"\n",
        "        sidecar.istio.io/inject: \"true\"\n",
    );
    let out = run(&false_label);
    assert_eq!(out.output, false_label);
    assert!(out.warnings[0].contains("label sidecar.istio.io/inject"));

    let true_label = with(
        "        sidecar.istio.io/inject: \"true\"\n",
        "        sidecar.istio.io/inject: \"false\"\n",
    );
    let out = run(&true_label);
    assert!(out.warnings.is_empty(), "{:?}", out.warnings);
    assert!(out.output.contains(SIDECAR_NAME));
}

#[test]
fn an_invalid_inject_value_falls_back_to_injecting_with_a_warning() {
    let text = DEPLOYMENT.replace(
        "      labels:\n        app: web\n",
        "      labels:\n        app: web\n      annotations:\n        sidecar.istio.io/inject: \"no\"\n",
    );
    let out = run(&text);
    assert!(out.output.contains("name: meshgate\n"));
    assert_eq!(out.warnings.len(), 1);
    assert!(
        out.warnings[0].contains("neither \"true\" nor \"false\""),
        "{:?}",
        out.warnings
    );
}

#[test]
fn host_network_and_system_namespaces_are_skipped() {
    let text = DEPLOYMENT.replace("    spec:\n", "    spec:\n      hostNetwork: true\n");
    let out = run(&text);
    assert_eq!(out.output, text);
    assert!(out.warnings[0].contains("hostNetwork"));

    let text = DEPLOYMENT.replace("namespace: shop", "namespace: kube-system");
    let out = run(&text);
    assert_eq!(out.output, text);
    assert!(out.warnings[0].contains("kube-system"));
}

#[test]
fn the_apps_own_annotations_stay() {
    let text = DEPLOYMENT.replace(
        "      labels:\n        app: web\n",
        "      labels:\n        app: web\n      annotations:\n        prometheus.io/port: \"9090\"\n        kubectl.kubernetes.io/default-container: sidecar-of-app\n",
    );
    let out = run(&text);
    let pod = pod_of(&out.output);
    assert_eq!(
        annotation(&pod, "prometheus.io/port").as_deref(),
        Some("9090")
    );
    assert_eq!(annotation(&pod, "prometheus.io/path"), None);
    assert_eq!(
        annotation(&pod, "kubectl.kubernetes.io/default-container").as_deref(),
        Some("sidecar-of-app")
    );
    assert!(out.warnings[0].contains("prometheus.io annotations are kept"));
}

#[test]
fn a_pod_without_metadata_gets_it_before_spec() {
    let out =
        run("apiVersion: v1\nkind: Pod\nspec:\n  containers:\n  - name: app\n    image: app\n");
    let doc = yaml::parse(&out.output).unwrap();
    let Node::Map(top) = &doc else { panic!() };
    let keys: Vec<_> = top.iter().filter_map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["apiVersion", "kind", "metadata", "spec"]);
    assert!(annotation(&doc, STATUS_ANNOTATION).is_some());
}

#[test]
fn lists_jobs_and_other_kinds() {
    let list = format!(
        "apiVersion: v1\nkind: List\nitems:\n{}",
        DEPLOYMENT
            .lines()
            .enumerate()
            .map(|(i, l)| if i == 0 {
                format!("- {l}\n")
            } else {
                format!("  {l}\n")
            })
            .collect::<String>()
    );
    let out = run(&list);
    let doc = yaml::parse(&out.output).unwrap();
    let Some(Node::Seq(items)) = doc.get("items") else {
        panic!()
    };
    let spec = items[0]
        .get("spec")
        .and_then(|s| s.get("template"))
        .and_then(|t| t.get("spec"))
        .unwrap();
    assert_eq!(names(spec.get("containers")), ["web", SIDECAR_NAME]);

    let job = "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\nspec:\n  template:\n    spec:\n      containers:\n      - name: a\n";
    let out = run(job);
    assert_eq!(out.output, job);
    assert!(
        out.warnings[0].contains("(Job once): not injected: a Job's pod"),
        "{:?}",
        out.warnings
    );

    // A Deployment of another API group is not Kubernetes' Deployment.
    let other = DEPLOYMENT.replace("apps/v1", "example.com/v1");
    let out = run(&other);
    assert_eq!(out.output, other);
    assert!(out.warnings.is_empty());
}

#[test]
fn documents_left_alone_keep_their_text_and_comments() {
    let text = format!(
        "# the service\napiVersion: v1\nkind: Service\nmetadata:\n  name: web # inline\nspec:\n  ports:\n  - port: 80\n---\n{DEPLOYMENT}---\n# only a comment\n"
    );
    let out = run(&text);
    let docs: Vec<&str> = out.output.split("---\n").collect();
    assert_eq!(docs.len(), 2, "{}", out.output);
    assert_eq!(
        docs[0],
        "# the service\napiVersion: v1\nkind: Service\nmetadata:\n  name: web # inline\nspec:\n  ports:\n  - port: 80\n"
    );
    assert!(docs[1].contains("name: meshgate\n"));
}

#[test]
fn errors_name_the_file_line_document_and_field_all_at_once() {
    let text = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: ok\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  template:\n    spec:\n      containers: web\n---\n- a list\n---\nkey: [unclosed\n---\n{DEPLOYMENT}"
    );
    let e = errors(&text);
    assert_eq!(e.len(), 3, "{e:#?}");
    assert_eq!(
        e[0],
        "in.yaml:6: document 2 (Deployment broken): spec.template.spec.containers: expected a list, found a string"
    );
    assert_eq!(
        e[1],
        "in.yaml:15: document 3: is a list, not a Kubernetes object (a mapping with apiVersion and kind)"
    );
    assert!(e[2].starts_with("in.yaml:17: document 4: "), "{}", e[2]);
}

#[test]
fn structural_errors() {
    let e = errors("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\nspec: {}\n");
    assert_eq!(
        e,
        ["in.yaml:1: document 1 (Deployment x): spec.template is missing"]
    );
    let e = errors("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers: []\n");
    assert_eq!(
        e,
        ["in.yaml:1: document 1 (Pod p): spec.containers: the pod has no container"]
    );
    let e = errors(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: [x]\nspec:\n  containers:\n  - name: a\n",
    );
    assert_eq!(
        e,
        ["in.yaml:1: document 1 (Pod p): metadata.annotations: expected a mapping, found a list"]
    );
    let e = errors(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - image: a\n",
    );
    assert_eq!(
        e,
        ["in.yaml:1: document 1 (Pod p): spec.containers[0].name: expected a string"]
    );
    let e = errors(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p\n",
    );
    assert_eq!(
        e,
        ["in.yaml:1: document 1 (Pod p): items[0]: spec is missing"]
    );
}

#[test]
fn what_would_clash_is_refused() {
    let pod = |extra: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec:\n  containers:\n  - name: app\n{extra}"
        )
    };
    let e = errors(&pod("    ports:\n    - containerPort: 15001\n"));
    assert!(
        e[0].contains("spec.containers[0] (app): containerPort 15001 is one of meshgate's ports"),
        "{e:?}"
    );
    let e = errors(&pod(
        "    ports:\n    - name: mg-ready\n      containerPort: 8080\n",
    ));
    assert!(e[0].contains("port name mg-ready"), "{e:?}");
    let e = errors(&pod(
        "  volumes:\n  - name: meshgate-token\n    emptyDir: {}\n",
    ));
    assert!(
        e[0].contains("spec.volumes: the pod already has a volume named meshgate-token"),
        "{e:?}"
    );
}

#[test]
fn yaml_values_read_as_kubernetes_reads_them_and_are_written_back_safely() {
    let text = "\
z: 1
a: 0644
quoted: \"0644\"
word: \"yes\"
on_string: \"on\"
empty: \"\"
star: \"*\"
number_string: \"15020\"
yes_bool: yes
nothing: null
float: 0.5
multi: |
  line one
  line two
list: []
map: {}
";
    let node = yaml::parse(text).unwrap();
    assert_eq!(node.get("a"), Some(&Node::Int(0o644)));
    assert_eq!(node.get("yes_bool"), Some(&Node::Bool(true)));
    let out = yaml::write(&node).unwrap();
    assert_eq!(yaml::parse(&out).unwrap(), node, "{out}");
    // Key order is kept.
    assert!(out.starts_with("z: 1\na: 420\n"), "{out}");
    for quoted in [
        "\"0644\"",
        "\"yes\"",
        "\"on\"",
        "\"\"",
        "\"*\"",
        "\"15020\"",
    ] {
        let single = quoted.replace('"', "'");
        assert!(
            out.contains(quoted) || out.contains(&single),
            "{quoted} not quoted in:\n{out}"
        );
    }
}

#[test]
fn hostile_input_is_an_error_not_a_crash() {
    // An alias bomb is refused by the parser's budget.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert_eq!(errors(&bomb).len(), 1);
    // Deep nesting.
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    assert_eq!(errors(&deep).len(), 1);
    // Odd scalars where mappings belong.
    for text in [
        "apiVersion: v1\nkind: Pod\nspec: 3\n",
        "apiVersion: v1\nkind: Pod\nmetadata: x\nspec:\n  containers: [{name: a}]\n",
        "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template: [1]\n",
        "apiVersion: v1\nkind: List\nitems: 1\n",
        "apiVersion: v1\nkind: List\nitems: [1]\n",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: a}]\n  volumes: 1\n",
        "apiVersion: v1\nkind: Pod\nspec:\n  containers: [{name: a}]\n  initContainers: [1]\n",
    ] {
        assert_eq!(errors(text).len(), 1, "{text}");
    }
}
