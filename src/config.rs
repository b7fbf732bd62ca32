//! One typed configuration, assembled from four layers (later wins):
//! built-in defaults → TOML file (`--config`) → `RSP_*` environment → command-line flags.
//!
//! Every key is declared once, in the `config_keys!` table below: its doc line, field,
//! type, default, whether a reload applies it, its parser and how it prints. From that
//! one declaration come the `Config` struct, its defaults, the TOML file's serde struct
//! (unknown keys refused), the `RSP_<KEY>` variables, the `--<key>` flags,
//! `rserve-proxy config` (secrets redacted) and docs/configuration.md
//! (`rserve-proxy config --docs`). Secret keys also take `<key>_file`: the value is read
//! from that file (systemd `LoadCredential=`, Docker secrets).
//!
//! Every layer goes through the same per-key parser, so an invalid value names its key
//! and the reason the same way wherever it came from.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

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
    /// Under systemd (stderr is the journal): plain lines with `<N>` priorities; JSON
    /// when stderr is another non-terminal; human-readable on a terminal.
    Auto,
    Json,
    Pretty,
}

impl LogFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Json => "json",
            LogFormat::Pretty => "pretty",
        }
    }
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

/// When a changed key takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reload {
    /// Applied by a reload (SIGHUP, `systemctl reload`).
    Live,
    /// Read at start only; a reload that changes it logs "needs a restart".
    Restart,
}

/// One configuration key, as declared in `config_keys!`.
pub struct Key {
    /// The TOML name; `RSP_<NAME>` in the environment, `--<name-with-dashes>` as a flag.
    pub name: &'static str,
    /// For secrets: the `<name>_file` key that reads the value from a file. Secret keys
    /// are redacted when printed and have no flag of their own (only the `_file` one),
    /// so the secret never shows on a command line.
    pub file_key: Option<&'static str>,
    pub reload: Reload,
    /// What it means (Markdown, one paragraph).
    pub doc: &'static str,
    set: fn(&mut Config, &str) -> Result<(), String>,
    get: fn(&Config) -> Option<String>,
}

impl Key {
    pub fn is_secret(&self) -> bool {
        self.file_key.is_some()
    }

    /// `RSP_` + the name in upper case.
    pub fn env_var(&self) -> String {
        env_name(self.name)
    }

    /// `--` + the name with dashes (none for secrets: see `file_key`).
    pub fn flag(&self) -> Option<String> {
        (!self.is_secret()).then(|| flag_name(self.name))
    }

    /// The value as a TOML literal, `None` when unset (not redacted).
    pub fn value(&self, config: &Config) -> Option<String> {
        (self.get)(config)
    }
}

fn env_name(key: &str) -> String {
    format!("RSP_{}", key.to_ascii_uppercase())
}

fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// `None`, or `Some("<file key>")` when the declaration names one.
macro_rules! file_key {
    () => {
        None
    };
    ($file:ident) => {
        Some(stringify!($file))
    };
}

/// The one declaration of every key. Each entry:
///
/// ```text
/// /// Doc (what it means; becomes docs/configuration.md).
/// key_name [(key_name_file) if secret] => field: Type = default, Live|Restart,
///     parse |value: &str| -> Result<Type, String>, show |&Type| -> Option<TOML literal>;
/// ```
///
/// Keys print (and document) in declaration order.
macro_rules! config_keys {
    ($(
        $(#[doc = $doc:literal])+
        $key:ident $(($file:ident))? => $field:ident: $ty:ty = $default:expr, $reload:ident,
            parse $parse:expr, show $show:expr;
    )*) => {
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
        }

        impl Default for Config {
            fn default() -> Self {
                Config { $( $field: $default, )* }
            }
        }

        /// The TOML file's shape: every key (and `_file` variant) optional, anything
        /// else refused. Values stay TOML values here and go through the key's parser
        /// like the other layers.
        #[derive(Debug, Default, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct FileLayer {
            $(
                #[serde(default)]
                $key: Option<toml::Value>,
                $( #[serde(default)] $file: Option<toml::Value>, )?
            )*
        }

        impl FileLayer {
            /// `(value, value of its _file variant)` of each key, in `KEYS` order.
            fn into_entries(self) -> Vec<(Option<toml::Value>, Option<toml::Value>)> {
                vec![$( (
                    self.$key,
                    None::<toml::Value> $( .or(self.$file) )?,
                ), )*]
            }
        }

        /// Every key, in the order `rserve-proxy config` prints them.
        pub static KEYS: &[Key] = &[$(
            Key {
                name: stringify!($key),
                file_key: file_key!($($file)?),
                reload: Reload::$reload,
                doc: concat!($($doc, "\n"),+),
                set: |config, value| {
                    let parse: fn(&str) -> Result<$ty, String> = $parse;
                    config.$field = parse(value)?;
                    Ok(())
                },
                get: |config| {
                    let show: fn(&$ty) -> Option<String> = $show;
                    show(&config.$field)
                },
            },
        )*];
    };
}

config_keys! {
    /// Where `state.redb`, uploads and the control-plane socket live.
    data_dir => data_dir: PathBuf = PathBuf::from("./data"), Restart,
        parse |v| non_empty(v).map(PathBuf::from), show |p| show_path(p);
    /// The public listener (pingora), `address:port`.
    listen => listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8880)), Restart,
        parse |v| parse_addr(v, "127.0.0.1:8880"), show show_addr;
    /// Docker Engine API socket (a path; `unix://` is accepted).
    docker_socket => docker_socket: PathBuf = PathBuf::from("/var/run/docker.sock"), Restart,
        parse |v| non_empty(v).map(|v| PathBuf::from(v.trim_start_matches("unix://"))),
        show |p| show_path(p);
    /// Worker threads of the proxy service (1 to 256).
    threads => threads: usize = 2, Restart,
        parse |v| range(v, 1, 256).map(|n| n as usize), show show_display;
    /// Log filter, like `info` or `rserve_proxy=debug,pingora=warn` (`RUST_LOG` syntax).
    /// `RUST_LOG`, when set, is used instead.
    log_level => log_level: String = "info".to_string(), Live,
        parse |v| {
            tracing_subscriber::EnvFilter::try_new(v)
                .map_err(|e| format!("{v:?} is not a log filter: {e}"))?;
            Ok(v.to_string())
        },
        show |s| show_str(s);
    /// `auto`, `json` or `pretty`. `auto`: under systemd (stderr is the journal, as
    /// `JOURNAL_STREAM` says) plain lines with `<N>` syslog priority prefixes, which
    /// journald stores as `PRIORITY=`; JSON when stderr is another non-terminal;
    /// human-readable on a terminal.
    log_format => log_format: LogFormat = LogFormat::Auto, Restart,
        parse |v| match v {
            "auto" => Ok(LogFormat::Auto),
            "json" => Ok(LogFormat::Json),
            "pretty" => Ok(LogFormat::Pretty),
            _ => Err(format!("{v:?} is not one of auto, json, pretty")),
        },
        show |f| Some(quote(f.as_str()));
    /// Lifetime of a login session, hours (1 to 8760).
    session_ttl_hours => session_ttl: Duration = Duration::from_secs(24 * 3600), Live,
        parse |v| range(v, 1, 24 * 365).map(|h| Duration::from_secs(h * 3600)),
        show |d| Some((d.as_secs() / 3600).to_string());
    /// Login attempts allowed per client IP per minute; more get 429.
    login_attempts_per_minute => login_attempts_per_minute: u32 = 10, Live,
        parse |v| range(v, 1, 10_000).map(|n| n as u32), show show_display;
    /// Largest accepted upload (the multipart file itself), MiB.
    upload_max_mb => upload_max_bytes: u64 = 50 * 1024 * 1024, Live,
        parse |v| range(v, 1, 4096).map(|n| n * 1024 * 1024),
        show |b| Some((b / (1024 * 1024)).to_string());
    /// Seconds given to open connections on SIGTERM/SIGINT before runtimes stop (0 to 8;
    /// the process exits within 10 s).
    shutdown_grace_secs => shutdown_grace: Duration = Duration::from_secs(2), Restart,
        parse |v| range(v, 0, 8).map(Duration::from_secs), show show_secs;
    /// After a binary upgrade (`rserve-proxy upgrade`, SIGUSR2; docs/upgrade.md): how
    /// long the old process keeps relaying its open connections (WebSockets) before
    /// closing them (Close 1001). It exits as soon as the last one ends. Seconds (0 to
    /// 86400).
    upgrade_drain_secs => upgrade_drain: Duration = Duration::from_secs(300), Restart,
        parse |v| range(v, 0, 86_400).map(Duration::from_secs), show show_secs;
    /// Password for the first `admin` account, used on the first start only (8 to 256
    /// characters); without it a password is generated and logged once.
    admin_password (admin_password_file) => admin_password: Option<String> = None, Restart,
        parse |v| {
            let n = v.chars().count();
            if !(8..=256).contains(&n) {
                return Err("must be 8 to 256 characters".into());
            }
            Ok(Some(v.to_string()))
        },
        show |p| p.as_deref().map(quote);
    /// Concurrent WebSocket connections per app; one more is refused with 503.
    app_max_websockets => app_max_websockets: u64 = 1000, Restart,
        parse |v| range(v, 1, 1_000_000), show show_display;
    /// A WebSocket with no traffic either way for this long is closed (Close 1001;
    /// checked every quarter of it, at most every second); an HTTP request whose app
    /// sends nothing for this long fails with 504. Seconds.
    app_idle_timeout_secs => app_idle_timeout: Duration = Duration::from_secs(3600), Restart,
        parse |v| range(v, 1, 7 * 24 * 3600).map(Duration::from_secs), show show_secs;
    /// Largest HTTP request body sent to an app, MiB; larger ones get 413.
    app_max_body_mb => app_max_body_bytes: u64 = 16 * 1024 * 1024, Restart,
        parse |v| range(v, 1, 4096).map(|n| n * 1024 * 1024),
        show |b| Some((b / (1024 * 1024)).to_string());
    /// Routes served without any app in the store (benchmarks, debugging):
    /// `slug=host:port` entries, comma-separated; a slug given twice gets both addresses
    /// as replicas. Logged at warn.
    static_routes => static_routes: Vec<(String, SocketAddr)> = Vec::new(), Restart,
        parse parse_static_routes,
        show |routes| {
            (!routes.is_empty()).then(|| {
                quote(
                    &routes
                        .iter()
                        .map(|(slug, addr)| format!("{slug}={addr}"))
                        .collect::<Vec<_>>()
                        .join(","),
                )
            })
        };
    /// `off` (plain HTTP), `files` (certificate and key from PEM files, reloaded when they
    /// change) or `acme` (certificates from an ACME CA via HTTP-01, renewed
    /// automatically).
    tls_mode => tls_mode: TlsMode = TlsMode::Off, Restart,
        parse |v| match v {
            "off" => Ok(TlsMode::Off),
            "files" => Ok(TlsMode::Files),
            "acme" => Ok(TlsMode::Acme),
            _ => Err(format!("{v:?} is not one of off, files, acme")),
        },
        show |m| Some(quote(m.as_str()));
    /// The HTTPS listener (when `tls_mode` is not `off`); `listen` then only redirects
    /// to it and answers ACME HTTP-01 challenges.
    tls_listen => tls_listen: SocketAddr = SocketAddr::from(([0, 0, 0, 0], 443)), Restart,
        parse |v| parse_addr(v, "0.0.0.0:443"), show show_addr;
    /// PEM certificate chain (leaf first), for `tls_mode = "files"`; a new file is
    /// picked up within 2 s.
    tls_cert_file => tls_cert_file: Option<PathBuf> = None, Restart,
        parse |v| Ok(optional_path(v)), show |p| p.as_deref().and_then(show_path);
    /// PEM private key, for `tls_mode = "files"`.
    tls_key_file => tls_key_file: Option<PathBuf> = None, Restart,
        parse |v| Ok(optional_path(v)), show |p| p.as_deref().and_then(show_path);
    /// Names on the ACME certificate, comma-separated or a TOML list (lower-cased,
    /// duplicates dropped; no wildcards or IP addresses).
    acme_domains => acme_domains: Vec<String> = Vec::new(), Restart,
        parse parse_domains, show |d| Some(quote(&d.join(",")));
    /// Contact address given to the ACME CA (expiry notices and policy mail).
    acme_email => acme_email: Option<String> = None, Restart,
        parse parse_email, show |e| e.as_deref().map(quote);
    /// ACME directory: `production` (Let's Encrypt), `staging` (Let's Encrypt's staging
    /// CA, untrusted certificates) or an `https://` directory URL.
    acme_directory => acme_directory: String = LETS_ENCRYPT_PRODUCTION.to_string(), Restart,
        parse |v| match v.trim() {
            "production" | "letsencrypt" => Ok(LETS_ENCRYPT_PRODUCTION.to_string()),
            "staging" | "letsencrypt-staging" => Ok(LETS_ENCRYPT_STAGING.to_string()),
            url if url.starts_with("https://") && url.len() > "https://".len() => {
                Ok(url.to_string())
            }
            _ => Err(format!(
                "{v:?} is not \"production\", \"staging\" or an https:// directory URL"
            )),
        },
        show |s| show_str(s);
    /// Extra PEM root(s) trusted for the connection to the ACME server itself (a
    /// private CA, Pebble).
    acme_ca_file => acme_ca_file: Option<PathBuf> = None, Restart,
        parse |v| Ok(optional_path(v)), show |p| p.as_deref().and_then(show_path);
    /// `Strict-Transport-Security: max-age=…` on HTTPS responses, seconds; 0 = no header.
    hsts_max_age_secs => hsts_max_age_secs: u64 = 0, Restart,
        // Two years is what the HSTS preload list asks for; more is a typo.
        parse |v| range(v, 0, 2 * 365 * 24 * 3600), show show_display;
    /// When set, the admin plane (`/api`, the UI, `/metrics`) answers only on this host
    /// name and apps only on other names (404 otherwise); ACME challenges are answered
    /// on every name. A host name without port.
    admin_host => admin_host: Option<String> = None, Restart,
        parse parse_admin_host, show |h| h.as_deref().map(quote);
    /// App responses get `Content-Security-Policy: sandbox …` (scripts run in an opaque
    /// origin, so an app page cannot act as the admin on the shared origin). Turn it off
    /// only together with `admin_host`.
    app_csp_sandbox => app_csp_sandbox: bool = true, Restart,
        parse parse_bool, show show_display;
    /// Concurrent client connections in total; more are closed at once. `auto`:
    /// (open-files limit − 256) / 3, logged at start.
    max_connections => max_connections: Option<u32> = None, Restart,
        parse |v| match v.trim() {
            "auto" | "" => Ok(None),
            n => range(n, 16, u64::from(u32::MAX))
                .map(|n| Some(n as u32))
                .map_err(|_| format!(
                    "{v:?} is not \"auto\" or a whole number from 16 to {}",
                    u32::MAX
                )),
        },
        show |m| Some(m.map_or_else(|| quote("auto"), |n| n.to_string()));
    /// Concurrent client connections per client address (IPv6: per /64); more are
    /// closed at once. Sized for a classroom behind one NAT.
    max_connections_per_ip => max_connections_per_ip: u32 = 2048, Restart,
        parse |v| range(v, 1, u64::from(u32::MAX)).map(|n| n as u32), show show_display;
    /// Time a client has for its first request head on a connection, seconds (later
    /// requests: 60 s idle, then this for the head).
    request_head_timeout_secs => request_head_timeout: Duration = Duration::from_secs(10),
        Restart,
        parse |v| range(v, 1, 3600).map(Duration::from_secs), show show_secs;
    /// Time a client has for the TLS handshake, seconds.
    tls_handshake_timeout_secs => tls_handshake_timeout: Duration = Duration::from_secs(10),
        Restart,
        parse |v| range(v, 1, 3600).map(Duration::from_secs), show show_secs;
    /// Seconds between metrics collector rounds; 0 turns the collector off.
    metrics_interval_secs => metrics_interval_secs: u64 = 15, Restart,
        parse |v| range(v, 0, 3600), show show_display;
    /// How long raw metric points are kept, hours.
    metrics_raw_retention_hours => metrics_raw_retention_hours: u64 = 1, Restart,
        parse |v| range(v, 1, 7 * 24), show show_display;
    /// How long 5-minute metric buckets are kept, hours.
    metrics_5m_retention_hours => metrics_5m_retention_hours: u64 = 6, Restart,
        parse |v| range(v, 1, 30 * 24), show show_display;
    /// How long 15-minute metric buckets are kept, hours.
    metrics_15m_retention_hours => metrics_15m_retention_hours: u64 = 24, Restart,
        parse |v| range(v, 1, 90 * 24), show show_display;
    /// How long 60-minute metric buckets are kept, days.
    metrics_60m_retention_days => metrics_60m_retention_days: u64 = 7, Restart,
        parse |v| range(v, 1, 3650), show show_display;
    /// How long the per-minute status history is kept, days.
    status_history_retention_days => status_history_retention_days: u64 = 7, Restart,
        parse |v| range(v, 1, 3650), show show_display;
    /// Audit log entries older than this many days are deleted; 0 keeps them all.
    audit_retention_days => audit_retention_days: u64 = 90, Restart,
        parse |v| range(v, 0, 36500), show show_display;
    /// An extra plain listener serving only `/metrics`, without authentication (for a
    /// private network, e.g. `10.0.0.5:9464`; see docs/metrics.md); `off` or unset: none.
    metrics_listen => metrics_listen: Option<SocketAddr> = None, Restart,
        parse |v| {
            let v = v.trim();
            if v.is_empty() || v == "off" {
                return Ok(None);
            }
            v.parse().map(Some).map_err(|_| {
                format!("{v:?} is not an address with a port, like 10.0.0.5:9464 (or \"off\")")
            })
        },
        show |a| a.as_ref().and_then(show_addr);
    /// Alert webhooks: `[[webhooks]]` tables with `url`, `events` and `secret` or
    /// `secret_file`; in the environment the same as a JSON list. Events:
    /// `app.crashed`, `app.unhealthy`, `app.recovered`, `app.build_failed`,
    /// `tls.renewal_failed`, `docker.unreachable` (none listed = all). `secret` adds
    /// `X-Rserve-Proxy-Signature: sha256=<HMAC>` and is redacted when printed;
    /// `secret_file` reads it from a file (one trailing newline trimmed).
    webhooks => webhooks: Vec<WebhookConfig> = Vec::new(), Live,
        parse parse_webhooks, show |h| show_webhooks(h);
    /// The same alert event for the same app is sent at most once per this window,
    /// seconds (a flapping app sends no storm).
    webhook_dedup_secs => webhook_dedup: Duration = Duration::from_secs(300), Restart,
        parse |v| range(v, 0, 24 * 3600).map(Duration::from_secs), show show_secs;
    /// Webhook deliveries kept in memory for `GET /api/alerts/deliveries`.
    webhook_history => webhook_history: usize = 100, Restart,
        parse |v| range(v, 1, 100_000).map(|n| n as usize), show show_display;
    /// Peers (CIDRs or addresses, comma-separated or a TOML list) whose
    /// `X-Forwarded-For/-Proto/-Host` are believed, e.g. a load balancer in front;
    /// from anyone else they are overwritten. Empty: trust no one.
    trusted_proxies => trusted_proxies: Vec<IpNet> = Vec::new(), Live,
        parse parse_cidrs,
        show |nets| {
            Some(quote(
                &nets.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(","),
            ))
        };
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

/// A `[[webhooks]]` table as written: the secret inline or in a file.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookEntry {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_file: Option<PathBuf>,
}

/// Values given on the command line, by key (already in string form). A `_file` key
/// (`admin_password_file`) reads the value from that file.
pub type Overrides = Vec<(&'static str, String)>;

/// A value as a layer gives it: inline, or the path of a file holding it.
enum Source {
    Inline(String),
    File { key: String, path: PathBuf },
}

impl Source {
    fn read(self) -> Result<String, ConfigError> {
        match self {
            Source::Inline(v) => Ok(v),
            Source::File { key, path } => read_secret_file(&key, &path),
        }
    }
}

/// The contents of a `*_file` setting, one trailing newline trimmed (what `echo` and
/// most editors leave).
fn read_secret_file(key: &str, path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

/// Environment variables that are ours but name no key: `RSP_CONFIG` (read by the
/// command line) and `RSP_TEST_*` (the test suite's own switches).
fn is_reserved_env(name: &str) -> bool {
    name == "RSP_CONFIG" || name.starts_with("RSP_TEST_")
}

impl Config {
    /// Build the effective config: defaults, then `file` (if any), then the environment
    /// (`env` lists `(name, value)` pairs, normally `std::env::vars()`), then `flags`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<Config, ConfigError> {
        Self::load_with_warnings(file, env, flags).map(|(c, _)| c)
    }

    /// [`Config::load`], plus warnings to log once logging is up: `RSP_*` variables
    /// that name no key (ignored, probably a typo).
    pub fn load_with_warnings(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: &Overrides,
    ) -> Result<(Config, Vec<String>), ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("config", format!("cannot read {}: {e}", path.display()))
            })?;
            cfg.apply_toml(&text)?;
        }
        let env: Vec<(String, String)> = env.into_iter().collect();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        for key in KEYS {
            let inline = lookup(&key.env_var());
            let file = key
                .file_key
                .and_then(|f| lookup(&env_name(f)).map(|p| (env_name(f), p)));
            let source = match (inline, file) {
                (Some(_), Some((var, _))) => {
                    return Err(ConfigError::new(
                        key.name,
                        format!("both {} and {var} are set; keep one", key.env_var()),
                    ))
                }
                (Some(v), None) => Source::Inline(v),
                (None, Some((_, path))) => Source::File {
                    key: key.file_key.unwrap_or(key.name).to_string(),
                    path: PathBuf::from(path),
                },
                (None, None) => continue,
            };
            cfg.set(key.name, &source.read()?)?;
        }
        let mut warnings = Vec::new();
        for (name, _) in &env {
            if name.starts_with("RSP_") && !is_reserved_env(name) && find_env(name).is_none() {
                let hint = closest(&name["RSP_".len()..].to_ascii_lowercase())
                    .map(|k| format!(" (did you mean {}?)", env_name(k)))
                    .unwrap_or_default();
                warnings.push(format!(
                    "environment variable {name} names no setting and is ignored{hint}; \
                     settings are listed by `rserve-proxy config --docs`"
                ));
            }
        }
        for (name, value) in flags {
            cfg.set_or_read_file(name, value)?;
        }
        cfg.check_combination()?;
        Ok((cfg, warnings))
    }

    /// Set a key, or — for a `<key>_file` name — the key from that file's contents.
    fn set_or_read_file(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        if let Some(key) = KEYS.iter().find(|k| k.file_key == Some(name)) {
            let v = read_secret_file(name, Path::new(value))?;
            return self.set(key.name, &v);
        }
        self.set(name, value)
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
        // Name an unknown key ourselves (serde's message lists every known one).
        for name in table.keys() {
            if find_toml(name).is_none() {
                let hint = closest(name)
                    .map(|k| format!(" (did you mean {k}?)"))
                    .unwrap_or_default();
                return Err(ConfigError::new(
                    name,
                    format!(
                        "unknown key{hint}; settings are listed by `rserve-proxy config --docs`"
                    ),
                ));
            }
        }
        let layer: FileLayer = serde::Deserialize::deserialize(table)
            .map_err(|e: toml::de::Error| ConfigError::new("config", e.message().to_string()))?;
        for (key, (value, file)) in KEYS.iter().zip(layer.into_entries()) {
            let name = key.name;
            let source = match (value, file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::new(
                        name,
                        format!(
                            "both {name} and {} are set; keep one",
                            key.file_key.unwrap_or_default()
                        ),
                    ))
                }
                (Some(v), None) => Source::Inline(toml_to_text(name, v)?),
                (None, Some(path)) => {
                    let file_key = key.file_key.unwrap_or(name);
                    Source::File {
                        key: file_key.to_string(),
                        path: PathBuf::from(toml_to_text(file_key, path)?),
                    }
                }
                (None, None) => continue,
            };
            self.set(name, &source.read()?)?;
        }
        Ok(())
    }

    /// Set one key from its string form.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let Some(k) = find_key(key) else {
            return Err(ConfigError::new(key, "unknown key"));
        };
        (k.set)(self, value).map_err(|reason| ConfigError::new(key, reason))
    }

    /// The effective config as TOML, secrets replaced by `"<redacted>"`.
    pub fn render_redacted(&self) -> String {
        let mut out = String::new();
        for key in KEYS {
            let _ = match key.value(self) {
                None => writeln!(out, "# {} is not set", key.name),
                Some(_) if key.is_secret() => writeln!(out, "{} = \"<redacted>\"", key.name),
                Some(v) => writeln!(out, "{} = {v}", key.name),
            };
        }
        out
    }

    /// The keys whose value differs between `self` and `other`, in declaration order.
    pub fn changed_keys(&self, other: &Config) -> Vec<&'static Key> {
        KEYS.iter()
            .filter(|k| k.value(self) != k.value(other))
            .collect()
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

pub fn find_key(name: &str) -> Option<&'static Key> {
    KEYS.iter().find(|k| k.name == name)
}

/// A name the TOML file accepts: a key or a secret's `_file` variant.
fn find_toml(name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.name == name || k.file_key == Some(name))
}

/// The key an `RSP_*` variable sets (directly or through its `_FILE` variant).
fn find_env(var: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.env_var() == var || k.file_key.is_some_and(|f| env_name(f) == var))
}

/// The declared key nearest to a misspelt one, when near enough to be a likely typo.
fn closest(name: &str) -> Option<&'static str> {
    KEYS.iter()
        .map(|k| (strsim::levenshtein(name, k.name), k.name))
        .filter(|(d, _)| *d <= 3)
        .min()
        .map(|(_, k)| k)
}

/// A TOML value in the string form every layer uses: strings as they are, numbers and
/// booleans written out, a list of strings comma-joined, a list of tables as JSON.
fn toml_to_text(key: &str, value: toml::Value) -> Result<String, ConfigError> {
    use toml::Value;
    Ok(match value {
        Value::String(s) => s,
        Value::Integer(i) => i.to_string(),
        Value::Boolean(b) => b.to_string(),
        Value::Array(items) if items.iter().all(Value::is_str) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(","),
        Value::Array(items) if items.iter().all(Value::is_table) => {
            serde_json::to_string(&items)
                .map_err(|e| ConfigError::new(key, format!("cannot read the tables: {e}")))?
        }
        Value::Array(items) => {
            let found = items
                .iter()
                .find(|v| !v.is_str())
                .map_or("a mixed list", Value::type_str);
            return Err(ConfigError::new(
                key,
                format!("expected a list of strings (or of tables), found {found} in the list"),
            ));
        }
        other => {
            return Err(ConfigError::new(
                key,
                format!(
                    "expected a string, a whole number or true/false, found {}",
                    other.type_str()
                ),
            ))
        }
    })
}

/// Clap arguments for every key's flag (secrets: only the `_file` flag), under one
/// help heading. `flag_overrides` reads them back.
pub fn flag_args() -> Vec<clap::Arg> {
    let mut args = Vec::new();
    for key in KEYS {
        let (id, help) = match key.file_key {
            Some(f) => (f, format!("File holding `{}` (secret)", key.name)),
            None => (key.name, first_sentence(key.doc)),
        };
        args.push(
            clap::Arg::new(id)
                // Built once per process; clap wants `'static` names.
                .long(&*Box::leak(id.replace('_', "-").into_boxed_str()))
                .value_name("VALUE")
                .global(true)
                .help(help)
                .help_heading("Settings (docs/configuration.md; later wins: file, RSP_*, flags)"),
        );
    }
    args
}

/// The settings given as flags, for [`Config::load`].
pub fn flag_overrides(matches: &clap::ArgMatches) -> Overrides {
    let mut out = Vec::new();
    for key in KEYS {
        let id = key.file_key.unwrap_or(key.name);
        if let Ok(Some(v)) = matches.try_get_one::<String>(id) {
            out.push((id, v.clone()));
        }
    }
    out
}

fn first_sentence(doc: &str) -> String {
    let one_line = doc.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.find(". ") {
        Some(i) => one_line[..=i].to_string(),
        None => one_line,
    }
}

/// Markers around the generated part of docs/configuration.md.
pub const DOCS_BEGIN: &str = "<!-- BEGIN generated by `rserve-proxy config --docs` -->";
pub const DOCS_END: &str = "<!-- END generated -->";

/// docs/configuration.md's generated part (`rserve-proxy config --docs`): every key
/// with its variable, flag, default and meaning, from the declarations.
pub fn docs_markdown() -> String {
    let defaults = Config::default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "<!-- From the declarations in src/config.rs; do not edit by hand. -->\n"
    );
    let _ = writeln!(
        out,
        "| Key | Environment | Flag | Default | On reload |\n|---|---|---|---|---|"
    );
    for key in KEYS {
        let default = key
            .value(&defaults)
            .map_or("not set".to_string(), |v| format!("`{v}`"));
        let flag = match key.file_key {
            Some(f) => format!("`{}`", flag_name(f)),
            None => format!("`{}`", flag_name(key.name)),
        };
        let env = match key.file_key {
            Some(f) => format!("`{}`, `{}`", key.env_var(), env_name(f)),
            None => format!("`{}`", key.env_var()),
        };
        let reload = match key.reload {
            Reload::Live => "applied",
            Reload::Restart => "needs a restart",
        };
        let _ = writeln!(
            out,
            "| [`{0}`](#{0}) | {env} | {flag} | {default} | {reload} |",
            key.name
        );
    }
    for key in KEYS {
        let doc = key.doc.split_whitespace().collect::<Vec<_>>().join(" ");
        let _ = writeln!(out, "\n### `{}`\n\n{doc}", key.name);
        if let Some(f) = key.file_key {
            let _ = writeln!(
                out,
                "\nSecret: printed as `\"<redacted>\"`, no flag of its own. `{f}` \
                 (`{}`, `{}`) names a file holding the value instead (one trailing \
                 newline is trimmed), for systemd `LoadCredential=` or Docker secrets.",
                env_name(f),
                flag_name(f)
            );
        }
    }
    out
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn show_str(s: &str) -> Option<String> {
    Some(quote(s))
}

fn show_path(p: &Path) -> Option<String> {
    Some(quote(&p.to_string_lossy()))
}

/// Numbers and booleans: their TOML literal is how they print.
fn show_display<T: std::fmt::Display>(v: &T) -> Option<String> {
    Some(v.to_string())
}

fn show_addr(a: &SocketAddr) -> Option<String> {
    Some(quote(&a.to_string()))
}

fn show_secs(d: &Duration) -> Option<String> {
    Some(d.as_secs().to_string())
}

/// Inline tables; secrets are never printed.
fn show_webhooks(hooks: &[WebhookConfig]) -> Option<String> {
    if hooks.is_empty() {
        return None;
    }
    let hooks: Vec<String> = hooks
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
    Some(format!("[{}]", hooks.join(", ")))
}

fn non_empty(v: &str) -> Result<&str, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(v)
    }
}

fn parse_addr(v: &str, example: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| format!("{v:?} is not an address with a port, like {example}"))
}

fn parse_email(value: &str) -> Result<Option<String>, String> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let ok = v.split_once('@').is_some_and(|(user, host)| {
        !user.is_empty() && host.contains('.') && !host.starts_with('.')
    }) && !v.contains(|c: char| c.is_whitespace() || c == ',' || c == ':');
    if !ok {
        return Err(format!("{v:?} is not an email address"));
    }
    Ok(Some(v.to_string()))
}

/// `10.0.0.0/8, 192.168.1.7, ::1` → networks (an address alone is a /32 or /128).
fn parse_cidrs(value: &str) -> Result<Vec<IpNet>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let net = match item.parse::<IpNet>() {
            Ok(n) => n.trunc(),
            Err(_) => item
                .parse::<std::net::IpAddr>()
                .map(IpNet::from)
                .map_err(|_| {
                    format!("{item:?} is not an address or a CIDR like 10.0.0.0/8 or fd00::/8")
                })?,
        };
        if !out.contains(&net) {
            out.push(net);
        }
    }
    Ok(out)
}

fn range(value: &str, min: u64, max: u64) -> Result<u64, String> {
    match value.trim().parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!(
            "{value:?} is not a whole number from {min} to {max}"
        )),
    }
}

/// `webhooks` in string form: a JSON array of `{url, events?, secret?}` (the TOML
/// array of tables is turned into this). Event names are checked here so a typo
/// stops the start instead of silently never firing.
fn parse_webhooks(value: &str) -> Result<Vec<WebhookConfig>, String> {
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    let entries: Vec<WebhookEntry> = serde_json::from_str(value).map_err(|e| {
        format!("expected a list of {{url, events, secret or secret_file}} tables ({e})")
    })?;
    let mut hooks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let n = i + 1;
        let secret = match (entry.secret, entry.secret_file) {
            (Some(_), Some(_)) => {
                return Err(format!(
                    "webhook {n}: both secret and secret_file are set; keep one"
                ))
            }
            (s, None) => s,
            (None, Some(path)) => Some(
                read_secret_file("secret_file", &path)
                    .map_err(|e| format!("webhook {n}: {}: {}", e.key, e.reason))?,
            ),
        };
        let h = WebhookConfig {
            url: entry.url,
            events: entry.events,
            secret,
        };
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
        hooks.push(h);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// docs/configuration.md's generated part is exactly what the declarations give
    /// (regenerate: see the comment at its top).
    #[test]
    fn committed_docs_match_the_declarations() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let text = std::fs::read_to_string(&path).unwrap();
        let begin = text.find(DOCS_BEGIN).expect("begin marker");
        let end = text.find(DOCS_END).expect("end marker");
        let committed = &text[begin + DOCS_BEGIN.len()..end];
        assert!(
            committed.trim() == docs_markdown().trim(),
            "docs/configuration.md is stale: replace the part between the markers with \
             the output of `rserve-proxy config --docs`"
        );
        for key in KEYS {
            assert!(committed.contains(&format!("### `{}`", key.name)));
        }
    }

    /// Every key's printed value reads back to the same value (show and parse agree),
    /// and every key has a doc and an env var / flag derived from its name.
    #[test]
    fn every_key_round_trips_through_its_printed_form() {
        let mut cfg = Config::default();
        for (k, v) in [
            ("admin_password", "round-trip-pw"),
            ("static_routes", "a=127.0.0.1:1,a=127.0.0.1:2"),
            ("tls_cert_file", "/c.pem"),
            ("acme_domains", "a.example,b.example"),
            ("acme_email", "a@b.example"),
            ("admin_host", "admin.example"),
            ("max_connections", "100"),
            ("metrics_listen", "127.0.0.1:9464"),
            ("trusted_proxies", "10.0.0.0/8,::1"),
            (
                "webhooks",
                r#"[{"url":"http://127.0.0.1:1/","events":["app.crashed"]}]"#,
            ),
        ] {
            cfg.set(k, v).unwrap();
        }
        let text = cfg.render_redacted();
        let table: toml::Table = text.parse().unwrap();
        let mut back = Config {
            admin_password: cfg.admin_password.clone(),
            ..Config::default()
        };
        for (name, value) in table {
            if name != "admin_password" {
                back.set(&name, &toml_to_text(&name, value).unwrap())
                    .unwrap();
            }
        }
        assert_eq!(back, cfg);
        for key in KEYS {
            assert!(!key.doc.trim().is_empty(), "{} has no doc", key.name);
            assert!(key.env_var().starts_with("RSP_"));
        }
        assert_eq!(
            find_key("listen").unwrap().flag().as_deref(),
            Some("--listen")
        );
        assert_eq!(
            find_key("admin_password").unwrap().flag(),
            None,
            "no secret flag"
        );
    }

    #[test]
    fn unknown_rsp_variables_are_warnings_not_errors() {
        let (cfg, warnings) = Config::load_with_warnings(
            None,
            env(&[
                ("RSP_LISTN", "127.0.0.1:1"),
                ("RSP_CONFIG", "/x.toml"),
                ("RSP_TEST_DOCKER_SOCKET", "/x"),
                ("RSP_THREADS", "3"),
                ("RSP_ADMIN_PASSWORD_FILE_X", "1"),
                ("OTHER", "1"),
            ]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.threads, 3);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(warnings[0].contains("RSP_LISTN"), "{warnings:?}");
        assert!(
            warnings[0].contains("did you mean RSP_LISTEN?"),
            "{warnings:?}"
        );
        assert!(warnings[1].contains("RSP_ADMIN_PASSWORD_FILE_X"));
    }

    #[test]
    fn secrets_come_from_files_in_every_layer() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "from-a-file-pw\n").unwrap();
        let p = pw.to_str().unwrap();

        let cfg = Config::load(None, env(&[("RSP_ADMIN_PASSWORD_FILE", p)]), &vec![]).unwrap();
        assert_eq!(cfg.admin_password.as_deref(), Some("from-a-file-pw"));
        assert!(!cfg.render_redacted().contains("from-a-file"));

        let file = dir.path().join("c.toml");
        std::fs::write(&file, format!("admin_password_file = {p:?}\n")).unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.admin_password.as_deref(), Some("from-a-file-pw"));

        let cfg = Config::load(None, env(&[]), &vec![("admin_password_file", p.into())]).unwrap();
        assert_eq!(cfg.admin_password.as_deref(), Some("from-a-file-pw"));

        // Later layers still win: an env value over the file's *_file.
        let cfg = Config::load(
            Some(&file),
            env(&[("RSP_ADMIN_PASSWORD", "env-password")]),
            &vec![],
        )
        .unwrap();
        assert_eq!(cfg.admin_password.as_deref(), Some("env-password"));

        // Missing file: the error names the _file key and the path.
        let e = Config::load(
            None,
            env(&[("RSP_ADMIN_PASSWORD_FILE", "/nonexistent/pw")]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "admin_password_file");
        assert!(e.reason.contains("/nonexistent/pw"), "{e}");
        // Both forms in one layer: refused, naming both.
        let e = Config::load(
            None,
            env(&[
                ("RSP_ADMIN_PASSWORD", "x-password"),
                ("RSP_ADMIN_PASSWORD_FILE", p),
            ]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "admin_password");
        assert!(e.reason.contains("RSP_ADMIN_PASSWORD_FILE"), "{e}");
        std::fs::write(
            &file,
            format!("admin_password = \"x-password\"\nadmin_password_file = {p:?}\n"),
        )
        .unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "admin_password");

        // Webhook secrets: secret_file in the table.
        let secret = dir.path().join("hook");
        std::fs::write(&secret, "hook-secret\r\n").unwrap();
        std::fs::write(
            &file,
            format!(
                "[[webhooks]]\nurl = \"http://127.0.0.1:1/\"\nsecret_file = {:?}\n",
                secret.to_str().unwrap()
            ),
        )
        .unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        assert_eq!(cfg.webhooks[0].secret.as_deref(), Some("hook-secret"));
        std::fs::write(
            &file,
            "[[webhooks]]\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"/nonexistent/s\"\n",
        )
        .unwrap();
        let e = Config::load(Some(&file), env(&[]), &vec![]).unwrap_err();
        assert_eq!(e.key, "webhooks");
        assert!(e.reason.contains("/nonexistent/s"), "{e}");
    }

    #[test]
    fn trusted_proxies_parse() {
        let cfg = Config::default();
        assert!(cfg.trusted_proxies.is_empty());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "trusted_proxies = [\"10.1.2.3/8\", \"::1\", \"192.168.0.7\"]\n",
        )
        .unwrap();
        let cfg = Config::load(Some(&file), env(&[]), &vec![]).unwrap();
        let shown: Vec<String> = cfg.trusted_proxies.iter().map(|n| n.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "::1/128", "192.168.0.7/32"]);
        let e = Config::load(
            None,
            env(&[("RSP_TRUSTED_PROXIES", "10.0.0.0/33")]),
            &vec![],
        )
        .unwrap_err();
        assert_eq!(e.key, "trusted_proxies");
        assert!(e.reason.contains("not an address or a CIDR"), "{e}");
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
