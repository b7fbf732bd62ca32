//! The .deb under real systemd: Debian 12 with systemd as PID 1 in a Docker container
//! (packaging/build-systemd-test-image.sh; no --privileged), the package built by
//! cargo-deb from this test build's binary, then install → READY → health, user and
//! file modes, port 80 as non-root, journald lines, reload, restart, and an upgrade to
//! a newer package while a WebSocket session is open.
//!
//! The package holds the debug binary (stripped by cargo-deb): CI builds it for the
//! other tests anyway, and a release build would add 10-15 minutes on two cores. The
//! packaging (files, modes, scripts, unit) is the same as the release package's.
//!
//! Real parts: Docker, the image, cargo-deb (target/tools, from
//! scripts/install-test-deps.sh). Missing ones fail with CI set, else skip.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const IMAGE: &str = "rsp-systemd-test:bookworm";
const UNIT: &str = "rserve-proxy";
/// Tells the containers of one test run apart.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A missing real part: fail in CI, skip elsewhere.
fn missing(what: &str) -> bool {
    if support::in_ci() {
        panic!("CI: {what}");
    }
    eprintln!("skipping: {what}");
    true
}

/// Build the test package at `version` from this build's binary into `out`.
fn build_deb(out: &Path, version: &str) -> PathBuf {
    let cargo_deb = root().join("target/tools/bin/cargo-deb");
    let o = run(Command::new(&cargo_deb)
        .current_dir(root())
        .args(["--no-build", "--profile", "dev", "--strip", "--fast", "-q"])
        .arg("--deb-version")
        .arg(version)
        .arg("-o")
        .arg(out));
    assert!(o.status.success(), "cargo-deb: {}", text(&o));
    let path = out.join(format!("rserve-proxy_{version}_amd64.deb"));
    assert!(path.exists(), "cargo-deb made no {}", path.display());
    path
}

/// A container running systemd as PID 1, removed on drop.
struct Machine {
    name: String,
}

impl Machine {
    fn start(debs: &Path) -> Machine {
        Self::start_with(debs, &[])
    }

    /// `extra`: more `docker run` arguments (mounts).
    fn start_with(debs: &Path, extra: &[String]) -> Machine {
        let name = format!(
            "rsp-systemd-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let _ = run(Command::new("docker").args(["rm", "-f", &name]));
        let o = run(Command::new("docker")
            .args(["run", "-d", "--name", &name])
            // Exactly the flags systemd needs here (no --privileged).
            .args(["--cap-add", "SYS_ADMIN"])
            .args(["--security-opt", "seccomp=unconfined"])
            .args(["--security-opt", "apparmor=unconfined"])
            .args(["--tmpfs", "/run", "--tmpfs", "/run/lock", "--tmpfs", "/tmp"])
            .args(["-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"])
            .args(["-e", "container=docker"])
            // The service inside starts app containers on the host's Docker.
            .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
            .arg("-v")
            .arg(format!("{}:/debs:ro", debs.display()))
            .args(extra)
            .args([IMAGE, "/lib/systemd/systemd"]));
        assert!(o.status.success(), "docker run: {}", text(&o));
        let m = Machine { name };
        // `--wait` returns once boot is over (running, or degraded with a failed unit),
        // but only once systemd answers at all ("offline" before that).
        let booting = Instant::now();
        let mut state = String::new();
        while booting.elapsed() < Duration::from_secs(60) {
            state = m.sh("systemctl is-system-running --wait");
            if state.contains("running") || state.contains("degraded") {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        assert!(
            state.contains("running") || state.contains("degraded"),
            "systemd did not boot: {state}\n{}",
            m.sh("systemctl --failed --no-pager; journalctl -b --no-pager | tail -50")
        );
        m
    }

    fn exec(&self, script: &str) -> Output {
        run(Command::new("docker").args(["exec", &self.name, "sh", "-c", script]))
    }

    /// Output of a shell command inside (stdout and stderr), whatever its status.
    fn sh(&self, script: &str) -> String {
        text(&self.exec(script)).trim().to_string()
    }

    /// A shell command inside that must succeed; its stdout.
    fn ok(&self, script: &str) -> String {
        let o = self.exec(script);
        assert!(o.status.success(), "`{script}` failed: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn inspect(&self, format: &str) -> String {
        let o = run(Command::new("docker").args(["inspect", "-f", format, &self.name]));
        assert!(o.status.success(), "docker inspect: {}", text(&o));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    fn main_pid(&self) -> u32 {
        let pid: u32 = self
            .ok(&format!("systemctl show -p MainPID --value {UNIT}"))
            .parse()
            .unwrap();
        assert_ne!(pid, 0, "no main process: {}", self.status());
        pid
    }

    fn status(&self) -> String {
        self.sh(&format!(
            "systemctl status --no-pager {UNIT}; journalctl -u {UNIT} --no-pager | tail -40"
        ))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.name])
            .output();
    }
}

/// GET /api/health through the unit's public listener: the status, or None.
fn health(c: &reqwest::blocking::Client, base: &str) -> Option<u16> {
    c.get(format!("{base}/api/health"))
        .send()
        .ok()
        .map(|r| r.status().as_u16())
}

fn wait_healthy(c: &reqwest::blocking::Client, base: &str, m: &Machine) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if health(c, base) == Some(200) {
            return start.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no 200 from {base}/api/health: {}", m.status());
}

/// A WebSocket echo server on all addresses (the container reaches it through the
/// Docker bridge): the app behind a static route.
async fn echo_server() -> u16 {
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        if ws.send(msg).await.is_err() {
                            return;
                        }
                    } else if msg.is_close() {
                        return;
                    }
                }
            });
        }
    });
    port
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(url: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(url),
    )
    .await
    .unwrap_or_else(|_| panic!("WebSocket {url}: no answer within 10 s"))
    .unwrap_or_else(|e| panic!("WebSocket {url}: {e}"));
    ws
}

async fn ws_echo(ws: &mut Ws, text: &str) -> Result<(), String> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| format!("send: {e}"))?;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) if t.as_str() == text => return Ok(()),
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            other => return Err(format!("instead of the echo: {other:?}")),
        }
    }
}

/// Docker, cargo-deb and the image are there (else fail in CI, skip elsewhere).
fn prerequisites() -> bool {
    if Command::new("docker")
        .arg("info")
        .output()
        .map_or(true, |o| !o.status.success())
        && missing("the Docker daemon is not reachable")
    {
        return false;
    }
    if !root().join("target/tools/bin/cargo-deb").exists()
        && missing("cargo-deb is not in target/tools (scripts/install-test-deps.sh installs it)")
    {
        return false;
    }
    let image = run(Command::new("bash").arg(root().join("packaging/build-systemd-test-image.sh")));
    if !image.status.success() && missing(&format!("cannot build {IMAGE}: {}", text(&image))) {
        return false;
    }
    true
}

#[test]
fn deb_installs_and_runs_under_systemd() {
    if !prerequisites() {
        return;
    }
    let debs = tempfile::tempdir().unwrap();
    let v1 = build_deb(debs.path(), "0.1.0-1");
    let v2 = build_deb(debs.path(), "0.1.0-2");
    let (v1, v2) = (
        v1.file_name().unwrap().to_string_lossy().into_owned(),
        v2.file_name().unwrap().to_string_lossy().into_owned(),
    );

    let m = Machine::start(debs.path());
    let ip: IpAddr = m.inspect("{{.NetworkSettings.IPAddress}}").parse().unwrap();
    let gateway = m.inspect("{{.NetworkSettings.Gateway}}");
    let base = format!("http://{}", SocketAddr::new(ip, 80));
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    // Docker is installed on a real host: its group owns the socket.
    m.ok("groupadd --system -g \"$(stat -c %g /var/run/docker.sock)\" docker");

    // --- install: postinst creates the user, enables and starts the unit ------------
    let t0 = Instant::now();
    let install = m.ok(&format!("dpkg -i /debs/{v1}"));
    let to_ready = wait_healthy(&c, &base, &m);
    let install_time = t0.elapsed();
    let _ = to_ready;
    assert!(
        install.contains("initial-admin-password"),
        "postinst says where the admin password is: {install}"
    );
    // Type=notify: active only after READY=1.
    assert_eq!(m.sh(&format!("systemctl is-active {UNIT}")), "active");
    assert_eq!(m.sh(&format!("systemctl is-enabled {UNIT}")), "enabled");
    m.ok(&format!("systemd-analyze verify {UNIT}.service"));
    let version = m.ok("rserve-proxy --version");
    assert!(
        version.starts_with(&format!(
            "rserve-proxy {} (commit ",
            env!("CARGO_PKG_VERSION")
        )) && version.contains(", built 20"),
        "--version names the commit and build date: {version}"
    );

    let body: serde_json::Value = c
        .get(format!("{base}/api/health"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(body["db"], true, "{body}");
    assert_eq!(
        body["docker"], true,
        "the sandboxed service reaches Docker: {body}"
    );

    // --- user, groups, file modes --------------------------------------------------
    let groups = m.ok("id -nG rserve-proxy");
    assert!(groups.split_whitespace().any(|g| g == "docker"), "{groups}");
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /var/lib/rserve-proxy"),
        "rserve-proxy:rserve-proxy 750"
    );
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /etc/rserve-proxy/config.toml"),
        "root:rserve-proxy 640"
    );
    assert_eq!(
        m.ok("stat -c '%U %a' /var/lib/rserve-proxy/state.redb /var/lib/rserve-proxy/control.sock"),
        "rserve-proxy 600\nrserve-proxy 600"
    );
    let password_file = m.ok("stat -c '%U %a' /var/lib/rserve-proxy/initial-admin-password");
    assert!(
        password_file.starts_with("rserve-proxy ") && password_file.ends_with("00"),
        "admin password readable by its owner only: {password_file}"
    );

    // --- port 80 bound by a process without root -----------------------------------
    let pid = m.main_pid();
    let proc_status = m.ok(&format!("cat /proc/{pid}/status"));
    let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    let uid: u32 = uid_line.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert_eq!(
        m.ok("id -u rserve-proxy"),
        uid.to_string(),
        "effective uid of the main process: {uid_line}"
    );
    assert_ne!(uid, 0);
    let cap_eff = proc_status
        .lines()
        .find(|l| l.starts_with("CapEff:"))
        .unwrap();
    assert!(
        cap_eff.ends_with("0000000000000400"),
        "only CAP_NET_BIND_SERVICE: {cap_eff}"
    );
    // The socket listening on :80 (0x0050) was opened by the service user (reading
    // /proc/PID/fd would need CAP_SYS_PTRACE, which the container does not have).
    let owners =
        m.ok("awk '$2 ~ /:0050$/ && $4 == \"0A\" {print $8}' /proc/net/tcp /proc/net/tcp6");
    assert_eq!(
        owners,
        uid.to_string(),
        "owner uid of the listener on port 80"
    );

    // --- journald: plain lines with priorities, not JSON ----------------------------
    // (`-o json`: the fields `-o verbose` shows, one entry per line.)
    let journal = m.ok(&format!("journalctl -u {UNIT} -o json --no-pager"));
    let entries: Vec<serde_json::Value> = journal
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &serde_json::Value| e["_PID"].as_str() == Some(pid.to_string().as_str()))
        .collect();
    let serving = entries
        .iter()
        .find(|e| {
            e["MESSAGE"]
                .as_str()
                .is_some_and(|t| t.contains("rserve-proxy serving"))
        })
        .unwrap_or_else(|| panic!("no 'rserve-proxy serving' entry in the journal:\n{journal}"));
    assert_eq!(serving["PRIORITY"], "6", "info → PRIORITY=6: {serving}");
    for e in &entries {
        let msg = e["MESSAGE"].as_str().unwrap_or_default();
        assert!(
            !msg.starts_with('{') && !msg.starts_with('<'),
            "plain lines, priority prefix stripped: {e}"
        );
    }

    // --- restart (picks up a static route for the WebSocket part) --------------------
    let rt = tokio::runtime::Runtime::new().unwrap();
    let echo_port = rt.block_on(echo_server());
    m.ok(&format!(
        "echo 'static_routes = \"echo={gateway}:{echo_port}\"' >> /etc/rserve-proxy/config.toml"
    ));
    // A short watchdog (drop-in) so the test sees it fed, and biting, within seconds.
    m.ok(&format!(
        "mkdir -p /etc/systemd/system/{UNIT}.service.d && \
         printf '[Service]\\nWatchdogSec=3s\\n' > /etc/systemd/system/{UNIT}.service.d/test.conf && \
         systemctl daemon-reload"
    ));
    m.ok(&format!("systemctl restart {UNIT}"));
    let restarted = m.main_pid();
    assert_ne!(restarted, pid, "restart starts a new process");
    assert_eq!(
        health(&c, &base),
        Some(200),
        "healthy right after restart: {}",
        m.status()
    );

    // --- upgrade to a newer package while a WebSocket session is open ---------------
    let ws_url = format!("ws://{}/echo/", SocketAddr::new(ip, 80));
    let mut session = rt.block_on(ws_open(&ws_url));
    rt.block_on(ws_echo(&mut session, "before")).unwrap();
    // New connections all through the switch: none may be refused.
    let stop = Arc::new(AtomicBool::new(false));
    let (tried, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let prober = {
        let (stop, tried, failed, base) =
            (stop.clone(), tried.clone(), failed.clone(), base.clone());
        std::thread::spawn(move || {
            let c = reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .unwrap();
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                tried.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = c.get(format!("{base}/echo/")).send() {
                    failed.fetch_add(1, Ordering::Relaxed);
                    errors.push(e.to_string());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            errors
        })
    };
    let t1 = Instant::now();
    let upgrade = m.ok(&format!("dpkg -i /debs/{v2}"));
    let upgraded = wait_healthy(&c, &base, &m);
    let upgrade_time = t1.elapsed();
    let _ = upgraded;
    stop.store(true, Ordering::Relaxed);
    let errors = prober.join().unwrap();
    assert_eq!(
        m.ok("dpkg-query -W -f '${Version}' rserve-proxy"),
        "0.1.0-2"
    );
    let new_pid = m.main_pid();
    assert_ne!(
        new_pid,
        restarted,
        "the new binary serves (main PID changed): {upgrade}\n{}",
        m.status()
    );
    rt.block_on(ws_echo(&mut session, "after"))
        .unwrap_or_else(|e| panic!("the open session survives the upgrade: {e}\n{}", m.status()));
    let mut fresh = rt.block_on(ws_open(&ws_url));
    rt.block_on(ws_echo(&mut fresh, "new")).unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "connections failed during the upgrade ({} tried): {errors:?}",
        tried.load(Ordering::Relaxed)
    );
    // Data and config survive the upgrade.
    assert!(m
        .ok("cat /etc/rserve-proxy/config.toml")
        .contains("static_routes"));
    m.ok("test -s /var/lib/rserve-proxy/state.redb");

    eprintln!(
        "figures: install (dpkg -i to first 200) {:.2} s; upgrade (dpkg -i, hand-over included) {:.2} s; {} connections during the upgrade, {} failed",
        install_time.as_secs_f64(),
        upgrade_time.as_secs_f64(),
        tried.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );

    // --- reload: SIGHUP re-reads the config in the same process ----------------------
    m.ok("echo 'login_attempts_per_minute = 20' >> /etc/rserve-proxy/config.toml");
    m.ok(&format!("systemctl reload {UNIT}"));
    let reloading = Instant::now();
    let applied = loop {
        let log = m.sh(&format!(
            "journalctl -u {UNIT} --no-pager -o cat _PID={new_pid}"
        ));
        if log.contains("config reloaded (1 applied") {
            break true;
        }
        if reloading.elapsed() > Duration::from_secs(10) {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(applied, "the reload applied the change: {}", m.status());
    assert_eq!(m.sh(&format!("systemctl is-active {UNIT}")), "active");
    assert_eq!(
        m.main_pid(),
        new_pid,
        "reload keeps the process: {}",
        m.status()
    );
    assert_eq!(health(&c, &base), Some(200));

    // --- watchdog: fed while healthy (also by the upgraded process), bites when wedged --
    let fed = || {
        m.ok(&format!(
            "systemctl show -p WatchdogTimestampMonotonic --value {UNIT}"
        ))
    };
    let first = fed();
    std::thread::sleep(Duration::from_secs(3));
    assert_ne!(fed(), first, "the watchdog is fed: {}", m.status());
    assert_eq!(m.main_pid(), new_pid, "not restarted by the watchdog");
    m.ok(&format!("kill -STOP {new_pid}"));
    let wedged = Instant::now();
    loop {
        let now = m.sh(&format!("systemctl show -p MainPID --value {UNIT}"));
        if now != "0"
            && now != new_pid.to_string()
            && m.sh(&format!("systemctl is-active {UNIT}")) == "active"
        {
            break;
        }
        assert!(
            wedged.elapsed() < Duration::from_secs(30),
            "a wedged server is restarted by the watchdog: {}",
            m.status()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        m.sh(&format!("journalctl -u {UNIT} --no-pager"))
            .contains("Watchdog timeout"),
        "{}",
        m.status()
    );
    wait_healthy(&c, &base, &m);

    // --- removal keeps the data, purge removes it -----------------------------------
    m.ok("dpkg -r rserve-proxy");
    assert_eq!(m.sh(&format!("systemctl is-active {UNIT}")), "inactive");
    m.ok("test -s /var/lib/rserve-proxy/state.redb");
    m.ok("dpkg -P rserve-proxy");
    m.ok("test ! -e /var/lib/rserve-proxy");
}

/// The commented config the package ships: as it is, and with each block of commented
/// examples (consecutive `# key = value` lines; blocks are alternatives, like
/// `tls_mode = "off"` and the ACME block) switched on, every line is a key this
/// binary accepts with a valid value.
#[test]
fn packaged_config_and_its_examples_load() {
    let shipped = std::fs::read_to_string(root().join("packaging/config.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let check = |config: &str, what: &str| {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let o = run(Command::new(support::BIN).arg("--config").arg(&path).args([
            "--data-dir",
            "/nonexistent",
            "config",
        ]));
        assert!(o.status.success(), "{what}\n{}", text(&o));
    };
    check(&shipped, "the shipped config");
    // An example: `# key = …` or `# [[table]]`.
    let example = |line: &str| -> Option<String> {
        let e = line.strip_prefix("# ")?;
        let key = e.split(" = ").next()?;
        let is_key = e.contains(" = ") && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
        (is_key || e.starts_with("[[")).then(|| e.to_string())
    };
    let mut blocks: Vec<Vec<String>> = vec![Vec::new()];
    for line in shipped.lines() {
        match example(line) {
            Some(e) => {
                // A table starts its own block.
                if e.starts_with("[[") && blocks.last().is_some_and(|b| !b.is_empty()) {
                    blocks.push(Vec::new());
                }
                blocks.last_mut().unwrap().push(e)
            }
            None if blocks.last().is_some_and(|b| !b.is_empty()) => blocks.push(Vec::new()),
            None => {}
        }
    }
    blocks.retain(|b| !b.is_empty());
    let mut examples = 0;
    for block in &blocks {
        examples += block.len();
        let keys: Vec<String> = block
            .iter()
            .filter_map(|e| e.split(" = ").next().map(|k| format!("{k} = ")))
            .collect();
        // Keys the shipped file sets (listen) are replaced, not repeated.
        let base: String = shipped
            .lines()
            .filter(|l| !keys.iter().any(|k| l.starts_with(k.as_str())))
            .map(|l| format!("{l}\n"))
            .collect();
        let text_of_block = block.join("\n");
        // A table goes last (after it, keys would belong to it).
        let config = if block[0].starts_with("[[") {
            format!("{base}\n{text_of_block}\n")
        } else {
            format!("{text_of_block}\n{base}")
        };
        check(&config, &text_of_block);
    }
    assert!(
        examples >= 20,
        "only {examples} examples found in {} blocks",
        blocks.len()
    );
}

/// packaging/install.sh on a systemd machine without the .deb: checks, files, user,
/// base image check, start, where the password is; run again it upgrades in place and
/// keeps the config.
#[test]
fn install_sh_installs_and_upgrades() {
    if !prerequisites() {
        return;
    }
    // The stripped binary, as packaged (the debug build itself is 300 MB).
    let debs = tempfile::tempdir().unwrap();
    let deb = build_deb(debs.path(), "0.1.0-1");
    let unpacked = debs.path().join("root");
    let o = run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked));
    assert!(o.status.success(), "dpkg-deb -x: {}", text(&o));
    let m = Machine::start_with(
        debs.path(),
        &[
            "-v".into(),
            format!("{}:/src:ro", root().display()),
            "-v".into(),
            format!("{}:/opt/rsp:ro", unpacked.join("usr/bin").display()),
            // A Docker CLI (the host's static one) for the base-image check.
            "-v".into(),
            format!("{}:/usr/bin/docker:ro", which("docker").display()),
        ],
    );
    m.ok("groupadd --system -g \"$(stat -c %g /var/run/docker.sock)\" docker");
    let ip: IpAddr = m.inspect("{{.NetworkSettings.IPAddress}}").parse().unwrap();
    let base = format!("http://{}", SocketAddr::new(ip, 80));
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let out = m.ok("bash /src/packaging/install.sh --binary /opt/rsp/rserve-proxy 2>&1");
    assert!(
        out.contains("/var/lib/rserve-proxy/initial-admin-password"),
        "says where the password is: {out}"
    );
    assert_eq!(m.sh(&format!("systemctl is-active {UNIT}")), "active");
    assert_eq!(m.sh(&format!("systemctl is-enabled {UNIT}")), "enabled");
    wait_healthy(&c, &base, &m);
    assert_eq!(
        m.ok("stat -c '%U:%G %a' /etc/rserve-proxy/config.toml /var/lib/rserve-proxy"),
        "root:rserve-proxy 640\nrserve-proxy:rserve-proxy 750"
    );
    let pid = m.main_pid();

    // Again: the binary is replaced, the config kept, the server handed over.
    m.ok("echo '# local change' >> /etc/rserve-proxy/config.toml");
    let again = m.ok("bash /src/packaging/install.sh --binary /opt/rsp/rserve-proxy 2>&1");
    assert!(
        again.contains("keeping /etc/rserve-proxy/config.toml"),
        "{again}"
    );
    assert!(m
        .ok("cat /etc/rserve-proxy/config.toml")
        .contains("# local change"));
    assert_eq!(m.sh(&format!("systemctl is-active {UNIT}")), "active");
    assert_ne!(m.main_pid(), pid, "the new binary serves: {again}");
    wait_healthy(&c, &base, &m);

    // Without Docker answering it refuses, and says what to do.
    let refused = m.exec(
        "DOCKER_HOST=unix:///nonexistent bash /src/packaging/install.sh --binary /opt/rsp/rserve-proxy",
    );
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("Docker daemon does not answer"),
        "{}",
        text(&refused)
    );
}

fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(program))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| panic!("{program} not on PATH"))
}
