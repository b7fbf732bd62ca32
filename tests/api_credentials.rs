//! Password changes and what they end (issue #8): an admin's reset ends all the user's
//! sessions and revokes their API tokens; a user's own change ends their other
//! sessions and, with `revokeTokens`, their tokens. Real router, real redb.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::json;
use uuid::Uuid;

use common::{Cred, Harness, Reply, USER_PASSWORD};

const AUTH_REQUIRED: &str = "Authentication required";

async fn me(h: &Harness, cred: &Cred) -> Reply {
    h.call(Method::GET, "/api/auth/me", cred, None).await
}

async fn new_token(h: &Harness, cred: &Cred, name: &str) -> Cred {
    let r = h
        .call(
            Method::POST,
            "/api/auth/tokens",
            cred,
            Some(json!({ "name": name })),
        )
        .await;
    Cred::Bearer(
        r.expect(StatusCode::CREATED)["token"]["token"]
            .as_str()
            .unwrap()
            .into(),
    )
}

#[track_caller]
fn expect_unauthenticated(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
    assert_eq!(r.body, json!({ "error": AUTH_REQUIRED }), "{what}");
}

/// Audit actions with their targets, oldest first.
fn audit(h: &Harness) -> Vec<(String, Option<String>)> {
    let mut all: Vec<_> = h
        .state
        .store
        .list_audit(usize::MAX)
        .unwrap()
        .into_iter()
        .map(|a| (a.action, a.target))
        .collect();
    all.reverse();
    all
}

#[tokio::test]
async fn admin_reset_ends_sessions_and_revokes_tokens() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_token = new_token(&h, &admin, "admin's").await;
    let (bob, bob_id) = h.user(&admin, "bob").await;
    let bob_other = h.login("bob", USER_PASSWORD).await;
    let bob_t1 = new_token(&h, &bob, "ci").await;
    let bob_t2 = new_token(&h, &bob_other, "laptop").await;
    for c in [&bob, &bob_other, &bob_t1, &bob_t2] {
        me(&h, c).await.expect(StatusCode::OK);
    }
    let audit_before = audit(&h).len();

    let r = h
        .call(
            Method::PUT,
            &format!("/api/users/{bob_id}"),
            &admin,
            Some(json!({ "password": "reset-by-admin-1" })),
        )
        .await;
    assert_eq!(r.expect(StatusCode::OK)["user"]["username"], "bob");

    for (c, what) in [
        (&bob, "session"),
        (&bob_other, "other session"),
        (&bob_t1, "token ci"),
        (&bob_t2, "token laptop"),
    ] {
        expect_unauthenticated(&me(&h, c).await, what);
    }
    let id = Uuid::parse_str(&bob_id).unwrap();
    assert!(h.state.store.list_tokens(id).unwrap().is_empty());
    // The admin's own session and token are not touched.
    me(&h, &admin).await.expect(StatusCode::OK);
    me(&h, &admin_token).await.expect(StatusCode::OK);
    // One audit row for the reset (no other field changed).
    assert_eq!(
        audit(&h)[audit_before..],
        [("user.password_reset".to_string(), Some("bob".to_string()))]
    );
    // The new password works.
    let bob = h.login("bob", "reset-by-admin-1").await;
    me(&h, &bob).await.expect(StatusCode::OK);

    // A reset together with another field: both recorded, tokens go again.
    let t = new_token(&h, &bob, "again").await;
    let before = audit(&h).len();
    h.call(
        Method::PUT,
        &format!("/api/users/{bob_id}"),
        &admin_token,
        Some(json!({ "password": "reset-by-admin-2", "email": "bob@example.org" })),
    )
    .await
    .expect(StatusCode::OK);
    expect_unauthenticated(&me(&h, &t).await, "token after second reset");
    let actions: Vec<String> = audit(&h)[before..].iter().map(|a| a.0.clone()).collect();
    assert_eq!(actions, ["user.update", "user.password_reset"]);

    // Changing anything but the password leaves sessions and tokens alone.
    let bob = h.login("bob", "reset-by-admin-2").await;
    let t = new_token(&h, &bob, "kept").await;
    h.call(
        Method::PUT,
        &format!("/api/users/{bob_id}"),
        &admin,
        Some(json!({ "email": "" })),
    )
    .await
    .expect(StatusCode::OK);
    me(&h, &bob).await.expect(StatusCode::OK);
    me(&h, &t).await.expect(StatusCode::OK);
}

#[tokio::test]
async fn an_invalid_reset_changes_nothing() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (bob, bob_id) = h.user(&admin, "bob").await;
    let t = new_token(&h, &bob, "ci").await;
    let before = audit(&h).len();
    h.call(
        Method::PUT,
        &format!("/api/users/{bob_id}"),
        &admin,
        Some(json!({ "password": "short" })),
    )
    .await
    .expect_invalid("password must be 8 to 256 characters");
    me(&h, &bob).await.expect(StatusCode::OK);
    me(&h, &t).await.expect(StatusCode::OK);
    assert_eq!(audit(&h).len(), before);
}

async fn change_own(h: &Harness, cred: &Cred, from: &str, to: &str, revoke: Option<bool>) -> Reply {
    let mut body = json!({ "currentPassword": from, "newPassword": to });
    if let Some(r) = revoke {
        body["revokeTokens"] = json!(r);
    }
    h.call(Method::PUT, "/api/auth/password", cred, Some(body))
        .await
}

#[tokio::test]
async fn own_change_keeps_tokens_by_default() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (bob, _) = h.user(&admin, "bob").await;
    let other = h.login("bob", USER_PASSWORD).await;
    let t = new_token(&h, &bob, "ci").await;

    for (revoke, to) in [(None, "changed-pass-1"), (Some(false), "changed-pass-2")] {
        let from = if to == "changed-pass-1" {
            USER_PASSWORD
        } else {
            "changed-pass-1"
        };
        let other = h.login("bob", from).await;
        assert_eq!(
            *change_own(&h, &bob, from, to, revoke)
                .await
                .expect(StatusCode::OK),
            json!({ "ok": true })
        );
        me(&h, &bob).await.expect(StatusCode::OK);
        me(&h, &t).await.expect(StatusCode::OK);
        expect_unauthenticated(&me(&h, &other).await, "other session");
    }
    expect_unauthenticated(&me(&h, &other).await, "first other session");
    let actions: Vec<String> = audit(&h).into_iter().map(|a| a.0).collect();
    assert!(
        !actions.contains(&"token.revoke_all".to_string()),
        "{actions:?}"
    );
}

#[tokio::test]
async fn own_change_with_revoke_tokens_revokes_them_all() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let admin_token = new_token(&h, &admin, "admin's").await;
    let (bob, bob_id) = h.user(&admin, "bob").await;
    let other = h.login("bob", USER_PASSWORD).await;
    let t1 = new_token(&h, &bob, "ci").await;
    let t2 = new_token(&h, &bob, "laptop").await;

    // A wrong type is a 400 and changes nothing.
    let r = h
        .call(
            Method::PUT,
            "/api/auth/password",
            &bob,
            Some(
                json!({ "currentPassword": USER_PASSWORD, "newPassword": "changed-pass-1",
                         "revokeTokens": "yes" }),
            ),
        )
        .await;
    r.expect_bad_request("Invalid request body");
    for c in [&other, &t1, &t2] {
        me(&h, c).await.expect(StatusCode::OK);
    }

    let before = audit(&h).len();
    change_own(&h, &bob, USER_PASSWORD, "changed-pass-1", Some(true))
        .await
        .expect(StatusCode::OK);
    me(&h, &bob).await.expect(StatusCode::OK);
    for (c, what) in [(&other, "other session"), (&t1, "ci"), (&t2, "laptop")] {
        expect_unauthenticated(&me(&h, c).await, what);
    }
    let id = Uuid::parse_str(&bob_id).unwrap();
    assert!(h.state.store.list_tokens(id).unwrap().is_empty());
    me(&h, &admin_token).await.expect(StatusCode::OK);
    assert_eq!(
        audit(&h)[before..],
        [
            ("auth.password_change".to_string(), None),
            ("token.revoke_all".to_string(), Some(bob_id.clone())),
        ]
    );

    // Changed with a token: that token goes too, and so does every session.
    let t3 = new_token(&h, &bob, "script").await;
    let t4 = new_token(&h, &bob, "spare").await;
    change_own(&h, &t3, "changed-pass-1", "changed-pass-2", Some(true))
        .await
        .expect(StatusCode::OK);
    for (c, what) in [
        (&t3, "token that made the change"),
        (&t4, "spare"),
        (&bob, "session"),
    ] {
        expect_unauthenticated(&me(&h, c).await, what);
    }
    let bob = h.login("bob", "changed-pass-2").await;
    me(&h, &bob).await.expect(StatusCode::OK);
}
