//! Quick, in-process measurements of the WebSocket data plane (ignored by default):
//!
//! ```sh
//! cargo test --release --test dataplane_bench -- --ignored --nocapture --test-threads=1
//! ```
//!
//! Everything (clients, echo backend, proxy) runs in this one process on loopback, so
//! the proxy's share is read as the difference between going through it and going
//! direct: latency, CPU time of the process (getrusage) and resident memory.

mod common_dataplane;
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use common_dataplane::backend::Backend;
use common_dataplane::rserve::Rserve;
use common_dataplane::*;
use rserve_proxy::proxy::limits::Limits;
use support::qap::{OcapClient, RObj};

fn cpu_time() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let u = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(u.user_time()) + t(u.system_time())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

async fn one_connection(url: &str, n: usize) -> (f64, f64, f64) {
    let mut ws = ws_connect(url).await;
    let payload = vec![7u8; 64];
    for _ in 0..200 {
        ws.send(Message::binary(payload.clone())).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    let mut lat = Vec::with_capacity(n);
    let t0 = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        ws.send(Message::binary(payload.clone())).await.unwrap();
        ws.next().await.unwrap().unwrap();
        lat.push(t.elapsed());
    }
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    lat.sort();
    (pct(&lat, 0.5), pct(&lat, 0.99), rate)
}

/// `conns` connections each doing `n` sequential round trips; returns
/// (p50 µs, p99 µs, msg/s, process CPU µs per round trip).
async fn many_connections(url: &str, conns: usize, n: usize) -> (f64, f64, f64, f64) {
    let mut sockets = Vec::new();
    for _ in 0..conns {
        sockets.push(ws_connect(url).await);
    }
    let start = Arc::new(tokio::sync::Barrier::new(conns + 1));
    let mut tasks = Vec::new();
    for mut ws in sockets {
        let start = start.clone();
        tasks.push(tokio::spawn(async move {
            let payload = vec![7u8; 64];
            let mut lat = Vec::with_capacity(n);
            start.wait().await;
            for _ in 0..n {
                let t = Instant::now();
                ws.send(Message::binary(payload.clone())).await.unwrap();
                ws.next().await.unwrap().unwrap();
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let cpu0 = cpu_time();
    let t0 = Instant::now();
    start.wait().await;
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_time() - cpu0).as_secs_f64() * 1e6 / all.len() as f64;
    all.sort();
    (
        pct(&all, 0.5),
        pct(&all, 0.99),
        all.len() as f64 / secs,
        cpu,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn websocket_echo_direct_vs_proxy() {
    // Proxy with one worker thread, as in docs' anchor numbers for pingora's own path.
    let proxy = Proxy::start_with(Limits::default(), 1);
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let direct = format!("ws://{}/", b.addr);
    let proxied = proxy.ws_url("/echo/");

    for (name, url) in [("direct", &direct), ("proxy", &proxied)] {
        let (p50, p99, rate) = one_connection(url, 20_000).await;
        println!("1 conn    {name:7} p50 {p50:6.0} µs  p99 {p99:6.0} µs  {rate:8.0} msg/s");
    }
    let mut cpu = Vec::new();
    for (name, url) in [("direct", &direct), ("proxy", &proxied)] {
        let (p50, p99, rate, c) = many_connections(url, 100, 500).await;
        cpu.push(c);
        println!(
            "100 conns {name:7} p50 {p50:6.0} µs  p99 {p99:6.0} µs  {rate:8.0} msg/s  process CPU {c:5.1} µs/round trip"
        );
    }
    println!(
        "proxy's CPU per round trip (proxied - direct): {:.1} µs",
        cpu[1] - cpu[0]
    );
}

/// Resident memory of 1000 idle WebSockets (after one echo each), in a fresh process:
/// run it twice, `RSP_BENCH_VIA=direct` and `RSP_BENCH_VIA=proxy`; the difference is
/// the proxy's share (the clients and the backend are the same in both runs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn idle_websocket_memory() {
    let via = std::env::var("RSP_BENCH_VIA").unwrap_or_else(|_| "proxy".into());
    let proxy = Proxy::start_with(Limits::default(), 1);
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let url = match via.as_str() {
        "direct" => format!("ws://{}/", b.addr),
        _ => proxy.ws_url("/echo/"),
    };
    // Warm up allocator and runtimes with a few connections first.
    for _ in 0..20 {
        let mut ws = ws_connect(&url).await;
        ws.send(Message::binary(vec![1u8; 64])).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let mut held = Vec::new();
    for _ in 0..1000 {
        let mut ws = ws_connect(&url).await;
        ws.send(Message::binary(vec![1u8; 64])).await.unwrap();
        ws.next().await.unwrap().unwrap();
        held.push(ws);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "1000 idle WebSockets {via}: RSS +{:.1} MB ({:.1} KB per connection, clients and backend included)",
        grown as f64 / 1e6,
        grown as f64 / 1000.0 / 1e3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand"]
async fn rserve_ocap_call_direct_vs_proxy() {
    let r = Rserve::start();
    let proxy = Proxy::start_with(Limits::default(), 1);
    proxy.app("hello", &[r.addr]);
    for (name, url) in [
        ("direct", format!("ws://{}/", r.addr)),
        ("proxy", proxy.ws_url("/hello/")),
    ] {
        let mut c = OcapClient::connect(&url).await.unwrap();
        let args = [RObj::double(3.0), RObj::double(4.0)];
        for _ in 0..200 {
            c.call_ok("add", &args).await.unwrap();
        }
        let mut lat = Vec::new();
        for _ in 0..3000 {
            let t = Instant::now();
            c.call_ok("add", &args).await.unwrap();
            lat.push(t.elapsed());
        }
        lat.sort();
        println!(
            "Rserve add(3, 4) {name:7} p50 {:.0} µs  p99 {:.0} µs",
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        c.close().await;
    }
}
