//! audit page (ui-core).

use axum::Router;

use crate::service::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
