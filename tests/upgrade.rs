//! Binary upgrade with the real binary (`rserve-proxy upgrade`, SIGUSR2): the new
//! process takes the listeners, the control socket and the store; the old one stops
//! accepting and keeps its open WebSockets until they end; no connection fails during
//! the switch.

mod common_dataplane;
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common_dataplane::{raw_http, ws_connect, ws_text, Ws};
use support::procs::{connection_owner, running};

const PASSWORD: &str = "upgrade-password";

/// Stops a process the test did not start itself (the new server is the old one's
/// child) at the end, also when an assertion failed.
struct Reaper(Arc<Mutex<Vec<u32>>>);

impl Drop for Reaper {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().iter() {
            // SAFETY: kill(2) with a pid and a signal number.
            unsafe { libc::kill(*pid as i32, libc::SIGTERM) };
        }
    }
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

fn pid_file(dir: &std::path::Path) -> Option<u32> {
    std::fs::read_to_string(dir.join("rserve-proxy.pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn local_addr(ws: &Ws) -> SocketAddr {
    match ws.get_ref() {
        tokio_tungstenite::MaybeTlsStream::Plain(s) => s.local_addr().unwrap(),
        _ => panic!("plain WebSocket expected"),
    }
}

/// New connections, one request each, until `stop`: (successes, failures and why).
fn load(addr: SocketAddr, stop: Arc<AtomicBool>) -> (usize, Vec<String>) {
    let mut ok = 0;
    let mut failed = Vec::new();
    let requests: [&[u8]; 2] = [
        b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"GET /echo/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    ];
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        let request = requests[i % 2];
        i += 1;
        let outcome = std::panic::catch_unwind(|| raw_http(addr, request).status);
        match outcome {
            Ok(200) => ok += 1,
            Ok(status) => failed.push(format!(
                "{} answered {status}",
                String::from_utf8_lossy(&request[..20])
            )),
            Err(_) => failed.push("connection failed".into()),
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_upgrade_keeps_websockets_and_fails_no_connection() {
    let backend = common_dataplane::backend::Backend::start("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let route = format!("echo={}", backend.addr);
    let server = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || {
            support::Server::start(
                &data,
                &[
                    ("RSP_STATIC_ROUTES", route.as_str()),
                    ("RSP_ADMIN_PASSWORD", PASSWORD),
                ],
            )
        })
        .await
        .unwrap()
    };
    let reap = Arc::new(Mutex::new(Vec::new()));
    let _reaper = Reaper(reap.clone());
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let old = server.pid();
    assert!(wait_until(Duration::from_secs(10), || pid_file(&data) == Some(old)));

    // A session opened before the upgrade, held by the old process.
    let mut before = ws_connect(&format!("ws://{addr}/echo/")).await;
    assert_eq!(ws_text(&mut before, "one").await, "one");
    assert_eq!(
        connection_owner(addr, local_addr(&before), &[old]),
        Some(old)
    );

    // New connections all through the switch.
    let stop = Arc::new(AtomicBool::new(false));
    let loader = {
        let stop = stop.clone();
        std::thread::spawn(move || load(addr, stop))
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let out = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || support::cli(&data, &["upgrade"], None))
            .await
            .unwrap()
    };
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "upgrade failed: {stdout}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let new = pid_file(&data).expect("the new process wrote the pid file");
    reap.lock().unwrap().push(new);
    assert_ne!(new, old);
    assert!(stdout.contains(&format!("pid {old} -> {new}")), "{stdout}");

    // The old session goes on, through the old process, during and after the switch.
    for i in 0..20 {
        let text = format!("during {i}");
        assert_eq!(ws_text(&mut before, &text).await, text);
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // The old process has stopped accepting by now: new sessions are the new one's.
    assert!(
        wait_until(Duration::from_secs(10), || server
            .log()
            .contains("stopped accepting")),
        "the old process did not stop accepting:\n{}",
        server.log()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = tokio::task::spawn_blocking(move || loader.join().unwrap())
        .await
        .unwrap();
    assert!(ok > 20, "only {ok} requests made");
    assert!(
        failed.is_empty(),
        "{} of {} connections failed during the upgrade: {failed:?}\nlog:\n{}",
        failed.len(),
        ok + failed.len(),
        server.log()
    );

    let mut after = ws_connect(&format!("ws://{addr}/echo/")).await;
    assert_eq!(ws_text(&mut after, "two").await, "two");
    assert_eq!(
        connection_owner(addr, local_addr(&after), &[old, new]),
        Some(new),
        "a session opened after the switch is the new process's"
    );
    assert_eq!(ws_text(&mut before, "still").await, "still");
    assert_eq!(
        connection_owner(addr, local_addr(&before), &[old, new]),
        Some(old)
    );
    assert!(running(old), "the old process waits for its last session");

    // The store is the new process's: logging in (a write: the session) works.
    let server = tokio::task::spawn_blocking(move || {
        let client = support::client();
        assert_eq!(support::login(&client, &server, PASSWORD), 200);
        let r = client.get(server.url("/api/users")).send().unwrap();
        assert_eq!(r.status(), 200);
        server
    })
    .await
    .unwrap();

    // The last session of the old process ends: it exits.
    before.close(None).await.unwrap();
    drop(before);
    let closed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(15), || !running(old)),
        "the old process did not exit after its last session:\n{}",
        server.log()
    );
    let exit_secs = closed.elapsed().as_secs_f64();
    assert!(
        server.log().contains("every connection has ended"),
        "{}",
        server.log()
    );
    assert_eq!(ws_text(&mut after, "three").await, "three");
    assert!(running(new));
    eprintln!(
        "upgrade: {ok} requests, 0 failed; `rserve-proxy upgrade` took {:.2} s; old process gone {exit_secs:.1} s after its last session",
        took.as_secs_f64()
    );
}
