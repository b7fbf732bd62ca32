//! `/api/alerts/*`: what the alert webhooks did.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::error::ApiResult;
use super::extract::Auth;
use crate::alerts::Delivery;
use crate::service::{AppState, ServiceError};

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveriesEnvelope {
    /// Newest first; the last `webhook_history` deliveries since start.
    pub deliveries: Vec<Delivery>,
}

/// The last webhook deliveries (admin only): one entry per event and webhook, after
/// its last attempt.
#[utoipa::path(get, path = "/api/alerts/deliveries", tag = "alerts",
    responses((status = 200, body = DeliveriesEnvelope), (status = 401, body = super::dto::ErrorDto),
              (status = 403, description = "Not an admin", body = super::dto::ErrorDto)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Auth(who): Auth,
) -> ApiResult<Json<DeliveriesEnvelope>> {
    if !who.is_admin() {
        return Err(ServiceError::access_denied().into());
    }
    Ok(Json(DeliveriesEnvelope {
        deliveries: state.observe.alerts.deliveries(),
    }))
}
