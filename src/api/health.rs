//! `GET /api/health`: is the store readable, is Docker reachable.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use time::OffsetDateTime;

use super::dto::HealthDto;
use crate::service::{with_store, AppState};

/// Liveness and dependencies. 200 while the store works (Docker being down is
/// reported, not fatal); 503 when the store cannot be read.
#[utoipa::path(get, path = "/api/health", tag = "health", security(()),
    responses((status = 200, body = HealthDto), (status = 503, body = HealthDto)))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<HealthDto>) {
    let (db, docker) = tokio::join!(
        with_store(&state.store, |s| s.schema_version()),
        state.spawner.ping()
    );
    let db = db.is_ok();
    let docker_error = docker.err().map(|e| e.to_string());
    let dto = HealthDto {
        status: if db { "ok" } else { "degraded" }.into(),
        db,
        docker: docker_error.is_none(),
        docker_error,
        version: env!("CARGO_PKG_VERSION").into(),
        timestamp: OffsetDateTime::now_utc(),
    };
    let code = if db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(dto))
}
