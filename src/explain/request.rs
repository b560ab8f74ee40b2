//! The request `meshgate explain` is asked about, in each direction, and
//! the outbound target's forms.

use std::path::PathBuf;

use http::{HeaderMap, HeaderName, HeaderValue};

use super::model::RequestKind;

/// A request from the app, as `explain outbound` takes it.
#[derive(Debug, Clone)]
pub struct OutboundRequest {
    /// As given on the command line.
    pub target: String,
    /// `Http` (plain HTTP to the proxy) or `Connect` (a tunnel).
    pub kind: RequestKind,
    /// Host, normalized.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path and query as given (HTTP only).
    pub path: Option<String>,
    /// Whether the app speaks TLS itself inside the tunnel (`https://`).
    pub app_tls: bool,
    /// Method (HTTP only).
    pub method: String,
    /// Request headers (HTTP only).
    pub headers: Vec<(String, String)>,
}

/// Parses `http://host[:port][/path]`, `https://host[:port][/path]` (the
/// app opens a CONNECT tunnel and speaks TLS itself, as `curl -x` does) or
/// `host:port` (a CONNECT tunnel).
pub fn parse_target(s: &str) -> Result<OutboundRequest, String> {
    let authority = crate::runtime::http::parse_authority;
    if let Some((scheme, _)) = s.split_once("://") {
        let uri: http::Uri = s.parse().map_err(|e| format!("{s:?} is not a URL: {e}"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "{other}:// is not proxied; use http://, https:// or host:port"
                ));
            }
        };
        let auth = uri
            .authority()
            .ok_or_else(|| format!("{s:?} has no host"))
            .and_then(|a| authority(a.as_str()).map_err(|e| format!("{s:?}: {e}")))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        return Ok(OutboundRequest {
            target: s.to_string(),
            kind: if https {
                RequestKind::Connect
            } else {
                RequestKind::Http
            },
            host: auth.host,
            port: auth.port.unwrap_or(if https { 443 } else { 80 }),
            path: Some(path),
            app_tls: https,
            // The app's request is inside its TLS: meshgate sees a CONNECT.
            method: if https { "CONNECT" } else { "GET" }.into(),
            headers: Vec::new(),
        });
    }
    let auth = authority(s).map_err(|e| format!("{s:?}: {e}"))?;
    let Some(port) = auth.port else {
        return Err(format!(
            "{s:?}: give a URL (http://{s}/) or host:port for a CONNECT tunnel"
        ));
    };
    Ok(OutboundRequest {
        target: s.to_string(),
        kind: RequestKind::Connect,
        host: auth.host,
        port,
        path: None,
        app_tls: false,
        method: "CONNECT".into(),
        headers: Vec::new(),
    })
}

/// A connection (and request) as `explain inbound` takes it.
#[derive(Debug, Clone, Default)]
pub struct InboundRequest {
    /// Listener port (as in the config).
    pub port: u16,
    /// Bind IP, when several listeners share the port.
    pub bind: Option<String>,
    /// SNI the client sends.
    pub sni: Option<String>,
    /// The client speaks plain text.
    pub plaintext: bool,
    /// Host / `:authority` (defaults to the SNI).
    pub host: Option<String>,
    /// Path and query.
    pub path: String,
    /// Method.
    pub method: String,
    /// Request headers.
    pub headers: Vec<(String, String)>,
    /// Client certificate chain given with `--client-cert`.
    pub client_cert: Option<PathBuf>,
    /// The client's address (AuthorizationPolicy `ipBlocks`) [default:
    /// 127.0.0.1].
    pub source_ip: Option<std::net::IpAddr>,
}

/// The headers of a request, as a header map (names and values were
/// checked when the arguments were read; any other is left out).
pub fn header_map(headers: &[(String, String)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (k, v) in headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            map.append(k, v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_in_each_form() {
        let r = parse_target("http://API.example.com/v1?q=1").unwrap();
        assert_eq!(
            (
                r.kind,
                r.host.as_str(),
                r.port,
                r.path.as_deref(),
                r.app_tls
            ),
            (
                RequestKind::Http,
                "api.example.com",
                80,
                Some("/v1?q=1"),
                false
            )
        );
        let r = parse_target("http://api.example.com:8080").unwrap();
        assert_eq!((r.port, r.path.as_deref()), (8080, Some("/")));
        let r = parse_target("https://api.example.com/x").unwrap();
        assert_eq!(
            (r.kind, r.port, r.app_tls),
            (RequestKind::Connect, 443, true)
        );
        let r = parse_target("db.example.com:5432").unwrap();
        assert_eq!(
            (r.kind, r.host.as_str(), r.port, r.path, r.app_tls),
            (RequestKind::Connect, "db.example.com", 5432, None, false)
        );
        let r = parse_target("[::1]:8080").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 8080));
    }

    #[test]
    fn unusable_targets_say_why() {
        assert!(
            parse_target("api.example.com")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(
            parse_target("ftp://api.example.com/")
                .unwrap_err()
                .contains("ftp://")
        );
        assert!(parse_target("http://user@api.example.com/").is_err());
        assert!(parse_target("api.example.com:0").is_err());
    }
}
