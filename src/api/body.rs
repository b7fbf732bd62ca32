//! Every request body is read to its end before the control plane answers.
//!
//! A response sent while part of the body is still unread (a 405, a 401 before the
//! JSON extractor, a handler that takes no body) makes hyper close the connection,
//! and the proxy in front, which keeps its connections to the control plane open for
//! reuse, could send the next request into the closed socket: a 502 for a request
//! that had done nothing wrong (found by schemathesis). So bodies are read first,
//! bounded by the JSON limit; an upload, which streams up to its own larger limit, is
//! the one exception, and any refusal of one says `Connection: close`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::error::ApiError;
use super::extract::{body_too_large, JSON_BODY_LIMIT};

fn has_body(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(header::TRANSFER_ENCODING)
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Uploads stream to their own limit: any `POST …/upload` (the API's, and a UI form's
/// should one use the same last segment).
fn is_upload(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path().ends_with("/upload")
}

fn closing(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

pub async fn read_first(req: Request, next: Next) -> Response {
    if !has_body(&req) {
        return next.run(req).await;
    }
    if is_upload(&req) {
        let resp = next.run(req).await;
        return if resp.status().is_success() {
            resp
        } else {
            closing(resp)
        };
    }
    let (parts, body) = req.into_parts();
    match Limited::new(body, JSON_BODY_LIMIT).collect().await {
        Ok(collected) => {
            let req = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(req).await
        }
        Err(e) if e.is::<LengthLimitError>() => closing(body_too_large().into_response()),
        Err(_) => closing(
            ApiError::bad_request("The request body could not be read to its end").into_response(),
        ),
    }
}
