//! logs: placeholder of the foundation; the owning engineer fills it (see
//! /work/notes/ui-contract.md).

use axum::Router;

use crate::service::AppState;

pub fn routes() -> Router<AppState> {
    Router::new()
}
