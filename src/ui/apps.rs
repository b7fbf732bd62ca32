//! Apps pages: placeholder of the foundation; ui-apps fills it.

use axum::routing::get;
use axum::Router;

use super::page::{Nav, Placeholder};
use super::UiUser;
use crate::service::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/apps", get(list))
}

async fn list(user: UiUser) -> axum::response::Response {
    user.page("Apps", Nav::Apps).render(&Placeholder {
        heading: "Apps",
        text: "The apps list is on its way.",
    })
}
