//! Users, their username index and the admin set.

use redb::{ReadableMultimapTable, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tables::{load, ADMINS, APPS_BY_OWNER, USERS, USERS_BY_NAME};
use super::{audit, decode, encode, oldest_first, sessions, tokens, Result, Store, StoreError};
use crate::model::{AuditEntry, Role, User};

/// Whether an admin other than `id` exists. Reads at most two index rows.
fn other_admin_exists(admins: &Table<u128, ()>, id: u128) -> Result<bool> {
    for row in admins.iter()?.take(2) {
        if row?.0.value() != id {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Whether user `id` exists, checked inside a write so that records referring to a
/// user cannot be created after (or while) the user is deleted.
pub(super) fn user_exists(txn: &WriteTransaction, id: Uuid) -> Result<bool> {
    Ok(txn.open_table(USERS)?.get(id.as_u128())?.is_some())
}

fn set_admin(txn: &WriteTransaction, id: u128, admin: bool) -> Result<()> {
    let mut admins = txn.open_table(ADMINS)?;
    if admin {
        admins.insert(id, ())?;
    } else {
        admins.remove(id)?;
    }
    Ok(())
}

impl Store {
    pub fn user_count(&self) -> Result<u64> {
        // redb keeps each table's length in its header: no scan.
        self.read("user_count", |txn| Ok(txn.open_table(USERS)?.len()?))
    }

    /// Fails with `UsernameTaken` if the (case-sensitive) username exists.
    pub fn create_user(&self, user: &User, audit: &AuditEntry) -> Result<()> {
        self.write("create_user", |txn| {
            let key = user.id.as_u128();
            let mut by_name = txn.open_table(USERS_BY_NAME)?;
            if by_name.get(user.username.as_str())?.is_some() {
                return Err(StoreError::UsernameTaken(user.username.clone()));
            }
            let mut users = txn.open_table(USERS)?;
            if users.get(key)?.is_some() {
                return Err(StoreError::Db(format!(
                    "user id {} already exists",
                    user.id
                )));
            }
            users.insert(key, encode(user)?.as_slice())?;
            by_name.insert(user.username.as_str(), key)?;
            set_admin(txn, key, user.role == Role::Admin)?;
            audit::append(txn, audit)
        })
    }

    pub fn get_user(&self, id: Uuid) -> Result<Option<User>> {
        self.read("get_user", |txn| {
            load(&txn.open_table(USERS)?, id.as_u128(), "user")
        })
    }

    pub fn get_user_by_username(&self, username: &str) -> Result<Option<User>> {
        self.read("get_user_by_username", |txn| {
            let id = match txn.open_table(USERS_BY_NAME)?.get(username)? {
                Some(g) => g.value(),
                None => return Ok(None),
            };
            load(&txn.open_table(USERS)?, id, "user")
        })
    }

    /// All users, oldest first.
    pub fn list_users(&self) -> Result<Vec<User>> {
        self.read("list_users", |txn| {
            let users = txn.open_table(USERS)?;
            let mut out: Vec<User> = Vec::with_capacity(usize::try_from(users.len()?).unwrap_or(0));
            for row in users.iter()? {
                out.push(decode("user", row?.1.value())?);
            }
            oldest_first(&mut out, |u| (u.created_at, u.id));
            Ok(out)
        })
    }

    /// Replaces the stored user. `NotFound` if missing; `LastAdmin` if this would
    /// demote the only admin. The username is meant to be immutable, but if it does
    /// change the index follows (with `UsernameTaken` on a clash). A new password hash
    /// (an admin's reset) ends every session of the user and revokes (deletes) all
    /// their API tokens. `audits` are appended in the same transaction.
    pub fn update_user(&self, user: &User, audits: &[AuditEntry]) -> Result<()> {
        self.write("update_user", |txn| {
            let key = user.id.as_u128();
            let mut users = txn.open_table(USERS)?;
            let old: User = load(&users, key, "user")?.ok_or(StoreError::NotFound)?;
            if old.role == Role::Admin
                && user.role != Role::Admin
                && !other_admin_exists(&txn.open_table(ADMINS)?, key)?
            {
                return Err(StoreError::LastAdmin);
            }
            if old.username != user.username {
                let mut by_name = txn.open_table(USERS_BY_NAME)?;
                if by_name.get(user.username.as_str())?.is_some() {
                    return Err(StoreError::UsernameTaken(user.username.clone()));
                }
                by_name.remove(old.username.as_str())?;
                by_name.insert(user.username.as_str(), key)?;
            }
            users.insert(key, encode(user)?.as_slice())?;
            set_admin(txn, key, user.role == Role::Admin)?;
            // A reset password ends every way in that the old one opened: whoever
            // knew it may have logged in or made tokens.
            if old.password_hash != user.password_hash {
                sessions::remove_user_sessions(txn, user.id, None)?;
                tokens::remove_user_tokens(txn, user.id)?;
            }
            audits.iter().try_for_each(|a| audit::append(txn, a))
        })
    }

    /// Sets the password hash and `updated_at`, ends every session of the user
    /// except `keep_session` (the one that made the change) and, with
    /// `revoke_tokens`, deletes all their API tokens, in one transaction with `audits`.
    pub fn set_password(
        &self,
        user_id: Uuid,
        password_hash: &str,
        keep_session: Option<&str>,
        revoke_tokens: bool,
        audits: &[AuditEntry],
    ) -> Result<()> {
        self.write("set_password", |txn| {
            let key = user_id.as_u128();
            {
                let mut users = txn.open_table(USERS)?;
                let mut user: User = load(&users, key, "user")?.ok_or(StoreError::NotFound)?;
                user.password_hash = password_hash.to_string();
                user.updated_at = OffsetDateTime::now_utc();
                users.insert(key, encode(&user)?.as_slice())?;
            }
            sessions::remove_user_sessions(txn, user_id, keep_session)?;
            if revoke_tokens {
                tokens::remove_user_tokens(txn, user_id)?;
            }
            audits.iter().try_for_each(|a| audit::append(txn, a))
        })
    }

    /// Deletes the user with their sessions and tokens. `NotFound`, `LastAdmin`, or
    /// `UserOwnsApps(n)` when apps would be orphaned.
    pub fn delete_user(&self, id: Uuid, audit: &AuditEntry) -> Result<()> {
        self.write("delete_user", |txn| {
            let key = id.as_u128();
            let user: User = {
                let mut users = txn.open_table(USERS)?;
                let user: User = load(&users, key, "user")?.ok_or(StoreError::NotFound)?;
                if user.role == Role::Admin && !other_admin_exists(&txn.open_table(ADMINS)?, key)? {
                    return Err(StoreError::LastAdmin);
                }
                let owned = txn.open_multimap_table(APPS_BY_OWNER)?.get(key)?.len();
                if owned > 0 {
                    return Err(StoreError::UserOwnsApps(
                        usize::try_from(owned).unwrap_or(usize::MAX),
                    ));
                }
                users.remove(key)?;
                user
            };
            txn.open_table(USERS_BY_NAME)?
                .remove(user.username.as_str())?;
            set_admin(txn, key, false)?;
            sessions::remove_user_sessions(txn, id, None)?;
            tokens::remove_user_tokens(txn, id)?;
            audit::append(txn, audit)
        })
    }
}
