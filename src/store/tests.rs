//! Store tests against real redb files in temporary directories.

use std::path::{Path, PathBuf};
use std::process::Command;

use tempfile::TempDir;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use super::migrate::VERSION_KEY;
use super::tables::META;
use super::{Store, StoreError};
use crate::model::{ApiToken, App, AuditEntry, CodeSource, Role, Session, UploadRecord, User};

// ---------------------------------------------------------------- helpers

const T0: OffsetDateTime = datetime!(2024-01-01 00:00 UTC);

fn at(minutes: i64) -> OffsetDateTime {
    T0 + Duration::minutes(minutes)
}

fn temp() -> (TempDir, PathBuf) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.redb");
    (dir, path)
}

fn open_temp() -> (TempDir, Store) {
    let (dir, path) = temp();
    let store = Store::open(&path).unwrap();
    (dir, store)
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry::new(None, action, None)
}

fn user(name: &str, role: Role, minutes: i64) -> User {
    User {
        id: Uuid::new_v4(),
        username: name.to_string(),
        email: Some(format!("{name}@example.org")),
        role,
        password_hash: format!("hash-of-{name}"),
        created_at: at(minutes),
        updated_at: at(minutes),
    }
}

fn add_user(store: &Store, name: &str, role: Role, minutes: i64) -> User {
    let u = user(name, role, minutes);
    store.create_user(&u, &audit("user.create")).unwrap();
    u
}

fn session(id: &str, user: &User, expires: OffsetDateTime) -> Session {
    Session {
        id: id.to_string(),
        user_id: user.id,
        created_at: T0,
        expires_at: expires,
    }
}

fn add_session(store: &Store, id: &str, user: &User) -> Session {
    let s = session(id, user, at(60 * 24));
    store.create_session(&s, None).unwrap();
    s
}

fn token(user: &User, name: &str, minutes: i64) -> ApiToken {
    ApiToken {
        id: Uuid::new_v4(),
        user_id: user.id,
        scope: Default::default(),
        name: name.to_string(),
        token_hash: format!("{:064x}", Uuid::new_v4().as_u128()),
        token_prefix: "rsp_abcdefgh".to_string(),
        expires_at: None,
        last_used_at: None,
        created_at: at(minutes),
    }
}

fn add_token(store: &Store, user: &User, name: &str, minutes: i64) -> ApiToken {
    let t = token(user, name, minutes);
    store.create_token(&t, &audit("token.create")).unwrap();
    t
}

fn app(slug: &str, owner: &User, minutes: i64) -> App {
    App {
        id: Uuid::new_v4(),
        name: format!("App {slug}"),
        slug: slug.to_string(),
        r_version: "4.4".to_string(),
        packages: vec!["jsonlite".to_string()],
        code_source: CodeSource::Git {
            repo_url: "https://example.org/repo.git".to_string(),
            branch: Some("main".to_string()),
        },
        entry_script: "app.R".to_string(),
        replicas: 1,
        settings: Default::default(),
        owner_id: owner.id,
        created_at: at(minutes),
        updated_at: at(minutes),
    }
}

fn add_app(store: &Store, slug: &str, owner: &User, minutes: i64) -> App {
    let a = app(slug, owner, minutes);
    store.create_app(&a, &audit("app.create")).unwrap();
    a
}

fn upload(app: &App, filename: &str) -> UploadRecord {
    UploadRecord {
        app_id: app.id,
        filename: filename.to_string(),
        path: format!("apps/{}/code", app.id),
        files: vec!["app.R".to_string(), "data/x.csv".to_string()],
        total_bytes: 1234,
        uploaded_at: T0,
    }
}

fn audit_actions(store: &Store) -> Vec<String> {
    store
        .list_audit(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect()
}

/// Writes the meta table of a closed file directly, as another binary version would.
fn with_raw_db(path: &Path, f: impl FnOnce(&redb::WriteTransaction)) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    f(&txn);
    txn.commit().unwrap();
}

fn raw_version(path: &Path) -> Option<u32> {
    use redb::ReadableDatabase;
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_read().unwrap();
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return None,
        Err(e) => panic!("{e}"),
    };
    let v = meta.get(VERSION_KEY).unwrap().map(|g| g.value());
    v
}

// ---------------------------------------------------------------- open / schema

#[test]
fn fresh_file_gets_current_version_and_parent_dirs() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("a/b/state.redb");
    let store = Store::open(&path).unwrap();
    assert!(path.exists());
    assert_eq!(Store::SCHEMA_VERSION, 3);
    assert_eq!(store.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert_eq!(store.user_count().unwrap(), 0);
    assert!(store.list_apps(None).unwrap().is_empty());
    assert!(store.list_audit(10).unwrap().is_empty());
}

#[test]
fn reopen_keeps_data() {
    let (_dir, path) = temp();
    let (u, a, t) = {
        let store = Store::open(&path).unwrap();
        let u = add_user(&store, "alice", Role::Admin, 0);
        let a = add_app(&store, "demo", &u, 1);
        let t = add_token(&store, &u, "ci", 2);
        add_session(&store, "s1", &u);
        store
            .set_upload(&upload(&a, "x.zip"), None, &audit("app.upload"))
            .unwrap();
        (u, a, t)
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert_eq!(store.get_user(u.id).unwrap(), Some(u.clone()));
    assert_eq!(
        store.get_user_by_username("alice").unwrap(),
        Some(u.clone())
    );
    assert_eq!(store.get_app_by_slug("demo").unwrap(), Some(a.clone()));
    assert_eq!(store.get_token_by_hash(&t.token_hash).unwrap(), Some(t));
    assert_eq!(
        store.get_session("s1").unwrap().map(|s| s.user_id),
        Some(u.id)
    );
    assert_eq!(store.get_upload(a.id).unwrap().unwrap().filename, "x.zip");
    assert_eq!(store.list_audit(100).unwrap().len(), 4);
}

#[test]
fn unstamped_file_is_version_0_and_migrates_to_current() {
    let (_dir, path) = temp();
    let u = {
        let store = Store::open(&path).unwrap();
        add_user(&store, "alice", Role::Admin, 0)
    };
    // Pre-release layout: our tables, no version stamp.
    with_raw_db(&path, |txn| {
        assert!(txn.delete_table(META).unwrap());
    });
    assert_eq!(raw_version(&path), None);

    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert_eq!(store.get_user(u.id).unwrap(), Some(u));
    drop(store);
    assert_eq!(raw_version(&path), Some(Store::SCHEMA_VERSION));
}

#[test]
fn empty_existing_file_is_treated_as_fresh() {
    let (_dir, path) = temp();
    std::fs::write(&path, b"").unwrap();
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), Store::SCHEMA_VERSION);
}

#[test]
fn newer_schema_is_refused_and_file_left_untouched() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        add_user(&store, "alice", Role::Admin, 0);
    }
    with_raw_db(&path, |txn| {
        txn.open_table(META)
            .unwrap()
            .insert(VERSION_KEY, 99)
            .unwrap();
    });
    match Store::open(&path) {
        Err(StoreError::NewerSchema { found, supported }) => {
            assert_eq!((found, supported), (99, Store::SCHEMA_VERSION));
        }
        other => panic!("expected NewerSchema, got {other:?}"),
    }
    let msg = StoreError::NewerSchema {
        found: 99,
        supported: 1,
    }
    .to_string();
    assert_eq!(
        msg,
        "state.redb has schema version 99, newer than this binary supports (1); upgrade rserve-proxy"
    );
    assert_eq!(raw_version(&path), Some(99));
}

#[test]
fn second_open_in_same_process_is_in_use_until_closed() {
    let (dir, path) = temp();
    let store = Store::open(&path).unwrap();
    match Store::open(&path) {
        Err(e @ StoreError::InUse { .. }) => {
            let msg = e.to_string();
            assert_eq!(
                msg,
                format!(
                    "data dir {} is already in use by another rserve-proxy process (state.redb is locked); stop it or use another --data-dir",
                    dir.path().display()
                )
            );
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    // A clone is the same handle, not a second open; the lock goes with the last clone.
    let clone = store.clone();
    drop(store);
    assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
    drop(clone);
    Store::open(&path).unwrap();
}

const PROBE_ENV: &str = "RSERVE_PROXY_STORE_OPEN_PROBE";

/// Child half of `second_open_from_another_process_is_in_use`: does nothing unless
/// that test spawned this binary with `PROBE_ENV` set.
#[test]
fn open_probe_child() {
    let Ok(path) = std::env::var(PROBE_ENV) else {
        return;
    };
    match Store::open(Path::new(&path)) {
        Err(StoreError::InUse { .. }) => println!("PROBE-RESULT: in-use"),
        Ok(_) => println!("PROBE-RESULT: opened"),
        Err(e) => println!("PROBE-RESULT: error {e}"),
    }
}

fn run_probe(path: &Path) -> String {
    // Test names are module paths without the crate name.
    let module = module_path!()
        .split_once("::")
        .map_or(module_path!(), |(_, rest)| rest);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            format!("{module}::open_probe_child").as_str(),
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(PROBE_ENV, path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "probe failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn second_open_from_another_process_is_in_use() {
    let (_dir, path) = temp();
    let store = Store::open(&path).unwrap();
    let out = run_probe(&path);
    assert!(out.contains("PROBE-RESULT: in-use"), "{out}");
    // A refused open in this process closes its own file handle; with plain POSIX
    // locks that would drop our lock too. Check it does not.
    assert!(matches!(Store::open(&path), Err(StoreError::InUse { .. })));
    let out = run_probe(&path);
    assert!(out.contains("PROBE-RESULT: in-use"), "{out}");
    store.record(&audit("still.writable")).unwrap();
    drop(store);
    let out = run_probe(&path);
    assert!(out.contains("PROBE-RESULT: opened"), "{out}");
}

#[test]
fn garbage_file_is_an_error_not_a_panic() {
    let (_dir, path) = temp();
    std::fs::write(&path, vec![0x5a_u8; 64 * 1024]).unwrap();
    match Store::open(&path) {
        Err(StoreError::Corrupt(_) | StoreError::Db(_)) => {}
        other => panic!("expected Corrupt or Db, got {other:?}"),
    }
}

#[test]
fn clones_share_the_database() {
    let (_dir, store) = open_temp();
    let other = store.clone();
    let u = add_user(&store, "alice", Role::Admin, 0);
    assert_eq!(other.get_user(u.id).unwrap(), Some(u));
}

// ---------------------------------------------------------------- users

#[test]
fn create_and_get_users() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    assert_eq!(store.user_count().unwrap(), 2);
    assert_eq!(store.get_user(alice.id).unwrap(), Some(alice.clone()));
    assert_eq!(store.get_user_by_username("bob").unwrap(), Some(bob));
    assert_eq!(store.get_user(Uuid::new_v4()).unwrap(), None);
    assert_eq!(store.get_user_by_username("carol").unwrap(), None);
    assert_eq!(audit_actions(&store), ["user.create", "user.create"]);
}

#[test]
fn username_is_unique_and_case_sensitive() {
    let (_dir, store) = open_temp();
    add_user(&store, "alice", Role::Admin, 0);
    let dup = user("alice", Role::User, 1);
    match store.create_user(&dup, &audit("user.create")) {
        Err(StoreError::UsernameTaken(name)) => assert_eq!(name, "alice"),
        other => panic!("expected UsernameTaken, got {other:?}"),
    }
    // The failed create wrote nothing, not even its audit row.
    assert_eq!(store.user_count().unwrap(), 1);
    assert_eq!(store.get_user(dup.id).unwrap(), None);
    assert_eq!(audit_actions(&store), ["user.create"]);

    let upper = add_user(&store, "Alice", Role::User, 2);
    assert_eq!(store.get_user_by_username("Alice").unwrap(), Some(upper));
    assert_eq!(store.user_count().unwrap(), 2);
}

#[test]
fn list_users_oldest_first() {
    let (_dir, store) = open_temp();
    // Insert out of creation order; ids are random so key order is random too.
    let c = add_user(&store, "carol", Role::User, 30);
    let a = add_user(&store, "alice", Role::Admin, 10);
    let b = add_user(&store, "bob", Role::User, 20);
    let names: Vec<_> = store
        .list_users()
        .unwrap()
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, [a.username, b.username, c.username]);
}

#[test]
fn update_user_changes_fields() {
    let (_dir, store) = open_temp();
    add_user(&store, "root", Role::Admin, 0);
    let mut bob = add_user(&store, "bob", Role::User, 1);
    bob.email = None;
    bob.role = Role::Admin;
    bob.updated_at = at(5);
    store.update_user(&bob, &[audit("user.update")]).unwrap();
    assert_eq!(store.get_user(bob.id).unwrap(), Some(bob.clone()));
    // Promoted bob counts as an admin: root can now be demoted.
    let mut root = store.get_user_by_username("root").unwrap().unwrap();
    root.role = Role::User;
    store.update_user(&root, &[audit("user.update")]).unwrap();
    assert_eq!(store.get_user(root.id).unwrap().unwrap().role, Role::User);
}

#[test]
fn update_missing_user_is_not_found() {
    let (_dir, store) = open_temp();
    let ghost = user("ghost", Role::User, 0);
    assert!(matches!(
        store.update_user(&ghost, &[audit("user.update")]),
        Err(StoreError::NotFound)
    ));
    assert!(audit_actions(&store).is_empty());
}

#[test]
fn cannot_demote_last_admin() {
    let (_dir, store) = open_temp();
    let mut root = add_user(&store, "root", Role::Admin, 0);
    add_user(&store, "bob", Role::User, 1);
    root.role = Role::User;
    assert!(matches!(
        store.update_user(&root, &[audit("user.update")]),
        Err(StoreError::LastAdmin)
    ));
    assert_eq!(store.get_user(root.id).unwrap().unwrap().role, Role::Admin);
    assert_eq!(
        StoreError::LastAdmin.to_string(),
        "cannot remove or demote the last admin"
    );

    // Updating the admin without demoting is fine.
    root.role = Role::Admin;
    root.email = None;
    store.update_user(&root, &[audit("user.update")]).unwrap();
}

#[test]
fn renaming_keeps_username_index_consistent() {
    let (_dir, store) = open_temp();
    add_user(&store, "root", Role::Admin, 0);
    let mut bob = add_user(&store, "bob", Role::User, 1);
    bob.username = "root".to_string();
    assert!(matches!(
        store.update_user(&bob, &[audit("user.update")]),
        Err(StoreError::UsernameTaken(_))
    ));
    bob.username = "robert".to_string();
    store.update_user(&bob, &[audit("user.update")]).unwrap();
    assert_eq!(store.get_user_by_username("bob").unwrap(), None);
    assert_eq!(store.get_user_by_username("robert").unwrap(), Some(bob));
    // The old name is free again.
    add_user(&store, "bob", Role::User, 2);
}

#[test]
fn set_password_kills_other_sessions_but_keeps_one() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    add_session(&store, "a1", &alice);
    add_session(&store, "a2", &alice);
    add_session(&store, "a3", &alice);
    add_session(&store, "b1", &bob);

    store
        .set_password(
            alice.id,
            "new-hash",
            Some("a2"),
            false,
            &[audit("user.password")],
        )
        .unwrap();
    let stored = store.get_user(alice.id).unwrap().unwrap();
    assert_eq!(stored.password_hash, "new-hash");
    assert!(stored.updated_at > alice.updated_at);
    assert_eq!(store.get_session("a1").unwrap(), None);
    assert!(store.get_session("a2").unwrap().is_some());
    assert_eq!(store.get_session("a3").unwrap(), None);
    assert!(store.get_session("b1").unwrap().is_some());
    assert_eq!(
        audit_actions(&store).first().map(String::as_str),
        Some("user.password")
    );

    // Without a session to keep, all go.
    store
        .set_password(
            alice.id,
            "newer-hash",
            None,
            false,
            &[audit("user.password")],
        )
        .unwrap();
    assert_eq!(store.get_session("a2").unwrap(), None);
    assert!(store.get_session("b1").unwrap().is_some());
    // The index rows went too: purge finds nothing of alice's to delete.
    assert_eq!(store.purge_expired_sessions(at(60 * 24 * 365)).unwrap(), 1);
}

#[test]
fn set_password_of_missing_user_is_not_found() {
    let (_dir, store) = open_temp();
    assert!(matches!(
        store.set_password(Uuid::new_v4(), "h", None, false, &[audit("user.password")]),
        Err(StoreError::NotFound)
    ));
    assert!(audit_actions(&store).is_empty());
}

#[test]
fn delete_user_cascades_sessions_and_tokens() {
    let (_dir, store) = open_temp();
    add_user(&store, "root", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    add_session(&store, "b1", &bob);
    add_session(&store, "b2", &bob);
    let t1 = add_token(&store, &bob, "t1", 2);
    let t2 = add_token(&store, &bob, "t2", 3);

    store.delete_user(bob.id, &audit("user.delete")).unwrap();
    assert_eq!(store.get_user(bob.id).unwrap(), None);
    assert_eq!(store.get_user_by_username("bob").unwrap(), None);
    assert_eq!(store.user_count().unwrap(), 1);
    assert_eq!(store.get_session("b1").unwrap(), None);
    assert_eq!(store.get_session("b2").unwrap(), None);
    assert_eq!(store.get_token_by_hash(&t1.token_hash).unwrap(), None);
    assert_eq!(store.get_token_by_hash(&t2.token_hash).unwrap(), None);
    assert!(store.list_tokens(bob.id).unwrap().is_empty());
    assert_eq!(store.purge_expired_sessions(at(60 * 24 * 365)).unwrap(), 0);
    assert_eq!(
        audit_actions(&store).first().map(String::as_str),
        Some("user.delete")
    );

    // The username is free again.
    add_user(&store, "bob", Role::User, 5);
}

#[test]
fn delete_user_refusals_write_nothing() {
    let (_dir, store) = open_temp();
    let root = add_user(&store, "root", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    add_app(&store, "one", &bob, 2);
    add_app(&store, "two", &bob, 3);
    let before = audit_actions(&store).len();

    assert!(matches!(
        store.delete_user(Uuid::new_v4(), &audit("user.delete")),
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete_user(root.id, &audit("user.delete")),
        Err(StoreError::LastAdmin)
    ));
    match store.delete_user(bob.id, &audit("user.delete")) {
        Err(StoreError::UserOwnsApps(n)) => assert_eq!(n, 2),
        other => panic!("expected UserOwnsApps, got {other:?}"),
    }
    assert_eq!(store.user_count().unwrap(), 2);
    assert_eq!(audit_actions(&store).len(), before);

    // With a second admin, the first can go.
    let admin2 = add_user(&store, "admin2", Role::Admin, 4);
    store.delete_user(root.id, &audit("user.delete")).unwrap();
    // And now admin2 is the last one.
    assert!(matches!(
        store.delete_user(admin2.id, &audit("user.delete")),
        Err(StoreError::LastAdmin)
    ));
}

// ---------------------------------------------------------------- sessions

#[test]
fn session_lifecycle() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let s = session("abc", &alice, at(60));
    store
        .create_session(&s, Some(&audit("auth.login")))
        .unwrap();
    assert_eq!(store.get_session("abc").unwrap(), Some(s.clone()));
    assert_eq!(store.get_session("nope").unwrap(), None);

    assert!(store
        .delete_session("abc", Some(&audit("auth.logout")))
        .unwrap());
    assert_eq!(store.get_session("abc").unwrap(), None);
    // Second delete: false, and no audit row for it.
    assert!(!store
        .delete_session("abc", Some(&audit("auth.logout")))
        .unwrap());
    assert_eq!(
        audit_actions(&store),
        ["auth.logout", "auth.login", "user.create"]
    );

    // Without an audit entry nothing is logged.
    add_session(&store, "quiet", &alice);
    assert!(store.delete_session("quiet", None).unwrap());
    assert_eq!(audit_actions(&store).len(), 3);
}

#[test]
fn session_for_missing_user_is_refused() {
    let (_dir, store) = open_temp();
    let ghost = user("ghost", Role::User, 0);
    assert!(matches!(
        store.create_session(&session("s", &ghost, at(1)), Some(&audit("auth.login"))),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_session("s").unwrap(), None);
    assert!(audit_actions(&store).is_empty());
}

#[test]
fn purge_expired_sessions_removes_only_expired() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 0);
    for (id, u, exp) in [
        ("old1", &alice, 10),
        ("old2", &bob, 20),
        ("edge", &alice, 30),
        ("live1", &alice, 31),
        ("live2", &bob, 100),
    ] {
        store
            .create_session(&session(id, u, at(exp)), None)
            .unwrap();
    }
    // expires_at <= now counts as expired.
    assert_eq!(store.purge_expired_sessions(at(30)).unwrap(), 3);
    for id in ["old1", "old2", "edge"] {
        assert_eq!(store.get_session(id).unwrap(), None, "{id}");
    }
    for id in ["live1", "live2"] {
        assert!(store.get_session(id).unwrap().is_some(), "{id}");
    }
    assert_eq!(store.purge_expired_sessions(at(30)).unwrap(), 0);
    // The user index lost the purged rows: a password change removes just live1.
    store
        .set_password(alice.id, "h", None, false, &[audit("user.password")])
        .unwrap();
    assert_eq!(store.get_session("live1").unwrap(), None);
    assert!(store.get_session("live2").unwrap().is_some());
    assert_eq!(store.purge_expired_sessions(at(1000)).unwrap(), 1);
}

// ---------------------------------------------------------------- tokens

#[test]
fn token_lookup_and_listing() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 0);
    let t2 = add_token(&store, &alice, "second", 20);
    let t1 = add_token(&store, &alice, "first", 10);
    let tb = add_token(&store, &bob, "bobs", 5);

    assert_eq!(
        store.get_token_by_hash(&t1.token_hash).unwrap(),
        Some(t1.clone())
    );
    assert_eq!(
        store.get_token_by_hash(&tb.token_hash).unwrap(),
        Some(tb.clone())
    );
    assert_eq!(store.get_token_by_hash("0000").unwrap(), None);
    assert_eq!(store.list_tokens(alice.id).unwrap(), [t1, t2]);
    assert_eq!(store.list_tokens(bob.id).unwrap(), [tb]);
    assert!(store.list_tokens(Uuid::new_v4()).unwrap().is_empty());
}

#[test]
fn token_for_missing_user_is_refused() {
    let (_dir, store) = open_temp();
    let ghost = user("ghost", Role::User, 0);
    let t = token(&ghost, "t", 0);
    assert!(matches!(
        store.create_token(&t, &audit("token.create")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_token_by_hash(&t.token_hash).unwrap(), None);
    assert!(audit_actions(&store).is_empty());
}

#[test]
fn delete_token_only_by_its_owner() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 0);
    let t = add_token(&store, &alice, "t", 1);
    let before = audit_actions(&store).len();

    assert!(!store
        .delete_token(bob.id, t.id, &audit("token.delete"))
        .unwrap());
    assert!(!store
        .delete_token(alice.id, Uuid::new_v4(), &audit("token.delete"))
        .unwrap());
    assert_eq!(audit_actions(&store).len(), before);
    assert_eq!(
        store.get_token_by_hash(&t.token_hash).unwrap(),
        Some(t.clone())
    );

    assert!(store
        .delete_token(alice.id, t.id, &audit("token.delete"))
        .unwrap());
    assert_eq!(store.get_token_by_hash(&t.token_hash).unwrap(), None);
    assert!(store.list_tokens(alice.id).unwrap().is_empty());
    assert_eq!(audit_actions(&store).len(), before + 1);
    assert!(!store
        .delete_token(alice.id, t.id, &audit("token.delete"))
        .unwrap());
}

#[test]
fn touch_tokens_batches_last_used() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let t1 = add_token(&store, &alice, "a", 1);
    let t2 = add_token(&store, &alice, "b", 2);
    let t3 = add_token(&store, &alice, "c", 3);
    store.touch_tokens(&[]).unwrap();
    store
        .touch_tokens(&[(t1.id, at(100)), (Uuid::new_v4(), at(100)), (t2.id, at(50))])
        .unwrap();
    let get = |t: &ApiToken| store.get_token_by_hash(&t.token_hash).unwrap().unwrap();
    assert_eq!(get(&t1).last_used_at, Some(at(100)));
    assert_eq!(get(&t2).last_used_at, Some(at(50)));
    assert_eq!(get(&t3).last_used_at, None);
    // An older time does not move last_used_at backwards.
    store
        .touch_tokens(&[(t1.id, at(90)), (t2.id, at(60))])
        .unwrap();
    assert_eq!(get(&t1).last_used_at, Some(at(100)));
    assert_eq!(get(&t2).last_used_at, Some(at(60)));
    // Touching is not an audited action, and changes nothing else.
    assert_eq!(audit_actions(&store).len(), 4);
    assert_eq!(get(&t1).name, "a");
}

// ---------------------------------------------------------------- apps

#[test]
fn app_create_get_and_slug_uniqueness() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let a = add_app(&store, "demo", &alice, 1);
    assert_eq!(store.get_app(a.id).unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_slug("demo").unwrap(), Some(a.clone()));
    assert_eq!(store.get_app_by_slug("other").unwrap(), None);
    assert_eq!(store.get_app(Uuid::new_v4()).unwrap(), None);

    let dup = app("demo", &alice, 2);
    match store.create_app(&dup, &audit("app.create")) {
        Err(StoreError::SlugTaken(s)) => assert_eq!(s, "demo"),
        other => panic!("expected SlugTaken, got {other:?}"),
    }
    assert_eq!(store.get_app(dup.id).unwrap(), None);
    assert_eq!(audit_actions(&store), ["app.create", "user.create"]);

    let ghost = user("ghost", Role::User, 0);
    assert!(matches!(
        store.create_app(&app("orphan", &ghost, 3), &audit("app.create")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_app_by_slug("orphan").unwrap(), None);
}

#[test]
fn list_apps_all_or_by_owner_oldest_first() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 0);
    let mut expected_all = Vec::new();
    let mut expected_bob = Vec::new();
    // Created out of order, interleaving owners.
    for (i, minute) in [50, 10, 40, 20, 30, 60, 5].into_iter().enumerate() {
        let owner = if i % 2 == 0 { &alice } else { &bob };
        let a = add_app(&store, &format!("app-{i}"), owner, minute);
        if owner.id == bob.id {
            expected_bob.push(a.clone());
        }
        expected_all.push(a);
    }
    expected_all.sort_by_key(|a| a.created_at);
    expected_bob.sort_by_key(|a| a.created_at);
    assert_eq!(store.list_apps(None).unwrap(), expected_all);
    assert_eq!(store.list_apps(Some(bob.id)).unwrap(), expected_bob);
    assert_eq!(store.list_apps(Some(alice.id)).unwrap().len(), 4);
    assert!(store.list_apps(Some(Uuid::new_v4())).unwrap().is_empty());
}

#[test]
fn update_app_rules() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 0);
    let mut a = add_app(&store, "demo", &alice, 1);

    a.replicas = 3;
    a.packages.push("shiny".to_string());
    a.code_source = CodeSource::Upload;
    store.update_app(&a, &audit("app.update")).unwrap();
    assert_eq!(store.get_app(a.id).unwrap(), Some(a.clone()));

    let mut renamed = a.clone();
    renamed.slug = "other".to_string();
    assert!(matches!(
        store.update_app(&renamed, &audit("app.update")),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(store.get_app_by_slug("other").unwrap(), None);

    assert!(matches!(
        store.update_app(&app("ghost", &alice, 0), &audit("app.update")),
        Err(StoreError::NotFound)
    ));

    // Changing the owner moves the app between owner listings.
    a.owner_id = bob.id;
    store.update_app(&a, &audit("app.update")).unwrap();
    assert!(store.list_apps(Some(alice.id)).unwrap().is_empty());
    assert_eq!(store.list_apps(Some(bob.id)).unwrap(), [a.clone()]);
    assert!(matches!(
        store.delete_user(alice.id, &audit("user.delete")),
        Err(StoreError::LastAdmin)
    ));
    match store.delete_user(bob.id, &audit("user.delete")) {
        Err(StoreError::UserOwnsApps(1)) => {}
        other => panic!("expected UserOwnsApps(1), got {other:?}"),
    }
}

#[test]
fn delete_app_removes_upload_and_frees_slug() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let a = add_app(&store, "demo", &alice, 1);
    store
        .set_upload(&upload(&a, "v1.zip"), None, &audit("app.upload"))
        .unwrap();

    let deleted = store.delete_app(a.id, &audit("app.delete")).unwrap();
    assert_eq!(deleted, Some(a.clone()));
    assert_eq!(store.get_app(a.id).unwrap(), None);
    assert_eq!(store.get_app_by_slug("demo").unwrap(), None);
    assert_eq!(store.get_upload(a.id).unwrap(), None);
    assert!(store.list_apps(Some(alice.id)).unwrap().is_empty());
    assert_eq!(
        audit_actions(&store).first().map(String::as_str),
        Some("app.delete")
    );

    // Missing: None and no audit row.
    let n = audit_actions(&store).len();
    assert_eq!(store.delete_app(a.id, &audit("app.delete")).unwrap(), None);
    assert_eq!(audit_actions(&store).len(), n);

    // The slug can be reused, and alice (owning nothing now) could be deleted.
    let again = add_app(&store, "demo", &alice, 2);
    assert_eq!(store.get_app_by_slug("demo").unwrap(), Some(again));
}

#[test]
fn upload_records() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let a = add_app(&store, "demo", &alice, 1);
    assert_eq!(store.get_upload(a.id).unwrap(), None);
    let r1 = upload(&a, "v1.zip");
    store.set_upload(&r1, None, &audit("app.upload")).unwrap();
    assert_eq!(store.get_upload(a.id).unwrap(), Some(r1));
    let r2 = upload(&a, "v2.tar.gz");
    store.set_upload(&r2, None, &audit("app.upload")).unwrap();
    assert_eq!(store.get_upload(a.id).unwrap(), Some(r2));

    let ghost = app("ghost", &alice, 0);
    assert!(matches!(
        store.set_upload(&upload(&ghost, "x.zip"), None, &audit("app.upload")),
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.get_upload(ghost.id).unwrap(), None);
}

// ---------------------------------------------------------------- audit

#[test]
fn audit_log_newest_first_with_limit_and_survives_reopen() {
    let (_dir, path) = temp();
    {
        let store = Store::open(&path).unwrap();
        for i in 0..5 {
            let e = AuditEntry::new(None, &format!("app.start{i}"), Some(format!("t{i}")))
                .with_ip(Some("127.0.0.1".to_string()));
            store.record(&e).unwrap();
        }
        let all = store.list_audit(100).unwrap();
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].action, "app.start4");
        assert_eq!(all[0].target.as_deref(), Some("t4"));
        assert_eq!(all[0].ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(all[0].actor_name, "system");
        let two: Vec<_> = store
            .list_audit(2)
            .unwrap()
            .into_iter()
            .map(|e| e.action)
            .collect();
        assert_eq!(two, ["app.start4", "app.start3"]);
        assert!(store.list_audit(0).unwrap().is_empty());
    }
    // The sequence continues after a reopen: new rows are still newest.
    let store = Store::open(&path).unwrap();
    store.record(&audit("app.stop")).unwrap();
    let actions = audit_actions(&store);
    assert_eq!(actions.len(), 6);
    assert_eq!(actions[0], "app.stop");
    assert_eq!(actions[5], "app.start0");
}

#[test]
fn audit_entry_records_the_actor() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    store
        .record(&AuditEntry::new(
            Some(&alice),
            "app.start",
            Some("demo".into()),
        ))
        .unwrap();
    let last = store.list_audit(1).unwrap().remove(0);
    assert_eq!(last.actor_id, Some(alice.id));
    assert_eq!(last.actor_name, "alice");
}

// ---------------------------------------------------------------- errors

#[test]
fn undecodable_record_is_corrupt() {
    let (_dir, path) = temp();
    let id = {
        let store = Store::open(&path).unwrap();
        add_user(&store, "alice", Role::Admin, 0).id
    };
    with_raw_db(&path, |txn| {
        txn.open_table(super::tables::USERS)
            .unwrap()
            .insert(id.as_u128(), b"not json".as_slice())
            .unwrap();
    });
    let store = Store::open(&path).unwrap();
    assert!(matches!(store.get_user(id), Err(StoreError::Corrupt(_))));
}

#[test]
fn update_user_with_a_new_password_hash_ends_all_their_sessions() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    add_session(&store, "a1", &alice);
    add_session(&store, "b1", &bob);

    let mut changed = alice.clone();
    changed.email = None;
    store
        .update_user(&changed, &[audit("user.update")])
        .unwrap();
    assert!(
        store.get_session("a1").unwrap().is_some(),
        "same hash: sessions stay"
    );

    changed.password_hash = "reset-hash".into();
    store
        .update_user(&changed, &[audit("user.update")])
        .unwrap();
    assert_eq!(store.get_session("a1").unwrap(), None);
    assert!(store.get_session("b1").unwrap().is_some());
}

#[test]
fn update_user_with_a_new_password_hash_revokes_their_tokens_with_the_audit_rows() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    let a1 = add_token(&store, &alice, "ci", 2);
    let a2 = add_token(&store, &alice, "laptop", 3);
    let b1 = add_token(&store, &bob, "bob's", 4);

    let mut changed = alice.clone();
    changed.email = None;
    store
        .update_user(&changed, &[audit("user.update")])
        .unwrap();
    assert_eq!(
        store.list_tokens(alice.id).unwrap().len(),
        2,
        "same hash: tokens stay"
    );

    changed.password_hash = "reset-hash".into();
    store
        .update_user(
            &changed,
            &[audit("user.update"), audit("user.password_reset")],
        )
        .unwrap();
    assert!(store.list_tokens(alice.id).unwrap().is_empty());
    for t in [&a1, &a2] {
        assert_eq!(store.get_token_by_hash(&t.token_hash).unwrap(), None);
    }
    assert_eq!(
        store
            .get_token_by_hash(&b1.token_hash)
            .unwrap()
            .map(|t| t.id),
        Some(b1.id)
    );
    let actions = audit_actions(&store);
    assert_eq!(&actions[..2], ["user.password_reset", "user.update"]);
}

#[test]
fn set_password_revokes_tokens_only_when_asked() {
    let (_dir, store) = open_temp();
    let alice = add_user(&store, "alice", Role::Admin, 0);
    let bob = add_user(&store, "bob", Role::User, 1);
    let a1 = add_token(&store, &alice, "ci", 2);
    let b1 = add_token(&store, &bob, "bob's", 3);

    store
        .set_password(alice.id, "h1", None, false, &[audit("user.password")])
        .unwrap();
    assert_eq!(
        store
            .get_token_by_hash(&a1.token_hash)
            .unwrap()
            .map(|t| t.id),
        Some(a1.id)
    );

    store
        .set_password(
            alice.id,
            "h2",
            None,
            true,
            &[audit("user.password"), audit("token.revoke_all")],
        )
        .unwrap();
    assert_eq!(store.get_token_by_hash(&a1.token_hash).unwrap(), None);
    assert!(store.list_tokens(alice.id).unwrap().is_empty());
    assert_eq!(
        store
            .get_token_by_hash(&b1.token_hash)
            .unwrap()
            .map(|t| t.id),
        Some(b1.id)
    );
    assert_eq!(
        &audit_actions(&store)[..2],
        ["token.revoke_all", "user.password"]
    );
}

// ---------------------------------------------------------------- TLS (schema v2)

fn acme_account(directory: &str) -> crate::model::AcmeAccount {
    crate::model::AcmeAccount {
        directory: directory.to_string(),
        credentials: r#"{"id":"https://ca/acct/1"}"#.to_string(),
        contact: Some("mailto:ops@example.org".to_string()),
        created_at: T0,
    }
}

fn certificate(domains: &[&str], minutes: i64) -> crate::model::StoredCertificate {
    let domains: Vec<String> = domains.iter().map(|d| d.to_string()).collect();
    crate::model::StoredCertificate {
        name: crate::model::StoredCertificate::name_for("https://ca/dir", &domains),
        directory: "https://ca/dir".to_string(),
        domains,
        chain_pem: format!("chain-{minutes}"),
        key_pem: format!("key-{minutes}"),
        not_before: at(minutes),
        not_after: at(minutes + 90 * 24 * 60),
        issued_at: at(minutes),
    }
}

#[test]
fn v1_file_migrates_to_v2_with_tls_tables() {
    let (_dir, path) = temp();
    let u = {
        let store = Store::open(&path).unwrap();
        add_user(&store, "alice", Role::Admin, 0)
    };
    // Make it exactly what a v1 binary wrote: no TLS tables, stamped 1.
    with_raw_db(&path, |txn| {
        assert!(txn.delete_table(super::tables::ACME_ACCOUNTS).unwrap());
        assert!(txn.delete_table(super::tables::CERTIFICATES).unwrap());
        txn.open_table(META)
            .unwrap()
            .insert(VERSION_KEY, 1)
            .unwrap();
    });
    assert_eq!(raw_version(&path), Some(1));

    let store = Store::open(&path).unwrap();
    // v1 → v2 → … → current.
    assert_eq!(store.schema_version().unwrap(), Store::SCHEMA_VERSION);
    assert_eq!(store.get_user(u.id).unwrap(), Some(u));
    // The new tables exist and work.
    assert_eq!(store.get_acme_account("https://ca/dir").unwrap(), None);
    let c = certificate(&["a.example"], 0);
    store
        .put_certificate(&c, &audit("tls.certificate"))
        .unwrap();
    assert_eq!(store.get_certificate(&c.name).unwrap(), Some(c));
    drop(store);
    assert_eq!(raw_version(&path), Some(Store::SCHEMA_VERSION));
}

#[test]
fn acme_accounts_by_directory() {
    let (_dir, store) = open_temp();
    let a = acme_account("https://ca/dir");
    store
        .put_acme_account(&a, &audit("tls.account.create"))
        .unwrap();
    assert_eq!(store.get_acme_account("https://ca/dir").unwrap(), Some(a));
    assert_eq!(store.get_acme_account("https://other/dir").unwrap(), None);
    assert!(store
        .delete_acme_account("https://ca/dir", &audit("tls.account.forget"))
        .unwrap());
    assert!(!store
        .delete_acme_account("https://ca/dir", &audit("tls.account.forget"))
        .unwrap());
    assert_eq!(store.get_acme_account("https://ca/dir").unwrap(), None);
    assert_eq!(
        audit_actions(&store),
        vec!["tls.account.forget", "tls.account.create"]
    );
}

#[test]
fn certificates_are_replaced_on_renewal_and_keyed_by_name_set() {
    let (_dir, path) = temp();
    let first = certificate(&["b.example", "a.example"], 0);
    let renewed = certificate(&["b.example", "a.example"], 60);
    {
        let store = Store::open(&path).unwrap();
        store
            .put_certificate(&first, &audit("tls.certificate"))
            .unwrap();
        store
            .put_certificate(&renewed, &audit("tls.certificate"))
            .unwrap();
    }
    let store = Store::open(&path).unwrap();
    // Same names in another order: same certificate.
    let name = crate::model::StoredCertificate::name_for(
        "https://ca/dir",
        &["a.example".to_string(), "b.example".to_string()],
    );
    assert_eq!(name, first.name);
    assert_eq!(store.get_certificate(&name).unwrap(), Some(renewed));
    // Another name set or another CA: not that certificate.
    let other = crate::model::StoredCertificate::name_for("https://ca/dir", &["a.example".into()]);
    assert_eq!(store.get_certificate(&other).unwrap(), None);
    let staging = crate::model::StoredCertificate::name_for(
        "https://staging/dir",
        &["a.example".to_string(), "b.example".to_string()],
    );
    assert_eq!(store.get_certificate(&staging).unwrap(), None);
}

#[test]
fn state_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, path) = temp();
    drop(Store::open(&path).unwrap());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    drop(Store::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn instance_id_is_made_once_and_kept() {
    let (_dir, path) = temp();
    let first = {
        let store = Store::open(&path).unwrap();
        let id = store.instance_id().unwrap();
        assert_eq!(store.instance_id().unwrap(), id, "stable within a run");
        id
    };
    let store = Store::open(&path).unwrap();
    assert_eq!(store.instance_id().unwrap(), first, "stable across reopen");
    let (_other_dir, other) = open_temp();
    assert_ne!(
        other.instance_id().unwrap(),
        first,
        "each data dir has its own"
    );
}
