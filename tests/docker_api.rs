//! End to end: the started `rserve-proxy` binary's REST API driving real Docker.
//!
//! Needs Docker at `RSP_TEST_DOCKER_SOCKET` (default /var/run/docker.sock), the
//! `docker` CLI (to check what the API says against what Docker has) and the base
//! image `rserve-base:latest` (images/rserve-base/build-from-debian.sh). Without them
//! these tests fail when `CI=true`, and otherwise print a loud notice and pass.
//!
//! Each test runs its own server on its own data dir (so its own instance label: no
//! server adopts or removes another's apps) with its own slugs (random suffix), so
//! the tests run in parallel with each other and beside other users of the daemon. A
//! guard removes whatever carries a test's app ids when it ends, passed or not.
//! Timings are printed (`cargo test --test docker_api -- --nocapture`).

mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::blocking::{multipart, Client};
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::{json_of, Server};

const PASSWORD: &str = "docker-api-test-password";
const LABEL_APP: &str = "rserve-proxy.app-id";
/// First build plus health check take ~20 s on a laptop; CI machines can be slower.
const HEALTHY_WITHIN: Duration = Duration::from_secs(90);

fn socket() -> PathBuf {
    std::env::var_os("RSP_TEST_DOCKER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

// ---- Docker, through its CLI ----------------------------------------------------

fn docker_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new("docker");
    cmd.args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket().display()));
    cmd
}

/// Run `docker <args>`; its stdout, or why it failed.
fn try_docker(args: &[&str]) -> Result<String, String> {
    let out = docker_cmd(args)
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker(args: &[&str]) -> String {
    try_docker(args).unwrap_or_else(|e| panic!("{e}"))
}

fn lines(s: &str) -> Vec<String> {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

/// Short ids of the app's containers, running or not.
fn containers_of(app: &str) -> BTreeSet<String> {
    let filter = format!("label={LABEL_APP}={app}");
    lines(&docker(&["ps", "-a", "-q", "--filter", &filter]))
        .into_iter()
        .collect()
}

/// Ids of the app's images, intermediate layers included.
fn images_of(app: &str) -> BTreeSet<String> {
    let filter = format!("label={LABEL_APP}={app}");
    lines(&docker(&[
        "images",
        "-a",
        "-q",
        "--no-trunc",
        "--filter",
        &filter,
    ]))
    .into_iter()
    .collect()
}

/// `repo:tag` of the app's tagged images.
fn image_refs_of(app: &str) -> BTreeSet<String> {
    let filter = format!("label={LABEL_APP}={app}");
    lines(&docker(&[
        "images",
        "--filter",
        &filter,
        "--format",
        "{{.Repository}}:{{.Tag}}",
    ]))
    .into_iter()
    .collect()
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container])
}

/// Where the proxy would connect: the replica's address on the `rserve-proxy` network.
fn replica_addr(container: &str) -> SocketAddr {
    let ip = inspect(
        container,
        "{{with index .NetworkSettings.Networks \"rserve-proxy\"}}{{.IPAddress}}{{end}}",
    );
    format!("{ip}:8081")
        .parse()
        .unwrap_or_else(|e| panic!("no address for {container} ({ip:?}): {e}"))
}

/// Whether the tests can run; a loud notice (or, with CI=true, a panic) when not.
fn docker_env() -> bool {
    let ci = support::in_ci();
    let problem = match try_docker(&["version", "--format", "{{.Server.Version}}"]) {
        Err(e) => Some(e),
        Ok(_) => try_docker(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "rserve-base:latest",
        ])
        .err()
        .map(|e| format!("{e}: run images/rserve-base/build-from-debian.sh")),
    };
    if let Some(problem) = problem {
        if ci {
            panic!("CI=true and the Docker API tests cannot run: {problem}");
        }
        // Straight to stderr, not eprintln!: the harness would swallow that for a
        // passing test, and this must be seen. Once per run is enough.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let msg = format!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: Docker API tests need Docker, its CLI and rserve-base:latest.\n\
                 !!! {problem}\n\
                 !!! (With CI=true this is a failure.)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            let _ = std::io::stderr().write_all(msg.as_bytes());
        });
        return false;
    }
    true
}

/// Removes the containers and images of the test's apps when the test ends, however
/// it ends. Declare it before the server, so the server is gone first.
#[derive(Default)]
struct Leftovers(RefCell<Vec<String>>);

impl Leftovers {
    fn track(&self, app: &str) {
        self.0.borrow_mut().push(app.to_string());
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        for app in self.0.borrow().iter() {
            let filter = format!("label={LABEL_APP}={app}");
            let containers =
                lines(&try_docker(&["ps", "-a", "-q", "--filter", &filter]).unwrap_or_default());
            if !containers.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(containers.iter().map(String::as_str));
                let _ = try_docker(&args);
            }
            let images = lines(
                &try_docker(&["images", "-a", "-q", "--filter", &filter]).unwrap_or_default(),
            );
            if !images.is_empty() {
                let mut args = vec!["rmi", "-f"];
                args.extend(images.iter().map(String::as_str));
                let _ = try_docker(&args);
            }
            if std::thread::panicking() && !(containers.is_empty() && images.is_empty()) {
                eprintln!(
                    "cleanup of app {app}: removed {} container(s), {} image(s)",
                    containers.len(),
                    images.len()
                );
            }
        }
    }
}

// ---- the API --------------------------------------------------------------------

/// A unique slug: parallel runs and leftovers never share names.
fn slug(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

fn start_server(data: &Path) -> Server {
    let socket = socket();
    Server::start(
        data,
        &[
            ("RSP_ADMIN_PASSWORD", PASSWORD),
            ("RSP_DOCKER_SOCKET", socket.to_str().unwrap()),
        ],
    )
}

/// Logged in as admin; builds happen inside `start`, so requests may take long.
fn admin(s: &Server) -> Client {
    let c = Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let st = support::login(&c, s, PASSWORD);
    assert_eq!(st, 200, "login");
    c
}

fn create_app(c: &Client, s: &Server, slug: &str, leftovers: &Leftovers) -> String {
    let (st, body) = json_of(
        c.post(s.url("/api/apps"))
            .json(&json!({"name": slug, "slug": slug}))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 201, "{body}");
    let id = body["app"]["id"].as_str().unwrap().to_string();
    leftovers.track(&id);
    id
}

fn upload(c: &Client, s: &Server, id: &str, filename: &str, data: Vec<u8>) -> Value {
    let form = multipart::Form::new().part(
        "file",
        multipart::Part::bytes(data).file_name(filename.to_string()),
    );
    let (st, body) = json_of(
        c.post(s.url(&format!("/api/apps/{id}/upload")))
            .multipart(form)
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "upload {filename}: {body}");
    body
}

/// POST /api/apps/:id/<verb>.
fn lifecycle(c: &Client, s: &Server, id: &str, verb: &str) -> (StatusCode, Value) {
    json_of(
        c.post(s.url(&format!("/api/apps/{id}/{verb}")))
            .send()
            .unwrap(),
    )
}

fn get_app(c: &Client, s: &Server, id: &str) -> Value {
    let (st, body) = json_of(c.get(s.url(&format!("/api/apps/{id}"))).send().unwrap());
    assert_eq!(st, 200, "{body}");
    body["app"].clone()
}

/// Poll the app until `ok` holds; panics with the last view after `within`.
fn wait_app(
    c: &Client,
    s: &Server,
    id: &str,
    within: Duration,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let app = get_app(c, s, id);
        if ok(&app) {
            return app;
        }
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {within:?}; last view: {app:#}\nserver log:\n{}",
                s.log()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Status `running` with `n` containers, every one healthy.
fn running(n: usize) -> impl Fn(&Value) -> bool {
    move |app| {
        let containers = app["containers"].as_array().unwrap();
        app["status"] == "running"
            && containers.len() == n
            && containers
                .iter()
                .all(|c| c["status"] == "running" && c["healthStatus"] == "healthy")
    }
}

fn container_ids(app: &Value) -> BTreeSet<String> {
    app["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["containerId"].as_str().unwrap().to_string())
        .collect()
}

/// The `data` of every `log` event of a server-sent event stream.
fn sse_log_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut event = None;
    for line in text.lines() {
        if let Some(e) = line.strip_prefix("event:") {
            event = Some(e.trim().to_string());
        } else if let Some(d) = line.strip_prefix("data:") {
            if event.as_deref() == Some("log") {
                out.push(d.strip_prefix(' ').unwrap_or(d).to_string());
            }
        } else if line.is_empty() {
            event = None;
        }
    }
    out
}

/// The build log: the last build replayed; the stream ends with it when no build runs.
fn build_log(c: &Client, s: &Server, id: &str) -> (String, Vec<String>) {
    let r = c
        .get(s.url(&format!("/api/apps/{id}/logs")))
        .timeout(Duration::from_secs(30))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = r.text().unwrap();
    let lines = sse_log_lines(&text);
    (text, lines)
}

/// The replicas' output is followed: read until a line satisfies `ok`, then hang up.
fn runtime_log_until(c: &Client, s: &Server, id: &str, ok: impl Fn(&str) -> bool) -> String {
    let r = c
        .get(s.url(&format!("/api/apps/{id}/logs?source=runtime")))
        .timeout(Duration::from_secs(20))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut seen = Vec::new();
    for line in BufReader::new(r).lines() {
        let Ok(line) = line else { break };
        if let Some(d) = line.strip_prefix("data: ") {
            if ok(d) {
                return d.to_string();
            }
        }
        seen.push(line);
    }
    panic!("no such runtime log line; got:\n{}", seen.join("\n"));
}

// ---- code -----------------------------------------------------------------------

fn hello_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello")
}

fn hello_script() -> Vec<u8> {
    std::fs::read(hello_dir().join("run_rserve.R")).unwrap()
}

/// A .tar.gz of `files` (name, contents), as a user's tar would make it.
fn targz(files: &[(&str, &[u8])]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        tar.append_data(&mut header, name, *data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

/// examples/hello as an archive.
fn hello_targz() -> Vec<u8> {
    let readme = std::fs::read(hello_dir().join("README.md")).unwrap();
    targz(&[("README.md", &readme), ("run_rserve.R", &hello_script())])
}

/// WebSocket handshake with a replica's Rserve by hand; the first frame's payload.
fn ws_greeting(addr: SocketAddr) -> Vec<u8> {
    let mut tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tcp.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).unwrap();
    assert_eq!(h[0] & 0x0f, 0x2, "first frame is not binary");
    let len = match h[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            tcp.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            tcp.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    tcp.read_exact(&mut payload).unwrap();
    payload
}

/// Polls an app in the background: every status and container id it shows.
struct Observer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(BTreeSet<String>, BTreeSet<String>)>,
}

impl Observer {
    fn start(c: &Client, s: &Server, id: &str) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, url, done) = (c.clone(), s.url(&format!("/api/apps/{id}")), stop.clone());
        let thread = std::thread::spawn(move || {
            let (mut statuses, mut containers) = (BTreeSet::new(), BTreeSet::new());
            while !done.load(Ordering::SeqCst) {
                if let Ok((StatusCode::OK, body)) = c.get(&url).send().map(json_of) {
                    statuses.insert(body["app"]["status"].as_str().unwrap().to_string());
                    containers.extend(container_ids(&body["app"]));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (statuses, containers)
        });
        Observer { stop, thread }
    }

    /// (statuses, container ids) seen.
    fn finish(self) -> (BTreeSet<String>, BTreeSet<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// `ok` must hold within `within` (polled).
fn eventually(within: Duration, what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- tests ----------------------------------------------------------------------

/// Upload, build, run, talk to a replica, stop, start without a rebuild, a code
/// change, an explicit rebuild, logs, R versions, delete — all through the API.
#[test]
fn app_lifecycle_through_the_api() {
    if !docker_env() {
        return;
    }
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let c = admin(&s);
    let slug = slug("e2e-life");
    let id = create_app(&c, &s, &slug, &leftovers);

    // R versions: what the base images are tagged with, newest first.
    let (st, versions) = json_of(c.get(s.url("/api/apps/r-versions")).send().unwrap());
    assert_eq!(st, 200, "{versions}");
    let versions: Vec<String> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let tags = lines(&docker(&["images", "rserve-base", "--format", "{{.Tag}}"]));
    for tag in tags.iter().filter(|t| *t != "latest" && *t != "<none>") {
        assert!(versions.contains(tag), "{tag} missing from {versions:?}");
    }
    assert!(!versions.iter().any(|v| v == "latest"), "{versions:?}");
    if try_docker(&["image", "inspect", "rserve-base:4.2.2"]).is_ok() {
        assert!(versions.iter().any(|v| v == "4.2.2"), "{versions:?}");
    }

    // Upload examples/hello as a .tar.gz.
    let up = upload(&c, &s, &id, "hello.tar.gz", hello_targz());
    assert_eq!(up["ok"], true);
    assert_eq!(up["path"], format!("uploads/{id}"));
    assert_eq!(up["entryScript"], "run_rserve.R");
    let mut files: Vec<&str> = up["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["README.md", "run_rserve.R"]);
    assert!(dir
        .path()
        .join("uploads")
        .join(&id)
        .join("run_rserve.R")
        .is_file());

    // Start: builds, then answers "starting"; healthy a little later.
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "status": "starting"}));
    let built = t.elapsed();
    let app = wait_app(&c, &s, &id, HEALTHY_WITHIN, "healthy", running(1));
    println!(
        "[figure] first start (build) answered after {built:?}, healthy after {:?}",
        t.elapsed()
    );
    assert_eq!(app["wsPath"], format!("/{slug}/"));
    let c0 = &app["containers"][0];
    assert_eq!(c0["port"], 8081);
    assert!(c0["startedAt"].is_string(), "{c0}");
    let ids = container_ids(&app);
    assert_eq!(ids, containers_of(&id), "the API's containers are Docker's");
    let container = ids.first().unwrap().clone();
    assert_eq!(container.len(), 12);
    assert_eq!(
        inspect(&container, "{{.Name}}"),
        format!("/rserve-{slug}-1")
    );

    // The replica speaks Rserve OCAP over WebSocket on the managed network.
    let greeting = ws_greeting(replica_addr(&container));
    assert!(
        greeting.starts_with(b"RsOC"),
        "greeting: {:?}",
        String::from_utf8_lossy(&greeting)
    );

    // One image, rserve-app-<slug>:<hash>, and the build's log.
    let refs = image_refs_of(&id);
    assert_eq!(refs.len(), 1, "{refs:?}");
    let first_ref = refs.first().unwrap().clone();
    let (repo, first_tag) = first_ref.split_once(':').unwrap();
    assert_eq!(repo, format!("rserve-app-{slug}"));
    assert_eq!(first_tag.len(), 12);
    assert_eq!(inspect(&container, "{{.Config.Image}}"), first_ref);
    let first_image = docker(&["image", "inspect", "--format", "{{.Id}}", &first_ref]);
    let (text, first_log) = build_log(&c, &s, &id);
    assert!(text.contains("event: log\n"), "{text}");
    assert!(
        first_log
            .iter()
            .any(|l| l.starts_with(&format!("rserve-proxy: built {first_ref} in "))),
        "{first_log:#?}"
    );

    // Runtime output, prefixed with the replica's name.
    let line = runtime_log_until(&c, &s, &id, |l| {
        l.starts_with(&format!("rserve-{slug}-1 | "))
    });
    println!("[figure] first runtime log line: {line}");

    // Stop: gone from Docker and from the API at once.
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "stop");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "status": "stopped"}));
    println!("[figure] stop answered after {:?}", t.elapsed());
    eventually(Duration::from_secs(1), "stopped everywhere", || {
        containers_of(&id).is_empty() && get_app(&c, &s, &id)["status"] == "stopped"
    });
    let app = get_app(&c, &s, &id);
    assert_eq!(app["containers"], json!([]));
    assert!(app.get("wsPath").is_none(), "{app}");

    // Start again: the image is reused (same id, still the only one, same build log).
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["ok"], true);
    assert!(
        body["status"] == "starting" || body["status"] == "running",
        "{body}"
    );
    let again = t.elapsed();
    let app = wait_app(&c, &s, &id, HEALTHY_WITHIN, "healthy again", running(1));
    println!(
        "[figure] start with the cached image answered after {again:?}, healthy after {:?}",
        t.elapsed()
    );
    assert_eq!(image_refs_of(&id), refs, "no new image");
    assert_eq!(
        docker(&["image", "inspect", "--format", "{{.Id}}", &first_ref]),
        first_image
    );
    assert_eq!(build_log(&c, &s, &id).1, first_log, "no build ran");
    let second = container_ids(&app);
    assert_eq!(second, containers_of(&id));
    assert_ne!(second, ids, "new replicas");

    // Changed code: a new hash, a build, the replicas replaced, the old image pruned.
    let mut script = hello_script();
    script.extend_from_slice(b"\nhello_twice <- function(x) 2 * x\n");
    let up = upload(&c, &s, &id, "run_rserve.R", script);
    assert_eq!(up["files"], json!(["run_rserve.R"]));
    // While it builds, the API says `building` and lists only the replicas (never
    // the build's own short-lived containers, which carry the app's labels too).
    let watching = Observer::start(&c, &s, &id);
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "status": "starting"}));
    let app = wait_app(
        &c,
        &s,
        &id,
        HEALTHY_WITHIN,
        "healthy after a change",
        running(1),
    );
    let (statuses, seen) = watching.finish();
    assert!(statuses.contains("building"), "{statuses:?}");
    let replicas: BTreeSet<String> = second.union(&container_ids(&app)).cloned().collect();
    assert!(
        seen.is_subset(&replicas),
        "containers other than replicas listed: {:?} (replicas {replicas:?})",
        seen.difference(&replicas).collect::<Vec<_>>()
    );
    println!(
        "[figure] code change: build + replace, healthy after {:?}",
        t.elapsed()
    );
    let third = container_ids(&app);
    assert_eq!(third, containers_of(&id));
    let now_ref = inspect(third.first().unwrap(), "{{.Config.Image}}");
    let (now_repo, second_tag) = now_ref.split_once(':').unwrap();
    assert_eq!(now_repo, repo);
    assert_ne!(second_tag, first_tag, "the code is part of the hash");
    eventually(Duration::from_secs(30), "old image pruned", || {
        image_refs_of(&id) == BTreeSet::from([now_ref.clone()])
    });
    let (_, second_log) = build_log(&c, &s, &id);
    assert!(
        second_log
            .iter()
            .any(|l| l.starts_with(&format!("rserve-proxy: built {now_ref} in "))),
        "{second_log:#?}"
    );

    // Explicit rebuild: always builds; same inputs, same tag.
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "rebuild");
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        body,
        json!({"ok": true, "status": "starting", "imageName": repo, "imageTag": second_tag})
    );
    wait_app(
        &c,
        &s,
        &id,
        HEALTHY_WITHIN,
        "healthy after rebuild",
        running(1),
    );
    println!("[figure] rebuild, healthy after {:?}", t.elapsed());
    let (_, third_log) = build_log(&c, &s, &id);
    assert_ne!(third_log, second_log, "a new build log");
    assert!(
        third_log
            .iter()
            .any(|l| l.starts_with(&format!("rserve-proxy: built {now_ref} in "))),
        "{third_log:#?}"
    );

    // Delete: nothing left in Docker or on disk.
    let t = Instant::now();
    let (st, body) = json_of(c.delete(s.url(&format!("/api/apps/{id}"))).send().unwrap());
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true}));
    println!("[figure] delete answered after {:?}", t.elapsed());
    assert!(containers_of(&id).is_empty());
    assert!(images_of(&id).is_empty(), "{:?}", images_of(&id));
    assert!(!dir.path().join("uploads").join(&id).exists());
    let st = c
        .get(s.url(&format!("/api/apps/{id}")))
        .send()
        .unwrap()
        .status();
    assert_eq!(st, 404);
}

/// A syntax error fails the build: 500 with R's message and the build log; the app
/// reports `error` until fixed code builds.
#[test]
fn broken_code_fails_the_build_with_rs_message() {
    if !docker_env() {
        return;
    }
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let c = admin(&s);
    let id = create_app(&c, &s, &slug("e2e-broken"), &leftovers);

    upload(
        &c,
        &s,
        &id,
        "run_rserve.R",
        b"oc.init <- function() {\n  list(\n}\n".to_vec(),
    );
    let watching = Observer::start(&c, &s, &id);
    let t = Instant::now();
    let (st, body) = lifecycle(&c, &s, &id, "start");
    println!("[figure] failed build answered after {:?}", t.elapsed());
    let (statuses, seen) = watching.finish();
    assert!(statuses.contains("building"), "{statuses:?}");
    assert!(seen.is_empty(), "no replica ever ran, yet listed: {seen:?}");
    assert_eq!(st, 500, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.starts_with("Build failed: "), "{error}");
    assert!(error.contains("unexpected"), "{error}");
    let log = body["buildLog"].as_array().expect("buildLog");
    assert!(
        log.iter()
            .any(|l| l.as_str().unwrap().contains("unexpected")),
        "{body:#}"
    );

    let app = get_app(&c, &s, &id);
    assert_eq!(app["status"], "error", "{app}");
    assert!(
        app["error"].as_str().unwrap_or("").contains("unexpected"),
        "{app}"
    );
    assert_eq!(app["containers"], json!([]));
    assert!(containers_of(&id).is_empty());
    let (_, lines) = build_log(&c, &s, &id);
    assert!(lines.iter().any(|l| l.contains("unexpected")), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("rserve-proxy: build failed: ")),
        "{lines:#?}"
    );
    // The failed build leaves no image behind, not even its layers.
    assert!(images_of(&id).is_empty(), "{:?}", images_of(&id));

    // Fixed code builds and runs; the error is gone.
    upload(&c, &s, &id, "run_rserve.R", hello_script());
    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    let app = wait_app(
        &c,
        &s,
        &id,
        HEALTHY_WITHIN,
        "healthy once fixed",
        running(1),
    );
    assert!(app.get("error").is_none(), "{app}");

    let (st, _) = json_of(c.delete(s.url(&format!("/api/apps/{id}"))).send().unwrap());
    assert_eq!(st, 200);
    assert!(containers_of(&id).is_empty());
    assert!(images_of(&id).is_empty());
}

/// Two replicas: one killed is brought back (degraded, then running); a restart of
/// rserve-proxy adopts the running replicas without touching them.
#[test]
fn replicas_survive_a_kill_and_a_restart_of_rserve_proxy() {
    if !docker_env() {
        return;
    }
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let c = admin(&s);
    let slug = slug("e2e-two");
    let id = create_app(&c, &s, &slug, &leftovers);
    upload(&c, &s, &id, "hello.tar.gz", hello_targz());
    let (st, body) = json_of(
        c.put(s.url(&format!("/api/apps/{id}")))
            .json(&json!({"replicas": 2}))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["app"]["replicas"], 2);

    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    let app = wait_app(&c, &s, &id, HEALTHY_WITHIN, "two healthy", running(2));
    assert_eq!(container_ids(&app), containers_of(&id));

    // Kill replica 2 behind rserve-proxy's back.
    let victim = app["containers"][1]["containerId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(inspect(&victim, "{{.Name}}"), format!("/rserve-{slug}-2"));
    docker(&["kill", &victim]);
    let t = Instant::now();
    wait_app(&c, &s, &id, Duration::from_secs(10), "degraded", |a| {
        a["status"] == "degraded"
    });
    println!("[figure] kill seen as degraded after {:?}", t.elapsed());
    let app = wait_app(&c, &s, &id, HEALTHY_WITHIN, "running again", running(2));
    println!("[figure] killed replica healthy after {:?}", t.elapsed());
    assert_eq!(container_ids(&app), containers_of(&id));

    // Restart rserve-proxy: the replicas run on and are adopted as they are.
    let before: Vec<(String, String, String)> = app["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["containerId"].as_str().unwrap().to_string();
            let docker_started = inspect(&id, "{{.State.StartedAt}}");
            (
                id,
                c["startedAt"].as_str().unwrap().to_string(),
                docker_started,
            )
        })
        .collect();
    let (status, took, _) = s.stop();
    assert!(status.success(), "{status:?}");
    println!("[figure] rserve-proxy stopped in {took:?}");
    for (container, _, _) in &before {
        assert_eq!(inspect(container, "{{.State.Status}}"), "running");
    }
    let s = start_server(dir.path());
    let c = admin(&s);
    let app = wait_app(&c, &s, &id, Duration::from_secs(20), "adopted", running(2));
    let after: Vec<(String, String, String)> = app["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let id = c["containerId"].as_str().unwrap().to_string();
            let docker_started = inspect(&id, "{{.State.StartedAt}}");
            (
                id,
                c["startedAt"].as_str().unwrap().to_string(),
                docker_started,
            )
        })
        .collect();
    assert_eq!(before, after, "nothing was restarted");
    assert_eq!(container_ids(&app), containers_of(&id));

    // Starting the adopted app changes nothing either.
    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "status": "running"}));
    assert_eq!(container_ids(&get_app(&c, &s, &id)), container_ids(&app));

    let (st, body) = lifecycle(&c, &s, &id, "stop");
    assert_eq!(st, 200, "{body}");
    assert_eq!(body, json!({"ok": true, "status": "stopped"}));
    assert!(containers_of(&id).is_empty());
    let (st, _) = json_of(c.delete(s.url(&format!("/api/apps/{id}"))).send().unwrap());
    assert_eq!(st, 200);
    assert!(images_of(&id).is_empty());
}

/// OCAP through our proxy: `add(3, 4)` answered by R in a container, over `ws://` on
/// the plain listener and, after a restart with TLS on (the app keeps running and is
/// adopted), over `wss://`.
#[test]
fn ocap_call_through_the_proxy_over_ws_and_wss() {
    if !docker_env() {
        return;
    }
    let leftovers = Leftovers::default();
    let dir = tempfile::tempdir().unwrap();
    let s = start_server(dir.path());
    let c = admin(&s);
    let slug = slug("e2e");
    let id = create_app(&c, &s, &slug, &leftovers);
    upload(&c, &s, &id, "run_rserve.R", hello_script());

    // Before it runs: known slug, not running → 503 with Retry-After.
    let r = reqwest::blocking::get(s.url(&format!("/{slug}/"))).unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));

    let (st, body) = lifecycle(&c, &s, &id, "start");
    assert_eq!(st, 200, "{body}");
    wait_app(&c, &s, &id, HEALTHY_WITHIN, "running", running(1));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let port = s.base.rsplit(':').next().unwrap().to_string();
    for path in [
        format!("/{slug}"),
        format!("/{slug}/"),
        format!("/{slug}/x?y=1"),
    ] {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let seven = rt.block_on(async {
            let mut client = support::qap::OcapClient::connect(&url)
                .await
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let v = client
                .call_ok(
                    "add",
                    &[
                        support::qap::RObj::double(3.0),
                        support::qap::RObj::double(4.0),
                    ],
                )
                .await
                .unwrap();
            client.close().await;
            v
        });
        assert_eq!(
            seven.value,
            support::qap::RValue::Double(vec![7.0]),
            "{path}"
        );
    }
    let before = container_ids(&get_app(&c, &s, &id));

    // Restart with TLS (certificate files); the app is adopted, not restarted.
    drop(s);
    let tc = support::certs::test_cert(dir.path(), "rsp.test");
    let (cert, key) = (tc.cert_file.clone(), tc.key_file.clone());
    let tls_port = support::free_port();
    let socket = socket();
    let s = Server::start(
        dir.path(),
        &[
            ("RSP_DOCKER_SOCKET", socket.to_str().unwrap()),
            ("RSP_TLS_MODE", "files"),
            ("RSP_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("RSP_TLS_KEY_FILE", key.to_str().unwrap()),
            ("RSP_TLS_LISTEN", &format!("127.0.0.1:{tls_port}")),
        ],
    );
    let seven = rt.block_on(async {
        let connector = tokio_rustls::TlsConnector::from(support::certs::client_config(&tc.ca_pem));
        // Routes are republished by the new server's runtime once it has reconciled.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls_port))
                .await
                .unwrap();
            let tls = connector
                .connect("rsp.test".try_into().unwrap(), tcp)
                .await
                .unwrap();
            let url = format!("wss://rsp.test:{tls_port}/{slug}/");
            match tokio_tungstenite::client_async(url.as_str(), tls).await {
                Ok((ws, _)) => {
                    let mut client = support::qap::OcapClient::from_ws(ws).await.unwrap();
                    let v = client
                        .call_ok(
                            "add",
                            &[
                                support::qap::RObj::double(3.0),
                                support::qap::RObj::double(4.0),
                            ],
                        )
                        .await
                        .unwrap();
                    client.close().await;
                    break v;
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("wss not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("wss://…/{slug}/: {e}\nserver log:\n{}", s.log()),
            }
        }
    });
    assert_eq!(
        seven.value,
        support::qap::RValue::Double(vec![7.0]),
        "over wss"
    );
    // The API over HTTPS (the plain listener now redirects there).
    let https = Client::builder()
        .cookie_store(true)
        .add_root_certificate(reqwest::Certificate::from_pem(tc.ca_pem.as_bytes()).unwrap())
        .resolve("rsp.test", SocketAddr::from(([127, 0, 0, 1], tls_port)))
        .build()
        .unwrap();
    let base = format!("https://rsp.test:{tls_port}");
    let st = https
        .post(format!("{base}/api/auth/login"))
        .json(&json!({"username": "admin", "password": PASSWORD}))
        .send()
        .unwrap()
        .status();
    assert_eq!(st, 200);
    let (_, app) = json_of(https.get(format!("{base}/api/apps/{id}")).send().unwrap());
    assert_eq!(
        before,
        container_ids(&app["app"]),
        "adopted across the restart, not restarted"
    );
    let (st, _) = json_of(
        https
            .delete(format!("{base}/api/apps/{id}"))
            .send()
            .unwrap(),
    );
    assert_eq!(st, 200);
    drop(s);
}

/// `rserve-proxy images build-base --from-debian` runs the recipe compiled into the
/// binary; with the image present (CI builds it first) it says so and changes nothing.
#[test]
fn images_build_base_runs_the_embedded_recipe() {
    if !docker_env() {
        return;
    }
    let before = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "rserve-base:latest",
    ]);
    let out = Command::new(support::BIN)
        .args(["images", "build-base", "--from-debian"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("already exists"), "{text}");
    let after = docker(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "rserve-base:latest",
    ]);
    assert_eq!(before, after);
}
