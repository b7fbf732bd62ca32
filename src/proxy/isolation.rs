//! Keeping the admin plane's credentials and origin away from apps. Apps are served on
//! the same origin as the admin UI (unless `admin_host` splits them), so every app
//! request and response is rewritten on both app paths (pingora's HTTP path in
//! `app_http.rs`, the WebSocket tunnel in `tunnel.rs`):
//!
//! - our session cookie (any of its names, [`crate::auth::cookie`]) is taken out of
//!   `Cookie`; the app's own cookies pass;
//! - `Authorization: Bearer rsp_…` (one of our API tokens, known by its prefix; no
//!   store lookup) is removed; any other `Authorization` passes;
//! - an app's `Set-Cookie` naming our cookie is dropped, so an app cannot plant a
//!   session of its choosing;
//! - app responses get `Content-Security-Policy: sandbox …` ([`SANDBOX_CSP`]): scripts
//!   run, but in an opaque origin, so an app page cannot call `/api` with the admin's
//!   cookie or read the admin UI. Added as a header of its own, next to any CSP the app
//!   sends: browsers enforce every policy, so the app's can only narrow ours.
//!
//! Pure functions over header bytes; the per-request path stays lock- and store-free.

use std::borrow::Cow;

use crate::auth::cookie::is_session_cookie_name;
use crate::auth::secrets::TOKEN_PREFIX;

/// The sandbox every app response gets (config `app_csp_sandbox`, default on). No
/// `allow-same-origin`: that is the point. WebSockets, forms, downloads, pop-ups
/// and `alert()` keep working.
pub const SANDBOX_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

/// Where ACME HTTP-01 challenges are fetched; served on every host, `admin_host` or not.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// The front door's isolation settings (config `admin_host`, `app_csp_sandbox`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// When set: admin paths answer only on this host name (lower case, no port), app
    /// slugs only on the others.
    pub admin_host: Option<String>,
    /// Add [`SANDBOX_CSP`] to app responses.
    pub csp_sandbox: bool,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            admin_host: None,
            csp_sandbox: true,
        }
    }
}

impl Isolation {
    /// May a request for the admin plane (`admin`) or an app (`!admin`) be served on
    /// this `host` (the Host header or the URI's authority)? Without `admin_host`,
    /// always; ACME challenges, always.
    pub fn host_allows(&self, host: Option<&str>, admin: bool, path: &str) -> bool {
        let Some(admin_host) = &self.admin_host else {
            return true;
        };
        if path.starts_with(ACME_CHALLENGE) {
            return true;
        }
        let on_admin_host = host.is_some_and(|h| host_name(h).eq_ignore_ascii_case(admin_host));
        admin == on_admin_host
    }

    /// The CSP header value to add to an app response, if any.
    pub fn csp(&self) -> Option<&'static str> {
        self.csp_sandbox.then_some(SANDBOX_CSP)
    }
}

/// The host name of a `Host` value: port and a trailing dot removed
/// (`Example.org.:8080` → `Example.org`, `[::1]:80` → `[::1]`).
pub fn host_name(host: &str) -> &str {
    let host = host.trim();
    let name = if host.starts_with('[') {
        host.find(']').map_or(host, |i| &host[..=i])
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.strip_suffix('.').unwrap_or(name)
}

/// RFC 9112 §3.2: an HTTP/1.1 request must carry exactly one `Host` (HTTP/1.0 may
/// omit it; HTTP/2 has `:authority`). `host_headers`: how many it has.
pub fn host_header_ok(http11: bool, host_headers: usize) -> bool {
    host_headers == 1 || (!http11 && host_headers == 0)
}

/// A `Cookie` value without our session cookie: `Borrowed` when it had none, `None`
/// when nothing is left (drop the header).
pub fn app_cookie(value: &[u8]) -> Option<Cow<'_, [u8]>> {
    let ours = |pair: &[u8]| {
        let name = pair.split(|b| *b == b'=').next().unwrap_or(pair);
        is_session_cookie_name(name)
    };
    let pairs = || value.split(|b| *b == b';');
    if !pairs().any(ours) {
        return Some(Cow::Borrowed(value));
    }
    let mut out = Vec::with_capacity(value.len());
    for pair in pairs().filter(|p| !ours(p)) {
        let pair = pair.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
    }
    (!out.is_empty()).then_some(Cow::Owned(out))
}

/// Is this `Authorization` value one of our API tokens (`Bearer rsp_…`)?
pub fn is_our_authorization(value: &[u8]) -> bool {
    let value = value.trim_ascii();
    let Some(space) = value.iter().position(u8::is_ascii_whitespace) else {
        return false;
    };
    let (scheme, token) = value.split_at(space);
    let token = token.trim_ascii();
    let prefix = TOKEN_PREFIX.as_bytes();
    scheme.eq_ignore_ascii_case(b"bearer")
        && token.len() >= prefix.len()
        && token[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// Does this `Set-Cookie` value set (or clear) our session cookie?
pub fn is_our_set_cookie(value: &[u8]) -> bool {
    let pair = value.split(|b| *b == b';').next().unwrap_or(value);
    match pair.iter().position(|b| *b == b'=') {
        Some(eq) => is_session_cookie_name(&pair[..eq]),
        // A cookie without '=' has an empty name (RFC 6265bis §5.6).
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(v: &str) -> Option<String> {
        app_cookie(v.as_bytes()).map(|c| String::from_utf8(c.into_owned()).unwrap())
    }

    #[test]
    fn session_cookies_leave_the_cookie_header() {
        assert_eq!(cookie("a=1; b=2").as_deref(), Some("a=1; b=2"));
        assert!(matches!(app_cookie(b"a=1; b=2"), Some(Cow::Borrowed(_))));
        assert_eq!(cookie("rsp_session=s"), None);
        assert_eq!(
            cookie("a=1; rsp_session=s; b=2").as_deref(),
            Some("a=1; b=2")
        );
        assert_eq!(
            cookie("__Host-rsp_session=s;a=1;__HOST-rsp_session=t").as_deref(),
            Some("a=1")
        );
        assert_eq!(
            cookie(" rsp_session = s ; x=rsp_session").as_deref(),
            Some("x=rsp_session")
        );
        assert_eq!(cookie("rsp_sessionx=1").as_deref(), Some("rsp_sessionx=1"));
    }

    #[test]
    fn only_our_tokens_leave_authorization() {
        for ours in [
            "Bearer rsp_abc",
            "bearer   rsp_abc ",
            "BEARER\trsp_x",
            "Bearer RSP_x",
        ] {
            assert!(is_our_authorization(ours.as_bytes()), "{ours}");
        }
        for theirs in [
            "Basic dXNlcjpwdw==",
            "Bearer eyJhbGciOi",
            "Bearer",
            "rsp_abc",
            "Token rsp_x",
        ] {
            assert!(!is_our_authorization(theirs.as_bytes()), "{theirs}");
        }
    }

    #[test]
    fn planted_session_cookies_are_recognised() {
        for ours in [
            "rsp_session=evil; Path=/",
            "__Host-rsp_session=evil; Secure; Path=/",
            "__host-rsp_session=evil",
            " RSP_SESSION =x",
            "__Secure-rsp_session=x; Secure",
        ] {
            assert!(is_our_set_cookie(ours.as_bytes()), "{ours}");
        }
        for theirs in [
            "app=1; Path=/",
            "rsp_session",
            "x=rsp_session=1",
            "session=rsp_session",
        ] {
            assert!(!is_our_set_cookie(theirs.as_bytes()), "{theirs}");
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host_name("Admin.Example.org:8443"), "Admin.Example.org");
        assert_eq!(host_name("admin.example.org."), "admin.example.org");
        assert_eq!(host_name("[::1]:80"), "[::1]");
        assert_eq!(host_name("[::1]"), "[::1]");
        assert_eq!(host_name("10.0.0.1"), "10.0.0.1");
        assert!(host_header_ok(true, 1));
        assert!(!host_header_ok(true, 0));
        assert!(!host_header_ok(true, 2));
        assert!(host_header_ok(false, 0));
        assert!(!host_header_ok(false, 2));

        let open = Isolation::default();
        assert!(open.host_allows(None, true, "/api") && open.host_allows(None, false, "/a"));
        let split = Isolation {
            admin_host: Some("admin.example.org".into()),
            csp_sandbox: true,
        };
        assert!(split.host_allows(Some("ADMIN.example.org:443"), true, "/api/users"));
        assert!(!split.host_allows(Some("apps.example.org"), true, "/api/users"));
        assert!(!split.host_allows(None, true, "/api/users"));
        assert!(split.host_allows(Some("apps.example.org"), false, "/slug/"));
        assert!(split.host_allows(None, false, "/slug/"));
        assert!(!split.host_allows(Some("admin.example.org"), false, "/slug/"));
        assert!(split.host_allows(
            Some("apps.example.org"),
            true,
            "/.well-known/acme-challenge/tok"
        ));
        assert_eq!(split.csp(), Some(SANDBOX_CSP));
    }
}
