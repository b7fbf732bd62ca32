//! Login and logout pages, and [`UiUser`]: the logged-in person behind a page, or a
//! redirect to `/login?next=<where they were going>`.

use askama::Template;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::csrf;
use super::error::UiError;
use super::page::{is_htmx, Nav, Page};
use crate::api::auth::{clear_session_cookies, session_cookie};
use crate::api::extract::{cookie, session_cookie as session_cookie_of, Meta};
use crate::service::auth::LoginInput;
use crate::service::{auth, AppState, Principal, ServiceError};

/// The logged-in user of a UI request (session cookie only; API tokens are for
/// scripts). Logged out: 303 to `/login?next=…` (for htmx: `HX-Redirect`, so the
/// whole page goes to the login form rather than the form into a fragment).
pub struct UiUser {
    pub who: Principal,
    /// The session's CSRF token, for forms (`csrf` field) and htmx (`X-CSRF-Token`).
    pub csrf: String,
    /// The request is an htmx request: answer the partial.
    pub hx: bool,
    /// The htmx request swaps `#main` (`HX-Target: main`): a page change, so a
    /// stale flash message is cleared. A polled fragment leaves it alone.
    pub hx_main: bool,
}

impl UiUser {
    /// The page context for a page of this user.
    pub fn page(&self, title: impl Into<String>, nav: Nav) -> Page {
        let mut p = Page::new(title, &self.who, self.csrf.clone(), nav, self.hx);
        p.clear_flash = self.hx_main;
        p
    }

    /// A service error as an error page in this user's layout.
    pub fn error(&self, e: impl Into<UiError>) -> UiError {
        let e = e.into();
        let title = e.heading.clone();
        e.in_page(self.page(title, Nav::None))
    }

    /// Admin-only pages: a 403 page (not a redirect) for everyone else.
    pub fn require_admin(&self) -> Result<(), UiError> {
        if self.who.is_admin() {
            Ok(())
        } else {
            Err(self.error(UiError::forbidden()))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.who.is_admin()
    }
}

impl FromRequestParts<AppState> for UiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let hx = is_htmx(&parts.headers);
        if let Some(who) = current(state, &parts.headers).await.map_err(|e| {
            let mut e = UiError::from(e);
            e.page = Some(Box::new(Page::bare(e.heading.clone(), hx)));
            e.into_response()
        })? {
            let csrf = who
                .session_id
                .as_deref()
                .map(csrf::session_token)
                .unwrap_or_default();
            let hx_main = hx && parts.headers.get("hx-target").is_some_and(|v| v == "main");
            return Ok(UiUser {
                who,
                csrf,
                hx,
                hx_main,
            });
        }
        Err(to_login(parts, hx))
    }
}

/// The user behind the request's session cookie, if any (no redirect).
pub async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<Principal>, ServiceError> {
    let tls = headers
        .get("x-forwarded-proto")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"));
    match session_cookie_of(headers, tls) {
        Some((_, id)) => auth::session_principal(state, id).await,
        None => Ok(None),
    }
}

/// Where a logged-out visitor goes: the login page, then back here.
fn to_login(parts: &Parts, hx: bool) -> Response {
    // For htmx the page the person is on is what to come back to, not the fragment.
    let back = if hx {
        parts
            .headers
            .get("hx-current-url")
            .and_then(|v| v.to_str().ok())
            .and_then(|u| u.parse::<axum::http::Uri>().ok())
            .and_then(|u| u.path_and_query().map(|pq| pq.as_str().to_string()))
    } else if parts.method == axum::http::Method::GET {
        parts.uri.path_and_query().map(|pq| pq.as_str().to_string())
    } else {
        None
    };
    let location = match back.as_deref().and_then(safe_next) {
        Some(next) if next != "/" => format!("/login?next={}", encode(next)),
        _ => "/login".to_string(),
    };
    if hx {
        let mut resp = StatusCode::UNAUTHORIZED.into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert("hx-redirect", v);
        }
        resp
    } else {
        Redirect::to(&location).into_response()
    }
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `next` is followed only to a path on this server: it starts with `/`, and not
/// `//` or `/\` (which browsers read as another host); no control characters or
/// whitespace (browsers drop tabs and newlines, which would turn `/\t/evil` into
/// `//evil`), no backslashes anywhere.
pub fn safe_next(next: &str) -> Option<&str> {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control() || c.is_whitespace());
    ok.then_some(next)
}

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
}

#[derive(Template)]
#[template(path = "pages/login.html")]
struct LoginContent<'a> {
    csrf: &'a str,
    next: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct NextQuery {
    next: Option<String>,
}

fn login_cookie(value: &str, max_age: u64, tls: bool) -> Option<HeaderValue> {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; HttpOnly; SameSite=Strict; Path=/login; Max-Age={max_age}{secure}",
        csrf::LOGIN_COOKIE
    ))
    .ok()
}

/// The login form; whoever is already logged in goes on to `next`.
async fn login_page(
    State(state): State<AppState>,
    Meta(meta): Meta,
    Query(q): Query<NextQuery>,
    headers: HeaderMap,
) -> Response {
    let next = q.next.as_deref().and_then(safe_next).unwrap_or("/");
    if let Ok(Some(_)) = current(&state, &headers).await {
        return Redirect::to(next).into_response();
    }
    render_login(&headers, meta.tls, next, "", None, StatusCode::OK)
}

/// The form, with the login cookie set when the browser has none yet.
fn render_login(
    headers: &HeaderMap,
    tls: bool,
    next: &str,
    username: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let (value, fresh) = match cookie(headers, csrf::LOGIN_COOKIE) {
        Some(v) if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => {
            (v.to_string(), false)
        }
        _ => (csrf::new_login_cookie_value(), true),
    };
    let token = csrf::login_token(&value);
    let mut resp = Page::bare("Log in", false)
        .status(status)
        .render(&LoginContent {
            csrf: &token,
            next,
            username,
            error,
        });
    if fresh {
        if let Some(c) = login_cookie(&value, 3600, tls) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
    resp
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct LoginForm {
    username: String,
    password: String,
    next: String,
}

/// Check the credentials (the same service as `POST /api/auth/login`: rate limit,
/// audit); errors inline with the form; success → session cookie, 303 to `next`.
async fn login(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let next = safe_next(&form.next).unwrap_or("/").to_string();
    let input = LoginInput {
        username: form.username.clone(),
        password: form.password,
    };
    match auth::login(&state, input, &meta).await {
        Ok((_, session)) => {
            let mut resp = Redirect::to(&next).into_response();
            if let Some(c) =
                session_cookie(&session.id, state.limits.session_ttl().as_secs(), meta.tls)
            {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            if let Some(c) = login_cookie("", 0, meta.tls) {
                resp.headers_mut().append(header::SET_COOKIE, c);
            }
            resp
        }
        Err(e) => {
            let (status, message, retry) = match &e {
                ServiceError::Unauthorized(_) => (
                    StatusCode::UNAUTHORIZED,
                    "Wrong username or password.".to_string(),
                    None,
                ),
                ServiceError::TooManyRequests { retry_after } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "Too many login attempts from your address. Wait {} s, then try again.",
                        retry_after.as_secs().max(1)
                    ),
                    Some(retry_after.as_secs().max(1)),
                ),
                ServiceError::BadRequest { details, .. } => (
                    StatusCode::BAD_REQUEST,
                    format!("Enter your username and password ({}).", details.join("; ")),
                    None,
                ),
                _ => return UiError::from(e).into_response(),
            };
            let mut resp = render_login(
                &headers,
                meta.tls,
                &next,
                &form.username,
                Some(&message),
                status,
            );
            if let Some(secs) = retry.and_then(|s| HeaderValue::from_str(&s.to_string()).ok()) {
                resp.headers_mut().insert(header::RETRY_AFTER, secs);
            }
            resp
        }
    }
}

/// End the session (server side) and clear the cookie; back to the login page.
async fn logout(
    State(state): State<AppState>,
    Meta(meta): Meta,
    headers: HeaderMap,
    user: UiUser,
) -> Response {
    if let Err(e) = auth::logout(&state, &user.who, &meta).await {
        return user.error(e).into_response();
    }
    let mut resp = if user.hx {
        let mut r = StatusCode::NO_CONTENT.into_response();
        r.headers_mut()
            .insert("hx-redirect", HeaderValue::from_static("/login"));
        r
    } else {
        Redirect::to("/login").into_response()
    };
    clear_session_cookies(&mut resp, &headers, meta.tls);
    resp
}

/// An `{id}` path segment that must be a UUID; anything else is the 404 page (a
/// mistyped address is "not found" to a person, not a 400).
pub struct UiId(pub uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for UiId {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let hx = is_htmx(&parts.headers);
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| not_found_bare(hx))?;
        uuid::Uuid::parse_str(&raw)
            .map(UiId)
            .map_err(|_| not_found_bare(hx))
    }
}

fn not_found_bare(hx: bool) -> Response {
    UiError::not_found()
        .in_page(Page::bare("Not found", hx))
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_only_local_paths() {
        for ok in [
            "/",
            "/apps",
            "/apps/1?x=%2F%2Fy",
            "/settings/audit?before=3",
        ] {
            assert_eq!(safe_next(ok), Some(ok), "{ok}");
        }
        for bad in [
            "",
            "apps",
            "//evil.example",
            "/\\evil.example",
            "/a\\b",
            "https://evil.example",
            "/\t/evil.example",
            "/\r\nSet-Cookie: x=1",
            "/ /x",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_next(bad), None, "{bad:?}");
        }
    }
}
