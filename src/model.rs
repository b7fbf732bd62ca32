//! Domain records shared by the store, the services and the API.
//!
//! These are plain data: no I/O, no HTTP. The store persists them (as JSON values
//! in versioned tables) and the API maps them to the contract's camelCase shapes.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// A person's role. Admins may touch every app and manage users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::User => "user",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: Option<String>,
    pub role: Role,
    /// PHC string (argon2id). Never leaves the process.
    pub password_hash: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A login session. The id is the cookie value: 128 random bits, hex encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub id: String,
    pub user_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What an API token may do. Tokens stored before scopes existed read as `Full`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum TokenScope {
    /// Everything its user may do.
    #[default]
    Full,
    /// Only `GET /metrics` (for a Prometheus server); refused everywhere else. Only
    /// admins can create one, and it stops working if its user stops being admin.
    Metrics,
}

/// An API token. Only the SHA-256 of the raw token is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: Uuid,
    pub user_id: Uuid,
    #[serde(default)]
    pub scope: TokenScope,
    pub name: String,
    /// Lower-case hex SHA-256 of the raw token.
    pub token_hash: String,
    /// First 12 characters of the raw token, for display.
    pub token_prefix: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Where an app's code comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum CodeSource {
    Git {
        #[serde(rename = "repoUrl")]
        #[schema(schema_with = crate::service::validate::schema::repo_url)]
        repo_url: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        #[schema(schema_with = crate::service::validate::schema::branch)]
        branch: Option<String>,
    },
    Upload,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct App {
    pub id: Uuid,
    pub name: String,
    pub slug: String,
    pub r_version: String,
    pub packages: Vec<String>,
    pub code_source: CodeSource,
    pub entry_script: String,
    pub replicas: u32,
    /// Resource limits and environment. Older records without it read as defaults.
    #[serde(default)]
    pub settings: AppSettings,
    pub owner_id: Uuid,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// Memory limit of each replica when none is set (MiB).
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// CPU limit of each replica when none is set (thousandths of a core).
pub const DEFAULT_CPU_MILLIS: u32 = 1000;

/// Per-app container settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppSettings {
    /// Memory limit per replica, MiB.
    pub memory_mb: u64,
    /// CPU limit per replica, thousandths of a core (integer so records stay `Eq`).
    pub cpu_millis: u32,
    /// Environment variables given to every replica.
    pub env: Vec<EnvVar>,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            memory_mb: DEFAULT_MEMORY_MB,
            cpu_millis: DEFAULT_CPU_MILLIS,
            env: Vec::new(),
        }
    }
}

/// One environment variable. The value of a secret one never leaves the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvVar {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub secret: bool,
}

/// Index entry for an app's current upload (the files live under the data dir).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadRecord {
    pub app_id: Uuid,
    /// The file name the client sent.
    pub filename: String,
    /// Directory holding the extracted code, relative to the data dir.
    pub path: String,
    /// Regular files in the upload, relative to `path`, sorted.
    pub files: Vec<String>,
    pub total_bytes: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub uploaded_at: OffsetDateTime,
}

/// One audit log line: who did what, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The acting user; `None` for the system (first-run bootstrap, CLI).
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    /// Dotted verb, e.g. `auth.login`, `token.create`, `app.start`.
    pub action: String,
    /// What was acted on (an id or a name), if anything.
    pub target: Option<String>,
    /// Client address, when the action came over the network.
    pub ip: Option<String>,
}

impl AuditEntry {
    pub fn new(actor: Option<&User>, action: &str, target: Option<String>) -> Self {
        AuditEntry {
            at: OffsetDateTime::now_utc(),
            actor_id: actor.map(|u| u.id),
            actor_name: actor.map_or_else(|| "system".to_string(), |u| u.username.clone()),
            action: action.to_string(),
            target,
            ip: None,
        }
    }

    pub fn with_ip(mut self, ip: Option<String>) -> Self {
        self.ip = ip;
        self
    }
}

/// An ACME account at one CA directory. `credentials` is the ACME client's own JSON
/// (it holds the account's private key): a secret, never shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeAccount {
    pub directory: String,
    pub credentials: String,
    pub contact: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// A certificate obtained from an ACME CA: PEM chain (leaf first) and its private key
/// (a secret). `name` identifies it: the CA directory and the sorted domain names, so
/// changing either makes a new certificate rather than serving one that does not fit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCertificate {
    pub name: String,
    pub directory: String,
    pub domains: Vec<String>,
    pub chain_pem: String,
    pub key_pem: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub issued_at: OffsetDateTime,
}

impl StoredCertificate {
    /// The store key for a certificate of `domains` from `directory`.
    pub fn name_for(directory: &str, domains: &[String]) -> String {
        let mut sorted = domains.to_vec();
        sorted.sort();
        sorted.dedup();
        format!("{directory} {}", sorted.join(","))
    }
}

#[cfg(test)]
mod token_scope_tests {
    use super::*;

    #[test]
    fn tokens_stored_before_scopes_read_as_full() {
        let old = r#"{"id":"6f1c3e2a-8a4c-4d84-9a43-0b7e3f7f4f11","user_id":"6f1c3e2a-8a4c-4d84-9a43-0b7e3f7f4f12",
            "name":"ci","token_hash":"ab","token_prefix":"rsp_abcdefgh","expires_at":null,
            "last_used_at":null,"created_at":"2026-01-01T00:00:00Z"}"#;
        let t: ApiToken = serde_json::from_str(old).unwrap();
        assert_eq!(t.scope, TokenScope::Full);
        let mut m = t.clone();
        m.scope = TokenScope::Metrics;
        let back: ApiToken = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
        assert_eq!(back.scope, TokenScope::Metrics);
    }
}
