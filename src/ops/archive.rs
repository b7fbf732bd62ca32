//! The backup archive: a tar.gz whose first entry is `manifest.json` (format, schema
//! version, rserve-proxy version, creation time, every file with its size and
//! sha256), then `state.redb` (a snapshot, see `store::backup`) and `uploads/…`.
//!
//! Restore checks everything before anything lands in the data dir: it extracts into
//! a temp dir beside the data dir, verifies each file against the manifest and the
//! store's records, and only then renames the temp dir into place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::store::backup::Counts;
use crate::store::Store;

/// Version of the archive layout (not of the store schema).
pub const FORMAT: u32 = 1;
const MANIFEST: &str = "manifest.json";
const STATE: &str = "state.redb";
const UPLOADS: &str = "uploads";
/// A manifest larger than this is not one we wrote.
const MANIFEST_MAX: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub schema_version: u32,
    pub rserve_proxy_version: String,
    /// RFC 3339, UTC.
    pub created_at: String,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct Summary {
    pub manifest: Manifest,
    pub counts: Counts,
}

/// Writes a backup of `store` and the uploads under `uploads_dir` to `out`. The
/// snapshot is taken in a temp dir inside `scratch` (the data dir: same disk, and
/// not a private /tmp). Callers that can see uploads change hold the upload lock.
pub fn write(
    store: &Store,
    uploads_dir: &Path,
    scratch: &Path,
    out: impl Write,
) -> Result<Summary, String> {
    let tmp = tempfile::Builder::new()
        .prefix(".backup-")
        .tempdir_in(scratch)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", scratch.display()))?;
    let snapshot = tmp.path().join(STATE);
    let counts = store
        .snapshot_into(&snapshot)
        .map_err(|e| format!("cannot snapshot the store: {e}"))?;

    let mut sources: Vec<(String, PathBuf)> = vec![(STATE.to_string(), snapshot)];
    if uploads_dir.is_dir() {
        collect(uploads_dir, UPLOADS, &mut sources)?;
    }
    let mut files = Vec::with_capacity(sources.len());
    for (name, path) in &sources {
        let (size, sha256) = hash_file(path)?;
        files.push(FileEntry {
            path: name.clone(),
            size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: FORMAT,
        schema_version: counts.schema_version,
        rserve_proxy_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        files,
    };
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let io_err = |e: io::Error| format!("cannot write the archive: {e}");
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    append(
        &mut tar,
        MANIFEST,
        0o600,
        &mut &manifest_bytes[..],
        manifest_bytes.len() as u64,
    )
    .map_err(io_err)?;
    for ((name, path), entry) in sources.iter().zip(&manifest.files) {
        let mut f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mode = if name == STATE { 0o600 } else { 0o644 };
        // The size hashed is the size written: a file that grew since is cut to it,
        // one that shrank fails here instead of making an archive restore refuses.
        append(
            &mut tar,
            name,
            mode,
            &mut (&mut f).take(entry.size),
            entry.size,
        )
        .map_err(io_err)?;
    }
    let gz = tar.into_inner().map_err(io_err)?;
    gz.finish().map_err(io_err)?.flush().map_err(io_err)?;
    Ok(Summary { manifest, counts })
}

fn append(
    tar: &mut tar::Builder<impl Write>,
    name: &str,
    mode: u32,
    data: &mut impl Read,
    size: u64,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(mode);
    header.set_mtime(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    );
    tar.append_data(&mut header, name, data)
}

/// Regular files under `dir`, as archive names under `prefix`. Dot-named entries are
/// an upload's staging or swapped-out copy (upload/mod.rs), not content.
fn collect(dir: &Path, prefix: &str, out: &mut Vec<(String, PathBuf)>) -> Result<(), String> {
    let read = fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
    let mut entries: Vec<_> = read.filter_map(|e| e.ok()).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') {
            continue;
        }
        let kind = entry
            .file_type()
            .map_err(|e| format!("cannot stat {}: {e}", entry.path().display()))?;
        let archive_name = format!("{prefix}/{name}");
        if kind.is_dir() {
            collect(&entry.path(), &archive_name, out)?;
        } else if kind.is_file() {
            out.push((archive_name, entry.path()));
        }
    }
    Ok(())
}

fn hash_file(path: &Path) -> Result<(u64, String), String> {
    let mut f = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut f, &mut hasher)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok((size, hex::encode(hasher.finalize())))
}

/// What `restore` did.
#[derive(Debug)]
pub struct Restored {
    pub manifest: Manifest,
    pub counts: Counts,
    /// Where the previous contents of the data dir went (`--force`).
    pub moved_aside: Option<PathBuf>,
}

/// Restores `archive` into `data_dir`, which must hold no running server. Without
/// `force` the data dir must be missing or empty; with it, its contents are moved
/// aside to `<data dir>.before-restore-<time>` (never deleted). On any error nothing
/// in or beside the data dir has changed.
pub fn restore(archive: &Path, data_dir: &Path, force: bool) -> Result<Restored, String> {
    let state = data_dir.join(STATE);
    if state.exists() && crate::store::backup::in_use(&state) {
        return Err(format!(
            "a server is running on {} ({} is locked); stop it first (systemctl stop rserve-proxy)",
            data_dir.display(),
            state.display()
        ));
    }
    let existing = match fs::read_dir(data_dir) {
        Ok(mut entries) => Some(entries.next().is_some()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("cannot read data dir {}: {e}", data_dir.display())),
    };
    if existing == Some(true) && !force {
        return Err(format!(
            "data dir {} is not empty; restore into a new or empty dir, or pass --force to move its contents aside",
            data_dir.display()
        ));
    }
    let parent = match data_dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let staging = tempfile::Builder::new()
        .prefix(".rserve-proxy-restore-")
        .tempdir_in(&parent)
        .map_err(|e| format!("cannot create a temp dir in {}: {e}", parent.display()))?;

    let manifest = extract(archive, staging.path())?;
    let counts = crate::store::backup::check_file(&staging.path().join(STATE)).map_err(|e| {
        format!("the archive's state.redb does not check out: {e}; nothing was restored")
    })?;

    // Keep the data dir's owner and mode (root restoring for the service user).
    let meta = fs::metadata(data_dir).ok();
    let mode = meta
        .as_ref()
        .map_or(0o700, |m| m.permissions().mode() & 0o7777);
    if let Some(m) = &meta {
        chown_tree(staging.path(), m.uid(), m.gid())?;
    }
    fs::set_permissions(staging.path(), fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", staging.path().display()))?;

    let mut moved_aside = None;
    match existing {
        Some(true) => {
            let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
            let aside = PathBuf::from(format!("{}.before-restore-{stamp}", data_dir.display()));
            fs::rename(data_dir, &aside).map_err(|e| {
                format!(
                    "cannot move {} aside to {}: {e}",
                    data_dir.display(),
                    aside.display()
                )
            })?;
            moved_aside = Some(aside);
        }
        Some(false) => fs::remove_dir(data_dir)
            .map_err(|e| format!("cannot replace the empty dir {}: {e}", data_dir.display()))?,
        None => {}
    }
    let staged = staging.keep();
    if let Err(e) = fs::rename(&staged, data_dir) {
        // Put back what was there, so a failed rename also leaves things as they were.
        if let Some(aside) = &moved_aside {
            let _ = fs::rename(aside, data_dir);
        }
        let _ = fs::remove_dir_all(&staged);
        return Err(format!(
            "cannot move the restored data into {}: {e}",
            data_dir.display()
        ));
    }
    Ok(Restored {
        manifest,
        counts,
        moved_aside,
    })
}

/// Reads the manifest, then every entry into `dest`, checking each against it.
fn extract(archive: &Path, dest: &Path) -> Result<Manifest, String> {
    let damaged = |e: io::Error| {
        format!(
            "{} is damaged (truncated or not a backup archive): {e}; nothing was restored",
            archive.display()
        )
    };
    let file =
        File::open(archive).map_err(|e| format!("cannot open {}: {e}", archive.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(io::BufReader::new(file)));
    let mut entries = tar.entries().map_err(damaged)?;
    let first = entries
        .next()
        .ok_or_else(|| format!("{} is empty; nothing was restored", archive.display()))?
        .map_err(damaged)?;
    if first.path().map_err(damaged)?.as_ref() != Path::new(MANIFEST) {
        return Err(format!(
            "{} does not start with {MANIFEST}: not an rserve-proxy backup; nothing was restored",
            archive.display()
        ));
    }
    let mut text = Vec::new();
    first
        .take(MANIFEST_MAX)
        .read_to_end(&mut text)
        .map_err(damaged)?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| {
        format!(
            "{}: its manifest does not parse ({e}); nothing was restored",
            archive.display()
        )
    })?;
    if manifest.format != FORMAT {
        return Err(format!(
            "{} has archive format {}, this rserve-proxy reads format {FORMAT}; use the rserve-proxy version that wrote it ({})",
            archive.display(),
            manifest.format,
            manifest.rserve_proxy_version
        ));
    }
    if manifest.schema_version > Store::SCHEMA_VERSION {
        return Err(format!(
            "{} holds schema version {} (written by rserve-proxy {}), newer than this binary supports ({}); restore it with that version or newer; nothing was restored",
            archive.display(),
            manifest.schema_version,
            manifest.rserve_proxy_version,
            Store::SCHEMA_VERSION
        ));
    }
    if !manifest.files.iter().any(|f| f.path == STATE) {
        return Err(format!(
            "{}: the manifest lists no {STATE}; nothing was restored",
            archive.display()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for entry in entries {
        let entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(format!(
                "{}: {name:?} is not a regular file; nothing was restored",
                archive.display()
            ));
        }
        let Some(expected) = manifest.files.iter().find(|f| f.path == name) else {
            return Err(format!(
                "{}: {name:?} is not in the manifest (tampered?); nothing was restored",
                archive.display()
            ));
        };
        let rel = safe_relative(&name).ok_or_else(|| {
            format!(
                "{}: unsafe path {name:?}; nothing was restored",
                archive.display()
            )
        })?;
        if !seen.insert(name.clone()) {
            return Err(format!(
                "{}: {name:?} appears twice; nothing was restored",
                archive.display()
            ));
        }
        let target = dest.join(rel);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if name == STATE { 0o600 } else { 0o644 })
            .open(&target)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        let mut reader = entry;
        loop {
            let n = reader.read(&mut buf).map_err(damaged)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
            size += n as u64;
        }
        let sha = hex::encode(hasher.finalize());
        if size != expected.size || sha != expected.sha256 {
            return Err(format!(
                "{}: {name} does not match its checksum in the manifest (corrupt or tampered); nothing was restored",
                archive.display()
            ));
        }
        out.sync_all()
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
    }
    if let Some(missing) = manifest.files.iter().find(|f| !seen.contains(&f.path)) {
        return Err(format!(
            "{}: {} is in the manifest but not in the archive (truncated?); nothing was restored",
            archive.display(),
            missing.path
        ));
    }
    Ok(manifest)
}

/// `name` as a relative path of plain components, or `None`.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let path = Path::new(name);
    let ok = !name.is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && (name == STATE || name.starts_with("uploads/"));
    ok.then(|| path.to_path_buf())
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    let ours = fs::metadata(dir).map_err(|e| format!("cannot stat {}: {e}", dir.display()))?;
    if ours.uid() == uid && ours.gid() == gid {
        return Ok(());
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::chown(&p, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to uid {uid}: {e}", p.display()))?;
        if p.is_dir() {
            for e in fs::read_dir(&p).map_err(|e| format!("cannot list {}: {e}", p.display()))? {
                stack.push(e.map_err(|e| e.to_string())?.path());
            }
        }
    }
    Ok(())
}
