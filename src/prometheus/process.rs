//! The process's own vital signs, read from `/proc/self` and getrusage at scrape time
//! (the usual `process_*` metrics of Prometheus client libraries).

use std::time::SystemTime;

/// Read now. Fields that cannot be read (not Linux, no /proc) are `None` and left out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub threads: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub cpu_seconds: Option<f64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let kb = |key: &str| status_field(&status, key).map(|v| v * 1024);
        ProcessStats {
            resident_bytes: kb("VmRSS:"),
            virtual_bytes: kb("VmSize:"),
            threads: status_field(&status, "Threads:"),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            max_fds: nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .ok()
                .map(|(soft, _)| soft),
            cpu_seconds: nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
                .ok()
                .map(|u| {
                    let secs =
                        |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
                    secs(u.user_time()) + secs(u.system_time())
                }),
        }
    }
}

/// `Key:   123 kB` → 123.
fn status_field(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Seconds since the Unix epoch.
pub fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let p = ProcessStats::read();
        assert!(p.resident_bytes.unwrap() > 1024 * 1024);
        assert!(p.threads.unwrap() >= 1);
        assert!(p.open_fds.unwrap() >= 3);
        assert!(p.max_fds.unwrap() >= p.open_fds.unwrap());
        assert!(p.cpu_seconds.unwrap() >= 0.0);
        assert_eq!(status_field("VmRSS:\t  2048 kB\n", "VmRSS:"), Some(2048));
    }
}
