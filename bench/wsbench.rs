//! WebSocket load tool for the data-plane benchmark (bench/dataplane.py).
//!
//! ```text
//! wsbench echo --listen 127.0.0.1:9001        # WS echo server; plain HTTP GET gets "200 ok"
//! wsbench rtt  --url ws://127.0.0.1:9001/ --conns 100 --msgs 2000 --size 64
//! wsbench idle --url ws://127.0.0.1:9001/ --conns 10000 --hold-secs 20
//! ```
//!
//! `rtt`: every connection sends a message, waits for its echo, repeats. Reports round-trip
//! p50/p99 (µs), messages per second, failed connections (connect/handshake) and dropped ones
//! (died or stalled mid-run). `--cpu NAME=PID[,PID…]` samples utime+stime of those processes
//! from /proc exactly over the measured phase (CPU time per message of a proxy).
//! `idle`: opens N connections (one echo each, so every tunnel is proven live), prints a
//! `ready` line, holds them `--hold-secs`, then checks each still echoes.
//!
//! Every mode prints one JSON object per event on stdout (human summary on stderr), raises
//! RLIMIT_NOFILE to its hard limit, and stops by itself (`--timeout-secs`, `--max-secs`).
//! Loopback only: the tool refuses non-loopback addresses.
//!
//! No unwrap/expect: errors are returned (`Res`) like in the crate itself.

use std::collections::BTreeMap;
use std::error::Error;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;
type Ws = WebSocketStream<TcpStream>;

#[derive(Parser)]
#[command(about = "WebSocket echo server and load generator (loopback only)")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// WebSocket echo server; any other HTTP request gets a small 200 (for wrk).
    Echo {
        #[arg(long)]
        listen: SocketAddr,
        /// Runtime worker threads (1 = current-thread runtime).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Stop by itself after this long.
        #[arg(long, default_value_t = 3600)]
        max_secs: u64,
    },
    /// Round-trip latency and throughput: each connection sends, waits for the echo, repeats.
    Rtt {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        /// Measured messages per connection.
        #[arg(long, default_value_t = 1000)]
        msgs: usize,
        /// Unmeasured messages per connection first.
        #[arg(long, default_value_t = 100)]
        warmup: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Whole run (connect + warmup + measure) stops after this long.
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        /// One connect or one round trip longer than this drops the connection.
        #[arg(long, default_value_t = 10_000)]
        op_timeout_ms: u64,
        /// `NAME=PID[,PID…]`: report utime+stime of these processes over the measured phase.
        #[arg(long)]
        cpu: Vec<String>,
        /// Spread connections over 127.0.0.1..=127.0.0.N as source addresses.
        #[arg(long, default_value_t = 1)]
        src_ips: u8,
    },
    /// Hold many idle connections (memory per idle WebSocket).
    Idle {
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 20)]
        hold_secs: u64,
        /// Handshakes in flight at once.
        #[arg(long, default_value_t = 200)]
        concurrency: usize,
        #[arg(long, default_value_t = 1)]
        threads: usize,
        #[arg(long, default_value_t = 1)]
        src_ips: u8,
        /// Connecting all stops after this long (what is open by then is held).
        #[arg(long, default_value_t = 120)]
        timeout_secs: u64,
        #[arg(long, default_value_t = 10_000)]
        op_timeout_ms: u64,
    },
}

fn main() -> Res<()> {
    let cli = Cli::parse();
    let nofile = raise_nofile();
    let threads = match &cli.cmd {
        Cmd::Echo { threads, .. } | Cmd::Rtt { threads, .. } | Cmd::Idle { threads, .. } => {
            *threads
        }
    };
    let rt = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(async move {
        match cli.cmd {
            Cmd::Echo {
                listen, max_secs, ..
            } => echo(listen, max_secs).await,
            Cmd::Rtt {
                url,
                conns,
                msgs,
                warmup,
                size,
                timeout_secs,
                op_timeout_ms,
                cpu,
                src_ips,
                ..
            } => {
                let target = Target::parse(&url)?;
                let opts = RttOpts {
                    conns,
                    msgs,
                    warmup,
                    size,
                    deadline: Instant::now() + Duration::from_secs(timeout_secs),
                    op_timeout: Duration::from_millis(op_timeout_ms),
                    cpu: parse_cpu_groups(&cpu)?,
                    src_ips,
                };
                rtt(target, opts, nofile).await
            }
            Cmd::Idle {
                url,
                conns,
                hold_secs,
                concurrency,
                src_ips,
                timeout_secs,
                op_timeout_ms,
                ..
            } => {
                let target = Target::parse(&url)?;
                idle(
                    target,
                    conns,
                    hold_secs,
                    concurrency,
                    src_ips,
                    Duration::from_secs(timeout_secs),
                    Duration::from_millis(op_timeout_ms),
                    nofile,
                )
                .await
            }
        }
    })
}

// ---------------------------------------------------------------------------------------
// Small helpers

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the resulting soft limit.
fn raise_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let want = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                return want.rlim_cur;
            }
        }
    }
    lim.rlim_cur
}

/// Small buffers: the tool must not be the memory hog when it holds 10,000 connections.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20))
        .max_frame_size(Some(1 << 20))
}

fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    // A closed stdout only loses the report; nothing to recover.
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

struct Target {
    addr: SocketAddr,
    url: String,
}

impl Target {
    fn parse(url: &str) -> Res<Target> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or("only ws:// URLs are supported")?;
        let hostport = rest.split('/').next().unwrap_or(rest);
        let addr: SocketAddr = match hostport.parse() {
            Ok(a) => a,
            Err(_) => std::net::ToSocketAddrs::to_socket_addrs(hostport)?
                .next()
                .ok_or("URL host does not resolve")?,
        };
        if !addr.ip().is_loopback() {
            return Err(format!("{addr} is not a loopback address: refusing").into());
        }
        Ok(Target {
            addr,
            url: url.to_string(),
        })
    }
}

async fn connect(target: &Target, index: usize, src_ips: u8) -> Res<Ws> {
    let sock = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if src_ips > 1 && target.addr.is_ipv4() {
        let last = 1 + (index % usize::from(src_ips)) as u8;
        sock.bind(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)),
            0,
        ))?;
    }
    let stream = sock.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    let (ws, resp) =
        tokio_tungstenite::client_async_with_config(target.url.as_str(), stream, Some(ws_config()))
            .await?;
    if resp.status().as_u16() != 101 {
        return Err(format!("handshake answered {}", resp.status()).into());
    }
    Ok(ws)
}

/// Send `payload`, wait for the same bytes back (control frames are skipped).
async fn round_trip(ws: &mut Ws, payload: &bytes::Bytes) -> Res<()> {
    ws.send(Message::Binary(payload.clone())).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Binary(b))) if b == *payload => return Ok(()),
            Some(Ok(Message::Binary(_))) | Some(Ok(Message::Text(_))) => {
                return Err("echo did not match".into())
            }
            Some(Ok(Message::Close(_))) | None => return Err("closed by peer".into()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

fn payload(size: usize, conn: usize, seq: usize) -> bytes::Bytes {
    let mut v = vec![b'x'; size.max(16)];
    v[..8].copy_from_slice(&(conn as u64).to_le_bytes());
    v[8..16].copy_from_slice(&(seq as u64).to_le_bytes());
    v.truncate(size.max(1));
    bytes::Bytes::from(v)
}

// ---------------------------------------------------------------------------------------
// CPU accounting from /proc

fn parse_cpu_groups(specs: &[String]) -> Res<Vec<(String, Vec<u32>)>> {
    let mut out = Vec::new();
    for spec in specs {
        let (name, pids) = spec
            .split_once('=')
            .ok_or("--cpu wants NAME=PID[,PID...]")?;
        let pids = pids
            .split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.trim().parse::<u32>())
            .collect::<Result<Vec<_>, _>>()?;
        out.push((name.to_string(), pids));
    }
    Ok(out)
}

/// utime+stime of one process (all its threads), in clock ticks.
fn proc_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After "comm)": f[0] is field 3 (state), so utime (14) is f[11], stime (15) f[12].
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn sample_cpu(groups: &[(String, Vec<u32>)]) -> Vec<u64> {
    groups
        .iter()
        .map(|(_, pids)| pids.iter().filter_map(|p| proc_ticks(*p)).sum())
        .collect()
}

/// This process's own user+system CPU, seconds.
fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage fills a zeroed, owned struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------
// echo

async fn echo(listen: SocketAddr, max_secs: u64) -> Res<()> {
    if !listen.ip().is_loopback() {
        return Err("echo listens on loopback only".into());
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    emit(serde_json::json!({"event": "listening", "addr": addr.to_string()}));
    eprintln!("wsbench echo: listening on {addr}");
    let stop = tokio::time::sleep(Duration::from_secs(max_secs));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                tokio::spawn(async move {
                    let _ = serve_conn(stream).await;
                });
            }
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

const HTTP_OK: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nok\n";

/// One TCP connection: HTTP/1.1 keep-alive requests get "ok" until one asks for a
/// WebSocket, which is then echoed until closed.
async fn serve_conn(mut stream: TcpStream) -> Res<()> {
    stream.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 16 * 1024 {
                return Err("request head too large".into());
            }
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let upgrade = header(&head, "upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
        if upgrade {
            let key = header(&head, "sec-websocket-key").ok_or("no Sec-WebSocket-Key")?;
            let resp = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            stream.write_all(resp.as_bytes()).await?;
            let rest = buf.split_off(end);
            let ws =
                WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(ws_config()))
                    .await;
            return echo_ws(ws).await;
        }
        // Plain HTTP: skip a body if one is announced, answer, keep the connection.
        let body_len: usize = header(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        buf.drain(..end);
        while buf.len() < body_len {
            let mut chunk = [0u8; 2048];
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        buf.drain(..body_len);
        stream.write_all(HTTP_OK).await?;
        if close {
            return Ok(());
        }
    }
}

async fn echo_ws(mut ws: Ws) -> Res<()> {
    while let Some(msg) = ws.next().await {
        // Close and ping replies are queued by tungstenite and flushed by the next poll;
        // after a close that poll ends the stream.
        if let m @ (Message::Binary(_) | Message::Text(_)) = msg? {
            ws.send(m).await?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// rtt

struct RttOpts {
    conns: usize,
    msgs: usize,
    warmup: usize,
    size: usize,
    deadline: Instant,
    op_timeout: Duration,
    cpu: Vec<(String, Vec<u32>)>,
    src_ips: u8,
}

#[derive(Default)]
struct ConnResult {
    lat_ns: Vec<u64>,
    dropped: Option<String>,
    warmup_msgs: usize,
    /// When this connection finished its measured messages (before its close).
    end: Option<Instant>,
}

fn pct(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Wait for the connection tasks: the open connections, how many failed, the first
/// error.
async fn collect_connections(
    handles: Vec<tokio::task::JoinHandle<Res<Ws>>>,
) -> (Vec<Ws>, usize, Option<String>) {
    let mut conns = Vec::with_capacity(handles.len());
    let mut failed = 0usize;
    let mut first_error: Option<String> = None;
    for h in handles {
        let error = match h.await {
            Ok(Ok(ws)) => {
                conns.push(ws);
                continue;
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        failed += 1;
        first_error.get_or_insert(error);
    }
    (conns, failed, first_error)
}

async fn rtt(target: Target, o: RttOpts, nofile: u64) -> Res<()> {
    let started = Instant::now();
    // Phase 1: connect everything (bounded concurrency), before any measurement.
    let sem = Arc::new(Semaphore::new(200));
    let target = Arc::new(target);
    let mut handles = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let (sem, target) = (sem.clone(), target.clone());
        let (op_timeout, src_ips, deadline) = (o.op_timeout, o.src_ips, o.deadline);
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let limit = op_timeout.min(deadline.saturating_duration_since(Instant::now()));
            match tokio::time::timeout(limit, connect(&target, i, src_ips)).await {
                Ok(r) => r,
                Err(_) => Err("connect timed out".into()),
            }
        }));
    }
    let (conns, failed, mut first_error) = collect_connections(handles).await;
    let connect_secs = started.elapsed().as_secs_f64();

    // Phase 2: warmup (unmeasured) then the measured loop, all connections at once.
    // The measured clock starts when every connection has finished its warmup.
    let n_ok = conns.len();
    let barrier = Arc::new(tokio::sync::Barrier::new(n_ok + 1));
    // Second rendezvous: CPU is sampled after the last measured message, before closes.
    let done = Arc::new(tokio::sync::Barrier::new(n_ok + 1));
    let mut tasks = Vec::with_capacity(n_ok);
    for (ci, mut ws) in conns.into_iter().enumerate() {
        let (barrier, done) = (barrier.clone(), done.clone());
        let (warmup, msgs, size, op_timeout, deadline) =
            (o.warmup, o.msgs, o.size, o.op_timeout, o.deadline);
        tasks.push(tokio::spawn(async move {
            let mut r = ConnResult {
                lat_ns: Vec::with_capacity(msgs),
                ..Default::default()
            };
            let mut alive = true;
            for s in 0..warmup {
                let p = payload(size, ci, s);
                match tokio::time::timeout(op_timeout, round_trip(&mut ws, &p)).await {
                    Ok(Ok(())) => r.warmup_msgs += 1,
                    Ok(Err(e)) => {
                        r.dropped = Some(format!("warmup: {e}"));
                        alive = false;
                        break;
                    }
                    Err(_) => {
                        r.dropped = Some("warmup: echo timed out".into());
                        alive = false;
                        break;
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            barrier.wait().await;
            if alive {
                for s in 0..msgs {
                    if Instant::now() >= deadline {
                        r.dropped = Some("run deadline reached".into());
                        break;
                    }
                    let p = payload(size, ci, warmup + s);
                    let t0 = Instant::now();
                    match tokio::time::timeout(op_timeout, round_trip(&mut ws, &p)).await {
                        Ok(Ok(())) => r.lat_ns.push(t0.elapsed().as_nanos() as u64),
                        Ok(Err(e)) => {
                            r.dropped = Some(e.to_string());
                            break;
                        }
                        Err(_) => {
                            r.dropped = Some("echo timed out".into());
                            break;
                        }
                    }
                }
            }
            r.end = Some(Instant::now());
            done.wait().await;
            // Polite close, briefly; a stuck peer does not hold the report.
            let _ = tokio::time::timeout(Duration::from_millis(500), ws.close(None)).await;
            r
        }));
    }
    barrier.wait().await;
    let cpu0 = sample_cpu(&o.cpu);
    let self0 = self_cpu_secs();
    let t0 = Instant::now();
    done.wait().await;
    let cpu1 = sample_cpu(&o.cpu);
    let self1 = self_cpu_secs();
    let mut all: Vec<u64> = Vec::with_capacity(n_ok * o.msgs);
    let mut dropped = 0usize;
    let mut warmup_msgs = 0usize;
    let mut results = Vec::with_capacity(n_ok);
    for t in tasks {
        match t.await {
            Ok(r) => results.push(r),
            Err(e) => {
                dropped += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    // The measured span ends with the last connection's last message, not its close.
    let mut measure_end = t0;
    for r in results {
        if let Some(end) = r.end {
            measure_end = measure_end.max(end);
        }
        if let Some(e) = r.dropped {
            dropped += 1;
            first_error.get_or_insert(e);
        }
        warmup_msgs += r.warmup_msgs;
        all.extend_from_slice(&r.lat_ns);
    }
    let lat_sum_ns: u128 = all.iter().map(|x| u128::from(*x)).sum();
    let span = (measure_end - t0).as_secs_f64().max(1e-9);
    let messages = all.len();
    all.sort_unstable();
    let tck = clk_tck();
    let mut cpu = BTreeMap::new();
    for (i, (name, pids)) in o.cpu.iter().enumerate() {
        let ms = (cpu1[i].saturating_sub(cpu0[i])) as f64 / tck * 1000.0;
        cpu.insert(
            name.clone(),
            serde_json::json!({
                "pids": pids,
                "cpu_ms": ms,
                "cpu_us_per_msg": if messages > 0 { ms * 1000.0 / messages as f64 } else { 0.0 },
            }),
        );
    }
    let client_ms = (self1 - self0) * 1000.0;
    let report = serde_json::json!({
        "event": "rtt",
        "url": target.url,
        "conns": o.conns,
        "msgs_per_conn": o.msgs,
        "warmup_per_conn": o.warmup,
        "size": o.size,
        "ok_conns": n_ok,
        "failed_conns": failed,
        "dropped_conns": dropped,
        "first_error": first_error,
        "messages": messages,
        "warmup_messages": warmup_msgs,
        "connect_secs": connect_secs,
        "elapsed_secs": span,
        "msgs_per_sec": messages as f64 / span,
        "p50_us": pct(&all, 50.0),
        "p90_us": pct(&all, 90.0),
        "p99_us": pct(&all, 99.0),
        "p999_us": pct(&all, 99.9),
        "max_us": all.last().map_or(0.0, |v| *v as f64 / 1000.0),
        "mean_us": if messages > 0 { lat_sum_ns as f64 / messages as f64 / 1000.0 } else { 0.0 },
        "cpu": cpu,
        "client_cpu_ms": client_ms,
        "nofile": nofile,
    });
    eprintln!(
        "wsbench rtt: {} conns ({} failed, {} dropped), {} msgs in {:.2}s = {:.0} msg/s, p50 {:.0} µs, p99 {:.0} µs",
        o.conns,
        failed,
        dropped,
        messages,
        span,
        messages as f64 / span,
        pct(&all, 50.0),
        pct(&all, 99.0)
    );
    emit(report);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// idle

#[allow(clippy::too_many_arguments)]
async fn idle(
    target: Target,
    n: usize,
    hold_secs: u64,
    concurrency: usize,
    src_ips: u8,
    connect_budget: Duration,
    op_timeout: Duration,
    nofile: u64,
) -> Res<()> {
    let started = Instant::now();
    let deadline = started + connect_budget;
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let target = Arc::new(target);
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        let (sem, target) = (sem.clone(), target.clone());
        handles.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await?;
            let limit = op_timeout.min(deadline.saturating_duration_since(Instant::now()));
            let work = async {
                let mut ws = connect(&target, i, src_ips).await?;
                round_trip(&mut ws, &payload(64, i, 0)).await?;
                Ok::<Ws, Box<dyn Error + Send + Sync>>(ws)
            };
            match tokio::time::timeout(limit, work).await {
                Ok(r) => r,
                Err(_) => Err("connect/echo timed out".into()),
            }
        }));
    }
    let (conns, failed, first_error) = collect_connections(handles).await;
    let opened = conns.len();
    emit(serde_json::json!({
        "event": "ready",
        "url": target.url,
        "requested": n,
        "opened": opened,
        "failed": failed,
        "first_error": first_error,
        "connect_secs": started.elapsed().as_secs_f64(),
        "nofile": nofile,
    }));
    eprintln!(
        "wsbench idle: {opened} open, {failed} failed, holding {hold_secs}s ({:.1}s to open)",
        started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;

    // Each held connection must still echo.
    let mut checks = Vec::with_capacity(opened);
    for (i, mut ws) in conns.into_iter().enumerate() {
        let sem = sem.clone();
        checks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await.ok();
            let ok = matches!(
                tokio::time::timeout(op_timeout, round_trip(&mut ws, &payload(64, i, 1))).await,
                Ok(Ok(()))
            );
            drop(ws); // plain TCP close: 10,000 close handshakes would only add noise
            ok
        }));
    }
    let mut alive = 0usize;
    for c in checks {
        if matches!(c.await, Ok(true)) {
            alive += 1;
        }
    }
    emit(serde_json::json!({
        "event": "done",
        "opened": opened,
        "failed": failed,
        "alive_at_end": alive,
        "dropped": opened - alive,
        "total_secs": started.elapsed().as_secs_f64(),
    }));
    eprintln!("wsbench idle: {alive}/{opened} still echoing after the hold");
    Ok(())
}
