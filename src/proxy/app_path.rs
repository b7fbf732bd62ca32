//! Request paths, made safe before routing and before an app sees them (both app
//! paths: pingora's HTTP path and the WebSocket tunnel call these same functions).
//!
//! 1. [`normalize`] the whole path first (RFC 3986 §5.2.4 `remove_dot_segments`, with
//!    `%2E` read as `.`), then route on the result: `/slug/../api/users` is a request
//!    for `/api/users` and goes to the admin plane, exactly as a browser would have
//!    resolved it; it never reaches the app as `/../api/users`.
//! 2. For an app, [`forward`] refuses what an app could read as a way out of its path
//!    or as a different path than the one routed on: encoded slash (`%2F`), backslash
//!    raw or encoded (`%5C`) and NUL raw or encoded (`%00`) — 400; then strips the
//!    slug.
//!
//! Only the path is touched: the query string is the app's business and passes as is.
//! Pure functions, no allocation when nothing changes; `pub` for bench/fuzz.

use std::borrow::Cow;

/// Why a path is refused for an app (the message is the 400's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    EncodedSlash,
    Backslash,
    Nul,
}

impl std::fmt::Display for PathError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathError::EncodedSlash => {
                "The path contains an encoded slash (%2F), which apps are not sent; use a plain '/'"
            }
            PathError::Backslash => {
                "The path contains a backslash (raw or %5C), which apps are not sent; use '/'"
            }
            PathError::Nul => "The path contains a NUL byte (raw or %00), which apps are not sent",
        })
    }
}

impl std::error::Error for PathError {}

/// `path?query` → (path, `?query` or ``).
fn split(target: &str) -> (&str, &str) {
    match target.find('?') {
        Some(i) => target.split_at(i),
        None => (target, ""),
    }
}

/// The request target with its path's dot-segments removed (`%2E` counts as `.`);
/// the query is kept as it is. A target that is not an absolute path (`*`, an
/// absolute URI) is returned unchanged.
pub fn normalize(target: &str) -> Cow<'_, str> {
    let (path, query) = split(target);
    if !path.starts_with('/') || !needs_work(path) {
        return Cow::Borrowed(target);
    }
    let decoded = decode_dots(path);
    let mut out: Vec<&str> = Vec::new();
    let mut segments = decoded[1..].split('/').peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        match seg {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        // A dot-segment at the end leaves a directory: `/a/b/..` → `/a/`.
        if last {
            out.push("");
        }
    }
    let mut result = String::with_capacity(target.len());
    result.push('/');
    result.push_str(&out.join("/"));
    result.push_str(query);
    Cow::Owned(result)
}

/// Could `normalize` change this path? (a `.` segment, or an encoded dot)
fn needs_work(path: &str) -> bool {
    let b = path.as_bytes();
    b.windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
        || path.split('/').any(|s| s == "." || s == "..")
}

/// `%2E`/`%2e` → `.` (an unreserved character: the same URI either way, RFC 3986
/// §6.2.2.2); nothing else is decoded.
fn decode_dots(path: &str) -> Cow<'_, str> {
    let b = path.as_bytes();
    if !b
        .windows(3)
        .any(|w| w[0] == b'%' && w[1] == b'2' && (w[2] | 0x20) == b'e')
    {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() && b[i + 1] == b'2' && (b[i + 2] | 0x20) == b'e' {
            out.push('.');
            i += 3;
        } else {
            // Copy up to the next '%' in one go (never splits a UTF-8 character: '%' is
            // ASCII).
            let next = path[i + 1..].find('%').map_or(b.len(), |j| i + 1 + j);
            out.push_str(&path[i..next]);
            i = next;
        }
    }
    Cow::Owned(out)
}

/// Refuse a path an app must not be sent (see the module doc).
pub fn check(target: &str) -> Result<(), PathError> {
    let (path, _) = split(target);
    let b = path.as_bytes();
    if b.contains(&0) {
        return Err(PathError::Nul);
    }
    if b.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    for w in b.windows(3) {
        if w[0] != b'%' {
            continue;
        }
        match (w[1], w[2] | 0x20) {
            (b'2', b'f') => return Err(PathError::EncodedSlash),
            (b'5', b'c') => return Err(PathError::Backslash),
            (b'0', b'0') => return Err(PathError::Nul),
            _ => {}
        }
    }
    Ok(())
}

/// What the app is sent for a `normalized` target routed to `slug`: checked
/// ([`check`]), then the slug prefix removed.
pub fn forward(normalized: &str, slug: &str) -> Result<String, PathError> {
    check(normalized)?;
    Ok(strip_slug(normalized, slug))
}

/// Both steps for a raw request target: `Ok(None)` when it is not for an app (its
/// first segment, once normalised, is an admin path), else the slug and what the app
/// is sent. The whole pipeline in one call, for bench/fuzz and the property tests.
pub fn for_app(target: &str) -> Result<Option<(String, String)>, PathError> {
    let normalized = normalize(target);
    let slug = crate::paths::first_segment(&normalized);
    if crate::paths::is_admin_segment(slug) {
        return Ok(None);
    }
    let forwarded = forward(&normalized, slug)?;
    Ok(Some((slug.to_string(), forwarded)))
}

/// `/<slug>…` as the app sees it: the slug prefix removed, always starting with `/`
/// (`/s` → `/`, `/s/` → `/`, `/s/a?b` → `/a?b`, `/s?x` → `/?x`).
pub fn strip_slug(path_and_query: &str, slug: &str) -> String {
    let rest = path_and_query
        .strip_prefix('/')
        .and_then(|p| p.strip_prefix(slug))
        .unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_prefix_is_stripped() {
        assert_eq!(strip_slug("/s", "s"), "/");
        assert_eq!(strip_slug("/s/", "s"), "/");
        assert_eq!(strip_slug("/s/a/b?c=d", "s"), "/a/b?c=d");
        assert_eq!(strip_slug("/s?x=1", "s"), "/?x=1");
        assert_eq!(strip_slug("/s//x", "s"), "//x");
    }

    #[test]
    fn rfc3986_examples() {
        // RFC 3986 §5.4.1/§5.4.2 results, as absolute paths.
        for (input, want) in [
            ("/a/b/c/./../../g", "/a/g"),
            ("/a/b/c/.", "/a/b/c/"),
            ("/a/b/c/./", "/a/b/c/"),
            ("/a/b/c/..", "/a/b/"),
            ("/a/b/c/../", "/a/b/"),
            ("/a/b/c/../g", "/a/b/g"),
            ("/a/b/c/../..", "/a/"),
            ("/a/b/c/../../g", "/a/g"),
            ("/a/b/c/../../../g", "/g"),
            ("/a/b/c/../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/g.", "/g."),
            ("/.g", "/.g"),
            ("/g..", "/g.."),
            ("/..g", "/..g"),
            ("/a/b/c/./../g", "/a/b/g"),
            ("/a/b/c/g/./h", "/a/b/c/g/h"),
            ("/a/b/c/g/../h", "/a/b/c/h"),
            ("/..", "/"),
            ("/.", "/"),
            ("/", "/"),
            ("/a//../b", "/a/b"),
        ] {
            assert_eq!(normalize(input), want, "{input}");
        }
    }

    #[test]
    fn query_untouched_and_no_copy_when_clean() {
        assert_eq!(normalize("/s/a/../b?x=/../y"), "/s/b?x=/../y");
        assert!(matches!(normalize("/s/a/b?x=.."), Cow::Borrowed(_)));
        assert!(matches!(normalize("*"), Cow::Borrowed("*")));
    }

    #[test]
    fn encoded_dots_count() {
        assert_eq!(normalize("/s/%2e%2e/api/users"), "/api/users");
        assert_eq!(normalize("/s/.%2E/x"), "/x");
        assert_eq!(normalize("/s/%2E/x"), "/s/x");
        assert_eq!(normalize("/s/a%2ejs"), "/s/a.js");
        assert_eq!(normalize("/s/é/%2e%2e/x"), "/s/x");
    }

    #[test]
    fn climbing_out_of_an_app_routes_on_the_result() {
        assert_eq!(for_app("/slug/../api/users"), Ok(None));
        assert_eq!(for_app("/slug/%2e%2e/api/users"), Ok(None));
        assert_eq!(
            for_app("/slug/../other/x"),
            Ok(Some(("other".into(), "/x".into())))
        );
        assert_eq!(
            for_app("/slug/a/../../slug/b?q"),
            Ok(Some(("slug".into(), "/b?q".into())))
        );
        assert_eq!(
            for_app("/slug/a/./b/../c/"),
            Ok(Some(("slug".into(), "/a/c/".into())))
        );
        assert_eq!(
            for_app("/slug/.."),
            Ok(None),
            "the root belongs to the admin plane"
        );
    }

    #[test]
    fn refusals() {
        for (target, err) in [
            ("/s/a%2fb", PathError::EncodedSlash),
            ("/s/a%2Fb", PathError::EncodedSlash),
            ("/s/..%2f..%2fapi", PathError::EncodedSlash),
            ("/s/a%5cb", PathError::Backslash),
            ("/s/a\\b", PathError::Backslash),
            ("/s/a%00", PathError::Nul),
            ("/s/a\0", PathError::Nul),
        ] {
            assert_eq!(for_app(target), Err(err), "{target}");
        }
        // The query is the app's business.
        assert_eq!(
            for_app("/s/a?x=%2f%00%5c"),
            Ok(Some(("s".into(), "/a?x=%2f%00%5c".into())))
        );
        assert_eq!(for_app("/s/%252f"), Ok(Some(("s".into(), "/%252f".into()))));
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        /// Paths built from pieces that matter here: dot-segments in all spellings,
        /// empty segments, names, admin segments, encoded characters, a query.
        fn target() -> impl Strategy<Value = String> {
            let seg = prop_oneof![
                Just(".".to_string()),
                Just("..".to_string()),
                Just("%2e".to_string()),
                Just("%2E%2e".to_string()),
                Just(".%2e".to_string()),
                Just(String::new()),
                Just("api".to_string()),
                Just("app".to_string()),
                Just("slug".to_string()),
                Just("%2f".to_string()),
                Just("a%5Cb".to_string()),
                Just("x%00".to_string()),
                Just("...".to_string()),
                text("az09._~%-2eEfF5c", 1..6),
            ];
            (
                prop::collection::vec(seg, 0..10),
                prop::option::of(text("a=/.%0&2f", 0..8)),
            )
                .prop_map(|(segs, q)| {
                    let mut t = format!("/{}", segs.join("/"));
                    if let Some(q) = q {
                        t.push('?');
                        t.push_str(&q);
                    }
                    t
                })
        }

        /// Short strings over `chars` (cheaper to generate than a regex strategy).
        fn text(chars: &'static str, len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
            let chars: Vec<char> = chars.chars().collect();
            prop::collection::vec(prop::sample::select(chars), len)
                .prop_map(|c| c.into_iter().collect())
        }

        fn path_of(target: &str) -> &str {
            split(target).0
        }

        /// No dot-segment anywhere: not `/../`, not `/./`, no leading `/..` segment,
        /// none at the end either.
        fn dotless(path: &str) -> bool {
            path.starts_with('/')
                && !path.contains("/../")
                && !path.contains("/./")
                && path != "/.."
                && !path.ends_with("/..")
                && !path.ends_with("/.")
                && !path.split('/').any(|s| s == "." || s == "..")
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2500, ..ProptestConfig::default() })]

            #[test]
            fn normalized_paths_have_no_dot_segments_and_are_stable(t in target()) {
                let n = normalize(&t).into_owned();
                let path = path_of(&n);
                prop_assert!(dotless(path), "{t:?} → {n:?}");
                prop_assert!(!path.to_ascii_lowercase().contains("%2e"), "{t:?} → {n:?}");
                prop_assert_eq!(normalize(&n).into_owned(), n.clone(), "not idempotent");
                // The query is never touched.
                prop_assert_eq!(split(&n).1, split(&t).1);
            }

            #[test]
            fn what_an_app_is_sent_stays_under_its_slug(t in target()) {
                match for_app(&t) {
                    Err(_) => {}
                    Ok(None) => {
                        let n = normalize(&t);
                        prop_assert!(crate::paths::is_admin_segment(crate::paths::first_segment(&n)));
                    }
                    Ok(Some((slug, fwd))) => {
                        let path = path_of(&fwd);
                        prop_assert!(dotless(path), "{t:?} → {fwd:?}");
                        prop_assert!(check(&fwd).is_ok());
                        prop_assert_eq!(normalize(&fwd).into_owned(), fwd.clone(), "not idempotent");
                        // Put back under the slug and resolved again, it is still the
                        // same app and the same path: nothing reaches outside.
                        let again = format!("/{slug}{fwd}");
                        prop_assert_eq!(for_app(&again), Ok(Some((slug.clone(), fwd.clone()))));
                        prop_assert!(!crate::paths::is_admin_segment(&slug));
                        prop_assert!(!slug.contains(['/', '?']));
                    }
                }
            }

            #[test]
            fn arbitrary_strings_never_panic(t in text(" !\"#%&'()*+,-./0123456789:;=?@ABCDEFZ[\\]^_`abcdefz{|}~", 0..40)) {
                let t = format!("/{t}");
                let n = normalize(&t);
                let _ = for_app(&n);
                prop_assert!(path_of(&n).starts_with('/'));
            }
        }
    }
}
