//! deploy/: the manifests parse as their Kubernetes types and say what
//! matters (read-only namespaced RBAC, the hardened sidecar, the init
//! container's two capabilities); the example Deployment is what `meshgate
//! inject` produces; the bootstrap ConfigMap is accepted by meshgate; the
//! Dockerfile's shape; and `meshgate inject`'s golden files.

#[path = "common/binary.rs"]
mod binary;

use std::path::{Path, PathBuf};

use meshgate::inject::yaml::{self, Node};
use meshgate::inject::{self, INIT_NAME, Options, SIDECAR_NAME};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents of a YAML file, as JSON values (comments and empty
/// documents dropped).
fn documents(path: &Path) -> Vec<serde_json::Value> {
    let text = read(path);
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

fn manifests() -> Vec<PathBuf> {
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("deploy/kubernetes")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// The first document of `file` in deploy/kubernetes.
fn manifest(file: &str) -> serde_json::Value {
    documents(&root().join("deploy/kubernetes").join(file))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{file} is empty"))
}

#[cfg(feature = "kubernetes")]
mod typed {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{ConfigMap, Container, ServiceAccount};
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use serde::de::DeserializeOwned;

    /// `value` as `T`, and every field of it known to `T` (written back,
    /// it is the same JSON: no misspelt or misplaced field ignored).
    fn typed<T: DeserializeOwned + serde::Serialize>(value: &serde_json::Value, what: &str) -> T {
        let t: T = serde_json::from_value(value.clone())
            .unwrap_or_else(|e| panic!("{what}: not a valid {}: {e}", std::any::type_name::<T>()));
        let back = serde_json::to_value(&t).expect("serialize");
        assert_eq!(
            &back,
            value,
            "{what}: fields {} does not know were dropped",
            std::any::type_name::<T>()
        );
        t
    }

    fn deployment() -> Deployment {
        typed(&manifest("deployment.yaml"), "deployment.yaml")
    }

    fn container<'a>(list: &'a [Container], name: &str) -> &'a Container {
        list.iter()
            .find(|c| c.name == name)
            .unwrap_or_else(|| panic!("no container {name}"))
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_manifest_parses_as_its_kubernetes_type() {
        let mut kinds = Vec::new();
        for file in manifests() {
            for (i, doc) in documents(&file).iter().enumerate() {
                let what = format!("{} document {}", file.display(), i + 1);
                let kind = doc["kind"].as_str().unwrap_or("");
                match (doc["apiVersion"].as_str().unwrap_or(""), kind) {
                    ("v1", "ServiceAccount") => drop(typed::<ServiceAccount>(doc, &what)),
                    ("v1", "ConfigMap") => drop(typed::<ConfigMap>(doc, &what)),
                    ("apps/v1", "Deployment") => drop(typed::<Deployment>(doc, &what)),
                    ("rbac.authorization.k8s.io/v1", "Role") => drop(typed::<Role>(doc, &what)),
                    ("rbac.authorization.k8s.io/v1", "RoleBinding") => {
                        drop(typed::<RoleBinding>(doc, &what))
                    }
                    (api, kind) => panic!("{what}: unexpected {api} {kind}"),
                }
                kinds.push(kind.to_string());
            }
        }
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "ConfigMap",
                "Deployment",
                "Role",
                "Role",
                "RoleBinding",
                "RoleBinding",
                "ServiceAccount"
            ]
        );
    }

    #[test]
    fn rbac_is_read_only_namespaced_and_keeps_secrets_to_the_app_namespace() {
        let docs = documents(&root().join("deploy/kubernetes/rbac.yaml"));
        let sa: ServiceAccount = typed(&manifest("serviceaccount.yaml"), "serviceaccount.yaml");
        let app_ns = sa.metadata.namespace.clone().expect("namespace");
        let mut roles = Vec::new();
        let mut bindings = Vec::new();
        for d in &docs {
            match d["kind"].as_str() {
                Some("Role") => roles.push(typed::<Role>(d, "Role")),
                Some("RoleBinding") => bindings.push(typed::<RoleBinding>(d, "RoleBinding")),
                other => panic!("rbac.yaml holds {other:?}: only Roles and RoleBindings"),
            }
        }
        let istio = [
            "serviceentries",
            "destinationrules",
            "gateways",
            "virtualservices",
            "sidecars",
        ];
        let security = [
            "peerauthentications",
            "authorizationpolicies",
            "requestauthentications",
        ];
        let mut namespaces = Vec::new();
        for role in &roles {
            let ns = role.metadata.namespace.clone().expect("namespace");
            let rules = role.rules.as_deref().unwrap_or_default();
            let mut granted: Vec<(String, String)> = Vec::new();
            for rule in rules {
                assert_eq!(
                    rule.verbs,
                    strings(&["get", "list", "watch"]),
                    "Role {ns}: verbs"
                );
                assert!(rule.resource_names.is_none() && rule.non_resource_urls.is_none());
                for g in rule.api_groups.as_deref().unwrap_or_default() {
                    for r in rule.resources.as_deref().unwrap_or_default() {
                        assert_ne!(r, "*", "Role {ns}: no wildcard resources");
                        granted.push((g.clone(), r.clone()));
                    }
                }
            }
            let mut want: Vec<(String, String)> = istio
                .iter()
                .map(|r| ("networking.istio.io".to_string(), r.to_string()))
                .chain(
                    security
                        .iter()
                        .map(|r| ("security.istio.io".to_string(), r.to_string())),
                )
                .collect();
            if ns == app_ns {
                want.push((String::new(), "secrets".into()));
                want.push((String::new(), "configmaps".into()));
            } else {
                assert_eq!(
                    ns, "istio-system",
                    "the second Role is in the root namespace"
                );
            }
            granted.sort();
            want.sort();
            assert_eq!(granted, want, "Role {ns}");
            namespaces.push(ns);
        }
        namespaces.sort();
        assert_eq!(namespaces, [app_ns.clone(), "istio-system".to_string()]);

        assert_eq!(bindings.len(), 2);
        for b in &bindings {
            let ns = b.metadata.namespace.as_deref().expect("namespace");
            assert_eq!(
                b.role_ref.kind, "Role",
                "a RoleBinding to a Role, not a ClusterRole"
            );
            let role = roles
                .iter()
                .find(|r| r.metadata.namespace.as_deref() == Some(ns))
                .expect("a Role in the binding's namespace");
            assert_eq!(Some(&b.role_ref.name), role.metadata.name.as_ref());
            let subjects = b.subjects.as_deref().unwrap_or_default();
            assert_eq!(subjects.len(), 1);
            assert_eq!(subjects[0].kind, "ServiceAccount");
            assert_eq!(Some(&subjects[0].name), sa.metadata.name.as_ref());
            assert_eq!(subjects[0].namespace.as_deref(), Some(app_ns.as_str()));
        }
        // The Deployment runs as that service account, in that namespace.
        let d = deployment();
        assert_eq!(d.metadata.namespace.as_deref(), Some(app_ns.as_str()));
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name, sa.metadata.name);
    }

    #[test]
    fn the_sidecar_is_hardened_probed_and_scraped() {
        let d = deployment();
        let template = d.spec.expect("spec").template;
        let annotations = template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.clone())
            .unwrap_or_default();
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], "15020");
        assert_eq!(annotations["prometheus.io/path"], "/stats/prometheus");
        let pod = template.spec.expect("pod spec");
        let c = container(&pod.containers, SIDECAR_NAME);

        let sc = c.security_context.as_ref().expect("securityContext");
        assert_eq!(sc.run_as_user, Some(1337));
        assert_eq!(sc.run_as_group, Some(1337));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.privileged, Some(false));
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(caps.drop.as_deref(), Some(&strings(&["ALL"])[..]));
        assert!(caps.add.is_none());

        let probe = c.readiness_probe.as_ref().expect("readinessProbe");
        let get = probe.http_get.as_ref().expect("httpGet");
        assert_eq!(get.path.as_deref(), Some("/healthz/ready"));
        assert_eq!(
            get.port,
            k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(15021)
        );

        let mut ports: Vec<(i32, String)> = c
            .ports
            .iter()
            .flatten()
            .map(|p| (p.container_port, p.name.clone().expect("port name")))
            .collect();
        ports.sort();
        let numbers: Vec<i32> = ports.iter().map(|p| p.0).collect();
        assert_eq!(numbers, [15001, 15006, 15020, 15021]);

        let res = c.resources.as_ref().expect("resources");
        assert!(
            res.requests
                .as_ref()
                .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
        );
        assert!(
            res.limits
                .as_ref()
                .is_some_and(|r| r.contains_key("cpu") && r.contains_key("memory"))
        );

        let env: Vec<(String, String)> = c
            .env
            .iter()
            .flatten()
            .map(|e| {
                let path = e
                    .value_from
                    .as_ref()
                    .and_then(|v| v.field_ref.as_ref())
                    .map(|f| f.field_path.clone())
                    .unwrap_or_default();
                (e.name.clone(), path)
            })
            .collect();
        assert!(env.contains(&("POD_NAME".into(), "metadata.name".into())));
        assert!(env.contains(&("POD_NAMESPACE".into(), "metadata.namespace".into())));

        // No app container runs as 1337: its traffic would not be captured.
        for app in pod.containers.iter().filter(|c| c.name != SIDECAR_NAME) {
            let uid = app.security_context.as_ref().and_then(|s| s.run_as_user);
            assert_ne!(uid, Some(1337), "{}", app.name);
        }
    }

    /// `--flag VALUE` in a container's args.
    fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).map(String::as_str)
    }

    #[test]
    fn the_sidecar_finds_its_files_where_the_volumes_put_them() {
        let d = deployment();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let c = container(&pod.containers, SIDECAR_NAME);
        let args = c.args.clone().unwrap_or_default();
        assert_eq!(args[0], "run");
        assert!(args.contains(&"--kube".to_string()));
        assert_eq!(flag(&args, "--interception-mode"), Some("REDIRECT"));
        assert_eq!(flag(&args, "--namespace"), Some("$(POD_NAMESPACE)"));
        let volumes = pod.volumes.clone().unwrap_or_default();
        // The file behind a path: (volume, path inside it).
        let mounted = |file: &str| -> (k8s_openapi::api::core::v1::Volume, String) {
            let m = c
                .volume_mounts
                .iter()
                .flatten()
                .find(|m| file.starts_with(&format!("{}/", m.mount_path)))
                .unwrap_or_else(|| panic!("nothing is mounted at {file}"));
            let v = volumes
                .iter()
                .find(|v| v.name == m.name)
                .unwrap_or_else(|| panic!("no volume {}", m.name))
                .clone();
            (v, file[m.mount_path.len() + 1..].to_string())
        };

        let bootstrap = flag(&args, "--bootstrap").expect("--bootstrap");
        assert_eq!(bootstrap, "/etc/meshgate/bootstrap.yaml");
        let (v, key) = mounted(bootstrap);
        let cm: ConfigMap = typed(&manifest("configmap.yaml"), "configmap.yaml");
        assert_eq!(
            v.config_map.expect("configMap volume").name,
            cm.metadata.name.unwrap()
        );
        assert!(cm.data.unwrap().contains_key(&key));

        let (v, key) = mounted(flag(&args, "--workload-labels").expect("--workload-labels"));
        let items = v.downward_api.expect("downwardAPI volume").items.unwrap();
        let item = items.iter().find(|i| i.path == key).expect("labels item");
        assert_eq!(
            item.field_ref.as_ref().unwrap().field_path,
            "metadata.labels"
        );

        let (v, key) = mounted(flag(&args, "--ca-token-file").expect("--ca-token-file"));
        assert_eq!(key, "istio-token");
        let sources = v.projected.expect("projected volume").sources.unwrap();
        let token = sources
            .iter()
            .find_map(|s| s.service_account_token.clone())
            .expect("serviceAccountToken");
        assert_eq!(token.audience.as_deref(), Some("istio-ca"));
        assert_eq!(token.path, "istio-token");

        let (v, key) = mounted(flag(&args, "--ca-root").expect("--ca-root"));
        assert_eq!(key, "root-cert.pem");
        assert_eq!(v.config_map.expect("configMap").name, "istio-ca-root-cert");

        // The identity directory is writable (the root filesystem is not).
        let dir = flag(&args, "--identity-dir").expect("--identity-dir");
        let m = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == dir)
            .expect("identity mount");
        assert_ne!(m.read_only, Some(true));
        let v = volumes.iter().find(|v| v.name == m.name).unwrap();
        assert!(v.empty_dir.is_some());
    }

    #[test]
    fn the_init_container_has_net_admin_and_net_raw_only() {
        let d = deployment();
        let pod = d.spec.unwrap().template.spec.unwrap();
        let inits = pod.init_containers.clone().unwrap_or_default();
        assert_eq!(
            inits.last().map(|c| c.name.as_str()),
            Some(INIT_NAME),
            "last init container"
        );
        let c = container(&inits, INIT_NAME);
        let sc = c.security_context.as_ref().expect("securityContext");
        let caps = sc.capabilities.as_ref().expect("capabilities");
        assert_eq!(
            caps.add.as_deref(),
            Some(&strings(&["NET_ADMIN", "NET_RAW"])[..])
        );
        assert_eq!(caps.drop.as_deref(), Some(&strings(&["ALL"])[..]));
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.run_as_non_root, Some(false));
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(
            c.args.clone().unwrap_or_default(),
            strings(&[
                "iptables",
                "-p",
                "15001",
                "-z",
                "15006",
                "-u",
                "1337",
                "-m",
                "REDIRECT",
                "-i",
                "*",
                "-x",
                "",
                "-b",
                "*",
                "-d",
                "15090,15021,15020"
            ])
        );
        assert!(pod.host_network.is_none_or(|h| !h));
    }

    #[test]
    fn injected_output_is_a_typed_deployment_with_both_containers() {
        let dir = root().join("tests/golden/inject");
        let text = read(&dir.join("deployment.out.yaml"));
        let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).unwrap();
        assert_eq!(docs.len(), 1);
        let d: Deployment = typed(&docs[0], "deployment.out.yaml");
        let pod = d.spec.unwrap().template.spec.unwrap();
        container(&pod.containers, SIDECAR_NAME);
        container(&pod.containers, "web");
        container(
            pod.init_containers.as_deref().unwrap_or_default(),
            INIT_NAME,
        );
    }
}

/// `deploy/kubernetes/deployment.yaml` with what inject adds taken out.
fn strip_injected(mut doc: Node) -> Node {
    let sidecar = inject::Sidecar::new(&Options::default()).unwrap();
    let ours = |list: &[Node]| -> Vec<String> {
        list.iter()
            .filter_map(|n| n.get_str("name").map(str::to_string))
            .collect()
    };
    let template = doc
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .expect("spec.template");
    let spec = template.get_mut("spec").expect("template spec");
    for (key, names) in [
        ("initContainers", ours(&sidecar.init_containers)),
        ("containers", ours(&sidecar.containers)),
        ("volumes", ours(&sidecar.volumes)),
    ] {
        if let Some(Node::Seq(items)) = spec.get_mut(key) {
            items.retain(|n| {
                !n.get_str("name")
                    .is_some_and(|x| names.iter().any(|o| o == x))
            });
            if items.is_empty() {
                spec.remove(key);
            }
        }
    }
    let annotations = template
        .get_mut("metadata")
        .and_then(|m| m.get_mut("annotations"))
        .expect("annotations");
    for key in [
        inject::STATUS_ANNOTATION,
        "kubectl.kubernetes.io/default-container",
        "prometheus.io/scrape",
        "prometheus.io/port",
        "prometheus.io/path",
    ] {
        annotations.remove(key);
    }
    doc
}

#[test]
fn the_example_deployment_is_what_inject_produces() {
    let text = read(&root().join("deploy/kubernetes/deployment.yaml"));
    let example = yaml::parse(&text).expect("deployment.yaml");
    let app_only = yaml::write(&strip_injected(example.clone())).unwrap();
    assert!(!app_only.contains(SIDECAR_NAME), "{app_only}");
    let injected = inject::inject("app", &app_only, &Options::default()).expect("inject");
    assert!(injected.warnings.is_empty(), "{:?}", injected.warnings);
    let ours = yaml::parse(&injected.output).unwrap();
    assert!(
        ours == example,
        "deploy/kubernetes/deployment.yaml differs from what `meshgate inject` adds \
         (src/inject/sidecar.yaml); inject gives:\n{}",
        injected.output
    );
    // And it is injected already: inject leaves it as it is.
    let again = inject::inject("deployment.yaml", &text, &Options::default()).unwrap();
    assert_eq!(again.output.trim_end(), text.trim_end());
}

#[test]
fn the_bootstrap_configmap_is_accepted_by_meshgate() {
    let cm = manifest("configmap.yaml");
    let text = cm["data"]["bootstrap.yaml"]
        .as_str()
        .expect("data.bootstrap.yaml");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bootstrap.yaml");
    std::fs::write(&file, text).unwrap();
    let mut b = meshgate::bootstrap::Bootstrap::default();
    b.apply_file(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        b.interception_mode,
        meshgate::bootstrap::InterceptionMode::Redirect
    );
    // Reachable by the kubelet and Prometheus on the pod's address; admin
    // stays on loopback.
    assert_eq!(b.stats_addr, "0.0.0.0:15020".parse().unwrap());
    assert_eq!(b.ready_addr, "0.0.0.0:15021".parse().unwrap());
    assert!(b.admin_addr.ip().is_loopback());
    assert_eq!(b.outbound_addr, "127.0.0.1:15001".parse().unwrap());
    assert_eq!(b.mesh_inbound_addr, "0.0.0.0:15006".parse().unwrap());
}

/// The init container's args, from the example Deployment.
fn init_args() -> Vec<String> {
    let d = manifest("deployment.yaml");
    let inits = d["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .expect("initContainers");
    let init = inits
        .iter()
        .find(|c| c["name"] == INIT_NAME)
        .expect("init container");
    init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_init_container_args_are_meshgate_iptables_flags() {
    let mut cmd = binary::meshgate();
    cmd.args(init_args())
        .args(["--dry-run", "--backend", "iptables", "--ipv6", "false"]);
    let out = binary::run_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", binary::show(&out));
    let rules = binary::text(&out.stdout);
    for rule in [
        "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
        "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
        "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
        "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
        "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
    ] {
        assert!(rules.contains(rule), "{rule} missing:\n{rules}");
    }
}

#[test]
fn the_sidecar_args_are_meshgate_run_flags() {
    let d = manifest("deployment.yaml");
    let c = d["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == SIDECAR_NAME)
        .unwrap()
        .clone();
    let mut cmd = binary::meshgate();
    cmd.args(["run", "--help"]);
    let out = binary::run_with_timeout(cmd, std::time::Duration::from_secs(30));
    let help = binary::text(&out.stdout);
    let mut unknown = Vec::new();
    for a in c["args"].as_array().unwrap() {
        let a = a.as_str().unwrap();
        if a.starts_with("--") && !help.contains(&format!("{a} ")) {
            unknown.push(a.to_string());
        }
    }
    assert!(unknown.is_empty(), "not `meshgate run` flags: {unknown:?}");
}

#[test]
fn the_dockerfile_builds_a_locked_release_into_a_1337_image_and_an_init_image() {
    let text = read(&root().join("deploy/Dockerfile"));
    // Stages, in order, with the instructions of each (continuations joined).
    let mut stages: Vec<(String, Vec<String>)> = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        let raw = raw.trim();
        if raw.starts_with('#') || raw.is_empty() {
            continue;
        }
        if let Some(cont) = raw.strip_suffix('\\') {
            line.push_str(cont);
            line.push(' ');
            continue;
        }
        line.push_str(raw);
        let instr = std::mem::take(&mut line);
        if instr.starts_with("FROM ") {
            let name = instr.rsplit(" AS ").next().unwrap_or("").trim().to_string();
            stages.push((name, Vec::new()));
        } else if let Some((_, body)) = stages.last_mut() {
            body.push(instr);
        }
    }
    let names: Vec<&str> = stages.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        ["build", "init", "runtime"],
        "the sidecar image is the default (last) stage"
    );
    let stage = |n: &str| &stages.iter().find(|(s, _)| s == n).unwrap().1;
    assert!(
        stage("build")
            .iter()
            .any(|i| i.contains("cargo build --release --locked")),
        "a locked release build"
    );
    let runtime = stage("runtime");
    assert!(runtime.iter().any(|i| i == "USER 1337:1337"), "{runtime:?}");
    assert!(
        !runtime.iter().any(|i| i.starts_with("RUN ")),
        "no shell in the runtime image"
    );
    assert!(
        runtime.iter().any(|i| i.starts_with("ENTRYPOINT [\"")),
        "exec form"
    );
    assert!(text.contains("ARG RUNTIME_BASE=gcr.io/distroless/cc-debian12"));
    let init = stage("init");
    assert!(
        init.iter().any(|i| i.contains("apt-get install")
            && i.contains("iptables")
            && i.contains("nftables")),
        "{init:?}"
    );

    // Everything copied from the context exists, and every file the crate
    // compiles in from outside src/ is copied.
    let copied: Vec<String> = stage("build")
        .iter()
        .filter(|i| i.starts_with("COPY ") && !i.contains("--from"))
        .flat_map(|i| {
            let parts: Vec<&str> = i.split_whitespace().skip(1).collect();
            parts[..parts.len() - 1]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    for c in &copied {
        assert!(root().join(c).exists(), "COPY {c}: no such path");
    }
    let mut included = Vec::new();
    collect_includes(&root().join("src"), &mut included);
    for path in included {
        let rel = path
            .strip_prefix(root())
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(
            copied
                .iter()
                .any(|c| rel == *c || rel.starts_with(&format!("{c}/"))),
            "{rel} is compiled in but not copied into the build stage"
        );
    }
    // The build script, and the code layout it hands the linker.
    for needed in ["build.rs", "build"] {
        assert!(
            copied.iter().any(|c| c == needed),
            "{needed} is not copied into the build stage"
        );
    }
    let ignore = read(&root().join("deploy/Dockerfile.dockerignore"));
    for c in &copied {
        assert!(
            ignore.lines().any(|l| l == format!("!{c}")),
            "{c} is not in the build context"
        );
    }
}

/// Files named by `include_str!`/`include_bytes!` under `dir`, resolved.
fn collect_includes(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_includes(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = read(&path);
            for marker in ["include_str!(\"", "include_bytes!(\""] {
                for (i, _) in text.match_indices(marker) {
                    let rest = &text[i + marker.len()..];
                    let Some(end) = rest.find('"') else { continue };
                    let target = path.parent().unwrap().join(&rest[..end]);
                    // Lexically normalised (`..` removed).
                    let mut norm = PathBuf::new();
                    for c in target.components() {
                        match c {
                            std::path::Component::ParentDir => {
                                norm.pop();
                            }
                            c => norm.push(c),
                        }
                    }
                    out.push(norm);
                }
            }
        }
    }
}

/// `meshgate inject` on each tests/golden/inject/NAME.in.yaml gives
/// NAME.out.yaml (and the warnings in NAME.warnings, when there are any).
/// MESHGATE_UPDATE_GOLDEN=1 writes them instead.
#[test]
fn inject_goldens() {
    let dir = root().join("tests/golden/inject");
    let update = std::env::var_os("MESHGATE_UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut inputs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".in.yaml"))
        .collect();
    inputs.sort();
    let names: Vec<String> = inputs
        .iter()
        .map(|p| {
            let f = p.file_name().unwrap().to_string_lossy();
            f.trim_end_matches(".in.yaml").to_string()
        })
        .collect();
    for want in [
        "already-injected",
        "deployment",
        "multi-document",
        "opted-out",
        "pod",
    ] {
        assert!(names.iter().any(|n| n == want), "golden {want} missing");
    }
    let mut failed = Vec::new();
    for (input, name) in inputs.iter().zip(&names) {
        let text = read(input);
        let file = format!("{name}.in.yaml");
        let out = inject::inject(&file, &text, &Options::default())
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let warnings: String = out.warnings.iter().map(|w| format!("{w}\n")).collect();
        let out_path = dir.join(format!("{name}.out.yaml"));
        let warn_path = dir.join(format!("{name}.warnings"));
        if update {
            std::fs::write(&out_path, &out.output).unwrap();
            if warnings.is_empty() {
                let _ = std::fs::remove_file(&warn_path);
            } else {
                std::fs::write(&warn_path, &warnings).unwrap();
            }
            continue;
        }
        let want = std::fs::read_to_string(&out_path).unwrap_or_default();
        if out.output != want {
            failed.push(format!("{name}.out.yaml differs; got:\n{}", out.output));
        }
        let want_warnings = std::fs::read_to_string(&warn_path).unwrap_or_default();
        if warnings != want_warnings {
            failed.push(format!("{name}.warnings differs; got:\n{warnings}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{}\n(MESHGATE_UPDATE_GOLDEN=1 rewrites the golden files)",
        failed.join("\n")
    );
    // Unchanged inputs come out as they went in.
    for name in ["already-injected", "opted-out"] {
        assert_eq!(
            read(&dir.join(format!("{name}.out.yaml"))).trim_end(),
            read(&dir.join(format!("{name}.in.yaml"))).trim_end(),
            "{name}"
        );
    }
}

#[test]
fn inject_reads_standard_input_and_reports_errors_on_stderr() {
    let dir = root().join("tests/golden/inject");
    let input = std::fs::File::open(dir.join("multi-document.in.yaml")).unwrap();
    let mut cmd = binary::meshgate();
    cmd.args(["inject", "-f", "-", "--image", "reg.example/meshgate:1"]);
    // run_with_timeout sets stdin to null; spawn with the file instead.
    let out = cmd
        .stdin(input)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run meshgate inject");
    assert!(out.status.success(), "{}", binary::show(&out));
    let want = read(&dir.join("multi-document.out.yaml"))
        .replace("image: meshgate:latest", "image: reg.example/meshgate:1");
    assert_eq!(binary::text(&out.stdout), want);

    let bad = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        bad.path(),
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\nspec: {}\n",
    )
    .unwrap();
    let mut cmd = binary::meshgate();
    cmd.args(["inject", "-f"]).arg(bad.path());
    let out = binary::run_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1), "{}", binary::show(&out));
    assert!(out.stdout.is_empty(), "{}", binary::show(&out));
    let err = binary::text(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:1: document 1 (Pod p): spec.containers: the pod has no container",
            bad.path().display()
        )),
        "{err}"
    );

    let mut cmd = binary::meshgate();
    cmd.args(["inject", "-f", "/nonexistent/deployment.yaml"]);
    let out = binary::run_with_timeout(cmd, std::time::Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(1));
    assert!(binary::text(&out.stderr).contains("/nonexistent/deployment.yaml: cannot read"));
}
