//! Credential isolation through the real binary, with a real login cookie and a real
//! API token: an app (a static route to a recording backend) never receives them over
//! HTTP or a WebSocket upgrade, cannot replace the admin's session with one of its
//! own, and a path climbing out of the app is a request for the admin plane. Also
//! `admin_host` as configured through the environment.

mod common_dataplane;
mod support;

use std::net::SocketAddr;

use common_dataplane::backend::{Backend, Seen};
use common_dataplane::{raw_http, ws_request};
use reqwest::header::{AUTHORIZATION, HOST, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{client, Server};

const PASSWORD: &str = "isolation-password";

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

fn addr_of(s: &Server) -> SocketAddr {
    s.base.trim_start_matches("http://").parse().unwrap()
}

/// Neither the admin's session nor the token; the app's own cookie yes.
fn assert_clean(seen: &Seen, session: &str, token: &str) {
    let all = format!("{:?}", seen.headers);
    assert!(
        !all.contains(session),
        "session cookie reached the app: {all}"
    );
    assert!(!all.contains(token), "token reached the app: {all}");
    assert!(!all.contains("rsp_session"), "{all}");
    assert_eq!(seen.header("authorization"), None, "{all}");
    assert_eq!(seen.header("cookie"), Some("app=1"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_session_and_token_never_reach_an_app() {
    let b = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let route = format!("iso={}", b.addr);
    let seen = b.record.clone();
    let (session, token, statuses) = blocking(move || {
        let s = Server::start(
            dir.path(),
            &[
                ("RSP_ADMIN_PASSWORD", PASSWORD),
                ("RSP_STATIC_ROUTES", &route),
            ],
        );
        let c = client();
        let r = c
            .post(s.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": PASSWORD}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let session = r.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .strip_prefix("rsp_session=")
            .and_then(|v| v.split(';').next())
            .unwrap()
            .to_string();
        let r = c
            .post(s.url("/api/auth/tokens"))
            .json(&json!({"name": "isolation"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let token = r.json::<Value>().unwrap()["token"]["token"]
            .as_str()
            .unwrap()
            .to_string();

        // The app tries to plant a session; only its own cookie gets through.
        let r = c
            .get(s.url("/iso/plant"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let set: Vec<_> = r.headers().get_all(SET_COOKIE).iter().collect();
        assert_eq!(set, ["app=1; Path=/"], "{:?}", r.headers());
        let csp: Vec<_> = r
            .headers()
            .get_all("content-security-policy")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(csp.iter().any(|v| v.starts_with("sandbox ")), "{csp:?}");
        // The cookie jar now sends the session and app=1 together.
        let r = c
            .get(s.url("/iso/echo"))
            .header(AUTHORIZATION, format!("Bearer {token}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // The admin's session is still the admin's.
        let me = c.get(s.url("/api/auth/me")).send().unwrap();
        assert_eq!(me.status(), StatusCode::OK);

        // WebSocket upgrade with both credentials.
        let addr = addr_of(&s);
        let extra =
            format!("Cookie: rsp_session={session}; app=1\r\nAuthorization: Bearer {token}\r\n");
        let ws = raw_http(addr, &ws_request("/iso/plant-ws", &extra));
        assert_eq!(ws.status, 101);
        assert!(
            !format!("{:?}", ws.headers).contains("rsp_session"),
            "{:?}",
            ws.headers
        );

        // Climbing out of the app is the admin plane, with the admin's own rights.
        let mut statuses = Vec::new();
        for (path, cred) in [
            (
                "/iso/../api/users",
                format!("Cookie: rsp_session={session}\r\n"),
            ),
            (
                "/iso/%2e%2e/api/users",
                format!("Authorization: Bearer {token}\r\n"),
            ),
        ] {
            let req = format!(
                "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{cred}\r\n"
            );
            let r = raw_http(addr, req.as_bytes());
            assert!(r.json()["users"].is_array(), "{path}: {}", r.text());
            statuses.push(r.status);
        }
        // And an encoded slash is refused before any app sees it.
        let r = raw_http(
            addr,
            b"GET /iso/..%2f..%2fapi/users HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        );
        statuses.push(r.status);
        (session, token, statuses)
    })
    .await;
    assert_eq!(statuses, [200, 200, 400]);
    let seen = seen.seen.lock().unwrap().clone();
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/plant", "/echo", "/plant-ws"], "{paths:?}");
    // First request: no cookie of the app's yet.
    assert_eq!(seen[0].header("cookie"), None, "{:?}", seen[0]);
    assert_eq!(seen[0].header("authorization"), None);
    for s in &seen[1..] {
        assert_clean(s, &session, &token);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_host_from_the_environment() {
    let b = Backend::start("app").await;
    let dir = tempfile::tempdir().unwrap();
    let route = format!("iso={}", b.addr);
    let statuses = blocking(move || {
        let s = Server::start(
            dir.path(),
            &[
                ("RSP_ADMIN_PASSWORD", PASSWORD),
                ("RSP_STATIC_ROUTES", &route),
                ("RSP_ADMIN_HOST", "admin.test"),
            ],
        );
        let c = client();
        let get = |path: &str, host: &str| {
            c.get(s.url(path))
                .header(HOST, host)
                .send()
                .unwrap()
                .status()
                .as_u16()
        };
        [
            get("/api/health", "admin.test"),
            get("/api/health", "Admin.Test:80"),
            get("/api/health", "apps.test"),
            get("/iso/x", "apps.test"),
            get("/iso/x", "admin.test"),
        ]
    })
    .await;
    assert_eq!(statuses, [200, 200, 404, 200, 404]);
    assert_eq!(b.seen().len(), 1);
}
