//! HTTPS: the certificate behind the TLS listener and how it stays current.
//!
//! - `live.rs`: the lock-free state the request path reads (certificate resolver,
//!   HTTP-01 answers).
//! - `files.rs`: `tls_mode = files`, PEM files reloaded when they change.
//! - `acme.rs`: `tls_mode = acme`, certificates from an ACME CA, kept in the store.
//! - `schedule.rs`: when to renew and retry (pure, tested with explicit times).
//!
//! `prepare` runs before pingora starts: it installs a certificate if one is at hand
//! (files, or a valid stored ACME certificate) so the first handshake already has it,
//! and returns the background service that keeps it current.

pub mod acme;
pub mod cert;
pub mod files;
pub mod live;
pub mod schedule;

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

pub use live::{CertResolver, Challenges};

use crate::config::{Config, TlsMode};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file or setting that cannot be used; the message names the key.
    #[error("TLS: {0}")]
    Setup(String),
    #[error("TLS: cannot read the stored certificate: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// What the server wires up when TLS is on.
pub struct TlsSetup {
    /// For the TLS listener.
    pub resolver: Arc<CertResolver>,
    /// For the proxy's `/.well-known/acme-challenge/` answers.
    pub challenges: Challenges,
    /// Keeps the certificate current; runs as a pingora background service.
    pub keeper: Keeper,
}

/// The background service of the chosen mode.
pub enum Keeper {
    Files(files::FilesWatcher),
    Acme(acme::AcmeManager),
}

impl Keeper {
    pub fn name(&self) -> &'static str {
        match self {
            Keeper::Files(_) => "tls certificate files",
            Keeper::Acme(_) => "acme",
        }
    }
}

#[async_trait]
impl BackgroundService for Keeper {
    async fn start(&self, shutdown: ShutdownWatch) {
        match self {
            Keeper::Files(w) => w.start(shutdown).await,
            Keeper::Acme(m) => m.start(shutdown).await,
        }
    }
}

/// Mozilla's roots, compiled in (a minimal container without a CA bundle works).
pub fn mozilla_roots() -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots
}

/// The rustls client config for our own outbound HTTPS (the ACME CA, alert webhooks):
/// ring, safe protocol versions, trusting `roots`.
pub fn client_config(roots: rustls::RootCertStore) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS client setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// `None` when `tls_mode = off`. Synchronous: call it before the server starts.
pub fn prepare(config: &Config, store: &Store) -> Result<Option<TlsSetup>, TlsError> {
    let resolver = Arc::new(CertResolver::default());
    let challenges = Challenges::default();
    let now = time::OffsetDateTime::now_utc();
    let keeper = match config.tls_mode {
        TlsMode::Off => return Ok(None),
        TlsMode::Files => {
            let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file)
            else {
                // Config::load refuses this combination; a hand-built Config may not.
                return Err(TlsError::Setup(
                    "tls_mode = files needs tls_cert_file and tls_key_file".into(),
                ));
            };
            let (watcher, loaded) =
                files::FilesWatcher::load(cert_file.clone(), key_file.clone(), resolver.clone())
                    .map_err(TlsError::Setup)?;
            tracing::info!(
                names = ?loaded.names,
                serial = %loaded.serial,
                "TLS certificate loaded from files (changes are picked up within {} s); {}",
                files::CHECK_EVERY.as_secs(),
                cert::describe_expiry(&loaded.validity, now)
            );
            Keeper::Files(watcher)
        }
        TlsMode::Acme => {
            let settings = acme::AcmeSettings {
                domains: config.acme_domains.clone(),
                email: config.acme_email.clone(),
                directory: config.acme_directory.clone(),
                ca_file: config.acme_ca_file.clone(),
            };
            // A bad acme_ca_file is a setup error now, not a retry loop later.
            acme::http_client(settings.ca_file.as_deref()).map_err(TlsError::Setup)?;
            if config.listen.port() != 80 {
                tracing::warn!(
                    listen = %config.listen,
                    "HTTP-01 validation connects to port 80 of {}: make sure port 80 is forwarded to `listen`",
                    settings.domains.join(", ")
                );
            }
            let stored = acme::stored_certificate(store, &settings, now)?;
            let initial = stored.map(|c| {
                resolver.set(c.key.clone());
                tracing::info!(
                    names = ?c.names,
                    serial = %c.serial,
                    renew_at = %cert::when(schedule::renew_at(&c.validity)),
                    "stored TLS certificate loaded; {}",
                    cert::describe_expiry(&c.validity, now)
                );
                c.validity
            });
            if initial.is_none() {
                tracing::info!(
                    domains = %settings.domains.join(","),
                    "no stored TLS certificate yet: HTTPS handshakes fail until the ACME order completes"
                );
            }
            Keeper::Acme(acme::AcmeManager::new(
                settings,
                store.clone(),
                resolver.clone(),
                challenges.clone(),
                initial,
            ))
        }
    };
    Ok(Some(TlsSetup {
        resolver,
        challenges,
        keeper,
    }))
}
