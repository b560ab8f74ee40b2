//! The values of AuthorizationPolicy fields, compiled as Istio turns them
//! into Envoy matchers: `*` alone (present, non-empty), a leading `*`
//! (suffix), a trailing `*` (prefix), else exact; principals under
//! `spiffe://`; namespaces and trust domains as globs of the principal;
//! addresses as CIDRs; paths with `{*}`/`{**}` templates.

use std::net::IpAddr;

use serde::Serialize;

use super::attributes::Attributes;

/// A string pattern (Istio's `StringMatcher`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Str {
    /// `*`: any non-empty value.
    Any,
    /// `*suffix`.
    Suffix(String),
    /// `prefix*`.
    Prefix(String),
    /// The value itself.
    Exact(String),
}

impl Str {
    /// Reads a value as Istio does.
    pub fn parse(v: &str) -> Str {
        if v == "*" {
            Str::Any
        } else if let Some(s) = v.strip_prefix('*') {
            Str::Suffix(s.into())
        } else if let Some(p) = v.strip_suffix('*') {
            Str::Prefix(p.into())
        } else {
            Str::Exact(v.into())
        }
    }

    fn matches(&self, s: &str) -> bool {
        match self {
            Str::Any => !s.is_empty(),
            Str::Suffix(x) => s.ends_with(x.as_str()),
            Str::Prefix(x) => s.starts_with(x.as_str()),
            Str::Exact(x) => s == x,
        }
    }

    fn matches_ignore_case(&self, s: &str) -> bool {
        let fold = |x: &str, f: fn(&str, &str) -> bool| {
            f(&s.to_ascii_lowercase(), &x.to_ascii_lowercase())
        };
        match self {
            Str::Any => !s.is_empty(),
            Str::Suffix(x) => fold(x, |s, x| s.ends_with(x)),
            Str::Prefix(x) => fold(x, |s, x| s.starts_with(x)),
            Str::Exact(x) => s.eq_ignore_ascii_case(x),
        }
    }
}

/// An address block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cidr {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length.
    pub len: u8,
}

impl Cidr {
    /// `10.0.0.0/8`, `1.2.3.4`, `2001:db8::/32`.
    pub fn parse(v: &str) -> Result<Cidr, String> {
        let (ip, len) = match v.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (v, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{v:?} is not an IP address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{v:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, len })
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// A path pattern: Istio's string forms, or a template with `{*}` (one
/// segment) and `{**}` (the rest, possibly empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PathPat {
    /// Exact, prefix, suffix or any.
    Str(Str),
    /// Template segments (after the leading `/`).
    Template(Vec<Segment>),
}

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Segment {
    /// Itself.
    Literal(String),
    /// `{*}`: one non-empty segment.
    One,
    /// `{**}`: everything that follows.
    Rest,
    /// `{**}/`: everything that follows, ending in `/`.
    RestThenSlash,
}

impl PathPat {
    /// Reads a path value, checking templates as Istio's
    /// `CheckValidPathTemplate` does.
    pub fn parse(v: &str) -> Result<PathPat, String> {
        if !(v.contains("{*}") || v.contains("{**}")) {
            if v.contains('{') || v.contains('}') {
                return Err(format!(
                    "{v:?}: '{{' or '}}' beyond a supported path template ({{*}}, {{**}})"
                ));
            }
            return Ok(PathPat::Str(Str::parse(v)));
        }
        let Some(rest) = v.strip_prefix('/') else {
            return Err(format!("{v:?}: a path template must start with '/'"));
        };
        let mut segs = Vec::new();
        let parts: Vec<&str> = rest.split('/').collect();
        for (i, s) in parts.iter().copied().enumerate() {
            if matches!(segs.last(), Some(Segment::Rest)) {
                // Istio trims one trailing `/` before its check.
                if s.is_empty() && i + 1 == parts.len() {
                    segs.pop();
                    segs.push(Segment::RestThenSlash);
                    break;
                }
                return Err(format!("{v:?}: {{**}} must be the last operator"));
            }
            segs.push(match s {
                "{*}" => Segment::One,
                "{**}" => Segment::Rest,
                lit if lit.contains(['{', '}', '*']) => {
                    return Err(format!(
                        "{v:?}: segment {lit:?} is not a literal, {{*}} or {{**}}"
                    ));
                }
                lit => Segment::Literal(lit.into()),
            });
        }
        Ok(PathPat::Template(segs))
    }

    fn matches(&self, path: &str) -> bool {
        match self {
            PathPat::Str(s) => s.matches(path),
            PathPat::Template(segs) => {
                let Some(rest) = path.strip_prefix('/') else {
                    return false;
                };
                let mut parts = rest.split('/');
                for seg in segs {
                    match seg {
                        // The `/` before it is the template's own.
                        Segment::Rest => return parts.next().is_some(),
                        Segment::RestThenSlash => {
                            let rest: Vec<&str> = parts.collect();
                            return rest.len() >= 2 && rest.last() == Some(&"");
                        }
                        Segment::One => {
                            if parts.next().is_none_or(str::is_empty) {
                                return false;
                            }
                        }
                        Segment::Literal(l) => {
                            if parts.next() != Some(l.as_str()) {
                                return false;
                            }
                        }
                    }
                }
                parts.next().is_none()
            }
        }
    }
}

/// A `requestPrincipals` value: `<iss>/<sub>` split at the last `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestPrincipal {
    /// The issuer pattern.
    pub iss: Str,
    /// The subject pattern.
    pub sub: Str,
}

impl RequestPrincipal {
    /// Istio's `requestPrincipalGenerator`.
    pub fn parse(v: &str) -> RequestPrincipal {
        let (iss, sub, found) = match v.rfind('/') {
            Some(i) => (&v[..i], &v[i + 1..], true),
            None => (v, "", false),
        };
        let (iss, sub) = if v == "*" {
            (Str::Any, Str::Any)
        } else if let Some(rest) = v.strip_prefix('*') {
            if found {
                let iss = if iss == "*" {
                    Str::Any
                } else {
                    Str::Suffix(iss.trim_start_matches('*').to_string())
                };
                (iss, Str::Exact(sub.into()))
            } else {
                (Str::Any, Str::Suffix(rest.into()))
            }
        } else if let Some(rest) = v.strip_suffix('*') {
            if found {
                let sub = if sub == "*" {
                    Str::Any
                } else {
                    Str::Prefix(sub.trim_end_matches('*').to_string())
                };
                (Str::Exact(iss.into()), sub)
            } else {
                (Str::Prefix(rest.into()), Str::Any)
            }
        } else {
            (Str::Exact(iss.into()), Str::Exact(sub.into()))
        };
        RequestPrincipal { iss, sub }
    }
}

/// One value of one attribute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum Test {
    /// `principals`, `source.principal`: the peer identity under
    /// `spiffe://`.
    Principal(Str),
    /// `namespaces`, `source.namespace`: a glob (`*` any characters) of
    /// the namespace in the peer identity (`.../ns/<ns>/...`).
    Namespace(String),
    /// `serviceAccounts`, `source.serviceAccount`.
    ServiceAccount {
        /// Namespace.
        ns: String,
        /// Service account.
        sa: String,
    },
    /// `trustDomains`, `source.trustDomain`: a glob whose `*` stays
    /// within the trust domain.
    TrustDomain(String),
    /// `ipBlocks`, `source.ip`.
    SourceIp(Cidr),
    /// `remoteIpBlocks`, `remote.ip`.
    RemoteIp(Cidr),
    /// `destination.ip`.
    DestinationIp(Cidr),
    /// `ports`, `destination.port`.
    Port(u16),
    /// `connection.sni`.
    Sni(Str),
    /// `hosts` (case-insensitive, the authority as sent).
    Host(Str),
    /// `methods`.
    Method(Str),
    /// `paths`.
    Path(PathPat),
    /// `request.headers[name]`: `*` means present.
    Header {
        /// Lower-case header name.
        name: String,
        /// The value pattern.
        value: Str,
    },
    /// `requestPrincipals`, `request.auth.principal`.
    RequestPrincipal(RequestPrincipal),
    /// `request.auth.audiences` (`aud`), `request.auth.presenter` (`azp`),
    /// `request.auth.claims[a][b]`: the claim at the path, a string or a
    /// list of strings, one of which must match.
    Claim {
        /// Claim names, outermost first.
        path: Vec<String>,
        /// The value pattern.
        value: Str,
    },
}

impl Test {
    /// Whether it needs an HTTP request.
    pub fn http_only(&self) -> bool {
        matches!(
            self,
            Test::Host(_)
                | Test::Method(_)
                | Test::Path(_)
                | Test::Header { .. }
                | Test::RequestPrincipal(_)
                | Test::Claim { .. }
        )
    }

    /// Whether the value matches `a`.
    pub fn matches(&self, a: &Attributes) -> bool {
        match self {
            Test::Principal(p) => a.principal.is_some_and(|id| principal_matches(p, id)),
            Test::Namespace(g) => a
                .principal
                .is_some_and(|id| glob(&format!("*/ns/{g}/*"), id, false)),
            Test::ServiceAccount { ns, sa } => a
                .principal
                .is_some_and(|id| service_account_matches(id, ns, sa)),
            Test::TrustDomain(g) => a.principal.is_some_and(|id| trust_domain_matches(g, id)),
            Test::SourceIp(c) => c.contains(a.source_ip),
            Test::RemoteIp(c) => c.contains(a.remote_ip),
            Test::DestinationIp(c) => a.destination_ip.is_some_and(|ip| c.contains(ip)),
            Test::Port(p) => a.destination_port == *p,
            Test::Sni(s) => a.sni.is_some_and(|sni| s.matches(sni)),
            Test::Host(s) => a
                .http
                .as_ref()
                .is_some_and(|h| s.matches_ignore_case(h.host)),
            Test::Method(s) => a.http.as_ref().is_some_and(|h| s.matches(h.method)),
            Test::Path(p) => a.http.as_ref().is_some_and(|h| p.matches(h.path)),
            Test::Header { name, value } => a.http.as_ref().is_some_and(|h| {
                if let Some(v) = h.pseudo(name) {
                    return *value == Str::Any || value.matches(v);
                }
                let mut values = h.headers.get_all(name.as_str()).iter().peekable();
                if values.peek().is_none() {
                    return false;
                }
                if *value == Str::Any {
                    // Envoy's `present_match`.
                    return true;
                }
                let joined = values
                    .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                    .collect::<Vec<_>>()
                    .join(",");
                value.matches(&joined)
            }),
            Test::RequestPrincipal(rp) => a
                .http
                .as_ref()
                .and_then(|h| h.auth)
                .is_some_and(|t| rp.iss.matches(&t.issuer) && rp.sub.matches(&t.subject)),
            Test::Claim { path, value } => a
                .http
                .as_ref()
                .and_then(|h| h.auth)
                .is_some_and(|t| claim_matches(&t.claims, path, value)),
        }
    }
}

fn principal_matches(p: &Str, id: &str) -> bool {
    const SPIFFE: &str = "spiffe://";
    match p {
        Str::Any => !id.is_empty(),
        Str::Suffix(x) => id.starts_with(SPIFFE) && id[SPIFFE.len()..].ends_with(x.as_str()),
        Str::Prefix(x) => id
            .strip_prefix(SPIFFE)
            .is_some_and(|r| r.starts_with(x.as_str())),
        Str::Exact(x) => id.strip_prefix(SPIFFE) == Some(x.as_str()),
    }
}

/// Istio's `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?`.
fn service_account_matches(id: &str, ns: &str, sa: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    let segs: Vec<&str> = rest.split('/').collect();
    (1..segs.len().saturating_sub(1)).any(|i| {
        segs[i] == "ns"
            && segs[i + 1] == ns
            && (i + 2..segs.len().saturating_sub(1)).any(|j| segs[j] == "sa" && segs[j + 1] == sa)
    })
}

/// Istio's `srcTrustDomainGenerator`.
fn trust_domain_matches(g: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return false;
    };
    if g == "*" {
        return true;
    }
    let Some((td, _)) = rest.split_once('/') else {
        return false;
    };
    glob(g, td, true)
}

/// Whether `s` matches `pattern`, whose `*` stands for any characters (or,
/// with `within_segment`, any but `/`).
fn glob(pattern: &str, s: &str, within_segment: bool) -> bool {
    let (p, s) = (pattern.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && p[pi] == s[si] {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star
            && !(within_segment && s[ss] == b'/')
        {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

fn claim_matches(
    claims: &serde_json::Map<String, serde_json::Value>,
    path: &[String],
    value: &Str,
) -> bool {
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let mut v = claims.get(first);
    for name in rest {
        v = v.and_then(|x| x.get(name));
    }
    match v {
        Some(serde_json::Value::String(s)) => value.matches(s),
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .any(|i| i.as_str().is_some_and(|s| value.matches(s))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob(
            "*/ns/default/*",
            "spiffe://cluster.local/ns/default/sa/x",
            false
        ));
        assert!(!glob(
            "*/ns/default/*",
            "spiffe://cluster.local/ns/prod/sa/x",
            false
        ));
        assert!(glob("*/ns/te*/*", "spiffe://td/ns/test/sa/x", false));
        assert!(glob("a*c", "abc", true));
        assert!(!glob("a*c", "a/c", true));
    }

    #[test]
    fn service_accounts() {
        assert!(service_account_matches("spiffe://td/ns/a/sa/b", "a", "b"));
        assert!(service_account_matches(
            "spiffe://td/ns/a/x/sa/b/y",
            "a",
            "b"
        ));
        assert!(!service_account_matches("spiffe://td/ns/a/sa/c", "a", "b"));
        assert!(!service_account_matches("spiffe://td/ns/b/sa/b", "a", "b"));
    }

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(Cidr::parse("1.2.3.4/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn path_templates() {
        let t = PathPat::parse("/api/{*}/items/{**}").unwrap();
        assert!(t.matches("/api/v1/items/"));
        assert!(t.matches("/api/v1/items/a/b"));
        assert!(!t.matches("/api/v1/items"));
        assert!(!t.matches("/api//items/a"));
        assert!(!t.matches("/api/v1/x/items/a"));
        let one = PathPat::parse("/foo/{*}").unwrap();
        assert!(one.matches("/foo/bar"));
        assert!(!one.matches("/foo/bar/baz"));
        assert!(PathPat::parse("/foo/{**}/bar").is_err());
        let slash = PathPat::parse("/foo/{**}/").unwrap();
        assert!(slash.matches("/foo/a/b/"));
        assert!(!slash.matches("/foo/a/b"));
        assert!(!slash.matches("/foo/"));
        assert!(PathPat::parse("/foo/{x}").is_err());
    }

    #[test]
    fn request_principals_split_at_the_last_slash() {
        let rp = RequestPrincipal::parse("https://issuer.example/sub-1");
        assert_eq!(rp.iss, Str::Exact("https://issuer.example".into()));
        assert_eq!(rp.sub, Str::Exact("sub-1".into()));
        let any_sub = RequestPrincipal::parse("https://issuer.example/*");
        assert_eq!(any_sub.sub, Str::Any);
        let star = RequestPrincipal::parse("*");
        assert_eq!((star.iss, star.sub), (Str::Any, Str::Any));
        let suffix = RequestPrincipal::parse("*/admin");
        assert_eq!(
            (suffix.iss, suffix.sub),
            (Str::Any, Str::Exact("admin".into()))
        );
    }
}
