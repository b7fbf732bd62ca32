//! SIGHUP with the real binary: a changed `log_level` and `login_attempts_per_minute`
//! apply, a changed `listen` is reported as needing a restart, and an invalid file is
//! refused while the server keeps running with the config it had.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;
use support::Server;

fn failed_login(s: &Server) -> StatusCode {
    support::client()
        .post(s.url("/api/auth/login"))
        .json(&json!({"username": "admin", "password": "wrong-password"}))
        .send()
        .unwrap()
        .status()
}

fn hup(s: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

/// Waits until the log holds `needle` `times` times.
fn wait_log(s: &Server, needle: &str, times: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if s.log().matches(needle).count() >= times {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("no {needle:?} (x{times}) in the log:\n{}", s.log());
}

#[test]
fn sighup_applies_live_keys_and_names_the_ones_needing_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(
        &file,
        "login_attempts_per_minute = 100\nlog_level = \"info\"\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(
        &data,
        &[("RSP_ADMIN_PASSWORD", "reload-test-pw")],
        &["--config", file.to_str().unwrap()],
    );
    for _ in 0..3 {
        assert_eq!(failed_login(&s), StatusCode::UNAUTHORIZED);
    }

    // The tests' Server gives --listen on the command line, which beats the file: so
    // change `threads`, which only the file sets, for the "needs a restart" case.
    std::fs::write(
        &file,
        "login_attempts_per_minute = 3\nlog_level = \"debug\"\nthreads = 3\n",
    )
    .unwrap();
    hup(&s);
    wait_log(&s, "config reloaded", 1);
    let log = s.log();
    assert!(log.contains("threads changed and needs a restart"), "{log}");
    assert!(
        log.contains("\"applied\":\"log_level,login_attempts_per_minute\""),
        "{log}"
    );
    // The three attempts already made use up the new budget of three.
    assert_eq!(failed_login(&s), StatusCode::TOO_MANY_REQUESTS);
    // debug is on now: the debug lines of the request just made are in the log.
    assert!(s.log().contains("\"level\":\"DEBUG\""), "{}", s.log());

    // An invalid file: refused, the server keeps running with the config it had.
    std::fs::write(
        &file,
        "login_attempts_per_minute = 1000\nthreads = \"many\"\n",
    )
    .unwrap();
    hup(&s);
    wait_log(&s, "config reload refused", 1);
    assert!(s.log().contains("threads"), "{}", s.log());
    let health = support::client().get(s.url("/api/health")).send().unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        failed_login(&s),
        StatusCode::TOO_MANY_REQUESTS,
        "the old limit of 3 still holds"
    );
    let (status, _, _) = s.stop();
    assert!(status.success(), "{status:?}");
}

/// `upload_max_mb` and `session_ttl_hours` apply to the next upload and the next login.
#[test]
fn sighup_changes_the_upload_limit_and_the_session_lifetime() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "upload_max_mb = 1\nsession_ttl_hours = 1\n").unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with(
        &data,
        &[("RSP_ADMIN_PASSWORD", "reload-test-pw")],
        &["--config", file.to_str().unwrap()],
    );
    let login = |c: &reqwest::blocking::Client| -> String {
        let r = c
            .post(s.url("/api/auth/login"))
            .json(&json!({"username": "admin", "password": "reload-test-pw"}))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.headers()["set-cookie"].to_str().unwrap().to_string()
    };
    let c = support::client();
    assert!(login(&c).contains("Max-Age=3600"));
    let created: serde_json::Value = c
        .post(s.url("/api/apps"))
        .json(&json!({"name": "Big", "slug": "big"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let id = created["app"]["id"].as_str().unwrap().to_string();
    let upload = || {
        let script = vec![b'#'; 2 * 1024 * 1024];
        let part = reqwest::blocking::multipart::Part::bytes(script).file_name("app.R");
        c.post(s.url(&format!("/api/apps/{id}/upload")))
            .multipart(reqwest::blocking::multipart::Form::new().part("file", part))
            .send()
            .unwrap()
            .status()
    };
    assert_eq!(upload(), StatusCode::PAYLOAD_TOO_LARGE);

    std::fs::write(&file, "upload_max_mb = 5\nsession_ttl_hours = 2\n").unwrap();
    hup(&s);
    wait_log(&s, "config reloaded", 1);
    assert_eq!(upload(), StatusCode::OK);
    assert!(login(&c).contains("Max-Age=7200"));
}
