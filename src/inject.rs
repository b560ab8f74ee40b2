//! `meshgate inject`: adds meshgate to the pods of Kubernetes manifests, as
//! `istioctl kube-inject` adds Istio's sidecar.
//!
//! Every Pod, and the pod template of every Deployment, StatefulSet,
//! DaemonSet, ReplicaSet and ReplicationController (also inside a `kind:
//! List`), gets the `meshgate-init` init container (the capture rules,
//! last among the init containers, so the app's own init containers run
//! before traffic is captured), the `meshgate` container (last), their
//! volumes, and annotations: `sidecar.meshgate.io/status` (what was added),
//! `kubectl.kubernetes.io/default-container` and Prometheus' `prometheus.io/*`
//! for meshgate's metrics on 15020. What is added is `inject/sidecar.yaml`,
//! the same as `deploy/kubernetes/deployment.yaml` carries.
//!
//! As Istio, a pod is left as it is when it already has the sidecar (the
//! status annotation, or a container of that name — so injecting twice
//! changes nothing), when its label or annotation
//! `sidecar.istio.io/inject` is `"false"` (the label wins), with
//! `hostNetwork` (the rules would capture the node's traffic), or in a
//! Kubernetes system namespace; and meshgate never joins a pod Istio has
//! already injected. Each skip is a warning. Other documents are copied
//! as they were, comments included; an injected document is written anew.

pub mod cli;
pub mod yaml;

use std::fmt;

use serde::Serialize;

use self::yaml::Node;

/// The sidecar container's name.
pub const SIDECAR_NAME: &str = "meshgate";
/// The init container's name.
pub const INIT_NAME: &str = "meshgate-init";
/// The pod annotation recording what was injected (Istio's
/// `sidecar.istio.io/status`).
pub const STATUS_ANNOTATION: &str = "sidecar.meshgate.io/status";
/// Istio's opt-out, honoured as a pod label or annotation.
pub const INJECT_KEY: &str = "sidecar.istio.io/inject";
/// The sidecar image unless `--image` says otherwise.
pub const DEFAULT_IMAGE: &str = "meshgate:latest";
/// The init container's image unless `--init-image` says otherwise (the
/// `init` stage of deploy/Dockerfile: meshgate with iptables and nft).
pub const DEFAULT_INIT_IMAGE: &str = "meshgate-init:latest";

/// What is added, with the default images.
const TEMPLATE: &str = include_str!("inject/sidecar.yaml");

/// Istio's marks of its own injection.
const ISTIO_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
const ISTIO_CONTAINERS: [&str; 2] = ["istio-proxy", "istio-init"];

/// Ports meshgate listens on in the pod's network namespace: admin,
/// outbound, inbound capture, stats, readiness.
const PROXY_PORTS: [i64; 5] = [15000, 15001, 15006, 15020, 15021];

/// Namespaces Istio never injects into.
const IGNORED_NAMESPACES: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "local-path-storage",
];

/// Where meshgate's metrics are, for Prometheus' annotations.
const PROMETHEUS_ANNOTATIONS: [(&str, &str); 3] = [
    ("prometheus.io/scrape", "true"),
    ("prometheus.io/port", "15020"),
    ("prometheus.io/path", "/stats/prometheus"),
];

const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// The images to inject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The sidecar's image.
    pub image: String,
    /// The init container's image.
    pub init_image: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            image: DEFAULT_IMAGE.into(),
            init_image: DEFAULT_INIT_IMAGE.into(),
        }
    }
}

/// What is added to a pod.
#[derive(Debug, Clone, PartialEq)]
pub struct Sidecar {
    /// Appended to `initContainers`.
    pub init_containers: Vec<Node>,
    /// Appended to `containers`.
    pub containers: Vec<Node>,
    /// Appended to `volumes`.
    pub volumes: Vec<Node>,
}

/// The value of [`STATUS_ANNOTATION`]: the names of what was added.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Status<'a> {
    init_containers: Vec<&'a str>,
    containers: Vec<&'a str>,
    volumes: Vec<&'a str>,
}

impl Sidecar {
    /// The containers and volumes with these images.
    pub fn new(options: &Options) -> Result<Sidecar, String> {
        let template = yaml::parse(TEMPLATE).map_err(|e| format!("inject/sidecar.yaml: {e}"))?;
        let list = |key: &str| match template.get(key) {
            Some(Node::Seq(items)) => Ok(items.clone()),
            _ => Err(format!("inject/sidecar.yaml: {key} is not a list")),
        };
        let mut sidecar = Sidecar {
            init_containers: list("initContainers")?,
            containers: list("containers")?,
            volumes: list("volumes")?,
        };
        for c in &mut sidecar.init_containers {
            c.insert("image", Node::str(&options.init_image));
        }
        for c in &mut sidecar.containers {
            c.insert("image", Node::str(&options.image));
        }
        Ok(sidecar)
    }

    /// The [`STATUS_ANNOTATION`] value.
    pub fn status(&self) -> String {
        fn names(nodes: &[Node]) -> Vec<&str> {
            nodes.iter().filter_map(|n| n.get_str("name")).collect()
        }
        let status = Status {
            init_containers: names(&self.init_containers),
            containers: names(&self.containers),
            volumes: names(&self.volumes),
        };
        serde_json::to_string(&status).unwrap_or_default()
    }
}

/// The injected manifests and what was left alone, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Injected {
    /// The documents, separated by `---` lines.
    pub output: String,
    /// One line per pod that was not injected.
    pub warnings: Vec<String>,
}

/// Why a document cannot be injected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectError {
    /// The file (`-` for standard input).
    pub file: String,
    /// The line the document starts on.
    pub line: usize,
    /// The document's position in the file, from 1.
    pub document: usize,
    /// `Kind namespace/name`, when the document got that far.
    pub object: Option<String>,
    /// What is wrong, naming the field.
    pub reason: String,
}

impl fmt::Display for InjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: document {}", self.file, self.line, self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// Injects every pod of `text` (the contents of `file`, multi-document
/// YAML). All errors are returned at once; nothing is output then.
pub fn inject(file: &str, text: &str, options: &Options) -> Result<Injected, Vec<InjectError>> {
    let sidecar = Sidecar::new(options).map_err(|reason| {
        vec![InjectError {
            file: file.into(),
            line: 1,
            document: 0,
            object: None,
            reason,
        }]
    })?;
    let mut docs = Vec::new();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for (i, doc) in yaml::documents(text).iter().enumerate() {
        let error = |object: Option<String>, reason: String| InjectError {
            file: file.into(),
            line: doc.first_line,
            document: i + 1,
            object,
            reason,
        };
        let mut node = match yaml::parse(doc.text) {
            Ok(n) => n,
            Err(e) => {
                let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
                errors.push(InjectError {
                    line: doc.text_line + line.saturating_sub(1),
                    ..error(None, yaml::message(&e))
                });
                continue;
            }
        };
        if node == Node::Null {
            continue;
        }
        let mut notes = Vec::new();
        match inject_object(&mut node, &sidecar, &mut notes) {
            Ok(changed) => {
                for (object, note) in notes {
                    warnings.push(error(Some(object), note).to_string());
                }
                if changed {
                    match yaml::write(&node) {
                        Ok(out) => docs.push(out),
                        Err(e) => errors.push(error(
                            object_name(&node),
                            format!("cannot be written back as YAML: {e}"),
                        )),
                    }
                } else {
                    docs.push(verbatim(doc.text));
                }
            }
            Err((object, reason)) => errors.push(error(object, reason)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Injected {
        output: docs.join("---\n"),
        warnings,
    })
}

/// A document left as it was: its text with one final newline.
fn verbatim(text: &str) -> String {
    let mut s = text.trim_end().to_string();
    s.push('\n');
    s
}

/// `Kind namespace/name` (or `Kind name`), for messages.
fn object_name(node: &Node) -> Option<String> {
    let kind = node.get_str("kind")?;
    let meta = node.get("metadata");
    let name = meta.and_then(|m| m.get_str("name")).unwrap_or("(no name)");
    Some(match meta.and_then(|m| m.get_str("namespace")) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    })
}

/// A failure: the object it concerns and the reason.
type Failure = (Option<String>, String);

/// Injects one object (recursing into a `List`'s items); whether it
/// changed. Pods left alone are noted in `notes` (object, reason).
fn inject_object(
    node: &mut Node,
    sidecar: &Sidecar,
    notes: &mut Vec<(String, String)>,
) -> Result<bool, Failure> {
    if !matches!(node, Node::Map(_)) {
        return Err((
            None,
            format!(
                "is {}, not a Kubernetes object (a mapping with apiVersion and kind)",
                node.describe()
            ),
        ));
    }
    let api_version = node.get_str("apiVersion").unwrap_or("").to_string();
    let kind = node.get_str("kind").unwrap_or("").to_string();
    let object = object_name(node);
    let named = || object.clone().unwrap_or_else(|| kind.clone());
    let fail = |reason: String| (object.clone(), reason);
    // Where the pod's metadata and spec are.
    let template: &[&str] = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => &[],
        ("v1", "ReplicationController")
        | ("apps/v1", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
            &["spec", "template"]
        }
        ("v1", "List") => {
            let Some(Node::Seq(items)) = node.get_mut("items") else {
                return Err(fail("items: expected a list".into()));
            };
            let mut changed = false;
            for (i, item) in items.iter_mut().enumerate() {
                changed |= inject_object(item, sidecar, notes)
                    .map_err(|(o, r)| (o.or(object.clone()), format!("items[{i}]: {r}")))?;
            }
            return Ok(changed);
        }
        ("batch/v1", "Job" | "CronJob") => {
            notes.push((
                named(),
                "not injected: a Job's pod would never complete with meshgate running beside it"
                    .into(),
            ));
            return Ok(false);
        }
        _ => return Ok(false),
    };
    let namespace = node
        .get("metadata")
        .and_then(|m| m.get_str("namespace"))
        .map(str::to_string);
    let mut pod = &mut *node;
    let mut path = String::new();
    for key in template {
        path.push_str(key);
        path.push('.');
        pod = match pod.get_mut(key) {
            Some(n @ Node::Map(_)) => n,
            Some(other) => {
                return Err(fail(format!(
                    "{}: expected a mapping, found {}",
                    path.trim_end_matches('.'),
                    other.describe()
                )));
            }
            None => return Err(fail(format!("{} is missing", path.trim_end_matches('.')))),
        };
    }
    match inject_pod(pod, &path, namespace.as_deref(), sidecar) {
        Ok(Decision::Injected(warnings)) => {
            notes.extend(warnings.into_iter().map(|w| (named(), w)));
            Ok(true)
        }
        Ok(Decision::Skipped(why)) => {
            notes.push((named(), format!("not injected: {why}")));
            Ok(false)
        }
        Err(reason) => Err(fail(reason)),
    }
}

/// What was done with a pod.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Injected, with what the caller should know.
    Injected(Vec<String>),
    /// Left as it was, and why.
    Skipped(String),
}

/// The names of the containers in `spec.<key>` (validated).
fn container_names<'a>(spec: &'a Node, key: &str, path: &str) -> Result<Vec<&'a str>, String> {
    let items = match spec.get(key) {
        None | Some(Node::Null) => return Ok(Vec::new()),
        Some(Node::Seq(items)) => items,
        Some(other) => {
            return Err(format!(
                "{path}spec.{key}: expected a list, found {}",
                other.describe()
            ));
        }
    };
    items
        .iter()
        .enumerate()
        .map(|(i, c)| match c {
            Node::Map(_) => c
                .get_str("name")
                .ok_or_else(|| format!("{path}spec.{key}[{i}].name: expected a string")),
            other => Err(format!(
                "{path}spec.{key}[{i}]: expected a mapping, found {}",
                other.describe()
            )),
        })
        .collect()
}

/// A string-valued entry of a metadata mapping (`labels`, `annotations`).
fn meta_value(metadata: Option<&Node>, map: &str, key: &str) -> Option<String> {
    metadata?.get(map)?.get(key)?.scalar_text()
}

/// Injects one pod: `pod` holds `metadata` and `spec`, `path` is where it
/// is in the object (`spec.template.` or empty).
fn inject_pod(
    pod: &mut Node,
    path: &str,
    namespace: Option<&str>,
    sidecar: &Sidecar,
) -> Result<Decision, String> {
    let spec = match pod.get("spec") {
        Some(s @ Node::Map(_)) => s,
        Some(other) => {
            return Err(format!(
                "{path}spec: expected a mapping, found {}",
                other.describe()
            ));
        }
        None => return Err(format!("{path}spec is missing")),
    };
    let metadata = match pod.get("metadata") {
        None | Some(Node::Null) => None,
        Some(m @ Node::Map(_)) => Some(m),
        Some(other) => {
            return Err(format!(
                "{path}metadata: expected a mapping, found {}",
                other.describe()
            ));
        }
    };
    for map in ["labels", "annotations"] {
        if let Some(other) = metadata.and_then(|m| m.get(map))
            && !matches!(other, Node::Map(_) | Node::Null)
        {
            return Err(format!(
                "{path}metadata.{map}: expected a mapping, found {}",
                other.describe()
            ));
        }
    }
    let containers = container_names(spec, "containers", path)?;
    let inits = container_names(spec, "initContainers", path)?;
    let Some(&first) = containers.first() else {
        return Err(format!("{path}spec.containers: the pod has no container"));
    };

    // Already injected: by meshgate, or by Istio.
    let ours = [SIDECAR_NAME, INIT_NAME];
    if meta_value(metadata, "annotations", STATUS_ANNOTATION).is_some()
        || containers.iter().chain(&inits).any(|n| ours.contains(n))
    {
        return Ok(Decision::Skipped("meshgate is already injected".into()));
    }
    if meta_value(metadata, "annotations", ISTIO_STATUS_ANNOTATION).is_some()
        || containers
            .iter()
            .chain(&inits)
            .any(|n| ISTIO_CONTAINERS.contains(n))
    {
        return Ok(Decision::Skipped(
            "Istio's sidecar is already injected (remove it first: both would capture the pod's traffic as uid 1337)"
                .into(),
        ));
    }
    if matches!(spec.get("hostNetwork"), Some(Node::Bool(true))) {
        return Ok(Decision::Skipped(
            "hostNetwork is set: the capture rules would apply to the node's network".into(),
        ));
    }
    let namespace = metadata.and_then(|m| m.get_str("namespace")).or(namespace);
    if let Some(ns) = namespace.filter(|ns| IGNORED_NAMESPACES.contains(ns)) {
        return Ok(Decision::Skipped(format!(
            "namespace {ns} is never injected"
        )));
    }
    // Istio: the label wins over the annotation; "true" and "false" only.
    let selector = meta_value(metadata, "labels", INJECT_KEY)
        .map(|v| (v, "label"))
        .or_else(|| meta_value(metadata, "annotations", INJECT_KEY).map(|v| (v, "annotation")));
    let mut warnings = Vec::new();
    match selector {
        Some((v, how)) if v == "false" => {
            return Ok(Decision::Skipped(format!(
                "{how} {INJECT_KEY} is \"false\""
            )));
        }
        Some((v, how)) if v != "true" && !v.is_empty() => {
            warnings.push(format!(
                "{how} {INJECT_KEY}: {v:?} is neither \"true\" nor \"false\"; injected (the default)"
            ));
        }
        _ => {}
    }

    // What would clash with what is added.
    let taken_volumes = match spec.get("volumes") {
        None | Some(Node::Null) => Vec::new(),
        Some(Node::Seq(v)) => v.iter().filter_map(|v| v.get_str("name")).collect(),
        Some(other) => {
            return Err(format!(
                "{path}spec.volumes: expected a list, found {}",
                other.describe()
            ));
        }
    };
    for v in &sidecar.volumes {
        if let Some(name) = v.get_str("name")
            && taken_volumes.contains(&name)
        {
            return Err(format!(
                "{path}spec.volumes: the pod already has a volume named {name}, which meshgate adds"
            ));
        }
    }
    let our_port_names: Vec<&str> = sidecar
        .containers
        .iter()
        .filter_map(|c| c.get("ports"))
        .filter_map(|p| match p {
            Node::Seq(p) => Some(p),
            _ => None,
        })
        .flatten()
        .filter_map(|p| p.get_str("name"))
        .collect();
    for key in ["initContainers", "containers"] {
        let Some(Node::Seq(items)) = spec.get(key) else {
            continue;
        };
        for (i, c) in items.iter().enumerate() {
            let Some(Node::Seq(ports)) = c.get("ports") else {
                continue;
            };
            let cname = c.get_str("name").unwrap_or("");
            for p in ports {
                if let Some(Node::Int(n)) = p.get("containerPort")
                    && PROXY_PORTS.contains(n)
                {
                    return Err(format!(
                        "{path}spec.{key}[{i}] ({cname}): containerPort {n} is one of meshgate's ports \
                         (15000, 15001, 15006, 15020, 15021) in the pod's network namespace"
                    ));
                }
                if let Some(name) = p.get_str("name")
                    && our_port_names.contains(&name)
                {
                    return Err(format!(
                        "{path}spec.{key}[{i}] ({cname}): port name {name} is one meshgate's container uses"
                    ));
                }
            }
        }
    }

    // The app's Prometheus annotations stay (meshgate does not merge
    // metrics); meshgate's are added when there are none.
    let app_scraped = PROMETHEUS_ANNOTATIONS
        .iter()
        .any(|(k, _)| meta_value(metadata, "annotations", k).is_some());
    let default_container = first.to_string();
    let has_default = meta_value(metadata, "annotations", DEFAULT_CONTAINER_ANNOTATION).is_some();

    // Add.
    let spec = pod.get_mut("spec").ok_or("spec is missing")?;
    append(spec, "initContainers", &sidecar.init_containers);
    append(spec, "containers", &sidecar.containers);
    append(spec, "volumes", &sidecar.volumes);
    if pod.get("metadata").is_none_or(|m| *m == Node::Null) {
        // Before `spec`, where it is usually written.
        if let Node::Map(entries) = pod {
            entries.retain(|(k, _)| k.as_str() != Some("metadata"));
            let at = entries
                .iter()
                .position(|(k, _)| k.as_str() == Some("spec"))
                .unwrap_or(entries.len());
            entries.insert(at, (Node::str("metadata"), Node::map()));
        }
    }
    let metadata = pod.get_mut("metadata").ok_or("metadata is missing")?;
    if metadata.get("annotations").is_none_or(|a| *a == Node::Null) {
        metadata.insert("annotations", Node::map());
    }
    let annotations = metadata
        .get_mut("annotations")
        .ok_or("metadata.annotations is missing")?;
    if !has_default {
        annotations.insert(DEFAULT_CONTAINER_ANNOTATION, Node::str(default_container));
    }
    if app_scraped {
        warnings.push(
            "the pod's own prometheus.io annotations are kept: meshgate's metrics \
             (:15020/stats/prometheus) are not scraped through them"
                .into(),
        );
    } else {
        for (k, v) in PROMETHEUS_ANNOTATIONS {
            annotations.insert(k, Node::str(v));
        }
    }
    annotations.insert(STATUS_ANNOTATION, Node::str(sidecar.status()));
    Ok(Decision::Injected(warnings))
}

/// Appends `items` to the list `spec.<key>` (created when missing).
fn append(spec: &mut Node, key: &str, items: &[Node]) {
    match spec.get_mut(key) {
        Some(Node::Seq(list)) => list.extend(items.iter().cloned()),
        _ => spec.insert(key, Node::Seq(items.to_vec())),
    }
}

#[cfg(test)]
mod tests;
