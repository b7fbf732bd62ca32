//! Shared by the tests that start the real `rserve-proxy` binary as a child process
//! (tests/binary.rs, tests/docker_api.rs): the server, its port and an HTTP client.
#![allow(dead_code)]

/// Headless Chromium over WebDriver: the admin UI browser tests.
pub mod browser;
/// Test certificates for TLS (files mode).
pub mod certs;
/// The Docker CLI and daemon checks of the Docker-using tests.
pub mod docker;
/// Which process holds a connection; whether a process runs (/proc).
pub mod procs;
/// QAP1 client for Rserve OCAP calls (data plane and end-to-end tests).
pub mod qap;
/// A real HTTP receiver for alert webhooks.
pub mod receiver;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_rserve-proxy");

/// Running in CI: any non-empty `CI` (`true`, `1`, …). There a missing real part
/// (Docker, Pebble, a browser) fails the test instead of skipping it.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty())
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server with its stderr captured.
pub struct Server {
    child: Child,
    pub base: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(data: &Path, envs: &[(&str, &str)]) -> Server {
        Self::start_with(data, envs, &[])
    }

    pub fn start_with(data: &Path, envs: &[(&str, &str)], args: &[&str]) -> Server {
        let port = free_port();
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir")
            .arg(data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .args(args)
            .arg("serve")
            .env_remove("RSP_ADMIN_PASSWORD")
            .env("RSP_SHUTDOWN_GRACE_SECS", "0")
            .env("RSP_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start rserve-proxy");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let server = Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            stderr,
        };
        // With `admin_host` set, `/api/health` answers only under that name.
        let admin_host = envs
            .iter()
            .find(|(k, _)| *k == "RSP_ADMIN_HOST")
            .map(|(_, v)| v.to_string());
        server.wait_ready(admin_host.as_deref());
        server
    }

    fn wait_ready(&self, admin_host: Option<&str>) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // With TLS on, the plain listener answers 308: up all the same.
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        while Instant::now() < deadline {
            let mut req = client.get(format!("{}/api/health", self.base));
            if let Some(h) = admin_host {
                req = req.header(reqwest::header::HOST, h);
            }
            if let Ok(r) = req.send() {
                if r.status() == StatusCode::OK || r.status() == StatusCode::PERMANENT_REDIRECT {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("server did not become ready; stderr:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// SIGTERM, then wait (bounded) for the exit.
    pub fn stop(mut self) -> (ExitStatus, Duration, String) {
        let t0 = Instant::now();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the reader thread drain the pipe.
                std::thread::sleep(Duration::from_millis(100));
                return (status, t0.elapsed(), self.log());
            }
            if t0.elapsed() > Duration::from_secs(15) {
                let _ = self.child.kill();
                panic!("server did not exit within 15 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no shutdown, no flushing, nothing of ours runs. Returns once the
    /// process is gone (its data dir can be opened again), with its log.
    pub fn kill9(mut self) -> String {
        // std's Child::kill is SIGKILL on unix.
        self.child.kill().expect("SIGKILL rserve-proxy");
        self.child.wait().expect("reap rserve-proxy");
        // Let the reader thread drain the pipe.
        std::thread::sleep(Duration::from_millis(100));
        self.log()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap()
}

pub fn json_of(r: reqwest::blocking::Response) -> (StatusCode, Value) {
    let status = r.status();
    let body = r.json::<Value>().unwrap_or(Value::Null);
    (status, body)
}

pub fn login(c: &reqwest::blocking::Client, s: &Server, password: &str) -> StatusCode {
    c.post(s.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": password}))
        .send()
        .unwrap()
        .status()
}

/// Runs the binary's CLI on a data dir (e.g. `admin reset-password`), with `stdin`.
pub fn cli(data: &Path, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(data)
        .args(args)
        .env_remove("RSP_ADMIN_PASSWORD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}
