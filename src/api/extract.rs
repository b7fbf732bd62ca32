//! Request extractors: who is asking, facts about the request, and bodies/ids whose
//! rejections become the contract's 400s.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::auth::cookie::session_cookie_name;
use crate::service::{auth, AppState, ClientMeta, Principal};

/// Name of the session cookie over plain HTTP (over TLS: `__Host-rsp_session`, see
/// [`crate::auth::cookie`]).
pub use crate::auth::cookie::SESSION_COOKIE;

/// The authenticated caller (session cookie or bearer token); 401 otherwise.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(raw) = bearer(&parts.headers) {
            return match auth::token_principal(state, raw).await? {
                Some(p) => Ok(Auth(p)),
                None => Err(ApiError::unauthenticated()),
            };
        }
        if let Some((_, id)) = session_cookie(&parts.headers, forwarded_tls(&parts.headers)) {
            if let Some(p) = auth::session_principal(state, id).await? {
                return Ok(Auth(p));
            }
        }
        Err(ApiError::unauthenticated())
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Our session cookie as sent: (name, value). Both names are read; the one for this
/// scheme first (`__Host-rsp_session` over TLS), then the other (a session begun before
/// TLS was turned on, or the reverse).
pub fn session_cookie(headers: &HeaderMap, tls: bool) -> Option<(&'static str, &str)> {
    [session_cookie_name(tls), session_cookie_name(!tls)]
        .into_iter()
        .find_map(|name| cookie(headers, name).map(|v| (name, v)))
}

/// The request came over TLS (`X-Forwarded-Proto`, set by our proxy; see [`Meta`]).
fn forwarded_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"))
}

/// The value of cookie `name`, if sent.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Client address and scheme, as set by our own proxy in front. The control-plane
/// socket is reachable only by the proxy, which overwrites these headers, so they
/// can be trusted here.
pub struct Meta(pub ClientMeta);

impl<S: Send + Sync> FromRequestParts<S> for Meta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let h = &parts.headers;
        let ip = h
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty());
        let tls = forwarded_tls(h);
        Ok(Meta(ClientMeta { ip, tls, now: None }))
    }
}

/// A JSON body; every rejection (syntax, wrong types, missing content type) is a 400.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(ApiError::bad_request(format!(
                "Invalid request body: {}",
                rejection.body_text()
            ))),
        }
    }
}

/// An `{id}` path segment that must be a UUID (400 otherwise).
pub struct IdPath(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for IdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(raw) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::bad_request("Invalid id: expected a UUID"))?;
        Uuid::parse_str(&raw)
            .map(IdPath)
            .map_err(|_| ApiError::bad_request(format!("Invalid id {raw:?}: expected a UUID")))
    }
}
