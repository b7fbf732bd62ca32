//! API tokens (`/tokens`): create (the raw token shown once), list, revoke. The same
//! service functions as `/api/auth/tokens`.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use time::OffsetDateTime;

use super::auth::UiId;
use super::page::{done_message, fmt_time, Nav};
use super::UiUser;
use crate::api::extract::Meta;
use crate::model::{ApiToken, TokenScope};
use crate::service::auth::CreateTokenInput;
use crate::service::{auth, AppState, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/tokens", get(list).post(create))
        .route("/tokens/{id}/revoke", post(revoke))
}

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub prefix: String,
    pub created: String,
    pub last_used: String,
    pub expires: String,
    pub expired: bool,
    pub metrics: bool,
}

impl TokenRow {
    fn new(t: &ApiToken, now: OffsetDateTime) -> Self {
        TokenRow {
            id: t.id.to_string(),
            name: t.name.clone(),
            prefix: t.token_prefix.clone(),
            created: fmt_time(t.created_at),
            last_used: t.last_used_at.map_or_else(|| "never".into(), fmt_time),
            expires: t.expires_at.map_or_else(|| "never".into(), fmt_time),
            expired: t.expires_at.is_some_and(|e| e <= now),
            metrics: t.scope == TokenScope::Metrics,
        }
    }
}

#[derive(Template, Default)]
#[template(path = "pages/tokens.html")]
struct TokensContent {
    csrf: String,
    tokens: Vec<TokenRow>,
    new_token: Option<String>,
    form_name: String,
    form_days: String,
    name_error: Option<String>,
    days_error: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DoneQuery {
    pub done: Option<String>,
}

async fn rows(state: &AppState, user: &UiUser) -> Result<Vec<TokenRow>, Response> {
    let now = OffsetDateTime::now_utc();
    auth::list_tokens(state, &user.who)
        .await
        .map(|ts| ts.iter().map(|t| TokenRow::new(t, now)).collect())
        .map_err(|e| user.error(e).into_response())
}

async fn list(State(state): State<AppState>, user: UiUser, Query(q): Query<DoneQuery>) -> Response {
    let tokens = match rows(&state, &user).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut page = user.page("API tokens", Nav::Tokens);
    if let Some(m) = done_message(q.done.as_deref()) {
        page = page.flash("success", m);
    }
    page.render(&TokensContent {
        csrf: user.csrf.clone(),
        tokens,
        ..Default::default()
    })
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct TokenForm {
    name: String,
    expires_in_days: String,
}

/// Create a token; the answer is the page itself with the raw token (no redirect: it
/// is shown this once and never stored).
async fn create(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    Form(form): Form<TokenForm>,
) -> Response {
    let mut content = TokensContent {
        csrf: user.csrf.clone(),
        form_name: form.name.clone(),
        form_days: form.expires_in_days.clone(),
        ..Default::default()
    };
    let days = form.expires_in_days.trim();
    let expires_in_days = if days.is_empty() {
        None
    } else {
        match days.parse::<i64>() {
            Ok(d) => Some(d),
            Err(_) => {
                content.days_error =
                    Some("Enter a whole number of days, or leave it empty for no expiry.".into());
                return answer(&state, &user, content, StatusCode::BAD_REQUEST).await;
            }
        }
    };
    let input = CreateTokenInput {
        name: form.name.trim().to_string(),
        expires_in_days,
        scope: TokenScope::Full,
    };
    match auth::create_token(&state, &user.who, input, &meta).await {
        Ok((_, raw)) => {
            content.new_token = Some(raw);
            content.form_name.clear();
            content.form_days.clear();
            answer(&state, &user, content, StatusCode::OK).await
        }
        Err(ServiceError::BadRequest { details, message }) => {
            for d in &details {
                if d.starts_with("expiresInDays") {
                    content.days_error = Some(d.replacen("expiresInDays", "Expiry", 1));
                } else if d.starts_with("name") {
                    content.name_error = Some(d.replacen("name", "Name", 1));
                }
            }
            if content.days_error.is_none() && content.name_error.is_none() {
                content.name_error = Some(message);
            }
            answer(&state, &user, content, StatusCode::BAD_REQUEST).await
        }
        Err(e) => user.error(e).into_response(),
    }
}

async fn answer(
    state: &AppState,
    user: &UiUser,
    mut content: TokensContent,
    status: StatusCode,
) -> Response {
    content.tokens = match rows(state, user).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let mut page = user.page("API tokens", Nav::Tokens).status(status);
    if content.new_token.is_some() {
        page = page.flash("success", "Token created.");
    }
    page.render(&content)
}

async fn revoke(
    State(state): State<AppState>,
    Meta(meta): Meta,
    user: UiUser,
    UiId(id): UiId,
) -> Response {
    if let Err(e) = auth::delete_token(&state, &user.who, id, &meta).await {
        return user.error(e).into_response();
    }
    if user.hx {
        let content = TokensContent {
            csrf: user.csrf.clone(),
            ..Default::default()
        };
        let tokens = match rows(&state, &user).await {
            Ok(t) => t,
            Err(r) => return r,
        };
        return user
            .page("API tokens", Nav::Tokens)
            .flash("success", "Token revoked.")
            .render(&TokensContent { tokens, ..content });
    }
    Redirect::to("/tokens?done=token-revoked").into_response()
}
