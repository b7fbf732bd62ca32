//! `ServiceError` → JSON response, in the contract's `{"error": …}` shape.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::ServiceError;

/// The API's error: a service error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError(pub ServiceError);

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError(ServiceError::bad_request(message))
    }

    pub fn unauthenticated() -> Self {
        ApiError(ServiceError::Unauthorized("Authentication required".into()))
    }

    pub fn not_found() -> Self {
        ApiError(ServiceError::NotFound("Not found".into()))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.0.to_string();
        let (status, body) = match self.0 {
            ServiceError::BadRequest { details, .. } if !details.is_empty() => (
                StatusCode::BAD_REQUEST,
                json!({ "error": message, "details": details }),
            ),
            ServiceError::BadRequest { .. } => {
                (StatusCode::BAD_REQUEST, json!({ "error": message }))
            }
            ServiceError::Unauthorized(_) => {
                (StatusCode::UNAUTHORIZED, json!({ "error": message }))
            }
            ServiceError::Forbidden(_) => (StatusCode::FORBIDDEN, json!({ "error": message })),
            ServiceError::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "error": message })),
            ServiceError::Conflict(_) => (StatusCode::CONFLICT, json!({ "error": message })),
            ServiceError::TooManyRequests { retry_after } => {
                let mut resp = (
                    StatusCode::TOO_MANY_REQUESTS,
                    Json(json!({ "error": message })),
                )
                    .into_response();
                let secs = retry_after.as_secs().max(1).to_string();
                if let Ok(v) = HeaderValue::from_str(&secs) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return resp;
            }
            ServiceError::PayloadTooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, json!({ "error": message }))
            }
            ServiceError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, json!({ "error": message }))
            }
            ServiceError::BuildFailed { log, .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "error": message, "buildLog": log }),
            ),
            ServiceError::Internal(detail) => {
                // The detail goes to the log (with the request id), not to the client.
                tracing::error!(error = %detail, "internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({ "error": "Internal error; the server log has details" }),
                )
            }
        };
        (status, Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
