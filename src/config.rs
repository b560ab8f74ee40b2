//! Loading Istio YAML: files or directories, multi-document, dispatched on
//! `apiVersion`/`kind`, every resource tagged with its file and line.
//!
//! Pure: reads files, opens no sockets, starts no tasks. A document is
//! parsed in one pass when its kind comes before its spec, else (and on any
//! error) in two passes (head first, then the typed object) so that an
//! error keeps its line and field path; one broken document never hides
//! the others.

pub mod authorization_policy;
pub mod destination_rule;
mod document;
pub mod gateway;
pub mod meta;
mod parallel;
pub mod peer_authentication;
pub mod request_authentication;
pub mod secret;
pub mod service_entry;
pub mod sidecar;
mod simple_yaml;
mod single_pass;
pub mod virtual_service;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

pub use document::{NETWORKING_VERSIONS, SECURITY_VERSIONS};
pub use meta::{Object, ObjectMeta, Source};

use document::parse_options;

use destination_rule::DestinationRuleSpec;
use gateway::GatewaySpec;
use service_entry::ServiceEntrySpec;
use sidecar::SidecarSpec;
use virtual_service::VirtualServiceSpec;

/// One parsed resource with its origin.
#[derive(Debug, Clone)]
pub struct Resource<S> {
    /// File, line and `kind/namespace/name`.
    pub source: Source,
    /// The typed spec.
    pub spec: S,
    /// `metadata.annotations` (e.g. `istio.io/dry-run`).
    pub annotations: BTreeMap<String, String>,
}

/// A `kind: Secret` with its values decoded to bytes.
#[derive(Debug, Clone)]
pub struct Secret {
    /// File, line and `Secret/namespace/name`.
    pub source: Source,
    /// Key → value (`stringData` over `data`).
    pub data: BTreeMap<String, Vec<u8>>,
}

/// Everything read from the config paths.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// `ServiceEntry` resources in load order.
    pub service_entries: Vec<Resource<ServiceEntrySpec>>,
    /// `DestinationRule` resources in load order.
    pub destination_rules: Vec<Resource<DestinationRuleSpec>>,
    /// `VirtualService` resources in load order.
    pub virtual_services: Vec<Resource<VirtualServiceSpec>>,
    /// `Gateway` resources in load order.
    pub gateways: Vec<Resource<GatewaySpec>>,
    /// `PeerAuthentication` resources in load order.
    pub peer_authentications: Vec<Resource<peer_authentication::PeerAuthenticationSpec>>,
    /// `Sidecar` resources in load order.
    pub sidecars: Vec<Resource<SidecarSpec>>,
    /// `Secret` resources in load order.
    pub secrets: Vec<Secret>,
    /// `ConfigMap` resources (CA bundles for `caCertCredentialName`).
    pub config_maps: Vec<Secret>,
    /// `AuthorizationPolicy` resources in load order.
    pub authorization_policies: Vec<Resource<authorization_policy::AuthorizationPolicySpec>>,
    /// `RequestAuthentication` resources in load order.
    pub request_authentications: Vec<Resource<request_authentication::RequestAuthenticationSpec>>,
    /// Where each loaded object is in its list, by kind, namespace and
    /// name: a later definition finds the one it replaces in O(1).
    index: std::collections::HashMap<(String, String, String), usize>,
    /// Non-fatal findings (skipped kinds, ...), each naming file and line.
    pub warnings: Vec<String>,
}

impl Config {
    /// The Secrets and ConfigMaps alone: what credentials are read from
    /// besides the compiled plan.
    pub fn credential_sources(&self) -> Config {
        Config {
            secrets: self.secrets.clone(),
            config_maps: self.config_maps.clone(),
            ..Config::default()
        }
    }
}

/// One problem in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// File the problem is in.
    pub file: PathBuf,
    /// 1-based line (of the field when known, else of the document).
    pub line: usize,
    /// `kind/namespace/name`, when the document got that far.
    pub resource: Option<String>,
    /// Field path, e.g. `spec.ports[0].number`.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(object) = meta::kubernetes_object(&self.file) {
            // An object from the API server: named by itself, no line.
            write!(f, "{object}:")?;
        } else {
            write!(f, "{}:{}:", self.file.display(), self.line)?;
            if let Some(r) = &self.resource {
                write!(f, " {r}:")?;
            }
        }
        if let Some(field) = &self.field {
            write!(f, " {field}:")?;
        }
        write!(f, " {}", self.reason)
    }
}

/// All problems found while loading, reported together.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads every file (directories: their `.yaml`, `.yml` and `.json` files,
/// sorted, recursively) and parses all documents.
pub fn load(paths: &[PathBuf]) -> Result<Config, ConfigErrors> {
    let (config, errors) = load_partial(paths);
    if errors.0.is_empty() {
        Ok(config)
    } else {
        Err(errors)
    }
}

/// Like [`load`], but also returns the documents that did parse, so a
/// caller can report problems in them too (`meshgate validate`).
pub fn load_partial(paths: &[PathBuf]) -> (Config, ConfigErrors) {
    load_documents(std::iter::empty(), paths)
}

/// Parses documents held in memory, each under its origin (for an object
/// read from the API server `kubernetes:<namespace>/<Kind>/<name>`, see
/// [`meta::kubernetes_object`]), then the files of `paths`, as
/// [`load_partial`] does. A file's resource of the same kind, namespace
/// and name replaces an in-memory one (warned, naming both): files are
/// local overrides.
pub fn load_documents<'a>(
    documents: impl IntoIterator<Item = (&'a Path, &'a str)>,
    paths: &[PathBuf],
) -> (Config, ConfigErrors) {
    read_files(paths).parse_after(documents)
}

/// The configuration files' text, in the order they are loaded, with what
/// could not be read: everything a load of files alone depends on.
pub struct Files {
    files: Vec<(PathBuf, String)>,
    errors: Vec<ConfigError>,
}

/// Reads every file of `paths` (directories: their `.yaml`, `.yml` and
/// `.json` files, sorted, recursively).
pub fn read_files(paths: &[PathBuf]) -> Files {
    let mut errors = Vec::new();
    let mut names = Vec::new();
    for p in paths {
        collect_files(p, &mut names, &mut errors);
    }
    let mut files = Vec::with_capacity(names.len());
    for file in names {
        match std::fs::read_to_string(&file) {
            Ok(text) => files.push((file, text)),
            Err(e) => errors.push(file_error(&file, format!("cannot read file: {e}"))),
        }
    }
    Files { files, errors }
}

impl Files {
    /// A digest of the files' names and bytes and of what could not be
    /// read: two reads with the same digest parse to the same
    /// configuration. Keyed with a random key per process (SipHash), so
    /// no file can be written to collide with another.
    pub fn digest(&self) -> u64 {
        use std::hash::{BuildHasher, Hash, Hasher};
        static KEY: std::sync::OnceLock<std::hash::RandomState> = std::sync::OnceLock::new();
        let mut h = KEY.get_or_init(std::hash::RandomState::new).build_hasher();
        for (file, text) in &self.files {
            file.hash(&mut h);
            text.hash(&mut h);
        }
        for e in &self.errors {
            e.to_string().hash(&mut h);
        }
        h.finish()
    }

    /// Parses every document of every file.
    pub fn parse(&self) -> (Config, ConfigErrors) {
        self.parse_after(std::iter::empty())
    }

    /// Parses `documents` (see [`load_documents`]), then the files.
    fn parse_after<'a>(
        &self,
        documents: impl IntoIterator<Item = (&'a Path, &'a str)>,
    ) -> (Config, ConfigErrors) {
        let mut config = Config::default();
        let mut errors = Vec::new();
        for (origin, text) in documents {
            parse_into(origin, text, &mut config, &mut errors);
        }
        errors.extend(self.errors.iter().cloned());
        for (file, text) in &self.files {
            parse_into(file, text, &mut config, &mut errors);
        }
        (config, ConfigErrors(errors))
    }
}

/// Parses YAML text as if read from `file` (used by the demo and tests).
pub fn load_str(file: impl AsRef<Path>, text: &str) -> Result<Config, ConfigErrors> {
    let mut config = Config::default();
    let mut errors = Vec::new();
    parse_into(file.as_ref(), text, &mut config, &mut errors);
    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

fn file_error(file: &Path, reason: String) -> ConfigError {
    ConfigError {
        file: file.to_path_buf(),
        line: 1,
        resource: None,
        field: None,
        reason,
    }
}

fn collect_files(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<ConfigError>) {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) => {
            errors.push(file_error(path, format!("cannot read config path: {e}")));
            return;
        }
    };
    if !meta.is_dir() {
        files.push(path.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) => {
            errors.push(file_error(path, format!("cannot list directory: {e}")));
            return;
        }
    };
    let mut children: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    children.sort();
    for child in children {
        let name = child.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Kubernetes ConfigMap mounts keep hidden `..data` twins; skip them.
        if name.starts_with('.') {
            continue;
        }
        if child.is_dir() {
            collect_files(&child, files, errors);
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            files.push(child);
        }
    }
}

/// A document's text and the line it starts on.
struct Document<'a> {
    text: &'a str,
    /// Line of the first line of `text` (parser lines are relative to it).
    text_line: usize,
    /// Line of the first line with content (what messages point at).
    first_line: usize,
}

/// Splits a YAML stream at `---` lines (the way `kubectl` does), keeping each
/// document's starting line. Documents holding only comments are dropped.
fn split_documents(text: &str) -> Vec<Document<'_>> {
    let mut docs = Vec::new();
    let mut start = 0usize;
    let mut start_line = 1usize;
    let mut offset = 0usize;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end();
        let is_marker = trimmed == "---"
            || trimmed.starts_with("--- ")
            || trimmed.starts_with("---\t")
            || trimmed == "...";
        if is_marker {
            docs.push(Document {
                text: &text[start..offset],
                text_line: start_line,
                first_line: start_line,
            });
            start = offset + line.len();
            start_line = i + 2;
        }
        offset += line.len();
    }
    docs.push(Document {
        text: &text[start..],
        text_line: start_line,
        first_line: start_line,
    });
    // A document starts at its first line of content, not at a comment.
    docs.into_iter()
        .filter_map(|d| {
            let skip = d
                .text
                .lines()
                .position(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))?;
            Some(Document {
                first_line: d.text_line + skip,
                ..d
            })
        })
        .collect()
}

/// The fields read before the kind is known.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Head {
    api_version: Option<String>,
    kind: Option<String>,
    #[serde(default)]
    metadata: Option<serde_json::Value>,
}

/// Deserializes one document into `T`, giving the field path and the line
/// (relative to the document) on failure.
fn parse_doc<T: DeserializeOwned>(text: &str) -> Result<T, (Option<String>, usize, String)> {
    let mut path = None;
    let res = serde_saphyr::with_deserializer_from_str_with_options(text, parse_options(), |de| {
        serde_path_to_error::deserialize::<_, T>(de).map_err(|e| {
            let p = e.path().to_string();
            if p != "." && !p.is_empty() {
                path = Some(p);
            }
            e.into_inner()
        })
    });
    res.map_err(|e| {
        let line = e.location().map(|l| l.line() as usize).unwrap_or(1);
        (path, line, clean_message(&e))
    })
}

/// The parser's message without its location prefix and snippet (the file
/// and line are printed by [`ConfigError`]).
fn clean_message(e: &serde_saphyr::Error) -> String {
    let full = e.to_string();
    let first = full.lines().next().unwrap_or("").trim();
    let first = first.strip_prefix("error:").unwrap_or(first).trim();
    // "line 3 column 9: message" → "message"
    let msg = match first.split_once(": ") {
        Some((loc, rest)) if loc.starts_with("line ") => rest,
        _ => first,
    };
    msg.to_string()
}

fn parse_into(file: &Path, text: &str, config: &mut Config, errors: &mut Vec<ConfigError>) {
    let docs = split_documents(text);
    let texts: Vec<&str> = docs.iter().map(|d| d.text).collect();
    parallel::parse_each(&texts, |i, parsed| {
        parse_document(file, &docs[i], parsed, config, errors);
    });
}

/// Adds one document to `config` (or its errors to `errors`); `parsed` is
/// its [`single_pass::parse`].
fn parse_document(
    file: &Path,
    doc: &Document<'_>,
    parsed: Option<single_pass::Parsed>,
    config: &mut Config,
    errors: &mut Vec<ConfigError>,
) {
    let error = |resource: Option<String>, field: Option<String>, line: usize, reason: String| {
        ConfigError {
            file: file.to_path_buf(),
            line: doc.text_line + line.saturating_sub(1),
            resource,
            field,
            reason,
        }
    };
    // The common case in one pass; the two passes otherwise (see
    // `single_pass`), which give the same result.
    let (kind, api_version, meta, mut spec) = match parsed {
        Some(p) => (p.kind, p.api_version, p.metadata, Some(p.spec)),
        None => {
            let head: Head = match parse_doc(doc.text) {
                Ok(h) => h,
                Err((field, line, reason)) => {
                    errors.push(error(None, field, line, format!("invalid YAML: {reason}")));
                    return;
                }
            };
            let meta: ObjectMeta = head
                .metadata
                .and_then(|m| serde_json::from_value(m).ok())
                .unwrap_or_default();
            (
                head.kind.unwrap_or_default(),
                head.api_version.unwrap_or_default(),
                meta,
                None,
            )
        }
    };
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let source = Source {
        file: file.to_path_buf(),
        line: doc.first_line,
        kind: kind.clone(),
        namespace,
        name: name.clone(),
    };
    if kind.is_empty() || api_version.is_empty() {
        // Named as far as the document goes, at its first line of content
        // (not at a comment above it).
        let resource = match (kind.is_empty(), name.is_empty()) {
            (false, _) => Some(source.resource()),
            (true, false) => Some(format!("{}/{name}", source.namespace)),
            (true, true) => None,
        };
        errors.push(ConfigError {
            file: file.to_path_buf(),
            line: doc.first_line,
            resource,
            field: Some(
                if kind.is_empty() {
                    "kind"
                } else {
                    "apiVersion"
                }
                .into(),
            ),
            reason: "missing; every document needs apiVersion and kind".into(),
        });
        return;
    }
    if kind == "List" && api_version == "v1" {
        expand_list(file, doc, config, errors);
        return;
    }
    let resource = Some(source.resource());
    if name.is_empty() {
        errors.push(error(
            resource,
            Some("metadata.name".into()),
            1,
            "missing".into(),
        ));
        return;
    }
    let is_networking = NETWORKING_VERSIONS.contains(&api_version.as_str());
    macro_rules! typed {
        ($ty:ty, $list:ident, $variant:ident) => {{
            let parsed = match spec.take() {
                Some(single_pass::Spec::$variant(spec)) => Ok((*spec, meta.annotations)),
                _ => parse_doc::<Object<$ty>>(doc.text).map(|o| (o.spec, o.metadata.annotations)),
            };
            match parsed {
                Ok((spec, annotations)) => upsert(
                    &mut config.$list,
                    Resource {
                        source,
                        spec,
                        annotations,
                    },
                    |r| &r.source,
                    &mut config.index,
                    &mut config.warnings,
                ),
                Err((field, line, reason)) => errors.push(error(resource, field, line, reason)),
            }
        }};
    }
    match (kind.as_str(), is_networking) {
        ("ServiceEntry", true) => typed!(ServiceEntrySpec, service_entries, ServiceEntry),
        ("DestinationRule", true) => {
            typed!(DestinationRuleSpec, destination_rules, DestinationRule)
        }
        ("VirtualService", true) => typed!(VirtualServiceSpec, virtual_services, VirtualService),
        ("Gateway", true) => typed!(GatewaySpec, gateways, Gateway),
        ("Sidecar", true) => typed!(SidecarSpec, sidecars, Sidecar),
        ("PeerAuthentication", _) if SECURITY_VERSIONS.contains(&api_version.as_str()) => {
            typed!(
                peer_authentication::PeerAuthenticationSpec,
                peer_authentications,
                PeerAuthentication
            )
        }
        ("ConfigMap", _) if api_version == "v1" => match parse_doc::<ConfigMapObject>(doc.text) {
            Ok(obj) => upsert(
                &mut config.config_maps,
                Secret {
                    source,
                    data: obj
                        .data
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect(),
                },
                |m| &m.source,
                &mut config.index,
                &mut config.warnings,
            ),
            Err((field, line, reason)) => errors.push(error(resource, field, line, reason)),
        },
        ("Secret", _) if api_version == "v1" => match parse_doc::<secret::SecretObject>(doc.text) {
            Ok(obj) => match decode_secret(&obj) {
                Ok(data) => upsert(
                    &mut config.secrets,
                    Secret { source, data },
                    |m| &m.source,
                    &mut config.index,
                    &mut config.warnings,
                ),
                Err((field, reason)) => errors.push(error(resource, Some(field), 1, reason)),
            },
            Err((field, line, reason)) => errors.push(error(resource, field, line, reason)),
        },
        ("AuthorizationPolicy", _) if SECURITY_VERSIONS.contains(&api_version.as_str()) => {
            typed!(
                authorization_policy::AuthorizationPolicySpec,
                authorization_policies,
                AuthorizationPolicy
            )
        }
        ("RequestAuthentication", _) if SECURITY_VERSIONS.contains(&api_version.as_str()) => {
            typed!(
                request_authentication::RequestAuthenticationSpec,
                request_authentications,
                RequestAuthentication
            )
        }
        (
            "ServiceEntry" | "DestinationRule" | "VirtualService" | "Gateway" | "Sidecar"
            | "WorkloadEntry",
            false,
        ) if api_version.starts_with("networking.istio.io/") => errors.push(error(
            resource,
            Some("apiVersion".into()),
            1,
            format!(
                "unsupported apiVersion {api_version:?}; use one of {}",
                NETWORKING_VERSIONS.join(", ")
            ),
        )),
        ("AuthorizationPolicy" | "RequestAuthentication" | "PeerAuthentication", _)
            if api_version.starts_with("security.istio.io/") =>
        {
            // Never skipped: a policy left out leaves open what it closes.
            errors.push(error(
                resource,
                Some("apiVersion".into()),
                1,
                format!(
                    "unsupported apiVersion {api_version:?}; use one of {}",
                    SECURITY_VERSIONS.join(", ")
                ),
            ));
        }
        _ => config.warnings.push(format!(
            "{}:{}: skipping {kind} ({api_version}) {}: kind not used by meshgate",
            file.display(),
            doc.first_line,
            source.resource()
        )),
    }
}

/// Adds `item` to `list`, replacing a resource of the same kind, namespace
/// and name in place: in Kubernetes they are one object (an update keeps
/// its place), and the last one applied is the one in force. The
/// replacement is warned, naming both places, so a later definition never
/// silently overrides an earlier one (a SIMPLE Gateway replacing a MUTUAL
/// one).
fn upsert<T>(
    list: &mut Vec<T>,
    item: T,
    source: impl Fn(&T) -> &Source,
    index: &mut std::collections::HashMap<(String, String, String), usize>,
    warnings: &mut Vec<String>,
) {
    let new = source(&item);
    let key = (new.kind.clone(), new.namespace.clone(), new.name.clone());
    match index.get(&key) {
        Some(&i) => {
            let old = source(&list[i]);
            warnings.push(format!(
                "{new}: replaces the definition at {} (same kind, namespace and name: one object in Kubernetes; the last one loaded is used)",
                old.location()
            ));
            list[i] = item;
        }
        None => {
            index.insert(key, list.len());
            list.push(item);
        }
    }
}

/// `kind: List` (what `kubectl get -o yaml` prints): each item is loaded as
/// its own document. An item's messages point at the List's line and name
/// the item's resource and field.
fn expand_list(
    file: &Path,
    doc: &Document<'_>,
    config: &mut Config,
    errors: &mut Vec<ConfigError>,
) {
    #[derive(Deserialize)]
    struct List {
        #[serde(default)]
        items: Vec<serde_json::Value>,
    }
    let list: List = match parse_doc(doc.text) {
        Ok(l) => l,
        Err((field, line, reason)) => {
            errors.push(ConfigError {
                file: file.to_path_buf(),
                line: doc.text_line + line.saturating_sub(1),
                resource: Some("List".into()),
                field,
                reason,
            });
            return;
        }
    };
    for item in list.items {
        // JSON is YAML: each item is parsed like any document, at the
        // List's line.
        let text = item.to_string();
        let item_doc = Document {
            text: &text,
            text_line: doc.first_line,
            first_line: doc.first_line,
        };
        let parsed = single_pass::parse(item_doc.text);
        parse_document(file, &item_doc, parsed, config, errors);
    }
}

/// A `kind: ConfigMap`; only `data` is read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConfigMapObject {
    #[serde(default)]
    data: BTreeMap<String, String>,
}

fn decode_secret(
    obj: &secret::SecretObject,
) -> Result<BTreeMap<String, Vec<u8>>, (String, String)> {
    let mut out = BTreeMap::new();
    for (k, v) in &obj.data {
        let compact: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(compact.as_bytes())
            .map_err(|e| (format!("data.{k}"), format!("not valid base64: {e}")))?;
        out.insert(k.clone(), bytes);
    }
    for (k, v) in &obj.string_data {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
