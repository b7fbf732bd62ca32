//! The data plane's connection handler: a pingora `ServerApp` in front of the
//! `HttpProxy<FrontDoor>`.
//!
//! For every HTTP/1 request head on a connection it reads the head itself first. A
//! WebSocket upgrade to an app slug is handled here, start to end: pick a replica,
//! forward the rewritten head, relay the 101, then have the bytes copied both ways —
//! by the relay engine for plain TCP ([`super::engine`]), by the async relay on this
//! task for TLS ([`super::relay`]). Everything else — admin paths, plain HTTP to apps — is
//! handed to pingora with the head put back in front of the stream ([`Prefixed`]), one
//! request at a time, exactly as pingora's own HTTP/1 loop would do it.
//!
//! Why: pingora 0.9.1's upgraded-body path can drop a WebSocket right after the 101
//! (upstream issue #946), costs two channel hops per frame and keeps ~190 KiB of
//! buffers per connection. Owning the connection after the head means none of that
//! code ever runs for app WebSockets. See docs/architecture.md.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::BytesMut;
use pingora::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora::listeners::tls::Acceptor;
use pingora::protocols::http::ServerSession;
use pingora::protocols::l4::stream::Stream as L4Stream;
use pingora::protocols::{Stream, ALPN};
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::admission::{Admission, Refused};
use super::app_path::{self, PathError};
use super::balance::{self, ActiveGuard};
use super::drain::Drain;
use super::engine::{Engine, Job};
use super::forwarded::{self, TrustedProxies};
use super::http1::{self, HeadRead};
use super::https::HttpsPolicy;
use super::isolation::{self, Isolation};
use super::limits::{self, Limits, CONNECT_TIMEOUT, HANDSHAKE_TIMEOUT, KEEPALIVE_TIMEOUT};
use super::prefixed::Prefixed;
use super::relay::{self, FrameTracker};
use super::routes::{AppRoute, Lookup, Routes};
use super::{error_body, request_id, FrontDoor};
use crate::logging::Throttle;
use crate::paths;

/// One line per window at most for a warning a client can trigger at will.
const THROTTLE_WINDOW: Duration = Duration::from_secs(10);

pub struct DataPlane {
    http: Arc<HttpProxy<FrontDoor>>,
    /// Relays established plain-TCP WebSockets.
    engine: Engine,
    routes: Routes,
    limits: Limits,
    /// With TLS on: plain-HTTP upgrades are redirected, HTTPS answers carry HSTS —
    /// the same policy `FrontDoor` applies to everything else.
    https: Option<Arc<HttpsPolicy>>,
    /// `admin_host`, the sandbox CSP — the same settings `FrontDoor` applies.
    isolation: Arc<Isolation>,
    /// `trusted_proxies` — the same list `FrontDoor` uses.
    trusted: Arc<TrustedProxies>,
    /// Caps on open client connections (total and per client address).
    admission: Arc<Admission>,
    /// TLS listeners (their address and acceptor): connections to these are plain TCP
    /// to pingora, and the handshake is ours ([`DataPlane::tls_handshake`]).
    tls: Vec<(SocketAddr, Arc<Acceptor>)>,
    /// When open connections end (at shutdown, or later when handing over).
    drain: Arc<Drain>,
}

impl DataPlane {
    /// `http` must be ready to serve (`pingora::proxy::http_proxy` does that);
    /// `threads`: relay engine threads (one per worker thread is the sensible choice).
    pub fn new(
        http: HttpProxy<FrontDoor>,
        routes: Routes,
        limits: Limits,
        https: Option<Arc<HttpsPolicy>>,
        isolation: Arc<Isolation>,
        threads: usize,
    ) -> std::io::Result<Self> {
        let max_total = limits
            .max_connections
            .unwrap_or_else(|| limits::nofile_limit().map_or(1024, limits::auto_max_connections));
        tracing::info!(
            max_connections = max_total,
            max_connections_per_ip = limits.max_connections_per_ip,
            "connection caps"
        );
        Ok(DataPlane {
            http: Arc::new(http),
            engine: Engine::start(threads, limits.idle_timeout)?,
            routes,
            limits,
            https,
            isolation,
            trusted: Arc::new(TrustedProxies::default()),
            admission: Arc::new(Admission::new(max_total, limits.max_connections_per_ip)),
            tls: Vec::new(),
            drain: Drain::new(),
        })
    }

    /// When open connections end (see [`Drain`]).
    pub fn drain(&self) -> Arc<Drain> {
        self.drain.clone()
    }

    /// The open-connection counts (for [`super::memory::TrimAfterBursts`]).
    /// Share `FrontDoor`'s `trusted_proxies`.
    pub fn with_trusted_proxies(mut self, trusted: Arc<TrustedProxies>) -> Self {
        self.trusted = trusted;
        self
    }

    pub fn admission(&self) -> Arc<Admission> {
        self.admission.clone()
    }

    /// Serve TLS on connections to `addr` (a listener added as plain TCP; see
    /// [`super::add_tls_listener`]).
    pub fn add_tls(&mut self, addr: SocketAddr, acceptor: Acceptor) {
        self.tls.push((addr, Arc::new(acceptor)));
    }
}

#[async_trait]
impl ServerApp for DataPlane {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        self.drain.follow(shutdown);
        // The first thing done with a connection: at a cap it is closed here, before a
        // TLS handshake or a buffer (see `admission`).
        let client = client_ip(&stream);
        let _admitted = match self.admission.admit(client) {
            Ok(admitted) => admitted,
            Err(why) => {
                self.refused(why, client);
                return None;
            }
        };
        let stream = match self.tls_acceptor(&stream) {
            // Boxed: a handshake's state is not carried by plain connections' tasks.
            Some(acceptor) => Box::pin(self.tls_handshake(acceptor, stream, client)).await?,
            None => stream,
        };
        // HTTP/2 (TLS with ALPN h2) cannot carry these WebSockets (no RFC 8441 in
        // Rserve): pingora serves it as it is.
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return Box::pin(ServerApp::process_new(&self.http, stream, shutdown)).await;
        }
        self.serve_http1(stream, shutdown).await
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(&*self.http).await
    }
}

impl DataPlane {
    /// The HTTP/1 request loop of one connection (see the module comment).
    ///
    /// The tunnel's and pingora's futures are boxed: inline, their state (many KiB)
    /// would be part of every connection's task from the accept on, also while it only
    /// waits for a head — which is all a flood's connections ever do.
    async fn serve_http1(&self, mut stream: Stream, shutdown: &ShutdownWatch) -> Option<Stream> {
        let mut settings: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let mut buf = BytesMut::with_capacity(1024);
            let mut watch = shutdown.clone();
            // An idle keep-alive connection ends when the listeners stop, also when
            // handing over (like nginx on reload); one in the middle of a request
            // head ends when open connections close.
            let read = tokio::select! {
                r = self.read_head(&mut stream, &mut buf, first) => r,
                _ = watch.wait_for(|stop| *stop), if buf.is_empty() && !first => return None,
                _ = self.drain.closed() => return None,
            };
            first = false;
            match read {
                Some((HeadRead::Complete(n), true)) => {
                    Box::pin(self.websocket(stream, buf, n)).await;
                    return None;
                }
                // A client that went away in the middle of a head: nothing to answer.
                Some((HeadRead::Other, _)) if cut_short(&buf) => return None,
                // Let pingora answer what we do not handle (it allows longer heads and
                // answers malformed ones with 400).
                Some((HeadRead::Complete(_) | HeadRead::Other, _)) => {}
                Some((HeadRead::Closed, _)) | None => return None,
            }
            let mut session = ServerSession::new_http1(Prefixed::wrap(stream, buf.freeze()));
            match settings.take() {
                Some(s) => s.apply_to_session(&mut session),
                None => {
                    let keepalive = (!*shutdown.borrow()).then_some(KEEPALIVE_TIMEOUT.as_secs());
                    session.set_keepalive(keepalive);
                    session.set_keepalive_reuses_remaining(
                        self.http
                            .server_options()
                            .and_then(|o| o.keepalive_request_limit),
                    );
                }
            }
            let reused = Box::pin(self.http.process_new_http(session, shutdown)).await?;
            let (s, persistent) = reused.consume();
            stream = Prefixed::unwrap(s);
            settings = persistent;
        }
    }

    /// Read one request head into `buf`. The first head of a connection must be
    /// complete within `head_timeout` (a slow or stalled client holds a place for that
    /// long at most); a later one may wait `KEEPALIVE_TIMEOUT` for its first byte, then
    /// has `head_timeout` for the rest. `None`: timed out or the read failed — the
    /// connection just ends (a client going away is not worth a log line).
    async fn read_head(
        &self,
        stream: &mut Stream,
        buf: &mut BytesMut,
        first: bool,
    ) -> Option<(HeadRead, bool)> {
        if !first {
            match timeout(KEEPALIVE_TIMEOUT, stream.read_buf(buf)).await {
                Ok(Ok(0)) => return Some((HeadRead::Closed, false)),
                Ok(Ok(_)) => {}
                Ok(Err(_)) | Err(_) => return None,
            }
        }
        let head = http1::read_request_head(stream, buf, |req: &httparse::Request<'_, '_>| {
            is_app_websocket(req, &self.isolation)
        });
        match timeout(self.limits.head_timeout, head).await {
            Ok(Ok(read)) => Some(read),
            Ok(Err(_)) => None,
            Err(_) => {
                tracing::debug!("request head timed out; connection closed");
                None
            }
        }
    }

    /// The acceptor when `stream` came in on a TLS listener.
    fn tls_acceptor(&self, stream: &Stream) -> Option<&Acceptor> {
        if self.tls.is_empty() {
            return None;
        }
        let digest = stream.get_socket_digest()?;
        let local = *digest.local_addr()?.as_inet()?;
        self.tls
            .iter()
            .find(|(addr, _)| {
                addr.port() == local.port()
                    && (addr.ip().is_unspecified() || addr.ip() == local.ip())
            })
            .map(|(_, acceptor)| acceptor.as_ref())
    }

    /// The TLS handshake, ours rather than pingora's: it runs after admission, within
    /// `tls_handshake_timeout`, and a client that gives up half-way is not an error.
    async fn tls_handshake(
        &self,
        acceptor: &Acceptor,
        stream: Stream,
        client: Option<IpAddr>,
    ) -> Option<Stream> {
        let l4 = stream.into_any().downcast::<L4Stream>().ok()?;
        let client = client.map(|c| c.to_string());
        let client = client.as_deref().unwrap_or("-");
        match timeout(
            self.limits.tls_handshake_timeout,
            acceptor.tls_handshake(*l4),
        )
        .await
        {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) if client_went_away(&e) => {
                tracing::debug!(client, error = %e, "client left during the TLS handshake");
                None
            }
            Ok(Err(e)) => {
                static FAILED: Throttle = Throttle::new(THROTTLE_WINDOW);
                if let Some(repeated) = FAILED.check() {
                    tracing::warn!(client, error = %e, "TLS handshake failed{repeated}");
                }
                None
            }
            Err(_) => {
                tracing::debug!(client, "TLS handshake timed out; connection closed");
                None
            }
        }
    }

    /// Log a refused connection (rate-limited: a flood refuses thousands a second).
    fn refused(&self, why: Refused, client: Option<IpAddr>) {
        static TOTAL: Throttle = Throttle::new(THROTTLE_WINDOW);
        static PER_IP: Throttle = Throttle::new(THROTTLE_WINDOW);
        let client = client.map(|c| c.to_string());
        let client = client.as_deref().unwrap_or("-");
        let open = self.admission.open();
        match why {
            Refused::Total => {
                if let Some(repeated) = TOTAL.check() {
                    let cap = self.admission.max_total();
                    tracing::warn!(
                        client,
                        open,
                        "connection refused: {cap} connections are open (max_connections){repeated}"
                    );
                }
            }
            Refused::PerIp => {
                if let Some(repeated) = PER_IP.check() {
                    let cap = self.admission.max_per_ip();
                    tracing::warn!(
                        client,
                        open,
                        "connection refused: the client has {cap} connections open (max_connections_per_ip){repeated}"
                    );
                }
            }
        }
    }
}

/// After `HeadRead::Other`: a partial head below the size limit, so the client closed
/// in the middle of it (not a malformed or an overlong head, which pingora answers).
fn cut_short(buf: &[u8]) -> bool {
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    buf.len() < http1::MAX_HEAD
        && matches!(
            httparse::Request::new(&mut headers).parse(buf),
            Ok(httparse::Status::Partial)
        )
}

/// A handshake error that only says the client closed or reset the connection.
fn client_went_away(e: &pingora::Error) -> bool {
    use std::io::ErrorKind::*;
    let io = e
        .root_cause()
        .downcast_ref::<std::io::Error>()
        .map(std::io::Error::kind);
    matches!(
        io,
        Some(UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe)
    )
}

/// An HTTP/1.1 `GET` with `Upgrade: websocket` and one `Host`, whose first path
/// segment, once normalised, is not an admin path, on a host that serves apps
/// (`admin_host`). (Whether the slug exists is decided later, with the answer.)
/// Everything else goes to `FrontDoor`, which answers a missing Host (400) and the
/// wrong host (404) the same way for every request.
fn is_app_websocket(req: &httparse::Request<'_, '_>, isolation: &Isolation) -> bool {
    let (Some("GET"), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return false;
    };
    let mut hosts = req
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("host"));
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return false;
    };
    if !path.starts_with('/') || !http1::has_token(req.headers, "upgrade", "websocket") {
        return false;
    }
    let normalized = app_path::normalize(path);
    let host = std::str::from_utf8(host.value).ok();
    !paths::is_admin_segment(paths::first_segment(&normalized))
        && isolation.host_allows(host, false, &normalized)
}

/// What the handshake learned from the client's head.
struct Upgrade {
    slug: String,
    /// The path cannot be sent to an app (400).
    refused: Option<PathError>,
    path: String,
    /// Path and query as received (for redirects).
    target: String,
    host: Option<String>,
    request_id: String,
    wants_html: bool,
    /// `Strict-Transport-Security` for our answers (HTTPS with HSTS on).
    hsts: Option<http::HeaderValue>,
    /// The head to send upstream.
    upstream_head: Vec<u8>,
}

fn client_ip(stream: &Stream) -> Option<IpAddr> {
    stream
        .get_socket_digest()
        .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(SocketAddr::ip))
}

/// Parse the client's head and build the one to forward: path normalised and without
/// the slug, our credentials and hop-by-hop headers dropped, forwarding headers set
/// (overwritten, never appended).
fn prepare(
    head: &[u8],
    client: Option<IpAddr>,
    tls: bool,
    trusted: &TrustedProxies,
) -> Option<Upgrade> {
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    req.parse(head).ok()?;
    let path = req.path?;
    let normalized = app_path::normalize(path);
    let slug = paths::first_segment(&normalized).to_string();
    let (forward, refused) = match app_path::forward(&normalized, &slug) {
        Ok(f) => (f, None),
        Err(e) => (String::new(), Some(e)),
    };
    let request_id = request_id::accept_or_generate(http1::header(req.headers, "x-request-id"));
    let wants_html = http1::header(req.headers, "accept").is_some_and(|a| a.contains("text/html"));
    let tokens = http1::connection_tokens(req.headers);
    let upgrade = http1::header(req.headers, "upgrade").unwrap_or("websocket");

    let mut out = Vec::with_capacity(head.len() + 160);
    out.extend_from_slice(b"GET ");
    out.extend_from_slice(forward.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        if http1::is_hop_by_hop(h.name, &tokens)
            || http1::FORWARDING
                .iter()
                .any(|f| h.name.eq_ignore_ascii_case(f))
        {
            continue;
        }
        if h.name.eq_ignore_ascii_case("cookie") {
            if let Some(kept) = isolation::app_cookie(h.value) {
                http1::push_header(&mut out, h.name, &kept);
            }
            continue;
        }
        if h.name.eq_ignore_ascii_case("authorization") && isolation::is_our_authorization(h.value)
        {
            continue;
        }
        http1::push_header(&mut out, h.name, h.value);
    }
    http1::push_header(&mut out, "upgrade", upgrade.as_bytes());
    http1::push_header(&mut out, "connection", b"upgrade");
    // What a trusted proxy in front said counts (forwarded.rs).
    let claims = forwarded::Claims {
        forwarded_for: req
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("x-forwarded-for"))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .collect(),
        forwarded_proto: http1::header(req.headers, "x-forwarded-proto"),
        forwarded_host: http1::header(req.headers, "x-forwarded-host"),
    };
    let seen = trusted.resolve(client, tls, &claims);
    if let Some(ip) = seen.client {
        http1::push_header(&mut out, "x-forwarded-for", ip.to_string().as_bytes());
    }
    let proto: &[u8] = if seen.https { b"https" } else { b"http" };
    http1::push_header(&mut out, "x-forwarded-proto", proto);
    if let Some(host) = seen.host.or_else(|| http1::header(req.headers, "host")) {
        http1::push_header(&mut out, "x-forwarded-host", host.as_bytes());
    }
    http1::push_header(&mut out, "x-request-id", request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    Some(Upgrade {
        path: path.split('?').next().unwrap_or("/").to_string(),
        target: path.to_string(),
        host: http1::header(req.headers, "host").map(str::to_string),
        slug,
        refused,
        request_id,
        wants_html,
        hsts: None,
        upstream_head: out,
    })
}

/// The upstream's response head, rewritten for the client: hop-by-hop headers and
/// `Set-Cookie` for our session cookie dropped, `x-request-id` added; for a 101 the
/// upgrade pair is set again, otherwise the connection is marked to close and `csp`
/// (the apps' sandbox) is added. Returns (status, head, content-length).
fn rewrite_response(
    head: &[u8],
    request_id: &str,
    hsts: Option<&http::HeaderValue>,
    csp: Option<&str>,
) -> Option<(u16, Vec<u8>, Option<u64>)> {
    let mut headers = [httparse::EMPTY_HEADER; http1::MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    resp.parse(head).ok()?;
    // httparse takes any three digits; below 100 is no status a client can be given
    // (it would be written back as e.g. `HTTP/1.1 0`, a head the client cannot parse).
    let status = resp.code.filter(|c| *c >= 100)?;
    let tokens = http1::connection_tokens(resp.headers);
    let mut out = Vec::with_capacity(head.len() + 64);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {status} {}\r\n",
            resp.reason.unwrap_or(http1::reason(status))
        )
        .as_bytes(),
    );
    for h in resp.headers.iter() {
        if http1::is_hop_by_hop(h.name, &tokens)
            || h.name.eq_ignore_ascii_case("x-request-id")
            || (h.name.eq_ignore_ascii_case("set-cookie") && isolation::is_our_set_cookie(h.value))
        {
            continue;
        }
        http1::push_header(&mut out, h.name, h.value);
    }
    if status == 101 {
        let upgrade = http1::header(resp.headers, "upgrade").unwrap_or("websocket");
        http1::push_header(&mut out, "upgrade", upgrade.as_bytes());
        http1::push_header(&mut out, "connection", b"upgrade");
    } else {
        http1::push_header(&mut out, "connection", b"close");
        if let Some(csp) = csp {
            http1::push_header(&mut out, "content-security-policy", csp.as_bytes());
        }
    }
    http1::push_header(&mut out, "x-request-id", request_id.as_bytes());
    if let Some(h) = hsts {
        http1::push_header(&mut out, "strict-transport-security", h.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    let length = http1::header(resp.headers, "content-length").and_then(|v| v.trim().parse().ok());
    Some((status, out, length))
}

/// The WebSocket slot taken for one connection; given back on drop.
struct Slot<'a> {
    app: &'a AppRoute,
    established: Option<Instant>,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.app
            .counters
            .ws_release(self.established.map(|t| t.elapsed()));
    }
}

impl DataPlane {
    async fn websocket(&self, mut down: Stream, mut buf: BytesMut, head_len: usize) {
        let started = Instant::now();
        let client = client_ip(&down);
        let tls = down.get_ssl_digest().is_some();
        let Some(mut up) = prepare(&buf[..head_len], client, tls, &self.trusted) else {
            return;
        };
        let early = buf.split_off(head_len);
        drop(buf);

        if let Some(policy) = &self.https {
            up.hsts = policy.hsts(tls);
            if !tls {
                // Like every plain-HTTP request when TLS is on: to HTTPS.
                let status = redirect(&mut down, &up, policy).await;
                log(&up, client, status, started, None);
                return;
            }
        }

        if let Some(e) = up.refused {
            answer(&mut down, &up, 400, &e.to_string(), None).await;
            log(&up, client, 400, started, None);
            return;
        }

        // Decide with the snapshot, answer after letting go of it.
        let decision = match self.routes.load().lookup(&up.slug) {
            Lookup::Serve(app) => Ok(app.clone()),
            Lookup::Unknown => Err((
                None,
                404,
                format!("No app is served at /{}; check the address", up.slug),
                None,
            )),
            Lookup::Unavailable {
                app,
                retry_after_secs,
                message,
            } => Err((Some(app.clone()), 503, message, Some(retry_after_secs))),
        };
        let app = match decision {
            Ok(app) => app,
            Err((app, status, message, retry)) => {
                if let Some(app) = app {
                    app.counters.response(status);
                }
                answer(&mut down, &up, status, &message, retry).await;
                log(&up, client, status, started, None);
                return;
            }
        };
        let counters = &app.counters;
        if !counters.ws_try_reserve(self.limits.max_websockets_per_app) {
            counters.response(503);
            let msg = format!(
                "App \"{}\" has too many open connections; try again shortly",
                up.slug
            );
            answer(&mut down, &up, 503, &msg, Some(5)).await;
            log(&up, client, 503, started, None);
            return;
        }
        let mut slot = Slot {
            app: &app,
            established: None,
        };

        let Some((mut upstream, _active)) = connect(&app).await else {
            counters.response(502);
            let msg = format!("App \"{}\" cannot be reached right now", up.slug);
            answer(&mut down, &up, 502, &msg, Some(5)).await;
            log(&up, client, 502, started, None);
            return;
        };

        // Forward the head and whatever the client sent after it.
        let mut c2s = FrameTracker::default();
        c2s.observe(&early);
        counters.bytes_in(early.len());
        let mut first = std::mem::take(&mut up.upstream_head);
        first.extend_from_slice(&early);
        drop(early);
        let sent = timeout(self.limits.idle_timeout, upstream.write_all(&first)).await;
        drop(first);
        if !matches!(sent, Ok(Ok(()))) {
            counters.response(502);
            let msg = format!("App \"{}\" closed the connection", up.slug);
            answer(&mut down, &up, 502, &msg, Some(5)).await;
            log(&up, client, 502, started, None);
            return;
        }

        let mut rbuf = BytesMut::with_capacity(1024);
        let read = timeout(
            HANDSHAKE_TIMEOUT,
            http1::read_response_head(&mut upstream, &mut rbuf),
        )
        .await;
        let rewritten = match read {
            Ok(Ok(HeadRead::Complete(n))) => {
                let csp = self.isolation.csp();
                rewrite_response(&rbuf[..n], &up.request_id, up.hsts.as_ref(), csp).map(|r| (r, n))
            }
            _ => None,
        };
        let Some(((status, head, length), n)) = rewritten else {
            let (code, msg) = match read {
                Err(_) => (504, format!("App \"{}\" did not answer in time", up.slug)),
                _ => (502, format!("App \"{}\" gave no valid answer", up.slug)),
            };
            counters.response(code);
            answer(&mut down, &up, code, &msg, Some(5)).await;
            log(&up, client, code, started, None);
            return;
        };
        let late = rbuf.split_off(n);
        drop(rbuf);
        counters.response(status);

        if status != 101 {
            // The replica refused the upgrade: pass its answer on and end here, so no
            // later request on this connection can skip the routing.
            let body = match status {
                100..=199 | 204 | 304 => 0,
                _ => length.unwrap_or(self.limits.max_body_bytes),
            };
            let sent = relay_refusal(&mut down, &mut upstream, &head, &late, body).await;
            counters.bytes_out(sent);
            log(&up, client, status, started, None);
            return;
        }

        let mut s2c = FrameTracker::default();
        s2c.observe(&late);
        counters.bytes_out(late.len());
        let mut first = head;
        first.extend_from_slice(&late);
        drop(late);
        let sent = timeout(self.limits.idle_timeout, async {
            down.write_all(&first).await?;
            down.flush().await
        })
        .await;
        drop(first);
        if !matches!(sent, Ok(Ok(()))) {
            log(&up, client, 101, started, None);
            return;
        }
        counters.ws_established();
        let opened = Instant::now();
        slot.established = Some(opened);

        let ending = match into_tcp(down) {
            // Plain TCP: the relay engine takes both sockets.
            Ok(down) => match upstream.into_std() {
                Ok(up) => {
                    let job = Job {
                        down,
                        up,
                        c2s,
                        s2c,
                        counters: app.counters.clone(),
                    };
                    self.relay_on_engine(job).await
                }
                Err(_) => relay::Ending::WriteFailed,
            },
            // TLS (or bytes put back in front): the async relay on this task.
            Err(mut down) => {
                let idle = self.limits.idle_timeout;
                let closing = self.drain.closing();
                relay::run(&mut down, &mut upstream, c2s, s2c, counters, idle, &closing).await
            }
        };
        drop(slot);
        log(&up, client, 101, started, Some((opened, ending)));
    }
}

impl DataPlane {
    /// Wait for the engine to end the tunnel; when open connections close (server
    /// shutdown, end of a hand-over), have it say goodbye.
    async fn relay_on_engine(&self, job: Job) -> relay::Ending {
        let relay = self.engine.relay(job);
        tokio::pin!(relay);
        tokio::select! {
            ending = &mut relay => ending,
            () = self.drain.closed() => {
                self.engine.shutdown();
                relay.await
            }
        }
    }
}

/// The client's plain TCP socket on its own, for the relay engine: without pingora's
/// stream layers (write buffer, timing bookkeeping, dynamic dispatch) and its
/// registration with this runtime. Anything else (TLS, a stream with bytes put back) is
/// returned as it is.
///
/// Call only with nothing buffered in `stream`: the listener has no read buffer
/// (`listener`), and the 101 has been flushed.
fn into_tcp(stream: Stream) -> Result<std::net::TcpStream, Stream> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let Some(l4) = stream
        .as_any()
        .downcast_ref::<pingora::protocols::l4::stream::Stream>()
    else {
        return Err(stream);
    };
    // SAFETY: the descriptor belongs to `stream`, which is alive (borrowed) for the
    // whole use of `fd`; the clone made from it is a new, owned descriptor.
    let fd = unsafe { BorrowedFd::borrow_raw(l4.as_raw_fd()) };
    let Ok(owned) = fd.try_clone_to_owned() else {
        return Err(stream);
    };
    // The clone shares the socket (and its O_NONBLOCK). Dropping `stream` removes
    // pingora's registration and closes its descriptor; the socket stays open.
    drop(stream);
    Ok(std::net::TcpStream::from(owned))
}

/// Try healthy replicas, least busy first, until one accepts.
async fn connect(app: &AppRoute) -> Option<(TcpStream, ActiveGuard)> {
    let mut tried: Vec<SocketAddr> = Vec::new();
    while let Some(replica) = balance::pick(app, &tried) {
        tried.push(replica.addr);
        let active = ActiveGuard::new(&replica.load);
        match timeout(CONNECT_TIMEOUT, TcpStream::connect(replica.addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, active));
            }
            Ok(Err(e)) => balance::log_refused(&app.slug, replica.addr, &e),
            Err(_) => balance::log_refused(&app.slug, replica.addr, &"connect timed out"),
        }
        app.counters.connect_error();
        balance::connect_failed(&replica.load);
    }
    None
}

/// Pass a non-101 answer (head, then at most `body` bytes) to the client and close.
/// Returns the body bytes sent.
async fn relay_refusal<D, U>(
    down: &mut D,
    upstream: &mut U,
    head: &[u8],
    late: &[u8],
    body: u64,
) -> usize
where
    D: AsyncWrite + Unpin + ?Sized,
    U: AsyncRead + Unpin + ?Sized,
{
    let first = &late[..late.len().min(usize::try_from(body).unwrap_or(usize::MAX))];
    let rest = body.saturating_sub(first.len() as u64);
    let copy = async {
        down.write_all(head).await?;
        down.write_all(first).await?;
        let n = tokio::io::copy(&mut (&mut *upstream).take(rest), &mut *down).await?;
        down.flush().await?;
        down.shutdown().await?;
        Ok::<u64, std::io::Error>(n)
    };
    let copied = match timeout(HANDSHAKE_TIMEOUT, copy).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    first.len() + usize::try_from(copied).unwrap_or(0)
}

/// 308 to the same path on HTTPS (400 without a usable Host); returns the status.
async fn redirect(down: &mut Stream, up: &Upgrade, policy: &HttpsPolicy) -> u16 {
    let location = pingora::http::RequestHeader::build("GET", up.target.as_bytes(), None)
        .ok()
        .and_then(|mut req| {
            if let Some(host) = &up.host {
                req.insert_header(http::header::HOST, host.as_str()).ok()?;
            }
            policy.redirect_target(&req)
        });
    let (status, body, extra) = match location {
        Some(l) => (308, format!("Moved to {l}\n"), vec![("location", l)]),
        None => (
            400,
            "This server answers over HTTPS; the request has no usable Host header\n".to_string(),
            Vec::new(),
        ),
    };
    let bytes = http1::answer_with(
        status,
        "text/plain; charset=utf-8",
        &body,
        &up.request_id,
        &extra,
    );
    write_and_close(down, &bytes).await;
    status
}

/// Write a small answer from the proxy itself and close.
async fn answer(down: &mut Stream, up: &Upgrade, status: u16, message: &str, retry: Option<u32>) {
    let (body, content_type) = error_body(status, message, up.wants_html);
    let mut extra = Vec::new();
    if let Some(secs) = retry {
        extra.push(("retry-after", secs.to_string()));
    }
    if let Some(h) = up.hsts.as_ref().and_then(|h| h.to_str().ok()) {
        extra.push(("strict-transport-security", h.to_string()));
    }
    let bytes = http1::answer_with(status, content_type, &body, &up.request_id, &extra);
    write_and_close(down, &bytes).await;
}

async fn write_and_close(down: &mut Stream, bytes: &[u8]) {
    let _ = timeout(HANDSHAKE_TIMEOUT, async {
        down.write_all(bytes).await?;
        down.flush().await?;
        down.shutdown().await
    })
    .await;
}

fn log(
    up: &Upgrade,
    client: Option<IpAddr>,
    status: u16,
    started: Instant,
    open: Option<(Instant, relay::Ending)>,
) {
    let client = client.map(|c| c.to_string());
    tracing::info!(
        target: "access",
        request_id = %up.request_id,
        method = "GET",
        path = %up.path,
        status,
        client = client.as_deref().unwrap_or("-"),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        websocket_secs = open.map(|(t, _)| t.elapsed().as_secs_f64()),
        ending = open.map(|(_, e)| format!("{e:?}")),
        "websocket"
    );
}

/// The head [`prepare`] would forward upstream, for the property tests and the fuzz
/// runner (tests/props); not part of the product's interface.
#[doc(hidden)]
/// `Err`: the path is refused for an app (the tunnel answers 400 and sends nothing).
pub fn fuzz_upstream_head(
    head: &[u8],
    client: Option<IpAddr>,
    tls: bool,
) -> Option<Result<Vec<u8>, PathError>> {
    prepare(head, client, tls, &TrustedProxies::default()).map(|up| match up.refused {
        Some(e) => Err(e),
        None => Ok(up.upstream_head),
    })
}

/// [`rewrite_response`] for the property tests and the fuzz runner (tests/props).
#[doc(hidden)]
pub fn fuzz_rewrite_response(
    head: &[u8],
    request_id: &str,
    hsts: Option<&http::HeaderValue>,
    csp: Option<&str>,
) -> Option<(u16, Vec<u8>, Option<u64>)> {
    rewrite_response(head, request_id, hsts, csp)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &[u8] = b"GET /app/ws/x?q=1 HTTP/1.1\r\nHost: example.org\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade, X-Drop\r\nX-Drop: secret\r\nKeep-Alive: 5\r\nTE: trailers\r\nProxy-Authorization: Basic x\r\nX-Forwarded-For: 6.6.6.6\r\nX-Request-Id: abc\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: chat\r\n\r\n";

    fn is_app_websocket(head: &[u8]) -> bool {
        is_app_websocket_with(head, &Isolation::default())
    }

    fn is_app_websocket_with(head: &[u8], isolation: &Isolation) -> bool {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        req.parse(head).unwrap();
        super::is_app_websocket(&req, isolation)
    }

    #[test]
    fn routing_uses_the_normalised_path_the_host_and_admin_host() {
        let ws = |path: &str, host: &str| {
            format!(
                "GET {path} HTTP/1.1\r\n{host}Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
            )
        };
        assert!(is_app_websocket(ws("/app/x", "Host: h\r\n").as_bytes()));
        // No Host, or two: FrontDoor answers 400.
        assert!(!is_app_websocket(ws("/app/x", "").as_bytes()));
        assert!(!is_app_websocket(
            ws("/app/x", "Host: a\r\nHost: b\r\n").as_bytes()
        ));
        // `/app/../api` is the admin plane.
        assert!(!is_app_websocket(
            ws("/app/../api/x", "Host: h\r\n").as_bytes()
        ));
        assert!(!is_app_websocket(
            ws("/app/%2e%2e/api/x", "Host: h\r\n").as_bytes()
        ));
        assert!(is_app_websocket(
            ws("/api/../app/x", "Host: h\r\n").as_bytes()
        ));
        let split = Isolation {
            admin_host: Some("admin.test".into()),
            csp_sandbox: true,
        };
        assert!(!is_app_websocket_with(
            ws("/app/x", "Host: Admin.Test:8080\r\n").as_bytes(),
            &split
        ));
        assert!(is_app_websocket_with(
            ws("/app/x", "Host: apps.test\r\n").as_bytes(),
            &split
        ));
    }

    #[test]
    fn credentials_and_bad_paths_never_reach_the_app() {
        let head = b"GET /app/a/../ws HTTP/1.1\r\nHost: h\r\nCookie: theirs=1; rsp_session=s; __Host-rsp_session=t\r\nCookie: rsp_session=u\r\nAuthorization: Bearer rsp_abcdef\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        let up = prepare(head, None, false, &TrustedProxies::default()).unwrap();
        assert!(up.refused.is_none());
        let text = String::from_utf8(up.upstream_head).unwrap();
        assert!(text.starts_with("GET /ws HTTP/1.1\r\n"), "{text}");
        assert!(text.contains("Cookie: theirs=1\r\n"), "{text}");
        assert!(!text.contains("rsp_"), "{text}");
        assert!(
            !text.to_ascii_lowercase().contains("authorization"),
            "{text}"
        );

        let basic = b"GET /app/ws HTTP/1.1\r\nHost: h\r\nAuthorization: Basic dTpw\r\nUpgrade: websocket\r\n\r\n";
        let text = String::from_utf8(
            prepare(basic, None, false, &TrustedProxies::default())
                .unwrap()
                .upstream_head,
        )
        .unwrap();
        assert!(text.contains("Authorization: Basic dTpw\r\n"), "{text}");

        let bad = b"GET /app/a%2f..%2f..%2fapi HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n";
        let up = prepare(bad, None, false, &TrustedProxies::default()).unwrap();
        assert_eq!(up.refused, Some(PathError::EncodedSlash));
    }

    #[test]
    fn recognises_app_websockets_only() {
        assert!(is_app_websocket(HEAD));
        assert!(!is_app_websocket(
            b"GET /api/x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!is_app_websocket(b"GET /app/x HTTP/1.1\r\nHost: h\r\n\r\n"));
        assert!(!is_app_websocket(
            b"POST /app/x HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!is_app_websocket(
            b"GET /app/x HTTP/1.0\r\nUpgrade: websocket\r\n\r\n"
        ));
        assert!(!is_app_websocket(
            b"GET /app/x HTTP/1.1\r\nUpgrade: h2c\r\n\r\n"
        ));
    }

    #[test]
    fn upstream_head_is_rewritten() {
        let up = prepare(
            HEAD,
            Some("192.0.2.7".parse().unwrap()),
            false,
            &TrustedProxies::default(),
        )
        .unwrap();
        let text = String::from_utf8(up.upstream_head).unwrap();
        assert!(text.starts_with("GET /ws/x?q=1 HTTP/1.1\r\n"), "{text}");
        assert_eq!(up.slug, "app");
        assert_eq!(up.request_id, "abc");
        let lower = text.to_ascii_lowercase();
        for gone in [
            "x-drop",
            "keep-alive",
            "te:",
            "proxy-authorization",
            "6.6.6.6",
        ] {
            assert!(!lower.contains(gone), "{gone} still in {text}");
        }
        for kept in [
            "\r\nhost: example.org\r\n",
            "sec-websocket-key: dghlihnhbxbszsbub25jzq==\r\n",
            "sec-websocket-protocol: chat\r\n",
            "upgrade: websocket\r\n",
            "connection: upgrade\r\n",
            "x-forwarded-for: 192.0.2.7\r\n",
            "x-forwarded-proto: http\r\n",
            "x-forwarded-host: example.org\r\n",
            "x-request-id: abc\r\n",
        ] {
            assert_eq!(lower.matches(kept).count(), 1, "{kept} in {text}");
        }
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn response_head_is_rewritten() {
        let (status, head, _) = rewrite_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade, X-Hop\r\nX-Hop: 1\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
            "rid",
            None,
            Some("sandbox"),
        )
        .unwrap();
        assert_eq!(status, 101);
        let text = String::from_utf8(head).unwrap().to_ascii_lowercase();
        assert!(text.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo=\r\n"));
        assert!(
            text.contains("connection: upgrade\r\n") && text.contains("upgrade: websocket\r\n")
        );
        assert!(!text.contains("x-hop"));
        assert!(text.contains("x-request-id: rid\r\n"));
        assert!(!text.contains("content-security-policy"), "not on a 101");

        let (status, head, len) = rewrite_response(
            b"HTTP/1.1 400 Bad Request\r\nContent-Length: 3\r\nConnection: keep-alive\r\nSet-Cookie: rsp_session=evil\r\nSet-Cookie: app=1\r\n\r\n",
            "rid",
            Some(&http::HeaderValue::from_static("max-age=60")),
            Some("sandbox allow-scripts"),
        )
        .unwrap();
        assert_eq!((status, len), (400, Some(3)));
        let text = String::from_utf8(head).unwrap();
        assert!(text.contains("connection: close\r\n") && !text.contains("keep-alive"));
        assert!(text.contains("strict-transport-security: max-age=60\r\n"));
        assert!(text.contains("content-security-policy: sandbox allow-scripts\r\n"));
        assert!(text.contains("Set-Cookie: app=1\r\n") && !text.contains("rsp_session"));

        let (_, head, _) = rewrite_response(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nSet-Cookie: __Host-rsp_session=evil; Secure; Path=/\r\n\r\n",
            "rid",
            None,
            None,
        )
        .unwrap();
        assert!(!String::from_utf8(head).unwrap().contains("rsp_session"));
    }
}
