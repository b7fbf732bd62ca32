//! Rendering-test helpers for the admin UI (through the real router, real redb):
//! log in through the login form, get pages (full or htmx partial), read the CSRF
//! token from a page, post forms with it.
//!
//! ```ignore
//! let h = Harness::new().await;
//! let admin = h.ui_admin().await;                 // logged in via POST /login
//! let page = admin.get(&h, "/tokens").await;      // full page
//! assert_eq!(page.status, StatusCode::OK);
//! let r = admin.post(&h, "/tokens", &[("name", "ci"), ("expires_in_days", "30")]).await;
//! let r = admin.post_without_csrf(&h, "/tokens", &[("name", "x")]).await; // → 403
//! ```

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, Request, StatusCode};

use super::{session_from, Cred, Harness, Reply, ADMIN_PASSWORD, USER_PASSWORD};

/// A browser's session: the cookie and the CSRF token its pages carry.
#[derive(Clone, Debug)]
pub struct UiSession {
    pub cred: Cred,
    pub csrf: String,
}

/// The value of the first `name="csrf"` hidden input in a page.
pub fn csrf_of(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf\" value=\"")?;
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    Some(rest[..rest.find('"')?].to_string())
}

/// The `Location` header of a redirect.
pub fn location(r: &Reply) -> Option<&str> {
    r.headers
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
}

/// A urlencoded form body.
pub fn form_body(fields: &[(&str, &str)]) -> String {
    let mut s = url_encoded(fields);
    if s.is_empty() {
        s.push('&');
    }
    s
}

fn url_encoded(fields: &[(&str, &str)]) -> String {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Harness {
    /// GET a page (`hx`: as htmx does, `HX-Request: true`).
    pub async fn ui_get(&self, cred: &Cred, path: &str, hx: bool) -> Reply {
        let mut b = Self::request(Method::GET, path, cred);
        if hx {
            b = b.header("hx-request", "true");
        }
        self.send(b.body(Body::empty()).unwrap()).await
    }

    /// POST a urlencoded form as a browser on our own page would (`Sec-Fetch-Site:
    /// same-origin`), with exactly these fields (add `("csrf", token)` yourself, or
    /// use [`UiSession::post`]). `extra` headers replace the defaults.
    pub async fn ui_post(
        &self,
        cred: &Cred,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&'static str, &str)],
    ) -> Reply {
        let mut b = Self::request(Method::POST, path, cred)
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header("sec-fetch-site", "same-origin");
        let h = b.headers_mut().unwrap();
        for (name, value) in extra {
            h.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        self.send(b.body(Body::from(form_body(fields))).unwrap())
            .await
    }

    /// Log in through the login form (GET /login for the login cookie and token, POST
    /// /login), then read the session's CSRF token from a page.
    pub async fn ui_login(&self, username: &str, password: &str) -> UiSession {
        let r = self.ui_login_attempt(username, password, "/").await;
        assert_eq!(r.status, StatusCode::SEE_OTHER, "login failed: {}", r.text);
        let cred = Cred::Cookie(session_from(&r.headers).expect("session cookie"));
        let page = self.ui_get(&cred, "/settings", false).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text);
        let csrf = csrf_of(&page.text).expect("a csrf field on /settings");
        UiSession { cred, csrf }
    }

    /// One login-form round trip (any outcome): the reply of POST /login.
    pub async fn ui_login_attempt(&self, username: &str, password: &str, next: &str) -> Reply {
        use std::sync::atomic::{AtomicU32, Ordering};
        // Each login from an address of its own: helpers never use up the rate limit.
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let ip = format!("203.0.{}.{}", (n / 250) % 250, n % 250 + 1);
        let form = self.ui_get(&Cred::None, "/login", false).await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.text);
        let cookie = form
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| v.strip_prefix("rsp_login_csrf="))
            .map(|v| v.split(';').next().unwrap_or("").to_string())
            .expect("login cookie");
        let token = csrf_of(&form.text).expect("csrf field on /login");
        let req = Request::builder()
            .method(Method::POST)
            .uri("/login")
            .header("x-forwarded-for", ip)
            .header("sec-fetch-site", "same-origin")
            .header(header::COOKIE, format!("rsp_login_csrf={cookie}"))
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form_body(&[
                ("csrf", &token),
                ("username", username),
                ("password", password),
                ("next", next),
            ])))
            .unwrap();
        self.send(req).await
    }

    pub async fn ui_admin(&self) -> UiSession {
        self.ui_login("admin", ADMIN_PASSWORD).await
    }

    /// Create a user through the API (as `admin`) and log them in through the form.
    pub async fn ui_user(&self, admin: &Cred, username: &str) -> (UiSession, String) {
        let (_, id) = self.user(admin, username).await;
        (self.ui_login(username, USER_PASSWORD).await, id)
    }
}

impl UiSession {
    /// A full page.
    pub async fn get(&self, h: &Harness, path: &str) -> Reply {
        h.ui_get(&self.cred, path, false).await
    }

    /// The htmx partial of a page.
    pub async fn get_hx(&self, h: &Harness, path: &str) -> Reply {
        h.ui_get(&self.cred, path, true).await
    }

    /// POST a form with this session's CSRF token added.
    pub async fn post(&self, h: &Harness, path: &str, fields: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        h.ui_post(&self.cred, path, &all, &[]).await
    }

    /// POST as htmx does: token in `X-CSRF-Token`, `HX-Request: true`.
    pub async fn post_hx(&self, h: &Harness, path: &str, fields: &[(&str, &str)]) -> Reply {
        h.ui_post(
            &self.cred,
            path,
            fields,
            &[("x-csrf-token", &self.csrf), ("hx-request", "true")],
        )
        .await
    }

    /// POST a form without any token (must be refused with 403).
    pub async fn post_without_csrf(
        &self,
        h: &Harness,
        path: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        h.ui_post(&self.cred, path, fields, &[]).await
    }

    /// POST with another session's token (must be refused with 403).
    pub async fn post_with_token(
        &self,
        h: &Harness,
        path: &str,
        token: &str,
        fields: &[(&str, &str)],
    ) -> Reply {
        let mut all = vec![("csrf", token)];
        all.extend_from_slice(fields);
        h.ui_post(&self.cred, path, &all, &[]).await
    }
}
