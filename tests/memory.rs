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

/// Ten concurrent 49 MB uploads (into ten apps) through the proxy: each file streams
/// to a temp file as it arrives, so the process never holds the uploads in memory
/// (before: a 1.18 GB peak and 571 MB kept). The limit is still enforced while
/// streaming: a file over it gets 413 and leaves no temp file behind.
#[test]
fn uploads_stream_to_disk() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(
        dir.path(),
        &[
            ("RSP_ADMIN_PASSWORD", "a long enough password"),
            ("RSP_UPLOAD_MAX_MB", "50"),
        ],
    );
    let c = client();
    assert!(login(&c, &server, "a long enough password").is_success());
    let ids: Vec<String> = (0..10)
        .map(|i| {
            let r = c
                .post(server.url("/api/apps"))
                .json(&serde_json::json!({"name": format!("Big {i}"), "slug": format!("big-{i}")}))
                .send()
                .unwrap();
            assert!(r.status().is_success(), "create app: {}", r.status());
            r.json::<serde_json::Value>().unwrap()["app"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    // An R script of 49 MB (comments): installed as is, no archive maths involved.
    let script: Vec<u8> = "# padding line of an oversized script\n"
        .bytes()
        .cycle()
        .take(49 * 1024 * 1024)
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (before, peak_before) = rss_kib(server.pid());
    let upload = |id: &str, data: Vec<u8>| {
        let part = reqwest::blocking::multipart::Part::bytes(data).file_name("app.R");
        c.post(server.url(&format!("/api/apps/{id}/upload")))
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part))
            .send()
            .unwrap()
            .status()
    };
    std::thread::scope(|s| {
        for id in &ids {
            let data = script.clone();
            s.spawn(move || assert_eq!(upload(id, data), 200));
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
    // One upload held in memory would be 49 MiB; ten, 490 MiB.
    assert!(
        peak <= before.max(peak_before) + 40 * 1024,
        "peak {:.1} MiB: uploads were held in memory (before {:.1} MiB)",
        mib(peak),
        mib(before)
    );
    assert!(
        after <= before + 20 * 1024,
        "RSS {:.1} MiB kept",
        mib(after)
    );
    for id in &ids {
        let installed = dir.path().join("uploads").join(id).join("app.R");
        assert_eq!(
            std::fs::metadata(&installed).unwrap().len(),
            49 * 1024 * 1024
        );
    }

    // Over the limit: refused while streaming, nothing left in the uploads dir.
    let over: Vec<u8> = script
        .iter()
        .copied()
        .cycle()
        .take(51 * 1024 * 1024)
        .collect();
    assert_eq!(upload(&ids[0], over), 413);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("uploads"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}
