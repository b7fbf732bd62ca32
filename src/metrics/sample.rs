//! What the collector measures, and the handle readers use to get the latest round.
//!
//! The collector ([`super::collector`]) writes one [`Snapshot`] per interval into
//! [`Latest`]; readers (the API, Prometheus `/metrics`) `load()` it without locks and
//! without touching the store. History (older rounds) lives in the store.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::spawner::AppStatus;

/// An app's status as the status history records it: the spawner's view folded to the
/// contract's words, plus `Unknown` for time nobody watched (the binary was down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[repr(u8)]
pub enum HistoryStatus {
    Unknown = 0,
    Running = 1,
    Starting = 2,
    Degraded = 3,
    Stopping = 4,
    Stopped = 5,
    Error = 6,
}

impl HistoryStatus {
    /// How much a status says about its minute: a minute stores the most telling status
    /// seen in it (trouble first, then change, then steady states), so a short error or
    /// a start and stop within one minute are not hidden by whatever came last.
    pub fn weight(self) -> u8 {
        match self {
            HistoryStatus::Unknown => 0,
            HistoryStatus::Stopped => 1,
            HistoryStatus::Running => 2,
            HistoryStatus::Stopping => 3,
            HistoryStatus::Starting => 4,
            HistoryStatus::Degraded => 5,
            HistoryStatus::Error => 6,
        }
    }

    /// The spawner's status in history words. A build is `Starting` unless older
    /// replicas keep serving (`serving`), then it is `Running`.
    pub fn from_app(status: AppStatus, serving: bool) -> Self {
        match status {
            AppStatus::Building if serving => HistoryStatus::Running,
            AppStatus::Building | AppStatus::Starting => HistoryStatus::Starting,
            AppStatus::Running => HistoryStatus::Running,
            AppStatus::Degraded => HistoryStatus::Degraded,
            AppStatus::Stopping => HistoryStatus::Stopping,
            AppStatus::Stopped => HistoryStatus::Stopped,
            AppStatus::Error => HistoryStatus::Error,
        }
    }

    /// The stored byte (see [`HistoryStatus::from_u8`]).
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// Unrecognised bytes read as `Unknown` (a newer binary may add words).
    pub fn from_u8(b: u8) -> Self {
        match b {
            1 => HistoryStatus::Running,
            2 => HistoryStatus::Starting,
            3 => HistoryStatus::Degraded,
            4 => HistoryStatus::Stopping,
            5 => HistoryStatus::Stopped,
            6 => HistoryStatus::Error,
            _ => HistoryStatus::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HistoryStatus::Unknown => "unknown",
            HistoryStatus::Running => "running",
            HistoryStatus::Starting => "starting",
            HistoryStatus::Degraded => "degraded",
            HistoryStatus::Stopping => "stopping",
            HistoryStatus::Stopped => "stopped",
            HistoryStatus::Error => "error",
        }
    }
}

/// One replica's resource use over the last interval (from Docker's stats).
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSample {
    /// Short (12 character) container id.
    pub container_id: String,
    /// CPU use in percent of one core (200 = two cores busy); 0 on the first sample of
    /// a container (no previous reading to take a delta from).
    pub cpu_percent: f64,
    /// Memory in use without the page cache, bytes.
    pub memory_bytes: u64,
    /// The container's memory limit, bytes (0 when Docker reports none).
    pub memory_limit_bytes: u64,
    /// Bytes received / sent on all interfaces since the previous sample (0 on the
    /// first).
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
}

/// An app's traffic through the proxy over the last interval, from its counters.
/// Rates are per minute (the interval's count scaled to 60 s).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficSample {
    /// Responses per minute by status class (WebSocket handshakes count as 1xx).
    pub requests_per_min: f64,
    pub responses_2xx_per_min: f64,
    pub responses_3xx_per_min: f64,
    pub responses_4xx_per_min: f64,
    pub responses_5xx_per_min: f64,
    /// Requests that ended before any response, per minute.
    pub no_response_per_min: f64,
    /// WebSockets open now, and established per minute.
    pub websockets_open: u64,
    pub websockets_opened_per_min: f64,
    /// Bytes from / to clients over the interval.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Failed connection attempts to replicas over the interval.
    pub connect_errors: u64,
    /// HTTP latency (to response headers) percentiles over the interval, milliseconds;
    /// `None` without requests in the interval. Upper bounds of histogram buckets.
    pub latency_p50_ms: Option<f64>,
    pub latency_p95_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// One app in one collection round.
#[derive(Debug, Clone, PartialEq)]
pub struct AppSample {
    pub app_id: Uuid,
    pub slug: String,
    /// The app's status at collection time.
    pub status: HistoryStatus,
    /// Replicas sampled (running containers that answered Docker's stats call).
    pub containers: u32,
    /// Sums over the app's replicas (CPU in percent of one core).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Traffic through the proxy; `None` when the app is not in the route table.
    pub traffic: Option<TrafficSample>,
    /// Per replica, ordered by container id.
    pub replicas: Vec<ContainerSample>,
    pub collected_at: OffsetDateTime,
}

/// The whole host in one collection round: sums over every app's replicas.
#[derive(Debug, Clone, PartialEq)]
pub struct SystemSample {
    /// Running containers sampled.
    pub active_containers: u32,
    /// Apps with at least one sampled container.
    pub active_apps: u32,
    /// CPU cores Docker reports for the host.
    pub host_cpus: u32,
    /// CPU in percent of one core (sum over containers; at most `host_cpus * 100`).
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Sum of every app's requests per minute; `None` when no app has traffic data.
    pub requests_per_min: Option<f64>,
    pub collected_at: OffsetDateTime,
}

/// One collection round. `system` is `None` until the first round that reached
/// Docker, and again while Docker is down (then `apps` holds no container figures).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub system: Option<SystemSample>,
    pub apps: HashMap<Uuid, AppSample>,
    /// When this round ran (`None` before the first).
    pub collected_at: Option<OffsetDateTime>,
    /// The collector's own figures, cumulative since it started.
    pub collector: CollectorStats,
}

/// What the collector itself has done (for its own monitoring and the benchmarks).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CollectorStats {
    /// Rounds run.
    pub rounds: u64,
    /// Docker API calls made (one ping per round plus one stats call per container).
    pub docker_calls: u64,
    /// Stats calls that failed or timed out (the container was skipped that round).
    pub failed_samples: u64,
    /// Wall time of the last round, seconds.
    pub last_round_secs: f64,
}

/// The latest [`Snapshot`]: cheap to clone, written by the collector, read lock-free.
#[derive(Clone, Default)]
pub struct Latest {
    inner: Arc<ArcSwap<Snapshot>>,
}

impl Latest {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest round (an empty snapshot before the first).
    pub fn load(&self) -> Arc<Snapshot> {
        self.inner.load_full()
    }

    /// Replace the latest round (the collector; tests).
    pub fn publish(&self, snapshot: Snapshot) {
        self.inner.store(Arc::new(snapshot));
    }
}

impl std::fmt::Debug for Latest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Latest").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_bytes_round_trip() {
        for s in [
            HistoryStatus::Unknown,
            HistoryStatus::Running,
            HistoryStatus::Starting,
            HistoryStatus::Degraded,
            HistoryStatus::Stopping,
            HistoryStatus::Stopped,
            HistoryStatus::Error,
        ] {
            assert_eq!(HistoryStatus::from_u8(s.as_u8()), s);
        }
        assert_eq!(HistoryStatus::from_u8(200), HistoryStatus::Unknown);
        assert_eq!(
            HistoryStatus::from_app(AppStatus::Building, true),
            HistoryStatus::Running
        );
    }

    #[test]
    fn latest_swaps() {
        let l = Latest::new();
        assert!(l.load().system.is_none());
        let s = Snapshot {
            collected_at: Some(OffsetDateTime::UNIX_EPOCH),
            ..Default::default()
        };
        l.clone().publish(s.clone());
        assert_eq!(*l.load(), s);
    }
}
