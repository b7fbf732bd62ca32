//! Admin UI foundation and account pages, rendered through the real router over a real
//! redb store in a temp dir: layout, login/logout and `next`, CSRF, security headers,
//! static assets, partial vs full pages, escaping, tokens, profile, users, audit.

mod common;

use axum::http::{header, Method, StatusCode};
use serde_json::json;

use common::ui::{csrf_of, location, UiSession};
use common::{Cred, Harness, ADMIN_PASSWORD, USER_PASSWORD};

const XSS: &str = "<script>alert(1)</script>";
const XSS_ESCAPED: &str = "&#60;script&#62;alert(1)&#60;/script&#62;";

fn has_escaped(html: &str) -> bool {
    // askama escapes < and > as &#60; &#62; (older versions: &lt; &gt;).
    html.contains(XSS_ESCAPED) || html.contains("&lt;script&gt;alert(1)&lt;/script&gt;")
}

#[tokio::test]
async fn logged_out_pages_redirect_to_login_with_next() {
    let h = Harness::new().await;
    for (path, want) in [
        ("/", "/login"),
        ("/tokens", "/login?next=%2Ftokens"),
        ("/settings?x=1", "/login?next=%2Fsettings%3Fx%3D1"),
        ("/users", "/login?next=%2Fusers"),
    ] {
        let r = h.ui_get(&Cred::None, path, false).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "{path}");
        assert_eq!(location(&r), Some(want), "{path}");
    }
    // htmx gets HX-Redirect (a whole-page navigation), back to the page it is on.
    let r = Harness::request(Method::GET, "/tokens", &Cred::None)
        .header("hx-request", "true")
        .header("hx-current-url", "http://localhost:8880/settings")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = h.send(r).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        r.headers.get("hx-redirect").unwrap(),
        "/login?next=%2Fsettings"
    );
}

#[tokio::test]
async fn login_form_logs_in_and_goes_to_next_only_if_local() {
    let h = Harness::new().await;
    let page = h.ui_get(&Cred::None, "/login?next=/tokens", false).await;
    assert_eq!(page.status, StatusCode::OK);
    for hook in [
        "id=\"login-form\"",
        "name=\"username\"",
        "name=\"password\"",
        "id=\"login-submit\"",
    ] {
        assert!(page.text.contains(hook), "{hook} missing");
    }
    assert!(page.text.contains("<title>Log in — rserve-proxy</title>"));
    assert!(page.text.contains("value=\"/tokens\""));

    let r = h.ui_login_attempt("admin", ADMIN_PASSWORD, "/tokens").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), Some("/tokens"));
    let set: Vec<_> = r.headers.get_all(header::SET_COOKIE).iter().collect();
    assert!(set
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("rsp_session=")));
    assert!(set.iter().any(|c| c.to_str().unwrap().contains("HttpOnly")));

    for evil in [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "/\t/evil.example",
        "evil",
    ] {
        let r = h.ui_login_attempt("admin", ADMIN_PASSWORD, evil).await;
        assert_eq!(r.status, StatusCode::SEE_OTHER);
        assert_eq!(
            location(&r),
            Some("/"),
            "next {evil:?} must not be followed"
        );
    }
    // The login page itself refuses the same `next` for someone already logged in.
    let admin = h.ui_admin().await;
    let r = admin.get(&h, "/login?next=//evil.example").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), Some("/"));
    let r = admin.get(&h, "/login?next=/settings").await;
    assert_eq!(location(&r), Some("/settings"));
}

#[tokio::test]
async fn login_errors_show_inline_and_rate_limit_says_so() {
    let h = Harness::with_config(|c| c.login_attempts_per_minute = 3).await;
    let form = h.ui_get(&Cred::None, "/login", false).await;
    let cookie = form
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = csrf_of(&form.text).unwrap();
    let attempt = |pw: &'static str| {
        let cookie = cookie.clone();
        let token = token.clone();
        let h = &h;
        async move {
            let req = axum::http::Request::builder()
                .method(Method::POST)
                .uri("/login")
                .header("x-forwarded-for", "192.0.2.77")
                .header("sec-fetch-site", "same-origin")
                .header(header::COOKIE, cookie)
                .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(axum::body::Body::from(format!(
                    "csrf={token}&username=admin&password={pw}&next=%2F"
                )))
                .unwrap();
            h.send(req).await
        }
    };
    let r = attempt("wrong-password").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(r.text.contains("id=\"login-error\""));
    assert!(r.text.contains("Wrong username or password."));
    assert!(r.text.contains("value=\"admin\""), "username kept");
    attempt("wrong-password").await;
    attempt("wrong-password").await;
    let r = attempt("wrong-password").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(r.text.contains("Too many login attempts"), "{}", r.text);
    assert!(r.headers.get(header::RETRY_AFTER).is_some());
}

#[tokio::test]
async fn login_needs_its_csrf_token() {
    let h = Harness::new().await;
    // No login cookie, no token: refused, no session.
    let r = h
        .ui_post(
            &Cred::None,
            "/login",
            &[("username", "admin"), ("password", ADMIN_PASSWORD)],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(common::session_from(&r.headers).is_none());
    // Cross-site login form: refused by the Fetch-Metadata check too.
    let r = h
        .ui_post(
            &Cred::None,
            "/login",
            &[("username", "admin"), ("password", ADMIN_PASSWORD)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn layout_full_page_and_htmx_partial() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let full = admin.get(&h, "/tokens").await;
    assert_eq!(full.status, StatusCode::OK);
    let t = &full.text;
    assert!(t.starts_with("<!doctype html>"));
    assert!(t.contains("<title>API tokens — rserve-proxy</title>"));
    for hook in [
        "id=\"sidebar\"",
        "id=\"topbar\"",
        "id=\"current-user\"",
        "id=\"logout\"",
        "id=\"menu-toggle\"",
        "id=\"flash\"",
        "href=\"/users\"",
        "<h1>API tokens</h1>",
    ] {
        assert!(t.contains(hook), "{hook} missing");
    }
    assert!(t.contains(&format!(
        "hx-headers='{{\"X-CSRF-Token\": \"{}\"}}'",
        admin.csrf
    )));
    assert!(t.contains("\"includeIndicatorStyles\":false"));
    assert!(!t.contains(" style="), "no inline styles");
    assert!(!t.contains("<script>"), "no inline scripts");
    assert_eq!(full.headers.get(header::CACHE_CONTROL).unwrap(), "no-store");

    let part = admin.get_hx(&h, "/tokens").await;
    assert_eq!(part.status, StatusCode::OK);
    assert!(!part.text.contains("<html"));
    assert!(!part.text.contains("id=\"sidebar\""));
    assert!(part.text.contains("<h1>API tokens</h1>"));
    assert!(part.text.contains("id=\"tokens-table\""));

    // A non-admin has no users link.
    let admin_cred = admin.cred.clone();
    let (bob, _) = h.ui_user(&admin_cred, "bob").await;
    let page = bob.get(&h, "/tokens").await;
    assert!(!page.text.contains("href=\"/users\""));
    assert!(page.text.contains(">bob</span>"));
}

#[tokio::test]
async fn security_headers_on_pages_not_on_api() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    for path in ["/login", "/tokens", "/no-such-page"] {
        let r = h.ui_get(&admin.cred, path, false).await;
        let csp = r
            .headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("CSP on {path}"))
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"));
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"));
        assert_eq!(r.headers.get("x-content-type-options").unwrap(), "nosniff");
        assert_eq!(r.headers.get("referrer-policy").unwrap(), "same-origin");
        assert_eq!(r.headers.get("x-frame-options").unwrap(), "DENY");
    }
    let r = h.call(Method::GET, "/api/health", &Cred::None, None).await;
    assert!(r.headers.get("content-security-policy").is_none());
}

#[tokio::test]
async fn not_found_page_and_api_404_stays_json() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = admin.get(&h, "/tokens/nope/revoke").await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = admin.get(&h, "/no-such-page").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(
        r.text.contains("id=\"sidebar\""),
        "404 in the layout when logged in"
    );
    assert!(r.text.contains("<h1>Not found</h1>"));
    let r = h.ui_get(&Cred::None, "/no-such-page", false).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("id=\"sidebar\""));
    let r = h.call(Method::GET, "/api/nope", &Cred::None, None).await;
    r.expect_error(StatusCode::NOT_FOUND, "Not found");
}

#[tokio::test]
async fn static_assets_hashed_immutable_typed() {
    let h = Harness::new().await;
    let page = h.ui_get(&Cred::None, "/login", false).await;
    let url = |prefix: &str| {
        let at = page
            .text
            .find(prefix)
            .unwrap_or_else(|| panic!("{prefix} in page"));
        let rest = &page.text[at..];
        rest[..rest.find('"').unwrap()].to_string()
    };
    for (prefix, ctype, min_len) in [
        ("/static/app.", "text/css; charset=utf-8", 1000),
        ("/static/htmx.", "text/javascript; charset=utf-8", 40_000),
        ("/static/favicon.", "image/svg+xml", 100),
    ] {
        let u = url(prefix);
        // name.<8 hex>.ext
        let hash = u.trim_start_matches(prefix).split('.').next().unwrap();
        assert_eq!(hash.len(), 8, "{u}");
        assert!(hash.bytes().all(|b| b.is_ascii_hexdigit()), "{u}");
        let r = h.ui_get(&Cred::None, &u, false).await;
        assert_eq!(r.status, StatusCode::OK, "{u}");
        assert_eq!(r.headers.get(header::CONTENT_TYPE).unwrap(), ctype);
        assert_eq!(
            r.headers.get(header::CACHE_CONTROL).unwrap(),
            "public, max-age=31536000, immutable"
        );
        assert!(r.text.len() >= min_len, "{u}: {} bytes", r.text.len());
    }
    assert!(
        h.ui_get(&Cred::None, "/static/htmx.js", false)
            .await
            .text
            .len()
            < 200
    );
    for bad in [
        "/static/htmx.js",
        "/static/app.00000000.css",
        "/static/nope",
    ] {
        let r = h.ui_get(&Cred::None, bad, false).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }
    // The page loads htmx and our JS by URL only (CSP: no inline script).
    assert!(page.text.contains(&format!(
        "<script src=\"{}\" defer></script>",
        url("/static/htmx.")
    )));
}

#[tokio::test]
async fn csrf_missing_or_foreign_token_is_403_and_changes_nothing() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (bob, _) = h.ui_user(&admin.cred, "bob").await;

    let r = admin
        .post_without_csrf(&h, "/tokens", &[("name", "t1")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.text.contains("Reload the page"), "{}", r.text);
    let r = admin
        .post_with_token(&h, "/tokens", &bob.csrf, &[("name", "t2")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // htmx with a wrong header token.
    let r = h
        .ui_post(
            &admin.cred,
            "/tokens",
            &[("name", "t3")],
            &[("x-csrf-token", &bob.csrf), ("hx-request", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    // Right token, cross-site: still refused.
    let r = h
        .ui_post(
            &admin.cred,
            "/tokens",
            &[("csrf", &admin.csrf), ("name", "t4")],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let tokens = h
        .call(Method::GET, "/api/auth/tokens", &admin.cred, None)
        .await;
    assert_eq!(tokens.body["tokens"], json!([]), "nothing was created");
    // Logout without the token does not end the session.
    let r = admin.post_without_csrf(&h, "/logout", &[]).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.get(&h, "/tokens").await.status, StatusCode::OK);

    // With the token (form field or htmx header) it works.
    let r = admin.post(&h, "/tokens", &[("name", "ok")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = admin.post_hx(&h, "/tokens", &[("name", "ok2")]).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}

#[tokio::test]
async fn tokens_create_show_once_list_revoke() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = admin
        .post(&h, "/tokens", &[("name", XSS), ("expires_in_days", "30")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let at = r.text.find("id=\"new-token\">").expect("raw token shown");
    let raw: String = r.text[at + "id=\"new-token\">".len()..]
        .chars()
        .take_while(|c| *c != '<')
        .collect();
    assert!(raw.starts_with("rsp_"), "{raw}");
    assert!(r.text.contains("copy-btn"));
    assert!(has_escaped(&r.text), "token name escaped");
    assert!(!r.text.contains(XSS));
    // The raw token works against the API, and is never shown again.
    let me = h
        .call(
            Method::GET,
            "/api/auth/me",
            &Cred::Bearer(raw.clone()),
            None,
        )
        .await;
    assert_eq!(me.status, StatusCode::OK);
    let list = admin.get(&h, "/tokens").await;
    assert!(!list.text.contains(&raw));
    assert!(!list.text.contains("id=\"new-token\""));
    assert!(list.text.contains(&raw[..12]), "prefix listed");
    assert!(list.text.contains("UTC"), "expiry shown");
    let id_at = list.text.find("data-token-id=\"").unwrap() + "data-token-id=\"".len();
    let id = &list.text[id_at..id_at + 36];

    // Invalid input: errors next to the fields, nothing created.
    let r = admin
        .post(&h, "/tokens", &[("name", "x"), ("expires_in_days", "soon")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .text
        .contains("data-field=\"expires_in_days\">Enter a whole number"));
    let r = admin
        .post(&h, "/tokens", &[("name", ""), ("expires_in_days", "")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text.contains("data-field=\"name\">Name must be"),
        "{}",
        r.text
    );
    let r = admin
        .post(&h, "/tokens", &[("name", "y"), ("expires_in_days", "0")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .text
        .contains("data-field=\"expires_in_days\">Expiry must be"));

    // Someone else cannot revoke it (404 page); the owner can.
    let (bob, _) = h.ui_user(&admin.cred, "bob").await;
    let r = bob.post(&h, &format!("/tokens/{id}/revoke"), &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = admin.post(&h, &format!("/tokens/{id}/revoke"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), Some("/tokens?done=token-revoked"));
    let list = admin.get(&h, "/tokens?done=token-revoked").await;
    assert!(list.text.contains("Token revoked."));
    assert!(!list.text.contains(id));
    let me = h
        .call(Method::GET, "/api/auth/me", &Cred::Bearer(raw), None)
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);
    let r = admin.post(&h, "/tokens/not-a-uuid/revoke", &[]).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn profile_change_password() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (bob, _) = h.ui_user(&admin.cred, "bob").await;
    let page = bob.get(&h, "/settings").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("id=\"password-form\""));
    assert!(page.text.contains("<h1>Profile</h1>"));

    let r = bob
        .post(
            &h,
            "/settings/password",
            &[
                ("current_password", USER_PASSWORD),
                ("new_password", "a-new-password-1"),
                ("confirm_password", "a-different-one"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r
        .text
        .contains("data-field=\"confirm_password\">The two new passwords differ"));
    let r = bob
        .post(
            &h,
            "/settings/password",
            &[
                ("current_password", "not-it-at-all"),
                ("new_password", "a-new-password-1"),
                ("confirm_password", "a-new-password-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r
        .text
        .contains("data-field=\"current_password\">The current password is not right."));
    let r = bob
        .post(
            &h,
            "/settings/password",
            &[
                ("current_password", USER_PASSWORD),
                ("new_password", "short"),
                ("confirm_password", "short"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(
        r.text
            .contains("data-field=\"new_password\">The new password must be 8"),
        "{}",
        r.text
    );

    let r = bob
        .post(
            &h,
            "/settings/password",
            &[
                ("current_password", USER_PASSWORD),
                ("new_password", "a-new-password-1"),
                ("confirm_password", "a-new-password-1"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert_eq!(location(&r), Some("/settings?done=password-changed"));
    let page = bob.get(&h, "/settings?done=password-changed").await;
    assert!(page.text.contains("Password changed."));
    // The new password logs in; the old one does not.
    let r = h.ui_login_attempt("bob", "a-new-password-1", "/").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = h.ui_login_attempt("bob", USER_PASSWORD, "/").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let r = admin.post(&h, "/logout", &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    assert_eq!(location(&r), Some("/login"));
    let cleared = r
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("rsp_session=;"));
    assert!(cleared);
    let r = admin.get(&h, "/tokens").await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn users_page_admin_only() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (bob, bob_id) = h.ui_user(&admin.cred, "bob").await;
    for path in ["/users", "/settings/audit"] {
        let r = bob.get(&h, path).await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{path}");
        assert!(r.text.contains("id=\"sidebar\""), "403 page in the layout");
        assert!(r.text.contains("<h1>Access denied</h1>"));
    }
    let r = bob
        .post(
            &h,
            "/users",
            &[
                ("username", "eve"),
                ("password", "eve-password-1"),
                ("role", "admin"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = bob
        .post(&h, &format!("/users/{bob_id}/role"), &[("role", "admin")])
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let me = h.call(Method::GET, "/api/auth/me", &bob.cred, None).await;
    assert_eq!(me.body["user"]["role"], "user");
    let users = h.call(Method::GET, "/api/users", &admin.cred, None).await;
    assert_eq!(
        users.body["users"].as_array().unwrap().len(),
        2,
        "eve not created"
    );
}

#[tokio::test]
async fn users_create_role_reset_delete() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let page = admin.get(&h, "/users").await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("id=\"users-table\"") && page.text.contains("id=\"user-form\""));

    // Validation next to the field; a name with markup is refused by the API rules.
    let r = admin
        .post(
            &h,
            "/users",
            &[
                ("username", XSS),
                ("password", "carol-password-1"),
                ("role", "user"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.text.contains("data-field=\"username\">username must be"));
    assert!(
        has_escaped(&r.text) && !r.text.contains(XSS),
        "kept value escaped"
    );

    let r = admin
        .post(
            &h,
            "/users",
            &[
                ("username", "carol"),
                ("password", "carol-password-1"),
                ("role", "user"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    let r = admin
        .post_hx(
            &h,
            "/users",
            &[
                ("username", "carol"),
                ("password", "carol-password-1"),
                ("role", "user"),
            ],
        )
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT);
    let page = admin.get(&h, "/users").await;
    let at = page.text.find("data-username=\"carol\"").unwrap();
    let row_start = page.text[..at].rfind("data-user-id=\"").unwrap() + "data-user-id=\"".len();
    let carol = page.text[row_start..row_start + 36].to_string();

    let r = admin
        .post(&h, &format!("/users/{carol}/role"), &[("role", "admin")])
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = admin
        .post(
            &h,
            &format!("/users/{carol}/password"),
            &[("password", "carol-new-pass-1")],
        )
        .await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let carol_ui = h.ui_login("carol", "carol-new-pass-1").await;
    assert_eq!(
        carol_ui.get(&h, "/users").await.status,
        StatusCode::OK,
        "carol is admin now"
    );

    // The last admin cannot be demoted or deleted: the page says why.
    let admin_id = h.me(&admin.cred).await;
    let r = admin.post(&h, &format!("/users/{carol}/delete"), &[]).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER);
    let r = admin
        .post(&h, &format!("/users/{admin_id}/role"), &[("role", "user")])
        .await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text);
    assert!(r.text.contains("last admin"), "{}", r.text);
    let users = h.call(Method::GET, "/api/users", &admin.cred, None).await;
    assert_eq!(users.body["users"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn audit_log_paged_newest_first() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    for i in 0..3 {
        admin
            .post(&h, "/tokens", &[("name", &format!("t{i}"))])
            .await;
    }
    let page = admin.get(&h, "/settings/audit?limit=2").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.text);
    assert!(page.text.contains("id=\"audit-table\""));
    assert_eq!(page.text.matches("<tr data-seq=").count(), 2);
    assert!(page.text.contains("token.create"));
    let next = page
        .text
        .find("id=\"audit-older\"")
        .expect("a link to older entries");
    let href_at = page.text[next..].find("href=\"").unwrap() + next + 6;
    let href: String = page.text[href_at..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    let href = href.replace("&amp;", "&").replace("&#38;", "&");
    let older = admin.get(&h, &href).await;
    assert_eq!(older.status, StatusCode::OK, "{href}");
    assert_eq!(older.text.matches("<tr data-seq=").count(), 2);
    let r = admin.get(&h, "/settings/audit?limit=zero").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let _ = UiSession::clone(&admin);
}

#[tokio::test]
async fn csrf_token_in_a_multipart_body() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (bob, _) = h.ui_user(&admin.cred, "bob").await;
    let post = |token: &str| {
        let body = format!(
            "--b0\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{token}\r\n\
             --b0\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.R\"\r\n\r\n1\r\n--b0--\r\n"
        );
        Harness::request(Method::POST, "/tokens", &admin.cred)
            .header("sec-fetch-site", "same-origin")
            .header(header::CONTENT_TYPE, "multipart/form-data; boundary=b0")
            .body(axum::body::Body::from(body))
            .unwrap()
    };
    let r = h.send(post(&bob.csrf)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "another session's token");
    // The right token passes the guard (the tokens form itself wants urlencoded: 415).
    let r = h.send(post(&admin.csrf)).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{}", r.text);
}

#[tokio::test]
async fn htmx_flash_out_of_band_and_boosted_full_page() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    // A page change (target #main) clears the flash; a message fills it.
    let r = h
        .ui_post(
            &admin.cred,
            "/tokens",
            &[("name", "x")],
            &[
                ("x-csrf-token", &admin.csrf),
                ("hx-request", "true"),
                ("hx-target", "main"),
            ],
        )
        .await;
    assert!(r.text.starts_with("<div id=\"flash\""), "{}", r.text);
    assert!(r.text.contains("hx-swap-oob=\"true\""));
    assert!(r.text.contains("Token created."));
    let mut req = Harness::request(Method::GET, "/tokens", &admin.cred);
    for (k, v) in [("hx-request", "true"), ("hx-target", "main")] {
        req = req.header(k, v);
    }
    let r = h.send(req.body(axum::body::Body::empty()).unwrap()).await;
    assert!(r.text.starts_with("<div id=\"flash\""));
    // A fragment request for another target leaves the flash alone.
    let r = admin.get_hx(&h, "/tokens").await;
    assert!(!r.text.contains("id=\"flash\""));
    // Boosted navigation swaps the whole body: it gets the whole page.
    let req = Harness::request(Method::GET, "/tokens", &admin.cred)
        .header("hx-request", "true")
        .header("hx-boosted", "true")
        .body(axum::body::Body::empty())
        .unwrap();
    let r = h.send(req).await;
    assert!(r.text.starts_with("<!doctype html>"));
}

#[tokio::test]
async fn static_assets_gzip_when_accepted() {
    use std::io::Read;
    let h = Harness::new().await;
    let page = h.ui_get(&Cred::None, "/login", false).await;
    let at = page.text.find("/static/htmx.").unwrap();
    let url: String = page.text[at..].chars().take_while(|c| *c != '"').collect();
    let plain = h.ui_get(&Cred::None, &url, false).await;
    assert!(plain.headers.get(header::CONTENT_ENCODING).is_none());
    let req = Harness::request(Method::GET, &url, &Cred::None)
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br")
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(h.router.clone(), req)
        .await
        .unwrap();
    assert_eq!(resp.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(resp.headers()[header::VARY], "accept-encoding");
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(
        bytes.len() < plain.text.len() / 2,
        "{} compressed",
        bytes.len()
    );
    let mut out = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut out)
        .unwrap();
    assert_eq!(out, plain.text);
}

#[tokio::test]
async fn login_works_with_the_cookie_of_an_ended_session() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let Cred::Cookie(old) = admin.cred.clone() else {
        unreachable!()
    };
    assert_eq!(
        admin.post(&h, "/logout", &[]).await.status,
        StatusCode::SEE_OTHER
    );
    // The browser still sends the old session cookie with the login form.
    let form = h.ui_get(&admin.cred, "/login", false).await;
    assert_eq!(
        form.status,
        StatusCode::OK,
        "an ended session sees the form"
    );
    let login_cookie = form
        .headers
        .get(header::SET_COOKIE)
        .unwrap()
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let token = csrf_of(&form.text).unwrap();
    let req = axum::http::Request::builder()
        .method(Method::POST)
        .uri("/login")
        .header("x-forwarded-for", "192.0.2.90")
        .header("sec-fetch-site", "same-origin")
        .header(header::COOKIE, format!("rsp_session={old}; {login_cookie}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(axum::body::Body::from(format!(
            "csrf={token}&username=admin&password={ADMIN_PASSWORD}&next=%2F"
        )))
        .unwrap();
    let r = h.send(req).await;
    assert_eq!(r.status, StatusCode::SEE_OTHER, "{}", r.text);
    assert!(common::session_from(&r.headers).is_some());
    // A session's token is no login token.
    let r = h
        .ui_post(
            &admin.cred,
            "/login",
            &[
                ("csrf", &admin.csrf),
                ("username", "admin"),
                ("password", ADMIN_PASSWORD),
            ],
            &[],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn htmx_errors_are_fragments() {
    let h = Harness::new().await;
    let admin = h.ui_admin().await;
    let (bob, _) = h.ui_user(&admin.cred, "bob").await;
    let r = bob.get_hx(&h, "/users").await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.text.contains("<html") && !r.text.contains("id=\"sidebar\""));
    assert!(r.text.contains("<h1>Access denied</h1>"));
    // CSRF refusal to htmx: a fragment too, nothing changed.
    let r = h
        .ui_post(
            &bob.cred,
            "/tokens",
            &[("name", "x")],
            &[("hx-request", "true")],
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(!r.text.contains("<html"));
    assert!(r.text.contains("Reload the page"));
    let tokens = h
        .call(Method::GET, "/api/auth/tokens", &bob.cred, None)
        .await;
    assert_eq!(tokens.body["tokens"], json!([]));
}
