//! Store size and query time of metrics/status history after 7 days, simulated by
//! writing through the store API the way the collector does (`cargo run --example
//! history -- [apps] [interval_secs]`, defaults 100 and 300). Every row the server
//! would hold after 7 days is written: rounds every `interval_secs` for the first six
//! days (enough for every 60-minute bucket and every hour's status row: both have a
//! fixed size however many samples they hold), every 60 s in the last day (every
//! 5/15-minute bucket) and every 15 s, the default collector interval, in the last
//! hour (the raw points at their steady-state count). Pruning runs as in the server,
//! every simulated minute in transactions of 200 rows. Prints one JSON object.

use std::time::Instant;

use rserve_proxy::metrics::maths::{self, Period, Point};
use rserve_proxy::metrics::HistoryStatus;
use rserve_proxy::store::{Retention, Store, SYSTEM_SERIES};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let apps: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let interval: i64 = args.get(2).map_or(Ok(300), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state.redb");
    let store = Store::open(&path)?;
    let keep = Retention {
        raw_secs: 3600,
        min5_secs: 6 * 3600,
        min15_secs: 24 * 3600,
        min60_secs: 7 * 24 * 3600,
        status_secs: 7 * 24 * 3600,
    };
    let ids: Vec<Uuid> = (0..apps).map(|_| Uuid::new_v4()).collect();
    let end: i64 = 1_704_067_200 + 7 * 24 * 3600;
    let start = end - 7 * 24 * 3600;
    let mut ts = start;
    let mut rounds = 0u64;
    let mut last_prune = start;
    let mut prune_ms: Vec<f64> = Vec::new();
    let began = Instant::now();
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
        points.push((SYSTEM_SERIES, points[0].1));
        store.write_metrics(ts, &points)?;
        let statuses: Vec<(Uuid, HistoryStatus)> =
            ids.iter().map(|id| (*id, HistoryStatus::Running)).collect();
        store.write_statuses(ts, &statuses)?;
        if ts - last_prune >= 60 {
            last_prune = ts;
            loop {
                let t = Instant::now();
                let n = store.prune_history(ts, &keep, 200)?;
                prune_ms.push(t.elapsed().as_secs_f64() * 1000.0);
                if n < 200 {
                    break;
                }
            }
        }
        rounds += 1;
        ts += step;
        if rounds.is_multiple_of(500) {
            eprintln!(
                "{rounds} rounds, {:.2} days simulated, {:.0} s",
                (ts - start) as f64 / 86_400.0,
                began.elapsed().as_secs_f64()
            );
        }
    }
    let write_secs = began.elapsed().as_secs_f64();
    drop(store);
    // Compact as a long-running server would not: report both sizes.
    let size_mb = std::fs::metadata(&path)?.len() as f64 / 1e6;
    let store = Store::open(&path)?;

    // The 7-day queries the API runs: one app's 60-minute buckets, one app's status
    // history, and the status history of all apps.
    let now = end;
    let mut app_q = Vec::new();
    let mut status_q = Vec::new();
    let mut all_q = Vec::new();
    for i in 0..200 {
        let id = ids[i % ids.len()];
        let t = Instant::now();
        let b =
            store.metric_buckets(id, maths::Resolution::Min60, Period::D7.start(now), now + 1)?;
        assert!(b.len() >= 168, "{}", b.len());
        app_q.push(t.elapsed().as_secs_f64() * 1000.0);
        let from = now - 7 * 24 * 3600;
        let t = Instant::now();
        let rows = store.status_rows(&[id], from, now + 1)?;
        let _ = maths::summarize(&rows[&id], from, now + 1);
        status_q.push(t.elapsed().as_secs_f64() * 1000.0);
        if i < 20 {
            let t = Instant::now();
            let rows = store.status_rows(&ids, from, now + 1)?;
            for id in &ids {
                let _ = maths::summarize(&rows[id], from, now + 1);
            }
            all_q.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let pct = |v: &mut Vec<f64>, q: f64| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[((v.len() as f64 * q).ceil() as usize)
            .saturating_sub(1)
            .min(v.len() - 1)]
    };
    println!(
        "{{\"apps\": {apps}, \"interval_secs\": {interval}, \"rounds\": {rounds}, \"write_secs\": {write_secs:.1}, \
         \"prune_txn_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}, \"max\": {:.2}}}, \"store_mb\": {size_mb:.2}, \
         \"app_7d_metrics_ms\": {{\"p50\": {:.3}, \"p99\": {:.3}}}, \
         \"app_7d_status_ms\": {{\"p50\": {:.3}, \"p99\": {:.3}}}, \
         \"all_apps_7d_status_ms\": {{\"p50\": {:.3}, \"p99\": {:.3}}}}}",
        pct(&mut prune_ms, 0.5),
        pct(&mut prune_ms, 0.99),
        pct(&mut prune_ms, 1.0),
        pct(&mut app_q, 0.5),
        pct(&mut app_q, 0.99),
        pct(&mut status_q, 0.5),
        pct(&mut status_q, 0.99),
        pct(&mut all_q, 0.5),
        pct(&mut all_q, 0.99),
    );
    Ok(())
}
