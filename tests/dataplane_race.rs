//! Regression test for pingora #946: with pingora's own upgrade path, a WebSocket could
//! be dropped right after the 101 when the backend speaks first (as Rserve does with
//! its `RsOC` greeting) — under load, 4–8 of 20–30 runs of this exact workload lost
//! connections. The data plane's own tunnel must make that impossible.
//!
//! 100 connections × 20 messages through a 2-thread proxy, 50 rounds, no losses.

mod common_dataplane;

use std::time::{Duration, Instant};

use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

use common_dataplane::backend::Backend;
use common_dataplane::*;
use rserve_proxy::proxy::limits::Limits;

const ROUNDS: usize = 50;
const CONNECTIONS: usize = 100;
const MESSAGES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_websocket_is_dropped_after_the_101_under_load() {
    let proxy = Proxy::start_with(Limits::default(), 2);
    let b = Backend::start_with("greeter", Some(b"RsOC-like greeting")).await;
    proxy.app("race", &[b.addr]);
    let t0 = Instant::now();
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let mut tasks = Vec::with_capacity(CONNECTIONS);
        for c in 0..CONNECTIONS {
            let url = proxy.ws_url("/race/");
            tasks.push(tokio::spawn(async move {
                let run = async {
                    let mut ws = ws_try(&url).await.map_err(|e| format!("connect: {e}"))?;
                    match ws_next_checked(&mut ws).await? {
                        Message::Binary(g) if &g[..] == b"RsOC-like greeting" => {}
                        other => return Err(format!("greeting: {other:?}")),
                    }
                    for m in 0..MESSAGES {
                        let payload = format!("{round}/{c}/{m}");
                        ws.send(Message::text(payload.clone()))
                            .await
                            .map_err(|e| format!("send {m}: {e}"))?;
                        match ws_next_checked(&mut ws).await? {
                            Message::Text(t) if t.as_str() == payload => {}
                            other => return Err(format!("echo {m}: {other:?}")),
                        }
                    }
                    ws.close(None).await.map_err(|e| format!("close: {e}"))?;
                    Ok::<(), String>(())
                };
                run.await
            }));
        }
        for t in tasks {
            if let Err(e) = t.await.unwrap() {
                failures.push(format!("round {round}: {e}"));
            }
        }
    }
    let elapsed = t0.elapsed();
    eprintln!("{ROUNDS} rounds × {CONNECTIONS} connections × {MESSAGES} messages in {elapsed:?}");
    assert!(
        failures.is_empty(),
        "{} failures, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let c = proxy.counters_when("race", |c| c.ws_open == 0).await;
    assert_eq!(c.ws_opened, (ROUNDS * CONNECTIONS) as u64);
    assert_eq!(c.responses_1xx, (ROUNDS * CONNECTIONS) as u64);
    assert!(elapsed < Duration::from_secs(120));
}

async fn ws_next_checked(ws: &mut Ws) -> Result<Message, String> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return Ok(m),
            Ok(Some(Err(e))) => return Err(format!("error: {e}")),
            Ok(None) => return Err("connection ended".into()),
            Err(_) => return Err("timeout".into()),
        }
    }
}
