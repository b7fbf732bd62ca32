//! The pure parts of metrics: deltas between readings, the stored point and bucket
//! layouts, bucketing, periods, status runs and uptime. Time is always passed in (unix
//! seconds), so everything here is tested with a fixed clock.

use std::time::Duration;

use crate::proxy::counters::{CountersSnapshot, HistogramSnapshot};
use crate::spawner::ContainerStats;

use super::sample::{HistoryStatus, TrafficSample};

const MIB: f64 = 1024.0 * 1024.0;

// ---- deltas -------------------------------------------------------------------------

/// CPU use between two readings of one container, in percent of one core. Uses the
/// host's CPU time as the clock (as `docker stats` does), scaled to the host's cores;
/// falls back to wall time when the host time is missing. A counter that went back
/// (container restarted) gives 0.
pub fn cpu_percent(prev: &ContainerStats, cur: &ContainerStats, elapsed: Duration) -> f64 {
    let cpus = f64::from(cur.online_cpus.max(1));
    let Some(used) = cur.cpu_total_ns.checked_sub(prev.cpu_total_ns) else {
        return 0.0;
    };
    let used = used as f64;
    let pct = match (prev.system_cpu_ns, cur.system_cpu_ns) {
        (Some(a), Some(b)) if b > a => used / (b - a) as f64 * cpus * 100.0,
        _ if !elapsed.is_zero() => used / elapsed.as_nanos() as f64 * 100.0,
        _ => 0.0,
    };
    pct.clamp(0.0, cpus * 100.0)
}

/// Growth of a cumulative counter; a counter that went back (reset) counts from 0.
pub fn counter_delta(prev: u64, cur: u64) -> u64 {
    if cur >= prev {
        cur - prev
    } else {
        cur
    }
}

/// An app's traffic between two counter readings `elapsed` apart. Without a previous
/// reading (an app seen for the first time) the counters count from zero: they start
/// when the app enters the route table.
pub fn traffic(
    prev: Option<&CountersSnapshot>,
    cur: &CountersSnapshot,
    elapsed: Duration,
) -> TrafficSample {
    let secs = elapsed.as_secs_f64().max(0.001);
    let d = |f: fn(&CountersSnapshot) -> u64| prev.map_or(f(cur), |p| counter_delta(f(p), f(cur)));
    let per_min = |n: u64| n as f64 * 60.0 / secs;
    let latency = histogram_delta(prev.map(|p| &p.http_latency), &cur.http_latency);
    TrafficSample {
        requests_per_min: per_min(d(CountersSnapshot::responses)),
        responses_2xx_per_min: per_min(d(|c| c.responses_2xx)),
        responses_3xx_per_min: per_min(d(|c| c.responses_3xx)),
        responses_4xx_per_min: per_min(d(|c| c.responses_4xx)),
        responses_5xx_per_min: per_min(d(|c| c.responses_5xx)),
        no_response_per_min: per_min(d(|c| c.no_response)),
        websockets_open: cur.ws_open,
        websockets_opened_per_min: per_min(d(|c| c.ws_opened)),
        bytes_in: d(|c| c.bytes_in),
        bytes_out: d(|c| c.bytes_out),
        connect_errors: d(|c| c.connect_errors),
        latency_p50_ms: percentile_ms(&latency, 0.50),
        latency_p95_ms: percentile_ms(&latency, 0.95),
        latency_p99_ms: percentile_ms(&latency, 0.99),
    }
}

/// Per-bucket counts added between two histogram readings, with the bounds.
fn histogram_delta(
    prev: Option<&HistogramSnapshot>,
    cur: &HistogramSnapshot,
) -> (Vec<u64>, &'static [u64]) {
    let counts = cur
        .counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            prev.and_then(|p| p.counts.get(i))
                .map_or(*c, |p| counter_delta(*p, *c))
        })
        .collect();
    (counts, cur.bounds_us)
}

/// The upper bound (ms) of the bucket holding the `q` quantile; `None` without
/// samples. Samples above the last bound report the last bound.
pub fn percentile_ms((counts, bounds): &(Vec<u64>, &'static [u64]), q: f64) -> Option<f64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            let bound = bounds.get(i).or(bounds.last()).copied().unwrap_or(0);
            return Some(bound as f64 / 1000.0);
        }
    }
    None
}

pub fn bytes_to_mb(b: u64) -> f64 {
    b as f64 / MIB
}

// ---- periods and resolutions --------------------------------------------------------

/// How finely a series is stored: raw points or fixed buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Raw,
    Min5,
    Min15,
    Min60,
}

impl Resolution {
    pub const BUCKETED: [Resolution; 3] = [Resolution::Min5, Resolution::Min15, Resolution::Min60];

    /// Bucket width in seconds (`Raw`: 0).
    pub fn secs(self) -> i64 {
        match self {
            Resolution::Raw => 0,
            Resolution::Min5 => 300,
            Resolution::Min15 => 900,
            Resolution::Min60 => 3600,
        }
    }

    /// The byte that tells the resolutions apart in stored keys.
    pub fn tag(self) -> u8 {
        match self {
            Resolution::Raw => 0,
            Resolution::Min5 => 5,
            Resolution::Min15 => 15,
            Resolution::Min60 => 60,
        }
    }

    /// Start of the bucket holding `ts` (bucket edges are multiples of the width since
    /// the epoch, so a point exactly on an edge opens the next bucket).
    pub fn bucket_start(self, ts: i64) -> i64 {
        match self.secs() {
            0 => ts,
            w => ts - ts.rem_euclid(w),
        }
    }
}

/// A query period of the metrics and status history API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    H1,
    H6,
    H24,
    D7,
}

impl Period {
    /// `1h`, `6h`, `24h` or `7d`; anything else is `None` (the API answers 400).
    pub fn parse(s: &str) -> Option<Period> {
        match s {
            "1h" => Some(Period::H1),
            "6h" => Some(Period::H6),
            "24h" => Some(Period::H24),
            "7d" => Some(Period::D7),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Period::H1 => "1h",
            Period::H6 => "6h",
            Period::H24 => "24h",
            Period::D7 => "7d",
        }
    }

    pub fn secs(self) -> i64 {
        match self {
            Period::H1 => 3600,
            Period::H6 => 6 * 3600,
            Period::H24 => 24 * 3600,
            Period::D7 => 7 * 24 * 3600,
        }
    }

    /// Raw points for 1h; 5/15/60-minute buckets for 6h/24h/7d.
    pub fn resolution(self) -> Resolution {
        match self {
            Period::H1 => Resolution::Raw,
            Period::H6 => Resolution::Min5,
            Period::H24 => Resolution::Min15,
            Period::D7 => Resolution::Min60,
        }
    }

    /// First second of the period ending at `now`. Bucketed periods start at the
    /// bucket holding `now - period`, so the first (partial) bucket is complete.
    pub fn start(self, now: i64) -> i64 {
        self.resolution().bucket_start(now - self.secs())
    }
}

// ---- stored layouts -----------------------------------------------------------------

/// One stored sample of an app (or of the system). Fixed 40-byte little-endian layout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub cpu_percent: f32,
    pub memory_mb: f32,
    pub memory_limit_mb: f32,
    /// Bytes since the previous sample.
    pub network_rx_bytes: u64,
    pub network_tx_bytes: u64,
    /// `None` without traffic data (stored as NaN).
    pub requests_per_min: Option<f32>,
    /// Containers sampled (per app: its replicas; system: all).
    pub containers: u32,
    /// Apps with containers (system only; 1 or 0 per app).
    pub apps: u32,
}

pub const POINT_LEN: usize = 40;

impl Point {
    pub fn encode(&self) -> [u8; POINT_LEN] {
        let mut b = [0u8; POINT_LEN];
        b[0..4].copy_from_slice(&self.cpu_percent.to_le_bytes());
        b[4..8].copy_from_slice(&self.memory_mb.to_le_bytes());
        b[8..12].copy_from_slice(&self.memory_limit_mb.to_le_bytes());
        b[12..20].copy_from_slice(&self.network_rx_bytes.to_le_bytes());
        b[20..28].copy_from_slice(&self.network_tx_bytes.to_le_bytes());
        b[28..32].copy_from_slice(&self.requests_per_min.unwrap_or(f32::NAN).to_le_bytes());
        b[32..36].copy_from_slice(&self.containers.to_le_bytes());
        b[36..40].copy_from_slice(&self.apps.to_le_bytes());
        b
    }

    /// `None` for a value of the wrong length (a corrupt or foreign row).
    pub fn decode(b: &[u8]) -> Option<Point> {
        if b.len() != POINT_LEN {
            return None;
        }
        let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u4 = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let u8_ = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(a)
        };
        let rpm = f(28);
        Some(Point {
            cpu_percent: f(0),
            memory_mb: f(4),
            memory_limit_mb: f(8),
            network_rx_bytes: u8_(12),
            network_tx_bytes: u8_(20),
            requests_per_min: (!rpm.is_nan()).then_some(rpm),
            containers: u4(32),
            apps: u4(36),
        })
    }
}

/// avg/min/max of one field over a bucket: kept as sum, min, max and count so more
/// points can be added to a stored bucket.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Stat {
    pub sum: f64,
    pub min: f32,
    pub max: f32,
    pub count: u32,
}

impl Stat {
    pub fn add(&mut self, v: f64) {
        let v32 = v as f32;
        if self.count == 0 {
            self.min = v32;
            self.max = v32;
        } else {
            self.min = self.min.min(v32);
            self.max = self.max.max(v32);
        }
        self.sum += v;
        self.count += 1;
    }

    /// `None` when nothing was added.
    pub fn avg(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / f64::from(self.count))
    }

    fn write(&self, b: &mut [u8]) {
        b[0..8].copy_from_slice(&self.sum.to_le_bytes());
        b[8..12].copy_from_slice(&self.min.to_le_bytes());
        b[12..16].copy_from_slice(&self.max.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
    }

    fn read(b: &[u8]) -> Stat {
        let mut s = [0u8; 8];
        s.copy_from_slice(&b[0..8]);
        let f = |i: usize| f32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Stat {
            sum: f64::from_le_bytes(s),
            min: f(8),
            max: f(12),
            count: u32::from_le_bytes([b[16], b[17], b[18], b[19]]),
        }
    }
}

const STAT_LEN: usize = 20;
/// Fields of a bucket, in stored order.
const BUCKET_FIELDS: usize = 5;
pub const BUCKET_LEN: usize = STAT_LEN * BUCKET_FIELDS;

/// One 5/15/60-minute bucket of a series. Fixed 100-byte layout.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bucket {
    pub cpu_percent: Stat,
    pub memory_mb: Stat,
    pub network_rx_bytes: Stat,
    pub network_tx_bytes: Stat,
    /// Only points with traffic data count here.
    pub requests_per_min: Stat,
}

impl Bucket {
    pub fn add(&mut self, p: &Point) {
        self.cpu_percent.add(f64::from(p.cpu_percent));
        self.memory_mb.add(f64::from(p.memory_mb));
        self.network_rx_bytes.add(p.network_rx_bytes as f64);
        self.network_tx_bytes.add(p.network_tx_bytes as f64);
        if let Some(r) = p.requests_per_min {
            self.requests_per_min.add(f64::from(r));
        }
    }

    fn fields(&self) -> [&Stat; BUCKET_FIELDS] {
        [
            &self.cpu_percent,
            &self.memory_mb,
            &self.network_rx_bytes,
            &self.network_tx_bytes,
            &self.requests_per_min,
        ]
    }

    pub fn encode(&self) -> [u8; BUCKET_LEN] {
        let mut b = [0u8; BUCKET_LEN];
        for (i, s) in self.fields().iter().enumerate() {
            s.write(&mut b[i * STAT_LEN..(i + 1) * STAT_LEN]);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Bucket> {
        if b.len() != BUCKET_LEN {
            return None;
        }
        let s = |i: usize| Stat::read(&b[i * STAT_LEN..(i + 1) * STAT_LEN]);
        Some(Bucket {
            cpu_percent: s(0),
            memory_mb: s(1),
            network_rx_bytes: s(2),
            network_tx_bytes: s(3),
            requests_per_min: s(4),
        })
    }
}

// ---- status history -----------------------------------------------------------------

/// Status history is stored one row per app and hour: 60 bytes, one
/// [`HistoryStatus`] byte per minute; a minute never written stays 0 = unknown.
pub const MINUTES_PER_ROW: usize = 60;

/// (start of the hour, minute within it) of `ts`.
pub fn status_slot(ts: i64) -> (i64, usize) {
    let hour = ts - ts.rem_euclid(3600);
    (hour, ((ts - hour) / 60) as usize)
}

/// The status of every minute in `[from, to)` (whole minutes, `from` rounded down),
/// in order, from the stored hour rows (any order; missing hours are unknown). Rows
/// are looked up by index, not hashed: a 7-day answer for 100 apps is a million
/// minutes.
fn each_minute(
    rows: &[(i64, [u8; MINUTES_PER_ROW])],
    from: i64,
    to: i64,
    mut f: impl FnMut(i64, HistoryStatus),
) {
    let first = from - from.rem_euclid(60);
    if to <= first {
        return;
    }
    let first_hour = status_slot(first).0;
    let hours = usize::try_from((to - first_hour + 3599) / 3600).unwrap_or(0);
    let mut by_hour: Vec<Option<&[u8; MINUTES_PER_ROW]>> = vec![None; hours];
    for (h, r) in rows {
        if let Some(slot) = usize::try_from((h - first_hour) / 3600)
            .ok()
            .filter(|_| *h >= first_hour)
            .and_then(|i| by_hour.get_mut(i))
        {
            *slot = Some(r);
        }
    }
    let mut t = first;
    while t < to {
        let (hour, m) = status_slot(t);
        let row = usize::try_from((hour - first_hour) / 3600)
            .ok()
            .and_then(|i| by_hour.get(i).copied().flatten());
        f(
            t,
            row.map_or(HistoryStatus::Unknown, |r| HistoryStatus::from_u8(r[m])),
        );
        t += 60;
    }
}

/// Minute-by-minute statuses over `[from, to)` (see [`each_minute`]).
pub fn minutes(
    rows: &[(i64, [u8; MINUTES_PER_ROW])],
    from: i64,
    to: i64,
) -> Vec<(i64, HistoryStatus)> {
    let mut out = Vec::new();
    each_minute(rows, from, to, |t, s| out.push((t, s)));
    out
}

/// [`runs`] and [`uptime_percent`] of `[from, to)` in one pass, without a list of
/// every minute.
pub fn summarize(
    rows: &[(i64, [u8; MINUTES_PER_ROW])],
    from: i64,
    to: i64,
) -> (Vec<(i64, HistoryStatus)>, Option<f64>) {
    let mut runs: Vec<(i64, HistoryStatus)> = Vec::new();
    let (mut known, mut up) = (0u64, 0u64);
    each_minute(rows, from, to, |t, s| {
        if runs.last().is_none_or(|(_, last)| *last != s) {
            runs.push((t, s));
        }
        if s != HistoryStatus::Unknown {
            known += 1;
        }
        if matches!(s, HistoryStatus::Running | HistoryStatus::Degraded) {
            up += 1;
        }
    });
    (runs, (known > 0).then(|| up as f64 * 100.0 / known as f64))
}

/// Runs of equal status: each entry holds from its timestamp until the next entry's
/// (the last one until the end of the period).
pub fn runs(minutes: &[(i64, HistoryStatus)]) -> Vec<(i64, HistoryStatus)> {
    let mut out: Vec<(i64, HistoryStatus)> = Vec::new();
    for &(t, s) in minutes {
        if out.last().is_none_or(|(_, last)| *last != s) {
            out.push((t, s));
        }
    }
    out
}

/// Percent of the known minutes the app was serving (running or degraded); minutes
/// nobody watched (unknown) count neither way. `None` when every minute is unknown.
pub fn uptime_percent(minutes: &[(i64, HistoryStatus)]) -> Option<f64> {
    let known = minutes
        .iter()
        .filter(|(_, s)| *s != HistoryStatus::Unknown)
        .count();
    let up = minutes
        .iter()
        .filter(|(_, s)| matches!(s, HistoryStatus::Running | HistoryStatus::Degraded))
        .count();
    (known > 0).then(|| up as f64 * 100.0 / known as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::counters::AppCounters;

    fn stats(cpu: u64, sys: Option<u64>) -> ContainerStats {
        ContainerStats {
            container_id: "c".into(),
            cpu_total_ns: cpu,
            system_cpu_ns: sys,
            online_cpus: 4,
            ..Default::default()
        }
    }

    #[test]
    fn cpu_from_deltas_scaled_to_cores() {
        let s = Duration::from_secs(1);
        // Host time advanced 4 s over 4 cores (1 s wall); the container used 1 s: one
        // core busy = 100 %.
        let p = cpu_percent(
            &stats(0, Some(0)),
            &stats(1_000_000_000, Some(4_000_000_000)),
            s,
        );
        assert!((p - 100.0).abs() < 1e-9, "{p}");
        // Without host time: wall clock.
        let p = cpu_percent(&stats(0, None), &stats(500_000_000, None), s);
        assert!((p - 50.0).abs() < 1e-9, "{p}");
        // Restarted container (counter went back): 0, not a huge number.
        assert_eq!(cpu_percent(&stats(9, Some(0)), &stats(1, Some(10)), s), 0.0);
        // Never above all cores.
        assert_eq!(
            cpu_percent(&stats(0, None), &stats(10_000_000_000, None), s),
            400.0
        );
        assert_eq!(counter_delta(10, 15), 5);
        assert_eq!(counter_delta(10, 3), 3);
    }

    #[test]
    fn traffic_rates_and_percentiles() {
        let c = AppCounters::default();
        for _ in 0..10 {
            c.response(200);
        }
        let first = c.snapshot();
        for _ in 0..30 {
            c.response(200);
            c.http_latency(Duration::from_micros(900)); // bucket ≤ 1 ms
        }
        for _ in 0..10 {
            c.response(503);
        }
        c.http_latency(Duration::from_millis(40)); // ≤ 50 ms
        c.ws_established();
        c.bytes_in(100);
        let t = traffic(Some(&first), &c.snapshot(), Duration::from_secs(30));
        assert!((t.requests_per_min - 80.0).abs() < 1e-9, "{t:?}");
        assert!((t.responses_2xx_per_min - 60.0).abs() < 1e-9);
        assert!((t.responses_5xx_per_min - 20.0).abs() < 1e-9);
        assert!((t.websockets_opened_per_min - 2.0).abs() < 1e-9);
        assert_eq!(t.bytes_in, 100);
        assert_eq!(t.latency_p50_ms, Some(1.0));
        assert_eq!(t.latency_p99_ms, Some(50.0));
        // Nothing new: no percentiles.
        let s = c.snapshot();
        let t = traffic(Some(&s), &s, Duration::from_secs(15));
        assert_eq!((t.requests_per_min, t.latency_p50_ms), (0.0, None));
        // First sight: counts from zero.
        let t = traffic(None, &first, Duration::from_secs(60));
        assert!((t.requests_per_min - 10.0).abs() < 1e-9);
    }

    #[test]
    fn bucket_boundaries() {
        // 12:00:00 exactly opens a bucket; 12:04:59 is still in it; 12:05:00 is not.
        let noon = 1_700_000_000 - 1_700_000_000 % 3600;
        assert_eq!(Resolution::Min5.bucket_start(noon), noon);
        assert_eq!(Resolution::Min5.bucket_start(noon + 299), noon);
        assert_eq!(Resolution::Min5.bucket_start(noon + 300), noon + 300);
        assert_eq!(Resolution::Min15.bucket_start(noon + 899), noon);
        assert_eq!(Resolution::Min60.bucket_start(noon + 3599), noon);
        assert_eq!(Resolution::Min60.bucket_start(noon - 1), noon - 3600);
        assert_eq!(Resolution::Raw.bucket_start(noon + 7), noon + 7);
        // Periods start on a bucket edge.
        assert_eq!(Period::H6.start(noon + 301), noon + 300 - 6 * 3600);
        assert_eq!(Period::D7.start(noon + 10), noon - 7 * 24 * 3600);
        assert_eq!(Period::H1.start(noon + 10), noon + 10 - 3600);
        assert_eq!(Period::parse("7d"), Some(Period::D7));
        assert_eq!(Period::parse("2h"), None);
        assert_eq!(Period::parse("1H"), None);
    }

    #[test]
    fn buckets_average_min_max_and_round_trip() {
        let p = |cpu: f32, rpm: Option<f32>| Point {
            cpu_percent: cpu,
            memory_mb: 100.0,
            memory_limit_mb: 512.0,
            network_rx_bytes: 10,
            network_tx_bytes: 20,
            requests_per_min: rpm,
            containers: 2,
            apps: 1,
        };
        let mut b = Bucket::default();
        b.add(&p(10.0, Some(6.0)));
        b.add(&p(30.0, None));
        b.add(&p(20.0, Some(2.0)));
        assert_eq!(b.cpu_percent.avg(), Some(20.0));
        assert_eq!((b.cpu_percent.min, b.cpu_percent.max), (10.0, 30.0));
        assert_eq!(b.requests_per_min.count, 2);
        assert_eq!(b.requests_per_min.avg(), Some(4.0));
        assert_eq!(Bucket::decode(&b.encode()), Some(b));
        assert_eq!(Bucket::default().cpu_percent.avg(), None);
        let q = p(1.5, None);
        assert_eq!(Point::decode(&q.encode()), Some(q));
        assert_eq!(
            Point::decode(&p(1.0, Some(3.0)).encode())
                .unwrap()
                .requests_per_min,
            Some(3.0)
        );
        assert_eq!(Point::decode(&[0u8; 3]), None);
    }

    #[test]
    fn status_minutes_runs_uptime_and_the_restart_gap() {
        let h = 1_700_000_000 - 1_700_000_000 % 3600;
        let mut row = [0u8; MINUTES_PER_ROW];
        // Running 0..10, then the binary was down 10..20 (nothing written), then
        // starting one minute, then running; stopped from minute 50.
        for (m, v) in row.iter_mut().enumerate() {
            *v = match m {
                0..10 => HistoryStatus::Running.as_u8(),
                10..20 => 0,
                20 => HistoryStatus::Starting.as_u8(),
                21..50 => HistoryStatus::Running.as_u8(),
                _ => HistoryStatus::Stopped.as_u8(),
            };
        }
        assert_eq!(status_slot(h + 61), (h, 1));
        assert_eq!(status_slot(h + 3600), (h + 3600, 0));
        // The period runs 30 s into the previous hour (no row: unknown) to the end.
        let ms = minutes(&[(h, row)], h - 90, h + 3600);
        assert_eq!(ms.len(), 62);
        assert_eq!(ms[0], (h - 120, HistoryStatus::Unknown));
        let r = runs(&ms);
        assert_eq!(
            r,
            vec![
                (h - 120, HistoryStatus::Unknown),
                (h, HistoryStatus::Running),
                (h + 600, HistoryStatus::Unknown),
                (h + 1200, HistoryStatus::Starting),
                (h + 1260, HistoryStatus::Running),
                (h + 3000, HistoryStatus::Stopped),
            ]
        );
        // 39 up of 50 known minutes (12 unknown).
        let u = uptime_percent(&ms).unwrap();
        assert!((u - 78.0).abs() < 1e-9, "{u}");
        assert_eq!(uptime_percent(&minutes(&[], h, h + 600)), None);
        // The one-pass summary agrees, and rows outside the window are ignored.
        let other = [(h - 7200, row), (h, row), (h + 7200, row)];
        for (from, to) in [(h - 90, h + 3600), (h + 61, h + 1300), (h, h)] {
            let ms = minutes(&other, from, to);
            assert_eq!(
                summarize(&other, from, to),
                (runs(&ms), uptime_percent(&ms))
            );
        }
        assert_eq!(
            minutes(&other, h - 90, h + 3600),
            minutes(&[(h, row)], h - 90, h + 3600)
        );
    }
}
