//! When to order or renew a certificate. Pure functions of the time passed in, so the
//! policy is tested without waiting.
//!
//! - No certificate: order now.
//! - A certificate: renew once two thirds of its lifetime have passed (day 60 of a
//!   90-day Let's Encrypt certificate, leaving 30 days to fix a problem).
//! - After a failure: retry after 1 min, doubling each time, capped at 1 h — and never
//!   before the renewal is due anyway.

use std::time::Duration as StdDuration;

use time::{Duration, OffsetDateTime};

/// First retry delay after a failed order.
pub const FIRST_RETRY: Duration = Duration::minutes(1);
/// Longest retry delay: an operator who fixes DNS or a port forward sees the
/// certificate within the hour.
pub const MAX_RETRY: Duration = Duration::hours(1);
/// Longest single sleep: the loop wakes at least this often and recomputes, so a
/// suspended machine or a clock step cannot push a renewal back by weeks.
pub const MAX_SLEEP: StdDuration = StdDuration::from_secs(3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// The last failed attempt and how many failed in a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failure {
    pub at: OffsetDateTime,
    pub count: u32,
}

/// Two thirds into the certificate's lifetime.
pub fn renew_at(v: &Validity) -> OffsetDateTime {
    let lifetime = v.not_after - v.not_before;
    if lifetime.is_negative() {
        return v.not_before;
    }
    v.not_before + lifetime * 2 / 3
}

/// Delay after the `count`-th failure in a row (`count` ≥ 1).
pub fn retry_delay(count: u32) -> Duration {
    let doublings = count.saturating_sub(1).min(16);
    let delay = FIRST_RETRY * 2i32.pow(doublings);
    delay.min(MAX_RETRY)
}

/// When the next order should start (`now` or earlier means at once).
pub fn next_attempt(
    now: OffsetDateTime,
    cert: Option<&Validity>,
    failure: Option<&Failure>,
) -> OffsetDateTime {
    let due = cert.map_or(now, renew_at);
    match failure {
        Some(f) => due.max(f.at + retry_delay(f.count)),
        None => due,
    }
}

/// How long to sleep before looking again: until `due`, at most `MAX_SLEEP`.
pub fn sleep_for(now: OffsetDateTime, due: OffsetDateTime) -> StdDuration {
    let wait = due - now;
    if wait <= Duration::ZERO {
        return StdDuration::ZERO;
    }
    StdDuration::try_from(wait).map_or(MAX_SLEEP, |w| w.min(MAX_SLEEP))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-01-01 00:00 UTC);

    fn ninety_days() -> Validity {
        Validity {
            not_before: T0,
            not_after: T0 + Duration::days(90),
        }
    }

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        assert_eq!(renew_at(&ninety_days()), T0 + Duration::days(60));
        let short = Validity {
            not_before: T0,
            not_after: T0 + Duration::seconds(30),
        };
        assert_eq!(renew_at(&short), T0 + Duration::seconds(20));
        let backwards = Validity {
            not_before: T0,
            not_after: T0 - Duration::days(1),
        };
        assert_eq!(renew_at(&backwards), T0);
    }

    #[test]
    fn no_certificate_means_order_now() {
        let now = T0 + Duration::days(3);
        assert_eq!(next_attempt(now, None, None), now);
        assert_eq!(
            sleep_for(now, next_attempt(now, None, None)),
            StdDuration::ZERO
        );
    }

    #[test]
    fn a_fresh_certificate_waits_for_its_renewal_time() {
        let v = ninety_days();
        let now = T0 + Duration::days(1);
        assert_eq!(next_attempt(now, Some(&v), None), T0 + Duration::days(60));
        // Long waits are cut into hour-long sleeps.
        assert_eq!(sleep_for(now, next_attempt(now, Some(&v), None)), MAX_SLEEP);
        let late = T0 + Duration::days(59) + Duration::hours(23) + Duration::minutes(59);
        assert_eq!(
            sleep_for(late, next_attempt(late, Some(&v), None)),
            StdDuration::from_secs(60)
        );
        let overdue = T0 + Duration::days(70);
        assert_eq!(
            sleep_for(overdue, next_attempt(overdue, Some(&v), None)),
            StdDuration::ZERO
        );
    }

    #[test]
    fn failures_back_off_exponentially_up_to_an_hour() {
        let delays: Vec<i64> = (1..=9).map(|n| retry_delay(n).whole_minutes()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY);
        // Without a certificate, the retry time rules.
        let f = Failure { at: T0, count: 3 };
        assert_eq!(
            next_attempt(T0 + Duration::minutes(1), None, Some(&f)),
            T0 + Duration::minutes(4)
        );
    }

    #[test]
    fn a_failed_renewal_retries_with_backoff_but_not_before_it_is_due() {
        let v = ninety_days();
        let due = renew_at(&v);
        // Failed at the due time: next try a minute later.
        let f = Failure { at: due, count: 1 };
        assert_eq!(
            next_attempt(due, Some(&v), Some(&f)),
            due + Duration::minutes(1)
        );
        // A failure long ago does not make a renewal early.
        let old = Failure { at: T0, count: 1 };
        assert_eq!(next_attempt(T0, Some(&v), Some(&old)), due);
    }
}
