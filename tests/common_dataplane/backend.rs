//! An app replica stand-in: HTTP/1.1 and WebSocket echo on one port, recording what it
//! receives.
//!
//! WebSocket: binary messages are echoed; text messages are echoed except commands:
//! `name` (answers the backend's name), `close:<code>:<reason>` (sends that Close),
//! `die` (resets the TCP connection), `frags:<n>:<len>` (sends one message of n
//! fragments), `ping` (sends a Ping "srv"; the Pong is counted).
//!
//! HTTP: answers JSON `{name, method, path, headers, body_len}`; `/status/<code>`
//! answers that status; `/hop` adds hop-by-hop response headers; `/bytes/<n>` answers
//! n bytes; `/plant…` answers an HTML page that tries to set the proxy's session
//! cookies (next to one of its own, and a CSP of its own).
//!
//! WebSocket handshakes: a path starting `/plant` gets those `Set-Cookie`s on its 101;
//! one starting `/refuse` is answered 403 (with them too) instead of 101.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::{CloseFrame, Frame};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// What a hostile app sends to take over the admin's session: our cookie under both
/// names (and a case variant of the prefix), next to a cookie of its own.
pub const PLANTED: &str = "Set-Cookie: rsp_session=planted; Path=/\r\nSet-Cookie: __Host-rsp_session=planted; Secure; Path=/\r\nSet-Cookie: __HOST-rsp_session=planted; Secure; Path=/\r\nSet-Cookie: app=1; Path=/\r\n";

/// One request head as the backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn count(&self, name: &str) -> usize {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .count()
    }
}

#[derive(Default)]
pub struct Record {
    pub seen: Mutex<Vec<Seen>>,
    /// Close codes received from clients (None: close frame without code).
    pub closes: Mutex<Vec<Option<(u16, String)>>>,
    pub pongs: AtomicUsize,
    /// WebSocket connections open now.
    pub open: AtomicUsize,
    pub accepted: AtomicUsize,
}

pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    pub record: Arc<Record>,
    kill: watch::Sender<bool>,
}

impl Backend {
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, None).await
    }

    /// `greeting`: a binary message sent right after the 101, in the same write (as
    /// Rserve sends its `RsOC`).
    pub async fn start_with(name: &str, greeting: Option<&'static [u8]>) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let record = Arc::new(Record::default());
        let (kill, killed) = watch::channel(false);
        let name_owned = name.to_string();
        let rec = record.clone();
        let mut k = killed.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = k.wait_for(|x| *x) => return,
                };
                let Ok((stream, _)) = accepted else { continue };
                rec.accepted.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let (rec, name, mut k) = (rec.clone(), name_owned.clone(), killed.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = serve(stream, rec, name, greeting) => {}
                        _ = k.wait_for(|x| *x) => {}
                    }
                });
            }
        });
        Backend {
            name: name.to_string(),
            addr,
            record,
            kill,
        }
    }

    /// Stop listening and drop every connection (as a crashed replica would).
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.record.seen.lock().unwrap().clone()
    }

    pub fn last_seen(&self) -> Seen {
        self.seen().last().cloned().expect("backend saw a request")
    }

    pub fn closes(&self) -> Vec<Option<(u16, String)>> {
        self.record.closes.lock().unwrap().clone()
    }

    pub fn open(&self) -> usize {
        self.record.open.load(Ordering::Relaxed)
    }
}

async fn serve(
    mut stream: TcpStream,
    rec: Arc<Record>,
    name: String,
    greeting: Option<&'static [u8]>,
) {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        // One request head.
        let (seen, head_len) = loop {
            let mut h = [httparse::EMPTY_HEADER; 64];
            let mut r = httparse::Request::new(&mut h);
            if let Ok(httparse::Status::Complete(n)) = r.parse(&buf) {
                let seen = Seen {
                    method: r.method.unwrap_or("").to_string(),
                    path: r.path.unwrap_or("").to_string(),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect(),
                };
                break (seen, n);
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        };
        let _ = buf.split_to(head_len);
        rec.seen.lock().unwrap().push(seen.clone());

        let upgrade = seen
            .header("upgrade")
            .is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        if upgrade && seen.path.starts_with("/refuse") {
            let body = "no";
            let resp = format!(
                "HTTP/1.1 403 Forbidden\r\n{PLANTED}Content-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(resp.as_bytes()).await;
            return;
        }
        if upgrade {
            let key = seen.header("sec-websocket-key").unwrap_or("").to_string();
            let mut resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nX-Backend: {name}\r\n",
                derive_accept_key(key.as_bytes())
            );
            if seen.path.starts_with("/plant") {
                resp.push_str(PLANTED);
            }
            if let Some(p) = seen.header("sec-websocket-protocol") {
                let first = p.split(',').next().unwrap_or("").trim();
                resp.push_str(&format!("Sec-WebSocket-Protocol: {first}\r\n"));
            }
            resp.push_str("\r\n");
            let mut out = resp.into_bytes();
            if let Some(g) = greeting {
                // A binary frame, unmasked, in the same write as the 101.
                out.push(0x82);
                assert!(g.len() < 126);
                out.push(g.len() as u8);
                out.extend_from_slice(g);
            }
            if stream.write_all(&out).await.is_err() {
                return;
            }
            let ws = WebSocketStream::from_partially_read(
                stream,
                buf.to_vec(),
                Role::Server,
                Some(super::ws_config()),
            )
            .await;
            rec.open.fetch_add(1, Ordering::Relaxed);
            websocket(ws, &rec, &name).await;
            rec.open.fetch_sub(1, Ordering::Relaxed);
            return;
        }

        // Plain HTTP: read the body.
        let body_len = if let Some(cl) = seen.header("content-length") {
            let cl: usize = cl.trim().parse().unwrap_or(0);
            while buf.len() < cl {
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
            let _ = buf.split_to(cl);
            cl
        } else if seen
            .header("transfer-encoding")
            .is_some_and(|t| t.contains("chunked"))
        {
            loop {
                if let Some((decoded, used)) = dechunk_len(&buf) {
                    let _ = buf.split_to(used);
                    break decoded;
                }
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        } else {
            0
        };
        if let Some(ms) = seen.path.strip_prefix("/sleep/") {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap_or(0))).await;
        }
        let (status, extra, body) = answer(&seen, &name, body_len);
        let content_type = if seen.path.starts_with("/plant") {
            "text/html"
        } else {
            "application/json"
        };
        let head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        out.extend_from_slice(&body);
        if stream.write_all(&out).await.is_err() {
            return;
        }
        if seen
            .header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close"))
        {
            return;
        }
    }
}

fn answer(seen: &Seen, name: &str, body_len: usize) -> (u16, String, Vec<u8>) {
    let path = seen.path.split('?').next().unwrap_or("");
    if let Some(code) = path.strip_prefix("/status/") {
        return (code.parse().unwrap_or(500), String::new(), b"x".to_vec());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return (200, String::new(), vec![b'b'; n.parse().unwrap_or(0)]);
    }
    let extra = if path == "/hop" {
        "Connection: X-Backend-Hop\r\nX-Backend-Hop: 1\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\n"
            .to_string()
    } else if path.starts_with("/plant") {
        format!("{PLANTED}Content-Security-Policy: default-src 'self'\r\n")
    } else {
        String::new()
    };
    let headers: serde_json::Map<String, serde_json::Value> = seen
        .headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), serde_json::Value::String(v.clone())))
        .collect();
    let body = serde_json::json!({
        "name": name,
        "method": seen.method,
        "path": seen.path,
        "headers": headers,
        "body_len": body_len,
    });
    (200, extra, body.to_string().into_bytes())
}

async fn websocket(mut ws: WebSocketStream<TcpStream>, rec: &Record, name: &str) {
    while let Some(msg) = ws.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(_) => return,
        };
        match msg {
            Message::Binary(b) => {
                if ws.send(Message::Binary(b)).await.is_err() {
                    return;
                }
            }
            Message::Text(t) => {
                let t = t.to_string();
                if t == "name" {
                    let _ = ws.send(Message::text(name)).await;
                } else if t == "die" {
                    // A crash: reset, no close frame.
                    #[allow(deprecated)]
                    let _ = ws.get_ref().set_linger(Some(Duration::ZERO));
                    return;
                } else if t == "ping" {
                    let _ = ws.send(Message::Ping("srv".into())).await;
                } else if let Some(rest) = t.strip_prefix("close:") {
                    let (code, reason) = rest.split_once(':').unwrap_or((rest, ""));
                    let frame = CloseFrame {
                        code: CloseCode::from(code.parse::<u16>().unwrap_or(1000)),
                        reason: reason.to_string().into(),
                    };
                    let _ = ws.send(Message::Close(Some(frame))).await;
                } else if let Some(rest) = t.strip_prefix("frags:") {
                    let (n, len) = rest.split_once(':').unwrap_or(("1", "1"));
                    let (n, len): (usize, usize) = (n.parse().unwrap(), len.parse().unwrap());
                    for i in 0..n {
                        let opcode = if i == 0 {
                            OpCode::Data(Data::Binary)
                        } else {
                            OpCode::Data(Data::Continue)
                        };
                        let payload = vec![i as u8; len];
                        let frame = Frame::message(payload, opcode, i + 1 == n);
                        if ws.send(Message::Frame(frame)).await.is_err() {
                            return;
                        }
                    }
                } else if ws.send(Message::text(t)).await.is_err() {
                    return;
                }
            }
            Message::Pong(_) => {
                rec.pongs.fetch_add(1, Ordering::Relaxed);
            }
            Message::Close(f) => {
                rec.closes
                    .lock()
                    .unwrap()
                    .push(f.map(|f| (u16::from(f.code), f.reason.to_string())));
                // tungstenite answers the close; drive it out.
                while let Some(Ok(_)) = ws.next().await {}
                return;
            }
            Message::Ping(_) | Message::Frame(_) => {}
        }
    }
}

/// Decode a complete chunked body at the start of `buf`: (body length, bytes used).
fn dechunk_len(buf: &[u8]) -> Option<(usize, usize)> {
    let mut pos = 0;
    let mut total = 0;
    loop {
        let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let size_str = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            let end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
            return Some((total, end + 2));
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        total += size;
        pos += size + 2;
    }
}

/// The decoded chunked body if `buf` holds all of it.
pub fn dechunk(buf: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        let line_end = buf[pos..].windows(2).position(|w| w == b"\r\n")? + pos;
        let size_str = std::str::from_utf8(&buf[pos..line_end]).ok()?;
        let size = usize::from_str_radix(size_str.split(';').next()?.trim(), 16).ok()?;
        pos = line_end + 2;
        if size == 0 {
            return Some(out);
        }
        if buf.len() < pos + size + 2 {
            return None;
        }
        out.extend_from_slice(&buf[pos..pos + size]);
        pos += size + 2;
    }
}
