//! An upload-sourced app's current code: the extracted file tree, which `.R` files can
//! be its entry script, and choosing one of them after an upload.
//!
//! The upload itself is `apps::upload`; this reads what it left on disk, so what the
//! UI shows is what the next build will use (not the record of the last request).

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use uuid::Uuid;

use super::apps::owned_app;
use super::validate::{self, Problems};
use super::{blocking, with_store, AppState, ClientMeta, Principal, ServiceError, ServiceResult};
use crate::model::{App, AuditEntry, CodeSource};
// The build's own rule for where the code starts (a lone top folder holding the entry
// script is the root), so the choices offered here are exactly what a build accepts.
use crate::spawner::docker::image::code_root;

/// Most files listed; an upload may hold up to 10,000, and a page of them helps nobody.
pub const FILES_LISTED_MAX: usize = 2_000;

/// One regular file of the upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeFile {
    /// Relative to the upload directory, `/`-separated.
    pub path: String,
    pub size: u64,
}

/// What an upload-sourced app has on disk now.
#[derive(Debug, Clone, Default)]
pub struct CodeFiles {
    /// The file name the client uploaded, when there was an upload.
    pub filename: Option<String>,
    pub uploaded_at: Option<OffsetDateTime>,
    /// Regular files sorted by path (links and directories are not listed), at most
    /// [`FILES_LISTED_MAX`].
    pub files: Vec<CodeFile>,
    /// More files exist than were listed.
    pub truncated: bool,
    pub total_bytes: u64,
    /// Names that can be the entry script (sorted): `.R` files at the top level, or in
    /// the upload's only folder.
    pub entry_candidates: Vec<String>,
    /// The app's entry script now.
    pub entry_script: String,
}

impl CodeFiles {
    /// The current entry script is one of the files.
    pub fn entry_present(&self) -> bool {
        self.entry_candidates.contains(&self.entry_script)
    }
}

fn upload_dir(state: &AppState, id: Uuid) -> PathBuf {
    state.config.uploads_dir().join(id.to_string())
}

fn require_upload_source(app: &App) -> ServiceResult<()> {
    match app.code_source {
        CodeSource::Upload => Ok(()),
        CodeSource::Git { .. } => Err(ServiceError::bad_request(
            "This app uses git source. Change codeSource to \"upload\" first.",
        )),
    }
}

/// The current files of an app's upload (empty when nothing was uploaded yet).
pub async fn files(state: &AppState, who: &Principal, id: Uuid) -> ServiceResult<CodeFiles> {
    let app = owned_app(state, who, id).await?;
    let record = with_store(&state.store, move |s| s.get_upload(id)).await?;
    let dir = upload_dir(state, id);
    let (files, truncated, total_bytes, entry_candidates) = blocking(move || scan(&dir))
        .await?
        .map_err(|e| ServiceError::Internal(format!("could not read the uploaded files: {e}")))?;
    Ok(CodeFiles {
        filename: record.as_ref().map(|r| r.filename.clone()),
        uploaded_at: record.map(|r| r.uploaded_at),
        files,
        truncated,
        total_bytes,
        entry_candidates,
        entry_script: app.entry_script,
    })
}

type Scan = (Vec<CodeFile>, bool, u64, Vec<String>);

/// Walk `dir` (no links followed). A missing dir is an empty upload.
fn scan(dir: &Path) -> std::io::Result<Scan> {
    if !dir.is_dir() {
        return Ok((Vec::new(), false, 0, Vec::new()));
    }
    let mut files = Vec::new();
    let mut total = 0u64;
    let mut count = 0usize;
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in std::fs::read_dir(dir.join(&rel))? {
            let entry = entry?;
            let meta = entry.metadata()?; // DirEntry::metadata does not follow links
            let name = entry.file_name();
            let path = rel.join(&name);
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                count += 1;
                total += meta.len();
                if files.len() < FILES_LISTED_MAX {
                    files.push(CodeFile {
                        path: path.to_string_lossy().into_owned(),
                        size: meta.len(),
                    });
                }
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let truncated = count > files.len();
    let candidates = entry_candidates(dir)?;
    Ok((files, truncated, total, candidates))
}

/// `.R` files at the top of `dir`, and — when `dir` holds nothing but one folder —
/// in that folder; each kept only if the build would find it there ([`code_root`]) and
/// its name is a valid entry script.
fn entry_candidates(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut top_dirs = Vec::new();
    let mut others = 0usize;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if meta.is_dir() {
            if name != ".git" {
                top_dirs.push(entry.path());
            }
        } else {
            others += 1;
            if meta.is_file() {
                names.push(name);
            }
        }
    }
    if let ([only], 0) = (top_dirs.as_slice(), others) {
        for entry in std::fs::read_dir(only)? {
            let entry = entry?;
            if entry.metadata()?.is_file() {
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    names.retain(|n| {
        n.ends_with(".R") && valid_entry_name(n) && code_root(dir, n).join(n).is_file()
    });
    names.sort();
    names.dedup();
    Ok(names)
}

fn valid_entry_name(name: &str) -> bool {
    let mut p = Problems::default();
    validate::entry_script(&mut p, name);
    p.finish().is_ok()
}

/// Choose the entry script of an upload-sourced app among its uploaded `.R` files.
pub async fn set_entry(
    state: &AppState,
    who: &Principal,
    id: Uuid,
    entry_script: &str,
    meta: &ClientMeta,
) -> ServiceResult<App> {
    let mut p = Problems::default();
    validate::entry_script(&mut p, entry_script);
    p.finish()?;
    let mut app = owned_app(state, who, id).await?;
    require_upload_source(&app)?;
    let dir = upload_dir(state, id);
    let candidates = blocking(move || {
        if dir.is_dir() {
            entry_candidates(&dir)
        } else {
            Ok(Vec::new())
        }
    })
    .await?
    .map_err(|e| ServiceError::Internal(format!("could not read the uploaded files: {e}")))?;
    if candidates.is_empty() {
        return Err(ServiceError::bad_request(
            "entryScript: the upload holds no .R file that can be the entry script; upload the app's code first",
        ));
    }
    if !candidates.iter().any(|c| c == entry_script) {
        return Err(ServiceError::bad_request(format!(
            "entryScript {entry_script:?} is not one of the uploaded R scripts ({}); choose one of those",
            candidates.join(", ")
        )));
    }
    app.entry_script = entry_script.to_string();
    app.updated_at = OffsetDateTime::now_utc();
    let audit = AuditEntry::new(
        Some(&who.user),
        "app.update",
        Some(format!("{} ({})", app.slug, app.id)),
    )
    .with_ip(meta.ip.clone());
    let stored = app.clone();
    with_store(&state.store, move |s| s.update_app(&stored, &audit)).await?;
    Ok(app)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, data: &[u8]) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    #[test]
    fn missing_dir_is_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let (files, truncated, total, cands) = scan(&tmp.path().join("nope")).unwrap();
        assert!(files.is_empty() && !truncated && total == 0 && cands.is_empty());
    }

    #[test]
    fn top_level_scripts_are_candidates_nested_ones_are_not() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "b.R", b"1");
        write(d, "a.R", b"22");
        write(d, "lib/helper.R", b"333");
        write(d, "notes.txt", b"4444");
        write(d, "lower.r", b"5");
        write(d, "bad name.R", b"6");
        let (files, truncated, total, cands) = scan(d).unwrap();
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "a.R",
                "b.R",
                "bad name.R",
                "lib/helper.R",
                "lower.r",
                "notes.txt"
            ]
        );
        assert_eq!(files[3].size, 3);
        assert!(!truncated);
        assert_eq!(total, 1 + 2 + 3 + 4 + 1 + 1);
        assert_eq!(cands, ["a.R", "b.R"]);
    }

    #[test]
    fn a_lone_folder_offers_its_scripts() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "repo-main/app.R", b"1");
        write(d, "repo-main/other.R", b"1");
        write(d, "repo-main/sub/deep.R", b"1");
        write(d, ".git/HEAD", b"x");
        assert_eq!(entry_candidates(d).unwrap(), ["app.R", "other.R"]);
        // A second top-level entry: the folder is no longer the code root.
        write(d, "README", b"x");
        assert!(entry_candidates(d).unwrap().is_empty());
    }

    #[test]
    fn links_are_not_listed() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        write(d, "app.R", b"1");
        std::os::unix::fs::symlink("app.R", d.join("link.R")).unwrap();
        let (files, _, _, cands) = scan(d).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!(cands, ["app.R"]);
    }
}
