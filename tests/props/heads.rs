//! The HTTP/1 head reader (src/proxy/http1.rs) and its small helpers.
//!
//! The reader is driven through [`Chunked`], a mock stream that hands out the input in
//! chosen pieces (and says "not yet" between them), so every way a head can be split
//! across reads is reachable.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;
use proptest::collection::vec;
use proptest::prelude::*;
use rserve_proxy::proxy::http1::{self, HeadRead, MAX_HEAD, MAX_HEADERS};
use tokio::io::{AsyncRead, ReadBuf};

use super::{check, Outcome};

/// A stream over `data`, read in pieces of `chunks[i % len]` bytes, then EOF. With
/// `pending`, every read first answers `Pending` (and wakes itself).
pub struct Chunked {
    data: Vec<u8>,
    chunks: Vec<usize>,
    pending: bool,
    pos: usize,
    reads: usize,
    owe_pending: bool,
}

impl Chunked {
    pub fn new(data: Vec<u8>, chunks: Vec<usize>, pending: bool) -> Self {
        Chunked {
            data,
            chunks,
            pending,
            pos: 0,
            reads: 0,
            owe_pending: pending,
        }
    }
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.owe_pending {
            self.owe_pending = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.owe_pending = self.pending;
        let size = match self.chunks.len() {
            0 => usize::MAX,
            n => self.chunks[self.reads % n].max(1),
        };
        self.reads += 1;
        let n = size.min(self.data.len() - self.pos).min(buf.remaining());
        let (start, end) = (self.pos, self.pos + n);
        buf.put_slice(&self.data[start..end]);
        self.pos = end;
        Poll::Ready(Ok(()))
    }
}

/// Poll to completion; the mock streams never need a real waker.
pub fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    let mut cx = Context::from_waker(Waker::noop());
    for _ in 0..10_000_000 {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
    }
    panic!("the future did not finish");
}

fn is_get(r: &httparse::Request<'_, '_>) -> bool {
    r.method == Some("GET")
}

/// What httparse says of the whole input at once: the oracle.
#[derive(Debug, PartialEq, Eq)]
enum Oracle {
    Complete(usize, bool),
    Partial,
    Invalid,
}

fn oracle_request(data: &[u8]) -> Oracle {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(data) {
        Ok(httparse::Status::Complete(n)) => Oracle::Complete(n, is_get(&req)),
        Ok(httparse::Status::Partial) => Oracle::Partial,
        Err(_) => Oracle::Invalid,
    }
}

fn oracle_response(data: &[u8]) -> Oracle {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    match httparse::Response::new(&mut headers).parse(data) {
        Ok(httparse::Status::Complete(n)) => Oracle::Complete(n, false),
        Ok(httparse::Status::Partial) => Oracle::Partial,
        Err(_) => Oracle::Invalid,
    }
}

/// Read a request head from `data` delivered in `chunks`; the buffer afterwards.
fn read_request(
    data: &[u8],
    chunks: &[usize],
    pending: bool,
    capacity: usize,
) -> (io::Result<(HeadRead, bool)>, BytesMut) {
    let mut s = Chunked::new(data.to_vec(), chunks.to_vec(), pending);
    let mut buf = BytesMut::with_capacity(capacity);
    let r = block_on(http1::read_request_head(&mut s, &mut buf, is_get));
    (r, buf)
}

fn read_response(
    data: &[u8],
    chunks: &[usize],
    pending: bool,
    capacity: usize,
) -> (io::Result<HeadRead>, BytesMut) {
    let mut s = Chunked::new(data.to_vec(), chunks.to_vec(), pending);
    let mut buf = BytesMut::with_capacity(capacity);
    let r = block_on(http1::read_response_head(&mut s, &mut buf));
    (r, buf)
}

/// Pieces that make inputs look like HTTP often enough to get past the first byte.
fn http_soup() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(&b"GET "[..]),
        Just(&b"POST "[..]),
        Just(&b"/"[..]),
        Just(&b"/app/x?y=1"[..]),
        Just(&b" HTTP/1.1"[..]),
        Just(&b"HTTP/1.1 "[..]),
        Just(&b"HTTP/1.0 200 OK"[..]),
        Just(&b"101"[..]),
        Just(&b"\r\n"[..]),
        Just(&b"\n"[..]),
        Just(&b"\r"[..]),
        Just(&b": "[..]),
        Just(&b":"[..]),
        Just(&b"Host"[..]),
        Just(&b"Upgrade: websocket"[..]),
        Just(&b"Connection: upgrade"[..]),
        Just(&b"a"[..]),
        Just(&b" "[..]),
        Just(&b"\t"[..]),
        Just(&b"\0"[..]),
        Just(&b"\xff"[..]),
        Just(&b"\r\n\r\n"[..]),
    ];
    vec(piece, 0..40).prop_map(|ps| ps.concat())
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![vec(any::<u8>(), 0..400), http_soup()]
}

fn chunking() -> impl Strategy<Value = (Vec<usize>, bool, usize)> {
    (vec(1usize..64, 1..8), any::<bool>(), 0usize..2048)
}

/// Any bytes, any chunking: no panic, and the answer is the one httparse gives for the
/// whole input (chunking never changes it); a complete head is exactly httparse's, is
/// at most `MAX_HEAD`, and the buffer holds exactly the bytes read, in order.
pub fn arbitrary_bytes(cases: u32) -> Outcome {
    check(
        cases,
        (any_input(), chunking()),
        |(data, (chunks, pending, cap))| {
            let (r, buf) = read_request(&data, &chunks, pending, cap);
            let r = r.map_err(|e| TestCaseError::fail(format!("io error from a mock: {e}")))?;
            prop_assert!(buf.len() <= data.len() && buf[..] == data[..buf.len()]);
            let expected = match oracle_request(&data) {
                _ if data.is_empty() => (HeadRead::Closed, false),
                Oracle::Complete(n, get) => (HeadRead::Complete(n), get),
                Oracle::Partial | Oracle::Invalid => (HeadRead::Other, false),
            };
            prop_assert_eq!(&r, &expected);
            if let (HeadRead::Complete(n), _) = r {
                prop_assert!(n <= buf.len() && n <= MAX_HEAD);
            }

            let (r, buf) = read_response(&data, &chunks, pending, cap);
            let r = r.map_err(|e| TestCaseError::fail(format!("io error from a mock: {e}")))?;
            prop_assert!(buf.len() <= data.len() && buf[..] == data[..buf.len()]);
            let expected = match oracle_response(&data) {
                _ if data.is_empty() => HeadRead::Closed,
                Oracle::Complete(n, _) => HeadRead::Complete(n),
                Oracle::Partial | Oracle::Invalid => HeadRead::Other,
            };
            prop_assert_eq!(r, expected);
            Ok(())
        },
    )
}

// ---------- valid heads ----------

fn token() -> impl Strategy<Value = String> {
    "[A-Za-z0-9!#$%&'*+.^_`|~-]{1,20}"
}

/// A header value httparse accepts: visible ASCII, spaces and tabs inside, obs-text.
fn field_value() -> impl Strategy<Value = Vec<u8>> {
    vec(
        prop_oneof![8 => 0x21u8..0x7f, 1 => Just(b' '), 1 => Just(b'\t'), 1 => 0x80u8..=0xff],
        0..60,
    )
    .prop_map(|mut v| {
        // Leading/trailing whitespace is legal but trimmed; keep values canonical.
        while v.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.remove(0);
        }
        while v.last().is_some_and(|b| *b == b' ' || *b == b'\t') {
            v.pop();
        }
        v
    })
}

pub fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    vec((token(), field_value()), 0..20)
}

fn request_target() -> impl Strategy<Value = String> {
    "/[A-Za-z0-9._~%!$&'()*+,;=:@/-]{0,40}(\\?[A-Za-z0-9._~%!$&'()*+,;=:@/?-]{0,20})?"
}

pub fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("GET".to_string()),
        Just("POST".to_string()),
        Just("PUT".to_string()),
        Just("DELETE".to_string()),
        Just("OPTIONS".to_string()),
        "[A-Z]{1,10}",
    ]
}

pub fn request_head(
    method: &str,
    target: &str,
    minor: u8,
    headers: &[(String, Vec<u8>)],
    crlf: bool,
) -> Vec<u8> {
    let eol: &[u8] = if crlf { b"\r\n" } else { b"\n" };
    let mut out = format!("{method} {target} HTTP/1.{minor}").into_bytes();
    out.extend_from_slice(eol);
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(eol);
    }
    out.extend_from_slice(eol);
    out
}

fn response_head(status: u16, reason: &str, headers: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status:03} {reason}\r\n").into_bytes();
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[derive(Debug, Clone)]
enum Valid {
    Request {
        method: String,
        target: String,
        minor: u8,
        crlf: bool,
    },
    Response {
        status: u16,
        reason: String,
    },
}

fn valid() -> impl Strategy<Value = Valid> {
    prop_oneof![
        (method(), request_target(), 0u8..=1, any::<bool>()).prop_map(
            |(method, target, minor, crlf)| Valid::Request {
                method,
                target,
                minor,
                crlf
            }
        ),
        (100u16..600, "[A-Za-z ]{0,20}")
            .prop_map(|(status, reason)| Valid::Response { status, reason }),
    ]
}

/// A valid head followed by any bytes, split anywhere: recognised with its exact
/// length, the bytes after it kept in order. Cut short (EOF inside it): `Other`,
/// or `Closed` when nothing came.
pub fn valid_head_any_split(cases: u32) -> Outcome {
    let strategy = (
        valid(),
        headers(),
        vec(any::<u8>(), 0..100),
        chunking(),
        any::<prop::sample::Index>(),
        any::<bool>(),
    );
    check(
        cases,
        strategy,
        |(kind, headers, rest, (chunks, pending, cap), cut, truncate)| {
            let head = match &kind {
                Valid::Request {
                    method,
                    target,
                    minor,
                    crlf,
                } => request_head(method, target, *minor, &headers, *crlf),
                Valid::Response { status, reason } => response_head(*status, reason, &headers),
            };
            let mut data = head.clone();
            data.extend_from_slice(&rest);
            if truncate {
                data.truncate(cut.index(head.len()));
            }
            let complete = !truncate;
            match &kind {
                Valid::Request { method, .. } => {
                    let (r, buf) = read_request(&data, &chunks, pending, cap);
                    let r = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if complete {
                        prop_assert_eq!(r, (HeadRead::Complete(head.len()), method == "GET"));
                        prop_assert!(buf.len() <= data.len() && buf[..] == data[..buf.len()]);
                    } else if data.is_empty() {
                        prop_assert_eq!(r, (HeadRead::Closed, false));
                    } else {
                        prop_assert_eq!(r, (HeadRead::Other, false));
                    }
                }
                Valid::Response { .. } => {
                    let (r, buf) = read_response(&data, &chunks, pending, cap);
                    let r = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
                    if complete {
                        prop_assert_eq!(r, HeadRead::Complete(head.len()));
                        prop_assert!(buf[..] == data[..buf.len()]);
                    } else if data.is_empty() {
                        prop_assert_eq!(r, HeadRead::Closed);
                    } else {
                        prop_assert_eq!(r, HeadRead::Other);
                    }
                }
            }
            Ok(())
        },
    )
}

/// Heads around `MAX_HEAD` long, in pieces of any size: recognised up to `MAX_HEAD`
/// bytes, `Other` beyond; the buffer never grows past `MAX_HEAD`.
pub fn size_limit(cases: u32) -> Outcome {
    let strategy = (
        (MAX_HEAD - 400)..(MAX_HEAD + 400),
        vec(1usize..9000, 1..6),
        any::<bool>(),
        0usize..4096,
        vec(any::<u8>(), 0..2000),
    );
    check(cases, strategy, |(len, chunks, pending, cap, rest)| {
        let head = head_of_length(len);
        prop_assert_eq!(head.len(), len);
        let mut data = head;
        data.extend_from_slice(&rest);
        let (r, buf) = read_request(&data, &chunks, pending, cap);
        let r = r.map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected = if len <= MAX_HEAD {
            HeadRead::Complete(len)
        } else {
            HeadRead::Other
        };
        prop_assert_eq!(r, (expected, false));
        prop_assert!(buf.len() <= MAX_HEAD, "buffer grew to {}", buf.len());
        Ok(())
    })
}

/// `POST / HTTP/1.1` with filler headers, exactly `len` bytes.
fn head_of_length(len: usize) -> Vec<u8> {
    let mut out = b"POST / HTTP/1.1\r\n".to_vec();
    let mut i = 0;
    // Each filler line is "x-fNNN: <value>\r\n" (1,034 bytes); the last one takes the
    // remainder, which stays over 1,034.
    while len - out.len() - 2 > 2100 {
        let line = format!("x-f{i:03}: {}\r\n", "v".repeat(1024));
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    let room = len - out.len() - 2;
    let prefix = format!("x-f{i:03}: ");
    let value = room - prefix.len() - 2;
    out.extend_from_slice(prefix.as_bytes());
    out.extend_from_slice("w".repeat(value).as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out
}

// ---------- strip_slug, connection_tokens ----------

/// Paths the way a client may send them, including odd ones.
pub fn any_path() -> impl Strategy<Value = String> {
    prop_oneof![
        "(/[a-z0-9.%-]{0,8}){0,5}(\\?[a-z=&/?]{0,10})?",
        "\\PC{0,30}",
        any::<String>(),
    ]
}

/// Never panics; the result starts with `/`; with the slug taken from the path (as
/// the tunnel does), it is the rest of the path after `/<slug>`, with `/` added in
/// front when needed, and nothing else.
pub fn strip_slug(cases: u32) -> Outcome {
    check(
        cases,
        (any_path(), any::<String>(), any::<bool>()),
        |(path, other, own)| {
            let slug = if own {
                rserve_proxy::paths::first_segment(&path).to_string()
            } else {
                other
            };
            let out = rserve_proxy::proxy::app_path::strip_slug(&path, &slug);
            prop_assert!(out.starts_with('/'), "{out:?}");
            if own && path.starts_with('/') {
                let rest = &path[1 + slug.len()..];
                let expected = if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                };
                prop_assert_eq!(&out, &expected);
            }
            // Nothing is invented: the output is the input's tail, maybe with a '/'.
            prop_assert!(path.ends_with(out.trim_start_matches('/')));
            Ok(())
        },
    )
}

/// Never panics; tokens are trimmed, lower case, non-empty, without commas, and each
/// one makes its header hop-by-hop.
pub fn connection_tokens(cases: u32) -> Outcome {
    let names = prop_oneof![
        Just("Connection".to_string()),
        Just("connection".to_string()),
        Just("CONNECTION".to_string()),
        token(),
    ];
    let values = prop_oneof![vec(any::<u8>(), 0..60), field_value()];
    check(cases, vec((names, values), 0..8), |hs| {
        let headers: Vec<httparse::Header<'_>> = hs
            .iter()
            .map(|(n, v)| httparse::Header { name: n, value: v })
            .collect();
        let tokens = http1::connection_tokens(&headers);
        for t in &tokens {
            prop_assert!(!t.is_empty() && !t.contains(','));
            prop_assert_eq!(t.trim(), t.as_str());
            prop_assert_eq!(t.to_ascii_lowercase(), t.clone());
            prop_assert!(http1::is_hop_by_hop(t, &tokens));
            prop_assert!(http1::is_hop_by_hop(&t.to_ascii_uppercase(), &tokens));
        }
        Ok(())
    })
}
