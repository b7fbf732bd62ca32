//! Data-plane limits (from the config keys `app_max_websockets`, `app_idle_timeout_secs`,
//! `app_max_body_mb`) and the fixed timeouts around them.

use std::time::Duration;

/// How long a connect to a replica may take before the next replica is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a replica may take to answer a WebSocket upgrade.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client may take to send a complete request head; also the keepalive
/// timeout between requests on one connection.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent WebSockets per app; one more gets 503.
    pub max_websockets_per_app: u64,
    /// A WebSocket with no byte either way for this long is closed (Close 1001); an
    /// HTTP request whose replica sends nothing for this long fails (504).
    pub idle_timeout: Duration,
    /// Largest HTTP request body to an app; more gets 413.
    pub max_body_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_websockets_per_app: 1000,
            idle_timeout: Duration::from_secs(3600),
            max_body_bytes: 16 * 1024 * 1024,
        }
    }
}
