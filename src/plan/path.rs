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
mod tests;
