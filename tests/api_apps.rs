//! `/api/apps/*`: CRUD with every validation rule, access rules, lifecycle through the
//! (fake) spawner, Docker being down, logs, health, and authentication on every route.

mod common;

use std::collections::BTreeSet;

use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use common::{Cred, Harness, Reply};

const ACCESS_DENIED: &str = "Access denied";
const APP_NOT_FOUND: &str = "App not found";
const DOCKER_DOWN: &str = "Docker is not available: fake Docker is down";

/// The contract's app fields plus ours (`memoryMb`, `cpus`, `env`: see api_settings.rs).
const APP_KEYS: [&str; 14] = [
    "id",
    "name",
    "slug",
    "rVersion",
    "packages",
    "codeSource",
    "entryScript",
    "replicas",
    "memoryMb",
    "cpus",
    "env",
    "ownerId",
    "createdAt",
    "updatedAt",
];

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn ts(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().expect("a timestamp string"), &Rfc3339)
        .unwrap_or_else(|e| panic!("{v} is not RFC 3339: {e}"))
}

async fn create(h: &Harness, cred: &Cred, body: Value) -> Reply {
    h.call(Method::POST, "/api/apps", cred, Some(body)).await
}

/// A create body that is valid apart from what `extra` overrides.
fn app_body(slug: &str, extra: Value) -> Value {
    let mut body = json!({ "name": "My app", "slug": slug });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

async fn get(h: &Harness, cred: &Cred, id: &str) -> Reply {
    h.call(Method::GET, &format!("/api/apps/{id}"), cred, None)
        .await
}

async fn update(h: &Harness, cred: &Cred, id: &str, body: Value) -> Reply {
    h.call(Method::PUT, &format!("/api/apps/{id}"), cred, Some(body))
        .await
}

async fn list(h: &Harness, cred: &Cred) -> Vec<Value> {
    let r = h.call(Method::GET, "/api/apps", cred, None).await;
    r.expect(StatusCode::OK)["apps"].as_array().unwrap().clone()
}

fn slugs(apps: &[Value]) -> Vec<String> {
    apps.iter()
        .map(|a| a["slug"].as_str().unwrap().to_string())
        .collect()
}

async fn verb(h: &Harness, cred: &Cred, id: &str, verb: &str) -> Reply {
    h.call(Method::POST, &format!("/api/apps/{id}/{verb}"), cred, None)
        .await
}

// ---------- create ----------

#[tokio::test]
async fn create_fills_in_the_defaults() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, user_id) = h.user(&admin, "ann").await;

    let r = create(&h, &user, json!({ "name": "Hello", "slug": "hello" })).await;
    let app = r.expect(StatusCode::CREATED)["app"].clone();
    assert_eq!(keys(&r.body), set(&["app"]));
    assert_eq!(keys(&app), set(&APP_KEYS));
    Uuid::parse_str(app["id"].as_str().unwrap()).unwrap();
    assert_eq!(app["name"], "Hello");
    assert_eq!(app["slug"], "hello");
    assert_eq!(app["rVersion"], "latest");
    assert_eq!(app["packages"], json!([]));
    assert_eq!(app["codeSource"], json!({ "type": "upload" }));
    assert_eq!(app["entryScript"], "run_rserve.R");
    assert_eq!(app["replicas"], 1);
    assert_eq!(app["memoryMb"], 512);
    assert_eq!(app["cpus"], 1.0);
    assert_eq!(app["env"], json!([]));
    assert_eq!(app["ownerId"], user_id.as_str());
    assert_eq!(ts(&app["createdAt"]), ts(&app["updatedAt"]));

    // GET adds the runtime view; a fresh app is stopped.
    let id = app["id"].as_str().unwrap();
    let r = get(&h, &user, id).await;
    let got = &r.expect(StatusCode::OK)["app"];
    let mut with_status = set(&APP_KEYS);
    with_status.extend(set(&["status", "containers"]));
    assert_eq!(keys(got), with_status);
    for k in APP_KEYS {
        assert_eq!(got[k], app[k], "{k}");
    }
    assert_eq!(got["status"], "stopped");
    assert_eq!(got["containers"], json!([]));
}

#[tokio::test]
async fn create_takes_every_field() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let body = json!({
        "name": "Full",
        "slug": "full-app-2",
        "rVersion": "4.4.1",
        "packages": ["jsonlite", "user/repo@v1.2", "pkg=1.0", "a.b_c", "x#y:z"],
        "codeSource": { "type": "git", "repoUrl": "https://example.org/r/app.git", "branch": "release/1.x" },
        "entryScript": "main-app_1.R",
        "replicas": 10,
        "unknownField": "ignored"
    });
    let r = create(&h, &admin, body.clone()).await;
    let app = &r.expect(StatusCode::CREATED)["app"];
    assert_eq!(keys(app), set(&APP_KEYS));
    for k in [
        "name",
        "slug",
        "rVersion",
        "packages",
        "codeSource",
        "entryScript",
        "replicas",
    ] {
        assert_eq!(app[k], body[k], "{k}");
    }
    // A git source without a branch keeps it absent.
    let r = create(
        &h,
        &admin,
        app_body(
            "git-nobranch",
            json!({ "codeSource": { "type": "git", "repoUrl": "https://example.org/x.git" } }),
        ),
    )
    .await;
    assert_eq!(
        r.expect(StatusCode::CREATED)["app"]["codeSource"],
        json!({ "type": "git", "repoUrl": "https://example.org/x.git" })
    );
    // Explicit upload source and the smallest values.
    let r = create(
        &h,
        &admin,
        app_body(
            "abc",
            json!({ "codeSource": { "type": "upload" }, "replicas": 1, "rVersion": "4.2", "name": "n" }),
        ),
    )
    .await;
    r.expect(StatusCode::CREATED);
}

#[tokio::test]
async fn create_validates_name_and_slug() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let bad = |slug: &str, extra: Value| {
        let body = app_body(slug, extra);
        let (h, admin) = (&h, &admin);
        async move { create(h, admin, body).await }
    };

    bad("name-empty", json!({ "name": "" }))
        .await
        .expect_invalid("name must be 1 to 128 characters");
    bad("name-long", json!({ "name": "n".repeat(129) }))
        .await
        .expect_invalid("name must be 1 to 128 characters");

    let slug_rule = "slug must be 3 to 64 characters";
    for slug in [
        "ab".to_string(),
        "a".to_string(),
        String::new(),
        "-abc".into(),
        "abc-".into(),
        "Hello".into(),
        "hello_world".into(),
        "hello.world".into(),
        "héllo".into(),
        "a b".into(),
        "a".repeat(65),
    ] {
        bad(&slug, json!({})).await.expect_invalid(slug_rule);
    }
    // Slugs that belong to the admin plane.
    let mut reserved: BTreeSet<&str> = rserve_proxy::paths::ADMIN_SEGMENTS
        .iter()
        .copied()
        .collect();
    reserved.extend([
        "api",
        "static",
        "login",
        "logout",
        ".well-known",
        "metrics",
        "health",
        "users",
        "apps",
        "tokens",
        "settings",
        "favicon.ico",
    ]);
    for slug in reserved {
        bad(slug, json!({})).await.expect_invalid("is reserved");
    }
    // Not reserved merely by prefix.
    for slug in ["apix", "api-docs", "a-1", "a--b", "0app", &"a".repeat(64)] {
        bad(slug, json!({})).await.expect(StatusCode::CREATED);
    }
    bad("name-max", json!({ "name": "n".repeat(128) }))
        .await
        .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn create_validates_the_other_fields() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let check = |extra: Value, needle: &'static str| {
        let body = app_body("valid-slug", extra);
        let (h, admin) = (&h, &admin);
        async move {
            let r = create(h, admin, body).await;
            if needle.is_empty() {
                r.expect_bad_request("Invalid request body");
            } else {
                r.expect_invalid(needle);
            }
        }
    };

    let rv = "rVersion must be";
    for v in ["4", "4.x", "v4.2", "4.2.2.1", "", "Latest", "4.2-1"] {
        check(json!({ "rVersion": v }), rv).await;
    }
    let pkg = "is not a valid package reference";
    for p in ["a b", "", "x;rm -rf /", "$(id)", "a\nb", &"p".repeat(257)] {
        check(json!({ "packages": ["ok", p] }), pkg).await;
    }
    let many: Vec<String> = (0..201).map(|i| format!("p{i}")).collect();
    check(json!({ "packages": many }), "at most 200").await;
    let es = "entryScript must be";
    for e in [
        "app.r",
        "app.py",
        "../x.R",
        "dir/app.R",
        ".R",
        "a b.R",
        "app.R.bak",
        "",
    ] {
        check(json!({ "entryScript": e }), es).await;
    }
    for n in [0, 11, -1] {
        check(json!({ "replicas": n }), "replicas must be from 1 to 10").await;
    }
    let url = "codeSource.repoUrl must be an https:// URL";
    for u in [
        "http://example.org/a.git",
        "git@example.org:a.git",
        "ssh://example.org/a.git",
        "https://",
        "https:///etc/passwd",
        "file:///tmp/x",
        "https://example.org/a b.git",
    ] {
        check(
            json!({ "codeSource": { "type": "git", "repoUrl": u } }),
            url,
        )
        .await;
    }
    let br = "codeSource.branch is not a valid branch name";
    for b in ["--upload-pack=x", "-x", "a b", "", "a;b", "a$b"] {
        check(
            json!({ "codeSource": { "type": "git", "repoUrl": "https://example.org/a.git", "branch": b } }),
            br,
        )
        .await;
    }

    // Wrong types and shapes are body errors.
    for extra in [
        json!({ "replicas": "2" }),
        json!({ "replicas": 1.5 }),
        json!({ "replicas": null, "name": 5 }),
        json!({ "packages": "jsonlite" }),
        json!({ "packages": [1] }),
        json!({ "rVersion": 4.2 }),
        json!({ "entryScript": ["a.R"] }),
        json!({ "codeSource": "upload" }),
        json!({ "codeSource": { "type": "svn" } }),
        json!({ "codeSource": { "type": "git" } }),
        json!({ "codeSource": { "repoUrl": "https://example.org/a.git" } }),
    ] {
        check(extra, "").await;
    }
    create(&h, &admin, json!({ "name": "x" }))
        .await
        .expect_bad_request("Invalid request body");
    create(&h, &admin, json!({ "slug": "x-y-z" }))
        .await
        .expect_bad_request("Invalid request body");
    h.call_raw(
        Method::POST,
        "/api/apps",
        &admin,
        "application/json",
        "{\"name\":",
    )
    .await
    .expect_bad_request("Invalid request body");
    h.call_raw(
        Method::POST,
        "/api/apps",
        &admin,
        "text/plain",
        &app_body("valid-slug", json!({})).to_string(),
    )
    .await
    .expect_bad_request("Invalid request body");

    // Every problem is listed.
    let r = create(
        &h,
        &admin,
        json!({ "name": "", "slug": "X", "rVersion": "x", "replicas": 0 }),
    )
    .await;
    for needle in [
        "name must be",
        "slug must be",
        "rVersion must be",
        "replicas must be",
    ] {
        r.expect_invalid(needle);
    }
    assert_eq!(r.body["details"].as_array().unwrap().len(), 4);
    // None of it was stored.
    assert!(list(&h, &admin).await.is_empty());
}

#[tokio::test]
async fn a_taken_slug_is_409() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, _) = h.user(&admin, "ben").await;
    h.app(&user, "taken").await;
    let conflict = "An app with slug \"taken\" already exists";
    create(&h, &user, app_body("taken", json!({})))
        .await
        .expect_error(StatusCode::CONFLICT, conflict);
    // Slugs are global: another user cannot have it either.
    create(&h, &admin, app_body("taken", json!({ "name": "Other" })))
        .await
        .expect_error(StatusCode::CONFLICT, conflict);
    assert_eq!(list(&h, &admin).await.len(), 1);
}

// ---------- list, get ----------

#[tokio::test]
async fn users_see_their_own_apps_and_admins_see_all() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (u1, u1_id) = h.user(&admin, "cat").await;
    let (u2, _) = h.user(&admin, "dan").await;
    h.app(&u1, "cat-one").await;
    h.app(&u2, "dan-one").await;
    h.app(&u1, "cat-two").await;
    h.app(&admin, "admin-one").await;

    let mine = list(&h, &u1).await;
    assert_eq!(slugs(&mine), ["cat-one", "cat-two"]);
    assert!(mine.iter().all(|a| a["ownerId"] == u1_id.as_str()));
    assert_eq!(slugs(&list(&h, &u2).await), ["dan-one"]);
    let all = list(&h, &admin).await;
    assert_eq!(
        slugs(&all).into_iter().collect::<BTreeSet<_>>(),
        set(&["cat-one", "cat-two", "dan-one", "admin-one"])
    );
    // Listed apps carry their status.
    let mut with_status = set(&APP_KEYS);
    with_status.extend(set(&["status", "containers"]));
    for a in &all {
        assert_eq!(keys(a), with_status);
        assert_eq!(a["status"], "stopped");
    }
    let (u3, _) = h.user(&admin, "eva").await;
    assert!(list(&h, &u3).await.is_empty());
}

#[tokio::test]
async fn get_enforces_ownership_and_ids() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "fay").await;
    let (other, _) = h.user(&admin, "gus").await;
    let id = h.app(&owner, "fays-app").await;

    assert_eq!(
        get(&h, &owner, &id).await.expect(StatusCode::OK)["app"]["slug"],
        "fays-app"
    );
    get(&h, &other, &id)
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
    assert_eq!(
        get(&h, &admin, &id).await.expect(StatusCode::OK)["app"]["id"],
        id.as_str()
    );
    get(&h, &owner, &Uuid::new_v4().to_string())
        .await
        .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
    for bad in ["not-a-uuid", "fays-app", "1234"] {
        get(&h, &owner, bad).await.expect_bad_request("Invalid id");
    }
}

// ---------- update ----------

#[tokio::test]
async fn update_changes_only_what_is_sent() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "hal").await;
    let r = create(
        &h,
        &owner,
        app_body(
            "hal-app",
            json!({ "packages": ["jsonlite"], "replicas": 2 }),
        ),
    )
    .await;
    let before = r.expect(StatusCode::CREATED)["app"].clone();
    let id = before["id"].as_str().unwrap().to_string();

    let r = update(&h, &owner, &id, json!({ "name": "Renamed" })).await;
    let after = r.expect(StatusCode::OK)["app"].clone();
    assert_eq!(keys(&r.body), set(&["app"]));
    assert_eq!(keys(&after), set(&APP_KEYS));
    assert_eq!(after["name"], "Renamed");
    for k in [
        "id",
        "slug",
        "rVersion",
        "packages",
        "codeSource",
        "entryScript",
        "replicas",
        "ownerId",
        "createdAt",
    ] {
        assert_eq!(after[k], before[k], "{k}");
    }
    assert!(ts(&after["updatedAt"]) >= ts(&before["updatedAt"]));

    let change = json!({
        "rVersion": "4.3",
        "packages": [],
        "codeSource": { "type": "git", "repoUrl": "https://example.org/hal.git", "branch": "main" },
        "entryScript": "app.R",
        "replicas": 3
    });
    let r = update(&h, &owner, &id, change.clone()).await;
    let after = &r.expect(StatusCode::OK)["app"];
    for (k, v) in change.as_object().unwrap() {
        assert_eq!(after[k], *v, "{k}");
    }
    assert_eq!(after["name"], "Renamed");
    // Persisted.
    let got = get(&h, &owner, &id).await;
    let got = &got.expect(StatusCode::OK)["app"];
    for k in APP_KEYS {
        assert_eq!(got[k], after[k], "{k}");
    }
    // An empty body changes nothing but is fine.
    let r = update(&h, &owner, &id, json!({})).await;
    assert_eq!(r.expect(StatusCode::OK)["app"]["replicas"], 3);
}

#[tokio::test]
async fn update_refuses_slug_and_invalid_values() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "fixed-slug").await;
    let before = get(&h, &admin, &id).await.body["app"].clone();

    for body in [
        json!({ "slug": "new-slug" }),
        json!({ "slug": "fixed-slug", "name": "x" }),
    ] {
        update(&h, &admin, &id, body)
            .await
            .expect_invalid("slug cannot be changed");
    }
    for (body, needle) in [
        (json!({ "name": "" }), "name must be"),
        (json!({ "rVersion": "four" }), "rVersion must be"),
        (
            json!({ "packages": ["bad pkg"] }),
            "not a valid package reference",
        ),
        (json!({ "entryScript": "x.sh" }), "entryScript must be"),
        (json!({ "replicas": 0 }), "replicas must be"),
        (json!({ "replicas": 11 }), "replicas must be"),
        (
            json!({ "codeSource": { "type": "git", "repoUrl": "http://example.org/a.git" } }),
            "repoUrl must be an https:// URL",
        ),
        (
            json!({ "codeSource": { "type": "git", "repoUrl": "https://example.org/a.git", "branch": "-b" } }),
            "branch is not a valid branch name",
        ),
        // A valid change alongside an invalid one is refused as a whole.
        (json!({ "name": "ok", "replicas": 0 }), "replicas must be"),
    ] {
        update(&h, &admin, &id, body).await.expect_invalid(needle);
    }
    for body in [
        json!({ "replicas": "2" }),
        json!({ "packages": "x" }),
        json!({ "codeSource": { "type": "ftp" } }),
    ] {
        update(&h, &admin, &id, body)
            .await
            .expect_bad_request("Invalid request body");
    }
    h.call_raw(
        Method::PUT,
        &format!("/api/apps/{id}"),
        &admin,
        "application/json",
        "nope",
    )
    .await
    .expect_bad_request("Invalid request body");
    let after = get(&h, &admin, &id).await.body["app"].clone();
    assert_eq!(after, before);
}

#[tokio::test]
async fn update_enforces_ownership_and_ids() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "ida").await;
    let (other, _) = h.user(&admin, "jon").await;
    let id = h.app(&owner, "idas-app").await;

    update(&h, &other, &id, json!({ "name": "mine now" }))
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
    let r = update(&h, &admin, &id, json!({ "name": "by admin" })).await;
    assert_eq!(r.expect(StatusCode::OK)["app"]["name"], "by admin");
    // The owner stays the owner when an admin edits.
    assert_eq!(
        get(&h, &owner, &id).await.expect(StatusCode::OK)["app"]["name"],
        "by admin"
    );
    update(
        &h,
        &owner,
        &Uuid::new_v4().to_string(),
        json!({ "name": "x" }),
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
    update(&h, &owner, "nope", json!({ "name": "x" }))
        .await
        .expect_bad_request("Invalid id");
}

// ---------- delete ----------

#[tokio::test]
async fn delete_removes_the_app_its_containers_and_its_upload() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "kim").await;
    let (other, _) = h.user(&admin, "lee").await;
    let id = h.app(&owner, "kims-app").await;
    let keep = h.app(&owner, "kims-other").await;
    h.upload(&owner, &id, "app.R", b"print('hi')\n")
        .await
        .expect(StatusCode::OK);
    h.upload(&owner, &keep, "app.R", b"print('keep')\n")
        .await
        .expect(StatusCode::OK);
    let dir = h.upload_dir(&id);
    assert!(dir.join("app.R").is_file());
    verb(&h, &owner, &id, "start").await.expect(StatusCode::OK);

    h.call(Method::DELETE, &format!("/api/apps/{id}"), &other, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
    assert!(!h.spawner_calls().contains(&format!("remove {id}")));

    let r = h
        .call(Method::DELETE, &format!("/api/apps/{id}"), &owner, None)
        .await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    assert!(
        h.spawner_calls().contains(&format!("remove {id}")),
        "{:?}",
        h.spawner_calls()
    );
    assert!(!h
        .spawner
        .running
        .lock()
        .unwrap()
        .contains_key(&id.parse().unwrap()));
    assert!(!dir.exists(), "upload dir left behind");
    assert!(
        h.upload_dir(&keep).join("app.R").is_file(),
        "other app's upload removed"
    );
    assert_eq!(slugs(&list(&h, &owner).await), ["kims-other"]);
    get(&h, &owner, &id)
        .await
        .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
    h.call(Method::DELETE, &format!("/api/apps/{id}"), &owner, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
    h.call(Method::DELETE, "/api/apps/xyz", &owner, None)
        .await
        .expect_bad_request("Invalid id");
    // The slug is free again.
    h.app(&other, "kims-app").await;

    // Admins may delete anyone's app.
    h.call(Method::DELETE, &format!("/api/apps/{keep}"), &admin, None)
        .await
        .expect(StatusCode::OK);
    assert!(list(&h, &owner).await.is_empty());
}

// ---------- lifecycle ----------

#[tokio::test]
async fn lifecycle_verbs_drive_the_spawner() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "max").await;
    let r = create(&h, &owner, app_body("max-app", json!({ "replicas": 2 }))).await;
    let id = r.expect(StatusCode::CREATED)["app"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let r = verb(&h, &owner, &id, "start").await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({ "ok": true, "status": "starting" })
    );
    assert_eq!(h.spawner_calls(), ["start max-app"]);

    let r = get(&h, &owner, &id).await;
    let app = &r.expect(StatusCode::OK)["app"];
    assert_eq!(app["status"], "running");
    assert_eq!(app["wsPath"], "/max-app/");
    let containers = app["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 2);
    for c in containers {
        assert_eq!(c["containerId"].as_str().unwrap().len(), 12);
        assert_eq!(c["status"], "running");
        assert_eq!(c["healthStatus"], "healthy");
        assert!(c["port"].is_u64());
        assert_eq!(
            keys(c),
            set(&["containerId", "status", "healthStatus", "port"])
        );
    }
    let listed = list(&h, &owner).await;
    assert_eq!(listed[0]["status"], "running");
    assert_eq!(listed[0]["wsPath"], "/max-app/");

    let r = verb(&h, &owner, &id, "stop").await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({ "ok": true, "status": "stopped" })
    );
    let r = get(&h, &owner, &id).await;
    let app = &r.expect(StatusCode::OK)["app"];
    assert_eq!(app["status"], "stopped");
    assert_eq!(app["containers"], json!([]));
    assert!(app.get("wsPath").is_none(), "{app}");
    assert!(app.get("error").is_none(), "{app}");

    let r = verb(&h, &owner, &id, "restart").await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({ "ok": true, "status": "restarting" })
    );
    assert_eq!(get(&h, &owner, &id).await.body["app"]["status"], "running");

    let r = verb(&h, &owner, &id, "rebuild").await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({ "ok": true, "status": "starting", "imageName": "rserve-app-max-app", "imageTag": "abc123" })
    );
    assert_eq!(
        h.spawner_calls(),
        [
            "start max-app".to_string(),
            format!("stop {id}"),
            format!("stop {id}"),
            "start max-app".into(),
            "rebuild max-app".into(),
        ]
    );

    // Admins may drive anyone's app.
    verb(&h, &admin, &id, "stop").await.expect(StatusCode::OK);
}

#[tokio::test]
async fn lifecycle_enforces_ownership_and_ids() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "ned").await;
    let (other, _) = h.user(&admin, "oli").await;
    let id = h.app(&owner, "neds-app").await;
    let unknown = Uuid::new_v4().to_string();
    for v in ["start", "stop", "restart", "rebuild"] {
        verb(&h, &other, &id, v)
            .await
            .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
        verb(&h, &owner, &unknown, v)
            .await
            .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
        verb(&h, &owner, "bad-id", v)
            .await
            .expect_bad_request("Invalid id");
        // GET is not a lifecycle method.
        let r = h
            .call(Method::GET, &format!("/api/apps/{id}/{v}"), &owner, None)
            .await;
        r.expect(StatusCode::METHOD_NOT_ALLOWED);
        assert!(r.body["error"].is_string(), "{}", r.text);
    }
    assert!(h.spawner_calls().is_empty(), "{:?}", h.spawner_calls());
}

#[tokio::test]
async fn docker_down_is_503_for_backend_work_while_crud_keeps_working() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "before-down").await;
    h.docker_down(true);

    for v in ["start", "stop", "restart", "rebuild"] {
        verb(&h, &admin, &id, v)
            .await
            .expect_error(StatusCode::SERVICE_UNAVAILABLE, DOCKER_DOWN);
    }
    h.call(Method::GET, "/api/apps/r-versions", &admin, None)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, DOCKER_DOWN);
    h.call(Method::GET, &format!("/api/apps/{id}/logs"), &admin, None)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, DOCKER_DOWN);
    // Deleting needs the backend (containers go first): refused, and the app stays.
    h.call(Method::DELETE, &format!("/api/apps/{id}"), &admin, None)
        .await
        .expect_error(StatusCode::SERVICE_UNAVAILABLE, DOCKER_DOWN);
    get(&h, &admin, &id).await.expect(StatusCode::OK);

    // CRUD works.
    let new_id = h.app(&admin, "while-down").await;
    update(&h, &admin, &new_id, json!({ "replicas": 2 }))
        .await
        .expect(StatusCode::OK);
    assert_eq!(list(&h, &admin).await.len(), 2);
    h.upload(&admin, &new_id, "app.R", b"1\n")
        .await
        .expect(StatusCode::OK);

    // Health says so, with 200.
    let r = h.call(Method::GET, "/api/health", &Cred::None, None).await;
    let body = r.expect(StatusCode::OK);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["db"], true);
    assert_eq!(body["docker"], false);
    assert_eq!(body["dockerError"], DOCKER_DOWN);

    // Back up: everything works again.
    h.docker_down(false);
    verb(&h, &admin, &id, "start").await.expect(StatusCode::OK);
    let r = h.call(Method::GET, "/api/health", &Cred::None, None).await;
    assert_eq!(r.expect(StatusCode::OK)["docker"], true);
}

#[tokio::test]
async fn health_and_r_versions() {
    let h = Harness::new().await;
    let r = h.call(Method::GET, "/api/health", &Cred::None, None).await;
    let body = r.expect(StatusCode::OK);
    assert_eq!(
        keys(body),
        set(&["status", "db", "docker", "version", "timestamp"])
    );
    assert_eq!(body["status"], "ok");
    assert_eq!(body["db"], true);
    assert_eq!(body["docker"], true);
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    ts(&body["timestamp"]);

    let admin = h.admin().await;
    let (user, _) = h.user(&admin, "pia").await;
    let r = h
        .call(Method::GET, "/api/apps/r-versions", &user, None)
        .await;
    assert_eq!(
        *r.expect(StatusCode::OK),
        json!({ "versions": ["4.4.1", "4.2.2"] })
    );
}

// ---------- logs ----------

#[tokio::test]
async fn logs_are_server_sent_events() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (owner, _) = h.user(&admin, "quin").await;
    let (other, _) = h.user(&admin, "rob").await;
    let id = h.app(&owner, "quins-app").await;

    for (query, line) in [
        ("", "Step 1/3 : FROM rserve-base"),
        ("?source=build", "Step 1/3 : FROM rserve-base"),
        ("?source=runtime", "Rserve started"),
    ] {
        let r = h
            .call(
                Method::GET,
                &format!("/api/apps/{id}/logs{query}"),
                &owner,
                None,
            )
            .await;
        r.expect(StatusCode::OK);
        let ct = r.headers[header::CONTENT_TYPE].to_str().unwrap();
        assert!(ct.starts_with("text/event-stream"), "{ct}");
        assert!(
            r.text.contains(&format!("event: log\ndata: {line}\n\n")),
            "{query}: {:?}",
            r.text
        );
    }
    let r = h
        .call(Method::GET, &format!("/api/apps/{id}/logs"), &owner, None)
        .await;
    assert_eq!(r.text.matches("event: log\n").count(), 2, "{:?}", r.text);
    assert!(r.text.contains("event: log\ndata: done\n\n"));
    // Status before and after the log lines.
    assert!(
        r.text
            .starts_with("event: status\ndata: {\"status\":\"stopped\"}\n\n"),
        "{:?}",
        r.text
    );
    assert_eq!(r.text.matches("event: status\n").count(), 2, "{:?}", r.text);
    assert!(r.text.find("event: status").unwrap() < r.text.find("event: log").unwrap());
    assert!(r.text.rfind("event: status").unwrap() > r.text.rfind("event: log").unwrap());

    let r = h
        .call(
            Method::GET,
            &format!("/api/apps/{id}/logs?source=bogus"),
            &owner,
            None,
        )
        .await;
    r.expect_bad_request("source");
    assert!(r.body["error"].as_str().unwrap().contains("bogus"));

    h.call(Method::GET, &format!("/api/apps/{id}/logs"), &other, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
    h.call(Method::GET, &format!("/api/apps/{id}/logs"), &admin, None)
        .await
        .expect(StatusCode::OK);
    h.call(
        Method::GET,
        &format!("/api/apps/{}/logs", Uuid::new_v4()),
        &owner,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, APP_NOT_FOUND);
    h.call(Method::GET, "/api/apps/zzz/logs", &owner, None)
        .await
        .expect_bad_request("Invalid id");
}

// ---------- routing and authentication ----------

#[tokio::test]
async fn unknown_paths_are_json_404_under_api() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    for cred in [Cred::None, admin.clone()] {
        for path in ["/api/nope", "/api/apps/x/y/z", "/api/", "/api"] {
            h.call(Method::GET, path, &cred, None)
                .await
                .expect_error(StatusCode::NOT_FOUND, "Not found");
        }
    }
    let id = h.app(&admin, "route-app").await;
    h.call(Method::GET, &format!("/api/apps/{id}/nope"), &admin, None)
        .await
        .expect_error(StatusCode::NOT_FOUND, "Not found");
    let r = h.call(Method::PATCH, "/api/apps", &admin, None).await;
    r.expect_error(
        StatusCode::METHOD_NOT_ALLOWED,
        "Method not allowed on this path",
    );

    // Outside /api: the admin UI (logged out: to the login page) and HTML 404s.
    let r = h.call(Method::GET, "/", &Cred::None, None).await;
    r.expect(StatusCode::SEE_OTHER);
    assert_eq!(r.headers[header::LOCATION], "/login");
    let r = h
        .call(Method::GET, "/no-such-page", &Cred::None, None)
        .await;
    r.expect(StatusCode::NOT_FOUND);
    assert!(r.headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
}

/// Every route that needs credentials, with `{id}` to fill in.
const PROTECTED: &[(&str, &str)] = &[
    ("POST", "/api/auth/logout"),
    ("GET", "/api/auth/me"),
    ("PUT", "/api/auth/password"),
    ("POST", "/api/auth/tokens"),
    ("GET", "/api/auth/tokens"),
    ("DELETE", "/api/auth/tokens/{id}"),
    ("GET", "/api/users"),
    ("POST", "/api/users"),
    ("PUT", "/api/users/{id}"),
    ("DELETE", "/api/users/{id}"),
    ("GET", "/api/apps"),
    ("POST", "/api/apps"),
    ("GET", "/api/apps/r-versions"),
    ("GET", "/api/apps/{id}"),
    ("PUT", "/api/apps/{id}"),
    ("DELETE", "/api/apps/{id}"),
    ("POST", "/api/apps/{id}/start"),
    ("POST", "/api/apps/{id}/stop"),
    ("POST", "/api/apps/{id}/restart"),
    ("POST", "/api/apps/{id}/rebuild"),
    ("GET", "/api/apps/{id}/logs"),
    ("POST", "/api/apps/{id}/upload"),
];

#[tokio::test]
async fn every_protected_route_needs_credentials_before_anything_else() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let app = h.app(&admin, "auth-app").await;
    let Cred::Cookie(live) = admin.clone() else {
        unreachable!()
    };
    // A logged-out session is as good as none.
    let dead = h.admin().await;
    h.call(Method::POST, "/api/auth/logout", &dead, None)
        .await
        .expect(StatusCode::OK);

    let creds = [
        Cred::None,
        dead,
        Cred::Cookie(format!("{live}x")),
        Cred::Bearer("rsp_nope".into()),
        Cred::Bearer(rserve_proxy::auth::secrets::new_api_token()),
    ];
    for (method, template) in PROTECTED {
        let method: Method = method.parse().unwrap();
        // A real id, a malformed id: 401 comes first either way; a bad body too.
        for id in [app.as_str(), "not-a-uuid"] {
            let path = template.replace("{id}", id);
            for cred in &creds {
                h.call(method.clone(), &path, cred, Some(json!({ "bad": true })))
                    .await
                    .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
                h.call_raw(method.clone(), &path, cred, "application/json", "{")
                    .await
                    .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
            }
        }
    }
    // Nothing was done by any of it.
    assert!(h.spawner_calls().is_empty());
    assert_eq!(list(&h, &admin).await.len(), 1);
    // Health, login and the OpenAPI document are open.
    for path in ["/api/health", "/api/openapi.json"] {
        h.call(Method::GET, path, &Cred::None, None)
            .await
            .expect(StatusCode::OK);
    }
}
