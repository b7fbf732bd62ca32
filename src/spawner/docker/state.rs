//! What the Docker backend knows about each app: its replicas as Docker last reported
//! them, the operation in progress, the last build's log and errors. Plain data
//! behind one `std::sync::Mutex` that is never held across an `.await`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::spawner::{AppRuntime, AppStatus, ContainerInfo, RSERVE_PORT};

/// Restarts of a replica the backend does itself (Docker's restart policy ignores
/// replicas killed through the API, e.g. `docker kill`), per replica. Docker's own
/// `on-failure` count is the same, so a crash-looping app ends up `Error`.
pub const MAX_RESTARTS: u32 = 5;

/// Lines of a replica's output quoted in the error of a crashed app.
pub const CRASH_LOG_LINES: usize = 15;

/// The lifecycle operation in progress on an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Idle,
    Building,
    /// Replacing or creating replicas.
    Starting,
    Stopping,
}

/// One replica as Docker last described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    pub id: String,
    pub name: String,
    pub replica: u32,
    /// Docker's state word.
    pub state: String,
    pub health: Option<String>,
    /// Output of the last failed health probe.
    pub health_output: Option<String>,
    pub started_at: Option<String>,
    pub ip: Option<IpAddr>,
    pub exit_code: Option<i64>,
    pub restarting: bool,
    pub oom_killed: bool,
    /// Docker's restart count (restart policy).
    pub restart_count: i64,
    /// `rserve-proxy.config` label: the image and settings the replica was made with.
    pub config: Option<String>,
}

impl Replica {
    fn info(&self) -> ContainerInfo {
        ContainerInfo {
            container_id: self.id.chars().take(12).collect(),
            status: self.state.clone(),
            health_status: self.health.clone(),
            started_at: self.started_at.clone(),
            port: RSERVE_PORT,
            name: self.name.clone(),
            replica: self.replica,
            addr: self.ip.map(|ip| SocketAddr::new(ip, RSERVE_PORT)),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state == "running" && self.health.as_deref().is_none_or(|h| h == "healthy")
    }

    /// Alive or about to be: counts as "starting" while nothing is healthy.
    fn is_pending(&self) -> bool {
        match self.state.as_str() {
            "created" | "restarting" => true,
            "running" => self.health.as_deref() != Some("unhealthy"),
            _ => self.restarting,
        }
    }
}

/// The last build's output: kept for replay, broadcast live while the build runs.
#[derive(Debug, Default)]
pub struct BuildLog {
    pub lines: Vec<Arc<str>>,
    /// Present while a build runs; dropping it ends every live follower.
    pub live: Option<broadcast::Sender<Arc<str>>>,
}

/// Lines kept of one build (older ones are dropped: a package build can be chatty).
const BUILD_LOG_MAX_LINES: usize = 20_000;

impl BuildLog {
    pub fn begin(&mut self) {
        self.lines.clear();
        let (tx, _) = broadcast::channel(1024);
        self.live = Some(tx);
    }

    /// Live again without clearing: the app build continues after a base image build.
    pub fn resume(&mut self) {
        let (tx, _) = broadcast::channel(1024);
        self.live = Some(tx);
    }

    pub fn push(&mut self, line: &str) {
        let line: Arc<str> = Arc::from(line);
        if self.lines.len() >= BUILD_LOG_MAX_LINES {
            self.lines.remove(0);
        }
        self.lines.push(line.clone());
        if let Some(tx) = &self.live {
            // No follower is fine.
            let _ = tx.send(line);
        }
    }

    pub fn finish(&mut self) {
        self.live = None;
    }
}

/// Everything known about one app.
#[derive(Debug, Default)]
pub struct AppEntry {
    pub phase: Phase,
    /// By container id.
    pub containers: BTreeMap<String, Replica>,
    /// Why the last build failed; cleared by the next build or `stop`.
    pub build_error: Option<String>,
    /// Why a replica last exited on its own; cleared once every replica is healthy.
    pub crash: Option<String>,
    /// The replicas disappeared without a `stop` from us.
    pub vanished: bool,
    /// Restarts the supervisor did, per container id.
    pub restarts: HashMap<String, u32>,
    /// Image builds done by this process for the app.
    pub builds: u64,
    pub build_log: BuildLog,
}

impl AppEntry {
    /// Nothing worth keeping: no replicas, no operation, no error, no log.
    pub fn is_empty(&self) -> bool {
        self.phase == Phase::Idle
            && self.containers.is_empty()
            && self.build_error.is_none()
            && !self.vanished
            && self.build_log.lines.is_empty()
    }

    pub fn runtime(&self) -> AppRuntime {
        let mut replicas: Vec<&Replica> = self.containers.values().collect();
        replicas.sort_by(|a, b| (a.replica, &a.name).cmp(&(b.replica, &b.name)));
        let containers: Vec<ContainerInfo> = replicas.iter().map(|r| r.info()).collect();
        let n = replicas.len();
        let healthy = replicas.iter().filter(|r| r.is_healthy()).count();
        let (status, error) = match self.phase {
            Phase::Building => (AppStatus::Building, None),
            Phase::Starting => (AppStatus::Starting, None),
            Phase::Stopping => (AppStatus::Stopping, None),
            Phase::Idle => {
                if let Some(e) = &self.build_error {
                    (AppStatus::Error, Some(e.clone()))
                } else if n == 0 {
                    let why = self.vanished.then(|| {
                        "the app's containers were removed outside rserve-proxy".to_string()
                    });
                    (AppStatus::Stopped, why)
                } else if healthy == n {
                    (AppStatus::Running, None)
                } else if healthy > 0 {
                    (AppStatus::Degraded, self.crash.clone())
                } else if replicas.iter().any(|r| r.is_pending()) {
                    (AppStatus::Starting, self.crash.clone())
                } else if let Some(c) = &self.crash {
                    (AppStatus::Error, Some(c.clone()))
                } else if let Some(r) = replicas
                    .iter()
                    .find(|r| r.health.as_deref() == Some("unhealthy"))
                {
                    let out = r.health_output.as_deref().unwrap_or("no output").trim();
                    (
                        AppStatus::Error,
                        Some(format!("{} is unhealthy: {out}", r.name)),
                    )
                } else {
                    (AppStatus::Error, Some("no replica is running".to_string()))
                }
            }
        };
        AppRuntime {
            status,
            containers,
            error,
        }
    }
}

/// The backend's whole view.
#[derive(Debug, Default)]
pub struct State {
    pub apps: HashMap<Uuid, AppEntry>,
    /// Set while Docker cannot be reached: every app then reports `Stopped` with it.
    pub unavailable: Option<String>,
    /// A full poll has succeeded since the last time Docker was unreachable.
    pub synced: bool,
    /// Per app, bumped when a lifecycle operation begins and ends: a poll that
    /// overlapped one must not overwrite what the operation recorded.
    pub epochs: HashMap<Uuid, u64>,
}

impl State {
    pub fn entry(&mut self, app: Uuid) -> &mut AppEntry {
        self.apps.entry(app).or_default()
    }

    /// Everything subscribers can see: availability and each app's runtime view.
    pub fn fingerprint(&self) -> (Option<String>, HashMap<Uuid, AppRuntime>) {
        let apps = self.apps.iter().map(|(id, e)| (*id, e.runtime())).collect();
        (self.unavailable.clone(), apps)
    }

    pub fn runtime(&self, app: Uuid) -> AppRuntime {
        if let Some(why) = &self.unavailable {
            let mut r = AppRuntime::stopped();
            r.error = Some(why.clone());
            return r;
        }
        self.apps
            .get(&app)
            .map_or_else(AppRuntime::stopped, AppEntry::runtime)
    }

    /// Record what Docker said about one container. Returns the app's phase.
    pub fn upsert(&mut self, app: Uuid, r: Replica) -> Phase {
        // A container id belongs to one app; drop it elsewhere (relabelling is not
        // possible, but keep the map consistent whatever happens).
        for (other, e) in self.apps.iter_mut() {
            if *other != app {
                e.containers.remove(&r.id);
            }
        }
        let e = self.entry(app);
        e.containers.insert(r.id.clone(), r);
        if !e.containers.is_empty() && e.containers.values().all(Replica::is_healthy) {
            e.crash = None;
            e.restarts.clear();
        }
        e.vanished = false;
        e.phase
    }

    /// Forget a container (gone from Docker). If it was the app's last replica and no
    /// operation of ours removed it, the app is marked vanished.
    pub fn remove_container(&mut self, id: &str, busy: impl Fn(Uuid) -> bool) {
        let mut emptied = None;
        for (app, e) in self.apps.iter_mut() {
            if e.containers.remove(id).is_some() {
                e.restarts.remove(id);
                if e.containers.is_empty() && e.phase == Phase::Idle {
                    emptied = Some(*app);
                }
            }
        }
        if let Some(app) = emptied {
            if !busy(app) {
                self.entry(app).vanished = true;
            }
        }
    }

    /// Replace the view with a full listing, except for apps with an operation in
    /// progress (they record their own containers and the events fill in the rest).
    pub fn replace_all(&mut self, found: HashMap<Uuid, Vec<Replica>>, busy: impl Fn(Uuid) -> bool) {
        let mut found = found;
        let ids: std::collections::HashSet<Uuid> =
            self.apps.keys().chain(found.keys()).copied().collect();
        for app in ids {
            if busy(app) {
                continue;
            }
            let now: BTreeMap<String, Replica> = found
                .remove(&app)
                .unwrap_or_default()
                .into_iter()
                .map(|r| (r.id.clone(), r))
                .collect();
            let e = self.entry(app);
            if e.phase != Phase::Idle {
                continue;
            }
            if now.is_empty() && !e.containers.is_empty() {
                e.vanished = true;
            }
            if !now.is_empty() {
                e.vanished = false;
            }
            e.restarts.retain(|id, _| now.contains_key(id));
            e.containers = now;
        }
        self.apps.retain(|_, e| !e.is_empty());
    }
}

/// Should the supervisor start this replica again? Only when the app is meant to
/// run (no stop or replacement in progress), Docker is not restarting it itself,
/// and neither Docker nor we have used up the restarts.
pub fn should_restart(phase: Phase, r: &Replica, done: u32) -> bool {
    matches!(phase, Phase::Idle | Phase::Building)
        && r.state == "exited"
        && !r.restarting
        && r.restart_count < i64::from(MAX_RESTARTS)
        && done < MAX_RESTARTS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(n: u32, state: &str, health: Option<&str>) -> Replica {
        Replica {
            id: format!("{n:064}"),
            name: format!("rserve-x-{n}"),
            replica: n,
            state: state.into(),
            health: health.map(String::from),
            health_output: None,
            started_at: None,
            ip: Some(IpAddr::from([10, 0, 0, n as u8])),
            exit_code: None,
            restarting: false,
            oom_killed: false,
            restart_count: 0,
            config: None,
        }
    }

    fn entry(reps: Vec<Replica>) -> AppEntry {
        let mut e = AppEntry::default();
        for r in reps {
            e.containers.insert(r.id.clone(), r);
        }
        e
    }

    #[test]
    fn status_follows_replica_health() {
        let s = |reps| entry(reps).runtime().status;
        assert_eq!(s(vec![]), AppStatus::Stopped);
        assert_eq!(
            s(vec![rep(1, "running", Some("starting"))]),
            AppStatus::Starting
        );
        assert_eq!(s(vec![rep(1, "created", None)]), AppStatus::Starting);
        assert_eq!(
            s(vec![
                rep(1, "running", Some("healthy")),
                rep(2, "running", Some("healthy"))
            ]),
            AppStatus::Running
        );
        assert_eq!(
            s(vec![
                rep(1, "running", Some("healthy")),
                rep(2, "exited", None)
            ]),
            AppStatus::Degraded
        );
        assert_eq!(s(vec![rep(1, "exited", None)]), AppStatus::Error);
        assert_eq!(
            s(vec![rep(1, "running", Some("unhealthy"))]),
            AppStatus::Error
        );
    }

    #[test]
    fn errors_and_phases() {
        let mut e = entry(vec![rep(1, "running", Some("healthy"))]);
        e.build_error = Some("boom".into());
        let r = e.runtime();
        assert_eq!(r.status, AppStatus::Error);
        assert_eq!(r.error.as_deref(), Some("boom"));
        assert_eq!(r.containers.len(), 1, "old replicas stay listed");
        e.phase = Phase::Building;
        assert_eq!(e.runtime().status, AppStatus::Building);
        e.phase = Phase::Stopping;
        assert_eq!(e.runtime().status, AppStatus::Stopping);

        let mut e = entry(vec![rep(1, "exited", None)]);
        e.crash = Some("replica exited: Error in source".into());
        assert_eq!(
            e.runtime().error.as_deref(),
            Some("replica exited: Error in source")
        );

        let mut e = AppEntry {
            vanished: true,
            ..Default::default()
        };
        assert_eq!(e.runtime().status, AppStatus::Stopped);
        assert!(e.runtime().error.is_some());
        e.vanished = false;
        assert!(e.is_empty());
    }

    #[test]
    fn runtime_lists_addresses_of_healthy_replicas_in_order() {
        let e = entry(vec![
            rep(2, "running", Some("healthy")),
            rep(1, "running", Some("starting")),
        ]);
        let r = e.runtime();
        assert_eq!(r.containers[0].replica, 1);
        assert_eq!(r.containers[0].container_id.len(), 12);
        assert_eq!(
            r.healthy_addrs(),
            vec![SocketAddr::from(([10, 0, 0, 2], RSERVE_PORT))]
        );
        let json = serde_json::to_value(&r.containers[0]).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["containerId", "healthStatus", "port", "status"]);
    }

    #[test]
    fn unavailable_docker_reports_stopped_with_reason() {
        let mut s = State::default();
        let app = Uuid::new_v4();
        s.upsert(app, rep(1, "running", Some("healthy")));
        s.unavailable = Some("no docker".into());
        let r = s.runtime(app);
        assert_eq!(r.status, AppStatus::Stopped);
        assert_eq!(r.error.as_deref(), Some("no docker"));
    }

    #[test]
    fn vanished_only_when_nobody_of_ours_removed_them() {
        let mut s = State::default();
        let app = Uuid::new_v4();
        let r = rep(1, "running", Some("healthy"));
        s.upsert(app, r.clone());
        s.remove_container(&r.id, |_| true);
        assert!(!s.apps[&app].vanished);
        s.upsert(app, r.clone());
        s.remove_container(&r.id, |_| false);
        assert!(s.apps[&app].vanished);

        let mut s = State::default();
        s.upsert(app, r.clone());
        s.replace_all(HashMap::new(), |_| false);
        assert!(s.apps[&app].vanished);
        s.replace_all(HashMap::from([(app, vec![r.clone()])]), |_| false);
        assert!(!s.apps[&app].vanished);
        // Busy apps are left alone.
        s.replace_all(HashMap::new(), |_| true);
        assert_eq!(s.apps[&app].containers.len(), 1);
    }

    #[test]
    fn supervisor_rules() {
        let mut r = rep(1, "exited", None);
        assert!(should_restart(Phase::Idle, &r, 0));
        assert!(should_restart(Phase::Building, &r, 0));
        assert!(!should_restart(Phase::Stopping, &r, 0));
        assert!(!should_restart(Phase::Starting, &r, 0));
        assert!(!should_restart(Phase::Idle, &r, MAX_RESTARTS));
        r.restarting = true;
        assert!(!should_restart(Phase::Idle, &r, 0));
        r.restarting = false;
        r.restart_count = i64::from(MAX_RESTARTS);
        assert!(
            !should_restart(Phase::Idle, &r, 0),
            "Docker gave up: crash loop"
        );
        assert!(!should_restart(Phase::Idle, &rep(1, "running", None), 0));
    }

    #[test]
    fn build_log_replays_and_broadcasts() {
        let mut log = BuildLog::default();
        log.begin();
        let mut rx = log.live.as_ref().unwrap().subscribe();
        log.push("Step 1/5");
        assert_eq!(&*rx.try_recv().unwrap(), "Step 1/5");
        log.finish();
        assert!(rx.try_recv().is_err());
        assert_eq!(log.lines.len(), 1);
    }
}
