//! Table-driven tests of `plan::compile` and `OutboundPlan::route` against
//! Istio's documented semantics (ServiceEntry, DestinationRule,
//! VirtualService as a sidecar applies them to outbound traffic).

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::outbound::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_TIMEOUT, PortPlan};
use super::*;
use crate::bootstrap::{Bootstrap, OutboundTrafficPolicy};
use crate::config::{ConfigErrors, load_str};

const FILE: &str = "mesh.yaml";

// === helpers ===

fn try_compile(
    file: &str,
    yaml: &str,
    policy: OutboundTrafficPolicy,
) -> Result<Plan, ConfigErrors> {
    let config = load_str(file, yaml)
        .unwrap_or_else(|e| panic!("{file} does not load:\n{e}\n--- yaml ---\n{yaml}"));
    let bootstrap = Bootstrap {
        outbound_traffic_policy: policy,
        ..Bootstrap::default()
    };
    compile(&config, &bootstrap)
}

fn plan_with(yaml: &str, policy: OutboundTrafficPolicy) -> Plan {
    try_compile(FILE, yaml, policy)
        .unwrap_or_else(|e| panic!("does not compile:\n{e}\n--- yaml ---\n{yaml}"))
}

fn compiled(yaml: &str) -> Plan {
    plan_with(yaml, OutboundTrafficPolicy::AllowAny)
}

fn registered_pick(plan: &Plan, host: &str, port: u16, pick: u64) -> Target {
    match plan.outbound.route(host, port, pick) {
        Decision::Registered(t) => *t,
        other => panic!("{host}:{port}: expected Registered, got {other:?}"),
    }
}

fn registered(plan: &Plan, host: &str, port: u16) -> Target {
    registered_pick(plan, host, port, 0)
}

fn compile_errors(file: &str, yaml: &str) -> ConfigErrors {
    match try_compile(file, yaml, OutboundTrafficPolicy::AllowAny) {
        Ok(p) => panic!(
            "{file}: expected errors, but it compiled (warnings: {:?})\n--- yaml ---\n{yaml}",
            p.warnings
        ),
        Err(e) => e,
    }
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn endpoints(v: &[(&str, u16)]) -> Vec<(String, u16)> {
    v.iter().map(|(h, p)| (h.to_string(), *p)).collect()
}

/// Indents every line of `text` by `n` spaces.
fn indent(text: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}\n")
            }
        })
        .collect()
}

fn cred(namespace: Option<&str>, name: &str) -> CredentialRef {
    CredentialRef {
        name: name.into(),
        namespace: namespace.map(Into::into),
    }
}

/// Asserts that a collected list of table-row mismatches is empty.
fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{} row(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

mod capture;
mod diagnostics;
mod fidelity;
mod mesh_routes;
mod outbound;
mod parity;
mod resilience;
mod scoping;
mod selection;
mod subsets_and_routes;
