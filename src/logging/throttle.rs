//! Rate-limited log lines for events a client can trigger at will (connections refused
//! at a cap, replicas refusing, handshakes failing): the first occurrence is logged,
//! then at most one line per window, saying how many were left out.
//!
//! ```ignore
//! static REFUSED: Throttle = Throttle::new(Duration::from_secs(10));
//! if let Some(repeated) = REFUSED.check() {
//!     tracing::warn!(client = %ip, "connection refused{repeated}");
//! }
//! ```
//! prints "connection refused" once, then e.g. "connection refused (repeated 532
//! times in the last 10 s)". Lock-free: two relaxed atomics and a compare-exchange.
//! Occurrences after the last printed line are reported with the next one (a burst
//! that stops for good leaves its tail count unprinted).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct Throttle {
    window_ms: u64,
    /// Milliseconds since [`epoch`] before which nothing more is printed.
    next_ms: AtomicU64,
    /// When the last line was printed (ms since the epoch).
    last_ms: AtomicU64,
    /// Occurrences left out since then.
    suppressed: AtomicU64,
}

/// What was left out before this line; displays as "" or " (repeated N times in the
/// last S s)".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repeated {
    pub count: u64,
    pub secs: u64,
}

impl fmt::Display for Repeated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.count == 0 {
            return Ok(());
        }
        let times = if self.count == 1 { "time" } else { "times" };
        write!(
            f,
            " (repeated {} {times} in the last {} s)",
            self.count, self.secs
        )
    }
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    pub const fn new(window: Duration) -> Self {
        Throttle {
            window_ms: window.as_millis() as u64,
            next_ms: AtomicU64::new(0),
            last_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some`: print this occurrence (with what was left out before it); `None`:
    /// leave it out (it is counted).
    pub fn check(&self) -> Option<Repeated> {
        self.check_at(epoch().elapsed().as_millis() as u64)
    }

    fn check_at(&self, now: u64) -> Option<Repeated> {
        let next = self.next_ms.load(Ordering::Relaxed);
        if now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now + self.window_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            let last = self.last_ms.swap(now, Ordering::Relaxed);
            let count = self.suppressed.swap(0, Ordering::Relaxed);
            return Some(Repeated {
                count,
                secs: now.saturating_sub(last).div_ceil(1000),
            });
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_prints_then_one_line_per_window_with_the_count() {
        let t = Throttle::new(Duration::from_secs(10));
        let first = t.check_at(1_000).unwrap();
        assert_eq!(first.to_string(), "");
        for ms in 1_001..1_533 {
            assert!(t.check_at(ms).is_none());
        }
        assert!(t.check_at(10_999).is_none());
        let next = t.check_at(11_000).unwrap();
        assert_eq!(next.count, 533);
        assert_eq!(next.to_string(), " (repeated 533 times in the last 10 s)");
        assert_eq!(t.check_at(30_000).unwrap().count, 0);
    }

    #[test]
    fn concurrent_callers_lose_no_count() {
        let t = std::sync::Arc::new(Throttle::new(Duration::from_secs(3600)));
        let printed: u64 = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || (0..10_000).filter(|_| t.check().is_some()).count())
            })
            .map(|h| h.join().unwrap() as u64)
            .sum();
        assert_eq!(printed, 1);
        assert_eq!(t.suppressed.load(Ordering::Relaxed), 39_999);
    }
}
