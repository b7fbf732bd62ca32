//! Persistent state: one embedded redb file (`state.redb`) holding users, sessions,
//! API tokens, apps, upload records, the audit log, and TLS state (ACME accounts and
//! certificates).
//!
//! This is the only module that names redb. Every operation is a short synchronous
//! function (begin, act, commit) returning owned values; async callers wrap it in
//! `spawn_blocking`. A write transaction that is dropped without `commit` rolls back,
//! so an early `?` return is a rollback. Every multi-record change, including its
//! audit row, is one write transaction.
//!
//! Layout: see `tables.rs`. Values are the serde_json bytes of the `crate::model`
//! types; keys are `u128` (from `Uuid::as_u128`), `u64` or `&str`, which redb stores
//! in a fixed (little-endian) byte order and compares by value.

mod acme;
mod apps;
mod audit;
pub mod backup;
mod metrics;
mod migrate;
mod sessions;
mod tables;
mod tokens;
mod users;

pub use metrics::{AuditFilter, AuditPage, Retention, StatusRows, SYSTEM_SERIES};

#[cfg(test)]
mod metrics_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use uuid::Uuid;

/// Cache for redb's page cache. The whole state is a few MiB even for large
/// installs, so this keeps memory bounded without costing reads.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

pub type Result<T> = std::result::Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `path` is the database file; its directory is the data dir.
    #[error(
        "data dir {} is already in use by another rserve-proxy process ({} is locked); stop it or use another --data-dir",
        data_dir_of(.path).display(),
        file_name_of(.path)
    )]
    InUse { path: PathBuf },
    #[error(
        "state.redb has schema version {found}, newer than this binary supports ({supported}); upgrade rserve-proxy"
    )]
    NewerSchema { found: u32, supported: u32 },
    #[error("username {0:?} is already taken")]
    UsernameTaken(String),
    #[error("slug {0:?} is already taken")]
    SlugTaken(String),
    #[error("cannot remove or demote the last admin")]
    LastAdmin,
    #[error("user still owns {0} app(s); delete or reassign them first")]
    UserOwnsApps(usize),
    #[error("not found")]
    NotFound,
    #[error("corrupt state: {0}")]
    Corrupt(String),
    #[error("state database error: {0}")]
    Db(String),
    /// This process handed the data dir to a new one (binary upgrade).
    #[error("the store is closed: this process has handed over to a newer rserve-proxy; retry the request")]
    Closed,
}

impl StoreError {
    /// Prefixes the operation name to errors that otherwise say nothing about where
    /// they happened. Domain errors are left alone: callers match on them.
    fn context(self, op: &str) -> StoreError {
        match self {
            StoreError::Db(msg) => StoreError::Db(format!("{op}: {msg}")),
            other => other,
        }
    }
}

fn data_dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn file_name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
            other => StoreError::Db(other.to_string()),
        }
    }
}

// redb has one error type per call family; all of them convert into `redb::Error`.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                redb::Error::from(e).into()
            }
        }
    )*};
}
from_redb!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Handle to the state database. Cheap to clone; all clones share one file handle.
#[derive(Clone)]
pub struct Store {
    /// `None` once [`Store::close`] ran. The lock is uncontended except against
    /// `close`; it makes "closed" mean closed for every clone at once.
    db: Arc<RwLock<Option<Database>>>,
    path: Arc<PathBuf>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The schema version this binary writes. Bump it together with a new entry in
    /// `migrate::MIGRATIONS` (the compiler checks they match).
    pub const SCHEMA_VERSION: u32 = migrate::SCHEMA_VERSION;

    /// Opens (creating if missing, with parent dirs) the state file, creates every
    /// table, and stamps or migrates the schema version, all in one write
    /// transaction. Refuses a file written by a newer schema. Does no table scans
    /// unless a migration needs one, so it stays fast however much is stored.
    pub fn open(path: &Path) -> Result<Store> {
        let dir = data_dir_of(path);
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Db(format!("create data dir {}: {e}", dir.display())))?;
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)
            .map_err(|e| match e {
                // redb reports both another process's file lock and a second open
                // within this process as `DatabaseAlreadyOpen`; `LockProtocolMismatch`
                // is another process holding it with an incompatible redb version.
                redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch => StoreError::InUse {
                    path: path.to_path_buf(),
                },
                other => StoreError::from(other).context(&format!("open {}", path.display())),
            })?;
        // The file holds password hashes, session ids and TLS private keys: owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| StoreError::Db(format!("restrict {} to mode 0600: {e}", path.display())),
            )?;
        }
        migrate::prepare(&db).map_err(|e| e.context(&format!("open {}", path.display())))?;
        Ok(Store {
            db: Arc::new(RwLock::new(Some(db))),
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// Close the database for every clone of this handle: waits for transactions in
    /// progress, then releases the file (and its lock), so another process can open
    /// it. Later calls fail with [`StoreError::Closed`]. Used when a new process takes
    /// over (see `crate::upgrade`). Idempotent.
    pub fn close(&self) {
        let db = self
            .db
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(db);
    }

    /// Runs `f` with the open database, or fails with `Closed`.
    fn with_db<T>(&self, f: impl FnOnce(&Database) -> Result<T>) -> Result<T> {
        let guard = self
            .db
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }

    /// This data dir's identity, made on first use. The spawner labels what it creates
    /// with it, so two rserve-proxy instances on one Docker host never adopt or remove
    /// each other's containers.
    pub fn instance_id(&self) -> Result<Uuid> {
        let existing = self.read("instance_id", |txn| {
            Ok(txn
                .open_table(tables::INSTANCE)?
                .get("id")?
                .map(|v| v.value()))
        })?;
        if let Some(id) = existing {
            return Ok(Uuid::from_u128(id));
        }
        self.write("instance_id", |txn| {
            let mut table = txn.open_table(tables::INSTANCE)?;
            let stored = table.get("id")?.map(|v| v.value());
            if let Some(id) = stored {
                return Ok(Uuid::from_u128(id));
            }
            let id = Uuid::new_v4();
            table.insert("id", id.as_u128())?;
            Ok(id)
        })
    }

    /// The schema version stamped in the file.
    pub fn schema_version(&self) -> Result<u32> {
        self.read("schema_version", migrate::stored_version)?
            .ok_or_else(|| StoreError::Corrupt("schema version missing".into()))
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    fn read<T>(&self, op: &str, f: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let run = || -> Result<T> {
            self.with_db(|db| {
                let txn = db.begin_read()?;
                f(&txn)
            })
        };
        run().map_err(|e| e.context(op))
    }

    /// Runs `f` in a write transaction and commits if it returns `Ok`. On `Err` the
    /// transaction is dropped, which rolls back everything `f` did.
    fn write<T>(&self, op: &str, f: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let run = || -> Result<T> {
            self.with_db(|db| {
                let txn = db.begin_write()?;
                let value = f(&txn)?;
                txn.commit()?;
                Ok(value)
            })
        };
        run().map_err(|e| e.context(op))
    }
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| StoreError::Db(format!("encode: {e}")))
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// Sorts for "oldest first" listings; the id breaks ties so the order is stable.
fn oldest_first<T>(items: &mut [T], key: impl Fn(&T) -> (time::OffsetDateTime, uuid::Uuid)) {
    items.sort_by_key(key);
}
