//! Host names and patterns as Istio matches them: exact names and left-most
//! wildcards (`*.example.com`), case-insensitive, trailing dot ignored.
//!
//! [`HostPattern::parse_domain`] applies Istio's own `ValidateWildcardDomain`
//! (ServiceEntry and DestinationRule hosts), which also accepts a partial
//! wildcard (`*foo.example.com`, `*-foo.example.com`); such a pattern matches
//! as Envoy matches a suffix wildcard: any longer name ending in the part
//! after the `*`.

use serde::Serialize;

/// A host from a ServiceEntry, DestinationRule or VirtualService.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(into = "String")]
pub enum HostPattern {
    /// `api.example.com`.
    Exact(String),
    /// `*.example.com`, stored as the suffix `.example.com`; matches any
    /// name with at least one more label. A partial wildcard
    /// (`*foo.example.com`) is stored as `foo.example.com` and matches any
    /// longer name ending with it (`xfoo.example.com`, `a.foo.example.com`).
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
    /// Refused by Istio's `ValidateWildcardDomain`; the text is Istio's.
    #[error("{reason}")]
    Domain {
        /// Istio's reason, quoting the host as written.
        reason: String,
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

    /// Parses a host as Istio's `ValidateWildcardDomain` accepts it
    /// (ServiceEntry and DestinationRule hosts): RFC 1123 labels (no `_`,
    /// no leading or trailing `-`), a last label that is not a number, at
    /// most 255 characters, and a left-most label that may be `*`, `*name`
    /// or `*-name`. `*` alone is [`HostPattern::Any`].
    pub fn parse_domain(raw: &str) -> Result<HostPattern, HostError> {
        validate_wildcard_domain(raw).map_err(|reason| HostError::Domain { reason })?;
        let h = normalize(raw);
        if h == "*" || h.is_empty() {
            return Ok(HostPattern::Any);
        }
        match h.strip_prefix('*') {
            Some(suffix) => Ok(HostPattern::Wildcard(suffix.to_string())),
            None => Ok(HostPattern::Exact(h)),
        }
    }

    /// Whether this is a partial wildcard (`*foo.example.com`): a `*`
    /// that is not a whole label.
    pub fn is_partial_wildcard(&self) -> bool {
        matches!(self, HostPattern::Wildcard(s) if !s.starts_with('.'))
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

/// Istio's `ValidateWildcardDomain`: [`validate_fqdn`], except that the
/// left-most label may be `*`, `*name` or `*-name`. The error is Istio's
/// text.
pub fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => dns1123_labels(rest),
        None => Ok(()),
    }
}

/// Istio's `ValidateFQDN`: at most 255 characters, RFC 1123 labels
/// (letters, digits and inner `-`, 63 at most each; a trailing dot allowed)
/// and a last label that is not a number. The error is Istio's text.
pub fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    dns1123_preconditions(fqdn)?;
    dns1123_labels(fqdn)
}

/// An RFC 1123 label as Istio's `labels.IsDNS1123Label` checks it
/// (`[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?`, 63 characters at most): port
/// names, namespaces, domain labels.
pub fn is_dns1123_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
}

/// `*`, or an RFC 1123 label optionally preceded by `*` or `*-`.
fn is_wildcard_dns1123_label(label: &str) -> bool {
    if label.len() > 63 {
        return false;
    }
    if label == "*" {
        return true;
    }
    let rest = label
        .strip_prefix("*-")
        .or_else(|| label.strip_prefix('*'))
        .unwrap_or(label);
    is_dns1123_label(rest)
}

fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

fn dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    // Go's strconv.Atoi: an optional sign and decimal digits that fit.
    if tld.parse::<i64>().is_ok() {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {tld:?} cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
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
    fn istio_domains() {
        // (host, accepted by Istio's ValidateWildcardDomain)
        let rows = [
            ("example.com", true),
            ("Example.COM.", true),
            ("foo", true),
            ("123", true),
            ("*", true),
            ("*.example.com", true),
            ("*x", true),
            ("*foo.example.com", true),
            ("*-foo.example.com", true),
            ("*--foo.example.com", false),
            ("foo*.example.com", false),
            ("a.*.example.com", false),
            ("foo_bar.example.com", false),
            ("-foo.example.com", false),
            ("foo-.example.com", false),
            ("1.2.3.4", false),
            ("example.123", false),
            ("example.com..", false),
            ("", false),
            ("-", false),
            ("[::1]", false),
        ];
        for (host, ok) in rows {
            assert_eq!(validate_wildcard_domain(host).is_ok(), ok, "{host:?}");
        }
        let long = format!("{}.com", vec!["a".repeat(63); 4].join("."));
        assert!(long.len() > 255 && validate_wildcard_domain(&long).is_err());
        assert_eq!(
            validate_wildcard_domain("foo_bar.com").unwrap_err(),
            "domain name \"foo_bar.com\" invalid (label \"foo_bar\" invalid)"
        );
        assert!(validate_fqdn("*.example.com").is_err());
        assert!(validate_fqdn("api.example.com").is_ok());
    }

    #[test]
    fn partial_wildcards_match_as_envoy_suffixes() {
        let p = HostPattern::parse_domain("*foo.example.com").unwrap();
        assert_eq!(p, HostPattern::Wildcard("foo.example.com".into()));
        assert!(p.is_partial_wildcard());
        assert_eq!(p.to_string(), "*foo.example.com");
        assert!(p.matches("xfoo.example.com"));
        assert!(p.matches("a.foo.example.com"));
        assert!(!p.matches("foo.example.com"));
        assert!(!p.matches("bar.example.com"));
        let dot = HostPattern::parse_domain("*.example.com").unwrap();
        assert!(!dot.is_partial_wildcard());
        assert!(p.specificity() > dot.specificity());
        assert_eq!(HostPattern::parse_domain("*").unwrap(), HostPattern::Any);
    }

    #[test]
    fn invalid_hosts() {
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("").is_err());
        assert!(HostPattern::parse("bad host").is_err());
    }
}
