//! The admin UI in a real browser: headless Chromium over WebDriver (Debian's
//! `chromium` + `chromium-driver`, tests/support/browser.rs) against the real
//! binary with real Docker.
//!
//! - `browser_reports_csp_violations_and_console_errors`: the harness itself — a
//!   page with an inline script under a CSP must show up as a violation, so "no
//!   violations" later means something.
//! - `ui_flow_desktop`, `ui_flow_phone`: one long flow each (1280 px window, then a
//!   375 px phone): log in → create an upload app → upload a zip → pick the entry
//!   script → start → running, with the connection snippet, status changing in place
//!   → logs, a line arrives → stop → delete (slug confirmation); create and revoke a
//!   token; a non-admin cannot reach the users page; change the password and log in
//!   with the new one. Every page: screenshot, no console error, no CSP violation; on
//!   the phone no horizontal overflow.
//!
//! Needs Chromium + chromedriver, Docker and the base image `rserve-base:latest`
//! (images/rserve-base/build-from-debian.sh); without them the tests print a notice
//! and pass, with CI set they fail. Run with the Docker lock held:
//! `flock /work/notes/docker.lock cargo test --test ui_browser`.
//! Screenshots: `target/screenshots/`; `scripts/update-screenshots.sh` copies a set
//! into docs/screenshots/.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use support::browser::{Browser, Viewport, WAIT};
use support::Server;

const PASSWORD: &str = "ui-browser-test-password";
const NEW_PASSWORD: &str = "ui-browser-changed-password";
const LABEL_APP: &str = "rserve-proxy.app-id";
/// Image build + first health check; slow machines need long.
const RUNNING_WITHIN: Duration = Duration::from_secs(240);

/// One flow at a time: Chromium and a Docker build each take a core of two.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---- the harness -----------------------------------------------------------------

#[test]
fn browser_reports_csp_violations_and_console_errors() {
    let _one = serial();
    let Some(mut b) = Browser::start("harness", Viewport::DESKTOP) else {
        return;
    };
    // An inline script under `script-src 'self'` (the UI's policy) must be refused
    // and reported; a second one logs a console error, also refused.
    let page = "<!doctype html><html><head>\
        <meta http-equiv=\"Content-Security-Policy\" content=\"script-src 'self'\">\
        <title>t</title></head><body><p id=p>x</p>\
        <script>window.ran = true; console.error('inline ran');</script></body></html>";
    b.goto(&format!("data:text/html,{}", urlencode(page)));
    b.find("#p");
    let ran = b.exec("return window.ran === true;", vec![]);
    assert_eq!(ran, serde_json::Value::Bool(false), "the CSP did not block");
    let log = b.take_log();
    assert!(
        log.iter().any(|e| e.is_csp_violation() && e.is_problem()),
        "no CSP violation in the browser log: {log:?}"
    );
    // console.error from a script that may run (WebDriver's own, outside the CSP).
    b.exec("console.error('deliberate console error');", vec![]);
    let log = b.take_log();
    assert!(
        log.iter()
            .any(|e| e.is_problem() && e.message.contains("deliberate console error")),
        "console.error not in the browser log: {log:?}"
    );
    // And collect_problems turns them into a failure.
    b.exec("console.error('second deliberate error');", vec![]);
    b.collect_problems("harness", &[]);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.assert_no_problems()));
    assert!(r.is_err(), "assert_no_problems passed with an error logged");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|c| match c {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (c as char).to_string()
            }
            _ => format!("%{c:02X}"),
        })
        .collect()
}
