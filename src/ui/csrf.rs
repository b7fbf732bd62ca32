//! Per-session CSRF tokens for the admin UI, on top of the Fetch-Metadata check of
//! [`crate::api::csrf`] (which alone would trust any same-site page, and older
//! browsers that send neither header).
//!
//! **Token.** `HMAC-SHA256(key = session id, "rsp-csrf-v1 session")`, hex. The session
//! id is the HttpOnly cookie no page script can read, so another origin cannot compute
//! the token; one session's token is useless with another session's cookie; the token
//! does not reveal the id (HMAC is one-way). No server secret: one would add nothing
//! (whoever holds the session id holds the session), and without one a page stays
//! valid across a restart or a graceful upgrade, as its session does. Before login
//! there is no session: `GET /login` sets a random `rsp_login_csrf` cookie and the
//! login form carries the same HMAC keyed by that cookie ("rsp-csrf-v1 login").
//!
//! **Check.** [`guard`] runs on every UI route (layered in `ui::routes`, so pages added
//! later are covered without doing anything): a request with a state-changing method
//! must pass `api::csrf::check` and carry the token, as header `X-CSRF-Token` (htmx:
//! `hx-headers` on `<body>`) or as form field `csrf` (urlencoded; multipart: the first
//! part, so an upload is not read into memory to find it).
//! Compared in constant time. Otherwise: the 403 page, and the handler never runs.

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

/// HMAC keyed by the cookie value, over a label that keeps the two kinds of token
/// apart.
fn mac(label: &str, cookie_value: &str) -> String {
    // HMAC takes keys of any length; this cannot fail (and an empty token never
    // matches, see `same`).
    let Ok(mut m) = Hmac::<Sha256>::new_from_slice(cookie_value.as_bytes()) else {
        return String::new();
    };
    m.update(b"rsp-csrf-v1 ");
    m.update(label.as_bytes());
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
    let limit = state.limits.upload_max_bytes() as usize + 64 * 1024;
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
                     an earlier login). Reload the page and try again.";

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
    // The boundary is case-sensitive: keep the header as sent, compare the type only.
    let ctype = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let kind = ctype.to_ascii_lowercase();
    if kind.starts_with("multipart/form-data") {
        return Ok(multipart_token(req, &ctype).await);
    }
    if !kind.starts_with("application/x-www-form-urlencoded") {
        return Ok((req, None));
    }
    let (parts, body) = req.into_parts();
    // Non-upload bodies are already in memory (`read_first`); an urlencoded post to an
    // upload path is bounded by the upload limit.
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            return Err(error_page(
                &parts.headers,
                StatusCode::BAD_REQUEST,
                "Bad request",
                "The request body could not be read to its end, or it is over the size limit."
                    .into(),
            ))
        }
    };
    let token = form_urlencoded_field(&bytes, FIELD);
    Ok((Request::from_parts(parts, Body::from(bytes)), token))
}

fn form_urlencoded_field(body: &[u8], name: &str) -> Option<String> {
    form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// How much of a multipart body is read to find its first part.
const FIRST_PART_MAX: usize = 64 * 1024;

/// A multipart body's token is its FIRST part, named `csrf` (our forms put it first).
/// Only that part is read here (at most [`FIRST_PART_MAX`] bytes); the handler gets
/// those bytes followed by the rest of the stream, so an upload still streams to its
/// handler instead of being held in memory.
async fn multipart_token(req: Request, ctype: &str) -> (Request, Option<String>) {
    use futures_util::StreamExt;
    let (parts, body) = req.into_parts();
    let Ok(boundary) = multer::parse_boundary(ctype) else {
        return (Request::from_parts(parts, body), None);
    };
    let end_of_first = format!("\r\n--{boundary}");
    let mut stream = body.into_data_stream();
    let mut prefix = bytes::BytesMut::new();
    while prefix.len() < FIRST_PART_MAX && !contains(&prefix, end_of_first.as_bytes()) {
        match stream.next().await {
            Some(Ok(chunk)) => prefix.extend_from_slice(&chunk),
            Some(Err(_)) | None => break,
        }
    }
    let prefix = prefix.freeze();
    let token = first_field(boundary, prefix.clone()).await;
    let rest =
        futures_util::stream::once(async move { Ok::<_, axum::Error>(prefix) }).chain(stream);
    (Request::from_parts(parts, Body::from_stream(rest)), token)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The value of the first part if it is the `csrf` field (multer directly: axum's
/// extractor would want the whole body).
async fn first_field(boundary: String, prefix: Bytes) -> Option<String> {
    let stream = futures_util::stream::once(async move { Ok::<_, std::io::Error>(prefix) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let field = mp.next_field().await.ok()??;
    if field.name() != Some(FIELD) {
        return None;
    }
    field.text().await.ok()
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

    #[tokio::test]
    async fn multipart_first_part_read_and_body_kept_whole() {
        let b = "XyZBoundary9";
        let body = format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\ntok123\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.R\"\r\n\r\n{}\r\n--{b}--\r\n",
            "y".repeat(300_000)
        );
        // Sent in small chunks, as a socket would.
        let chunks: Vec<Result<Bytes, std::io::Error>> = body
            .as_bytes()
            .chunks(1000)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        let req = Request::builder()
            .body(Body::from_stream(futures_util::stream::iter(chunks)))
            .unwrap();
        let (req, token) =
            multipart_token(req, &format!("multipart/form-data; boundary={b}")).await;
        assert_eq!(token.as_deref(), Some("tok123"));
        let rebuilt = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(rebuilt, body.as_bytes());
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
