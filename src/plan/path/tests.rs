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
