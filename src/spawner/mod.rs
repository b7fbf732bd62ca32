//! The backend contract for running apps. A spawner knows nothing about HTTP, auth,
//! the UI or the proxy: it takes an app's spec and returns images, containers and status.
//!
//! Timeouts and concurrency limits are the caller's job, not each backend's.

pub mod docker;

use async_trait::async_trait;
use std::path::PathBuf;
use uuid::Uuid;

use crate::model::CodeSource;

/// Everything a backend needs to build and run one app.
#[derive(Debug, Clone)]
pub struct AppSpec {
    pub id: Uuid,
    pub slug: String,
    pub r_version: String,
    pub packages: Vec<String>,
    pub code_source: CodeSource,
    pub entry_script: String,
    pub replicas: u32,
    /// Extracted upload (for `CodeSource::Upload`), if any.
    pub code_dir: Option<PathBuf>,
}

/// Lifecycle state of an app as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    Building,
    Starting,
    /// All replicas healthy.
    Running,
    /// Some replicas healthy.
    Degraded,
    Stopping,
    Stopped,
    Error,
}

/// One replica, in the contract's shape.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// Short (12 character) container id.
    pub container_id: String,
    /// Docker's state word: created, running, exited, …
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The port the replica serves inside the managed network.
    pub port: u16,
}

/// The runtime view of an app. A backend that has never run the app returns
/// `Stopped` with no containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRuntime {
    pub status: AppStatus,
    pub containers: Vec<ContainerInfo>,
    pub error: Option<String>,
}

impl AppRuntime {
    pub fn stopped() -> Self {
        AppRuntime {
            status: AppStatus::Stopped,
            containers: Vec::new(),
            error: None,
        }
    }
}

/// Which log to stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogSource {
    Build,
    Runtime,
}

/// A stream of log lines, ending when the source ends.
pub type LogStream = futures_util::stream::BoxStream<'static, String>;

#[derive(Debug, thiserror::Error)]
pub enum SpawnerError {
    /// The backend cannot be reached (Docker down, socket missing). Callers answer 503.
    #[error("Docker is not available: {0}")]
    Unavailable(String),
    /// The image build failed; `log` holds the build output.
    #[error("Build failed: {reason}")]
    BuildFailed { reason: String, log: Vec<String> },
    /// The request cannot be done in the app's current state.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Internal(String),
}

#[async_trait]
pub trait Spawner: Send + Sync + 'static {
    /// Is the backend reachable? Cheap; used by health checks.
    async fn ping(&self) -> Result<(), SpawnerError>;

    /// R versions that base images exist for, newest first (`latest` excluded).
    async fn r_versions(&self) -> Result<Vec<String>, SpawnerError>;

    /// The app's runtime view. Never fails: an unreachable backend reports the app as
    /// `Stopped` with the reason in `error`.
    async fn runtime(&self, app_id: Uuid) -> AppRuntime;

    /// Build the image if its inputs changed, then start `spec.replicas` replicas.
    /// Returns once the replicas are created; readiness shows up in `runtime`.
    async fn start(&self, spec: &AppSpec) -> Result<AppStatus, SpawnerError>;

    /// Stop and remove the app's replicas (graceful, then kill after 10 s).
    async fn stop(&self, app_id: Uuid) -> Result<(), SpawnerError>;

    /// Build the image unconditionally, then (re)start the replicas. Returns the image
    /// name and tag.
    async fn rebuild(&self, spec: &AppSpec) -> Result<(String, String), SpawnerError>;

    /// Remove everything the backend holds for the app: replicas and images.
    async fn remove(&self, app_id: Uuid) -> Result<(), SpawnerError>;

    /// The app's build log (replayed, then live) or its replicas' output.
    async fn logs(&self, app_id: Uuid, source: LogSource) -> Result<LogStream, SpawnerError>;
}
