//! Fixed-window-per-key limiter for login attempts (per client IP).
//! Login is a control-plane path, so a mutex here costs nothing that matters.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct RateLimiter {
    /// Changed by a config reload (`login_attempts_per_minute`).
    limit: AtomicU32,
    window: Duration,
    hits: Mutex<HashMap<String, Vec<Instant>>>,
}

impl RateLimiter {
    pub fn new(limit: u32, window: Duration) -> Self {
        RateLimiter {
            limit: AtomicU32::new(limit),
            window,
            hits: Mutex::new(HashMap::new()),
        }
    }

    /// A new limit (config reload); attempts already counted stay counted.
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// Record an attempt by `key` at `now`. `Err(retry_after)` when over the limit
    /// (the refused attempt is not counted).
    pub fn check(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut hits = match self.hits.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        // Forget idle keys now and then so the map cannot grow without bound.
        if hits.len() > 10_000 {
            let window = self.window;
            hits.retain(|_, v| v.last().is_some_and(|t| now.duration_since(*t) < window));
        }
        let entry = hits.entry(key.to_string()).or_default();
        entry.retain(|t| now.duration_since(*t) < self.window);
        if entry.len() >= self.limit.load(Ordering::Relaxed) as usize {
            let oldest = entry.first().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        entry.push(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_window() {
        let rl = RateLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(rl.check("a", t0).is_ok());
        }
        assert!(rl.check("a", t0).is_err());
        assert!(rl.check("b", t0).is_ok(), "other keys unaffected");
        assert!(
            rl.check("a", t0 + Duration::from_secs(61)).is_ok(),
            "window passes"
        );
    }
}
