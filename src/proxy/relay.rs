//! The WebSocket tunnel's byte relay: after the 101, copy bytes both ways until both
//! sides are done, the connection has been idle too long, or the server shuts down.
//!
//! It is a plain two-way copy (like `tokio::io::copy_bidirectional`), but it reads into
//! a per-thread buffer and writes on at once; only bytes the writer cannot take right
//! away are kept by the connection (and freed when written), so an idle tunnel holds
//! no buffer at all. On top, three things a generic copy cannot do:
//! - count bytes into the app's counters as they pass;
//! - an idle timeout (no byte in either direction for `idle`);
//! - follow WebSocket frame boundaries (headers only — payloads are skipped, never
//!   parsed or unmasked), so that when the backend goes away, or on idle timeout or
//!   shutdown, the proxy can end the conversation with a proper Close frame instead of
//!   a bare TCP close — when, and only when, that frame would land between two frames.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{sleep, Instant, Sleep};

use super::counters::AppCounters;

/// Size of the per-thread read buffer. A tunnel owns a buffer only while its writer is
/// slower than its reader (at most this much per direction).
pub const SCRATCH_SIZE: usize = 32 * 1024;
/// After one direction has finished, how long the other may still run.
pub const LINGER: Duration = Duration::from_secs(5);
/// The idle timer ticks this many times per idle timeout (see `run`).
pub const IDLE_SLICES: u32 = 4;
/// Time allowed for writing the Close frames on idle timeout or shutdown.
const GOODBYE: Duration = Duration::from_secs(1);

/// Close codes the proxy sends on its own (RFC 6455 §7.4.1). For a vanished backend
/// 1011 rather than IANA's newer 1014 "bad gateway": common clients (tungstenite, for
/// one) treat 1014 as a protocol violation.
pub const CLOSE_GOING_AWAY: u16 = 1001;
pub const CLOSE_BACKEND_GONE: u16 = 1011;

/// Follows WebSocket frame boundaries in one direction's byte stream.
#[derive(Debug, Clone, Default)]
pub struct FrameTracker {
    hdr: [u8; 14],
    hdr_len: usize,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    close_seen: bool,
}

impl FrameTracker {
    pub fn observe(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.remaining > 0 {
                let k = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= k as u64;
                data = &data[k..];
                continue;
            }
            self.hdr[self.hdr_len] = data[0];
            self.hdr_len += 1;
            data = &data[1..];
            if let Some(need) = self.header_len() {
                if self.hdr_len == need {
                    self.finish_header();
                }
            }
        }
    }

    fn header_len(&self) -> Option<usize> {
        if self.hdr_len < 2 {
            return None;
        }
        let b1 = self.hdr[1];
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        Some(2 + ext + mask)
    }

    fn finish_header(&mut self) {
        if self.hdr[0] & 0x0F == 0x8 {
            self.close_seen = true;
        }
        let len = match self.hdr[1] & 0x7F {
            126 => u64::from(u16::from_be_bytes([self.hdr[2], self.hdr[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.hdr[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        };
        self.remaining = len;
        self.hdr_len = 0;
    }

    /// Between two frames?
    pub fn at_boundary(&self) -> bool {
        self.remaining == 0 && self.hdr_len == 0
    }

    /// Has a Close frame gone this way?
    pub fn close_seen(&self) -> bool {
        self.close_seen
    }

    /// Would a Close frame written now be a valid next frame (and the first one)?
    pub fn can_close(&self) -> bool {
        self.at_boundary() && !self.close_seen
    }
}

/// A Close frame. `mask` is required towards a server (client frames are masked).
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let reason = &reason.as_bytes()[..reason.len().min(123)];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason);
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x88);
    match mask {
        None => {
            frame.push(payload.len() as u8);
            frame.extend_from_slice(&payload);
        }
        Some(key) => {
            frame.push(0x80 | payload.len() as u8);
            frame.extend_from_slice(&key);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        }
    }
    frame
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// Both directions reached end of stream (the usual WebSocket close).
    Closed,
    /// The backend closed or failed first; the client got a Close 1011 if possible.
    UpstreamGone,
    /// No byte either way for the idle timeout; both sides got a Close 1001.
    Idle,
    /// The server is shutting down; both sides got a Close 1001.
    Shutdown,
    /// Writing to one side failed (it went away); the other side is just closed.
    WriteFailed,
}

thread_local! {
    /// Every relay on a worker thread reads into this buffer and writes straight on
    /// from it; only what the writer cannot take at once is copied into the
    /// connection's own `pending` buffer. An idle tunnel therefore holds no buffer.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; SCRATCH_SIZE].into_boxed_slice());
}

/// The writing end of a direction, for [`Pipe::pump`]: `io::Write` plus closing the
/// write half once the reader has ended. `WouldBlock` means "not now, call again".
pub trait Sink: Write {
    fn close_write(&mut self) -> io::Result<()>;
}

impl Sink for mio::net::TcpStream {
    fn close_write(&mut self) -> io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// One direction of a tunnel: the copy both relays share. Reads and writes are
/// non-blocking (`WouldBlock` = wait for the next wake-up).
#[derive(Default)]
pub struct Pipe {
    /// Read but not yet written: only while the writer is slower than the reader.
    pending: Vec<u8>,
    pos: usize,
    /// Readiness is tracked here (edge-triggered epoll, the engine) rather than by the
    /// reader itself (tokio): a short read then means the socket is empty.
    edge_triggered: bool,
    /// Edge-triggered only: the reader may have bytes.
    pub readable: bool,
    /// Edge-triggered only: the reader's peer has closed (or the socket failed): read
    /// on until the end, since no further event will come for it.
    pub hup: bool,
    pub read_done: bool,
    /// The reader failed (reset, …) rather than ending cleanly.
    pub read_failed: bool,
    /// Written bytes the writer may still buffer (flushed before waiting).
    need_flush: bool,
    /// The writer has been shut down after the reader ended: this direction is done.
    pub done: bool,
    /// Frames written this way.
    pub frames: FrameTracker,
}

impl Pipe {
    /// For readers whose readiness the caller tracks (see `readable`, `hup`).
    pub fn edge_triggered(frames: FrameTracker) -> Pipe {
        Pipe {
            edge_triggered: true,
            readable: true,
            frames,
            ..Pipe::default()
        }
    }

    /// For readers that track their own readiness (tokio's).
    pub fn polled(frames: FrameTracker) -> Pipe {
        Pipe {
            frames,
            ..Pipe::default()
        }
    }

    /// Everything read so far has been written.
    pub fn drained(&self) -> bool {
        self.pos == self.pending.len()
    }

    /// Copy from `reader` to `writer` until one of them would block or the reader has
    /// ended and the writer is shut down. Returns whether any byte moved, or the write
    /// error that ends the tunnel. `inject`: on the reader's end, send the client a
    /// Close 1011 first (replica → client only, while the client has not closed).
    // Inlined into the engine's loop: without it the relay costs ~220 more instructions
    // per round trip (bench/instructions.py: 1,540 vs 1,338).
    #[inline]
    pub fn pump(
        &mut self,
        reader: &mut impl Read,
        writer: &mut impl Sink,
        scratch: &mut [u8],
        count: impl Fn(usize),
        inject: bool,
    ) -> io::Result<bool> {
        let mut progress = false;
        loop {
            while self.pos < self.pending.len() {
                match writer.write(&self.pending[self.pos..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        self.frames.observe(&self.pending[self.pos..self.pos + n]);
                        self.pos += n;
                        self.need_flush = true;
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(progress),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if !self.pending.is_empty() {
                // Give the memory back: an idle tunnel keeps no buffer.
                self.pending = Vec::new();
                self.pos = 0;
            }
            if self.read_done {
                if !self.done {
                    if !self.flush(writer)? {
                        return Ok(progress);
                    }
                    // The peer may already be gone; this direction ends either way.
                    if let Err(e) = writer.close_write() {
                        if e.kind() == io::ErrorKind::WouldBlock {
                            return Ok(progress);
                        }
                    }
                    self.done = true;
                    progress = true;
                }
                return Ok(progress);
            }
            if self.edge_triggered && !self.readable {
                return Ok(progress);
            }
            let n = match reader.read(scratch) {
                Ok(0) => {
                    self.end(inject, false);
                    continue;
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    self.flush(writer)?;
                    return Ok(progress);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.end(inject, true);
                    continue;
                }
            };
            progress = true;
            // A short read emptied the socket; the next arrival raises a new event
            // (an end of stream that came with these bytes does not: see `hup`).
            if self.edge_triggered && n < scratch.len() && !self.hup {
                self.readable = false;
            }
            count(n);
            let data = &scratch[..n];
            let mut off = 0;
            while off < n {
                match writer.write(&data[off..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(w) => {
                        self.frames.observe(&data[off..off + w]);
                        off += w;
                        self.need_flush = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if off < n {
                self.pending = data[off..].to_vec();
                self.pos = 0;
            }
        }
    }

    /// Flush what the writer may buffer; `false`: not now.
    fn flush(&mut self, writer: &mut impl Sink) -> io::Result<bool> {
        if !self.need_flush {
            return Ok(true);
        }
        match writer.flush() {
            Ok(()) => {
                self.need_flush = false;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn end(&mut self, inject: bool, failed: bool) {
        self.read_done = true;
        self.read_failed = failed;
        if inject && self.frames.can_close() {
            self.pending = close_frame(CLOSE_BACKEND_GONE, "backend closed the connection", None);
            self.pos = 0;
        }
    }
}

/// A tokio stream seen through `Read`/`Write`: `Pending` becomes `WouldBlock` (with
/// the task's waker registered, as polling does).
struct Polled<'a, 'w, S: ?Sized> {
    io: &'a mut S,
    cx: Context<'w>,
}

impl<'a, 'w, S: ?Sized> Polled<'a, 'w, S> {
    fn new(io: &'a mut S, waker: &'w Waker) -> Self {
        Polled {
            io,
            cx: Context::from_waker(waker),
        }
    }
}

fn would_block<T>(p: Poll<io::Result<T>>) -> io::Result<T> {
    match p {
        Poll::Ready(r) => r,
        Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
    }
}

impl<S: AsyncRead + Unpin + ?Sized> Read for Polled<'_, '_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut rb = ReadBuf::new(buf);
        would_block(Pin::new(&mut *self.io).poll_read(&mut self.cx, &mut rb))?;
        Ok(rb.filled().len())
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> Write for Polled<'_, '_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        would_block(Pin::new(&mut *self.io).poll_write(&mut self.cx, buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_flush(&mut self.cx))
    }
}

impl<S: AsyncWrite + Unpin + ?Sized> Sink for Polled<'_, '_, S> {
    fn close_write(&mut self) -> io::Result<()> {
        would_block(Pin::new(&mut *self.io).poll_shutdown(&mut self.cx))
    }
}

/// Relay between `down` (the client) and `up` (the replica) until the end.
///
/// `c2s` / `s2c` carry the frame state of bytes already written before the relay (data
/// that arrived together with the handshake heads).
pub async fn run<D, U>(
    down: &mut D,
    up: &mut U,
    c2s: FrameTracker,
    s2c: FrameTracker,
    counters: &AppCounters,
    idle: Duration,
    shutdown: &pingora::server::ShutdownWatch,
) -> Ending
where
    D: AsyncRead + AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut c2s = Pipe::polled(c2s);
    let mut s2c = Pipe::polled(s2c);
    // Idle detection without a clock read per message: the timer ticks every
    // `idle / IDLE_SLICES`; a tick after a quiet slice counts, `IDLE_SLICES` quiet
    // ticks in a row end the tunnel (so between `idle` and `idle` plus one slice after
    // the last byte).
    let slice = (idle / IDLE_SLICES).max(Duration::from_millis(1));
    let mut idle_timer = Box::pin(sleep(slice));
    let mut active = false;
    let mut quiet_slices = 0u32;
    let mut linger: Option<Pin<Box<Sleep>>> = None;
    let mut watch = shutdown.clone();
    let mut stopping = Box::pin(async move {
        if watch.wait_for(|stop| *stop).await.is_err() {
            // The server is gone without a shutdown broadcast: nothing to wait for.
            std::future::pending::<()>().await;
        }
    });
    let probe = shutdown.clone();
    // The waker the timer and `stopping` hold. They are polled again only when it
    // changes or when they may be ready (cheap checks), not on every message.
    let mut registered: Option<Waker> = None;

    let ending = poll_fn(|cx| {
        let mut progress = false;
        let waker = cx.waker();
        let moved = SCRATCH.with(|scratch| -> io::Result<()> {
            let mut own;
            let mut borrowed = scratch.try_borrow_mut();
            // Not expected (relays do not nest), but never panic for it.
            let buf: &mut [u8] = match borrowed.as_mut() {
                Ok(b) => b,
                Err(_) => {
                    own = [0u8; 4096];
                    &mut own
                }
            };
            if !c2s.done {
                let (mut from, mut to) =
                    (Polled::new(&mut *down, waker), Polled::new(&mut *up, waker));
                progress |= c2s.pump(&mut from, &mut to, buf, |n| counters.bytes_in(n), false)?;
            }
            if !s2c.done {
                let inject = !c2s.read_done;
                let (mut from, mut to) =
                    (Polled::new(&mut *up, waker), Polled::new(&mut *down, waker));
                progress |= s2c.pump(&mut from, &mut to, buf, |n| counters.bytes_out(n), inject)?;
            }
            Ok(())
        });
        if moved.is_err() {
            return Poll::Ready(Ending::WriteFailed);
        }
        if c2s.done && s2c.done {
            let upstream_first = s2c.read_failed || (s2c.read_done && !c2s.frames.close_seen());
            return Poll::Ready(if upstream_first {
                Ending::UpstreamGone
            } else {
                Ending::Closed
            });
        }
        if c2s.done || s2c.done {
            let timer = linger.get_or_insert_with(|| Box::pin(sleep(LINGER)));
            if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(if s2c.done {
                    Ending::UpstreamGone
                } else {
                    Ending::Closed
                });
            }
        }
        active |= progress;
        let new_waker = !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if new_waker {
            registered = Some(cx.waker().clone());
        }
        if new_waker || idle_timer.is_elapsed() {
            while idle_timer.as_mut().poll(cx).is_ready() {
                if std::mem::take(&mut active) {
                    quiet_slices = 0;
                } else {
                    quiet_slices += 1;
                    if quiet_slices >= IDLE_SLICES {
                        return Poll::Ready(Ending::Idle);
                    }
                }
                idle_timer.as_mut().reset(Instant::now() + slice);
            }
        }
        if (new_waker || !matches!(probe.has_changed(), Ok(false)))
            && stopping.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Ending::Shutdown);
        }
        Poll::Pending
    })
    .await;

    if matches!(ending, Ending::Idle | Ending::Shutdown) {
        let reason = if ending == Ending::Idle {
            "idle timeout"
        } else {
            "server shutting down"
        };
        let goodbye = async {
            if !s2c.done && s2c.drained() && s2c.frames.can_close() {
                let _ = down
                    .write_all(&close_frame(CLOSE_GOING_AWAY, reason, None))
                    .await;
            }
            if !c2s.done && c2s.drained() && c2s.frames.can_close() {
                let key: [u8; 4] = rand::random();
                let _ = up
                    .write_all(&close_frame(CLOSE_GOING_AWAY, reason, Some(key)))
                    .await;
            }
            let _ = down.shutdown().await;
            let _ = up.shutdown().await;
        };
        let _ = tokio::time::timeout(GOODBYE, goodbye).await;
    }
    ending
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, len: usize, mask: bool) -> Vec<u8> {
        let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask { 0x80 } else { 0 };
        if len < 126 {
            f.push(m | len as u8);
        } else if len <= 0xFFFF {
            f.push(m | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            f.push(m | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if mask {
            f.extend_from_slice(&[1, 2, 3, 4]);
        }
        f.extend(std::iter::repeat_n(0xAA, len));
        f
    }

    #[test]
    fn tracks_boundaries_across_any_split() {
        let mut stream = Vec::new();
        stream.extend(frame(0x2, true, 5, false));
        stream.extend(frame(0x1, false, 300, true));
        stream.extend(frame(0x0, true, 70_000, true));
        stream.extend(frame(0x9, true, 0, false));
        for chunk in [1, 2, 3, 7, 125, 4096] {
            let mut t = FrameTracker::default();
            for piece in stream.chunks(chunk) {
                t.observe(piece);
            }
            assert!(t.at_boundary(), "chunk {chunk}");
            assert!(!t.close_seen());
            t.observe(&frame(0x2, true, 10, false)[..5]);
            assert!(!t.at_boundary());
        }
        let mut t = FrameTracker::default();
        t.observe(&close_frame(1000, "bye", Some([9, 8, 7, 6])));
        assert!(t.at_boundary() && t.close_seen() && !t.can_close());
    }

    #[tokio::test]
    async fn relays_everything_in_order_through_slow_writers() {
        use tokio::io::AsyncReadExt;
        // Tiny pipes: nearly every write is partial or pending, so `pending` is used.
        let (mut client, mut down) = tokio::io::duplex(61);
        let (mut up, mut backend) = tokio::io::duplex(37);
        let counters = AppCounters::default();
        let (_stop, watch) = tokio::sync::watch::channel(false);
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let relay = run(
            &mut down,
            &mut up,
            FrameTracker::default(),
            FrameTracker::default(),
            &counters,
            Duration::from_secs(10),
            &watch,
        );
        let echo = async {
            let mut buf = vec![0u8; 1000];
            loop {
                let n = backend.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                backend.write_all(&buf[..n]).await.unwrap();
            }
            backend.shutdown().await.unwrap();
        };
        let (mut rd, mut wr) = tokio::io::split(&mut client);
        let send = async {
            for chunk in data.chunks(7_000) {
                wr.write_all(chunk).await.unwrap();
            }
            wr.shutdown().await.unwrap();
        };
        let receive = async {
            let mut got = Vec::new();
            rd.read_to_end(&mut got).await.unwrap();
            got
        };
        let (ending, (), (), got) = tokio::time::timeout(Duration::from_secs(30), async {
            tokio::join!(relay, echo, send, receive)
        })
        .await
        .unwrap();
        assert!(got == data, "echo differs ({} bytes back)", got.len());
        // Plain bytes, no Close frames: which side "ended first" is not meaningful here.
        assert!(matches!(ending, Ending::Closed | Ending::UpstreamGone));
        let c = counters.snapshot();
        assert_eq!((c.bytes_in, c.bytes_out), (200_000, 200_000));
    }

    #[test]
    fn close_frames_are_well_formed() {
        let f = close_frame(1014, "x", None);
        assert_eq!(f, vec![0x88, 3, 0x03, 0xF6, b'x']); // 1014
        let m = close_frame(1001, "", Some([0xFF; 4]));
        assert_eq!(
            m,
            vec![0x88, 0x82, 0xFF, 0xFF, 0xFF, 0xFF, 0x03 ^ 0xFF, 0xE9 ^ 0xFF]
        );
        assert_eq!(close_frame(1000, &"r".repeat(300), None).len(), 2 + 2 + 123);
    }
}
