//! Operating an installed server: `backup`, `restore`, `doctor`, and the admin socket
//! through which `backup` and `admin …` reach a running server (see docs/operations.md).

pub mod archive;
pub mod client;
pub mod doctor;
pub mod socket;
pub mod users;

use std::path::Path;

use crate::config::Config;
use crate::store::Store;

/// Whether a server runs on this data dir: it holds the store's lock.
pub fn server_running(config: &Config) -> bool {
    let state = config.state_file();
    state.exists() && crate::store::backup::in_use(&state)
}

/// `rserve-proxy backup FILE`: through the admin socket when a server runs, else from
/// the store directly. The archive appears at `dest` only once complete (written to
/// a temp file beside it, then renamed), with mode 0600: it holds password hashes,
/// session ids and TLS keys. Returns a line for the operator.
pub fn backup(config: &Config, dest: &Path) -> Result<String, String> {
    if !config.state_file().exists() {
        return Err(format!(
            "no state in {}: nothing to back up (is --data-dir / data_dir right?)",
            config.data_dir.display()
        ));
    }
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let partial = tempfile::Builder::new()
        .prefix(".rserve-proxy-backup-")
        .tempfile_in(&dir)
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let started = std::time::Instant::now();
    let rt = runtime()?;
    let (how, files) = if server_running(config) {
        let socket = socket::path(&config.data_dir);
        let file = partial
            .as_file()
            .try_clone()
            .map_err(|e| format!("cannot write the backup: {e}"))?;
        rt.block_on(async {
            let resp =
                client::request(&socket, http::Method::GET, "/v1/backup", None)
                    .await
                    .map_err(|e| match e {
                        client::ClientError::Unreachable(m) => format!(
                            "a server holds {} but {m}; is it an older rserve-proxy without the admin socket? Stop it and run backup again",
                            config.state_file().display()
                        ),
                        other => format!("backup through the running server failed: {other}"),
                    })?;
            let mut out = tokio::fs::File::from_std(file);
            client::download(resp, &mut out)
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>(())
        })?;
        // Check what arrived before calling it a backup: the stream could have been cut.
        let manifest = read_manifest(partial.path())?;
        ("through the running server", manifest.files.len())
    } else {
        let store = Store::open(&config.state_file()).map_err(|e| e.to_string())?;
        let summary = archive::write(
            &store,
            &config.uploads_dir(),
            &config.data_dir,
            std::io::BufWriter::new(partial.as_file()),
        )?;
        ("directly (no server running)", summary.manifest.files.len())
    };
    partial
        .as_file()
        .sync_all()
        .map_err(|e| format!("cannot write the backup: {e}"))?;
    partial
        .persist(dest)
        .map_err(|e| format!("cannot move the backup to {}: {}", dest.display(), e.error))?;
    let size = std::fs::metadata(dest).map(|m| m.len()).unwrap_or(0);
    Ok(format!(
        "backup written to {} ({} files, {} bytes, {} ms, {how})",
        dest.display(),
        files,
        size,
        started.elapsed().as_millis()
    ))
}

/// The manifest of an archive (the first entry), read without extracting.
pub fn read_manifest(path: &Path) -> Result<archive::Manifest, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let bad = |e: std::io::Error| format!("{} is not a complete backup: {e}", path.display());
    let mut entries = tar.entries().map_err(bad)?;
    let first = entries
        .next()
        .ok_or_else(|| format!("{} is empty", path.display()))?
        .map_err(bad)?;
    let mut text = Vec::new();
    first.take(64 << 20).read_to_end(&mut text).map_err(bad)?;
    let manifest: archive::Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{}: no manifest ({e})", path.display()))?;
    // Read to the end: a cut stream fails here.
    for e in entries {
        let mut e = e.map_err(bad)?;
        std::io::copy(&mut e, &mut std::io::sink()).map_err(bad)?;
    }
    Ok(manifest)
}

/// `rserve-proxy restore FILE` into the configured data dir.
pub fn restore(config: &Config, archive_path: &Path, force: bool) -> Result<String, String> {
    let done = archive::restore(archive_path, &config.data_dir, force)?;
    let mut line = format!(
        "restored {} into {} (backup of {} by rserve-proxy {}; {} users, {} apps, {} API tokens, {} files)",
        archive_path.display(),
        config.data_dir.display(),
        done.manifest.created_at,
        done.manifest.rserve_proxy_version,
        done.counts.get("users_v1"),
        done.counts.get("apps_v1"),
        done.counts.get("tokens_v1"),
        done.manifest.files.len()
    );
    if let Some(aside) = done.moved_aside {
        line.push_str(&format!(
            "; the previous contents are in {} (remove it once the server runs well)",
            aside.display()
        ));
    }
    Ok(line)
}

pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))
}
