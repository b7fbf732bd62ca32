//! The admin UI: server-rendered askama pages with htmx, beside `/api` on the control
//! plane. Handlers extract ([`UiUser`], forms), call the same `service/` functions as
//! `src/api/`, and render a template through [`Page::render`] (the partial for htmx,
//! the full layout otherwise). No business rules here.
//!
//! Each area has its own file with `pub fn routes() -> Router<AppState>`; [`routes`]
//! merges them and puts the CSRF guard ([`csrf::guard`]) around all of them.
//! docs/architecture.md ("Admin UI") has the design.

pub mod assets;
pub mod auth;
pub mod csrf;
pub mod error;
pub mod headers;
pub mod htmx;
pub mod page;

pub mod apps;
pub mod audit;
pub mod charts;
pub mod dashboard;
pub mod grid;
pub mod logs;
pub mod settings;
pub mod tokens;
pub mod upload;
pub mod users;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Router;

use crate::service::AppState;
pub use auth::UiUser;
pub use error::{UiError, UiResult};
pub use page::{is_htmx, Nav, Page};

/// Every UI route. State-changing requests to any of them pass the CSRF guard first.
pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .merge(auth::routes())
        .merge(dashboard::routes())
        .merge(apps::routes())
        .merge(upload::routes())
        .merge(logs::routes())
        .merge(charts::routes())
        .merge(grid::routes())
        .merge(tokens::routes())
        .merge(settings::routes())
        .merge(users::routes())
        .merge(audit::routes())
        // After the routes: a layer guards only the routes that exist when it is added.
        .route_layer(axum::middleware::from_fn_with_state(state, csrf::guard))
        .merge(assets::routes())
}

/// The 404 page for any path nobody answers (outside `/api`), in the layout when
/// someone is logged in.
pub async fn not_found(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let hx = is_htmx(&headers);
    let err = UiError::not_found();
    match auth::current(&state, &headers).await {
        Ok(Some(who)) => {
            let csrf = who
                .session_id
                .as_deref()
                .map(csrf::session_token)
                .unwrap_or_default();
            let user = UiUser {
                who,
                csrf,
                hx,
                hx_main: hx,
            };
            user.error(err).into_response()
        }
        _ => err.in_page(Page::bare("Not found", hx)).into_response(),
    }
}
