//! Schema versioning.
//!
//! The version lives in the `meta` table. `MIGRATIONS[v]` upgrades version `v` to
//! `v + 1`; all pending ones run, with the table creation and the new stamp, in the
//! single write transaction of `Store::open`, so a failed upgrade leaves the file as
//! it was.
//!
//! To change a stored type: add a new table definition (e.g. `APPS_V2`, "apps_v2")
//! in `tables.rs`, keep the old one for reading, bump `SCHEMA_VERSION`, and append a
//! fn here that copies old rows into the new table and deletes the old table.

use redb::{Database, ReadableTable, WriteTransaction};

use super::tables::{self, META};
use super::{Result, StoreError};

pub(super) const SCHEMA_VERSION: u32 = 3;

pub(super) const VERSION_KEY: &str = "schema_version";

type Migration = fn(&WriteTransaction) -> Result<()>;

/// One entry per version step; the array length ties it to `SCHEMA_VERSION`.
const MIGRATIONS: [Migration; SCHEMA_VERSION as usize] = [v0_to_v1, v1_to_v2, v2_to_v3];

/// Version 0 is the pre-release layout: the v1 tables without a version stamp.
/// Nothing to convert; `prepare` creates any missing table and stamps 1.
fn v0_to_v1(_txn: &WriteTransaction) -> Result<()> {
    Ok(())
}

/// Version 2 adds the TLS tables (ACME accounts, certificates). Nothing to convert;
/// creating them here says so explicitly rather than leaving it to `create_all`.
fn v1_to_v2(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(tables::ACME_ACCOUNTS)?;
    txn.open_table(tables::CERTIFICATES)?;
    Ok(())
}

/// Version 3 adds metrics and status history. Nothing to convert.
fn v2_to_v3(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(tables::METRIC_POINTS)?;
    txn.open_table(tables::STATUS_HISTORY)?;
    Ok(())
}

/// Reads the stamped version, if any.
pub(super) fn stored_version(txn: &redb::ReadTransaction) -> Result<Option<u32>> {
    let meta = txn.open_table(META)?;
    let version = meta.get(VERSION_KEY)?.map(|g| g.value());
    Ok(version)
}

/// Creates all tables and brings the schema to `SCHEMA_VERSION`, in one write
/// transaction. Only point reads unless a migration runs.
pub(super) fn prepare(db: &Database) -> Result<()> {
    let txn = db.begin_write()?;
    // Must be checked before `meta` is opened, since opening creates it.
    let has_tables =
        txn.list_tables()?.next().is_some() || txn.list_multimap_tables()?.next().is_some();
    let stored = txn.open_table(META)?.get(VERSION_KEY)?.map(|g| g.value());
    let from = match stored {
        Some(v) => v,
        None if has_tables => 0,
        // A brand-new file gets the current layout directly.
        None => SCHEMA_VERSION,
    };
    if from > SCHEMA_VERSION {
        // Dropping `txn` rolls back: the newer file is left untouched.
        return Err(StoreError::NewerSchema {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (v, migrate) in MIGRATIONS.iter().enumerate().skip(from as usize) {
        migrate(&txn)?;
        tracing::info!(from = v, to = v + 1, "migrated state.redb schema");
    }
    tables::create_all(&txn)?;
    if stored != Some(SCHEMA_VERSION) {
        txn.open_table(META)?.insert(VERSION_KEY, SCHEMA_VERSION)?;
    }
    txn.commit()?;
    Ok(())
}
