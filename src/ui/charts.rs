//! Server-rendered SVG charts. Pure functions turn time series into a [`Chart`] view
//! model that `templates/partials/chart.html` draws: every coordinate and path is
//! formatted here from numbers, so nothing a user typed ever reaches the SVG markup
//! (titles and series names are our own words). The SVG uses a `viewBox`, so a chart
//! scales to the width of a phone.
//!
//! Missing data is shown as a gap, never as a line drawn across it: a series breaks
//! where a value is absent or where two samples are further apart than 1.5 sampling
//! steps (a round the collector did not write: the server was down or Docker was).

use time::macros::format_description;
use time::OffsetDateTime;

/// viewBox size. Small enough that the labels stay readable when a phone scales the
/// chart down, large enough for eight time labels.
pub const WIDTH: f64 = 480.0;
pub const HEIGHT: f64 = 180.0;
const LEFT: f64 = 52.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 22.0;
/// At most this many intervals on the value axis.
const Y_INTERVALS: usize = 4;
/// At most this many labels on the time axis.
const X_TICKS: i64 = 8;

/// What a series measures; decides the axis unit and the label format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Percent of one CPU core (200 = two cores busy).
    Percent,
    Bytes,
    BytesPerSec,
    PerMin,
    Millis,
    Count,
}

impl Unit {
    /// The divisor and suffix the axis uses for values up to `max` (1024-based for
    /// bytes, so the labels match what `docker stats` shows).
    pub fn axis(self, max: f64) -> (f64, &'static str) {
        const K: f64 = 1024.0;
        let scaled = |suffixes: [&'static str; 5]| {
            let mut div = 1.0;
            for s in suffixes.iter().take(4) {
                if max < div * K {
                    return (div, *s);
                }
                div *= K;
            }
            (div, suffixes[4])
        };
        match self {
            Unit::Percent => (1.0, "%"),
            Unit::Bytes => scaled(["B", "KiB", "MiB", "GiB", "TiB"]),
            Unit::BytesPerSec => scaled(["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"]),
            Unit::PerMin => (1.0, "/min"),
            Unit::Millis if max >= 1000.0 => (1000.0, "s"),
            Unit::Millis => (1.0, "ms"),
            Unit::Count => (1.0, ""),
        }
    }

    /// One value with its unit, for cards and summaries ("12.5 %", "1.2 GiB").
    pub fn format(self, v: f64) -> String {
        if !v.is_finite() {
            return "—".into();
        }
        let (div, suffix) = self.axis(v.abs());
        let n = short_number(v / div);
        match suffix {
            "" => n,
            "/min" => format!("{n}/min"),
            s => format!("{n} {s}"),
        }
    }
}

/// A number with at most three significant digits after the point, trailing zeros
/// dropped ("12.5", "0.25", "1234").
pub fn short_number(v: f64) -> String {
    if v == 0.0 {
        // Also -0.0 (a zero CPU delta), which would print as "-0".
        return "0".into();
    }
    let a = v.abs();
    let decimals = if a >= 100.0 || a == 0.0 {
        0
    } else if a >= 10.0 {
        1
    } else if a >= 1.0 {
        2
    } else {
        3
    };
    trim(format!("{v:.decimals$}"))
}

fn trim(s: String) -> String {
    if s.contains('.') {
        let t = s.trim_end_matches('0').trim_end_matches('.');
        if t == "-0" {
            "0".into()
        } else {
            t.into()
        }
    } else {
        s
    }
}

/// A "nice" value axis from 0 to at least `max`: the step is 1, 2, 2.5 or 5 × 10^k
/// and there are at most `intervals` steps. Returns (top, step). No data, zero or a
/// non-finite maximum give the axis 0..1.
pub fn nice_axis(max: f64, intervals: usize) -> (f64, f64) {
    let intervals = intervals.max(1) as f64;
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / intervals;
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = mag * 10.0;
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag * intervals >= max * (1.0 - 1e-9) {
            step = m * mag;
            break;
        }
    }
    let n = (max / step - 1e-9).ceil().max(1.0);
    (n * step, step)
}

/// Decimals a tick label needs to tell steps of `step` apart.
fn step_decimals(step: f64) -> usize {
    let mut d = 0;
    let mut s = step;
    while d < 6 && (s - s.round()).abs() > 1e-6 * s.max(1.0) {
        s *= 10.0;
        d += 1;
    }
    d
}

/// The time axis step for a window of `span` seconds: the smallest of a list of
/// round steps giving at most [`X_TICKS`] labels.
pub fn time_step(span: i64) -> i64 {
    const STEPS: [i64; 12] = [
        60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172_800,
    ];
    STEPS
        .into_iter()
        .find(|s| span / s <= X_TICKS)
        .unwrap_or(604_800)
}

/// Tick times: the multiples of `step` (UTC, so daily ticks fall on midnight) inside
/// `[from, to]`.
pub fn time_ticks(from: i64, to: i64, step: i64) -> Vec<i64> {
    let mut t = from + (step - from.rem_euclid(step)) % step;
    let mut out = Vec::new();
    while t <= to {
        out.push(t);
        t += step;
    }
    out
}

/// "14:30" for steps under a day, "Dec 02" for daily steps (UTC).
pub fn time_label(t: i64, step: i64) -> String {
    let Ok(at) = OffsetDateTime::from_unix_timestamp(t) else {
        return String::new();
    };
    let f = if step >= 86_400 {
        at.format(format_description!("[month repr:short] [day]"))
    } else {
        at.format(format_description!("[hour]:[minute]"))
    };
    f.unwrap_or_default()
}

/// One series to draw: `(unix seconds, value)`, oldest first; `None` = not measured.
#[derive(Debug, Clone)]
pub struct SeriesInput {
    pub name: &'static str,
    pub points: Vec<(i64, Option<f64>)>,
}

/// What to draw: a window `[from, to]`, the expected spacing of samples (`step`,
/// seconds: the collector interval, or the bucket width), and one or more series.
#[derive(Debug, Clone)]
pub struct ChartInput {
    /// Unique on the page; letters, digits and `-` (element ids derive from it).
    pub id: &'static str,
    pub title: &'static str,
    pub unit: Unit,
    pub from: i64,
    pub to: i64,
    pub step: i64,
    /// Fill the area under the first series.
    pub area: bool,
    pub series: Vec<SeriesInput>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tick {
    /// Position along the axis in viewBox units, formatted.
    pub pos: String,
    pub label: String,
}

/// One drawn series.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub name: &'static str,
    /// CSS class giving the colour: `s0`, `s1`, …
    pub class: String,
    /// One path per unbroken run of samples (the `d` attribute).
    pub lines: Vec<String>,
    /// Filled areas under the runs (only for the first series of an area chart).
    pub areas: Vec<String>,
    /// Samples with no neighbour in their run, drawn as dots: `(x, y)`.
    pub dots: Vec<(String, String)>,
    /// The newest value with its unit, or "no data".
    pub latest: String,
}

/// The view model `templates/partials/chart.html` draws.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub id: &'static str,
    pub title: &'static str,
    /// What a screen reader says: the newest and largest values and the window.
    pub summary: String,
    pub view_box: String,
    /// Plot area edges in viewBox units, formatted.
    pub left: String,
    pub right: String,
    pub top: String,
    pub bottom: String,
    /// x of the value labels (right-aligned), y of the time labels, lower end of the
    /// time ticks.
    pub y_label_x: String,
    pub tick_end: String,
    pub x_label_y: String,
    pub y_ticks: Vec<Tick>,
    pub x_ticks: Vec<Tick>,
    pub series: Vec<Drawn>,
    pub has_data: bool,
}

fn px(v: f64) -> String {
    trim(format!("{v:.1}"))
}

/// Split a series into unbroken runs: a `None` or a gap of more than 1.5 steps ends a
/// run. Points outside `[from, to]` and non-finite values are dropped (a dropped
/// non-finite value breaks the run like `None`).
pub fn runs(points: &[(i64, Option<f64>)], from: i64, to: i64, step: i64) -> Vec<Vec<(i64, f64)>> {
    let max_gap = (step.max(1) * 3 + 1) / 2;
    let mut out: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut cur: Vec<(i64, f64)> = Vec::new();
    for &(t, v) in points {
        if t < from || t > to {
            continue;
        }
        match v.filter(|v| v.is_finite()) {
            Some(v) => {
                if cur.last().is_some_and(|(lt, _)| t - lt > max_gap) {
                    out.push(std::mem::take(&mut cur));
                }
                cur.push((t, v));
            }
            None if !cur.is_empty() => out.push(std::mem::take(&mut cur)),
            None => {}
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn period_words(span: i64) -> String {
    match span {
        s if s >= 86_400 && s % 86_400 == 0 => format!("{} d", s / 86_400),
        s if s >= 3600 => format!("{} h", (s + 1800) / 3600),
        s => format!("{} min", (s + 30) / 60),
    }
}

/// Build the view model of one chart.
pub fn chart(input: &ChartInput) -> Chart {
    let (from, to) = (input.from, input.to.max(input.from + 1));
    let all_runs: Vec<Vec<Vec<(i64, f64)>>> = input
        .series
        .iter()
        .map(|s| runs(&s.points, from, to, input.step))
        .collect();
    let max = all_runs
        .iter()
        .flatten()
        .flatten()
        .map(|(_, v)| *v)
        .fold(0.0f64, f64::max);
    let has_data = all_runs.iter().any(|r| !r.is_empty());
    let (div, suffix) = input.unit.axis(max);
    let (top, step) = nice_axis(max / div, Y_INTERVALS);
    let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM);
    let x = |t: i64| x0 + (t - from) as f64 / (to - from) as f64 * (x1 - x0);
    let y = |v: f64| y1 - (v / div / top).clamp(0.0, 1.0) * (y1 - y0);

    let decimals = step_decimals(step);
    let steps = (top / step).round() as usize;
    let y_ticks = (0..=steps)
        .map(|i| {
            let v = i as f64 * step;
            let n = trim(format!("{v:.decimals$}"));
            Tick {
                pos: px(y(v * div)),
                label: if i == steps && !suffix.is_empty() {
                    format!("{n} {suffix}")
                } else {
                    n
                },
            }
        })
        .collect();
    let tstep = time_step(to - from);
    let x_ticks = time_ticks(from, to, tstep)
        .into_iter()
        .map(|t| Tick {
            pos: px(x(t)),
            label: time_label(t, tstep),
        })
        .collect();

    let mut series = Vec::new();
    let mut summary_parts = Vec::new();
    for (i, (s, runs)) in input.series.iter().zip(&all_runs).enumerate() {
        let mut lines = Vec::new();
        let mut areas = Vec::new();
        let mut dots = Vec::new();
        for run in runs {
            if let [(t, v)] = run.as_slice() {
                dots.push((px(x(*t)), px(y(*v))));
                continue;
            }
            let mut d = String::with_capacity(run.len() * 12);
            for (k, (t, v)) in run.iter().enumerate() {
                d.push(if k == 0 { 'M' } else { 'L' });
                d.push_str(&px(x(*t)));
                d.push(',');
                d.push_str(&px(y(*v)));
            }
            if input.area && i == 0 {
                let (first, last) = (run[0].0, run[run.len() - 1].0);
                areas.push(format!(
                    "{d}L{},{}L{},{}Z",
                    px(x(last)),
                    px(y1),
                    px(x(first)),
                    px(y1)
                ));
            }
            lines.push(d);
        }
        let values = runs.iter().flatten().map(|(_, v)| *v);
        let latest = runs.last().and_then(|r| r.last()).map(|(_, v)| *v);
        let peak = values.fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        let latest_text = latest.map_or_else(|| "no data".to_string(), |v| input.unit.format(v));
        summary_parts.push(match (latest, peak) {
            (Some(l), Some(p)) => format!(
                "{} latest {}, highest {}",
                s.name,
                input.unit.format(l),
                input.unit.format(p)
            ),
            _ => format!("{} no data", s.name),
        });
        series.push(Drawn {
            name: s.name,
            class: format!("s{i}"),
            lines,
            areas,
            dots,
            latest: latest_text,
        });
    }
    let summary = format!(
        "{} over the last {} (UTC): {}",
        input.title,
        period_words(to - from),
        summary_parts.join("; ")
    );
    Chart {
        id: input.id,
        title: input.title,
        summary,
        view_box: format!("0 0 {} {}", px(WIDTH), px(HEIGHT)),
        left: px(x0),
        right: px(x1),
        top: px(y0),
        bottom: px(y1),
        y_label_x: px(x0 - 4.0),
        tick_end: px(y1 + 4.0),
        x_label_y: px(HEIGHT - 6.0),
        y_ticks,
        x_ticks,
        series,
        has_data,
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

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(87.0, 4), (100.0, 25.0));
        assert_eq!(nice_axis(100.0, 4), (100.0, 25.0));
        assert_eq!(nice_axis(101.0, 4), (150.0, 50.0));
        assert_eq!(nice_axis(7.0, 4), (8.0, 2.0));
        assert_eq!(nice_axis(4.0, 4), (4.0, 1.0));
        let (top, step) = nice_axis(0.3, 4);
        assert!(
            (top - 0.3).abs() < 1e-12 && (step - 0.1).abs() < 1e-12,
            "{top} {step}"
        );
        assert_eq!(nice_axis(1234.0, 4), (1500.0, 500.0));
        // No data, zero, nonsense: 0..1.
        assert_eq!(nice_axis(0.0, 4), (1.0, 0.25));
        assert_eq!(nice_axis(f64::NAN, 4), (1.0, 0.25));
        assert_eq!(nice_axis(-3.0, 4), (1.0, 0.25));
        // Never more than the intervals asked for, always covering the max.
        for i in 1..2000 {
            let max = f64::from(i) * 0.37;
            let (top, step) = nice_axis(max, 4);
            assert!(top >= max - 1e-9, "{max}: {top}");
            assert!((top / step).round() <= 4.0, "{max}: {top}/{step}");
        }
        assert_eq!(step_decimals(25.0), 0);
        assert_eq!(step_decimals(2.5), 1);
        assert_eq!(step_decimals(0.25), 2);
    }

    #[test]
    fn units_pick_a_readable_scale() {
        assert_eq!(Unit::Bytes.axis(500.0), (1.0, "B"));
        assert_eq!(Unit::Bytes.axis(2048.0), (1024.0, "KiB"));
        assert_eq!(Unit::Bytes.axis(3.0 * 1024.0 * 1024.0 * 1024.0).1, "GiB");
        assert_eq!(Unit::Millis.axis(2500.0), (1000.0, "s"));
        assert_eq!(Unit::Bytes.format(1536.0), "1.5 KiB");
        assert_eq!(Unit::Percent.format(12.345), "12.3 %");
        assert_eq!(Unit::Percent.format(-0.0), "0 %");
        assert_eq!(Unit::PerMin.format(120.0), "120/min");
        assert_eq!(Unit::Count.format(3.0), "3");
        assert_eq!(Unit::Millis.format(0.5), "0.5 ms");
        assert_eq!(Unit::Percent.format(f64::NAN), "—");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(1234.4), "1234");
        assert_eq!(short_number(0.1234), "0.123");
    }

    #[test]
    fn time_axis() {
        assert_eq!(time_step(3600), 600);
        assert_eq!(time_step(86_400), 10_800);
        assert_eq!(time_step(7 * 86_400), 86_400);
        let noon = 1_704_110_400; // 2024-01-01 12:00 UTC
        assert_eq!(
            time_ticks(noon - 3600 + 30, noon + 30, 600),
            (1..=6).map(|i| noon - 3600 + i * 600).collect::<Vec<_>>()
        );
        assert_eq!(time_ticks(noon, noon + 600, 600), vec![noon, noon + 600]);
        assert_eq!(time_label(noon + 1800, 600), "12:30");
        assert_eq!(time_label(noon - 12 * 3600, 86_400), "Jan 01");
    }

    #[test]
    fn gaps_split_runs() {
        let p = |t: i64, v: Option<f64>| (t, v);
        let pts = vec![
            p(0, Some(1.0)),
            p(15, Some(2.0)),
            p(30, None),
            p(45, Some(3.0)),
            p(60, Some(4.0)),
            // One round missing (30 s apart at step 15): a gap.
            p(90, Some(5.0)),
            p(105, Some(f64::NAN)),
            p(120, Some(6.0)),
            // Jitter within 1.5 steps keeps the run.
            p(142, Some(7.0)),
            p(500, Some(8.0)), // outside the window
        ];
        let r = runs(&pts, 0, 400, 15);
        assert_eq!(
            r,
            vec![
                vec![(0, 1.0), (15, 2.0)],
                vec![(45, 3.0), (60, 4.0)],
                vec![(90, 5.0)],
                vec![(120, 6.0), (142, 7.0)],
            ]
        );
        assert!(runs(&[], 0, 10, 15).is_empty());
    }

    #[test]
    fn chart_view_model() {
        let from = 1_704_110_400;
        let input = ChartInput {
            id: "cpu",
            title: "CPU",
            unit: Unit::Percent,
            from,
            to: from + 3600,
            step: 15,
            area: true,
            series: vec![SeriesInput {
                name: "CPU",
                points: vec![
                    (from, Some(0.0)),
                    (from + 15, Some(50.0)),
                    (from + 30, Some(87.0)),
                    (from + 1800, Some(20.0)),
                    (from + 3600, Some(10.0)),
                    (from + 3615, Some(10.0)),
                ],
            }],
        };
        let c = chart(&input);
        assert!(c.has_data);
        assert_eq!(c.view_box, "0 0 480 180");
        // Value axis 0..100 in steps of 25, the top labelled with the unit; y grows
        // downwards: 0 at the bottom edge, 100 at the top.
        let labels: Vec<&str> = c.y_ticks.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["0", "25", "50", "75", "100 %"]);
        assert_eq!(c.y_ticks[0].pos, c.bottom);
        assert_eq!(c.y_ticks[4].pos, c.top);
        // Time axis every 10 minutes from 12:00 to 13:00.
        assert_eq!(c.x_ticks.len(), 7);
        assert_eq!(c.x_ticks[0].label, "12:00");
        assert_eq!(c.x_ticks[0].pos, c.left);
        assert_eq!(c.x_ticks[6].pos, c.right);
        let s = &c.series[0];
        // Three runs: one line with an area, two lone samples as dots (the one past
        // the window is dropped).
        assert_eq!(s.lines.len(), 1);
        assert_eq!(s.areas.len(), 1);
        assert_eq!(s.dots.len(), 2);
        assert_eq!(s.lines[0], "M52,158L53.7,84L55.4,29.2");
        assert!(s.areas[0].ends_with("L55.4,158L52,158Z"), "{}", s.areas[0]);
        assert_eq!(s.latest, "10 %");
        assert_eq!(
            c.summary,
            "CPU over the last 1 h (UTC): CPU latest 10 %, highest 87 %"
        );
    }

    #[test]
    fn chart_without_data() {
        let c = chart(&ChartInput {
            id: "mem",
            title: "Memory",
            unit: Unit::Bytes,
            from: 0,
            to: 86_400,
            step: 900,
            area: false,
            series: vec![SeriesInput {
                name: "used",
                points: vec![(0, None), (900, None)],
            }],
        });
        assert!(!c.has_data);
        assert!(c.series[0].lines.is_empty());
        assert_eq!(c.series[0].latest, "no data");
        assert_eq!(c.y_ticks.last().unwrap().label, "1 B");
        assert!(c.summary.ends_with("used no data"), "{}", c.summary);
    }
}
