//! `/api/users`: user management for admins.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;

use super::dto::{ErrorDto, OkDto, UserDto, UserEnvelope, UsersEnvelope, OK};
use super::error::ApiResult;
use super::extract::{ApiJson, Auth, IdPath, Meta};
use crate::service::users::{CreateUserInput, UpdateUserInput};
use crate::service::{users, AppState};

/// All users (admin only).
#[utoipa::path(get, path = "/api/users", tag = "users", operation_id = "list_users",
    responses((status = 200, body = UsersEnvelope), (status = 401, body = ErrorDto), (status = 403, body = ErrorDto)))]
pub async fn list(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<UsersEnvelope>> {
    let all = users::list(&state, Some(&who)).await?;
    Ok(Json(UsersEnvelope {
        users: all.iter().map(UserDto::from).collect(),
    }))
}

/// Create a user (admin only).
#[utoipa::path(post, path = "/api/users", tag = "users", operation_id = "create_user", request_body = CreateUserInput,
    responses((status = 201, body = UserEnvelope), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 409, body = ErrorDto)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    ApiJson(input): ApiJson<CreateUserInput>,
) -> ApiResult<(StatusCode, Json<UserEnvelope>)> {
    let user = users::create(&state, Some(&who), input, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope {
            user: UserDto::from(&user),
        }),
    ))
}

/// Change a user's role or email, or reset their password (admin only).
#[utoipa::path(put, path = "/api/users/{id}", tag = "users", operation_id = "update_user", request_body = UpdateUserInput,
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, body = UserEnvelope), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
              (status = 409, description = "Would demote the last admin", body = ErrorDto)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
    ApiJson(input): ApiJson<UpdateUserInput>,
) -> ApiResult<Json<UserEnvelope>> {
    let user = users::update(&state, Some(&who), id, input, &meta).await?;
    Ok(Json(UserEnvelope {
        user: UserDto::from(&user),
    }))
}

/// Delete a user with their sessions and tokens (admin only).
#[utoipa::path(delete, path = "/api/users/{id}", tag = "users", operation_id = "delete_user",
    params(("id" = uuid::Uuid, Path, description = "User id")),
    responses((status = 200, body = OkDto), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
              (status = 409, description = "Last admin, or the user still owns apps", body = ErrorDto)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
) -> ApiResult<Json<OkDto>> {
    users::delete(&state, &who, id, &meta).await?;
    Ok(Json(OK))
}
