//! The CLI's side of the admin socket: one HTTP/1.1 request over the unix socket.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::Response;
use hyper_util::rt::TokioIo;

/// Why a request failed.
#[derive(Debug)]
pub enum ClientError {
    /// No server listens on the socket (missing file, refused connection).
    Unreachable(String),
    /// The server answered with an error; its message.
    Server(String),
    Other(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(m) | ClientError::Server(m) | ClientError::Other(m) => {
                f.write_str(m)
            }
        }
    }
}

/// Sends `method path` with an optional JSON body; a non-2xx answer becomes
/// `ClientError::Server` with the server's `error` message.
pub async fn request(
    socket: &Path,
    method: http::Method,
    path: &str,
    json: Option<serde_json::Value>,
) -> Result<Response<Incoming>, ClientError> {
    let stream = tokio::net::UnixStream::connect(socket).await.map_err(|e| {
        ClientError::Unreachable(format!(
            "cannot reach the server's admin socket {}: {e}",
            socket.display()
        ))
    })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Other(format!("admin socket: {e}")))?;
    tokio::spawn(conn);
    let body = match &json {
        Some(v) => Full::new(Bytes::from(v.to_string())),
        None => Full::new(Bytes::new()),
    };
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::HOST, "admin.sock")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .map_err(|e| ClientError::Other(e.to_string()))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| ClientError::Other(format!("admin socket: {e}")))?;
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let bytes = body_bytes(resp).await.unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("the server answered {status}"));
    Err(ClientError::Server(message))
}

pub async fn body_bytes(resp: Response<Incoming>) -> Result<Bytes, ClientError> {
    resp.into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| ClientError::Other(format!("admin socket: {e}")))
}

/// A JSON answer.
pub async fn json<T: serde::de::DeserializeOwned>(
    socket: &Path,
    method: http::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<T, ClientError> {
    let resp = request(socket, method, path, body).await?;
    let bytes = body_bytes(resp).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Other(format!("admin socket: unexpected answer: {e}")))
}

/// Streams the answer's body into `out`; returns the bytes written.
pub async fn download(
    resp: Response<Incoming>,
    out: &mut tokio::fs::File,
) -> Result<u64, ClientError> {
    use tokio::io::AsyncWriteExt;
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ClientError::Other(format!("backup interrupted: {e}")))?;
        if let Ok(data) = frame.into_data() {
            out.write_all(&data)
                .await
                .map_err(|e| ClientError::Other(format!("cannot write the backup: {e}")))?;
            n += data.len() as u64;
        }
    }
    out.flush()
        .await
        .map_err(|e| ClientError::Other(format!("cannot write the backup: {e}")))?;
    Ok(n)
}
