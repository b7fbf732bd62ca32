//! Apps pages: the list (live status, quick start/stop/restart), new and edit forms
//! (live slug check), app detail (summary, live status and replicas, actions,
//! connection URL with an rserve-ts snippet, delete behind a slug confirmation).
//! Every handler extracts, calls one `service::apps` function, and renders.
//!
//! Someone else's app answers 404 here (the API says 403): the UI does not confirm
//! that an id it will not show exists.

pub mod form;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use uuid::Uuid;

use self::form::{AppForm, EnvRow, FieldErrors};
use super::dashboard::app_metrics::{self, AppMetrics};
use super::page::{render_failed, Nav};
use super::{UiError, UiResult, UiUser};
use crate::api::extract::Meta;
use crate::metrics::maths::Period;
use crate::model::{App, CodeSource};
use crate::service::apps::{self, AppView, Lifecycle};
use crate::service::{AppState, ServiceError};
use crate::spawner::AppStatus;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/apps", get(list).post(create))
        .route("/apps/new", get(new_form))
        .route("/apps/check-slug", get(check_slug))
        .route("/apps/{id}", get(detail))
        .route("/apps/{id}/edit", get(edit_form).post(edit))
        .route("/apps/{id}/start", post(start))
        .route("/apps/{id}/stop", post(stop))
        .route("/apps/{id}/restart", post(restart))
        .route("/apps/{id}/rebuild", post(rebuild))
        .route("/apps/{id}/delete", post(delete))
}

// ---------- shared helpers (also used by upload.rs and logs.rs) ----------

/// The word shown for a status (badge text and `st-…` class).
pub fn status_word(s: AppStatus) -> &'static str {
    match s {
        AppStatus::Building => "building",
        AppStatus::Starting => "starting",
        AppStatus::Running => "running",
        AppStatus::Degraded => "degraded",
        AppStatus::Stopping => "stopping",
        AppStatus::Stopped => "stopped",
        AppStatus::Error => "error",
    }
}

/// The badge colour class of a status word (the text says it too).
pub fn status_class(word: &str) -> &'static str {
    match word {
        "running" => "st-running",
        "starting" | "stopping" | "degraded" | "building" | "restarting" => "st-starting",
        "error" => "st-error",
        "stopped" => "st-stopped",
        _ => "st-unknown",
    }
}

/// A path id; anything that is not a UUID is a page that does not exist.
pub fn app_id(user: &UiUser, raw: &str) -> UiResult<Uuid> {
    raw.parse().map_err(|_| user.error(UiError::not_found()))
}

/// A service error as a page. Someone else's app is "not found", as a missing one.
pub fn app_error(user: &UiUser, e: ServiceError) -> UiError {
    match e {
        ServiceError::Forbidden(_) => user.error(UiError::not_found()),
        e => user.error(e),
    }
}

/// Load an app the user may see, or the 404 page.
pub async fn load(state: &AppState, user: &UiUser, id: Uuid) -> UiResult<AppView> {
    apps::get(state, &user.who, id)
        .await
        .map_err(|e| app_error(user, e))
}

/// After a successful form post: 303 to `to` (htmx: `HX-Redirect`, so the whole page
/// moves instead of the next page landing inside a fragment).
pub fn see_other(user: &UiUser, to: &str) -> Response {
    if user.hx {
        let mut r = StatusCode::NO_CONTENT.into_response();
        if let Ok(v) = HeaderValue::from_str(to) {
            r.headers_mut().insert("hx-redirect", v);
        }
        r
    } else {
        Redirect::to(to).into_response()
    }
}

/// The status code of a page re-rendered after a service error: the error's own for
/// a 4xx; 200 for the rest when the request came from htmx, which swaps 4xx but not
/// 5xx answers (the message is in the page's flash either way).
fn failure_status(user: &UiUser, e: &ServiceError) -> StatusCode {
    let status = UiError::from(clone_error(e)).status;
    if status.is_server_error() && user.hx {
        StatusCode::OK
    } else {
        status
    }
}

fn clone_error(e: &ServiceError) -> ServiceError {
    match e {
        ServiceError::BadRequest { message, details } => ServiceError::BadRequest {
            message: message.clone(),
            details: details.clone(),
        },
        ServiceError::Unauthorized(m) => ServiceError::Unauthorized(m.clone()),
        ServiceError::Forbidden(m) => ServiceError::Forbidden(m.clone()),
        ServiceError::NotFound(m) => ServiceError::NotFound(m.clone()),
        ServiceError::Conflict(m) => ServiceError::Conflict(m.clone()),
        ServiceError::TooManyRequests { retry_after } => ServiceError::TooManyRequests {
            retry_after: *retry_after,
        },
        ServiceError::PayloadTooLarge(m) => ServiceError::PayloadTooLarge(m.clone()),
        ServiceError::Unavailable(m) => ServiceError::Unavailable(m.clone()),
        ServiceError::BuildFailed { message, log } => ServiceError::BuildFailed {
            message: message.clone(),
            log: log.clone(),
        },
        ServiceError::Internal(m) => ServiceError::Internal(m.clone()),
    }
}

/// What a user is told after a service error on a page that stays put.
fn failure_message(e: &ServiceError) -> String {
    match e {
        ServiceError::BadRequest { details, .. } if !details.is_empty() => details.join("; "),
        ServiceError::BuildFailed { message, log } => {
            // The last lines of the build say why; the full log is on the logs page.
            let tail: Vec<&str> = log.iter().rev().take(5).rev().map(String::as_str).collect();
            if tail.is_empty() {
                message.clone()
            } else {
                format!("{message} (last lines: {})", tail.join(" / "))
            }
        }
        ServiceError::Internal(_) => UiError::from(clone_error(e)).message,
        other => other.to_string(),
    }
}

/// Messages for `?flash=` after a redirect (fixed texts: nothing from the URL is shown).
fn flash_text(key: &str) -> Option<&'static str> {
    Some(match key {
        "created" => "App created.",
        "saved" => "Changes saved. They apply at the next start or restart.",
        "deleted" => "App deleted.",
        "started" => "Start requested.",
        "stopped" => "App stopped.",
        "restarted" => "Restart requested.",
        "rebuilt" => "Rebuild requested.",
        "entry" => "Entry script set. Start or restart the app to use it.",
        _ => return None,
    })
}

#[derive(Deserialize, Default)]
pub struct PageQuery {
    /// `table` (list) / `live` (detail): only the polled fragment.
    #[serde(default)]
    part: Option<String>,
    #[serde(default)]
    flash: Option<String>,
}

fn with_flash(page: super::Page, q: &PageQuery) -> super::Page {
    match q.flash.as_deref().and_then(flash_text) {
        Some(m) => page.flash("success", m),
        None => page,
    }
}

/// A fragment polled by htmx: no layout, not cached.
fn fragment<T: Template>(t: &T) -> Response {
    match t.render() {
        Ok(html) => (
            [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
            Html(html),
        )
            .into_response(),
        Err(e) => render_failed(e),
    }
}

// ---------- list ----------

pub struct AppRow {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub status: &'static str,
    pub class: &'static str,
    /// Replicas up / wanted, e.g. `1 / 2`.
    pub replicas: String,
    pub source: &'static str,
}

impl AppRow {
    fn of(v: &AppView) -> Self {
        let status = status_word(v.runtime.status);
        let up = v
            .runtime
            .containers
            .iter()
            .filter(|c| c.status == "running")
            .count();
        AppRow {
            id: v.app.id.to_string(),
            name: v.app.name.clone(),
            slug: v.app.slug.clone(),
            status,
            class: status_class(status),
            replicas: format!("{up} / {}", v.app.replicas),
            source: source_word(&v.app),
        }
    }

    /// Stopping makes sense.
    pub fn active(&self) -> bool {
        self.status != "stopped"
    }
}

fn source_word(app: &App) -> &'static str {
    match app.code_source {
        CodeSource::Upload => "upload",
        CodeSource::Git { .. } => "git",
    }
}

#[derive(Template)]
#[template(path = "partials/apps_table.html")]
struct AppsTable<'a> {
    rows: &'a [AppRow],
    csrf: &'a str,
}

#[derive(Template)]
#[template(path = "pages/apps.html")]
struct AppsPage<'a> {
    rows: &'a [AppRow],
    csrf: &'a str,
}

async fn list(user: UiUser, State(state): State<AppState>, Query(q): Query<PageQuery>) -> UiResult {
    render_list(&state, &user, &q, None).await
}

async fn render_list(
    state: &AppState,
    user: &UiUser,
    q: &PageQuery,
    outcome: Option<(&'static str, String, StatusCode)>,
) -> UiResult {
    let views = apps::list(state, &user.who)
        .await
        .map_err(|e| user.error(e))?;
    let rows: Vec<AppRow> = views.iter().map(AppRow::of).collect();
    if q.part.as_deref() == Some("table") {
        return Ok(fragment(&AppsTable {
            rows: &rows,
            csrf: &user.csrf,
        }));
    }
    let mut page = with_flash(user.page("Apps", Nav::Apps), q);
    if let Some((kind, message, status)) = outcome {
        page = page.flash(kind, message).status(status);
    }
    Ok(page.render(&AppsPage {
        rows: &rows,
        csrf: &user.csrf,
    }))
}

// ---------- new / edit ----------

#[derive(Template)]
#[template(path = "pages/app_form.html")]
struct AppFormPage<'a> {
    /// `new` or `edit`.
    mode: &'a str,
    heading: String,
    action: String,
    cancel: String,
    form: &'a AppForm,
    errors: &'a FieldErrors,
    tags: Vec<String>,
    env_rows: Vec<EnvRow>,
    r_versions: Vec<String>,
    /// Docker did not answer the list of R versions.
    r_versions_error: Option<String>,
    /// The chosen version is among the options (else it is added, marked).
    r_version_listed: bool,
    /// Edit of an upload app: its current files, with the way to replace them.
    code: Option<CodeSummary>,
    csrf: &'a str,
}

/// The current upload, as the edit page shows it (the upload page has the tree).
pub struct CodeSummary {
    pub upload_url: String,
    /// The first [`CODE_SUMMARY_FILES`] paths.
    pub files: Vec<String>,
    /// How many more there are.
    pub more: usize,
    pub entry_script: String,
    pub entry_present: bool,
}

const CODE_SUMMARY_FILES: usize = 12;

async fn code_summary(state: &AppState, user: &UiUser, app: &App) -> Option<CodeSummary> {
    if !matches!(app.code_source, CodeSource::Upload) {
        return None;
    }
    // The summary is a convenience: if the files cannot be read the form still works.
    let files = crate::service::app_code::files(state, &user.who, app.id)
        .await
        .ok()?;
    let total = files.files.len();
    Some(CodeSummary {
        upload_url: format!("/apps/{}/upload", app.id),
        files: files
            .files
            .iter()
            .take(CODE_SUMMARY_FILES)
            .map(|f| f.path.clone())
            .collect(),
        more: total.saturating_sub(CODE_SUMMARY_FILES),
        entry_present: files.entry_present(),
        entry_script: files.entry_script,
    })
}

async fn render_form(
    state: &AppState,
    user: &UiUser,
    app: Option<&App>,
    form: &AppForm,
    errors: &FieldErrors,
    status: StatusCode,
) -> Response {
    let (r_versions, r_versions_error): (Vec<String>, _) = match apps::r_versions(state).await {
        Ok(v) => (v.into_iter().filter(|v| v != "latest").collect(), None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let r_version_listed = form.r_version == "latest" || r_versions.contains(&form.r_version);
    let (mode, heading, action, cancel) = match app {
        None => (
            "new",
            "New app".to_string(),
            "/apps".to_string(),
            "/apps".to_string(),
        ),
        Some(a) => (
            "edit",
            format!("Edit {}", a.name),
            format!("/apps/{}/edit", a.id),
            format!("/apps/{}", a.id),
        ),
    };
    let code = match app {
        Some(a) => code_summary(state, user, a).await,
        None => None,
    };
    let title = if app.is_some() { "Edit app" } else { "New app" };
    let mut page = user.page(title, Nav::Apps).status(status);
    if errors.has("form") {
        page = page.flash("error", errors.get("form"));
    } else if !errors.is_empty() {
        page = page.flash(
            "error",
            "Some fields need attention; see the messages below them.",
        );
    }
    page.render(&AppFormPage {
        mode,
        heading,
        action,
        cancel,
        form,
        errors,
        tags: form.package_tags(),
        env_rows: form.env_rows(),
        r_versions,
        r_versions_error,
        r_version_listed,
        code,
        csrf: &user.csrf,
    })
}

async fn new_form(user: UiUser, State(state): State<AppState>) -> Response {
    render_form(
        &state,
        &user,
        None,
        &AppForm::default(),
        &FieldErrors::default(),
        StatusCode::OK,
    )
    .await
}

async fn create(
    user: UiUser,
    State(state): State<AppState>,
    Meta(meta): Meta,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let form = AppForm::from_pairs(&pairs, None);
    let input = match form.to_create() {
        Ok(i) => i,
        Err(errors) => {
            return render_form(&state, &user, None, &form, &errors, StatusCode::BAD_REQUEST).await
        }
    };
    match apps::create(&state, &user.who, input, &meta).await {
        Ok(app) => {
            // An upload app has no code yet: the upload page is the next step.
            let next = match app.code_source {
                CodeSource::Upload => format!("/apps/{}/upload?flash=created", app.id),
                CodeSource::Git { .. } => format!("/apps/{}?flash=created", app.id),
            };
            see_other(&user, &next)
        }
        Err(e) => {
            let status = failure_status(&user, &e);
            let errors = FieldErrors::from_service(&e);
            render_form(&state, &user, None, &form, &errors, status).await
        }
    }
}

async fn edit_form(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let view = load(&state, &user, id).await?;
    let form = AppForm::from_app(&view.app);
    Ok(render_form(
        &state,
        &user,
        Some(&view.app),
        &form,
        &FieldErrors::default(),
        StatusCode::OK,
    )
    .await)
}

async fn edit(
    user: UiUser,
    State(state): State<AppState>,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let view = load(&state, &user, id).await?;
    let form = AppForm::from_pairs(&pairs, Some(&view.app));
    let input = match form.to_update() {
        Ok(i) => i,
        Err(errors) => {
            return Ok(render_form(
                &state,
                &user,
                Some(&view.app),
                &form,
                &errors,
                StatusCode::BAD_REQUEST,
            )
            .await)
        }
    };
    match apps::update(&state, &user.who, id, input, &meta).await {
        Ok(app) => Ok(see_other(&user, &format!("/apps/{}?flash=saved", app.id))),
        Err(e) => {
            let status = failure_status(&user, &e);
            let errors = FieldErrors::from_service(&e);
            Ok(render_form(&state, &user, Some(&view.app), &form, &errors, status).await)
        }
    }
}

// ---------- slug check ----------

#[derive(Deserialize)]
struct SlugQuery {
    #[serde(default)]
    slug: String,
}

#[derive(Template)]
#[template(path = "partials/slug_check.html")]
struct SlugCheck {
    ok: bool,
    message: String,
}

/// The live check under the slug field: the same rules and messages as creating.
async fn check_slug(
    _user: UiUser,
    State(state): State<AppState>,
    Query(q): Query<SlugQuery>,
) -> Response {
    let slug = q.slug.trim();
    let (ok, message) = if slug.is_empty() {
        (false, String::new())
    } else {
        match apps::check_slug(&state, slug).await {
            Ok(()) => (
                true,
                format!("Available: the app will be served at /{slug}/"),
            ),
            Err(ServiceError::BadRequest { details, message }) => {
                (false, details.first().cloned().unwrap_or(message))
            }
            Err(e) => (false, e.to_string()),
        }
    };
    fragment(&SlugCheck { ok, message })
}

// ---------- detail ----------

pub struct ReplicaRow {
    pub id: String,
    pub state: String,
    pub health: String,
    pub started: String,
}

pub struct EnvSummary {
    pub key: String,
    /// `None` for a secret: its value is never rendered.
    pub value: Option<String>,
}

/// Everything the detail page shows about the app's configuration.
pub struct Summary {
    pub id: String,
    pub name: String,
    pub slug: String,
    pub r_version: String,
    pub packages: Vec<String>,
    pub source: &'static str,
    pub git_url: String,
    pub git_branch: String,
    pub entry_script: String,
    pub replicas: u32,
    pub memory_mb: u64,
    pub cpus: String,
    pub env: Vec<EnvSummary>,
    pub created: String,
    pub updated: String,
}

impl Summary {
    fn of(app: &App) -> Self {
        let (git_url, git_branch) = match &app.code_source {
            CodeSource::Git { repo_url, branch } => {
                (repo_url.clone(), branch.clone().unwrap_or_default())
            }
            CodeSource::Upload => (String::new(), String::new()),
        };
        Summary {
            id: app.id.to_string(),
            name: app.name.clone(),
            slug: app.slug.clone(),
            r_version: app.r_version.clone(),
            packages: app.packages.clone(),
            source: source_word(app),
            git_url,
            git_branch,
            entry_script: app.entry_script.clone(),
            replicas: app.replicas,
            memory_mb: app.settings.memory_mb,
            cpus: AppForm::from_app(app).cpus,
            env: app
                .settings
                .env
                .iter()
                .map(|e| EnvSummary {
                    key: e.key.clone(),
                    value: (!e.secret).then(|| e.value.clone()),
                })
                .collect(),
            created: when(app.created_at),
            updated: when(app.updated_at),
        }
    }
}

/// `2026-12-02 09:30 UTC`.
pub fn when(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// The part of the detail page that polls itself: status, error, replicas.
pub struct AppLive {
    pub id: String,
    pub status: &'static str,
    pub class: &'static str,
    pub error: Option<String>,
    pub replicas: Vec<ReplicaRow>,
    pub wanted: u32,
}

impl AppLive {
    pub fn of(v: &AppView) -> Self {
        let status = status_word(v.runtime.status);
        AppLive {
            id: v.app.id.to_string(),
            status,
            class: status_class(status),
            error: v.runtime.error.clone(),
            replicas: v
                .runtime
                .containers
                .iter()
                .map(|c| ReplicaRow {
                    id: c.container_id.clone(),
                    state: c.status.clone(),
                    health: c.health_status.clone().unwrap_or_else(|| "—".into()),
                    started: c
                        .started_at
                        .as_deref()
                        .map(short_time)
                        .unwrap_or_else(|| "—".into()),
                })
                .collect(),
            wanted: v.app.replicas,
        }
    }
}

#[derive(Template)]
#[template(path = "partials/app_live.html")]
struct LiveFragment<'a> {
    live: &'a AppLive,
}

/// Docker's RFC 3339 start time, shortened to the minute.
fn short_time(s: &str) -> String {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map(when)
        .unwrap_or_else(|_| s.to_string())
}

#[derive(Template)]
#[template(path = "pages/app_detail.html")]
struct DetailPage<'a> {
    app: Summary,
    live: AppLive,
    connect_url: String,
    snippet: String,
    csrf: &'a str,
    /// The delete confirmation was wrong: its message.
    delete_error: Option<String>,
    /// ui-dash's timeline, charts and current stats (`partials/app_metrics.html`).
    app_metrics: AppMetrics,
}

/// `ws://host/slug/` or `wss://…`, as the browser reached us: the proxy sets
/// `X-Forwarded-Proto` and `X-Forwarded-Host` (overwriting what a client sent).
pub fn connect_url(headers: &HeaderMap, slug: &str) -> String {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let tls = get("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let host = get("x-forwarded-host")
        .filter(|h| plain_host(h))
        .or_else(|| get("host").filter(|h| plain_host(h)))
        .unwrap_or("localhost");
    format!("{}://{host}/{slug}/", if tls { "wss" } else { "ws" })
}

/// A host name, IPv4 or bracketed IPv6 literal, with an optional port: nothing that
/// could turn the URL into something else.
fn plain_host(h: &str) -> bool {
    h.len() <= 255
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'))
}

/// Replicas run Rserve in OCAP mode (`websockets.qap.oc = TRUE`): clients call the
/// capabilities the entry script's `oc.init()` returns; `eval` is refused.
fn snippet(url: &str) -> String {
    format!(
        "import RserveClient, {{ Robj }} from \"rserve-ts\";\n\
         import {{ z }} from \"zod\";\n\n\
         // The capabilities your entry script's oc.init() returns, e.g. add(a, b):\n\
         const app = {{\n  add: Robj.ocap([z.number(), z.number()], Robj.numeric(1)),\n}};\n\n\
         const R = await RserveClient.create({{ host: \"{url}\" }});\n\
         const funs = await R.ocap(app);\n\
         console.log(await funs.add(1, 2));\n"
    )
}

async fn detail(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
    headers: HeaderMap,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let view = load(&state, &user, id).await?;
    if q.part.as_deref() == Some("live") {
        return Ok(fragment(&LiveFragment {
            live: &AppLive::of(&view),
        }));
    }
    let page = with_flash(user.page(view.app.name.clone(), Nav::Apps), &q);
    render_detail(&state, &user, page, &view, &headers, None).await
}

async fn render_detail(
    state: &AppState,
    user: &UiUser,
    page: super::Page,
    view: &AppView,
    headers: &HeaderMap,
    delete_error: Option<String>,
) -> UiResult {
    let app_metrics = app_metrics::load(state, &user.who, view.app.id, Period::H1)
        .await
        .map_err(|e| app_error(user, e))?;
    let url = connect_url(headers, &view.app.slug);
    Ok(page.render(&DetailPage {
        app: Summary::of(&view.app),
        live: AppLive::of(view),
        snippet: snippet(&url),
        connect_url: url,
        csrf: &user.csrf,
        delete_error,
        app_metrics,
    }))
}

// ---------- actions ----------

#[derive(Deserialize, Default)]
struct ActionForm {
    /// `list`: answer the apps list; anything else: the app's page.
    #[serde(default)]
    return_to: Option<String>,
}

async fn act(
    state: AppState,
    user: UiUser,
    meta: crate::service::ClientMeta,
    id: String,
    headers: HeaderMap,
    form: ActionForm,
    verb: Lifecycle,
) -> UiResult {
    let id = app_id(&user, &id)?;
    // Missing or someone else's: the 404 page before anything is attempted.
    load(&state, &user, id).await?;
    let to_list = form.return_to.as_deref() == Some("list");
    let key = match verb {
        Lifecycle::Start => "started",
        Lifecycle::Stop => "stopped",
        Lifecycle::Restart => "restarted",
        Lifecycle::Rebuild => "rebuilt",
    };
    let outcome = match apps::lifecycle(&state, &user.who, id, verb, &meta).await {
        Ok(_) => {
            if !user.hx {
                let to = if to_list {
                    format!("/apps?flash={key}")
                } else {
                    format!("/apps/{id}?flash={key}")
                };
                return Ok(see_other(&user, &to));
            }
            // htmx: the live status shows the outcome; a message would go stale.
            None
        }
        Err(e) => Some(("error", failure_message(&e), failure_status(&user, &e))),
    };
    if to_list {
        let q = PageQuery::default();
        return render_list(&state, &user, &q, outcome).await;
    }
    let view = load(&state, &user, id).await?;
    let mut page = user.page(view.app.name.clone(), Nav::Apps);
    if let Some((kind, message, status)) = outcome {
        page = page.flash(kind, message).status(status);
    }
    render_detail(&state, &user, page, &view, &headers, None).await
}

macro_rules! action {
    ($name:ident, $verb:expr) => {
        async fn $name(
            user: UiUser,
            State(state): State<AppState>,
            Meta(meta): Meta,
            Path(id): Path<String>,
            headers: HeaderMap,
            Form(form): Form<ActionForm>,
        ) -> UiResult {
            act(state, user, meta, id, headers, form, $verb).await
        }
    };
}

action!(start, Lifecycle::Start);
action!(stop, Lifecycle::Stop);
action!(restart, Lifecycle::Restart);
action!(rebuild, Lifecycle::Rebuild);

// ---------- delete ----------

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    confirm_slug: String,
}

async fn delete(
    user: UiUser,
    State(state): State<AppState>,
    Meta(meta): Meta,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DeleteForm>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let view = load(&state, &user, id).await?;
    if form.confirm_slug.trim() != view.app.slug {
        let page = user
            .page(view.app.name.clone(), Nav::Apps)
            .flash(
                "error",
                "The app was not deleted: the confirmation did not match its slug.",
            )
            .status(StatusCode::BAD_REQUEST);
        let message = format!(
            "Type the app's slug, {}, exactly to confirm.",
            view.app.slug
        );
        return render_detail(&state, &user, page, &view, &headers, Some(message)).await;
    }
    match apps::delete(&state, &user.who, id, &meta).await {
        Ok(()) => Ok(see_other(&user, "/apps?flash=deleted")),
        Err(e) => {
            let page = user
                .page(view.app.name.clone(), Nav::Apps)
                .flash("error", failure_message(&e))
                .status(failure_status(&user, &e));
            render_detail(&state, &user, page, &view, &headers, None).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_url_follows_the_forwarded_scheme_and_host() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("inner.sock"));
        assert_eq!(connect_url(&h, "demo"), "ws://inner.sock/demo/");
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("example.com:8443"),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(connect_url(&h, "demo"), "wss://example.com:8443/demo/");
        h.insert(
            "x-forwarded-host",
            HeaderValue::from_static("evil.com/x\"<script>"),
        );
        assert_eq!(connect_url(&h, "demo"), "wss://inner.sock/demo/");
    }

    #[test]
    fn every_status_has_a_word_and_a_class() {
        for s in [
            AppStatus::Building,
            AppStatus::Starting,
            AppStatus::Running,
            AppStatus::Degraded,
            AppStatus::Stopping,
            AppStatus::Stopped,
            AppStatus::Error,
        ] {
            assert_ne!(status_class(status_word(s)), "st-unknown", "{s:?}");
        }
    }

    #[test]
    fn flash_keys_are_fixed_texts() {
        assert!(flash_text("saved").is_some());
        assert!(flash_text("<script>").is_none());
    }
}
