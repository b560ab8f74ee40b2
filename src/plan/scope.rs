//! What this proxy sees of the configuration. Istio scopes resources by
//! namespace, and meshgate is one workload, in `bootstrap.namespace`
//! (`--namespace`, "the proxy's namespace" below).
//!
//! - `exportTo` of ServiceEntries, DestinationRules and VirtualServices:
//!   a resource not exported to the proxy's namespace is left out, as if
//!   absent. Empty or `*`: every namespace; `.`: the resource's own;
//!   namespace names; `~` (ServiceEntry only): none. A DestinationRule with
//!   a `workloadSelector` is its own namespace's only. Invalid lists are
//!   errors with Istio's messages (a ServiceEntry's are reported where it
//!   compiles, so one with an invalid list is kept). Gateways see the same
//!   set: Istio checks a gateway VirtualService's `exportTo` against the
//!   gateway proxy's namespace (`VirtualServicesForGateway`). A
//!   DestinationRule that asks for TLS and is hidden while a visible
//!   ServiceEntry declares its host is warned about: its TLS does not apply
//!   here, as in Istio.
//! - Sidecar `egress[].hosts` (`namespace/dnsName`: `*/`, `./` (the proxy's
//!   namespace, as Istio reads it even in a root-namespace Sidecar), a
//!   namespace name; `~ns/host` excludes, `~/host` from every namespace):
//!   mesh (outbound) traffic sees only the ServiceEntry hosts and the mesh
//!   VirtualServices they import; an unknown host then follows the
//!   outbound traffic policy. Istio also imports the services an imported
//!   VirtualService routes to, for those routes only: meshgate cannot open
//!   a service to one route alone, so it imports them under ALLOW_ANY (where
//!   a direct request goes out anyway) and warns under REGISTRY_ONLY (the
//!   route is then refused). DestinationRules are not narrowed: they
//!   configure services rather than expose them, and a rule that asks TLS
//!   for a host the Sidecar hides keeps it out of plain text under
//!   ALLOW_ANY (meshgate's rule for hosts without a ServiceEntry).
//!   Gateways do not apply Sidecars in Istio, but meshgate's gateway routes
//!   resolve their destinations in the same registry: a gateway route to a
//!   ServiceEntry the egress hosts hide is an error.
//!
//! Which Sidecar is in force: `plan::selector` picks Istio's one (the
//! proxy's namespace's selecting one, its namespace-wide one, or the root
//! namespace's default); the labels unknown, every Sidecar applies to
//! meshgate (the root namespace's default only to a namespace without a
//! Sidecar), as for ingress listeners and `outboundTrafficPolicy`; at most
//! one may declare `egress` (Istio gives a workload one Sidecar, and
//! meshgate cannot tell which one is its own). A per-port egress listener
//! (`port`) is refused (meshgate has one outbound listener: its hosts would
//! be visible on every port); `bind` and `captureMode` are warned about.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::diagnostics::Diagnostics;
use super::host::{HostPattern, normalize};
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::destination_rule::{ClientTlsMode, DestinationRuleSpec, TrafficPolicy};
use crate::config::sidecar::SidecarSpec;
use crate::config::virtual_service::{RouteDestination, VirtualServiceSpec};
use crate::config::{Config, Resource, Source};

/// The configuration as this proxy sees it.
pub(crate) struct Scoped<'a> {
    /// Resources exported to the proxy's namespace (gateways see these).
    visible: Cow<'a, Config>,
    /// `visible` narrowed by the Sidecar egress hosts in force, when any.
    mesh: Option<Config>,
}

impl Scoped<'_> {
    /// Everything exported to the proxy's namespace: what gateways see.
    pub(crate) fn visible(&self) -> &Config {
        &self.visible
    }

    /// What mesh (outbound) traffic sees: [`Scoped::visible`] narrowed by
    /// the Sidecar egress hosts.
    pub(crate) fn mesh(&self) -> &Config {
        self.mesh.as_ref().unwrap_or(&self.visible)
    }
}

/// Scopes `config` to the proxy's namespace (see the module comment),
/// reporting invalid `exportTo` lists and egress listeners into `diag`.
pub(crate) fn scope<'a>(
    config: &'a Config,
    bootstrap: &Bootstrap,
    diag: &mut Diagnostics,
) -> Scoped<'a> {
    let proxy_ns = bootstrap.namespace.as_str();
    let visible = exported(config, proxy_ns, diag);
    // What applies to this proxy by its labels (`plan::selector`).
    let visible = super::selector::select(visible, bootstrap, diag);
    // Ports of the ServiceEntries a route destination can reach.
    diag.service_ports = service_ports(&visible);
    // As `plan::outbound` decides it: a Sidecar's policy over the mesh's.
    let policy = visible
        .sidecars
        .iter()
        .find_map(|s| s.spec.outbound_traffic_policy.as_ref())
        .map(|p| p.mode.unwrap_or(OutboundTrafficPolicy::RegistryOnly))
        .unwrap_or(bootstrap.outbound_traffic_policy);
    let mesh = egress(
        &visible,
        (proxy_ns, &bootstrap.root_namespace),
        policy,
        diag,
    );
    Scoped { visible, mesh }
}

// === exportTo ===

/// Istio's `validateExportTo`: the problems of one list, as (field, reason).
fn export_problems(
    export_to: &[String],
    namespace: &str,
    service_entry: bool,
    selector: bool,
) -> Vec<(String, String)> {
    let field = "spec.exportTo";
    let mut out = Vec::new();
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for (i, e) in export_to.iter().enumerate() {
        let key = if e == "." { namespace } else { e.as_str() };
        if seen.contains(key) {
            let reason = if key != e {
                format!("duplicate entries in exportTo: . and current namespace {namespace}")
            } else {
                format!("duplicate entries in exportTo for entry {e}")
            };
            out.push((format!("{field}[{i}]"), reason));
        } else if key == "~" && !service_entry {
            out.push((
                format!("{field}[{i}]"),
                "exportTo ~ (none) is not allowed for Istio configuration objects (only a \
                 ServiceEntry may be exported to no namespace)"
                    .into(),
            ));
        } else if key == "~" || key == "*" || is_dns1123_label(key) {
            seen.insert(key);
        } else {
            out.push((
                format!("{field}[{i}]"),
                format!("{e:?}: only .,*, or a valid DNS 1123 label is allowed as exportTo entry"),
            ));
        }
    }
    if selector && !seen.is_empty() {
        if !seen.contains(namespace) {
            out.push((
                field.into(),
                "destination rule with workload selector cannot have exportTo beyond current \
                 namespace"
                    .into(),
            ));
        } else if seen.len() > 1 {
            out.push((
                field.into(),
                "destination rule with workload selector cannot have multiple entries in exportTo"
                    .into(),
            ));
        }
    }
    if export_to.len() > 1 && seen.contains("*") {
        out.push((
            field.into(),
            "cannot have both public (*) and non-public exportTo values for a resource".into(),
        ));
    }
    if export_to.len() > 1 && seen.contains("~") {
        out.push((
            field.into(),
            "cannot export service entry to no one (~) and someone".into(),
        ));
    }
    out
}

/// Whether a resource of `namespace` with this `exportTo` is visible in
/// `proxy_ns` (an empty list: everywhere; `~` matches no namespace).
fn exported_to(export_to: &[String], namespace: &str, proxy_ns: &str) -> bool {
    export_to.is_empty()
        || export_to
            .iter()
            .any(|e| e == "*" || e == proxy_ns || (e == "." && namespace == proxy_ns))
}

/// The DestinationRule's visibility: a rule with a workload selector
/// belongs to its namespace only (Istio's `setDestinationRules`).
fn rule_exported(dr: &Resource<DestinationRuleSpec>, proxy_ns: &str) -> bool {
    if dr.spec.workload_selector.is_some() {
        dr.source.namespace == proxy_ns
    } else {
        exported_to(&dr.spec.export_to, &dr.source.namespace, proxy_ns)
    }
}

fn exported<'a>(config: &'a Config, proxy_ns: &str, diag: &mut Diagnostics) -> Cow<'a, Config> {
    let mut report = |src: &Source, problems: Vec<(String, String)>| {
        let valid = problems.is_empty();
        for (field, reason) in problems {
            diag.error(src, field, reason);
        }
        valid
    };
    // An invalid list keeps its resource: the configuration is refused
    // anyway, and the resource's other errors are reported with it.
    let vs_keep: Vec<bool> = config
        .virtual_services
        .iter()
        .map(|vs| {
            let p = export_problems(&vs.spec.export_to, &vs.source.namespace, false, false);
            !report(&vs.source, p)
                || exported_to(&vs.spec.export_to, &vs.source.namespace, proxy_ns)
        })
        .collect();
    let dr_keep: Vec<bool> = config
        .destination_rules
        .iter()
        .map(|dr| {
            let selector = dr.spec.workload_selector.is_some();
            let p = export_problems(&dr.spec.export_to, &dr.source.namespace, false, selector);
            !report(&dr.source, p) || rule_exported(dr, proxy_ns)
        })
        .collect();
    let se_keep: Vec<bool> = config
        .service_entries
        .iter()
        .map(|se| {
            let ns = &se.source.namespace;
            !export_problems(&se.spec.export_to, ns, true, false).is_empty()
                || exported_to(&se.spec.export_to, ns, proxy_ns)
        })
        .collect();
    for (vs, _) in config
        .virtual_services
        .iter()
        .zip(&vs_keep)
        .filter(|(_, keep)| !**keep)
    {
        let gateways: Vec<&str> = vs
            .spec
            .gateways
            .iter()
            .map(String::as_str)
            .filter(|g| *g != "mesh")
            .collect();
        if !gateways.is_empty() {
            diag.warn(
                &vs.source,
                "spec.exportTo",
                format!(
                    "not exported to the proxy's namespace {proxy_ns:?} (--namespace): Istio \
                     checks a gateway VirtualService's exportTo against the gateway proxy's \
                     namespace, so its routes are not served on {}",
                    gateways.join(", ")
                ),
            );
        }
    }
    hidden_tls_rules(config, &dr_keep, &se_keep, proxy_ns, diag);
    if vs_keep.iter().chain(&dr_keep).chain(&se_keep).all(|k| *k) {
        return Cow::Borrowed(config);
    }
    let mut out = config.clone();
    retain_by(&mut out.virtual_services, &vs_keep);
    retain_by(&mut out.destination_rules, &dr_keep);
    retain_by(&mut out.service_entries, &se_keep);
    Cow::Owned(out)
}

fn retain_by<T>(items: &mut Vec<T>, keep: &[bool]) {
    let mut i = 0;
    items.retain(|_| {
        i += 1;
        keep[i - 1]
    });
}

/// The TLS mode a rule asks for somewhere (top level, port level, subsets).
fn asks_tls(spec: &DestinationRuleSpec) -> Option<ClientTlsMode> {
    let of = |p: &TrafficPolicy| {
        std::iter::once(p.tls.as_ref())
            .chain(p.port_level_settings.iter().map(|s| s.tls.as_ref()))
            .flatten()
            .filter_map(|t| t.mode)
            .find(|m| *m != ClientTlsMode::Disable)
    };
    spec.traffic_policy.as_ref().and_then(of).or_else(|| {
        spec.subsets
            .iter()
            .filter_map(|s| s.traffic_policy.as_ref())
            .find_map(of)
    })
}

fn mode_name(m: ClientTlsMode) -> &'static str {
    match m {
        ClientTlsMode::Disable => "DISABLE",
        ClientTlsMode::Simple => "SIMPLE",
        ClientTlsMode::Mutual => "MUTUAL",
        ClientTlsMode::IstioMutual => "ISTIO_MUTUAL",
    }
}

/// Warns about each DestinationRule asking for TLS that `exportTo` hides
/// from the proxy while a visible ServiceEntry declares its host (and no
/// visible rule for the same host takes its place): Istio's semantics,
/// but the rule's author may have meant TLS for every client.
fn hidden_tls_rules(
    config: &Config,
    dr_keep: &[bool],
    se_keep: &[bool],
    proxy_ns: &str,
    diag: &mut Diagnostics,
) {
    let visible_rule_hosts: BTreeSet<String> = config
        .destination_rules
        .iter()
        .zip(dr_keep)
        .filter(|(_, k)| **k)
        .filter_map(|(dr, _)| dr.spec.host.as_deref().map(normalize))
        .collect();
    for (dr, _) in config
        .destination_rules
        .iter()
        .zip(dr_keep)
        .filter(|(_, k)| !**k)
    {
        let Some(mode) = asks_tls(&dr.spec) else {
            continue;
        };
        let Some(raw) = dr.spec.host.as_deref() else {
            continue;
        };
        let Ok(host) = HostPattern::parse(raw) else {
            continue;
        };
        if visible_rule_hosts.contains(&normalize(raw)) {
            continue;
        }
        let declaring = config
            .service_entries
            .iter()
            .zip(se_keep)
            .filter(|(_, k)| **k)
            .find(|(se, _)| {
                se.spec
                    .hosts
                    .iter()
                    .filter_map(|h| HostPattern::parse(h).ok())
                    .any(|h| intersects(&h, &host))
            });
        if let Some((se, _)) = declaring {
            let why = if dr.spec.workload_selector.is_some() {
                "it has a workloadSelector, so it applies in its own namespace only"
            } else {
                "its exportTo does not include that namespace"
            };
            diag.warn(
                &dr.source,
                "spec.exportTo",
                format!(
                    "asks for TLS ({}) but is not visible in the proxy's namespace {proxy_ns:?} \
                     (--namespace): {why}. As in Istio, it does not apply here, and requests to \
                     {host} follow {} without it (plain text unless another rule asks for \
                     TLS); export it to {proxy_ns:?} or add a DestinationRule there if this \
                     proxy must use TLS",
                    mode_name(mode),
                    se.source
                ),
            );
        }
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Ports each ServiceEntry host declares (lower case), for route
/// destinations without a port.
fn service_ports(config: &Config) -> HashMap<String, Vec<u16>> {
    let mut out: HashMap<String, Vec<u16>> = HashMap::new();
    for se in &config.service_entries {
        let ports: Vec<u16> = se
            .spec
            .ports
            .iter()
            .filter_map(|p| p.number.and_then(|n| u16::try_from(n).ok()))
            .collect();
        for h in &se.spec.hosts {
            let all = out.entry(normalize(h)).or_default();
            all.extend(ports.iter().copied());
            all.sort_unstable();
            all.dedup();
        }
    }
    out
}

// === host relations (Istio's `host.Name`) ===

/// Istio's `SubsetOf`: every name `a` matches, `b` matches too.
fn subset_of(a: &HostPattern, b: &HostPattern) -> bool {
    match (a, b) {
        (_, HostPattern::Any) => true,
        (HostPattern::Any, _) => false,
        (HostPattern::Exact(x), p) => p.matches(x) || matches!(p, HostPattern::Exact(y) if y == x),
        (HostPattern::Wildcard(_), HostPattern::Exact(_)) => false,
        (HostPattern::Wildcard(x), HostPattern::Wildcard(y)) => x.ends_with(y.as_str()),
    }
}

/// Istio's `Matches`: the two patterns have a name in common.
fn intersects(a: &HostPattern, b: &HostPattern) -> bool {
    subset_of(a, b) || subset_of(b, a)
}

// === Sidecar egress ===

/// One `egress[].hosts` entry: the namespace it selects (`None`: every
/// namespace) and the host pattern.
struct EgressHost {
    namespace: Option<String>,
    host: HostPattern,
}

/// The hosts of the egress listeners in force.
#[derive(Default)]
struct Imports {
    include: Vec<EgressHost>,
    exclude: Vec<EgressHost>,
}

impl Imports {
    fn selecting<'a>(
        list: &'a [EgressHost],
        namespace: &'a str,
    ) -> impl Iterator<Item = &'a HostPattern> + 'a {
        list.iter()
            .filter(move |e| e.namespace.as_deref().is_none_or(|n| n == namespace))
            .map(|e| &e.host)
    }

    fn excluded(&self, namespace: &str, host: &HostPattern) -> bool {
        Self::selecting(&self.exclude, namespace).any(|e| subset_of(host, e))
    }

    /// A ServiceEntry host of `namespace` (Istio's `selectServices`).
    fn service(&self, namespace: &str, host: &HostPattern) -> bool {
        !self.excluded(namespace, host)
            && Self::selecting(&self.include, namespace).any(|i| subset_of(host, i))
    }

    /// A mesh VirtualService of `namespace` (Istio's
    /// `SelectVirtualServices`): one of its hosts imported, not excluded.
    fn virtual_service(&self, namespace: &str, hosts: &[HostPattern]) -> bool {
        hosts.iter().any(|h| {
            !self.excluded(namespace, h)
                && Self::selecting(&self.include, namespace).any(|i| intersects(h, i))
        })
    }
}

/// Parses one egress host as Istio validates it
/// (`ValidateNamespaceSlashWildcardHostname` for sidecars): `(exclude,
/// host)`, or why it is invalid.
fn parse_egress_host(raw: &str, proxy_ns: &str) -> Result<(bool, EgressHost), String> {
    let Some((ns, name)) = raw.split_once('/') else {
        return Err(format!(
            "{raw:?}: host must be of form namespace/dnsName (\"*/\", \"./\", a namespace, or \
             \"~\"-prefixed to exclude)"
        ));
    };
    if ns.is_empty() || name.is_empty() {
        return Err(format!(
            "{raw:?}: config namespace and dnsName in host entry cannot be empty"
        ));
    }
    let (exclude, bare) = match ns.strip_prefix('~') {
        Some(rest) => (true, rest),
        None => (false, ns),
    };
    let namespace = match bare {
        "" | "*" => None,
        "." => Some(proxy_ns.to_string()),
        n if is_dns1123_label(n) => Some(n.to_string()),
        _ => return Err(format!("invalid namespace value {ns:?} in sidecar")),
    };
    if name != "*" && !name.contains('.') {
        return Err(format!("{raw:?}: short names (non FQDN) are not allowed"));
    }
    let host = HostPattern::parse(name).map_err(|e| e.to_string())?;
    Ok((exclude, EgressHost { namespace, host }))
}

/// The egress hosts of `sc`, with every problem of its listeners reported.
fn egress_imports(sc: &Resource<SidecarSpec>, proxy_ns: &str, diag: &mut Diagnostics) -> Imports {
    let src = &sc.source;
    let mut imports = Imports::default();
    let mut catch_all = false;
    for (i, l) in sc.spec.egress.iter().enumerate() {
        let field = format!("spec.egress[{i}]");
        if l.port.is_some() {
            diag.error(
                src,
                format!("{field}.port"),
                "a per-port egress listener is not supported: meshgate has one outbound \
                 listener for every port, so its hosts would be visible on every port (wider \
                 than Istio, which exposes them on this port only); remove `port` to import \
                 them on every port",
            );
        } else if catch_all {
            diag.error(
                src,
                &field,
                "sidecar: egress can have only one listener with empty port",
            );
        }
        catch_all |= l.port.is_none();
        if let Some(b) = l.bind.as_deref().filter(|b| !b.is_empty())
            && l.port.is_none()
        {
            diag.warn(
                src,
                &format!("{field}.bind"),
                format!(
                    "{b:?} is not used: meshgate's outbound listener is its own address \
                     (outboundAddr), whatever the egress listener binds"
                ),
            );
        }
        match l.capture_mode.as_deref() {
            None | Some("DEFAULT") => {}
            Some(m @ ("IPTABLES" | "NONE")) => diag.warn(
                src,
                &format!("{field}.captureMode"),
                format!(
                    "{m} is not used: meshgate captures nothing, the app reaches its outbound \
                     listener (outboundAddr) as a proxy or through a redirect set up outside it"
                ),
            ),
            Some(other) => diag.error(
                src,
                format!("{field}.captureMode"),
                format!("{other:?}: expected DEFAULT, IPTABLES or NONE"),
            ),
        }
        if l.hosts.is_empty() {
            diag.error(
                src,
                format!("{field}.hosts"),
                "sidecar: egress listener must contain at least one host",
            );
        }
        for (j, h) in l.hosts.iter().enumerate() {
            match parse_egress_host(h, proxy_ns) {
                Ok((true, e)) => imports.exclude.push(e),
                Ok((false, e)) => imports.include.push(e),
                Err(reason) => diag.error(src, format!("{field}.hosts[{j}]"), reason),
            }
        }
    }
    imports
}

/// Whether a VirtualService `gateways` entry (in namespace `vs_ns`) names
/// one of `gateways` (namespace, name), in the forms
/// `plan::inbound::binding::gateway_ref_matches` accepts.
fn names_gateway(entry: &str, vs_ns: &str, gateways: &BTreeSet<(&str, &str)>) -> bool {
    let (ns, name) = match entry.split_once('/') {
        Some((".", name)) => (vs_ns, name),
        Some(pair) => pair,
        None => match entry
            .strip_suffix(".svc.cluster.local")
            .and_then(|n| n.split_once('.'))
        {
            Some((name, ns)) => (ns, name),
            None => (vs_ns, entry),
        },
    };
    entry != "mesh" && gateways.contains(&(ns, name))
}

fn mesh_bound(vs: &VirtualServiceSpec) -> bool {
    vs.gateways.is_empty() || vs.gateways.iter().any(|g| g == "mesh")
}

/// Every route destination of a VirtualService: (field, host).
fn destinations(vs: &VirtualServiceSpec) -> Vec<(String, &str)> {
    fn add<'a>(
        out: &mut Vec<(String, &'a str)>,
        kind: &str,
        i: usize,
        route: &'a [RouteDestination],
    ) {
        for (j, d) in route.iter().enumerate() {
            if let Some(h) = d.destination.as_ref().and_then(|d| d.host.as_deref()) {
                out.push((format!("spec.{kind}[{i}].route[{j}].destination.host"), h));
            }
        }
    }
    let mut out = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        add(&mut out, "http", i, &r.route);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        add(&mut out, "tls", i, &r.route);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        add(&mut out, "tcp", i, &r.route);
    }
    out
}

/// The ServiceEntry host routing uses for `host`: (entry, host index),
/// the most specific match, the first loaded on ties.
fn declaring(config: &Config, host: &str) -> Option<(usize, usize)> {
    let host = normalize(host);
    let mut best: Option<((u8, usize), (usize, usize))> = None;
    for (i, se) in config.service_entries.iter().enumerate() {
        for (j, h) in se.spec.hosts.iter().enumerate() {
            let Ok(p) = HostPattern::parse(h) else {
                continue;
            };
            if p.matches(&host) && best.is_none_or(|(s, _)| p.specificity() > s) {
                best = Some((p.specificity(), (i, j)));
            }
        }
    }
    best.map(|(_, at)| at)
}

/// `visible` as mesh traffic sees it through the Sidecar egress in force;
/// `None` when no Sidecar declares egress.
fn egress(
    visible: &Config,
    (proxy_ns, root): (&str, &str),
    policy: OutboundTrafficPolicy,
    diag: &mut Diagnostics,
) -> Option<Config> {
    let mut with_egress = visible
        .sidecars
        .iter()
        .filter(|s| !s.spec.egress.is_empty());
    let sc = with_egress.next()?;
    for other in with_egress {
        diag.error(
            &other.source,
            "spec.egress",
            format!(
                "{} declares egress too: Istio gives a workload one Sidecar, and meshgate \
                 (which applies every Sidecar in its configuration) cannot tell which one is its \
                 own; keep egress in one Sidecar",
                sc.source.resource()
            ),
        );
    }
    // The root namespace's Sidecar without a selector is the mesh-wide
    // default (`plan::selector`).
    let default = sc.source.namespace == root && sc.spec.workload_selector.is_none();
    if sc.source.namespace != proxy_ns && !default {
        diag.warn(
            &sc.source,
            "spec.egress",
            format!(
                "the proxy's namespace is {proxy_ns:?} (--namespace): Istio would apply this \
                 Sidecar to it only from the mesh root namespace, for a namespace without a \
                 Sidecar of its own; meshgate applies it, with \"./\" meaning {proxy_ns:?}"
            ),
        );
    }
    let imports = egress_imports(sc, proxy_ns, diag);
    // Which ServiceEntry hosts mesh traffic sees. An entry with a host that
    // does not parse is kept whole, for its own errors.
    let mut keep: Vec<Vec<bool>> = visible
        .service_entries
        .iter()
        .map(|se| {
            let parsed: Vec<_> = se
                .spec
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect();
            if parsed.iter().any(Result::is_err) {
                return vec![true; parsed.len()];
            }
            parsed
                .iter()
                .flatten()
                .map(|p| imports.service(&se.source.namespace, p))
                .collect()
        })
        .collect();
    let vs_keep: Vec<bool> = visible
        .virtual_services
        .iter()
        .map(|vs| {
            let hosts: Vec<HostPattern> = vs
                .spec
                .hosts
                .iter()
                .filter_map(|h| HostPattern::parse(h).ok())
                .collect();
            !mesh_bound(&vs.spec) || imports.virtual_service(&vs.source.namespace, &hosts)
        })
        .collect();
    // Services an imported mesh VirtualService routes to.
    for (vs, _) in visible
        .virtual_services
        .iter()
        .zip(&vs_keep)
        .filter(|(vs, k)| **k && mesh_bound(&vs.spec))
    {
        for (field, host) in destinations(&vs.spec) {
            let Some((i, j)) = declaring(visible, host) else {
                continue;
            };
            if keep[i][j] {
                continue;
            }
            match policy {
                OutboundTrafficPolicy::AllowAny => keep[i][j] = true,
                OutboundTrafficPolicy::RegistryOnly => diag.warn(
                    &vs.source,
                    &field,
                    format!(
                        "{host} is declared by {}, which the egress hosts of {} do not import: \
                         Istio imports it for this route, meshgate cannot open a service to one \
                         route alone, so under REGISTRY_ONLY this route is refused; add \"{}/{}\" \
                         to the egress hosts",
                        visible.service_entries[i].source,
                        sc.source.resource(),
                        visible.service_entries[i].source.namespace,
                        visible.service_entries[i].spec.hosts[j],
                    ),
                ),
            }
        }
    }
    // Gateway routes resolve their destinations in the same registry (a
    // Gateway without servers, such as one selecting other workloads,
    // serves no route).
    let gateways: BTreeSet<(&str, &str)> = visible
        .gateways
        .iter()
        .filter(|g| !g.spec.servers.is_empty())
        .map(|g| (g.source.namespace.as_str(), g.source.name.as_str()))
        .collect();
    for vs in visible.virtual_services.iter().filter(|vs| {
        vs.spec
            .gateways
            .iter()
            .any(|g| names_gateway(g, &vs.source.namespace, &gateways))
    }) {
        for (field, host) in destinations(&vs.spec) {
            if let Some((i, j)) = declaring(visible, host)
                && !keep[i][j]
            {
                diag.error(
                    &vs.source,
                    field,
                    format!(
                        "{host} is declared by {}, which the egress hosts of {} hide: Istio's \
                         gateways do not apply Sidecars, but meshgate's gateway routes use the \
                         proxy's service registry and would reach {host} without the entry \
                         (its endpoints, ports and resolution); add \"{}/{}\" to the egress \
                         hosts or route to another host",
                        visible.service_entries[i].source,
                        sc.source.resource(),
                        visible.service_entries[i].source.namespace,
                        visible.service_entries[i].spec.hosts[j],
                    ),
                );
            }
        }
    }
    let mut mesh = visible.clone();
    for (se, k) in mesh.service_entries.iter_mut().zip(&keep) {
        let mut j = 0;
        se.spec.hosts.retain(|_| {
            j += 1;
            k[j - 1]
        });
    }
    let se_keep: Vec<bool> = keep
        .iter()
        .map(|k| k.is_empty() || k.iter().any(|x| *x))
        .collect();
    retain_by(&mut mesh.service_entries, &se_keep);
    retain_by(&mut mesh.virtual_services, &vs_keep);
    Some(mesh)
}
