//! Host names and patterns as Istio matches them: exact names and left-most
//! wildcards (`*.example.com`), case-insensitive, trailing dot ignored.

use serde::Serialize;

/// A host from a ServiceEntry, DestinationRule or VirtualService.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "String")]
pub enum HostPattern {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`; matches any
    /// name with at least one more label.
    Wildcard(String),
    /// `*`: every host.
    Any,
}

impl From<HostPattern> for String {
    fn from(h: HostPattern) -> String {
        h.to_string()
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*{s}"),
            HostPattern::Any => f.write_str("*"),
        }
    }
}

/// Why a host is not valid. The text quotes the host as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Nothing but whitespace (or a lone dot).
    #[error("empty host")]
    Empty,
    /// A `*` anywhere but as the whole left-most label.
    #[error("{raw:?}: a wildcard is only allowed as the left-most label (\"*.example.com\")")]
    MisplacedWildcard {
        /// The host as written.
        raw: String,
    },
    /// An empty or over-long label, a character outside letters, digits,
    /// `-` and `_`, or a name over 253 characters.
    #[error("{name:?} is not a valid DNS name")]
    InvalidName {
        /// The name checked (normalized; without the `*.` of a wildcard).
        name: String,
    },
}

/// Lower-cases a host and drops a trailing dot.
pub fn normalize(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

impl HostPattern {
    /// Parses a host as written in a resource; `Err` says why it is invalid.
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        let h = normalize(raw.trim());
        if h.is_empty() {
            return Err(HostError::Empty);
        }
        if h == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(rest) = h.strip_prefix("*.") {
            check_name(rest)?;
            return Ok(HostPattern::Wildcard(format!(".{rest}")));
        }
        if h.contains('*') {
            return Err(HostError::MisplacedWildcard { raw: raw.into() });
        }
        check_name(&h)?;
        Ok(HostPattern::Exact(h))
    }

    /// Whether `host` (already normalized) falls under this pattern.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Wildcard(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            HostPattern::Any => true,
        }
    }

    /// Specificity for "most specific wins": exact names first, then longer
    /// wildcard suffixes.
    pub fn specificity(&self) -> (u8, usize) {
        match self {
            HostPattern::Exact(h) => (2, h.len()),
            HostPattern::Wildcard(s) => (1, s.len()),
            HostPattern::Any => (0, 0),
        }
    }

    /// Whether this is a wildcard pattern.
    pub fn is_wildcard(&self) -> bool {
        !matches!(self, HostPattern::Exact(_))
    }
}

/// The item whose hosts match `host` most specifically (exact over
/// wildcard, longer wildcard over shorter); the first wins ties. Used for
/// every "which resource serves this host" choice.
pub fn most_specific<'a, T: ?Sized + 'a>(
    items: impl IntoIterator<Item = &'a T>,
    host: &str,
    hosts: impl Fn(&'a T) -> &'a [HostPattern],
) -> Option<&'a T> {
    let mut best: Option<((u8, usize), &T)> = None;
    for item in items {
        let spec = hosts(item)
            .iter()
            .filter(|h| h.matches(host))
            .map(|h| h.specificity())
            .max();
        if let Some(spec) = spec
            && best.is_none_or(|(b, _)| spec > b)
        {
            best = Some((spec, item));
        }
    }
    best.map(|(_, item)| item)
}

fn check_name(name: &str) -> Result<(), HostError> {
    let ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if ok && name.len() <= 253 {
        Ok(())
    } else {
        Err(HostError::InvalidName { name: name.into() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_wildcard() {
        let e = HostPattern::parse("API.Example.com.").unwrap();
        assert!(e.matches("api.example.com"));
        assert!(!e.matches("x.api.example.com"));
        let w = HostPattern::parse("*.example.com").unwrap();
        assert!(w.matches("a.example.com"));
        assert!(w.matches("a.b.example.com"));
        assert!(!w.matches("example.com"));
        assert!(!w.matches("aexample.com"));
        assert!(e.specificity() > w.specificity());
        assert!(HostPattern::parse("*.b.example.com").unwrap().specificity() > w.specificity());
    }

    #[test]
    fn invalid_hosts() {
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("bad host").is_err());
    }
}
