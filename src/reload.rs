//! SIGHUP (`systemctl reload`): read the config file and the environment again and
//! apply what can change while running — `log_level`, `login_attempts_per_minute`,
//! `upload_max_mb`, `session_ttl_hours` (new sessions), `trusted_proxies`, `webhooks`
//! (the keys declared `Live` in config.rs). Any other changed key is
//! logged as "needs a restart". A config that does not load is refused as a whole:
//! an error is logged and the running config stays (nothing half-applied: every value
//! is checked by `Config::load` before the first one is applied).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use crate::alerts::Alerts;
use crate::auth::rate_limit::RateLimiter;
use crate::config::{Config, ConfigError, Overrides, Reload};
use crate::proxy::forwarded::TrustedProxies;
use crate::service::LiveLimits;

/// Where the config came from at start: read the same way on reload.
#[derive(Debug, Clone, Default)]
pub struct Source {
    pub file: Option<PathBuf>,
    pub flags: Overrides,
}

/// The running parts a reload changes.
pub struct Reloader {
    source: Source,
    /// The config in force: what was started, with the live keys as last applied.
    current: Mutex<Config>,
    targets: Targets,
}

/// The running parts that take live keys.
pub struct Targets {
    pub trusted: Arc<TrustedProxies>,
    pub login_limiter: Arc<RateLimiter>,
    pub limits: Arc<LiveLimits>,
    pub alerts: Alerts,
}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub applied: Vec<&'static str>,
    pub need_restart: Vec<&'static str>,
}

impl Reloader {
    pub fn new(source: Source, config: Config, targets: Targets) -> Self {
        Reloader {
            source,
            current: Mutex::new(config),
            targets,
        }
    }

    /// Load the config again and apply it; `Err` leaves everything as it was.
    pub fn reload(&self) -> Result<Outcome, ConfigError> {
        let new = Config::load(
            self.source.file.as_deref(),
            std::env::vars(),
            &self.source.flags,
        )?;
        let mut current = match self.current.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut outcome = Outcome::default();
        for key in current.changed_keys(&new) {
            if key.reload == Reload::Restart {
                outcome.need_restart.push(key.name);
                continue;
            }
            match key.name {
                "log_level" => {
                    if let Err(e) = crate::logging::set_level(&new.log_level) {
                        tracing::warn!(error = %e, "log_level not applied");
                        continue;
                    }
                    current.log_level = new.log_level.clone();
                }
                "login_attempts_per_minute" => {
                    self.targets
                        .login_limiter
                        .set_limit(new.login_attempts_per_minute);
                    current.login_attempts_per_minute = new.login_attempts_per_minute;
                }
                "trusted_proxies" => {
                    self.targets.trusted.set(new.trusted_proxies.clone());
                    current.trusted_proxies = new.trusted_proxies.clone();
                }
                "upload_max_mb" => {
                    self.targets
                        .limits
                        .set_upload_max_bytes(new.upload_max_bytes);
                    current.upload_max_bytes = new.upload_max_bytes;
                }
                "session_ttl_hours" => {
                    self.targets.limits.set_session_ttl(new.session_ttl);
                    current.session_ttl = new.session_ttl;
                }
                "webhooks" => {
                    self.targets.alerts.replace_webhooks(new.webhooks.clone());
                    current.webhooks = new.webhooks.clone();
                }
                // A key declared Live without code here would silently not apply.
                other => {
                    outcome.need_restart.push(other);
                    continue;
                }
            }
            outcome.applied.push(key.name);
        }
        Ok(outcome)
    }

    fn reload_and_log(&self) {
        match self.reload() {
            Ok(outcome) => {
                for key in &outcome.need_restart {
                    tracing::warn!(
                        key = *key,
                        "config reload: {key} changed and needs a restart to take effect"
                    );
                }
                tracing::info!(
                    applied = %outcome.applied.join(","),
                    "config reloaded ({} applied, {} need a restart)",
                    outcome.applied.len(),
                    outcome.need_restart.len()
                );
            }
            Err(e) => tracing::error!(
                error = %e,
                "config reload refused, the running config is unchanged: {e}"
            ),
        }
    }
}

#[async_trait]
impl BackgroundService for Reloader {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        use tokio::signal::unix::{signal, SignalKind};
        // Our handler replaces SIGHUP's default action, which ends the process.
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGHUP; config reload is off");
                return;
            }
        };
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    tracing::info!("SIGHUP: reloading the config");
                    self.reload_and_log();
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
