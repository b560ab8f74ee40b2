//! HTTP helpers shared by listeners: the body type, local responses and
//! hop-by-hop header handling.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::bootstrap::UnderscoreAction;
use crate::plan::path::{self, PathError, PathNormalization};

/// Boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used on both sides of the proxy.
pub type Body = BoxBody<Bytes, BoxError>;

/// Header that carries meshgate's stable error reason on local responses.
pub const ERROR_HEADER: &str = "x-meshgate-error";

/// A body from any hyper-compatible body.
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed()
}

/// A locally generated response: status, stable reason (header) and a body
/// that says what happened.
pub fn local_response(status: StatusCode, reason: &str, message: String) -> Response<Body> {
    let mut resp = Response::new(boxed(Full::new(Bytes::from(message + "\n"))));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(reason) {
        h.insert(ERROR_HEADER, v);
    }
    resp
}

/// The host and port a request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    /// The host: lower case, no brackets, no trailing dot.
    pub host: String,
    /// The port, when the authority names one.
    pub port: Option<u16>,
    /// The authority as the client sent it.
    pub text: String,
}

/// The authority a request names: the URI's (HTTP/2 `:authority`,
/// absolute-form, CONNECT), else the single `Host` header. Two `Host`
/// headers, none, user info, an empty host or port 0 are refused.
pub fn request_authority<B>(req: &http::Request<B>) -> Result<Authority, &'static str> {
    if let Some(a) = req.uri().authority() {
        return parse_authority(a.as_str());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (Some(h), None) = (hosts.next(), hosts.next()) else {
        return Err("the request must carry exactly one Host header");
    };
    let h = h
        .to_str()
        .map_err(|_| "the Host header is not valid text")?;
    parse_authority(h)
}

/// Parses `host[:port]` (IPv6 in brackets).
pub fn parse_authority(text: &str) -> Result<Authority, &'static str> {
    const BAD: &str = "the request's host is not a valid host[:port]";
    let auth: http::uri::Authority = text.parse().map_err(|_| BAD)?;
    if auth.as_str().contains('@') {
        return Err(BAD);
    }
    let host = auth.host().trim_start_matches('[').trim_end_matches(']');
    // Anything after the host must be a numeric, non-zero port.
    let port_text = &auth.as_str()[auth.host().len()..];
    let port_ok = port_text.is_empty()
        || port_text
            .strip_prefix(':')
            .is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if host.is_empty() || !port_ok || auth.port_u16() == Some(0) {
        return Err(BAD);
    }
    Ok(Authority {
        host: crate::plan::host::normalize(host),
        port: auth.port_u16(),
        text: text.to_string(),
    })
}

/// Headers that belong to one connection and are never forwarded
/// (RFC 9110 §7.6.1), plus the ones named in `Connection` — except the
/// message's framing and target (`Content-Length`, `Host`), which a client
/// could otherwise strip on its way through. `TE: trailers` is kept, as
/// Envoy does: HTTP/2 allows it and gRPC needs it.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .filter(|n| *n != header::CONTENT_LENGTH && *n != header::HOST)
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(n);
    }
    headers.remove("proxy-connection");
    headers.remove("keep-alive");
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Whether a request asks for a WebSocket upgrade: HTTP/1.1, `Connection`
/// naming `upgrade` and `Upgrade: websocket` alone. The one upgrade that is
/// forwarded, as in Istio; every other token (`h2c` above all) is stripped
/// with the hop-by-hop headers, so no tunnel can bypass routing.
pub fn is_websocket_upgrade<B>(req: &http::Request<B>) -> bool {
    let headers = req.headers();
    let mut upgrades = headers.get_all(header::UPGRADE).iter();
    let websocket = match (upgrades.next(), upgrades.next()) {
        (Some(v), None) => v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"websocket"),
        _ => false,
    };
    req.version() == http::Version::HTTP_11
        && websocket
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Concurrent streams one downstream HTTP/2 connection may open (Envoy's
/// edge best practice); more are refused with REFUSED_STREAM.
pub const MAX_CONCURRENT_STREAMS: u32 = 100;

/// hyper's HTTP/1.1 read buffer for a `max_bytes` head limit: room for the
/// separators hyper sees and meshgate's exact count leaves out, so the
/// exact limit ([`check_request_head`]) decides (hyper's 431 is the outer
/// bound).
pub fn head_buffer(max_bytes: usize) -> usize {
    max_bytes.saturating_add(8 * 1024).max(8 * 1024)
}

/// HTTP/2 `SETTINGS_MAX_HEADER_LIST_SIZE` for a `max_bytes` head limit:
/// HPACK counts 32 bytes more per header (RFC 7541 §4.1).
pub fn header_list_size(max_bytes: usize) -> u32 {
    let room = max_bytes.saturating_add(32 * (MAX_HEADERS + 8));
    u32::try_from(room).unwrap_or(u32::MAX)
}

/// Envoy's `max_headers_count` default: more request headers get 431.
pub const MAX_HEADERS: usize = 100;

/// Why a request head is refused before routing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Header names and values (the method, path and authority included)
    /// exceed the limit: 431.
    #[error("request headers are {size} bytes, over the {limit}-byte limit")]
    TooLarge {
        /// Bytes counted.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// More headers than [`MAX_HEADERS`]: 431.
    #[error("request has {0} headers, over the limit of {MAX_HEADERS}")]
    TooMany(usize),
    /// `Transfer-Encoding` other than a single `chunked`: 400.
    #[error("Transfer-Encoding must be exactly one 'chunked'")]
    TransferEncoding,
    /// A header name with `_` under REJECT_REQUEST: 400.
    #[error("header names with underscores are refused")]
    Underscore,
}

impl HeadError {
    /// The status the client gets.
    pub fn status(self) -> StatusCode {
        match self {
            HeadError::TooLarge { .. } | HeadError::TooMany(_) => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The stable reason (`x-meshgate-error`, access-log flag).
    pub fn reason(self) -> &'static str {
        match self {
            HeadError::TooLarge { .. } | HeadError::TooMany(_) => "request_headers_too_large",
            HeadError::TransferEncoding => "bad_transfer_encoding",
            HeadError::Underscore => "header_with_underscore",
        }
    }
}

/// Checks a request head before routing, as Envoy does, identically for
/// HTTP/1.1 and HTTP/2: its size (header names and values plus method,
/// path and authority, as Envoy counts a header map) at most `max_bytes`;
/// at most [`MAX_HEADERS`] headers; `Transfer-Encoding`, if any, exactly
/// one `chunked` (RFC 9112 §6.1: anything else cannot be framed safely
/// by both sides); header names with `_` per `underscores` (dropped in
/// place for DROP_HEADER).
pub fn check_request_head<B>(
    req: &mut http::Request<B>,
    max_bytes: usize,
    underscores: UnderscoreAction,
) -> Result<(), HeadError> {
    let headers = req.headers();
    if headers.len() > MAX_HEADERS {
        return Err(HeadError::TooMany(headers.len()));
    }
    let uri = req.uri();
    let mut size = req.method().as_str().len()
        + uri.path_and_query().map_or(0, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    for (name, value) in headers {
        size += name.as_str().len() + value.len();
    }
    if size > max_bytes {
        return Err(HeadError::TooLarge {
            size,
            limit: max_bytes,
        });
    }
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter();
    match (te.next(), te.next()) {
        (None, _) => {}
        (Some(v), None) if v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") => {}
        _ => return Err(HeadError::TransferEncoding),
    }
    if underscores != UnderscoreAction::Allow {
        let odd: Vec<HeaderName> = headers
            .keys()
            .filter(|n| n.as_str().contains('_'))
            .cloned()
            .collect();
        if !odd.is_empty() {
            if underscores == UnderscoreAction::RejectRequest {
                return Err(HeadError::Underscore);
            }
            for n in odd {
                req.headers_mut().remove(n);
            }
        }
    }
    Ok(())
}

/// Normalises a request's path in place as MeshConfig `pathNormalization`
/// says, before routing: the route, and the upstream, see the normalised
/// path. CONNECT and `OPTIONS *` have no path and are left alone; an
/// absolute-form target keeps its scheme and authority.
pub fn normalize_request_path<B>(
    req: &mut http::Request<B>,
    mode: PathNormalization,
) -> Result<(), PathError> {
    if req.method() == http::Method::CONNECT {
        return Ok(());
    }
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let normalized = match path::normalize(pq.as_str(), mode)? {
        std::borrow::Cow::Borrowed(same) if same.len() == pq.as_str().len() => return Ok(()),
        other => other.into_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    // The normaliser's output is a valid origin-form target.
    parts.path_and_query =
        Some(http::uri::PathAndQuery::try_from(normalized).map_err(|_| PathError::NotOriginForm)?);
    *req.uri_mut() = http::Uri::from_parts(parts).map_err(|_| PathError::NotOriginForm)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_are_checked_as_envoy_counts_them() {
        let req = |extra: &[(&str, &str)]| {
            let mut b = http::Request::get("/abc");
            for (k, v) in extra {
                b = b.header(*k, *v);
            }
            b.body(()).unwrap()
        };
        // "GET" + "/abc" + "host" + "a.b" = 14 bytes.
        let mut r = req(&[("host", "a.b")]);
        assert_eq!(
            check_request_head(&mut r, 14, UnderscoreAction::Allow),
            Ok(())
        );
        assert_eq!(
            check_request_head(&mut r, 13, UnderscoreAction::Allow),
            Err(HeadError::TooLarge {
                size: 14,
                limit: 13
            })
        );
        let many: Vec<(String, &str)> =
            (0..=MAX_HEADERS).map(|i| (format!("x-{i}"), "v")).collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let mut r = req(&many);
        assert_eq!(
            check_request_head(&mut r, 1 << 20, UnderscoreAction::Allow),
            Err(HeadError::TooMany(MAX_HEADERS + 1))
        );
        for te in [
            &[("transfer-encoding", "chunked")][..],
            &[("transfer-encoding", " Chunked ")],
        ] {
            assert_eq!(
                check_request_head(&mut req(te), 1 << 20, UnderscoreAction::Allow),
                Ok(())
            );
        }
        for te in [
            &[("transfer-encoding", "chunked, chunked")][..],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
        ] {
            assert_eq!(
                check_request_head(&mut req(te), 1 << 20, UnderscoreAction::Allow),
                Err(HeadError::TransferEncoding),
                "{te:?}"
            );
        }
        let under = [("x_user", "admin"), ("x-user", "me")];
        assert_eq!(
            check_request_head(&mut req(&under), 1 << 20, UnderscoreAction::Allow),
            Ok(())
        );
        assert_eq!(
            check_request_head(&mut req(&under), 1 << 20, UnderscoreAction::RejectRequest),
            Err(HeadError::Underscore)
        );
        let mut r = req(&under);
        check_request_head(&mut r, 1 << 20, UnderscoreAction::DropHeader).unwrap();
        assert!(r.headers().get("x_user").is_none());
        assert_eq!(r.headers()["x-user"], "me");
    }

    #[test]
    fn request_paths_are_normalised_in_place() {
        let norm = |uri: &str, mode| {
            let mut req = http::Request::get(uri).body(()).unwrap();
            normalize_request_path(&mut req, mode).map(|()| req.uri().to_string())
        };
        let base = PathNormalization::Base;
        assert_eq!(norm("/x/../admin?a=/../b", base).unwrap(), "/admin?a=/../b");
        assert_eq!(norm("/%61dmin", base).unwrap(), "/admin");
        assert_eq!(
            norm("http://api.example:8080/./a/%2e%2e/admin", base).unwrap(),
            "http://api.example:8080/admin"
        );
        assert_eq!(norm("//admin", base).unwrap(), "//admin");
        assert_eq!(
            norm("//admin", PathNormalization::MergeSlashes).unwrap(),
            "/admin"
        );
        assert_eq!(
            norm("/x/../admin", PathNormalization::None).unwrap(),
            "/x/../admin"
        );
        assert_eq!(norm("/a%00b", base), Err(PathError::Nul));
        let mut connect = http::Request::connect("api.example:443").body(()).unwrap();
        normalize_request_path(&mut connect, base).unwrap();
        assert_eq!(connect.uri().to_string(), "api.example:443");
    }

    #[test]
    fn authority_forms() {
        let a = |s: &str| parse_authority(s).map(|a| (a.host, a.port));
        assert_eq!(a("API.example.com"), Ok(("api.example.com".into(), None)));
        assert_eq!(
            a("a.example.com:8443"),
            Ok(("a.example.com".into(), Some(8443)))
        );
        assert_eq!(a("svc.test."), Ok(("svc.test".into(), None)));
        assert_eq!(a("[::1]:9000"), Ok(("::1".into(), Some(9000))));
        assert_eq!(a("[2001:DB8::1]"), Ok(("2001:db8::1".into(), None)));
        assert_eq!(a("127.0.0.1:18080"), Ok(("127.0.0.1".into(), Some(18080))));
        for bad in [
            "user@host",
            "user@svc.test:80",
            "host:0",
            "",
            "svc.test:http",
            ":80",
            "host:",
        ] {
            assert!(parse_authority(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn strips_listed_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-authorization", HeaderValue::from_static("basic x"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-app"));
    }

    #[test]
    fn keeps_te_trailers_framing_and_host() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("te, content-length, host"),
        );
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("5"));
        h.insert(header::HOST, HeaderValue::from_static("a.test"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.get(header::TE).unwrap(), "trailers");
        assert_eq!(h.get(header::CONTENT_LENGTH).unwrap(), "5");
        assert_eq!(h.get(header::HOST).unwrap(), "a.test");
        let mut h = HeaderMap::new();
        h.insert(header::TE, HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h);
        assert!(h.is_empty());
    }

    #[test]
    fn only_websocket_is_an_upgrade() {
        let req = |upgrade: &str, connection: &str, v: http::Version| {
            http::Request::builder()
                .version(v)
                .header(header::UPGRADE, upgrade)
                .header(header::CONNECTION, connection)
                .body(())
                .unwrap()
        };
        let h11 = http::Version::HTTP_11;
        assert!(is_websocket_upgrade(&req("websocket", "Upgrade", h11)));
        assert!(is_websocket_upgrade(&req(
            "WebSocket",
            "keep-alive, upgrade",
            h11
        )));
        for (u, c, v) in [
            ("h2c", "Upgrade, HTTP2-Settings", h11),
            ("websocket, h2c", "Upgrade", h11),
            ("websocket", "keep-alive", h11),
            ("websocket", "Upgrade", http::Version::HTTP_10),
            ("TLS/1.2", "Upgrade", h11),
        ] {
            assert!(!is_websocket_upgrade(&req(u, c, v)), "{u} / {c} / {v:?}");
        }
    }
}
