//! Login sessions, indexed by user (for password change / user deletion) and by
//! expiry (for purging without a full scan).

use redb::{ReadableMultimapTable, ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tables::{load, SESSIONS, SESSIONS_BY_EXPIRY, SESSIONS_BY_USER};
use super::{audit, decode, encode, users, Result, Store, StoreError};
use crate::model::{AuditEntry, Session};

fn expiry_key(at: OffsetDateTime) -> i128 {
    at.unix_timestamp_nanos()
}

/// Removes session `id` and its index rows; returns it if it existed.
fn remove_session(txn: &WriteTransaction, id: &str) -> Result<Option<Session>> {
    let removed = txn
        .open_table(SESSIONS)?
        .remove(id)?
        .map(|g| g.value().to_vec());
    let Some(bytes) = removed else {
        return Ok(None);
    };
    let session: Session = decode("session", &bytes)?;
    txn.open_multimap_table(SESSIONS_BY_USER)?
        .remove(session.user_id.as_u128(), id)?;
    txn.open_table(SESSIONS_BY_EXPIRY)?
        .remove((expiry_key(session.expires_at), id))?;
    Ok(Some(session))
}

/// Removes every session of `user_id` except `keep`; returns how many went.
pub(super) fn remove_user_sessions(
    txn: &WriteTransaction,
    user_id: Uuid,
    keep: Option<&str>,
) -> Result<u64> {
    let ids: Vec<String> = {
        let by_user = txn.open_multimap_table(SESSIONS_BY_USER)?;
        let mut ids = Vec::new();
        for id in by_user.get(user_id.as_u128())? {
            ids.push(id?.value().to_string());
        }
        ids
    };
    let mut removed = 0;
    for id in ids.iter().filter(|id| Some(id.as_str()) != keep) {
        if remove_session(txn, id)?.is_some() {
            removed += 1;
        } else {
            // Index row without a session: drop it so the index heals.
            txn.open_multimap_table(SESSIONS_BY_USER)?
                .remove(user_id.as_u128(), id.as_str())?;
        }
    }
    Ok(removed)
}

impl Store {
    /// Stores a new session. `NotFound` if its user does not exist (so a session
    /// cannot outlive a concurrent user deletion).
    pub fn create_session(&self, s: &Session, audit: Option<&AuditEntry>) -> Result<()> {
        self.write("create_session", |txn| {
            if !users::user_exists(txn, s.user_id)? {
                return Err(StoreError::NotFound);
            }
            let mut sessions = txn.open_table(SESSIONS)?;
            if sessions.get(s.id.as_str())?.is_some() {
                return Err(StoreError::Db("session id already exists".into()));
            }
            sessions.insert(s.id.as_str(), encode(s)?.as_slice())?;
            txn.open_multimap_table(SESSIONS_BY_USER)?
                .insert(s.user_id.as_u128(), s.id.as_str())?;
            txn.open_table(SESSIONS_BY_EXPIRY)?
                .insert((expiry_key(s.expires_at), s.id.as_str()), ())?;
            match audit {
                Some(a) => audit::append(txn, a),
                None => Ok(()),
            }
        })
    }

    /// The session as stored, expired or not: the caller checks `expires_at`.
    pub fn get_session(&self, id: &str) -> Result<Option<Session>> {
        self.read("get_session", |txn| {
            load(&txn.open_table(SESSIONS)?, id, "session")
        })
    }

    /// Deletes a session; `false` if it did not exist (and then no audit row).
    pub fn delete_session(&self, id: &str, audit: Option<&AuditEntry>) -> Result<bool> {
        let result = self.write("delete_session", |txn| {
            if remove_session(txn, id)?.is_none() {
                // Nothing changed: roll back rather than commit an empty transaction.
                return Err(StoreError::NotFound);
            }
            match audit {
                Some(a) => audit::append(txn, a),
                None => Ok(()),
            }
        });
        match result {
            Ok(()) => Ok(true),
            Err(StoreError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Deletes every session with `expires_at <= now`; returns how many.
    pub fn purge_expired_sessions(&self, now: OffsetDateTime) -> Result<u64> {
        self.write("purge_expired_sessions", |txn| {
            let cutoff = expiry_key(now);
            let expired: Vec<(i128, String)> = {
                let by_expiry = txn.open_table(SESSIONS_BY_EXPIRY)?;
                let mut out = Vec::new();
                // Keys sort by expiry first, so stop at the first live session.
                for row in by_expiry.iter()? {
                    let (k, _) = row?;
                    let (at, id) = k.value();
                    if at > cutoff {
                        break;
                    }
                    out.push((at, id.to_string()));
                }
                out
            };
            let mut removed = 0;
            for (at, id) in &expired {
                if remove_session(txn, id)?.is_some() {
                    removed += 1;
                }
                // Also covers an index row whose session is gone, or whose session
                // was stored with a different expiry.
                txn.open_table(SESSIONS_BY_EXPIRY)?
                    .remove((*at, id.as_str()))?;
            }
            Ok(removed)
        })
    }
}
