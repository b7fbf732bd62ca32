//! `GET /metrics`: the Prometheus text exposition format, built with
//! `prometheus-client` from what already exists — no second set of counters.
//!
//! Each scrape builds a throw-away registry holding one [`Collector`] that reads:
//! - the proxy's per-app atomics (`proxy::counters`, through `Routes::counters`: one
//!   `ArcSwap` load and relaxed loads; the data path is not touched or locked);
//! - app status from the spawner's in-memory view (`Spawner::runtimes`, read before
//!   encoding because it is async), build counts and durations (`Spawner::build_stats`);
//! - container CPU and memory from the collector's latest round (`metrics::Latest`,
//!   an `ArcSwap` load; absent until the first round reached Docker);
//! - the served certificate's notAfter (`tls::CertResolver`);
//! - alert counters (`alerts::Alerts::stats`);
//! - the process itself (`process.rs`).
//!
//! Metric names are `rserve_proxy_*` plus the conventional `process_*`; per-app
//! series carry `app` (the slug) and `app_id`. See docs/metrics.md.

pub mod process;

use std::sync::Arc;
use std::time::SystemTime;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::alerts::{AlertStats, Alerts};
use crate::proxy::counters::HistogramSnapshot;
use crate::proxy::routes::{AppCountersEntry, AppPhase, Routes};
use crate::spawner::{AppStatus, BuildStatsSnapshot, Spawner, BUILD_BOUNDS_SECS};
use crate::tls::CertResolver;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` reads, besides the spawner. Cheap to clone.
#[derive(Clone)]
pub struct Sources {
    pub routes: Routes,
    pub alerts: Alerts,
    /// The TLS listener's certificate, when TLS is on.
    pub tls: Option<Arc<CertResolver>>,
    pub started: SystemTime,
}

impl Default for Sources {
    fn default() -> Self {
        Sources {
            routes: Routes::new(),
            alerts: Alerts::default(),
            tls: None,
            started: SystemTime::now(),
        }
    }
}

/// Every status an app can report, for the one-hot `rserve_proxy_app_status` gauge.
const STATUSES: [(AppStatus, &str); 7] = [
    (AppStatus::Building, "building"),
    (AppStatus::Starting, "starting"),
    (AppStatus::Running, "running"),
    (AppStatus::Degraded, "degraded"),
    (AppStatus::Stopping, "stopping"),
    (AppStatus::Stopped, "stopped"),
    (AppStatus::Error, "error"),
];

/// Everything one scrape encodes, read at the start of the scrape.
#[derive(Debug)]
struct Scrape {
    apps: Vec<(AppCountersEntry, AppStatus)>,
    builds: BuildStatsSnapshot,
    docker_up: bool,
    cert_not_after: Option<f64>,
    alerts: AlertStats,
    process: process::ProcessStats,
    started: SystemTime,
    latest: Arc<crate::metrics::Snapshot>,
}

/// Render the whole exposition.
pub async fn render(
    sources: &Sources,
    spawner: &dyn Spawner,
    latest: &crate::metrics::Latest,
) -> String {
    let docker_up = spawner.ping().await.is_ok();
    let runtimes = spawner.runtimes().await;
    let apps = sources
        .routes
        .counters()
        .into_iter()
        .map(|entry| {
            let phase = entry.phase;
            let status = runtimes
                .get(&entry.app_id)
                .map(|r| r.status)
                .unwrap_or(match phase {
                    // Only static routes (no container) reach this while serving.
                    AppPhase::Running => AppStatus::Running,
                    AppPhase::Starting => AppStatus::Starting,
                    AppPhase::Stopped => AppStatus::Stopped,
                });
            (entry, status)
        })
        .collect();
    let scrape = Scrape {
        apps,
        builds: spawner.build_stats(),
        docker_up,
        cert_not_after: sources
            .tls
            .as_ref()
            .and_then(|t| t.current())
            .and_then(|k| k.cert.first().and_then(crate::tls::cert::not_after_unix)),
        alerts: sources.alerts.stats(),
        process: process::ProcessStats::read(),
        started: sources.started,
        latest: latest.load(),
    };
    encode(scrape)
}

fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::with_capacity(16 * 1024);
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

type Labels = [(&'static str, String); 2];

fn app_labels(a: &AppCountersEntry) -> Labels {
    [("app", a.slug.clone()), ("app_id", a.app_id.to_string())]
}

/// A metric with one value per label set.
struct Family<L, V> {
    rows: Vec<(L, V)>,
    kind: MetricType,
}

fn counter<L, V>(rows: Vec<(L, V)>) -> Family<L, V> {
    Family {
        rows,
        kind: MetricType::Counter,
    }
}

fn gauge<L, V>(rows: Vec<(L, V)>) -> Family<L, V> {
    Family {
        rows,
        kind: MetricType::Gauge,
    }
}

impl<L, V> Family<L, V>
where
    L: prometheus_client::encoding::EncodeLabelSet,
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    fn write(self, enc: &mut DescriptorEncoder, name: &str, help: &str) -> std::fmt::Result {
        let mut m = enc.encode_descriptor(name, help, None, self.kind)?;
        for (labels, v) in &self.rows {
            let mut f = m.encode_family(labels)?;
            match self.kind {
                MetricType::Counter => f.encode_counter::<NoLabelSet, V, f64>(v, None)?,
                _ => f.encode_gauge(v)?,
            }
        }
        Ok(())
    }
}

/// One unlabelled value.
fn single<V>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    v: V,
) -> std::fmt::Result
where
    V: prometheus_client::encoding::EncodeGaugeValue
        + prometheus_client::encoding::EncodeCounterValue,
{
    let mut m = enc.encode_descriptor(name, help, None, kind)?;
    match kind {
        MetricType::Counter => m.encode_counter::<NoLabelSet, V, f64>(&v, None),
        _ => m.encode_gauge(&v),
    }
}

/// Our fixed buckets (per-bucket counts, microsecond bounds) as a Prometheus
/// histogram in seconds: `(upper bound, count in that bucket)`; the encoder makes
/// them cumulative and adds `+Inf`. The sum is exact (the counters keep it).
fn histogram_rows(h: &HistogramSnapshot) -> (f64, u64, Vec<(f64, u64)>) {
    let mut rows: Vec<(f64, u64)> = h
        .bounds_us
        .iter()
        .zip(&h.counts)
        .map(|(b, c)| (*b as f64 / 1e6, *c))
        .collect();
    let overflow = h.counts.get(h.bounds_us.len()).copied().unwrap_or(0);
    rows.push((f64::INFINITY, overflow));
    // The count is the buckets' total, so `+Inf` and `_count` always agree even though
    // the atomics are read one by one.
    let count = h.counts.iter().sum();
    (h.sum_us as f64 / 1e6, count, rows)
}

fn histogram_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: Vec<(Labels, &HistogramSnapshot)>,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, h) in rows {
        let (sum, count, buckets) = histogram_rows(h);
        m.encode_family(&labels)?
            .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
    }
    Ok(())
}

impl Collector for Scrape {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let apps = &self.apps;
        let per_app = |f: &dyn Fn(&crate::proxy::counters::CountersSnapshot) -> u64| {
            apps.iter()
                .map(|(a, _)| (app_labels(a), f(&a.counters)))
                .collect::<Vec<_>>()
        };

        // Requests by status class.
        let mut rows = Vec::new();
        for (a, _) in apps {
            let c = &a.counters;
            for (class, v) in [
                ("1xx", c.responses_1xx),
                ("2xx", c.responses_2xx),
                ("3xx", c.responses_3xx),
                ("4xx", c.responses_4xx),
                ("5xx", c.responses_5xx),
                ("none", c.no_response),
            ] {
                let [app, id] = app_labels(a);
                rows.push(([app, id, ("class", class.to_string())], v));
            }
        }
        counter(rows).write(
            &mut enc,
            "rserve_proxy_app_requests",
            "Requests answered per app by status class (a WebSocket handshake counts once, 101 as 1xx; none = ended before any answer)",
        )?;
        gauge(per_app(&|c| c.ws_open)).write(
            &mut enc,
            "rserve_proxy_app_websockets_open",
            "WebSocket connections open now (handshakes in progress included)",
        )?;
        counter(per_app(&|c| c.ws_opened)).write(
            &mut enc,
            "rserve_proxy_app_websockets",
            "WebSocket connections established (101 relayed)",
        )?;
        counter(per_app(&|c| c.ws_rejected)).write(
            &mut enc,
            "rserve_proxy_app_websockets_refused",
            "WebSocket upgrades refused because the app had app_max_websockets open",
        )?;
        counter(per_app(&|c| c.bytes_in)).write(
            &mut enc,
            "rserve_proxy_app_received_bytes",
            "Bytes received from clients after the request heads (HTTP bodies, WebSocket frames)",
        )?;
        counter(per_app(&|c| c.bytes_out)).write(
            &mut enc,
            "rserve_proxy_app_sent_bytes",
            "Bytes sent to clients after the response heads (HTTP bodies, WebSocket frames)",
        )?;
        counter(per_app(&|c| c.connect_errors)).write(
            &mut enc,
            "rserve_proxy_app_connect_errors",
            "Failed connection attempts to the app's replicas (each retry counts)",
        )?;
        histogram_family(
            &mut enc,
            "rserve_proxy_app_http_response_seconds",
            "Time from an HTTP request's start to the app's response headers",
            apps.iter()
                .map(|(a, _)| (app_labels(a), &a.counters.http_latency))
                .collect(),
        )?;
        histogram_family(
            &mut enc,
            "rserve_proxy_app_websocket_duration_seconds",
            "Lifetime of established WebSocket connections, recorded when they close",
            apps.iter()
                .map(|(a, _)| (app_labels(a), &a.counters.ws_duration))
                .collect(),
        )?;

        // Status: one series per app and possible status, 1 for the current one.
        let mut rows = Vec::new();
        for (a, status) in apps {
            for (s, name) in STATUSES {
                let [app, id] = app_labels(a);
                rows.push((
                    [app, id, ("status", name.to_string())],
                    u64::from(*status == s),
                ));
            }
        }
        gauge(rows).write(
            &mut enc,
            "rserve_proxy_app_status",
            "1 for the app's current status (building, starting, running, degraded, stopping, stopped, error), 0 for the others",
        )?;

        // Builds.
        let b = &self.builds;
        counter(vec![
            ([("result", "success".to_string())], b.succeeded),
            ([("result", "failure".to_string())], b.failed),
        ])
        .write(
            &mut enc,
            "rserve_proxy_builds",
            "App image builds since start by result (failure includes starts whose image could not be made)",
        )?;
        let mut m = enc.encode_descriptor(
            "rserve_proxy_build_duration_seconds",
            "How long app image builds took",
            None,
            MetricType::Histogram,
        )?;
        let mut buckets: Vec<(f64, u64)> = BUILD_BOUNDS_SECS
            .iter()
            .enumerate()
            .map(|(i, s)| (*s as f64, b.duration_counts.get(i).copied().unwrap_or(0)))
            .collect();
        buckets.push((
            f64::INFINITY,
            b.duration_counts
                .get(BUILD_BOUNDS_SECS.len())
                .copied()
                .unwrap_or(0),
        ));
        m.encode_histogram::<NoLabelSet>(
            b.duration_sum.as_secs_f64(),
            b.duration_counts.iter().sum(),
            &buckets,
            None,
        )?;

        // Containers, from the collector's latest round.
        let mut samples: Vec<&crate::metrics::AppSample> = self
            .latest
            .apps
            .values()
            .filter(|a| a.containers > 0)
            .collect();
        samples.sort_by(|a, b| a.slug.cmp(&b.slug));
        let labels = |a: &crate::metrics::AppSample| -> Labels {
            [("app", a.slug.clone()), ("app_id", a.app_id.to_string())]
        };
        gauge(samples.iter().map(|a| (labels(a), a.cpu_percent / 100.0)).collect()).write(
            &mut enc,
            "rserve_proxy_app_cpu_cores",
            "CPU the app's replicas used over the last collector interval, in cores (0.5 = half a core)",
        )?;
        gauge(
            samples
                .iter()
                .map(|a| (labels(a), a.memory_bytes))
                .collect(),
        )
        .write(
            &mut enc,
            "rserve_proxy_app_memory_bytes",
            "Memory the app's replicas use, without page cache",
        )?;
        gauge(
            samples
                .iter()
                .map(|a| (labels(a), a.memory_limit_bytes))
                .collect(),
        )
        .write(
            &mut enc,
            "rserve_proxy_app_memory_limit_bytes",
            "Sum of the memory limits of the app's replicas",
        )?;
        gauge(
            samples
                .iter()
                .map(|a| (labels(a), u64::from(a.containers)))
                .collect(),
        )
        .write(
            &mut enc,
            "rserve_proxy_app_containers",
            "Running replicas sampled in the last collector round",
        )?;
        if let Some(sys) = &self.latest.system {
            single(
                &mut enc,
                "rserve_proxy_host_cpus",
                "CPU cores of the Docker host",
                MetricType::Gauge,
                u64::from(sys.host_cpus),
            )?;
            single(
                &mut enc,
                "rserve_proxy_containers_active",
                "Running app containers in the last collector round",
                MetricType::Gauge,
                u64::from(sys.active_containers),
            )?;
        }
        if let Some(at) = self.latest.collected_at {
            single(
                &mut enc,
                "rserve_proxy_collector_last_round_timestamp_seconds",
                "When the collector last ran (Unix time)",
                MetricType::Gauge,
                at.unix_timestamp() as f64,
            )?;
        }
        single(
            &mut enc,
            "rserve_proxy_collector_docker_calls",
            "Docker API calls the collector made",
            MetricType::Counter,
            self.latest.collector.docker_calls,
        )?;

        single(
            &mut enc,
            "rserve_proxy_docker_up",
            "1 when the Docker Engine answered a ping during this scrape",
            MetricType::Gauge,
            u64::from(self.docker_up),
        )?;
        if let Some(t) = self.cert_not_after {
            single(
                &mut enc,
                "rserve_proxy_tls_certificate_expiry_timestamp_seconds",
                "notAfter of the certificate the TLS listener serves (Unix time)",
                MetricType::Gauge,
                t,
            )?;
        }

        // Alerts.
        let s = &self.alerts;
        single(
            &mut enc,
            "rserve_proxy_alerts_published",
            "Alert events let through the de-duplication window",
            MetricType::Counter,
            s.published,
        )?;
        single(
            &mut enc,
            "rserve_proxy_alerts_suppressed",
            "Alert events dropped as repeats within webhook_dedup_secs",
            MetricType::Counter,
            s.suppressed,
        )?;
        single(
            &mut enc,
            "rserve_proxy_alerts_dropped",
            "Alert events a webhook lost because it fell too far behind",
            MetricType::Counter,
            s.dropped,
        )?;
        counter(vec![
            ([("result", "delivered".to_string())], s.delivered),
            ([("result", "failed".to_string())], s.failed),
        ])
        .write(
            &mut enc,
            "rserve_proxy_webhook_deliveries",
            "Webhook deliveries by outcome (failed = gave up after all attempts)",
        )?;

        // The process.
        let p = &self.process;
        let now = process::unix_secs(SystemTime::now());
        let start = process::unix_secs(self.started);
        single(
            &mut enc,
            "process_start_time_seconds",
            "Start time of the process (Unix time)",
            MetricType::Gauge,
            start,
        )?;
        single(
            &mut enc,
            "rserve_proxy_uptime_seconds",
            "Seconds since the server started",
            MetricType::Gauge,
            (now - start).max(0.0),
        )?;
        let optional: [(&str, &str, MetricType, Option<f64>); 6] = [
            (
                "process_resident_memory_bytes",
                "Resident memory size",
                MetricType::Gauge,
                p.resident_bytes.map(|v| v as f64),
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size",
                MetricType::Gauge,
                p.virtual_bytes.map(|v| v as f64),
            ),
            (
                "process_open_fds",
                "Open file descriptors",
                MetricType::Gauge,
                p.open_fds.map(|v| v as f64),
            ),
            (
                "process_max_fds",
                "Open file descriptor limit (soft)",
                MetricType::Gauge,
                p.max_fds.map(|v| v as f64),
            ),
            (
                "process_threads",
                "OS threads",
                MetricType::Gauge,
                p.threads.map(|v| v as f64),
            ),
            (
                "process_cpu_seconds",
                "User and system CPU time",
                MetricType::Counter,
                p.cpu_seconds,
            ),
        ];
        for (name, help, kind, v) in optional {
            if let Some(v) = v {
                single(&mut enc, name, help, kind, v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::counters::LATENCY_BOUNDS_US;

    #[test]
    fn histogram_rows_are_seconds_with_an_infinite_last_bucket() {
        let mut counts = vec![0; LATENCY_BOUNDS_US.len() + 1];
        counts[0] = 2;
        counts[3] = 1;
        counts[LATENCY_BOUNDS_US.len()] = 4;
        let h = HistogramSnapshot {
            bounds_us: &LATENCY_BOUNDS_US,
            counts,
            sum_us: 1_500_000,
            count: 6, // read a moment earlier than the buckets: not used
        };
        let (sum, count, rows) = histogram_rows(&h);
        assert_eq!(sum, 1.5);
        assert_eq!(count, 7);
        assert_eq!(rows[0], (0.001, 2));
        assert_eq!(rows[3], (0.01, 1));
        assert_eq!(*rows.last().unwrap(), (f64::INFINITY, 4));
        assert_eq!(rows.len(), LATENCY_BOUNDS_US.len() + 1);
    }
}
