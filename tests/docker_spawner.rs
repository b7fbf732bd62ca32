//! The Docker spawner against a real Docker daemon (no HTTP: the spawner directly).
//!
//! Needs Docker at `RSP_TEST_DOCKER_SOCKET` (default /var/run/docker.sock) and the
//! base image `rserve-base:latest` (images/rserve-base/build-from-debian.sh). Without
//! them these tests fail when `CI=true`, and otherwise print a loud notice and pass.
//!
//! Every test uses its own app ids and slugs and touches only what carries them, so
//! they run in parallel with each other and beside other users of the daemon.
//! Timings are printed (`cargo test --test docker_spawner -- --nocapture`).

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptions, ListContainersOptions, ListImagesOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::StreamExt;
use rserve_proxy::model::CodeSource;
use rserve_proxy::spawner::docker::{DockerSpawner, LABEL_APP};
use rserve_proxy::spawner::{AppRuntime, AppSpec, AppStatus, LogSource, Spawner, SpawnerError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use uuid::Uuid;

const HEALTHY_WITHIN: Duration = Duration::from_secs(60);

/// This test binary's instance label: its spawners see only these tests' apps, never
/// those of a server another test process runs on the same daemon.
const INSTANCE: &str = "tests-docker-spawner";

fn socket() -> PathBuf {
    std::env::var_os("RSP_TEST_DOCKER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// A spawner with its watcher running, or `None` (after a loud notice) when Docker or
/// the base image is missing outside CI.
struct Env {
    spawner: DockerSpawner,
    docker: Docker,
    _stop_watcher: tokio::sync::watch::Sender<bool>,
}

async fn env() -> Option<Env> {
    let ci = support::in_ci();
    let spawner = DockerSpawner::new(&socket(), INSTANCE);
    let problem = match spawner.ping().await {
        Err(e) => Some(e.to_string()),
        Ok(()) => match spawner.r_versions().await {
            Ok(v) if !v.is_empty() => None,
            Ok(_) => {
                Some("no rserve-base image: run images/rserve-base/build-from-debian.sh".into())
            }
            Err(e) => Some(e.to_string()),
        },
    };
    if let Some(problem) = problem {
        if ci {
            panic!("CI=true and the Docker spawner tests cannot run: {problem}");
        }
        // Straight to stderr, not eprintln!: the test harness would swallow that for a
        // passing test, and this must be seen. Once per run is enough.
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            let msg = format!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !!! SKIPPED: Docker spawner tests need Docker and rserve-base:latest.\n\
                 !!! {problem}\n\
                 !!! (With CI=true this is a failure.)\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
        });
        return None;
    }
    let docker = Docker::connect_with_unix(&socket().to_string_lossy(), 30, API_DEFAULT_VERSION)
        .unwrap()
        .negotiate_version()
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(spawner.clone().run_watcher(rx));
    Some(Env {
        spawner,
        docker,
        _stop_watcher: tx,
    })
}

/// A copy of examples/hello in a temporary directory.
fn hello_code() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    for entry in std::fs::read_dir(src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn spec(code: &Path, replicas: u32) -> AppSpec {
    let id = Uuid::new_v4();
    AppSpec {
        id,
        slug: format!("t-{}", &id.simple().to_string()[..10]),
        r_version: "latest".into(),
        packages: vec![],
        code_source: CodeSource::Upload,
        entry_script: "run_rserve.R".into(),
        replicas,
        code_dir: Some(code.to_path_buf()),
        memory_mb: Some(256),
        cpus: Some(0.5),
        env: vec![("HELLO_ENV".into(), "it's \"quoted\" $HOME".into())],
    }
}

/// Removes the app whatever happens to the test.
struct Cleanup(DockerSpawner, Uuid);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let (s, id) = (self.0.clone(), self.1);
        // A fresh runtime: the test's own may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            let _ = rt.block_on(s.remove(id));
        })
        .join();
    }
}

async fn wait_for(
    s: &DockerSpawner,
    app: Uuid,
    within: Duration,
    what: &str,
    ok: impl Fn(&AppRuntime) -> bool,
) -> AppRuntime {
    let deadline = Instant::now() + within;
    loop {
        let r = s.runtime(app).await;
        if ok(&r) {
            return r;
        }
        if Instant::now() > deadline {
            panic!("{what}: not within {within:?}; last runtime: {r:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn running(n: usize) -> impl Fn(&AppRuntime) -> bool {
    move |r| r.status == AppStatus::Running && r.healthy_addrs().len() == n
}

async fn containers_of(docker: &Docker, app: Uuid) -> Vec<bollard::models::ContainerSummary> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_APP}={app}")],
    )]);
    docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
}

async fn images_of(docker: &Docker, app: Uuid) -> Vec<bollard::models::ImageSummary> {
    let filters = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{LABEL_APP}={app}")],
    )]);
    docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap()
}

/// WebSocket handshake with Rserve, by hand; returns the first frame's payload.
async fn ws_greeting(addr: std::net::SocketAddr) -> Vec<u8> {
    let mut tcp =
        tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
            .await
            .expect("connect timeout")
            .expect("connect");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let read = async {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            tcp.read_exact(&mut byte).await.unwrap();
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "no upgrade: {head}");
        let mut h = [0u8; 2];
        tcp.read_exact(&mut h).await.unwrap();
        assert_eq!(h[0] & 0x0f, 0x2, "first frame is not binary");
        let len = match h[1] & 0x7f {
            126 => {
                let mut l = [0u8; 2];
                tcp.read_exact(&mut l).await.unwrap();
                u16::from_be_bytes(l) as usize
            }
            127 => {
                let mut l = [0u8; 8];
                tcp.read_exact(&mut l).await.unwrap();
                u64::from_be_bytes(l) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        payload
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("greeting timeout")
}

/// Build, run, talk to, stop, restart without rebuilding, rebuild on a code change,
/// remove.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hello_lifecycle() {
    let Some(env) = env().await else { return };
    let (s, docker) = (&env.spawner, &env.docker);
    let code = hello_code();
    let spec = spec(code.path(), 1);
    let _cleanup = Cleanup(s.clone(), spec.id);

    // First start: builds.
    let t = Instant::now();
    let status = s.start(&spec).await.expect("start");
    let started = t.elapsed();
    assert!(
        matches!(status, AppStatus::Starting | AppStatus::Running),
        "{status:?}"
    );
    assert_eq!(s.build_count(spec.id), 1);
    let r = wait_for(s, spec.id, HEALTHY_WITHIN, "healthy", running(1)).await;
    println!(
        "[figure] first start (build + create) {started:?}, healthy after {:?}",
        t.elapsed()
    );
    let c = &r.containers[0];
    assert_eq!(c.container_id.len(), 12);
    assert_eq!(c.port, 8081);
    assert_eq!(c.name, format!("rserve-{}-1", spec.slug));
    assert!(c.started_at.is_some());
    let json = serde_json::to_value(c).unwrap();
    assert!(json.get("addr").is_none() && json.get("name").is_none());

    // The replica speaks Rserve OCAP over WebSocket.
    let greeting = ws_greeting(r.healthy_addrs()[0]).await;
    assert!(greeting.starts_with(b"RsOC"), "greeting: {greeting:?}");

    // Hardening and labels, as Docker sees them.
    let info = docker
        .inspect_container(&c.name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let host = info.host_config.unwrap();
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
    assert!(host
        .security_opt
        .unwrap_or_default()
        .iter()
        .any(|o| o.starts_with("no-new-privileges")));
    assert_eq!(host.memory, Some(256 * 1024 * 1024));
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.pids_limit, Some(256));
    assert!(host.port_bindings.unwrap_or_default().is_empty());
    assert!(host.binds.unwrap_or_default().is_empty());
    let config = info.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    assert!(config
        .env
        .unwrap_or_default()
        .contains(&"HELLO_ENV=it's \"quoted\" $HOME".to_string()));
    let labels = config.labels.unwrap();
    assert_eq!(labels["managed-by"], "rserve-proxy");
    assert_eq!(labels["rserve-proxy.app-id"], spec.id.to_string());
    assert_eq!(labels["rserve-proxy.slug"], spec.slug);
    assert_eq!(labels["rserve-proxy.replica"], "1");
    let image_id = info.image.unwrap();

    // The build log is kept and replayed.
    let build_log: Vec<String> = s
        .logs(spec.id, LogSource::Build)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        build_log.iter().any(|l| l.contains("rserve-proxy: built")),
        "{build_log:?}"
    );

    // Runtime logs: followed, prefixed with the replica's name.
    let mut logs = s.logs(spec.id, LogSource::Runtime).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), logs.next())
        .await
        .expect("a runtime log line")
        .expect("a runtime log line");
    assert!(
        first.starts_with(&format!("rserve-{}-1 | ", spec.slug)),
        "{first}"
    );
    drop(logs);

    // Stop: gone quickly, from Docker and from the view.
    let t = Instant::now();
    s.stop(spec.id).await.expect("stop");
    let stopped = t.elapsed();
    println!("[figure] stop until gone: {stopped:?}");
    assert!(stopped < Duration::from_secs(8), "stop took {stopped:?}");
    assert!(containers_of(docker, spec.id).await.is_empty());
    assert_eq!(s.runtime(spec.id).await.status, AppStatus::Stopped);

    // Start again: same hash, no build.
    let t = Instant::now();
    s.start(&spec).await.expect("second start");
    let created = t.elapsed();
    wait_for(s, spec.id, HEALTHY_WITHIN, "healthy again", running(1)).await;
    println!(
        "[figure] start with cached image: created in {created:?}, healthy after {:?}",
        t.elapsed()
    );
    assert_eq!(s.build_count(spec.id), 1, "the image must be reused");
    let again = containers_of(docker, spec.id).await;
    assert_eq!(again[0].image_id.as_deref(), Some(image_id.as_str()));

    // Start while running, same spec: nothing changes.
    let before = containers_of(docker, spec.id).await[0].id.clone();
    s.start(&spec).await.expect("idempotent start");
    assert_eq!(containers_of(docker, spec.id).await[0].id, before);
    assert_eq!(s.build_count(spec.id), 1);

    // A code change: new hash, a build, replicas replaced.
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(code.path().join("run_rserve.R"))
        .unwrap();
    std::io::Write::write_all(&mut f, b"\n# changed\n").unwrap();
    drop(f);
    let t = Instant::now();
    let building = {
        let (s, spec) = (s.clone(), spec.clone());
        tokio::spawn(async move { s.start(&spec).await })
    };
    // While it builds: status `building`, and the log streams live until the end.
    wait_for(s, spec.id, Duration::from_secs(30), "building", |r| {
        r.status == AppStatus::Building
    })
    .await;
    let live: Vec<String> = tokio::time::timeout(
        Duration::from_secs(180),
        s.logs(spec.id, LogSource::Build).await.unwrap().collect(),
    )
    .await
    .expect("the live build log ends when the build does");
    assert!(
        live.iter().any(|l| l.contains("rserve-proxy: built")),
        "{live:?}"
    );
    building.await.unwrap().expect("start after a code change");
    let rebuilt = t.elapsed();
    assert_eq!(s.build_count(spec.id), 2);
    wait_for(
        s,
        spec.id,
        HEALTHY_WITHIN,
        "healthy after rebuild",
        running(1),
    )
    .await;
    println!(
        "[figure] code-only change: build + replace {rebuilt:?}, healthy after {:?}",
        t.elapsed()
    );
    let now = containers_of(docker, spec.id).await;
    assert_ne!(now[0].image_id.as_deref(), Some(image_id.as_str()));
    // The superseded image gets pruned (in the background).
    let deadline = Instant::now() + Duration::from_secs(30);
    while images_of(docker, spec.id).await.len() != 1 {
        assert!(Instant::now() < deadline, "the old image stays");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Explicit rebuild: always builds, same tag.
    let (repo, tag) = s.rebuild(&spec).await.expect("rebuild");
    assert_eq!(repo, format!("rserve-app-{}", spec.slug));
    assert_eq!(tag.len(), 12);
    assert_eq!(s.build_count(spec.id), 3);
    wait_for(
        s,
        spec.id,
        HEALTHY_WITHIN,
        "healthy after rebuild",
        running(1),
    )
    .await;

    // Memory of one idle replica.
    let name = format!("rserve-{}-1", spec.slug);
    if let Ok(out) = std::process::Command::new("docker")
        .args(["stats", "--no-stream", "--format", "{{.MemUsage}}", &name])
        .output()
    {
        println!(
            "[figure] idle memory of one hello replica: {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    }

    // Remove: no containers, no images.
    s.remove(spec.id).await.expect("remove");
    assert!(containers_of(docker, spec.id).await.is_empty());
    assert!(images_of(docker, spec.id).await.is_empty());
    assert_eq!(s.runtime(spec.id).await, AppRuntime::stopped());
}

/// A syntax error fails the build and keeps the previous replicas; an error while
/// sourcing crashes the replicas and ends in `error` with R's message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_code() {
    let Some(env) = env().await else { return };
    let (s, docker) = (&env.spawner, &env.docker);
    let code = hello_code();
    let spec = spec(code.path(), 1);
    let _cleanup = Cleanup(s.clone(), spec.id);

    s.start(&spec).await.expect("start");
    wait_for(s, spec.id, HEALTHY_WITHIN, "healthy", running(1)).await;
    let before = containers_of(docker, spec.id).await;

    let entry = code.path().join("run_rserve.R");
    std::fs::write(&entry, "oc.init <- function() {\n  list(\n}\n").unwrap();
    let err = s.start(&spec).await.expect_err("a syntax error must fail");
    let SpawnerError::BuildFailed { reason, log } = err else {
        panic!("not a build failure: {err:?}")
    };
    assert!(reason.contains("unexpected"), "reason: {reason}");
    assert!(log.iter().any(|l| l.contains("unexpected")), "{log:?}");
    let r = s.runtime(spec.id).await;
    assert_eq!(r.status, AppStatus::Error);
    assert!(
        r.error.as_deref().unwrap_or("").contains("unexpected"),
        "{r:?}"
    );
    // The previous replica runs on, untouched.
    let after = containers_of(docker, spec.id).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, before[0].id);
    assert_eq!(after[0].state, before[0].state);

    // Parses, but fails when sourced: the replica crash-loops until Docker gives up.
    std::fs::write(&entry, "stop(\"boom: the app cannot start\")\n").unwrap();
    let t = Instant::now();
    s.start(&spec).await.expect("builds fine");
    let r = wait_for(s, spec.id, Duration::from_secs(90), "error", |r| {
        r.status == AppStatus::Error
    })
    .await;
    println!(
        "[figure] crash loop reported as error after {:?}",
        t.elapsed()
    );
    let error = r.error.unwrap_or_default();
    assert!(error.contains("boom: the app cannot start"), "{error}");
    let lines: Vec<String> = s
        .logs(spec.id, LogSource::Runtime)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("boom: the app cannot start")),
        "{lines:?}"
    );

    // Stop clears the error.
    s.stop(spec.id).await.unwrap();
    assert_eq!(s.runtime(spec.id).await, AppRuntime::stopped());
}

/// Two replicas; one is killed; Docker does not restart what `docker kill` stopped,
/// so the supervisor does: degraded, then running. A second spawner (a restarted
/// rserve-proxy) adopts the replicas as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_survive_a_kill_and_a_restart_of_the_proxy() {
    let Some(env) = env().await else { return };
    let (s, docker) = (&env.spawner, &env.docker);
    let code = hello_code();
    let mut spec = spec(code.path(), 2);
    // Installed already: exercises the package step without a network.
    spec.packages = vec!["Rserve".into(), "stats".into()];
    let _cleanup = Cleanup(s.clone(), spec.id);

    s.start(&spec).await.expect("start");
    let r = wait_for(s, spec.id, HEALTHY_WITHIN, "two healthy", running(2)).await;
    let build_log: Vec<String> = s
        .logs(spec.id, LogSource::Build)
        .await
        .unwrap()
        .collect()
        .await;
    assert!(
        build_log.iter().any(|l| l.contains("package(s) with")),
        "{build_log:?}"
    );

    let victim = r.containers[1].name.clone();
    let mut changes = s.subscribe();
    let seen = *changes.borrow_and_update();
    docker
        .kill_container(&victim, None::<KillContainerOptions>)
        .await
        .unwrap();
    let t = Instant::now();
    wait_for(s, spec.id, Duration::from_secs(5), "degraded", |r| {
        r.status == AppStatus::Degraded
    })
    .await;
    println!("[figure] kill seen as degraded after {:?}", t.elapsed());
    assert!(*changes.borrow() > seen, "subscribers hear of the change");
    wait_for(s, spec.id, HEALTHY_WITHIN, "running again", running(2)).await;
    println!(
        "[figure] killed replica healthy again after {:?}",
        t.elapsed()
    );

    // A fresh spawner, as after a restart of rserve-proxy.
    let before: Vec<(String, Option<String>)> = s
        .runtime(spec.id)
        .await
        .containers
        .iter()
        .map(|c| (c.container_id.clone(), c.started_at.clone()))
        .collect();
    let fresh = DockerSpawner::new(&socket(), INSTANCE);
    let known: HashSet<Uuid> = all_app_ids(docker).await;
    let report = fresh.reconcile(&known).await.expect("reconcile");
    assert!(report.adopted.contains(&spec.id), "{report:?}");
    assert!(!report.removed.contains(&spec.id));
    let adopted = fresh.runtime(spec.id).await;
    assert_eq!(adopted.status, AppStatus::Running, "{adopted:?}");
    let after: Vec<(String, Option<String>)> = adopted
        .containers
        .iter()
        .map(|c| (c.container_id.clone(), c.started_at.clone()))
        .collect();
    assert_eq!(before, after, "adoption must not restart replicas");
    assert_eq!(fresh.build_count(spec.id), 0);
    // Starting the adopted app with the same spec reuses everything.
    fresh.start(&spec).await.expect("start adopted");
    assert_eq!(fresh.build_count(spec.id), 0);
    let ids: Vec<String> = fresh
        .runtime(spec.id)
        .await
        .containers
        .iter()
        .map(|c| c.container_id.clone())
        .collect();
    assert_eq!(ids, before.iter().map(|b| b.0.clone()).collect::<Vec<_>>());
}

/// Every app id that has containers or images in the daemon now (ours and any other
/// test's), so a reconcile in one test never removes another's apps.
async fn all_app_ids(docker: &Docker) -> HashSet<Uuid> {
    let filters =
        std::collections::HashMap::from([("label".to_string(), vec![LABEL_APP.to_string()])]);
    let containers = docker
        .list_containers(Some(ListContainersOptions {
            all: true,
            filters: Some(filters.clone()),
            ..Default::default()
        }))
        .await
        .unwrap();
    let images = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap();
    containers
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(LABEL_APP).cloned())
        .chain(
            images
                .iter()
                .filter_map(|i| i.labels.get(LABEL_APP).cloned()),
        )
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// Reconcile removes the replicas and images of an app the caller does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_removes_strays() {
    let Some(env) = env().await else { return };
    let (s, docker) = (&env.spawner, &env.docker);
    let code = hello_code();
    let spec = spec(code.path(), 1);
    let _cleanup = Cleanup(s.clone(), spec.id);
    s.start(&spec).await.expect("start");
    assert_eq!(containers_of(docker, spec.id).await.len(), 1);

    // Another instance on the same daemon knows no apps at all, yet removes nothing
    // of ours: it sees only what carries its own instance label.
    let other = DockerSpawner::new(&socket(), "tests-some-other-instance");
    let report = other.reconcile(&HashSet::new()).await.expect("reconcile");
    assert!(!report.removed.contains(&spec.id), "{report:?}");
    assert_eq!(containers_of(docker, spec.id).await.len(), 1);

    let fresh = DockerSpawner::new(&socket(), INSTANCE);
    let mut known = all_app_ids(docker).await;
    known.remove(&spec.id);
    let report = fresh.reconcile(&known).await.expect("reconcile");
    assert_eq!(report.removed, vec![spec.id]);
    assert!(containers_of(docker, spec.id).await.is_empty());
    assert!(images_of(docker, spec.id).await.is_empty());
}

/// A wrong socket: every call answers `Unavailable`, runtime says why; no panic.
#[tokio::test]
async fn wrong_socket_is_unavailable() {
    let s = DockerSpawner::new(Path::new("/nonexistent/rserve-proxy-test.sock"), INSTANCE);
    let code = hello_code();
    let spec = spec(code.path(), 1);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(s.clone().run_watcher(rx));
    for result in [
        s.ping().await.map(|_| ()),
        s.start(&spec).await.map(|_| ()),
        s.stop(spec.id).await,
        s.rebuild(&spec).await.map(|_| ()),
        s.remove(spec.id).await,
        s.logs(spec.id, LogSource::Build).await.map(|_| ()),
        s.reconcile(&HashSet::new()).await.map(|_| ()),
    ] {
        match result {
            Err(SpawnerError::Unavailable(m)) => {
                assert!(m.contains("/nonexistent/rserve-proxy-test.sock"), "{m}")
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }
    let r = s.runtime(spec.id).await;
    assert_eq!(r.status, AppStatus::Stopped);
    assert!(r.error.is_some());
    // The watcher keeps retrying quietly and stops on request.
    tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher stops on shutdown")
        .unwrap();
}

/// A unix socket that forwards to Docker's, so a test can cut Docker off (and bring
/// it back) without touching the daemon everybody shares.
fn forward(path: &Path) -> tokio::task::JoinHandle<()> {
    let _ = std::fs::remove_file(path);
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let target = socket();
    tokio::spawn(async move {
        // Dropped with this task on abort: every forwarded connection dies too.
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            let target = target.clone();
            conns.spawn(async move {
                if let Ok(mut out) = tokio::net::UnixStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                }
            });
        }
    })
}

/// Docker goes away: the app reports stopped with the reason, calls answer
/// `Unavailable`; Docker comes back: the watcher reconnects by itself, the view is
/// rebuilt and events flow again — no restart of anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_reconnects_when_docker_returns() {
    let Some(env) = env().await else { return };
    let docker = &env.docker;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let mut link = forward(&path);
    let s = DockerSpawner::new(&path, INSTANCE);
    let (_stop, rx) = tokio::sync::watch::channel(false);
    tokio::spawn(s.clone().run_watcher(rx));

    let code = hello_code();
    let spec = spec(code.path(), 1);
    let _cleanup = Cleanup(env.spawner.clone(), spec.id);
    s.start(&spec).await.expect("start");
    let r = wait_for(&s, spec.id, HEALTHY_WITHIN, "healthy", running(1)).await;
    let id = r.containers[0].container_id.clone();

    // Cut.
    link.abort();
    let _ = link.await;
    std::fs::remove_file(&path).unwrap();
    let down = wait_for(&s, spec.id, Duration::from_secs(15), "reported down", |r| {
        r.status == AppStatus::Stopped && r.error.is_some()
    })
    .await;
    assert!(down
        .error
        .unwrap()
        .contains("cannot reach the Docker Engine"));
    assert!(matches!(
        s.stop(spec.id).await,
        Err(SpawnerError::Unavailable(_))
    ));

    // Back.
    link = forward(&path);
    let t = Instant::now();
    let r = wait_for(&s, spec.id, Duration::from_secs(20), "back", running(1)).await;
    println!(
        "[figure] view rebuilt {:?} after Docker came back",
        t.elapsed()
    );
    assert_eq!(
        r.containers[0].container_id, id,
        "the replica was left alone"
    );

    // Events flow again: a kill is noticed at once.
    docker
        .kill_container(&r.containers[0].name, None::<KillContainerOptions>)
        .await
        .unwrap();
    // Within the watcher's longest backoff plus a little: runtime() itself no longer
    // polls once the view is rebuilt, so only a reconnected watcher can see this.
    wait_for(&s, spec.id, Duration::from_secs(15), "kill noticed", |r| {
        r.status != AppStatus::Running
    })
    .await;
    wait_for(&s, spec.id, HEALTHY_WITHIN, "restarted", running(1)).await;
    link.abort();
}
