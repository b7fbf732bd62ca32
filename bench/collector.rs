//! Cost of the metrics collector with N running replicas (`cargo run --example
//! collector -- [replicas] [window_secs] [interval_secs]`, defaults 50, 120, 15).
//!
//! Runs one app of examples/hello with N replicas through the real Docker spawner,
//! then measures two windows of equal length in the same process: the spawner's
//! watcher alone, then the watcher plus the collector. Reports this process's CPU and
//! dockerd's (+ containerd's) CPU in each window as percent of one core, the
//! collector's Docker API calls per minute (its own count) and its round time. Needs
//! Docker and rserve-base:latest; removes the app's containers and images at the end.
//! Prints one JSON object.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rserve_proxy::metrics::collector::{self, Collector};
use rserve_proxy::metrics::Latest;
use rserve_proxy::model::{App, AuditEntry, CodeSource, Role, User};
use rserve_proxy::proxy::routes::Routes;
use rserve_proxy::spawner::docker::DockerSpawner;
use rserve_proxy::spawner::{AppSpec, Spawner};
use rserve_proxy::store::{Retention, Store};
use time::OffsetDateTime;
use uuid::Uuid;

/// utime + stime of a process, seconds.
fn cpu_secs(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn pids_of(name: &str) -> Vec<String> {
    std::process::Command::new("pidof")
        .arg(name)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

fn docker_cpu() -> f64 {
    ["dockerd", "containerd"]
        .iter()
        .flat_map(|n| pids_of(n))
        .map(|p| cpu_secs(&p))
        .sum()
}

fn self_cpu() -> f64 {
    cpu_secs("self")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args.get(1).map_or(Ok(50), |s| s.parse())?;
    let window: u64 = args.get(2).map_or(Ok(120), |s| s.parse())?;
    let interval: u64 = args.get(3).map_or(Ok(15), |s| s.parse())?;
    let dir = tempfile::tempdir()?;
    let store = Store::open(&dir.path().join("state.redb"))?;
    let instance = store.instance_id()?.to_string();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let docker = DockerSpawner::new(Path::new("/var/run/docker.sock"), &instance);
    tokio::spawn(docker.clone().run_watcher(stop_rx.clone()));
    let now = OffsetDateTime::now_utc();
    let owner = User {
        id: Uuid::new_v4(),
        username: "bench".into(),
        email: None,
        role: Role::Admin,
        password_hash: "-".into(),
        created_at: now,
        updated_at: now,
    };
    store.create_user(&owner, &AuditEntry::new(None, "user.create", None))?;
    let slug = format!("colbench-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let app = App {
        id: Uuid::new_v4(),
        name: slug.clone(),
        slug: slug.clone(),
        r_version: "latest".into(),
        packages: vec![],
        code_source: CodeSource::Upload,
        entry_script: "run_rserve.R".into(),
        replicas: n,
        settings: Default::default(),
        owner_id: owner.id,
        created_at: now,
        updated_at: now,
    };
    store.create_app(&app, &AuditEntry::new(None, "app.create", None))?;
    let spec = AppSpec {
        id: app.id,
        slug: slug.clone(),
        r_version: "latest".into(),
        packages: vec![],
        code_source: CodeSource::Upload,
        entry_script: "run_rserve.R".into(),
        replicas: n,
        code_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello")),
        memory_mb: Some(128),
        cpus: Some(0.25),
        env: vec![],
    };
    let spawner: Arc<dyn Spawner> = Arc::new(docker.clone());
    let started = Instant::now();
    let result = run(
        &spawner,
        &spec,
        &store,
        n,
        window,
        interval,
        stop_rx.clone(),
    )
    .await;
    eprintln!("removing the app's containers and images …");
    let _ = spawner.remove(app.id).await;
    let _ = stop_tx.send(true);
    let mut out = result?;
    out.push_str(&format!(
        ", \"total_secs\": {:.0}}}",
        started.elapsed().as_secs_f64()
    ));
    println!("{out}");
    Ok(())
}

async fn run(
    spawner: &Arc<dyn Spawner>,
    spec: &AppSpec,
    store: &Store,
    n: u32,
    window: u64,
    interval: u64,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<String, Box<dyn std::error::Error>> {
    eprintln!("starting {n} replicas …");
    let t = Instant::now();
    spawner.start(spec).await?;
    let deadline = Instant::now() + Duration::from_secs(900);
    let running = loop {
        let rt = spawner.runtime(spec.id).await;
        let running = rt
            .containers
            .iter()
            .filter(|c| c.status == "running")
            .count();
        if running >= n as usize || Instant::now() > deadline {
            break running;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    };
    eprintln!(
        "{running} running after {:.0} s; settling 30 s",
        t.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(30)).await;

    let w = Duration::from_secs(window);
    let (s0, d0) = (self_cpu(), docker_cpu());
    tokio::time::sleep(w).await;
    let (s1, d1) = (self_cpu(), docker_cpu());

    let latest = Latest::new();
    tokio::spawn(collector::run(
        Collector {
            spawner: spawner.clone(),
            routes: Routes::new(),
            store: store.clone(),
            latest: latest.clone(),
            interval: Duration::from_secs(interval),
            retention: Retention {
                raw_secs: 3600,
                min5_secs: 6 * 3600,
                min15_secs: 24 * 3600,
                min60_secs: 7 * 24 * 3600,
                status_secs: 7 * 24 * 3600,
            },
            audit_retention: None,
        },
        stop,
    ));
    // Let the first round (no deltas yet) pass, then measure a window.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = latest.load().collector;
    let (s2, d2) = (self_cpu(), docker_cpu());
    tokio::time::sleep(w).await;
    let (s3, d3) = (self_cpu(), docker_cpu());
    let last = latest.load().collector;
    let snap = latest.load();
    let sampled = snap.system.as_ref().map_or(0, |s| s.active_containers);
    let pct = |a: f64, b: f64| (b - a) * 100.0 / window as f64;
    let mins = window as f64 / 60.0;
    Ok(format!(
        "{{\"replicas_running\": {running}, \"containers_sampled\": {sampled}, \"window_secs\": {window}, \
         \"interval_secs\": {interval}, \
         \"process_cpu_pct_watcher_only\": {:.2}, \"process_cpu_pct_with_collector\": {:.2}, \
         \"docker_cpu_pct_watcher_only\": {:.2}, \"docker_cpu_pct_with_collector\": {:.2}, \
         \"collector_rounds\": {}, \"docker_calls_per_min\": {:.1}, \"failed_samples\": {}, \
         \"last_round_secs\": {:.3}",
        pct(s0, s1),
        pct(s2, s3),
        pct(d0, d1),
        pct(d2, d3),
        last.rounds - first.rounds,
        (last.docker_calls - first.docker_calls) as f64 / mins,
        last.failed_samples,
        last.last_round_secs,
    ))
}
