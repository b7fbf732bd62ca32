//! TLS state: ACME accounts (one per CA directory) and the certificates obtained with
//! them. Both hold private keys; nothing here is ever listed through the API.

use super::tables::{load, ACME_ACCOUNTS, CERTIFICATES};
use super::{audit, encode, Result, Store};
use crate::model::{AcmeAccount, AuditEntry, StoredCertificate};

impl Store {
    /// The account registered at `directory`, if any.
    pub fn get_acme_account(&self, directory: &str) -> Result<Option<AcmeAccount>> {
        self.read("get_acme_account", |txn| {
            load(&txn.open_table(ACME_ACCOUNTS)?, directory, "acme account")
        })
    }

    /// Stores (or replaces) the account for `account.directory`.
    pub fn put_acme_account(&self, account: &AcmeAccount, audit: &AuditEntry) -> Result<()> {
        self.write("put_acme_account", |txn| {
            txn.open_table(ACME_ACCOUNTS)?
                .insert(account.directory.as_str(), encode(account)?.as_slice())?;
            audit::append(txn, audit)
        })
    }

    /// Forgets the account at `directory` (e.g. the CA no longer knows it); `false`
    /// if there was none (and then no audit row).
    pub fn delete_acme_account(&self, directory: &str, audit: &AuditEntry) -> Result<bool> {
        self.write("delete_acme_account", |txn| {
            let removed = txn.open_table(ACME_ACCOUNTS)?.remove(directory)?.is_some();
            if removed {
                audit::append(txn, audit)?;
            }
            Ok(removed)
        })
    }

    /// The certificate stored under `name` (see `StoredCertificate::name_for`).
    pub fn get_certificate(&self, name: &str) -> Result<Option<StoredCertificate>> {
        self.read("get_certificate", |txn| {
            load(&txn.open_table(CERTIFICATES)?, name, "certificate")
        })
    }

    /// Stores (or replaces: a renewal) the certificate under `cert.name`.
    pub fn put_certificate(&self, cert: &StoredCertificate, audit: &AuditEntry) -> Result<()> {
        self.write("put_certificate", |txn| {
            txn.open_table(CERTIFICATES)?
                .insert(cert.name.as_str(), encode(cert)?.as_slice())?;
            audit::append(txn, audit)
        })
    }
}
