//! API tokens, indexed by hash (for authentication) and by user (for listing).

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tables::{load, TOKENS, TOKENS_BY_HASH, TOKENS_BY_USER};
use super::{audit, encode, oldest_first, users, Result, Store, StoreError};
use crate::model::{ApiToken, AuditEntry};

/// Removes token `id` and its index rows; returns it if it existed.
fn remove_token(txn: &WriteTransaction, id: u128) -> Result<Option<ApiToken>> {
    let token: ApiToken = {
        let mut tokens = txn.open_table(TOKENS)?;
        let Some(token) = load::<u128, ApiToken>(&tokens, id, "token")? else {
            return Ok(None);
        };
        tokens.remove(id)?;
        token
    };
    txn.open_table(TOKENS_BY_HASH)?
        .remove(token.token_hash.as_str())?;
    txn.open_multimap_table(TOKENS_BY_USER)?
        .remove(token.user_id.as_u128(), id)?;
    Ok(Some(token))
}

/// Removes every token of `user_id` (user deletion, password reset).
pub(super) fn remove_user_tokens(txn: &WriteTransaction, user_id: Uuid) -> Result<()> {
    let ids: Vec<u128> = {
        let by_user = txn.open_multimap_table(TOKENS_BY_USER)?;
        let mut ids = Vec::new();
        for id in by_user.get(user_id.as_u128())? {
            ids.push(id?.value());
        }
        ids
    };
    for id in ids {
        remove_token(txn, id)?;
    }
    // Clears any index row whose token was already gone.
    txn.open_multimap_table(TOKENS_BY_USER)?
        .remove_all(user_id.as_u128())?;
    Ok(())
}

impl Store {
    /// Stores a new token. `NotFound` if its user does not exist.
    pub fn create_token(&self, t: &ApiToken, audit: &AuditEntry) -> Result<()> {
        self.write("create_token", |txn| {
            if !users::user_exists(txn, t.user_id)? {
                return Err(StoreError::NotFound);
            }
            let key = t.id.as_u128();
            let mut tokens = txn.open_table(TOKENS)?;
            if tokens.get(key)?.is_some() {
                return Err(StoreError::Db(format!("token id {} already exists", t.id)));
            }
            let mut by_hash = txn.open_table(TOKENS_BY_HASH)?;
            if by_hash.get(t.token_hash.as_str())?.is_some() {
                return Err(StoreError::Db("token hash already exists".into()));
            }
            tokens.insert(key, encode(t)?.as_slice())?;
            by_hash.insert(t.token_hash.as_str(), key)?;
            txn.open_multimap_table(TOKENS_BY_USER)?
                .insert(t.user_id.as_u128(), key)?;
            audit::append(txn, audit)
        })
    }

    /// The token with this hash, expired or not: the caller checks `expires_at`.
    pub fn get_token_by_hash(&self, hash: &str) -> Result<Option<ApiToken>> {
        self.read("get_token_by_hash", |txn| {
            let id = match txn.open_table(TOKENS_BY_HASH)?.get(hash)? {
                Some(g) => g.value(),
                None => return Ok(None),
            };
            load(&txn.open_table(TOKENS)?, id, "token")
        })
    }

    /// The user's tokens, oldest first.
    pub fn list_tokens(&self, user_id: Uuid) -> Result<Vec<ApiToken>> {
        self.read("list_tokens", |txn| {
            let by_user = txn.open_multimap_table(TOKENS_BY_USER)?;
            let tokens = txn.open_table(TOKENS)?;
            let mut out: Vec<ApiToken> = Vec::new();
            for id in by_user.get(user_id.as_u128())? {
                if let Some(t) = load(&tokens, id?.value(), "token")? {
                    out.push(t);
                }
            }
            oldest_first(&mut out, |t| (t.created_at, t.id));
            Ok(out)
        })
    }

    /// Deletes `token_id` if it belongs to `user_id`. `false` when it is missing or
    /// someone else's; nothing is written then, not even the audit row.
    pub fn delete_token(&self, user_id: Uuid, token_id: Uuid, audit: &AuditEntry) -> Result<bool> {
        let result = self.write("delete_token", |txn| {
            let key = token_id.as_u128();
            let owner =
                load::<u128, ApiToken>(&txn.open_table(TOKENS)?, key, "token")?.map(|t| t.user_id);
            if owner != Some(user_id) {
                // Rolls back (nothing written) and becomes `false` below.
                return Err(StoreError::NotFound);
            }
            remove_token(txn, key)?;
            audit::append(txn, audit)
        });
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Sets `last_used_at` on many tokens in one transaction (the auth layer
    /// batches these). Tokens deleted meanwhile are skipped, and
    /// a time older than the stored one is ignored.
    pub fn touch_tokens(&self, updates: &[(Uuid, OffsetDateTime)]) -> Result<()> {
        if updates.is_empty() {
            return Ok(());
        }
        self.write("touch_tokens", |txn| {
            let mut tokens = txn.open_table(TOKENS)?;
            for (id, at) in updates {
                let key = id.as_u128();
                let Some(mut t) = load::<u128, ApiToken>(&tokens, key, "token")? else {
                    continue;
                };
                // Never move backwards (batches may arrive out of order).
                if t.last_used_at.is_some_and(|prev| prev >= *at) {
                    continue;
                }
                t.last_used_at = Some(*at);
                tokens.insert(key, encode(&t)?.as_slice())?;
            }
            Ok(())
        })
    }
}
