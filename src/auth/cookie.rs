//! The session cookie's name: one place, used by the control plane (which sets and reads
//! it) and the proxy (which keeps it away from apps).
//!
//! Over TLS the cookie is `__Host-rsp_session`: browsers accept that name only with
//! `Secure`, `Path=/` and no `Domain`, so a sibling host or a plain-HTTP answer cannot
//! plant or overwrite it. Over plain HTTP (development, or TLS ended in front of us)
//! a `__Host-` cookie would be refused by the browser, so it is `rsp_session`.

/// The name over plain HTTP.
pub const SESSION_COOKIE: &str = "rsp_session";
/// The name over TLS.
pub const SESSION_COOKIE_TLS: &str = "__Host-rsp_session";

/// The name the session cookie has on a request that came over TLS or not.
pub fn session_cookie_name(tls: bool) -> &'static str {
    if tls {
        SESSION_COOKIE_TLS
    } else {
        SESSION_COOKIE
    }
}

/// Is this cookie name one of ours (either name)? Cookie prefixes are matched
/// case-insensitively, as browsers now treat them (`__HOST-rsp_session` is bound by the
/// same rules), and `__Secure-` is included: an app must not be able to set any of
/// them, and none of them may reach an app.
pub fn is_session_cookie_name(name: &[u8]) -> bool {
    let name = name.trim_ascii();
    let rest = strip_prefix_ci(name, b"__host-")
        .or_else(|| strip_prefix_ci(name, b"__secure-"))
        .unwrap_or(name);
    rest.eq_ignore_ascii_case(SESSION_COOKIE.as_bytes())
}

fn strip_prefix_ci<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    (s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix))
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(session_cookie_name(false), "rsp_session");
        assert_eq!(session_cookie_name(true), "__Host-rsp_session");
        for ours in [
            "rsp_session",
            "__Host-rsp_session",
            "__HOST-rsp_session",
            "__host-RSP_SESSION",
            "__Secure-rsp_session",
            " rsp_session ",
        ] {
            assert!(is_session_cookie_name(ours.as_bytes()), "{ours}");
        }
        for theirs in [
            "session",
            "rsp_session2",
            "x__Host-rsp_session",
            "__Host-",
            "",
        ] {
            assert!(!is_session_cookie_name(theirs.as_bytes()), "{theirs}");
        }
    }
}
