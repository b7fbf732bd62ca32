//! `rserve-proxy admin …`: the user operations, shared by the local path (server
//! stopped, store opened directly) and the admin socket (server running). Both go
//! through the same service functions as the API, acting as the local operator.

use serde::{Deserialize, Serialize};

use crate::model::Role;
use crate::service::users::{CreateUserInput, UpdateUserInput};
use crate::service::{users, with_store, AppState, ClientMeta, ServiceError};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewUser {
    pub username: String,
    /// `admin` or `user`.
    pub role: String,
    pub email: Option<String>,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordReset {
    pub username: String,
    pub password: String,
}

/// One user as the CLI prints it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserLine {
    pub id: String,
    pub username: String,
    pub role: String,
    pub email: Option<String>,
    pub created_at: String,
}

fn message(e: ServiceError) -> String {
    match e {
        ServiceError::BadRequest { message, details } if !details.is_empty() => {
            format!("{message}: {}", details.join("; "))
        }
        other => other.to_string(),
    }
}

pub async fn create(state: &AppState, input: NewUser) -> Result<UserLine, String> {
    let role = match input.role.as_str() {
        "admin" => Role::Admin,
        "user" => Role::User,
        other => return Err(format!("role {other:?} is neither admin nor user")),
    };
    let input = CreateUserInput {
        username: input.username,
        password: input.password,
        email: input.email,
        role: Some(role),
    };
    let user = users::create(state, None, input, &ClientMeta::default())
        .await
        .map_err(message)?;
    Ok(UserLine {
        id: user.id.to_string(),
        username: user.username,
        role: user.role.as_str().to_string(),
        email: user.email,
        created_at: user.created_at.to_string(),
    })
}

pub async fn reset_password(state: &AppState, input: PasswordReset) -> Result<(), String> {
    let name = input.username.clone();
    let user = with_store(&state.store, move |s| s.get_user_by_username(&name))
        .await
        .map_err(message)?
        .ok_or_else(|| format!("no user named {:?}", input.username))?;
    let update = UpdateUserInput {
        password: Some(input.password),
        ..Default::default()
    };
    users::update(state, None, user.id, update, &ClientMeta::default())
        .await
        .map_err(message)?;
    Ok(())
}

pub async fn list(state: &AppState) -> Result<Vec<UserLine>, String> {
    let all = users::list(state, None).await.map_err(message)?;
    Ok(all
        .into_iter()
        .map(|u| UserLine {
            id: u.id.to_string(),
            username: u.username,
            role: u.role.as_str().to_string(),
            email: u.email,
            created_at: u.created_at.to_string(),
        })
        .collect())
}
