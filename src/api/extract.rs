//! Request extractors: who is asking, facts about the request, and bodies/ids whose
//! rejections become the contract's 400s.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use serde::de::DeserializeOwned;
use uuid::Uuid;

use super::error::ApiError;
use crate::model::TokenScope;
use crate::service::{auth, AppState, ClientMeta, Principal};

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "rsp_session";

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
                Some(p) if p.scope != TokenScope::Full => {
                    Err(ApiError::from(crate::service::ServiceError::Forbidden(
                        "This token is limited to /metrics; use a full token or log in".into(),
                    )))
                }
                Some(p) => Ok(Auth(p)),
                None => Err(ApiError::unauthenticated()),
            };
        }
        if let Some(id) = cookie(&parts.headers, SESSION_COOKIE) {
            if let Some(p) = auth::session_principal(state, id).await? {
                return Ok(Auth(p));
            }
        }
        Err(ApiError::unauthenticated())
    }
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
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
        let tls = h
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("https"));
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
