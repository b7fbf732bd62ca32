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

/// Sessions that outlast `upgrade_drain_secs` are closed with a Close 1001 and the old
/// process exits; the new one serves them when they reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drain_limit_closes_what_is_left() {
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
                    ("RSP_UPGRADE_DRAIN_SECS", "2"),
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
    let mut ws = ws_connect(&format!("ws://{addr}/echo/")).await;
    assert_eq!(ws_text(&mut ws, "one").await, "one");

    let out = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || support::cli(&data, &["upgrade"], None))
            .await
            .unwrap()
    };
    assert!(out.status.success(), "{}", server.log());
    let new = pid_file(&data).unwrap();
    reap.lock().unwrap().push(new);
    let switched = Instant::now();
    assert_eq!(ws_text(&mut ws, "two").await, "two");
    let close = common_dataplane::ws_expect_close(&mut ws).await;
    let waited = switched.elapsed();
    assert_eq!(
        close.map(|(code, _)| code),
        Some(1001),
        "the old process says goodbye at the drain limit"
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(8),
        "closed {waited:?} after the switch (limit 2 s)"
    );
    assert!(
        wait_until(Duration::from_secs(15), || !running(old)),
        "the old process did not exit after the drain limit:\n{}",
        server.log()
    );
    assert!(
        server.log().contains("drain limit passed"),
        "{}",
        server.log()
    );
    let mut again = ws_connect(&format!("ws://{addr}/echo/")).await;
    assert_eq!(ws_text(&mut again, "three").await, "three");
    assert_eq!(
        connection_owner(addr, local_addr(&again), &[old, new]),
        Some(new)
    );
}

/// A new binary that cannot start (here: a config it refuses) changes nothing: the
/// old process keeps serving, the command says so and fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_path_buf();
    let config = data.join("config.toml");
    std::fs::write(&config, "shutdown_grace_secs = 0\n").unwrap();
    let server = {
        let data = data.clone();
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            support::Server::start_with(&data, &[], &["--config", config.to_str().unwrap()])
        })
        .await
        .unwrap()
    };
    let old = server.pid();
    assert!(wait_until(Duration::from_secs(10), || pid_file(&data) == Some(old)));
    // The file the new process will read is now invalid.
    std::fs::write(&config, "no_such_key = 1\n").unwrap();
    let out = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || support::cli(&data, &["upgrade"], None))
            .await
            .unwrap()
    };
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success());
    assert!(
        stderr.contains("upgrade failed: the new process") && stderr.contains("keeps serving"),
        "{stderr}"
    );
    assert!(
        server
            .log()
            .contains("exited (exit status: 2) before taking over"),
        "{}",
        server.log()
    );
    assert_eq!(pid_file(&data), Some(old));
    assert!(running(old));
    let addr: SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    let health = tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .status
    })
    .await
    .unwrap();
    assert_eq!(health, 200, "the old process still serves, store included");
}

type TlsWs = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// A WebSocket over TLS through the proxy's TLS listener (raw frames).
fn tls_ws(port: u16, ca_pem: &str) -> TlsWs {
    use std::io::Write;
    let config = support::certs::client_config(ca_pem);
    let conn = rustls::ClientConnection::new(config, "app.example".try_into().unwrap()).unwrap();
    let tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    tls.write_all(&common_dataplane::ws_request("/echo/", ""))
        .unwrap();
    let r = common_dataplane::read_response(&mut tls);
    assert_eq!(r.status, 101);
    tls
}

/// Send a short masked text frame, read the (unmasked) echo.
fn tls_echo(tls: &mut TlsWs, text: &str) -> String {
    use std::io::{Read, Write};
    let mask = [9u8, 8, 7, 6];
    let mut frame = vec![0x81, 0x80 | text.len() as u8];
    frame.extend_from_slice(&mask);
    frame.extend(text.bytes().enumerate().map(|(i, c)| c ^ mask[i % 4]));
    tls.write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    tls.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x81, "a text frame");
    let mut body = vec![0u8; usize::from(head[1] & 0x7f)];
    tls.read_exact(&mut body).unwrap();
    String::from_utf8(body).unwrap()
}

/// The TLS listener is handed over too, and WebSockets over TLS (relayed on the old
/// process's tasks, not its relay engine) keep running through the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_tls_survive_the_upgrade() {
    let backend = common_dataplane::backend::Backend::start("echo").await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let tc = support::certs::test_cert(dir.path(), "app.example");
    let tls_port = support::free_port();
    let envs = [
        ("RSP_TLS_MODE", "files".to_string()),
        ("RSP_TLS_CERT_FILE", tc.cert_file.display().to_string()),
        ("RSP_TLS_KEY_FILE", tc.key_file.display().to_string()),
        ("RSP_TLS_LISTEN", format!("127.0.0.1:{tls_port}")),
        ("RSP_STATIC_ROUTES", format!("echo={}", backend.addr)),
    ];
    let ca = tc.ca_pem.clone();
    let reap = Arc::new(Mutex::new(Vec::new()));
    let _reaper = Reaper(reap.clone());
    let (log, old, new, exited) = tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let server = support::Server::start(&data, &envs);
        let old = server.pid();
        assert!(wait_until(Duration::from_secs(10), || pid_file(&data) == Some(old)));
        let tls_addr: SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
        let mut before = tls_ws(tls_port, &ca);
        assert_eq!(tls_echo(&mut before, "one"), "one");
        let out = support::cli(&data, &["upgrade"], None);
        assert!(out.status.success(), "{}", server.log());
        let new = pid_file(&data).unwrap();
        reap.lock().unwrap().push(new);
        assert!(wait_until(Duration::from_secs(10), || server
            .log()
            .contains("stopped accepting")));
        // The line is logged as the listeners are told to stop; let them.
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(tls_echo(&mut before, "two"), "two");
        let before_local = before.get_ref().local_addr().unwrap();
        assert_eq!(
            connection_owner(tls_addr, before_local, &[old, new]),
            Some(old)
        );
        let mut after = tls_ws(tls_port, &ca);
        assert_eq!(tls_echo(&mut after, "three"), "three");
        let after_local = after.get_ref().local_addr().unwrap();
        assert_eq!(
            connection_owner(tls_addr, after_local, &[old, new]),
            Some(new)
        );
        assert!(running(old));
        drop(before);
        let exited = wait_until(Duration::from_secs(15), || !running(old));
        assert_eq!(tls_echo(&mut after, "four"), "four");
        (server.log(), old, new, exited)
    })
    .await
    .unwrap();
    assert_ne!(old, new);
    assert!(
        exited,
        "the old process did not exit after its last TLS session:\n{log}"
    );
}
