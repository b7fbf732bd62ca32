//! The admin socket, `<data>/admin.sock` (mode 0600): how `rserve-proxy backup` and
//! `admin …` reach a running server, whose redb lock keeps them from opening the
//! store themselves.
//!
//! It is a second unix socket, not routes on the control socket, because the proxy
//! forwards public requests to the control socket: nothing public can reach this
//! one. Only the data dir's owner (and root) can connect, so no login is asked.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::service::AppState;

use super::users::{self, NewUser, PasswordReset};

pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.sock")
}

/// What `GET /v1/status` says: lets `doctor` tell "port taken by us" from "by another".
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub listen: String,
    pub tls_listen: Option<String>,
    pub metrics_listen: Option<String>,
}

/// Binds the socket (replacing a stale file: the caller holds the store lock, so no
/// live server owns it) with mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<StdUnixListener> {
    let path = path(data_dir);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = StdUnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/backup", get(backup))
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/password", post(reset_password))
        .with_state(state)
}

/// Serves the admin socket until shutdown.
pub async fn serve(
    listener: StdUnixListener,
    state: AppState,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let listener = match tokio::net::UnixListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "admin socket: cannot use the listener");
            return;
        }
    };
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.changed().await;
        })
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "admin socket stopped with an error");
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

async fn status(State(state): State<AppState>) -> Json<Status> {
    let c = &state.config;
    Json(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        listen: c.listen.to_string(),
        tls_listen: (c.tls_mode != crate::config::TlsMode::Off).then(|| c.tls_listen.to_string()),
        metrics_listen: c.metrics_listen.map(|a| a.to_string()),
    })
}

/// The archive, built into an unnamed temp file in the data dir (a backup can be
/// larger than memory) under the upload lock (uploads and store agree), then streamed.
async fn backup(State(state): State<AppState>) -> Response {
    let _uploads_still = state.upload_lock.clone().lock_owned().await;
    let store = state.store.clone();
    let data_dir = state.config.data_dir.clone();
    let uploads = state.config.uploads_dir();
    let started = std::time::Instant::now();
    let built = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let mut file = tempfile::tempfile_in(&data_dir)
            .map_err(|e| format!("cannot create a temp file in {}: {e}", data_dir.display()))?;
        let summary = super::archive::write(&store, &uploads, &data_dir, &mut file)?;
        use std::io::Seek;
        let size = file.stream_position().map_err(|e| e.to_string())?;
        file.rewind().map_err(|e| e.to_string())?;
        Ok((file, summary, size))
    })
    .await;
    drop(_uploads_still);
    let (file, summary, size) = match built {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return error(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("backup task failed: {e}"),
            )
        }
    };
    tracing::info!(
        files = summary.manifest.files.len(),
        bytes = size,
        ms = started.elapsed().as_millis() as u64,
        "backup written for the admin socket"
    );
    let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
    Response::builder()
        .header(header::CONTENT_TYPE, "application/gzip")
        .header(header::CONTENT_LENGTH, size)
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn list_users(State(state): State<AppState>) -> Response {
    match users::list(&state).await {
        Ok(list) => Json(list).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn create_user(State(state): State<AppState>, Json(input): Json<NewUser>) -> Response {
    match users::create(&state, input).await {
        Ok(user) => (StatusCode::CREATED, Json(user)).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}

async fn reset_password(
    State(state): State<AppState>,
    Json(input): Json<PasswordReset>,
) -> Response {
    match users::reset_password(&state, input).await {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, e),
    }
}
