//! Running under systemd (`Type=notify`): the sd_notify protocol (READY, STATUS,
//! WATCHDOG, STOPPING, MAINPID), the watchdog feeder and journald detection. The
//! protocol is one datagram of `KEY=VALUE` lines to `$NOTIFY_SOCKET`; written here in a
//! few lines rather than pulling in libsystemd. Outside systemd every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Send `state` (newline-separated `KEY=VALUE` assignments) to the service manager.
/// Returns false when not started by systemd (`NOTIFY_SOCKET` unset) or on error.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let bytes = path.as_encoded_bytes();
    // `@name` is a socket in the abstract namespace.
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        None => SocketAddr::from_pathname(Path::new(&path)),
    };
    let sent = addr.and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    match sent {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
            false
        }
    }
}

/// READY=1, naming this process as the service's main process: after a binary upgrade
/// the new process is a child of the old one, and this makes it the main PID (needs
/// `NotifyAccess=all` in the unit).
pub fn ready(status: &str) -> bool {
    notify(&format!(
        "READY=1\nMAINPID={}\nSTATUS={status}",
        std::process::id()
    ))
}

/// STOPPING=1: a graceful shutdown has begun.
pub fn stopping() -> bool {
    notify("STOPPING=1\nSTATUS=draining connections")
}

/// The watchdog interval systemd expects pings within (`WatchdogSec=`), if any.
/// `WATCHDOG_PID` names the process meant; our parent also counts, because a binary
/// upgrade starts the new server as a child of the old one with its environment.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        let pid: u32 = pid.parse().ok()?;
        if pid != std::process::id() && pid != std::os::unix::process::parent_id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Whether stderr is connected to the journal: systemd sets `JOURNAL_STREAM` to the
/// `device:inode` of the stream it gave us; checking it against stderr means a child
/// whose stderr was redirected elsewhere does not take it for the journal.
pub fn stderr_is_journal() -> bool {
    let Ok(value) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // SAFETY: fstat on fd 2 writes into the zeroed stat buffer we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return false;
    }
    st.st_dev == dev && st.st_ino == ino
}

/// Tells systemd when the server is ready, then feeds the watchdog while the control
/// plane answers `/api/health` with 200 (store readable) on its socket, so a wedged
/// process stops feeding it and systemd restarts it. Says STOPPING=1 at shutdown.
pub struct Notifier {
    /// The control plane's unix socket.
    pub control_socket: PathBuf,
    /// The public listener: READY waits until it accepts connections.
    pub listen: std::net::SocketAddr,
    pub status: String,
}

#[async_trait]
impl BackgroundService for Notifier {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            return;
        }
        // pingora binds the listeners and starts the control plane concurrently with
        // this service: wait until both answer before saying READY.
        let listen = reachable(self.listen);
        loop {
            let up = tokio::net::TcpStream::connect(listen).await.is_ok()
                && probe(&self.control_socket, Duration::from_secs(5)).await;
            if up {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.changed() => return,
            }
        }
        ready(&self.status);
        tracing::info!("told systemd the server is ready");
        let Some(interval) = watchdog_interval() else {
            let _ = shutdown.changed().await;
            return;
        };
        let every = interval / 2;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if probe(&self.control_socket, every).await {
                notify("WATCHDOG=1");
            } else {
                tracing::warn!(
                    "control plane did not answer /api/health; not feeding the systemd watchdog"
                );
            }
        }
    }
}

/// A connectable form of the listen address (a wildcard becomes loopback).
fn reachable(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// `GET /api/health` on the control socket answered 200 within `limit`.
async fn probe(socket: &Path, limit: Duration) -> bool {
    let attempt = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.ok()?;
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(tokio::time::timeout(limit, attempt).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        // SAFETY (env): this module's tests are the only ones touching NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(ready("serving"));
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 256];
        let n = sock.recv(&mut buf).unwrap();
        let got = std::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            got,
            format!("READY=1\nMAINPID={}\nSTATUS=serving", std::process::id())
        );
        assert!(!notify("WATCHDOG=1"), "no NOTIFY_SOCKET: nothing sent");
    }

    #[test]
    fn wildcard_listen_is_probed_on_loopback() {
        assert_eq!(
            reachable("0.0.0.0:80".parse().unwrap()),
            "127.0.0.1:80".parse().unwrap()
        );
        assert_eq!(
            reachable("10.0.0.1:80".parse().unwrap()),
            "10.0.0.1:80".parse().unwrap()
        );
    }
}
