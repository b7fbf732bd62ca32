//! Profile (`/settings`): who you are, change your password (the same service as
//! `PUT /api/auth/password`).

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;

use super::page::{done_message, Nav};
use super::tokens::DoneQuery;
use super::UiUser;
use crate::api::extract::Meta;
use crate::service::auth::ChangePasswordInput;
use crate::service::validate::PASSWORD_MIN;
use crate::service::{auth, AppState, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/settings", get(show))
        .route("/settings/password", post(change_password))
}

#[derive(Template, Default)]
#[template(path = "pages/settings.html")]
struct SettingsContent {
    csrf: String,
    username: String,
    role: &'static str,
    email: Option<String>,
    min_len: usize,
    form_error: Option<String>,
    current_error: Option<String>,
    new_error: Option<String>,
    confirm_error: Option<String>,
}

impl SettingsContent {
    fn of(user: &UiUser) -> Self {
        SettingsContent {
            csrf: user.csrf.clone(),
            username: user.who.user.username.clone(),
            role: user.who.user.role.as_str(),
            email: user.who.user.email.clone(),
            min_len: PASSWORD_MIN,
            ..Default::default()
        }
    }
}

async fn show(user: UiUser, Query(q): Query<DoneQuery>) -> Response {
    let mut page = user.page("Profile", Nav::Settings);
    if let Some(m) = done_message(q.done.as_deref()) {
        page = page.flash("success", m);
    }
    page.render(&SettingsContent::of(&user))
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

async fn change_password(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    Form(form): Form<PasswordForm>,
) -> Response {
    let mut content = SettingsContent::of(&user);
    if form.new_password != form.confirm_password {
        content.confirm_error =
            Some("The two new passwords differ. Type the same password twice.".into());
        return failed(&user, content, StatusCode::BAD_REQUEST);
    }
    let input = ChangePasswordInput {
        current_password: form.current_password,
        new_password: form.new_password,
        revoke_tokens: false,
    };
    match auth::change_password(&state, &user.who, input, &meta).await {
        Ok(()) if user.hx => user
            .page("Profile", Nav::Settings)
            .flash(
                "success",
                done_message(Some("password-changed")).unwrap_or_default(),
            )
            .render(&content),
        Ok(()) => Redirect::to("/settings?done=password-changed").into_response(),
        Err(ServiceError::Forbidden(_)) => {
            content.current_error = Some("The current password is not right.".into());
            failed(&user, content, StatusCode::FORBIDDEN)
        }
        Err(ServiceError::BadRequest { details, message }) => {
            for d in details {
                if let Some(rest) = d.strip_prefix("newPassword") {
                    content.new_error = Some(format!("The new password{rest}."));
                } else if d.starts_with("currentPassword") {
                    content.current_error = Some("Enter your current password.".into());
                }
            }
            if content.new_error.is_none() && content.current_error.is_none() {
                content.form_error = Some(message);
            }
            failed(&user, content, StatusCode::BAD_REQUEST)
        }
        Err(e) => user.error(e).into_response(),
    }
}

fn failed(user: &UiUser, content: SettingsContent, status: StatusCode) -> Response {
    user.page("Profile", Nav::Settings)
        .status(status)
        .flash("error", "The password was not changed.")
        .render(&content)
}
