//! Logs page: build and runtime logs, live over the existing SSE route
//! (`GET /api/apps/{id}/logs`, which a session cookie authenticates), read by app.js
//! with EventSource; auto-follow with a pause toggle; download as a text file.

use std::time::Duration;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde::Deserialize;

use super::apps::{app_error, app_id, load, status_class, status_word};
use super::page::Nav;
use super::{UiError, UiResult, UiUser};
use crate::service::{apps, AppState};
use crate::spawner::LogSource;

/// A download stops after this long without a new line (runtime logs follow the
/// replicas forever; what they had is sent at once).
const DOWNLOAD_IDLE: Duration = Duration::from_secs(2);
/// …and after this long in all, and this many lines.
const DOWNLOAD_MAX_TIME: Duration = Duration::from_secs(20);
const DOWNLOAD_MAX_LINES: usize = 100_000;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps/{id}/logs", get(page))
        .route("/apps/{id}/logs/download", get(download))
}

#[derive(Deserialize, Default)]
struct LogsQuery {
    #[serde(default)]
    source: Option<String>,
}

/// `build` (default) or `runtime`; anything else is a 400 page.
fn source(user: &UiUser, q: &LogsQuery) -> UiResult<(LogSource, &'static str)> {
    match q.source.as_deref() {
        None | Some("") | Some("build") => Ok((LogSource::Build, "build")),
        Some("runtime") => Ok((LogSource::Runtime, "runtime")),
        Some(_) => Err(user.error(UiError::new(
            axum::http::StatusCode::BAD_REQUEST,
            "The log source must be build or runtime.",
        ))),
    }
}

#[derive(Template)]
#[template(path = "pages/app_logs.html")]
struct LogsPage {
    id: String,
    name: String,
    source: &'static str,
    status: &'static str,
    class: &'static str,
    stream_url: String,
    download_url: String,
}

async fn page(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let (_, source) = source(&user, &q)?;
    let view = load(&state, &user, id).await?;
    let status = status_word(view.runtime.status);
    Ok(user
        .page(format!("Logs: {}", view.app.name), Nav::Apps)
        .render(&LogsPage {
            id: id.to_string(),
            name: view.app.name.clone(),
            source,
            status,
            class: status_class(status),
            stream_url: format!("/api/apps/{id}/logs?source={source}"),
            download_url: format!("/apps/{id}/logs/download?source={source}"),
        }))
}

/// The log so far as a text file.
async fn download(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<LogsQuery>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let (log_source, source) = source(&user, &q)?;
    let view = load(&state, &user, id).await?;
    let mut stream = apps::logs(&state, &user.who, id, log_source)
        .await
        .map_err(|e| app_error(&user, e))?;
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + DOWNLOAD_MAX_TIME;
    let mut lines = 0usize;
    while lines < DOWNLOAD_MAX_LINES {
        let wait =
            DOWNLOAD_IDLE.min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        match tokio::time::timeout(wait, stream.next()).await {
            Ok(Some(line)) => {
                text.push_str(line.trim_end_matches(['\r', '\n']));
                text.push('\n');
                lines += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The slug is [a-z0-9-] only: safe in the header as it is.
    let disposition = format!("attachment; filename=\"{}-{source}.log\"", view.app.slug);
    let mut resp = text.into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}
