//! Metrics, status history and audit routes in-process: shapes, periods, access rules.
//! History is written straight through the store, as the collector would.

mod common;

use axum::http::{Method, StatusCode};
use serde_json::Value;
use time::OffsetDateTime;
use uuid::Uuid;

use common::{Cred, Harness};
use rserve_proxy::metrics::maths::Point;
use rserve_proxy::metrics::HistoryStatus;
use rserve_proxy::store::SYSTEM_SERIES;

fn point(cpu: f32) -> Point {
    Point {
        cpu_percent: cpu,
        memory_mb: 64.0,
        memory_limit_mb: 512.0,
        network_rx_bytes: 1000,
        network_tx_bytes: 2000,
        requests_per_min: Some(12.0),
        containers: 1,
        apps: 1,
    }
}

/// Ten minutes of samples every 15 s up to now, and "running" for the last 5 minutes.
fn seed(h: &Harness, app: Uuid) {
    let now = OffsetDateTime::now_utc().unix_timestamp();
    for i in 0..40 {
        let ts = now - 600 + i * 15;
        h.state
            .store
            .write_metrics(ts, &[(app, point(10.0)), (SYSTEM_SERIES, point(20.0))])
            .unwrap();
    }
    for m in 0..5 {
        h.state
            .store
            .write_statuses(now - m * 60, &[(app, HistoryStatus::Running)])
            .unwrap();
    }
}

async fn get(h: &Harness, path: &str, cred: &Cred) -> (StatusCode, Value) {
    let r = h.call(Method::GET, path, cred, None).await;
    (r.status, r.body)
}

#[tokio::test]
async fn metrics_periods_shapes_and_access() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (bob, _) = h.user(&admin, "bob").await;
    let a: Uuid = h.app(&admin, "admins-app").await.parse().unwrap();
    let b: Uuid = h.app(&bob, "bobs-app").await.parse().unwrap();
    seed(&h, a);
    seed(&h, b);

    // 1h: raw points in the contract's shape.
    let (s, v) = get(&h, &format!("/api/metrics/apps/{b}"), &bob).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["period"], "1h");
    let pts = v["dataPoints"].as_array().unwrap();
    assert_eq!(pts.len(), 40);
    assert!(v.get("aggregated").is_none());
    let p = &pts[0];
    assert_eq!(p["appId"], b.to_string());
    assert_eq!(p["containers"], 1);
    assert_eq!(p["cpuPercent"], 10.0);
    assert_eq!(p["memoryMB"], 64.0);
    assert_eq!(p["memoryLimitMB"], 512.0);
    assert_eq!(p["networkRxBytes"], 1000);
    assert_eq!(p["networkTxBytes"], 2000);
    assert_eq!(p["requestsPerMin"], 12.0);
    assert!(p["collectedAt"].as_str().unwrap().ends_with('Z'));

    // 6h/24h/7d: buckets.
    for period in ["6h", "24h", "7d"] {
        let (s, v) = get(&h, &format!("/api/metrics/apps/{b}?period={period}"), &bob).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["period"], period);
        assert_eq!(v["dataPoints"], Value::Array(vec![]));
        let agg = v["aggregated"].as_array().unwrap();
        assert!(!agg.is_empty() && agg.len() <= 4, "{period}: {agg:?}");
        let cpu = &agg[0]["cpuPercent"];
        assert_eq!(
            (
                cpu["avg"].as_f64(),
                cpu["min"].as_f64(),
                cpu["max"].as_f64()
            ),
            (Some(10.0), Some(10.0), Some(10.0))
        );
        assert_eq!(agg[0]["requestsPerMin"]["avg"], 12.0);
        assert!(agg[0]["memoryMB"]["max"].is_number());
    }

    // Anything else is a 400 that says what is allowed.
    for bad in ["2h", "1H", "", "7d%20", "-1"] {
        let r = h
            .call(
                Method::GET,
                &format!("/api/metrics/apps/{b}?period={bad}"),
                &bob,
                None,
            )
            .await;
        r.expect_bad_request("1h, 6h, 24h, 7d");
        let r = h
            .call(
                Method::GET,
                &format!("/api/metrics/system?period={bad}"),
                &admin,
                None,
            )
            .await;
        r.expect_bad_request("1h, 6h, 24h, 7d");
    }

    // Access: others' apps 403, missing 404, bad id 400, system for admins only.
    let (s, _) = get(&h, &format!("/api/metrics/apps/{a}"), &bob).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get(&h, &format!("/api/metrics/apps/{}", Uuid::new_v4()), &bob).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&h, "/api/metrics/apps/not-a-uuid", &bob).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = get(&h, &format!("/api/metrics/apps/{b}"), &admin).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = get(&h, "/api/metrics/system", &bob).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = get(&h, "/api/metrics/system", &admin).await;
    assert_eq!(s, StatusCode::OK);
    let p = &v["dataPoints"][0];
    assert_eq!(p["cpuPercent"], 20.0);
    assert_eq!(p["activeContainers"], 1);
    assert_eq!(p["activeApps"], 1);
    for path in [
        "/api/metrics/system".to_string(),
        format!("/api/metrics/apps/{b}"),
        "/api/status/history".to_string(),
        format!("/api/apps/{b}/status/history"),
        "/api/audit".to_string(),
    ] {
        let (s, _) = get(&h, &path, &Cred::None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test]
async fn status_history_runs_uptime_and_access() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (bob, _) = h.user(&admin, "bob").await;
    let a: Uuid = h.app(&admin, "admins-app").await.parse().unwrap();
    let b: Uuid = h.app(&bob, "bobs-app").await.parse().unwrap();
    seed(&h, a);
    seed(&h, b);

    let (s, v) = get(&h, "/api/status/history", &bob).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["period"], "1h");
    let apps = v["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 1, "bob sees only his app");
    assert_eq!(apps[0]["appId"], b.to_string());
    assert_eq!(apps[0]["appName"], "App bobs-app");
    let entries = apps[0]["entries"].as_array().unwrap();
    // Unknown before anything was recorded, then running.
    assert_eq!(entries.len(), 2, "{entries:?}");
    assert_eq!(entries[0]["status"], "unknown");
    assert_eq!(entries[1]["status"], "running");
    assert_eq!(apps[0]["uptimePercent"], 100.0);

    let (_, v) = get(&h, "/api/status/history?period=7d", &admin).await;
    assert_eq!(v["period"], "7d");
    assert_eq!(v["apps"].as_array().unwrap().len(), 2);

    let (s, v) = get(
        &h,
        &format!("/api/apps/{b}/status/history?period=24h"),
        &bob,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["period"], "24h");
    assert_eq!(v["appId"], b.to_string());
    assert_eq!(v["appName"], "App bobs-app");
    assert_eq!(
        v["entries"].as_array().unwrap().last().unwrap()["status"],
        "running"
    );
    let (s, _) = get(&h, &format!("/api/apps/{a}/status/history"), &bob).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = get(
        &h,
        &format!("/api/apps/{}/status/history", Uuid::new_v4()),
        &bob,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    h.call(Method::GET, "/api/status/history?period=30d", &bob, None)
        .await
        .expect_bad_request("1h, 6h, 24h, 7d");

    // A new app with no history: all unknown, no uptime figure.
    let c: Uuid = h.app(&bob, "fresh-app").await.parse().unwrap();
    let (_, v) = get(&h, &format!("/api/apps/{c}/status/history"), &bob).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    assert_eq!(v["entries"][0]["status"], "unknown");
    assert_eq!(v["uptimePercent"], Value::Null);
}

#[tokio::test]
async fn history_survives_a_restart() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let a: Uuid = h.app(&admin, "kept-app").await.parse().unwrap();
    seed(&h, a);
    let h = h.restart().await;
    let admin = h.admin().await;
    let (_, v) = get(&h, &format!("/api/metrics/apps/{a}"), &admin).await;
    assert_eq!(v["dataPoints"].as_array().unwrap().len(), 40);
    let (_, v) = get(&h, &format!("/api/apps/{a}/status/history"), &admin).await;
    assert_eq!(
        v["entries"].as_array().unwrap().last().unwrap()["status"],
        "running"
    );
}

#[tokio::test]
async fn audit_filters_pages_and_is_for_admins() {
    let h = Harness::new().await;
    let admin = h.admin().await;
    let (bob, bob_id) = h.user(&admin, "bob").await;
    let b = h.app(&bob, "bobs-app").await;
    h.app(&admin, "admins-app").await;

    let (s, _) = get(&h, "/api/audit", &bob).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, v) = get(&h, "/api/audit", &admin).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let all = v["entries"].as_array().unwrap().clone();
    assert!(all.len() >= 4, "{all:?}");
    assert_eq!(v["nextCursor"], Value::Null);
    let ids: Vec<u64> = all.iter().map(|e| e["id"].as_u64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    for k in ["id", "at", "actorId", "actorName", "action", "target", "ip"] {
        assert!(all[0].get(k).is_some(), "{k} in {}", all[0]);
    }

    // Filters.
    let (_, v) = get(&h, "/api/audit?action=app.create", &admin).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 2);
    let (_, v) = get(&h, "/api/audit?action=app.create&user=bob", &admin).await;
    assert_eq!(v["entries"].as_array().unwrap().len(), 1);
    let (_, v) = get(&h, &format!("/api/audit?user={bob_id}&app={b}"), &admin).await;
    let e = v["entries"].as_array().unwrap();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0]["actorName"], "bob");
    let (_, v) = get(&h, "/api/audit?from=2999-01-01T00:00:00Z", &admin).await;
    assert!(v["entries"].as_array().unwrap().is_empty());
    let (_, v) = get(
        &h,
        "/api/audit?to=2999-01-01T00:00:00Z&action=auth.",
        &admin,
    )
    .await;
    assert!(v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["action"].as_str().unwrap().starts_with("auth.")));

    // Pages of one follow the cursor through the whole log.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/api/audit?limit=1&before={c}"),
            None => "/api/audit?limit=1".to_string(),
        };
        let (s, v) = get(&h, &path, &admin).await;
        assert_eq!(s, StatusCode::OK);
        seen.extend(
            v["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_u64().unwrap()),
        );
        match v["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
        assert!(seen.len() <= all.len() + 5, "cursor loops");
    }
    // The log grew by the admin's own reads? No: reads are not audited.
    assert_eq!(seen, ids);

    // Bad parameters: 400 naming them.
    for (q, needle) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=x", "limit"),
        ("from=yesterday", "from"),
        ("to=2024-13-01T00:00:00Z", "to"),
        ("app=nope", "app"),
        ("before=abc", "before"),
    ] {
        let r = h
            .call(Method::GET, &format!("/api/audit?{q}"), &admin, None)
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text);
        assert!(r.text.contains(needle), "{q}: {}", r.text);
    }
}
