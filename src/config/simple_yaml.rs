//! The everyday subset of YAML, read without the general parser.
//!
//! What `kubectl`, Helm and most hand-written Istio resources contain is
//! block mappings and sequences of plain or simply quoted scalars. This
//! module reads exactly that subset several times faster than the
//! general YAML parser, which matters for a configuration of tens of
//! thousands of documents.
//!
//! It is a strict subset, and only ever a shortcut: [`read`] gives `None`
//! for anything it does not recognise with certainty (anchors, tags, flow
//! mappings other than `{}`, flow sequences other than one line of
//! scalars, block scalars, escapes, nulls, numbers other than plain
//! decimal integers, words YAML 1.1 reads as booleans, a `#` that might
//! sit inside quotes, tabs, non-ASCII text, repeated keys, documents past
//! its size, depth and node limits, which sit well inside the general
//! parser's budget), and the deserializer refuses every
//! mismatch of type instead of converting. The caller then reads the
//! document with the general parser, so a document is only ever read here
//! when the general parser would read it the same way. The tests hold
//! this module to that on every document they can find and on a list of
//! YAML's traps.

use std::fmt;

use serde::de::value::BorrowedStrDeserializer;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Past these the general parser reads the document (and applies its
/// budget).
const MAX_BYTES: usize = 1 << 20;
const MAX_DEPTH: usize = 32;
const MAX_NODES: usize = 100_000;
const MAX_KEY_LEN: usize = 256;
/// Repeated keys are checked pairwise; larger mappings go to the general
/// parser.
const MAX_MAP_LEN: usize = 64;

/// One node of a document in the subset.
#[derive(Debug, PartialEq)]
pub(super) enum Node<'a> {
    Str(&'a str),
    /// Plain decimal digits without a leading zero, at most 19 of them.
    Int(&'a str),
    Bool(bool),
    Map(Vec<(&'a str, Node<'a>)>),
    Seq(Vec<Node<'a>>),
}

/// Reads `text` when it lies in the subset, or `None`.
pub(super) fn read(text: &str) -> Option<Node<'_>> {
    if text.len() > MAX_BYTES {
        return None;
    }
    let mut lines = Vec::new();
    for line in text.split('\n') {
        // Printable ASCII only: no tabs, carriage returns, control or
        // non-ASCII characters.
        if !line.bytes().all(|b| (0x20..0x7f).contains(&b)) {
            return None;
        }
        let content = line.trim_start_matches(' ');
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        let content = strip_comment(content)?;
        if indent == 0 && (content.starts_with("---") || content.starts_with("...")) {
            return None;
        }
        lines.push(Line {
            indent,
            content: content.trim_end_matches(' '),
        });
    }
    let first = lines.first()?;
    if first.indent != 0 || is_item(first.content) {
        return None;
    }
    let mut reader = Reader {
        lines,
        pos: 0,
        nodes: 0,
    };
    let node = reader.map(0, 0)?;
    (reader.pos == reader.lines.len()).then_some(node)
}

#[derive(Clone, Copy)]
struct Line<'a> {
    indent: usize,
    content: &'a str,
}

struct Reader<'a> {
    lines: Vec<Line<'a>>,
    pos: usize,
    nodes: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<Line<'a>> {
        self.lines.get(self.pos).copied()
    }

    fn count(&mut self) -> Option<()> {
        self.nodes += 1;
        (self.nodes <= MAX_NODES).then_some(())
    }

    /// A scalar (or a one-line flow sequence), counted.
    fn scalar(&mut self, text: &'a str) -> Option<Node<'a>> {
        let node = scalar(text)?;
        self.nodes += match &node {
            Node::Seq(items) => 1 + items.len(),
            _ => 1,
        };
        (self.nodes <= MAX_NODES).then_some(node)
    }

    /// The block mapping whose keys sit at `indent`.
    fn map(&mut self, indent: usize, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.count()?;
        let mut entries: Vec<(&'a str, Node<'a>)> = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent < indent {
                break;
            }
            if line.indent > indent || is_item(line.content) {
                return None;
            }
            let (key, rest) = split_key(line.content)?;
            if entries.len() >= MAX_MAP_LEN || entries.iter().any(|(k, _)| *k == key) {
                return None;
            }
            self.pos += 1;
            let value = if rest.is_empty() {
                match self.peek() {
                    Some(next) if next.indent > indent => self.block(next.indent, depth + 1)?,
                    // A sequence may sit at its key's own indentation.
                    Some(next) if next.indent == indent && is_item(next.content) => {
                        self.seq(indent, depth + 1)?
                    }
                    // An empty value is null.
                    _ => return None,
                }
            } else {
                self.scalar(rest)?
            };
            // Anything indented further here would continue a scalar over
            // lines or be malformed.
            if self.peek().is_some_and(|next| next.indent > indent) {
                return None;
            }
            entries.push((key, value));
        }
        Some(Node::Map(entries))
    }

    /// The block sequence whose `-` sit at `indent`.
    fn seq(&mut self, indent: usize, depth: usize) -> Option<Node<'a>> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.count()?;
        let mut items = Vec::new();
        while let Some(line) = self.peek() {
            if line.indent != indent || !is_item(line.content) {
                break;
            }
            // `- ` then the item; an item starting on the next line is left
            // to the general parser.
            let after = line.content.get(1..)?;
            let rest = after.trim_start_matches(' ');
            if rest.is_empty() || is_item(rest) {
                return None;
            }
            let column = indent + 1 + (after.len() - rest.len());
            if split_key(rest).is_some() {
                // A compact mapping: its first key on the `-` line, the
                // others below it at the same column.
                self.lines[self.pos] = Line {
                    indent: column,
                    content: rest,
                };
                items.push(self.map(column, depth + 1)?);
            } else if looks_like_key(rest) {
                return None;
            } else {
                self.pos += 1;
                items.push(self.scalar(rest)?);
            }
            if self.peek().is_some_and(|next| next.indent > indent) {
                return None;
            }
        }
        Some(Node::Seq(items))
    }

    /// The block collection starting on the current line at `indent`.
    fn block(&mut self, indent: usize, depth: usize) -> Option<Node<'a>> {
        let line = self.peek()?;
        if is_item(line.content) {
            self.seq(indent, depth)
        } else if split_key(line.content).is_some() {
            self.map(indent, depth)
        } else {
            // A scalar on its own line.
            None
        }
    }
}

/// A line's content without a comment after it: the first `#`, after a
/// space and outside quotes (an even number of each quote before it).
fn strip_comment(content: &str) -> Option<&str> {
    let Some(at) = content.find('#') else {
        return Some(content);
    };
    let before = &content[..at];
    let even = |quote| before.matches(quote).count() % 2 == 0;
    (before.ends_with(' ') && even('"') && even('\'')).then_some(before)
}

/// Whether a line's content starts a sequence item.
fn is_item(content: &str) -> bool {
    content == "-" || content.starts_with("- ")
}

/// Whether a `:` followed by a space or the end of the line appears at
/// all (a key this module cannot read, or a malformed scalar).
fn looks_like_key(content: &str) -> bool {
    content.contains(": ") || content.ends_with(':')
}

/// `key: rest` or `key:` with a plain key this module reads as a string.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let (key, rest) = match content.find(": ") {
        Some(at) => (&content[..at], content[at + 2..].trim_start_matches(' ')),
        None => (content.strip_suffix(':')?, ""),
    };
    let first = key.bytes().next()?;
    let plain = key.len() <= MAX_KEY_LEN
        && (first.is_ascii_alphabetic() || first == b'_')
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'/'))
        && !reserved(key);
    plain.then_some((key, rest))
}

/// Words some YAML schema reads as something other than a string.
fn reserved(word: &str) -> bool {
    const WORDS: [&str; 12] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "nan", "inf", "infinity",
    ];
    WORDS.iter().any(|w| w.eq_ignore_ascii_case(word))
}

/// A scalar (or `{}` / `[]`) after `key: ` or `- `.
fn scalar(text: &str) -> Option<Node<'_>> {
    match text {
        "{}" => return Some(Node::Map(Vec::new())),
        "[]" => return Some(Node::Seq(Vec::new())),
        "true" => return Some(Node::Bool(true)),
        "false" => return Some(Node::Bool(false)),
        _ => {}
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        // A flow sequence of scalars on one line, none holding a `,`, `:`
        // or brackets.
        return inner
            .split(',')
            .map(|item| {
                let item = item.trim_matches(' ');
                if item.contains([':', '[', ']', '{', '}']) {
                    return None;
                }
                scalar(item)
            })
            .collect::<Option<Vec<_>>>()
            .map(Node::Seq);
    }
    if let Some(inner) = quoted(text, b'"') {
        return (!inner.contains(['"', '\\'])).then_some(Node::Str(inner));
    }
    if let Some(inner) = quoted(text, b'\'') {
        return (!inner.contains('\'')).then_some(Node::Str(inner));
    }
    let bytes = text.as_bytes();
    let first = *bytes.first()?;
    if first.is_ascii_digit() {
        if bytes.iter().all(u8::is_ascii_digit) {
            let decimal = (first != b'0' || bytes.len() == 1) && bytes.len() <= 19;
            return decimal.then_some(Node::Int(text));
        }
        return (ipv4(text) || duration(text)).then_some(Node::Str(text));
    }
    let plain = (first.is_ascii_alphabetic() || first == b'_' || first == b'/')
        && bytes.iter().all(|&b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'.' | b'-' | b'/' | b':' | b'@' | b'=' | b'+' | b'*' | b' '
                )
        })
        && !looks_like_key(text)
        && !reserved(text);
    plain.then_some(Node::Str(text))
}

/// The text between matching quotes, on one line.
fn quoted(text: &str, quote: u8) -> Option<&str> {
    let bytes = text.as_bytes();
    (bytes.len() >= 2 && bytes[0] == quote && bytes[bytes.len() - 1] == quote)
        .then(|| &text[1..text.len() - 1])
}

/// Four dotted groups of digits, which no YAML schema reads as a number.
fn ipv4(text: &str) -> bool {
    let mut groups = 0;
    for group in text.split('.') {
        if group.is_empty() || group.len() > 3 || !group.bytes().all(|b| b.is_ascii_digit()) {
            return false;
        }
        groups += 1;
    }
    groups == 4
}

/// Digits then a duration unit, as Istio writes durations (`10s`, `1.5m`,
/// `100ms`).
fn duration(text: &str) -> bool {
    let number_end = text
        .bytes()
        .position(|b| !(b.is_ascii_digit() || b == b'.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(number_end);
    let number_ok = match number.split_once('.') {
        None => true,
        Some((whole, frac)) => !whole.is_empty() && !frac.is_empty() && !frac.contains('.'),
    };
    number_ok && matches!(unit, "ns" | "us" | "ms" | "s" | "m" | "h" | "d")
}

/// Any failure: the document goes to the general parser, which gives the
/// message.
#[derive(Debug)]
pub(super) struct Miss;

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not in the simple subset")
    }
}

impl std::error::Error for Miss {}

impl de::Error for Miss {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Miss
    }
}

/// Deserializes a [`Node`], refusing any conversion between types.
pub(super) struct NodeDeserializer<'n, 'a>(pub(super) &'n Node<'a>);

impl<'de, 'n> Deserializer<'de> for NodeDeserializer<'n, 'de> {
    type Error = Miss;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Miss> {
        match self.0 {
            Node::Str(s) => visitor.visit_borrowed_str(s),
            Node::Int(s) => visitor.visit_u64(s.parse().map_err(|_| Miss)?),
            Node::Bool(b) => visitor.visit_bool(*b),
            Node::Map(entries) => visitor.visit_map(Entries {
                entries: entries.iter(),
                value: None,
            }),
            Node::Seq(items) => visitor.visit_seq(Items(items.iter())),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Miss> {
        // The subset has no null.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Miss> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Miss> {
        // Unit variants written as strings; anything else is left to the
        // general parser.
        match self.0 {
            Node::Str(s) => visitor.visit_enum(BorrowedStrDeserializer::new(s)),
            _ => Err(Miss),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Miss> {
        visitor.visit_unit()
    }

    // Floats and characters are left to the general parser rather than
    // converted from what the subset holds.
    fn deserialize_f32<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Miss> {
        Err(Miss)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Miss> {
        Err(Miss)
    }

    fn deserialize_char<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Miss> {
        Err(Miss)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 str string
        bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier
    }
}

struct Entries<'n, 'a> {
    entries: std::slice::Iter<'n, (&'a str, Node<'a>)>,
    value: Option<&'n Node<'a>>,
}

impl<'de, 'n> MapAccess<'de> for Entries<'n, 'de> {
    type Error = Miss;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Miss> {
        let Some((key, value)) = self.entries.next() else {
            return Ok(None);
        };
        self.value = Some(value);
        seed.deserialize(BorrowedStrDeserializer::new(key))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Miss> {
        let value = self.value.take().ok_or(Miss)?;
        seed.deserialize(NodeDeserializer(value))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct Items<'n, 'a>(std::slice::Iter<'n, Node<'a>>);

impl<'de, 'n> SeqAccess<'de> for Items<'n, 'de> {
    type Error = Miss;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Miss> {
        self.0
            .next()
            .map(|item| seed.deserialize(NodeDeserializer(item)))
            .transpose()
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.0.len())
    }
}

#[cfg(test)]
mod tests;
