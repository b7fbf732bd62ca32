//! `tls_mode = files`: serve a certificate and key from PEM files and pick up
//! replacements (certbot, an internal CA, a person with `cp`) without a restart.
//!
//! Why polling rather than SIGHUP: it needs nothing from whoever renews the files (no
//! pid, no hook, works across containers and for files on a mounted volume), and two
//! `stat` calls every few seconds cost nothing. A pair that does not load — a half-written
//! file, a key that does not match yet — is reported and the previous certificate
//! stays in service; the next change is tried again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::cert::{self, LoadedCert};
use super::live::CertResolver;

/// How often the files are looked at.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// What identifies a version of a file: a replaced or rewritten file changes at least
/// one of these (a symlink swap as certbot does changes the inode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

type PairStamp = (Option<FileStamp>, Option<FileStamp>);

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// Reads and checks the pair. Errors name the file and the config key.
pub fn load_files(cert_file: &Path, key_file: &Path) -> Result<LoadedCert, String> {
    let read = |path: &Path, key: &str| {
        std::fs::read(path).map_err(|e| format!("{key} {}: cannot read: {e}", path.display()))
    };
    let chain = read(cert_file, "tls_cert_file")?;
    let key = read(key_file, "tls_key_file")?;
    cert::load_pem(&chain, &key).map_err(|e| {
        format!(
            "tls_cert_file {} / tls_key_file {}: {e}",
            cert_file.display(),
            key_file.display()
        )
    })
}

/// Background service: re-reads the pair whenever either file changes.
pub struct FilesWatcher {
    cert_file: PathBuf,
    key_file: PathBuf,
    resolver: Arc<CertResolver>,
    /// The files' stamp when they were first loaded.
    loaded: PairStamp,
}

impl FilesWatcher {
    /// Loads the pair into `resolver` (the server does not start without it) and
    /// returns the watcher that keeps it current.
    pub fn load(
        cert_file: PathBuf,
        key_file: PathBuf,
        resolver: Arc<CertResolver>,
    ) -> Result<(FilesWatcher, LoadedCert), String> {
        // Stamp before reading: a change during the read is then seen as a change.
        let loaded = (stamp(&cert_file), stamp(&key_file));
        let cert = load_files(&cert_file, &key_file)?;
        resolver.set(cert.key.clone());
        let watcher = FilesWatcher {
            cert_file,
            key_file,
            resolver,
            loaded,
        };
        Ok((watcher, cert))
    }

    fn pair_stamp(&self) -> PairStamp {
        (stamp(&self.cert_file), stamp(&self.key_file))
    }

    /// Loads the pair if `seen` differs from the files now; returns the new stamp.
    fn check(&self, seen: PairStamp) -> PairStamp {
        let now = self.pair_stamp();
        if now == seen {
            return seen;
        }
        match load_files(&self.cert_file, &self.key_file) {
            Ok(c) => {
                self.resolver.set(c.key.clone());
                tracing::info!(
                    names = ?c.names,
                    serial = %c.serial,
                    "TLS certificate reloaded from files; {}",
                    cert::describe_expiry(&c.validity, time::OffsetDateTime::now_utc())
                );
            }
            Err(e) => tracing::warn!(
                "{e}; still serving the previous certificate (will retry when the files change)"
            ),
        }
        now
    }
}

#[async_trait]
impl BackgroundService for FilesWatcher {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut seen = self.loaded;
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            seen = self.check(seen);
        }
    }
}
