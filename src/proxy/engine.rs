//! The relay engine: established plain-TCP WebSocket tunnels, relayed by a few threads
//! that each run one event loop (mio: epoll) over all their tunnels — the shape of an
//! nginx worker. After the handshake the data plane hands both sockets here
//! ([`Engine::relay`]) and waits for the [`Ending`].
//!
//! Why not a tokio task per tunnel (the async [`super::relay`], still used for TLS):
//! per message that costs the scheduler, the timer wheel and a task poll on top of the
//! two syscalls, about four times the instructions nginx spends. Here a message is one
//! `epoll_wait` event, one `read`, one `write` and a few comparisons; idle tunnels hold
//! no buffer and no timer (one sweep per worker checks idleness).
//!
//! Semantics are those of the async relay: bytes are copied as they come (WebSocket
//! frame headers followed, payloads never parsed), a Close 1011 goes to the client when
//! the replica ends first, a Close 1001 both ways on idle timeout or shutdown — each
//! only where it lands between two frames.

use std::io::{self, Write};
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use tokio::sync::oneshot;

use super::counters::AppCounters;
// Same endings, frame tracking, linger and idle granularity as the async relay.
use super::relay::{
    close_frame, Ending, FrameTracker, Pipe, CLOSE_GOING_AWAY, IDLE_SLICES, LINGER, SCRATCH_SIZE,
};

const WAKE: Token = Token(usize::MAX);

/// One established tunnel to relay.
pub struct Job {
    /// The client's socket (101 already written).
    pub down: std::net::TcpStream,
    /// The replica's socket.
    pub up: std::net::TcpStream,
    /// Frame state of bytes already written each way during the handshake.
    pub c2s: FrameTracker,
    pub s2c: FrameTracker,
    pub counters: Arc<AppCounters>,
}

enum Cmd {
    Add(Job, oneshot::Sender<Ending>),
    Shutdown,
    Exit,
}

struct Worker {
    tx: mpsc::Sender<Cmd>,
    waker: Arc<Waker>,
}

/// The relay threads. Dropping the engine lets them exit once their tunnels are done.
pub struct Engine {
    workers: Vec<Worker>,
    next: AtomicUsize,
    shutting_down: AtomicBool,
}

impl Engine {
    /// `threads` event loops; tunnels idle for `idle` are closed.
    pub fn start(threads: usize, idle: Duration) -> io::Result<Engine> {
        let mut workers = Vec::new();
        for i in 0..threads.max(1) {
            let poll = Poll::new()?;
            let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
            let (tx, rx) = mpsc::channel();
            std::thread::Builder::new()
                .name(format!("relay-{i}"))
                .spawn(move || Loop::new(poll, rx, idle).run())?;
            workers.push(Worker { tx, waker });
        }
        Ok(Engine {
            workers,
            next: AtomicUsize::new(0),
            shutting_down: AtomicBool::new(false),
        })
    }

    /// Relay `job` until it ends. If the engine is gone (it never is while the server
    /// runs), the tunnel is closed and reported as `WriteFailed`.
    pub async fn relay(&self, job: Job) -> Ending {
        let (tx, rx) = oneshot::channel();
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        let w = &self.workers[i];
        if w.tx.send(Cmd::Add(job, tx)).is_err() || w.waker.wake().is_err() {
            return Ending::WriteFailed;
        }
        rx.await.unwrap_or(Ending::WriteFailed)
    }

    /// Close every tunnel with a Close 1001 (and any added later). Idempotent.
    pub fn shutdown(&self) {
        if self.shutting_down.swap(true, Ordering::Relaxed) {
            return;
        }
        for w in &self.workers {
            let _ = w.tx.send(Cmd::Shutdown);
            let _ = w.waker.wake();
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        for w in &self.workers {
            let _ = w.tx.send(Cmd::Exit);
            let _ = w.waker.wake();
        }
    }
}

struct Tunnel {
    down: TcpStream,
    up: TcpStream,
    c2s: Pipe,
    s2c: Pipe,
    counters: Arc<AppCounters>,
    done: oneshot::Sender<Ending>,
    /// Bytes moved since the last sweep.
    active: bool,
    /// Sweeps in a row without a byte.
    quiet: u32,
    /// When one direction finished first.
    half_done: Option<Instant>,
}

impl Tunnel {
    /// Move what can be moved both ways. `Some` when the tunnel has ended.
    fn drive(&mut self, scratch: &mut [u8]) -> Option<Ending> {
        let counters = &self.counters;
        if !self.c2s.done {
            match self.c2s.pump(
                &mut self.down,
                &mut self.up,
                scratch,
                |n| counters.bytes_in(n),
                false,
            ) {
                Ok(p) => self.active |= p,
                Err(_) => return Some(Ending::WriteFailed),
            }
        }
        if !self.s2c.done {
            let inject = !self.c2s.read_done;
            match self.s2c.pump(
                &mut self.up,
                &mut self.down,
                scratch,
                |n| counters.bytes_out(n),
                inject,
            ) {
                Ok(p) => self.active |= p,
                Err(_) => return Some(Ending::WriteFailed),
            }
        }
        if self.c2s.done && self.s2c.done {
            let upstream_first =
                self.s2c.read_failed || (self.s2c.read_done && !self.c2s.frames.close_seen());
            return Some(if upstream_first {
                Ending::UpstreamGone
            } else {
                Ending::Closed
            });
        }
        if (self.c2s.done || self.s2c.done) && self.half_done.is_none() {
            self.half_done = Some(Instant::now());
        }
        None
    }

    /// The periodic check: idle timeout and the linger after a half close.
    fn sweep(&mut self, now: Instant, idle_sweeps: u32) -> Option<Ending> {
        if let Some(t) = self.half_done {
            if now.duration_since(t) >= LINGER {
                return Some(if self.s2c.done {
                    Ending::UpstreamGone
                } else {
                    Ending::Closed
                });
            }
        }
        if std::mem::take(&mut self.active) {
            self.quiet = 0;
            return None;
        }
        self.quiet += 1;
        if self.quiet >= idle_sweeps {
            self.goodbye("idle timeout");
            return Some(Ending::Idle);
        }
        None
    }

    /// Close 1001 both ways where a frame may go now, then shut both sockets. One
    /// non-blocking write each: a full socket buffer means the peer is not reading.
    fn goodbye(&mut self, reason: &str) {
        if !self.s2c.done && self.s2c.drained() && self.s2c.frames.can_close() {
            let _ = self
                .down
                .write(&close_frame(CLOSE_GOING_AWAY, reason, None));
        }
        if !self.c2s.done && self.c2s.drained() && self.c2s.frames.can_close() {
            let key: [u8; 4] = rand::random();
            let _ = self
                .up
                .write(&close_frame(CLOSE_GOING_AWAY, reason, Some(key)));
        }
        let _ = self.down.shutdown(Shutdown::Both);
        let _ = self.up.shutdown(Shutdown::Both);
    }
}

struct Loop {
    poll: Poll,
    rx: mpsc::Receiver<Cmd>,
    tunnels: Slab<Tunnel>,
    scratch: Box<[u8]>,
    sweep_every: Duration,
    idle_sweeps: u32,
    shutting_down: bool,
    exit: bool,
}

impl Loop {
    fn new(poll: Poll, rx: mpsc::Receiver<Cmd>, idle: Duration) -> Loop {
        // The idle check runs `IDLE_SLICES` times per idle timeout, and at least once a
        // second for the linger deadline: a tunnel ends between `idle` and `idle` plus
        // one sweep after its last byte.
        let slice = (idle / IDLE_SLICES).max(Duration::from_millis(1));
        let sweep_every = slice.min(Duration::from_secs(1));
        // Sweeps without a byte that make the idle timeout (rounded up).
        let idle_sweeps = u32::try_from(idle.as_micros().div_ceil(sweep_every.as_micros()))
            .unwrap_or(u32::MAX)
            .max(1);
        Loop {
            poll,
            rx,
            tunnels: Slab::new(),
            scratch: vec![0u8; SCRATCH_SIZE].into_boxed_slice(),
            sweep_every,
            idle_sweeps,
            shutting_down: false,
            exit: false,
        }
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut next_sweep = Instant::now() + self.sweep_every;
        loop {
            // No tunnels, nothing to time: sleep until a command arrives.
            let timeout = (!self.tunnels.is_empty())
                .then(|| next_sweep.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "relay event loop failed; its tunnels are closed");
                    return;
                }
            }
            for event in events.iter() {
                if event.token() == WAKE {
                    self.commands();
                    continue;
                }
                let key = event.token().0 / 2;
                let Some(t) = self.tunnels.get_mut(key) else {
                    continue; // already gone
                };
                // Readable, closed or failed: a read will tell which.
                let hup = event.is_read_closed() || event.is_error();
                if event.is_readable() || hup {
                    let dir = if event.token().0 % 2 == 0 {
                        &mut t.c2s
                    } else {
                        &mut t.s2c
                    };
                    dir.readable = true;
                    dir.hup |= hup;
                }
                if let Some(ending) = t.drive(&mut self.scratch) {
                    self.finish(key, ending);
                }
            }
            if self.exit && self.tunnels.is_empty() {
                return;
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + self.sweep_every;
                let ended: Vec<(usize, Ending)> = self
                    .tunnels
                    .iter_mut()
                    .filter_map(|(k, t)| t.sweep(now, self.idle_sweeps).map(|e| (k, e)))
                    .collect();
                for (k, e) in ended {
                    self.finish(k, e);
                }
            }
        }
    }

    fn commands(&mut self) {
        loop {
            match self.rx.try_recv() {
                Ok(Cmd::Add(job, done)) => self.add(job, done),
                Ok(Cmd::Shutdown) => {
                    self.shutting_down = true;
                    let keys: Vec<usize> = self.tunnels.iter().map(|(k, _)| k).collect();
                    for k in keys {
                        self.tunnels[k].goodbye("server shutting down");
                        self.finish(k, Ending::Shutdown);
                    }
                }
                Ok(Cmd::Exit) | Err(mpsc::TryRecvError::Disconnected) => {
                    self.exit = true;
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => return,
            }
        }
    }

    fn add(&mut self, job: Job, done: oneshot::Sender<Ending>) {
        let entry = self.tunnels.vacant_entry();
        let key = entry.key();
        let mut down = TcpStream::from_std(job.down);
        let mut up = TcpStream::from_std(job.up);
        let registry: &Registry = self.poll.registry();
        let both = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = registry
            .register(&mut down, Token(key * 2), both)
            .and_then(|()| registry.register(&mut up, Token(key * 2 + 1), both))
        {
            tracing::warn!(error = %e, "could not take over a tunnel; closing it");
            let _ = done.send(Ending::WriteFailed);
            return;
        }
        entry.insert(Tunnel {
            down,
            up,
            c2s: Pipe::edge_triggered(job.c2s),
            s2c: Pipe::edge_triggered(job.s2c),
            counters: job.counters,
            done,
            active: true,
            quiet: 0,
            half_done: None,
        });
        if self.shutting_down {
            self.tunnels[key].goodbye("server shutting down");
            self.finish(key, Ending::Shutdown);
            return;
        }
        // Bytes may have arrived before the registration.
        if let Some(ending) = self.tunnels[key].drive(&mut self.scratch) {
            self.finish(key, ending);
        }
    }

    fn finish(&mut self, key: usize, ending: Ending) {
        let mut t = self.tunnels.remove(key);
        let registry = self.poll.registry();
        let _ = registry.deregister(&mut t.down);
        let _ = registry.deregister(&mut t.up);
        // The waiting side may be gone (its connection task ended): nothing to tell.
        let _ = t.done.send(ending);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream as StdStream};

    /// (client, proxy's client side, proxy's replica side, replica), all on loopback.
    fn sockets() -> (StdStream, StdStream, StdStream, StdStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (down, _) = l.accept().unwrap();
        let up = StdStream::connect(l.local_addr().unwrap()).unwrap();
        let (replica, _) = l.accept().unwrap();
        for s in [&down, &up] {
            s.set_nonblocking(true).unwrap();
        }
        (client, down, up, replica)
    }

    fn job(down: StdStream, up: StdStream, counters: &Arc<AppCounters>) -> Job {
        Job {
            down,
            up,
            c2s: FrameTracker::default(),
            s2c: FrameTracker::default(),
            counters: counters.clone(),
        }
    }

    /// A server → client binary frame (unmasked).
    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x82, 127];
        f.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[tokio::test]
    async fn bytes_and_end_of_stream_that_arrive_together_are_both_relayed() {
        let engine = Engine::start(1, Duration::from_secs(60)).unwrap();
        let counters = Arc::new(AppCounters::default());
        let (mut client, down, up, mut replica) = sockets();
        let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let sent = frame(&payload);
        // The replica's whole answer and its FIN are queued before the relay starts:
        // one readiness edge for all of it.
        replica.write_all(&sent).unwrap();
        drop(replica);
        // The client reads slowly at first, so the relay has to hold bytes back.
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let mut got = Vec::new();
            client.read_to_end(&mut got).unwrap();
            got
        });
        let ending = tokio::time::timeout(
            Duration::from_secs(20),
            engine.relay(job(down, up, &counters)),
        )
        .await
        .expect("the relay ends once the replica has closed");
        let got = tokio::task::spawn_blocking(move || reader.join().unwrap())
            .await
            .unwrap();
        assert_eq!(ending, Ending::UpstreamGone);
        assert!(got.starts_with(&sent), "the frame arrives whole, in order");
        let close = &got[sent.len()..];
        assert_eq!(close[0], 0x88, "then a Close frame");
        assert_eq!(
            u16::from_be_bytes([close[2], close[3]]),
            super::super::relay::CLOSE_BACKEND_GONE
        );
        let c = counters.snapshot();
        assert_eq!((c.bytes_in, c.bytes_out), (0, sent.len() as u64));
    }

    #[tokio::test]
    async fn idle_tunnels_get_a_close_both_ways() {
        let engine = Engine::start(1, Duration::from_millis(400)).unwrap();
        let counters = Arc::new(AppCounters::default());
        let (mut client, down, up, mut replica) = sockets();
        let started = Instant::now();
        let ending = tokio::time::timeout(
            Duration::from_secs(10),
            engine.relay(job(down, up, &counters)),
        )
        .await
        .unwrap();
        let waited = started.elapsed();
        assert_eq!(ending, Ending::Idle);
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(1000),
            "{waited:?}"
        );
        let mut to_client = Vec::new();
        client.read_to_end(&mut to_client).unwrap();
        assert_eq!(&to_client[..4], &[0x88, 14, 0x03, 0xE9]); // 1001 "idle timeout"
        let mut to_replica = Vec::new();
        replica.read_to_end(&mut to_replica).unwrap();
        assert_eq!(to_replica[0], 0x88);
        assert_eq!(to_replica[1], 0x80 | 14, "masked, towards the server");
    }

    #[tokio::test]
    async fn shutdown_closes_open_tunnels_and_later_ones() {
        let engine = Engine::start(2, Duration::from_secs(60)).unwrap();
        let counters = Arc::new(AppCounters::default());
        let (mut c1, d1, u1, _r1) = sockets();
        let first = engine.relay(job(d1, u1, &counters));
        tokio::pin!(first);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), &mut first)
                .await
                .is_err(),
            "still open before the shutdown"
        );
        engine.shutdown();
        assert_eq!(first.await, Ending::Shutdown);
        let (_c2, d2, u2, _r2) = sockets();
        assert_eq!(engine.relay(job(d2, u2, &counters)).await, Ending::Shutdown);
        let mut got = Vec::new();
        c1.read_to_end(&mut got).unwrap();
        assert_eq!(&got[..4], &[0x88, 22, 0x03, 0xE9]); // 1001 "server shutting down"
    }
}
