//! `/api/auth/*`: login (cookie, rate limit), logout, me, password change, API tokens,
//! and how sessions and tokens live and die.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use common::{session_from, Cred, Harness, Reply, ADMIN_PASSWORD, USER_PASSWORD};
use rserve_proxy::auth::secrets;
use rserve_proxy::model::{ApiToken, AuditEntry, Session};

const AUTH_REQUIRED: &str = "Authentication required";

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

/// The attributes of the session Set-Cookie header, e.g. `HttpOnly`, `Path=/`
/// (`rsp_session`, or `__Host-rsp_session` over TLS).
fn cookie_attributes(r: &Reply) -> Vec<String> {
    let all: Vec<&str> = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(all.len(), 1, "one Set-Cookie expected: {all:?}");
    let mut parts = all[0].split(';').map(|p| p.trim().to_string());
    let pair = parts.next().unwrap();
    let tls = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap().contains("; Secure"));
    let name = if tls {
        "__Host-rsp_session="
    } else {
        "rsp_session="
    };
    assert!(pair.starts_with(name), "{pair} should start with {name}");
    parts.collect()
}

async fn login_from(h: &Harness, ip: &str, username: &str, password: &str) -> Reply {
    h.call_with(
        Method::POST,
        "/api/auth/login",
        &Cred::None,
        Some(json!({ "username": username, "password": password })),
        &[("x-forwarded-for", ip)],
    )
    .await
}

async fn me(h: &Harness, cred: &Cred) -> Reply {
    h.call(Method::GET, "/api/auth/me", cred, None).await
}

async fn create_token(h: &Harness, cred: &Cred, body: Value) -> Reply {
    h.call(Method::POST, "/api/auth/tokens", cred, Some(body))
        .await
}

/// Create a token and return (id, raw token).
async fn token(h: &Harness, cred: &Cred, name: &str) -> (String, String) {
    let r = create_token(h, cred, json!({ "name": name })).await;
    let t = &r.expect(StatusCode::CREATED)["token"];
    (
        t["id"].as_str().unwrap().to_string(),
        t["token"].as_str().unwrap().to_string(),
    )
}

async fn list_tokens(h: &Harness, cred: &Cred) -> Vec<Value> {
    let r = h.call(Method::GET, "/api/auth/tokens", cred, None).await;
    r.expect(StatusCode::OK)["tokens"]
        .as_array()
        .unwrap()
        .clone()
}

// ---------- login ----------

#[tokio::test]
async fn login_returns_the_user_and_a_session_cookie() {
    let h = Harness::new().await;
    let r = login_from(&h, "192.0.2.10", "admin", ADMIN_PASSWORD).await;
    let user = &r.expect(StatusCode::OK)["user"];
    assert_eq!(keys(&r.body), set(&["user"]));
    assert_eq!(
        keys(user),
        set(&["id", "username", "email", "role", "createdAt"])
    );
    assert_eq!(user["username"], "admin");
    assert_eq!(user["role"], "admin");
    assert_eq!(user["email"], Value::Null);
    Uuid::parse_str(user["id"].as_str().unwrap()).unwrap();
    ts(&user["createdAt"]);

    let session = session_from(&r.headers).expect("session cookie");
    assert!(secrets::looks_like_session_id(&session), "{session}");
    let attrs = cookie_attributes(&r);
    for a in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(attrs.iter().any(|x| x == a), "{a} missing from {attrs:?}");
    }
    assert!(
        !attrs.iter().any(|x| x.eq_ignore_ascii_case("secure")),
        "Secure over plain http: {attrs:?}"
    );

    // The cookie authenticates, as the same user.
    let me = me(&h, &Cred::Cookie(session)).await;
    assert_eq!(me.expect(StatusCode::OK)["user"], *user);
}

#[tokio::test]
async fn login_over_tls_sets_a_secure_cookie() {
    let h = Harness::new().await;
    let r = h
        .call_with(
            Method::POST,
            "/api/auth/login",
            &Cred::None,
            Some(json!({ "username": "admin", "password": ADMIN_PASSWORD })),
            &[("x-forwarded-proto", "https")],
        )
        .await;
    r.expect(StatusCode::OK);
    let attrs = cookie_attributes(&r);
    for a in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attrs.iter().any(|x| x == a), "{a} missing from {attrs:?}");
    }
    // `__Host-` forbids Domain.
    assert!(!attrs
        .iter()
        .any(|x| x.to_ascii_lowercase().starts_with("domain")));
}

#[tokio::test]
async fn unknown_user_and_wrong_password_get_the_same_401() {
    let h = Harness::new().await;
    let unknown = login_from(&h, "192.0.2.11", "nobody", ADMIN_PASSWORD).await;
    let wrong = login_from(&h, "192.0.2.11", "admin", "not-the-password").await;
    unknown.expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");
    wrong.expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");
    assert_eq!(unknown.text, wrong.text);
    assert!(session_from(&unknown.headers).is_none());
    assert!(session_from(&wrong.headers).is_none());
    // Usernames are exact.
    login_from(&h, "192.0.2.11", "Admin", ADMIN_PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");
}

#[tokio::test]
async fn login_refuses_malformed_bodies_with_400() {
    let h = Harness::new().await;
    let post = |body: Value| h.call(Method::POST, "/api/auth/login", &Cred::None, Some(body));

    post(json!({ "username": "", "password": "x" }))
        .await
        .expect_invalid("username must be 1 to 128 characters");
    post(json!({ "username": "admin", "password": "" }))
        .await
        .expect_invalid("password must be 1 to 256 characters");
    post(json!({ "username": "a".repeat(129), "password": "x" }))
        .await
        .expect_invalid("username must be 1 to 128 characters");
    post(json!({ "username": "admin", "password": "p".repeat(257) }))
        .await
        .expect_invalid("password must be 1 to 256 characters");
    // At the limits it is a normal (failed) login.
    post(json!({ "username": "a".repeat(128), "password": "p".repeat(256) }))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");

    // Missing fields and wrong types.
    post(json!({ "username": "admin" }))
        .await
        .expect_bad_request("Invalid request body");
    post(json!({ "password": ADMIN_PASSWORD }))
        .await
        .expect_bad_request("Invalid request body");
    post(json!({ "username": 1, "password": ADMIN_PASSWORD }))
        .await
        .expect_bad_request("Invalid request body");
    post(json!("admin"))
        .await
        .expect_bad_request("Invalid request body");

    // Not JSON, or not declared as JSON.
    let valid = json!({ "username": "admin", "password": ADMIN_PASSWORD }).to_string();
    let raw = |ct: &'static str, body: String| {
        let h = &h;
        async move {
            h.call_raw(Method::POST, "/api/auth/login", &Cred::None, ct, &body)
                .await
        }
    };
    raw("application/json", "{\"username\": \"admin\",".into())
        .await
        .expect_bad_request("Invalid request body");
    raw("application/json", String::new())
        .await
        .expect_bad_request("Invalid request body");
    raw("text/plain", valid.clone())
        .await
        .expect_bad_request("Invalid request body");
    raw("application/x-www-form-urlencoded", valid.clone())
        .await
        .expect_bad_request("Invalid request body");
    let no_type = Harness::request(Method::POST, "/api/auth/login", &Cred::None)
        .body(axum::body::Body::from(valid))
        .unwrap();
    h.send(no_type)
        .await
        .expect_bad_request("Invalid request body");
}

#[tokio::test]
async fn login_is_rate_limited_per_client_address() {
    let h = Harness::new().await;
    let ip = "203.0.113.7";
    for _ in 0..10 {
        login_from(&h, ip, "admin", "wrong-password")
            .await
            .expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");
    }
    // The 11th attempt within the minute is refused, even with the right password.
    let r = login_from(&h, ip, "admin", ADMIN_PASSWORD).await;
    r.expect(StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(keys(&r.body), set(&["error"]));
    assert!(
        r.body["error"]
            .as_str()
            .unwrap()
            .starts_with("Too many login attempts"),
        "{}",
        r.text
    );
    assert!(session_from(&r.headers).is_none());
    let retry: u64 = r
        .headers
        .get(header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in seconds");
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");

    // The first address of a forwarded list is the client.
    login_from(&h, &format!("{ip}, 10.0.0.1"), "admin", ADMIN_PASSWORD)
        .await
        .expect(StatusCode::TOO_MANY_REQUESTS);
    // Another client is unaffected.
    login_from(&h, "203.0.113.8", "admin", ADMIN_PASSWORD)
        .await
        .expect(StatusCode::OK);
}

// ---------- logout and me ----------

#[tokio::test]
async fn logout_ends_the_session_server_side() {
    let h = Harness::new().await;
    let cred = h.admin().await;
    let other = h.admin().await;
    let Cred::Cookie(id) = cred.clone() else {
        unreachable!()
    };

    let r = h.call(Method::POST, "/api/auth/logout", &cred, None).await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    // The browser is told to drop the cookie…
    let attrs = cookie_attributes(&r);
    assert!(attrs.iter().any(|a| a == "Max-Age=0"), "{attrs:?}");
    assert_eq!(session_from(&r.headers), None);
    // …but the session is dead whatever the client keeps.
    assert!(h.state.store.get_session(&id).unwrap().is_none());
    me(&h, &cred)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    h.call(Method::POST, "/api/auth/logout", &cred, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    // Only that session.
    me(&h, &other).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn logout_with_a_token_leaves_the_token_valid() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (_, raw) = token(&h, &admin, "ci").await;
    let bearer = Cred::Bearer(raw);
    let r = h
        .call(Method::POST, "/api/auth/logout", &bearer, None)
        .await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    me(&h, &bearer).await.expect(StatusCode::OK);
    me(&h, &admin).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn me_needs_valid_credentials() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, user_id) = h.user(&admin, "alice").await;
    let r = me(&h, &user).await;
    let u = &r.expect(StatusCode::OK)["user"];
    assert_eq!(u["id"], user_id.as_str());
    assert_eq!(u["username"], "alice");
    assert_eq!(u["role"], "user");

    for cred in [
        Cred::None,
        Cred::Cookie("not-a-session".into()),
        Cred::Cookie(secrets::new_session_id()),
        Cred::Bearer("nonsense".into()),
        Cred::Bearer(secrets::new_api_token()),
    ] {
        me(&h, &cred)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    }
    // An invalid bearer token is not rescued by a valid cookie.
    let Cred::Cookie(session) = admin else {
        unreachable!()
    };
    let req = Harness::request(
        Method::GET,
        "/api/auth/me",
        &Cred::Bearer(secrets::new_api_token()),
    )
    .header(header::COOKIE, format!("rsp_session={session}"))
    .body(axum::body::Body::empty())
    .unwrap();
    h.send(req)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
}

// ---------- password ----------

#[tokio::test]
async fn password_change_checks_the_current_password_and_ends_other_sessions() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (mine, _) = h.user(&admin, "bob").await;
    let other = h.login("bob", USER_PASSWORD).await;
    let put = |cred: &Cred, body: Value| {
        let cred = cred.clone();
        let h = &h;
        async move {
            h.call(Method::PUT, "/api/auth/password", &cred, Some(body))
                .await
        }
    };

    put(
        &mine,
        json!({ "currentPassword": "wrong-password", "newPassword": "new-password-1" }),
    )
    .await
    .expect_error(StatusCode::FORBIDDEN, "Current password is incorrect");
    put(
        &mine,
        json!({ "currentPassword": USER_PASSWORD, "newPassword": "short77" }),
    )
    .await
    .expect_invalid("newPassword must be 8 to 256 characters");
    put(
        &mine,
        json!({ "currentPassword": USER_PASSWORD, "newPassword": "x".repeat(257) }),
    )
    .await
    .expect_invalid("newPassword must be 8 to 256 characters");
    put(&mine, json!({ "currentPassword": USER_PASSWORD }))
        .await
        .expect_bad_request("Invalid request body");
    put(
        &mine,
        json!({ "currentPassword": USER_PASSWORD, "newPassword": 12345678 }),
    )
    .await
    .expect_bad_request("Invalid request body");
    put(
        &Cred::None,
        json!({ "currentPassword": USER_PASSWORD, "newPassword": "new-password-1" }),
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    // Nothing changed by the refusals.
    me(&h, &other).await.expect(StatusCode::OK);

    let r = put(
        &mine,
        json!({ "currentPassword": USER_PASSWORD, "newPassword": "new-password-1" }),
    )
    .await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));

    me(&h, &mine).await.expect(StatusCode::OK);
    me(&h, &other)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    // Another user's sessions are untouched.
    me(&h, &admin).await.expect(StatusCode::OK);

    login_from(&h, "192.0.2.20", "bob", USER_PASSWORD)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "Invalid credentials");
    login_from(&h, "192.0.2.20", "bob", "new-password-1")
        .await
        .expect(StatusCode::OK);
}

// ---------- tokens ----------

#[tokio::test]
async fn token_creation_returns_the_raw_token_once() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_id = h.me(&admin).await;

    let r = create_token(&h, &admin, json!({ "name": "deploy" })).await;
    let t = r.expect(StatusCode::CREATED)["token"].clone();
    assert_eq!(keys(&r.body), set(&["token"]));
    assert_eq!(
        keys(&t),
        set(&[
            "id",
            "name",
            "token",
            "tokenPrefix",
            "userId",
            "scope",
            "expiresAt",
            "lastUsedAt",
            "createdAt"
        ])
    );
    let raw = t["token"].as_str().unwrap().to_string();
    assert_eq!(raw.len(), 44, "{raw}");
    assert!(raw.starts_with("rsp_"));
    assert!(raw[4..].bytes().all(|b| b.is_ascii_alphanumeric()), "{raw}");
    assert_eq!(t["tokenPrefix"], &raw[..12]);
    assert_eq!(t["name"], "deploy");
    assert_eq!(t["userId"], admin_id.as_str());
    assert_eq!(t["scope"], "full", "full access unless asked otherwise");
    assert_eq!(t["expiresAt"], Value::Null);
    assert_eq!(t["lastUsedAt"], Value::Null);
    ts(&t["createdAt"]);
    let id = Uuid::parse_str(t["id"].as_str().unwrap()).unwrap();

    // Only the SHA-256 is stored.
    let hash = hex::encode(Sha256::digest(raw.as_bytes()));
    let stored = h.state.store.get_token_by_hash(&hash).unwrap().unwrap();
    assert_eq!(stored.id, id);
    assert_eq!(stored.token_hash, hash);
    let db = std::fs::read(h.dir.path().join("state.redb")).unwrap();
    assert!(
        !db.windows(raw.len()).any(|w| w == raw.as_bytes()),
        "raw token stored"
    );

    // The list never shows it.
    let r = h.call(Method::GET, "/api/auth/tokens", &admin, None).await;
    r.expect(StatusCode::OK);
    assert!(!r.text.contains(&raw));
    let listed = r.body["tokens"].as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let mut without = keys(&t);
    without.remove("token");
    assert_eq!(keys(&listed[0]), without);
    for k in &without {
        assert_eq!(listed[0][k], t[k], "{k}");
    }

    // A second token is a different token.
    let (_, raw2) = token(&h, &admin, "deploy").await;
    assert_ne!(raw, raw2);
}

#[tokio::test]
async fn token_expiry_is_set_from_expires_in_days() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    for days in [1, 30, 365] {
        let r = create_token(&h, &admin, json!({ "name": "t", "expiresInDays": days })).await;
        let t = &r.expect(StatusCode::CREATED)["token"];
        assert_eq!(
            ts(&t["expiresAt"]) - ts(&t["createdAt"]),
            time::Duration::days(days)
        );
        me(&h, &Cred::Bearer(t["token"].as_str().unwrap().into()))
            .await
            .expect(StatusCode::OK);
    }
    let r = create_token(&h, &admin, json!({ "name": "t", "expiresInDays": null })).await;
    assert_eq!(
        r.expect(StatusCode::CREATED)["token"]["expiresAt"],
        Value::Null
    );
}

#[tokio::test]
async fn token_creation_validates_its_input() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    for days in [json!(0), json!(366), json!(-1)] {
        create_token(&h, &admin, json!({ "name": "t", "expiresInDays": days }))
            .await
            .expect_invalid("expiresInDays must be from 1 to 365");
    }
    for days in [json!("x"), json!("30"), json!(1.5), json!(true)] {
        create_token(&h, &admin, json!({ "name": "t", "expiresInDays": days }))
            .await
            .expect_bad_request("Invalid request body");
    }
    create_token(&h, &admin, json!({ "name": "" }))
        .await
        .expect_invalid("name must be 1 to 128 characters");
    create_token(&h, &admin, json!({ "name": "n".repeat(129) }))
        .await
        .expect_invalid("name must be 1 to 128 characters");
    create_token(&h, &admin, json!({ "name": "n".repeat(128) }))
        .await
        .expect(StatusCode::CREATED);
    create_token(&h, &admin, json!({ "expiresInDays": 5 }))
        .await
        .expect_bad_request("Invalid request body");
    create_token(&h, &admin, json!({ "name": 5 }))
        .await
        .expect_bad_request("Invalid request body");
    h.call_raw(
        Method::POST,
        "/api/auth/tokens",
        &admin,
        "application/json",
        "{\"name\"",
    )
    .await
    .expect_bad_request("Invalid request body");
    create_token(&h, &Cred::None, json!({ "name": "t" }))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    // Only the one valid token was made.
    assert_eq!(list_tokens(&h, &admin).await.len(), 1);
}

#[tokio::test]
async fn tokens_are_listed_oldest_first_and_only_ones_own() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, user_id) = h.user(&admin, "carol").await;
    for name in ["first", "second", "third"] {
        token(&h, &admin, name).await;
    }
    token(&h, &user, "carols").await;

    let names = |list: &[Value]| -> Vec<String> {
        list.iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mine = list_tokens(&h, &admin).await;
    assert_eq!(names(&mine), ["first", "second", "third"]);
    let created: Vec<OffsetDateTime> = mine.iter().map(|t| ts(&t["createdAt"])).collect();
    assert!(created.windows(2).all(|w| w[0] <= w[1]), "{created:?}");

    let theirs = list_tokens(&h, &user).await;
    assert_eq!(names(&theirs), ["carols"]);
    assert_eq!(theirs[0]["userId"], user_id.as_str());
    h.call(Method::GET, "/api/auth/tokens", &Cred::None, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
}

#[tokio::test]
async fn bearer_tokens_authenticate_and_record_their_use() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, _) = h.user(&admin, "dave").await;
    let (id, raw) = token(&h, &user, "script").await;
    let bearer = Cred::Bearer(raw);

    let r = me(&h, &bearer).await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["username"], "dave");
    // The scheme is case-insensitive.
    let Cred::Bearer(raw) = &bearer else {
        unreachable!()
    };
    let req = Harness::request(Method::GET, "/api/auth/me", &Cred::None)
        .header(header::AUTHORIZATION, format!("bearer {raw}"))
        .body(axum::body::Body::empty())
        .unwrap();
    h.send(req).await.expect(StatusCode::OK);
    // A token acts as its user, with its user's rights.
    h.call(Method::GET, "/api/users", &bearer, None)
        .await
        .expect_error(StatusCode::FORBIDDEN, "Access denied");

    // lastUsedAt is written by a background task, batched once a second.
    let mut last_used = Value::Null;
    for _ in 0..30 {
        let list = list_tokens(&h, &user).await;
        let t = list.iter().find(|t| t["id"] == id.as_str()).unwrap();
        if !t["lastUsedAt"].is_null() {
            last_used = t["lastUsedAt"].clone();
            assert!(ts(&last_used) >= ts(&t["createdAt"]));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!last_used.is_null(), "lastUsedAt never set");
}

#[tokio::test]
async fn deleting_a_token_revokes_it() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, _) = h.user(&admin, "erin").await;
    let (id, raw) = token(&h, &user, "one").await;
    let (keep_id, keep_raw) = token(&h, &user, "two").await;
    let (admin_token_id, admin_raw) = token(&h, &admin, "admins").await;

    // Someone else's token is "not found", and survives.
    h.call(
        Method::DELETE,
        &format!("/api/auth/tokens/{admin_token_id}"),
        &user,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "Token not found");
    me(&h, &Cred::Bearer(admin_raw.clone()))
        .await
        .expect(StatusCode::OK);
    // Admins cannot delete other users' tokens either.
    h.call(
        Method::DELETE,
        &format!("/api/auth/tokens/{id}"),
        &admin,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "Token not found");
    h.call(
        Method::DELETE,
        &format!("/api/auth/tokens/{}", Uuid::new_v4()),
        &user,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "Token not found");
    h.call(Method::DELETE, "/api/auth/tokens/not-a-uuid", &user, None)
        .await
        .expect_bad_request("Invalid id");
    h.call(
        Method::DELETE,
        &format!("/api/auth/tokens/{id}"),
        &Cred::None,
        None,
    )
    .await
    .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);

    me(&h, &Cred::Bearer(raw.clone()))
        .await
        .expect(StatusCode::OK);
    let r = h
        .call(
            Method::DELETE,
            &format!("/api/auth/tokens/{id}"),
            &user,
            None,
        )
        .await;
    assert_eq!(*r.expect(StatusCode::OK), json!({ "ok": true }));
    me(&h, &Cred::Bearer(raw))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    let left = list_tokens(&h, &user).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["id"], keep_id.as_str());
    me(&h, &Cred::Bearer(keep_raw)).await.expect(StatusCode::OK);
    h.call(
        Method::DELETE,
        &format!("/api/auth/tokens/{id}"),
        &user,
        None,
    )
    .await
    .expect_error(StatusCode::NOT_FOUND, "Token not found");
    // A token may revoke itself.
    let r = h
        .call(
            Method::DELETE,
            &format!("/api/auth/tokens/{admin_token_id}"),
            &Cred::Bearer(admin_raw.clone()),
            None,
        )
        .await;
    r.expect(StatusCode::OK);
    me(&h, &Cred::Bearer(admin_raw))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
}

/// Store a token directly (bypassing the API's 1–365 day rule).
fn store_token(h: &Harness, user_id: &str, expires_at: Option<OffsetDateTime>) -> String {
    let raw = secrets::new_api_token();
    let now = OffsetDateTime::now_utc();
    let token = ApiToken {
        id: Uuid::new_v4(),
        user_id: Uuid::parse_str(user_id).unwrap(),
        scope: Default::default(),
        name: "direct".into(),
        token_hash: secrets::token_hash(&raw),
        token_prefix: secrets::token_display_prefix(&raw),
        expires_at,
        last_used_at: None,
        created_at: now - time::Duration::days(2),
    };
    h.state
        .store
        .create_token(&token, &AuditEntry::new(None, "token.create", None))
        .unwrap();
    raw
}

#[tokio::test]
async fn an_expired_token_authenticates_nothing() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_id = h.me(&admin).await;
    let now = OffsetDateTime::now_utc();

    let expired = store_token(&h, &admin_id, Some(now - time::Duration::minutes(1)));
    for (method, path) in [
        (Method::GET, "/api/auth/me"),
        (Method::GET, "/api/apps"),
        (Method::GET, "/api/users"),
        (Method::GET, "/api/auth/tokens"),
    ] {
        h.call(method, path, &Cred::Bearer(expired.clone()), None)
            .await
            .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    }
    // The same kind of token, still valid, works: the difference is the expiry.
    let live = store_token(&h, &admin_id, Some(now + time::Duration::minutes(5)));
    me(&h, &Cred::Bearer(live)).await.expect(StatusCode::OK);
}

// ---------- sessions ----------

#[tokio::test]
async fn sessions_and_tokens_survive_a_restart() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (user, _) = h.user(&admin, "frank").await;
    let (_, raw) = token(&h, &user, "persist").await;
    let user_id = h.me(&user).await;

    let h = h.restart().await;
    let r = me(&h, &admin).await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["username"], "admin");
    assert_eq!(
        me(&h, &user).await.expect(StatusCode::OK)["user"]["id"],
        user_id.as_str()
    );
    me(&h, &Cred::Bearer(raw)).await.expect(StatusCode::OK);
    assert_eq!(list_tokens(&h, &user).await.len(), 1);
    // Logging out after the restart still ends the session.
    h.call(Method::POST, "/api/auth/logout", &user, None)
        .await
        .expect(StatusCode::OK);
    me(&h, &user)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
}

#[tokio::test]
async fn an_expired_session_is_refused_and_removed() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_id = Uuid::parse_str(&h.me(&admin).await).unwrap();
    let now = OffsetDateTime::now_utc();
    let session = |expires_at| Session {
        id: secrets::new_session_id(),
        user_id: admin_id,
        created_at: now - time::Duration::days(1),
        expires_at,
    };

    let expired = session(now - time::Duration::seconds(1));
    h.state.store.create_session(&expired, None).unwrap();
    me(&h, &Cred::Cookie(expired.id.clone()))
        .await
        .expect_error(StatusCode::UNAUTHORIZED, AUTH_REQUIRED);
    assert!(h.state.store.get_session(&expired.id).unwrap().is_none());

    let live = session(now + time::Duration::minutes(5));
    h.state.store.create_session(&live, None).unwrap();
    me(&h, &Cred::Cookie(live.id)).await.expect(StatusCode::OK);
}
