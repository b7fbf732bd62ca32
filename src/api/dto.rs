//! Response shapes of the contract (camelCase JSON, ISO 8601 timestamps).

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::model::{ApiToken, App, CodeSource, EnvVar, Role, User};
use crate::service::apps::AppView;
use crate::spawner::{AppStatus, ContainerInfo};

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDto {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl From<&User> for UserDto {
    fn from(u: &User) -> Self {
        UserDto {
            id: u.id,
            username: u.username.clone(),
            email: u.email.clone(),
            role: u.role,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserEnvelope {
    pub user: UserDto,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsersEnvelope {
    pub users: Vec<UserDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenDto {
    pub id: Uuid,
    pub name: String,
    /// The raw token: present only in the response that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    pub token_prefix: String,
    pub user_id: Uuid,
    /// `full` (default) or `metrics` (only `GET /metrics`).
    pub scope: crate::model::TokenScope,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

impl TokenDto {
    pub fn new(t: &ApiToken, raw: Option<String>) -> Self {
        TokenDto {
            id: t.id,
            name: t.name.clone(),
            token: raw,
            token_prefix: t.token_prefix.clone(),
            user_id: t.user_id,
            scope: t.scope,
            expires_at: t.expires_at,
            last_used_at: t.last_used_at,
            created_at: t.created_at,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokenEnvelope {
    pub token: TokenDto,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TokensEnvelope {
    pub tokens: Vec<TokenDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppDto {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub r_version: String,
    pub packages: Vec<String>,
    pub code_source: CodeSource,
    pub entry_script: String,
    pub replicas: u32,
    /// Memory limit per replica, MiB.
    pub memory_mb: u64,
    /// CPU limit per replica, cores.
    pub cpus: f64,
    pub env: Vec<EnvDto>,
    pub owner_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// An environment variable; the value of a secret one is never sent.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EnvDto {
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    pub secret: bool,
}

impl From<&EnvVar> for EnvDto {
    fn from(e: &EnvVar) -> Self {
        EnvDto {
            key: e.key.clone(),
            value: (!e.secret).then(|| e.value.clone()),
            secret: e.secret,
        }
    }
}

impl From<&App> for AppDto {
    fn from(a: &App) -> Self {
        AppDto {
            id: a.id,
            name: a.name.clone(),
            slug: a.slug.clone(),
            r_version: a.r_version.clone(),
            packages: a.packages.clone(),
            code_source: a.code_source.clone(),
            entry_script: a.entry_script.clone(),
            replicas: a.replicas,
            memory_mb: a.settings.memory_mb,
            cpus: f64::from(a.settings.cpu_millis) / 1000.0,
            env: a.settings.env.iter().map(EnvDto::from).collect(),
            owner_id: a.owner_id,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// An app with its runtime status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatusDto {
    #[serde(flatten)]
    pub app: AppDto,
    pub status: AppStatus,
    pub containers: Vec<ContainerInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `/<slug>/`, only while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ws_path: Option<String>,
}

impl From<&AppView> for AppStatusDto {
    fn from(v: &AppView) -> Self {
        let running = matches!(v.runtime.status, AppStatus::Running | AppStatus::Degraded);
        AppStatusDto {
            app: AppDto::from(&v.app),
            status: v.runtime.status,
            containers: v.runtime.containers.clone(),
            error: v.runtime.error.clone(),
            ws_path: running.then(|| format!("/{}/", v.app.slug)),
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppEnvelope {
    pub app: AppDto,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppStatusEnvelope {
    pub app: AppStatusDto,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppsEnvelope {
    pub apps: Vec<AppStatusDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct OkDto {
    pub ok: bool,
}

pub const OK: OkDto = OkDto { ok: true };

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleDto {
    pub ok: bool,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_tag: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ScaleDto {
    pub ok: bool,
    pub replicas: u32,
    pub status: AppStatus,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadDto {
    pub ok: bool,
    pub path: String,
    pub filename: String,
    pub files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entry_script: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionsDto {
    pub versions: Vec<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthDto {
    /// `ok`, or `degraded` when the store cannot be read.
    pub status: String,
    pub db: bool,
    pub docker: bool,
    /// Why Docker is unavailable, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub docker_error: Option<String>,
    pub version: String,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDto {
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<String>>,
}

/// `?source=` of the logs route (documentation only: the handler reads the query).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogSourceParam {
    Build,
    Runtime,
}

/// `?period=` of the metrics and status-history routes (documentation only: the
/// handlers read the query and answer 400 for anything else).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub enum PeriodParam {
    #[serde(rename = "1h")]
    OneHour,
    #[serde(rename = "6h")]
    SixHours,
    #[serde(rename = "24h")]
    OneDay,
    #[serde(rename = "7d")]
    SevenDays,
}

/// The upload form (documentation only: the handler reads the multipart stream).
#[derive(Debug, utoipa::ToSchema)]
pub struct UploadForm {
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}
