//! Architecture rules checked as tests.
//!
//! **No import cycles between files.** Every `src/**/*.rs` file is read and a
//! file-level dependency graph is built: file A depends on file B when A
//! names an item through a path that resolves into B. The test fails when
//! the graph has a cycle outside [`KNOWN_CYCLE_FILES`]: for each group of
//! files that reach each other it lists cycles as chains of files (the
//! shortest through each file of the group), with the line and path behind
//! every step.
//!
//! How a path is resolved (a deliberately small model of Rust's name
//! resolution, enough for this crate's 2018-style layout):
//!
//! * `crate::a::b::Item`, `super::X`, `super::super::X`, `self::X`, paths
//!   starting at a child module (`child::X`) or at a name brought in by a
//!   `use` (`use crate::plan; plan::host::normalize(..)`), and paths through
//!   `use super::*` globs (where a file's own items shadow what the glob
//!   brings), are all turned into an absolute module path; `meshgate::…`
//!   (the package's own library, as `src/main.rs` names it) too. Paths into
//!   other crates (`std::`, `tokio::`, `::x`) are ignored.
//! * The absolute path lands in the file of its *longest prefix that is a
//!   module*: `crate::a::b::Item` is in `src/a/b.rs` when that file exists,
//!   otherwise in `src/a.rs`. Inline modules (`mod secs { … }`) belong to the
//!   file that contains them.
//! * Both `use` declarations (including `pub use` re-exports and grouped
//!   `use crate::{a::X, b::{Y, Z}}` / `use super::{self, foo}` trees) and
//!   fully qualified paths in code (`crate::plan::host::normalize(x)`) count.
//!   A `mod child;` declaration is *not* an edge.
//! * Comments, doc comments, string/char literals and attribute contents are
//!   skipped.
//! * Test code is left out, since tests may import freely: files under any
//!   `tests/` directory in `src/`, files declared with `#[cfg(test)] mod x;`,
//!   inline `mod tests { … }` blocks and any other `#[cfg(test)]` item.
//!
//! The resolver is exercised on small synthetic crates in the `checker`
//! module at the bottom of this file, including a graph that has a cycle.
//!
//! Run with `cargo test --test architecture`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::path::Path;

/// Files allowed, for now, to be part of an import cycle (paths such as
/// `"src/runtime.rs"`), so that a cycle that cannot be removed yet does not
/// hide new ones. A cycle passes only when every file in it is listed.
///
/// The list only shrinks: the test also fails when a listed file is no longer
/// in any cycle (then delete the entry). The goal is to keep it empty.
///
/// Empty today. When this test was written there were two groups of cycles:
/// one in `src/plan/` (removed together with this test: shared types moved
/// to leaf modules, each `compile` step moved below the types it builds) and
/// one through `src/runtime.rs`, `src/runtime/{forward, inbound,
/// inbound_http, outbound, upstream, workers}.rs`, `src/app.rs`,
/// `src/admin.rs` and `src/watch.rs` (removed by the runtime restructure that
/// split `State` and the load pipeline out of `runtime.rs` and `app.rs`).
const KNOWN_CYCLE_FILES: &[&str] = &[];

#[test]
fn no_import_cycles_between_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = read_sources(&root.join("src"));
    assert!(
        sources.iter().any(|(path, _)| path == "lib.rs"),
        "src/lib.rs not found; is the checker looking in the right place?"
    );
    let graph = Graph::build(&sources, env!("CARGO_PKG_NAME"));
    assert!(
        graph.files.len() > 10 && !graph.edges.is_empty(),
        "suspiciously small graph: {} files, {} edges",
        graph.files.len(),
        graph.edges.len()
    );

    let known: BTreeSet<String> = KNOWN_CYCLE_FILES.iter().map(|f| f.to_string()).collect();
    let components = graph.cyclic_components();
    let in_cycle: BTreeSet<String> = components
        .iter()
        .flatten()
        .map(|f| format!("src/{f}"))
        .collect();

    let mut report = String::new();
    for component in &components {
        let unknown: Vec<&String> = component
            .iter()
            .filter(|f| !known.contains(&format!("src/{f}")))
            .collect();
        if unknown.is_empty() {
            continue;
        }
        let listed: Vec<String> = unknown.iter().map(|f| format!("src/{f}")).collect();
        let _ = writeln!(
            report,
            "\nfiles in a cycle (not in KNOWN_CYCLE_FILES): {}",
            listed.join(", ")
        );
        for cycle in graph.cycles_through(component) {
            report.push_str(&graph.describe_cycle(&cycle));
        }
    }
    let stale: Vec<&String> = known.difference(&in_cycle).collect();
    if !stale.is_empty() {
        let _ = writeln!(
            report,
            "\nKNOWN_CYCLE_FILES lists files that are no longer in any cycle; remove them: {stale:?}"
        );
    }
    assert!(
        report.is_empty(),
        "import cycles between files (each file uses the next; see KNOWN_CYCLE_FILES in \
         tests/architecture.rs):\n{report}"
    );
}

/// Every `.rs` file under `src`, as (path relative to `src` with `/`
/// separators, contents), sorted by path.
fn read_sources(src: &Path) -> Vec<(String, String)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            let rel_path = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if path.is_dir() {
                walk(&path, &rel_path, out);
            } else if name.ends_with(".rs") {
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
                out.push((rel_path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(src, "", &mut out);
    out
}

// ---------------------------------------------------------------------------
// Lexer: identifiers, `::` and single punctuation; comments and literals are
// dropped (a literal leaves a `Lit` so neighbouring tokens stay apart).

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
    Lit,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    // Skips a quoted literal whose opening quote is at `i`; returns the index
    // after the closing quote. `raw_hashes` is `Some(n)` for raw strings.
    let skip_quoted =
        |mut i: usize, quote: char, raw_hashes: Option<usize>, line: &mut usize| -> usize {
            i += 1;
            while i < c.len() {
                let ch = c[i];
                if ch == '\n' {
                    *line += 1;
                }
                match raw_hashes {
                    None if ch == '\\' => {
                        if at(i + 1) == '\n' {
                            *line += 1;
                        }
                        i += 2;
                        continue;
                    }
                    None if ch == quote => return i + 1,
                    Some(n) if ch == quote && (1..=n).all(|k| at(i + k) == '#') => {
                        return i + 1 + n;
                    }
                    _ => {}
                }
                i += 1;
            }
            i
        };
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_quoted(i, '"', None, &mut line);
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                i = skip_quoted(i, '\'', None, &mut line);
                out.push(Token {
                    tok: Tok::Lit,
                    line,
                });
            } else if at(i + 2) == '\'' {
                i += 3;
                out.push(Token {
                    tok: Tok::Lit,
                    line,
                });
            } else {
                // A lifetime or label: drop the quote and its name.
                i += 1;
                while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                    i += 1;
                }
            }
        } else if ch.is_alphabetic() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let next = at(i);
            let hashes = (0..).take_while(|&k| at(i + k) == '#').count();
            match (word.as_str(), next) {
                ("r" | "br" | "cr", '"' | '#') if at(i + hashes) == '"' => {
                    i = skip_quoted(i + hashes, '"', Some(hashes), &mut line);
                    out.push(Token {
                        tok: Tok::Lit,
                        line,
                    });
                }
                ("r", '#') if hashes == 1 && (at(i + 1).is_alphabetic() || at(i + 1) == '_') => {
                    // A raw identifier: `r#type`.
                    let start = i + 1;
                    i = start;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push(Token {
                        tok: Tok::Ident(c[start..i].iter().collect()),
                        line,
                    });
                }
                ("b" | "c", '"') => {
                    i = skip_quoted(i, '"', None, &mut line);
                    out.push(Token {
                        tok: Tok::Lit,
                        line,
                    });
                }
                ("b", '\'') => {
                    i = skip_quoted(i, '\'', None, &mut line);
                    out.push(Token {
                        tok: Tok::Lit,
                        line,
                    });
                }
                _ => out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                }),
            }
        } else if ch.is_ascii_digit() {
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            out.push(Token {
                tok: Tok::Lit,
                line,
            });
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Parser: per file, the modules it contains (the file's own module and any
// inline `mod x { … }`), what each module can name (child modules, `use`
// aliases, globs), and every path the code writes.

/// A module scope inside one file.
#[derive(Debug, Default)]
struct Scope {
    /// Absolute module path; element 0 is the crate (`lib`, `bin:main`, …).
    module: Vec<String>,
    /// `mod x;` / `mod x { … }` declared here.
    children: BTreeSet<String>,
    /// `use a::b::c as d;` → `d` → `[a, b, c]` (as written, relative to this
    /// scope).
    aliases: BTreeMap<String, Vec<String>>,
    /// `use a::b::*;` → `[a, b]`.
    globs: Vec<Vec<String>>,
    /// Items defined here (`struct X`, `fn f`, …), which shadow names that
    /// globs bring in.
    items: BTreeSet<String>,
}

/// A path written in code or in a `use`, as written.
#[derive(Debug)]
struct Ref {
    scope: usize,
    segs: Vec<String>,
    line: usize,
    /// `use path::*`.
    glob: bool,
}

#[derive(Debug)]
struct ParsedFile {
    scopes: Vec<Scope>,
    refs: Vec<Ref>,
    /// Modules declared `#[cfg(test)] mod x;` (absolute paths).
    test_modules: Vec<Vec<String>>,
    /// The file starts with `#![cfg(test)]`.
    test_only: bool,
}

fn is_ident(t: Option<&Token>, word: &str) -> bool {
    matches!(t, Some(Token { tok: Tok::Ident(w), .. }) if w == word)
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t, Some(Token { tok: Tok::Punct(q), .. }) if *q == p)
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t {
        Some(Token {
            tok: Tok::Ident(w), ..
        }) => Some(w),
        _ => None,
    }
}

fn is_open(t: &Tok) -> bool {
    matches!(t, Tok::Punct('{' | '(' | '['))
}

fn is_close(t: &Tok) -> bool {
    matches!(t, Tok::Punct('}' | ')' | ']'))
}

/// Index just past the item starting at `i`: up to a `;` at depth 0, or the
/// `}` that closes the first top-level brace. Stops early at an unmatched
/// closing bracket (the item was the last thing in a block).
fn skip_item(toks: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < toks.len() {
        let t = &toks[i].tok;
        if is_open(t) {
            depth += 1;
        } else if is_close(t) {
            if depth == 0 {
                return i;
            }
            depth -= 1;
            if depth == 0 && *t == Tok::Punct('}') {
                return i + 1;
            }
        } else if depth == 0 && *t == Tok::Punct(';') {
            return i + 1;
        }
        i += 1;
    }
    i
}

/// Index just past the bracketed group opening at `i`.
fn skip_group(toks: &[Token], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < toks.len() {
        if is_open(&toks[i].tok) {
            depth += 1;
        } else if is_close(&toks[i].tok) {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                return i + 1;
            }
        }
        i += 1;
    }
    i
}

/// One leaf of a `use` tree.
#[derive(Debug, PartialEq, Eq)]
enum UseLeaf {
    /// The path and the name it is bound to (`None` for `as _`).
    Name(Vec<String>, Option<String>),
    Glob(Vec<String>),
}

/// Parses the `use` tree starting at `*i` (after `use`), up to but not
/// including the `;`.
fn parse_use_tree(toks: &[Token], i: &mut usize, prefix: Vec<String>, out: &mut Vec<UseLeaf>) {
    let mut segs = prefix;
    loop {
        match toks.get(*i).map(|t| &t.tok) {
            Some(Tok::PathSep) => *i += 1,
            Some(Tok::Ident(name)) => {
                segs.push(name.clone());
                *i += 1;
                if matches!(toks.get(*i).map(|t| &t.tok), Some(Tok::PathSep)) {
                    continue;
                }
                if segs.last().is_some_and(|s| s == "self") && segs.len() > 1 {
                    segs.pop();
                }
                let mut alias = segs.last().cloned();
                if is_ident(toks.get(*i), "as") {
                    alias = ident(toks.get(*i + 1))
                        .filter(|a| *a != "_")
                        .map(str::to_string);
                    *i += 2;
                }
                out.push(UseLeaf::Name(segs, alias));
                return;
            }
            Some(Tok::Punct('*')) => {
                *i += 1;
                out.push(UseLeaf::Glob(segs));
                return;
            }
            Some(Tok::Punct('{')) => {
                *i += 1;
                loop {
                    match toks.get(*i).map(|t| &t.tok) {
                        None => return,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        Some(Tok::Punct(',')) => *i += 1,
                        Some(_) => {
                            let before = *i;
                            parse_use_tree(toks, i, segs.clone(), out);
                            if *i == before {
                                *i += 1; // malformed; make progress
                            }
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// The module path of a file from its path relative to `src`: `lib.rs` is
/// `[lib]`, `a/b.rs` (or `a/b/mod.rs`) is `[lib, a, b]`, `main.rs` is
/// `[bin:main]`.
fn module_of_file(rel: &str) -> Vec<String> {
    let no_ext = rel.strip_suffix(".rs").unwrap_or(rel);
    let mut parts: Vec<&str> = no_ext.split('/').collect();
    match parts.as_slice() {
        ["lib"] => return vec!["lib".into()],
        ["main"] => return vec!["bin:main".into()],
        ["bin", name] | ["bin", name, "main"] => return vec![format!("bin:{name}")],
        _ => {}
    }
    let mut module = vec!["lib".to_string()];
    if parts.first() == Some(&"bin") && parts.len() > 2 {
        module = vec![format!("bin:{}", parts[1])];
        parts.drain(..2);
    }
    if parts.last() == Some(&"mod") {
        parts.pop();
    }
    module.extend(parts.iter().map(|p| p.to_string()));
    module
}

/// Keywords that introduce a named item.
const ITEM_KEYWORDS: &[&str] = &[
    "struct", "enum", "union", "trait", "type", "fn", "const", "static",
];

fn parse_file(rel: &str, src: &str) -> ParsedFile {
    let toks = lex(src);
    let mut file = ParsedFile {
        scopes: vec![Scope {
            module: module_of_file(rel),
            ..Scope::default()
        }],
        refs: Vec::new(),
        test_modules: Vec::new(),
        test_only: false,
    };
    // Open brackets; `Some(scope)` when the bracket opened an inline module.
    let mut open: Vec<Option<usize>> = Vec::new();
    let mut current = 0usize;
    let mut pending_cfg_test = false;
    let mut i = 0;
    while i < toks.len() {
        let t = &toks[i].tok;
        // Attributes: note `#[cfg(test)]`, skip the rest.
        if *t == Tok::Punct('#')
            && (is_punct(toks.get(i + 1), '[') || is_punct(toks.get(i + 1), '!'))
        {
            let inner = is_punct(toks.get(i + 1), '!');
            let start = if inner { i + 2 } else { i + 1 };
            let end = skip_group(&toks, start);
            let body: Vec<&Tok> = toks[start..end].iter().map(|t| &t.tok).collect();
            let cfg_test = body.len() == 6
                && matches!(body[1], Tok::Ident(w) if w == "cfg")
                && matches!(body[3], Tok::Ident(w) if w == "test");
            if cfg_test && inner && current == 0 && open.is_empty() {
                file.test_only = true;
            } else if cfg_test && !inner {
                pending_cfg_test = true;
            }
            i = end;
            continue;
        }
        if pending_cfg_test {
            pending_cfg_test = false;
            // `#[cfg(test)] [pub[(..)]] mod name;` declares a test-only file.
            let mut j = i;
            if is_ident(toks.get(j), "pub") {
                j += 1;
                if is_punct(toks.get(j), '(') {
                    j = skip_group(&toks, j);
                }
            }
            if is_ident(toks.get(j), "mod")
                && let Some(name) = ident(toks.get(j + 1))
                && is_punct(toks.get(j + 2), ';')
            {
                let mut module = file.scopes[current].module.clone();
                module.push(name.to_string());
                file.test_modules.push(module);
            }
            i = skip_item(&toks, i);
            continue;
        }
        match t {
            Tok::Ident(w) if w == "use" => {
                let mut j = i + 1;
                if matches!(toks.get(j).map(|t| &t.tok), Some(Tok::PathSep)) {
                    // `use ::other_crate::…`
                    i = skip_item(&toks, i);
                    continue;
                }
                let mut leaves = Vec::new();
                parse_use_tree(&toks, &mut j, Vec::new(), &mut leaves);
                let line = toks[i].line;
                let scope = &mut file.scopes[current];
                for leaf in leaves {
                    match leaf {
                        UseLeaf::Name(segs, alias) => {
                            if let Some(alias) = alias
                                && segs.len() > 1
                            {
                                scope.aliases.insert(alias, segs.clone());
                            }
                            file.refs.push(Ref {
                                scope: current,
                                segs,
                                line,
                                glob: false,
                            });
                        }
                        UseLeaf::Glob(segs) => {
                            scope.globs.push(segs.clone());
                            file.refs.push(Ref {
                                scope: current,
                                segs,
                                line,
                                glob: true,
                            });
                        }
                    }
                }
                i = skip_item(&toks, i);
            }
            Tok::Ident(w)
                if ITEM_KEYWORDS.contains(&w.as_str())
                    && matches!(open.last(), None | Some(Some(_))) =>
            {
                if let Some(name) = ident(toks.get(i + 1)) {
                    file.scopes[current].items.insert(name.to_string());
                }
                i += 1;
            }
            Tok::Ident(w) if w == "mod" && ident(toks.get(i + 1)).is_some() => {
                let name = ident(toks.get(i + 1)).unwrap_or_default().to_string();
                file.scopes[current].children.insert(name.clone());
                if is_punct(toks.get(i + 2), '{') {
                    if name == "tests" {
                        i = skip_group(&toks, i + 2);
                        continue;
                    }
                    let mut module = file.scopes[current].module.clone();
                    module.push(name);
                    file.scopes.push(Scope {
                        module,
                        ..Scope::default()
                    });
                    current = file.scopes.len() - 1;
                    open.push(Some(current));
                    i += 3;
                } else {
                    i += 2;
                }
            }
            Tok::Punct('{' | '(' | '[') => {
                open.push(None);
                i += 1;
            }
            Tok::Punct('}' | ')' | ']') => {
                if let Some(Some(_)) = open.pop() {
                    current = open.iter().rev().find_map(|o| *o).unwrap_or(0);
                }
                i += 1;
            }
            Tok::Ident(first) if matches!(toks.get(i + 1).map(|t| &t.tok), Some(Tok::PathSep)) => {
                let prev = i.checked_sub(1).and_then(|p| toks.get(p));
                let mid_path = matches!(prev.map(|t| &t.tok), Some(Tok::PathSep));
                // `pub(in crate::x)` is a visibility, not a dependency.
                let visibility = is_ident(prev, "in")
                    && is_punct(i.checked_sub(2).and_then(|p| toks.get(p)), '(');
                let mut segs = vec![first.clone()];
                let mut j = i + 1;
                while matches!(toks.get(j).map(|t| &t.tok), Some(Tok::PathSep))
                    && let Some(next) = ident(toks.get(j + 1))
                {
                    segs.push(next.to_string());
                    j += 2;
                }
                if !mid_path && !visibility && segs.len() > 1 {
                    file.refs.push(Ref {
                        scope: current,
                        segs,
                        line: toks[i].line,
                        glob: false,
                    });
                }
                i = j;
            }
            _ => i += 1,
        }
    }
    file
}

// ---------------------------------------------------------------------------
// Graph.

struct Graph {
    /// File paths relative to `src`, sorted; indices are node ids.
    files: Vec<String>,
    /// `from → to`, with the first reference that made the edge
    /// (`line`, path as written).
    edges: BTreeMap<(usize, usize), (usize, String)>,
}

impl Graph {
    /// Builds the graph of the non-test files among `sources` (paths relative
    /// to `src`). `package` is the package name (`meshgate`), by which the
    /// binary names the library.
    fn build(sources: &[(String, String)], package: &str) -> Graph {
        let package = package.replace('-', "_");
        let parsed: Vec<ParsedFile> = sources
            .iter()
            .map(|(path, text)| parse_file(path, text))
            .collect();

        // Which files are test code.
        let test_modules: Vec<&Vec<String>> = parsed.iter().flat_map(|p| &p.test_modules).collect();
        let is_test = |idx: usize| {
            let (path, _) = &sources[idx];
            let module = &parsed[idx].scopes[0].module;
            parsed[idx].test_only
                || path.split('/').rev().skip(1).any(|dir| dir == "tests")
                || test_modules.iter().any(|t| module.starts_with(t))
        };
        let kept: Vec<usize> = (0..sources.len()).filter(|&i| !is_test(i)).collect();

        // Module path → (file index, scope index).
        let mut modules: BTreeMap<Vec<String>, (usize, usize)> = BTreeMap::new();
        for &f in &kept {
            for (s, scope) in parsed[f].scopes.iter().enumerate() {
                modules.entry(scope.module.clone()).or_insert((f, s));
            }
        }

        let resolver = Resolver {
            parsed: &parsed,
            modules: &modules,
            package: &package,
        };
        let node: BTreeMap<usize, usize> = kept.iter().enumerate().map(|(n, &f)| (f, n)).collect();
        let mut edges = BTreeMap::new();
        for &f in &kept {
            for r in &parsed[f].refs {
                let Some(path) = resolver.resolve(f, r.scope, &r.segs, 0) else {
                    continue;
                };
                let Some(target) = (1..=path.len()).rev().find_map(|n| modules.get(&path[..n]))
                else {
                    continue;
                };
                let (to, from) = (target.0, f);
                if to != from {
                    edges.entry((node[&from], node[&to])).or_insert_with(|| {
                        let glob = if r.glob { "::*" } else { "" };
                        (r.line, format!("{}{glob}", r.segs.join("::")))
                    });
                }
            }
        }
        Graph {
            files: kept.iter().map(|&f| sources[f].0.clone()).collect(),
            edges,
        }
    }

    fn successors(&self, n: usize) -> impl Iterator<Item = usize> + '_ {
        self.edges.range((n, 0)..(n + 1, 0)).map(|(&(_, to), _)| to)
    }

    /// Strongly connected components with more than one file (each is a set
    /// of files that all reach each other), as sorted file paths.
    fn cyclic_components(&self) -> Vec<Vec<String>> {
        // Tarjan's algorithm.
        struct State {
            index: Vec<Option<usize>>,
            low: Vec<usize>,
            on_stack: Vec<bool>,
            stack: Vec<usize>,
            next: usize,
            out: Vec<Vec<usize>>,
        }
        fn visit(g: &Graph, v: usize, s: &mut State) {
            s.index[v] = Some(s.next);
            s.low[v] = s.next;
            s.next += 1;
            s.stack.push(v);
            s.on_stack[v] = true;
            for w in g.successors(v).collect::<Vec<_>>() {
                match s.index[w] {
                    None => {
                        visit(g, w, s);
                        s.low[v] = s.low[v].min(s.low[w]);
                    }
                    Some(iw) if s.on_stack[w] => s.low[v] = s.low[v].min(iw),
                    Some(_) => {}
                }
            }
            if Some(s.low[v]) == s.index[v] {
                let mut component = Vec::new();
                while let Some(w) = s.stack.pop() {
                    s.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                s.out.push(component);
            }
        }
        let n = self.files.len();
        let mut s = State {
            index: vec![None; n],
            low: vec![0; n],
            on_stack: vec![false; n],
            stack: Vec::new(),
            next: 0,
            out: Vec::new(),
        };
        for v in 0..n {
            if s.index[v].is_none() {
                visit(self, v, &mut s);
            }
        }
        let mut components: Vec<Vec<String>> = s
            .out
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|c| {
                let mut files: Vec<String> = c.into_iter().map(|v| self.files[v].clone()).collect();
                files.sort();
                files
            })
            .collect();
        components.sort();
        components
    }

    /// Concrete cycles inside one component, together passing through every
    /// file of it: for each file not yet on a listed cycle, the shortest
    /// cycle through it. Each cycle starts and ends at the same node.
    fn cycles_through(&self, component: &[String]) -> Vec<Vec<usize>> {
        let members: BTreeSet<usize> = component
            .iter()
            .filter_map(|f| self.files.iter().position(|g| g == f))
            .collect();
        let mut covered = BTreeSet::new();
        let mut cycles = Vec::new();
        for &start in &members {
            if covered.contains(&start) {
                continue;
            }
            // Breadth-first search from `start` back to `start`.
            let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
            let mut queue = VecDeque::from([start]);
            let mut found = false;
            while let Some(v) = queue.pop_front() {
                for w in self.successors(v) {
                    if !members.contains(&w) {
                        continue;
                    }
                    if w == start {
                        parent.insert(start, v);
                        found = true;
                        break;
                    }
                    if let std::collections::btree_map::Entry::Vacant(e) = parent.entry(w) {
                        e.insert(v);
                        queue.push_back(w);
                    }
                }
                if found {
                    break;
                }
            }
            if !found {
                continue;
            }
            let mut cycle = vec![start];
            let mut v = parent[&start];
            while v != start {
                cycle.push(v);
                v = parent[&v];
            }
            cycle.push(start);
            cycle.reverse();
            covered.extend(cycle.iter().copied());
            cycles.push(cycle);
        }
        cycles
    }

    /// `a -> b -> a`, then for each step the reference that made it.
    fn describe_cycle(&self, cycle: &[usize]) -> String {
        let chain: Vec<String> = cycle
            .iter()
            .map(|&v| format!("src/{}", self.files[v]))
            .collect();
        let mut out = format!("  cycle: {}\n", chain.join(" -> "));
        for pair in cycle.windows(2) {
            let (line, path) = &self.edges[&(pair[0], pair[1])];
            let _ = writeln!(
                out,
                "    src/{}:{line} uses `{path}` (in src/{})",
                self.files[pair[0]], self.files[pair[1]]
            );
        }
        out
    }

    fn edge_list(&self) -> BTreeSet<(String, String)> {
        self.edges
            .keys()
            .map(|&(a, b)| (self.files[a].clone(), self.files[b].clone()))
            .collect()
    }
}

/// Turns a path as written in some scope into an absolute module path.
struct Resolver<'a> {
    parsed: &'a [ParsedFile],
    modules: &'a BTreeMap<Vec<String>, (usize, usize)>,
    package: &'a str,
}

impl Resolver<'_> {
    fn resolve(
        &self,
        file: usize,
        scope: usize,
        segs: &[String],
        depth: usize,
    ) -> Option<Vec<String>> {
        if depth > 16 || segs.is_empty() {
            return None;
        }
        let here = &self.parsed[file].scopes[scope];
        let (first, rest) = (segs[0].as_str(), &segs[1..]);
        let join = |mut base: Vec<String>, rest: &[String]| {
            base.extend(rest.iter().cloned());
            base
        };
        match first {
            "crate" | "$crate" => Some(join(vec![here.module[0].clone()], rest)),
            "self" => Some(join(here.module.clone(), rest)),
            "super" => {
                let ups = segs.iter().take_while(|s| *s == "super").count();
                let keep = here.module.len().checked_sub(ups).filter(|&k| k >= 1)?;
                Some(join(here.module[..keep].to_vec(), &segs[ups..]))
            }
            _ if first == self.package => Some(join(vec!["lib".into()], rest)),
            _ if here.children.contains(first) => Some(join(here.module.clone(), segs)),
            _ => {
                if let Some(target) = here.aliases.get(first) {
                    let base = self.resolve(file, scope, target, depth + 1)?;
                    return Some(join(base, rest));
                }
                if here.items.contains(first) {
                    return Some(join(here.module.clone(), segs));
                }
                // Names brought in by `use some::module::*` from this crate.
                here.globs.iter().find_map(|glob| {
                    let module = self.resolve(file, scope, glob, depth + 1)?;
                    let &(gf, gs) = self.modules.get(&module)?;
                    self.resolve(gf, gs, segs, depth + 1)
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The checker, checked.

mod checker {
    use super::*;

    fn graph(files: &[(&str, &str)]) -> Graph {
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|(p, t)| (p.to_string(), t.to_string()))
            .collect();
        Graph::build(&sources, "meshgate")
    }

    fn edges(files: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        graph(files).edge_list()
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    const LIB: (&str, &str) = ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n");

    #[test]
    fn grouped_import_resolves_each_leaf_to_its_longest_module_prefix() {
        let e = edges(&[
            LIB,
            ("a.rs", "use crate::{b::{Y, Z}, c::inner::W};\n"),
            ("b.rs", "pub struct Y; pub struct Z;\n"),
            ("c.rs", "pub mod inner;\n"),
            ("c/inner.rs", "pub struct W;\n"),
        ]);
        assert_eq!(e, set(&[("a.rs", "b.rs"), ("a.rs", "c/inner.rs")]));
    }

    #[test]
    fn item_that_is_not_a_module_resolves_to_the_parent_file() {
        // `crate::b::helper::X`: `helper` is an inline module of b.rs.
        let e = edges(&[
            LIB,
            (
                "a.rs",
                "fn f() { crate::b::helper::X; crate::c::Thing::new(); }\n",
            ),
            ("b.rs", "pub mod helper { pub const X: u8 = 0; }\n"),
            ("c.rs", "pub struct Thing;\n"),
        ]);
        assert_eq!(e, set(&[("a.rs", "b.rs"), ("a.rs", "c.rs")]));
    }

    #[test]
    fn super_self_and_nested_groups() {
        let e = edges(&[
            ("lib.rs", "pub mod p;\n"),
            (
                "p.rs",
                "pub mod x;\npub mod y;\npub mod z;\npub struct State;\n",
            ),
            // `use super::{self, y}`: `super` is p.rs, `y` is p/y.rs.
            (
                "p/x.rs",
                "use super::{self, y};\nfn f(_: p::State) { y::go(); }\n",
            ),
            // `super::super::` from p/y.rs is the crate root.
            (
                "p/y.rs",
                "pub fn go() { super::super::root(); self::local(); }\nfn local() {}\n",
            ),
            ("p/z.rs", "use super::x::{self as ex};\nfn g() { ex::f; }\n"),
        ]);
        assert_eq!(
            e,
            set(&[
                ("p/x.rs", "p.rs"),
                ("p/x.rs", "p/y.rs"),
                ("p/y.rs", "lib.rs"),
                ("p/z.rs", "p/x.rs")
            ])
        );
    }

    #[test]
    fn fully_qualified_path_in_code_and_through_an_imported_module() {
        let e = edges(&[
            ("lib.rs", "pub mod plan;\npub mod runtime;\n"),
            ("plan.rs", "pub mod host;\n"),
            ("plan/host.rs", "pub fn normalize(s: &str) -> &str { s }\n"),
            (
                "runtime.rs",
                "pub mod a;\npub mod b;\n\
                 fn f(x: &str) -> &str { crate::plan::host::normalize(x) }\n",
            ),
            // `plan` imported as a module, then used as `plan::host::…`.
            (
                "runtime/a.rs",
                "use crate::plan;\nfn g() { plan::host::normalize(\"\"); }\n",
            ),
            // A child module named in the parent's code is an edge to it.
            ("runtime/b.rs", "pub fn h() {}\n"),
        ]);
        assert_eq!(
            e,
            set(&[
                ("runtime.rs", "plan/host.rs"),
                ("runtime/a.rs", "plan.rs"),
                ("runtime/a.rs", "plan/host.rs"),
            ])
        );
    }

    #[test]
    fn reexport_is_an_edge_but_a_mod_declaration_is_not() {
        let e = edges(&[
            ("lib.rs", "pub mod plan;\n"),
            (
                "plan.rs",
                "pub mod outbound;\npub mod tls;\npub use outbound::{Decision, Target};\n",
            ),
            (
                "plan/outbound.rs",
                "pub enum Decision {}\npub struct Target;\n",
            ),
            ("plan/tls.rs", "pub struct Tls;\n"),
        ]);
        assert_eq!(e, set(&[("plan.rs", "plan/outbound.rs")]));
    }

    #[test]
    fn glob_import_of_the_parent_reaches_what_the_parent_names() {
        let e = edges(&[
            ("lib.rs", "pub mod p;\npub mod q;\n"),
            ("p.rs", "pub mod child;\nuse crate::q;\n"),
            ("p/child.rs", "use super::*;\nfn f() { q::thing(); }\n"),
            ("q.rs", "pub fn thing() {}\n"),
        ]);
        assert_eq!(
            e,
            set(&[
                ("p.rs", "q.rs"),
                ("p/child.rs", "p.rs"),
                ("p/child.rs", "q.rs")
            ])
        );
    }

    #[test]
    fn a_local_item_shadows_a_name_from_a_glob() {
        let e = edges(&[
            ("lib.rs", "pub mod p;\npub mod q;\n"),
            ("p.rs", "pub mod child;\nuse crate::q::Thing;\n"),
            (
                "p/child.rs",
                "use super::*;\nstruct Thing;\nimpl Thing { fn new() {} }\nfn f() { Thing::new(); }\n",
            ),
            ("q.rs", "pub struct Thing;\n"),
        ]);
        assert_eq!(e, set(&[("p.rs", "q.rs"), ("p/child.rs", "p.rs")]));
    }

    #[test]
    fn comments_strings_external_crates_and_tests_are_ignored() {
        let e = edges(&[
            LIB,
            (
                "a.rs",
                "//! See crate::b::X.\n\
                 // use crate::b::X;\n\
                 /* crate::b::X /* nested */ crate::c::Y */\n\
                 use std::collections::HashMap;\n\
                 use ::serde::Serialize;\n\
                 const S: &str = \"crate::b::X\";\n\
                 const R: &str = r#\"crate::c::Y \"quoted\"\"#;\n\
                 const Q: char = '\"';\n\
                 fn f<'a>(x: &'a str) -> &'a str { tokio::spawn(); x }\n\
                 pub(in crate::b) fn g() {}\n\
                 #[cfg(test)]\nuse crate::c::Y;\n\
                 #[cfg(test)]\nfn helper() { crate::b::X; }\n\
                 #[cfg(test)]\nmod tests { use crate::c::Y; }\n\
                 #[cfg(test)]\nmod test_file;\n",
            ),
            ("a/test_file.rs", "use crate::c::Y;\n"),
            ("b.rs", "pub struct X;\n#[cfg(test)]\nmod tests;\n"),
            ("b/tests.rs", "use crate::a::f;\n"),
            ("c.rs", "pub struct Y;\n#[cfg(test)]\nmod tests;\n"),
            ("c/tests/mod.rs", "use crate::a::f;\nmod more;\n"),
            ("c/tests/more.rs", "use crate::a::f;\n"),
        ]);
        assert_eq!(e, BTreeSet::new());
    }

    #[test]
    fn binary_names_the_library_by_package_name() {
        let e = edges(&[
            ("lib.rs", "pub mod ca;\n"),
            ("ca.rs", "pub fn spiffe_id() {}\n"),
            (
                "main.rs",
                "use meshgate::ca::spiffe_id;\nfn main() { crate::helper(); }\nfn helper() {}\n",
            ),
        ]);
        assert_eq!(e, set(&[("main.rs", "ca.rs")]));
    }

    #[test]
    fn a_cycle_is_found_and_spelled_out() {
        let g = graph(&[
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n"),
            ("a.rs", "use crate::b::B;\npub struct A;\n"),
            ("b.rs", "pub struct B(crate::c::C);\n"),
            ("c.rs", "pub struct C;\nfn f(_: super::a::A) {}\n"),
            // d depends on the cycle but is not part of it.
            ("d.rs", "use crate::a::A;\n"),
        ]);
        assert_eq!(
            g.cyclic_components(),
            vec![vec!["a.rs".to_string(), "b.rs".into(), "c.rs".into()]]
        );
        let cycles = g.cycles_through(&g.cyclic_components()[0]);
        assert_eq!(cycles.len(), 1);
        let text = g.describe_cycle(&cycles[0]);
        assert!(
            text.starts_with("  cycle: src/a.rs -> src/b.rs -> src/c.rs -> src/a.rs\n"),
            "{text}"
        );
        assert!(
            text.contains("src/c.rs:2 uses `super::a::A` (in src/a.rs)"),
            "{text}"
        );
    }

    #[test]
    fn parent_and_child_using_each_other_is_a_cycle() {
        let g = graph(&[
            ("lib.rs", "pub mod runtime;\n"),
            (
                "runtime.rs",
                "pub mod inbound;\npub struct State;\nfn run() { inbound::serve(); }\n",
            ),
            (
                "runtime/inbound.rs",
                "use super::State;\npub fn serve() {}\n",
            ),
        ]);
        assert_eq!(
            g.cyclic_components(),
            vec![vec!["runtime.rs".to_string(), "runtime/inbound.rs".into()]]
        );
    }

    #[test]
    fn acyclic_graph_has_no_components() {
        let g = graph(&[
            LIB,
            ("a.rs", "use crate::b::B;\n"),
            ("b.rs", "pub struct B; fn f() { crate::c::g(); }\n"),
            ("c.rs", "pub fn g() {}\n"),
        ]);
        assert!(g.cyclic_components().is_empty());
    }

    #[test]
    fn lexer_keeps_lines_and_drops_literals() {
        let toks = lex("a::b // x::y\n'c' \"s::t\" b'\\'' 'l: r#type::z");
        let words: Vec<(Tok, usize)> = toks.into_iter().map(|t| (t.tok, t.line)).collect();
        let id = |s: &str| Tok::Ident(s.into());
        assert_eq!(
            words,
            vec![
                (id("a"), 1),
                (Tok::PathSep, 1),
                (id("b"), 1),
                (Tok::Lit, 2),
                (Tok::Lit, 2),
                (Tok::Lit, 2),
                (Tok::Punct(':'), 2),
                (id("type"), 2),
                (Tok::PathSep, 2),
                (id("z"), 2),
            ]
        );
    }
}
