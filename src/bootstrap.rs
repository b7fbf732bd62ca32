//! First start: create the `admin` account when the store has no users.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use time::OffsetDateTime;
use uuid::Uuid;

use crate::auth::{password, secrets};
use crate::model::{AuditEntry, Role, User};
use crate::store::{Store, StoreError};

/// File in the data dir holding a generated first admin password (mode 0600).
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("cannot hash the admin password: {0}")]
    Hash(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// What bootstrap did.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Users exist already; nothing done.
    Existing,
    /// `admin` created with the given password.
    Created { generated: bool },
}

/// Create `admin` if there are no users. The password is `given` (from
/// `RSP_ADMIN_PASSWORD`) or generated; a generated one is printed once to stderr and
/// written to `<data>/initial-admin-password` (0600). It is never logged.
pub fn ensure_admin(
    store: &Store,
    data_dir: &Path,
    given: Option<&str>,
) -> Result<Bootstrap, BootstrapError> {
    if store.user_count()? > 0 {
        return Ok(Bootstrap::Existing);
    }
    let generated = given.is_none();
    let pw = given.map_or_else(secrets::new_password, str::to_string);
    let now = OffsetDateTime::now_utc();
    let user = User {
        id: Uuid::new_v4(),
        username: "admin".into(),
        email: None,
        role: Role::Admin,
        password_hash: password::hash(&pw).map_err(BootstrapError::Hash)?,
        created_at: now,
        updated_at: now,
    };
    if generated {
        let path = data_dir.join(INITIAL_PASSWORD_FILE);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)?;
            writeln!(f, "{pw}")
        };
        write().map_err(|source| BootstrapError::Write {
            path: path.display().to_string(),
            source,
        })?;
    }
    store.create_user(
        &user,
        &AuditEntry::new(None, "user.create", Some("admin".into())),
    )?;
    if generated {
        // Deliberately stderr and not the log: shown once, never recorded.
        eprintln!(
            "\n  rserve-proxy: created user \"admin\" with password: {pw}\n  (also saved to {}; delete it once you have changed the password)\n",
            data_dir.join(INITIAL_PASSWORD_FILE).display()
        );
    } else {
        eprintln!("rserve-proxy: created user \"admin\" with the password from RSP_ADMIN_PASSWORD");
    }
    Ok(Bootstrap::Created { generated })
}
