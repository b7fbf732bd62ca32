//! Binary upgrades without dropping WebSockets: the running process (old) starts the
//! binary at its original path (new) and hands it the listening sockets with pingora's
//! graceful upgrade; the old one stops accepting and keeps relaying its open
//! connections until they end or the drain limit passes. See docs/upgrade.md for the
//! sequence and why each step is where it is.
//!
//! The old side ([`Upgrader`]) runs in the server's signal watcher on SIGUSR2; the new
//! side (`rserve-proxy serve --upgrade`) is `server::serve` with the few steps here:
//! [`take_control_socket`], [`open_store_when_free`], [`announce`].
//!
//! Why the old side sends the sockets itself rather than returning pingora's
//! `GracefulUpgrade`: pingora then waits a fixed 5 s, stops everything with one
//! broadcast and gives open connections a fixed grace period. Here the store must be
//! released between sending the sockets and the new process starting, the listeners
//! must stop only once the new process serves, and open WebSockets need a drain of
//! minutes that ends early when they do — so each step has its own signal
//! ([`services`]), and the sockets go over pingora's upgrade socket with pingora's own
//! `Fds::send_to_sock`, received by pingora's bootstrap in the new process.

pub mod command;
pub mod services;

use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener as StdUnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pingora::server::ListenFds;
use tokio::sync::watch;

use crate::proxy::admission::Admission;
use crate::proxy::drain::Drain;
use crate::store::{Store, StoreError};

/// In the data dir: the PID of the process serving it (written once it serves).
pub const PID_FILE: &str = "rserve-proxy.pid";
/// In the data dir: where the new process receives the listening sockets.
pub const UPGRADE_SOCK: &str = "upgrade.sock";
/// In the data dir: why the last upgrade failed (for `rserve-proxy upgrade`).
pub const FAILED_FILE: &str = "upgrade.failed";

/// For the new process to ask for the sockets (it starts in well under a second).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// For the new process to open the store and start serving once the old one let go.
const TAKE_OVER_TIMEOUT: Duration = Duration::from_secs(60);
/// For the control plane to finish its requests before the store closes under it.
const CONTROL_PLANE_STOP: Duration = Duration::from_secs(5);
/// After the drain limit: for goodbyes (Close 1001) to be written.
const GOODBYE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

static HANDED_OVER: AtomicBool = AtomicBool::new(false);

/// This process has handed its data dir and listeners to a new one (it is draining or
/// about to exit; the new process is the service's main process).
pub fn handed_over() -> bool {
    HANDED_OVER.load(Ordering::SeqCst)
}

pub fn pid_file(data_dir: &Path) -> PathBuf {
    data_dir.join(PID_FILE)
}

pub fn upgrade_sock(data_dir: &Path) -> PathBuf {
    data_dir.join(UPGRADE_SOCK)
}

/// Record why an upgrade failed, for `rserve-proxy upgrade` to report at once.
pub fn record_failure(data_dir: &Path, error: &UpgradeError) {
    let path = data_dir.join(FAILED_FILE);
    let tmp = data_dir.join(format!("{FAILED_FILE}.{}", std::process::id()));
    let line = format!("{}\n", error);
    let _ = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, &path));
}

/// The last recorded failure, if any.
pub fn read_failure(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(FAILED_FILE)).ok()
}

/// The PID in the pid file, if any.
pub fn read_pid_file(data_dir: &Path) -> Option<u32> {
    std::fs::read_to_string(pid_file(data_dir))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("an upgrade is already under way")]
    Busy,
    #[error("the listeners are not up yet; try again in a moment")]
    NotReady,
    #[error("cannot start the new binary {exe}: {source}")]
    Spawn { exe: String, source: std::io::Error },
    #[error("the new process (pid {pid}) exited ({status}) before taking over; this process keeps serving. Its log says why (a config error exits with status 2)")]
    Exited {
        pid: u32,
        status: std::process::ExitStatus,
    },
    #[error("the new process (pid {pid}) did not {what} within {secs} s; stopped it, this process keeps serving")]
    Timeout {
        pid: u32,
        what: &'static str,
        secs: u64,
    },
    #[error("cannot send the listening sockets to the new process: {0}; stopped it, this process keeps serving")]
    Send(String),
    #[error("the new process (pid {pid}) failed after the store was handed to it ({why}); this process keeps relaying but has no control plane: run the upgrade again or restart the service")]
    AfterCommit { pid: u32, why: String },
}

/// How this process was started, to start its successor the same way.
#[derive(Debug, Clone)]
pub struct Relaunch {
    pub exe: PathBuf,
    pub args: Vec<OsString>,
}

impl Relaunch {
    /// This process's binary path and arguments (`--upgrade` left out). Call it at
    /// start: a package upgrade replaces the file, and the path then names the new one.
    pub fn of_this_process() -> std::io::Result<Relaunch> {
        let exe = std::env::current_exe()?;
        // Linux marks a replaced binary " (deleted)"; the path is what we want.
        let exe = match exe.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(s) => PathBuf::from(s),
            None => exe,
        };
        let args = std::env::args_os()
            .skip(1)
            .filter(|a| a != "--upgrade")
            .collect();
        Ok(Relaunch { exe, args })
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.exe);
        // Same environment (NOTIFY_SOCKET included), stdout and stderr (the journal).
        cmd.args(&self.args).arg("--upgrade").stdin(Stdio::null());
        cmd
    }
}

/// The old side of an upgrade. Built by `server::serve`, run by its signal watcher.
pub struct Upgrader {
    pub relaunch: Relaunch,
    pub data_dir: PathBuf,
    pub control_socket: PathBuf,
    /// The listening sockets' table, filled when the listening service starts.
    pub fds: Arc<Mutex<Option<ListenFds>>>,
    /// Stops the front door's listeners (see [`services::Listening`]).
    pub stop_accepting: watch::Sender<bool>,
    /// Stops everything that uses the store (see [`services::UntilHandOver`]).
    pub hand_over: watch::Sender<bool>,
    /// Turns true when the control plane has stopped serving.
    pub control_stopped: watch::Receiver<bool>,
    pub store: Store,
    pub drain: Arc<Drain>,
    pub admission: Arc<Admission>,
    pub drain_limit: Duration,
    pub busy: AtomicBool,
}

impl Upgrader {
    /// Start the new process and hand it the listeners and the store. `Ok(pid)` once
    /// the new process serves; this one still accepts too until [`Upgrader::drain`].
    /// On an error before the store was handed over, nothing here has changed.
    pub async fn hand_over(&self) -> Result<u32, UpgradeError> {
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(UpgradeError::Busy);
        }
        let result = self.hand_over_once().await;
        self.busy.store(false, Ordering::SeqCst);
        result
    }

    async fn hand_over_once(&self) -> Result<u32, UpgradeError> {
        let fds = self
            .fds
            .lock()
            .ok()
            .and_then(|f| f.clone())
            .ok_or(UpgradeError::NotReady)?;
        let sock = upgrade_sock(&self.data_dir);
        // A file left by an earlier attempt would look like the new process asking.
        let _ = std::fs::remove_file(&sock);
        let control_before = inode(&self.control_socket);
        let mut child = self
            .relaunch
            .command()
            .spawn()
            .map_err(|source| UpgradeError::Spawn {
                exe: self.relaunch.exe.display().to_string(),
                source,
            })?;
        let pid = child.id();
        tracing::info!(pid, exe = %self.relaunch.exe.display(), "upgrade: new process started; waiting for it to ask for the listening sockets");

        // 1. The new process has loaded its config and listens on the upgrade socket.
        wait_for(&mut child, START_TIMEOUT, "ask for the sockets", || {
            sock.exists()
        })
        .await?;

        // 2. Hand over the listening sockets (both processes accept from now on).
        let path = sock.to_string_lossy().into_owned();
        let sent = tokio::task::spawn_blocking(move || {
            let table = fds.lock();
            table.send_to_sock(path.as_str()).map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        if let Err(e) = sent {
            stop(child).await;
            return Err(UpgradeError::Send(e));
        }
        tracing::info!(pid, "upgrade: listening sockets sent");

        // 3. The new process has taken the control socket's path: admin requests queue
        //    there from now on, so ours can stop.
        let control = self.control_socket.clone();
        wait_for(&mut child, START_TIMEOUT, "take the control socket", || {
            inode(&control) != control_before
        })
        .await?;

        // 4. Let go of the store: stop what uses it, then close it.
        self.drain.hand_over();
        self.hand_over.send_replace(true);
        let mut stopped = self.control_stopped.clone();
        if tokio::time::timeout(CONTROL_PLANE_STOP, stopped.wait_for(|s| *s))
            .await
            .is_err()
        {
            tracing::warn!(
                "upgrade: the control plane did not stop within 5 s; closing the store under it"
            );
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || store.close()).await;
        tracing::info!(
            pid,
            "upgrade: store closed; waiting for the new process to serve"
        );

        // 5. The new process has opened the store and serves (it wrote the pid file).
        let data_dir = self.data_dir.clone();
        let serving = wait_for(&mut child, TAKE_OVER_TIMEOUT, "start serving", || {
            read_pid_file(&data_dir) == Some(pid)
        })
        .await;
        if let Err(e) = serving {
            return Err(UpgradeError::AfterCommit {
                pid,
                why: e.to_string(),
            });
        }
        HANDED_OVER.store(true, Ordering::SeqCst);
        // The child is not waited for: it outlives this process (reparented, and under
        // systemd the service's main process).
        drop(child);
        Ok(pid)
    }

    /// After a hand-over: stop accepting, then wait until every open connection has
    /// ended, the drain limit passes or `interrupt` resolves (SIGTERM); then close what
    /// is left (WebSockets get a Close 1001).
    pub async fn drain(&self, new_pid: u32, interrupt: impl std::future::Future<Output = ()>) {
        self.stop_accepting.send_replace(true);
        let started = Instant::now();
        tracing::info!(
            new_pid,
            open = self.admission.open(),
            drain_limit_secs = self.drain_limit.as_secs(),
            "upgrade: the new process serves; stopped accepting, open connections continue here"
        );
        tokio::pin!(interrupt);
        let mut reported = Instant::now();
        loop {
            let open = self.admission.open();
            if open == 0 {
                tracing::info!(
                    after_secs = started.elapsed().as_secs_f64(),
                    "upgrade: every connection has ended"
                );
                break;
            }
            if started.elapsed() >= self.drain_limit {
                tracing::warn!(
                    open,
                    "upgrade: drain limit passed (upgrade_drain_secs); closing the rest"
                );
                break;
            }
            if reported.elapsed() >= Duration::from_secs(30) {
                reported = Instant::now();
                tracing::info!(open, "upgrade: draining");
            }
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
                () = &mut interrupt => {
                    tracing::info!(open, "upgrade: stop requested while draining; closing the rest");
                    break;
                }
            }
        }
        self.drain.close_all();
        let goodbye = Instant::now();
        while self.admission.open() > 0 && goodbye.elapsed() < GOODBYE {
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Poll `done` until it holds; fails when the child exits first or on timeout (then
/// the child is stopped).
async fn wait_for(
    child: &mut Child,
    limit: Duration,
    what: &'static str,
    mut done: impl FnMut() -> bool,
) -> Result<(), UpgradeError> {
    let pid = child.id();
    let deadline = Instant::now() + limit;
    loop {
        if done() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(UpgradeError::Exited { pid, status });
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(UpgradeError::Timeout {
                pid,
                what,
                secs: limit.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = tokio::task::spawn_blocking(move || child.wait()).await;
}

fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// New process: put its control socket in place of the old one's. Bound at the very
/// path the proxy connects to (pingora checks a pooled connection's peer name against
/// it, so a socket bound elsewhere and renamed into place would never be reused); a
/// connection made between the unlink and the bind is retried by the front door.
pub fn take_control_socket(path: &Path) -> std::io::Result<StdUnixListener> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = StdUnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// New process: open the store once the old process has closed it.
pub fn open_store_when_free(path: &Path, limit: Duration) -> Result<Store, StoreError> {
    let deadline = Instant::now() + limit;
    loop {
        match Store::open(path) {
            Err(StoreError::InUse { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// Once serving: write the pid file (what `rserve-proxy upgrade` signals, and how the
/// old process learns the new one serves); after an upgrade also tell systemd that
/// this process is now the service's main process.
pub fn announce(data_dir: &Path, upgraded: bool) {
    let pid = std::process::id();
    let file = pid_file(data_dir);
    let tmp = data_dir.join(format!("{PID_FILE}.{pid}"));
    let written =
        std::fs::write(&tmp, format!("{pid}\n")).and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        tracing::warn!(error = %e, path = %file.display(), "cannot write the pid file; `rserve-proxy upgrade` will not find this process");
    }
    if upgraded {
        notify_main_pid();
    }
}

/// systemd (`Type=notify`, `NotifyAccess=all`): this process is the main one now.
pub fn notify_main_pid() {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let message = format!("MAINPID={}\nREADY=1\n", std::process::id());
    if let Err(e) = sd_notify(&socket, &message) {
        tracing::warn!(error = %e, "cannot tell systemd the new main PID");
    }
}

fn sd_notify(socket: &std::ffi::OsStr, message: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let bytes = socket.as_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)?
        }
        None => SocketAddr::from_pathname(Path::new(socket))?,
    };
    UnixDatagram::unbound()?.send_to_addr(message.as_bytes(), &addr)?;
    Ok(())
}

/// Once stopped: remove the pid file if it is still ours.
pub fn forget_pid_file(data_dir: &Path) {
    if read_pid_file(data_dir) == Some(std::process::id()) {
        let _ = std::fs::remove_file(pid_file(data_dir));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_new_control_socket_takes_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("control.sock");
        let old = StdUnixListener::bind(&path).unwrap();
        let before = inode(&path);
        let new = take_control_socket(&path).unwrap();
        assert_ne!(inode(&path), before);
        // A connection to the path reaches the new listener, not the old one.
        let _c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        new.set_nonblocking(true).unwrap();
        old.set_nonblocking(true).unwrap();
        assert!(new.accept().is_ok());
        assert!(old.accept().is_err());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn the_store_opens_once_released() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.redb");
        let first = Store::open(&path).unwrap();
        let held = first.clone();
        assert!(matches!(
            open_store_when_free(&path, Duration::from_millis(100)),
            Err(StoreError::InUse { .. })
        ));
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            first.close();
        });
        let second = open_store_when_free(&path, Duration::from_secs(10)).unwrap();
        closer.join().unwrap();
        assert!(second.instance_id().is_ok());
        assert!(
            matches!(held.instance_id(), Err(StoreError::Closed)),
            "every clone of a closed store is closed"
        );
    }

    #[test]
    fn the_pid_file_names_the_serving_process() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_pid_file(dir.path()), None);
        announce(dir.path(), false);
        assert_eq!(read_pid_file(dir.path()), Some(std::process::id()));
        forget_pid_file(dir.path());
        assert_eq!(read_pid_file(dir.path()), None);
    }

    #[test]
    fn sd_notify_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        sd_notify(path.as_os_str(), "MAINPID=1\nREADY=1\n").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"MAINPID=1\nREADY=1\n");
    }
}
