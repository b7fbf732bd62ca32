//! Snapshots for `rserve-proxy backup` and the checks of `restore`.
//!
//! A snapshot is one read transaction copied table by table into a fresh redb file:
//! redb's read transaction is a consistent view that writers never change, so the
//! copy is exactly the state at one commit, taken while the server keeps writing.
//! (Copying `state.redb`'s bytes instead could catch a header mid-commit.)

use std::path::Path;

use redb::{
    Key, MultimapTableDefinition, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};
use serde::de::DeserializeOwned;

use super::tables::*;
use super::{decode, migrate, Result, Store, StoreError};
use crate::model;

/// What a snapshot or a check found: rows per table, by table name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub schema_version: u32,
    pub rows: Vec<(String, u64)>,
}

impl Counts {
    pub fn get(&self, table: &str) -> u64 {
        self.rows
            .iter()
            .find(|(name, _)| name == table)
            .map_or(0, |(_, n)| *n)
    }
}

impl Store {
    /// Writes this store's current state into a new redb file at `dest` (which must
    /// not exist), from one read transaction.
    pub fn snapshot_into(&self, dest: &Path) -> Result<Counts> {
        if dest.exists() {
            return Err(StoreError::Db(format!("{} already exists", dest.display())));
        }
        // The whole copy inside `with_db`: a store closed for an upgrade hand-over
        // answers `Closed` instead of being read half-way.
        self.with_db(|db| {
            let src = db.begin_read()?;
            let version = migrate::stored_version(&src)?
                .ok_or_else(|| StoreError::Corrupt("schema version missing".into()))?;
            let out = redb::Builder::new()
                .create(dest)
                .map_err(|e| StoreError::from(e).context(&format!("create {}", dest.display())))?;
            let txn = out.begin_write()?;
            let rows = copy_all(&src, &txn)?;
            txn.commit()?;
            Ok(Counts {
                schema_version: version,
                rows,
            })
        })
    }
}

/// Checks a state file that no server uses (a backup being restored): it opens
/// without changes, its schema is not newer than this binary's, and every record
/// decodes. Opens it read-only, so nothing is written, not even a migration.
pub fn check_file(path: &Path) -> Result<Counts> {
    let db = redb::Builder::new()
        .open_read_only(path)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse {
                path: path.to_path_buf(),
            },
            other => StoreError::from(other).context(&format!("open {}", path.display())),
        })?;
    let txn = db.begin_read()?;
    let version = migrate::stored_version(&txn)?
        .ok_or_else(|| StoreError::Corrupt("schema version missing".into()))?;
    if version > migrate::SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            found: version,
            supported: migrate::SCHEMA_VERSION,
        });
    }
    let mut rows: Vec<(String, u64)> = vec![
        ("users_v1".into(), check::<model::User>(&txn, USERS)?),
        (
            "sessions_v1".into(),
            check::<model::Session>(&txn, SESSIONS)?,
        ),
        ("tokens_v1".into(), check::<model::ApiToken>(&txn, TOKENS)?),
        ("apps_v1".into(), check::<model::App>(&txn, APPS)?),
        (
            "uploads_v1".into(),
            check::<model::UploadRecord>(&txn, UPLOADS)?,
        ),
        ("audit_v1".into(), check::<model::AuditEntry>(&txn, AUDIT)?),
    ];
    if version >= 2 {
        rows.push((
            "acme_accounts_v1".into(),
            check::<model::AcmeAccount>(&txn, ACME_ACCOUNTS)?,
        ));
        rows.push((
            "certificates_v1".into(),
            check::<model::StoredCertificate>(&txn, CERTIFICATES)?,
        ));
    }
    Ok(Counts {
        schema_version: version,
        rows,
    })
}

/// Whether a server (or any process) holds the state file at `path` open.
pub fn in_use(path: &Path) -> bool {
    match redb::Builder::new().open_read_only(path) {
        Ok(_) => false,
        Err(redb::DatabaseError::DatabaseAlreadyOpen)
        | Err(redb::DatabaseError::LockProtocolMismatch) => true,
        Err(_) => false,
    }
}

/// Decodes every row of a JSON record table; returns the count.
fn check<T: DeserializeOwned>(
    txn: &ReadTransaction,
    def: TableDefinition<impl Key + 'static, &'static [u8]>,
) -> Result<u64> {
    let table = match txn.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
        Err(e) => return Err(e.into()),
    };
    let mut n = 0;
    for row in table.iter()? {
        let (_, v) = row?;
        decode::<T>(def.name(), v.value())?;
        n += 1;
    }
    Ok(n)
}

/// Every table of `tables.rs`, copied; a table missing in the source is skipped.
fn copy_all(src: &ReadTransaction, dst: &WriteTransaction) -> Result<Vec<(String, u64)>> {
    let mut rows = Vec::new();
    macro_rules! tables {
        ($($t:expr),*) => {$(
            if let Some(n) = copy(src, dst, $t)? {
                rows.push(($t.name().to_string(), n));
            }
        )*};
    }
    macro_rules! multimaps {
        ($($t:expr),*) => {$(
            if let Some(n) = copy_multimap(src, dst, $t)? {
                rows.push(($t.name().to_string(), n));
            }
        )*};
    }
    tables!(
        META,
        INSTANCE,
        USERS,
        USERS_BY_NAME,
        ADMINS,
        SESSIONS,
        SESSIONS_BY_EXPIRY,
        TOKENS,
        TOKENS_BY_HASH,
        APPS,
        APPS_BY_SLUG,
        UPLOADS,
        AUDIT,
        ACME_ACCOUNTS,
        CERTIFICATES,
        METRIC_POINTS,
        STATUS_HISTORY
    );
    multimaps!(SESSIONS_BY_USER, TOKENS_BY_USER, APPS_BY_OWNER);
    Ok(rows)
}

fn copy<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<u64>> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, v) = row?;
        to.insert(k.value(), v.value())?;
        n += 1;
    }
    Ok(Some(n))
}

fn copy_multimap<K: Key + 'static, V: Key + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: MultimapTableDefinition<K, V>,
) -> Result<Option<u64>> {
    let from = match src.open_multimap_table(def) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_multimap_table(def)?;
    let mut n = 0;
    for row in from.iter()? {
        let (k, values) = row?;
        for v in values {
            to.insert(k.value(), v?.value())?;
            n += 1;
        }
    }
    Ok(Some(n))
}
