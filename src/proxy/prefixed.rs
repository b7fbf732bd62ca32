//! A downstream stream with bytes put back in front: what the data plane hands to
//! pingora after it has read a request head itself and decided not to keep the
//! connection. Works over any transport (TCP, TLS): every pingora stream trait is passed
//! through to the inner stream, so pingora sees the same client address, TLS digest and
//! ALPN it would have seen.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, Bytes};
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct Prefixed {
    prefix: Bytes,
    inner: Stream,
}

impl Prefixed {
    /// `prefix` is read before anything from `stream`. A stream that is itself a
    /// drained `Prefixed` is unwrapped first, so keepalive connections never nest.
    pub fn wrap(stream: Stream, prefix: Bytes) -> Stream {
        let inner = Self::unwrap(stream);
        if prefix.is_empty() {
            return inner;
        }
        Box::new(Prefixed { prefix, inner })
    }

    /// The inner stream if `stream` is a `Prefixed` whose prefix has been read.
    pub fn unwrap(stream: Stream) -> Stream {
        let drained = stream
            .as_any()
            .downcast_ref::<Prefixed>()
            .is_some_and(|p| p.prefix.is_empty());
        if !drained {
            return stream;
        }
        match stream.into_any().downcast::<Prefixed>() {
            Ok(p) => p.inner,
            // Unreachable: checked above. An `Any` cannot become a stream again, so
            // there is nothing better to return than a stream that reads nothing.
            Err(_) => Box::new(Empty),
        }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for Prefixed {
    async fn shutdown(&mut self) {
        Shutdown::shutdown(&mut *self.inner).await
    }
}

impl UniqueID for Prefixed {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for Prefixed {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for Prefixed {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for Prefixed {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for Prefixed {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for Prefixed {
    /// Only the put-back bytes can be peeked (pingora peeks only for the h2c preface,
    /// which the data plane does not enable).
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.prefix.len() >= buf.len() {
            buf.copy_from_slice(&self.prefix[..buf.len()]);
            return Ok(true);
        }
        Ok(false)
    }
}

/// A stream that is at its end.
#[derive(Debug)]
struct Empty;

impl AsyncRead for Empty {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Empty {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        _buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[async_trait]
impl Shutdown for Empty {
    async fn shutdown(&mut self) {}
}

impl UniqueID for Empty {
    fn id(&self) -> UniqueIDType {
        -1
    }
}

impl Ssl for Empty {}

impl GetTimingDigest for Empty {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        Vec::new()
    }
}

impl GetProxyDigest for Empty {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Empty {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        None
    }
}

impl Peek for Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_prefix_then_inner_and_unwraps_when_drained() {
        let (a, mut b) = tokio::io::duplex(1024);
        let inner: Stream = Box::new(a);
        b.write_all(b" world").await.unwrap();
        let mut s = Prefixed::wrap(inner, Bytes::from_static(b"hello"));
        assert!(s.as_any().is::<Prefixed>());
        let mut got = [0u8; 11];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello world");
        let s = Prefixed::wrap(s, Bytes::from_static(b"again"));
        let s = Prefixed::unwrap(s);
        assert!(s.as_any().is::<Prefixed>(), "not drained: kept");
        let mut s = s;
        let mut got = [0u8; 5];
        s.read_exact(&mut got).await.unwrap();
        let s = Prefixed::unwrap(s);
        assert!(s.as_any().is::<tokio::io::DuplexStream>(), "one level only");
    }
}
