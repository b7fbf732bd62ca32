//! Dashboard (`/`): placeholder of the foundation; ui-dash fills it.

use axum::routing::get;
use axum::Router;

use super::page::{Nav, Placeholder};
use super::UiUser;
use crate::service::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/", get(index))
}

async fn index(user: UiUser) -> axum::response::Response {
    user.page("Dashboard", Nav::Dashboard).render(&Placeholder {
        heading: "Dashboard",
        text: "The dashboard is on its way.",
    })
}
