//! Request extractors: who is asking, facts about the request, and bodies/ids whose
//! rejections become the contract's 400s.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use serde::de::value::MapAccessDeserializer;
use serde::de::{DeserializeOwned, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;
use std::marker::PhantomData;
use uuid::Uuid;

use super::csrf;
use super::error::ApiError;
use crate::auth::cookie::session_cookie_name;
use crate::model::TokenScope;
use crate::service::{auth, AppState, ClientMeta, Principal, ServiceError};

/// Name of the session cookie over plain HTTP (over TLS: `__Host-rsp_session`, see
/// [`crate::auth::cookie`]).
pub use crate::auth::cookie::SESSION_COOKIE;

/// The authenticated caller (session cookie or bearer token); 401 otherwise. With the
/// cookie, a state-changing request must also pass the CSRF check (`csrf::check`, 403).
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
        if let Some((_, id)) = session_cookie(&parts.headers, forwarded_tls(&parts.headers)) {
            if let Some(p) = auth::session_principal(state, id).await? {
                // A browser sends the cookie on its own, also for a forged request:
                // refuse cross-origin changes before any handler runs.
                csrf::check(&parts.method, &parts.headers)?;
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

/// Request bodies the JSON routes accept (uploads have their own limit).
pub const JSON_BODY_LIMIT: usize = 1024 * 1024;

/// The 413 of a body over [`JSON_BODY_LIMIT`].
pub fn body_too_large() -> ApiError {
    ApiError(ServiceError::PayloadTooLarge(format!(
        "Request body too large: the limit is {} MiB",
        JSON_BODY_LIMIT / (1024 * 1024)
    )))
}

/// A JSON object body. A top-level array, scalar or `null` is refused (serde alone
/// would read `["a","a"]` into a struct, field by position); so are syntax errors,
/// wrong types and `null` for a required field, each a 400 naming the problem and
/// the field. A body over [`JSON_BODY_LIMIT`] is a 413. Unknown fields are ignored,
/// as the original's validator did (docs/architecture.md, "Choices").
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        use axum::extract::rejection::JsonRejection;
        match axum::Json::<Object<T>>::from_request(req, state).await {
            Ok(axum::Json(Object(v))) => Ok(ApiJson(v)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(body_too_large()),
            // axum's data-error text is "Failed to deserialize …: <field>: <problem>";
            // the field and problem are what the client needs.
            Err(JsonRejection::JsonDataError(e)) => {
                let text = e.body_text();
                let detail = text
                    .strip_prefix("Failed to deserialize the JSON body into the target type: ")
                    .unwrap_or(&text);
                Err(ApiError::bad_request(format!(
                    "Invalid request body: {detail}"
                )))
            }
            Err(r) => Err(ApiError::bad_request(format!(
                "Invalid request body: {}",
                r.body_text()
            ))),
        }
    }
}

/// Deserializes `T` only from a JSON object (`deserialize_map`), so a sequence or a
/// scalar at the top level is "invalid type: …, expected a JSON object".
struct Object<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Only<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for Only<T> {
            type Value = T;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map))
            }
        }
        d.deserialize_map(Only(PhantomData)).map(Object)
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
