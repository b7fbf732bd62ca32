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

use std::io::Write;
use std::path::{Path, PathBuf};
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
    // And collect_problems records them (assert_no_problems fails on any).
    b.exec("console.error('second deliberate error');", vec![]);
    b.collect_problems("harness", &[]);
    assert!(
        b.problems()
            .iter()
            .any(|p| p.contains("second deliberate error")),
        "console.error not recorded: {:?}",
        b.problems()
    );
}

/// The real binary's pages (no Docker): logged-out redirect, the CSP header really
/// blocks an inline script (and the browser reports it), the pages ui-core serves
/// render without console errors or violations.
#[test]
fn real_csp_blocks_inline_script_and_pages_are_clean() {
    let _one = serial();
    let Some(tools) = support::browser::tools_or_skip() else {
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let base = server.base.clone();
    let mut b = Browser::start_with(&tools, "csp", Viewport::DESKTOP);
    b.goto(&format!("{base}/settings"));
    b.wait_until(WAIT, "redirect to the login page", |b| {
        b.url().path() == "/login"
    });
    b.find("#login-form");
    b.page("login");
    // A script element added to the real page: the CSP header must refuse it.
    b.exec(
        "const s = document.createElement('script'); \
         s.textContent = 'window.injectedRan = true;'; document.body.appendChild(s);",
        vec![],
    );
    assert_eq!(
        b.exec("return window.injectedRan === true;", vec![]),
        serde_json::Value::Bool(false),
        "an inline script ran: the CSP header does not block it"
    );
    let log = b.take_log();
    assert!(
        log.iter().any(|e| e.is_csp_violation() && e.is_problem()),
        "the browser did not report the blocked inline script: {log:?}"
    );
    b.login(&base, "admin", PASSWORD);
    assert_eq!(
        b.path(),
        "/settings",
        "not sent back to where the visitor was going"
    );
    for (path, name) in [
        ("/tokens", "tokens"),
        ("/users", "users"),
        ("/settings", "settings"),
    ] {
        b.goto(&format!("{base}{path}"));
        b.page(&format!("page-{name}"));
    }
    b.assert_no_problems();
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

// ---- the flows -------------------------------------------------------------------

#[test]
fn ui_flow_desktop() {
    flow("desktop", Viewport::DESKTOP);
}

#[test]
fn ui_flow_phone() {
    flow("phone", Viewport::PHONE);
}

/// The uploaded app: an Rserve OCAP app whose entry script is not the default name
/// and not the only `.R` file (so it must be picked), and which writes a log line for
/// every connection (so a line can be made to arrive while the logs page is open).
fn app_zip(dir: &Path) -> PathBuf {
    let hello = "# ui-browser test app (Rserve OCAP mode; the platform runs Rserve).\n\
        source('util.R')\n\
        oc.init <- function() {\n\
          message('ui-browser: connection served by pid ', Sys.getpid())\n\
          list(add = Rserve::ocap(function(a, b) util_add(a, b), 'add'))\n\
        }\n";
    let util = "util_add <- function(a, b) a + b\n";
    let path = dir.join("ui-browser-app.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let opts = zip::write::SimpleFileOptions::default();
    for (name, body) in [
        ("hello.R", hello),
        ("util.R", util),
        ("README.md", "# ui-browser test app\n"),
    ] {
        zip.start_file(name, opts).unwrap();
        zip.write_all(body.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
    path
}

fn flow(label: &str, viewport: Viewport) {
    let _one = serial();
    let Some(tools) = support::browser::tools_or_skip() else {
        return;
    };
    if !support::docker::ready("the UI browser flow") {
        return;
    }
    let t0 = Instant::now();
    let leftovers = Leftovers::default();
    let data = tempfile::tempdir().unwrap();
    let socket = support::docker::socket();
    let server = Server::start(
        data.path(),
        &[
            ("RSP_ADMIN_PASSWORD", PASSWORD),
            ("RSP_DOCKER_SOCKET", socket.to_str().unwrap()),
        ],
    );
    let base = server.base.clone();
    let mut b = Browser::start_with(&tools, label, viewport);

    // ---- login, with the way back to where the visitor was going
    b.goto(&format!("{base}/tokens"));
    b.wait_until(WAIT, "redirect to /login?next=/tokens", |b| {
        let u = b.url();
        u.path() == "/login" && u.query_pairs().any(|(k, v)| k == "next" && v == "/tokens")
    });
    b.find("#login-form");
    b.page("login");
    b.fill("#login-form input[name=username]", "admin");
    b.fill("#login-form input[name=password]", "not-the-password");
    b.click("#login-submit");
    b.wait_until(WAIT, "#login-error says what went wrong", |b| {
        !b.text_of("#login-error")
            .unwrap_or_default()
            .trim()
            .is_empty()
    });
    b.screenshot("login-error");
    // The refused login answers 4xx; Chromium logs that load as an error.
    b.collect_problems("login-error", &["the server responded with a status of 4"]);
    b.fill("#login-form input[name=username]", "admin");
    b.fill("#login-form input[name=password]", PASSWORD);
    b.click("#login-submit");
    b.wait_until(WAIT, "back on /tokens after login", |b| {
        b.url().path() == "/tokens"
    });
    b.settle();
    assert_eq!(b.text("#current-user").trim(), "admin");

    // ---- layout and dashboard
    b.goto(&format!("{base}/"));
    b.find("#cards");
    if let Viewport::Phone { .. } = viewport {
        // Collapsed sidebar: the menu button opens it.
        b.find("#menu-toggle");
        b.screenshot_viewport("menu-closed");
        b.click("label[for=menu-toggle], #menu-toggle");
        b.wait_until(WAIT, "sidebar shown by #menu-toggle", |b| {
            b.exec(
                "const s = document.querySelector('#sidebar'); \
                 const r = s.getBoundingClientRect(); \
                 return getComputedStyle(s).display !== 'none' && r.width > 0 && r.right > 0;",
                vec![],
            ) == serde_json::Value::Bool(true)
        });
        b.screenshot_viewport("menu-open");
        b.goto(&format!("{base}/"));
    }
    for href in ["/", "/apps", "/tokens", "/settings", "/users"] {
        assert!(
            b.exists(&format!("#sidebar a[href=\"{href}\"]")),
            "sidebar has no link to {href} for an admin"
        );
    }
    b.page("dashboard");

    app_steps(&mut b, &server, &leftovers);
    account_steps(&mut b, &server);
    b.assert_no_problems();
    eprintln!("[{label}] flow done in {:?}", t0.elapsed());
}

/// Create an upload app, upload a zip, pick the entry script, start, see it
/// running (live), connect, watch its logs, stop, delete.
fn app_steps(b: &mut Browser, server: &Server, leftovers: &Leftovers) {
    let base = server.base.clone();
    let label = b.label.clone();
    let slug = format!(
        "ui-{label}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let t0 = Instant::now();
    // ---- apps list → new app (upload)
    b.goto(&format!("{base}/apps"));
    b.find("#apps-table, #new-app");
    b.page("apps-empty");
    b.click("#new-app");
    b.wait_until(WAIT, "on /apps/new", |b| b.url().path() == "/apps/new");
    b.find("#app-form");
    b.page("new-app");
    b.fill("#app-form input[name=name]", &format!("UI test {label}"));
    b.fill("#app-form input[name=slug]", &slug);
    // The live slug check answers while typing (htmx), before any submit.
    b.wait_until(WAIT, "#slug-check says something about the slug", |b| {
        !b.text_of("#slug-check")
            .unwrap_or_default()
            .trim()
            .is_empty()
    });
    b.click("#app-form input[name=code_source][value=upload]");
    b.screenshot("new-app-filled");
    b.click("#app-submit");
    let app_path = regex::Regex::new(r"^/apps/([0-9a-f-]{36})(/.*)?$").unwrap();
    let mut id = String::new();
    b.wait_until(WAIT, "created: on the new app's page", |b| {
        if let Some(c) = app_path.captures(b.url().path()) {
            id = c[1].to_string();
            true
        } else {
            false
        }
    });
    leftovers.track(&id);
    b.settle();
    b.collect_problems("new-app-submit", &[]);

    // ---- upload a zip, pick the entry script
    let tmp = tempfile::tempdir().unwrap();
    let zip = app_zip(tmp.path());
    b.goto(&format!("{base}/apps/{id}/upload"));
    b.find("#upload-form");
    b.page("upload");
    b.choose_file("#upload-form input[type=file][name=file]", &zip);
    // Our JS may post on choice; a plain form needs its button.
    let button = "#upload-form button[type=submit], #upload-form input[type=submit]";
    if b.exists(button)
        && b.exec(
            "const e = document.querySelector(arguments[0]); return !!(e && e.offsetParent);",
            vec![button.into()],
        ) == serde_json::Value::Bool(true)
    {
        b.click(button);
    }
    b.wait_text("#file-tree", "hello.R", Duration::from_secs(60));
    assert!(
        b.text("#file-tree").contains("util.R"),
        "file tree lacks util.R"
    );
    // Two .R files: nothing is picked for the user; both are offered.
    b.find("#entry-form input[name=entry_script][value=\"hello.R\"]");
    b.page("upload-done");
    b.click("#entry-form input[name=entry_script][value=\"hello.R\"]");
    b.click("#entry-submit");
    b.settle();
    b.collect_problems("entry-submit", &[]);

    // ---- app detail: start, running, live status, connection snippet
    b.goto(&format!("{base}/apps/{id}"));
    b.find("#app-status");
    b.page("app-detail-stopped");
    // The start is an htmx post that answers once the image is built; meanwhile
    // the status part polls itself. No settle(): the request is long by design.
    b.click("#action-start");
    b.find("#app-status");
    let marker = mark_page(b);
    let mut seen = Vec::new();
    b.wait_until(RUNNING_WITHIN, "#app-status says running", |b| {
        let s = status_text(b);
        if seen.last() != Some(&s) {
            seen.push(s.clone());
        }
        s == "running"
    });
    b.settle();
    let live_on_start = page_marked(b, &marker) && seen.len() > 1;
    eprintln!(
        "[{label}] statuses after start: {seen:?} ({:?})",
        t0.elapsed()
    );
    let ws_url = format!("ws://{}/{slug}/", base.trim_start_matches("http://"));
    b.wait_text("#connect-url", &ws_url, WAIT);
    let snippet = b.text("#connect-snippet");
    assert!(
        snippet.contains(&ws_url),
        "snippet lacks {ws_url}:\n{snippet}"
    );
    assert!(b.exists(".copy-btn"), "no copy button");
    assert!(b.exists("#replicas-table"), "no #replicas-table");
    b.page("app-detail");
    // The URL shown really reaches the app: an OCAP call through the proxy.
    assert_eq!(ocap_add(&ws_url, 2.0, 3.0), 5.0);

    if !live_on_start {
        // The start answered once the app already ran; show the live update with a
        // change made elsewhere (the REST API), the page left open.
        let marker = mark_page(b);
        let api = api_client(server, PASSWORD);
        let stop_url = server.url(&format!("/api/apps/{id}/stop"));
        let stopper = std::thread::spawn(move || api.post(stop_url).send().unwrap().status());
        b.wait_until(
            Duration::from_secs(60),
            "#app-status changes to stopped in place",
            |b| status_text(b) == "stopped",
        );
        assert_eq!(stopper.join().unwrap(), 200);
        assert!(
            page_marked(b, &marker),
            "the page reloaded: status did not change in place"
        );
        b.click("#action-start");
        b.wait_until(RUNNING_WITHIN, "running again", |b| {
            status_text(b) == "running"
        });
    }

    // ---- logs: a line arrives while the page is open
    b.goto(&format!("{base}/apps/{id}/logs?source=runtime"));
    b.find("#log-lines");
    assert!(b.exists("#log-pause"), "no #log-pause");
    let download = b.attr("#log-download", "href").unwrap_or_default();
    assert!(
        download.contains("/logs/download"),
        "#log-download href {download:?}"
    );
    // The stream has replayed what there was (the connection above) ...
    b.wait_until(
        Duration::from_secs(30),
        "the earlier connection's log line",
        |b| connection_lines(b) >= 1,
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = connection_lines(b);
    let marker = mark_page(b);
    // ... and a new connection writes a new line, which must appear without reload.
    assert_eq!(ocap_add(&ws_url, 1.0, 1.0), 2.0);
    b.wait_until(Duration::from_secs(30), "a new log line arrives", |b| {
        connection_lines(b) > before
    });
    assert!(page_marked(b, &marker), "the logs page reloaded");
    // Pause holds new lines back; resume shows them.
    let shown = connection_lines(b);
    b.click("#log-pause");
    assert_eq!(
        b.attr("#log-pause", "aria-pressed").as_deref(),
        Some("true")
    );
    assert_eq!(ocap_add(&ws_url, 2.0, 2.0), 4.0);
    b.wait_text("#log-state", "waiting", Duration::from_secs(30));
    assert_eq!(connection_lines(b), shown, "a line was added while paused");
    b.click("#log-pause");
    b.wait_until(Duration::from_secs(10), "held line shown on resume", |b| {
        connection_lines(b) > shown
    });
    b.page("logs");

    // ---- the dashboard with the app running: its uptime row (fetched as a part)
    b.goto(&format!("{base}/"));
    b.find_within(
        &format!("#uptime-grid .grid-row[data-slug=\"{slug}\"]"),
        Duration::from_secs(30),
    );
    b.find(".card[data-metric]");
    b.page("dashboard-running");

    // ---- stop, delete with the slug
    b.goto(&format!("{base}/apps"));
    b.find(&format!("tr[data-slug=\"{slug}\"] .status-badge"));
    b.page("apps");
    b.goto(&format!("{base}/apps/{id}"));
    b.click("#action-stop");
    b.wait_until(Duration::from_secs(60), "#app-status says stopped", |b| {
        status_text(b) == "stopped"
    });
    b.fill("#delete-form input[name=confirm_slug]", &slug);
    b.screenshot("app-delete-confirm");
    b.click("#delete-submit");
    b.wait_until(WAIT, "back on the apps list after delete", |b| {
        b.url().path() == "/apps"
    });
    b.settle();
    assert!(
        !b.exists(&format!("tr[data-slug=\"{slug}\"]")),
        "deleted app still listed"
    );
    assert!(
        containers_of(&id).is_empty(),
        "containers left after delete"
    );
    b.collect_problems("after-delete", &[]);
}

/// Tokens (create, use, revoke), users (create a non-admin, who then cannot reach
/// the users page), change the password and log in with the new one.
fn account_steps(b: &mut Browser, server: &Server) {
    let base = server.base.clone();
    let label = b.label.clone();
    // ---- API token: create, use, revoke
    b.goto(&format!("{base}/tokens"));
    b.find("#token-form");
    b.page("tokens");
    b.fill("#token-form [name=name]", "ui-browser");
    let expiry = "#token-form [name=expires_in_days]";
    if b.exec(
        "return document.querySelector(arguments[0]).tagName;",
        vec![expiry.into()],
    ) == "SELECT"
    {
        let first = b.exec(
            "return [...document.querySelector(arguments[0]).options].map(o => o.value).find(v => v) || '';",
            vec![expiry.into()],
        );
        b.select(expiry, first.as_str().unwrap_or(""));
    } else {
        b.fill(expiry, "30");
    }
    b.click("#token-submit");
    let shown = b.wait_text("#new-token", "rsp_", WAIT);
    let raw = regex::Regex::new(r"rsp_[A-Za-z0-9]+")
        .unwrap()
        .find(&shown)
        .expect("raw token in #new-token")
        .as_str()
        .to_string();
    let copy = ".copy-btn[data-copy=\"#new-token\"]";
    assert!(b.exists(copy), "no copy button for the new token");
    // The copy works (clipboard) without a console error.
    b.click(copy);
    b.page("token-created");
    assert_eq!(
        api_with_token(server, &raw),
        200,
        "the new token does not work"
    );
    let rows_before = b.count("#tokens-table tr[data-token-id]");
    assert!(rows_before >= 1, "token not listed");
    b.click("#tokens-table tr[data-token-id] .token-revoke");
    // A confirmation dialog, if the page asks, is answered yes.
    let _ = b.accept_alert();
    b.wait_until(WAIT, "the token is refused after revoke", |_| {
        api_with_token(server, &raw) == 401
    });
    b.settle();
    b.collect_problems("token-revoked", &[]);

    // ---- users (admin): a second, non-admin user
    b.goto(&format!("{base}/users"));
    b.find("#users-table");
    b.page("users");
    let viewer = format!("viewer{label}");
    b.fill("#user-form [name=username]", &viewer);
    b.fill("#user-form [name=password]", PASSWORD);
    b.select("#user-form [name=role]", "user");
    b.click("#user-form button[type=submit], #user-form input[type=submit]");
    b.wait_text("#users-table", &viewer, WAIT);
    b.collect_problems("user-created", &[]);
    b.goto(&format!("{base}/settings/audit"));
    b.page("audit");

    // ---- the non-admin cannot reach the users page
    b.logout();
    b.login(&base, &viewer, PASSWORD);
    assert!(
        !b.exists("#sidebar a[href=\"/users\"]"),
        "a non-admin sees the users link"
    );
    b.goto(&format!("{base}/users"));
    b.settle();
    assert!(
        !b.exists("#users-table"),
        "a non-admin sees the users table"
    );
    assert!(!b.exists("#user-form"), "a non-admin sees the user form");
    assert_eq!(b.url().path(), "/users", "403 page, not a redirect");
    let h1 = b.text("h1");
    assert!(!h1.trim().is_empty(), "the refusal page has no heading");
    b.screenshot("users-forbidden");
    b.collect_problems(
        "users-forbidden",
        &["the server responded with a status of 403"],
    );
    b.logout();

    // ---- change the password, log in with the new one
    b.login(&base, "admin", PASSWORD);
    b.goto(&format!("{base}/settings"));
    b.find("#password-form");
    b.page("settings");
    b.fill("#password-form [name=current_password]", PASSWORD);
    b.fill("#password-form [name=new_password]", NEW_PASSWORD);
    b.fill("#password-form [name=confirm_password]", NEW_PASSWORD);
    b.click("#password-submit");
    b.find("#flash");
    b.screenshot("settings-saved");
    b.collect_problems("password-changed", &[]);
    if b.url().path() != "/login" {
        b.logout();
    }
    b.login(&base, "admin", NEW_PASSWORD);
    assert_eq!(b.text("#current-user").trim(), "admin");
}

// ---- page helpers ----------------------------------------------------------------

/// Text of `#app-status`, lower case, trimmed.
fn status_text(b: &Browser) -> String {
    b.text_of("#app-status")
        .unwrap_or_default()
        .trim()
        .to_lowercase()
}

/// Puts a random value on `window`: a reload or navigation loses it.
fn mark_page(b: &Browser) -> String {
    let m = uuid::Uuid::new_v4().to_string();
    b.exec("window.__rspMarker = arguments[0];", vec![m.clone().into()]);
    m
}

fn page_marked(b: &Browser, marker: &str) -> bool {
    b.exec("return window.__rspMarker || '';", vec![]) == marker
}

/// How many `#log-lines` entries come from our app's `oc.init`.
fn connection_lines(b: &Browser) -> usize {
    b.text_of("#log-lines")
        .unwrap_or_default()
        .matches("ui-browser: connection served by pid")
        .count()
}

/// `add(a, b)` over OCAP at `ws_url` (through the proxy).
fn ocap_add(ws_url: &str, a: f64, b: f64) -> f64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = support::qap::OcapClient::connect(ws_url)
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        let r = c
            .call_ok(
                "add",
                &[support::qap::RObj::double(a), support::qap::RObj::double(b)],
            )
            .await
            .unwrap_or_else(|e| panic!("{e:?}"));
        c.close().await;
        match r.value {
            support::qap::RValue::Double(v) => v[0],
            other => panic!("add returned {other:?}"),
        }
    })
}

fn api_client(s: &Server, password: &str) -> reqwest::blocking::Client {
    let c = reqwest::blocking::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    assert_eq!(support::login(&c, s, password), 200, "API login");
    c
}

fn api_with_token(s: &Server, token: &str) -> u16 {
    reqwest::blocking::Client::new()
        .get(s.url("/api/apps"))
        .bearer_auth(token)
        .send()
        .unwrap()
        .status()
        .as_u16()
}

// ---- Docker ----------------------------------------------------------------------

fn containers_of(app: &str) -> Vec<String> {
    let filter = format!("label={LABEL_APP}={app}");
    support::docker::run(&["ps", "-a", "-q", "--filter", &filter])
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(String::from)
        .collect()
}

/// Removes the containers and images of the test's apps however the test ends.
#[derive(Default)]
struct Leftovers(Mutex<Vec<String>>);

impl Leftovers {
    fn track(&self, app: &str) {
        self.0.lock().unwrap().push(app.to_string());
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for app in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let containers = containers_of(app);
            if !containers.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(containers.iter().map(String::as_str));
                let _ = support::docker::run(&args);
            }
            let filter = format!("label={LABEL_APP}={app}");
            let images = support::docker::run(&["images", "-a", "-q", "--filter", &filter])
                .unwrap_or_default();
            let images: Vec<&str> = images.lines().filter(|l| !l.trim().is_empty()).collect();
            if !images.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(images);
                let _ = support::docker::run(&args);
            }
        }
    }
}
