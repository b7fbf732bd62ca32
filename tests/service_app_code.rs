//! The service calls the admin UI's app pages use (and the API could): an app's
//! current uploaded files and entry-script candidates, choosing the entry script,
//! the slug check, R versions. Real redb in a temp dir, real uploads on disk; the
//! spawner is the in-memory fake of tests/common.

mod common;

use std::io::{Cursor, Write};

use axum::http::{Method, StatusCode};
use rserve_proxy::model::TokenScope;
use rserve_proxy::service::{app_code, apps, ClientMeta, Principal, ServiceError};
use uuid::Uuid;

use common::Harness;

fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
    use zip::write::SimpleFileOptions;
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, SimpleFileOptions::default()).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

async fn principal(h: &Harness, username: &str) -> Principal {
    let name = username.to_string();
    let user = h
        .state
        .store
        .get_user_by_username(&name)
        .unwrap()
        .expect("user exists");
    Principal {
        user,
        session_id: None,
        token_id: None,
        scope: TokenScope::Full,
    }
}

#[tokio::test]
async fn files_and_entry_candidates_follow_the_upload() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "two-scripts").await;
    let app_id: Uuid = id.parse().unwrap();
    let who = principal(&h, "admin").await;

    // Nothing uploaded yet: no files, no candidates, and no entry can be chosen.
    let files = app_code::files(&h.state, &who, app_id).await.unwrap();
    assert!(files.files.is_empty() && files.filename.is_none());
    assert!(!files.entry_present());
    let err = app_code::set_entry(&h.state, &who, app_id, "app.R", &ClientMeta::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("upload the app's code first"),
        "{err}"
    );

    let zip = zip_of(&[
        ("app.R", b"1\n"),
        ("other.R", b"22\n"),
        ("R/helper.R", b"333\n"),
        ("data.csv", b"a,b\n"),
    ]);
    h.upload(&admin, &id, "code.zip", &zip)
        .await
        .expect(StatusCode::OK);

    let files = app_code::files(&h.state, &who, app_id).await.unwrap();
    assert_eq!(files.filename.as_deref(), Some("code.zip"));
    let listed: Vec<(&str, u64)> = files
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.size))
        .collect();
    assert_eq!(
        listed,
        [
            ("R/helper.R", 4),
            ("app.R", 2),
            ("data.csv", 4),
            ("other.R", 3)
        ]
    );
    assert_eq!(files.total_bytes, 13);
    assert_eq!(files.entry_candidates, ["app.R", "other.R"]);
    // Two scripts: the upload picked none, the default entry is not among them.
    assert_eq!(files.entry_script, apps::DEFAULT_ENTRY_SCRIPT);
    assert!(!files.entry_present());

    // Choosing one that is not there is refused, naming the choices; nothing changes.
    for bad in ["helper.R", "missing.R", "../app.R", "data.csv"] {
        let err = app_code::set_entry(&h.state, &who, app_id, bad, &ClientMeta::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, ServiceError::BadRequest { .. }),
            "{bad}: {err}"
        );
    }
    let err = app_code::set_entry(&h.state, &who, app_id, "missing.R", &ClientMeta::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("app.R, other.R"), "{err}");
    let r = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(
        r.expect(StatusCode::OK)["app"]["entryScript"],
        apps::DEFAULT_ENTRY_SCRIPT
    );

    // A present one is stored (and audited like any update).
    let app = app_code::set_entry(&h.state, &who, app_id, "other.R", &ClientMeta::default())
        .await
        .unwrap();
    assert_eq!(app.entry_script, "other.R");
    let r = h
        .call(Method::GET, &format!("/api/apps/{id}"), &admin, None)
        .await;
    assert_eq!(r.expect(StatusCode::OK)["app"]["entryScript"], "other.R");
    assert!(app_code::files(&h.state, &who, app_id)
        .await
        .unwrap()
        .entry_present());
}

#[tokio::test]
async fn a_lone_folder_offers_the_scripts_inside_it() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let id = h.app(&admin, "folder-app").await;
    let who = principal(&h, "admin").await;
    let zip = zip_of(&[("repo-main/app.R", b"1\n"), ("repo-main/b.R", b"1\n")]);
    h.upload(&admin, &id, "repo.zip", &zip)
        .await
        .expect(StatusCode::OK);
    let files = app_code::files(&h.state, &who, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(files.entry_candidates, ["app.R", "b.R"]);
    app_code::set_entry(
        &h.state,
        &who,
        id.parse().unwrap(),
        "b.R",
        &ClientMeta::default(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn other_users_and_git_apps_are_refused() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (alice, _) = h.user(&admin, "alice").await;
    let id = h.app(&admin, "admins-app").await;
    let app_id: Uuid = id.parse().unwrap();
    let alice_p = principal(&h, "alice").await;
    let _ = alice;
    let err = app_code::files(&h.state, &alice_p, app_id)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err}");
    let err = app_code::set_entry(&h.state, &alice_p, app_id, "a.R", &ClientMeta::default())
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Forbidden(_)), "{err}");
    let err = app_code::files(&h.state, &alice_p, Uuid::new_v4())
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::NotFound(_)), "{err}");

    let r = h
        .call(
            Method::PUT,
            &format!("/api/apps/{id}"),
            &admin,
            Some(serde_json::json!({"codeSource": {"type": "git", "repoUrl": "https://example.com/x.git"}})),
        )
        .await;
    r.expect(StatusCode::OK);
    let who = principal(&h, "admin").await;
    let err = app_code::set_entry(&h.state, &who, app_id, "a.R", &ClientMeta::default())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("git source"), "{err}");
}

#[tokio::test]
async fn slug_check_gives_the_messages_create_gives() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    h.app(&admin, "taken-slug").await;

    apps::check_slug(&h.state, "free-slug").await.unwrap();
    for (slug, status) in [
        ("taken-slug", StatusCode::CONFLICT),
        ("Bad Slug", StatusCode::BAD_REQUEST),
        ("ab", StatusCode::BAD_REQUEST),
        ("api", StatusCode::BAD_REQUEST),
    ] {
        let err = apps::check_slug(&h.state, slug).await.unwrap_err();
        let r = h
            .call(
                Method::POST,
                "/api/apps",
                &admin,
                Some(serde_json::json!({"name": "x", "slug": slug})),
            )
            .await;
        assert_eq!(r.status, status, "{slug}: {}", r.text);
        let api_message = r.body["details"][0]
            .as_str()
            .or(r.body["error"].as_str())
            .unwrap();
        let ours = match &err {
            ServiceError::BadRequest { details, .. } => details[0].clone(),
            other => other.to_string(),
        };
        assert_eq!(ours, api_message, "{slug}");
    }
}

#[tokio::test]
async fn r_versions_come_from_the_spawner() {
    let h = Harness::new().await;
    assert_eq!(
        apps::r_versions(&h.state).await.unwrap(),
        ["4.4.1", "4.2.2"]
    );
    h.docker_down(true);
    assert!(matches!(
        apps::r_versions(&h.state).await,
        Err(ServiceError::Unavailable(_))
    ));
}
