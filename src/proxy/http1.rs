//! The few raw HTTP/1.1 pieces the tunnel needs: reading a head, rewriting it, writing
//! a small answer. Parsing is httparse (what pingora itself uses).

use std::fmt::Write as _;
use std::io;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest head we read ourselves; a longer one is left to pingora.
pub const MAX_HEAD: usize = 64 * 1024;
/// Headers we parse at most; more is left to pingora.
pub const MAX_HEADERS: usize = 128;

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1), plus
/// proxy credentials meant for us. Never forwarded; headers named in `Connection` are
/// dropped too.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

/// Forwarding headers the proxy sets itself; a client's values are replaced.
pub const FORWARDING: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-request-id",
];

#[derive(Debug, PartialEq, Eq)]
pub enum HeadRead {
    /// A complete head of this many bytes is at the start of the buffer.
    Complete(usize),
    /// The peer closed before sending anything.
    Closed,
    /// Not something we handle (too long, malformed, cut short): let pingora answer.
    Other,
}

/// Read until `buf` holds a complete response head.
pub async fn read_response_head<S>(s: &mut S, buf: &mut BytesMut) -> io::Result<HeadRead>
where
    S: AsyncRead + Unpin + ?Sized,
{
    read_until_head(s, buf, |b| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        match httparse::Response::new(&mut headers).parse(b) {
            Ok(httparse::Status::Complete(n)) => Ok(Some((n, false))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(()),
        }
    })
    .await
    .map(|(r, _)| r)
}

/// Read until `buf` holds a complete request head; also returns `classify` of the
/// parsed request (parsed once, here).
pub async fn read_request_head<S>(
    s: &mut S,
    buf: &mut BytesMut,
    classify: impl Fn(&httparse::Request<'_, '_>) -> bool,
) -> io::Result<(HeadRead, bool)>
where
    S: AsyncRead + Unpin + ?Sized,
{
    read_until_head(s, buf, |b| {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(b) {
            Ok(httparse::Status::Complete(n)) => Ok(Some((n, classify(&req)))),
            Ok(httparse::Status::Partial) => Ok(None),
            Err(_) => Err(()),
        }
    })
    .await
}

/// `parse`: `Ok(Some((head length, flag)))` when complete, `Ok(None)` when more is
/// needed, `Err` when it is not a head we handle.
///
/// Never holds more than `MAX_HEAD` bytes, so a complete head is at most that long.
/// httparse cannot resume, so each parse starts over: after the first read, parse only
/// when the new bytes may end the head (an empty line). Otherwise a client sending one
/// byte per packet would make us parse ~64 KiB, 64 Ki times (quadratic CPU).
async fn read_until_head<S>(
    s: &mut S,
    buf: &mut BytesMut,
    parse: impl Fn(&[u8]) -> Result<Option<(usize, bool)>, ()>,
) -> io::Result<(HeadRead, bool)>
where
    S: AsyncRead + Unpin + ?Sized,
{
    // The first bytes are always parsed, which tells early what is not HTTP at all.
    let mut parsed = false;
    // Bytes already searched for the end of the head.
    let mut searched = 0;
    loop {
        if !buf.is_empty() && (!parsed || may_end_head(buf, searched)) {
            parsed = true;
            match parse(buf) {
                Ok(Some((n, flag))) => return Ok((HeadRead::Complete(n), flag)),
                Ok(None) => {}
                Err(()) => return Ok((HeadRead::Other, false)),
            }
        }
        searched = buf.len();
        if buf.len() >= MAX_HEAD {
            return Ok((HeadRead::Other, false));
        }
        // Grow only when full, doubling: a connection that sent part of a head (all a
        // flood's connections ever do) keeps its first 1 KiB, not 4 KiB more.
        if buf.len() == buf.capacity() {
            buf.reserve(buf.capacity().max(1024));
        }
        let room = (MAX_HEAD - buf.len()) as u64;
        if (&mut *s).take(room).read_buf(buf).await? == 0 {
            let end = if buf.is_empty() {
                HeadRead::Closed
            } else {
                HeadRead::Other
            };
            return Ok((end, false));
        }
    }
}

/// Does `buf` have an empty line (`\n\n` or `\n\r\n`, which httparse needs to see
/// the end of a head) that ends after `from`?
fn may_end_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(2);
    let tail = &buf[start.min(buf.len())..];
    tail.iter().enumerate().any(|(i, &b)| {
        b == b'\n' && (tail.get(i + 1) == Some(&b'\n') || tail.get(i + 1..i + 3) == Some(b"\r\n"))
    })
}

/// The value of the first header called `name` (ASCII case-insensitive), as text.
pub fn header<'h>(headers: &'h [httparse::Header<'_>], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .and_then(|h| std::str::from_utf8(h.value).ok())
}

/// Does any `name` header list `token` (comma-separated, case-insensitive)?
pub fn has_token(headers: &[httparse::Header<'_>], name: &str, token: &str) -> bool {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(name))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Header names listed in `Connection` (lower case).
pub fn connection_tokens(headers: &[httparse::Header<'_>]) -> Vec<String> {
    headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Is this header only about the connection it came on?
pub fn is_hop_by_hop(name: &str, connection_tokens: &[String]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
        || connection_tokens
            .iter()
            .any(|t| name.eq_ignore_ascii_case(t))
}

/// A complete small answer with `Connection: close` and `extra` headers.
pub fn answer_with(
    status: u16,
    content_type: &str,
    body: &str,
    request_id: &str,
    extra: &[(&str, String)],
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nx-request-id: {request_id}\r\n",
        reason(status),
        body.len()
    );
    for (name, value) in extra {
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("cache-control: no-store\r\nconnection: close\r\n\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

pub fn reason(status: u16) -> &'static str {
    http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("")
}

/// Append `name: value\r\n`.
pub fn push_header(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_hop_by_hop() {
        let h = [
            httparse::Header {
                name: "Connection",
                value: b"keep-alive, X-Secret",
            },
            httparse::Header {
                name: "Upgrade",
                value: b"WebSocket",
            },
        ];
        assert_eq!(connection_tokens(&h), vec!["keep-alive", "x-secret"]);
        assert!(has_token(&h, "upgrade", "websocket"));
        assert!(!has_token(&h, "connection", "upgrade"));
        let t = connection_tokens(&h);
        assert!(is_hop_by_hop("X-SECRET", &t));
        assert!(is_hop_by_hop("TE", &t));
        assert!(!is_hop_by_hop("sec-websocket-key", &t));
    }

    #[tokio::test]
    async fn heads_are_read_across_reads_and_bounded() {
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(b"GET /x HTTP/1.1\r\nHo").await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            a.write_all(b"st: h\r\n\r\nrest").await.unwrap();
            a.write_all(&vec![b'a'; MAX_HEAD]).await.unwrap();
        });
        let mut buf = BytesMut::new();
        let (r, get) = read_request_head(&mut b, &mut buf, |r| r.method == Some("GET"))
            .await
            .unwrap();
        assert_eq!(r, HeadRead::Complete(28));
        assert!(get);
        assert_eq!(&buf[28..32], b"rest");

        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            a.write_all(b"GET /x HTTP/1.1\r\nX: ").await.unwrap();
            a.write_all(&vec![b'a'; MAX_HEAD]).await.unwrap();
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            read_request_head(&mut b, &mut buf, |_| true).await.unwrap(),
            (HeadRead::Other, false)
        );

        let (a, mut b) = tokio::io::duplex(64);
        drop(a);
        let mut buf = BytesMut::new();
        assert_eq!(
            read_response_head(&mut b, &mut buf).await.unwrap(),
            HeadRead::Closed
        );
    }
}
