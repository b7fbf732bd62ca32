//! `/api/apps/*`: app CRUD, lifecycle, logs and uploads.

use std::collections::HashMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Multipart, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::Json;
use futures_util::{Stream, StreamExt};

use super::dto::*;
use super::error::{ApiError, ApiResult};
use super::extract::{ApiJson, Auth, IdPath, Meta};
use crate::service::apps::{CreateAppInput, Lifecycle, ScaleInput, UpdateAppInput};
use crate::service::{apps, AppState};
use crate::spawner::LogSource;

/// Base image R versions available on this host, newest first.
#[utoipa::path(get, path = "/api/apps/r-versions", tag = "apps",
    responses((status = 200, body = VersionsDto), (status = 401, body = ErrorDto),
              (status = 503, description = "Docker is not available", body = ErrorDto)))]
pub async fn r_versions(
    State(state): State<AppState>,
    Auth(_): Auth,
) -> ApiResult<Json<VersionsDto>> {
    Ok(Json(VersionsDto {
        versions: apps::r_versions(&state).await?,
    }))
}

/// Create an app.
#[utoipa::path(post, path = "/api/apps", tag = "apps", operation_id = "create_app", request_body = CreateAppInput,
    responses((status = 201, body = AppEnvelope), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 409, description = "Slug taken", body = ErrorDto)))]
pub async fn create(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    ApiJson(input): ApiJson<CreateAppInput>,
) -> ApiResult<(StatusCode, Json<AppEnvelope>)> {
    let app = apps::create(&state, &who, input, &meta).await?;
    Ok((
        StatusCode::CREATED,
        Json(AppEnvelope {
            app: AppDto::from(&app),
        }),
    ))
}

/// The caller's apps (all apps for admins), with status.
#[utoipa::path(get, path = "/api/apps", tag = "apps", operation_id = "list_apps",
    responses((status = 200, body = AppsEnvelope), (status = 401, body = ErrorDto)))]
pub async fn list(State(state): State<AppState>, Auth(who): Auth) -> ApiResult<Json<AppsEnvelope>> {
    let views = apps::list(&state, &who).await?;
    Ok(Json(AppsEnvelope {
        apps: views.iter().map(AppStatusDto::from).collect(),
    }))
}

/// One app with status.
#[utoipa::path(get, path = "/api/apps/{id}", tag = "apps", operation_id = "get_app",
    params(("id" = uuid::Uuid, Path, description = "App id")),
    responses((status = 200, body = AppStatusEnvelope), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub async fn get(
    State(state): State<AppState>,
    Auth(who): Auth,
    IdPath(id): IdPath,
) -> ApiResult<Json<AppStatusEnvelope>> {
    let view = apps::get(&state, &who, id).await?;
    Ok(Json(AppStatusEnvelope {
        app: AppStatusDto::from(&view),
    }))
}

/// Change any of the create fields except `slug`.
#[utoipa::path(put, path = "/api/apps/{id}", tag = "apps", operation_id = "update_app", request_body = UpdateAppInput,
    params(("id" = uuid::Uuid, Path, description = "App id")),
    responses((status = 200, body = AppEnvelope), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub async fn update(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
    ApiJson(input): ApiJson<UpdateAppInput>,
) -> ApiResult<Json<AppEnvelope>> {
    let app = apps::update(&state, &who, id, input, &meta).await?;
    Ok(Json(AppEnvelope {
        app: AppDto::from(&app),
    }))
}

/// Delete an app with its containers, images and uploaded code.
#[utoipa::path(delete, path = "/api/apps/{id}", tag = "apps", operation_id = "delete_app",
    params(("id" = uuid::Uuid, Path, description = "App id")),
    responses((status = 200, body = OkDto), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
              (status = 503, description = "Docker is not available", body = ErrorDto)))]
pub async fn delete(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
) -> ApiResult<Json<OkDto>> {
    apps::delete(&state, &who, id, &meta).await?;
    Ok(Json(OK))
}

async fn lifecycle(
    state: AppState,
    who: crate::service::Principal,
    meta: crate::service::ClientMeta,
    id: uuid::Uuid,
    verb: Lifecycle,
) -> ApiResult<Json<LifecycleDto>> {
    let outcome = apps::lifecycle(&state, &who, id, verb, &meta).await?;
    let (image_name, image_tag) = outcome
        .image
        .map_or((None, None), |(n, t)| (Some(n), Some(t)));
    Ok(Json(LifecycleDto {
        ok: true,
        status: outcome.status.to_string(),
        image_name,
        image_tag,
    }))
}

macro_rules! lifecycle_route {
    ($fn:ident, $verb:expr, $path:literal, $doc:literal) => {
        #[doc = $doc]
        #[utoipa::path(post, path = $path, tag = "apps",
            params(("id" = uuid::Uuid, Path, description = "App id")),
            responses((status = 200, body = LifecycleDto), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
                      (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
                      (status = 500, description = "Build failed (with buildLog)", body = ErrorDto),
                      (status = 503, description = "Docker is not available", body = ErrorDto)))]
        pub async fn $fn(
            State(state): State<AppState>,
            Auth(who): Auth,
            Meta(meta): Meta,
            IdPath(id): IdPath,
        ) -> ApiResult<Json<LifecycleDto>> {
            lifecycle(state, who, meta, id, $verb).await
        }
    };
}

lifecycle_route!(
    start,
    Lifecycle::Start,
    "/api/apps/{id}/start",
    "Build (if needed) and start the app."
);
lifecycle_route!(
    stop,
    Lifecycle::Stop,
    "/api/apps/{id}/stop",
    "Stop the app's replicas."
);
lifecycle_route!(
    restart,
    Lifecycle::Restart,
    "/api/apps/{id}/restart",
    "Stop, then start the app."
);
lifecycle_route!(
    rebuild,
    Lifecycle::Rebuild,
    "/api/apps/{id}/rebuild",
    "Rebuild the image unconditionally and restart."
);

/// Change the replica count: applied now to a running app, else at its next start.
#[utoipa::path(post, path = "/api/apps/{id}/scale", tag = "apps", request_body = ScaleInput,
    params(("id" = uuid::Uuid, Path, description = "App id")),
    responses((status = 200, body = ScaleDto), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
              (status = 503, description = "Docker is not available", body = ErrorDto)))]
pub async fn scale(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
    ApiJson(input): ApiJson<ScaleInput>,
) -> ApiResult<Json<ScaleDto>> {
    let (app, status) = apps::scale(&state, &who, id, input, &meta).await?;
    Ok(Json(ScaleDto {
        ok: true,
        replicas: app.replicas,
        status,
    }))
}

/// Build log (replayed, then live) or, with `?source=runtime`, the replicas' output,
/// as server-sent events.
#[utoipa::path(get, path = "/api/apps/{id}/logs", tag = "apps",
    params(("id" = uuid::Uuid, Path, description = "App id"),
           ("source" = Option<LogSourceParam>, Query, description = "`build` (default) or `runtime`")),
    responses((status = 200, description = "text/event-stream of `log` events", content_type = "text/event-stream"),
              (status = 400, body = ErrorDto), (status = 401, body = ErrorDto), (status = 403, body = ErrorDto),
              (status = 404, body = ErrorDto), (status = 503, description = "Docker is not available", body = ErrorDto)))]
pub async fn logs(
    State(state): State<AppState>,
    Auth(who): Auth,
    IdPath(id): IdPath,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let source = match query.get("source").map(String::as_str) {
        None | Some("build") => LogSource::Build,
        Some("runtime") => LogSource::Runtime,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "source {other:?} is not one of build, runtime"
            )))
        }
    };
    let lines = apps::logs(&state, &who, id, source).await?;
    // `event: status` before the log and again when it ends (e.g. after a build), as the
    // original did; `event: log` for each line in between.
    let status_event = |state: AppState| async move {
        let status = state.spawner.runtime(id).await.status;
        Ok(Event::default()
            .event("status")
            .data(serde_json::json!({ "status": status }).to_string()))
    };
    let events = futures_util::stream::once(status_event(state.clone()))
        .chain(lines.map(|line| Ok(Event::default().event("log").data(line))))
        .chain(futures_util::stream::once(status_event(state)));
    Ok(Sse::new(events).keep_alive(
        KeepAlive::new()
            .interval(Duration::from_secs(15))
            .text("keepalive"),
    ))
}

/// Upload the app's code: one `.R`, `.zip`, `.tar.gz` or `.tgz` file (multipart).
#[utoipa::path(post, path = "/api/apps/{id}/upload", tag = "apps",
    params(("id" = uuid::Uuid, Path, description = "App id")),
    request_body(content = UploadForm, content_type = "multipart/form-data",
        description = "One file: `.R`, `.zip`, `.tar.gz` or `.tgz`, at most the server's `upload_max_mb` (default 50 MB); the field name is free, plain fields are ignored"),
    responses((status = 200, body = UploadDto), (status = 400, body = ErrorDto), (status = 401, body = ErrorDto),
              (status = 403, body = ErrorDto), (status = 404, body = ErrorDto),
              (status = 413, description = "Larger than the upload limit", body = ErrorDto)))]
pub async fn upload(
    State(state): State<AppState>,
    Auth(who): Auth,
    Meta(meta): Meta,
    IdPath(id): IdPath,
    multipart: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> ApiResult<Json<UploadDto>> {
    let multipart = multipart
        .map_err(|_| ApiError::bad_request("Expected a multipart/form-data body with one file"))?;
    let (filename, data) = super::spool::single_file(&state, multipart)
        .await?
        .ok_or_else(|| ApiError::bad_request("No file uploaded"))?;
    let out = apps::upload(&state, &who, id, filename, data, &meta).await?;
    Ok(Json(UploadDto {
        ok: true,
        path: out.path,
        filename: out.filename,
        files: out.files,
        entry_script: out.entry_script,
    }))
}
