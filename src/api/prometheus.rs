//! `GET /metrics` (Prometheus text format) and who may read it.
//!
//! Never open to the world on the main listener: an admin's session or bearer token,
//! or a token created with `scope: "metrics"` (which works nowhere else). Anonymous:
//! 401; a non-admin: 403. The optional `metrics_listen` listener serves the same body
//! without authentication, for a private network ([`open_router`]).

use axum::extract::{FromRequestParts, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::error::ApiError;
use super::extract::{bearer, Auth};
use crate::service::{auth, AppState, ServiceError};

/// An admin, or a metrics-scoped token of an admin.
pub struct MetricsReader;

impl FromRequestParts<AppState> for MetricsReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Bearer tokens of either scope are checked here (`Auth` refuses the metrics
        // scope); sessions go through `Auth` as everywhere else.
        let who = match bearer(&parts.headers) {
            Some(raw) => auth::token_principal(state, raw)
                .await?
                .ok_or_else(ApiError::unauthenticated)?,
            None => Auth::from_request_parts(parts, state).await?.0,
        };
        if who.is_admin() {
            Ok(MetricsReader)
        } else {
            Err(ServiceError::access_denied().into())
        }
    }
}

/// Prometheus text exposition of the proxy's counters, app status, builds, TLS and
/// process metrics (see docs/metrics.md for the names).
#[utoipa::path(get, path = "/metrics", tag = "metrics",
    responses((status = 200, description = "Prometheus text format (version 0.0.4)", content_type = "text/plain"),
              (status = 401, description = "No credentials", body = super::dto::ErrorDto),
              (status = 403, description = "Not an admin", body = super::dto::ErrorDto)))]
pub async fn metrics(State(state): State<AppState>, _who: MetricsReader) -> Response {
    exposition(&state).await
}

async fn exposition(state: &AppState) -> Response {
    let body =
        crate::prometheus::render(&state.observe, state.spawner.as_ref(), &state.metrics).await;
    (
        [(header::CONTENT_TYPE, crate::prometheus::CONTENT_TYPE)],
        body,
    )
        .into_response()
}

/// The `metrics_listen` listener's whole router: `/metrics` without authentication,
/// 404 for everything else.
pub fn open_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(state): State<AppState>| async move { exposition(&state).await }),
        )
        .with_state(state)
}
