//! The load pipeline: config files → [`config`] → [`plan`] → [`creds`] →
//! rustls server configs, all checked before anything is published.
//!
//! Synchronous (file reads, YAML, rustls builds): the reloader runs it off
//! the async threads. Depends on nothing in the runtime.

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
    /// The compiled plan.
    pub plan: Plan,
    /// The credentials it references, validated.
    pub creds: Credentials,
    /// rustls server configs of the terminating inbound servers.
    pub server_tls: ServerConfigs,
}

/// What a reload may reuse from the configuration in force.
#[derive(Clone, Copy)]
pub struct Previous<'a> {
    /// Each credential that fails to load keeps its version here.
    pub creds: &'a Credentials,
    /// Server configs whose inputs did not change are kept, and sessions
    /// resume across the reload.
    pub server_tls: &'a ServerConfigs,
}

impl Loaded {
    /// Warnings from compilation and credential loading.
    pub fn warnings(&self) -> impl Iterator<Item = &String> {
        self.plan.warnings.iter().chain(&self.creds.warnings)
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
    let (config, parse_errors) = config::load_partial(&bootstrap.config_paths);
    let mut errors: Vec<String> = parse_errors.0.iter().map(ToString::to_string).collect();
    match check_with(&config, bootstrap, previous) {
        Ok(loaded) if errors.is_empty() => return Ok(loaded),
        Ok(_) => {}
        Err(e) => errors.extend(e.0),
    }
    Err(LoadErrors(errors))
}

/// What `meshgate validate` reports about a configuration that loads.
pub struct Validated {
    /// The checked configuration.
    pub loaded: Loaded,
    /// Secrets found in the config documents.
    pub secrets: usize,
}

impl Validated {
    /// One line: what was loaded.
    pub fn summary(&self) -> String {
        let plan = &self.loaded.plan;
        let o = &plan.outbound;
        let servers: usize = plan.inbound.listeners.iter().map(|l| l.servers.len()).sum();
        format!(
            "ok: {} ServiceEntry, {} DestinationRule, {} VirtualService (mesh), {} inbound listener(s) with {} server(s), {} Secret; {} warning(s); outbound policy {:?}",
            o.services.len(),
            o.rules.len(),
            o.routes.len(),
            plan.inbound.listeners.len(),
            servers,
            self.secrets,
            self.loaded.warnings().count(),
            o.policy
        )
    }
}

/// [`load`] for `meshgate validate`: also counts the Secrets given.
pub fn validate(bootstrap: &Bootstrap) -> Result<Validated, LoadErrors> {
    let (config, parse_errors) = config::load_partial(&bootstrap.config_paths);
    let mut errors: Vec<String> = parse_errors.0.iter().map(ToString::to_string).collect();
    match check_with(&config, bootstrap, None) {
        Ok(loaded) if errors.is_empty() => {
            return Ok(Validated {
                loaded,
                secrets: config.secrets.len(),
            });
        }
        Ok(_) => {}
        Err(e) => errors.extend(e.0),
    }
    Err(LoadErrors(errors))
}

/// Compiles parsed config and loads its credentials.
pub fn check(config: &Config, bootstrap: &Bootstrap) -> Result<Loaded, LoadErrors> {
    check_with(config, bootstrap, None)
}

fn check_with(
    config: &Config,
    bootstrap: &Bootstrap,
    previous: Option<Previous<'_>>,
) -> Result<Loaded, LoadErrors> {
    let plan = plan::compile(config, bootstrap)
        .map_err(|e| LoadErrors(e.0.iter().map(ToString::to_string).collect()))?;
    let creds = creds::load_with_fallback(&plan, config, bootstrap, previous.map(|p| p.creds))
        .map_err(|e| LoadErrors(e.iter().map(ToString::to_string).collect()))?;
    let servers = plan
        .inbound
        .listeners
        .iter()
        .flat_map(|l| l.servers.iter().map(AsRef::as_ref));
    let server_tls = ServerConfigs::build(servers, &creds, previous.map(|p| p.server_tls))
        .map_err(|e| LoadErrors(e.iter().map(ToString::to_string).collect()))?;
    Ok(Loaded {
        plan,
        creds,
        server_tls,
    })
}
