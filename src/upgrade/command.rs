//! `rserve-proxy upgrade`: ask the server of a data dir to hand over to the binary now
//! installed at its path (SIGUSR2), and wait until the new process serves.

use std::path::Path;
use std::time::{Duration, Instant};

use super::read_pid_file;

/// Signal the serving process and wait up to `timeout` for a new one to serve.
/// Returns the line to print.
pub fn request(data_dir: &Path, timeout: Duration) -> Result<String, String> {
    let pid_path = super::pid_file(data_dir);
    let old = read_pid_file(data_dir).ok_or_else(|| {
        format!(
            "no server runs on {} ({} is missing): start it instead (systemctl start rserve-proxy)",
            data_dir.display(),
            pid_path.display()
        )
    })?;
    if !alive(old) {
        return Err(format!(
            "the server named in {} (pid {old}) is not running: start it instead",
            pid_path.display()
        ));
    }
    let pid = i32::try_from(old).map_err(|_| format!("bad pid {old} in {}", pid_path.display()))?;
    // The server records a failed attempt there; a change after the signal is ours.
    let failed_before = super::read_failure(data_dir);
    let failed_at = failure_mtime(data_dir);
    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
    if unsafe { libc::kill(pid, libc::SIGUSR2) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "cannot signal the server (pid {old}): {e}; run this as the service's user or root"
        ));
    }
    let started = Instant::now();
    while started.elapsed() < timeout {
        std::thread::sleep(Duration::from_millis(50));
        if let Some(new) = read_pid_file(data_dir).filter(|p| *p != old) {
            if alive(new) {
                return Ok(format!(
                    "upgraded: pid {old} -> {new} in {:.1} s; the old process keeps its open connections until they close (at most upgrade_drain_secs), then exits",
                    started.elapsed().as_secs_f64()
                ));
            }
        }
        if failure_mtime(data_dir) != failed_at || super::read_failure(data_dir) != failed_before {
            let why = super::read_failure(data_dir).unwrap_or_default();
            return Err(format!("upgrade failed: {}", why.trim_end()));
        }
        if !alive(old) {
            return Err(format!(
                "the server (pid {old}) exited during the upgrade and no new process took over: start the service again (systemctl start rserve-proxy) and see its log"
            ));
        }
    }
    Err(format!(
        "no new process took over within {} s; the old one (pid {old}) keeps serving. Its log says why (e.g. the new binary refused the config)",
        timeout.as_secs()
    ))
}

fn failure_mtime(data_dir: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(data_dir.join(super::FAILED_FILE))
        .and_then(|m| m.modified())
        .ok()
}

fn alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    let found = unsafe { libc::kill(pid, 0) } == 0;
    found || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_server_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let e = request(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("no server runs"), "{e}");
        // A pid file left by a process that is gone.
        std::fs::write(super::super::pid_file(dir.path()), "999999999\n").unwrap();
        let e = request(dir.path(), Duration::from_secs(1)).unwrap_err();
        assert!(e.contains("not running"), "{e}");
    }
}
