//! The audit log: an append-only table keyed by a monotonically increasing sequence.

use redb::{ReadableTable, WriteTransaction};

use super::tables::AUDIT;
use super::{decode, encode, Result, Store};
use crate::model::AuditEntry;

/// Appends `entry` inside the caller's write transaction, so the audit row commits
/// or rolls back together with the change it describes.
pub(super) fn append(txn: &WriteTransaction, entry: &AuditEntry) -> Result<()> {
    let mut table = txn.open_table(AUDIT)?;
    // Write transactions are serialised, so last + 1 cannot collide.
    let next = match table.last()? {
        Some((k, _)) => k.value() + 1,
        None => 1,
    };
    table.insert(next, encode(entry)?.as_slice())?;
    Ok(())
}

impl Store {
    /// Records an action that changes nothing else in the store (e.g. `app.start`).
    pub fn record(&self, audit: &AuditEntry) -> Result<()> {
        self.write("record audit entry", |txn| append(txn, audit))
    }

    /// The newest `limit` entries, newest first.
    pub fn list_audit(&self, limit: usize) -> Result<Vec<AuditEntry>> {
        self.read("list_audit", |txn| {
            let table = txn.open_table(AUDIT)?;
            let mut out = Vec::with_capacity(limit.min(1024));
            for row in table.iter()?.rev().take(limit) {
                let (k, v) = row?;
                out.push(decode(&format!("audit entry {}", k.value()), v.value())?);
            }
            Ok(out)
        })
    }
}
