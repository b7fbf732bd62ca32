//! The dashboard's data: cards, the uptime grid and resource charts, assembled from
//! the same service functions the API uses (`service::apps::list`,
//! `service::metrics::{system, app, status_history}`) and the collector's latest round.
//! No business rules here: who may see what is decided by the service calls.
//!
//! Routes: `GET /` (`?range=1h|24h|7d`; with htmx and `?part=cards|grid|charts`, just
//! that part, which the page polls) and `GET /apps/{id}/metrics` (the App detail
//! page's metrics part, see [`super::app_metrics`]).

pub mod app_metrics;

use std::collections::{BTreeMap, HashMap};

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use time::OffsetDateTime;

use super::charts::{self, Chart, ChartInput, SeriesInput, Unit};
use super::grid::{self, Grid, RowInput};
use super::{Nav, UiError, UiUser};
use crate::metrics::maths::{Bucket, Period, Point};
use crate::metrics::{AppSample, Snapshot};
use crate::service::apps::AppView;
use crate::service::metrics::{self as svc_metrics, Series};
use crate::service::{apps as svc_apps, AppState, Principal, ServiceError, ServiceResult};
use crate::spawner::AppStatus;

const MIB: f64 = 1024.0 * 1024.0;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/apps/{id}/metrics", get(app_metrics_route))
}

/// A polled fragment: the template alone, without the flash swap `Page::render` adds
/// for htmx (a poll must not clear a message the user is reading). Gzip-compressed
/// when the client takes it: fragments carry no secret (no CSRF token, unlike a full
/// page), so compressing them beside user-chosen text (app names) gives BREACH nothing
/// to find. The grid of 100 apps is ~0.8 MB of HTML and ~20 KB compressed.
fn fragment<T: Template>(t: &T, headers: &HeaderMap) -> Response {
    let html = match t.render() {
        Ok(html) => html,
        Err(e) => return super::page::render_failed(e),
    };
    let mut h = HeaderMap::new();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    if html.len() > 1024 && super::assets::accepts_gzip(headers) {
        if let Some(gz) = gzip_html(html.as_bytes()) {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            return (h, gz).into_response();
        }
    }
    (h, Html(html)).into_response()
}

/// gzip at the default level: the grid's HTML is very repetitive (0.75 MB → 11 KB for
/// 100 apps); level 1 compresses it several times worse (docs/benchmarks.md).
fn gzip_html(bytes: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 8),
        flate2::Compression::default(),
    );
    enc.write_all(bytes).ok()?;
    enc.finish().ok()
}

async fn index(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let period = range(q.get("range").map(String::as_str)).map_err(|e| user.error(e))?;
    let who = &user.who;
    let err = |e: ServiceError| user.error(e);
    // A part is answered alone only to htmx; a reload of such a URL gets the page.
    match (user.hx, q.get("part").map(String::as_str)) {
        (true, Some("cards")) => Ok(fragment(
            &CardsPart {
                cards: load_cards(&state, who).await.map_err(err)?,
            },
            &headers,
        )),
        (true, Some("grid")) => Ok(fragment(
            &GridPart {
                grid: load_grid(&state, who, period).await.map_err(err)?,
            },
            &headers,
        )),
        (true, Some("charts")) => Ok(fragment(
            &ChartsPart {
                range: period.as_str(),
                charts: load_charts(&state, who, period).await.map_err(err)?,
            },
            &headers,
        )),
        (_, None | Some("" | "cards" | "grid" | "charts")) => {
            let d = load(&state, who, period).await.map_err(err)?;
            Ok(user.page("Dashboard", Nav::Dashboard).render(&d))
        }
        (_, Some(other)) => Err(err(ServiceError::bad_request(format!(
            "part {other:?} is not one of cards, grid, charts"
        )))),
    }
}

async fn app_metrics_route(
    State(state): State<AppState>,
    user: UiUser,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, UiError> {
    let Ok(id) = uuid::Uuid::parse_str(&id) else {
        return Err(user.error(UiError::not_found()));
    };
    let period = range(q.get("range").map(String::as_str)).map_err(|e| user.error(e))?;
    // Someone else's app is "not found" (the contract): its existence is not told.
    let m = app_metrics::load(&state, &user.who, id, period)
        .await
        .map_err(|e| match e {
            ServiceError::Forbidden(_) => user.error(UiError::not_found()),
            e => user.error(e),
        })?;
    if user.hx {
        return Ok(fragment(
            &app_metrics::AppMetricsPart { app_metrics: &m },
            &headers,
        ));
    }
    Ok(user
        .page(format!("Metrics: {}", m.name), Nav::Apps)
        .render(&app_metrics::AppMetricsPage {
            name: &m.name,
            app_metrics: &m,
        }))
}

/// The ranges the dashboard offers, in link order.
pub const RANGES: [(Period, &str); 3] = [
    (Period::H1, "1 hour"),
    (Period::H24, "24 hours"),
    (Period::D7, "7 days"),
];

/// `?range=` as the UI takes it: absent or empty = 1h; 1h, 6h, 24h, 7d; anything else
/// is a 400 saying what is accepted.
pub fn range(raw: Option<&str>) -> ServiceResult<Period> {
    match raw.filter(|r| !r.is_empty()) {
        None => Ok(Period::H1),
        Some(r) => Period::parse(r).ok_or_else(|| {
            ServiceError::bad_request(format!(
                "range {r:?} is not one of 1h, 24h, 7d; use the range links on the dashboard"
            ))
        }),
    }
}

/// One card: `data-metric` key, label, the big value and a line of detail.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    pub metric: &'static str,
    pub label: &'static str,
    pub value: String,
    pub detail: String,
}

/// A range link: `?range=` value, words, whether it is the current one.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeLink {
    pub value: &'static str,
    pub words: &'static str,
    pub current: bool,
}

pub fn range_links(current: Period) -> Vec<RangeLink> {
    RANGES
        .iter()
        .map(|(p, words)| RangeLink {
            value: p.as_str(),
            words,
            current: *p == current,
        })
        .collect()
}

/// Sums over a set of apps' latest samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Totals {
    pub sampled: bool,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    /// `None` when no app has traffic data.
    pub requests_per_min: Option<f64>,
    pub websockets_open: u64,
}

pub fn totals<'a>(samples: impl Iterator<Item = &'a AppSample>) -> Totals {
    let mut t = Totals::default();
    for s in samples {
        t.sampled = true;
        t.cpu_percent += s.cpu_percent;
        t.memory_bytes += s.memory_bytes;
        t.memory_limit_bytes += s.memory_limit_bytes;
        t.rx_bytes += s.network_rx_bytes;
        t.tx_bytes += s.network_tx_bytes;
        if let Some(tr) = &s.traffic {
            *t.requests_per_min.get_or_insert(0.0) += tr.requests_per_min;
            t.websockets_open += tr.websockets_open;
        }
    }
    t
}

/// Seconds between collector rounds (network figures are bytes per round).
pub fn interval_secs(state: &AppState) -> f64 {
    match state.config.metrics_interval_secs {
        0 => 15.0,
        n => n as f64,
    }
}

fn is_serving(s: AppStatus) -> bool {
    matches!(s, AppStatus::Running | AppStatus::Degraded)
}

/// The cards, from the caller's apps (as `service::apps::list` returns them) and the
/// collector's latest round (only those apps' samples are summed, so a user sees
/// figures of their own apps, an admin of all).
pub fn cards(apps: &[AppView], snap: &Snapshot, interval: f64) -> Vec<Card> {
    let total = apps.len();
    let serving = apps.iter().filter(|a| is_serving(a.runtime.status)).count();
    let failing = apps
        .iter()
        .filter(|a| a.runtime.status == AppStatus::Error)
        .count();
    let starting = apps
        .iter()
        .filter(|a| {
            matches!(
                a.runtime.status,
                AppStatus::Building | AppStatus::Starting | AppStatus::Stopping
            )
        })
        .count();
    let containers: usize = apps
        .iter()
        .map(|a| {
            a.runtime
                .containers
                .iter()
                .filter(|c| c.status == "running")
                .count()
        })
        .sum();
    let wanted: u32 = apps
        .iter()
        .filter(|a| is_serving(a.runtime.status))
        .map(|a| a.app.replicas)
        .sum();
    let t = totals(apps.iter().filter_map(|a| snap.apps.get(&a.app.id)));
    let no_data = "no sample yet".to_string();
    let or_dash = |ok: bool, v: String| if ok { v } else { "—".into() };
    let mut app_detail = Vec::new();
    if failing > 0 {
        app_detail.push(format!("{failing} in error"));
    }
    if starting > 0 {
        app_detail.push(format!("{starting} starting or stopping"));
    }
    if app_detail.is_empty() {
        app_detail.push(if total == 0 {
            "no apps yet".into()
        } else {
            "no problems".into()
        });
    }
    let cores = snap.system.as_ref().map(|s| s.host_cpus).unwrap_or(0);
    vec![
        Card {
            metric: "apps",
            label: "Apps running",
            value: format!("{serving} / {total}"),
            detail: app_detail.join(", "),
        },
        Card {
            metric: "containers",
            label: "Containers",
            value: containers.to_string(),
            detail: format!("{wanted} replicas wanted by serving apps"),
        },
        Card {
            metric: "cpu",
            label: "CPU",
            value: or_dash(t.sampled, Unit::Percent.format(t.cpu_percent)),
            detail: if !t.sampled {
                no_data.clone()
            } else if cores > 0 {
                format!("of one core; host has {cores}")
            } else {
                "of one core".into()
            },
        },
        Card {
            metric: "memory",
            label: "Memory",
            value: or_dash(t.sampled, Unit::Bytes.format(t.memory_bytes as f64)),
            detail: if !t.sampled {
                no_data.clone()
            } else if t.memory_limit_bytes > 0 {
                format!(
                    "of {} limit",
                    Unit::Bytes.format(t.memory_limit_bytes as f64)
                )
            } else {
                "no limit set".into()
            },
        },
        Card {
            metric: "network",
            label: "Network",
            value: or_dash(
                t.sampled,
                format!(
                    "↓ {} ↑ {}",
                    Unit::BytesPerSec.format(t.rx_bytes as f64 / interval),
                    Unit::BytesPerSec.format(t.tx_bytes as f64 / interval)
                ),
            ),
            detail: if t.sampled {
                "received / sent by containers".into()
            } else {
                no_data.clone()
            },
        },
        Card {
            metric: "requests",
            label: "Requests",
            value: t
                .requests_per_min
                .map_or_else(|| "—".into(), |r| Unit::PerMin.format(r)),
            detail: "through the proxy".into(),
        },
        Card {
            metric: "websockets",
            label: "Open WebSockets",
            value: or_dash(t.requests_per_min.is_some(), t.websockets_open.to_string()),
            detail: "connections to apps now".into(),
        },
    ]
}

/// One row of a series in chart units: CPU %, memory bytes, network B/s, requests/min.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Row {
    pub cpu: f64,
    pub mem: f64,
    pub rx: f64,
    pub tx: f64,
    pub rpm: Option<f64>,
}

impl Row {
    fn point(p: &Point, interval: f64) -> Row {
        Row {
            cpu: f64::from(p.cpu_percent),
            mem: f64::from(p.memory_mb) * MIB,
            rx: p.network_rx_bytes as f64 / interval,
            tx: p.network_tx_bytes as f64 / interval,
            rpm: p.requests_per_min.map(f64::from),
        }
    }

    /// A bucket's averages; `None` for a bucket nothing was added to.
    fn bucket(b: &Bucket, interval: f64) -> Option<Row> {
        Some(Row {
            cpu: b.cpu_percent.avg()?,
            mem: b.memory_mb.avg()? * MIB,
            rx: b.network_rx_bytes.avg()? / interval,
            tx: b.network_tx_bytes.avg()? / interval,
            rpm: b.requests_per_min.avg(),
        })
    }

    fn add(&mut self, o: &Row) {
        self.cpu += o.cpu;
        self.mem += o.mem;
        self.rx += o.rx;
        self.tx += o.tx;
        if let Some(r) = o.rpm {
            *self.rpm.get_or_insert(0.0) += r;
        }
    }
}

/// A service series as rows keyed by time (bucket start for buckets).
pub fn rows(series: &Series, interval: f64) -> BTreeMap<i64, Row> {
    match series {
        Series::Points(p) => p
            .iter()
            .map(|(t, p)| (*t, Row::point(p, interval)))
            .collect(),
        Series::Buckets(b) => b
            .iter()
            .filter_map(|(t, b)| Row::bucket(b, interval).map(|r| (*t, r)))
            .collect(),
    }
}

/// Several apps' rows summed per time (their rounds share timestamps: the collector
/// writes one round for all apps at once).
pub fn sum_rows(all: impl IntoIterator<Item = BTreeMap<i64, Row>>) -> BTreeMap<i64, Row> {
    let mut out: BTreeMap<i64, Row> = BTreeMap::new();
    for rows in all {
        for (t, r) in rows {
            out.entry(t).or_default().add(&r);
        }
    }
    out
}

/// The spacing of samples in a period: the collector interval for raw points, the
/// bucket width otherwise.
pub fn step(period: Period, interval: f64) -> i64 {
    match period.resolution().secs() {
        0 => interval as i64,
        w => w,
    }
}

/// The four resource charts over `[from, to]` from rows in chart units. `ids` prefix
/// the element ids (unique per page).
pub fn resource_charts(
    ids: [&'static str; 4],
    rows: &BTreeMap<i64, Row>,
    from: i64,
    to: i64,
    step: i64,
) -> Vec<Chart> {
    let col = |f: fn(&Row) -> Option<f64>| -> Vec<(i64, Option<f64>)> {
        rows.iter().map(|(t, r)| (*t, f(r))).collect()
    };
    let input = |id, title, unit, area, series| ChartInput {
        id,
        title,
        unit,
        from,
        to,
        step,
        area,
        series,
    };
    [
        input(
            ids[0],
            "Requests per minute",
            Unit::PerMin,
            true,
            vec![SeriesInput {
                name: "requests",
                points: col(|r| r.rpm),
            }],
        ),
        input(
            ids[1],
            "CPU",
            Unit::Percent,
            true,
            vec![SeriesInput {
                name: "CPU",
                points: col(|r| Some(r.cpu)),
            }],
        ),
        input(
            ids[2],
            "Memory",
            Unit::Bytes,
            true,
            vec![SeriesInput {
                name: "in use",
                points: col(|r| Some(r.mem)),
            }],
        ),
        input(
            ids[3],
            "Network",
            Unit::BytesPerSec,
            false,
            vec![
                SeriesInput {
                    name: "received",
                    points: col(|r| Some(r.rx)),
                },
                SeriesInput {
                    name: "sent",
                    points: col(|r| Some(r.tx)),
                },
            ],
        ),
    ]
    .iter()
    .map(charts::chart)
    .collect()
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The dashboard's cards.
pub async fn load_cards(state: &AppState, who: &Principal) -> ServiceResult<Vec<Card>> {
    let apps = svc_apps::list(state, who).await?;
    Ok(cards(&apps, &state.metrics.load(), interval_secs(state)))
}

/// The uptime grid of the caller's apps (all apps for admins).
pub async fn load_grid(state: &AppState, who: &Principal, period: Period) -> ServiceResult<Grid> {
    let apps = svc_apps::list(state, who).await?;
    let histories = svc_metrics::status_history(state, who, period).await?;
    let slugs: std::collections::HashMap<uuid::Uuid, &str> = apps
        .iter()
        .map(|a| (a.app.id, a.app.slug.as_str()))
        .collect();
    let (from, to) = histories
        .first()
        .map_or_else(|| window(period), |h| (h.from, h.to));
    let rows = histories
        .into_iter()
        .filter_map(|h| {
            // An app created between the two calls has no slug here yet: next poll.
            let slug = slugs.get(&h.app_id)?.to_string();
            Some(RowInput {
                app_id: h.app_id,
                slug,
                name: h.app_name,
                entries: h.entries,
                uptime_percent: h.uptime_percent,
            })
        })
        .collect();
    Ok(grid::grid(period, from, to, rows))
}

/// The minutes of a period ending with the current one (as the service computes it;
/// used only when there is no app to take it from).
fn window(period: Period) -> (i64, i64) {
    let n = now();
    let end = n - n.rem_euclid(60) + 60;
    (end - period.secs(), end)
}

/// The resource charts: system-wide for admins, the sum of the caller's own apps
/// otherwise (the system series is admins' only).
pub async fn load_charts(
    state: &AppState,
    who: &Principal,
    period: Period,
) -> ServiceResult<Vec<Chart>> {
    let interval = interval_secs(state);
    let to = now();
    let from = period.start(to);
    let rows = if who.is_admin() {
        rows(&svc_metrics::system(state, who, period).await?, interval)
    } else {
        let apps = svc_apps::list(state, who).await?;
        let mut all = Vec::with_capacity(apps.len());
        for a in apps {
            all.push(rows(
                &svc_metrics::app(state, who, a.app.id, period).await?,
                interval,
            ));
        }
        sum_rows(all)
    };
    Ok(resource_charts(
        ["dash-requests", "dash-cpu", "dash-memory", "dash-network"],
        &rows,
        from,
        to,
        step(period, interval),
    ))
}

/// The dashboard page's content (the layout wraps it). The uptime grid is not in it:
/// the page fetches it as a part at once (see [`fragment`]).
#[derive(Debug, Clone, askama::Template)]
#[template(path = "pages/dashboard.html")]
pub struct Dashboard {
    pub range: &'static str,
    pub ranges: Vec<RangeLink>,
    pub cards: Vec<Card>,
    pub charts: Vec<Chart>,
}

/// `?part=cards`: the cards alone (htmx polling).
#[derive(Debug, Clone, askama::Template)]
#[template(path = "partials/dash_cards.html")]
pub struct CardsPart {
    pub cards: Vec<Card>,
}

/// `?part=grid`: the uptime grid alone.
#[derive(Debug, Clone, askama::Template)]
#[template(path = "partials/uptime_grid.html")]
pub struct GridPart {
    pub grid: Grid,
}

/// `?part=charts`: the charts alone.
#[derive(Debug, Clone, askama::Template)]
#[template(path = "partials/dash_charts.html")]
pub struct ChartsPart {
    pub range: &'static str,
    pub charts: Vec<Chart>,
}

/// The dashboard page over `period` (the grid comes as its own part).
pub async fn load(state: &AppState, who: &Principal, period: Period) -> ServiceResult<Dashboard> {
    Ok(Dashboard {
        range: period.as_str(),
        ranges: range_links(period),
        cards: load_cards(state, who).await?,
        charts: load_charts(state, who, period).await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::maths::Stat;
    use crate::metrics::TrafficSample;

    fn sample(cpu: f64, mem: u64, rpm: Option<f64>, ws: u64) -> AppSample {
        AppSample {
            app_id: uuid::Uuid::new_v4(),
            slug: "a".into(),
            status: crate::metrics::HistoryStatus::Running,
            containers: 1,
            cpu_percent: cpu,
            memory_bytes: mem,
            memory_limit_bytes: 2 * mem,
            network_rx_bytes: 1500,
            network_tx_bytes: 3000,
            traffic: rpm.map(|r| TrafficSample {
                requests_per_min: r,
                websockets_open: ws,
                ..Default::default()
            }),
            replicas: Vec::new(),
            collected_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn ranges() {
        assert_eq!(range(None).unwrap(), Period::H1);
        assert_eq!(range(Some("")).unwrap(), Period::H1);
        assert_eq!(range(Some("7d")).unwrap(), Period::D7);
        assert!(matches!(
            range(Some("1y")),
            Err(ServiceError::BadRequest { .. })
        ));
        let links = range_links(Period::H24);
        assert_eq!(
            links
                .iter()
                .map(|l| (l.value, l.current))
                .collect::<Vec<_>>(),
            [("1h", false), ("24h", true), ("7d", false)]
        );
    }

    #[test]
    fn totals_sum_samples_and_traffic() {
        let a = sample(10.0, 100, Some(6.0), 2);
        let b = sample(5.5, 50, None, 0);
        let t = totals([&a, &b].into_iter());
        assert!(t.sampled);
        assert!((t.cpu_percent - 15.5).abs() < 1e-9);
        assert_eq!((t.memory_bytes, t.memory_limit_bytes), (150, 300));
        assert_eq!((t.rx_bytes, t.tx_bytes), (3000, 6000));
        assert_eq!(t.requests_per_min, Some(6.0));
        assert_eq!(t.websockets_open, 2);
        let none = totals(std::iter::once(&b));
        assert_eq!(none.requests_per_min, None);
        assert!(!totals(std::iter::empty()).sampled);
    }

    #[test]
    fn cards_without_apps_or_samples() {
        let c = cards(&[], &Snapshot::default(), 15.0);
        let keys: Vec<&str> = c.iter().map(|c| c.metric).collect();
        assert_eq!(
            keys,
            [
                "apps",
                "containers",
                "cpu",
                "memory",
                "network",
                "requests",
                "websockets"
            ]
        );
        assert_eq!(c[0].value, "0 / 0");
        assert_eq!(c[0].detail, "no apps yet");
        assert_eq!(c[2].value, "—");
        assert_eq!(c[2].detail, "no sample yet");
        assert_eq!(c[5].value, "—");
    }

    #[test]
    fn series_rows_and_sums() {
        let p = Point {
            cpu_percent: 20.0,
            memory_mb: 2.0,
            memory_limit_mb: 8.0,
            network_rx_bytes: 1500,
            network_tx_bytes: 0,
            requests_per_min: Some(3.0),
            containers: 1,
            apps: 1,
        };
        let a = rows(&Series::Points(vec![(100, p), (115, p)]), 15.0);
        assert_eq!(a[&100].mem, 2.0 * MIB);
        assert_eq!(a[&100].rx, 100.0);
        let b = rows(
            &Series::Points(vec![(
                115,
                Point {
                    requests_per_min: None,
                    ..p
                },
            )]),
            15.0,
        );
        let s = sum_rows([a, b]);
        assert_eq!(s[&100].cpu, 20.0);
        assert_eq!(s[&115].cpu, 40.0);
        assert_eq!(s[&115].rpm, Some(3.0));
        // Buckets: averages; an empty bucket is left out (a gap, not a zero).
        let mut full = Bucket::default();
        full.add(&p);
        let empty = Bucket {
            cpu_percent: Stat::default(),
            ..Bucket::default()
        };
        let r = rows(&Series::Buckets(vec![(0, full), (3600, empty)]), 15.0);
        assert_eq!(r.len(), 1);
        assert_eq!(r[&0].rpm, Some(3.0));
        assert_eq!(step(Period::H1, 15.0), 15);
        assert_eq!(step(Period::D7, 15.0), 3600);
    }

    #[test]
    fn renders_escaped_with_the_hooks() {
        use askama::Template;
        let h = 1_704_110_400;
        let g = grid::grid(
            Period::H1,
            h,
            h + 3600,
            vec![RowInput {
                app_id: uuid::Uuid::nil(),
                slug: "evil".into(),
                name: "<script>alert(1)</script>".into(),
                entries: vec![(h, crate::metrics::HistoryStatus::Error)],
                uptime_percent: Some(0.0),
            }],
        );
        let r = rows(&Series::Points(Vec::new()), 15.0);
        let d = Dashboard {
            range: "1h",
            ranges: range_links(Period::H1),
            cards: cards(&[], &Snapshot::default(), 15.0),
            charts: resource_charts(["a", "b", "c", "d"], &r, h, h + 3600, 15),
        };
        let page = d.render().unwrap();
        assert!(page.contains("hx-trigger=\"load, every 60s\""));
        assert_eq!(page.matches("class=\"chart\"").count(), 4);
        assert!(page.contains("data-range=\"7d\""));
        assert_eq!(page.matches("class=\"card\"").count(), 7);
        let html = GridPart { grid: g }.render().unwrap();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || html.contains("&lt;script&gt;")
        );
        assert_eq!(html.matches("class=\"cell st-error\"").count(), 60);
        assert!(html.contains("title=\"12:00 UTC: error\" aria-label=\"12:00 UTC: error\""));
        assert!(html.contains("data-slug=\"evil\""));
    }

    #[test]
    fn four_resource_charts() {
        let p = Point {
            cpu_percent: 20.0,
            memory_mb: 2.0,
            memory_limit_mb: 8.0,
            network_rx_bytes: 1500,
            network_tx_bytes: 0,
            requests_per_min: None,
            containers: 1,
            apps: 1,
        };
        let r = rows(&Series::Points(vec![(100, p), (115, p)]), 15.0);
        let c = resource_charts(["a", "b", "c", "d"], &r, 0, 3600, 15);
        assert_eq!(c.len(), 4);
        // No traffic data: the requests chart says so instead of drawing zeros.
        assert!(!c[0].has_data);
        assert!(c[1].has_data && c[2].has_data);
        assert_eq!(c[3].series.len(), 2);
        assert_eq!(c[2].series[0].latest, "2 MiB");
    }
}
