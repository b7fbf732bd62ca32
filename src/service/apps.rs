//! Apps: CRUD, lifecycle (through the spawner) and code uploads.

use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::validate::{self, schema, Problems};
use super::{blocking, with_store, AppState, ClientMeta, Principal, ServiceError, ServiceResult};
use crate::model::{App, AppSettings, AuditEntry, CodeSource, EnvVar, UploadRecord};
use crate::spawner::{AppRuntime, AppSpec, AppStatus, LogSource, LogStream};
use crate::upload::{self, UploadError};

pub const DEFAULT_ENTRY_SCRIPT: &str = "run_rserve.R";

/// A new app. Unknown fields are ignored; `null` for an optional field means absent.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateAppInput {
    #[schema(schema_with = schema::name)]
    pub name: String,
    #[schema(schema_with = schema::slug)]
    pub slug: String,
    /// Default `latest`.
    #[serde(default)]
    #[schema(schema_with = schema::r_version)]
    pub r_version: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schema::packages)]
    pub packages: Option<Vec<String>>,
    /// Default `{"type":"upload"}`.
    #[serde(default)]
    pub code_source: Option<CodeSource>,
    /// Default `run_rserve.R`.
    #[serde(default)]
    #[schema(schema_with = schema::entry_script)]
    pub entry_script: Option<String>,
    /// Default 1.
    #[serde(default, deserialize_with = "validate::int::optional")]
    #[schema(schema_with = schema::replicas_or_null)]
    pub replicas: Option<i64>,
    #[serde(default, deserialize_with = "validate::int::optional")]
    #[schema(schema_with = schema::memory_mb)]
    pub memory_mb: Option<i64>,
    #[serde(default)]
    #[schema(schema_with = schema::cpus)]
    pub cpus: Option<f64>,
    #[serde(default)]
    #[schema(schema_with = schema::new_env)]
    pub env: Option<Vec<EnvInput>>,
}

/// An environment variable as sent by a client. On update, a secret variable sent
/// without `value` keeps its stored value (clients never see it to send it back).
///
/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct EnvInput {
    #[schema(schema_with = schema::env_key)]
    pub key: String,
    #[serde(default)]
    #[schema(schema_with = schema::env_value)]
    pub value: Option<String>,
    #[serde(default)]
    pub secret: bool,
}

/// Any subset of the create fields except `slug`, which never changes. Unknown fields
/// are ignored; `null` for a field means absent (unchanged).
#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateAppInput {
    #[serde(default)]
    #[schema(schema_with = schema::name_or_null)]
    pub name: Option<String>,
    /// Present only to be refused with a clear message: sent at all (even `null`) is
    /// a 400.
    #[serde(default, deserialize_with = "validate::present")]
    #[schema(schema_with = schema::absent)]
    pub slug: bool,
    #[serde(default)]
    #[schema(schema_with = schema::r_version)]
    pub r_version: Option<String>,
    #[serde(default)]
    #[schema(schema_with = schema::packages)]
    pub packages: Option<Vec<String>>,
    #[serde(default)]
    pub code_source: Option<CodeSource>,
    #[serde(default)]
    #[schema(schema_with = schema::entry_script)]
    pub entry_script: Option<String>,
    #[serde(default, deserialize_with = "validate::int::optional")]
    #[schema(schema_with = schema::replicas_or_null)]
    pub replicas: Option<i64>,
    #[serde(default, deserialize_with = "validate::int::optional")]
    #[schema(schema_with = schema::memory_mb)]
    pub memory_mb: Option<i64>,
    #[serde(default)]
    #[schema(schema_with = schema::cpus)]
    pub cpus: Option<f64>,
    /// Replaces the whole list. At most 100 variables with distinct keys.
    #[serde(default)]
    #[schema(max_items = 100)]
    pub env: Option<Vec<EnvInput>>,
}

/// An app with what the backend says about it.
#[derive(Debug, Clone)]
pub struct AppView {
    pub app: App,
    pub runtime: AppRuntime,
}

/// Result of an upload.
#[derive(Debug, Clone)]
pub struct UploadOutcome {
    /// Where the code lives, relative to the data dir.
    pub path: String,
    pub filename: String,
    pub files: Vec<String>,
    /// Set when the upload made its only R script the entry script.
    pub entry_script: Option<String>,
}

fn not_found() -> ServiceError {
    ServiceError::NotFound("App not found".into())
}

fn check_code_source(p: &mut Problems, cs: &CodeSource) {
    if let CodeSource::Git { repo_url, branch } = cs {
        validate::repo_url(p, repo_url);
        if let Some(b) = branch {
            validate::branch(p, b);
        }
    }
}

fn check_settings(
    p: &mut Problems,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    env: Option<&[EnvInput]>,
) {
    if let Some(v) = memory_mb {
        validate::memory_mb(p, v);
    }
    if let Some(v) = cpus {
        validate::cpus(p, v);
        // Docker refuses a limit above the host's cores; say so before it does.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        p.check(v <= cores as f64, || {
            format!("cpus must be at most {cores}, the number of cores of this host")
        });
    }
    if let Some(vars) = env {
        validate::env(p, vars.iter().map(|e| (e.key.as_str(), e.value.as_deref())));
    }
}

/// Apply validated setting changes. A variable without a value keeps the value it
/// had (for secrets the client cannot read back); a new one without a value is an error.
fn apply_settings(
    settings: &mut AppSettings,
    memory_mb: Option<i64>,
    cpus: Option<f64>,
    env: Option<Vec<EnvInput>>,
) -> ServiceResult<()> {
    if let Some(v) = memory_mb {
        settings.memory_mb = v as u64;
    }
    if let Some(v) = cpus {
        settings.cpu_millis = (v * 1000.0).round() as u32;
    }
    if let Some(vars) = env {
        let mut next = Vec::with_capacity(vars.len());
        for var in vars {
            let value = match var.value {
                Some(v) => v,
                None => settings
                    .env
                    .iter()
                    .find(|e| e.key == var.key)
                    .map(|e| e.value.clone())
                    .ok_or_else(|| {
                        ServiceError::bad_request(format!("env {:?} needs a value", var.key))
                    })?,
            };
            next.push(EnvVar {
                key: var.key,
                value,
                secret: var.secret,
            });
        }
        settings.env = next;
    }
    Ok(())
}

/// Load an app the caller may touch: 404 when missing, 403 when someone else's.
pub(crate) async fn owned_app(state: &AppState, who: &Principal, id: Uuid) -> ServiceResult<App> {
    let app = with_store(&state.store, move |s| s.get_app(id))
        .await?
        .ok_or_else(not_found)?;
    if !who.is_admin() && app.owner_id != who.user.id {
        return Err(ServiceError::access_denied());
    }
    Ok(app)
}

fn audit(who: &Principal, action: &str, app: &App, meta: &ClientMeta) -> AuditEntry {
    AuditEntry::new(
        Some(&who.user),
        action,
        Some(format!("{} ({})", app.slug, app.id)),
    )
    .with_ip(meta.ip.clone())
}

pub async fn create(
    state: &AppState,
    who: &Principal,
    input: CreateAppInput,
    meta: &ClientMeta,
) -> ServiceResult<App> {
    let mut p = Problems::default();
    validate::name(&mut p, "name", &input.name);
    validate::slug(&mut p, &input.slug);
    let r_version = input.r_version.unwrap_or_else(|| "latest".into());
    validate::r_version(&mut p, &r_version);
    let packages = input.packages.unwrap_or_default();
    validate::packages(&mut p, &packages);
    let code_source = input.code_source.unwrap_or(CodeSource::Upload);
    check_code_source(&mut p, &code_source);
    let entry_script = input
        .entry_script
        .unwrap_or_else(|| DEFAULT_ENTRY_SCRIPT.into());
    validate::entry_script(&mut p, &entry_script);
    let replicas = input.replicas.unwrap_or(1);
    validate::replicas(&mut p, replicas);
    check_settings(&mut p, input.memory_mb, input.cpus, input.env.as_deref());
    p.finish()?;
    let mut settings = AppSettings::default();
    apply_settings(&mut settings, input.memory_mb, input.cpus, input.env)?;

    let now = OffsetDateTime::now_utc();
    let app = App {
        id: Uuid::new_v4(),
        name: input.name,
        slug: input.slug,
        r_version,
        packages,
        code_source,
        entry_script,
        replicas: replicas as u32,
        settings,
        owner_id: who.user.id,
        created_at: now,
        updated_at: now,
    };
    let audit = audit(who, "app.create", &app, meta);
    let stored = app.clone();
    with_store(&state.store, move |s| s.create_app(&stored, &audit)).await?;
    state.apps_changed.notify_one();
    Ok(app)
}

async fn with_runtime(state: &AppState, app: App) -> AppView {
    let runtime = state.spawner.runtime(app.id).await;
    AppView { app, runtime }
}

/// The caller's apps (every app for admins), oldest first, with status.
pub async fn list(state: &AppState, who: &Principal) -> ServiceResult<Vec<AppView>> {
    let owner = (!who.is_admin()).then_some(who.user.id);
    let apps = with_store(&state.store, move |s| s.list_apps(owner)).await?;
    let mut views = Vec::with_capacity(apps.len());
    for app in apps {
        views.push(with_runtime(state, app).await);
    }
    Ok(views)
}

pub async fn get(state: &AppState, who: &Principal, id: Uuid) -> ServiceResult<AppView> {
    let app = owned_app(state, who, id).await?;
    Ok(with_runtime(state, app).await)
}

pub async fn update(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    input: UpdateAppInput,
    meta: &ClientMeta,
) -> ServiceResult<App> {
    let mut p = Problems::default();
    if input.slug {
        p.push("slug cannot be changed; create a new app instead".into());
    }
    if let Some(v) = &input.name {
        validate::name(&mut p, "name", v);
    }
    if let Some(v) = &input.r_version {
        validate::r_version(&mut p, v);
    }
    if let Some(v) = &input.packages {
        validate::packages(&mut p, v);
    }
    if let Some(v) = &input.code_source {
        check_code_source(&mut p, v);
    }
    if let Some(v) = &input.entry_script {
        validate::entry_script(&mut p, v);
    }
    if let Some(v) = input.replicas {
        validate::replicas(&mut p, v);
    }
    check_settings(&mut p, input.memory_mb, input.cpus, input.env.as_deref());
    p.finish()?;

    let mut app = owned_app(state, who, id).await?;
    if let Some(v) = input.name {
        app.name = v;
    }
    if let Some(v) = input.r_version {
        app.r_version = v;
    }
    if let Some(v) = input.packages {
        app.packages = v;
    }
    if let Some(v) = input.code_source {
        app.code_source = v;
    }
    if let Some(v) = input.entry_script {
        app.entry_script = v;
    }
    if let Some(v) = input.replicas {
        app.replicas = v as u32;
    }
    apply_settings(&mut app.settings, input.memory_mb, input.cpus, input.env)?;
    app.updated_at = OffsetDateTime::now_utc();
    let audit = audit(who, "app.update", &app, meta);
    let stored = app.clone();
    with_store(&state.store, move |s| s.update_app(&stored, &audit)).await?;
    Ok(app)
}

/// Delete an app: its replicas and images first (so nothing runs unrecorded), then the
/// record, then its uploaded code.
pub async fn delete(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    meta: &ClientMeta,
) -> ServiceResult<()> {
    let app = owned_app(state, who, id).await?;
    state.spawner.remove(app.id).await?;
    let audit = audit(who, "app.delete", &app, meta);
    with_store(&state.store, move |s| s.delete_app(id, &audit)).await?;
    state.apps_changed.notify_one();
    let dir = upload_dir(state, id);
    blocking(move || remove_dir_if_present(&dir))
        .await?
        .map_err(|e| {
            ServiceError::Internal(format!(
                "app deleted, but its upload could not be removed: {e}"
            ))
        })?;
    Ok(())
}

fn remove_dir_if_present(dir: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

fn upload_dir(state: &AppState, id: Uuid) -> std::path::PathBuf {
    state.config.uploads_dir().join(id.to_string())
}

async fn spec(state: &AppState, app: &App) -> AppSpec {
    let dir = upload_dir(state, app.id);
    let code_dir = matches!(app.code_source, CodeSource::Upload)
        .then_some(dir)
        .filter(|d| d.is_dir());
    AppSpec {
        id: app.id,
        slug: app.slug.clone(),
        r_version: app.r_version.clone(),
        packages: app.packages.clone(),
        code_source: app.code_source.clone(),
        entry_script: app.entry_script.clone(),
        replicas: app.replicas,
        code_dir,
        memory_mb: Some(app.settings.memory_mb),
        cpus: Some(f64::from(app.settings.cpu_millis) / 1000.0),
        env: app
            .settings
            .env
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect(),
    }
}

/// Lifecycle verbs. The record of intent (audit) is written before the backend acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    Start,
    Stop,
    Restart,
    Rebuild,
}

/// What a lifecycle call reports back.
#[derive(Debug, Clone)]
pub struct LifecycleOutcome {
    pub status: &'static str,
    /// Set by rebuild.
    pub image: Option<(String, String)>,
}

pub async fn lifecycle(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    verb: Lifecycle,
    meta: &ClientMeta,
) -> ServiceResult<LifecycleOutcome> {
    let app = owned_app(state, who, id).await?;
    // Fail fast, before recording intent, when the backend is unreachable.
    state.spawner.ping().await?;
    let action = match verb {
        Lifecycle::Start => "app.start",
        Lifecycle::Stop => "app.stop",
        Lifecycle::Restart => "app.restart",
        Lifecycle::Rebuild => "app.rebuild",
    };
    let audit = audit(who, action, &app, meta);
    with_store(&state.store, move |s| s.record(&audit)).await?;
    let spec = spec(state, &app).await;
    let spawner = &state.spawner;
    Ok(match verb {
        Lifecycle::Start => {
            // Already running with this image and settings: say so, not "starting".
            let status = match spawner.start(&spec).await? {
                AppStatus::Running => "running",
                _ => "starting",
            };
            LifecycleOutcome {
                status,
                image: None,
            }
        }
        Lifecycle::Stop => {
            spawner.stop(app.id).await?;
            LifecycleOutcome {
                status: "stopped",
                image: None,
            }
        }
        Lifecycle::Restart => {
            spawner.restart(&spec).await?;
            LifecycleOutcome {
                status: "restarting",
                image: None,
            }
        }
        Lifecycle::Rebuild => {
            let image = spawner.rebuild(&spec).await?;
            LifecycleOutcome {
                status: "starting",
                image: Some(image),
            }
        }
    })
}

/// Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
pub struct ScaleInput {
    #[serde(deserialize_with = "validate::int::required")]
    #[schema(schema_with = schema::replicas)]
    pub replicas: i64,
}

/// Set the replica count. A running app is brought to the new count now (its replicas
/// are replaced); a stopped one gets it on its next start.
pub async fn scale(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    input: ScaleInput,
    meta: &ClientMeta,
) -> ServiceResult<(App, AppStatus)> {
    let mut p = Problems::default();
    validate::replicas(&mut p, input.replicas);
    p.finish()?;
    let mut app = owned_app(state, who, id).await?;
    app.replicas = input.replicas as u32;
    app.updated_at = OffsetDateTime::now_utc();
    let audit = audit(who, "app.scale", &app, meta);
    let stored = app.clone();
    with_store(&state.store, move |s| s.update_app(&stored, &audit)).await?;
    let runtime = state.spawner.runtime(app.id).await;
    let status = if runtime.containers.is_empty() {
        runtime.status
    } else {
        let spec = spec(state, &app).await;
        state.spawner.start(&spec).await?
    };
    Ok((app, status))
}

pub async fn logs(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    source: LogSource,
) -> ServiceResult<LogStream> {
    let app = owned_app(state, who, id).await?;
    Ok(state.spawner.logs(app.id, source).await?)
}

pub async fn r_versions(state: &AppState) -> ServiceResult<Vec<String>> {
    Ok(state.spawner.r_versions().await?)
}

/// An uploaded file: in memory (small callers, tests), or spooled to a temp file as it
/// arrived (the HTTP handlers: a 50 MB upload never sits in memory).
pub enum UploadData {
    Bytes(bytes::Bytes),
    File(tempfile::NamedTempFile),
}

impl From<bytes::Bytes> for UploadData {
    fn from(b: bytes::Bytes) -> Self {
        UploadData::Bytes(b)
    }
}

impl UploadData {
    fn len(&self) -> std::io::Result<u64> {
        match self {
            UploadData::Bytes(b) => Ok(b.len() as u64),
            UploadData::File(f) => Ok(f.as_file().metadata()?.len()),
        }
    }
}

/// Install uploaded code for an upload-sourced app. The previous upload stays intact
/// unless the new one is complete and safe.
pub async fn upload(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    filename: String,
    data: impl Into<UploadData>,
    meta: &ClientMeta,
) -> ServiceResult<UploadOutcome> {
    let data = data.into();
    let mut app = owned_app(state, who, id).await?;
    if !matches!(app.code_source, CodeSource::Upload) {
        return Err(ServiceError::bad_request(
            "This app uses git source. Change codeSource to \"upload\" first.",
        ));
    }
    let len = data
        .len()
        .map_err(|e| ServiceError::Internal(format!("could not read the upload: {e}")))?;
    let max = state.limits.upload_max_bytes();
    if len > max {
        return Err(ServiceError::PayloadTooLarge(format!(
            "The file is larger than the {} MB upload limit",
            max / (1024 * 1024)
        )));
    }
    let dest = upload_dir(state, id);
    let uploads = state.config.uploads_dir();
    let name = filename.clone();
    let _one_at_a_time = state.upload_lock.lock().await;
    let installed = blocking(move || {
        std::fs::create_dir_all(&uploads).map_err(UploadError::Io)?;
        let limits = upload::Limits::default();
        match data {
            UploadData::Bytes(b) => upload::install(&b, &name, &dest, &limits),
            UploadData::File(f) => {
                let file = std::io::BufReader::new(f.as_file());
                upload::install_from(file, &name, &dest, &limits)
            }
        }
    })
    .await?
    .map_err(|e| {
        if e.is_client_error() {
            ServiceError::bad_request(e.to_string())
        } else {
            ServiceError::Internal(format!("could not store the upload: {e}"))
        }
    })?;

    let scripts: Vec<&String> = installed
        .files
        .iter()
        .filter(|f| f.ends_with(".R") && !f.contains('/'))
        .collect();
    let all_r = installed.files.iter().filter(|f| f.ends_with(".R")).count();
    let entry_script = match scripts.as_slice() {
        [only] if all_r == 1 && validate_entry(only) => Some((*only).clone()),
        _ => None,
    };
    let path = format!("uploads/{id}");
    let record = UploadRecord {
        app_id: id,
        filename: filename.clone(),
        path: path.clone(),
        files: installed.files.clone(),
        total_bytes: installed.total_bytes,
        uploaded_at: OffsetDateTime::now_utc(),
    };
    if let Some(script) = &entry_script {
        app.entry_script = script.clone();
        app.updated_at = OffsetDateTime::now_utc();
    }
    let audit = audit(who, "app.upload", &app, meta);
    let update = entry_script.is_some().then_some(app);
    with_store(&state.store, move |s| {
        s.set_upload(&record, update.as_ref(), &audit)
    })
    .await?;
    Ok(UploadOutcome {
        path,
        filename,
        files: installed.files,
        entry_script,
    })
}

fn validate_entry(name: &str) -> bool {
    let mut p = Problems::default();
    validate::entry_script(&mut p, name);
    p.finish().is_ok()
}

/// Would `create` accept this slug now? `Ok`, or the error `create` would give for it
/// (400 with the validation message, 409 when an app has it). Read-only: a slug free
/// now can still be taken before the create, which then answers 409 itself.
pub async fn check_slug(state: &AppState, slug: &str) -> ServiceResult<()> {
    let mut p = Problems::default();
    validate::slug(&mut p, slug);
    p.finish()?;
    let wanted = slug.to_string();
    if with_store(&state.store, move |s| s.get_app_by_slug(&wanted))
        .await?
        .is_some()
    {
        return Err(crate::store::StoreError::SlugTaken(slug.to_string()).into());
    }
    Ok(())
}
