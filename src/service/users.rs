//! User management (admin only).

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::validate::{self, schema, Problems};
use super::{blocking, with_store, AppState, ClientMeta, Principal, ServiceError, ServiceResult};
use crate::auth::password;
use crate::model::{AuditEntry, Role, User};

/// A new user. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct CreateUserInput {
    #[schema(schema_with = schema::username)]
    pub username: String,
    #[schema(schema_with = schema::password)]
    pub password: String,
    /// Empty or `null`: no address.
    #[serde(default)]
    #[schema(schema_with = schema::email)]
    pub email: Option<String>,
    /// Default `user`.
    #[serde(default)]
    pub role: Option<Role>,
}

/// Any subset of the fields; `password` resets the password, ends all the user's
/// sessions and revokes (deletes) all their API tokens. Unknown fields are ignored;
/// `null` for a field means absent (unchanged).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
pub struct UpdateUserInput {
    #[serde(default)]
    pub role: Option<Role>,
    /// An empty string clears the address.
    #[serde(default)]
    #[schema(schema_with = schema::email)]
    pub email: Option<String>,
    /// A new password: all the user's sessions end and all their API tokens are
    /// revoked, in the same change.
    #[serde(default)]
    #[schema(schema_with = schema::password_or_null)]
    pub password: Option<String>,
}

/// `None` is the local operator (the CLI), who may do anything.
fn require_admin(who: Option<&Principal>) -> ServiceResult<()> {
    if who.is_none_or(Principal::is_admin) {
        Ok(())
    } else {
        Err(ServiceError::access_denied())
    }
}

fn not_found() -> ServiceError {
    ServiceError::NotFound("User not found".into())
}

pub async fn list(state: &AppState, who: Option<&Principal>) -> ServiceResult<Vec<User>> {
    require_admin(who)?;
    with_store(&state.store, |s| s.list_users()).await
}

/// Create a user. Also used by the CLI and first-run bootstrap (with `who = None`).
pub async fn create(
    state: &AppState,
    who: Option<&Principal>,
    input: CreateUserInput,
    meta: &ClientMeta,
) -> ServiceResult<User> {
    require_admin(who)?;
    let mut p = Problems::default();
    validate::username(&mut p, &input.username);
    validate::password(&mut p, "password", &input.password);
    if let Some(email) = input.email.as_deref().filter(|e| !e.is_empty()) {
        validate::email(&mut p, email);
    }
    p.finish()?;
    let pw = input.password;
    let hash = blocking(move || password::hash(&pw))
        .await?
        .map_err(ServiceError::Internal)?;
    let now = OffsetDateTime::now_utc();
    let user = User {
        id: Uuid::new_v4(),
        username: input.username,
        email: input.email.filter(|e| !e.is_empty()),
        role: input.role.unwrap_or(Role::User),
        password_hash: hash,
        created_at: now,
        updated_at: now,
    };
    let audit = AuditEntry::new(
        who.map(|w| &w.user),
        "user.create",
        Some(user.username.clone()),
    )
    .with_ip(meta.ip.clone());
    let stored = user.clone();
    with_store(&state.store, move |s| s.create_user(&stored, &audit)).await?;
    Ok(user)
}

pub async fn update(
    state: &AppState,
    who: Option<&Principal>,
    id: Uuid,
    input: UpdateUserInput,
    meta: &ClientMeta,
) -> ServiceResult<User> {
    require_admin(who)?;
    let mut p = Problems::default();
    if let Some(email) = input.email.as_deref().filter(|e| !e.is_empty()) {
        validate::email(&mut p, email);
    }
    if let Some(pw) = &input.password {
        validate::password(&mut p, "password", pw);
    }
    p.finish()?;

    let mut user = with_store(&state.store, move |s| s.get_user(id))
        .await?
        .ok_or_else(not_found)?;
    let other_fields = input.role.is_some() || input.email.is_some();
    let new_hash = match input.password {
        Some(pw) => Some(
            blocking(move || password::hash(&pw))
                .await?
                .map_err(ServiceError::Internal)?,
        ),
        None => None,
    };
    if let Some(role) = input.role {
        user.role = role;
    }
    if let Some(email) = input.email {
        user.email = Some(email).filter(|e| !e.is_empty());
    }
    user.updated_at = OffsetDateTime::now_utc();
    let entry = |action| {
        AuditEntry::new(who.map(|w| &w.user), action, Some(user.username.clone()))
            .with_ip(meta.ip.clone())
    };
    // A reset gets its own audit row (it ends sessions and revokes tokens); other
    // fields changed in the same request are recorded as an update beside it.
    let mut audits = Vec::new();
    if new_hash.is_none() || other_fields {
        audits.push(entry("user.update"));
    }
    if new_hash.is_some() {
        audits.push(entry("user.password_reset"));
    }
    if let Some(hash) = new_hash {
        user.password_hash = hash;
    }
    let stored = user.clone();
    with_store(&state.store, move |s| s.update_user(&stored, &audits)).await?;
    Ok(user)
}

pub async fn delete(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    meta: &ClientMeta,
) -> ServiceResult<()> {
    require_admin(Some(who))?;
    let audit = AuditEntry::new(Some(&who.user), "user.delete", Some(id.to_string()))
        .with_ip(meta.ip.clone());
    with_store(&state.store, move |s| s.delete_user(id, &audit))
        .await
        .map_err(|e| match e {
            ServiceError::NotFound(_) => not_found(),
            other => other,
        })
}
