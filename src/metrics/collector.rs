//! The collector: a background task that, every `metrics_interval_secs`, samples each
//! running replica through the spawner (one-shot Docker stats, at most
//! [`CONCURRENCY`] at a time, each bounded by a timeout), reads the proxy's counters,
//! publishes the round to [`Latest`] and writes history to the store. Once a minute it
//! prunes history and the audit log in small transactions.
//!
//! Docker down: no container samples and no history rows for that round (the status
//! history shows those minutes as unknown), logged once when it goes and once when it
//! comes back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt};
use time::OffsetDateTime;
use tokio::sync::watch;
use uuid::Uuid;

use super::maths::{self, bytes_to_mb, Point};
use super::sample::{
    AppSample, CollectorStats, ContainerSample, HistoryStatus, Latest, Snapshot, SystemSample,
};
use crate::proxy::counters::CountersSnapshot;
use crate::proxy::routes::Routes;
use crate::service::with_store;
use crate::spawner::{AppRuntime, ContainerStats, Spawner, SpawnerError};
use crate::store::{Retention, Store, SYSTEM_SERIES};

/// Stats calls in flight at once.
pub const CONCURRENCY: usize = 8;
/// Longest wait for one container's stats.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Rows deleted per pruning transaction (each takes well under a few ms).
const PRUNE_BATCH: usize = 200;
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub struct Collector {
    pub spawner: Arc<dyn Spawner>,
    pub routes: Routes,
    pub store: Store,
    pub latest: Latest,
    pub interval: Duration,
    pub retention: Retention,
    /// Audit entries older than this are pruned; `None` keeps them for ever.
    pub audit_retention: Option<Duration>,
}

/// What one round remembers for the next: cumulative readings to take deltas from.
#[derive(Default)]
struct Memory {
    containers: HashMap<String, (ContainerStats, Instant)>,
    counters: HashMap<Uuid, (CountersSnapshot, Instant)>,
    docker_down: bool,
    stats: CollectorStats,
}

/// Run until `shutdown` turns true.
pub async fn run(c: Collector, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(c.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut mem = Memory::default();
    let mut last_prune: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let started = Instant::now();
        let now = OffsetDateTime::now_utc();
        let snapshot = round(&c, &mut mem, now).await;
        mem.stats.rounds += 1;
        mem.stats.last_round_secs = started.elapsed().as_secs_f64();
        let mut snapshot = snapshot;
        snapshot.collector = mem.stats;
        c.latest.publish(snapshot);
        if last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
            last_prune = Some(Instant::now());
            prune(&c, now).await;
        }
    }
}

/// One collection round at `now`: sample, publish-ready snapshot, history written.
async fn round(c: &Collector, mem: &mut Memory, now: OffsetDateTime) -> Snapshot {
    let ts = now.unix_timestamp();
    mem.stats.docker_calls += 1;
    if let Err(e) = c.spawner.ping().await {
        if !mem.docker_down {
            tracing::warn!(error = %e, "metrics: Docker unreachable; no container samples until it answers");
            mem.docker_down = true;
        }
        mem.containers.clear();
        return Snapshot {
            collected_at: Some(now),
            ..Default::default()
        };
    }
    if mem.docker_down {
        tracing::info!("metrics: Docker answers again; sampling resumes");
        mem.docker_down = false;
    }
    let runtimes = c.spawner.runtimes().await;
    let apps = match with_store(&c.store, |s| s.list_apps(None)).await {
        Ok(apps) => apps,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: cannot read apps from the store");
            Vec::new()
        }
    };

    let sampled = sample_containers(c.spawner.as_ref(), &runtimes, &mut mem.stats).await;
    let instant = Instant::now();
    let mut seen: HashMap<String, (ContainerStats, Instant)> = HashMap::new();
    let mut per_app: HashMap<Uuid, Vec<ContainerSample>> = HashMap::new();
    for (app, stats) in sampled {
        let prev = mem.containers.get(&stats.container_id);
        per_app
            .entry(app)
            .or_default()
            .push(container_sample(prev, &stats, instant));
        seen.insert(stats.container_id.clone(), (stats, instant));
    }
    // Containers not seen this round are forgotten (stopped, removed or failed).
    mem.containers = seen;

    let counters: HashMap<Uuid, CountersSnapshot> = c
        .routes
        .counters()
        .into_iter()
        .map(|e| (e.app_id, e.counters))
        .collect();

    let mut snapshot = Snapshot {
        collected_at: Some(now),
        ..Default::default()
    };
    let mut points: Vec<(Uuid, Point)> = Vec::new();
    let mut statuses: Vec<(Uuid, HistoryStatus)> = Vec::new();
    let mut next_counters = HashMap::new();
    for app in &apps {
        let runtime = runtimes.get(&app.id);
        let serving = runtime.is_some_and(|r| r.containers.iter().any(|c| c.is_healthy()));
        let status = runtime.map_or(HistoryStatus::Stopped, |r| {
            HistoryStatus::from_app(r.status, serving)
        });
        statuses.push((app.id, status));
        let traffic = counters.get(&app.id).map(|cur| {
            let prev = mem.counters.get(&app.id);
            let elapsed = prev.map_or(c.interval, |(_, t)| instant.duration_since(*t));
            next_counters.insert(app.id, (cur.clone(), instant));
            maths::traffic(prev.map(|(s, _)| s), cur, elapsed)
        });
        let mut replicas = per_app.remove(&app.id).unwrap_or_default();
        replicas.sort_by(|a, b| a.container_id.cmp(&b.container_id));
        let sample = AppSample {
            app_id: app.id,
            slug: app.slug.clone(),
            status,
            containers: replicas.len() as u32,
            cpu_percent: replicas.iter().map(|r| r.cpu_percent).sum(),
            memory_bytes: replicas.iter().map(|r| r.memory_bytes).sum(),
            memory_limit_bytes: replicas.iter().map(|r| r.memory_limit_bytes).sum(),
            network_rx_bytes: replicas.iter().map(|r| r.network_rx_bytes).sum(),
            network_tx_bytes: replicas.iter().map(|r| r.network_tx_bytes).sum(),
            traffic,
            replicas,
            collected_at: now,
        };
        if sample.containers > 0 {
            points.push((app.id, app_point(&sample)));
        }
        snapshot.apps.insert(app.id, sample);
    }
    mem.counters = next_counters;

    let system = system_sample(&snapshot, host_cpus(&mem.containers), now);
    points.push((SYSTEM_SERIES, system_point(&system)));
    snapshot.system = Some(system);

    let store = c.store.clone();
    let written = with_store(&store, move |s| {
        s.write_metrics(ts, &points)?;
        s.write_statuses(ts, &statuses)
    })
    .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "metrics: cannot write history");
    }
    snapshot
}

/// Stats of every running replica, [`CONCURRENCY`] at a time, each within
/// [`SAMPLE_TIMEOUT`]; failures and timeouts drop that container for this round.
async fn sample_containers(
    spawner: &dyn Spawner,
    runtimes: &HashMap<Uuid, AppRuntime>,
    stats: &mut CollectorStats,
) -> Vec<(Uuid, ContainerStats)> {
    let targets: Vec<(Uuid, String)> = runtimes
        .iter()
        .flat_map(|(app, r)| {
            r.containers
                .iter()
                .filter(|c| c.status == "running" && !c.container_id.is_empty())
                .map(move |c| (*app, c.container_id.clone()))
        })
        .collect();
    stats.docker_calls += targets.len() as u64;
    let results: Vec<(Uuid, String, Result<Option<ContainerStats>, String>)> =
        stream::iter(targets)
            .map(|(app, id)| async move {
                let r = match tokio::time::timeout(SAMPLE_TIMEOUT, spawner.container_stats(&id))
                    .await
                {
                    Ok(Ok(s)) => Ok(s),
                    Ok(Err(SpawnerError::Unavailable(m))) => Err(m),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {} s", SAMPLE_TIMEOUT.as_secs())),
                };
                (app, id, r)
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await;
    let mut out = Vec::with_capacity(results.len());
    for (app, id, r) in results {
        match r {
            Ok(Some(s)) => out.push((app, s)),
            Ok(None) => {}
            Err(e) => {
                stats.failed_samples += 1;
                tracing::debug!(container = %id, error = %e, "metrics: no stats for this container this round");
            }
        }
    }
    out
}

fn container_sample(
    prev: Option<&(ContainerStats, Instant)>,
    cur: &ContainerStats,
    now: Instant,
) -> ContainerSample {
    let (cpu, rx, tx) = match prev {
        Some((p, at)) => (
            maths::cpu_percent(p, cur, now.duration_since(*at)),
            maths::counter_delta(p.network_rx_bytes, cur.network_rx_bytes),
            maths::counter_delta(p.network_tx_bytes, cur.network_tx_bytes),
        ),
        None => (0.0, 0, 0),
    };
    ContainerSample {
        container_id: cur.container_id.clone(),
        cpu_percent: cpu,
        memory_bytes: cur.memory_bytes,
        memory_limit_bytes: cur.memory_limit_bytes,
        network_rx_bytes: rx,
        network_tx_bytes: tx,
    }
}

/// The host's cores as Docker reports them; this process's view without samples.
fn host_cpus(containers: &HashMap<String, (ContainerStats, Instant)>) -> u32 {
    containers
        .values()
        .map(|(s, _)| s.online_cpus)
        .find(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32))
}

fn system_sample(s: &Snapshot, host_cpus: u32, now: OffsetDateTime) -> SystemSample {
    let apps = s.apps.values();
    let rpm: Vec<f64> = s
        .apps
        .values()
        .filter_map(|a| a.traffic.as_ref().map(|t| t.requests_per_min))
        .collect();
    SystemSample {
        active_containers: apps.clone().map(|a| a.containers).sum(),
        active_apps: apps.clone().filter(|a| a.containers > 0).count() as u32,
        host_cpus,
        cpu_percent: apps.clone().map(|a| a.cpu_percent).sum(),
        memory_bytes: apps.clone().map(|a| a.memory_bytes).sum(),
        memory_limit_bytes: apps.clone().map(|a| a.memory_limit_bytes).sum(),
        network_rx_bytes: apps.clone().map(|a| a.network_rx_bytes).sum(),
        network_tx_bytes: apps.map(|a| a.network_tx_bytes).sum(),
        requests_per_min: (!rpm.is_empty()).then(|| rpm.iter().sum()),
        collected_at: now,
    }
}

fn app_point(a: &AppSample) -> Point {
    Point {
        cpu_percent: a.cpu_percent as f32,
        memory_mb: bytes_to_mb(a.memory_bytes) as f32,
        memory_limit_mb: bytes_to_mb(a.memory_limit_bytes) as f32,
        network_rx_bytes: a.network_rx_bytes,
        network_tx_bytes: a.network_tx_bytes,
        requests_per_min: a.traffic.as_ref().map(|t| t.requests_per_min as f32),
        containers: a.containers,
        apps: 1,
    }
}

fn system_point(s: &SystemSample) -> Point {
    Point {
        cpu_percent: s.cpu_percent as f32,
        memory_mb: bytes_to_mb(s.memory_bytes) as f32,
        memory_limit_mb: bytes_to_mb(s.memory_limit_bytes) as f32,
        network_rx_bytes: s.network_rx_bytes,
        network_tx_bytes: s.network_tx_bytes,
        requests_per_min: s.requests_per_min.map(|r| r as f32),
        containers: s.active_containers,
        apps: s.active_apps,
    }
}

/// Drop history and audit entries past their retention, in small transactions.
async fn prune(c: &Collector, now: OffsetDateTime) {
    let ts = now.unix_timestamp();
    let keep = c.retention;
    let mut removed = 0;
    loop {
        match with_store(&c.store, move |s| s.prune_history(ts, &keep, PRUNE_BATCH)).await {
            Ok(n) => {
                removed += n;
                if n < PRUNE_BATCH {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics: cannot prune history");
                break;
            }
        }
    }
    if let Some(keep) = c.audit_retention {
        let before = now - keep;
        loop {
            match with_store(&c.store, move |s| s.prune_audit(before, PRUNE_BATCH)).await {
                Ok(n) => {
                    removed += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: cannot prune the audit log");
                    break;
                }
            }
        }
    }
    if removed > 0 {
        tracing::debug!(removed, "metrics: pruned old history");
    }
}
