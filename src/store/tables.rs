//! Every table of the state file, declared once.
//!
//! Record tables map an id to the serde_json bytes of a model type; index tables
//! map a lookup key to an id. Names carry a version suffix: a change to a stored
//! type gets a new table (e.g. `apps_v2`) filled by a migration, and the old
//! definition stays here for that migration to read.

use redb::{Key, MultimapTableDefinition, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;

use super::{decode, Result};

/// Unversioned: holds the schema version itself.
pub(super) const META: TableDefinition<&str, u32> = TableDefinition::new("meta");

/// user id -> `User`
pub(super) const USERS: TableDefinition<u128, &[u8]> = TableDefinition::new("users_v1");
/// username (case-sensitive) -> user id
pub(super) const USERS_BY_NAME: TableDefinition<&str, u128> =
    TableDefinition::new("users_by_name_v1");
/// ids of users whose role is admin, so the last-admin rule needs no scan
pub(super) const ADMINS: TableDefinition<u128, ()> = TableDefinition::new("admins_v1");

/// session id -> `Session`
pub(super) const SESSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("sessions_v1");
/// user id -> session ids
pub(super) const SESSIONS_BY_USER: MultimapTableDefinition<u128, &str> =
    MultimapTableDefinition::new("sessions_by_user_v1");
/// (expires_at as unix nanoseconds, session id), so purging reads only expired rows
pub(super) const SESSIONS_BY_EXPIRY: TableDefinition<(i128, &str), ()> =
    TableDefinition::new("sessions_by_expiry_v1");

/// token id -> `ApiToken`
pub(super) const TOKENS: TableDefinition<u128, &[u8]> = TableDefinition::new("tokens_v1");
/// token hash -> token id
pub(super) const TOKENS_BY_HASH: TableDefinition<&str, u128> =
    TableDefinition::new("tokens_by_hash_v1");
/// user id -> token ids
pub(super) const TOKENS_BY_USER: MultimapTableDefinition<u128, u128> =
    MultimapTableDefinition::new("tokens_by_user_v1");

/// app id -> `App`
pub(super) const APPS: TableDefinition<u128, &[u8]> = TableDefinition::new("apps_v1");
/// slug -> app id
pub(super) const APPS_BY_SLUG: TableDefinition<&str, u128> =
    TableDefinition::new("apps_by_slug_v1");
/// owner id -> app ids
pub(super) const APPS_BY_OWNER: MultimapTableDefinition<u128, u128> =
    MultimapTableDefinition::new("apps_by_owner_v1");

/// app id -> `UploadRecord`
pub(super) const UPLOADS: TableDefinition<u128, &[u8]> = TableDefinition::new("uploads_v1");

/// sequence number (monotonic) -> `AuditEntry`
pub(super) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit_v1");

/// ACME directory URL -> `AcmeAccount` (added in schema v2)
pub(super) const ACME_ACCOUNTS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("acme_accounts_v1");
/// `StoredCertificate::name` -> `StoredCertificate` (added in schema v2)
pub(super) const CERTIFICATES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("certificates_v1");

/// (series: app id or 0 for the system, resolution tag 0/5/15/60, unix seconds) ->
/// fixed-layout metrics point or bucket (added in schema v3; see store/metrics.rs)
pub(super) const METRIC_POINTS: TableDefinition<(u128, u8, i64), &[u8]> =
    TableDefinition::new("metric_points_v1");
/// (app id, start of the hour in unix seconds) -> 60 status bytes, one per minute
/// (added in schema v3)
pub(super) const STATUS_HISTORY: TableDefinition<(u128, i64), &[u8]> =
    TableDefinition::new("status_history_v1");

/// "id" -> this data dir's instance id (a UUID as u128), made on first use
pub(super) const INSTANCE: TableDefinition<&str, u128> = TableDefinition::new("instance_v1");

/// Creates every current table that does not exist yet (opening one creates it).
pub(super) fn create_all(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(META)?;
    txn.open_table(INSTANCE)?;
    txn.open_table(USERS)?;
    txn.open_table(USERS_BY_NAME)?;
    txn.open_table(ADMINS)?;
    txn.open_table(SESSIONS)?;
    txn.open_multimap_table(SESSIONS_BY_USER)?;
    txn.open_table(SESSIONS_BY_EXPIRY)?;
    txn.open_table(TOKENS)?;
    txn.open_table(TOKENS_BY_HASH)?;
    txn.open_multimap_table(TOKENS_BY_USER)?;
    txn.open_table(APPS)?;
    txn.open_table(APPS_BY_SLUG)?;
    txn.open_multimap_table(APPS_BY_OWNER)?;
    txn.open_table(UPLOADS)?;
    txn.open_table(AUDIT)?;
    txn.open_table(ACME_ACCOUNTS)?;
    txn.open_table(CERTIFICATES)?;
    txn.open_table(METRIC_POINTS)?;
    txn.open_table(STATUS_HISTORY)?;
    Ok(())
}

/// Reads and decodes one JSON record.
pub(super) fn load<'k, K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    key: impl std::borrow::Borrow<K::SelfType<'k>>,
    what: &str,
) -> Result<Option<T>>
where
    K: Key + 'static,
    T: DeserializeOwned,
{
    match table.get(key)? {
        Some(guard) => Ok(Some(decode(what, guard.value())?)),
        None => Ok(None),
    }
}
