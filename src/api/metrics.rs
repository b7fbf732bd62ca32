//! `/api/metrics/*`, `/api/status/history`, `/api/apps/:id/status/history` and
//! `/api/audit`: history the collector wrote, in the contract's shapes.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::dto::ErrorDto;
use super::error::ApiResult;
use super::extract::{Auth, IdPath};
use crate::metrics::maths::{Bucket, Period, Point, Stat};
use crate::metrics::HistoryStatus;
use crate::model::AuditEntry;
use crate::service::metrics::{self, AuditParams, Series, StatusHistory};
use crate::service::AppState;

fn at(ts: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(ts).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// One sample of an app (the `1h` period).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppPointDto {
    pub app_id: Uuid,
    /// Replicas sampled.
    pub containers: u32,
    /// CPU in percent of one core, summed over replicas.
    pub cpu_percent: f64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    #[serde(rename = "memoryLimitMB")]
    pub memory_limit_mb: f64,
    /// Bytes since the previous sample.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// Requests through the proxy per minute; null without traffic data.
    pub requests_per_min: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub collected_at: OffsetDateTime,
}

/// One system-wide sample (the `1h` period).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemPointDto {
    pub active_containers: u32,
    pub active_apps: u32,
    pub cpu_percent: f64,
    #[serde(rename = "memoryMB")]
    pub memory_mb: f64,
    #[serde(rename = "memoryLimitMB")]
    pub memory_limit_mb: f64,
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    pub requests_per_min: Option<f64>,
    #[serde(with = "time::serde::rfc3339")]
    pub collected_at: OffsetDateTime,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatDto {
    pub avg: f64,
    pub min: f64,
    pub max: f64,
}

impl StatDto {
    fn of(s: &Stat) -> Option<StatDto> {
        s.avg().map(|avg| StatDto {
            avg,
            min: f64::from(s.min),
            max: f64::from(s.max),
        })
    }
}

/// One 5/15/60-minute bucket (the `6h`/`24h`/`7d` periods); `collectedAt` is the
/// bucket's start.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedDto {
    pub cpu_percent: StatDto,
    #[serde(rename = "memoryMB")]
    pub memory_mb: StatDto,
    pub network_rx_bytes: StatDto,
    pub network_tx_bytes: StatDto,
    pub requests_per_min: Option<StatDto>,
    #[serde(with = "time::serde::rfc3339")]
    pub collected_at: OffsetDateTime,
}

fn aggregated(buckets: &[(i64, Bucket)]) -> Vec<AggregatedDto> {
    buckets
        .iter()
        .filter_map(|(ts, b)| {
            Some(AggregatedDto {
                cpu_percent: StatDto::of(&b.cpu_percent)?,
                memory_mb: StatDto::of(&b.memory_mb)?,
                network_rx_bytes: StatDto::of(&b.network_rx_bytes)?,
                network_tx_bytes: StatDto::of(&b.network_tx_bytes)?,
                requests_per_min: StatDto::of(&b.requests_per_min),
                collected_at: at(*ts),
            })
        })
        .collect()
}

/// `dataPoints` for `1h`; `dataPoints: []` and `aggregated` otherwise.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppMetricsDto {
    /// 1h, 6h, 24h or 7d.
    pub period: String,
    pub data_points: Vec<AppPointDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<Vec<AggregatedDto>>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SystemMetricsDto {
    pub period: String,
    pub data_points: Vec<SystemPointDto>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregated: Option<Vec<AggregatedDto>>,
}

fn period_of(q: &HashMap<String, String>) -> ApiResult<Period> {
    Ok(metrics::period(q.get("period").map(String::as_str))?)
}

/// System-wide resource use over a period (admins).
#[utoipa::path(get, path = "/api/metrics/system", tag = "metrics",
    params(("period" = Option<super::dto::PeriodParam>, Query, description = "1h (raw samples, default), 6h, 24h or 7d (5/15/60-minute buckets)")),
    responses((status = 200, body = SystemMetricsDto), (status = 400, description = "Unknown period", body = ErrorDto),
              (status = 401, body = ErrorDto), (status = 403, description = "Not an admin", body = ErrorDto)))]
pub async fn system(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<SystemMetricsDto>> {
    let period = period_of(&q)?;
    let series = metrics::system(&state, &who, period).await?;
    let point = |(ts, p): &(i64, Point)| SystemPointDto {
        active_containers: p.containers,
        active_apps: p.apps,
        cpu_percent: f64::from(p.cpu_percent),
        memory_mb: f64::from(p.memory_mb),
        memory_limit_mb: f64::from(p.memory_limit_mb),
        network_rx_bytes: p.network_rx_bytes,
        network_tx_bytes: p.network_tx_bytes,
        requests_per_min: p.requests_per_min.map(f64::from),
        collected_at: at(*ts),
    };
    Ok(Json(match series {
        Series::Points(p) => SystemMetricsDto {
            period: period.as_str().into(),
            data_points: p.iter().map(point).collect(),
            aggregated: None,
        },
        Series::Buckets(b) => SystemMetricsDto {
            period: period.as_str().into(),
            data_points: Vec::new(),
            aggregated: Some(aggregated(&b)),
        },
    }))
}

/// One app's resource use and traffic over a period.
#[utoipa::path(get, path = "/api/metrics/apps/{id}", tag = "metrics",
    params(("id" = uuid::Uuid, Path, description = "App id"),
           ("period" = Option<super::dto::PeriodParam>, Query, description = "1h (raw samples, default), 6h, 24h or 7d (5/15/60-minute buckets)")),
    responses((status = 200, body = AppMetricsDto), (status = 400, description = "Bad id or unknown period", body = ErrorDto),
              (status = 401, body = ErrorDto), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub async fn app(
    State(state): State<AppState>,
    Auth(who): Auth,
    IdPath(id): IdPath,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AppMetricsDto>> {
    let period = period_of(&q)?;
    let series = metrics::app(&state, &who, id, period).await?;
    let point = |(ts, p): &(i64, Point)| AppPointDto {
        app_id: id,
        containers: p.containers,
        cpu_percent: f64::from(p.cpu_percent),
        memory_mb: f64::from(p.memory_mb),
        memory_limit_mb: f64::from(p.memory_limit_mb),
        network_rx_bytes: p.network_rx_bytes,
        network_tx_bytes: p.network_tx_bytes,
        requests_per_min: p.requests_per_min.map(f64::from),
        collected_at: at(*ts),
    };
    Ok(Json(match series {
        Series::Points(p) => AppMetricsDto {
            period: period.as_str().into(),
            data_points: p.iter().map(point).collect(),
            aggregated: None,
        },
        Series::Buckets(b) => AppMetricsDto {
            period: period.as_str().into(),
            data_points: Vec::new(),
            aggregated: Some(aggregated(&b)),
        },
    }))
}

/// From `timestamp` until the next entry's (the last: until now) the app had `status`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusEntryDto {
    pub status: HistoryStatus,
    #[serde(with = "time::serde::rfc3339")]
    pub timestamp: OffsetDateTime,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AppStatusHistoryDto {
    pub app_id: Uuid,
    pub app_name: String,
    /// Status changes, minute resolution, oldest first; the first entry is the start
    /// of the period. `unknown`: nobody recorded (rserve-proxy was not running).
    pub entries: Vec<StatusEntryDto>,
    /// Percent of the known minutes the app was running or degraded; null when every
    /// minute is unknown.
    pub uptime_percent: Option<f64>,
}

impl From<StatusHistory> for AppStatusHistoryDto {
    fn from(h: StatusHistory) -> Self {
        AppStatusHistoryDto {
            app_id: h.app_id,
            app_name: h.app_name,
            entries: h
                .entries
                .iter()
                .map(|(ts, s)| StatusEntryDto {
                    status: *s,
                    timestamp: at(*ts),
                })
                .collect(),
            uptime_percent: h.uptime_percent,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatusHistoryDto {
    pub period: String,
    pub apps: Vec<AppStatusHistoryDto>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OneStatusHistoryDto {
    pub period: String,
    pub app_id: Uuid,
    pub app_name: String,
    pub entries: Vec<StatusEntryDto>,
    pub uptime_percent: Option<f64>,
}

/// Status history of the caller's apps (all apps for admins).
#[utoipa::path(get, path = "/api/status/history", tag = "metrics",
    params(("period" = Option<super::dto::PeriodParam>, Query, description = "1h (default), 6h, 24h or 7d")),
    responses((status = 200, body = StatusHistoryDto), (status = 400, description = "Unknown period", body = ErrorDto),
              (status = 401, body = ErrorDto)))]
pub async fn status_history(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<StatusHistoryDto>> {
    let period = period_of(&q)?;
    let apps = metrics::status_history(&state, &who, period).await?;
    Ok(Json(StatusHistoryDto {
        period: period.as_str().into(),
        apps: apps.into_iter().map(AppStatusHistoryDto::from).collect(),
    }))
}

/// Status history of one app.
#[utoipa::path(get, path = "/api/apps/{id}/status/history", tag = "metrics",
    params(("id" = uuid::Uuid, Path, description = "App id"),
           ("period" = Option<super::dto::PeriodParam>, Query, description = "1h (default), 6h, 24h or 7d")),
    responses((status = 200, body = OneStatusHistoryDto), (status = 400, description = "Bad id or unknown period", body = ErrorDto),
              (status = 401, body = ErrorDto), (status = 403, body = ErrorDto), (status = 404, body = ErrorDto)))]
pub async fn app_status_history(
    State(state): State<AppState>,
    Auth(who): Auth,
    IdPath(id): IdPath,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<OneStatusHistoryDto>> {
    let period = period_of(&q)?;
    let h = AppStatusHistoryDto::from(metrics::app_status_history(&state, &who, id, period).await?);
    Ok(Json(OneStatusHistoryDto {
        period: period.as_str().into(),
        app_id: h.app_id,
        app_name: h.app_name,
        entries: h.entries,
        uptime_percent: h.uptime_percent,
    }))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntryDto {
    /// Sequence number (newer entries have larger ids).
    pub id: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub actor_id: Option<Uuid>,
    pub actor_name: String,
    pub action: String,
    pub target: Option<String>,
    pub ip: Option<String>,
}

impl AuditEntryDto {
    fn from(id: u64, e: AuditEntry) -> Self {
        AuditEntryDto {
            id,
            at: e.at,
            actor_id: e.actor_id,
            actor_name: e.actor_name,
            action: e.action,
            target: e.target,
            ip: e.ip,
        }
    }
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPageDto {
    /// Newest first.
    pub entries: Vec<AuditEntryDto>,
    /// Pass as `before` to get the next (older) page; null at the end of the log.
    pub next_cursor: Option<String>,
}

/// The audit log, newest first (admins). Filters combine; pages follow `nextCursor`.
#[utoipa::path(get, path = "/api/audit", tag = "audit",
    params(
        ("user" = Option<String>, Query, description = "Actor's username or user id"),
        ("app" = Option<uuid::Uuid>, Query, description = "Entries about this app"),
        ("action" = Option<String>, Query, description = "Exact action (app.start), or a prefix ending in a dot (app.)"),
        ("from" = Option<String>, Query, format = DateTime, description = "RFC 3339 time; entries at or after it"),
        ("to" = Option<String>, Query, format = DateTime, description = "RFC 3339 time; entries before it"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Page size, 1 to 1000 (default 100)"),
        ("before" = Option<String>, Query, pattern = "^[0-9]{1,19}$", description = "nextCursor of the previous page"),
    ),
    responses((status = 200, body = AuditPageDto), (status = 400, description = "Bad filter, limit or cursor", body = ErrorDto),
              (status = 401, body = ErrorDto), (status = 403, description = "Not an admin", body = ErrorDto)))]
pub async fn audit(
    State(state): State<AppState>,
    Auth(who): Auth,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Json<AuditPageDto>> {
    let page = metrics::audit(&state, &who, AuditParams::from_query(&q)).await?;
    Ok(Json(AuditPageDto {
        entries: page
            .entries
            .into_iter()
            .map(|(id, e)| AuditEntryDto::from(id, e))
            .collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}
