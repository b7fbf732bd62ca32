//! Metrics and status history, and the audit log's queries and retention.
//!
//! - `metric_points_v1`: (series, resolution tag, unix seconds) → a fixed-layout
//!   [`Point`] (raw, tag 0) or [`Bucket`] (tags 5/15/60). The series is an app id, or
//!   0 (the nil UUID) for the system-wide series. Key order puts one series'
//!   resolution in time order, so a query is one range read.
//! - `status_history_v1`: (app id, start of the hour) → 60 bytes, one status byte per
//!   minute (0 = nobody recorded that minute: unknown).
//!
//! Writes of one collection round are one transaction (raw points plus the three
//! bucket updates). Pruning deletes at most `max_rows` rows per transaction; callers
//! loop, so a request never waits long behind it.

use std::collections::HashMap;

use redb::{ReadableTable, WriteTransaction};
use time::OffsetDateTime;
use uuid::Uuid;

use super::tables::{AUDIT, METRIC_POINTS, STATUS_HISTORY};
use super::{decode, Result, Store};
use crate::metrics::maths::{status_slot, Bucket, Point, Resolution, MINUTES_PER_ROW};
use crate::metrics::HistoryStatus;
use crate::model::AuditEntry;

/// An app's stored status rows: (start of the hour, one status byte per minute).
pub type StatusRows = Vec<(i64, [u8; MINUTES_PER_ROW])>;

/// The series id of the system-wide figures.
pub const SYSTEM_SERIES: Uuid = Uuid::nil();

/// How long each kind of history is kept, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub raw_secs: i64,
    pub min5_secs: i64,
    pub min15_secs: i64,
    pub min60_secs: i64,
    pub status_secs: i64,
}

impl Retention {
    fn of(&self, r: Resolution) -> i64 {
        match r {
            Resolution::Raw => self.raw_secs,
            Resolution::Min5 => self.min5_secs,
            Resolution::Min15 => self.min15_secs,
            Resolution::Min60 => self.min60_secs,
        }
    }
}

/// What to look for in the audit log. Every set field must match.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// The actor's username (exact) or user id.
    pub user: Option<String>,
    /// An app id: entries whose target names it.
    pub app: Option<Uuid>,
    /// An action (`app.start`) or a prefix ending in `.` (`app.`).
    pub action: Option<String>,
    pub from: Option<OffsetDateTime>,
    pub to: Option<OffsetDateTime>,
}

impl AuditFilter {
    fn matches(&self, e: &AuditEntry) -> bool {
        if let Some(u) = &self.user {
            let by_id = e.actor_id.is_some_and(|id| id.to_string() == *u);
            if !by_id && e.actor_name != *u {
                return false;
            }
        }
        if let Some(app) = self.app {
            let id = app.to_string();
            if !e.target.as_deref().is_some_and(|t| t.contains(&id)) {
                return false;
            }
        }
        if let Some(a) = &self.action {
            let ok = if a.ends_with('.') {
                e.action.starts_with(a.as_str())
            } else {
                e.action == *a
            };
            if !ok {
                return false;
            }
        }
        self.from.is_none_or(|f| e.at >= f) && self.to.is_none_or(|t| e.at < t)
    }
}

/// One page of the audit log, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditPage {
    /// (sequence number, entry).
    pub entries: Vec<(u64, AuditEntry)>,
    /// Pass as `before` for the next (older) page; `None` at the end of the log.
    pub next: Option<u64>,
}

/// At most this many audit rows are read for one page (a filter matching nothing in a
/// long log still answers quickly; the page then ends early with a cursor).
const AUDIT_SCAN_LIMIT: usize = 20_000;

fn upsert_bucket(
    txn: &WriteTransaction,
    series: u128,
    res: Resolution,
    ts: i64,
    p: &Point,
) -> Result<()> {
    let mut t = txn.open_table(METRIC_POINTS)?;
    let key = (series, res.tag(), res.bucket_start(ts));
    let mut b = t
        .get(key)?
        .and_then(|v| Bucket::decode(v.value()))
        .unwrap_or_default();
    b.add(p);
    t.insert(key, b.encode().as_slice())?;
    Ok(())
}

impl Store {
    /// Records one collection round at `ts`: each series' raw point and its 5/15/60
    /// minute buckets.
    pub fn write_metrics(&self, ts: i64, points: &[(Uuid, Point)]) -> Result<()> {
        self.write("write_metrics", |txn| {
            for (series, p) in points {
                let s = series.as_u128();
                txn.open_table(METRIC_POINTS)?
                    .insert((s, Resolution::Raw.tag(), ts), p.encode().as_slice())?;
                for res in Resolution::BUCKETED {
                    upsert_bucket(txn, s, res, ts, p)?;
                }
            }
            Ok(())
        })
    }

    /// Records each app's status for the minute holding `ts` (a minute keeps the most
    /// telling status written in it: `HistoryStatus::weight`).
    pub fn write_statuses(&self, ts: i64, statuses: &[(Uuid, HistoryStatus)]) -> Result<()> {
        let (hour, minute) = status_slot(ts);
        self.write("write_statuses", |txn| {
            let mut t = txn.open_table(STATUS_HISTORY)?;
            for (app, status) in statuses {
                let key = (app.as_u128(), hour);
                let mut row = [0u8; MINUTES_PER_ROW];
                if let Some(v) = t.get(key)? {
                    if v.value().len() == MINUTES_PER_ROW {
                        row.copy_from_slice(v.value());
                    }
                }
                // The most telling status of the minute stays (`HistoryStatus::weight`).
                let before = HistoryStatus::from_u8(row[minute]);
                if status.weight() >= before.weight() {
                    row[minute] = status.as_u8();
                    t.insert(key, row.as_slice())?;
                }
            }
            Ok(())
        })
    }

    /// Raw points of a series in `[from, to)`, oldest first.
    pub fn metric_points(&self, series: Uuid, from: i64, to: i64) -> Result<Vec<(i64, Point)>> {
        self.read("metric_points", |txn| {
            let t = txn.open_table(METRIC_POINTS)?;
            let s = series.as_u128();
            let tag = Resolution::Raw.tag();
            let mut out = Vec::new();
            for row in t.range((s, tag, from)..(s, tag, to))? {
                let (k, v) = row?;
                if let Some(p) = Point::decode(v.value()) {
                    out.push((k.value().2, p));
                }
            }
            Ok(out)
        })
    }

    /// Buckets of a series at `res` starting in `[from, to)`, oldest first.
    pub fn metric_buckets(
        &self,
        series: Uuid,
        res: Resolution,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, Bucket)>> {
        self.read("metric_buckets", |txn| {
            let t = txn.open_table(METRIC_POINTS)?;
            let s = series.as_u128();
            let mut out = Vec::new();
            for row in t.range((s, res.tag(), from)..(s, res.tag(), to))? {
                let (k, v) = row?;
                if let Some(b) = Bucket::decode(v.value()) {
                    out.push((k.value().2, b));
                }
            }
            Ok(out)
        })
    }

    /// Stored status rows (hour start, minutes) of each app overlapping `[from, to)`,
    /// read in one transaction.
    pub fn status_rows(
        &self,
        apps: &[Uuid],
        from: i64,
        to: i64,
    ) -> Result<HashMap<Uuid, StatusRows>> {
        let first_hour = status_slot(from).0;
        self.read("status_rows", |txn| {
            let t = txn.open_table(STATUS_HISTORY)?;
            let mut out = HashMap::with_capacity(apps.len());
            for app in apps {
                let a = app.as_u128();
                let mut rows = Vec::new();
                for row in t.range((a, first_hour)..(a, to))? {
                    let (k, v) = row?;
                    if v.value().len() == MINUTES_PER_ROW {
                        let mut r = [0u8; MINUTES_PER_ROW];
                        r.copy_from_slice(v.value());
                        rows.push((k.value().1, r));
                    }
                }
                out.insert(*app, rows);
            }
            Ok(out)
        })
    }

    /// Deletes history older than the retention allows, as of `now`: at most
    /// `max_rows` rows in this one transaction. Returns how many went; call again while
    /// it returns `max_rows`.
    pub fn prune_history(&self, now: i64, keep: &Retention, max_rows: usize) -> Result<usize> {
        self.write("prune_history", |txn| {
            let mut removed = 0;
            {
                let mut t = txn.open_table(METRIC_POINTS)?;
                let mut doomed: Vec<(u128, u8, i64)> = Vec::new();
                // Walk the series: jump from one to the next with a range start.
                let mut next: Option<u128> = Some(0);
                while let Some(series) = next {
                    if doomed.len() >= max_rows {
                        break;
                    }
                    for res in [
                        Resolution::Raw,
                        Resolution::Min5,
                        Resolution::Min15,
                        Resolution::Min60,
                    ] {
                        let cutoff = now - keep.of(res);
                        for row in
                            t.range((series, res.tag(), i64::MIN)..(series, res.tag(), cutoff))?
                        {
                            if doomed.len() >= max_rows {
                                break;
                            }
                            doomed.push(row?.0.value());
                        }
                    }
                    next = match series.checked_add(1) {
                        Some(n) => t
                            .range((n, 0u8, i64::MIN)..)?
                            .next()
                            .transpose()?
                            .map(|(k, _)| k.value().0),
                        None => None,
                    };
                }
                for k in &doomed {
                    t.remove(k)?;
                }
                removed += doomed.len();
            }
            if removed < max_rows {
                let mut t = txn.open_table(STATUS_HISTORY)?;
                // A row holds one hour: it goes once its last minute is out.
                let cutoff = now - keep.status_secs - 3600;
                let mut doomed: Vec<(u128, i64)> = Vec::new();
                let mut next: Option<u128> = Some(0);
                while let Some(app) = next {
                    for row in t.range((app, i64::MIN)..(app, cutoff))? {
                        if removed + doomed.len() >= max_rows {
                            break;
                        }
                        doomed.push(row?.0.value());
                    }
                    if removed + doomed.len() >= max_rows {
                        break;
                    }
                    next = match app.checked_add(1) {
                        Some(n) => t
                            .range((n, i64::MIN)..)?
                            .next()
                            .transpose()?
                            .map(|(k, _)| k.value().0),
                        None => None,
                    };
                }
                for k in &doomed {
                    t.remove(k)?;
                }
                removed += doomed.len();
            }
            Ok(removed)
        })
    }

    /// Forgets an app's metrics and status history (the app was deleted).
    pub fn delete_history(&self, app: Uuid) -> Result<()> {
        self.write("delete_history", |txn| delete_history_in(txn, app))
    }

    /// One page of the audit log, newest first: entries matching `filter` with a
    /// sequence number below `before` (all when `None`), at most `limit`.
    pub fn query_audit(
        &self,
        filter: &AuditFilter,
        before: Option<u64>,
        limit: usize,
    ) -> Result<AuditPage> {
        self.read("query_audit", |txn| {
            let t = txn.open_table(AUDIT)?;
            let mut page = AuditPage::default();
            let upper = before.unwrap_or(u64::MAX);
            let mut scanned = 0;
            let mut last_seq = None;
            for row in t.range(..upper)?.rev() {
                let (k, v) = row?;
                let seq = k.value();
                last_seq = Some(seq);
                scanned += 1;
                let e: AuditEntry = decode(&format!("audit entry {seq}"), v.value())?;
                if filter.matches(&e) {
                    page.entries.push((seq, e));
                    if page.entries.len() >= limit {
                        break;
                    }
                }
                if scanned >= AUDIT_SCAN_LIMIT {
                    break;
                }
            }
            // More may follow unless the scan ran off the start of the log.
            page.next = last_seq.filter(|s| {
                *s > 1
                    && (page.entries.len() >= limit || scanned >= AUDIT_SCAN_LIMIT)
                    && t.range(..*s)
                        .map(|mut r| r.next().is_some())
                        .unwrap_or(false)
            });
            Ok(page)
        })
    }

    /// Deletes audit entries older than `before`, at most `max_rows` in this
    /// transaction (oldest first). Returns how many went.
    pub fn prune_audit(&self, before: OffsetDateTime, max_rows: usize) -> Result<usize> {
        self.write("prune_audit", |txn| {
            let mut t = txn.open_table(AUDIT)?;
            let mut doomed = Vec::new();
            for row in t.iter()? {
                let (k, v) = row?;
                let e: AuditEntry = decode("audit entry", v.value())?;
                // Sequence order is time order (appends only), so stop at the first
                // entry young enough to stay.
                if e.at >= before || doomed.len() >= max_rows {
                    break;
                }
                doomed.push(k.value());
            }
            for k in &doomed {
                t.remove(k)?;
            }
            Ok(doomed.len())
        })
    }
}

/// Removes every metrics and status row of `app` inside the caller's transaction.
pub(super) fn delete_history_in(txn: &WriteTransaction, app: Uuid) -> Result<()> {
    let a = app.as_u128();
    txn.open_table(METRIC_POINTS)?
        .retain_in((a, 0u8, i64::MIN)..=(a, u8::MAX, i64::MAX), |_, _| false)?;
    txn.open_table(STATUS_HISTORY)?
        .retain_in((a, i64::MIN)..=(a, i64::MAX), |_, _| false)?;
    Ok(())
}
