//! Metrics history, status history and the audit log, for the API. Same access rules
//! as apps: a user sees their own apps, an admin all; system-wide figures and the
//! audit log are for admins.

use std::collections::HashMap;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use uuid::Uuid;

use super::apps::owned_app;
use super::{with_store, AppState, Principal, ServiceError, ServiceResult};
use crate::metrics::maths::{self, Bucket, Period, Point};
use crate::metrics::HistoryStatus;
use crate::model::App;
use crate::store::{AuditFilter, AuditPage, SYSTEM_SERIES};

/// Largest audit page.
pub const AUDIT_MAX_LIMIT: usize = 1000;
pub const AUDIT_DEFAULT_LIMIT: usize = 100;

/// A series over a period: raw points (1h) or buckets (6h/24h/7d), oldest first,
/// keyed by unix seconds (bucket start for buckets).
#[derive(Debug, Clone)]
pub enum Series {
    Points(Vec<(i64, Point)>),
    Buckets(Vec<(i64, Bucket)>),
}

/// `period` as the API takes it: absent = 1h; anything but 1h/6h/24h/7d is a 400.
pub fn period(raw: Option<&str>) -> ServiceResult<Period> {
    match raw {
        None => Ok(Period::H1),
        Some(p) => Period::parse(p).ok_or_else(|| {
            ServiceError::bad_request(format!("period {p:?} is not one of 1h, 6h, 24h, 7d"))
        }),
    }
}

fn admin_only(who: &Principal) -> ServiceResult<()> {
    if who.is_admin() {
        Ok(())
    } else {
        Err(ServiceError::access_denied())
    }
}

async fn series(state: &AppState, id: Uuid, period: Period, now: i64) -> ServiceResult<Series> {
    let from = period.start(now);
    let to = now + 1;
    let res = period.resolution();
    if res == maths::Resolution::Raw {
        let pts = with_store(&state.store, move |s| s.metric_points(id, from, to)).await?;
        Ok(Series::Points(pts))
    } else {
        let b = with_store(&state.store, move |s| s.metric_buckets(id, res, from, to)).await?;
        Ok(Series::Buckets(b))
    }
}

/// System-wide figures over `period` (admins).
pub async fn system(state: &AppState, who: &Principal, period: Period) -> ServiceResult<Series> {
    admin_only(who)?;
    series(state, SYSTEM_SERIES, period, now()).await
}

/// One app's figures over `period`.
pub async fn app(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    period: Period,
) -> ServiceResult<Series> {
    owned_app(state, who, id).await?;
    series(state, id, period, now()).await
}

/// One app's status over a period.
#[derive(Debug, Clone)]
pub struct StatusHistory {
    pub app_id: Uuid,
    pub app_name: String,
    /// Runs of equal status: each holds from its time until the next entry's.
    pub entries: Vec<(i64, HistoryStatus)>,
    /// Percent of the known minutes running or degraded; `None` if none is known.
    pub uptime_percent: Option<f64>,
    /// The minutes covered, `[from, to)` (unix seconds, whole minutes).
    pub from: i64,
    pub to: i64,
}

/// The minutes of a period ending with the current one: `[from, to)`.
fn minute_window(period: Period, now: i64) -> (i64, i64) {
    let this_minute = now - now.rem_euclid(60);
    (this_minute + 60 - period.secs(), this_minute + 60)
}

async fn histories(
    state: &AppState,
    apps: Vec<App>,
    period: Period,
    now: i64,
) -> ServiceResult<Vec<StatusHistory>> {
    let (from, to) = minute_window(period, now);
    let ids: Vec<Uuid> = apps.iter().map(|a| a.id).collect();
    let mut rows = with_store(&state.store, move |s| s.status_rows(&ids, from, to)).await?;
    Ok(apps
        .into_iter()
        .map(|a| {
            let r = rows.remove(&a.id).unwrap_or_default();
            let (entries, uptime_percent) = maths::summarize(&r, from, to);
            StatusHistory {
                app_id: a.id,
                app_name: a.name,
                entries,
                uptime_percent,
                from,
                to,
            }
        })
        .collect())
}

/// Status history of the caller's apps (every app for admins), oldest app first.
pub async fn status_history(
    state: &AppState,
    who: &Principal,
    period: Period,
) -> ServiceResult<Vec<StatusHistory>> {
    let owner = (!who.is_admin()).then_some(who.user.id);
    let apps = with_store(&state.store, move |s| s.list_apps(owner)).await?;
    histories(state, apps, period, now()).await
}

/// Status history of one app.
pub async fn app_status_history(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    period: Period,
) -> ServiceResult<StatusHistory> {
    let app = owned_app(state, who, id).await?;
    let mut h = histories(state, vec![app], period, now()).await?;
    h.pop()
        .ok_or_else(|| ServiceError::Internal("status history lost its app".into()))
}

/// Parameters of `GET /api/audit`, as given (strings), checked here.
#[derive(Debug, Clone, Default)]
pub struct AuditParams {
    pub user: Option<String>,
    pub app: Option<String>,
    pub action: Option<String>,
    pub from: Option<String>,
    pub to: Option<String>,
    pub limit: Option<String>,
    pub before: Option<String>,
}

impl AuditParams {
    pub fn from_query(q: &HashMap<String, String>) -> Self {
        // An empty text filter means none; an empty id, time, limit or cursor is as
        // wrong as any other malformed one (400), as the OpenAPI document says.
        let text = |k: &str| q.get(k).filter(|v| !v.is_empty()).cloned();
        let get = |k: &str| q.get(k).cloned();
        AuditParams {
            user: text("user"),
            app: get("app"),
            action: text("action"),
            from: get("from"),
            to: get("to"),
            limit: get("limit"),
            before: get("before"),
        }
    }
}

/// A page of the audit log, newest first (admins).
pub async fn audit(state: &AppState, who: &Principal, p: AuditParams) -> ServiceResult<AuditPage> {
    admin_only(who)?;
    let mut problems = Vec::new();
    let time = |name: &str, v: &Option<String>, problems: &mut Vec<String>| {
        v.as_ref()
            .and_then(|s| match OffsetDateTime::parse(s, &Rfc3339) {
                Ok(t) => Some(t),
                Err(_) => {
                    problems.push(format!(
                        "{name}: {s:?} is not an RFC 3339 time like 2024-01-31T12:00:00Z"
                    ));
                    None
                }
            })
    };
    let from = time("from", &p.from, &mut problems);
    let to = time("to", &p.to, &mut problems);
    let app = p.app.as_ref().and_then(|a| match Uuid::parse_str(a) {
        Ok(id) => Some(id),
        Err(_) => {
            problems.push(format!("app: {a:?} is not an app id"));
            None
        }
    });
    let limit = match p.limit.as_deref().map(str::parse::<usize>) {
        None => AUDIT_DEFAULT_LIMIT,
        Some(Ok(n)) if (1..=AUDIT_MAX_LIMIT).contains(&n) => n,
        Some(_) => {
            problems.push(format!(
                "limit: must be a whole number from 1 to {AUDIT_MAX_LIMIT}"
            ));
            0
        }
    };
    let before = match p.before.as_deref().map(str::parse::<u64>) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            problems.push("before: must be the nextCursor of a previous page".into());
            None
        }
    };
    if !problems.is_empty() {
        return Err(ServiceError::BadRequest {
            message: "Invalid audit query".into(),
            details: problems,
        });
    }
    let filter = AuditFilter {
        user: p.user,
        app,
        action: p.action,
        from,
        to,
    };
    with_store(&state.store, move |s| s.query_audit(&filter, before, limit)).await
}

fn now() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_and_minute_windows() {
        assert_eq!(period(None).unwrap(), Period::H1);
        assert_eq!(period(Some("24h")).unwrap(), Period::H24);
        assert!(matches!(
            period(Some("30d")),
            Err(ServiceError::BadRequest { .. })
        ));
        // 12:00:30 → the hour ending with the current minute 12:00.
        let noon = 1_704_110_400;
        assert_eq!(
            minute_window(Period::H1, noon + 30),
            (noon + 60 - 3600, noon + 60)
        );
    }
}
