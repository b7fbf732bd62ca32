//! Per-session CSRF tokens for the admin UI, on top of the Fetch-Metadata check of
//! [`crate::api::csrf`] (which alone would trust any same-site page, and older
//! browsers that send neither header).
//!
//! **Token.** `HMAC-SHA256(key, "session:" + session id)`, hex. The session id is the
//! HttpOnly cookie a page script cannot read, so another origin cannot compute the
//! token; one session's token is useless with another session's cookie. The key is
//! random per process: nothing to store or rotate, and a token never outlives the
//! process that issued it (an open page after a restart gets a 403 that says to
//! reload). Before login there is no session: `GET /login` sets a random
//! `rsp_login_csrf` cookie and the login form carries `HMAC(key, "login:" + cookie)`.
//!
//! **Check.** [`guard`] runs on every UI route (layered in `ui::routes`, so pages added
//! later are covered without doing anything): a request with a state-changing method
//! must pass `api::csrf::check` and carry the token, as header `X-CSRF-Token` (htmx:
//! `hx-headers` on `<body>`) or as form field `csrf` (urlencoded or multipart).
//! Compared in constant time. Otherwise: the 403 page, and the handler never runs.

use std::sync::OnceLock;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::error::error_page;
use crate::api::extract::{cookie, session_cookie};
use crate::service::AppState;

/// The pre-login cookie (path `/login`, HttpOnly, SameSite=Strict).
pub const LOGIN_COOKIE: &str = "rsp_login_csrf";
/// The form field and the header that carry the token.
pub const FIELD: &str = "csrf";
pub const HEADER: &str = "x-csrf-token";

fn key() -> &'static [u8; 32] {
    static KEY: OnceLock<[u8; 32]> = OnceLock::new();
    KEY.get_or_init(|| {
        use rand::RngCore;
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        k
    })
}

fn mac(purpose: &str, value: &str) -> String {
    // HMAC takes keys of any length; this cannot fail.
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(key()) else {
        return String::new();
    };
    m.update(purpose.as_bytes());
    m.update(b":");
    m.update(value.as_bytes());
    hex::encode(m.finalize().into_bytes())
}

/// The token of a session (what pages put in their forms).
pub fn session_token(session_id: &str) -> String {
    mac("session", session_id)
}

/// The token of the login form, bound to the `rsp_login_csrf` cookie.
pub fn login_token(cookie_value: &str) -> String {
    mac("login", cookie_value)
}

/// A new random value for the `rsp_login_csrf` cookie.
pub fn new_login_cookie_value() -> String {
    crate::auth::secrets::new_session_id()
}

/// The token a request to `path` must carry: the login form's for `/login` (a browser
/// may still send the cookie of a session that has ended), else its session's.
/// `None`: no such cookie, so no token can be right.
pub fn expected(path: &str, headers: &HeaderMap) -> Option<String> {
    if path == "/login" {
        return cookie(headers, LOGIN_COOKIE).map(login_token);
    }
    session_cookie(headers, forwarded_tls(headers)).map(|(_, sid)| session_token(sid))
}

fn forwarded_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// Constant-time equality; an empty token never matches (not even an empty one).
fn same(a: &str, b: &str) -> bool {
    !b.is_empty() && a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// Middleware: refuse a state-changing UI request without the right token (403 page).
/// Bodies are already read whole by `api::body::read_first` (uploads excepted, which
/// are read here up to the upload limit only when they carry no header token).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    if let Err(r) = crate::api::csrf::check(req.method(), req.headers()) {
        return refused(req.headers(), &r.message());
    }
    let Some(want) = expected(req.uri().path(), req.headers()) else {
        return refused(
            req.headers(),
            "This form has expired or was not sent by this site. Reload the page and try again.",
        );
    };
    if let Some(got) = req.headers().get(HEADER).and_then(|v| v.to_str().ok()) {
        return if same(got, &want) {
            next.run(req).await
        } else {
            refused(req.headers(), STALE)
        };
    }
    let limit = state.config.upload_max_bytes as usize + 64 * 1024;
    let (req, got) = match form_token(req, limit).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match got {
        Some(got) if same(&got, &want) => next.run(req).await,
        _ => refused(req.headers(), STALE),
    }
}

const STALE: &str = "The form's security token is missing or out of date (the page may be from \
                     before a restart or another login). Reload the page and try again.";

fn refused(headers: &HeaderMap, message: &str) -> Response {
    error_page(
        headers,
        StatusCode::FORBIDDEN,
        "Request refused",
        message.to_string(),
    )
}

/// The `csrf` field of a urlencoded or multipart body, and the request rebuilt with
/// the same body for the handler.
async fn form_token(req: Request, limit: usize) -> Result<(Request, Option<String>), Response> {
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let is_form = ctype.starts_with("application/x-www-form-urlencoded");
    let is_multipart = ctype.starts_with("multipart/form-data");
    if !is_form && !is_multipart {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    // Uploads are not pre-read by `read_first`: bound them by the upload limit (a
    // form post from htmx or app.js sends the header and never gets here).
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => return Err(error_page(
            &parts.headers,
            StatusCode::BAD_REQUEST,
            "Bad request",
            "The request body could not be read to its end, or it is over the upload size limit."
                .into(),
        )),
    };
    let token = if is_form {
        form_urlencoded_field(&bytes, FIELD)
    } else {
        multipart_field(&ctype, bytes.clone()).await
    };
    Ok((Request::from_parts(parts, Body::from(bytes)), token))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The first `csrf` part of a multipart body (multer directly: axum's extractor
/// would apply its 2 MB default limit to an upload).
async fn multipart_field(ctype: &str, body: Bytes) -> Option<String> {
    let boundary = multer::parse_boundary(ctype).ok()?;
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    while let Ok(Some(field)) = mp.next_field().await {
        if field.name() == Some(FIELD) {
            return field.text().await.ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_differ_by_session_and_purpose() {
        let a = session_token("aaaa");
        assert_eq!(a, session_token("aaaa"));
        assert_ne!(a, session_token("aaab"));
        assert_ne!(a, login_token("aaaa"));
        assert_eq!(a.len(), 64);
        assert!(same(&a, &a.clone()));
        assert!(!same(&a, &a[..63]));
        assert!(!same("", ""));
    }

    #[test]
    fn urlencoded_field() {
        assert_eq!(
            form_urlencoded_field(b"a=1&csrf=x%2By&b=2", "csrf").as_deref(),
            Some("x+y")
        );
        assert_eq!(form_urlencoded_field(b"a=1", "csrf"), None);
    }
}
