//! `--workload-labels`: this proxy's own labels, given as `k=v,k2=v2` or as
//! the path of the labels file the Kubernetes downward API writes for the
//! pod (a `downwardAPI` volume item with `fieldRef: metadata.labels`).
//!
//! The downward API writes one `key="value"` line per label, sorted, the
//! value quoted as Go's `%q` quotes it (Kubernetes' `fieldpath.FormatMap`):
//! `\"`, `\\`, `\n`, `\t`, ..., `\xNN`, `\uNNNN`, `\UNNNNNNNN`. A line whose
//! value is not quoted is taken as written, for files made by hand.
//!
//! Pure but for reading the file; no dependency on `plan`.

use std::collections::BTreeMap;
use std::path::Path;

/// Label key → value.
pub type Labels = BTreeMap<String, String>;

/// A `--workload-labels` value: when it names a file, the labels in it;
/// else `k=v` pairs separated by commas. Errors name the file and line.
pub fn parse_flag(value: &str) -> Result<Labels, String> {
    let path = Path::new(value);
    if path.is_file() {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{value}: cannot read the labels file: {e}"))?;
        return parse_file(&text).map_err(|(line, why)| format!("{value}:{line}: {why}"));
    }
    parse_pairs(value).map_err(|why| {
        if value.contains('=') {
            why
        } else {
            format!("{why}; {value:?} is not a readable file either")
        }
    })
}

/// `k=v,k2=v2` (spaces around either side are trimmed; a value may be
/// empty). An empty string is no labels: every selector but the empty one
/// fails to match.
pub fn parse_pairs(s: &str) -> Result<Labels, String> {
    let mut out = Labels::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!(
                "{pair:?}: expected key=value pairs separated by commas (app=web,version=v1)"
            ));
        };
        insert(&mut out, k.trim(), v.trim().to_string())?;
    }
    Ok(out)
}

/// The downward API's labels file; an error is `(line, reason)`.
pub fn parse_file(text: &str) -> Result<Labels, (usize, String)> {
    let mut out = Labels::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |why: String| (i + 1, why);
        let Some((k, v)) = line.split_once('=') else {
            return Err(at(format!("{line:?}: expected key=\"value\"")));
        };
        let value = if v.starts_with('"') {
            unquote(v).map_err(|why| at(format!("label {k:?}: {why}")))?
        } else {
            v.to_string()
        };
        insert(&mut out, k, value).map_err(at)?;
    }
    Ok(out)
}

fn insert(out: &mut Labels, key: &str, value: String) -> Result<(), String> {
    if key.is_empty() || key.contains(char::is_whitespace) || key.contains('"') {
        return Err(format!("{key:?} is not a label key"));
    }
    if out.insert(key.to_string(), value).is_some() {
        return Err(format!("label {key:?} is given twice"));
    }
    Ok(())
}

/// A Go interpreted string literal (what `%q` writes), quotes included.
fn unquote(s: &str) -> Result<String, String> {
    let body = s.strip_prefix('"').ok_or("expected a quoted value")?;
    let mut bytes: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    loop {
        let Some(c) = chars.next() else {
            return Err("the quoted value has no closing quote".into());
        };
        match c {
            '"' => break,
            '\\' => escape(&mut chars, &mut bytes)?,
            c => bytes.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
        }
    }
    let rest = chars.as_str();
    if !rest.is_empty() {
        return Err(format!("{rest:?} after the closing quote"));
    }
    String::from_utf8(bytes).map_err(|_| "the value is not UTF-8".into())
}

/// One escape after `\`: its bytes appended to `out`.
fn escape(chars: &mut std::str::Chars<'_>, out: &mut Vec<u8>) -> Result<(), String> {
    let c = chars.next().ok_or("a lone \\ at the end")?;
    let simple = match c {
        'a' => Some(0x07),
        'b' => Some(0x08),
        'f' => Some(0x0c),
        'n' => Some(b'\n'),
        'r' => Some(b'\r'),
        't' => Some(b'\t'),
        'v' => Some(0x0b),
        '\\' => Some(b'\\'),
        '"' => Some(b'"'),
        _ => None,
    };
    if let Some(b) = simple {
        out.push(b);
        return Ok(());
    }
    match c {
        // A byte: Go writes bytes that are not valid UTF-8 this way.
        'x' => out.push(u8::try_from(hex(chars, 2)?).map_err(|e| e.to_string())?),
        'u' | 'U' => {
            let code = hex(chars, if c == 'u' { 4 } else { 8 })?;
            let ch = char::from_u32(code).ok_or(format!("\\{c}{code:x} is not a character"))?;
            out.extend_from_slice(ch.encode_utf8(&mut [0; 4]).as_bytes());
        }
        '0'..='7' => {
            let rest: String = chars.by_ref().take(2).collect();
            let digits = format!("{c}{rest}");
            let byte = (digits.len() == 3)
                .then(|| u8::from_str_radix(&digits, 8).ok())
                .flatten()
                .ok_or(format!(
                    "\\{digits}: expected three octal digits up to \\377"
                ))?;
            out.push(byte);
        }
        other => return Err(format!("\\{other} is not an escape")),
    }
    Ok(())
}

/// `n` hexadecimal digits of an escape.
fn hex(chars: &mut std::str::Chars<'_>, n: usize) -> Result<u32, String> {
    let digits: String = chars.by_ref().take(n).collect();
    if digits.len() != n || !digits.chars().all(|d| d.is_ascii_hexdigit()) {
        return Err(format!("\\{digits}: expected {n} hexadecimal digits"));
    }
    u32::from_str_radix(&digits, 16).map_err(|e| e.to_string())
}
