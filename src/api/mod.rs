//! The REST API (`/api/**`) and the control plane's other routes. Thin: extract,
//! authorize (through the extractors), call a service function, map the result.

pub mod alerts;
pub mod apps;
pub mod auth;
pub mod body;
pub mod csrf;
pub mod dto;
pub mod error;
pub mod extract;
pub mod health;
pub mod metrics;
pub mod openapi;
pub mod prometheus;
pub mod spool;
pub mod users;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;

use crate::service::AppState;
use error::ApiError;

/// The control plane's whole router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/health", get(health::health))
        .route("/openapi.json", get(openapi::document))
        .route("/auth/login", post(auth::login))
        .route("/auth/logout", post(auth::logout))
        .route("/auth/me", get(auth::me))
        .route("/auth/password", put(auth::change_password))
        .route(
            "/auth/tokens",
            post(auth::create_token).get(auth::list_tokens),
        )
        .route(
            "/auth/tokens/{id}",
            axum::routing::delete(auth::delete_token),
        )
        .route("/users", get(users::list).post(users::create))
        .route("/users/{id}", put(users::update).delete(users::delete))
        .route("/apps", get(apps::list).post(apps::create))
        .route("/apps/r-versions", get(apps::r_versions))
        .route(
            "/apps/{id}",
            get(apps::get).put(apps::update).delete(apps::delete),
        )
        .route("/apps/{id}/start", post(apps::start))
        .route("/apps/{id}/stop", post(apps::stop))
        .route("/apps/{id}/restart", post(apps::restart))
        .route("/apps/{id}/rebuild", post(apps::rebuild))
        .route("/apps/{id}/scale", post(apps::scale))
        .route("/apps/{id}/logs", get(apps::logs))
        .route("/alerts/deliveries", get(alerts::deliveries))
        .route(
            "/apps/{id}/status/history",
            get(metrics::app_status_history),
        )
        .route("/metrics/system", get(metrics::system))
        .route("/metrics/apps/{id}", get(metrics::app))
        .route("/status/history", get(metrics::status_history))
        .route("/audit", get(metrics::audit))
        .route(
            "/apps/{id}/upload",
            // No fixed body limit: api/spool.rs enforces `upload_max_mb` (as a
            // reload last set it) while the file streams in.
            post(apps::upload).layer(DefaultBodyLimit::disable()),
        )
        .fallback(api_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(extract::JSON_BODY_LIMIT));
    Router::new()
        .nest("/api", api)
        // `nest` does not cover `/api/` itself; it is still an API path (JSON 404).
        .route("/api/", axum::routing::any(api_not_found))
        .merge(crate::ui::routes(state.clone()))
        .route("/metrics", get(prometheus::metrics))
        .fallback(crate::ui::not_found)
        .layer(axum::middleware::from_fn(crate::ui::headers::secure))
        .layer(axum::middleware::from_fn(body::read_first))
        .layer(axum::middleware::from_fn(request_span))
        .with_state(state)
}

/// Everything logged while handling a request carries the proxy's request id.
async fn request_span(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    use tracing::Instrument;
    let id = req
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    next.run(req)
        .instrument(tracing::info_span!("request", request_id = %id))
        .await
}

async fn api_not_found() -> ApiError {
    ApiError::not_found()
}

async fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(serde_json::json!({ "error": "Method not allowed on this path" })),
    )
        .into_response()
}
