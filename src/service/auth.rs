//! Login, sessions, password changes and API tokens.

use std::collections::HashMap;
use std::time::Instant;

use serde::Deserialize;
use time::{Duration as TimeDuration, OffsetDateTime};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::validate::{self, schema, Problems};
use super::{blocking, with_store, AppState, ClientMeta, Principal, ServiceError, ServiceResult};
use crate::auth::{password, secrets};
use crate::model::{ApiToken, AuditEntry, Session, TokenScope, User};
use crate::store::Store;

/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct LoginInput {
    #[schema(schema_with = schema::login_name)]
    pub username: String,
    #[schema(schema_with = schema::any_password)]
    pub password: String,
}

/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordInput {
    #[schema(schema_with = schema::any_password)]
    pub current_password: String,
    #[schema(schema_with = schema::password)]
    pub new_password: String,
    /// Also revoke (delete) all the caller's API tokens, including the one making
    /// this request. Default `false`: tokens keep working. The caller's other
    /// sessions end either way.
    #[serde(default)]
    pub revoke_tokens: bool,
}

/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateTokenInput {
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Default: the token never expires.
    #[serde(default, deserialize_with = "validate::int::optional")]
    #[schema(schema_with = schema::token_days)]
    pub expires_in_days: Option<i64>,
    /// `full` (default): everything the user may do; `metrics`: only `GET /metrics`
    /// (admins only).
    #[serde(default)]
    pub scope: TokenScope,
}

fn invalid_credentials() -> ServiceError {
    ServiceError::Unauthorized("Invalid credentials".into())
}

/// Check a username and password; on success open a session.
///
/// Unknown user and wrong password give the same error after the same argon2 work.
pub async fn login(
    state: &AppState,
    input: LoginInput,
    meta: &ClientMeta,
) -> ServiceResult<(User, Session)> {
    let mut p = Problems::default();
    p.check(
        (1..=validate::NAME_MAX).contains(&input.username.chars().count()),
        || format!("username must be 1 to {} characters", validate::NAME_MAX),
    );
    p.check(
        (1..=validate::PASSWORD_MAX).contains(&input.password.chars().count()),
        || {
            format!(
                "password must be 1 to {} characters",
                validate::PASSWORD_MAX
            )
        },
    );
    p.finish()?;

    let key = meta.ip.clone().unwrap_or_else(|| "unknown".into());
    state
        .login_limiter
        .check(&key, meta.now.unwrap_or_else(Instant::now))
        .map_err(|retry_after| ServiceError::TooManyRequests { retry_after })?;

    let username = input.username.clone();
    let user = with_store(&state.store, move |s| s.get_user_by_username(&username)).await?;
    let Some(user) = user else {
        blocking(move || password::verify_dummy(&input.password)).await?;
        return Err(invalid_credentials());
    };
    let hash = user.password_hash.clone();
    if !blocking(move || password::verify(&hash, &input.password)).await? {
        let audit =
            AuditEntry::new(Some(&user), "auth.login_failed", None).with_ip(meta.ip.clone());
        with_store(&state.store, move |s| s.record(&audit)).await?;
        return Err(invalid_credentials());
    }
    let now = OffsetDateTime::now_utc();
    let session = Session {
        id: secrets::new_session_id(),
        user_id: user.id,
        created_at: now,
        expires_at: now + state.limits.session_ttl(),
    };
    let audit = AuditEntry::new(Some(&user), "auth.login", None).with_ip(meta.ip.clone());
    let stored = session.clone();
    with_store(&state.store, move |s| {
        s.create_session(&stored, Some(&audit))
    })
    .await?;
    Ok((user, session))
}

/// End the caller's session (server side). Token-authenticated callers have none.
pub async fn logout(state: &AppState, who: &Principal, meta: &ClientMeta) -> ServiceResult<()> {
    if let Some(id) = who.session_id.clone() {
        let audit = AuditEntry::new(Some(&who.user), "auth.logout", None).with_ip(meta.ip.clone());
        with_store(&state.store, move |s| s.delete_session(&id, Some(&audit))).await?;
    }
    Ok(())
}

/// The user behind a session cookie, if the session exists and has not expired.
pub async fn session_principal(
    state: &AppState,
    session_id: &str,
) -> ServiceResult<Option<Principal>> {
    if !secrets::looks_like_session_id(session_id) {
        return Ok(None);
    }
    let id = session_id.to_string();
    let found = with_store(&state.store, move |s| {
        let Some(session) = s.get_session(&id)? else {
            return Ok(None);
        };
        if session.expires_at <= OffsetDateTime::now_utc() {
            s.delete_session(&id, None)?;
            return Ok(None);
        }
        Ok(s.get_user(session.user_id)?.map(|u| (u, session)))
    })
    .await?;
    Ok(found.map(|(user, session)| Principal {
        user,
        session_id: Some(session.id),
        token_id: None,
        scope: TokenScope::Full,
    }))
}

/// The user behind a bearer token, if it exists and has not expired. Records the use
/// without waiting for the write.
pub async fn token_principal(state: &AppState, raw: &str) -> ServiceResult<Option<Principal>> {
    if !secrets::looks_like_token(raw) {
        return Ok(None);
    }
    let hash = secrets::token_hash(raw);
    let now = OffsetDateTime::now_utc();
    let found = with_store(&state.store, move |s| {
        let Some(token) = s.get_token_by_hash(&hash)? else {
            return Ok(None);
        };
        if token.expires_at.is_some_and(|at| at <= now) {
            return Ok(None);
        }
        Ok(s.get_user(token.user_id)?
            .map(|u| (u, token.id, token.scope)))
    })
    .await?;
    let Some((user, token_id, scope)) = found else {
        return Ok(None);
    };
    // Full channel: drop the update rather than slow the request; lastUsedAt is advisory.
    let _ = state.token_touch.try_send((token_id, now));
    Ok(Some(Principal {
        user,
        session_id: None,
        token_id: Some(token_id),
        scope,
    }))
}

/// Background task: batch `lastUsedAt` updates into one write per second.
pub async fn record_token_use(store: Store, mut rx: mpsc::Receiver<(Uuid, OffsetDateTime)>) {
    let mut pending: HashMap<Uuid, OffsetDateTime> = HashMap::new();
    loop {
        let open = match tokio::time::timeout(std::time::Duration::from_secs(1), rx.recv()).await {
            Ok(Some((id, at))) => {
                pending.insert(id, at);
                true
            }
            Ok(None) => false,
            Err(_) => true,
        };
        // Drain what else is queued so a burst becomes one transaction.
        while let Ok((id, at)) = rx.try_recv() {
            pending.insert(id, at);
        }
        if !pending.is_empty() && (!open || pending.len() >= 256 || rx.is_empty()) {
            let batch: Vec<(Uuid, OffsetDateTime)> = pending.drain().collect();
            let store = store.clone();
            match tokio::task::spawn_blocking(move || store.touch_tokens(&batch)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "could not record API token use"),
                Err(e) => tracing::warn!(error = %e, "token use recorder failed"),
            }
        }
        if !open {
            return;
        }
    }
}

/// Change the caller's password. Every other session of the user ends; the caller's
/// own session (if any) stays. With `revoke_tokens` all their API tokens go too.
pub async fn change_password(
    state: &AppState,
    who: &Principal,
    input: ChangePasswordInput,
    meta: &ClientMeta,
) -> ServiceResult<()> {
    let mut p = Problems::default();
    p.check(
        (1..=validate::PASSWORD_MAX).contains(&input.current_password.chars().count()),
        || {
            format!(
                "currentPassword must be 1 to {} characters",
                validate::PASSWORD_MAX
            )
        },
    );
    validate::password(&mut p, "newPassword", &input.new_password);
    p.finish()?;

    let hash = who.user.password_hash.clone();
    let current = input.current_password;
    if !blocking(move || password::verify(&hash, &current)).await? {
        return Err(ServiceError::Forbidden(
            "Current password is incorrect".into(),
        ));
    }
    let new = input.new_password;
    let new_hash = blocking(move || password::hash(&new))
        .await?
        .map_err(ServiceError::Internal)?;
    let user_id = who.user.id;
    let keep = who.session_id.clone();
    let revoke = input.revoke_tokens;
    let mut audits = vec![
        AuditEntry::new(Some(&who.user), "auth.password_change", None).with_ip(meta.ip.clone()),
    ];
    if revoke {
        audits.push(
            AuditEntry::new(
                Some(&who.user),
                "token.revoke_all",
                Some(user_id.to_string()),
            )
            .with_ip(meta.ip.clone()),
        );
    }
    with_store(&state.store, move |s| {
        s.set_password(user_id, &new_hash, keep.as_deref(), revoke, &audits)
    })
    .await?;
    forget_initial_password(state);
    Ok(())
}

/// The first-run password file is only useful until the password changes.
pub fn forget_initial_password(state: &AppState) {
    let path = state
        .config
        .data_dir
        .join(crate::bootstrap::INITIAL_PASSWORD_FILE);
    let _ = std::fs::remove_file(path);
}

/// Issue an API token. Returns the stored record and the raw token (shown once).
pub async fn create_token(
    state: &AppState,
    who: &Principal,
    input: CreateTokenInput,
    meta: &ClientMeta,
) -> ServiceResult<(ApiToken, String)> {
    let mut p = Problems::default();
    validate::name(&mut p, "name", &input.name);
    if let Some(days) = input.expires_in_days {
        let (min, max) = validate::TOKEN_DAYS;
        p.check((min..=max).contains(&days), || {
            format!("expiresInDays must be from {min} to {max}")
        });
    }
    p.finish()?;
    if input.scope == TokenScope::Metrics && !who.is_admin() {
        return Err(ServiceError::Forbidden(
            "Only admins can create metrics tokens".into(),
        ));
    }

    let raw = secrets::new_api_token();
    let now = OffsetDateTime::now_utc();
    let token = ApiToken {
        id: Uuid::new_v4(),
        user_id: who.user.id,
        scope: input.scope,
        name: input.name,
        token_hash: secrets::token_hash(&raw),
        token_prefix: secrets::token_display_prefix(&raw),
        expires_at: input.expires_in_days.map(|d| now + TimeDuration::days(d)),
        last_used_at: None,
        created_at: now,
    };
    let audit = AuditEntry::new(Some(&who.user), "token.create", Some(token.id.to_string()))
        .with_ip(meta.ip.clone());
    let stored = token.clone();
    with_store(&state.store, move |s| s.create_token(&stored, &audit)).await?;
    Ok((token, raw))
}

pub async fn list_tokens(state: &AppState, who: &Principal) -> ServiceResult<Vec<ApiToken>> {
    let id = who.user.id;
    with_store(&state.store, move |s| s.list_tokens(id)).await
}

/// Revoke one of the caller's own tokens. Someone else's token is "not found".
pub async fn delete_token(
    state: &AppState,
    who: &Principal,
    token_id: Uuid,
    meta: &ClientMeta,
) -> ServiceResult<()> {
    let user_id = who.user.id;
    let audit = AuditEntry::new(Some(&who.user), "token.revoke", Some(token_id.to_string()))
        .with_ip(meta.ip.clone());
    if with_store(&state.store, move |s| {
        s.delete_token(user_id, token_id, &audit)
    })
    .await?
    {
        Ok(())
    } else {
        Err(ServiceError::NotFound("Token not found".into()))
    }
}
