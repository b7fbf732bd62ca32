//! The OpenAPI 3 document, generated from the handlers' annotations.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{alerts, apps, auth, dto, health, metrics, prometheus, users};

#[derive(OpenApi)]
#[openapi(
    info(title = "rserve-proxy API", description = "REST API of rserve-proxy, compatible with the original TypeScript rserve-proxy.\n\n\
Request bodies are JSON objects (an array, a scalar or `null` at the top level is a 400) of at most 1 MiB (larger: 413). \
Unknown fields are ignored, as the original's validator did; `null` for an optional field means the field is absent. \
A wrong type, or `null` for a required field, is a 400 naming the field. Every limit the server enforces is stated in the schemas below."),
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
    components(schemas(dto::ErrorDto, dto::LogSourceParam, dto::PeriodParam, crate::spawner::AppStatus, crate::spawner::ContainerInfo,
        crate::model::TokenScope, crate::alerts::EventKind)),
    modifiers(&Security, &BodyLimit),
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

/// Every operation with a JSON body documents the 413 of an oversize one.
struct BodyLimit;

impl Modify for BodyLimit {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let too_large = ResponseBuilder::new()
            .description(format!(
                "Request body too large (the limit is {} MiB)",
                super::extract::JSON_BODY_LIMIT / (1024 * 1024)
            ))
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorDto")))
                    .build(),
            )
            .build();
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.post, &mut item.put].into_iter().flatten() {
                let json_body = op
                    .request_body
                    .as_ref()
                    .is_some_and(|b| b.content.contains_key("application/json"));
                if json_body {
                    op.responses
                        .responses
                        .entry("413".into())
                        .or_insert_with(|| too_large.clone().into());
                }
            }
        }
    }
}

/// The document as JSON, with what utoipa cannot say: that a slug is none of the
/// reserved names, and that `slug` must not be sent on update (`not`).
pub fn document_json() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let schemas = "/components/schemas";
    if let Some(slug) = doc.pointer_mut(&format!("{schemas}/CreateAppInput/properties/slug")) {
        slug["not"] = serde_json::json!({ "enum": crate::service::validate::RESERVED_SLUGS });
    }
    if let Some(slug) = doc.pointer_mut(&format!("{schemas}/UpdateAppInput/properties/slug")) {
        slug["not"] = serde_json::json!({});
    }
    doc
}

/// The document as JSON.
#[utoipa::path(get, path = "/api/openapi.json", tag = "health", security(()),
    responses((status = 200, description = "OpenAPI 3 document")))]
pub async fn document() -> Json<serde_json::Value> {
    Json(document_json())
}
