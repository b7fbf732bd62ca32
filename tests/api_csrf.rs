//! CSRF (issue #8): cookie-authenticated changes from another origin are refused with
//! 403 before anything happens; same-origin pages, non-browsers (curl with a cookie
//! jar) and bearer tokens pass. Through the real router over a real redb.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use common::{Cred, Harness, Part, Reply};

/// The host the browser addressed; our proxy passes it on as `X-Forwarded-Host`.
const HOST: &str = "rsp.example:8880";
const OWN_ORIGIN: &str = "http://rsp.example:8880";

/// A state-changing request a forged page could make.
/// Extra request headers.
type Headers<'a> = &'a [(&'static str, &'a str)];

#[derive(Debug, Clone, Copy)]
enum Op {
    UpdateApp,
    Upload,
    Stop,
    RoleChange,
    CreateToken,
    Logout,
}

const OPS: [Op; 6] = [
    Op::UpdateApp,
    Op::Upload,
    Op::Stop,
    Op::RoleChange,
    Op::CreateToken,
    Op::Logout,
];

struct World {
    h: Harness,
    admin: Cred,
    /// An admin API token: reads the state back without any CSRF question.
    bearer: Cred,
    app: String,
    bob: String,
}

impl World {
    async fn new() -> World {
        let h = Harness::new().await;
        let admin = h.admin().await;
        let r = h
            .call(
                Method::POST,
                "/api/auth/tokens",
                &admin,
                Some(json!({ "name": "reader" })),
            )
            .await;
        let bearer = Cred::Bearer(
            r.expect(StatusCode::CREATED)["token"]["token"]
                .as_str()
                .unwrap()
                .into(),
        );
        let app = h.app(&admin, "victim-app").await;
        h.upload(&admin, &app, "run.R", b"cat('original')\n")
            .await
            .expect(StatusCode::OK);
        let (_, bob) = h.user(&admin, "bob").await;
        World {
            h,
            admin,
            bearer,
            app,
            bob,
        }
    }

    async fn start_app(&self) {
        self.h
            .call(
                Method::POST,
                &format!("/api/apps/{}/start", self.app),
                &self.bearer,
                None,
            )
            .await
            .expect(StatusCode::OK);
    }

    /// Runs `op` as `cred` with `extra` headers (plus `X-Forwarded-Host`).
    async fn run(&self, op: Op, cred: &Cred, extra: &[(&'static str, &str)], n: usize) -> Reply {
        let mut headers = vec![("x-forwarded-host", HOST)];
        headers.extend_from_slice(extra);
        let h = &self.h;
        let call = |method, path: String, body: Option<Value>| {
            let headers = headers.clone();
            async move { h.call_with(method, &path, cred, body, &headers).await }
        };
        match op {
            Op::UpdateApp => {
                call(
                    Method::PUT,
                    format!("/api/apps/{}", self.app),
                    Some(json!({ "name": format!("Renamed {n}") })),
                )
                .await
            }
            Op::Upload => {
                let name = format!("changed{n}.R");
                h.multipart_with(
                    cred,
                    &self.app,
                    &[Part::file("file", &name, b"cat('replaced')\n")],
                    &headers,
                )
                .await
            }
            Op::Stop => call(Method::POST, format!("/api/apps/{}/stop", self.app), None).await,
            Op::RoleChange => {
                call(
                    Method::PUT,
                    format!("/api/users/{}", self.bob),
                    Some(json!({ "role": "admin" })),
                )
                .await
            }
            Op::CreateToken => {
                call(
                    Method::POST,
                    "/api/auth/tokens".into(),
                    Some(json!({ "name": format!("made {n}") })),
                )
                .await
            }
            Op::Logout => call(Method::POST, "/api/auth/logout".into(), None).await,
        }
    }

    /// Everything a refused request could have changed, read back.
    async fn snapshot(&self) -> Value {
        let h = &self.h;
        let app = h
            .call(
                Method::GET,
                &format!("/api/apps/{}", self.app),
                &self.bearer,
                None,
            )
            .await;
        let users = h.call(Method::GET, "/api/users", &self.bearer, None).await;
        let tokens = h
            .call(Method::GET, "/api/auth/tokens", &self.bearer, None)
            .await;
        let mut files: Vec<String> = std::fs::read_dir(h.upload_dir(&self.app))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        let audit = h.state.store.list_audit(usize::MAX).unwrap().len();
        // Ids and names only: `lastUsedAt` of the reading token moves on its own.
        let tokens: Vec<Value> = tokens.expect(StatusCode::OK)["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!([t["id"], t["name"]]))
            .collect();
        json!({
            "app": app.expect(StatusCode::OK)["app"].clone(),
            "users": users.expect(StatusCode::OK)["users"].clone(),
            "tokens": tokens,
            "files": files,
            "audit": audit,
            "spawnerCalls": h.spawner_calls(),
        })
    }
}

#[track_caller]
fn expect_refused(r: &Reply, what: &str) {
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{what}: {}", r.text);
    let error = r.body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Cross-origin request refused: "),
        "{what}: {error}"
    );
    assert!(
        error.contains("API token"),
        "says what to do instead: {error}"
    );
    assert_eq!(r.body.as_object().map(|o| o.len()), Some(1), "{}", r.text);
}

#[track_caller]
fn expect_done(r: &Reply, what: &str) {
    assert!(r.status.is_success(), "{what}: {} {}", r.status, r.text);
}

#[tokio::test]
async fn cross_origin_cookie_changes_are_refused_and_change_nothing() {
    let w = World::new().await;
    w.start_app().await;
    let before = w.snapshot().await;
    assert_eq!(before["app"]["status"], "running");

    let forged: [Headers; 5] = [
        &[("sec-fetch-site", "cross-site")],
        &[("sec-fetch-site", "same-site")],
        &[("origin", "http://evil.example")],
        // A sandboxed app page (the proxy's CSP sandbox) sends `Origin: null`.
        &[("origin", "null")],
        // Our own host name on another port is another origin (an app on a port).
        &[("origin", "http://rsp.example:8081")],
    ];
    for headers in forged {
        for op in OPS {
            let r = w.run(op, &w.admin, headers, 0).await;
            expect_refused(&r, &format!("{op:?} with {headers:?}"));
        }
    }
    assert_eq!(
        w.snapshot().await,
        before,
        "a refused request changed something"
    );
    // The session was not logged out.
    w.h.call(Method::GET, "/api/auth/me", &w.admin, None)
        .await
        .expect(StatusCode::OK);
    // Reading with the cookie from anywhere is fine: safe methods are not checked.
    let r =
        w.h.call_with(
            Method::GET,
            "/api/apps",
            &w.admin,
            None,
            &[("sec-fetch-site", "cross-site"), ("x-forwarded-host", HOST)],
        )
        .await;
    r.expect(StatusCode::OK);
}

#[tokio::test]
async fn same_origin_curl_and_bearer_requests_pass() {
    let w = World::new().await;
    let allowed: [(&str, bool, Headers); 8] = [
        (
            "same-origin fetch",
            false,
            &[("sec-fetch-site", "same-origin")],
        ),
        (
            "same-origin fetch with its Origin",
            false,
            &[("sec-fetch-site", "same-origin"), ("origin", OWN_ORIGIN)],
        ),
        ("typed or bookmarked", false, &[("sec-fetch-site", "none")]),
        (
            "older browser, own Origin",
            false,
            &[("origin", OWN_ORIGIN)],
        ),
        ("curl with a cookie jar", false, &[]),
        ("bearer", true, &[]),
        (
            "bearer from evil.example",
            true,
            &[("origin", "http://evil.example")],
        ),
        (
            "bearer from a sandboxed cross-site page",
            true,
            &[("sec-fetch-site", "cross-site"), ("origin", "null")],
        ),
    ];
    for (n, (what, bearer, headers)) in allowed.into_iter().enumerate() {
        // Logout ends the session: each case gets a fresh one.
        let cred = if bearer {
            w.bearer.clone()
        } else {
            w.h.admin().await
        };
        for op in OPS {
            if matches!(op, Op::Stop) {
                w.start_app().await;
            }
            if matches!(op, Op::RoleChange) {
                // Back to a plain user so the change is a change.
                w.h.call(
                    Method::PUT,
                    &format!("/api/users/{}", w.bob),
                    &w.bearer,
                    Some(json!({ "role": "user" })),
                )
                .await
                .expect(StatusCode::OK);
            }
            let r = w.run(op, &cred, headers, n).await;
            expect_done(&r, &format!("{op:?} as {what}"));
        }
        // Each change took effect.
        let now = w.snapshot().await;
        assert_eq!(now["app"]["name"], format!("Renamed {n}"), "{what}");
        assert_eq!(now["app"]["status"], "stopped", "{what}");
        assert!(
            now["files"]
                .as_array()
                .unwrap()
                .contains(&json!(format!("changed{n}.R"))),
            "{what}: {}",
            now["files"]
        );
        let bob = now["users"]
            .as_array()
            .unwrap()
            .iter()
            .find(|u| u["username"] == "bob")
            .unwrap();
        assert_eq!(bob["role"], "admin", "{what}");
        assert!(
            now["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t[1] == format!("made {n}")),
            "{what}"
        );
        if !bearer {
            w.h.call(Method::GET, "/api/auth/me", &cred, None)
                .await
                .expect_error(StatusCode::UNAUTHORIZED, "Authentication required");
        }
    }
}

#[tokio::test]
async fn bearer_is_used_even_with_a_cookie_beside_it() {
    let w = World::new().await;
    let Cred::Bearer(token) = &w.bearer else {
        unreachable!()
    };
    let Cred::Cookie(session) = &w.admin else {
        unreachable!()
    };
    let auth = format!("Bearer {token}");
    let cookie = format!("rsp_session={session}");
    let r =
        w.h.call_with(
            Method::PUT,
            &format!("/api/apps/{}", w.app),
            &Cred::None,
            Some(json!({ "name": "By token" })),
            &[
                ("authorization", &auth),
                ("cookie", &cookie),
                ("sec-fetch-site", "cross-site"),
            ],
        )
        .await;
    assert_eq!(r.expect(StatusCode::OK)["app"]["name"], "By token");
}

#[tokio::test]
async fn cross_origin_login_is_refused() {
    let h = Harness::new().await;
    let audit_before = h.state.store.list_audit(usize::MAX).unwrap().len();
    let body = json!({ "username": "admin", "password": common::ADMIN_PASSWORD });
    for headers in [
        &[("sec-fetch-site", "cross-site")][..],
        &[("origin", "http://evil.example")],
        &[("origin", "null")],
    ] {
        let mut all = vec![("x-forwarded-host", HOST)];
        all.extend_from_slice(headers);
        let r = h
            .call_with(
                Method::POST,
                "/api/auth/login",
                &Cred::None,
                Some(body.clone()),
                &all,
            )
            .await;
        expect_refused(&r, &format!("login with {headers:?}"));
        assert!(common::session_from(&r.headers).is_none(), "no session set");
    }
    // No session was made, no login recorded.
    assert_eq!(
        h.state.store.list_audit(usize::MAX).unwrap().len(),
        audit_before
    );

    for headers in [
        &[("sec-fetch-site", "same-origin")][..],
        &[("origin", OWN_ORIGIN)],
        &[],
    ] {
        let mut all = vec![("x-forwarded-host", HOST)];
        all.extend_from_slice(headers);
        let r = h
            .call_with(
                Method::POST,
                "/api/auth/login",
                &Cred::None,
                Some(body.clone()),
                &all,
            )
            .await;
        r.expect(StatusCode::OK);
        assert!(common::session_from(&r.headers).is_some());
    }
}
