//! Dashboard and app-metrics pages through the real router and a real redb in a temp
//! dir (tests/common; the spawner is the in-memory fake): full page vs htmx parts,
//! ranges, the uptime grid's classes from a known status history, charts from stored
//! points, escaping, and that a user sees only their own apps.

mod common;

use axum::http::{Method, StatusCode};
use common::{Cred, Harness};
use rserve_proxy::metrics::maths::Point;
use rserve_proxy::metrics::HistoryStatus;
use rserve_proxy::store::SYSTEM_SERIES;
use uuid::Uuid;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The `.grid-row` of `slug` in a page: its cells as (class, title).
fn row_cells(html: &str, slug: &str) -> Vec<(String, String)> {
    let start = html
        .find(&format!("class=\"grid-row\" data-slug=\"{slug}\""))
        .unwrap_or_else(|| panic!("no grid row for {slug}"));
    let rest = &html[start..];
    let end = rest.find("class=\"grid-uptime\"").unwrap();
    rest[..end]
        .split("<span class=\"cell ")
        .skip(1)
        .map(|c| {
            let class = c[..c.find('"').unwrap()].to_string();
            let t = c.find("title=\"").unwrap() + 7;
            let title = c[t..t + c[t..].find('"').unwrap()].to_string();
            (class, title)
        })
        .collect()
}

/// Create an app through the API with this name; returns its id.
async fn app_named(h: &Harness, cred: &Cred, slug: &str, name: &str) -> Uuid {
    let r = h
        .call(
            Method::POST,
            "/api/apps",
            cred,
            Some(serde_json::json!({ "name": name, "slug": slug })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    Uuid::parse_str(r.body["app"]["id"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn dashboard_full_page_and_htmx_parts() {
    let h = Harness::new().await;
    let api = h.admin().await;
    app_named(&h, &api, "sales", "Sales model").await;
    let ui = h.ui_admin().await;

    let full = h.ui_get(&ui.cred, "/", false).await;
    assert_eq!(full.status, StatusCode::OK, "{}", full.text);
    let t = &full.text;
    assert!(t.contains("<title>Dashboard — rserve-proxy</title>"), "{t}");
    assert!(t.contains("id=\"sidebar\"") && t.contains("<h1>Dashboard</h1>"));
    assert!(t.contains("id=\"cards\""));
    for m in [
        "apps",
        "containers",
        "cpu",
        "memory",
        "network",
        "requests",
        "websockets",
    ] {
        assert!(
            t.contains(&format!("class=\"card\" data-metric=\"{m}\"")),
            "{m}"
        );
    }
    // The grid comes as its own part, fetched at once and then every minute.
    assert!(t.contains("id=\"uptime-grid\""));
    assert!(t.contains("hx-get=\"/?range=1h&amp;part=grid\" hx-trigger=\"load, every 60s\""));
    assert!(!t.contains("class=\"grid-row\""));
    assert_eq!(t.matches("<figure class=\"chart\"").count(), 4);
    for r in ["1h", "24h", "7d"] {
        assert!(t.contains(&format!("data-range=\"{r}\"")), "{r}");
    }
    // Refreshes itself: htmx polling on the parts.
    assert!(t.contains("hx-get=\"/?part=cards\" hx-trigger=\"every 10s\""));

    // htmx: the content without the layout.
    let part = h.ui_get(&ui.cred, "/", true).await;
    assert_eq!(part.status, StatusCode::OK);
    assert!(!part.text.contains("<html") && !part.text.contains("id=\"sidebar\""));
    assert!(part.text.contains("<div id=\"dashboard\""));
    assert!(part.text.contains("<h1>Dashboard</h1>"));

    // Each polled part alone.
    let cards = h.ui_get(&ui.cred, "/?part=cards", true).await;
    assert_eq!(cards.status, StatusCode::OK);
    assert!(cards.text.trim_start().starts_with("<section id=\"cards\""));
    assert!(cards.text.contains("1 / 1") || cards.text.contains("0 / 1"));
    assert!(!cards.text.contains("uptime-grid"));
    let grid = h.ui_get(&ui.cred, "/?part=grid", true).await;
    assert!(grid
        .text
        .trim_start()
        .starts_with("<section id=\"uptime-grid\""));
    assert!(grid.text.contains("hx-trigger=\"every 60s\""));
    assert_eq!(row_cells(&grid.text, "sales").len(), 60);
    let grid = h.ui_get(&ui.cred, "/?part=grid&range=24h", true).await;
    assert_eq!(row_cells(&grid.text, "sales").len(), 144);
    let charts = h.ui_get(&ui.cred, "/?part=charts", true).await;
    assert!(charts
        .text
        .trim_start()
        .starts_with("<section id=\"charts\""));
    assert_eq!(charts.text.matches("<figure class=\"chart\"").count(), 4);
    // Without htmx a part is the whole page (a reload of a pushed URL).
    let whole = h.ui_get(&ui.cred, "/?part=cards", false).await;
    assert!(whole.text.contains("id=\"charts\"") && whole.text.contains("<html"));

    // Bad input: a 400 page saying what is accepted, not a 500.
    let bad = h.ui_get(&ui.cred, "/?range=1y", false).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.text.contains("1h, 24h, 7d"), "{}", bad.text);
    let bad = h.ui_get(&ui.cred, "/?part=nope", true).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    // Logged out: to the login page, and back here afterwards.
    let out = h.ui_get(&Cred::None, "/?range=7d", false).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER);
    let loc = out.headers["location"].to_str().unwrap();
    assert!(loc.starts_with("/login?next="), "{loc}");
}

#[tokio::test]
async fn ranges_change_cells_and_the_current_link() {
    let h = Harness::new().await;
    let api = h.admin().await;
    app_named(&h, &api, "sales", "Sales").await;
    let ui = h.ui_admin().await;
    for (range, cells, words) in [
        ("1h", 60, "one cell = 1 min"),
        ("24h", 144, "one cell = 10 min"),
        ("7d", 168, "one cell = 1 h"),
    ] {
        let g = h
            .ui_get(&ui.cred, &format!("/?range={range}&part=grid"), true)
            .await;
        assert_eq!(g.status, StatusCode::OK);
        assert_eq!(row_cells(&g.text, "sales").len(), cells, "{range}");
        assert!(g.text.contains(words), "{range}");
        assert!(g.text.contains(&format!("data-range=\"{range}\"")));
        let r = h.ui_get(&ui.cred, &format!("/?range={range}"), false).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.text.contains(&format!(
                "href=\"/?range={range}\" data-range=\"{range}\" aria-current=\"true\""
            )),
            "{range}"
        );
        assert_eq!(r.text.matches("aria-current=\"true\"").count(), 1);
        assert!(r.text.contains(&format!("/?range={range}&amp;part=grid")));
    }
}

#[tokio::test]
async fn grid_shows_the_recorded_statuses() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let id = app_named(&h, &api, "sales", "Sales").await;
    // The last hour, minute by minute, by minutes ago: 45..30 stopped, 30..20
    // running, 12 error, 8..6 starting, then degraded, stopping 2 and running; older
    // than 45 nothing recorded (unknown).
    let t0 = now();
    let this_minute = t0 - t0.rem_euclid(60);
    let expected = |ago: i64| match ago {
        30..=44 => HistoryStatus::Stopped,
        20..=29 => HistoryStatus::Running,
        12 => HistoryStatus::Error,
        6..=8 => HistoryStatus::Starting,
        3..=5 => HistoryStatus::Degraded,
        2 => HistoryStatus::Stopping,
        0..=1 | 9..=11 | 13..=19 => HistoryStatus::Running,
        _ => HistoryStatus::Unknown,
    };
    for ago in 0..45 {
        h.state
            .store
            .write_statuses(this_minute - ago * 60, &[(id, expected(ago))])
            .unwrap();
    }
    let ui = h.ui_admin().await;
    let r = h.ui_get(&ui.cred, "/?part=grid", true).await;
    assert_eq!(r.status, StatusCode::OK);
    let cells = row_cells(&r.text, "sales");
    assert_eq!(cells.len(), 60);
    let mut seen = std::collections::HashSet::new();
    for (class, title) in &cells {
        // "14:03 UTC: running": find the minute this cell stands for.
        let hm = &title[..5];
        let (hh, mm): (i64, i64) = (hm[..2].parse().unwrap(), hm[3..].parse().unwrap());
        let day = this_minute - this_minute.rem_euclid(86_400);
        let mut t = day + hh * 3600 + mm * 60;
        if t > this_minute {
            t -= 86_400;
        }
        let s = expected((this_minute - t) / 60);
        let want = match s {
            HistoryStatus::Running => "st-running",
            HistoryStatus::Starting | HistoryStatus::Degraded | HistoryStatus::Stopping => {
                "st-starting"
            }
            HistoryStatus::Error => "st-error",
            HistoryStatus::Stopped => "st-stopped",
            HistoryStatus::Unknown => "st-unknown",
        };
        assert_eq!(class, want, "{title}");
        assert!(title.ends_with(&format!("UTC: {}", s.as_str())), "{title}");
        seen.insert(class.clone());
    }
    assert_eq!(seen.len(), 5, "every class shows: {seen:?}");
    // Every cell is focusable and labelled for screen readers too.
    let row = &r.text[r.text.find("data-slug=\"sales\"").unwrap()..];
    assert!(row.contains("tabindex=\"0\" title=\""));
    assert!(row.contains("aria-label=\""));
    // Uptime: running or degraded over the known minutes (45 known, 25 up).
    assert!(r.text.contains("55.6 % up"), "{}", r.text);

    // The same history bucketed by 10 minutes: the bucket holding the error is red.
    let r = h.ui_get(&ui.cred, "/?part=grid&range=24h", true).await;
    let cells = row_cells(&r.text, "sales");
    assert_eq!(cells.len(), 144);
    assert!(cells.iter().any(|(c, _)| c == "st-error"));
    assert!(cells.iter().filter(|(c, _)| c == "st-unknown").count() >= 138);
}

#[tokio::test]
async fn charts_draw_stored_points() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let id = app_named(&h, &api, "sales", "Sales").await;
    let t0 = now() - 600;
    for i in 0..10 {
        let p = Point {
            cpu_percent: 10.0 * i as f32,
            memory_mb: 100.0,
            memory_limit_mb: 512.0,
            network_rx_bytes: 15_000,
            network_tx_bytes: 1500,
            requests_per_min: Some(42.0),
            containers: 1,
            apps: 1,
        };
        h.state
            .store
            .write_metrics(t0 + i * 15, &[(id, p), (SYSTEM_SERIES, p)])
            .unwrap();
    }
    let ui = h.ui_admin().await;
    let r = h.ui_get(&ui.cred, "/?part=charts", true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.text.matches("<path class=\"line\"").count(),
        5,
        "{}",
        r.text
    );
    assert!(r.text.contains("CPU: 90 %"));
    assert!(r.text.contains("requests: 42/min"));
    assert!(r.text.contains("in use: 100 MiB"));
    assert!(r.text.contains("received: 1000 B/s"));
    assert!(r
        .text
        .contains("<title id=\"chart-dash-cpu-t\">CPU</title>"));
    assert!(r
        .text
        .contains("CPU over the last 1 h (UTC): CPU latest 90 %, highest 90 %"));
    assert!(!r.text.contains("No data in this range"));
    // Nothing stored over a week for a fresh store's earlier days: the lines still
    // draw the recent buckets.
    let r = h.ui_get(&ui.cred, "/?part=charts&range=7d", true).await;
    assert_eq!(r.status, StatusCode::OK);

    // A user's dashboard sums their own apps (the system series is admins').
    let (user, _) = h.user(&api, "bob").await;
    let bob_app = h.app(&user, "bobs").await;
    let p = Point {
        cpu_percent: 7.0,
        memory_mb: 1.0,
        memory_limit_mb: 0.0,
        network_rx_bytes: 0,
        network_tx_bytes: 0,
        requests_per_min: None,
        containers: 1,
        apps: 1,
    };
    h.state
        .store
        .write_metrics(now() - 30, &[(Uuid::parse_str(&bob_app).unwrap(), p)])
        .unwrap();
    let bob = h.ui_login("bob", common::USER_PASSWORD).await;
    let r = h.ui_get(&bob.cred, "/?part=charts", true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("CPU: 7 %"), "{}", r.text);
    assert!(!r.text.contains("CPU: 90 %"));
}

#[tokio::test]
async fn app_names_are_escaped() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let id = app_named(&h, &api, "evil", "<script>alert(1)</script>").await;
    let ui = h.ui_admin().await;
    for (path, hx) in [
        ("/?part=grid".to_string(), true),
        (format!("/apps/{id}/metrics"), false),
        (format!("/apps/{id}/metrics?range=24h"), true),
    ] {
        let r = h.ui_get(&ui.cred, &path, hx).await;
        assert_eq!(r.status, StatusCode::OK, "{path}: {}", r.text);
        assert!(!r.text.contains("<script>alert(1)"), "{path}");
        assert!(
            r.text.contains("&#60;script&#62;alert(1)&#60;/script&#62;")
                || r.text.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn users_see_only_their_own_apps() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let admins = app_named(&h, &api, "admins-app", "Admin's").await;
    let (bob_api, _) = h.user(&api, "bob").await;
    let bobs = app_named(&h, &bob_api, "bobs-app", "Bob's").await;
    let bob = h.ui_login("bob", common::USER_PASSWORD).await;
    let admin = h.ui_admin().await;

    let r = h.ui_get(&bob.cred, "/?range=24h&part=grid", true).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.text.contains("data-slug=\"bobs-app\""));
    assert!(!r.text.contains("admins-app") && !r.text.contains(&admins.to_string()));
    let r = h.ui_get(&bob.cred, "/", false).await;
    assert!(r.text.contains("0 / 1"), "bob's card counts one app");
    let r = h.ui_get(&admin.cred, "/?part=grid", true).await;
    assert!(
        r.text.contains("data-slug=\"bobs-app\"") && r.text.contains("data-slug=\"admins-app\"")
    );
    let r = h.ui_get(&admin.cred, "/?part=cards", true).await;
    assert!(r.text.contains("0 / 2"));

    // Another user's app is a 404, the own one answers; a malformed id too is a 404.
    let r = h
        .ui_get(&bob.cred, &format!("/apps/{admins}/metrics"), true)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.text.contains("admins-app"));
    let r = h.ui_get(&bob.cred, "/apps/not-a-uuid/metrics", false).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .ui_get(&bob.cred, &format!("/apps/{bobs}/metrics"), true)
        .await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn app_metrics_fragment_and_page() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let id = app_named(&h, &api, "sales", "Sales").await;
    let ui = h.ui_admin().await;

    let part = h
        .ui_get(&ui.cred, &format!("/apps/{id}/metrics?range=7d"), true)
        .await;
    assert_eq!(part.status, StatusCode::OK, "{}", part.text);
    let t = &part.text;
    assert!(t.trim_start().starts_with("<section id=\"app-metrics\""));
    assert!(t.contains(&format!(
        "hx-get=\"/apps/{id}/metrics?range=7d\" hx-trigger=\"every 15s\""
    )));
    assert!(t.contains("id=\"app-timeline\""));
    assert_eq!(row_cells(t, "sales").len(), 168);
    assert_eq!(t.matches("<figure class=\"chart\"").count(), 4);
    assert!(t.contains("data-metric=\"sampled\""), "no sample yet: {t}");
    assert!(!t.contains("<html"));

    let page = h
        .ui_get(&ui.cred, &format!("/apps/{id}/metrics"), false)
        .await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text.contains("<html") && page.text.contains("<h1>Metrics: Sales</h1>"));
    assert!(page.text.contains("id=\"app-metrics\""));

    let bad = h
        .ui_get(&ui.cred, &format!("/apps/{id}/metrics?range=2d"), true)
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

/// GET with `Accept-Encoding: gzip`: (content-encoding, body decoded).
async fn get_gzip(h: &Harness, cred: &Cred, path: &str, hx: bool) -> (String, String) {
    use http_body_util::BodyExt;
    use std::io::Read;
    use tower::ServiceExt;
    let mut b = Harness::request(Method::GET, path, cred).header("accept-encoding", "gzip, br");
    if hx {
        b = b.header("hx-request", "true");
    }
    let resp = h
        .router
        .clone()
        .oneshot(b.body(axum::body::Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let enc = resp
        .headers()
        .get("content-encoding")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let raw = resp.into_body().collect().await.unwrap().to_bytes();
    let text = if enc == "gzip" {
        let mut s = String::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_string(&mut s)
            .unwrap();
        s
    } else {
        String::from_utf8(raw.to_vec()).unwrap()
    };
    (enc, text)
}

#[tokio::test]
async fn parts_are_compressed_pages_are_not() {
    let h = Harness::new().await;
    let api = h.admin().await;
    let id = app_named(&h, &api, "sales", "Sales").await;
    let ui = h.ui_admin().await;
    // The grid part carries app names but no secret: gzip when the client takes it.
    let (enc, text) = get_gzip(&h, &ui.cred, "/?part=grid", true).await;
    assert_eq!(enc, "gzip");
    assert_eq!(row_cells(&text, "sales").len(), 60);
    let (enc, text) = get_gzip(&h, &ui.cred, &format!("/apps/{id}/metrics"), true).await;
    assert_eq!(enc, "gzip");
    assert!(text.contains("id=\"app-timeline\""));
    // A page carries the CSRF token: never compressed (BREACH).
    let (enc, text) = get_gzip(&h, &ui.cred, "/", false).await;
    assert_eq!(enc, "");
    assert!(text.contains(&ui.csrf));
    let (enc, _) = get_gzip(&h, &ui.cred, &format!("/apps/{id}/metrics"), false).await;
    assert_eq!(enc, "");
    // Without Accept-Encoding: plain.
    let r = h.ui_get(&ui.cred, "/?part=grid", true).await;
    assert!(r.headers.get("content-encoding").is_none());
    assert!(!r.text.contains(&ui.csrf));
}
