//! Memory that comes back (issue #12), checked without timing: the real binary's
//! resident set after a burst of work, read from /proc.

mod support;

use support::{client, login, Server};

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn rss_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// 40 logins, 10 at a time: argon2 needs 19 MiB per hash. At most two hashes run at
/// once and each one's memory is unmapped when it ends, so the peak stays within two
/// hashes' worth and the resident set falls back. (Before the bound, 30 logins left
/// 135–369 MB behind.)
#[test]
fn logins_do_not_keep_argon2_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", "a long enough password"),
            ("RSP_LOGIN_ATTEMPTS_PER_MINUTE", "1000"),
        ],
    );
    // One login first: lazily built state (the dummy hash, the session table) is part
    // of the baseline, not of the growth.
    assert!(login(&client(), &server, "a long enough password").is_success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (before, peak_before) = rss_kib(server.pid());

    std::thread::scope(|s| {
        for _ in 0..10 {
            s.spawn(|| {
                let c = client();
                for _ in 0..4 {
                    assert!(login(&c, &server, "a long enough password").is_success());
                }
            });
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (after, peak) = rss_kib(server.pid());
    let mib = |k: u64| k as f64 / 1024.0;
    eprintln!(
        "RSS before {:.1} MiB, after {:.1} MiB, peak {:.1} MiB (peak before {:.1} MiB)",
        mib(before),
        mib(after),
        mib(peak),
        mib(peak_before)
    );
    // Two hashes (2 × 19 MiB) plus request handling; ten unbounded hashes would be
    // 190 MiB.
    assert!(
        peak <= before.max(peak_before) + 60 * 1024,
        "peak {:.1} MiB grew more than 60 MiB over {:.1} MiB",
        mib(peak),
        mib(before)
    );
    assert!(
        after <= before + 12 * 1024,
        "RSS {:.1} MiB after the logins, {:.1} MiB before: argon2's memory was kept",
        mib(after),
        mib(before)
    );
}
