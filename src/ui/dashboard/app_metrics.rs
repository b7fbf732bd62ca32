//! The metrics parts of the App detail page: the app's uptime timeline, its request
//! and resource charts and its current stats. ui-apps' detail page includes
//! `templates/partials/app_metrics.html`, which polls `GET /apps/{id}/metrics`.
//! Access is the service's: another user's app is a 404, like every app route.

use time::OffsetDateTime;
use uuid::Uuid;

use super::{self as dashboard, Card, RangeLink};
use crate::metrics::maths::Period;
use crate::metrics::AppSample;
use crate::service::metrics as svc_metrics;
use crate::service::{apps as svc_apps, AppState, Principal, ServiceResult};
use crate::ui::charts::{Chart, Unit};
use crate::ui::grid::{self, Grid, RowInput};

/// What `templates/partials/app_metrics.html` draws.
#[derive(Debug, Clone)]
pub struct AppMetrics {
    pub app_id: Uuid,
    pub name: String,
    pub range: &'static str,
    pub ranges: Vec<RangeLink>,
    /// One row: this app.
    pub timeline: Grid,
    pub charts: Vec<Chart>,
    pub stats: Vec<Card>,
}

/// The fragment `GET /apps/{id}/metrics` answers to htmx.
#[derive(askama::Template)]
#[template(path = "partials/app_metrics.html")]
pub struct AppMetricsPart<'a> {
    pub app_metrics: &'a AppMetrics,
}

/// `GET /apps/{id}/metrics` as a page of its own (no htmx): the app's name and the part.
#[derive(askama::Template)]
#[template(path = "pages/app_metrics.html")]
pub struct AppMetricsPage<'a> {
    pub name: &'a str,
    pub app_metrics: &'a AppMetrics,
}

/// Current stats of one app from the collector's latest round (`None`: not sampled
/// yet, or stopped).
pub fn stats(sample: Option<&AppSample>, interval: f64) -> Vec<Card> {
    let dash = || "—".to_string();
    let Some(s) = sample else {
        return vec![Card {
            metric: "sampled",
            label: "Current figures",
            value: dash(),
            detail: "no sample yet: the app is not running or the collector has not run".into(),
        }];
    };
    let t = s.traffic.as_ref();
    let ms = |v: Option<f64>| v.map_or_else(dash, |v| Unit::Millis.format(v));
    vec![
        Card {
            metric: "containers",
            label: "Replicas sampled",
            value: s.containers.to_string(),
            detail: "running containers".into(),
        },
        Card {
            metric: "cpu",
            label: "CPU",
            value: Unit::Percent.format(s.cpu_percent),
            detail: "of one core".into(),
        },
        Card {
            metric: "memory",
            label: "Memory",
            value: Unit::Bytes.format(s.memory_bytes as f64),
            detail: if s.memory_limit_bytes > 0 {
                format!(
                    "of {} limit",
                    Unit::Bytes.format(s.memory_limit_bytes as f64)
                )
            } else {
                "no limit set".into()
            },
        },
        Card {
            metric: "network",
            label: "Network",
            value: format!(
                "↓ {} ↑ {}",
                Unit::BytesPerSec.format(s.network_rx_bytes as f64 / interval),
                Unit::BytesPerSec.format(s.network_tx_bytes as f64 / interval)
            ),
            detail: "received / sent".into(),
        },
        Card {
            metric: "requests",
            label: "Requests",
            value: t.map_or_else(dash, |t| Unit::PerMin.format(t.requests_per_min)),
            detail: t.map_or_else(
                || "not in the route table".into(),
                |t| {
                    let errors = t.responses_5xx_per_min + t.no_response_per_min;
                    format!("{} errors (5xx or no answer)", Unit::PerMin.format(errors))
                },
            ),
        },
        Card {
            metric: "latency",
            label: "Latency p50 / p99",
            value: format!(
                "{} / {}",
                ms(t.and_then(|t| t.latency_p50_ms)),
                ms(t.and_then(|t| t.latency_p99_ms))
            ),
            detail: "to response headers, last round".into(),
        },
        Card {
            metric: "websockets",
            label: "Open WebSockets",
            value: t.map_or_else(dash, |t| t.websockets_open.to_string()),
            detail: t.map_or_else(String::new, |t| {
                format!(
                    "{} opened",
                    Unit::PerMin.format(t.websockets_opened_per_min)
                )
            }),
        },
    ]
}

/// The app's timeline, charts and stats over `period`. Errors as the service's: 404
/// for an app the caller may not see.
pub async fn load(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    period: Period,
) -> ServiceResult<AppMetrics> {
    let view = svc_apps::get(state, who, id).await?;
    let interval = dashboard::interval_secs(state);
    let h = svc_metrics::app_status_history(state, who, id, period).await?;
    let timeline = grid::grid(
        period,
        h.from,
        h.to,
        vec![RowInput {
            app_id: id,
            slug: view.app.slug.clone(),
            name: h.app_name,
            entries: h.entries,
            uptime_percent: h.uptime_percent,
        }],
    );
    let to = OffsetDateTime::now_utc().unix_timestamp();
    let series = svc_metrics::app(state, who, id, period).await?;
    let charts = dashboard::resource_charts(
        ["app-requests", "app-cpu", "app-memory", "app-network"],
        &dashboard::rows(&series, interval),
        period.start(to),
        to,
        dashboard::step(period, interval),
    );
    let snap = state.metrics.load();
    Ok(AppMetrics {
        app_id: id,
        name: view.app.name.clone(),
        range: period.as_str(),
        ranges: dashboard::range_links(period),
        timeline,
        charts,
        stats: stats(snap.apps.get(&id), interval),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::TrafficSample;

    #[test]
    fn stats_of_a_sample() {
        assert_eq!(stats(None, 15.0)[0].value, "—");
        let s = AppSample {
            app_id: Uuid::nil(),
            slug: "a".into(),
            status: crate::metrics::HistoryStatus::Running,
            containers: 2,
            cpu_percent: 12.5,
            memory_bytes: 64 * 1024 * 1024,
            memory_limit_bytes: 512 * 1024 * 1024,
            network_rx_bytes: 15 * 1024,
            network_tx_bytes: 0,
            traffic: Some(TrafficSample {
                requests_per_min: 30.0,
                responses_5xx_per_min: 1.0,
                latency_p50_ms: Some(2.0),
                latency_p99_ms: Some(250.0),
                websockets_open: 3,
                ..Default::default()
            }),
            replicas: Vec::new(),
            collected_at: OffsetDateTime::UNIX_EPOCH,
        };
        let c = stats(Some(&s), 15.0);
        let get = |m: &str| c.iter().find(|c| c.metric == m).unwrap();
        assert_eq!(get("cpu").value, "12.5 %");
        assert_eq!(get("memory").value, "64 MiB");
        assert_eq!(get("memory").detail, "of 512 MiB limit");
        assert_eq!(get("network").value, "↓ 1 KiB/s ↑ 0 B/s");
        assert_eq!(get("requests").value, "30/min");
        assert_eq!(get("latency").value, "2 ms / 250 ms");
        assert_eq!(get("websockets").value, "3");
    }
}
