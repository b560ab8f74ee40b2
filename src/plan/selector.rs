//! Which resources apply to this proxy, as Istio decides it from the
//! proxy's own labels (`bootstrap.workload_labels`: `--workload-labels`, on
//! Kubernetes the pod's labels through the downward API) and namespace. A
//! selector matches when every one of its labels is on the proxy (Istio's
//! `labels.Instance.SubsetOf`); an empty one matches every proxy.
//!
//! - Gateway `selector` (`PushContext::mergeGateways`): a Gateway applies
//!   when it matches, whatever its namespace. One that does not stays known
//!   (VirtualServices may name it) but contributes no server.
//! - Sidecar `workloadSelector` (`doGetSidecarScope`, `initSidecarScopes`):
//!   one Sidecar is in force: the proxy's namespace's one whose selector
//!   matches, else its one without a selector, else the root namespace's
//!   one without a selector (the mesh-wide default); several at a level:
//!   Istio takes the oldest (`creationTimestamp`), meshgate the first loaded
//!   (warned). A root-namespace Sidecar with a selector is for the root
//!   namespace's workloads only, and another namespace's never applies
//!   (warned).
//! - DestinationRule `workloadSelector` (`SidecarScope::DestinationRule`):
//!   a rule with a selector is its own namespace's only (`plan::scope`
//!   already hid the others); it applies when it matches, and then takes
//!   precedence over rules without a selector for the same host, which do
//!   not apply here (warned: Istio also merges their subsets into it in some
//!   orders, meshgate does not merge rules).
//! - PeerAuthentication `selector` (`ComposePeerAuthentication`,
//!   `getConfigsForWorkload`): the workload policy (a selector matching, the
//!   proxy's namespace) over the namespace policy (no selector or no
//!   labels, the proxy's namespace) over the mesh policy (no selector, the
//!   root namespace, `--root-namespace`); UNSET inherits the level above;
//!   PERMISSIVE when none sets a mode. A selector in the root namespace is
//!   ignored, as are other namespaces' policies (warned when one is STRICT
//!   and the mode in force is not). Several at a level: the first loaded
//!   (Istio: the oldest), warned. The chosen ones are left in the
//!   configuration in that order, for [`peer_mode`].
//!
//! When the labels are unknown (not given), selectors cannot be checked.
//! Gateways, Sidecars and DestinationRules then apply as they did before
//! labels could be given (every one, as if its selector matched), with a
//! warning naming each selector left unchecked: the configuration given to
//! meshgate is taken to be this proxy's. The root namespace's default
//! Sidecar still gives way to any Sidecar of the proxy's namespace. A
//! PeerAuthentication with a selector is applied only when that makes the
//! mode stricter (never weaker than either reading), also warned.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::diagnostics::Diagnostics;
use super::host::normalize;
use crate::bootstrap::Bootstrap;
use crate::config::peer_authentication::{MtlsMode, PeerAuthenticationSpec};
use crate::config::{Config, Resource, Source};

type Labels = BTreeMap<String, String>;

/// How to give the labels, for warnings.
const HOW: &str = "give this proxy's labels with --workload-labels (k=v,... or the pod's \
                   downward API labels file) or the bootstrap's workloadLabels";

/// What resources are matched against.
struct Proxy<'a> {
    labels: Option<&'a Labels>,
    namespace: &'a str,
    root: &'a str,
}

/// `config` with only what applies to this proxy (see the module comment).
pub(crate) fn select<'a>(
    config: Cow<'a, Config>,
    bootstrap: &Bootstrap,
    diag: &mut Diagnostics,
) -> Cow<'a, Config> {
    let proxy = Proxy {
        labels: bootstrap.workload_labels.as_ref(),
        namespace: &bootstrap.namespace,
        root: &bootstrap.root_namespace,
    };
    let gateways = gateways(&config, &proxy, diag);
    let sidecars = sidecars(&config, &proxy, diag);
    let rules = destination_rules(&config, &proxy, diag);
    let peers = peer_authentications(&config, &proxy, diag);
    let unchanged = gateways.iter().chain(&sidecars).chain(&rules).all(|k| *k)
        && peers
            .iter()
            .copied()
            .eq(0..config.peer_authentications.len());
    if unchanged {
        return config;
    }
    let mut out = config.into_owned();
    for (g, keep) in out.gateways.iter_mut().zip(&gateways) {
        if !keep {
            g.spec.servers.clear();
        }
    }
    retain_by(&mut out.sidecars, &sidecars);
    retain_by(&mut out.destination_rules, &rules);
    let chain = peers
        .iter()
        .map(|&i| out.peer_authentications[i].clone())
        .collect();
    out.peer_authentications = chain;
    Cow::Owned(out)
}

/// The mutual TLS mode in force on the mesh inbound listener and the
/// PeerAuthentication that set it: `pas` as [`select`] leaves them (mesh,
/// namespace, workload policy, in that order), each mode replacing the one
/// above unless UNSET; PERMISSIVE when none sets one.
pub(crate) fn peer_mode(pas: &[Resource<PeerAuthenticationSpec>]) -> (MtlsMode, String) {
    match compose(pas) {
        (mode, Some(src)) => (mode, src.to_string()),
        (mode, None) => (mode, "PeerAuthentication default (PERMISSIVE)".into()),
    }
}

fn compose<'a>(
    chain: impl IntoIterator<Item = &'a Resource<PeerAuthenticationSpec>>,
) -> (MtlsMode, Option<&'a Source>) {
    let mut out = (MtlsMode::Permissive, None);
    for pa in chain {
        if let Some(m) = mode_of(pa) {
            out = (m, Some(&pa.source));
        }
    }
    out
}

/// The mode a PeerAuthentication sets (`None`: UNSET, inherited).
fn mode_of(pa: &Resource<PeerAuthenticationSpec>) -> Option<MtlsMode> {
    pa.spec
        .mtls
        .as_ref()?
        .mode
        .filter(|m| *m != MtlsMode::Unset)
}

fn strictness(m: MtlsMode) -> u8 {
    match m {
        MtlsMode::Disable => 0,
        MtlsMode::Unset | MtlsMode::Permissive => 1,
        MtlsMode::Strict => 2,
    }
}

fn mode_name(m: MtlsMode) -> &'static str {
    match m {
        MtlsMode::Disable => "DISABLE",
        MtlsMode::Unset => "UNSET",
        MtlsMode::Permissive => "PERMISSIVE",
        MtlsMode::Strict => "STRICT",
    }
}

/// Istio's `SubsetOf`: every label of `selector` is on the proxy.
fn matches(selector: &Labels, proxy: &Labels) -> bool {
    selector.iter().all(|(k, v)| proxy.get(k) == Some(v))
}

fn retain_by<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut keep = keep.iter();
    items.retain(|_| *keep.next().unwrap_or(&true));
}

// === selectors as written ===

/// A Sidecar's `workloadSelector` (networking's `WorkloadSelector`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SidecarSelector {
    #[serde(default)]
    labels: Labels,
}

/// `istio.type.v1beta1.WorkloadSelector` (DestinationRule
/// `workloadSelector`, PeerAuthentication `selector`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MatchLabels {
    #[serde(default)]
    match_labels: Labels,
}

enum Selector {
    /// No selector: the whole namespace.
    None,
    /// Refused (the errors are reported).
    Invalid,
    Labels(Labels),
}

/// Reads a raw selector and checks it as Istio's `validateWorkloadSelector`
/// does; `empty` says what a selector without labels means.
fn parse<T: DeserializeOwned>(
    raw: Option<&serde_json::Value>,
    labels: fn(T) -> Labels,
    (src, field, empty): (&Source, &str, &str),
    diag: &mut Diagnostics,
) -> Selector {
    let Some(raw) = raw.filter(|v| !v.is_null()) else {
        return Selector::None;
    };
    let parsed = match serde_json::from_value::<T>(raw.clone()) {
        Ok(t) => labels(t),
        Err(e) => {
            diag.error(src, field, e.to_string());
            return Selector::Invalid;
        }
    };
    let mut valid = true;
    for (k, v) in &parsed {
        if k.is_empty() {
            diag.error(
                src,
                field,
                format!("empty key is not supported in selector: \"{k}={v}\""),
            );
            valid = false;
        }
        if k.contains('*') || v.contains('*') {
            diag.error(
                src,
                field,
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
            valid = false;
        }
    }
    if parsed.is_empty() {
        diag.warn(
            src,
            field,
            format!("workload selector specified without labels: {empty}"),
        );
    }
    if valid {
        Selector::Labels(parsed)
    } else {
        Selector::Invalid
    }
}

/// Warns that `src`'s selector was not checked, and what was assumed.
fn unchecked(src: &Source, field: &str, assumed: &str, diag: &mut Diagnostics) {
    diag.warn(
        src,
        field,
        format!("not checked: the proxy's labels are unknown; {assumed}; {HOW}"),
    );
}

// === Gateway ===

/// Whether each Gateway applies.
fn gateways(config: &Config, proxy: &Proxy, diag: &mut Diagnostics) -> Vec<bool> {
    if let Some(labels) = proxy.labels {
        return config
            .gateways
            .iter()
            .map(|g| matches(&g.spec.selector, labels))
            .collect();
    }
    let with: Vec<String> = config
        .gateways
        .iter()
        .filter(|g| !g.spec.selector.is_empty())
        .map(|g| g.source.to_string())
        .collect();
    if !with.is_empty() {
        let more = match with.len() {
            n if n > 3 => format!(" and {} more", n - 3),
            _ => String::new(),
        };
        diag.warnings.push(format!(
            "Gateway selectors are not checked: the proxy's labels are unknown, so every Gateway \
             applies, whichever workloads its selector names ({}{more}); {HOW}",
            with[..with.len().min(3)].join(", ")
        ));
    }
    vec![true; config.gateways.len()]
}

// === Sidecar ===

/// Whether each Sidecar applies.
fn sidecars(config: &Config, proxy: &Proxy, diag: &mut Diagnostics) -> Vec<bool> {
    let field = "spec.workloadSelector";
    let sidecars = &config.sidecars;
    let selectors: Vec<Selector> = sidecars
        .iter()
        .map(|sc| {
            let at = (
                &sc.source,
                field,
                "it selects every workload of its namespace",
            );
            parse(
                sc.spec.workload_selector.as_ref(),
                |s: SidecarSelector| s.labels,
                at,
                diag,
            )
        })
        .collect();
    let own = |i: usize| sidecars[i].source.namespace == proxy.namespace;
    // A root-namespace Sidecar without a selector: the mesh-wide default.
    let default = |i: usize| {
        sidecars[i].source.namespace == proxy.root && matches!(selectors[i], Selector::None)
    };
    let Some(labels) = proxy.labels else {
        for (sc, sel) in sidecars.iter().zip(&selectors) {
            if matches!(sel, Selector::Labels(l) if !l.is_empty()) {
                let assumed = "applied as if it selects this proxy, as every Sidecar given applies";
                unchecked(&sc.source, field, assumed, diag);
            }
        }
        // Every Sidecar applies, but the mesh-wide default only to a
        // namespace without a Sidecar of its own.
        let has_own = (0..sidecars.len()).any(own);
        return (0..sidecars.len())
            .map(|i| own(i) || !has_own || !default(i))
            .collect();
    };
    let first = |pick: &dyn Fn(usize) -> bool, level: &str, diag: &mut Diagnostics| {
        let mut found = (0..sidecars.len()).filter(|&i| pick(i));
        let first = found.next()?;
        for i in found {
            diag.warn(
                &sidecars[i].source,
                field,
                format!(
                    "{level}, as {} is: Istio applies the oldest (creationTimestamp), meshgate \
                     the first loaded; this one does not apply",
                    sidecars[first].source.resource()
                ),
            );
        }
        Some(first)
    };
    // Istio's `getSidecarScope`: a Sidecar of the proxy's namespace whose
    // selector matches, else the namespace's one without a selector, else
    // the root namespace's one without a selector.
    let chosen = first(
        &|i| own(i) && matches!(&selectors[i], Selector::Labels(l) if matches(l, labels)),
        "selects this proxy too",
        diag,
    )
    .or_else(|| {
        first(
            &|i| own(i) && matches!(selectors[i], Selector::None),
            "applies to every workload of the proxy's namespace",
            diag,
        )
    })
    .or_else(|| first(&default, "is the mesh-wide default (root namespace)", diag));
    for sc in sidecars {
        let ns = sc.source.namespace.as_str();
        if ns != proxy.namespace && ns != proxy.root {
            diag.warn(
                &sc.source,
                "metadata.namespace",
                format!(
                    "does not apply to this proxy: a Sidecar applies to workloads of its own \
                     namespace, and the proxy's is {:?} (--namespace); only a Sidecar without a \
                     workloadSelector in the root namespace {:?} (--root-namespace) applies \
                     mesh-wide",
                    proxy.namespace, proxy.root
                ),
            );
        }
    }
    (0..sidecars.len()).map(|i| Some(i) == chosen).collect()
}

// === DestinationRule ===

/// Whether each DestinationRule applies.
fn destination_rules(config: &Config, proxy: &Proxy, diag: &mut Diagnostics) -> Vec<bool> {
    let field = "spec.workloadSelector";
    let rules = &config.destination_rules;
    let selectors: Vec<Selector> = rules
        .iter()
        .map(|dr| {
            let at = (
                &dr.source,
                field,
                "it applies to every workload of its namespace",
            );
            parse(
                dr.spec.workload_selector.as_ref(),
                |s: MatchLabels| s.match_labels,
                at,
                diag,
            )
        })
        .collect();
    let Some(labels) = proxy.labels else {
        for (dr, sel) in rules.iter().zip(&selectors) {
            if matches!(sel, Selector::Labels(l) if !l.is_empty()) {
                let assumed = "applied as if it selects this proxy, as every rule given applies";
                unchecked(&dr.source, field, assumed, diag);
            }
        }
        return vec![true; rules.len()];
    };
    let mut keep: Vec<bool> = rules
        .iter()
        .zip(&selectors)
        .map(|(dr, sel)| match sel {
            Selector::None => true,
            Selector::Invalid => false,
            Selector::Labels(l) => dr.source.namespace == proxy.namespace && matches(l, labels),
        })
        .collect();
    // Hosts with a rule that selects this proxy: that rule is the one.
    let mut selected: HashMap<String, usize> = HashMap::new();
    for (i, dr) in rules.iter().enumerate() {
        if keep[i]
            && matches!(selectors[i], Selector::Labels(_))
            && let Some(h) = &dr.spec.host
        {
            selected.entry(normalize(h)).or_insert(i);
        }
    }
    for (i, dr) in rules.iter().enumerate() {
        let Some(h) = dr.spec.host.as_deref() else {
            continue;
        };
        if !(keep[i] && matches!(selectors[i], Selector::None)) {
            continue;
        }
        if let Some(&winner) = selected.get(&normalize(h)) {
            keep[i] = false;
            diag.warn(
                &dr.source,
                "spec.host",
                format!(
                    "does not apply to this proxy: {} selects it with a workloadSelector and \
                     takes precedence for {h} (Istio's workload-specific rule; meshgate does not \
                     merge this rule's subsets or policy into it)",
                    rules[winner].source.resource()
                ),
            );
        }
    }
    keep
}

// === PeerAuthentication ===

/// The PeerAuthentications in force, in the order [`peer_mode`] composes
/// them: mesh, namespace, workload policy.
fn peer_authentications(config: &Config, proxy: &Proxy, diag: &mut Diagnostics) -> Vec<usize> {
    let field = "spec.selector";
    let pas = &config.peer_authentications;
    let (mut mesh, mut namespace) = (None, None);
    let mut workload: Vec<usize> = Vec::new();
    // Policies that cannot apply here, with why.
    let mut elsewhere: Vec<(usize, String)> = Vec::new();
    for (i, pa) in pas.iter().enumerate() {
        let src = &pa.source;
        let at = (src, field, "it is a policy without a selector");
        let selector = match parse(
            pa.spec.selector.as_ref(),
            |s: MatchLabels| s.match_labels,
            at,
            diag,
        ) {
            Selector::Invalid => continue,
            Selector::Labels(l) if !l.is_empty() => Some(l),
            _ => None,
        };
        let ns = src.namespace.as_str();
        match selector {
            None if ns == proxy.root => first_at(&mut mesh, i, pas, "mesh-wide", diag),
            None if ns == proxy.namespace => {
                first_at(&mut namespace, i, pas, "namespace-wide", diag)
            }
            Some(_) if ns == proxy.root => elsewhere.push((
                i,
                format!(
                    "Istio ignores a PeerAuthentication with a selector in the root namespace \
                     {:?} (--root-namespace)",
                    proxy.root
                ),
            )),
            Some(l) if ns == proxy.namespace => {
                if proxy.labels.is_none_or(|p| matches(&l, p)) {
                    workload.push(i);
                }
            }
            _ => elsewhere.push((
                i,
                format!(
                    "it is for workloads of its namespace, and the proxy's is {:?} \
                     (--namespace; mesh-wide policies are those of the root namespace {:?}, \
                     --root-namespace)",
                    proxy.namespace, proxy.root
                ),
            )),
        }
    }
    let base: Vec<usize> = mesh.into_iter().chain(namespace).collect();
    let chosen = match proxy.labels {
        Some(_) => {
            let mut slot = None;
            for &i in &workload {
                first_at(&mut slot, i, pas, "selecting this proxy", diag);
            }
            slot
        }
        None => stricter_unchecked(pas, &base, &workload, diag),
    };
    let chain: Vec<usize> = base.iter().copied().chain(chosen).collect();
    let (mode, origin) = compose(chain.iter().map(|&i| &pas[i]));
    if mode != MtlsMode::Strict {
        let origin = origin.map_or("the default".into(), Source::resource);
        for (i, why) in elsewhere {
            if mode_of(&pas[i]) == Some(MtlsMode::Strict) {
                diag.warn(
                    &pas[i].source,
                    "spec.mtls.mode",
                    format!(
                        "STRICT does not apply to this proxy: {why}; the mesh inbound listener \
                         is {} ({origin})",
                        mode_name(mode)
                    ),
                );
            }
        }
    }
    chain
}

/// Keeps the first policy of a level, warning about the others.
fn first_at(
    slot: &mut Option<usize>,
    i: usize,
    pas: &[Resource<PeerAuthenticationSpec>],
    level: &str,
    diag: &mut Diagnostics,
) {
    match *slot {
        None => *slot = Some(i),
        Some(first) => diag.warn(
            &pas[i].source,
            "spec.selector",
            format!(
                "{level}, as {} is: Istio applies the oldest (creationTimestamp), meshgate the \
                 first loaded; this one does not apply",
                pas[first].source.resource()
            ),
        ),
    }
}

/// Labels unknown: the workload policy to apply among `candidates` (the
/// selectors of the proxy's namespace), only one that makes the mode
/// stricter than `base` gives; each is warned about.
fn stricter_unchecked(
    pas: &[Resource<PeerAuthenticationSpec>],
    base: &[usize],
    candidates: &[usize],
    diag: &mut Diagnostics,
) -> Option<usize> {
    let base_mode = compose(base.iter().map(|&i| &pas[i])).0;
    let mode_with = |c: usize| compose(base.iter().chain([&c]).map(|&i| &pas[i])).0;
    let mut best: Option<(usize, MtlsMode)> = None;
    for &c in candidates {
        let m = mode_with(c);
        if strictness(m) > strictness(best.map_or(base_mode, |b| b.1)) {
            best = Some((c, m));
        }
    }
    for &c in candidates {
        let assumed = if best.is_some_and(|b| b.0 == c) {
            format!(
                "applied as if it selects this proxy, since that makes the mode {} (stricter \
                 than {} without it)",
                mode_name(mode_with(c)),
                mode_name(base_mode)
            )
        } else {
            format!(
                "not applied: taken as this proxy's it would not make the mode stricter than {}",
                mode_name(best.map_or(base_mode, |b| b.1))
            )
        };
        unchecked(&pas[c].source, "spec.selector", &assumed, diag);
    }
    best.map(|b| b.0)
}

// === AuthorizationPolicy, RequestAuthentication ===

/// Whether a security policy applies to this proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Applies {
    /// It applies.
    Yes,
    /// It does not.
    No,
    /// It has a selector and the proxy's labels are unknown: the caller
    /// fails closed (an ALLOW policy allows nothing, a DENY one applies, a
    /// RequestAuthentication accepts no token), warned.
    Unknown,
}

/// Whether a security policy of `src`'s namespace applies to this proxy
/// (Istio's `WorkloadPolicyMatcher::ShouldAttachPolicy` for a sidecar or
/// an Istio Gateway): one of the proxy's namespace or of the root
/// namespace (mesh-wide), whose `selector` matches the proxy's labels. A
/// policy with `targetRef`/`targetRefs` attaches to Kubernetes Gateway API
/// gateways and waypoints only: Istio does not apply it here (warned).
/// `assumed` says what an [`Applies::Unknown`] policy is taken to do.
pub(crate) fn policy_applies(
    src: &Source,
    selector: Option<&serde_json::Value>,
    (has_target_refs, assumed): (bool, &str),
    bootstrap: &Bootstrap,
    diag: &mut Diagnostics,
) -> Applies {
    let ns = src.namespace.as_str();
    if ns != bootstrap.namespace && ns != bootstrap.root_namespace {
        diag.warn(
            src,
            "metadata.namespace",
            format!(
                "applies to workloads of namespace {ns:?}, not to this proxy (namespace {:?}, \
                 --namespace; mesh-wide policies are those of the root namespace {:?})",
                bootstrap.namespace, bootstrap.root_namespace
            ),
        );
        return Applies::No;
    }
    if has_target_refs {
        diag.warn(
            src,
            "spec.targetRefs",
            "a policy with target references attaches to Kubernetes Gateway API gateways and \
             waypoints only; Istio does not apply it to a sidecar or an Istio Gateway, nor does \
             meshgate; use spec.selector",
        );
        return Applies::No;
    }
    let field = "spec.selector";
    let at = (src, field, "it selects every workload of its namespace");
    match parse(selector, |s: MatchLabels| s.match_labels, at, diag) {
        Selector::None => Applies::Yes,
        // Refused: the configuration is not served.
        Selector::Invalid => Applies::Yes,
        Selector::Labels(l) => match &bootstrap.workload_labels {
            Some(labels) if matches(&l, labels) => Applies::Yes,
            Some(_) => Applies::No,
            None if l.is_empty() => Applies::Yes,
            None => {
                unchecked(src, field, assumed, diag);
                Applies::Unknown
            }
        },
    }
}
