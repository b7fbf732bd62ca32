//! The backend contract for running apps. A spawner knows nothing about HTTP, auth,
//! the UI or the proxy: it takes an app's spec and returns images, containers and status.
//!
//! Timeouts and concurrency limits across apps are the caller's job, not each
//! backend's. A backend does serialise lifecycle calls on the *same* app (a `stop`
//! issued during a `start` waits for it), so callers need no per-app lock.

pub mod docker;

use async_trait::async_trait;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use uuid::Uuid;

use crate::model::CodeSource;

/// Memory limit per replica when the spec sets none (MiB).
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// CPU limit per replica when the spec sets none (cores).
pub const DEFAULT_CPUS: f64 = 1.0;
/// The port Rserve serves WebSockets on inside every replica.
pub const RSERVE_PORT: u16 = 8081;

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
    /// Memory limit per replica in MiB (swap is not allowed on top); `None` =
    /// [`DEFAULT_MEMORY_MB`].
    pub memory_mb: Option<u64>,
    /// CPU limit per replica in cores, e.g. 0.5; `None` = [`DEFAULT_CPUS`].
    pub cpus: Option<f64>,
    /// Environment variables of every replica, in order.
    pub env: Vec<(String, String)>,
}

impl AppSpec {
    pub fn memory_mb(&self) -> u64 {
        self.memory_mb.unwrap_or(DEFAULT_MEMORY_MB)
    }

    pub fn cpus(&self) -> f64 {
        self.cpus.unwrap_or(DEFAULT_CPUS)
    }
}

/// Lifecycle state of an app as the backend sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AppStatus {
    /// The image is being built (replicas of the previous image, if any, keep running).
    Building,
    /// Replicas exist but none is healthy yet.
    Starting,
    /// All replicas healthy.
    Running,
    /// Some replicas healthy.
    Degraded,
    Stopping,
    /// No replicas.
    Stopped,
    /// The last build failed, or no replica is healthy and they crashed or were
    /// reported unhealthy; `AppRuntime::error` says why.
    Error,
}

/// One replica, in the contract's shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerInfo {
    /// Short (12 character) container id.
    pub container_id: String,
    /// Docker's state word: created, running, restarting, exited, …
    pub status: String,
    /// starting, healthy or unhealthy; absent when the replica has no health check.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_status: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// The port the replica serves inside the managed network.
    pub port: u16,
    /// Container name (`rserve-<slug>-<n>`). Internal: not part of the API shape.
    #[serde(skip)]
    pub name: String,
    /// Replica number, from 1. Internal.
    #[serde(skip)]
    pub replica: u32,
    /// Where the proxy connects: the replica's address on the managed network and
    /// [`RSERVE_PORT`]. `None` while it has no address. Internal.
    #[serde(skip)]
    pub addr: Option<SocketAddr>,
}

impl ContainerInfo {
    /// Running and its health check passes: the proxy may send traffic here.
    pub fn is_healthy(&self) -> bool {
        // No health check at all (not the case for our images): running is all we know.
        self.status == "running" && self.health_status.as_deref().is_none_or(|h| h == "healthy")
    }
}

/// The runtime view of an app. A backend that has never run the app returns
/// `Stopped` with no containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppRuntime {
    pub status: AppStatus,
    /// Replicas ordered by replica number.
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

    /// Addresses of the healthy replicas: the proxy's upstream pool for this app.
    pub fn healthy_addrs(&self) -> Vec<SocketAddr> {
        self.containers
            .iter()
            .filter(|c| c.is_healthy())
            .filter_map(|c| c.addr)
            .collect()
    }
}

/// What [`Spawner::reconcile`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Known apps that have replicas; they are now tracked (and kept running).
    pub adopted: Vec<Uuid>,
    /// Apps unknown to the caller whose replicas and images were removed.
    pub removed: Vec<Uuid>,
    /// Known apps whose replicas disappeared without a `stop` (removed outside
    /// rserve-proxy); they now report `Stopped` with an error.
    pub vanished: Vec<Uuid>,
}

/// One replica's resource counters read at one moment (one-shot: no waiting for a
/// second reading). CPU and network are cumulative; the caller keeps the previous
/// reading and takes deltas.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerStats {
    /// Short (12 character) container id.
    pub container_id: String,
    /// CPU time the container used since it started, nanoseconds.
    pub cpu_total_ns: u64,
    /// The host's CPU time (all cores) at the same moment, nanoseconds; `None` when
    /// the backend does not report it.
    pub system_cpu_ns: Option<u64>,
    /// CPU cores the host has online.
    pub online_cpus: u32,
    /// Memory in use without the page cache, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 when none is reported).
    pub memory_limit_bytes: u64,
    /// Bytes received / sent on all interfaces since the container started.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
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

/// Upper bounds (seconds) of the build-duration buckets; a last bucket holds the rest.
pub const BUILD_BOUNDS_SECS: [u64; 9] = [5, 10, 30, 60, 120, 300, 600, 1200, 1800];

/// Image builds a backend did since it started, for metrics. Plain atomics: the
/// backend adds, readers take a [`BuildStats::snapshot`].
#[derive(Debug, Default)]
pub struct BuildStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    /// Per bucket of [`BUILD_BOUNDS_SECS`] (not cumulative), plus the overflow bucket.
    buckets: [AtomicU64; BUILD_BOUNDS_SECS.len() + 1],
    sum_ms: AtomicU64,
}

impl BuildStats {
    /// A start or rebuild that had to produce an image failed (whether or not the
    /// image build itself had begun).
    pub fn failure(&self) {
        self.failed.fetch_add(1, Relaxed);
    }

    pub fn success(&self) {
        self.succeeded.fetch_add(1, Relaxed);
    }

    /// How long an image build ran (success or not).
    pub fn duration(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUILD_BOUNDS_SECS.partition_point(|&b| (b as f64) < secs);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ms
            .fetch_add(u64::try_from(d.as_millis()).unwrap_or(u64::MAX), Relaxed);
    }

    pub fn snapshot(&self) -> BuildStatsSnapshot {
        BuildStatsSnapshot {
            succeeded: self.succeeded.load(Relaxed),
            failed: self.failed.load(Relaxed),
            duration_counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            duration_sum: Duration::from_millis(self.sum_ms.load(Relaxed)),
        }
    }
}

/// [`BuildStats`] read at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuildStatsSnapshot {
    pub succeeded: u64,
    pub failed: u64,
    /// Builds per duration bucket of [`BUILD_BOUNDS_SECS`] (not cumulative); one more
    /// entry than bounds. Empty when the backend keeps no durations.
    pub duration_counts: Vec<u64>,
    pub duration_sum: Duration,
}

/// A start or rebuild whose image could not be made: what alerts report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildFailure {
    pub app_id: Uuid,
    pub reason: String,
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

    /// Runtime views of every app the backend holds something for (replicas, a
    /// build in progress or a failed one). Same rules as [`Spawner::runtime`]; an
    /// unreachable backend answers an empty map.
    async fn runtimes(&self) -> HashMap<Uuid, AppRuntime>;

    /// A counter that increases whenever any app's runtime view may have changed
    /// (status, health, addresses). Watch it and re-read [`Spawner::runtimes`].
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// Build the image if its inputs changed (the image is reused otherwise), then
    /// run `spec.replicas` replicas. Replicas already running the same image with the
    /// same settings are left alone; otherwise they are replaced. Returns once the
    /// replicas are created and started (usually `Starting`); health shows up in
    /// `runtime`. A failed build returns `BuildFailed` and leaves the previous image
    /// and replicas running; the app then reports `Error` with the reason.
    async fn start(&self, spec: &AppSpec) -> Result<AppStatus, SpawnerError>;

    /// Stop and remove the app's replicas (SIGTERM, SIGKILL after 10 s). Clears a
    /// previous error. Stopping an app without replicas is a no-op.
    async fn stop(&self, app_id: Uuid) -> Result<(), SpawnerError>;

    /// Stop the replicas, then start again from `spec` (building first if its inputs
    /// changed).
    async fn restart(&self, spec: &AppSpec) -> Result<AppStatus, SpawnerError> {
        self.stop(spec.id).await?;
        self.start(spec).await
    }

    /// Build the image unconditionally (the layer cache still applies), then replace
    /// the replicas with ones of the new image. Returns the image name and tag. A
    /// failed build behaves as in `start`.
    async fn rebuild(&self, spec: &AppSpec) -> Result<(String, String), SpawnerError>;

    /// Remove everything the backend holds for the app: replicas and images.
    async fn remove(&self, app_id: Uuid) -> Result<(), SpawnerError>;

    /// The app's build log (the last build by this process replayed, then live lines
    /// until it ends; empty if there was none) or its replicas' output (the last 200
    /// lines of each, then followed until they stop; each line prefixed with the
    /// replica's name and ` | `; ends at once when there are no replicas).
    async fn logs(&self, app_id: Uuid, source: LogSource) -> Result<LogStream, SpawnerError>;

    /// Bring the backend's view in line with the caller's records, at startup and
    /// whenever the caller likes. `known` holds the ids of every app that exists.
    /// Replicas of known apps are adopted as they are (never restarted); replicas and
    /// images of unknown apps are removed.
    async fn reconcile(&self, known: &HashSet<Uuid>) -> Result<ReconcileReport, SpawnerError>;

    /// Resource counters of one running replica (by the `container_id` of its
    /// [`ContainerInfo`]), read once without streaming. `Ok(None)` when the container
    /// is gone or not running; `Unavailable` when the backend cannot be reached.
    /// Callers bound concurrency and time. Backends without stats answer `Ok(None)`.
    async fn container_stats(
        &self,
        _container_id: &str,
    ) -> Result<Option<ContainerStats>, SpawnerError> {
        Ok(None)
    }

    /// Builds since this backend started (counts and durations), for metrics.
    fn build_stats(&self) -> BuildStatsSnapshot {
        BuildStatsSnapshot::default()
    }

    /// Every build failure from now on, as it happens (a lagging receiver loses the
    /// oldest). `None` when the backend does not report them.
    fn build_failures(&self) -> Option<tokio::sync::broadcast::Receiver<BuildFailure>> {
        None
    }
}
