//! The OpenAPI 3 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{alerts, apps, auth, dto, health, metrics, prometheus, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "rserve-proxy API", description = "REST API of rserve-proxy, compatible with the original TypeScript rserve-proxy."),
    paths(
        health::health, document,
        auth::login, auth::logout, auth::me, auth::change_password,
        auth::create_token, auth::list_tokens, auth::delete_token,
        users::list, users::create, users::update, users::delete,
        apps::r_versions, apps::create, apps::list, apps::get, apps::update, apps::delete,
        apps::start, apps::stop, apps::restart, apps::rebuild, apps::scale, apps::logs, apps::upload,
        metrics::system, metrics::app, metrics::status_history, metrics::app_status_history,
        metrics::audit,
        prometheus::metrics, alerts::deliveries,
    ),
    components(schemas(dto::ErrorDto, crate::spawner::AppStatus, crate::spawner::ContainerInfo,
        crate::model::TokenScope, crate::alerts::EventKind)),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
    tags((name = "auth"), (name = "users"), (name = "apps"), (name = "health"),
        (name = "metrics"), (name = "audit"), (name = "alerts")),
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                super::extract::SESSION_COOKIE,
            ))),
        );
    }
}

/// The document as JSON.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
