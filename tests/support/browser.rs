//! Real headless Chromium driven over WebDriver (Debian's `chromium` and
//! `chromium-driver`), for the admin UI tests (tests/ui_browser.rs).
//!
//! `Browser::start` runs chromedriver on a free port in its own process group (the
//! group, Chromium included, is killed on drop) and opens one session. The API is
//! blocking: each call drives fantoccini on the fixture's own runtime, so tests mix
//! it freely with the blocking reqwest helpers of tests/support.
//!
//! Console errors and CSP violations come from chromedriver's browser log
//! (capability `goog:loggingPrefs`, read with `POST /session/{id}/se/log`). Chromium
//! writes every CSP violation there ("Refused to execute inline script because it
//! violates the following Content Security Policy directive: …") at level SEVERE,
//! beside `console.error` output, uncaught exceptions and failed loads — also the
//! ones that happen before any script of ours could listen (during page load).
//! tests/ui_browser.rs proves that a violation is really reported.
//!
//! Screenshots go to `<target>/screenshots/<label>-<name>.png`.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long a page element may take to appear (Chromium on 2 busy cores is slow).
pub const WAIT: Duration = Duration::from_secs(20);

/// Paths of the browser and its driver.
#[derive(Debug, Clone)]
pub struct Tools {
    pub chromium: PathBuf,
    pub driver: PathBuf,
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `RSP_TEST_CHROMIUM` / `RSP_TEST_CHROMEDRIVER`, else Debian's paths, else `PATH`.
pub fn tools() -> Result<Tools, String> {
    let pick = |env: &str, fixed: &[&str], names: &[&str]| -> Option<PathBuf> {
        if let Some(p) = std::env::var_os(env) {
            return Some(PathBuf::from(p)).filter(|p| p.is_file());
        }
        fixed
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .or_else(|| names.iter().find_map(|n| which(n)))
    };
    // Debian's /usr/bin/chromium is a shell wrapper; the real binary is in /usr/lib.
    let chromium = pick(
        "RSP_TEST_CHROMIUM",
        &["/usr/lib/chromium/chromium"],
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = pick(
        "RSP_TEST_CHROMEDRIVER",
        &["/usr/bin/chromedriver"],
        &["chromedriver"],
    );
    match (chromium, driver) {
        (Some(chromium), Some(driver)) => Ok(Tools { chromium, driver }),
        (c, d) => Err(format!(
            "missing {}{}: run scripts/install-test-deps.sh (Debian packages chromium, \
             chromium-driver) or set RSP_TEST_CHROMIUM / RSP_TEST_CHROMEDRIVER",
            if c.is_none() { "chromium " } else { "" },
            if d.is_none() { "chromedriver" } else { "" },
        )),
    }
}

/// The browser tools, or `None` after a loud notice; with CI set, a panic instead.
pub fn tools_or_skip() -> Option<Tools> {
    match tools() {
        Ok(t) => Some(t),
        Err(problem) => {
            if super::in_ci() {
                panic!("CI is set and the browser tests cannot run: {problem}");
            }
            // Straight to stderr: the harness swallows eprintln! of a passing test.
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                let msg = format!(
                    "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                     !!! SKIPPED: browser tests need headless Chromium and chromedriver.\n\
                     !!! {problem}\n\
                     !!! (With CI set this is a failure.)\n\
                     !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
                );
                let _ = std::io::stderr().write_all(msg.as_bytes());
            });
            None
        }
    }
}

/// The window the pages are shown in.
#[derive(Debug, Clone, Copy)]
pub enum Viewport {
    /// A desktop window of this size (CSS pixels).
    Desktop { width: u32, height: u32 },
    /// A phone: Chromium's mobile emulation (viewport meta honoured, touch, device
    /// pixel ratio 2), this many CSS pixels wide and high.
    Phone { width: u32, height: u32 },
}

impl Viewport {
    pub const DESKTOP: Viewport = Viewport::Desktop {
        width: 1280,
        height: 900,
    };
    pub const PHONE: Viewport = Viewport::Phone {
        width: 375,
        height: 812,
    };

    pub fn width(self) -> u32 {
        match self {
            Viewport::Desktop { width, .. } | Viewport::Phone { width, .. } => width,
        }
    }
}

/// One line of the browser's log.
#[derive(Debug, Clone)]
pub struct LogEntry {
    pub level: String,
    pub source: String,
    pub message: String,
}

impl LogEntry {
    pub fn is_csp_violation(&self) -> bool {
        self.message.contains("Content Security Policy")
            || self.message.contains("Content-Security-Policy")
    }

    /// What the tests refuse: errors (console.error, exceptions, failed loads) and
    /// any CSP violation, whatever its level.
    pub fn is_problem(&self) -> bool {
        self.level == "SEVERE" || self.is_csp_violation()
    }
}

/// chromedriver's log endpoint (not part of W3C WebDriver, so fantoccini lacks it).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

/// chromedriver's bridge to the DevTools protocol: `cmd` with `params`.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or("")
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params});
        (http::Method::POST, Some(body.to_string()))
    }
}

/// A headless Chromium session; chromedriver and Chromium die with it.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    pub label: String,
    pub viewport: Viewport,
    /// Console errors and CSP violations seen so far, with the page they came from.
    problems: Vec<String>,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// A browser for `label` (prefix of its screenshots), or `None` (after a notice)
    /// when Chromium or chromedriver is missing outside CI.
    pub fn start(label: &str, viewport: Viewport) -> Option<Browser> {
        let tools = tools_or_skip()?;
        Some(Self::start_with(&tools, label, viewport))
    }

    pub fn start_with(tools: &Tools, label: &str, viewport: Viewport) -> Browser {
        let port = super::free_port();
        let mut cmd = Command::new(&tools.driver);
        cmd.arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // Its own process group: on drop the group goes, Chromium included.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let driver = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", tools.driver.display()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let profile = tempfile::tempdir().unwrap();
        let mut browser = Browser {
            rt,
            client: None,
            driver,
            label: label.to_string(),
            viewport,
            problems: Vec::new(),
            _profile: profile,
        };
        browser.wait_driver(port);
        let caps = browser.capabilities(tools);
        let webdriver = format!("http://127.0.0.1:{port}/");
        let client = browser
            .rt
            .block_on(async {
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&webdriver)
                    .await
            })
            .unwrap_or_else(|e| panic!("open a Chromium session through chromedriver: {e}"));
        browser.client = Some(client);
        browser
    }

    fn wait_driver(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.driver.try_wait() {
                panic!("chromedriver exited at start: {status}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("chromedriver did not listen on port {port} within 20 s");
    }

    fn capabilities(&self, tools: &Tools) -> Capabilities {
        let (w, h) = match self.viewport {
            Viewport::Desktop { width, height } | Viewport::Phone { width, height } => {
                (width, height)
            }
        };
        let mut options = json!({
            "binary": tools.chromium,
            "args": [
                "--headless=new",
                // Tests run as root (CI), where Chromium's sandbox cannot start.
                "--no-sandbox",
                // Docker's /dev/shm is 64 MB: too small for Chromium.
                "--disable-dev-shm-usage",
                "--disable-gpu",
                "--disable-extensions",
                "--no-first-run",
                "--hide-scrollbars",
                "--lang=en-US",
                format!("--user-data-dir={}", self._profile.path().display()),
                format!("--window-size={w},{h}"),
            ],
        });
        if let Viewport::Phone { width, height } = self.viewport {
            options["mobileEmulation"] = json!({
                "deviceMetrics": {"width": width, "height": height, "pixelRatio": 2.0,
                                  "mobile": true, "touch": true},
            });
        }
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": {"browser": "ALL"},
            "pageLoadStrategy": "normal",
        });
        match caps {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("browser session")
    }

    fn run<T>(&self, what: &str, f: impl std::future::Future<Output = Result<T, CmdError>>) -> T {
        self.rt
            .block_on(f)
            .unwrap_or_else(|e| panic!("{what}: {e} (at {})", self.url_or_unknown()))
    }

    fn url_or_unknown(&self) -> String {
        self.rt
            .block_on(self.client().current_url())
            .map(|u| u.to_string())
            .unwrap_or_else(|_| "?".into())
    }

    // ---- navigation and reading --------------------------------------------------

    pub fn goto(&self, url: &str) {
        self.run(&format!("open {url}"), self.client().goto(url));
    }

    pub fn url(&self) -> url::Url {
        self.run("current URL", self.client().current_url())
    }

    /// The path of the current URL, with its query if any.
    pub fn path(&self) -> String {
        let u = self.url();
        match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_string(),
        }
    }

    pub fn title(&self) -> String {
        self.run("title", self.client().title())
    }

    pub fn source(&self) -> String {
        self.run("page source", self.client().source())
    }

    /// Runs `script` (a function body: `return …`) in the page.
    pub fn exec(&self, script: &str, args: Vec<Value>) -> Value {
        self.run("execute script", self.client().execute(script, args))
    }

    fn try_find(&self, css: &str) -> Option<Element> {
        self.rt.block_on(self.client().find(Locator::Css(css))).ok()
    }

    /// How many elements match `css` now.
    pub fn count(&self, css: &str) -> usize {
        self.rt
            .block_on(self.client().find_all(Locator::Css(css)))
            .map(|v| v.len())
            .unwrap_or(0)
    }

    pub fn exists(&self, css: &str) -> bool {
        self.count(css) > 0
    }

    /// Polls `ok` until it holds, up to `within`; panics with `what` and where.
    pub fn wait_until(&self, within: Duration, what: &str, mut ok: impl FnMut(&Browser) -> bool) {
        let deadline = Instant::now() + within;
        loop {
            if ok(self) {
                return;
            }
            if Instant::now() > deadline {
                self.screenshot(&format!("FAILED-{}", sanitize(what)));
                panic!(
                    "not within {within:?}: {what}\nat {}\npage:\n{}",
                    self.url_or_unknown(),
                    excerpt(&self.body_text())
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The first element matching `css`, waiting up to [`WAIT`] for it.
    pub fn find(&self, css: &str) -> Element {
        self.find_within(css, WAIT)
    }

    pub fn find_within(&self, css: &str, within: Duration) -> Element {
        let mut found = None;
        self.wait_until(within, &format!("element {css}"), |b| {
            found = b.try_find(css);
            found.is_some()
        });
        found.unwrap()
    }

    /// Waits for an element `css` whose text contains `needle`.
    pub fn wait_text(&self, css: &str, needle: &str, within: Duration) -> String {
        let mut last = String::new();
        self.wait_until(within, &format!("{css} containing {needle:?}"), |b| {
            last = b.text_of(css).unwrap_or_default();
            last.contains(needle)
        });
        last
    }

    /// The visible text of the first `css`, if there is one.
    pub fn text_of(&self, css: &str) -> Option<String> {
        let el = self.try_find(css)?;
        self.rt.block_on(el.text()).ok()
    }

    pub fn text(&self, css: &str) -> String {
        let el = self.find(css);
        self.run(&format!("text of {css}"), el.text())
    }

    pub fn attr(&self, css: &str, name: &str) -> Option<String> {
        let el = self.find(css);
        self.run(&format!("{name} of {css}"), el.attr(name))
    }

    pub fn body_text(&self) -> String {
        self.text_of("body").unwrap_or_default()
    }

    // ---- acting ------------------------------------------------------------------

    pub fn click(&self, css: &str) {
        let el = self.find(css);
        // Scrolled into view first: on a phone the button may be far down.
        let _ = self.rt.block_on(self.client().execute(
            "arguments[0].scrollIntoView({block: 'center'});",
            vec![serde_json::to_value(&el).unwrap()],
        ));
        self.run(&format!("click {css}"), el.click());
    }

    /// Replaces the value of the input `css` with `value`.
    pub fn fill(&self, css: &str, value: &str) {
        let el = self.find(css);
        self.run(&format!("clear {css}"), el.clear());
        self.run(&format!("type into {css}"), el.send_keys(value));
    }

    /// Picks a local file for `<input type=file>`.
    pub fn choose_file(&self, css: &str, file: &Path) {
        let el = self.find(css);
        self.run(
            &format!("choose {} in {css}", file.display()),
            el.send_keys(&file.to_string_lossy()),
        );
    }

    pub fn select(&self, css: &str, value: &str) {
        let el = self.find(css);
        self.run(
            &format!("select {value:?} in {css}"),
            el.select_by_value(value),
        );
    }

    /// Accepts a `confirm()`/`alert()` dialog if one is open; whether one was.
    pub fn accept_alert(&self) -> bool {
        self.rt.block_on(self.client().accept_alert()).is_ok()
    }

    /// Waits until the document has loaded and htmx has no request in flight.
    pub fn settle(&self) {
        self.wait_until(WAIT, "page loaded", |b| {
            b.rt.block_on(b.client().execute(
                "return document.readyState === 'complete' \
                 && !document.querySelector('.htmx-request');",
                vec![],
            ))
            .map(|v| v == Value::Bool(true))
            .unwrap_or(false)
        });
    }

    /// Logs in through the login form and waits to leave it. On the login page
    /// already (e.g. `/login?next=…` after a redirect) that form is used, so the
    /// way back is kept; elsewhere `/login` is opened first.
    pub fn login(&self, base: &str, username: &str, password: &str) {
        if self.url().path() != "/login" || !self.exists("#login-form") {
            self.goto(&format!("{base}/login"));
        }
        self.fill("#login-form input[name=username]", username);
        self.fill("#login-form input[name=password]", password);
        self.click("#login-submit");
        self.wait_until(WAIT, &format!("logged in as {username}"), |b| {
            b.url().path() != "/login" && b.exists("#topbar")
        });
        self.settle();
    }

    /// Logs out with the top bar's button and waits for the login page.
    pub fn logout(&self) {
        self.click("#logout");
        self.wait_until(WAIT, "logged out", |b| {
            b.url().path() == "/login" && b.exists("#login-form")
        });
    }

    // ---- evidence ----------------------------------------------------------------

    /// Where screenshots go: `<target dir>/screenshots` (next to the test binary's
    /// `<target>/<profile>/deps`, so `CARGO_TARGET_DIR` is respected).
    pub fn screenshot_dir() -> PathBuf {
        let exe = std::env::current_exe().unwrap();
        let target = exe
            .ancestors()
            .nth(3)
            .map(Path::to_path_buf)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
        target.join("screenshots")
    }

    /// Saves the whole page (not only the window; scrolled to the top first, or a
    /// sticky top bar is drawn mid-page) as
    /// `<target>/screenshots/<label>-<name>.png`; the window's part if Chromium
    /// cannot capture beyond it.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let dir = Self::screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}.png", self.label));
        let png = self
            .full_page_png()
            .or_else(|| self.rt.block_on(self.client().screenshot()).ok());
        if let Some(png) = png {
            std::fs::write(&path, png).unwrap();
        }
        path
    }

    /// Saves only what the window shows.
    pub fn screenshot_viewport(&self, name: &str) -> PathBuf {
        let dir = Self::screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}-{name}.png", self.label));
        if let Ok(png) = self.rt.block_on(self.client().screenshot()) {
            std::fs::write(&path, png).unwrap();
        }
        path
    }

    fn full_page_png(&self) -> Option<Vec<u8>> {
        use base64::Engine as _;
        let size = self
            .rt
            .block_on(self.client().execute(
                "window.scrollTo(0, 0); return [document.documentElement.clientWidth, \
                 Math.max(document.documentElement.scrollHeight, window.innerHeight)];",
                vec![],
            ))
            .ok()?;
        let (w, h) = (size[0].as_f64()?, size[1].as_f64()?.min(8000.0));
        let shot = self
            .rt
            .block_on(self.client().issue_cmd(Cdp {
                cmd: "Page.captureScreenshot",
                params: json!({
                    "format": "png",
                    "captureBeyondViewport": true,
                    "clip": {"x": 0, "y": 0, "width": w, "height": h, "scale": 1},
                }),
            }))
            .ok()?;
        base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str()?)
            .ok()
    }

    /// The browser log since the last call (chromedriver hands each line out once).
    pub fn take_log(&self) -> Vec<LogEntry> {
        let v = self.run("read the browser log", self.client().issue_cmd(BrowserLog));
        v.as_array()
            .map(|entries| {
                entries
                    .iter()
                    .map(|e| LogEntry {
                        level: e["level"].as_str().unwrap_or("").to_string(),
                        source: e["source"].as_str().unwrap_or("").to_string(),
                        message: e["message"].as_str().unwrap_or("").to_string(),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records the log's console errors and CSP violations against `page`, except
    /// the ones containing one of `expected` (e.g. the 403 of a refused page).
    pub fn collect_problems(&mut self, page: &str, expected: &[&str]) {
        for e in self.take_log() {
            if e.is_problem() && !expected.iter().any(|x| e.message.contains(x)) {
                self.problems
                    .push(format!("{page}: [{} {}] {}", e.level, e.source, e.message));
            }
        }
    }

    /// A page is done: loaded, title in the house format, screenshot saved, its log
    /// checked; on a phone, no horizontal overflow.
    pub fn page(&mut self, name: &str) {
        self.settle();
        let title = self.title();
        assert!(
            title.ends_with(" — rserve-proxy"),
            "{name}: title {title:?} is not \"Page — rserve-proxy\""
        );
        assert!(self.exists("h1"), "{name}: no <h1>");
        self.exec("window.scrollTo(0, 0);", vec![]);
        self.screenshot(name);
        if let Viewport::Phone { .. } = self.viewport {
            // A phone page is long: also what the screen shows first.
            self.screenshot_viewport(&format!("{name}-screen"));
        }
        if let Viewport::Phone { width, .. } = self.viewport {
            self.assert_no_overflow(name, width);
        }
        self.collect_problems(name, &[]);
    }

    /// The document is no wider than the window (nothing to scroll sideways).
    pub fn assert_no_overflow(&self, page: &str, width: u32) {
        let v = self.exec(
            "return [document.documentElement.scrollWidth, window.innerWidth];",
            vec![],
        );
        let scroll = v[0].as_u64().unwrap_or(u64::MAX);
        let inner = v[1].as_u64().unwrap_or(0);
        assert!(
            scroll <= width as u64,
            "{page}: horizontal overflow at {width} px: scrollWidth {scroll} (innerWidth {inner}); \
             see {}",
            Self::screenshot_dir()
                .join(format!("{}-{page}.png", self.label))
                .display()
        );
    }

    /// The console errors and CSP violations recorded so far.
    pub fn problems(&self) -> &[String] {
        &self.problems
    }

    /// Panics listing every console error and CSP violation seen.
    pub fn assert_no_problems(&mut self) {
        self.collect_problems("end", &[]);
        assert!(
            self.problems.is_empty(),
            "the browser reported console errors / CSP violations:\n{}",
            self.problems.join("\n")
        );
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Ends the session (Chromium exits); bounded, the group kill follows.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        // The group we created at start (process_group(0): its id is the driver's).
        unsafe {
            libc::kill(-(self.driver.id() as i32), libc::SIGKILL);
        }
        let _ = self.driver.wait();
    }
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(60)
        .collect()
}

fn excerpt(s: &str) -> String {
    s.chars().take(1500).collect()
}
