//! Data-plane limits (from the config keys `app_max_websockets`, `app_idle_timeout_secs`,
//! `app_max_body_mb`, `max_connections`, `max_connections_per_ip`,
//! `request_head_timeout_secs`, `tls_handshake_timeout_secs`) and the fixed timeouts
//! around them.

use std::time::Duration;

/// How long a connect to a replica may take before the next replica is tried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a replica may take to answer a WebSocket upgrade.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a connection may sit idle between two requests (before the first byte of
/// the next head; the rest of that head then has `head_timeout`).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// Descriptors kept out of `max_connections`' automatic size: the store, the control
/// socket and its connections, Docker, listeners, the relay threads' epoll, logs.
pub const FD_RESERVE: u64 = 256;
/// Descriptors one client connection may hold at worst: its own, pingora's upstream
/// socket to the control plane and axum's end of it (an app request holds two).
pub const FDS_PER_CONNECTION: u64 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Concurrent WebSockets per app; one more gets 503.
    pub max_websockets_per_app: u64,
    /// A WebSocket with no byte either way for this long is closed (Close 1001); an
    /// HTTP request whose replica sends nothing for this long fails (504).
    pub idle_timeout: Duration,
    /// Largest HTTP request body to an app; more gets 413.
    pub max_body_bytes: u64,
    /// Concurrent client connections in total; `None`: sized from the open-files limit
    /// when the data plane starts ([`auto_max_connections`]).
    pub max_connections: Option<u32>,
    /// Concurrent client connections per client address (an IPv6 client: per /64).
    pub max_connections_per_ip: u32,
    /// Time for a connection's first request head, from the end of the TLS handshake
    /// (from the accept without TLS); later heads get it from their first byte.
    pub head_timeout: Duration,
    /// Time for the TLS handshake, from the accept.
    pub tls_handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_websockets_per_app: 1000,
            idle_timeout: Duration::from_secs(3600),
            max_body_bytes: 16 * 1024 * 1024,
            max_connections: None,
            max_connections_per_ip: 2048,
            head_timeout: Duration::from_secs(10),
            tls_handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// `max_connections` when not configured: what the open-files limit `nofile` leaves
/// after [`FD_RESERVE`], divided by [`FDS_PER_CONNECTION`]. Staying under the limit
/// matters: at the limit `accept()` fails and pingora's accept loop sleeps a second
/// each time, which would starve every client, not only the flood.
pub fn auto_max_connections(nofile: u64) -> u32 {
    let n = nofile.saturating_sub(FD_RESERVE) / FDS_PER_CONNECTION;
    u32::try_from(n).unwrap_or(u32::MAX).max(16)
}

/// The soft open-files limit in force now (`None` if it cannot be read).
pub fn nofile_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_cap_leaves_room_for_the_reserve() {
        assert_eq!(auto_max_connections(20_000), (20_000 - 256) / 3);
        assert_eq!(auto_max_connections(1024), (1024 - 256) / 3);
        assert_eq!(auto_max_connections(100), 16);
        assert_eq!(auto_max_connections(u64::MAX), u32::MAX);
    }
}
