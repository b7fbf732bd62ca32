//! Security headers on every response outside `/api` (pages, static files, the 404
//! page): a Content-Security-Policy with no inline script or style and no eval, so an
//! escaping mistake cannot run code; no sniffing, no framing, no referrer to others.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// Also what the browser tests expect. `img-src data:` is for small inline SVG icons
/// in CSS; `form-action 'self'` keeps a injected form from posting elsewhere.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'; object-src 'none'";

const HEADERS: &[(&str, &str)] = &[
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "same-origin"),
    ("x-frame-options", "DENY"),
];

pub async fn secure(req: Request, next: Next) -> Response {
    let api = req.uri().path().starts_with("/api/") || req.uri().path() == "/api";
    let mut resp = next.run(req).await;
    if !api {
        let h = resp.headers_mut();
        for (name, value) in HEADERS {
            let name = HeaderName::from_static(name);
            if !h.contains_key(&name) {
                h.insert(name, HeaderValue::from_static(value));
            }
        }
    }
    resp
}
