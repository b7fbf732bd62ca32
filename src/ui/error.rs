//! The UI's adapter of [`ServiceError`]: an error page in the layout (with the
//! sidebar when someone is logged in), or just the message for htmx. The REST twin is
//! `api::error::ApiError`.

use askama::Template;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::page::{is_htmx, Page};
use crate::service::ServiceError;

#[derive(Template)]
#[template(path = "pages/error.html")]
struct ErrorContent<'a> {
    heading: &'a str,
    message: &'a str,
    back_href: &'a str,
    back_text: &'a str,
}

/// An error on its way to becoming a page. Build it with `UiUser::error` (layout with
/// sidebar) or `UiError::from(ServiceError)` (bare page); `?` works with both.
pub struct UiError {
    pub status: StatusCode,
    pub heading: String,
    pub message: String,
    /// The page context to render in; `None`: a bare page.
    pub page: Option<Box<Page>>,
    retry_after: Option<u64>,
}

impl UiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        UiError {
            status,
            heading: heading_of(status).into(),
            message: message.into(),
            page: None,
            retry_after: None,
        }
    }

    pub fn not_found() -> Self {
        UiError::new(
            StatusCode::NOT_FOUND,
            "There is nothing at this address (or it is not yours to see).",
        )
    }

    pub fn forbidden() -> Self {
        UiError::new(
            StatusCode::FORBIDDEN,
            "This page is for administrators. Ask an admin if you need access.",
        )
    }

    /// Render inside this page context (title, user, nav).
    pub fn in_page(mut self, page: Page) -> Self {
        self.page = Some(Box::new(page));
        self
    }
}

fn heading_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "Invalid request",
        StatusCode::UNAUTHORIZED => "Not logged in",
        StatusCode::FORBIDDEN => "Access denied",
        StatusCode::NOT_FOUND => "Not found",
        StatusCode::CONFLICT => "Conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "Too large",
        StatusCode::TOO_MANY_REQUESTS => "Too many requests",
        StatusCode::SERVICE_UNAVAILABLE => "Unavailable",
        _ => "Error",
    }
}

impl From<ServiceError> for UiError {
    fn from(e: ServiceError) -> Self {
        let message = e.to_string();
        let (status, message) = match e {
            ServiceError::BadRequest { details, .. } if !details.is_empty() => (
                StatusCode::BAD_REQUEST,
                format!("{message}: {}", details.join("; ")),
            ),
            ServiceError::BadRequest { .. } => (StatusCode::BAD_REQUEST, message),
            ServiceError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, message),
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, message),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, message),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, message),
            ServiceError::TooManyRequests { retry_after } => {
                let mut err = UiError::new(StatusCode::TOO_MANY_REQUESTS, message);
                err.retry_after = Some(retry_after.as_secs().max(1));
                return err;
            }
            ServiceError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, message),
            ServiceError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, message),
            ServiceError::BuildFailed { .. } => (StatusCode::INTERNAL_SERVER_ERROR, message),
            ServiceError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal error; the server log has details.".to_string(),
                )
            }
        };
        UiError::new(status, message)
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let page = match self.page {
            Some(p) => Page {
                title: self.heading.clone(),
                ..*p
            },
            None => Page::bare(self.heading.clone(), false),
        }
        .status(self.status);
        let logged_in = page.user.is_some();
        let mut resp = page.render(&ErrorContent {
            heading: &self.heading,
            message: &self.message,
            back_href: if logged_in { "/" } else { "/login" },
            back_text: if logged_in {
                "Back to the dashboard"
            } else {
                "Log in"
            },
        });
        if let Some(secs) = self.retry_after {
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                resp.headers_mut().insert(header::RETRY_AFTER, v);
            }
        }
        resp
    }
}

pub type UiResult<T = Response> = Result<T, UiError>;

/// A bare error page (no user context), partial for htmx.
pub fn error_page(
    headers: &HeaderMap,
    status: StatusCode,
    heading: &str,
    message: String,
) -> Response {
    let mut e = UiError::new(status, message);
    e.heading = heading.to_string();
    e.page = Some(Box::new(Page::bare(heading, is_htmx(headers))));
    e.into_response()
}
