//! Per-app traffic counters, updated inline on the request path with relaxed atomics
//! (no locks). One `Arc<AppCounters>` per app lives as long as the app is in the route
//! table: the snapshot builder hands the same `Arc` to every new snapshot, so swaps never
//! reset or split the numbers. Readers (metrics, the runtime) call
//! [`AppCounters::snapshot`].
//!
//! The byte counters move with every WebSocket message, from every worker thread: they
//! are sharded per thread ([`Sharded`]) so that two cores never fight over one cache
//! line per message; a snapshot sums the shards.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds; a last, implicit bucket holds
/// everything above. The same bounds serve HTTP (time to response headers: ms) and
/// WebSockets (connection duration: seconds to hours).
pub const LATENCY_BOUNDS_US: [u64; 18] = [
    1_000,
    2_500,
    5_000,
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    30_000_000,
    60_000_000,
    300_000_000,
    900_000_000,
    3_600_000_000,
];

const BUCKETS: usize = LATENCY_BOUNDS_US.len() + 1;

/// Shards of a [`Sharded`] counter: more than the worker threads of any machine we
/// expect; threads beyond that share shards (still correct, just less spread).
const SHARDS: usize = 16;

/// One shard on its own cache line (128 bytes: adjacent-line prefetch pairs lines).
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard(AtomicU64);

/// A counter that threads add to without sharing a cache line; reading sums the shards.
#[derive(Debug, Default)]
pub struct Sharded {
    shards: [Shard; SHARDS],
}

thread_local! {
    /// This thread's shard, handed out round-robin on first use.
    static SHARD: usize = {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        NEXT.fetch_add(1, Relaxed) % SHARDS
    };
}

impl Sharded {
    pub fn add(&self, n: u64) {
        let i = SHARD.with(|i| *i);
        self.shards[i].0.fetch_add(n, Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.shards
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.0.load(Relaxed)))
    }
}

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US.partition_point(|&b| b < us);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        self.count.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds_us: &LATENCY_BOUNDS_US,
            counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
            sum_us: self.sum_us.load(Relaxed),
            count: self.count.load(Relaxed),
        }
    }
}

/// A histogram read at one moment. `counts[i]` is the number of samples in bucket `i`
/// (not cumulative): bucket `i` holds samples `<= bounds_us[i]` and above the previous
/// bound; the last entry (`counts.len() == bounds_us.len() + 1`) holds the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    pub bounds_us: &'static [u64],
    pub counts: Vec<u64>,
    pub sum_us: u64,
    pub count: u64,
}

/// What counts as one response for the status classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    Informational,
    Success,
    Redirect,
    ClientError,
    ServerError,
    /// The exchange ended before any response was written (client went away, …).
    None,
}

impl StatusClass {
    pub fn of(status: u16) -> Self {
        match status {
            100..=199 => StatusClass::Informational,
            200..=299 => StatusClass::Success,
            300..=399 => StatusClass::Redirect,
            400..=499 => StatusClass::ClientError,
            500..=599 => StatusClass::ServerError,
            _ => StatusClass::None,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// One app's live counters.
///
/// Bytes are the streams after the request/response heads: HTTP bodies, and every byte
/// tunnelled after a WebSocket's 101 (frames including their framing). `bytes_in` came
/// from clients, `bytes_out` went to clients.
#[derive(Debug, Default)]
pub struct AppCounters {
    requests: [AtomicU64; 6],
    ws_opened: AtomicU64,
    ws_open: AtomicU64,
    ws_rejected: AtomicU64,
    bytes_in: Sharded,
    bytes_out: Sharded,
    connect_errors: AtomicU64,
    http_latency: Histogram,
    ws_duration: Histogram,
    /// Rotating start for replica selection, so ties do not always pick the first one.
    cursor: AtomicUsize,
}

impl AppCounters {
    pub fn response(&self, status: u16) {
        self.requests[StatusClass::of(status).index()].fetch_add(1, Relaxed);
    }

    pub fn bytes_in(&self, n: usize) {
        self.bytes_in.add(n as u64);
    }

    pub fn bytes_out(&self, n: usize) {
        self.bytes_out.add(n as u64);
    }

    pub fn connect_error(&self) {
        self.connect_errors.fetch_add(1, Relaxed);
    }

    pub fn http_latency(&self, d: Duration) {
        self.http_latency.record(d);
    }

    /// Take one WebSocket slot if fewer than `max` are open. The slot counts as open
    /// from here (handshake included) until [`AppCounters::ws_release`].
    pub fn ws_try_reserve(&self, max: u64) -> bool {
        let ok = self
            .ws_open
            .fetch_update(Relaxed, Relaxed, |n| (n < max).then_some(n + 1))
            .is_ok();
        if !ok {
            self.ws_rejected.fetch_add(1, Relaxed);
        }
        ok
    }

    /// The upstream answered 101: the WebSocket is established.
    pub fn ws_established(&self) {
        self.ws_opened.fetch_add(1, Relaxed);
    }

    /// Give back a slot taken by `ws_try_reserve`; `duration` is the established
    /// connection's lifetime (`None` when the handshake never completed).
    pub fn ws_release(&self, duration: Option<Duration>) {
        self.ws_open.fetch_sub(1, Relaxed);
        if let Some(d) = duration {
            self.ws_duration.record(d);
        }
    }

    pub(crate) fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Relaxed)
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let r = |c: StatusClass| self.requests[c.index()].load(Relaxed);
        CountersSnapshot {
            responses_1xx: r(StatusClass::Informational),
            responses_2xx: r(StatusClass::Success),
            responses_3xx: r(StatusClass::Redirect),
            responses_4xx: r(StatusClass::ClientError),
            responses_5xx: r(StatusClass::ServerError),
            no_response: r(StatusClass::None),
            ws_opened: self.ws_opened.load(Relaxed),
            ws_open: self.ws_open.load(Relaxed),
            ws_rejected: self.ws_rejected.load(Relaxed),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            connect_errors: self.connect_errors.load(Relaxed),
            http_latency: self.http_latency.snapshot(),
            ws_duration: self.ws_duration.snapshot(),
        }
    }
}

/// An app's counters read at one moment (each field is read on its own; the set is not
/// one atomic cut, which is fine for monitoring).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CountersSnapshot {
    /// Responses by status class. A WebSocket handshake counts once, as its status
    /// (101 → `responses_1xx`; a refusal such as 503 in its own class).
    pub responses_1xx: u64,
    pub responses_2xx: u64,
    pub responses_3xx: u64,
    pub responses_4xx: u64,
    pub responses_5xx: u64,
    /// Requests that ended before a response was written.
    pub no_response: u64,
    /// WebSockets established (101 relayed) since the app entered the table.
    pub ws_opened: u64,
    /// WebSockets open now (handshakes in progress included).
    pub ws_open: u64,
    /// WebSocket upgrades refused because the app had `app_max_websockets` open.
    pub ws_rejected: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Failed connection attempts to replicas (refused, unreachable, timed out); each
    /// retry on another replica counts again.
    pub connect_errors: u64,
    /// Time from request start to the upstream's response headers (HTTP only).
    pub http_latency: HistogramSnapshot,
    /// Lifetime of established WebSockets, recorded when they close.
    pub ws_duration: HistogramSnapshot,
}

impl CountersSnapshot {
    pub fn responses(&self) -> u64 {
        self.responses_1xx
            + self.responses_2xx
            + self.responses_3xx
            + self.responses_4xx
            + self.responses_5xx
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_by_upper_bound() {
        let h = Histogram::default();
        h.record(Duration::from_micros(1_000)); // == first bound → bucket 0
        h.record(Duration::from_micros(1_001)); // bucket 1
        h.record(Duration::from_secs(7200)); // above all bounds → last bucket
        let s = h.snapshot();
        assert_eq!(s.counts.len(), LATENCY_BOUNDS_US.len() + 1);
        assert_eq!(s.counts[0], 1);
        assert_eq!(s.counts[1], 1);
        assert_eq!(s.counts[BUCKETS - 1], 1);
        assert_eq!(s.count, 3);
        assert_eq!(s.sum_us, 1_000 + 1_001 + 7_200_000_000);
    }

    #[test]
    fn websocket_slots_are_bounded() {
        let c = AppCounters::default();
        assert!(c.ws_try_reserve(2));
        assert!(c.ws_try_reserve(2));
        assert!(!c.ws_try_reserve(2));
        c.ws_release(None);
        assert!(c.ws_try_reserve(2));
        let s = c.snapshot();
        assert_eq!(s.ws_open, 2);
        assert_eq!(s.ws_rejected, 1);
        assert_eq!(s.ws_duration.count, 0);
    }

    #[test]
    fn sharded_bytes_add_up_across_threads() {
        let c = std::sync::Arc::new(AppCounters::default());
        let threads: Vec<_> = (0..20u64)
            .map(|t| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.bytes_in(usize::try_from(t).unwrap() + 1);
                        c.bytes_out(1);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = c.snapshot();
        assert_eq!(s.bytes_in, 1000 * (1..=20).sum::<u64>());
        assert_eq!(s.bytes_out, 20_000);
    }

    #[test]
    fn status_classes() {
        let c = AppCounters::default();
        for s in [101, 200, 204, 302, 404, 413, 502, 0] {
            c.response(s);
        }
        let s = c.snapshot();
        assert_eq!(
            (
                s.responses_1xx,
                s.responses_2xx,
                s.responses_3xx,
                s.responses_4xx,
                s.responses_5xx,
                s.no_response
            ),
            (1, 2, 1, 2, 1, 1)
        );
        assert_eq!(s.responses(), 7);
    }
}
