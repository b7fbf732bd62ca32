//! The one file of a multipart upload, streamed to a temp file as it arrives: memory
//! stays flat whatever the upload's size (ten concurrent 49 MB uploads used to peak at
//! 1.18 GB), and the size limit is enforced while streaming. Shared by the API's
//! upload route and the UI's upload form.

use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::http::StatusCode;
use tokio::io::AsyncWriteExt;

use crate::service::apps::UploadData;
use crate::service::{AppState, ServiceError};

fn too_large(state: &AppState) -> ServiceError {
    ServiceError::PayloadTooLarge(format!(
        "The file is larger than the {} MB upload limit",
        state.limits.upload_max_bytes() / (1024 * 1024)
    ))
}

fn multipart_error(state: &AppState, e: MultipartError) -> ServiceError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large(state)
    } else {
        ServiceError::bad_request(format!("Malformed multipart body: {}", e.body_text()))
    }
}

fn io_error(e: std::io::Error) -> ServiceError {
    ServiceError::Internal(format!("could not store the upload: {e}"))
}

/// The single file part (the field name is free; plain fields and a file input left
/// empty are ignored): its client-side name and its bytes in a temp file under the
/// uploads dir (removed when the returned value is dropped). `None`: no file was sent.
pub async fn single_file(
    state: &AppState,
    mut multipart: Multipart,
) -> Result<Option<(String, UploadData)>, ServiceError> {
    let mut file = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(multipart_error(state, e)),
        };
        let Some(name) = field.file_name().map(str::to_string) else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        if file.is_some() {
            return Err(ServiceError::bad_request(
                "Send exactly one file per upload",
            ));
        }
        let spooled = spool(state, field).await?;
        file = Some((name, UploadData::File(spooled)));
    }
    Ok(file)
}

async fn spool(
    state: &AppState,
    mut field: Field<'_>,
) -> Result<tempfile::NamedTempFile, ServiceError> {
    let dir = state.config.uploads_dir();
    tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
    // Beside the installed uploads (same filesystem); the dot keeps it out of the way
    // and tempfile removes it on every early return.
    let temp = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&dir)
        .map_err(io_error)?;
    let mut out = tokio::fs::File::from_std(temp.reopen().map_err(io_error)?);
    let max = state.limits.upload_max_bytes();
    let mut written = 0u64;
    while let Some(chunk) = field.chunk().await.map_err(|e| multipart_error(state, e))? {
        written += chunk.len() as u64;
        if written > max {
            linger(&mut field).await;
            return Err(too_large(state));
        }
        out.write_all(&chunk).await.map_err(io_error)?;
    }
    out.flush().await.map_err(io_error)?;
    Ok(temp)
}

/// After the limit is passed, read on (discarding) for a bounded time and amount, so a
/// client still sending gets to read the 413 instead of a connection reset (nginx's
/// "lingering close", bounded).
async fn linger(field: &mut Field<'_>) {
    const MAX_BYTES: u64 = 64 * 1024 * 1024;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut read = 0u64;
    while read < MAX_BYTES {
        match tokio::time::timeout_at(deadline, field.chunk()).await {
            Ok(Ok(Some(chunk))) => read += chunk.len() as u64,
            _ => return,
        }
    }
}
