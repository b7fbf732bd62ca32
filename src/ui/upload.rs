//! Upload page: the app's current files (what the next build uses), the upload form
//! (drag-and-drop or file picker; app.js shows the progress of htmx's request), and
//! the entry-script choice among the uploaded `.R` files. The post calls the same
//! `service::apps::upload` as `POST /api/apps/{id}/upload`.

use askama::Template;
use axum::extract::multipart::{Multipart, MultipartRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Router};
use serde::Deserialize;
use uuid::Uuid;

use super::apps::{app_error, app_id, load, see_other};
use super::page::Nav;
use super::{Page, UiResult, UiUser};
use crate::api::extract::Meta;
use crate::model::CodeSource;
use crate::service::app_code::{self, CodeFiles};
use crate::service::{apps, AppState, ServiceError};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/apps/{id}/upload",
            // The body is bounded by the upload limit while it is read (`read_file`),
            // not by axum's 2 MB default.
            get(page).post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/apps/{id}/entry", post(entry))
}

/// One line of the file tree: a directory heading or a file with its size.
pub struct TreeLine {
    /// Nesting depth (0 = top level), for the indentation class.
    pub depth: usize,
    pub name: String,
    pub is_dir: bool,
    pub size: String,
    /// The file is the entry script now.
    pub entry: bool,
}

/// `a/b/c.R` listed after `a/x.R` → the `a/` and `a/b/` headings appear once each.
pub fn tree_lines(files: &CodeFiles) -> Vec<TreeLine> {
    let mut out = Vec::new();
    let mut open: Vec<&str> = Vec::new();
    for f in &files.files {
        let parts: Vec<&str> = f.path.split('/').collect();
        let (dirs, name) = parts.split_at(parts.len() - 1);
        let common = open.iter().zip(dirs).take_while(|(a, b)| a == b).count();
        open.truncate(common);
        for (depth, d) in dirs.iter().enumerate().skip(common) {
            out.push(TreeLine {
                depth,
                name: format!("{d}/"),
                is_dir: true,
                size: String::new(),
                entry: false,
            });
            open.push(d);
        }
        out.push(TreeLine {
            depth: dirs.len(),
            name: name[0].to_string(),
            is_dir: false,
            size: human_size(f.size),
            entry: entry_path(files, &f.path),
        });
    }
    out
}

/// Is `path` the file the entry script names (at the top, or in the lone folder)?
fn entry_path(files: &CodeFiles, path: &str) -> bool {
    if !files.entry_present() {
        return false;
    }
    let at_top = files.files.iter().any(|f| f.path == files.entry_script);
    if at_top {
        path == files.entry_script
    } else {
        path.split_once('/')
            .is_some_and(|(_, rest)| rest == files.entry_script)
    }
}

pub fn human_size(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f < K {
        format!("{n} B")
    } else if f < K * K {
        format!("{:.1} KB", f / K)
    } else {
        format!("{:.1} MB", f / (K * K))
    }
}

#[derive(Template)]
#[template(path = "pages/app_upload.html")]
struct UploadPage<'a> {
    id: String,
    name: String,
    git: bool,
    files: &'a CodeFiles,
    tree: Vec<TreeLine>,
    uploaded: String,
    total: String,
    max_mb: u64,
    /// The radio to preselect: the entry script when it is present, else the only
    /// candidate.
    selected: String,
    entry_error: String,
    csrf: &'a str,
}

#[derive(Deserialize, Default)]
struct UploadQuery {
    #[serde(default)]
    flash: Option<String>,
}

async fn render(
    state: &AppState,
    user: &UiUser,
    id: Uuid,
    page: impl FnOnce(Page) -> Page,
    entry_error: String,
) -> UiResult {
    let view = load(state, user, id).await?;
    let files = app_code::files(state, &user.who, id)
        .await
        .map_err(|e| app_error(user, e))?;
    let selected = if files.entry_present() {
        files.entry_script.clone()
    } else if let [only] = files.entry_candidates.as_slice() {
        only.clone()
    } else {
        String::new()
    };
    let page = page(user.page(format!("Upload code: {}", view.app.name), Nav::Apps));
    Ok(page.render(&UploadPage {
        id: id.to_string(),
        name: view.app.name.clone(),
        git: matches!(view.app.code_source, CodeSource::Git { .. }),
        tree: tree_lines(&files),
        uploaded: files.uploaded_at.map(super::apps::when).unwrap_or_default(),
        total: human_size(files.total_bytes),
        max_mb: state.limits.upload_max_bytes() / (1024 * 1024),
        files: &files,
        selected,
        entry_error,
        csrf: &user.csrf,
    }))
}

async fn page(
    user: UiUser,
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<UploadQuery>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    let created = q.flash.as_deref() == Some("created");
    render(
        &state,
        &user,
        id,
        |p| {
            if created {
                p.flash("success", "App created. Upload its code next.")
            } else {
                p
            }
        },
        String::new(),
    )
    .await
}

/// The one file of the form, streamed to a temp file up to the upload limit (the same
/// spooling as the API's upload).
async fn read_file(
    state: &AppState,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(String, apps::UploadData), ServiceError> {
    let multipart = multipart.map_err(|_| {
        ServiceError::bad_request("Expected a form with one file (multipart/form-data)")
    })?;
    crate::api::spool::single_file(state, multipart)
        .await?
        .ok_or_else(|| ServiceError::bad_request("Choose a file to upload first"))
}

async fn upload(
    user: UiUser,
    State(state): State<AppState>,
    Meta(meta): Meta,
    Path(id): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    load(&state, &user, id).await?;
    let result = match read_file(&state, multipart).await {
        Ok((filename, data)) => apps::upload(&state, &user.who, id, filename, data, &meta).await,
        Err(e) => Err(e),
    };
    let mut resp = match result {
        Ok(out) => {
            let message = match &out.entry_script {
                Some(e) => format!(
                    "Uploaded {}: {} file(s). Its only R script, {e}, is the entry script.",
                    out.filename,
                    out.files.len()
                ),
                None => format!(
                    "Uploaded {}: {} file(s). Choose the entry script below.",
                    out.filename,
                    out.files.len()
                ),
            };
            render(
                &state,
                &user,
                id,
                |p| p.flash("success", message),
                String::new(),
            )
            .await?
        }
        Err(ServiceError::Forbidden(_) | ServiceError::NotFound(_)) => {
            return Err(user.error(super::UiError::not_found()))
        }
        Err(e) => {
            let status = super::UiError::from(clone_message(&e)).status;
            let message = format!("The upload was refused: {e}");
            render(
                &state,
                &user,
                id,
                |p| p.flash("error", message).status(status),
                String::new(),
            )
            .await?
        }
    };
    // A refused upload may leave part of the body unread: close the connection
    // rather than let a pooled one read the rest as the next request.
    if !resp.status().is_success() {
        resp.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    Ok(resp)
}

/// The status a service error maps to (the error itself is consumed by the message).
fn clone_message(e: &ServiceError) -> ServiceError {
    match e {
        ServiceError::PayloadTooLarge(m) => ServiceError::PayloadTooLarge(m.clone()),
        ServiceError::Unavailable(m) => ServiceError::Unavailable(m.clone()),
        ServiceError::Internal(m) => ServiceError::Internal(m.clone()),
        other => ServiceError::bad_request(other.to_string()),
    }
}

#[derive(Deserialize)]
struct EntryForm {
    #[serde(default)]
    entry_script: String,
}

async fn entry(
    user: UiUser,
    State(state): State<AppState>,
    Meta(meta): Meta,
    Path(id): Path<String>,
    Form(form): Form<EntryForm>,
) -> UiResult {
    let id = app_id(&user, &id)?;
    match app_code::set_entry(&state, &user.who, id, &form.entry_script, &meta).await {
        Ok(_) => Ok(see_other(&user, &format!("/apps/{id}?flash=entry"))),
        Err(e @ (ServiceError::Forbidden(_) | ServiceError::NotFound(_))) => {
            Err(app_error(&user, e))
        }
        Err(e) => {
            let message = match &e {
                ServiceError::BadRequest { details, .. } if !details.is_empty() => {
                    details.join("; ")
                }
                other => other.to_string(),
            };
            let status = if user.hx && !matches!(e, ServiceError::BadRequest { .. }) {
                StatusCode::OK
            } else {
                super::UiError::from(e).status
            };
            render(
                &state,
                &user,
                id,
                |p| {
                    p.flash("error", "The entry script was not changed.")
                        .status(status)
                },
                message,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::app_code::CodeFile;

    fn files(paths: &[&str], entry: &str, candidates: &[&str]) -> CodeFiles {
        CodeFiles {
            files: paths
                .iter()
                .map(|p| CodeFile {
                    path: p.to_string(),
                    size: 2048,
                })
                .collect(),
            entry_candidates: candidates.iter().map(|c| c.to_string()).collect(),
            entry_script: entry.into(),
            ..Default::default()
        }
    }

    #[test]
    fn the_tree_opens_each_directory_once() {
        let f = files(
            &["R/a.R", "R/b/c.R", "R/d.R", "app.R", "z/y.txt"],
            "app.R",
            &["app.R"],
        );
        let lines: Vec<(usize, String, bool)> = tree_lines(&f)
            .into_iter()
            .map(|l| (l.depth, l.name, l.entry))
            .collect();
        assert_eq!(
            lines,
            [
                (0, "R/".into(), false),
                (1, "a.R".into(), false),
                (1, "b/".into(), false),
                (2, "c.R".into(), false),
                (1, "d.R".into(), false),
                (0, "app.R".into(), true),
                (0, "z/".into(), false),
                (1, "y.txt".into(), false),
            ]
        );
        assert_eq!(tree_lines(&f)[1].size, "2.0 KB");
    }

    #[test]
    fn the_entry_in_a_lone_folder_is_marked() {
        let f = files(&["repo/app.R", "repo/b.R"], "app.R", &["app.R", "b.R"]);
        let marked: Vec<bool> = tree_lines(&f).iter().map(|l| l.entry).collect();
        assert_eq!(marked, [false, true, false]);
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_size(12), "12 B");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(5 * 1024 * 1024), "5.0 MB");
    }
}
