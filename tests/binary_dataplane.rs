//! The data plane as wired by `rserve-proxy serve` (the real binary): the connection
//! handler in front of pingora, and the open-files limit raised at start.

mod common_dataplane;

use std::io::Write;
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
                if r.status == 200 {
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
