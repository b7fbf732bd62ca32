//! The uptime grid: a row per app, a cell per minute (1 h) or per bucket of minutes
//! (longer ranges, so a row stays at 60–168 cells). Pure functions from the status
//! history the service returns (runs of equal status) to the view model
//! `templates/partials/uptime_grid.html` draws.
//!
//! A bucket shows its most telling status ([`HistoryStatus::weight`]: error, then
//! degraded/starting/stopping, then running, then stopped; unknown only when nothing
//! is known), the same rule a single minute of history follows, so a short outage is
//! not hidden by averaging.

use std::sync::Arc;

use time::macros::format_description;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::maths::Period;
use crate::metrics::HistoryStatus;

/// Cell width in seconds for a range: 1 h → 60 cells of 1 min, 6 h → 120 of 3 min,
/// 24 h → 144 of 10 min, 7 d → 168 of 1 h.
pub fn cell_secs(period: Period) -> i64 {
    match period {
        Period::H1 => 60,
        Period::H6 => 180,
        Period::H24 => 600,
        Period::D7 => 3600,
    }
}

/// The CSS class of a status: green running, yellow starting/stopping/degraded, red
/// error, grey stopped, striped unknown.
pub fn class(s: HistoryStatus) -> &'static str {
    match s {
        HistoryStatus::Running => "st-running",
        HistoryStatus::Starting | HistoryStatus::Stopping | HistoryStatus::Degraded => {
            "st-starting"
        }
        HistoryStatus::Error => "st-error",
        HistoryStatus::Stopped => "st-stopped",
        HistoryStatus::Unknown => "st-unknown",
    }
}

/// The status of each cell of `[from, to)` cut into cells of `width` seconds (the
/// last may be shorter), from runs of equal status (`entries`: each holds from its
/// time until the next entry's, the last until `to`; time before the first entry is
/// unknown). Each cell gets the most telling status of the runs overlapping it.
pub fn cells(
    entries: &[(i64, HistoryStatus)],
    from: i64,
    to: i64,
    width: i64,
) -> Vec<(i64, HistoryStatus)> {
    let width = width.max(1);
    let n = usize::try_from((to - from + width - 1) / width).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    let mut i = 0;
    for k in 0..n {
        let start = from + k as i64 * width;
        let end = (start + width).min(to);
        // Skip runs that end at or before this cell.
        while i + 1 < entries.len() && entries[i + 1].0 <= start {
            i += 1;
        }
        // Every run from i that starts before the cell ends overlaps it (run i ends
        // after `start` by the loop above).
        let mut best = HistoryStatus::Unknown;
        let mut j = i;
        while j < entries.len() && entries[j].0 < end {
            let s = entries[j].1;
            if s.weight() > best.weight() {
                best = s;
            }
            j += 1;
        }
        out.push((start, best));
    }
    out
}

/// "14:03" for one-minute cells, "Dec 02 14:00–15:00" for wider ones (UTC).
pub fn cell_time(start: i64, width: i64) -> String {
    let at = |t: i64| OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let hm = format_description!("[hour]:[minute]");
    if width <= 60 {
        return at(start).format(hm).unwrap_or_default();
    }
    let day = format_description!("[month repr:short] [day] [hour]:[minute]");
    format!(
        "{}–{}",
        at(start).format(day).unwrap_or_default(),
        at(start + width).format(hm).unwrap_or_default()
    )
}

/// A window edge under the rows: "14:03", with the date when the window is longer
/// than an hour ("Dec 02 14:03").
pub fn edge_label(t: i64, span: i64) -> String {
    let at = OffsetDateTime::from_unix_timestamp(t).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let f = if span > 3600 {
        at.format(format_description!(
            "[month repr:short] [day] [hour]:[minute]"
        ))
    } else {
        at.format(format_description!("[hour]:[minute]"))
    };
    f.unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Cell {
    pub class: &'static str,
    /// "Dec 02 14:00–15:00 UTC: running": the `title` and `aria-label`.
    pub label: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub app_id: Uuid,
    pub slug: String,
    pub name: String,
    /// "99.5 % up" or "no data".
    pub uptime: String,
    pub cells: Vec<Cell>,
}

/// The view model `templates/partials/uptime_grid.html` draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// `1h`, `24h`, `7d`.
    pub range: &'static str,
    /// What one cell stands for: "1 min", "10 min", "1 h".
    pub cell_words: String,
    /// Labels under the rows: start and end of the window.
    pub start_label: String,
    pub end_label: String,
    pub rows: Vec<Row>,
    pub legend: [(&'static str, &'static str); 5],
}

/// The legend: class and the words for it.
pub const LEGEND: [(&str, &str); 5] = [
    ("st-running", "running"),
    ("st-starting", "starting, stopping or degraded"),
    ("st-error", "error"),
    ("st-stopped", "stopped"),
    ("st-unknown", "unknown (not recorded)"),
];

/// One app's history for the grid.
#[derive(Debug, Clone)]
pub struct RowInput {
    pub app_id: Uuid,
    pub slug: String,
    pub name: String,
    pub entries: Vec<(i64, HistoryStatus)>,
    pub uptime_percent: Option<f64>,
}

pub fn uptime_words(p: Option<f64>) -> String {
    match p {
        Some(p) if p >= 99.95 => "100 % up".into(),
        Some(p) => format!("{p:.1} % up"),
        None => "no data".into(),
    }
}

fn width_words(w: i64) -> String {
    if w % 3600 == 0 {
        format!("{} h", w / 3600)
    } else {
        format!("{} min", w / 60)
    }
}

/// Build the grid for `[from, to)` (the minute window the status history covers).
pub fn grid(period: Period, from: i64, to: i64, apps: Vec<RowInput>) -> Grid {
    let width = cell_secs(period);
    // The time part of a label is the same in every row: format it once per column.
    let times: Vec<Arc<str>> = cells(&[], from, to, width)
        .iter()
        .map(|(t, _)| Arc::from(cell_time(*t, width).as_str()))
        .collect();
    let rows = apps
        .into_iter()
        .map(|a| Row {
            cells: cells(&a.entries, from, to, width)
                .into_iter()
                .zip(&times)
                .map(|((_, s), t)| Cell {
                    class: class(s),
                    label: format!("{t} UTC: {}", s.as_str()),
                })
                .collect(),
            uptime: uptime_words(a.uptime_percent),
            app_id: a.app_id,
            slug: a.slug,
            name: a.name,
        })
        .collect();
    Grid {
        range: period.as_str(),
        cell_words: width_words(width),
        start_label: edge_label(from, to - from),
        end_label: edge_label(to, to - from),
        rows,
        legend: LEGEND,
    }
}

/// No routes of its own: the dashboard and app pages draw these (the module list in
/// `ui::routes` merges one router per area).
pub fn routes() -> axum::Router<crate::service::AppState> {
    axum::Router::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use HistoryStatus::*;

    const H: i64 = 1_704_110_400; // 2024-01-01 12:00 UTC

    #[test]
    fn one_minute_cells_follow_the_runs() {
        let runs = [(H, Running), (H + 120, Error), (H + 180, Stopped)];
        let c = cells(&runs, H, H + 300, 60);
        let st: Vec<HistoryStatus> = c.iter().map(|(_, s)| *s).collect();
        assert_eq!(st, [Running, Running, Error, Stopped, Stopped]);
        assert_eq!(c[3].0, H + 180);
        // An hour is 60 cells.
        assert_eq!(cells(&runs, H, H + 3600, 60).len(), 60);
        // Before the first entry: unknown.
        let c = cells(&[(H + 120, Running)], H, H + 240, 60);
        assert_eq!(c[0].1, Unknown);
        assert_eq!(c[2].1, Running);
        assert!(cells(&runs, H, H, 60).is_empty());
    }

    #[test]
    fn buckets_show_the_most_telling_status() {
        // 10-minute cells: a one-minute error inside running shows as error; a start
        // shows as starting; stopped beats unknown; all unknown stays unknown.
        let runs = [
            (H, Running),
            (H + 300, Error),
            (H + 360, Running),
            (H + 600, Stopped),
            (H + 1260, Starting),
            (H + 1320, Running),
            (H + 1800, Unknown),
            (H + 2100, Stopped),
            (H + 2400, Unknown),
        ];
        let c = cells(&runs, H, H + 3000, 600);
        let st: Vec<HistoryStatus> = c.iter().map(|(_, s)| *s).collect();
        assert_eq!(st, [Error, Stopped, Starting, Stopped, Unknown]);
        // A run starting exactly on a cell edge belongs to the next cell only.
        let c = cells(&[(H, Running), (H + 600, Error)], H, H + 1200, 600);
        assert_eq!((c[0].1, c[1].1), (Running, Error));
        // Sizes per range stay small.
        assert_eq!(cells(&[], H, H + 86_400, cell_secs(Period::H24)).len(), 144);
        assert_eq!(
            cells(&[], H, H + 7 * 86_400, cell_secs(Period::D7)).len(),
            168
        );
        assert_eq!(
            cells(&[], H, H + 6 * 3600, cell_secs(Period::H6)).len(),
            120
        );
    }

    #[test]
    fn classes_and_labels() {
        assert_eq!(class(Running), "st-running");
        for s in [Starting, Stopping, Degraded] {
            assert_eq!(class(s), "st-starting");
        }
        assert_eq!(class(Error), "st-error");
        assert_eq!(class(Stopped), "st-stopped");
        assert_eq!(class(Unknown), "st-unknown");
        assert_eq!(cell_time(H + 180, 60), "12:03");
        assert_eq!(cell_time(H, 3600), "Jan 01 12:00–13:00");
        assert_eq!(uptime_words(Some(99.96)), "100 % up");
        assert_eq!(uptime_words(Some(42.04)), "42.0 % up");
        assert_eq!(uptime_words(None), "no data");
        assert_eq!(edge_label(H, 3600), "12:00");
        assert_eq!(edge_label(H, 86_400), "Jan 01 12:00");
    }

    #[test]
    fn grid_rows() {
        let g = grid(
            Period::H1,
            H,
            H + 3600,
            vec![RowInput {
                app_id: Uuid::nil(),
                slug: "sales".into(),
                name: "<b>Sales</b>".into(),
                entries: vec![(H, Stopped), (H + 1800, Running)],
                uptime_percent: Some(50.0),
            }],
        );
        assert_eq!(g.range, "1h");
        assert_eq!(g.cell_words, "1 min");
        assert_eq!(
            (g.start_label.as_str(), g.end_label.as_str()),
            ("12:00", "13:00")
        );
        let r = &g.rows[0];
        assert_eq!(r.cells.len(), 60);
        assert_eq!(r.cells[0].class, "st-stopped");
        assert_eq!(r.cells[0].label, "12:00 UTC: stopped");
        assert_eq!(r.cells[30].class, "st-running");
        assert_eq!(r.cells[59].label, "12:59 UTC: running");
        assert_eq!(r.uptime, "50.0 % up");
        // The name is kept as given: the template escapes it.
        assert_eq!(r.name, "<b>Sales</b>");
    }
}
