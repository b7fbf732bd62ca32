//! Data-plane test parts, all real and on loopback: the front door running in a pingora
//! `Server` in this process with a route table the test controls, an HTTP + WebSocket
//! echo backend, raw HTTP/1 helpers, and real Rserve started natively.
#![allow(dead_code)]

pub mod backend;
pub mod rserve;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream as StdTcpStream};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures_util::{SinkExt, StreamExt};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server, ShutdownSignal, ShutdownSignalWatch};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use rserve_proxy::proxy::counters::CountersSnapshot;
use rserve_proxy::proxy::isolation::Isolation;
use rserve_proxy::proxy::limits::Limits;
use rserve_proxy::proxy::routes::{AppEntry, AppPhase, ReplicaEntry, Routes};
use rserve_proxy::proxy::FrontDoor;

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A port nothing listens on (bound once, then released): connects are refused.
pub fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn free_port() -> u16 {
    dead_addr().port()
}

/// The front door, in this process, on its own pingora `Server` (its own runtimes).
pub struct Proxy {
    pub addr: SocketAddr,
    pub routes: Routes,
    stop: Arc<tokio::sync::Notify>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

struct StopOnNotify(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for StopOnNotify {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::GracefulTerminate
    }
}

impl Proxy {
    /// Two worker threads, the given limits, an empty route table.
    pub fn start(limits: Limits) -> Proxy {
        Self::start_with(limits, 2)
    }

    pub fn start_with(limits: Limits, threads: usize) -> Proxy {
        Self::start_full(limits, threads, Isolation::default())
    }

    /// Default limits, two threads, these isolation settings (`admin_host`, CSP).
    pub fn start_isolated(isolation: Isolation) -> Proxy {
        Self::start_full(Limits::default(), 2, isolation)
    }

    pub fn start_full(limits: Limits, threads: usize, isolation: Isolation) -> Proxy {
        rserve_proxy::server::raise_nofile_limit();
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut conf = ServerConf {
            threads,
            pid_file: dir.path().join("pid").to_string_lossy().into_owned(),
            upgrade_sock: dir
                .path()
                .join("upgrade.sock")
                .to_string_lossy()
                .into_owned(),
            // One second for tunnels to send their Close (1001) frames: with no grace
            // period pingora shuts the runtimes down at once, dropping tasks mid-write.
            grace_period_seconds: Some(1),
            graceful_shutdown_timeout_seconds: Some(1),
            ..ServerConf::default()
        };
        conf.daemon = false;
        let mut server = Server::new_with_opt_and_conf(None, conf);
        server.bootstrap();
        let routes = Routes::new();
        // No control plane in these tests: admin paths get pingora's 502.
        let front = FrontDoor::new(&dir.path().join("control.sock"), routes.clone(), limits)
            .unwrap()
            .with_isolation(isolation);
        let mut service =
            rserve_proxy::proxy::service(&server.configuration, front, routes.clone(), limits)
                .unwrap();
        service.add_listener(rserve_proxy::proxy::listener(&addr.to_string()));
        server.add_service(service);
        let stop = Arc::new(tokio::sync::Notify::new());
        let signal = StopOnNotify(stop.clone());
        let thread = std::thread::spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(signal),
            })
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while StdTcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "proxy did not start listening");
            std::thread::sleep(Duration::from_millis(10));
        }
        Proxy {
            addr,
            routes,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// Publish a running app with these (healthy) replicas; returns its id.
    pub fn app(&self, slug: &str, replicas: &[SocketAddr]) -> Uuid {
        let id = Uuid::new_v4();
        self.set(id, slug, AppPhase::Running, replicas, &[]);
        id
    }

    /// Publish an app; replicas in `unhealthy` are listed but not healthy.
    pub fn set(
        &self,
        id: Uuid,
        slug: &str,
        phase: AppPhase,
        replicas: &[SocketAddr],
        unhealthy: &[SocketAddr],
    ) {
        self.routes.upsert(AppEntry {
            app_id: id,
            slug: slug.to_string(),
            phase,
            replicas: replicas
                .iter()
                .map(|a| ReplicaEntry {
                    addr: *a,
                    healthy: !unhealthy.contains(a),
                })
                .collect(),
        });
    }

    pub fn counters(&self, slug: &str) -> CountersSnapshot {
        self.routes.app_counters(slug).expect("app in route table")
    }

    /// Wait (bounded) until `check` holds for the app's counters; returns them.
    pub async fn counters_when(
        &self,
        slug: &str,
        check: impl Fn(&CountersSnapshot) -> bool,
    ) -> CountersSnapshot {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.counters(slug);
            if check(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "counters never matched: {c:#?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Graceful stop (open tunnels get Close 1001); waits for the server thread.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.notify_one();
        if let Some(t) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(15);
            while !t.is_finished() {
                assert!(Instant::now() < deadline, "proxy did not stop");
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = t.join();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        } else {
            self.stop.notify_one();
        }
    }
}

/// Message and frame limits large enough for the 16 MB tests, on both ends.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(Some(64 << 20))
}

pub async fn ws_connect(url: &str) -> Ws {
    match ws_try(url).await {
        Ok(ws) => ws,
        Err(e) => panic!("WebSocket connect to {url}: {e}"),
    }
}

pub async fn ws_try(url: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let connect = tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true);
    match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(r) => r.map(|(ws, _)| ws),
        Err(_) => panic!("WebSocket connect to {url} timed out"),
    }
}

/// Next data message (pings/pongs skipped), bounded by 10 s.
pub async fn ws_next(ws: &mut Ws) -> Message {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => return m,
            Ok(Some(Err(e))) => panic!("WebSocket error: {e}"),
            Ok(None) => panic!("WebSocket ended"),
            Err(_) => panic!("no message within 10 s"),
        }
    }
}

pub async fn ws_text(ws: &mut Ws, text: &str) -> String {
    ws.send(Message::text(text)).await.unwrap();
    match ws_next(ws).await {
        Message::Text(t) => t.to_string(),
        other => panic!("expected text, got {other:?}"),
    }
}

/// The backend that served this WebSocket (the echo backend answers `name`).
pub async fn served_by(ws: &mut Ws) -> String {
    ws_text(ws, "name").await
}

/// The close frame the peer sends next (anything else first is an error).
pub async fn ws_expect_close(ws: &mut Ws) -> Option<(u16, String)> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Close(f)))) => {
                return f.map(|f| (u16::from(f.code), f.reason.to_string()))
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(m))) => panic!("expected a close, got {m:?}"),
            Ok(Some(Err(e))) => panic!("expected a close frame, got error {e}"),
            Ok(None) => panic!("expected a close frame, the stream just ended"),
            Err(_) => panic!("no close within 10 s"),
        }
    }
}

/// A raw HTTP/1.1 exchange: send `request` as is, read one response (the request
/// should carry `Connection: close`, or a Content-Length response is read exactly).
pub fn raw_http(addr: SocketAddr, request: &[u8]) -> RawResponse {
    let mut s = StdTcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request).unwrap();
    read_response(&mut s)
}

#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|_| panic!("not JSON: {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Read one response from a blocking stream (Content-Length, chunked or to EOF).
pub fn read_response(s: &mut impl Read) -> RawResponse {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    let (status, headers, head_len) = loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(
            n > 0,
            "connection closed before a response head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
        let mut h = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut h);
        if let httparse::Status::Complete(len) = r.parse(&buf).unwrap() {
            let headers = r
                .headers
                .iter()
                .map(|h| {
                    (
                        h.name.to_string(),
                        String::from_utf8_lossy(h.value).into_owned(),
                    )
                })
                .collect::<Vec<_>>();
            break (r.code.unwrap(), headers, len);
        }
    };
    let mut body = buf.split_off(head_len);
    let get = |n: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(n))
            .map(|(_, v)| v.clone())
    };
    if let Some(cl) = get("content-length") {
        let cl: usize = cl.trim().parse().unwrap();
        while body.len() < cl {
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "body cut short");
            body.extend_from_slice(&chunk[..n]);
        }
        body.truncate(cl);
    } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            if let Some(decoded) = backend::dechunk(&body) {
                body = decoded;
                break;
            }
            let n = s.read(&mut chunk).unwrap();
            assert!(n > 0, "chunked body cut short");
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 101 && status != 204 && status != 304 {
        loop {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => body.extend_from_slice(&chunk[..n]),
            }
        }
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A WebSocket handshake request, raw.
pub fn ws_request(path: &str, extra: &str) -> Vec<u8> {
    format!(
        "GET {path} HTTP/1.1\r\nHost: proxy.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    .into_bytes()
}
