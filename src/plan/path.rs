//! Request-path normalisation as Istio's MeshConfig
//! `pathNormalization.normalization` defines it.
//!
//! Pure (no I/O, no allocation when nothing changes) and self-contained: it
//! depends on nothing else in the crate. The normalised path is what both the
//! route/authorization match and the upstream see, exactly as in Istio, where
//! the same Envoy settings feed both.
//!
//! Sources:
//! [`ProxyPathNormalization`](https://istio.io/latest/docs/reference/config/istio.mesh.v1alpha1/#MeshConfig-ProxyPathNormalization),
//! Istio's [normalization table](https://istio.io/latest/docs/reference/config/security/normalization/)
//! and [best practices](https://istio.io/latest/docs/ops/best-practices/security/#customize-your-system-on-path-normalization);
//! `pilot/pkg/networking/core/listener_builder.go` (istio/istio), which maps
//! the modes to Envoy's `HttpConnectionManager`
//! [`normalize_path`, `merge_slashes` and `path_with_escaped_slashes_action`](https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto):
//!
//! | mode | `normalize_path` | `merge_slashes` | escaped slashes |
//! |---|---|---|---|
//! | `NONE` | false | false | `KEEP_UNCHANGED` |
//! | `BASE` (and `DEFAULT`) | true | false | `KEEP_UNCHANGED` |
//! | `MERGE_SLASHES` | true | true | `KEEP_UNCHANGED` |
//! | `DECODE_AND_MERGE_SLASHES` | true | true | `UNESCAPE_AND_FORWARD` |
//!
//! and Envoy's `ConnectionManagerUtility::maybeNormalizePath`
//! (`source/common/http/conn_manager_utility.cc`) with `PathUtil`
//! (`path_utility.cc`), which apply them in this order, to the part before
//! the first `?` only (the query is never touched):
//!
//! 1. A `#` anywhere in the request target is rejected (400), whatever the
//!    mode (`envoy.reloadable_features.http_reject_path_with_fragment`).
//! 2. `DECODE_AND_MERGE_SLASHES`: `%2F`/`%2f` become `/` and `%5C`/`%5c`
//!    become `\`, once (no double decoding).
//! 3. Every mode but `NONE`: a dot segment with parameters, `.;x` or `..;x`,
//!    is read as `.` or `..` (Envoy's fix for GHSA-2w8w-rfw7-8gg4, on by
//!    default), then the path is canonicalised by Chromium's
//!    `url::CanonicalizePath` (`url_canon_path.cc`):
//!    * `\` is a separator and becomes `/`;
//!    * `.` and `..` segments are removed per RFC 3986 §5.2.4, `%2e`/`%2E`
//!      counting as a dot; `..` never climbs above the root;
//!    * a %-escape of an unreserved character (ALPHA / DIGIT / `-` / `.` /
//!      `_` / `~`) is decoded; every other valid escape is kept with the case
//!      of its hex digits as sent (Envoy does not uppercase: its test has
//!      `/a/%2F%2f/c` unchanged);
//!    * `%00` (and a raw NUL) makes the request invalid (400); an invalid
//!      escape (`%zz`, `%4`, a trailing `%`) is passed through unchanged, as
//!      Chromium's permissive mode does; if decoding would turn an invalid
//!      `%` into a valid escape (`%%32%65` → `%2e`) that `%` becomes `%25`
//!      (`%252e`), so nothing is decoded twice;
//!    * control characters, space, `"` `<` `>` `^` `` ` `` `{` `|` `}`, DEL
//!      and non-ASCII bytes are percent-encoded (uppercase hex).
//! 4. `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES`: runs of `/` become one
//!    `/` (after step 3, so `/a//../b` is `/a/b`, as in Envoy).
//!
//! Where this differs from Envoy, on purpose, so that the result is a fixed
//! point (normalising it again changes nothing) and matches what the upstream
//! will read:
//! * the `.;`/`..;` rule also recognises `%2e` dots and segments that begin
//!   after `\` (or, when decoding, after `%2F`/`%5C`); Envoy only looks at
//!   literal dots after `/`, so `/a/%2e%2e;x/b` comes out of Envoy as
//!   `/a/..;x/b` and becomes `/b` only on a second pass;
//! * a path of slashes only merges to `/` (Envoy's `mergeSlashes` turns `//`
//!   into `//`);
//! * the request target must be origin-form (`/…`) or `*`; Envoy would
//!   prefix a relative path with `/`.
//!
//! Recent Chromium (crbug.com/1509295, 2023) no longer decodes unreserved
//! escapes nor rejects `%00`; Envoy's path tests still reject `%00`, and
//! Istio documents the decoding for `BASE`, so this follows Istio's table.

use std::borrow::Cow;

/// MeshConfig `pathNormalization.normalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    /// The path is forwarded as received (only a `#` is still rejected).
    None,
    /// RFC 3986 normalisation plus `\` → `/`: Istio's default, also what
    /// `DEFAULT` means.
    #[default]
    #[serde(alias = "DEFAULT")]
    Base,
    /// `BASE`, then runs of `/` merged.
    MergeSlashes,
    /// `%2F`/`%5C` decoded first, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    fn merges_slashes(self) -> bool {
        matches!(self, Self::MergeSlashes | Self::DecodeAndMergeSlashes)
    }

    fn decodes_slashes(self) -> bool {
        self == Self::DecodeAndMergeSlashes
    }
}

/// Why a request target is refused. Every variant is a 400 Bad Request, as
/// Envoy answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Neither origin-form (starting with `/`) nor `*`; includes the empty
    /// target.
    #[error("request target is not origin-form (must start with '/')")]
    NotOriginForm,
    /// A `#` in the request target: a fragment is never sent to a server.
    #[error("request target contains a fragment ('#')")]
    Fragment,
    /// `%00` or a raw NUL in the path.
    #[error("request path contains an encoded or raw NUL")]
    Nul,
}

/// Normalises the path of a request target `path_and_query` (origin-form:
/// starts with `/`; `*`, for `OPTIONS *`, is returned unchanged). The query
/// (from the first `?`) is kept byte for byte.
///
/// Returns `Cow::Borrowed` when nothing changes, or when the result is a
/// prefix of the input (`/a/.` → `/a/`): the common case does not allocate.
pub fn normalize(path_and_query: &str, mode: PathNormalization) -> Result<Cow<'_, str>, PathError> {
    if path_and_query == "*" {
        return Ok(Cow::Borrowed(path_and_query));
    }
    if !path_and_query.starts_with('/') {
        return Err(PathError::NotOriginForm);
    }
    if path_and_query.contains('#') {
        return Err(PathError::Fragment);
    }
    if mode == PathNormalization::None {
        return Ok(Cow::Borrowed(path_and_query));
    }
    let (path, query) =
        path_and_query.split_at(path_and_query.find('?').unwrap_or(path_and_query.len()));
    let mut out = canonicalize(path, mode.decodes_slashes())?;
    if mode.merges_slashes() {
        out = merge_slashes(out);
    }
    Ok(match out {
        Cow::Borrowed(p) if p.len() == path.len() => Cow::Borrowed(path_and_query),
        Cow::Borrowed(p) if query.is_empty() => Cow::Borrowed(p),
        p => {
            let mut s = String::with_capacity(p.len() + query.len());
            s.push_str(&p);
            s.push_str(query);
            Cow::Owned(s)
        }
    })
}

/// Output that stays a borrowed prefix of the input until it first differs.
struct Out<'a> {
    src: &'a str,
    /// `None`: the output is `src[..len]`.
    buf: Option<Vec<u8>>,
    len: usize,
}

impl<'a> Out<'a> {
    fn new(src: &'a str) -> Self {
        Self {
            src,
            buf: None,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        self.buf.as_ref().map_or(self.len, Vec::len)
    }

    fn at(&self, i: usize) -> Option<u8> {
        match &self.buf {
            Some(b) => b.get(i).copied(),
            None if i < self.len => self.src.as_bytes().get(i).copied(),
            None => None,
        }
    }

    fn last(&self) -> Option<u8> {
        self.len().checked_sub(1).and_then(|i| self.at(i))
    }

    fn push(&mut self, c: u8) {
        match &mut self.buf {
            Some(b) => b.push(c),
            None if self.src.as_bytes().get(self.len) == Some(&c) => self.len += 1,
            None => {
                let mut b = Vec::with_capacity(self.src.len() + 8);
                b.extend_from_slice(self.src.as_bytes().get(..self.len).unwrap_or_default());
                b.push(c);
                self.buf = Some(b);
            }
        }
    }

    fn push_escaped(&mut self, c: u8) {
        const HEX: &[u8; 16] = b"0123456789ABCDEF";
        self.push(b'%');
        self.push(HEX[usize::from(c >> 4)]);
        self.push(HEX[usize::from(c & 0xf)]);
    }

    fn truncate(&mut self, n: usize) {
        match &mut self.buf {
            Some(b) => b.truncate(n),
            None => self.len = self.len.min(n),
        }
    }

    fn finish(self) -> Cow<'a, str> {
        // Only ASCII is ever pushed, and the borrowed prefix holds only bytes
        // that were pushed, so both conversions succeed.
        match self.buf {
            None => match self.src.get(..self.len) {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(
                    String::from_utf8_lossy(
                        self.src.as_bytes().get(..self.len).unwrap_or_default(),
                    )
                    .into_owned(),
                ),
            },
            Some(b) => Cow::Owned(
                String::from_utf8(b)
                    .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
            ),
        }
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a valid `%XY` at `i` stands for.
fn escape_at(p: &[u8], i: usize) -> Option<u8> {
    match p.get(i..i + 3)? {
        [b'%', h, l] => Some(hex_value(*h)? << 4 | hex_value(*l)?),
        _ => None,
    }
}

/// Length of a dot (`.`, `%2e`, `%2E`) at `i`, or 0.
fn dot_len(p: &[u8], i: usize) -> usize {
    match p.get(i) {
        Some(b'.') => 1,
        Some(b'%') if escape_at(p, i) == Some(b'.') => 3,
        _ => 0,
    }
}

/// Length of a separator at `i`, or 0: `/`, `\`, and when `decode`,
/// `%2F`/`%2f`/`%5C`/`%5c`.
fn sep_len(p: &[u8], i: usize, decode: bool) -> usize {
    match p.get(i) {
        Some(b'/' | b'\\') => 1,
        Some(b'%') if decode && matches!(escape_at(p, i), Some(b'/' | b'\\')) => 3,
        _ => 0,
    }
}

fn is_unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Bytes Chromium's path canonicaliser percent-encodes (`%` and `\` have
/// their own rules; NUL is rejected before this is asked).
fn must_escape(c: u8) -> bool {
    !(0x20..0x7f).contains(&c)
        || matches!(
            c,
            b' ' | b'"' | b'#' | b'<' | b'>' | b'?' | b'^' | b'`' | b'{' | b'|' | b'}'
        )
}

/// Where a dot at the start of a segment leads.
enum Dot {
    /// Part of a name.
    Name,
    /// A `.` segment; continue at the index.
    Current(usize),
    /// A `..` segment; continue at the index.
    Parent(usize),
}

/// Classifies the dot segment whose first dot ends at `j` (Chromium's
/// `ClassifyAfterDot`, plus Envoy's `.;`/`..;` parameter stripping).
fn classify_after_dot(p: &[u8], j: usize, decode: bool) -> Dot {
    let after = |k: usize| -> Option<usize> {
        match p.get(k) {
            None => Some(k),
            Some(b';') => Some(skip_segment(p, k, decode)),
            Some(_) => match sep_len(p, k, decode) {
                0 => None,
                n => Some(k + n),
            },
        }
    };
    if let Some(next) = after(j) {
        return Dot::Current(next);
    }
    match dot_len(p, j) {
        0 => Dot::Name,
        d => after(j + d).map_or(Dot::Name, Dot::Parent),
    }
}

/// The index just past the separator that ends the segment containing `k`,
/// or the end of the path.
fn skip_segment(p: &[u8], mut k: usize, decode: bool) -> usize {
    while k < p.len() {
        match sep_len(p, k, decode) {
            0 => k += 1,
            n => return k + n,
        }
    }
    p.len()
}

/// Chromium's `BackUpToPreviousSlash`: drops the last segment of an output
/// that ends with `/`, never the leading `/`.
fn back_up(out: &mut Out<'_>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    while i > 0 {
        i -= 1;
        if out.at(i) == Some(b'/') {
            break;
        }
    }
    out.truncate(i + 1);
}

/// Chromium's `CheckForNestedEscapes`, called right after an unescaped byte
/// was pushed within two bytes of `pct`, the output index of a `%` that did
/// not start a valid escape: if that `%` now starts one (with the next input
/// byte when only one byte follows it), it becomes `%25`.
fn fix_nested_escape(out: &mut Out<'_>, pct: usize, next: Option<u8>) {
    let len = out.len();
    if out.at(pct) != Some(b'%') || pct + 3 < len {
        return;
    }
    let (Some(first), Some(last)) = (out.at(pct + 1), out.last()) else {
        return;
    };
    let second = if pct + 2 == len { next } else { Some(last) };
    if hex_value(first).is_none() || second.and_then(hex_value).is_none() {
        return;
    }
    out.truncate(pct + 1);
    out.push(b'2');
    out.push(b'5');
    out.push(first);
    if pct + 3 == len {
        out.push(last);
    }
}

/// Steps 2 and 3 of the module documentation, on a path (no query) that
/// starts with `/`.
fn canonicalize(path: &str, decode: bool) -> Result<Cow<'_, str>, PathError> {
    let p = path.as_bytes();
    let mut out = Out::new(path);
    // Output index of the last `%` that did not start a valid escape.
    let mut bad_pct: Option<usize> = None;
    let mut i = 0;
    while let Some(&c) = p.get(i) {
        let sep = sep_len(p, i, decode);
        if sep > 0 {
            out.push(b'/');
            i += sep;
            continue;
        }
        let dot = dot_len(p, i);
        if dot > 0 {
            if out.last() != Some(b'/') {
                out.push(b'.');
                i += dot;
                continue;
            }
            match classify_after_dot(p, i + dot, decode) {
                Dot::Name => {
                    out.push(b'.');
                    i += dot;
                }
                Dot::Current(next) => i = next,
                Dot::Parent(next) => {
                    back_up(&mut out);
                    if bad_pct.is_some_and(|pct| pct >= out.len()) {
                        bad_pct = None;
                    }
                    i = next;
                }
            }
            continue;
        }
        if c == b'%' {
            match escape_at(p, i) {
                Some(0) => return Err(PathError::Nul),
                Some(v) if is_unreserved(v) => {
                    out.push(v);
                    i += 3;
                    if let Some(pct) = bad_pct {
                        fix_nested_escape(&mut out, pct, p.get(i).copied());
                    }
                }
                Some(_) => {
                    for &b in p.get(i..i + 3).unwrap_or_default() {
                        out.push(b);
                    }
                    i += 3;
                }
                None => {
                    bad_pct = Some(out.len());
                    out.push(b'%');
                    i += 1;
                }
            }
            continue;
        }
        if c == 0 {
            return Err(PathError::Nul);
        }
        if must_escape(c) {
            out.push_escaped(c);
        } else {
            out.push(c);
        }
        i += 1;
    }
    Ok(out.finish())
}

/// Step 4: every run of `/` becomes one `/`.
fn merge_slashes(path: Cow<'_, str>) -> Cow<'_, str> {
    if !path.contains("//") {
        return path;
    }
    let mut merged = String::with_capacity(path.len());
    let mut after_slash = false;
    for ch in path.chars() {
        if ch == '/' && after_slash {
            continue;
        }
        after_slash = ch == '/';
        merged.push(ch);
    }
    Cow::Owned(merged)
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes, None as Keep};
    use super::*;

    const MODES: [PathNormalization; 4] = [Keep, Base, MergeSlashes, DecodeAndMergeSlashes];

    type Want = Result<&'static str, PathError>;

    /// Input, then the result under NONE, BASE, MERGE_SLASHES and
    /// DECODE_AND_MERGE_SLASHES.
    const TABLE: &[(&str, [Want; 4])] = &[
        // Bypasses from the security review.
        (
            "/x/../admin",
            [Ok("/x/../admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/./admin",
            [Ok("/./admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/%2e/admin",
            [Ok("/%2e/admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/%2E%2E/admin",
            [
                Ok("/%2E%2E/admin"),
                Ok("/admin"),
                Ok("/admin"),
                Ok("/admin"),
            ],
        ),
        (
            "/%2e%2E/admin",
            [
                Ok("/%2e%2E/admin"),
                Ok("/admin"),
                Ok("/admin"),
                Ok("/admin"),
            ],
        ),
        (
            "/.%2e/admin",
            [Ok("/.%2e/admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/%61dmin",
            [Ok("/%61dmin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/%41%5a%30%2d%5f%7e",
            [
                Ok("/%41%5a%30%2d%5f%7e"),
                Ok("/AZ0-_~"),
                Ok("/AZ0-_~"),
                Ok("/AZ0-_~"),
            ],
        ),
        (
            "//admin",
            [Ok("//admin"), Ok("//admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/admin/.",
            [Ok("/admin/."), Ok("/admin/"), Ok("/admin/"), Ok("/admin/")],
        ),
        ("/admin/..", [Ok("/admin/.."), Ok("/"), Ok("/"), Ok("/")]),
        (
            "/a/b/../../admin",
            [
                Ok("/a/b/../../admin"),
                Ok("/admin"),
                Ok("/admin"),
                Ok("/admin"),
            ],
        ),
        (
            "/../admin",
            [Ok("/../admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/a/b/../../../../c",
            [Ok("/a/b/../../../../c"), Ok("/c"), Ok("/c"), Ok("/c")],
        ),
        // Escaped slashes: only DECODE_AND_MERGE_SLASHES reads them as separators.
        (
            "/admin%2F..%2Fsecret",
            [
                Ok("/admin%2F..%2Fsecret"),
                Ok("/admin%2F..%2Fsecret"),
                Ok("/admin%2F..%2Fsecret"),
                Ok("/secret"),
            ],
        ),
        (
            "/admin%2f..%2fsecret",
            [
                Ok("/admin%2f..%2fsecret"),
                Ok("/admin%2f..%2fsecret"),
                Ok("/admin%2f..%2fsecret"),
                Ok("/secret"),
            ],
        ),
        (
            "/admin%5C..%5Csecret",
            [
                Ok("/admin%5C..%5Csecret"),
                Ok("/admin%5C..%5Csecret"),
                Ok("/admin%5C..%5Csecret"),
                Ok("/secret"),
            ],
        ),
        (
            "/admin%5c..%5csecret",
            [
                Ok("/admin%5c..%5csecret"),
                Ok("/admin%5c..%5csecret"),
                Ok("/admin%5c..%5csecret"),
                Ok("/secret"),
            ],
        ),
        (
            "/a%2Fb",
            [Ok("/a%2Fb"), Ok("/a%2Fb"), Ok("/a%2Fb"), Ok("/a/b")],
        ),
        (
            "/a%2F%2f/c",
            [
                Ok("/a%2F%2f/c"),
                Ok("/a%2F%2f/c"),
                Ok("/a%2F%2f/c"),
                Ok("/a/c"),
            ],
        ),
        (
            "/a/..%2F",
            [Ok("/a/..%2F"), Ok("/a/..%2F"), Ok("/a/..%2F"), Ok("/")],
        ),
        (
            "/%5c%25",
            [Ok("/%5c%25"), Ok("/%5c%25"), Ok("/%5c%25"), Ok("/%25")],
        ),
        (
            "/x/%2E%2e/z%2f%2Fabc%5C../def",
            [
                Ok("/x/%2E%2e/z%2f%2Fabc%5C../def"),
                Ok("/z%2f%2Fabc%5C../def"),
                Ok("/z%2f%2Fabc%5C../def"),
                Ok("/z/def"),
            ],
        ),
        // A raw backslash is a separator in every normalising mode.
        (
            "/admin\\..\\secret",
            [
                Ok("/admin\\..\\secret"),
                Ok("/secret"),
                Ok("/secret"),
                Ok("/secret"),
            ],
        ),
        ("/a\\b", [Ok("/a\\b"), Ok("/a/b"), Ok("/a/b"), Ok("/a/b")]),
        ("\\a", [Err(PathError::NotOriginForm); 4]),
        ("/\\a", [Ok("/\\a"), Ok("//a"), Ok("/a"), Ok("/a")]),
        // Decoding happens once.
        ("/%252e/admin", [Ok("/%252e/admin"); 4]),
        ("/%252e%252e/admin", [Ok("/%252e%252e/admin"); 4]),
        ("/a%252Fb", [Ok("/a%252Fb"); 4]),
        // An invalid `%` that decoding would complete into an escape.
        (
            "/%%32%65",
            [Ok("/%%32%65"), Ok("/%252e"), Ok("/%252e"), Ok("/%252e")],
        ),
        (
            "/%%30%30",
            [Ok("/%%30%30"), Ok("/%2500"), Ok("/%2500"), Ok("/%2500")],
        ),
        (
            "/%%61b",
            [Ok("/%%61b"), Ok("/%25ab"), Ok("/%25ab"), Ok("/%25ab")],
        ),
        (
            "/%a%62",
            [Ok("/%a%62"), Ok("/%25ab"), Ok("/%25ab"), Ok("/%25ab")],
        ),
        (
            "/%%32F",
            [Ok("/%%32F"), Ok("/%252F"), Ok("/%252F"), Ok("/%252F")],
        ),
        // Query and fragment.
        (
            "/a/../b?x=/../y",
            [
                Ok("/a/../b?x=/../y"),
                Ok("/b?x=/../y"),
                Ok("/b?x=/../y"),
                Ok("/b?x=/../y"),
            ],
        ),
        (
            "/a//b?x=//y",
            [
                Ok("/a//b?x=//y"),
                Ok("/a//b?x=//y"),
                Ok("/a/b?x=//y"),
                Ok("/a/b?x=//y"),
            ],
        ),
        (
            "/a%2Fb?c=%2F%61",
            [
                Ok("/a%2Fb?c=%2F%61"),
                Ok("/a%2Fb?c=%2F%61"),
                Ok("/a%2Fb?c=%2F%61"),
                Ok("/a/b?c=%2F%61"),
            ],
        ),
        ("/a/.?", [Ok("/a/.?"), Ok("/a/?"), Ok("/a/?"), Ok("/a/?")]),
        ("/?", [Ok("/?"); 4]),
        ("/a#b", [Err(PathError::Fragment); 4]),
        ("/a?x#y", [Err(PathError::Fragment); 4]),
        // Reserved characters other than slashes stay encoded, case kept.
        ("/a%3Fb", [Ok("/a%3Fb"); 4]),
        ("/a%3fb%23c%2B", [Ok("/a%3fb%23c%2B"); 4]),
        ("/%c0%af", [Ok("/%c0%af"); 4]),
        // Invalid escapes pass through; %00 and NUL are refused.
        ("/a%zz", [Ok("/a%zz"); 4]),
        ("/a%4", [Ok("/a%4"); 4]),
        ("/a%", [Ok("/a%"); 4]),
        ("/%4g/x", [Ok("/%4g/x"); 4]),
        (
            "/a%00b",
            [
                Ok("/a%00b"),
                Err(PathError::Nul),
                Err(PathError::Nul),
                Err(PathError::Nul),
            ],
        ),
        (
            "/xyz/.%00../abc",
            [
                Ok("/xyz/.%00../abc"),
                Err(PathError::Nul),
                Err(PathError::Nul),
                Err(PathError::Nul),
            ],
        ),
        (
            "/a\0b",
            [
                Ok("/a\0b"),
                Err(PathError::Nul),
                Err(PathError::Nul),
                Err(PathError::Nul),
            ],
        ),
        // Characters Chromium percent-encodes.
        (
            "/a b",
            [Ok("/a b"), Ok("/a%20b"), Ok("/a%20b"), Ok("/a%20b")],
        ),
        (
            "/a\"<>^`{|}",
            [
                Ok("/a\"<>^`{|}"),
                Ok("/a%22%3C%3E%5E%60%7B%7C%7D"),
                Ok("/a%22%3C%3E%5E%60%7B%7C%7D"),
                Ok("/a%22%3C%3E%5E%60%7B%7C%7D"),
            ],
        ),
        (
            "/caf\u{e9}",
            [
                Ok("/caf\u{e9}"),
                Ok("/caf%C3%A9"),
                Ok("/caf%C3%A9"),
                Ok("/caf%C3%A9"),
            ],
        ),
        (
            "/a\tb\u{7f}",
            [
                Ok("/a\tb\u{7f}"),
                Ok("/a%09b%7F"),
                Ok("/a%09b%7F"),
                Ok("/a%09b%7F"),
            ],
        ),
        // Dot segments with parameters (Envoy's `.;`/`..;` rule).
        (
            "/xyz/..;foo=bar/abc",
            [
                Ok("/xyz/..;foo=bar/abc"),
                Ok("/abc"),
                Ok("/abc"),
                Ok("/abc"),
            ],
        ),
        (
            "/..;/admin",
            [Ok("/..;/admin"), Ok("/admin"), Ok("/admin"), Ok("/admin")],
        ),
        (
            "/xyz/.;foo=bar",
            [Ok("/xyz/.;foo=bar"), Ok("/xyz/"), Ok("/xyz/"), Ok("/xyz/")],
        ),
        (
            "/xyz/..;foo=bar/.;fff=zzz?blah=woops",
            [
                Ok("/xyz/..;foo=bar/.;fff=zzz?blah=woops"),
                Ok("/?blah=woops"),
                Ok("/?blah=woops"),
                Ok("/?blah=woops"),
            ],
        ),
        (
            "/a/%2e%2e;x/b",
            [Ok("/a/%2e%2e;x/b"), Ok("/b"), Ok("/b"), Ok("/b")],
        ),
        (
            "/a/..;x%2Fb/c",
            [Ok("/a/..;x%2Fb/c"), Ok("/c"), Ok("/c"), Ok("/b/c")],
        ),
        ("/xyz/...;foo", [Ok("/xyz/...;foo"); 4]),
        ("/xyz/..foo", [Ok("/xyz/..foo"); 4]),
        ("/a;x/../b", [Ok("/a;x/../b"), Ok("/b"), Ok("/b"), Ok("/b")]),
        // Names that only look like dot segments.
        ("/.well-known/x", [Ok("/.well-known/x"); 4]),
        ("/a/.../b", [Ok("/a/.../b"); 4]),
        (
            "/a/..%41",
            [Ok("/a/..%41"), Ok("/a/..A"), Ok("/a/..A"), Ok("/a/..A")],
        ),
        ("/a.b/c..", [Ok("/a.b/c.."); 4]),
        // Slashes merge after dot segments are resolved, as in Envoy.
        (
            "/a//../b",
            [Ok("/a//../b"), Ok("/a/b"), Ok("/a/b"), Ok("/a/b")],
        ),
        ("//", [Ok("//"), Ok("//"), Ok("/"), Ok("/")]),
        (
            "/a///b//",
            [Ok("/a///b//"), Ok("/a///b//"), Ok("/a/b/"), Ok("/a/b/")],
        ),
        // Request-target forms.
        ("*", [Ok("*"); 4]),
        ("/", [Ok("/"); 4]),
        ("", [Err(PathError::NotOriginForm); 4]),
        ("a/b", [Err(PathError::NotOriginForm); 4]),
        ("?x", [Err(PathError::NotOriginForm); 4]),
        ("http://h/a", [Err(PathError::NotOriginForm); 4]),
        ("/A/B/C", [Ok("/A/B/C"); 4]),
    ];

    #[test]
    fn table() {
        let mut failures = Vec::new();
        for (input, wants) in TABLE {
            for (mode, want) in MODES.iter().zip(wants) {
                let got = normalize(input, *mode);
                if got.as_deref().map_err(|e| *e) != *want {
                    failures.push(format!("{input:?} {mode:?}: got {got:?}, want {want:?}"));
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn unchanged_paths_are_borrowed() {
        for input in [
            "/",
            "/api/v1/users",
            "/api/v1/users?x=1&y=/../z",
            "/a%20b",
            "/.well-known/x",
            "*",
        ] {
            for mode in MODES {
                let got = normalize(input, mode);
                assert!(
                    matches!(got, Ok(Cow::Borrowed(s)) if s == input),
                    "{input:?} {mode:?}: {got:?}"
                );
            }
        }
        // An escaped slash is kept unless the mode decodes it.
        for mode in [Base, MergeSlashes] {
            assert!(matches!(
                normalize("/a%2Fb", mode),
                Ok(Cow::Borrowed("/a%2Fb"))
            ));
        }
        assert_eq!(normalize("/a%2Fb", DecodeAndMergeSlashes).unwrap(), "/a/b");
        // A result that is a prefix of the input is borrowed too.
        assert!(matches!(normalize("/a/.", Base), Ok(Cow::Borrowed("/a/"))));
        assert!(matches!(
            normalize("/a/b/..", Base),
            Ok(Cow::Borrowed("/a/"))
        ));
    }

    #[test]
    fn mode_names() {
        let parse = |s: &str| serde_json::from_str::<PathNormalization>(&format!("{s:?}")).ok();
        assert_eq!(parse("NONE"), Some(Keep));
        assert_eq!(parse("BASE"), Some(Base));
        assert_eq!(parse("DEFAULT"), Some(Base));
        assert_eq!(parse("MERGE_SLASHES"), Some(MergeSlashes));
        assert_eq!(
            parse("DECODE_AND_MERGE_SLASHES"),
            Some(DecodeAndMergeSlashes)
        );
        assert_eq!(parse("base"), None);
        assert_eq!(PathNormalization::default(), Base);
        assert_eq!(
            serde_json::to_string(&DecodeAndMergeSlashes)
                .ok()
                .as_deref(),
            Some("\"DECODE_AND_MERGE_SLASHES\"")
        );
    }

    /// What every `Ok` result must satisfy in a normalising mode.
    fn check_invariants(input: &str, mode: PathNormalization, out: &str) {
        if out == "*" {
            assert_eq!(input, "*");
            return;
        }
        fn split(s: &str) -> (&str, &str) {
            s.split_at(s.find('?').unwrap_or(s.len()))
        }
        let (path, query) = split(out);
        assert_eq!(query, split(input).1, "{input:?} {mode:?}: query changed");
        assert!(path.starts_with('/'), "{input:?} {mode:?}: {out:?}");
        assert!(!out.contains('#'));
        if mode == Keep {
            assert_eq!(out, input);
            return;
        }
        assert!(
            path.is_ascii() && !path.contains('\\'),
            "{input:?} {mode:?}: {out:?}"
        );
        for seg in path.split('/').skip(1) {
            assert!(
                seg != "." && seg != "..",
                "{input:?} {mode:?}: dot segment in {out:?}"
            );
            assert!(
                !seg.starts_with(".;") && !seg.starts_with("..;"),
                "{input:?} {mode:?}: {out:?}"
            );
        }
        let p = path.as_bytes();
        for i in 0..p.len() {
            if let Some(v) = escape_at(p, i) {
                assert!(
                    !is_unreserved(v) && v != 0,
                    "{input:?} {mode:?}: decodable escape in {out:?}"
                );
                if mode.decodes_slashes() {
                    assert!(
                        v != b'/' && v != b'\\',
                        "{input:?} {mode:?}: escaped slash in {out:?}"
                    );
                }
            }
        }
        if mode.merges_slashes() {
            assert!(!path.contains("//"), "{input:?} {mode:?}: {out:?}");
        }
    }

    /// Never panics; `Ok` results satisfy the invariants and are fixed points
    /// (normalising again returns them, borrowed).
    #[test]
    fn arbitrary_input_is_safe_and_idempotent() {
        const ALPHABETS: [&[u8]; 2] = [b"/.%2eEfF5cC?#az\\", b"/.%2e;0346fF5cC? a~\\\x00\xc3"];
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut ok = 0;
        for round in 0..6000 {
            let alphabet = ALPHABETS[round % ALPHABETS.len()];
            let len = (next() % 20) as usize;
            let mut bytes = Vec::with_capacity(len + 1);
            if next() % 8 != 0 {
                bytes.push(b'/');
            }
            for _ in 0..len {
                bytes.push(alphabet[(next() % alphabet.len() as u64) as usize]);
            }
            let input = String::from_utf8_lossy(&bytes).into_owned();
            for mode in MODES {
                let Ok(out) = normalize(&input, mode) else {
                    continue;
                };
                ok += 1;
                check_invariants(&input, mode, &out);
                let again = normalize(&out, mode);
                assert!(
                    matches!(&again, Ok(Cow::Borrowed(s)) if *s == out),
                    "{input:?} {mode:?}: {out:?} then {again:?}"
                );
            }
        }
        assert!(ok > 10_000, "too few Ok results ({ok}) to mean anything");
    }
}
