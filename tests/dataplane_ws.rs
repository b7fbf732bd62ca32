//! WebSockets through the front door: the proxy runs in-process on its own pingora
//! server with a route table the test publishes; the replicas are echo backends.

mod common_dataplane;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use common_dataplane::backend::Backend;
use common_dataplane::*;
use rserve_proxy::proxy::limits::Limits;
use rserve_proxy::proxy::routes::AppPhase;

fn limits() -> Limits {
    Limits::default()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_all_message_sizes_up_to_16_mb() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
    for size in [0, 1, 125, 126, 65_535, 65_536, 1 << 20, 16 << 20] {
        let data = pattern(size);
        ws.send(Message::binary(data.clone())).await.unwrap();
        match ws_next(&mut ws).await {
            Message::Binary(got) => {
                assert_eq!(got.len(), size);
                assert!(got[..] == data[..], "payload of {size} bytes changed");
            }
            other => panic!("expected binary, got {other:?}"),
        }
    }
    assert_eq!(ws_text(&mut ws, "grüße ✓").await, "grüße ✓");
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_frames_both_ways() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/echo")).await;

    // Client → backend: 3 fragments with a ping between them (control frames may
    // interleave a fragmented message).
    let parts = [pattern(1000), pattern(70_000), pattern(5)];
    let frames = [
        Frame::message(parts[0].clone(), OpCode::Data(Data::Binary), false),
        Frame::message(parts[1].clone(), OpCode::Data(Data::Continue), false),
        Frame::message(parts[2].clone(), OpCode::Data(Data::Continue), true),
    ];
    for (i, f) in frames.into_iter().enumerate() {
        ws.send(Message::Frame(f)).await.unwrap();
        if i == 0 {
            ws.send(Message::Ping("mid".into())).await.unwrap();
        }
    }
    let whole: Vec<u8> = parts.concat();
    let mut got_pong = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Pong(p)))) => {
                assert_eq!(&p[..], b"mid");
                got_pong = true;
            }
            Ok(Some(Ok(Message::Binary(m)))) => {
                assert!(m[..] == whole[..], "reassembled message differs");
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(got_pong, "pong for the ping between fragments");

    // Backend → client: 4 fragments of 1000 bytes.
    ws.send(Message::text("frags:4:1000")).await.unwrap();
    match ws_next(&mut ws).await {
        Message::Binary(m) => {
            assert_eq!(m.len(), 4000);
            for i in 0..4 {
                assert!(m[i * 1000..(i + 1) * 1000].iter().all(|&x| x == i as u8));
            }
        }
        other => panic!("expected binary, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_pong_both_ways() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;

    ws.send(Message::Ping("abc".into())).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(Message::Pong(p)))) => assert_eq!(&p[..], b"abc"),
        other => panic!("expected pong, got {other:?}"),
    }

    // The backend pings; the client library answers on its next read/write.
    ws.send(Message::text("ping")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.record.pongs.load(std::sync::atomic::Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "backend never got its pong");
        assert_eq!(ws_text(&mut ws, "x").await, "x");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_pass_both_ways() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);

    // Client closes with 4000.
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
    ws.close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "client bye".into(),
    }))
    .await
    .unwrap();
    let echoed = ws_expect_close(&mut ws).await;
    assert_eq!(echoed, Some((4000, "client bye".to_string())));
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.closes().is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.closes(), vec![Some((4000, "client bye".to_string()))]);

    // Backend closes with 4001.
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
    ws.send(Message::text("close:4001:server bye"))
        .await
        .unwrap();
    assert_eq!(
        ws_expect_close(&mut ws).await,
        Some((4001, "server bye".to_string()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_websockets() {
    const N: usize = 1000;
    let proxy = Arc::new(Proxy::start(limits()));
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let opened = Arc::new(tokio::sync::Barrier::new(N + 1));
    let release = Arc::new(tokio::sync::Barrier::new(N + 1));
    let connecting = Arc::new(tokio::sync::Semaphore::new(100));
    let mut tasks = Vec::new();
    for i in 0..N {
        let (url, opened, release, connecting) = (
            proxy.ws_url("/echo/"),
            opened.clone(),
            release.clone(),
            connecting.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let permit = connecting.acquire().await.unwrap();
            let mut ws = ws_connect(&url).await;
            let msg = format!("hello {i}");
            assert_eq!(ws_text(&mut ws, &msg).await, msg);
            drop(permit);
            opened.wait().await;
            release.wait().await;
            // Still alive after everyone was open at once.
            assert_eq!(ws_text(&mut ws, &msg).await, msg);
            ws.close(None).await.unwrap();
            ws_expect_close(&mut ws).await;
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), opened.wait())
        .await
        .expect("all connections open within 60 s");
    let c = proxy.counters("echo");
    assert_eq!(c.ws_open, N as u64);
    assert_eq!(b.open(), N);
    release.wait().await;
    for t in tasks {
        t.await.unwrap();
    }
    let c = proxy.counters_when("echo", |c| c.ws_open == 0).await;
    assert_eq!(c.ws_opened, N as u64);
    assert_eq!(c.responses_1xx, N as u64);
    assert_eq!(c.ws_duration.count, N as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_dying_mid_stream_closes_the_client_and_the_proxy_carries_on() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);

    // One connection reset by its backend process.
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
    assert_eq!(ws_text(&mut ws, "before").await, "before");
    ws.send(Message::text("die")).await.unwrap();
    let close = ws_expect_close(&mut ws).await;
    assert_eq!(close, Some((1011, "backend closed the connection".into())));

    // The whole backend goes away with several connections open.
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
        assert_eq!(ws_text(&mut ws, "x").await, "x");
        open.push(ws);
    }
    b.kill();
    for ws in &mut open {
        let close = ws_expect_close(ws).await;
        assert_eq!(close.map(|c| c.0), Some(1011));
    }
    proxy.counters_when("echo", |c| c.ws_open == 0).await;

    // New connections to the dead replica: 502 with a JSON error, Retry-After.
    match ws_try(&proxy.ws_url("/echo/")).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 502);
            assert!(resp.headers().contains_key("retry-after"));
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert!(body["error"].as_str().unwrap().contains("echo"));
        }
        other => panic!("expected 502, got {other:?}"),
    }

    // The proxy itself is fine: another app works.
    let b2 = Backend::start("b").await;
    proxy.app("other", &[b2.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/other/")).await;
    assert_eq!(served_by(&mut ws).await, "b");
    let c = proxy.counters("echo");
    assert!(c.connect_errors >= 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connect_fails_over_to_another_replica() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("live").await;
    // The dead replica is listed first, so the first pick is the dead one.
    proxy.app("echo", &[dead_addr(), b.addr]);
    for _ in 0..10 {
        let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
        assert_eq!(served_by(&mut ws).await, "live");
    }
    let c = proxy.counters("echo");
    assert!(c.connect_errors >= 1, "{c:?}");
    assert_eq!(c.ws_opened, 10);
    assert_eq!(c.responses_5xx, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_replica_gets_no_new_connections_but_keeps_its_own() {
    let proxy = Proxy::start(limits());
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let id = uuid::Uuid::new_v4();
    proxy.set(id, "echo", AppPhase::Running, &[a.addr, b.addr], &[b.addr]);
    let mut on_a = ws_connect(&proxy.ws_url("/echo/")).await;
    assert_eq!(served_by(&mut on_a).await, "a");

    // a turns unhealthy: the very next connections go to b.
    proxy.set(id, "echo", AppPhase::Running, &[a.addr, b.addr], &[a.addr]);
    for _ in 0..10 {
        let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
        assert_eq!(served_by(&mut ws).await, "b");
    }
    // The established connection was left alone.
    assert_eq!(ws_text(&mut on_a, "still here").await, "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_active_connections_wins() {
    let proxy = Proxy::start(limits());
    let (a, b, c) = (
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    );
    let id = uuid::Uuid::new_v4();
    proxy.set(id, "echo", AppPhase::Running, &[a.addr, b.addr], &[]);
    let mut held = Vec::new();
    let mut count: HashMap<String, usize> = HashMap::new();
    for _ in 0..6 {
        let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
        *count.entry(served_by(&mut ws).await).or_default() += 1;
        held.push(ws);
    }
    assert_eq!(count.get("a"), Some(&3), "{count:?}");
    assert_eq!(count.get("b"), Some(&3), "{count:?}");

    // A third replica joins with no connections: it gets the next three.
    proxy.set(
        id,
        "echo",
        AppPhase::Running,
        &[a.addr, b.addr, c.addr],
        &[],
    );
    for _ in 0..3 {
        let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
        assert_eq!(served_by(&mut ws).await, "c");
        held.push(ws);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_headers_are_rewritten() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("hdr", &[b.addr]);
    let req = "GET /hdr/some/path?x=1 HTTP/1.1\r\n\
        Host: public.example\r\n\
        Upgrade: websocket\r\n\
        Connection: Upgrade, X-Secret\r\n\
        X-Secret: s\r\n\
        Keep-Alive: 300\r\n\
        TE: trailers\r\n\
        Proxy-Authorization: Basic Zm9v\r\n\
        X-Forwarded-For: 6.6.6.6\r\n\
        X-Forwarded-Proto: https\r\n\
        X-Forwarded-Host: evil.example\r\n\
        X-Request-Id: req-123\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Sec-WebSocket-Version: 13\r\n\
        Sec-WebSocket-Protocol: chat, superchat\r\n\r\n";
    let resp = raw_http(proxy.addr, req.as_bytes());
    assert_eq!(resp.status, 101);
    assert_eq!(resp.header("x-request-id"), Some("req-123"));
    assert_eq!(resp.header("sec-websocket-protocol"), Some("chat"));
    assert_eq!(
        resp.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert_eq!(resp.header("x-backend"), Some("a"), "other headers pass");
    assert!(resp
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("upgrade")));

    let seen = b.last_seen();
    assert_eq!(seen.path, "/some/path?x=1");
    assert_eq!(seen.header("host"), Some("public.example"));
    assert_eq!(seen.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen.header("x-forwarded-proto"), Some("http"));
    assert_eq!(seen.header("x-forwarded-host"), Some("public.example"));
    assert_eq!(seen.header("x-request-id"), Some("req-123"));
    for h in [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-request-id",
        "upgrade",
    ] {
        assert_eq!(seen.count(h), 1, "{h} once");
    }
    for gone in ["x-secret", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(seen.header(gone), None, "{gone} must not be forwarded");
    }
    assert_eq!(
        seen.header("sec-websocket-protocol"),
        Some("chat, superchat")
    );

    // An unsafe request id is replaced, the same one both ways.
    let resp = raw_http(
        proxy.addr,
        &ws_request("/hdr/", "X-Request-Id: no good\r\n"),
    );
    assert_eq!(resp.status, 101);
    let rid = resp.header("x-request-id").unwrap().to_string();
    assert_eq!(rid.len(), 32);
    assert_eq!(b.last_seen().header("x-request-id"), Some(rid.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_unavailable_apps() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let id = uuid::Uuid::new_v4();
    proxy.set(id, "off", AppPhase::Stopped, &[], &[]);

    let r = raw_http(proxy.addr, &ws_request("/nope/", ""));
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].as_str().unwrap().contains("/nope"));
    let r = raw_http(proxy.addr, &ws_request("/echox", ""));
    assert_eq!(r.status, 404, "a longer first segment is another slug");
    let r = raw_http(proxy.addr, &ws_request("/off/", ""));
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("30"));
    assert!(r.json()["error"].as_str().unwrap().contains("not running"));
    let r = raw_http(proxy.addr, &ws_request("/off/", "Accept: text/html\r\n"));
    assert_eq!(r.status, 503);
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    assert!(r.text().contains("<h1>503</h1>"));
    assert_eq!(proxy.counters("off").responses_5xx, 2);
    assert!(b.seen().is_empty(), "no request reached the replica");

    for path in ["/echo", "/echo/", "/echo/deep/er?q=1"] {
        let mut ws = ws_connect(&proxy.ws_url(path)).await;
        assert_eq!(ws_text(&mut ws, "p").await, "p");
    }
    let paths: Vec<String> = b.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/", "/", "/deep/er?q=1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_limit_per_app() {
    let proxy = Proxy::start(Limits {
        max_websockets_per_app: 3,
        ..limits()
    });
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    proxy.app("other", &[b.addr]);
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(ws_connect(&proxy.ws_url("/echo/")).await);
    }
    match ws_try(&proxy.ws_url("/echo/")).await {
        Err(WsError::Http(resp)) => {
            assert_eq!(resp.status(), 503);
            assert_eq!(
                resp.headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok()),
                Some("5")
            );
        }
        other => panic!("expected 503, got {other:?}"),
    }
    // The limit is per app.
    let _other = ws_connect(&proxy.ws_url("/other/")).await;

    let mut first = held.remove(0);
    first.close(None).await.unwrap();
    ws_expect_close(&mut first).await;
    proxy.counters_when("echo", |c| c.ws_open == 2).await;
    let mut again = ws_connect(&proxy.ws_url("/echo/")).await;
    assert_eq!(ws_text(&mut again, "in").await, "in");
    let c = proxy.counters("echo");
    assert_eq!((c.ws_rejected, c.responses_5xx, c.ws_opened), (1, 1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_websockets_are_closed_busy_ones_are_not() {
    let proxy = Proxy::start(Limits {
        idle_timeout: Duration::from_secs(1),
        ..limits()
    });
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);

    let mut busy = ws_connect(&proxy.ws_url("/echo/")).await;
    let mut idle = ws_connect(&proxy.ws_url("/echo/")).await;
    let t0 = Instant::now();
    let busy_task = tokio::spawn(async move {
        for i in 0..10 {
            let m = format!("tick {i}");
            assert_eq!(ws_text(&mut busy, &m).await, m);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    });
    let close = ws_expect_close(&mut idle).await;
    let waited = t0.elapsed();
    assert_eq!(close, Some((1001, "idle timeout".into())));
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "closed after {waited:?}"
    );
    busy_task.await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.closes().is_empty() {
        assert!(Instant::now() < deadline, "backend got no close");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(b.closes()[0], Some((1001, "idle timeout".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_says_going_away() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/echo/")).await;
    assert_eq!(ws_text(&mut ws, "x").await, "x");
    let stopping = tokio::task::spawn_blocking(move || proxy.stop());
    assert_eq!(
        ws_expect_close(&mut ws).await,
        Some((1001, "server shutting down".into()))
    );
    stopping.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_match_the_traffic() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("cnt", &[b.addr]);
    let mut ws = ws_connect(&proxy.ws_url("/cnt/")).await;
    let sizes = [10usize, 200, 70_000];
    for &n in &sizes {
        ws.send(Message::binary(pattern(n))).await.unwrap();
        assert!(matches!(ws_next(&mut ws).await, Message::Binary(m) if m.len() == n));
    }
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
    .await
    .unwrap();
    ws_expect_close(&mut ws).await;
    let c = proxy.counters_when("cnt", |c| c.ws_open == 0).await;

    // Frame sizes on the wire: 2-byte header, 2 or 8 more for lengths over 125, and a
    // 4-byte mask on client frames.
    let ext = |n: usize| match n {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    let client: usize = sizes.iter().map(|&n| 2 + ext(n) + 4 + n).sum::<usize>() + (2 + 4 + 2);
    let server: usize = sizes.iter().map(|&n| 2 + ext(n) + n).sum::<usize>() + (2 + 2);
    assert_eq!(c.bytes_in, client as u64, "{c:#?}");
    assert_eq!(c.bytes_out, server as u64, "{c:#?}");
    assert_eq!((c.responses_1xx, c.ws_opened, c.ws_open), (1, 1, 0));
    assert_eq!(c.ws_duration.count, 1);
    assert_eq!(c.http_latency.count, 0);
    assert_eq!(c.connect_errors, 0);
    assert_eq!(c.responses(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_connection_then_upgrade_is_tunnelled() {
    let proxy = Proxy::start(limits());
    let b = Backend::start("a").await;
    proxy.app("echo", &[b.addr]);
    let addr = proxy.addr;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        for _ in 0..2 {
            s.write_all(b"GET /echo/plain HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            let r = read_response(&mut s);
            assert_eq!(r.status, 200);
            assert_eq!(r.json()["path"], "/plain");
        }
        // Same connection, now an upgrade: handled by the tunnel, not pingora.
        s.write_all(&ws_request("/echo/ws", "")).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 101);
        // A masked text frame "hi", then the echo (unmasked).
        s.write_all(&[0x81, 0x82, 1, 2, 3, 4, b'h' ^ 1, b'i' ^ 2])
            .unwrap();
        let mut echo = [0u8; 4];
        s.read_exact(&mut echo).unwrap();
        assert_eq!(echo, [0x81, 2, b'h', b'i']);
    })
    .await
    .unwrap();
    let paths: Vec<String> = b.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, vec!["/plain", "/plain", "/ws"]);
}
