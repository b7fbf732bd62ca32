//! `trusted_proxies` with the real binary: `X-Forwarded-*` from an untrusted peer are
//! ignored (the login rate limit keys on the peer), from a trusted one they count
//! (rate limit per forwarded client, `Secure` cookie from `X-Forwarded-Proto`).

mod support;

use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::json;
use support::Server;

const PASSWORD: &str = "trusted-proxies-pw";

fn login_from(
    c: &Client,
    s: &Server,
    xff: &str,
    proto: Option<&str>,
    pw: &str,
) -> reqwest::blocking::Response {
    let mut req = c
        .post(s.url("/api/auth/login"))
        .header("x-forwarded-for", xff)
        .json(&json!({"username": "admin", "password": pw}));
    if let Some(p) = proto {
        req = req.header("x-forwarded-proto", p);
    }
    req.send().unwrap()
}

fn secure_cookie(r: &reqwest::blocking::Response) -> bool {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .any(|v| v.to_str().unwrap().contains("; Secure"))
}

fn start(dir: &std::path::Path, trusted: &str) -> Server {
    Server::start(
        dir,
        &[
            ("RSP_ADMIN_PASSWORD", PASSWORD),
            ("RSP_LOGIN_ATTEMPTS_PER_MINUTE", "2"),
            ("RSP_TRUSTED_PROXIES", trusted),
        ],
    )
}

#[test]
fn spoofed_forwarding_headers_from_an_untrusted_peer_are_ignored() {
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.1 is not in the list.
    let s = start(dir.path(), "10.0.0.0/8");
    let c = support::client();
    for _ in 0..2 {
        let st = login_from(&c, &s, "198.51.100.1", None, "wrong-password").status();
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    // Another claimed address does not get a fresh budget: the limit is 127.0.0.1's.
    let st = login_from(&c, &s, "198.51.100.2", None, "wrong-password").status();
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS, "{}", s.log());

    // A claimed https does not make the cookie Secure over plain http.
    let dir2 = tempfile::tempdir().unwrap();
    let s2 = start(dir2.path(), "");
    let r = login_from(
        &support::client(),
        &s2,
        "198.51.100.3",
        Some("https"),
        PASSWORD,
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert!(!secure_cookie(&r), "{:?}", r.headers());
}

#[test]
fn a_trusted_peer_forwards_the_client_address_and_scheme() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(dir.path(), "127.0.0.0/8");
    let c = support::client();
    for _ in 0..2 {
        let st = login_from(&c, &s, "198.51.100.1", None, "wrong-password").status();
        assert_eq!(st, StatusCode::UNAUTHORIZED);
    }
    let st = login_from(&c, &s, "198.51.100.1", None, "wrong-password").status();
    assert_eq!(st, StatusCode::TOO_MANY_REQUESTS);
    // A different client behind the same proxy has its own budget; the right-most
    // untrusted address counts (the left one is that client's own claim).
    let st = login_from(&c, &s, "198.51.100.1, 198.51.100.2", None, "wrong-password").status();
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{}", s.log());

    // X-Forwarded-Proto: https from the trusted proxy → the session cookie is Secure.
    let r = login_from(
        &support::client(),
        &s,
        "198.51.100.3",
        Some("https"),
        PASSWORD,
    );
    assert_eq!(r.status(), StatusCode::OK);
    assert!(secure_cookie(&r), "{:?}", r.headers());
}
