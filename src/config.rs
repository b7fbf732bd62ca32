//! One typed configuration, assembled from four layers (later wins):
//! built-in defaults → TOML file (`--config`) → `RSP_*` environment → command-line flags.
//!
//! Every layer goes through the same per-key parser, so an invalid value names its key
//! and the reason the same way wherever it came from.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An invalid setting. Shown to the operator as one line; the process exits with 2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid config: {key}: {reason}")]
pub struct ConfigError {
    pub key: String,
    pub reason: String,
}

impl ConfigError {
    fn new(key: &str, reason: impl Into<String>) -> Self {
        ConfigError {
            key: key.to_string(),
            reason: reason.into(),
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// JSON when stderr is not a terminal, human-readable otherwise.
    Auto,
    Json,
    Pretty,
}

/// Whether and how the server speaks TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain HTTP only (development; or TLS terminated in front of us).
    Off,
    /// Certificate and key from PEM files, reloaded when they change.
    Files,
    /// Certificates from an ACME CA (Let's Encrypt) via HTTP-01, renewed automatically.
    Acme,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Off => "off",
            TlsMode::Files => "files",
            TlsMode::Acme => "acme",
        }
    }
}

/// Let's Encrypt's production directory, the default ACME server.
pub const LETS_ENCRYPT_PRODUCTION: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`acme_directory = "staging"`): untrusted
/// certificates, generous rate limits — for trying a setup out.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Where `state.redb`, uploads and the control-plane socket live.
    pub data_dir: PathBuf,
    /// The public listener (pingora).
    pub listen: SocketAddr,
    /// Docker Engine API socket.
    pub docker_socket: PathBuf,
    /// Worker threads of the proxy service.
    pub threads: usize,
    pub log_level: String,
    pub log_format: LogFormat,
    /// Lifetime of a login session.
    pub session_ttl: Duration,
    /// Login attempts allowed per client IP per minute.
    pub login_attempts_per_minute: u32,
    /// Largest accepted upload (the multipart file itself).
    pub upload_max_bytes: u64,
    /// Seconds given to open connections on SIGTERM/SIGINT before runtimes stop.
    pub shutdown_grace: Duration,
    /// Password for the first `admin` account (first start only). Secret.
    pub admin_password: Option<String>,
    /// Concurrent WebSocket connections per app; one more is refused with 503.
    pub app_max_websockets: u64,
    /// A WebSocket with no traffic either way for this long is closed; an HTTP request
    /// whose app sends nothing for this long fails with 504.
    pub app_idle_timeout: Duration,
    /// Largest HTTP request body sent to an app; larger ones get 413.
    pub app_max_body_bytes: u64,
    /// Routes served without any app in the store (benchmarks, debugging):
    /// `slug=host:port` entries, each slug a running app with these replicas.
    pub static_routes: Vec<(String, SocketAddr)>,
    pub tls_mode: TlsMode,
    /// The HTTPS listener (when `tls_mode` is not `off`); `listen` then redirects to it
    /// and answers ACME HTTP-01 challenges.
    pub tls_listen: SocketAddr,
    /// PEM certificate chain (leaf first), for `tls_mode = files`.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key, for `tls_mode = files`.
    pub tls_key_file: Option<PathBuf>,
    /// Names on the ACME certificate (lower case, no duplicates, config order).
    pub acme_domains: Vec<String>,
    /// Contact address given to the ACME CA (expiry and policy mail).
    pub acme_email: Option<String>,
    /// ACME directory URL.
    pub acme_directory: String,
    /// Extra PEM root(s) trusted for the connection to the ACME server itself.
    pub acme_ca_file: Option<PathBuf>,
    /// `Strict-Transport-Security: max-age=…` on HTTPS responses; 0 = no header.
    pub hsts_max_age_secs: u64,
    /// When set, the admin plane (`/api`, the UI, `/metrics`) answers only on this
    /// host name and apps only on other names (lower case, no port).
    pub admin_host: Option<String>,
    /// App responses get `Content-Security-Policy: sandbox …` (scripts run in an opaque
    /// origin, so an app page cannot act as the admin on the shared origin).
    pub app_csp_sandbox: bool,
    // Connection floods (see proxy/admission.rs).
    /// Concurrent client connections in total; `None` ("auto"): sized from the
    /// open-files limit at start.
    pub max_connections: Option<u32>,
    /// Concurrent client connections per client address (IPv6: per /64).
    pub max_connections_per_ip: u32,
    /// Time a client has for its first request head on a connection.
    pub request_head_timeout: Duration,
    /// Time a client has for the TLS handshake.
    pub tls_handshake_timeout: Duration,
    // ---- metrics and history (docs/architecture.md, "Metrics and history")
    /// Seconds between collector rounds; 0 turns the collector off.
    pub metrics_interval_secs: u64,
    /// How long raw points are kept, hours.
    pub metrics_raw_retention_hours: u64,
    /// How long 5-minute buckets are kept, hours.
    pub metrics_5m_retention_hours: u64,
    /// How long 15-minute buckets are kept, hours.
    pub metrics_15m_retention_hours: u64,
    /// How long 60-minute buckets are kept, days.
    pub metrics_60m_retention_days: u64,
    /// How long the per-minute status history is kept, days.
    pub status_history_retention_days: u64,
    /// Audit log entries older than this many days are deleted; 0 keeps them all.
    pub audit_retention_days: u64,
    // --- observability: Prometheus and alert webhooks (issue #9 part B) ---
    /// An extra plain listener serving only `/metrics`, without authentication (for a
    /// private network); off when `None`.
    pub metrics_listen: Option<SocketAddr>,
    /// Alert webhooks: where events are POSTed.
    pub webhooks: Vec<WebhookConfig>,
    /// The same event for the same app is sent at most once per this window.
    pub webhook_dedup: Duration,
    /// Deliveries kept for `GET /api/alerts/deliveries`.
    pub webhook_history: usize,
}

/// One alert webhook (`[[webhooks]]` in the TOML file).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL receiving a POST per event.
    pub url: String,
    /// Event names it wants (see `alerts::EventKind`); empty or absent = all.
    #[serde(default)]
    pub events: Vec<String>,
    /// Key of the `X-Rserve-Proxy-Signature` HMAC; no signature without it. Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8880)),
            docker_socket: PathBuf::from("/var/run/docker.sock"),
            threads: 2,
            log_level: "info".to_string(),
            log_format: LogFormat::Auto,
            session_ttl: Duration::from_secs(24 * 3600),
            login_attempts_per_minute: 10,
            upload_max_bytes: 50 * 1024 * 1024,
            shutdown_grace: Duration::from_secs(2),
            admin_password: None,
            app_max_websockets: 1000,
            app_idle_timeout: Duration::from_secs(3600),
            app_max_body_bytes: 16 * 1024 * 1024,
            static_routes: Vec::new(),
            tls_mode: TlsMode::Off,
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 443)),
            tls_cert_file: None,
            tls_key_file: None,
            acme_domains: Vec::new(),
            acme_email: None,
            acme_directory: LETS_ENCRYPT_PRODUCTION.to_string(),
            acme_ca_file: None,
            hsts_max_age_secs: 0,
            admin_host: None,
            app_csp_sandbox: true,
            max_connections: None,
            max_connections_per_ip: 2048,
            request_head_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
            metrics_interval_secs: 15,
            metrics_raw_retention_hours: 1,
            metrics_5m_retention_hours: 6,
            metrics_15m_retention_hours: 24,
            metrics_60m_retention_days: 7,
            status_history_retention_days: 7,
            audit_retention_days: 90,
            metrics_listen: None,
            webhooks: Vec::new(),
            webhook_dedup: Duration::from_secs(300),
            webhook_history: 100,
        }
    }
}

/// Every key, in the order `rserve-proxy config` prints them. The environment variable
/// of a key is `RSP_` + the key in upper case.
pub const KEYS: &[&str] = &[
    "data_dir",
    "listen",
    "docker_socket",
    "threads",
    "log_level",
    "log_format",
    "session_ttl_hours",
    "login_attempts_per_minute",
    "upload_max_mb",
    "shutdown_grace_secs",
    "admin_password",
    "app_max_websockets",
    "app_idle_timeout_secs",
    "app_max_body_mb",
    "static_routes",
    "tls_mode",
    "tls_listen",
    "tls_cert_file",
    "tls_key_file",
    "acme_domains",
    "acme_email",
    "acme_directory",
    "acme_ca_file",
    "hsts_max_age_secs",
    "admin_host",
    "app_csp_sandbox",
    "max_connections",
    "max_connections_per_ip",
    "request_head_timeout_secs",
    "tls_handshake_timeout_secs",
    "metrics_interval_secs",
    "metrics_raw_retention_hours",
    "metrics_5m_retention_hours",
    "metrics_15m_retention_hours",
    "metrics_60m_retention_days",
    "status_history_retention_days",
    "audit_retention_days",
    "metrics_listen",
    "webhooks",
    "webhook_dedup_secs",
    "webhook_history",
];

const SECRET_KEYS: &[&str] = &["admin_password"];

/// Values given on the command line, by key (already in string form).
pub type Overrides = Vec<(&'static str, String)>;

impl Config {
    /// Build the effective config: defaults, then `file` (if any), then the environment
    /// (`env` lists `(name, value)` pairs, normally `std::env::vars()`), then `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
            })?;
            cfg.apply_toml(&text)?;
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        for key in KEYS {
            let var = format!("RSP_{}", key.to_ascii_uppercase());
            if let Some((_, v)) = env.iter().find(|(k, _)| *k == var) {
                cfg.set(key, v)?;
            }
        }
        for (key, value) in flags {
            cfg.set(key, value)?;
        }
        cfg.check_combination()?;
        Ok(cfg)
    }

    /// Rules that involve more than one key, checked once all layers are applied.
    fn check_combination(&self) -> Result<(), ConfigError> {
        let mode = self.tls_mode.as_str();
        match self.tls_mode {
            TlsMode::Off => return Ok(()),
            TlsMode::Files => {
                for (key, value) in [
                    ("tls_cert_file", &self.tls_cert_file),
                    ("tls_key_file", &self.tls_key_file),
                ] {
                    if value.is_none() {
                        return Err(ConfigError::new(
                            key,
                            format!("required when tls_mode is \"{mode}\" (a PEM file path)"),
                        ));
                    }
                }
            }
            TlsMode::Acme => {
                if self.acme_domains.is_empty() {
                    return Err(ConfigError::new(
                        "acme_domains",
                        format!(
                            "required when tls_mode is \"{mode}\": the names the certificate is for, like \"example.org,www.example.org\""
                        ),
                    ));
                }
            }
        }
        // Same port on the same or an overlapping (wildcard) address cannot both bind.
        let (a, b) = (self.tls_listen, self.listen);
        let overlap = a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified();
        if a.port() == b.port() && overlap {
            return Err(ConfigError::new(
                "tls_listen",
                format!(
                    "{} is also `listen`; HTTPS needs a port of its own (usually 443, with listen on 80)",
                    self.tls_listen
                ),
            ));
        }
        Ok(())
    }

    fn apply_toml(&mut self, text: &str) -> Result<(), ConfigError> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            // toml's message spans several lines (with a source excerpt); keep the first.
            let msg = e
                .message()
                .lines()
                .next()
                .unwrap_or("syntax error")
                .to_string();
            ConfigError::new("config", format!("not valid TOML: {msg}"))
        })?;
        for (key, value) in table {
            let Some(known) = KEYS.iter().find(|k| **k == key) else {
                return Err(ConfigError::new(&key, "unknown key"));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                // Tables: the string form of `webhooks` is JSON (also what
                // RSP_WEBHOOKS takes).
                toml::Value::Array(items) if *known == "webhooks" => serde_json::to_string(&items)
                    .map_err(|e| ConfigError::new(known, format!("cannot read the tables: {e}")))?,
                // A list of names reads naturally as an array: join it into the
                // comma form every other layer uses.
                toml::Value::Array(items) if *known == "acme_domains" => {
                    let mut names = Vec::with_capacity(items.len());
                    for item in items {
                        match item {
                            toml::Value::String(s) => names.push(s),
                            other => {
                                return Err(ConfigError::new(
                                    known,
                                    format!("expected names (strings), found {}", other.type_str()),
                                ))
                            }
                        }
                    }
                    names.join(",")
                }
                other => {
                    return Err(ConfigError::new(
                        known,
                        format!("expected a string or a number, found {}", other.type_str()),
                    ))
                }
            };
            self.set(known, &text)?;
        }
        Ok(())
    }

    /// Set one key from its string form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let err = |reason: String| ConfigError::new(key, reason);
        match key {
            "data_dir" => {
                if value.is_empty() {
                    return Err(err("must not be empty".into()));
                }
                self.data_dir = PathBuf::from(value);
            }
            "listen" => {
                self.listen = value.parse().map_err(|_| {
                    err(format!(
                        "{value:?} is not an address with a port, like 127.0.0.1:8880"
                    ))
                })?;
            }
            "docker_socket" => {
                if value.is_empty() {
                    return Err(err("must not be empty".into()));
                }
                self.docker_socket = PathBuf::from(value.trim_start_matches("unix://"));
            }
            "threads" => self.threads = parse_range(key, value, 1, 256)? as usize,
            "log_level" => {
                tracing_subscriber::EnvFilter::try_new(value)
                    .map_err(|e| err(format!("{value:?} is not a log filter: {e}")))?;
                self.log_level = value.to_string();
            }
            "log_format" => {
                self.log_format = match value {
                    "auto" => LogFormat::Auto,
                    "json" => LogFormat::Json,
                    "pretty" => LogFormat::Pretty,
                    _ => return Err(err(format!("{value:?} is not one of auto, json, pretty"))),
                }
            }
            "session_ttl_hours" => {
                self.session_ttl = Duration::from_secs(parse_range(key, value, 1, 24 * 365)? * 3600)
            }
            "login_attempts_per_minute" => {
                self.login_attempts_per_minute = parse_range(key, value, 1, 10_000)? as u32
            }
            "upload_max_mb" => {
                self.upload_max_bytes = parse_range(key, value, 1, 4096)? * 1024 * 1024
            }
            "shutdown_grace_secs" => {
                self.shutdown_grace = Duration::from_secs(parse_range(key, value, 0, 8)?)
            }
            "admin_password" => {
                if value.chars().count() < 8 || value.chars().count() > 256 {
                    return Err(err("must be 8 to 256 characters".into()));
                }
                self.admin_password = Some(value.to_string());
            }
            "app_max_websockets" => {
                self.app_max_websockets = parse_range(key, value, 1, 1_000_000)?
            }
            "app_idle_timeout_secs" => {
                self.app_idle_timeout =
                    Duration::from_secs(parse_range(key, value, 1, 7 * 24 * 3600)?)
            }
            "app_max_body_mb" => {
                self.app_max_body_bytes = parse_range(key, value, 1, 4096)? * 1024 * 1024
            }
            "static_routes" => self.static_routes = parse_static_routes(value).map_err(err)?,
            "tls_mode" => {
                self.tls_mode = match value {
                    "off" => TlsMode::Off,
                    "files" => TlsMode::Files,
                    "acme" => TlsMode::Acme,
                    _ => return Err(err(format!("{value:?} is not one of off, files, acme"))),
                }
            }
            "tls_listen" => {
                self.tls_listen = value.parse().map_err(|_| {
                    err(format!(
                        "{value:?} is not an address with a port, like 0.0.0.0:443"
                    ))
                })?;
            }
            "tls_cert_file" => self.tls_cert_file = optional_path(value),
            "tls_key_file" => self.tls_key_file = optional_path(value),
            "acme_ca_file" => self.acme_ca_file = optional_path(value),
            "acme_domains" => self.acme_domains = parse_domains(value).map_err(err)?,
            "acme_email" => {
                let v = value.trim();
                if v.is_empty() {
                    self.acme_email = None;
                } else {
                    let ok = v.split_once('@').is_some_and(|(user, host)| {
                        !user.is_empty() && host.contains('.') && !host.starts_with('.')
                    }) && !v.contains(|c: char| c.is_whitespace() || c == ',' || c == ':');
                    if !ok {
                        return Err(err(format!("{v:?} is not an email address")));
                    }
                    self.acme_email = Some(v.to_string());
                }
            }
            "acme_directory" => {
                self.acme_directory = match value.trim() {
                    "production" | "letsencrypt" => LETS_ENCRYPT_PRODUCTION.to_string(),
                    "staging" | "letsencrypt-staging" => LETS_ENCRYPT_STAGING.to_string(),
                    url if url.starts_with("https://") && url.len() > "https://".len() => {
                        url.to_string()
                    }
                    _ => {
                        return Err(err(format!(
                        "{value:?} is not \"production\", \"staging\" or an https:// directory URL"
                    )))
                    }
                }
            }
            "hsts_max_age_secs" => {
                // Two years is what the HSTS preload list asks for; more is a typo.
                self.hsts_max_age_secs = parse_range(key, value, 0, 2 * 365 * 24 * 3600)?
            }
            "admin_host" => self.admin_host = parse_admin_host(value).map_err(err)?,
            "app_csp_sandbox" => self.app_csp_sandbox = parse_bool(value).map_err(err)?,
            "max_connections" => {
                self.max_connections = match value.trim() {
                    "auto" | "" => None,
                    v => Some(parse_range(key, v, 16, u64::from(u32::MAX)).map_err(|_| {
                        err(format!(
                            "{value:?} is not \"auto\" or a whole number from 16 to {}",
                            u32::MAX
                        ))
                    })? as u32),
                }
            }
            "max_connections_per_ip" => {
                self.max_connections_per_ip =
                    parse_range(key, value, 1, u64::from(u32::MAX))? as u32
            }
            "request_head_timeout_secs" => {
                self.request_head_timeout = Duration::from_secs(parse_range(key, value, 1, 3600)?)
            }
            "tls_handshake_timeout_secs" => {
                self.tls_handshake_timeout = Duration::from_secs(parse_range(key, value, 1, 3600)?)
            }
            "metrics_interval_secs" => {
                self.metrics_interval_secs = parse_range(key, value, 0, 3600)?
            }
            "metrics_raw_retention_hours" => {
                self.metrics_raw_retention_hours = parse_range(key, value, 1, 7 * 24)?
            }
            "metrics_5m_retention_hours" => {
                self.metrics_5m_retention_hours = parse_range(key, value, 1, 30 * 24)?
            }
            "metrics_15m_retention_hours" => {
                self.metrics_15m_retention_hours = parse_range(key, value, 1, 90 * 24)?
            }
            "metrics_60m_retention_days" => {
                self.metrics_60m_retention_days = parse_range(key, value, 1, 3650)?
            }
            "status_history_retention_days" => {
                self.status_history_retention_days = parse_range(key, value, 1, 3650)?
            }
            "audit_retention_days" => {
                self.audit_retention_days = parse_range(key, value, 0, 36500)?
            }
            "metrics_listen" => {
                let v = value.trim();
                self.metrics_listen = if v.is_empty() || v == "off" {
                    None
                } else {
                    Some(v.parse().map_err(|_| {
                        err(format!(
                            "{value:?} is not an address with a port, like 10.0.0.5:9464 (or \"off\")"
                        ))
                    })?)
                };
            }
            "webhooks" => self.webhooks = parse_webhooks(value).map_err(err)?,
            "webhook_dedup_secs" => {
                self.webhook_dedup = Duration::from_secs(parse_range(key, value, 0, 24 * 3600)?)
            }
            "webhook_history" => {
                self.webhook_history = parse_range(key, value, 1, 100_000)? as usize
            }
            _ => return Err(err("unknown key".into())),
        }
        Ok(())
    }

    /// The effective config as TOML, secrets replaced by `"<redacted>"`.
    pub fn render_redacted(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let value = self.get(key);
            let _ = match value {
                None => writeln!(out, "# {key} is not set"),
                Some(_) if SECRET_KEYS.contains(key) => writeln!(out, "{key} = \"<redacted>\""),
                Some(v) => writeln!(out, "{key} = {v}"),
            };
        }
        out
    }

    /// A key's value as a TOML literal, `None` when unset.
    fn get(&self, key: &str) -> Option<String> {
        let quote = |s: &str| toml::Value::String(s.to_string()).to_string();
        Some(match key {
            "data_dir" => quote(&self.data_dir.to_string_lossy()),
            "listen" => quote(&self.listen.to_string()),
            "docker_socket" => quote(&self.docker_socket.to_string_lossy()),
            "threads" => self.threads.to_string(),
            "log_level" => quote(&self.log_level),
            "log_format" => quote(match self.log_format {
                LogFormat::Auto => "auto",
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            }),
            "session_ttl_hours" => (self.session_ttl.as_secs() / 3600).to_string(),
            "login_attempts_per_minute" => self.login_attempts_per_minute.to_string(),
            "upload_max_mb" => (self.upload_max_bytes / (1024 * 1024)).to_string(),
            "shutdown_grace_secs" => self.shutdown_grace.as_secs().to_string(),
            "admin_password" => return self.admin_password.as_ref().map(|p| quote(p)),
            "app_max_websockets" => self.app_max_websockets.to_string(),
            "app_idle_timeout_secs" => self.app_idle_timeout.as_secs().to_string(),
            "app_max_body_mb" => (self.app_max_body_bytes / (1024 * 1024)).to_string(),
            "static_routes" if self.static_routes.is_empty() => return None,
            "static_routes" => quote(
                &self
                    .static_routes
                    .iter()
                    .map(|(slug, addr)| format!("{slug}={addr}"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "tls_mode" => quote(self.tls_mode.as_str()),
            "tls_listen" => quote(&self.tls_listen.to_string()),
            "tls_cert_file" => {
                return self
                    .tls_cert_file
                    .as_ref()
                    .map(|p| quote(&p.to_string_lossy()))
            }
            "tls_key_file" => {
                return self
                    .tls_key_file
                    .as_ref()
                    .map(|p| quote(&p.to_string_lossy()))
            }
            "acme_domains" => quote(&self.acme_domains.join(",")),
            "acme_email" => return self.acme_email.as_ref().map(|e| quote(e)),
            "acme_directory" => quote(&self.acme_directory),
            "acme_ca_file" => {
                return self
                    .acme_ca_file
                    .as_ref()
                    .map(|p| quote(&p.to_string_lossy()))
            }
            "hsts_max_age_secs" => self.hsts_max_age_secs.to_string(),
            "admin_host" => return self.admin_host.as_ref().map(|h| quote(h)),
            "app_csp_sandbox" => self.app_csp_sandbox.to_string(),
            "max_connections" => match self.max_connections {
                Some(n) => n.to_string(),
                None => quote("auto"),
            },
            "max_connections_per_ip" => self.max_connections_per_ip.to_string(),
            "request_head_timeout_secs" => self.request_head_timeout.as_secs().to_string(),
            "tls_handshake_timeout_secs" => self.tls_handshake_timeout.as_secs().to_string(),
            "metrics_interval_secs" => self.metrics_interval_secs.to_string(),
            "metrics_raw_retention_hours" => self.metrics_raw_retention_hours.to_string(),
            "metrics_5m_retention_hours" => self.metrics_5m_retention_hours.to_string(),
            "metrics_15m_retention_hours" => self.metrics_15m_retention_hours.to_string(),
            "metrics_60m_retention_days" => self.metrics_60m_retention_days.to_string(),
            "status_history_retention_days" => self.status_history_retention_days.to_string(),
            "audit_retention_days" => self.audit_retention_days.to_string(),
            "metrics_listen" => return self.metrics_listen.map(|a| quote(&a.to_string())),
            "webhooks" if self.webhooks.is_empty() => return None,
            // Inline tables; secrets are never printed.
            "webhooks" => {
                let hooks: Vec<String> = self
                    .webhooks
                    .iter()
                    .map(|h| {
                        let events: Vec<String> = h.events.iter().map(|e| quote(e)).collect();
                        let secret = if h.secret.is_some() {
                            ", secret = \"<redacted>\""
                        } else {
                            ""
                        };
                        format!(
                            "{{ url = {}, events = [{}]{secret} }}",
                            quote(&h.url),
                            events.join(", ")
                        )
                    })
                    .collect();
                format!("[{}]", hooks.join(", "))
            }
            "webhook_dedup_secs" => self.webhook_dedup.as_secs().to_string(),
            "webhook_history" => self.webhook_history.to_string(),
            _ => return None,
        })
    }

    /// History retention in the store's terms.
    pub fn retention(&self) -> crate::store::Retention {
        let h = |n: u64| i64::try_from(n * 3600).unwrap_or(i64::MAX);
        crate::store::Retention {
            raw_secs: h(self.metrics_raw_retention_hours),
            min5_secs: h(self.metrics_5m_retention_hours),
            min15_secs: h(self.metrics_15m_retention_hours),
            min60_secs: h(self.metrics_60m_retention_days * 24),
            status_secs: h(self.status_history_retention_days * 24),
        }
    }

    pub fn state_file(&self) -> PathBuf {
        self.data_dir.join("state.redb")
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }

    /// The control plane's unix socket: only the proxy (same user) can reach it, which
    /// is what lets the control plane trust the forwarding headers the proxy sets.
    pub fn control_socket(&self) -> PathBuf {
        self.data_dir.join("control.sock")
    }
}

/// `webhooks` in string form: a JSON array of `{url, events?, secret?}` (the TOML
/// array of tables is turned into this). Event names are checked here so a typo
/// stops the start instead of silently never firing.
fn parse_webhooks(value: &str) -> Result<Vec<WebhookConfig>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let hooks: Vec<WebhookConfig> = serde_json::from_str(value)
        .map_err(|e| format!("expected a list of {{url, events, secret}} tables ({e})"))?;
    for (i, h) in hooks.iter().enumerate() {
        let n = i + 1;
        let rest = h
            .url
            .strip_prefix("https://")
            .or_else(|| h.url.strip_prefix("http://"));
        let ok = rest.is_some_and(|r| !r.is_empty())
            && h.url.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
        if !ok {
            return Err(format!(
                "webhook {n}: url {:?} is not an http:// or https:// URL",
                h.url
            ));
        }
        for e in &h.events {
            if crate::alerts::EventKind::parse(e).is_none() {
                return Err(format!(
                    "webhook {n}: unknown event {e:?}; known: {}",
                    crate::alerts::EventKind::ALL
                        .iter()
                        .map(|k| k.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        if h.secret.as_ref().is_some_and(|s| s.is_empty()) {
            return Err(format!(
                "webhook {n}: secret is empty; leave it out instead"
            ));
        }
    }
    Ok(hooks)
}

/// `slug=host:port[,slug=host:port…]`; an empty value means none. A slug given twice
/// gets both addresses as replicas.
fn parse_static_routes(value: &str) -> Result<Vec<(String, SocketAddr)>, String> {
    let mut out = Vec::new();
    for entry in value.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((slug, addr)) = entry.split_once('=') else {
            return Err(format!("{entry:?} is not slug=host:port"));
        };
        let slug = slug.trim();
        let slug_ok = (1..=64).contains(&slug.len())
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !crate::paths::is_admin_segment(slug);
        if !slug_ok {
            return Err(format!(
                "{slug:?} is not a usable slug (a-z, 0-9, '-'; not an admin path)"
            ));
        }
        let addr: SocketAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{addr:?} is not an address with a port, like 127.0.0.1:8081"))?;
        out.push((slug.to_string(), addr));
    }
    Ok(out)
}

/// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`, any case).
fn parse_bool(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// A host name (or IP literal) without scheme, port or path; empty unsets it.
fn parse_admin_host(value: &str) -> Result<Option<String>, String> {
    let v = value.trim().trim_end_matches('.').to_ascii_lowercase();
    if v.is_empty() {
        return Ok(None);
    }
    let ipv6 = v.starts_with('[')
        && v.ends_with(']')
        && v[1..v.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    let name = v.len() <= 253
        && v.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if ipv6 || name {
        Ok(Some(v))
    } else {
        Err(format!(
            "{value:?} is not a host name: give the name alone, like \"admin.example.org\" (no scheme, port or path)"
        ))
    }
}

/// An empty value unsets an optional path (so an env var can clear a file's setting).
fn optional_path(value: &str) -> Option<PathBuf> {
    (!value.trim().is_empty()).then(|| PathBuf::from(value.trim()))
}

/// `a.org, www.a.org` → `["a.org", "www.a.org"]`: lower case, duplicates dropped, order
/// kept (the first name is the certificate's main name). Only names an ACME CA can
/// validate over HTTP-01: no wildcards, no IP addresses.
fn parse_domains(value: &str) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = Vec::new();
    for raw in value.split(',') {
        let name = raw.trim().trim_end_matches('.').to_ascii_lowercase();
        if name.is_empty() {
            continue;
        }
        if name.starts_with("*.") {
            return Err(format!(
                "{name:?}: wildcard names need DNS-01 validation, which is not supported; list each name"
            ));
        }
        if name.parse::<std::net::IpAddr>().is_ok() {
            return Err(format!(
                "{name:?}: IP addresses are not supported, use a DNS name"
            ));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(format!(
                "{name:?} is not a DNS name (letters, digits, hyphens and dots; punycode for other scripts)"
            ));
        }
        if !out.contains(&name) {
            out.push(name);
        }
    }
    if out.len() > 100 {
        return Err(format!(
            "{} names; a certificate holds at most 100",
            out.len()
        ));
    }
    Ok(out)
}

fn parse_range(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ConfigError> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(ConfigError::new(
            key,
            format!("{value:?} is not a whole number from {min} to {max}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_work_on_a_fresh_machine() {
        let cfg = Config::load(None, env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.data_dir, PathBuf::from("./data"));
        assert_eq!(cfg.listen.to_string(), "127.0.0.1:8880");
        assert_eq!(cfg.docker_socket, PathBuf::from("/var/run/docker.sock"));
    }

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "threads = 3\nlisten = \"127.0.0.1:9000\"\ndata_dir = \"/f\"\n",
        )
        .unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[("RSP_LISTEN", "127.0.0.1:9001"), ("RSP_DATA_DIR", "/e")]),
            &vec![("data_dir", "/flag".to_string())],
        )
        .unwrap();
        assert_eq!(cfg.threads, 3, "file beats default");
        assert_eq!(cfg.listen.port(), 9001, "env beats file");
        assert_eq!(cfg.data_dir, PathBuf::from("/flag"), "flag beats env");
    }

    #[test]
    fn webhooks_from_toml_tables_and_env_json() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "metrics_listen = \"10.0.0.5:9464\"\nwebhook_dedup_secs = 60\n\
             [[webhooks]]\nurl = \"https://hooks.example.org/x\"\nevents = [\"app.crashed\", \"app.recovered\"]\nsecret = \"s3cret\"\n\
             [[webhooks]]\nurl = \"http://10.0.0.9:8080/alerts\"\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.metrics_listen.unwrap().port(), 9464);
        assert_eq!(cfg.webhook_dedup.as_secs(), 60);
        assert_eq!(cfg.webhooks.len(), 2);
        assert_eq!(cfg.webhooks[0].events, vec!["app.crashed", "app.recovered"]);
        assert_eq!(cfg.webhooks[0].secret.as_deref(), Some("s3cret"));
        assert!(cfg.webhooks[1].events.is_empty() && cfg.webhooks[1].secret.is_none());
        let shown = cfg.render_redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("secret = \"<redacted>\""), "{shown}");
        // The printed form is valid TOML that loads back.
        let file2 = dir.path().join("c2.toml");
        std::fs::write(&file2, shown.replace("<redacted>", "x")).unwrap();
        let again = Config::load(Some(&file2), env(&[]), &vec![]).unwrap();
        assert_eq!(again.webhooks.len(), 2);

        let cfg = Config::load(
            None,
            env(&[("RSP_WEBHOOKS", r#"[{"url":"http://127.0.0.1:1/"}]"#)]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.webhooks[0].url, "http://127.0.0.1:1/");
        assert_eq!(cfg.metrics_listen, None, "off by default");

        for (bad, why) in [
            (r#"[{"url":"ftp://x/"}]"#, "not an http"),
            (
                r#"[{"url":"http://x/","events":["app.exploded"]}]"#,
                "unknown event",
            ),
            (r#"[{"url":"http://x/","secret":""}]"#, "secret is empty"),
            (r#"[{"url":"http://x/","sekret":"a"}]"#, "expected a list"),
        ] {
            let e = Config::load(None, env(&[("RSP_WEBHOOKS", bad)]), &vec![]).unwrap_err();
            assert_eq!(e.key, "webhooks");
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
        }
    }

    #[test]
    fn invalid_values_name_the_key() {
        let e = Config::load(None, env(&[("RSP_THREADS", "zero")]), &vec![]).unwrap_err();
        assert_eq!(e.key, "threads");
        assert!(e.to_string().starts_with("invalid config: threads: "));
        let e = Config::load(None, env(&[]), &vec![("listen", "nope".into())]).unwrap_err();
        assert_eq!(e.key, "listen");
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn toml_errors_are_one_line_and_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "listn");
        assert!(e.reason.contains("unknown key"));
        std::fs::write(&file, "threads = [1]\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "threads");
        std::fs::write(&file, "threads = \n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "config");
        assert_eq!(e.to_string().lines().count(), 1);
    }

    #[test]
    fn data_plane_limits() {
        let cfg = Config::load(None, env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.app_max_websockets, 1000);
        assert_eq!(cfg.app_idle_timeout, Duration::from_secs(3600));
        assert_eq!(cfg.app_max_body_bytes, 16 * 1024 * 1024);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "app_max_websockets = 50\napp_max_body_mb = 2\n").unwrap();
        let cfg = Config::load(
            Some(&file),
            env(&[
                ("RSP_APP_IDLE_TIMEOUT_SECS", "90"),
                ("RSP_APP_MAX_WEBSOCKETS", "60"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.app_max_websockets, 60, "env beats file");
        assert_eq!(cfg.app_idle_timeout, Duration::from_secs(90));
        assert_eq!(cfg.app_max_body_bytes, 2 * 1024 * 1024);
        let text = cfg.render_redacted();
        assert!(text.contains("app_idle_timeout_secs = 90\n"), "{text}");
        assert!(text.contains("app_max_body_mb = 2\n"), "{text}");

        for (key, bad) in [
            ("RSP_APP_MAX_WEBSOCKETS", "0"),
            ("RSP_APP_IDLE_TIMEOUT_SECS", "soon"),
            ("RSP_APP_MAX_BODY_MB", "4097"),
        ] {
            let e = Config::load(None, env(&[(key, bad)]), &vec![]).unwrap_err();
            assert_eq!(format!("RSP_{}", e.key.to_ascii_uppercase()), key);
        }
    }

    #[test]
    fn connection_limits() {
        let cfg = Config::load(None, env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.max_connections, None);
        assert_eq!(cfg.max_connections_per_ip, 2048);
        assert_eq!(cfg.request_head_timeout, Duration::from_secs(10));
        assert_eq!(cfg.tls_handshake_timeout, Duration::from_secs(10));
        let text = cfg.render_redacted();
        assert!(text.contains("max_connections = \"auto\"\n"), "{text}");

        let cfg = Config::load(
            None,
            env(&[
                ("RSP_MAX_CONNECTIONS", "5000"),
                ("RSP_MAX_CONNECTIONS_PER_IP", "100"),
                ("RSP_REQUEST_HEAD_TIMEOUT_SECS", "3"),
                ("RSP_TLS_HANDSHAKE_TIMEOUT_SECS", "4"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.max_connections, Some(5000));
        assert_eq!(cfg.max_connections_per_ip, 100);
        assert_eq!(cfg.request_head_timeout, Duration::from_secs(3));
        assert_eq!(cfg.tls_handshake_timeout, Duration::from_secs(4));
        assert!(cfg.render_redacted().contains("max_connections = 5000\n"));
        let back = Config::load(None, env(&[("RSP_MAX_CONNECTIONS", "auto")]), &vec![]).unwrap();
        assert_eq!(back.max_connections, None);

        for (key, bad) in [
            ("RSP_MAX_CONNECTIONS", "lots"),
            ("RSP_MAX_CONNECTIONS", "3"),
            ("RSP_MAX_CONNECTIONS_PER_IP", "0"),
            ("RSP_REQUEST_HEAD_TIMEOUT_SECS", "0"),
            ("RSP_TLS_HANDSHAKE_TIMEOUT_SECS", "x"),
        ] {
            let e = Config::load(None, env(&[(key, bad)]), &vec![]).unwrap_err();
            assert_eq!(format!("RSP_{}", e.key.to_ascii_uppercase()), key);
        }
    }

    #[test]
    fn static_routes() {
        let cfg = Config::load(
            None,
            env(&[(
                "RSP_STATIC_ROUTES",
                "echo=127.0.0.1:9001, echo=127.0.0.1:9002,b-2=[::1]:80",
            )]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.static_routes.len(), 3);
        assert_eq!(cfg.static_routes[1].0, "echo");
        assert_eq!(cfg.static_routes[2].1.to_string(), "[::1]:80");
        assert!(cfg
            .render_redacted()
            .contains("static_routes = \"echo=127.0.0.1:9001,echo=127.0.0.1:9002,b-2=[::1]:80\""));
        assert!(Config::default()
            .render_redacted()
            .contains("# static_routes is not set"));
        for bad in [
            "echo",
            "api=127.0.0.1:1",
            "Echo=127.0.0.1:1",
            "echo=localhost",
        ] {
            let e = Config::load(None, env(&[("RSP_STATIC_ROUTES", bad)]), &vec![]).unwrap_err();
            assert_eq!(e.key, "static_routes", "{bad}");
        }
    }

    #[test]
    fn secrets_are_redacted() {
        let cfg = Config::load(
            None,
            env(&[("RSP_ADMIN_PASSWORD", "hunter2hunter2")]),
            &vec![],
        )
        .unwrap();
        let text = cfg.render_redacted();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("admin_password = \"<redacted>\""));
        // The printed config is itself a valid config file (minus the redacted secret).
        let reparsed: toml::Table = text.parse().unwrap();
        assert_eq!(reparsed["listen"].as_str(), Some("127.0.0.1:8880"));
    }
    #[test]
    fn tls_is_off_by_default_and_printed() {
        let cfg = Config::load(None, env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.tls_mode, TlsMode::Off);
        assert_eq!(cfg.tls_listen.to_string(), "0.0.0.0:443");
        assert_eq!(cfg.acme_directory, LETS_ENCRYPT_PRODUCTION);
        assert_eq!(cfg.hsts_max_age_secs, 0);
        let text = cfg.render_redacted();
        assert!(text.contains("tls_mode = \"off\""));
        assert!(text.contains("# tls_cert_file is not set"));
        let reparsed: toml::Table = text.parse().unwrap();
        assert_eq!(reparsed["tls_listen"].as_str(), Some("0.0.0.0:443"));
    }

    #[test]
    fn tls_files_mode_needs_both_files() {
        let e = Config::load(None, env(&[("RSP_TLS_MODE", "files")]), &vec![]).unwrap_err();
        assert_eq!(e.key, "tls_cert_file");
        assert!(
            e.reason.contains("required when tls_mode is \"files\""),
            "{e}"
        );
        let e = Config::load(
            None,
            env(&[("RSP_TLS_MODE", "files"), ("RSP_TLS_CERT_FILE", "/c.pem")]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "tls_key_file");
        let cfg = Config::load(
            None,
            env(&[
                ("RSP_TLS_MODE", "files"),
                ("RSP_TLS_CERT_FILE", "/c.pem"),
                ("RSP_TLS_KEY_FILE", "/k.pem"),
                ("RSP_TLS_LISTEN", "127.0.0.1:8443"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.tls_mode, TlsMode::Files);
        assert_eq!(cfg.tls_cert_file, Some(PathBuf::from("/c.pem")));
        assert_eq!(cfg.tls_listen.port(), 8443);
    }

    #[test]
    fn tls_mode_and_listen_errors_name_the_key() {
        let e = Config::load(None, env(&[("RSP_TLS_MODE", "on")]), &vec![]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config: tls_mode: \"on\" is not one of off, files, acme"
        );
        let e = Config::load(None, env(&[("RSP_TLS_LISTEN", "443")]), &vec![]).unwrap_err();
        assert_eq!(e.key, "tls_listen");
        let e = Config::load(
            None,
            env(&[
                ("RSP_TLS_MODE", "acme"),
                ("RSP_ACME_DOMAINS", "a.example"),
                ("RSP_LISTEN", "127.0.0.1:9443"),
                ("RSP_TLS_LISTEN", "127.0.0.1:9443"),
            ]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "tls_listen");
        assert!(e.reason.contains("port of its own"), "{e}");
        // The default wildcard tls_listen overlaps a loopback listen on the same port.
        let e = Config::load(
            None,
            env(&[
                ("RSP_TLS_MODE", "acme"),
                ("RSP_ACME_DOMAINS", "a.example"),
                ("RSP_LISTEN", "127.0.0.1:443"),
            ]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "tls_listen");
    }

    #[test]
    fn acme_settings_parse_and_validate() {
        let e = Config::load(None, env(&[("RSP_TLS_MODE", "acme")]), &vec![]).unwrap_err();
        assert_eq!(e.key, "acme_domains");
        let cfg = Config::load(
            None,
            env(&[
                ("RSP_TLS_MODE", "acme"),
                (
                    "RSP_ACME_DOMAINS",
                    " Example.ORG, www.example.org.,example.org ",
                ),
                ("RSP_ACME_EMAIL", "ops@example.org"),
                ("RSP_ACME_DIRECTORY", "staging"),
                ("RSP_ACME_CA_FILE", "/etc/pebble.pem"),
                ("RSP_HSTS_MAX_AGE_SECS", "31536000"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.acme_domains, vec!["example.org", "www.example.org"]);
        assert_eq!(cfg.acme_email.as_deref(), Some("ops@example.org"));
        assert_eq!(cfg.acme_directory, LETS_ENCRYPT_STAGING);
        assert_eq!(cfg.acme_ca_file, Some(PathBuf::from("/etc/pebble.pem")));
        assert_eq!(cfg.hsts_max_age_secs, 31_536_000);

        let bad = |key: &str, value: &str| {
            let mut cfg = Config::default();
            let e = cfg.set(key, value).unwrap_err();
            assert_eq!(e.key, key);
            e.reason
        };
        assert!(bad("acme_domains", "*.example.org").contains("wildcard"));
        assert!(bad("acme_domains", "127.0.0.1").contains("IP addresses"));
        assert!(bad("acme_domains", "a_b.example").contains("not a DNS name"));
        assert!(bad("acme_domains", "-a.example").contains("not a DNS name"));
        assert!(bad("acme_email", "not-an-address").contains("not an email address"));
        assert!(bad("acme_email", "a@b.org,c@d.org").contains("not an email address"));
        assert!(bad("acme_directory", "http://insecure/dir").contains("https://"));
        assert!(bad("hsts_max_age_secs", "-1").contains("whole number"));

        let mut cfg = Config::default();
        cfg.set("acme_directory", "https://127.0.0.1:14000/dir")
            .unwrap();
        assert_eq!(cfg.acme_directory, "https://127.0.0.1:14000/dir");
        cfg.set("acme_directory", "production").unwrap();
        assert_eq!(cfg.acme_directory, LETS_ENCRYPT_PRODUCTION);
    }

    #[test]
    fn acme_domains_may_be_a_toml_array() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "tls_mode = \"acme\"\nacme_domains = [\"a.example\", \"b.example\"]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.acme_domains, vec!["a.example", "b.example"]);
        // Printed as the comma form, which reads back the same.
        let text = cfg.render_redacted();
        assert!(
            text.contains("acme_domains = \"a.example,b.example\""),
            "{text}"
        );
        std::fs::write(&file, "acme_domains = [1]\n").unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "acme_domains");
    }

    #[test]
    fn admin_host_and_csp_switch() {
        let cfg = Config::default();
        assert_eq!(cfg.admin_host, None);
        assert!(cfg.app_csp_sandbox);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "admin_host = \"Admin.Example.org.\"\napp_csp_sandbox = false\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.admin_host.as_deref(), Some("admin.example.org"));
        assert!(!cfg.app_csp_sandbox);
        let text = cfg.render_redacted();
        assert!(
            text.contains("admin_host = \"admin.example.org\""),
            "{text}"
        );
        assert!(text.contains("app_csp_sandbox = false"), "{text}");

        let cfg = Config::load(
            None,
            env(&[("RSP_ADMIN_HOST", "[::1]"), ("RSP_APP_CSP_SANDBOX", "1")]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.admin_host.as_deref(), Some("[::1]"));
        assert!(cfg.app_csp_sandbox);

        let bad = |key: &str, value: &str| {
            let mut cfg = Config::default();
            let e = cfg.set(key, value).unwrap_err();
            assert_eq!(e.key, key);
            e.reason
        };
        for v in [
            "admin.example.org:8443",
            "https://admin.example.org",
            "a/b",
            "a b",
            "*.x",
        ] {
            assert!(bad("admin_host", v).contains("not a host name"), "{v}");
        }
        assert!(bad("app_csp_sandbox", "maybe").contains("not true or false"));
        let mut cfg = Config::default();
        cfg.set("admin_host", "x.org").unwrap();
        cfg.set("admin_host", "").unwrap();
        assert_eq!(cfg.admin_host, None, "an empty value unsets it");
    }
}
