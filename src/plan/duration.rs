//! Durations as written in Istio resources (`10s`, `1.5s`, `100ms`, `1h30m`).

use std::num::ParseFloatError;
use std::time::Duration;

/// Why a duration does not parse. The text quotes the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// Nothing but whitespace.
    #[error("empty duration")]
    Empty,
    /// A number without a unit (`10`).
    #[error("{raw:?}: missing unit (use ms, s, m or h)")]
    MissingUnit {
        /// The value as written.
        raw: String,
    },
    /// The numeric part does not parse (`1.2.3s`).
    #[error("{raw:?}: {number:?} is not a number")]
    NotANumber {
        /// The value as written.
        raw: String,
        /// The part that should be a number.
        number: String,
        /// The float parser's error.
        source: ParseFloatError,
    },
    /// A unit other than ns, us, µs, ms, s, m, h, d.
    #[error("{raw:?}: unknown unit {unit:?} (use ms, s, m, h or d)")]
    UnknownUnit {
        /// The value as written.
        raw: String,
        /// The unit found.
        unit: String,
    },
    /// Longer than ten years, or not finite.
    #[error("{raw:?}: out of range")]
    OutOfRange {
        /// The value as written.
        raw: String,
    },
}

/// Parses a Go/protobuf-style duration. `Err` says what is wrong.
pub fn parse(raw: &str) -> Result<Duration, DurationError> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(DurationError::Empty);
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| DurationError::MissingUnit { raw: raw.into() })?;
        let (num, tail) = rest.split_at(num_len);
        let value: f64 = num.parse().map_err(|source| DurationError::NotANumber {
            raw: raw.into(),
            number: num.into(),
            source,
        })?;
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_len);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            _ => {
                return Err(DurationError::UnknownUnit {
                    raw: raw.into(),
                    unit: unit.into(),
                });
            }
        };
        total += value * scale;
        rest = next;
    }
    if !total.is_finite() || total > 10.0 * 365.0 * 86400.0 {
        return Err(DurationError::OutOfRange { raw: raw.into() });
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_forms() {
        assert_eq!(parse("10s").unwrap(), Duration::from_secs(10));
        assert_eq!(parse("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
        assert!(parse("10").is_err());
        assert!(parse("10 parsecs").is_err());
        assert!(parse("").is_err());
    }
}
