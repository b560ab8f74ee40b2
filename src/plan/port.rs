//! Port numbers as written in resources.

use super::diagnostics::Diagnostics;
use crate::config::Source;

/// A port number in 1-65535; anything else (or none) is an error at
/// `field`.
pub(crate) fn port_number(
    v: Option<u32>,
    source: &Source,
    field: &str,
    diag: &mut Diagnostics,
) -> Option<u16> {
    match v {
        Some(n) if (1..=65535).contains(&n) => Some(n as u16),
        Some(n) => {
            diag.error(source, field, format!("{n} is not a valid port (1-65535)"));
            None
        }
        None => {
            diag.error(source, field, "required");
            None
        }
    }
}
