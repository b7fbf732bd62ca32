//! `/api/users`: admin-only user management.

mod common;

use std::collections::BTreeSet;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use common::{Cred, Harness, Reply, USER_PASSWORD};

const ACCESS_DENIED: &str = "Access denied";
const LAST_ADMIN: &str = "This is the last admin; make another user admin first";

async fn create(h: &Harness, cred: &Cred, body: Value) -> Reply {
    h.call(Method::POST, "/api/users", cred, Some(body)).await
}

async fn update(h: &Harness, cred: &Cred, id: &str, body: Value) -> Reply {
    h.call(Method::PUT, &format!("/api/users/{id}"), cred, Some(body))
        .await
}

async fn delete(h: &Harness, cred: &Cred, id: &str) -> Reply {
    h.call(Method::DELETE, &format!("/api/users/{id}"), cred, None)
        .await
}

async fn list(h: &Harness, cred: &Cred) -> Vec<Value> {
    let r = h.call(Method::GET, "/api/users", cred, None).await;
    r.expect(StatusCode::OK)["users"]
        .as_array()
        .unwrap()
        .clone()
}

async fn me(h: &Harness, cred: &Cred) -> Reply {
    h.call(Method::GET, "/api/auth/me", cred, None).await
}

/// Log in from a fresh address without asserting success.
async fn try_login(h: &Harness, username: &str, password: &str) -> StatusCode {
    h.call_with(
        Method::POST,
        "/api/auth/login",
        &Cred::None,
        Some(json!({ "username": username, "password": password })),
        &[("x-forwarded-for", "192.0.2.99")],
    )
    .await
    .status
}

fn usernames(users: &[Value]) -> BTreeSet<String> {
    users
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn user_routes_are_admin_only() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_id = h.me(&admin).await;
    let (user, user_id) = h.user(&admin, "alice").await;
    let r = h
        .call(
            Method::POST,
            "/api/auth/tokens",
            &user,
            Some(json!({ "name": "t" })),
        )
        .await;
    let bearer = Cred::Bearer(
        r.expect(StatusCode::CREATED)["token"]["token"]
            .as_str()
            .unwrap()
            .into(),
    );

    for cred in [&user, &bearer] {
        h.call(Method::GET, "/api/users", cred, None)
            .await
            .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
        create(
            &h,
            cred,
            json!({ "username": "mallory", "password": "password-123" }),
        )
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
        // Not even on themselves: no self-promotion.
        update(&h, cred, &user_id, json!({ "role": "admin" }))
            .await
            .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
        update(&h, cred, &admin_id, json!({ "password": "password-123" }))
            .await
            .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
        delete(&h, cred, &admin_id)
            .await
            .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
    }
    // Nothing happened.
    let users = list(&h, &admin).await;
    assert_eq!(
        usernames(&users),
        ["admin", "alice"].map(String::from).into()
    );
    let alice = users.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(alice["role"], "user");
    assert_eq!(
        try_login(&h, "admin", common::ADMIN_PASSWORD).await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn admins_list_and_create_users() {
    let h = Harness::new().await;
    let admin = h.admin().await;

    let r = create(
        &h,
        &admin,
        json!({ "username": "bob", "password": "bob-password" }),
    )
    .await;
    let bob = r.expect(StatusCode::CREATED)["user"].clone();
    assert_eq!(r.body.as_object().unwrap().len(), 1);
    let keys: BTreeSet<&str> = bob
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "username", "email", "role", "createdAt"])
    );
    assert_eq!(bob["username"], "bob");
    assert_eq!(bob["role"], "user");
    assert_eq!(bob["email"], Value::Null);
    Uuid::parse_str(bob["id"].as_str().unwrap()).unwrap();

    let r = create(
        &h,
        &admin,
        json!({ "username": "carol.ops@example", "password": "carol-password",
                "email": "carol@example.org", "role": "admin" }),
    )
    .await;
    let carol = r.expect(StatusCode::CREATED)["user"].clone();
    assert_eq!(carol["role"], "admin");
    assert_eq!(carol["email"], "carol@example.org");

    // They can log in with what was set, and carol is an admin.
    assert_eq!(try_login(&h, "bob", "bob-password").await, StatusCode::OK);
    let carol_cred = h.login("carol.ops@example", "carol-password").await;
    let users = list(&h, &carol_cred).await;
    assert_eq!(
        usernames(&users),
        ["admin", "bob", "carol.ops@example"]
            .map(String::from)
            .into()
    );
    // The listing is the same shape and never carries password material.
    let listed_bob = users.iter().find(|u| u["username"] == "bob").unwrap();
    assert_eq!(*listed_bob, bob);
    let text = h.call(Method::GET, "/api/users", &admin, None).await.text;
    assert!(!text.contains("argon2") && !text.to_lowercase().contains("password"));
}

#[tokio::test]
async fn creating_a_taken_username_is_409() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    create(
        &h,
        &admin,
        json!({ "username": "dup", "password": "password-1" }),
    )
    .await
    .expect(StatusCode::CREATED);
    create(
        &h,
        &admin,
        json!({ "username": "dup", "password": "password-2" }),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "A user named \"dup\" already exists");
    create(
        &h,
        &admin,
        json!({ "username": "admin", "password": "password-2" }),
    )
    .await
    .expect_error(
        StatusCode::CONFLICT,
        "A user named \"admin\" already exists",
    );
    // The first one's password still stands.
    assert_eq!(try_login(&h, "dup", "password-1").await, StatusCode::OK);
}

#[tokio::test]
async fn user_creation_validates_its_input() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let ok_pw = "password-1";
    for (body, needle) in [
        (
            json!({ "username": "", "password": ok_pw }),
            "username must be",
        ),
        (
            json!({ "username": "has space", "password": ok_pw }),
            "username must be",
        ),
        (
            json!({ "username": "a/b", "password": ok_pw }),
            "username must be",
        ),
        (
            json!({ "username": "u".repeat(129), "password": ok_pw }),
            "username must be",
        ),
        (
            json!({ "username": "ok", "password": "1234567" }),
            "password must be 8 to 256",
        ),
        (
            json!({ "username": "ok", "password": "p".repeat(257) }),
            "password must be 8 to 256",
        ),
        (
            json!({ "username": "ok", "password": ok_pw, "email": "a@b" }),
            "email is not a valid address",
        ),
        (
            json!({ "username": "ok", "password": ok_pw, "email": "not an@email.org" }),
            "email is not a valid address",
        ),
    ] {
        create(&h, &admin, body).await.expect_invalid(needle);
    }
    for body in [
        json!({ "username": "ok", "password": ok_pw, "role": "root" }),
        json!({ "username": "ok", "password": ok_pw, "role": 1 }),
        json!({ "username": "ok" }),
        json!({ "password": ok_pw }),
        json!({ "username": 7, "password": ok_pw }),
        json!({ "username": "ok", "password": ok_pw, "email": false }),
    ] {
        create(&h, &admin, body)
            .await
            .expect_bad_request("Invalid request body");
    }
    h.call_raw(Method::POST, "/api/users", &admin, "application/json", "{")
        .await
        .expect_bad_request("Invalid request body");
    h.call_raw(
        Method::POST,
        "/api/users",
        &admin,
        "text/plain",
        &json!({ "username": "ok", "password": ok_pw }).to_string(),
    )
    .await
    .expect_bad_request("Invalid request body");
    // All problems are reported at once.
    let r = create(&h, &admin, json!({ "username": "", "password": "x" })).await;
    r.expect_invalid("username must be");
    r.expect_invalid("password must be");
    assert_eq!(r.body["details"].as_array().unwrap().len(), 2);
    // Limits are inclusive; an empty email means none.
    let r = create(
        &h,
        &admin,
        json!({ "username": "u".repeat(128), "password": "p".repeat(8), "email": "" }),
    )
    .await;
    assert_eq!(r.expect(StatusCode::CREATED)["user"]["email"], Value::Null);
    assert_eq!(list(&h, &admin).await.len(), 2);
}

#[tokio::test]
async fn admins_update_role_and_email() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, id) = h.user(&admin, "dora").await;

    let r = update(&h, &admin, &id, json!({ "email": "dora@example.org" })).await;
    let u = &r.expect(StatusCode::OK)["user"];
    assert_eq!(u["email"], "dora@example.org");
    assert_eq!(u["role"], "user");
    assert_eq!(u["username"], "dora");
    assert_eq!(u["id"], id.as_str());

    update(&h, &admin, &id, json!({ "email": "bad" }))
        .await
        .expect_invalid("email is not a valid address");
    update(&h, &admin, &id, json!({ "role": "owner" }))
        .await
        .expect_bad_request("Invalid request body");
    update(&h, &admin, &id, json!({ "password": "short" }))
        .await
        .expect_invalid("password must be 8 to 256");
    // Refusals changed nothing; an empty body changes nothing.
    let r = update(&h, &admin, &id, json!({})).await;
    assert_eq!(
        r.expect(StatusCode::OK)["user"]["email"],
        "dora@example.org"
    );

    h.call(Method::GET, "/api/users", &user, None)
        .await
        .expect(StatusCode::FORBIDDEN);
    let r = update(&h, &admin, &id, json!({ "role": "admin" })).await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["role"], "admin");
    // The promotion applies to her existing session.
    assert_eq!(list(&h, &user).await.len(), 2);
    assert_eq!(me(&h, &user).await.body["user"]["role"], "admin");

    let r = update(&h, &admin, &id, json!({ "email": "", "role": "user" })).await;
    let u = &r.expect(StatusCode::OK)["user"];
    assert_eq!(u["email"], Value::Null);
    assert_eq!(u["role"], "user");
    h.call(Method::GET, "/api/users", &user, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, ACCESS_DENIED);
}

#[tokio::test]
async fn a_password_reset_ends_that_users_sessions() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, id) = h.user(&admin, "eve").await;
    let user2 = h.login("eve", USER_PASSWORD).await;
    let (bystander, _) = h.user(&admin, "bystander").await;

    let r = update(&h, &admin, &id, json!({ "password": "reset-password-1" })).await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["username"], "eve");
    for cred in [&user, &user2] {
        me(&h, cred)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
    }
    me(&h, &admin).await.expect(StatusCode::OK);
    me(&h, &bystander).await.expect(StatusCode::OK);
    assert_eq!(
        try_login(&h, "eve", USER_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        try_login(&h, "eve", "reset-password-1").await,
        StatusCode::OK
    );
}

#[tokio::test]
async fn the_last_admin_cannot_be_deleted_or_demoted() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_id = h.me(&admin).await;

    delete(&h, &admin, &admin_id)
        .await
        .expect_error(StatusCode::CONFLICT, LAST_ADMIN);
    update(&h, &admin, &admin_id, json!({ "role": "user" }))
        .await
        .expect_error(StatusCode::CONFLICT, LAST_ADMIN);
    // A demotion refused as a whole: the email in the same request is not applied.
    update(
        &h,
        &admin,
        &admin_id,
        json!({ "role": "user", "email": "x@example.org" }),
    )
    .await
    .expect_error(StatusCode::CONFLICT, LAST_ADMIN);
    let users = list(&h, &admin).await;
    assert_eq!(users[0]["role"], "admin");
    assert_eq!(users[0]["email"], Value::Null);

    // With a second admin, the first may step down…
    let (other, other_id) = h.user(&admin, "frida").await;
    update(&h, &admin, &other_id, json!({ "role": "admin" }))
        .await
        .expect(StatusCode::OK);
    let r = update(&h, &admin, &admin_id, json!({ "role": "user" })).await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["role"], "user");
    // …and now the other is the last one.
    update(&h, &other, &other_id, json!({ "role": "user" }))
        .await
        .expect_error(StatusCode::CONFLICT, LAST_ADMIN);
    delete(&h, &other, &other_id)
        .await
        .expect_error(StatusCode::CONFLICT, LAST_ADMIN);
    // An admin may delete another admin while one remains.
    update(&h, &other, &admin_id, json!({ "role": "admin" }))
        .await
        .expect(StatusCode::OK);
    let r = delete(&h, &other, &admin_id).await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    me(&h, &admin)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
}

#[tokio::test]
async fn a_user_who_owns_apps_cannot_be_deleted() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, id) = h.user(&admin, "gina").await;
    let app = h.app(&user, "gina-app").await;

    delete(&h, &admin, &id).await.expect_error(
        StatusCode::CONFLICT,
        "This user still owns 1 app(s); delete them first",
    );
    me(&h, &user).await.expect(StatusCode::OK);

    h.call(Method::DELETE, &format!("/api/apps/{app}"), &user, None)
        .await
        .expect(StatusCode::OK);
    delete(&h, &admin, &id).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn deleting_a_user_ends_their_sessions_and_tokens() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, id) = h.user(&admin, "hank").await;
    let r = h
        .call(
            Method::POST,
            "/api/auth/tokens",
            &user,
            Some(json!({ "name": "t" })),
        )
        .await;
    let raw = r.expect(StatusCode::CREATED)["token"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let bearer = Cred::Bearer(raw.clone());
    me(&h, &bearer).await.expect(StatusCode::OK);

    let r = delete(&h, &admin, &id).await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    for cred in [&user, &bearer] {
        me(&h, cred)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
    }
    let hash = rserve_proxy::auth::secrets::token_hash(&raw);
    assert!(h.state.store.get_token_by_hash(&hash).unwrap().is_none());
    assert_eq!(
        try_login(&h, "hank", USER_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        usernames(&list(&h, &admin).await),
        ["admin".to_string()].into()
    );

    // Gone: a second delete or an update is 404.
    delete(&h, &admin, &id)
        .await
        .expect_error(StatusCode::NOT_FOUND, "User not found");
    update(&h, &admin, &id, json!({ "role": "admin" }))
        .await
        .expect_error(StatusCode::NOT_FOUND, "User not found");
    // The name is free again.
    create(
        &h,
        &admin,
        json!({ "username": "hank", "password": "password-9" }),
    )
    .await
    .expect(StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_and_malformed_user_ids() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let unknown = Uuid::new_v4().to_string();
    delete(&h, &admin, &unknown)
        .await
        .expect_error(StatusCode::NOT_FOUND, "User not found");
    update(&h, &admin, &unknown, json!({ "email": "a@b.org" }))
        .await
        .expect_error(StatusCode::NOT_FOUND, "User not found");
    for bad in ["not-a-uuid", "123", "00000000-0000-0000-0000-00000000000g"] {
        delete(&h, &admin, bad)
            .await
            .expect_bad_request("Invalid id");
        update(&h, &admin, bad, json!({}))
            .await
            .expect_bad_request("Invalid id");
    }
    // Without credentials it is 401 before anything else.
    for cred in [Cred::None, Cred::Cookie("x".into())] {
        delete(&h, &cred, "not-a-uuid")
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
        update(&h, &cred, &unknown, json!({ "role": "admin" }))
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
        h.call(Method::GET, "/api/users", &cred, None)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
        create(
            &h,
            &cred,
            json!({ "username": "x", "password": "password-1" }),
        )
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
    }
}
