//! The front door (pingora): every request arrives here. Admin-plane paths go to the
//! control plane's unix socket; any other first path segment is an app slug, served
//! from the app's healthy replicas (unknown slug → 404, known but not serving → 503).
//!
//! Connections first meet [`tunnel::DataPlane`], which handles WebSocket upgrades to
//! apps itself and hands everything else to `FrontDoor` (pingora's HTTP proxy).
//!
//! The request path reads only its per-request `Ctx`, an immutable route snapshot and
//! atomics: no locks, no store.

pub mod admission;
mod app_http;
pub mod app_path;
pub mod balance;
pub mod counters;
pub mod drain;
pub mod engine;
pub mod forwarded;
pub mod http1;
pub mod https;
pub mod isolation;
pub mod limits;
pub mod memory;
mod prefixed;
pub mod relay;
pub mod request_id;
pub mod routes;
pub mod tunnel;

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::listeners::{L4BufferSettings, ListenerConfig, DEFAULT_L4_WRITE_BUFFER_SIZE};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::services::listening::Service;

use crate::logging::Throttle;
use crate::paths;
use app_http::{
    app_body_in, app_connect_failed, app_fail_to_proxy, app_peer, app_request_filter, app_response,
    app_upstream_request, default_fail_to_proxy,
};
use balance::ActiveGuard;
use forwarded::TrustedProxies;
use isolation::Isolation;
use limits::Limits;
use routes::{AppRoute, Lookup, Routes};
use tunnel::DataPlane;

/// Hop-by-hop headers a proxy must not forward (RFC 9110 §7.6.1). `Connection` and
/// `Upgrade` are left to pingora, which keeps them for WebSocket upgrades.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "proxy-authorization",
];

pub struct FrontDoor {
    control_plane: Box<HttpPeer>,
    routes: Routes,
    limits: Limits,
    /// Set when TLS is on: challenges, redirect to HTTPS, HSTS (shared with the
    /// tunnel, which answers WebSocket upgrades to apps before `FrontDoor` sees them).
    https: Option<Arc<https::HttpsPolicy>>,
    /// `admin_host` and the apps' sandbox CSP (shared with the tunnel).
    isolation: Arc<Isolation>,
    /// `trusted_proxies` (shared with the tunnel; a reload swaps the list).
    trusted: Arc<TrustedProxies>,
}

impl FrontDoor {
    pub fn new(control_socket: &std::path::Path, routes: Routes, limits: Limits) -> Result<Self> {
        let peer = HttpPeer::new_uds(&control_socket.to_string_lossy(), false, String::new())?;
        Ok(FrontDoor {
            control_plane: Box::new(peer),
            routes,
            limits,
            https: None,
            isolation: Arc::new(Isolation::default()),
            trusted: Arc::new(TrustedProxies::default()),
        })
    }

    /// Believe `X-Forwarded-*` from these peers (default: from no one).
    pub fn with_trusted_proxies(mut self, trusted: Arc<TrustedProxies>) -> Self {
        self.trusted = trusted;
        self
    }

    /// Set `admin_host` and the apps' sandbox CSP (default: no admin host, CSP on).
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Arc::new(isolation);
        self
    }

    /// Turn on the TLS behaviour (see `https.rs`).
    pub fn with_https(mut self, policy: https::HttpsPolicy) -> Self {
        self.https = Some(Arc::new(policy));
        self
    }
}

/// The public service: `FrontDoor` inside pingora's HTTP proxy, behind the data plane's
/// connection handler. Add listeners with [`listener`].
pub fn service(
    conf: &Arc<ServerConf>,
    front: FrontDoor,
    routes: Routes,
    limits: Limits,
) -> std::io::Result<Service<DataPlane>> {
    let https = front.https.clone();
    let isolation = front.isolation.clone();
    let trusted = front.trusted.clone();
    let http = pingora::proxy::http_proxy(conf, front);
    let plane = DataPlane::new(http, routes, limits, https, isolation, conf.threads)?
        .with_trusted_proxies(trusted);
    Ok(Service::new("rserve-proxy front door".to_string(), plane))
}

/// A listener for the front door. No L4 read buffer: pingora's HTTP parser and the
/// tunnel read into buffers of their own, and the default 64 KiB one would stay
/// allocated for the whole life of every WebSocket. (Use the same setting for TLS
/// listeners.)
pub fn listener(addr: &str) -> ListenerConfig {
    ListenerConfig::tcp(addr).l4_buffer(L4BufferSettings::new(0, DEFAULT_L4_WRITE_BUFFER_SIZE))
}

/// A TLS listener for the front door. pingora sees a plain TCP listener; the data plane
/// does the handshake itself once the connection is admitted, so connection caps
/// apply before any handshake work and the handshake has our timeout
/// (`tls_handshake_timeout_secs`; pingora's is a fixed 60 s) and our logging (a client
/// leaving half-way is not an error).
pub fn add_tls_listener(
    service: &mut Service<DataPlane>,
    addr: std::net::SocketAddr,
    settings: pingora::listeners::tls::TlsSettings,
) {
    if let Some(plane) = service.app_logic_mut() {
        plane.add_tls(addr, settings.build());
    }
    service.add_listener(listener(&addr.to_string()));
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ControlPlane,
    /// Answered by the proxy itself (e.g. unknown slug).
    Local,
    /// One of an app's replicas (`Ctx::app`).
    App,
}

pub struct Ctx {
    pub request_id: String,
    pub started: Instant,
    pub target: Target,
    /// The app the request is for (also when the proxy answers for it: 503, 413).
    pub app: Option<Arc<AppRoute>>,
    /// Replicas tried so far (connect failures move on to the next).
    tried: Vec<SocketAddr>,
    /// Counts this request on its replica while it lasts.
    active: Option<ActiveGuard>,
    body_bytes: u64,
    /// The request came over TLS.
    pub tls: bool,
    /// `Strict-Transport-Security` for this response, if any.
    pub hsts: Option<http::HeaderValue>,
    /// The path and query sent upstream when not the client's: for an app, normalised
    /// and without the slug; for the control plane, normalised (only when that changed
    /// it). See `app_path.rs`.
    pub forward: Option<String>,
}

fn client_ip(session: &Session) -> Option<std::net::IpAddr> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// The host a request is for: the absolute URI's, else the `Host` header.
fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri.host().or_else(|| {
        req.headers
            .get(http::header::HOST)
            .and_then(|v| v.to_str().ok())
    })
}

fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// The body of an answer from the proxy itself: JSON for API clients, a small page for
/// browsers. Returns (body, content type).
pub(crate) fn error_body(status: u16, message: &str, html: bool) -> (String, &'static str) {
    if html {
        let escaped = message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        (
            format!("<!doctype html><meta charset=utf-8><title>{status}</title><h1>{status}</h1><p>{escaped}</p>\n"),
            "text/html; charset=utf-8",
        )
    } else {
        (
            serde_json::json!({ "error": message }).to_string(),
            "application/json",
        )
    }
}

/// Answer from the proxy itself, as JSON for API clients or a small page for browsers.
async fn respond(session: &mut Session, ctx: &Ctx, status: u16, message: &str) -> Result<()> {
    respond_with(session, ctx, status, message, None).await
}

/// `respond` with an optional `Retry-After` (seconds).
async fn respond_with(
    session: &mut Session,
    ctx: &Ctx,
    status: u16,
    message: &str,
    retry_after: Option<u32>,
) -> Result<()> {
    let (body, content_type) = error_body(status, message, wants_html(session.req_header()));
    let retry = retry_after.map(|secs| (http::header::RETRY_AFTER, secs.to_string()));
    let request_id = ctx.request_id.as_str();
    write_answer(
        session,
        status,
        content_type,
        body,
        request_id,
        retry,
        ctx.hsts.as_ref(),
    )
    .await
}

/// Write a small answer of the proxy's own (no upstream): the body with its type and
/// length, `X-Request-Id`, one optional extra header and HSTS when given.
pub(crate) async fn write_answer(
    session: &mut Session,
    status: u16,
    content_type: &str,
    body: String,
    request_id: &str,
    extra: Option<(http::HeaderName, String)>,
    hsts: Option<&http::HeaderValue>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header("x-request-id", request_id)?;
    if let Some((name, value)) = extra {
        resp.insert_header(name, value)?;
    }
    if let Some(h) = hsts {
        resp.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h)?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await?;
    Ok(())
}

#[async_trait]
impl ProxyHttp for FrontDoor {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx {
            request_id: String::new(),
            started: Instant::now(),
            target: Target::Local,
            app: None,
            tried: Vec::new(),
            active: None,
            body_bytes: 0,
            tls: false,
            hsts: None,
            forward: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = request_id::accept_or_generate(
            req.headers
                .get("x-request-id")
                .and_then(|v| v.to_str().ok()),
        );
        ctx.tls = https::is_tls(session);
        let req = session.req_header();
        let hosts = req.headers.get_all(http::header::HOST).iter().count();
        if !isolation::host_header_ok(req.version == http::Version::HTTP_11, hosts) {
            let message = "An HTTP/1.1 request needs exactly one Host header (RFC 9112 §3.2)";
            respond(session, ctx, 400, message).await?;
            return Ok(true);
        }
        if let Some(policy) = &self.https {
            ctx.hsts = policy.hsts(ctx.tls);
            if policy.intercept(session, ctx.tls, &ctx.request_id).await? {
                return Ok(true);
            }
        }
        // Route on the normalised path (`/app/../api` is a request for `/api`).
        let req = session.req_header();
        let raw = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let normalized = app_path::normalize(raw);
        let segment = paths::first_segment(&normalized).to_string();
        let admin = paths::is_admin_segment(&segment);
        if !self
            .isolation
            .host_allows(request_host(req), admin, &normalized)
        {
            // As if unknown: the other plane is served under another name.
            let message = format!("No app is served at /{segment}; check the address");
            respond(session, ctx, 404, &message).await?;
            return Ok(true);
        }
        if admin {
            ctx.target = Target::ControlPlane;
            if let Cow::Owned(n) = normalized {
                ctx.forward = Some(n);
            }
            return Ok(false);
        }
        ctx.target = Target::Local;
        match app_path::forward(&normalized, &segment) {
            Ok(f) => ctx.forward = Some(f),
            Err(e) => {
                respond(session, ctx, 400, &e.to_string()).await?;
                return Ok(true);
            }
        }
        let (status, message, retry_after) = match self.routes.load().lookup(&segment) {
            Lookup::Serve(app) => {
                ctx.app = Some(app.clone());
                ctx.target = Target::App;
                (200, String::new(), None)
            }
            Lookup::Unavailable {
                app,
                retry_after_secs,
                message,
            } => {
                ctx.app = Some(app.clone());
                (503, message, Some(retry_after_secs))
            }
            Lookup::Unknown => (
                404,
                format!("No app is served at /{segment}; check the address"),
                None,
            ),
        };
        if ctx.target == Target::App {
            return app_request_filter(self, session, ctx).await;
        }
        respond_with(session, ctx, status, &message, retry_after).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        match ctx.target {
            Target::ControlPlane => Ok(self.control_plane.clone()),
            Target::App => app_peer(self, ctx),
            Target::Local => Err(Error::explain(
                ErrorType::InternalError,
                "no upstream for a local answer",
            )),
        }
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.target == Target::ControlPlane {
            // The control socket is briefly missing while a new process takes it over
            // (binary upgrade): try again (pingora bounds the retries).
            e.set_retry(true);
            return e;
        }
        app_connect_failed(ctx, e)
    }

    /// A client going away (closing a log stream, a browser tab) is normal, not an
    /// error worth an ERROR line; the access log still records the request.
    /// An app failing (a replica timing out, resetting) is something any client can
    /// repeat at will by flooding a slow app, so it is not one ERROR line per request
    /// either: one WARN line per window with the count left out (issue #8 re-test:
    /// 1,000 aborted uploads to a slow app wrote 41 pingora ERROR lines). The access
    /// log keeps every request.
    fn suppress_error_log(&self, session: &Session, ctx: &Ctx, e: &Error) -> bool {
        let client_left = matches!(e.esource(), pingora::ErrorSource::Downstream)
            && matches!(
                e.etype(),
                ErrorType::ConnectionClosed | ErrorType::ReadError | ErrorType::WriteError
            );
        if client_left {
            return true;
        }
        if matches!(e.esource(), pingora::ErrorSource::Upstream) {
            static APP_FAILED: Throttle = Throttle::new(Duration::from_secs(10));
            if let Some(repeated) = APP_FAILED.check() {
                tracing::warn!(
                    error = %e,
                    request = %self.request_summary(session, ctx),
                    "request to an app failed{repeated}"
                );
            }
            return true;
        }
        false
    }

    async fn fail_to_proxy(&self, session: &mut Session, e: &Error, ctx: &mut Ctx) -> FailToProxy {
        if ctx.target == Target::App {
            return app_fail_to_proxy(session, e, ctx).await;
        }
        default_fail_to_proxy(session, e).await
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        app_body_in(self, body, ctx)
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(app), Some(b)) = (&ctx.app, body.as_ref()) {
            app.counters.bytes_out(b.len());
        }
        Ok(None)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(app) = &ctx.app {
            app.counters.http_latency(ctx.started.elapsed());
            app_response(self, upstream_response)?;
        }
        Ok(())
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        for h in HOP_BY_HOP {
            upstream.remove_header(*h);
        }
        match ctx.target {
            Target::App => app_upstream_request(upstream, ctx)?,
            Target::ControlPlane => {
                if let Some(target) = &ctx.forward {
                    let uri = target.parse::<http::Uri>().map_err(|e| {
                        Error::because(ErrorType::InvalidHTTPHeader, "normalised path", e)
                    })?;
                    upstream.set_uri(uri);
                }
            }
            Target::Local => {}
        }
        // Overwrite, never append: the control plane trusts these because only we can
        // reach its socket. What a trusted proxy in front said counts (forwarded.rs).
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        let headers = &session.req_header().headers;
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let claims = forwarded::Claims {
            forwarded_for: headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect(),
            forwarded_proto: text("x-forwarded-proto"),
            forwarded_host: text("x-forwarded-host"),
        };
        let seen = self.trusted.resolve(client_ip(session), ctx.tls, &claims);
        match seen.client {
            Some(ip) => upstream.insert_header("x-forwarded-for", ip.to_string())?,
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        upstream.insert_header(
            "x-forwarded-proto",
            if seen.https { "https" } else { "http" },
        )?;
        let host = match seen.host {
            Some(h) => http::HeaderValue::from_str(h).ok(),
            None => headers.get(http::header::HOST).cloned(),
        };
        match host {
            Some(h) => upstream.insert_header("x-forwarded-host", h)?,
            None => {
                upstream.remove_header("x-forwarded-host");
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream_response: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        upstream_response.insert_header("x-request-id", ctx.request_id.as_str())?;
        if let Some(h) = &ctx.hsts {
            upstream_response.insert_header(http::header::STRICT_TRANSPORT_SECURITY, h)?;
        }
        Ok(())
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        if let Some(app) = &ctx.app {
            app.counters.response(status);
        }
        ctx.active = None;
        let req = session.req_header();
        // The path only: query strings and headers may carry credentials.
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            status,
            client = %client_ip(session).map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            elapsed_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
