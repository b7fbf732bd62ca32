//! Fill a data dir with many users and apps, straight through the store, for the
//! start-time benchmark. Usage: seed <data-dir> <users> <apps>
//! (All users share one argon2 hash: hashing 10,000 passwords would only measure argon2.)

use std::path::PathBuf;

use rserve_proxy::auth::password;
use rserve_proxy::model::{App, AuditEntry, CodeSource, Role, User};
use rserve_proxy::store::Store;
use time::OffsetDateTime;
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, users, apps] = args.as_slice() else {
        return Err("usage: seed <data-dir> <users> <apps>".into());
    };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir)?;
    let store = Store::open(&dir.join("state.redb"))?;
    let hash = password::hash("bench-password")?;
    let now = OffsetDateTime::now_utc();
    let mut owners = Vec::new();
    for i in 0..users.parse::<usize>()? {
        let user = User {
            id: Uuid::new_v4(),
            username: if i == 0 {
                "admin".into()
            } else {
                format!("user{i}")
            },
            email: None,
            role: if i == 0 { Role::Admin } else { Role::User },
            password_hash: hash.clone(),
            created_at: now,
            updated_at: now,
        };
        store.create_user(&user, &AuditEntry::new(None, "user.create", None))?;
        owners.push(user.id);
    }
    for i in 0..apps.parse::<usize>()? {
        let app = App {
            id: Uuid::new_v4(),
            name: format!("App {i}"),
            slug: format!("app-{i}"),
            r_version: "latest".into(),
            packages: vec!["jsonlite".into()],
            code_source: CodeSource::Upload,
            entry_script: "run_rserve.R".into(),
            replicas: 1,
            settings: Default::default(),
            owner_id: owners[i % owners.len()],
            created_at: now,
            updated_at: now,
        };
        store.create_app(&app, &AuditEntry::new(None, "app.create", None))?;
    }
    Ok(())
}
