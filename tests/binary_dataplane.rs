//! The data plane as wired by `rserve-proxy serve` (the real binary): the connection
//! handler in front of pingora, and the open-files limit raised at start.

mod common_dataplane;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common_dataplane::{free_port, raw_http, read_response, ws_request};

const BIN: &str = env!("CARGO_BIN_EXE_rserve-proxy");

struct Served {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Served {
    /// Start the binary from a shell that first lowers the soft open-files limit.
    fn start() -> Served {
        Self::start_with(&[])
    }

    fn start_with(envs: &[(&str, &str)]) -> Served {
        Self::start_when(envs, 200)
    }

    /// Ready when `GET /api/health` on `listen` answers `ready_status` (308 with TLS on).
    fn start_when(envs: &[(&str, &str)], ready_status: u16) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let child = Command::new("sh")
            .arg("-c")
            .arg("ulimit -Sn 256 && exec \"$0\" \"$@\"")
            .arg(BIN)
            .arg("--data-dir")
            .arg(dir.path())
            .arg("--listen")
            .arg(addr.to_string())
            .arg("serve")
            .env("RSP_ADMIN_PASSWORD", "dataplane-password")
            .env("RSP_SHUTDOWN_GRACE_SECS", "0")
            .env("RSP_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .envs(envs.iter().copied())
            .spawn()
            .unwrap();
        let s = Served {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if TcpStream::connect(addr).is_ok() {
                let r = raw_http(
                    addr,
                    b"GET /api/health HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                );
                if r.status == ready_status {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// (soft, hard) "Max open files" of a process.
fn nofile(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let v: Vec<&str> = line.split_whitespace().collect();
    (v[3].to_string(), v[4].to_string())
}

#[test]
fn serve_raises_the_open_files_limit() {
    let s = Served::start();
    let (soft, hard) = nofile(s.child.id());
    assert_eq!(soft, hard, "soft limit raised to the hard limit");
    assert_ne!(soft, "256");
}

#[test]
fn connections_pass_through_the_data_plane() {
    let s = Served::start();
    // A WebSocket upgrade to an app slug is the tunnel's: no app → 404 JSON.
    let r = raw_http(
        s.addr,
        &ws_request("/no-such-app/", "X-Request-Id: ws-1\r\n"),
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.header("x-request-id"), Some("ws-1"));
    assert!(r.json()["error"].as_str().unwrap().contains("/no-such-app"));

    // Keepalive: admin request through pingora, then an upgrade on the same connection.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        c.write_all(b"GET /api/health HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let r = read_response(&mut c);
        assert_eq!(r.status, 200);
        assert_eq!(r.json()["status"], "ok");
    }
    c.write_all(&ws_request("/nope/", "")).unwrap();
    let r = read_response(&mut c);
    assert_eq!(r.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_routes_serve_without_the_store() {
    let b = common_dataplane::backend::Backend::start("static").await;
    let route = format!("echo={}", b.addr);
    let s =
        tokio::task::spawn_blocking(move || Served::start_with(&[("RSP_STATIC_ROUTES", &route)]))
            .await
            .unwrap();
    let addr = s.addr;
    let r = tokio::task::spawn_blocking(move || {
        raw_http(
            addr,
            b"GET /echo/x?y=1 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
    })
    .await
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["path"], "/x?y=1");
    let mut ws = common_dataplane::ws_connect(&format!("ws://{addr}/echo/")).await;
    assert_eq!(common_dataplane::served_by(&mut ws).await, "static");
    assert_eq!(common_dataplane::ws_text(&mut ws, "hi").await, "hi");
    drop(ws);
    tokio::task::spawn_blocking(move || drop(s)).await.unwrap();
}

/// With TLS on: WebSocket upgrades on the plain listener get the same 308 as every
/// other request; over TLS they are tunnelled, with `X-Forwarded-Proto: https` and HSTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_tls_and_redirect_on_the_plain_listener() {
    let b = common_dataplane::backend::Backend::start("tls-backend").await;
    let dir = tempfile::tempdir().unwrap();
    let tc = support::certs::test_cert(dir.path(), "app.example");
    let (cert, key) = (tc.cert_file.clone(), tc.key_file.clone());
    let tls_port = free_port();
    let envs = [
        ("RSP_TLS_MODE", "files".to_string()),
        ("RSP_TLS_CERT_FILE", cert.display().to_string()),
        ("RSP_TLS_KEY_FILE", key.display().to_string()),
        ("RSP_TLS_LISTEN", format!("127.0.0.1:{tls_port}")),
        ("RSP_HSTS_MAX_AGE_SECS", "60".to_string()),
        ("RSP_STATIC_ROUTES", format!("echo={}", b.addr)),
    ];
    let ca_pem = tc.ca_pem.clone();
    let (status, location, hsts, frame) = tokio::task::spawn_blocking(move || {
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let s = Served::start_when(&envs, 308);
        // Plain listener: redirected like any request.
        let r = raw_http(s.addr, &ws_request("/echo/x?y=1", ""));
        let plain = (r.status, r.header("location").map(str::to_string));

        // TLS listener: tunnelled.
        let config = support::certs::client_config(&ca_pem);
        let conn =
            rustls::ClientConnection::new(config, "app.example".try_into().unwrap()).unwrap();
        let tcp = TcpStream::connect(("127.0.0.1", tls_port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        tls.write_all(&ws_request("/echo/", "")).unwrap();
        let r = read_response(&mut tls);
        assert_eq!(r.status, 101);
        let hsts = r.header("strict-transport-security").map(str::to_string);
        // A masked text frame "name"; the backend answers with its name.
        let mask = [9u8, 8, 7, 6];
        let mut frame = vec![0x81, 0x80 | 4];
        frame.extend_from_slice(&mask);
        frame.extend(b"name".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
        tls.write_all(&frame).unwrap();
        let mut got = [0u8; 2 + 11];
        tls.read_exact(&mut got).unwrap();
        drop(s);
        (plain.0, plain.1, hsts, got.to_vec())
    })
    .await
    .unwrap();
    assert_eq!(status, 308);
    assert_eq!(
        location.as_deref(),
        Some(format!("https://proxy.test:{tls_port}/echo/x?y=1").as_str())
    );
    assert_eq!(hsts.as_deref(), Some("max-age=60"));
    assert_eq!(&frame[..2], &[0x81, 11]);
    assert_eq!(&frame[2..], b"tls-backend");
    let seen = b.last_seen();
    assert_eq!(seen.header("x-forwarded-proto"), Some("https"));
    assert_eq!(seen.path, "/");
    assert_eq!(
        b.seen().len(),
        1,
        "the plain-listener upgrade never reached the app"
    );
}
