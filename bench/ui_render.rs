//! Dashboard figures for docs/benchmarks.md (`cargo run --release --example ui_render
//! -- [apps] [interval_secs] [renders]`, defaults 100, 300, 200): N apps with 7 days of
//! history (bench/seed_history.rs) in a real redb, then
//! - server time of `GET /?range=…` (the page) and of its uptime-grid part
//!   (`&part=grid`, htmx, gzip) through the real router (session check, store reads,
//!   assembly, askama rendering, compression), p50/p99;
//! - the same split into data assembly and rendering;
//! - bytes of a cold load: the page, every asset it references and the grid part, as
//!   sent (with `Accept-Encoding: gzip`), uncompressed and gzip'd, and the number of
//!   requests.
//!
//! Prints one JSON object.

#[path = "../tests/common/mod.rs"]
#[allow(unused_imports)]
mod common;
#[path = "seed_history.rs"]
mod seed_history;

use std::time::Instant;

use askama::Template;
use axum::body::Body;
use axum::http::{header, Method};
use http_body_util::BodyExt;
use tower::ServiceExt;

use common::{Cred, Harness};
use rserve_proxy::service::Principal;

fn pct(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 * q).ceil() as usize)
        .saturating_sub(1)
        .min(v.len() - 1)]
}

/// Status, body bytes as sent, body bytes decoded, content-encoding.
async fn get(
    h: &Harness,
    path: &str,
    cred: &Cred,
    gzip: bool,
    hx: bool,
) -> (u16, usize, Vec<u8>, String) {
    let mut b = Harness::request(Method::GET, path, cred);
    if gzip {
        b = b.header(header::ACCEPT_ENCODING, "gzip, deflate, br");
    }
    if hx {
        b = b.header("hx-request", "true");
    }
    let resp = h
        .router
        .clone()
        .oneshot(b.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let enc = resp
        .headers()
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let raw = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    let sent = raw.len();
    let body = if enc == "gzip" {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(raw.as_slice())
            .read_to_end(&mut out)
            .unwrap();
        out
    } else {
        raw
    };
    (status, sent, body, enc)
}

/// p50/p99 of `n` timed GETs (after 3 untimed ones).
async fn timed(h: &Harness, path: &str, cred: &Cred, hx: bool, n: usize) -> (f64, f64, usize) {
    let mut sent = 0;
    for _ in 0..3 {
        let (status, s, ..) = get(h, path, cred, true, hx).await;
        assert_eq!(status, 200, "{path}");
        sent = s;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let (status, ..) = get(h, path, cred, true, hx).await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 200);
    }
    (pct(&mut ms, 0.5), pct(&mut ms, 0.99), sent)
}

fn gzip_len(b: &[u8]) -> usize {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap().len()
}

/// Local URLs the page makes the browser fetch: `src=` and `<link href=`.
fn assets(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=\"", "href=\""] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            let url = &rest[..rest.find('"').unwrap_or(0)];
            let before = &html[..i];
            let tag_start = before.rfind('<').unwrap_or(0);
            let tag = &html[tag_start..i];
            let fetched = attr == "src=\"" || tag.starts_with("<link");
            if fetched && url.starts_with('/') && !out.iter().any(|u| u == url) {
                out.push(url.to_string());
            }
        }
    }
    out
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let apps: usize = args.get(1).map_or(Ok(100), |s| s.parse())?;
    let interval: i64 = args.get(2).map_or(Ok(300), |s| s.parse())?;
    let renders: usize = args.get(3).map_or(Ok(200), |s| s.parse())?;

    let h = Harness::new().await;
    let admin = h.admin().await;
    let mut ids = Vec::with_capacity(apps);
    for i in 0..apps {
        let id = h.app(&admin, &format!("app-{i:03}")).await;
        ids.push(uuid::Uuid::parse_str(&id)?);
    }
    let end = time::OffsetDateTime::now_utc().unix_timestamp();
    let store = h.state.store.clone();
    let seeded = Instant::now();
    let rounds = tokio::task::spawn_blocking(move || {
        seed_history::seed(&store, &ids, end, interval).map_err(|e| e.to_string())
    })
    .await??;
    let seed_secs = seeded.elapsed().as_secs_f64();

    let user = h
        .state
        .store
        .get_user_by_username("admin")?
        .ok_or("no admin")?;
    let who = Principal {
        user,
        session_id: None,
        token_id: None,
        scope: Default::default(),
    };

    let mut out = Vec::new();
    for range in ["1h", "24h", "7d"] {
        // Through the router: the page (no grid) and the grid part, as the browser
        // asks for them (the part with HX-Request and Accept-Encoding: gzip).
        let page = timed(&h, &format!("/?range={range}"), &admin, false, renders).await;
        let grid_path = format!("/?range={range}&part=grid");
        let grid = timed(&h, &grid_path, &admin, true, renders).await;
        // The same split into data assembly and rendering.
        let period = rserve_proxy::ui::dashboard::range(Some(range))?;
        let (mut load, mut render, mut gload, mut grender) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut page_len, mut grid_len) = (0, 0);
        for _ in 0..renders {
            let t = Instant::now();
            let d = rserve_proxy::ui::dashboard::load(&h.state, &who, period).await?;
            load.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            page_len = d.render()?.len();
            render.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            let g = rserve_proxy::ui::dashboard::load_grid(&h.state, &who, period).await?;
            gload.push(t.elapsed().as_secs_f64() * 1000.0);
            let t = Instant::now();
            grid_len = rserve_proxy::ui::dashboard::GridPart { grid: g }
                .render()?
                .len();
            grender.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let (g50, g99) = (pct(&mut gload, 0.5), pct(&mut gload, 0.99));
        let (r50, r99) = (pct(&mut grender, 0.5), pct(&mut grender, 0.99));
        out.push(format!(
            "\"{range}\": {{\"page_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}}}, \"page_bytes\": {page_len}, \
             \"page_load_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}}}, \"page_render_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}}}, \
             \"grid_ms\": {{\"p50\": {:.2}, \"p99\": {:.2}}}, \"grid_bytes\": {grid_len}, \"grid_gzip_bytes\": {}, \
             \"grid_load_ms\": {{\"p50\": {g50:.2}, \"p99\": {g99:.2}}}, \"grid_render_ms\": {{\"p50\": {r50:.2}, \"p99\": {r99:.2}}}}}",
            page.0,
            page.1,
            pct(&mut load, 0.5),
            pct(&mut load, 0.99),
            pct(&mut render, 0.5),
            pct(&mut render, 0.99),
            grid.0,
            grid.1,
            grid.2,
        ));
    }

    // A cold load of the default dashboard: the page, everything it references, and
    // the grid part htmx fetches on load.
    let (status, page_sent, page, page_enc) = get(&h, "/", &admin, true, false).await;
    assert_eq!(status, 200);
    let html = String::from_utf8(page.clone())?;
    let mut files = vec![format!(
        "{{\"url\": \"/\", \"sent\": {page_sent}, \"bytes\": {}, \"gzip_bytes\": {}, \"encoding\": \"{page_enc}\"}}",
        page.len(),
        gzip_len(&page)
    )];
    let (mut sent, mut plain, mut gz) = (page_sent, page.len(), gzip_len(&page));
    let mut urls: Vec<(String, bool)> = assets(&html).into_iter().map(|u| (u, false)).collect();
    assert!(html.contains("hx-trigger=\"load, every 60s\""));
    urls.push(("/?range=1h&part=grid".to_string(), true));
    for (url, hx) in &urls {
        let (status, s, body, enc) = get(&h, url, &admin, true, *hx).await;
        assert_eq!(status, 200, "{url}");
        sent += s;
        plain += body.len();
        gz += gzip_len(&body);
        files.push(format!(
            "{{\"url\": \"{url}\", \"sent\": {s}, \"bytes\": {}, \"gzip_bytes\": {}, \"encoding\": \"{enc}\"}}",
            body.len(),
            gzip_len(&body)
        ));
    }
    println!(
        "{{\"apps\": {apps}, \"interval_secs\": {interval}, \"rounds\": {rounds}, \"seed_secs\": {seed_secs:.1}, \
         \"renders\": {renders}, {}, \"cold_load\": {{\"requests\": {}, \"sent_bytes\": {sent}, \
         \"uncompressed_bytes\": {plain}, \"gzip_bytes\": {gz}, \"files\": [{}]}}}}",
        out.join(", "),
        urls.len() + 1,
        files.join(", ")
    );
    Ok(())
}
