//! Plain HTTP to apps, through pingora: the `FrontDoor` hooks' app-specific parts.
//! (WebSocket upgrades to apps never get here: [`super::tunnel`] handles them.)

use std::borrow::Cow;

use bytes::Bytes;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, Session};

use super::balance::{self, ActiveGuard};
use super::isolation::{app_cookie, is_our_authorization, is_our_set_cookie};
use super::limits::CONNECT_TIMEOUT;
use super::{respond, Ctx, FrontDoor};

/// An app request passed routing: refuse a declared body over the limit now, before
/// any replica is bothered. Returns whether the request has been answered.
pub(super) async fn app_request_filter(
    front: &FrontDoor,
    session: &mut Session,
    ctx: &mut Ctx,
) -> Result<bool> {
    let declared = session
        .req_header()
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > front.limits.max_body_bytes) {
        let msg = format!(
            "Request body larger than {} bytes",
            front.limits.max_body_bytes
        );
        // The body was not read: the connection cannot be reused.
        session.set_keepalive(None);
        respond(session, ctx, 413, &msg).await?;
        return Ok(true);
    }
    Ok(false)
}

/// The next replica for this request: least active, healthy, not tried yet.
pub(super) fn app_peer(front: &FrontDoor, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
    let Some(app) = ctx.app.clone() else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no app in context",
        ));
    };
    let Some(replica) = balance::pick(&app, &ctx.tried) else {
        return Err(Error::explain(
            ErrorType::HTTPStatus(502),
            "no replica of the app accepts connections",
        ));
    };
    ctx.tried.push(replica.addr);
    // Replaces (and so releases) the guard of a replica that refused.
    ctx.active = Some(ActiveGuard::new(&replica.load));
    let mut peer = HttpPeer::new(replica.addr, false, String::new());
    peer.options.connection_timeout = Some(CONNECT_TIMEOUT);
    peer.options.read_timeout = Some(front.limits.idle_timeout);
    peer.options.write_timeout = Some(front.limits.idle_timeout);
    Ok(Box::new(peer))
}

/// A replica refused: count it, let it cool down, and retry on another replica if one
/// is left (pingora has sent nothing yet, so any method may be retried).
pub(super) fn app_connect_failed(ctx: &mut Ctx, mut e: Box<Error>) -> Box<Error> {
    let Some(app) = &ctx.app else {
        return e;
    };
    app.counters.connect_error();
    if let Some(addr) = ctx.tried.last() {
        if let Some(r) = app.replicas.iter().find(|r| r.addr == *addr) {
            balance::connect_failed(&r.load);
        }
        balance::log_refused(&app.slug, *addr, &e);
    }
    let more = app
        .replicas
        .iter()
        .any(|r| r.healthy && !ctx.tried.contains(&r.addr));
    e.set_retry(more);
    e
}

/// Path normalised and without the slug (`Ctx::forward`, made by `request_filter`);
/// our credentials removed; hop-by-hop headers named in `Connection` dropped; no
/// upgrade (an upgrade that reaches pingora is served as plain HTTP, never tunnelled).
pub(super) fn app_upstream_request(upstream: &mut RequestHeader, ctx: &Ctx) -> Result<()> {
    let Some(forward) = ctx.forward.as_deref() else {
        return Err(Error::explain(
            ErrorType::InternalError,
            "no forwarded path in context",
        ));
    };
    let uri = forward
        .parse::<http::Uri>()
        .map_err(|e| Error::because(ErrorType::InvalidHTTPHeader, "rewritten path", e))?;
    upstream.set_uri(uri);
    strip_credentials(upstream)?;
    for token in connection_tokens(&upstream.headers) {
        if !PROTECTED.contains(&token.as_str()) {
            upstream.remove_header(&token);
        }
    }
    upstream.remove_header("upgrade");
    upstream.remove_header("connection");
    Ok(())
}

/// Our session cookie out of `Cookie` (the app's own cookies stay), our bearer tokens
/// out of `Authorization` (see `isolation.rs`). Headers are rebuilt only when they
/// carried something of ours.
fn strip_credentials(upstream: &mut RequestHeader) -> Result<()> {
    let cookies = &upstream.headers.get_all(http::header::COOKIE);
    if cookies
        .iter()
        .any(|v| matches!(app_cookie(v.as_bytes()), None | Some(Cow::Owned(_))))
    {
        let kept: Vec<Vec<u8>> = cookies
            .iter()
            .filter_map(|v| app_cookie(v.as_bytes()).map(Cow::into_owned))
            .collect();
        upstream.remove_header(&http::header::COOKIE);
        for v in kept {
            upstream.append_header(http::header::COOKIE, v.as_slice())?;
        }
    }
    let auth = &upstream.headers.get_all(http::header::AUTHORIZATION);
    if auth.iter().any(|v| is_our_authorization(v.as_bytes())) {
        let kept: Vec<http::HeaderValue> = auth
            .iter()
            .filter(|v| !is_our_authorization(v.as_bytes()))
            .cloned()
            .collect();
        upstream.remove_header(&http::header::AUTHORIZATION);
        for v in kept {
            upstream.append_header(http::header::AUTHORIZATION, v)?;
        }
    }
    Ok(())
}

/// An app's response: no `Set-Cookie` for our session cookie, the sandbox CSP added
/// (config `app_csp_sandbox`), hop-by-hop headers dropped.
pub(super) fn app_response(front: &FrontDoor, resp: &mut ResponseHeader) -> Result<()> {
    strip_response_hop_by_hop(resp);
    let set = &resp.headers.get_all(http::header::SET_COOKIE);
    if set.iter().any(|v| is_our_set_cookie(v.as_bytes())) {
        let kept: Vec<http::HeaderValue> = set
            .iter()
            .filter(|v| !is_our_set_cookie(v.as_bytes()))
            .cloned()
            .collect();
        resp.remove_header(&http::header::SET_COOKIE);
        for v in kept {
            resp.append_header(http::header::SET_COOKIE, v)?;
        }
    }
    if let Some(csp) = front.isolation.csp() {
        // Next to the app's own policy, never instead of it: both are enforced.
        resp.append_header(http::header::CONTENT_SECURITY_POLICY, csp)?;
    }
    Ok(())
}

/// Never removed because `Connection` names them: they frame or address the message.
const PROTECTED: &[&str] = &["host", "content-length", "transfer-encoding"];

fn connection_tokens(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "close" && t != "keep-alive" && t != "upgrade")
        .collect()
}

/// Response headers about the replica's connection, not the response.
fn strip_response_hop_by_hop(resp: &mut ResponseHeader) {
    for token in connection_tokens(&resp.headers) {
        if !PROTECTED.contains(&token.as_str()) {
            resp.remove_header(&token);
        }
    }
    for h in [
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authenticate",
    ] {
        resp.remove_header(h);
    }
}

/// Count request body bytes and stop bodies over the limit (413).
pub(super) fn app_body_in(front: &FrontDoor, body: &Option<Bytes>, ctx: &mut Ctx) -> Result<()> {
    let (Some(app), Some(b)) = (&ctx.app, body.as_ref()) else {
        return Ok(());
    };
    app.counters.bytes_in(b.len());
    ctx.body_bytes += b.len() as u64;
    if ctx.body_bytes > front.limits.max_body_bytes {
        return Err(Error::explain(
            ErrorType::HTTPStatus(413),
            "request body over the limit",
        ));
    }
    Ok(())
}

fn error_status(e: &Error) -> u16 {
    match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        ErrorType::ConnectTimedout
        | ErrorType::ConnectRefused
        | ErrorType::ConnectNoRoute
        | ErrorType::ConnectError
        | ErrorType::ConnectionClosed
            if e.esource() == &ErrorSource::Upstream =>
        {
            502
        }
        ErrorType::ReadTimedout | ErrorType::WriteTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    }
}

/// An app request failed: answer in our format (JSON or HTML), unless the response has
/// started already.
pub(super) async fn app_fail_to_proxy(session: &mut Session, e: &Error, ctx: &Ctx) -> FailToProxy {
    let code = error_status(e);
    let slug = ctx.app.as_ref().map_or("", |a| a.slug.as_str());
    if code > 0 && session.response_written().is_none() {
        let message = match code {
            413 => "Request body too large".to_string(),
            502 => format!("App \"{slug}\" cannot be reached right now"),
            504 => format!("App \"{slug}\" did not answer in time"),
            _ => format!("The request to app \"{slug}\" failed"),
        };
        if code == 413 {
            session.set_keepalive(None);
        }
        if let Err(err) = respond(session, ctx, code, &message).await {
            tracing::debug!(error = %err, "could not send the error response");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}

/// pingora's default `fail_to_proxy`, for the other targets.
pub(super) async fn default_fail_to_proxy(session: &mut Session, e: &Error) -> FailToProxy {
    let code = match e.etype() {
        ErrorType::HTTPStatus(code) => *code,
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => 500,
        },
    };
    if code > 0 {
        if let Err(err) = session.respond_error(code).await {
            // The client went away: not an error of ours.
            tracing::debug!(error = %err, "failed to send error response to downstream");
        }
    }
    FailToProxy {
        error_code: code,
        can_reuse_downstream: false,
    }
}
