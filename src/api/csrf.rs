//! Cross-site request forgery defence on Fetch Metadata, the rule of Go's
//! `http.CrossOriginProtection`. One piece for the REST API and the admin UI.
//!
//! A state-changing request (anything but GET, HEAD, OPTIONS) that a browser could
//! have sent on its own — authenticated by the session cookie, or a login — must come
//! from one of our own pages:
//!
//! 1. `Sec-Fetch-Site` present (every current browser sends it): `same-origin` or
//!    `none` (typed URL, bookmark) passes; `same-site`, `cross-site` or anything else
//!    is refused.
//! 2. Otherwise `Origin` present (older browsers): it must name the host the request
//!    came to (`X-Forwarded-Host`, which our proxy sets from the client's `Host`, else
//!    `Host`). `Origin: null` — what a sandboxed app page or a privacy-redirected form
//!    sends — is refused.
//! 3. Neither header: not a browser (curl with a cookie jar, scripts), passes. No
//!    browser omits both on a cross-origin state-changing request.
//!
//! Only host and port are compared, not the scheme (as Go does): behind a
//! TLS-terminating reverse proxy we see `http` while the page is `https`. A port that
//! is its scheme's default counts as left out (the Origin's own scheme;
//! `X-Forwarded-Proto` for the request), so `https://h` matches `Host: h` and
//! `https://h:443` matches `Host: h:443` over TLS, while `http://h` does not match
//! `Host: h:8880`.
//!
//! Bearer-token requests are exempt: a browser never attaches our token by itself,
//! and a cross-origin page cannot add an `Authorization` header without a CORS
//! preflight, which we never grant.
//!
//! **The UI's per-session tokens go on top, not instead.** A UI handler extracts
//! [`SameOrigin`] (or calls [`check`]); on [`Passed::StateChanging`] it then compares
//! the form's/htmx header's token with the session's, and refuses with the same 403
//! shape ([`Refusal`]) on a mismatch. [`Passed::SafeMethod`] needs no token.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};

use super::error::ApiError;
use crate::service::ServiceError;

/// Why a request was allowed through; the UI's token check keys on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passed {
    /// GET, HEAD or OPTIONS: must not change anything, so nothing to check.
    SafeMethod,
    /// State-changing and, by Fetch Metadata or `Origin`, from our own origin.
    StateChanging,
    /// State-changing with neither `Sec-Fetch-Site` nor `Origin`: not a browser.
    NotBrowser,
}

/// A refused request: 403 `{"error":"Cross-origin request refused: …"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What was wrong, e.g. `Sec-Fetch-Site is "cross-site"`.
    pub reason: String,
}

impl Refusal {
    fn new(reason: impl Into<String>) -> Self {
        Refusal {
            reason: reason.into(),
        }
    }

    /// The message for the client: what was refused and what to do instead.
    pub fn message(&self) -> String {
        format!(
            "Cross-origin request refused: {}. Changes made with the session cookie must \
             come from this server's own pages; scripts and other sites should use an API \
             token (Authorization: Bearer) instead",
            self.reason
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        ApiError(ServiceError::Forbidden(r.message()))
    }
}

/// Decides whether a request a browser may have sent on its own is allowed. Pure:
/// looks only at the method and the headers (see the module doc for the rule).
pub fn check(method: &Method, headers: &HeaderMap) -> Result<Passed, Refusal> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(Passed::SafeMethod);
    }
    if let Some(site) = headers.get("sec-fetch-site") {
        return match site.to_str() {
            Ok(v) if v.eq_ignore_ascii_case("same-origin") || v.eq_ignore_ascii_case("none") => {
                Ok(Passed::StateChanging)
            }
            Ok(v) => Err(Refusal::new(format!("Sec-Fetch-Site is {v:?}"))),
            Err(_) => Err(Refusal::new("Sec-Fetch-Site is not readable")),
        };
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(Passed::NotBrowser);
    };
    let origin = origin
        .to_str()
        .map_err(|_| Refusal::new("Origin is not readable"))?
        .trim();
    if origin.eq_ignore_ascii_case("null") {
        return Err(Refusal::new(
            "Origin is \"null\" (a sandboxed or opaque page)",
        ));
    }
    let Some(from) = origin_host_port(origin) else {
        return Err(Refusal::new(format!("Origin {origin:?} is not an origin")));
    };
    match request_host_port(headers) {
        Some(to) if to == from => Ok(Passed::StateChanging),
        Some(_) => Err(Refusal::new(format!(
            "Origin {origin:?} is not this server"
        ))),
        None => Err(Refusal::new(format!(
            "Origin {origin:?} cannot be compared: the request names no host"
        ))),
    }
}

/// Lowercase host and port, the port `None` when it is its scheme's default.
type HostPort = (String, Option<u16>);

fn host_port(authority: &http::uri::Authority, scheme: &str) -> HostPort {
    let port = authority
        .port_u16()
        .filter(|p| Some(*p) != default_port(scheme));
    (authority.host().to_ascii_lowercase(), port)
}

/// Host and port of an origin `scheme://host[:port]` (http or https).
fn origin_host_port(origin: &str) -> Option<HostPort> {
    let uri: http::Uri = origin.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    // An origin has no user info and no path.
    if authority.as_str().contains('@') || !matches!(uri.path(), "" | "/") {
        return None;
    }
    default_port(scheme)?;
    Some(host_port(authority, scheme))
}

/// Host and port the request was addressed to. `X-Forwarded-Host` first: only our
/// proxy reaches the control plane, and it always overwrites that header.
fn request_host_port(headers: &HeaderMap) -> Option<HostPort> {
    let host = headers
        .get("x-forwarded-host")
        .or_else(|| headers.get(header::HOST))?
        .to_str()
        .ok()?;
    let authority: http::uri::Authority = host.trim().parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let scheme = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("http");
    Some(host_port(&authority, scheme))
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case("https") {
        Some(443)
    } else if scheme.eq_ignore_ascii_case("http") {
        Some(80)
    } else {
        None
    }
}

/// Extractor form of [`check`] for routes that need it whatever the credential
/// (login: a forged cross-site login would sign the victim into the attacker's
/// account). Cookie-authenticated routes get it through `Auth`.
pub struct SameOrigin(pub Passed);

impl<S: Send + Sync> FromRequestParts<S> for SameOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(SameOrigin(check(&parts.method, &parts.headers)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn post(pairs: &[(&'static str, &str)]) -> Result<Passed, Refusal> {
        check(&Method::POST, &headers(pairs))
    }

    #[test]
    fn safe_methods_pass_whatever_the_headers() {
        let h = headers(&[("sec-fetch-site", "cross-site"), ("origin", "null")]);
        for m in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(check(&m, &h), Ok(Passed::SafeMethod), "{m}");
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(check(&m, &h).is_err(), "{m}");
        }
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        assert_eq!(
            post(&[("sec-fetch-site", "same-origin")]),
            Ok(Passed::StateChanging)
        );
        assert_eq!(
            post(&[("sec-fetch-site", "none")]),
            Ok(Passed::StateChanging)
        );
        for v in ["cross-site", "same-site", "bogus", ""] {
            let r = post(&[("sec-fetch-site", v)]).unwrap_err();
            assert!(r.reason.contains("Sec-Fetch-Site"), "{v}: {r:?}");
        }
        // Present and same-origin wins over an Origin we would not match.
        assert!(post(&[
            ("sec-fetch-site", "same-origin"),
            ("origin", "http://elsewhere.example"),
            ("host", "here.example")
        ])
        .is_ok());
        // And cross-site loses even with a matching Origin.
        assert!(post(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://here.example"),
            ("host", "here.example")
        ])
        .is_err());
    }

    #[test]
    fn no_browser_headers_is_not_a_browser() {
        assert_eq!(post(&[]), Ok(Passed::NotBrowser));
        assert_eq!(post(&[("host", "here.example")]), Ok(Passed::NotBrowser));
    }

    #[test]
    fn origin_must_name_the_host_the_request_came_to() {
        let ok = [
            (&[("origin", "http://here.example"), ("host", "here.example")][..]),
            &[
                ("origin", "https://HERE.example"),
                ("host", "here.example:443"),
                ("x-forwarded-proto", "https"),
            ],
            &[
                ("origin", "http://here.example:8880"),
                ("host", "here.example:8880"),
            ],
            &[
                ("origin", "http://127.0.0.1:8880"),
                ("host", "127.0.0.1:8880"),
            ],
            &[("origin", "http://[::1]:8880"), ("host", "[::1]:8880")],
            // X-Forwarded-Host (set by our proxy) is what counts.
            &[
                ("origin", "http://here.example"),
                ("x-forwarded-host", "here.example"),
                ("host", "localhost"),
            ],
            // Scheme is not compared (TLS terminated in front of us): host and port are.
            &[("origin", "https://here.example"), ("host", "here.example")],
            &[
                ("origin", "http://here.example"),
                ("host", "here.example"),
                ("x-forwarded-proto", "https"),
            ],
            &[
                ("origin", "https://here.example:8443"),
                ("host", "here.example:8443"),
            ],
        ];
        for h in ok {
            assert_eq!(post(h), Ok(Passed::StateChanging), "{h:?}");
        }
        let refused = [
            (&[("origin", "http://evil.example"), ("host", "here.example")][..]),
            &[("origin", "null"), ("host", "here.example")],
            &[("origin", "NULL")],
            &[
                ("origin", "http://here.example:8081"),
                ("host", "here.example:8880"),
            ],
            &[
                ("origin", "http://here.example"),
                ("host", "here.example:8880"),
            ],
            &[
                ("origin", "http://here.example.evil.example"),
                ("host", "here.example"),
            ],
            &[
                ("origin", "http://evil.example"),
                ("x-forwarded-host", "here.example"),
                ("host", "evil.example"),
            ],
            &[("origin", "here.example"), ("host", "here.example")],
            &[
                ("origin", "http://u@here.example"),
                ("host", "here.example"),
            ],
            &[
                ("origin", "http://here.example/path"),
                ("host", "here.example"),
            ],
            &[("origin", "ftp://here.example"), ("host", "here.example")],
            // Port 443 named over plain http is not the https default.
            &[
                ("origin", "https://here.example"),
                ("host", "here.example:443"),
            ],
            // No host to compare with: refused rather than guessed.
            &[("origin", "http://here.example")],
        ];
        for h in refused {
            let r = post(h).unwrap_err();
            assert!(r.reason.contains("Origin"), "{h:?}: {r:?}");
        }
    }

    #[test]
    fn refusal_says_what_to_do() {
        let msg = post(&[("origin", "null")]).unwrap_err().message();
        assert!(msg.starts_with("Cross-origin request refused: "), "{msg}");
        assert!(msg.contains("API token"), "{msg}");
    }
}
