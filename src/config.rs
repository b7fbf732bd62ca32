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
        Ok(cfg)
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
            _ => return None,
        })
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
}
