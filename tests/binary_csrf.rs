//! CSRF and credential rules through the real binary: the browser's `Host` reaches the
//! control plane as the proxy's `X-Forwarded-Host`, so an `Origin` naming the server
//! passes and any other is refused; `admin reset-password` revokes API tokens.

mod support;

use reqwest::blocking::{Client, RequestBuilder};
use serde_json::{json, Value};
use support::{cli, client, json_of, login, Server};

const PASSWORD: &str = "csrf-test-password";

fn app_count(c: &Client, s: &Server) -> usize {
    let (st, list) = json_of(c.get(s.url("/api/apps")).send().unwrap());
    assert_eq!(st, 200, "{list}");
    list["apps"].as_array().unwrap().len()
}

fn create_app(c: &Client, s: &Server, slug: &str) -> RequestBuilder {
    c.post(s.url("/api/apps"))
        .json(&json!({ "name": slug, "slug": slug }))
}

#[track_caller]
fn expect_refused(st: reqwest::StatusCode, body: &Value, what: &str) {
    assert_eq!(st, 403, "{what}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("Cross-origin request refused: "),
        "{what}: {error}"
    );
}

#[test]
fn cross_origin_cookie_requests_are_refused_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let c = client();
    assert_eq!(login(&c, &s, PASSWORD), 200);

    let forged = [
        ("origin", "http://evil.example".to_string()),
        ("origin", "null".to_string()),
        ("sec-fetch-site", "cross-site".to_string()),
        // The server's own address on another port is another origin.
        ("origin", "http://127.0.0.1:1".to_string()),
    ];
    for (name, value) in &forged {
        let (st, body) = json_of(
            create_app(&c, &s, "forged-app")
                .header(*name, value)
                .send()
                .unwrap(),
        );
        expect_refused(st, &body, &format!("{name}: {value}"));
    }
    assert_eq!(app_count(&c, &s), 0, "a refused request created an app");

    // What the browser sends from our own page: Origin is the address it used.
    let own = s.base.clone();
    for (slug, headers) in [
        ("own-origin", vec![("origin", own.as_str())]),
        ("same-origin", vec![("sec-fetch-site", "same-origin")]),
        ("curl-jar", vec![]),
    ] {
        let mut req = create_app(&c, &s, slug);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let (st, body) = json_of(req.send().unwrap());
        assert_eq!(st, 201, "{slug}: {body}");
    }
    assert_eq!(app_count(&c, &s), 3);

    // A bearer token from anywhere is fine: no cookie credential is used.
    let (st, token) = json_of(
        c.post(s.url("/api/auth/tokens"))
            .json(&json!({ "name": "script" }))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{token}");
    let raw = token["token"]["token"].as_str().unwrap().to_string();
    let bare = Client::new();
    let (st, body) = json_of(
        create_app(&bare, &s, "by-token")
            .bearer_auth(&raw)
            .header("origin", "http://evil.example")
            .header("sec-fetch-site", "cross-site")
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{body}");

    // Login CSRF: a cross-site login form is refused and sets no cookie.
    let r = bare
        .post(s.url("/api/auth/login"))
        .header("origin", "http://evil.example")
        .json(&json!({ "username": "admin", "password": PASSWORD }))
        .send()
        .unwrap();
    assert!(r.headers().get("set-cookie").is_none());
    let (st, body) = json_of(r);
    expect_refused(st, &body, "login");
}

#[test]
fn cli_password_reset_ends_sessions_and_revokes_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let c = client();
    assert_eq!(login(&c, &s, PASSWORD), 200);
    let (st, token) = json_of(
        c.post(s.url("/api/auth/tokens"))
            .json(&json!({ "name": "ci" }))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{token}");
    let raw = token["token"]["token"].as_str().unwrap().to_string();
    let bare = Client::new();
    let me = |s: &Server| {
        bare.get(s.url("/api/auth/me"))
            .bearer_auth(&raw)
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(me(&s), 200);
    s.stop();

    let out = cli(
        dir.path(),
        &[
            "admin",
            "reset-password",
            "--username",
            "admin",
            "--password-stdin",
        ],
        Some("reset-from-cli-1\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("API tokens are revoked"), "{stdout}");

    let s = Server::start(dir.path(), &[]);
    assert_eq!(me(&s), 401, "token revoked by the reset");
    let st = c.get(s.url("/api/auth/me")).send().unwrap().status();
    assert_eq!(st, 401, "session ended by the reset");
    assert_eq!(login(&c, &s, "reset-from-cli-1"), 200);
}
