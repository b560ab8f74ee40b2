//! `meshgate iptables`: the rules that make meshgate a transparent sidecar,
//! as Istio's istio-iptables installs them.
//!
//! - `config`: the flags' values, parsed and validated.
//! - `rules` (pure): the rule model, built from the settings in Istio's
//!   order.
//! - `iptables`, `nft` (pure): the model as `iptables-restore` input (one
//!   nat table per family) or as one `nft -f -` script (an `inet` table).
//! - `exec`: finding and running the tools.
//! - `cli`: the command's flags and what it runs.

pub mod cli;
pub mod config;
pub mod exec;
pub mod iptables;
pub mod nft;
pub mod rules;

#[cfg(test)]
mod tests;
