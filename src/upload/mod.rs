//! Installing an app's uploaded code.
//!
//! An upload is one file: a single `.R` script, stored as is, or a `.zip` /
//! `.tar.gz` / `.tgz` archive, extracted in-process (no `unzip`/`tar`
//! binaries). Everything is written into a fresh temp dir next to the
//! destination and swapped in only once it is complete and has passed every
//! check, so a refused or failed upload leaves the previous one untouched.
//!
//! What an archive may contain:
//! - regular files (created `0644`) and directories (created `0755`); modes
//!   stored in the archive are ignored except to recognise links and
//!   special files;
//! - symbolic links, created as symlinks, whose target is relative and stays
//!   inside the app directory (checked again once everything is extracted,
//!   so chains of links cannot combine into an escape);
//! - tar hard links to an earlier regular file of the archive; they are
//!   written as independent copies (counted against the size limit), so the
//!   app never shares inodes between files.
//!
//! Refused: absolute paths (including `C:\..`, `\\server` and `\x` forms),
//! any `..` component, links leading outside, entries written through a link,
//! devices/fifos/sockets, more than [`Limits::max_entries`] entries, more than
//! [`Limits::max_total_bytes`] of extracted data (counted on the bytes actually
//! decompressed, never on sizes claimed by headers), and corrupt archives.
//!
//! Backslashes in entry names are treated as path separators (old Windows
//! zip tools write them), never as part of a file name.
//!
//! A zip whose entries all sit under one top-level directory (GitHub's
//! `repo-main/`) is kept as is: nothing is stripped, so the app's entry script
//! path is exactly the path shown in the archive.
//!
//! Everything here is synchronous and does blocking file I/O: call it from
//! `spawn_blocking`. Callers must not run two installs for the same `dest`
//! at once (serialize per app).

mod extract;
mod paths;
mod targz;
mod zipfile;

#[cfg(test)]
mod tests;

use std::fs;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use extract::Extractor;

/// Mode of every regular file we create (archive modes are ignored).
pub(crate) const FILE_MODE: u32 = 0o644;
/// Mode of every directory we create, including the app directory itself.
pub(crate) const DIR_MODE: u32 = 0o755;

/// Caps on what one upload may expand to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Most entries (files, directories, links) an archive may hold.
    pub max_entries: usize,
    /// Most bytes of file content the upload may expand to.
    pub max_total_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entries: 10_000,
            max_total_bytes: 500 * 1024 * 1024,
        }
    }
}

/// What kind of upload a file name announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadKind {
    RScript,
    Zip,
    TarGz,
}

impl UploadKind {
    /// Decide by extension, case-insensitively: `.R`/`.r`, `.zip`,
    /// `.tar.gz`, `.tgz`. Any client-side directory part is ignored.
    pub fn from_filename(name: &str) -> Option<UploadKind> {
        let lower = base_name(name).to_ascii_lowercase();
        if lower.ends_with(".r") {
            Some(UploadKind::RScript)
        } else if lower.ends_with(".zip") {
            Some(UploadKind::Zip)
        } else if lower.ends_with(".tar.gz") || lower.ends_with(".tgz") {
            Some(UploadKind::TarGz)
        } else {
            None
        }
    }
}

/// Why an upload was refused (or, for [`UploadError::Io`], failed on our side).
///
/// Display texts are shown to users verbatim, so each says what is wrong and
/// what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error(
        "file {0:?} is not a supported upload; upload a single .R script or a .zip, .tar.gz or .tgz archive of the app"
    )]
    UnsupportedType(String),
    #[error(
        "file name {0:?} is not allowed; an R script must be named like app.R using only letters, digits, '_', '-' and '.', and archive paths must be UTF-8 with at most 255 bytes per part and 2048 in total; rename it and upload again"
    )]
    BadFileName(String),
    #[error(
        "archive entry {0:?} has an absolute path; archive paths must be relative to the app directory, so re-create the archive from inside the app folder and upload again"
    )]
    AbsolutePath(String),
    #[error(
        "archive entry {0:?} points outside the app directory (it contains \"..\"); remove it and upload again"
    )]
    ParentDir(String),
    #[error(
        "archive entry {0:?} is a link leading outside the app directory, or is written through a link; remove the link and upload again"
    )]
    LinkEscape(String),
    #[error(
        "archive entry {0:?} is not a regular file, directory or link (it is a device, fifo, socket or similar); remove it and upload again"
    )]
    SpecialFile(String),
    #[error(
        "the archive has more than {0} entries; remove files the app does not need and upload again"
    )]
    TooManyEntries(usize),
    #[error(
        "the upload expands to more than {0} bytes; remove large files (e.g. data sets) the app does not need and upload again"
    )]
    TooLarge(u64),
    #[error(
        "the upload contains no files; upload an .R script or an archive that contains the app's files"
    )]
    Empty,
    #[error(
        "the archive could not be read ({0}); check that it is a valid, unencrypted .zip (stored or deflate) or .tar.gz file and upload again"
    )]
    Corrupt(String),
    #[error("could not store the upload on the server: {0}")]
    Io(#[from] io::Error),
}

impl UploadError {
    /// True when the client sent something we refuse (a 400); false for our
    /// own I/O failures (a 500).
    pub fn is_client_error(&self) -> bool {
        !matches!(self, UploadError::Io(_))
    }
}

/// What ended up in `dest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    /// Regular files relative to `dest`, `/`-separated, sorted. Links and
    /// directories are not listed.
    pub files: Vec<String>,
    /// Sum of the sizes of `files`.
    pub total_bytes: u64,
}

/// [`install_from`] for an upload held in memory (tests, small callers).
pub fn install(
    data: &[u8],
    filename: &str,
    dest: &Path,
    limits: &Limits,
) -> Result<Installed, UploadError> {
    install_from(io::Cursor::new(data), filename, dest, limits)
}

/// Validate + extract `src` (the uploaded bytes, named `filename` by the
/// client; the server streams uploads to a temp file and passes that) into a fresh temp dir created next to `dest` (same filesystem),
/// then swap it in: rename the old `dest` away, rename the new dir into
/// place, remove the old one. On any error `dest` (the previous upload) is
/// untouched and the temp dir is removed.
///
/// `dest`'s parent is created if missing. Blocking: use `spawn_blocking`.
pub fn install_from<R: io::Read + io::Seek>(
    mut src: R,
    filename: &str,
    dest: &Path,
    limits: &Limits,
) -> Result<Installed, UploadError> {
    let kind = UploadKind::from_filename(filename)
        .ok_or_else(|| UploadError::UnsupportedType(filename.to_owned()))?;
    // Check the script name before touching the disk.
    let script = match kind {
        UploadKind::RScript => Some(script_name(filename)?),
        UploadKind::Zip | UploadKind::TarGz => None,
    };
    let len = src.seek(io::SeekFrom::End(0))?;
    src.rewind()?;
    if len == 0 {
        return Err(UploadError::Empty);
    }

    let (parent, dest_name) = split_dest(dest)?;
    fs::create_dir_all(&parent)?;
    // Same directory as `dest` so the final rename never crosses filesystems.
    // The dot prefix keeps it out of casual listings; dropping `staging`
    // (on any early return) removes it with everything in it.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{dest_name}.upload-"))
        .tempdir_in(&parent)?;

    let installed = if let Some(name) = script {
        write_script(src, len, &name, staging.path(), limits)?
    } else {
        let mut ex = Extractor::new(staging.path(), limits);
        if kind == UploadKind::Zip {
            zipfile::extract(src, &mut ex)?;
        } else {
            targz::extract(src, &mut ex)?;
        }
        ex.finish()?
    };

    // tempdir creates the dir 0700; the app dir should look like any other.
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(DIR_MODE))?;
    swap_in(staging, dest, &parent, &dest_name)?;
    tracing::debug!(
        dest = %dest.display(),
        files = installed.files.len(),
        bytes = installed.total_bytes,
        "upload installed"
    );
    Ok(installed)
}

/// The last path part of a client-supplied name (browsers on Windows used to
/// send `C:\Users\..\app.R`).
fn base_name(name: &str) -> &str {
    name.rsplit(['/', '\\']).next().unwrap_or(name)
}

/// The stored name of an uploaded script: `^[A-Za-z0-9_.-]+\.[Rr]$` after
/// dropping any client-side directory part.
fn script_name(filename: &str) -> Result<String, UploadError> {
    let name = base_name(filename);
    let bad = || UploadError::BadFileName(name.to_owned());
    let stem = name
        .strip_suffix(".R")
        .or_else(|| name.strip_suffix(".r"))
        .ok_or_else(bad)?;
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-');
    if stem.is_empty() || !stem.chars().all(allowed) || name.len() > 255 {
        return Err(bad());
    }
    Ok(name.to_owned())
}

fn write_script(
    mut src: impl io::Read,
    len: u64,
    name: &str,
    root: &Path,
    limits: &Limits,
) -> Result<Installed, UploadError> {
    if len > limits.max_total_bytes {
        return Err(UploadError::TooLarge(limits.max_total_bytes));
    }
    let path = root.join(name);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(&path)?;
    io::copy(&mut src, &mut file)?;
    // The umask may have narrowed the mode given at creation.
    fs::set_permissions(&path, fs::Permissions::from_mode(FILE_MODE))?;
    Ok(Installed {
        files: vec![name.to_owned()],
        total_bytes: len,
    })
}

/// `dest`'s parent directory and last component.
fn split_dest(dest: &Path) -> Result<(PathBuf, String), UploadError> {
    let invalid = || {
        UploadError::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad upload destination {}", dest.display()),
        ))
    };
    let name = dest
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(invalid)?
        .to_owned();
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// Replace `dest` with the staged dir. There is a short window where `dest`
/// does not exist (std has no RENAME_EXCHANGE); if putting the new dir in
/// place fails, the old one is renamed back.
fn swap_in(
    staging: tempfile::TempDir,
    dest: &Path,
    parent: &Path,
    dest_name: &str,
) -> Result<(), UploadError> {
    let exists = match fs::symlink_metadata(dest) {
        Ok(_) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e.into()),
    };
    if !exists {
        let new = staging.keep();
        return fs::rename(&new, dest).map_err(|e| {
            remove_quietly(&new);
            e.into()
        });
    }

    // A uniquely named, empty holding dir for the old upload; the old upload
    // is moved *into* it so this works whatever `dest` is.
    let holding = tempfile::Builder::new()
        .prefix(&format!(".{dest_name}.old-"))
        .tempdir_in(parent)?;
    let old = holding.path().join("previous");
    fs::rename(dest, &old)?;
    let new = staging.keep();
    if let Err(e) = fs::rename(&new, dest) {
        if let Err(back) = fs::rename(&old, dest) {
            tracing::error!(
                dest = %dest.display(),
                error = %back,
                "could not restore previous upload after a failed swap"
            );
            // Keep the holding dir: it is the only copy of the old upload.
            let _ = holding.keep();
        }
        remove_quietly(&new);
        return Err(e.into());
    }
    let holding = holding.keep();
    if let Err(e) = fs::remove_dir_all(&holding) {
        // The new upload is in place; a leftover is only wasted space.
        tracing::warn!(path = %holding.display(), error = %e, "could not remove previous upload");
    }
    Ok(())
}

fn remove_quietly(path: &Path) {
    if let Err(e) = fs::remove_dir_all(path) {
        tracing::warn!(path = %path.display(), error = %e, "could not remove staging dir");
    }
}
