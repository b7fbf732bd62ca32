//! `/api/auth/*`: login, logout, me, password, tokens.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::csrf::SameOrigin;
use super::dto::{OkDto, TokenDto, TokenEnvelope, TokensEnvelope, UserDto, UserEnvelope, OK};
use super::error::ApiResult;
use super::extract::{cookie, ApiJson, Auth, IdPath, Meta};
use crate::auth::cookie::session_cookie_name;
use crate::service::auth::{ChangePasswordInput, CreateTokenInput, LoginInput};
use crate::service::{auth, AppState};

/// The session cookie for a request over TLS (`__Host-rsp_session`: Secure, Path=/, no
/// Domain, as that prefix requires) or plain HTTP (`rsp_session`).
pub(crate) fn session_cookie(value: &str, max_age_secs: u64, tls: bool) -> Option<HeaderValue> {
    set_cookie(session_cookie_name(tls), value, max_age_secs, tls)
}

fn set_cookie(name: &str, value: &str, max_age_secs: u64, tls: bool) -> Option<HeaderValue> {
    // A `__Host-` cookie is only accepted (and so only cleared) with `Secure`.
    let secure = if tls || name.starts_with("__Host-") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Lax; Path=/; Max-Age={max_age_secs}{secure}"
    ))
    .ok()
}

/// Log in with a username and password; sets the session cookie.
///
/// A browser's cross-origin login is refused (403), like every cookie-authenticated
/// change: a forged login would sign the victim into an account of the attacker's.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginInput, security(()),
    responses((status = 200, body = UserEnvelope), (status = 400, body = super::dto::ErrorDto),
              (status = 401, description = "Invalid credentials", body = super::dto::ErrorDto),
              (status = 403, description = "Cross-origin request refused (Sec-Fetch-Site or Origin)", body = super::dto::ErrorDto),
              (status = 429, description = "Too many attempts from this address", body = super::dto::ErrorDto)))]
pub async fn login(
    State(state): State<AppState>,
    _: SameOrigin,
    Meta(meta): Meta,
    ApiJson(input): ApiJson<LoginInput>,
) -> ApiResult<Response> {
    let (user, session) = auth::login(&state, input, &meta).await?;
    let mut resp = Json(UserEnvelope {
        user: UserDto::from(&user),
    })
    .into_response();
    if let Some(c) = session_cookie(&session.id, state.limits.session_ttl().as_secs(), meta.tls) {
        resp.headers_mut().insert(header::SET_COOKIE, c);
    }
    Ok(resp)
}

/// End the current session (server side) and clear the cookie (the one this scheme
/// uses, and the other name too if the request carried it).
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth",
    responses((status = 200, body = OkDto), (status = 401, body = super::dto::ErrorDto)))]
pub async fn logout(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    headers: HeaderMap,
) -> ApiResult<Response> {
    auth::logout(&state, &who, &meta).await?;
    let mut resp = Json(OK).into_response();
    clear_session_cookies(&mut resp, &headers, meta.tls);
    Ok(resp)
}

/// Clear the session cookie this scheme uses, and the other name too if the request
/// carried it (API and UI logout).
pub(crate) fn clear_session_cookies(resp: &mut Response, headers: &HeaderMap, tls: bool) {
    if let Some(c) = session_cookie("", 0, tls) {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    let other = session_cookie_name(!tls);
    if cookie(headers, other).is_some() {
        if let Some(c) = set_cookie(other, "", 0, tls) {
            resp.headers_mut().append(header::SET_COOKIE, c);
        }
    }
}

/// The authenticated user.
#[utoipa::path(get, path = "/api/auth/me", tag = "auth",
    responses((status = 200, body = UserEnvelope), (status = 401, body = super::dto::ErrorDto)))]
pub async fn me(Auth(who): Auth) -> Json<UserEnvelope> {
    Json(UserEnvelope {
        user: UserDto::from(&who.user),
    })
}

/// Change the caller's password; the caller's other sessions end. With
/// `revokeTokens: true` all the caller's API tokens are revoked too (default: they
/// keep working).
#[utoipa::path(put, path = "/api/auth/password", tag = "auth", request_body = ChangePasswordInput,
    responses((status = 200, body = OkDto), (status = 400, body = super::dto::ErrorDto),
              (status = 401, body = super::dto::ErrorDto),
              (status = 403, description = "Current password is incorrect", body = super::dto::ErrorDto)))]
pub async fn change_password(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    ApiJson(input): ApiJson<ChangePasswordInput>,
) -> ApiResult<Json<OkDto>> {
    auth::change_password(&state, &who, input, &meta).await?;
    Ok(Json(OK))
}

/// Create an API token. The raw token is in this response only.
#[utoipa::path(post, path = "/api/auth/tokens", tag = "auth", request_body = CreateTokenInput,
    responses((status = 201, body = TokenEnvelope), (status = 400, body = super::dto::ErrorDto),
              (status = 401, body = super::dto::ErrorDto)))]
pub async fn create_token(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    ApiJson(input): ApiJson<CreateTokenInput>,
) -> ApiResult<(StatusCode, Json<TokenEnvelope>)> {
    let (token, raw) = auth::create_token(&state, &who, input, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(TokenEnvelope {
            token: TokenDto::new(&token, Some(raw)),
        }),
    ))
}

/// The caller's tokens, oldest first (never the raw token).
#[utoipa::path(get, path = "/api/auth/tokens", tag = "auth",
    responses((status = 200, body = TokensEnvelope), (status = 401, body = super::dto::ErrorDto)))]
pub async fn list_tokens(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<TokensEnvelope>> {
    let tokens = auth::list_tokens(&state, &who).await?;
    Ok(Json(TokensEnvelope {
        tokens: tokens.iter().map(|t| TokenDto::new(t, None)).collect(),
    }))
}

/// Revoke one of the caller's tokens.
#[utoipa::path(delete, path = "/api/auth/tokens/{id}", tag = "auth",
    params(("id" = uuid::Uuid, Path, description = "Token id")),
    responses((status = 200, body = OkDto), (status = 400, body = super::dto::ErrorDto),
              (status = 401, body = super::dto::ErrorDto),
              (status = 404, description = "Token not found (or someone else's)", body = super::dto::ErrorDto)))]
pub async fn delete_token(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
) -> ApiResult<Json<OkDto>> {
    auth::delete_token(&state, &who, id, &meta).await?;
    Ok(Json(OK))
}
