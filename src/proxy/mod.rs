//! The front door (pingora): every request arrives here. Admin-plane paths go to the
//! control plane's unix socket; any other first path segment is an app slug, served by
//! the data plane (a later milestone) — for now an unknown slug gets a clear 404.
//!
//! The request path reads only its per-request `Ctx` and an immutable route snapshot:
//! no locks, no store.

pub mod https;
pub mod request_id;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{ProxyHttp, Session};

use crate::paths;
use routes::RouteTable;

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
    routes: Arc<ArcSwap<RouteTable>>,
    /// Set when TLS is on: challenges, redirect to HTTPS, HSTS.
    https: Option<https::HttpsPolicy>,
}

impl FrontDoor {
    pub fn new(control_socket: &std::path::Path, routes: Arc<ArcSwap<RouteTable>>) -> Result<Self> {
        let peer = HttpPeer::new_uds(&control_socket.to_string_lossy(), false, String::new())?;
        Ok(FrontDoor {
            control_plane: Box::new(peer),
            routes,
            https: None,
        })
    }

    /// Turn on the TLS behaviour (see `https.rs`).
    pub fn with_https(mut self, policy: https::HttpsPolicy) -> Self {
        self.https = Some(policy);
        self
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    ControlPlane,
    /// Answered by the proxy itself (e.g. unknown slug).
    Local,
}

pub struct Ctx {
    pub request_id: String,
    pub started: Instant,
    pub target: Target,
    /// The request came over TLS.
    pub tls: bool,
    /// `Strict-Transport-Security` for this response, if any.
    pub hsts: Option<http::HeaderValue>,
}

fn client_ip(session: &Session) -> Option<String> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip().to_string())
}

fn wants_html(req: &RequestHeader) -> bool {
    req.headers
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/html"))
}

/// Answer from the proxy itself, as JSON for API clients or a small page for browsers.
async fn respond(session: &mut Session, ctx: &Ctx, status: u16, message: &str) -> Result<()> {
    let (body, content_type) = if wants_html(session.req_header()) {
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
    };
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header(http::header::CONTENT_TYPE, content_type)?;
    resp.insert_header(http::header::CONTENT_LENGTH, body.len().to_string())?;
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    if let Some(h) = &ctx.hsts {
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
            tls: false,
            hsts: None,
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
        if let Some(policy) = &self.https {
            ctx.hsts = policy.hsts(ctx.tls);
            if policy.intercept(session, ctx.tls, &ctx.request_id).await? {
                return Ok(true);
            }
        }
        let req = session.req_header();
        let segment = paths::first_segment(req.uri.path());
        if paths::is_admin_segment(segment) {
            ctx.target = Target::ControlPlane;
            return Ok(false);
        }
        let routes = self.routes.load();
        let message = match routes.get(segment) {
            None => format!("No app is served at /{segment}; check the address"),
            Some(_) => format!("App \"{segment}\" is not running"),
        };
        ctx.target = Target::Local;
        respond(session, ctx, 404, &message).await?;
        Ok(true)
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        match ctx.target {
            Target::ControlPlane => Ok(self.control_plane.clone()),
            Target::Local => Err(Error::explain(
                ErrorType::InternalError,
                "no upstream for a local answer",
            )),
        }
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
        // Overwrite, never append: the control plane trusts these because only we can
        // reach its socket.
        upstream.insert_header("x-request-id", ctx.request_id.as_str())?;
        match client_ip(session) {
            Some(ip) => upstream.insert_header("x-forwarded-for", ip)?,
            None => {
                upstream.remove_header("x-forwarded-for");
            }
        }
        upstream.insert_header("x-forwarded-proto", if ctx.tls { "https" } else { "http" })?;
        let host = session
            .req_header()
            .headers
            .get(http::header::HOST)
            .cloned();
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
        let req = session.req_header();
        // The path only: query strings and headers may carry credentials.
        tracing::info!(
            target: "access",
            request_id = %ctx.request_id,
            method = %req.method,
            path = %req.uri.path(),
            status,
            client = client_ip(session).as_deref().unwrap_or("-"),
            elapsed_ms = ctx.started.elapsed().as_secs_f64() * 1000.0,
            error = e.map(|e| e.to_string()),
            "request"
        );
    }
}
