//! Users (`/users`, admins only): add, change role, reset password, delete. The same
//! service functions as `/api/users` (which refuse to remove or demote the last
//! admin); a refusal shows on the page as an error message.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::auth::UiId;
use super::page::{done_message, fmt_time, Nav};
use super::tokens::DoneQuery;
use super::UiUser;
use crate::api::extract::Meta;
use crate::model::Role;
use crate::service::users::{CreateUserInput, UpdateUserInput};
use crate::service::validate::PASSWORD_MIN;
use crate::service::{users, AppState, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/users", get(list).post(create))
        .route("/users/{id}/role", post(set_role))
        .route("/users/{id}/password", post(reset_password))
        .route("/users/{id}/delete", post(delete))
}

pub struct UserRow {
    pub id: String,
    pub username: String,
    pub is_admin: bool,
    pub is_me: bool,
    pub created: String,
}

#[derive(Template, Default)]
#[template(path = "pages/users.html")]
struct UsersContent {
    csrf: String,
    users: Vec<UserRow>,
    min_len: usize,
    form_username: String,
    form_role: String,
    form_error: Option<String>,
    username_error: Option<String>,
    password_error: Option<String>,
}

/// The page with the current list; `flash` as (kind, message).
async fn page(
    state: &AppState,
    user: &UiUser,
    mut content: UsersContent,
    status: StatusCode,
    flash: Option<(&'static str, String)>,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    let list = match users::list(state, Some(&user.who)).await {
        Ok(l) => l,
        Err(e) => return user.error(e).into_response(),
    };
    content.csrf = user.csrf.clone();
    content.min_len = PASSWORD_MIN;
    content.users = list
        .iter()
        .map(|u| UserRow {
            id: u.id.to_string(),
            username: u.username.clone(),
            is_admin: u.role == Role::Admin,
            is_me: u.id == user.who.user.id,
            created: fmt_time(u.created_at),
        })
        .collect();
    let mut p = user.page("Users", Nav::Users).status(status);
    if let Some((kind, m)) = flash {
        p = p.flash(kind, m);
    }
    p.render(&content)
}

async fn list(State(state): State<AppState>, user: UiUser, Query(q): Query<DoneQuery>) -> Response {
    let flash = done_message(q.done.as_deref()).map(|m| ("success", m.to_string()));
    page(
        &state,
        &user,
        UsersContent::default(),
        StatusCode::OK,
        flash,
    )
    .await
}

/// After a change: htmx gets the page with a message, a plain form a redirect.
async fn done(state: &AppState, user: &UiUser, key: &str) -> Response {
    if user.hx {
        let m = done_message(Some(key)).unwrap_or_default().to_string();
        page(
            state,
            user,
            UsersContent::default(),
            StatusCode::OK,
            Some(("success", m)),
        )
        .await
    } else {
        Redirect::to(&format!("/users?done={key}")).into_response()
    }
}

/// A refused change: the page with the reason on top.
async fn refused(state: &AppState, user: &UiUser, e: ServiceError) -> Response {
    let status = match &e {
        ServiceError::BadRequest { .. } => StatusCode::BAD_REQUEST,
        ServiceError::Conflict(_) => StatusCode::CONFLICT,
        ServiceError::NotFound(_) => StatusCode::NOT_FOUND,
        ServiceError::Forbidden(_) => return user.error(e).into_response(),
        _ => return user.error(e).into_response(),
    };
    let message = match &e {
        ServiceError::BadRequest { details, message } if !details.is_empty() => {
            format!("{message}: {}", details.join("; "))
        }
        other => other.to_string(),
    };
    page(
        state,
        user,
        UsersContent::default(),
        status,
        Some(("error", message)),
    )
    .await
}

fn role_of(s: &str) -> Option<Role> {
    match s {
        "admin" => Some(Role::Admin),
        "user" => Some(Role::User),
        _ => None,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CreateForm {
    username: String,
    password: String,
    role: String,
}

async fn create(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    Form(form): Form<CreateForm>,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    let mut content = UsersContent {
        form_username: form.username.clone(),
        form_role: form.role.clone(),
        ..Default::default()
    };
    let Some(role) = role_of(&form.role) else {
        content.form_error = Some("Choose the role: user or admin.".into());
        return page(&state, &user, content, StatusCode::BAD_REQUEST, None).await;
    };
    let input = CreateUserInput {
        username: form.username.trim().to_string(),
        password: form.password,
        email: None,
        role: Some(role),
    };
    match users::create(&state, Some(&user.who), input, &meta).await {
        Ok(_) => done(&state, &user, "user-created").await,
        Err(ServiceError::BadRequest { details, message }) => {
            for d in details {
                if d.starts_with("username") {
                    content.username_error = Some(d);
                } else if d.starts_with("password") {
                    content.password_error = Some(d);
                } else {
                    content.form_error = Some(d);
                }
            }
            if content.username_error.is_none()
                && content.password_error.is_none()
                && content.form_error.is_none()
            {
                content.form_error = Some(message);
            }
            page(&state, &user, content, StatusCode::BAD_REQUEST, None).await
        }
        Err(ServiceError::Conflict(m)) => {
            content.username_error = Some(m);
            page(&state, &user, content, StatusCode::CONFLICT, None).await
        }
        Err(e) => refused(&state, &user, e).await,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct RoleForm {
    role: String,
}

async fn set_role(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    UiId(id): UiId,
    Form(form): Form<RoleForm>,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    let Some(role) = role_of(&form.role) else {
        return refused(
            &state,
            &user,
            ServiceError::bad_request("Choose the role: user or admin"),
        )
        .await;
    };
    let input = UpdateUserInput {
        role: Some(role),
        ..Default::default()
    };
    match users::update(&state, Some(&user.who), id, input, &meta).await {
        Ok(_) => done(&state, &user, "user-updated").await,
        Err(e) => refused(&state, &user, e).await,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    password: String,
}

async fn reset_password(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    UiId(id): UiId,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    let input = UpdateUserInput {
        password: Some(form.password),
        ..Default::default()
    };
    match users::update(&state, Some(&user.who), id, input, &meta).await {
        Ok(_) => done(&state, &user, "user-password").await,
        Err(e) => refused(&state, &user, e).await,
    }
}

async fn delete(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    UiId(id): UiId,
) -> Response {
    if let Err(e) = user.require_admin() {
        return e.into_response();
    }
    match users::delete(&state, &user.who, id, &meta).await {
        Ok(()) => done(&state, &user, "user-deleted").await,
        Err(e) => refused(&state, &user, e).await,
    }
}
