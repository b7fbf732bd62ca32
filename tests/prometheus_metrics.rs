//! `GET /metrics` of the real binary, parsed by a real Prometheus text parser
//! (`prometheus-parse`): after N WebSocket sessions and M HTTP requests through the
//! proxy to a real backend (`static_routes`), the counters say N and M. Plus who may
//! read it (anonymous 401, non-admin 403, metrics-scoped tokens only there) and the
//! unauthenticated `metrics_listen` listener.

mod common_dataplane;
mod support;

use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use reqwest::blocking::Client;
use serde_json::json;
use support::{json_of, Server};

const PASSWORD: &str = "metrics-test-password";

fn parse(text: &str) -> Scrape {
    Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("valid exposition")
}

/// The value of `metric` whose labels include all of `labels`.
fn value(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    s.samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match &x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            other => panic!("{metric} is not a single value: {other:?}"),
        })
}

fn histogram(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<(f64, f64)> {
    let x = s
        .samples
        .iter()
        .find(|x| x.metric == metric && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no {metric}"));
    match &x.value {
        Value::Histogram(b) => b.iter().map(|h| (h.less_than, h.count)).collect(),
        other => panic!("{metric} is not a histogram: {other:?}"),
    }
}

fn admin(s: &Server) -> Client {
    let c = support::client();
    assert_eq!(support::login(&c, s, PASSWORD), 200);
    c
}

fn scrape(c: &Client, s: &Server) -> (String, Scrape) {
    let r = c.get(s.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = r.text().unwrap();
    let parsed = parse(&text);
    (text, parsed)
}

fn token(c: &Client, s: &Server, body: serde_json::Value) -> (u16, String) {
    let (st, b) = json_of(
        c.post(s.url("/api/auth/tokens"))
            .json(&body)
            .send()
            .unwrap(),
    );
    (
        st.as_u16(),
        b["token"]["token"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn counters_match_the_traffic_sent() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(common_dataplane::backend::Backend::start("b1"));
    let dir = tempfile::tempdir().unwrap();
    let routes = format!("echo={}", backend.addr);
    let s = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", PASSWORD),
            ("RSP_STATIC_ROUTES", &routes),
        ],
    );
    let c = admin(&s);
    let (_, before) = scrape(&c, &s);
    let app = [("app", "echo")];
    assert_eq!(
        value(
            &before,
            "rserve_proxy_app_requests_total",
            &[("app", "echo"), ("class", "2xx")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &before,
            "rserve_proxy_app_status",
            &[("app", "echo"), ("status", "running")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &before,
            "rserve_proxy_app_status",
            &[("app", "echo"), ("status", "stopped")]
        ),
        Some(0.0)
    );

    const M: usize = 7;
    const N: usize = 3;
    let plain = reqwest::blocking::Client::new();
    for i in 0..M {
        let r = plain.get(s.url(&format!("/echo/x{i}"))).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    let ws_url = s.url("/echo/").replace("http://", "ws://");
    rt.block_on(async {
        for i in 0..N {
            let mut ws = common_dataplane::ws_connect(&ws_url).await;
            assert_eq!(
                common_dataplane::ws_text(&mut ws, &format!("m{i}")).await,
                format!("m{i}")
            );
            ws.close(None).await.unwrap();
            // Drain to the close handshake's end.
            while let Some(Ok(_)) = futures_util::StreamExt::next(&mut ws).await {}
        }
    });

    // The tunnel records its end a moment after the client saw the close.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let (_, a) = scrape(&c, &s);
        if value(&a, "rserve_proxy_app_websockets_open", &app) == Some(0.0)
            && value(
                &a,
                "rserve_proxy_app_websocket_duration_seconds_count",
                &app,
            ) == Some(N as f64)
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "WebSockets did not close in the counters"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let v =
        |m: &str, l: &[(&str, &str)]| value(&after, m, l).unwrap_or_else(|| panic!("no {m} {l:?}"));
    assert_eq!(
        v(
            "rserve_proxy_app_requests_total",
            &[("app", "echo"), ("class", "2xx")]
        ),
        M as f64
    );
    assert_eq!(
        v(
            "rserve_proxy_app_requests_total",
            &[("app", "echo"), ("class", "1xx")]
        ),
        N as f64
    );
    assert_eq!(
        v(
            "rserve_proxy_app_requests_total",
            &[("app", "echo"), ("class", "5xx")]
        ),
        0.0
    );
    assert_eq!(v("rserve_proxy_app_websockets_total", &app), N as f64);
    assert_eq!(v("rserve_proxy_app_websockets_refused_total", &app), 0.0);
    assert_eq!(v("rserve_proxy_app_connect_errors_total", &app), 0.0);
    assert!(v("rserve_proxy_app_received_bytes_total", &app) > 0.0);
    assert!(v("rserve_proxy_app_sent_bytes_total", &app) > 0.0);
    // Latency histogram: cumulative buckets ending in +Inf = count = M.
    let h = histogram(&after, "rserve_proxy_app_http_response_seconds", &app);
    assert_eq!(h.last().unwrap(), &(f64::INFINITY, M as f64));
    assert!(
        h.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
        "{h:?}"
    );
    assert_eq!(
        v("rserve_proxy_app_http_response_seconds_count", &app),
        M as f64
    );
    let sum = v("rserve_proxy_app_http_response_seconds_sum", &app);
    assert!(sum > 0.0 && sum < M as f64 * 5.0, "{sum}");

    // Process and server metrics.
    assert!(v("process_resident_memory_bytes", &[]) > 1e6);
    assert!(v("process_open_fds", &[]) > 3.0);
    assert!(v("process_threads", &[]) >= 2.0);
    assert!(v("rserve_proxy_uptime_seconds", &[]) >= 0.0);
    let start = v("process_start_time_seconds", &[]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(now - start >= 0.0 && now - start < 120.0);
    assert_eq!(
        v("rserve_proxy_builds_total", &[("result", "failure")]),
        0.0
    );
    assert!(
        value(
            &after,
            "rserve_proxy_tls_certificate_expiry_timestamp_seconds",
            &[]
        )
        .is_none(),
        "TLS off"
    );
    drop(backend);
}

#[test]
fn only_admins_and_metrics_tokens_read_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let anon = reqwest::blocking::Client::new();
    let r = anon.get(s.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.json::<serde_json::Value>().unwrap()["error"],
        "Authentication required"
    );
    let r = anon
        .get(s.url("/metrics"))
        .bearer_auth("rsp_0000000000000000000000000000000000000000")
        .send()
        .unwrap();
    assert_eq!(r.status(), 401, "unknown token");

    let c = admin(&s);
    // A non-admin: 403 with their session and their token; no metrics token for them.
    let (st, b) = json_of(
        c.post(s.url("/api/users"))
            .json(&json!({"username": "ann", "password": "ann-password-1", "role": "user"}))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{b}");
    let ann = support::client();
    let st = ann
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "ann", "password": "ann-password-1"}))
        .send()
        .unwrap()
        .status();
    assert_eq!(st, 200);
    assert_eq!(ann.get(s.url("/metrics")).send().unwrap().status(), 403);
    let (st, ann_token) = token(&ann, &s, json!({"name": "mine"}));
    assert_eq!(st, 201);
    let r = anon
        .get(s.url("/metrics"))
        .bearer_auth(&ann_token)
        .send()
        .unwrap();
    assert_eq!(r.status(), 403);
    let (st, _) = token(&ann, &s, json!({"name": "scrape", "scope": "metrics"}));
    assert_eq!(st, 403, "only admins create metrics tokens");
    let (st, _) = token(&c, &s, json!({"name": "x", "scope": "everything"}));
    assert_eq!(st, 400, "unknown scope");

    // The admin's full token and metrics token both read /metrics …
    let (st, full) = token(&c, &s, json!({"name": "full"}));
    assert_eq!(st, 201);
    let (st, scoped) = token(&c, &s, json!({"name": "prometheus", "scope": "metrics"}));
    assert_eq!(st, 201);
    for t in [&full, &scoped] {
        let r = anon.get(s.url("/metrics")).bearer_auth(t).send().unwrap();
        assert_eq!(r.status(), 200);
        parse(&r.text().unwrap());
    }
    // … and the metrics token nothing else.
    for path in [
        "/api/auth/me",
        "/api/apps",
        "/api/users",
        "/api/alerts/deliveries",
    ] {
        let r = anon.get(s.url(path)).bearer_auth(&scoped).send().unwrap();
        assert_eq!(r.status(), 403, "{path}");
        let r = anon.get(s.url(path)).bearer_auth(&full).send().unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    let r = anon
        .post(s.url("/api/auth/tokens"))
        .bearer_auth(&scoped)
        .json(&json!({"name": "escalate"}))
        .send()
        .unwrap();
    assert_eq!(r.status(), 403, "a metrics token cannot mint a full one");
    // The token list shows the scope.
    let (_, list) = json_of(c.get(s.url("/api/auth/tokens")).send().unwrap());
    let scopes: Vec<&str> = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["scope"].as_str().unwrap())
        .collect();
    assert_eq!(scopes, vec!["full", "metrics"]);
    // Deliveries: admins only.
    assert_eq!(
        ann.get(s.url("/api/alerts/deliveries"))
            .send()
            .unwrap()
            .status(),
        403
    );
    let (st, d) = json_of(c.get(s.url("/api/alerts/deliveries")).send().unwrap());
    assert_eq!(st, 200);
    assert_eq!(d["deliveries"], json!([]));
}

#[test]
fn metrics_listen_serves_without_auth_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let s = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", PASSWORD),
            ("RSP_METRICS_LISTEN", &addr),
        ],
    );
    let anon = reqwest::blocking::Client::new();
    let r = anon.get(format!("http://{addr}/metrics")).send().unwrap();
    assert_eq!(r.status(), 200);
    let p = parse(&r.text().unwrap());
    assert!(value(&p, "process_open_fds", &[]).is_some());
    for path in ["/api/apps", "/api/health", "/"] {
        let r = anon.get(format!("http://{addr}{path}")).send().unwrap();
        assert_eq!(r.status(), 404, "{path}");
    }
    // The main listener still wants credentials.
    assert_eq!(anon.get(s.url("/metrics")).send().unwrap().status(), 401);
}

#[test]
fn a_taken_metrics_listen_port_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let out = std::process::Command::new(support::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", support::free_port()))
        .arg("serve")
        .env("RSP_METRICS_LISTEN", &addr)
        .env("RSP_ADMIN_PASSWORD", PASSWORD)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("metrics_listen"), "{err}");
}
