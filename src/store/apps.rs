//! Apps (indexed by slug and by owner) and their upload records.

use redb::{ReadableTable, WriteTransaction};
use uuid::Uuid;

use super::tables::{load, APPS, APPS_BY_OWNER, APPS_BY_SLUG, UPLOADS};
use super::{audit, decode, encode, oldest_first, users, Result, Store, StoreError};
use crate::model::{App, AuditEntry, UploadRecord};

fn app_exists(txn: &WriteTransaction, id: Uuid) -> Result<bool> {
    Ok(txn.open_table(APPS)?.get(id.as_u128())?.is_some())
}

impl Store {
    /// Stores a new app. `SlugTaken` on a slug clash; `NotFound` if the owner does
    /// not exist (so `delete_user`'s owned-apps check cannot be raced).
    pub fn create_app(&self, app: &App, audit: &AuditEntry) -> Result<()> {
        self.write("create_app", |txn| {
            let key = app.id.as_u128();
            let mut by_slug = txn.open_table(APPS_BY_SLUG)?;
            if by_slug.get(app.slug.as_str())?.is_some() {
                return Err(StoreError::SlugTaken(app.slug.clone()));
            }
            if !users::user_exists(txn, app.owner_id)? {
                return Err(StoreError::NotFound);
            }
            let mut apps = txn.open_table(APPS)?;
            if apps.get(key)?.is_some() {
                return Err(StoreError::Db(format!("app id {} already exists", app.id)));
            }
            apps.insert(key, encode(app)?.as_slice())?;
            by_slug.insert(app.slug.as_str(), key)?;
            txn.open_multimap_table(APPS_BY_OWNER)?
                .insert(app.owner_id.as_u128(), key)?;
            audit::append(txn, audit)
        })
    }

    pub fn get_app(&self, id: Uuid) -> Result<Option<App>> {
        self.read("get_app", |txn| {
            load(&txn.open_table(APPS)?, id.as_u128(), "app")
        })
    }

    pub fn get_app_by_slug(&self, slug: &str) -> Result<Option<App>> {
        self.read("get_app_by_slug", |txn| {
            let id = match txn.open_table(APPS_BY_SLUG)?.get(slug)? {
                Some(g) => g.value(),
                None => return Ok(None),
            };
            load(&txn.open_table(APPS)?, id, "app")
        })
    }

    /// All apps, or those of one owner (via the owner index), oldest first.
    pub fn list_apps(&self, owner: Option<Uuid>) -> Result<Vec<App>> {
        self.read("list_apps", |txn| {
            let apps = txn.open_table(APPS)?;
            let mut out: Vec<App> = Vec::new();
            match owner {
                None => {
                    for row in apps.iter()? {
                        out.push(decode("app", row?.1.value())?);
                    }
                }
                Some(owner) => {
                    let by_owner = txn.open_multimap_table(APPS_BY_OWNER)?;
                    for id in by_owner.get(owner.as_u128())? {
                        if let Some(app) = load(&apps, id?.value(), "app")? {
                            out.push(app);
                        }
                    }
                }
            }
            oldest_first(&mut out, |a| (a.created_at, a.id));
            Ok(out)
        })
    }

    /// Replaces the stored app. `NotFound` if missing. The slug is immutable (it names
    /// the app's URL and files): a different slug is refused as `Corrupt`. An owner
    /// change is allowed and keeps the owner index in step (`NotFound` if the new
    /// owner does not exist).
    pub fn update_app(&self, app: &App, audit: &AuditEntry) -> Result<()> {
        self.write("update_app", |txn| {
            replace_app(txn, app)?;
            audit::append(txn, audit)
        })
    }

    /// Deletes the app, its slug and owner index rows and its upload record in one
    /// transaction; returns the deleted app, or `None` (and no audit row) if missing.
    pub fn delete_app(&self, id: Uuid, audit: &AuditEntry) -> Result<Option<App>> {
        let result = self.write("delete_app", |txn| {
            let key = id.as_u128();
            let app: App = {
                let mut apps = txn.open_table(APPS)?;
                let app: App = load(&apps, key, "app")?.ok_or(StoreError::NotFound)?;
                apps.remove(key)?;
                app
            };
            txn.open_table(APPS_BY_SLUG)?.remove(app.slug.as_str())?;
            txn.open_multimap_table(APPS_BY_OWNER)?
                .remove(app.owner_id.as_u128(), key)?;
            txn.open_table(UPLOADS)?.remove(key)?;
            super::metrics::delete_history_in(txn, id)?;
            audit::append(txn, audit)?;
            Ok(app)
        });
        match result {
            Ok(app) => Ok(Some(app)),
            // Rolled back: nothing was written.
            Err(StoreError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Stores (replacing) the upload record of an existing app. `NotFound` if the app
    /// is gone, so a record cannot outlive a concurrent `delete_app`.
    /// Records an upload; `app` (the same app, e.g. with a new entry script) is saved in
    /// the same transaction when given.
    pub fn set_upload(
        &self,
        rec: &UploadRecord,
        app: Option<&App>,
        audit: &AuditEntry,
    ) -> Result<()> {
        self.write("set_upload", |txn| {
            if !app_exists(txn, rec.app_id)? {
                return Err(StoreError::NotFound);
            }
            if let Some(app) = app {
                if app.id != rec.app_id {
                    return Err(StoreError::Corrupt(format!(
                        "upload for app {} cannot update app {}",
                        rec.app_id, app.id
                    )));
                }
                replace_app(txn, app)?;
            }
            txn.open_table(UPLOADS)?
                .insert(rec.app_id.as_u128(), encode(rec)?.as_slice())?;
            audit::append(txn, audit)
        })
    }

    pub fn get_upload(&self, app_id: Uuid) -> Result<Option<UploadRecord>> {
        self.read("get_upload", |txn| {
            load(&txn.open_table(UPLOADS)?, app_id.as_u128(), "upload record")
        })
    }
}

/// Overwrite an existing app record, keeping the indexes right. The slug never changes.
fn replace_app(txn: &WriteTransaction, app: &App) -> Result<()> {
    let key = app.id.as_u128();
    let mut apps = txn.open_table(APPS)?;
    let old: App = load(&apps, key, "app")?.ok_or(StoreError::NotFound)?;
    if old.slug != app.slug {
        return Err(StoreError::Corrupt(format!(
            "app {}: slug is immutable (stored {:?}, got {:?})",
            app.id, old.slug, app.slug
        )));
    }
    if old.owner_id != app.owner_id {
        if !users::user_exists(txn, app.owner_id)? {
            return Err(StoreError::NotFound);
        }
        let mut by_owner = txn.open_multimap_table(APPS_BY_OWNER)?;
        by_owner.remove(old.owner_id.as_u128(), key)?;
        by_owner.insert(app.owner_id.as_u128(), key)?;
    }
    apps.insert(key, encode(app)?.as_slice())?;
    Ok(())
}
