//! The load pipeline: config files → [`config`] → [`plan`] → [`creds`] →
//! rustls server configs, all checked before anything is published.
//!
//! Synchronous (file reads, YAML, rustls builds): the reloader runs it off
//! the async threads. Depends on nothing in the runtime.

use std::sync::Arc;

use crate::bootstrap::Bootstrap;
use crate::config::{self, Config};
use crate::creds::{self, Credentials};
use crate::plan::{self, Plan};
use crate::tls::server_configs::ServerConfigs;

/// Everything wrong with a configuration, one line per problem.
#[derive(Debug, Clone)]
pub struct LoadErrors(pub Vec<String>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for LoadErrors {}

/// A fully checked configuration.
pub struct Loaded {
    /// The compiled plan (shared: a reload of unchanged files reuses the
    /// one in force).
    pub plan: Arc<Plan>,
    /// The credentials it references, validated.
    pub creds: Credentials,
    /// rustls server configs of the terminating inbound servers.
    pub server_tls: ServerConfigs,
    /// Errors in parts left out (a port whose server does not compile, a
    /// credential that does not load: what uses it fails closed). Empty
    /// in strict mode, where any error refuses the configuration.
    pub isolated: Vec<String>,
    /// When reading its files began: a file changed later is not in it.
    pub read_at: std::time::SystemTime,
    /// What the plan was compiled from, when a later load of the same
    /// files may reuse it (a load of files alone).
    pub inputs: Option<Arc<Inputs>>,
    /// Whether the plan is the one in force, reused because no file
    /// changed (only the credentials were loaded again).
    pub reused: bool,
}

/// What a load of files compiled its plan from, kept with the
/// configuration in force so a reload whose files did not change (a
/// SIGHUP, a certificate renewed on disk) reuses the plan instead of
/// parsing and compiling everything again. The plan is a pure function of
/// the files and the bootstrap, which a process does not change.
#[derive(Debug)]
pub struct Inputs {
    /// [`config::Files::digest`] of the files.
    digest: u64,
    /// The Secrets and ConfigMaps of the files: all the credentials read
    /// from the configuration besides the plan.
    config: Config,
    /// The compile's errors in parts left out.
    isolated: Vec<String>,
}

/// What a reload may reuse from the configuration in force.
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    /// Each credential that fails to load keeps its version here.
    pub creds: &'a Credentials,
    /// Server configs whose inputs did not change are kept, and sessions
    /// resume across the reload.
    pub server_tls: &'a ServerConfigs,
    /// Errors whose parts are left out of the configuration in force: still
    /// left out, they do not refuse the reload.
    pub isolated: &'a [String],
    /// The plan in force, reused when its [`Inputs`] did not change.
    pub plan: &'a Arc<Plan>,
    /// What the plan in force was compiled from, if it may be reused.
    pub inputs: Option<&'a Arc<Inputs>>,
}

impl Loaded {
    /// Warnings from compilation and credential loading.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.plan.warnings.iter().chain(&self.creds.warnings)
    }
}

/// Everything one load found, in one pass: parse, compile and credential
/// errors and every warning, whether or not the configuration can be
/// served.
pub struct Report {
    /// The configuration, when it can be served (in strict mode: only
    /// when there is no error at all).
    pub loaded: Option<Loaded>,
    /// Errors that stop the configuration from being served.
    pub errors: Vec<String>,
    /// Errors in parts left out while the rest is served (fatal in strict
    /// mode, where they are in `errors`).
    pub isolated: Vec<String>,
    /// Every warning.
    pub warnings: Vec<String>,
    /// Secrets found in the config documents.
    pub secrets: usize,
}

impl Report {
    /// The configuration, or every error (isolated ones are in
    /// [`Loaded::isolated`]).
    pub fn into_result(self) -> Result<Loaded, LoadErrors> {
        match self.loaded {
            Some(l) => Ok(l),
            None => Err(LoadErrors(self.errors)),
        }
    }

    /// One line: what was loaded and what was left out.
    pub fn summary(&self) -> String {
        let Some(loaded) = &self.loaded else {
            return format!(
                "{} error(s), {} warning(s)",
                self.errors.len() + self.isolated.len(),
                self.warnings.len()
            );
        };
        let plan = &loaded.plan;
        let o = &plan.outbound;
        let servers: usize = plan.inbound.listeners.iter().map(|l| l.servers.len()).sum();
        let left_out = if self.isolated.is_empty() {
            String::new()
        } else {
            format!(
                "; {} error(s): what they name is left out and the rest would be served (--strict refuses)",
                self.isolated.len()
            )
        };
        format!(
            "ok: {} ServiceEntry, {} DestinationRule, {} VirtualService (mesh), {} inbound listener(s) with {} server(s), {} AuthorizationPolicy, {} JWT rule(s), {} Secret; {} warning(s); outbound policy {:?}{left_out}",
            o.services.len(),
            o.rules.len(),
            o.routes.len(),
            plan.inbound.listeners.len(),
            servers,
            plan.authz.allow.len() + plan.authz.deny.len() + plan.authz.audit.len(),
            plan.authn.rules.len(),
            self.secrets,
            self.warnings.len(),
            o.policy
        )
    }
}

/// Loads the bootstrap's config paths and checks everything. Documents
/// that parse are compiled even when others do not, so every problem is
/// reported in one go.
pub fn load(bootstrap: &Bootstrap) -> Result<Loaded, LoadErrors> {
    load_with(bootstrap, None)
}

/// [`load`], reusing what `previous` allows (see [`Previous`]).
pub fn load_with(
    bootstrap: &Bootstrap,
    previous: Option<Previous<'_>>,
) -> Result<Loaded, LoadErrors> {
    report(bootstrap, previous).into_result()
}

/// [`load`] for `meshgate validate` and a proxy's start: every error and
/// warning at once.
pub fn validate(bootstrap: &Bootstrap) -> Report {
    report(bootstrap, None)
}

/// Reads, compiles and checks the bootstrap's configuration.
pub fn report(bootstrap: &Bootstrap, previous: Option<Previous<'_>>) -> Report {
    let read_at = std::time::SystemTime::now();
    let files = config::read_files(&bootstrap.config_paths);
    let digest = files.digest();
    if let Some(p) = previous
        && let Some(inputs) = p.inputs.filter(|i| i.digest == digest)
    {
        // No file changed: the same plan, with the credentials loaded again.
        let compiled = Lines {
            plan: Arc::clone(p.plan),
            errors: Vec::new(),
            isolated: inputs.isolated.clone(),
        };
        let mut report = check_compiled(compiled, &inputs.config, bootstrap, previous, read_at);
        if let Some(loaded) = &mut report.loaded {
            loaded.inputs = Some(Arc::clone(inputs));
            loaded.reused = true;
        }
        return report;
    }
    let (config, parse_errors) = files.parse();
    drop(files);
    let compiled = Lines::compile(&config, bootstrap);
    let isolated = compiled.isolated.clone();
    let mut report = check_compiled(compiled, &config, bootstrap, previous, read_at);
    with_parse_errors(&mut report, &parse_errors);
    if let Some(loaded) = &mut report.loaded {
        loaded.inputs = Some(Arc::new(Inputs {
            digest,
            config: config.credential_sources(),
            isolated,
        }));
    }
    report
}

/// [`report`] for a configuration already read, with the errors of
/// reading it (`crate::source` reads documents from the API server as
/// well as files): one compiler and one set of checks for every source.
pub fn report_parsed(
    config: &Config,
    parse_errors: &config::ConfigErrors,
    bootstrap: &Bootstrap,
    previous: Option<Previous<'_>>,
    read_at: std::time::SystemTime,
) -> Report {
    let mut report = check_all(config, bootstrap, previous, read_at);
    with_parse_errors(&mut report, parse_errors);
    report
}

/// Puts the errors of reading the configuration first; with any, nothing
/// is served.
fn with_parse_errors(report: &mut Report, parse_errors: &config::ConfigErrors) {
    report
        .errors
        .splice(0..0, parse_errors.0.iter().map(ToString::to_string));
    if !parse_errors.0.is_empty() {
        report.loaded = None;
    }
}

/// Compiles parsed config and loads its credentials.
pub fn check(config: &Config, bootstrap: &Bootstrap) -> Result<Loaded, LoadErrors> {
    check_all(config, bootstrap, None, std::time::SystemTime::now()).into_result()
}

/// Compiles `config` and checks every credential of what compiled, so
/// credential errors are reported with compile errors, not after them.
fn check_all(
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<Previous<'_>>,
    read_at: std::time::SystemTime,
) -> Report {
    check_compiled(
        Lines::compile(config, bootstrap),
        config,
        bootstrap,
        previous,
        read_at,
    )
}

/// A compiled plan and its errors, as lines.
struct Lines {
    plan: Arc<Plan>,
    errors: Vec<String>,
    isolated: Vec<String>,
}

impl Lines {
    fn compile(config: &Config, bootstrap: &Bootstrap) -> Lines {
        let compiled = plan::compile_all(config, bootstrap);
        Lines {
            plan: Arc::new(compiled.plan),
            errors: compiled.errors.iter().map(ToString::to_string).collect(),
            isolated: compiled.isolated.iter().map(ToString::to_string).collect(),
        }
    }
}

/// Loads the credentials of a compiled plan (`config` gives the Secrets
/// and ConfigMaps of the documents) and builds its server configs.
fn check_compiled(
    compiled: Lines,
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<Previous<'_>>,
    read_at: std::time::SystemTime,
) -> Report {
    let Lines {
        plan,
        mut errors,
        mut isolated,
    } = compiled;
    // The plan's warnings start with those of parsing `config`.
    let mut warnings = plan.warnings.clone();
    let (creds, cred_errors) =
        creds::load_partial(&plan, config, bootstrap, previous.map(|p| p.creds));
    warnings.extend(creds.warnings.iter().cloned());
    let failed: Vec<&str> = cred_errors.iter().map(|e| e.origin.as_str()).collect();
    isolated.extend(cred_errors.iter().map(ToString::to_string));
    // A server whose credential failed has no config: its handshakes are
    // refused. Building it would only repeat the credential's error.
    let servers = plan
        .inbound
        .listeners
        .iter()
        .flat_map(|l| l.servers.iter().map(AsRef::as_ref))
        .filter(|s| {
            s.tls
                .as_ref()
                .is_none_or(|t| !failed.contains(&t.origin.as_str()))
        });
    let (server_tls, tls_errors) =
        ServerConfigs::build_partial(servers, &creds, previous.map(|p| p.server_tls));
    isolated.extend(tls_errors.iter().map(ToString::to_string));
    // A reload keeps the last good configuration in service rather than
    // leave out a server that no longer compiles or a credential with no
    // last good version (one that has one is kept at it), unless that part
    // is left out already. At start there is nothing to keep, so what is
    // broken is left out.
    if bootstrap.strict {
        errors.append(&mut isolated);
    } else if let Some(p) = previous {
        // Compared without `file:line`, which an edit elsewhere moves (an
        // object from the API server is named without one: kept whole).
        let what = |e: &str| match e.split_once(": ") {
            Some((at, rest))
                if at
                    .rsplit_once(':')
                    .is_some_and(|(_, l)| l.parse::<usize>().is_ok()) =>
            {
                rest.to_string()
            }
            _ => e.to_string(),
        };
        let known: std::collections::HashSet<String> = p.isolated.iter().map(|e| what(e)).collect();
        let (known, new): (Vec<String>, Vec<String>) =
            isolated.into_iter().partition(|e| known.contains(&what(e)));
        isolated = known;
        errors.extend(new);
    }
    let loaded = errors.is_empty().then(|| Loaded {
        plan,
        creds,
        server_tls,
        isolated: isolated.clone(),
        read_at,
        inputs: None,
        reused: false,
    });
    Report {
        loaded,
        errors,
        isolated,
        warnings,
        secrets: config.secrets.len(),
    }
}

#[cfg(test)]
mod tests;
