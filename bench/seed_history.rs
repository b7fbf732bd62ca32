//! 7 days of metrics and status history for a set of apps, written through the store
//! API the way the collector writes them (the loop of bench/history.rs, without its
//! timing): rounds every `interval` seconds for the first six days, every 60 s in the
//! last day, every 15 s in the last hour; pruning as in the server. Statuses vary so
//! a grid shows every class: mostly running, each app with a short error, every tenth
//! app stopped for a day, starting for one round after that.
//! Used as a module (`#[path = "seed_history.rs"] mod seed_history;`).

use rserve_proxy::metrics::maths::Point;
use rserve_proxy::metrics::HistoryStatus;
use rserve_proxy::store::{Retention, Store, SYSTEM_SERIES};
use uuid::Uuid;

pub fn status(i: usize, ts: i64, end: i64) -> HistoryStatus {
    let ago = end - ts;
    let hour = (ago / 3600) as usize;
    if i.is_multiple_of(10) && (72..96).contains(&hour) {
        HistoryStatus::Stopped
    } else if i.is_multiple_of(10) && hour == 71 && ago % 3600 > 3000 {
        HistoryStatus::Starting
    } else if hour == (i * 7) % 168 && ago % 3600 < 600 {
        HistoryStatus::Error
    } else {
        HistoryStatus::Running
    }
}

/// Write everything; returns the number of rounds.
pub fn seed(
    store: &Store,
    ids: &[Uuid],
    end: i64,
    interval: i64,
) -> Result<u64, Box<dyn std::error::Error>> {
    let keep = Retention {
        raw_secs: 3600,
        min5_secs: 6 * 3600,
        min15_secs: 24 * 3600,
        min60_secs: 7 * 24 * 3600,
        status_secs: 7 * 24 * 3600,
    };
    let start = end - 7 * 24 * 3600;
    let mut ts = start;
    let mut rounds = 0u64;
    let mut last_prune = start;
    while ts < end {
        let step = if end - ts <= 3600 {
            15
        } else if end - ts <= 24 * 3600 {
            60.min(interval)
        } else {
            interval
        };
        let mut points: Vec<(Uuid, Point)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let x = ((ts / 60 + i as i64) % 100) as f32;
                (
                    *id,
                    Point {
                        cpu_percent: x,
                        memory_mb: 60.0 + x,
                        memory_limit_mb: 512.0,
                        network_rx_bytes: 1000 + i as u64,
                        network_tx_bytes: 5000 + i as u64,
                        requests_per_min: Some(x * 3.0),
                        containers: 1,
                        apps: 1,
                    },
                )
            })
            .collect();
        if let Some(first) = points.first().map(|p| p.1) {
            points.push((SYSTEM_SERIES, first));
        }
        store.write_metrics(ts, &points)?;
        let statuses: Vec<(Uuid, HistoryStatus)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, status(i, ts, end)))
            .collect();
        store.write_statuses(ts, &statuses)?;
        if ts - last_prune >= 3600 || end - ts <= 3600 && ts - last_prune >= 60 {
            last_prune = ts;
            while store.prune_history(ts, &keep, 1000)? == 1000 {}
        }
        rounds += 1;
        ts += step;
    }
    Ok(rounds)
}
