//! The config layers with the real binary: a secret from a `*_file`, a warning for an
//! `RSP_*` variable that names no key, an unknown TOML key refused with exit 2.

mod support;

use std::process::Command;

use reqwest::StatusCode;
use support::{Server, BIN};

#[test]
fn admin_password_from_a_file_and_a_warning_for_a_stray_variable() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("admin_password");
    std::fs::write(&secret, "password-from-file\n").unwrap();
    let s = Server::start(
        &dir.path().join("data"),
        &[
            ("RSP_ADMIN_PASSWORD_FILE", secret.to_str().unwrap()),
            ("RSP_LOGIN_ATTEMPTS_PER_MINUT", "5"),
        ],
    );
    let c = support::client();
    assert_eq!(support::login(&c, &s, "password-from-file"), StatusCode::OK);
    let log = s.log();
    assert!(
        log.contains("RSP_LOGIN_ATTEMPTS_PER_MINUT names no setting"),
        "{log}"
    );
    assert!(
        log.contains("did you mean RSP_LOGIN_ATTEMPTS_PER_MINUTE?"),
        "{log}"
    );
    assert!(
        !log.contains("password-from-file"),
        "the secret is never logged"
    );
}

#[test]
fn unknown_keys_and_unreadable_secret_files_stop_the_start_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "lissten = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .args(["--config", file.to_str().unwrap(), "config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lissten: unknown key (did you mean listen?)"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["--admin-password-file", "/nonexistent/pw", "config"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("admin_password_file: cannot read /nonexistent/pw"),
        "{err}"
    );

    // `config --docs` prints the reference of every key.
    let out = Command::new(BIN)
        .args(["config", "--docs"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let docs = String::from_utf8_lossy(&out.stdout);
    assert!(docs.contains("### `trusted_proxies`"), "{docs}");
}
