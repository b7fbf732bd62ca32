//! The shared page context and the one place pages are rendered: a full page (the
//! layout around the content) for a normal request, the content alone for htmx
//! (`HX-Request: true`).

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

use super::assets;
use crate::service::Principal;

/// The hashed URLs of the files every page loads.
pub struct Assets {
    pub css: String,
    pub js: String,
    pub htmx: String,
    pub favicon: String,
}

impl Assets {
    fn get() -> Self {
        Assets {
            css: assets::url("app.css"),
            js: assets::url("app.js"),
            htmx: assets::url("htmx.js"),
            favicon: assets::url("favicon.svg"),
        }
    }
}

/// Who the layout shows in the top bar.
pub struct UserView {
    pub username: String,
    pub is_admin: bool,
}

/// A message above the page content (`#flash`). `kind` is a CSS suffix:
/// `success`, `error` or `info`.
pub struct Flash {
    pub kind: &'static str,
    pub message: String,
}

/// The sidebar entry a page belongs to (marked `aria-current`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Apps,
    Tokens,
    Settings,
    Users,
    Audit,
    None,
}

impl Nav {
    fn as_str(self) -> &'static str {
        match self {
            Nav::Dashboard => "dashboard",
            Nav::Apps => "apps",
            Nav::Tokens => "tokens",
            Nav::Settings => "settings",
            Nav::Users => "users",
            Nav::Audit => "audit",
            Nav::None => "",
        }
    }
}

/// Everything the layout needs besides the content. Build it with
/// `UiUser::page(title, nav)` (logged in) or [`Page::bare`] (login, errors when
/// logged out), then [`Page::render`] a content template.
pub struct Page {
    pub title: String,
    pub user: Option<UserView>,
    /// The session's CSRF token (`csrf` form field, `X-CSRF-Token` for htmx).
    pub csrf: String,
    pub nav: &'static str,
    pub flash: Option<Flash>,
    pub assets: Assets,
    /// Answer only the content (an htmx request).
    pub hx: bool,
    /// For htmx: also clear `#flash` when there is no message (a page change).
    pub clear_flash: bool,
    pub status: StatusCode,
}

#[derive(Template)]
#[template(path = "layout.html")]
struct Layout<'a> {
    page: &'a Page,
    /// Already-escaped HTML: the output of one of our own templates.
    content: &'a str,
}

impl Page {
    pub fn new(
        title: impl Into<String>,
        who: &Principal,
        csrf: String,
        nav: Nav,
        hx: bool,
    ) -> Self {
        Page {
            title: title.into(),
            user: Some(UserView {
                username: who.user.username.clone(),
                is_admin: who.is_admin(),
            }),
            csrf,
            nav: nav.as_str(),
            flash: None,
            assets: Assets::get(),
            hx,
            clear_flash: false,
            status: StatusCode::OK,
        }
    }

    /// A page without sidebar and top bar (nobody logged in).
    pub fn bare(title: impl Into<String>, hx: bool) -> Self {
        Page {
            title: title.into(),
            user: None,
            csrf: String::new(),
            nav: "",
            flash: None,
            assets: Assets::get(),
            hx,
            clear_flash: false,
            status: StatusCode::OK,
        }
    }

    pub fn flash(mut self, kind: &'static str, message: impl Into<String>) -> Self {
        self.flash = Some(Flash {
            kind,
            message: message.into(),
        });
        self
    }

    pub fn status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    /// The page: the content alone for htmx, inside the layout otherwise. For htmx
    /// the flash message (if any, or an empty one on a page change) goes first, as an
    /// out-of-band swap of `#flash`; a polled fragment without a message leaves it.
    pub fn render<T: Template>(&self, content: &T) -> Response {
        let body = content.render().and_then(|html| {
            if self.hx {
                let mut out = String::new();
                if self.user.is_some() && (self.flash.is_some() || self.clear_flash) {
                    out.push_str(&FlashOob { page: self }.render()?);
                }
                out.push_str(&html);
                Ok(out)
            } else {
                Layout {
                    page: self,
                    content: &html,
                }
                .render()
            }
        });
        match body {
            Ok(html) => (self.status, no_store(), Html(html)).into_response(),
            Err(e) => render_failed(e),
        }
    }
}

#[derive(Template)]
#[template(
    source = r#"<div id="flash" class="flash-area" role="status" aria-live="polite" hx-swap-oob="true">{% if let Some(f) = page.flash %}<p class="flash flash-{{ f.kind }}">{{ f.message }}</p>{% endif %}</div>
"#,
    ext = "html"
)]
struct FlashOob<'a> {
    page: &'a Page,
}

/// Pages carry per-user data and the CSRF token: never kept by shared caches.
fn no_store() -> [(header::HeaderName, HeaderValue); 1] {
    [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))]
}

/// A template that cannot render is a bug; the user gets a plain 500.
pub fn render_failed(e: askama::Error) -> Response {
    tracing::error!(error = %e, "template rendering failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Html("<!doctype html><meta charset=utf-8><title>Error — rserve-proxy</title><h1>Internal error</h1><p>The page could not be rendered; the server log has details.</p>"),
    )
        .into_response()
}

/// Is this an htmx request that wants the partial (`HX-Request: true`)? History
/// restores (`HX-History-Restore-Request`) and boosted links (`HX-Boosted`, which
/// swap the whole body) want the whole page.
pub fn is_htmx(headers: &HeaderMap) -> bool {
    let is = |name: &str| headers.get(name).is_some_and(|v| v == "true");
    is("hx-request") && !is("hx-history-restore-request") && !is("hx-boosted")
}

/// A content template for simple pages and stubs: a heading and one paragraph.
#[derive(Template)]
#[template(path = "pages/placeholder.html")]
pub struct Placeholder<'a> {
    pub heading: &'a str,
    pub text: &'a str,
}

/// A time as pages show it: `2026-12-02 09:10 UTC`.
pub fn fmt_time(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// Messages a redirect can ask the next page to show (`?done=<key>`): fixed texts
/// only, so a link cannot put words on our pages.
pub fn done_message(key: Option<&str>) -> Option<&'static str> {
    Some(match key? {
        "token-revoked" => "Token revoked.",
        "password-changed" => "Password changed. Your other sessions have been logged out.",
        "user-created" => "User created.",
        "user-updated" => "User updated.",
        "user-password" => {
            "Password reset. The user's sessions ended and their API tokens were revoked."
        }
        "user-deleted" => "User deleted.",
        _ => return None,
    })
}
