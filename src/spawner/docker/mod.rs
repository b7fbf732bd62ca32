//! Docker Engine backend (bollard).
//!
//! - Images: one per app and content hash, `rserve-app-<slug>:<hash>`, built from a
//!   generated Dockerfile on `rserve-base:<rVersion>` (see `image.rs`). Never pulled.
//! - Replicas: containers `rserve-<slug>-<n>` on the bridge network `rserve-proxy`, no
//!   published ports, resource limits, no capabilities, Docker's restart policy plus
//!   a small supervisor for replicas Docker will not restart (killed through the API).
//! - State: an in-memory view kept current by Docker's event stream and a poll every
//!   10 s, both run by [`DockerSpawner::run_watcher`], which the server starts. Docker
//!   is the source of truth for what runs; after a restart of rserve-proxy the view is
//!   rebuilt from containers' labels.
//!
//! Everything we create carries `managed-by=rserve-proxy`, but so do the base images
//! (and any container run from them by hand), so what the backend owns is selected by
//! `rserve-proxy.app-id`, never by `managed-by` alone.

pub mod image;
mod state;

use async_trait::async_trait;
use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, HostConfig, HostConfigLogConfig,
    NetworkCreateRequest, RestartPolicy, RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    BuildImageOptions, CreateContainerOptions, EventsOptions, ListContainersOptions,
    ListImagesOptions, LogsOptions, RemoveContainerOptions, RemoveImageOptions,
    StopContainerOptions,
};
use bollard::{Docker, API_DEFAULT_VERSION};
use futures_util::stream::{self, StreamExt};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use self::image::{ImageInputs, Installer, SourceId};
use self::state::{Phase, Replica, State};
use super::{
    AppRuntime, AppSpec, AppStatus, LogSource, LogStream, ReconcileReport, Spawner, SpawnerError,
};
use crate::model::CodeSource;

/// Repository name of the R base images.
pub const BASE_IMAGE_REPO: &str = "rserve-base";
/// The bridge network all replicas join; the proxy reaches them on it.
pub const NETWORK: &str = "rserve-proxy";

pub const LABEL_MANAGED: &str = "managed-by";
pub const MANAGED_BY: &str = "rserve-proxy";
pub const LABEL_APP: &str = "rserve-proxy.app-id";
pub const LABEL_SLUG: &str = "rserve-proxy.slug";
pub const LABEL_REPLICA: &str = "rserve-proxy.replica";
/// On replicas: hash of the image and settings they were created with.
pub const LABEL_CONFIG: &str = "rserve-proxy.config";
/// On a base image: whether it has pak (`true`/a version, or `false`). Without it,
/// a short-lived container asks R.
pub const LABEL_PAK: &str = "rserve-proxy.pak";
/// On the short-lived containers that probe a base image.
const LABEL_PROBE: &str = "rserve-proxy.probe";

/// Graceful stop: SIGTERM, then SIGKILL after this long.
const STOP_TIMEOUT_SECS: i32 = 10;
const RESTART_RETRIES: i64 = 5;
const PIDS_LIMIT: i64 = 256;
const REPLICA_USER: &str = "65534:65534";
/// Per request, until Docker's response headers (streams are not cut).
const REQUEST_TIMEOUT_SECS: u64 = 30;
const POLL_INTERVAL: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Several spawners in one process (tests) must not race to create the network:
/// Docker 20.10 happily creates two networks of the same name.
static NETWORK_LOCK: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

/// The Docker backend. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct DockerSpawner {
    inner: Arc<Inner>,
}

struct Inner {
    socket: String,
    /// Connected client with a negotiated API version; dropped when Docker is lost.
    client: Mutex<Option<Docker>>,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    /// One lifecycle operation per app at a time.
    ops: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether a base image (by id) has pak.
    installers: Mutex<HashMap<String, Installer>>,
}

/// What `cleanup_all` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub containers: usize,
    pub images: usize,
}

/// One of an app's containers as `docker ps -a` lists it.
#[derive(Debug, Clone)]
struct Listed {
    id: String,
    name: String,
    /// The `rserve-proxy.config` label.
    config: Option<String>,
    /// Docker's state word.
    state: String,
}

/// An app image: `repo:tag`.
#[derive(Debug, Clone)]
struct AppImage {
    repo: String,
    tag: String,
}

impl AppImage {
    fn reference(&self) -> String {
        format!("{}:{}", self.repo, self.tag)
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data; keep going with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn status_code(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

fn is_connection_error(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::IOError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::HyperLegacyError { .. }
            | DockerError::HttpClientError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
    )
}

fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

fn build_failed(reason: impl Into<String>, log: Vec<String>) -> SpawnerError {
    SpawnerError::BuildFailed {
        reason: reason.into(),
        log,
    }
}

fn label_filter(labels: &[String]) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_string(), labels.to_vec())])
}

fn app_filter(app: Uuid) -> HashMap<String, Vec<String>> {
    label_filter(&[format!("{LABEL_APP}={app}")])
}

/// Holding it serialises operations on one app; dropping it ends the operation.
struct OpGuard {
    spawner: DockerSpawner,
    app: Uuid,
    _lock: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for OpGuard {
    fn drop(&mut self) {
        let app = self.app;
        self.spawner.mutate(|s| {
            *s.epochs.entry(app).or_default() += 1;
            if let Some(e) = s.apps.get_mut(&app) {
                e.phase = Phase::Idle;
                e.build_log.finish();
            }
            s.apps.retain(|_, e| !e.is_empty());
        });
    }
}

impl DockerSpawner {
    /// Prepare a client for the Engine at `socket`. Never fails and starts nothing: a
    /// bad socket shows up as `Unavailable` on use, so the rest of the product keeps
    /// working without Docker. Start [`DockerSpawner::run_watcher`] to keep the
    /// runtime view current.
    pub fn new(socket: &Path) -> Self {
        let (changes, _) = watch::channel(0);
        DockerSpawner {
            inner: Arc::new(Inner {
                socket: socket.to_string_lossy().into_owned(),
                client: Mutex::new(None),
                state: Mutex::new(State::default()),
                changes,
                ops: Mutex::new(HashMap::new()),
                installers: Mutex::new(HashMap::new()),
            }),
        }
    }

    // ---- state helpers ----------------------------------------------------------

    fn mutate<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut lock(&self.inner.state));
        self.inner.changes.send_modify(|g| *g += 1);
        r
    }

    /// Like `mutate`, but subscribers hear of it only if some app's runtime view (or
    /// Docker's availability) actually changed: a quiet poll wakes nobody.
    fn mutate_quietly<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut state = lock(&self.inner.state);
        let before = state.fingerprint();
        let r = f(&mut state);
        let changed = state.fingerprint() != before;
        drop(state);
        if changed {
            self.inner.changes.send_modify(|g| *g += 1);
        }
        r
    }

    fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&lock(&self.inner.state))
    }

    fn set_phase(&self, app: Uuid, phase: Phase) {
        self.mutate(|s| s.entry(app).phase = phase);
    }

    async fn op_lock(&self, app: Uuid) -> OpGuard {
        let m = lock(&self.inner.ops).entry(app).or_default().clone();
        let guard = m.lock_owned().await;
        self.mutate(|s| *s.epochs.entry(app).or_default() += 1);
        OpGuard {
            spawner: self.clone(),
            app,
            _lock: guard,
        }
    }

    fn busy_apps(&self) -> HashSet<Uuid> {
        lock(&self.inner.ops)
            .iter()
            .filter(|(_, m)| m.try_lock().is_err())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Image builds this process did for the app (for tests and metrics).
    pub fn build_count(&self, app: Uuid) -> u64 {
        self.read(|s| s.apps.get(&app).map_or(0, |e| e.builds))
    }

    // ---- connection ---------------------------------------------------------------

    fn unreachable_msg(&self, why: impl std::fmt::Display) -> String {
        format!(
            "cannot reach the Docker Engine at {} ({why}); start Docker or set docker_socket",
            self.inner.socket
        )
    }

    /// Docker is gone: forget the client, report every app as stopped with the
    /// reason until a poll succeeds again.
    fn lost(&self, why: impl std::fmt::Display) -> SpawnerError {
        let msg = self.unreachable_msg(why);
        *lock(&self.inner.client) = None;
        self.mutate_quietly(|s| {
            s.unavailable = Some(msg.clone());
            s.synced = false;
        });
        SpawnerError::Unavailable(msg)
    }

    /// Map a Docker error: a lost connection is `Unavailable`, the rest `Internal`.
    fn fail(&self, e: DockerError, what: &str) -> SpawnerError {
        if is_connection_error(&e) {
            self.lost(e)
        } else {
            SpawnerError::Internal(format!("Docker could not {what}: {}", docker_message(&e)))
        }
    }

    /// A client with an API version both sides speak (Docker 20.10 answers 1.41 and
    /// refuses newer clients; newer engines refuse very old versions).
    async fn docker(&self) -> Result<Docker, SpawnerError> {
        if let Some(d) = lock(&self.inner.client).clone() {
            return Ok(d);
        }
        let d = Docker::connect_with_unix(
            &self.inner.socket,
            REQUEST_TIMEOUT_SECS,
            API_DEFAULT_VERSION,
        )
        .map_err(|e| self.lost(e))?;
        let d = match tokio::time::timeout(Duration::from_secs(3), d.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => return Err(self.lost(e)),
            Err(_) => return Err(self.lost("no answer within 3 s")),
        };
        *lock(&self.inner.client) = Some(d.clone());
        Ok(d)
    }

    // ---- observing Docker -------------------------------------------------------

    /// Keep the runtime view current until `shutdown` turns true (or its sender goes
    /// away): Docker events applied as they come, a full poll every 10 s, replicas
    /// restarted when Docker will not. When Docker is unreachable it retries with
    /// backoff (1 s doubling to 10 s) and rebuilds the view with a fresh poll once
    /// it is back. Start exactly one per spawner.
    pub async fn run_watcher(self, mut shutdown: watch::Receiver<bool>) {
        let mut delay = Duration::from_secs(1);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let (connected, result) = self.watch_once(&mut shutdown).await;
            match result {
                Ok(()) => return,
                Err(e) => tracing::warn!(error = %e, "Docker event watcher lost Docker; retrying"),
            }
            if connected {
                delay = Duration::from_secs(1);
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => return,
            }
            delay = (delay * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection's worth of watching. Returns whether it got as far as a
    /// successful poll, and `Ok` only on shutdown.
    async fn watch_once(
        &self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> (bool, Result<(), SpawnerError>) {
        let docker = match self.docker().await {
            Ok(d) => d,
            Err(e) => return (false, Err(e)),
        };
        // Ask for events from just before the poll, so none falls between the two;
        // applying one twice is harmless (each event re-reads the container).
        let since = time::OffsetDateTime::now_utc().unix_timestamp() - 1;
        let filters = HashMap::from([
            ("type".to_string(), vec!["container".to_string()]),
            ("label".to_string(), vec![LABEL_APP.to_string()]),
        ]);
        let mut events = docker.events(Some(EventsOptions {
            since: Some(since.to_string()),
            until: None,
            filters: Some(filters),
        }));
        if let Err(e) = self.refresh_with(&docker).await {
            return (false, Err(e));
        }
        tracing::info!(socket = %self.inner.socket, "watching Docker events");
        let mut tick =
            tokio::time::interval_at(tokio::time::Instant::now() + POLL_INTERVAL, POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        return (true, Ok(()));
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.refresh_with(&docker).await {
                        return (true, Err(e));
                    }
                }
                ev = events.next() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(e) = self.on_event(&docker, ev).await {
                            return (true, Err(e));
                        }
                    }
                    Some(Err(e)) => return (true, Err(self.fail(e, "stream events"))),
                    None => return (true, Err(self.lost("the event stream ended"))),
                },
            }
        }
    }

    /// A full poll: every container with our app label, inspected.
    async fn refresh(&self) -> Result<(), SpawnerError> {
        let docker = self.docker().await?;
        self.refresh_with(&docker).await
    }

    async fn refresh_with(&self, docker: &Docker) -> Result<(), SpawnerError> {
        let epochs = self.read(|s| s.epochs.clone());
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&[LABEL_APP.to_string()])),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list containers"))?;
        let mut found: HashMap<Uuid, Vec<Replica>> = HashMap::new();
        for c in list {
            let Some(id) = c.id else { continue };
            match docker.inspect_container(&id, None).await {
                Ok(info) => {
                    if let Some((app, r)) = replica_from(&info) {
                        found.entry(app).or_default().push(r);
                    }
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(self.fail(e, "inspect a container")),
            }
        }
        let exited: Vec<(Uuid, Replica)> = found
            .iter()
            .flat_map(|(app, rs)| rs.iter().map(move |r| (*app, r.clone())))
            .filter(|(_, r)| r.state == "exited")
            .collect();
        let busy = self.busy_apps();
        self.mutate_quietly(|s| {
            // An app whose operation began or ended during the listing has newer
            // knowledge than the listing; leave it to its operation and the events.
            let changed = |app: Uuid| busy.contains(&app) || s.epochs.get(&app) != epochs.get(&app);
            let skip: HashSet<Uuid> = s
                .apps
                .keys()
                .chain(found.keys())
                .copied()
                .filter(|a| changed(*a))
                .collect();
            s.replace_all(found, |app| skip.contains(&app));
            s.unavailable = None;
            s.synced = true;
        });
        // Replicas that died while nobody watched (e.g. Docker restarted).
        for (app, r) in exited {
            self.supervise(docker, app, &r).await;
        }
        Ok(())
    }

    async fn on_event(
        &self,
        docker: &Docker,
        ev: bollard::models::EventMessage,
    ) -> Result<(), SpawnerError> {
        let action = ev.action.unwrap_or_default();
        let Some(id) = ev.actor.and_then(|a| a.id) else {
            return Ok(());
        };
        // Health probes run as execs: three events per probe, nothing to learn.
        if action.starts_with("exec_") {
            return Ok(());
        }
        if action == "destroy" {
            let busy = self.busy_apps();
            self.mutate(|s| s.remove_container(&id, |app| busy.contains(&app)));
            return Ok(());
        }
        match docker.inspect_container(&id, None).await {
            Ok(info) => {
                let Some((app, r)) = replica_from(&info) else {
                    return Ok(());
                };
                let phase = self.mutate_quietly(|s| s.upsert(app, r.clone()));
                if action == "die" && matches!(phase, Phase::Idle | Phase::Building) {
                    self.on_die(docker, app, &r).await;
                }
                Ok(())
            }
            Err(e) if status_code(&e) == Some(404) => {
                let busy = self.busy_apps();
                self.mutate(|s| s.remove_container(&id, |app| busy.contains(&app)));
                Ok(())
            }
            Err(e) if is_connection_error(&e) => Err(self.fail(e, "inspect a container")),
            Err(e) => {
                tracing::warn!(error = %e, container = %id, "cannot inspect a container");
                Ok(())
            }
        }
    }

    /// A replica exited on its own: say why (with its last output) and, if Docker
    /// will not restart it, restart it ourselves.
    async fn on_die(&self, docker: &Docker, app: Uuid, r: &Replica) {
        let code = r.exit_code.unwrap_or(-1);
        let mut why = format!("{} exited with code {code}", r.name);
        if r.oom_killed {
            why.push_str(" (out of memory: raise the memory limit)");
        }
        let tail = container_tail(docker, &r.id, state::CRASH_LOG_LINES).await;
        if !tail.is_empty() {
            why.push_str("; last output:\n");
            why.push_str(&tail.join("\n"));
        }
        tracing::info!(app = %app, container = %r.name, code, "replica exited");
        self.mutate(|s| s.entry(app).crash = Some(why));
        self.supervise(docker, app, r).await;
    }

    async fn supervise(&self, docker: &Docker, app: Uuid, r: &Replica) {
        let go = self.mutate(|s| {
            let Some(e) = s.apps.get_mut(&app) else {
                return false;
            };
            let done = e.restarts.get(&r.id).copied().unwrap_or(0);
            let go = state::should_restart(e.phase, r, done);
            if go {
                e.restarts.insert(r.id.clone(), done + 1);
            }
            go
        });
        if !go {
            return;
        }
        tracing::info!(app = %app, container = %r.name, "restarting a replica Docker left stopped");
        if let Err(e) = docker.start_container(&r.id, None).await {
            tracing::warn!(app = %app, container = %r.name, error = %e, "cannot restart replica");
        }
    }

    // ---- images -------------------------------------------------------------------

    /// The base image's reference and id, or a build failure saying what exists.
    async fn base_image(
        &self,
        docker: &Docker,
        r_version: &str,
    ) -> Result<(String, String, Option<String>), SpawnerError> {
        let Some(base_ref) = image::base_image_ref(r_version) else {
            return Err(build_failed(
                format!("{r_version:?} is not a valid R version"),
                vec![],
            ));
        };
        match docker.inspect_image(&base_ref).await {
            Ok(i) => {
                let pak = i
                    .config
                    .and_then(|c| c.labels)
                    .and_then(|l| l.get(LABEL_PAK).cloned());
                Ok((base_ref, i.id.unwrap_or_default(), pak))
            }
            Err(e) if status_code(&e) == Some(404) => {
                let have = self.r_versions().await.unwrap_or_default();
                let have = if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                };
                Err(build_failed(
                    format!(
                        "base image {base_ref} not found (R versions available: {have}); \
                         build it with images/rserve-base/build-from-debian.sh"
                    ),
                    vec![],
                ))
            }
            Err(e) => Err(self.fail(e, "inspect the base image")),
        }
    }

    /// pak or install.packages: the base image's label says, else R in a short-lived
    /// container does (once per base image).
    async fn installer(
        &self,
        docker: &Docker,
        base_ref: &str,
        base_id: &str,
        label: Option<&str>,
    ) -> Installer {
        if let Some(v) = label {
            return if v.eq_ignore_ascii_case("false") || v.is_empty() {
                Installer::InstallPackages
            } else {
                Installer::Pak
            };
        }
        if let Some(i) = lock(&self.inner.installers).get(base_id) {
            return *i;
        }
        let out = probe(
            docker,
            base_ref,
            "cat(nzchar(system.file(package = 'pak')))",
        )
        .await;
        let installer = match out.as_deref().map(str::trim) {
            Ok("TRUE") => Installer::Pak,
            Ok(_) => Installer::InstallPackages,
            Err(e) => {
                tracing::warn!(error = %e, base = base_ref, "cannot tell whether the base image has pak");
                return Installer::InstallPackages;
            }
        };
        lock(&self.inner.installers).insert(base_id.to_string(), installer);
        installer
    }

    async fn app_image_exists(
        &self,
        docker: &Docker,
        reference: &str,
        app: Uuid,
    ) -> Result<bool, SpawnerError> {
        match docker.inspect_image(reference).await {
            Ok(i) => Ok(i
                .config
                .and_then(|c| c.labels)
                .and_then(|l| l.get(LABEL_APP).cloned())
                .is_some_and(|v| v == app.to_string())),
            Err(e) if status_code(&e) == Some(404) => Ok(false),
            Err(e) => Err(self.fail(e, "inspect an image")),
        }
    }

    fn log_line(&self, app: Uuid, line: &str) {
        self.mutate(|s| s.entry(app).build_log.push(line));
    }

    /// The app's image for `spec`: reused when its hash exists (unless `force`),
    /// built otherwise. A failed build records the reason on the app.
    async fn ensure_image(
        &self,
        docker: &Docker,
        spec: &AppSpec,
        force: bool,
    ) -> Result<AppImage, SpawnerError> {
        let (base_ref, base_id, pak_label) = match self.base_image(docker, &spec.r_version).await {
            Ok(b) => b,
            Err(e) => {
                self.record_build_error(spec.id, &e);
                return Err(e);
            }
        };
        let packages = image::normalize_packages(&spec.packages);
        let repo = image::image_repo(&spec.slug);
        let mut inputs = ImageInputs {
            base_image_id: base_id.clone(),
            r_version: spec.r_version.clone(),
            packages: packages.clone(),
            entry_script: spec.entry_script.clone(),
            source: SourceId::Upload {
                digest: String::new(),
            },
        };
        let workdir = tempfile::Builder::new()
            .prefix("rserve-proxy-build-")
            .tempdir()
            .map_err(|e| {
                SpawnerError::Internal(format!("cannot create a temporary directory: {e}"))
            })?;

        // What the code is, as cheaply as possible: a git app is only cloned when
        // its commit has no image yet.
        let mut tree = None;
        match &spec.code_source {
            CodeSource::Upload => {
                let t = self.scan_upload(spec).await?;
                inputs.source = SourceId::Upload { digest: t.digest() };
                tree = Some(t);
            }
            CodeSource::Git { repo_url, branch } => {
                if !repo_url.starts_with("https://") {
                    let e = build_failed("git sources must use an https:// URL", vec![]);
                    self.record_build_error(spec.id, &e);
                    return Err(e);
                }
                if !force {
                    let commit =
                        image::remote_commit(repo_url, branch.as_deref(), workdir.path(), "https")
                            .await
                            .map_err(|e| {
                                let e = build_failed(e, vec![]);
                                self.record_build_error(spec.id, &e);
                                e
                            })?;
                    inputs.source = SourceId::Git {
                        url: repo_url.clone(),
                        branch: branch.clone(),
                        commit,
                    };
                }
            }
        }
        if !force {
            let img = AppImage {
                repo,
                tag: image::image_hash(&inputs),
            };
            if self
                .app_image_exists(docker, &img.reference(), spec.id)
                .await?
            {
                return Ok(img);
            }
        }

        // Build.
        self.mutate(|s| {
            let e = s.entry(spec.id);
            e.phase = Phase::Building;
            e.builds += 1;
            e.build_error = None;
            e.build_log.begin();
        });
        let result = self
            .build(
                docker,
                spec,
                &base_ref,
                &base_id,
                pak_label.as_deref(),
                inputs,
                tree,
                workdir.path(),
            )
            .await;
        if let Err(e) = &result {
            self.record_build_error(spec.id, e);
        }
        self.mutate(|s| {
            let e = s.entry(spec.id);
            e.phase = Phase::Idle;
            e.build_log.finish();
        });
        result
    }

    fn record_build_error(&self, app: Uuid, e: &SpawnerError) {
        if let SpawnerError::BuildFailed { reason, .. } = e {
            let reason = reason.clone();
            self.mutate(|s| s.entry(app).build_error = Some(reason));
        }
    }

    async fn scan_upload(&self, spec: &AppSpec) -> Result<image::CodeTree, SpawnerError> {
        let Some(dir) = spec.code_dir.clone().filter(|d| d.is_dir()) else {
            let e = build_failed("no code uploaded yet: upload the app's code first", vec![]);
            self.record_build_error(spec.id, &e);
            return Err(e);
        };
        let entry = spec.entry_script.clone();
        let scanned = tokio::task::spawn_blocking(move || {
            let root = image::code_root(&dir, &entry);
            image::scan_code(&root)
        })
        .await
        .map_err(|e| SpawnerError::Internal(format!("code scan stopped: {e}")))?;
        let tree = scanned.map_err(|e| {
            let e = build_failed(e, vec![]);
            self.record_build_error(spec.id, &e);
            e
        })?;
        if !tree.files.iter().any(|f| f.rel == spec.entry_script) {
            let e = build_failed(
                format!(
                    "entry script {} not found in the uploaded code",
                    spec.entry_script
                ),
                vec![],
            );
            self.record_build_error(spec.id, &e);
            return Err(e);
        }
        Ok(tree)
    }

    #[allow(clippy::too_many_arguments)]
    async fn build(
        &self,
        docker: &Docker,
        spec: &AppSpec,
        base_ref: &str,
        base_id: &str,
        pak_label: Option<&str>,
        mut inputs: ImageInputs,
        tree: Option<image::CodeTree>,
        workdir: &Path,
    ) -> Result<AppImage, SpawnerError> {
        let app = spec.id;
        let started = Instant::now();
        let fail = |reason: String, this: &Self| {
            this.log_line(app, &format!("rserve-proxy: build failed: {reason}"));
            let log = this.read(|s| {
                s.apps
                    .get(&app)
                    .map(|e| e.build_log.lines.iter().map(|l| l.to_string()).collect())
                    .unwrap_or_default()
            });
            build_failed(reason, log)
        };
        let tree = match (tree, &spec.code_source) {
            (Some(t), _) => t,
            (None, CodeSource::Git { repo_url, branch }) => {
                self.log_line(app, &format!("rserve-proxy: cloning {repo_url}"));
                let dest = workdir.join("clone");
                let commit = image::clone(repo_url, branch.as_deref(), &dest, workdir, "https")
                    .await
                    .map_err(|e| fail(e, self))?;
                self.log_line(app, &format!("rserve-proxy: commit {commit}"));
                inputs.source = SourceId::Git {
                    url: repo_url.clone(),
                    branch: branch.clone(),
                    commit,
                };
                let entry = spec.entry_script.clone();
                let scanned = tokio::task::spawn_blocking(move || {
                    let root = image::code_root(&dest, &entry);
                    image::scan_code(&root)
                })
                .await
                .map_err(|e| SpawnerError::Internal(format!("code scan stopped: {e}")))?;
                let t = scanned.map_err(|e| fail(e, self))?;
                if !t.files.iter().any(|f| f.rel == spec.entry_script) {
                    return Err(fail(
                        format!(
                            "entry script {} not found in the repository",
                            spec.entry_script
                        ),
                        self,
                    ));
                }
                t
            }
            (None, CodeSource::Upload) => {
                return Err(SpawnerError::Internal("upload code was not scanned".into()))
            }
        };
        let img = AppImage {
            repo: image::image_repo(&spec.slug),
            tag: image::image_hash(&inputs),
        };
        let reference = img.reference();
        self.log_line(
            app,
            &format!("rserve-proxy: building {reference} from {base_ref} ({base_id})"),
        );
        let installer = if inputs.packages.is_empty() {
            Installer::Pak
        } else {
            let i = self.installer(docker, base_ref, base_id, pak_label).await;
            self.log_line(
                app,
                &format!(
                    "rserve-proxy: installing {} package(s) with {}",
                    inputs.packages.len(),
                    match i {
                        Installer::Pak => "pak",
                        Installer::InstallPackages => "install.packages",
                    }
                ),
            );
            i
        };
        let support = image::support_files(&image::Template {
            base_ref,
            app_id: app,
            slug: &spec.slug,
            installer,
            packages: &inputs.packages,
            entry_script: &spec.entry_script,
        });
        let context = tokio::task::spawn_blocking(move || image::context_tar(&support, &tree))
            .await
            .map_err(|e| SpawnerError::Internal(format!("build context stopped: {e}")))?
            .map_err(|e| fail(e, self))?;

        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(reference.clone()),
            rm: true,
            forcerm: true,
            // Labels are in the Dockerfile: as build options they would add an
            // uncached step to every build.
            ..Default::default()
        };
        let mut output =
            docker.build_image(options, None, Some(bollard::body_full(context.into())));
        let mut failure = None;
        // Layers this build committed (" ---> <id>", not after "Using cache"), to
        // clean up if it fails.
        let mut layers: Vec<String> = Vec::new();
        let mut cached = false;
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        for line in text.lines() {
                            let line = line.trim_end();
                            if let Some(id) = layer_id(line) {
                                if !cached {
                                    layers.push(id.to_string());
                                }
                            }
                            if !line.trim().is_empty() {
                                cached = line.trim() == "---> Using cache";
                            }
                            if !line.is_empty() {
                                self.log_line(app, line);
                            }
                        }
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    failure = Some(error);
                    break;
                }
                Err(e) if is_connection_error(&e) => return Err(self.fail(e, "build the image")),
                Err(e) => {
                    failure = Some(docker_message(&e));
                    break;
                }
            }
        }
        if let Some(error) = failure {
            let tail = self.read(|s| {
                s.apps
                    .get(&app)
                    .map(|e| output_tail(&e.build_log.lines, 6))
                    .unwrap_or_default()
            });
            let reason = if tail.is_empty() {
                error.trim().to_string()
            } else {
                format!("{}\n({})", tail.join("\n"), error.trim())
            };
            // The classic builder keeps a failed build's layers as unlabelled images
            // nothing would ever remove. Newest first; layers shared with other
            // images refuse to go, which is right.
            for id in layers.iter().rev() {
                if !base_id.contains(id.as_str()) {
                    let _ = docker
                        .remove_image(id, None::<RemoveImageOptions>, None)
                        .await;
                }
            }
            return Err(fail(reason, self));
        }
        if !self.app_image_exists(docker, &reference, app).await? {
            return Err(fail(
                format!("Docker reported success but {reference} does not exist"),
                self,
            ));
        }
        self.log_line(
            app,
            &format!(
                "rserve-proxy: built {reference} in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(img)
    }

    /// Remove the app's images other than `keep` (in-use ones stay; errors ignored).
    async fn prune_images(&self, docker: &Docker, app: Uuid, keep: &str) {
        let Ok(images) = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(app_filter(app)),
                ..Default::default()
            }))
            .await
        else {
            return;
        };
        for i in images {
            if i.repo_tags.iter().any(|t| t == keep) {
                continue;
            }
            let _ = docker
                .remove_image(&i.id, None::<RemoveImageOptions>, None)
                .await;
        }
    }

    async fn remove_images(
        &self,
        docker: &Docker,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<usize, SpawnerError> {
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list images"))?;
        let mut n = 0;
        for i in images {
            let opts = RemoveImageOptions {
                force: true,
                ..Default::default()
            };
            match docker.remove_image(&i.id, Some(opts), None).await {
                Ok(_) => n += 1,
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(self.fail(e, "remove an image")),
            }
        }
        Ok(n)
    }

    // ---- replicas -----------------------------------------------------------------

    async fn ensure_network(&self, docker: &Docker) -> Result<(), SpawnerError> {
        let _one = NETWORK_LOCK.lock().await;
        match docker.inspect_network(NETWORK, None).await {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => {
                docker
                    .create_network(NetworkCreateRequest {
                        name: NETWORK.into(),
                        driver: Some("bridge".into()),
                        labels: Some(HashMap::from([(
                            LABEL_MANAGED.to_string(),
                            MANAGED_BY.to_string(),
                        )])),
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| self.fail(e, "create the network"))?;
                tracing::info!(network = NETWORK, "created the replicas' network");
                Ok(())
            }
            Err(e) => Err(self.fail(e, "inspect the network")),
        }
    }

    /// The app's containers in Docker (any state), by name.
    async fn app_containers(
        &self,
        docker: &Docker,
        app: Uuid,
    ) -> Result<Vec<Listed>, SpawnerError> {
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(app_filter(app)),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list containers"))?;
        let mut out: Vec<_> = list
            .into_iter()
            .filter_map(|c| {
                let id = c.id?;
                let name = c
                    .names
                    .and_then(|n| n.into_iter().next())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_else(|| id.clone());
                let config = c.labels.and_then(|l| l.get(LABEL_CONFIG).cloned());
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                Some(Listed {
                    id,
                    name,
                    config,
                    state,
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Stop (SIGTERM, SIGKILL after 10 s) and remove containers, all at once.
    async fn remove_containers(
        &self,
        docker: &Docker,
        app: Option<Uuid>,
        ids: &[String],
    ) -> Result<(), SpawnerError> {
        let stops = ids.iter().map(|id| async move {
            let opts = StopContainerOptions {
                t: Some(STOP_TIMEOUT_SECS),
                signal: None,
            };
            match docker.stop_container(id, Some(opts)).await {
                Ok(()) => Ok(()),
                // Already stopped (304) or gone (404).
                Err(e) if matches!(status_code(&e), Some(304 | 404)) => Ok(()),
                Err(e) => Err(e),
            }?;
            let opts = RemoveContainerOptions {
                force: true,
                v: true,
                ..Default::default()
            };
            match docker.remove_container(id, Some(opts)).await {
                Ok(()) => Ok(()),
                Err(e) if status_code(&e) == Some(404) => Ok(()),
                // Removal already in progress (e.g. two stops at once).
                Err(e) if status_code(&e) == Some(409) => Ok(()),
                Err(e) => Err(e),
            }
        });
        let results = futures_util::future::join_all(stops).await;
        if let Some(app) = app {
            self.mutate(|s| {
                if let Some(e) = s.apps.get_mut(&app) {
                    for id in ids {
                        e.containers.remove(id);
                        e.restarts.remove(id);
                    }
                }
            });
        }
        for r in results {
            r.map_err(|e| self.fail(e, "stop and remove a container"))?;
        }
        Ok(())
    }

    fn container_body(
        &self,
        spec: &AppSpec,
        replica: u32,
        image: &str,
        config: &str,
    ) -> ContainerCreateBody {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), MANAGED_BY.to_string()),
            (LABEL_APP.to_string(), spec.id.to_string()),
            (LABEL_SLUG.to_string(), spec.slug.clone()),
            (LABEL_REPLICA.to_string(), replica.to_string()),
            (LABEL_CONFIG.to_string(), config.to_string()),
        ]);
        let memory = (spec.memory_mb() as i64).saturating_mul(1024 * 1024);
        let host = HostConfig {
            memory: Some(memory),
            // Equal to memory: no swap on top of the limit.
            memory_swap: Some(memory),
            nano_cpus: Some((spec.cpus() * 1e9).round() as i64),
            pids_limit: Some(PIDS_LIMIT),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::ON_FAILURE),
                maximum_retry_count: Some(RESTART_RETRIES),
            }),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), "10m".to_string()),
                    ("max-file".to_string(), "3".to_string()),
                ])),
            }),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            cap_drop: Some(vec!["ALL".into()]),
            // A real init as PID 1: R would ignore SIGTERM as PID 1, making every
            // stop wait the full 10 s; it also reaps Rserve's per-connection children.
            init: Some(true),
            network_mode: Some(NETWORK.into()),
            ..Default::default()
        };
        ContainerCreateBody {
            image: Some(image.to_string()),
            // nobody: the code is readable, not writable (use tempdir()).
            user: Some(REPLICA_USER.into()),
            env: Some(spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(host),
            ..Default::default()
        }
    }

    /// Create one replica; a leftover container of ours with the same name (e.g. from
    /// a crash, or a deleted app with the same slug) is removed first.
    async fn create_replica(
        &self,
        docker: &Docker,
        name: &str,
        body: ContainerCreateBody,
    ) -> Result<String, SpawnerError> {
        for attempt in 0..2 {
            let opts = CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            };
            match docker.create_container(Some(opts), body.clone()).await {
                Ok(r) => return Ok(r.id),
                Err(e) if status_code(&e) == Some(409) && attempt == 0 => {
                    let ours = docker
                        .inspect_container(name, None)
                        .await
                        .ok()
                        .and_then(|i| i.config)
                        .and_then(|c| c.labels)
                        .is_some_and(|l| l.contains_key(LABEL_APP));
                    if !ours {
                        return Err(SpawnerError::Conflict(format!(
                            "a container named {name} exists that rserve-proxy does not manage; remove or rename it"
                        )));
                    }
                    self.remove_containers(docker, None, &[name.to_string()])
                        .await?;
                }
                Err(e) if is_connection_error(&e) => return Err(self.fail(e, "create a container")),
                Err(e) => {
                    return Err(SpawnerError::Conflict(format!(
                        "Docker refused to create {name}: {}",
                        docker_message(&e)
                    )))
                }
            }
        }
        Err(SpawnerError::Conflict(format!(
            "the name {name} stays taken"
        )))
    }

    /// Run `spec.replicas` replicas of `image`. Unless `replace`, replicas already
    /// running this image with these settings are kept as they are.
    async fn run_replicas(
        &self,
        docker: &Docker,
        spec: &AppSpec,
        image: &AppImage,
        replace: bool,
    ) -> Result<AppStatus, SpawnerError> {
        let reference = image.reference();
        let config = config_hash(spec, &reference);
        let existing = self.app_containers(docker, spec.id).await?;
        let current = existing.len() == spec.replicas as usize
            && existing.iter().all(|c| {
                c.config.as_deref() == Some(config.as_str())
                    && (c.state == "running" || c.state == "restarting")
            });
        if current && !replace {
            self.refresh_app(docker, spec.id).await?;
            return Ok(self.read(|s| s.runtime(spec.id)).status);
        }
        self.set_phase(spec.id, Phase::Starting);
        let ids: Vec<String> = existing.into_iter().map(|c| c.id).collect();
        self.remove_containers(docker, Some(spec.id), &ids).await?;
        self.ensure_network(docker).await?;

        // Create all and record them, then start them: a crash between the two leaves
        // containers the next poll finds by label, never unrecorded ones.
        let mut created: Vec<String> = Vec::new();
        for n in 1..=spec.replicas {
            let name = format!("rserve-{}-{n}", spec.slug);
            let body = self.container_body(spec, n, &reference, &config);
            match self.create_replica(docker, &name, body).await {
                Ok(id) => {
                    self.mutate(|s| {
                        s.upsert(
                            spec.id,
                            Replica {
                                id: id.clone(),
                                name: name.clone(),
                                replica: n,
                                state: "created".into(),
                                health: None,
                                health_output: None,
                                started_at: None,
                                ip: None,
                                exit_code: None,
                                restarting: false,
                                oom_killed: false,
                                restart_count: 0,
                                config: Some(config.clone()),
                            },
                        );
                    });
                    created.push(id);
                }
                Err(e) => {
                    let _ = self
                        .remove_containers(docker, Some(spec.id), &created)
                        .await;
                    return Err(e);
                }
            }
        }
        let starts = created.iter().map(|id| docker.start_container(id, None));
        let results = futures_util::future::join_all(starts).await;
        if let Some(e) = results.into_iter().find_map(Result::err) {
            let _ = self
                .remove_containers(docker, Some(spec.id), &created)
                .await;
            return Err(if is_connection_error(&e) {
                self.fail(e, "start a container")
            } else {
                SpawnerError::Conflict(format!(
                    "Docker could not start the app: {}",
                    docker_message(&e)
                ))
            });
        }
        self.refresh_app(docker, spec.id).await?;
        self.prune_images(docker, spec.id, &reference).await;
        Ok(AppStatus::Starting)
    }

    /// Re-read one app's containers (events may lag behind our own calls).
    async fn refresh_app(&self, docker: &Docker, app: Uuid) -> Result<(), SpawnerError> {
        for c in self.app_containers(docker, app).await? {
            match docker.inspect_container(&c.id, None).await {
                Ok(info) => {
                    if let Some((a, r)) = replica_from(&info) {
                        self.mutate(|s| s.upsert(a, r));
                    }
                }
                Err(e) if status_code(&e) == Some(404) => {}
                Err(e) => return Err(self.fail(e, "inspect a container")),
            }
        }
        Ok(())
    }

    async fn stop_app(&self, docker: &Docker, app: Uuid) -> Result<(), SpawnerError> {
        self.set_phase(app, Phase::Stopping);
        let ids: Vec<String> = self
            .app_containers(docker, app)
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        self.remove_containers(docker, Some(app), &ids).await?;
        self.mutate(|s| {
            if let Some(e) = s.apps.get_mut(&app) {
                e.containers.clear();
                e.restarts.clear();
                e.crash = None;
                e.build_error = None;
                e.vanished = false;
            }
        });
        Ok(())
    }

    /// Remove every container and image rserve-proxy made (all apps), and its network
    /// if nothing else uses it. For `rserve-proxy cleanup`, with the server stopped.
    /// Base images (`rserve-base:*`) are kept.
    pub async fn cleanup_all(&self) -> Result<CleanupReport, SpawnerError> {
        let docker = self.docker().await?;
        let mut ids = Vec::new();
        for label in [LABEL_APP, LABEL_PROBE] {
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(label_filter(&[label.to_string()])),
                    ..Default::default()
                }))
                .await
                .map_err(|e| self.fail(e, "list containers"))?;
            ids.extend(list.into_iter().filter_map(|c| c.id));
        }
        self.remove_containers(&docker, None, &ids).await?;
        let images = self
            .remove_images(&docker, label_filter(&[LABEL_APP.to_string()]))
            .await?;
        // Fails while someone else's container uses it; that is fine.
        let _ = docker.remove_network(NETWORK).await;
        self.mutate(|s| s.apps.clear());
        Ok(CleanupReport {
            containers: ids.len(),
            images,
        })
    }
}

/// What the API validates, checked again where it becomes names and labels.
fn check_spec(spec: &AppSpec) -> Result<(), SpawnerError> {
    if !image::valid_slug(&spec.slug) {
        return Err(SpawnerError::Conflict(format!(
            "slug {:?} cannot name containers",
            spec.slug
        )));
    }
    if spec.replicas == 0 {
        return Err(SpawnerError::Conflict("replicas must be at least 1".into()));
    }
    Ok(())
}

/// Hash of what a replica is made of: image and settings. Replicas whose label
/// differs are replaced by `start`.
fn config_hash(spec: &AppSpec, image: &str) -> String {
    use sha2::{Digest, Sha256};
    let doc = serde_json::json!({
        "image": image,
        "memoryMb": spec.memory_mb(),
        "cpus": spec.cpus(),
        "env": spec.env,
    });
    let mut h = hex::encode(Sha256::digest(doc.to_string().as_bytes()));
    h.truncate(12);
    h
}

/// Our view of a container, if it is one of ours.
fn replica_from(info: &ContainerInspectResponse) -> Option<(Uuid, Replica)> {
    let labels = info.config.as_ref()?.labels.as_ref()?;
    let app: Uuid = labels.get(LABEL_APP)?.parse().ok()?;
    let id = info.id.clone()?;
    let st = info.state.clone().unwrap_or_default();
    let health = st.health.clone();
    let health_status = health
        .as_ref()
        .and_then(|h| h.status)
        .map(|s| s.to_string())
        .filter(|s| !s.is_empty() && s != "none");
    let health_output = health
        .and_then(|h| h.log)
        .and_then(|log| log.into_iter().last())
        .filter(|r| r.exit_code != Some(0))
        .and_then(|r| r.output);
    let ip = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|n| n.get(NETWORK))
        .and_then(|e| e.ip_address.as_deref())
        .and_then(|ip| ip.parse().ok());
    let r = Replica {
        name: info
            .name
            .as_deref()
            .unwrap_or(&id)
            .trim_start_matches('/')
            .to_string(),
        id,
        replica: labels
            .get(LABEL_REPLICA)
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        state: st
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "unknown".into()),
        health: health_status,
        health_output,
        started_at: st
            .started_at
            .filter(|t| !t.is_empty() && !t.starts_with("0001-")),
        ip,
        exit_code: st.exit_code,
        restarting: st.restarting.unwrap_or(false),
        oom_killed: st.oom_killed.unwrap_or(false),
        restart_count: info.restart_count.unwrap_or(0),
        config: labels.get(LABEL_CONFIG).cloned(),
    };
    Some((app, r))
}

/// The last lines a container printed (stdout and stderr).
async fn container_tail(docker: &Docker, id: &str, lines: usize) -> Vec<String> {
    let opts = LogsOptions {
        stdout: true,
        stderr: true,
        tail: lines.to_string(),
        ..Default::default()
    };
    let chunks: Vec<_> = docker.logs(id, Some(opts)).collect().await;
    let mut out: Vec<String> = chunks
        .into_iter()
        .filter_map(Result::ok)
        .flat_map(|c| {
            c.to_string()
                .lines()
                .map(|l| l.trim_end().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|l| !l.is_empty())
        .collect();
    let skip = out.len().saturating_sub(lines);
    out.drain(..skip);
    out
}

/// The image id in a classic-builder line like ` ---> 3afd244a747c`.
fn layer_id(line: &str) -> Option<&str> {
    let id = line.trim().strip_prefix("---> ")?.trim();
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// The last lines of build output that came from the build's commands, not from
/// Docker's own step bookkeeping.
fn output_tail(lines: &[Arc<str>], n: usize) -> Vec<String> {
    let mut tail: Vec<String> = lines
        .iter()
        .rev()
        .map(|l| l.trim())
        .filter(|l| {
            !l.is_empty()
                && !l.starts_with("Step ")
                && !l.starts_with("--->")
                && !l.starts_with("---> ")
                && !l.starts_with("Removing intermediate")
                && !l.starts_with("rserve-proxy:")
        })
        .take(n)
        .map(str::to_string)
        .collect();
    tail.reverse();
    tail
}

/// Run `Rscript -e <expr>` in a throwaway container of `image` (no network, no
/// capabilities) and return what it printed.
async fn probe(docker: &Docker, image: &str, expr: &str) -> Result<String, String> {
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        cmd: Some(vec!["Rscript".into(), "-e".into(), expr.into()]),
        labels: Some(HashMap::from([
            (LABEL_MANAGED.to_string(), MANAGED_BY.to_string()),
            (LABEL_PROBE.to_string(), "1".to_string()),
        ])),
        healthcheck: None,
        host_config: Some(HostConfig {
            network_mode: Some("none".into()),
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            memory: Some(256 * 1024 * 1024),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = docker
        .create_container(None::<CreateContainerOptions>, body)
        .await
        .map_err(|e| e.to_string())?
        .id;
    let run = async {
        docker
            .start_container(&id, None)
            .await
            .map_err(|e| e.to_string())?;
        // The stream ends when the container exits (an error item for non-zero).
        let _ = docker.wait_container(&id, None).collect::<Vec<_>>().await;
        let opts = LogsOptions {
            stdout: true,
            ..Default::default()
        };
        let out: Vec<_> = docker.logs(&id, Some(opts)).collect().await;
        Ok::<String, String>(
            out.into_iter()
                .filter_map(Result::ok)
                .map(|c| c.to_string())
                .collect(),
        )
    };
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| Err("the probe did not finish within 60 s".into()));
    let opts = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    let _ = docker.remove_container(&id, Some(opts)).await;
    result
}

/// Lines from a broadcast until its sender goes away; a slow reader is told how many
/// lines it missed.
fn follow(rx: broadcast::Receiver<Arc<str>>) -> impl futures_util::Stream<Item = String> {
    stream::unfold(rx, |mut rx| async move {
        match rx.recv().await {
            Ok(line) => Some((line.to_string(), rx)),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                Some((format!("rserve-proxy: … {n} lines skipped …"), rx))
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    })
}

#[async_trait]
impl Spawner for DockerSpawner {
    async fn ping(&self) -> Result<(), SpawnerError> {
        let docker = self.docker().await?;
        match tokio::time::timeout(Duration::from_secs(2), docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.fail(e, "answer a ping")),
            Err(_) => Err(self.lost("no answer within 2 s")),
        }
    }

    async fn r_versions(&self) -> Result<Vec<String>, SpawnerError> {
        let docker = self.docker().await?;
        let filters = HashMap::from([(
            "reference".to_string(),
            vec![format!("{BASE_IMAGE_REPO}:*")],
        )]);
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list images"))?;
        let tags = images
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .filter_map(|t| {
                t.strip_prefix(&format!("{BASE_IMAGE_REPO}:"))
                    .map(str::to_string)
            });
        Ok(sort_versions(tags))
    }

    async fn runtime(&self, app_id: Uuid) -> AppRuntime {
        // Without a watcher having polled yet (first call, or Docker just lost), look
        // now rather than answer from nothing.
        if !self.read(|s| s.synced) {
            let _ = self.refresh().await;
        }
        self.read(|s| s.runtime(app_id))
    }

    async fn runtimes(&self) -> HashMap<Uuid, AppRuntime> {
        if !self.read(|s| s.synced) {
            let _ = self.refresh().await;
        }
        self.read(|s| {
            if s.unavailable.is_some() {
                return HashMap::new();
            }
            s.apps.iter().map(|(id, e)| (*id, e.runtime())).collect()
        })
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    async fn start(&self, spec: &AppSpec) -> Result<AppStatus, SpawnerError> {
        check_spec(spec)?;
        let _op = self.op_lock(spec.id).await;
        let docker = self.docker().await?;
        let image = self.ensure_image(&docker, spec, false).await?;
        self.run_replicas(&docker, spec, &image, false).await
    }

    async fn stop(&self, app_id: Uuid) -> Result<(), SpawnerError> {
        let _op = self.op_lock(app_id).await;
        let docker = self.docker().await?;
        self.stop_app(&docker, app_id).await
    }

    async fn rebuild(&self, spec: &AppSpec) -> Result<(String, String), SpawnerError> {
        check_spec(spec)?;
        let _op = self.op_lock(spec.id).await;
        let docker = self.docker().await?;
        let image = self.ensure_image(&docker, spec, true).await?;
        self.run_replicas(&docker, spec, &image, true).await?;
        Ok((image.repo, image.tag))
    }

    async fn remove(&self, app_id: Uuid) -> Result<(), SpawnerError> {
        let _op = self.op_lock(app_id).await;
        let docker = self.docker().await?;
        self.stop_app(&docker, app_id).await?;
        self.remove_images(&docker, app_filter(app_id)).await?;
        self.mutate(|s| s.apps.remove(&app_id));
        Ok(())
    }

    async fn logs(&self, app_id: Uuid, source: LogSource) -> Result<LogStream, SpawnerError> {
        let docker = self.docker().await?;
        match source {
            LogSource::Build => {
                let (lines, live) = self.read(|s| {
                    s.apps.get(&app_id).map_or((Vec::new(), None), |e| {
                        (
                            e.build_log
                                .lines
                                .iter()
                                .map(|l| l.to_string())
                                .collect::<Vec<_>>(),
                            e.build_log.live.as_ref().map(|tx| tx.subscribe()),
                        )
                    })
                });
                let replay = stream::iter(lines);
                Ok(match live {
                    Some(rx) => replay.chain(follow(rx)).boxed(),
                    None => replay.boxed(),
                })
            }
            LogSource::Runtime => {
                let containers = self.app_containers(&docker, app_id).await?;
                let streams = containers.into_iter().map(|Listed { id, name, .. }| {
                    let opts = LogsOptions {
                        follow: true,
                        stdout: true,
                        stderr: true,
                        tail: "200".into(),
                        ..Default::default()
                    };
                    docker
                        .logs(&id, Some(opts))
                        .take_while(|r| futures_util::future::ready(r.is_ok()))
                        .filter_map(|r| futures_util::future::ready(r.ok()))
                        .flat_map(move |chunk| {
                            let lines: Vec<String> = chunk
                                .to_string()
                                .lines()
                                .filter(|l| !l.trim().is_empty())
                                .map(|l| format!("{name} | {}", l.trim_end()))
                                .collect();
                            stream::iter(lines)
                        })
                        .boxed()
                });
                Ok(stream::select_all(streams).boxed())
            }
        }
    }

    async fn reconcile(&self, known: &HashSet<Uuid>) -> Result<ReconcileReport, SpawnerError> {
        self.refresh().await?;
        let docker = self.docker().await?;
        let with_containers: Vec<Uuid> = self.read(|s| {
            s.apps
                .iter()
                .filter(|(_, e)| !e.containers.is_empty())
                .map(|(id, _)| *id)
                .collect()
        });
        let images = docker
            .list_images(Some(ListImagesOptions {
                filters: Some(label_filter(&[LABEL_APP.to_string()])),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list images"))?;
        let with_images = images
            .iter()
            .filter_map(|i| i.labels.get(LABEL_APP))
            .filter_map(|v| v.parse::<Uuid>().ok());
        let mut report = ReconcileReport::default();
        let mut strays: Vec<Uuid> = with_containers
            .iter()
            .copied()
            .chain(with_images)
            .filter(|id| !known.contains(id))
            .collect();
        strays.sort();
        strays.dedup();
        for id in strays {
            tracing::info!(app = %id, "removing containers and images of an app that no longer exists");
            self.remove(id).await?;
            report.removed.push(id);
        }
        report.adopted = with_containers
            .into_iter()
            .filter(|id| known.contains(id))
            .collect();
        report.adopted.sort();
        report.vanished = self.read(|s| {
            let mut v: Vec<Uuid> = s
                .apps
                .iter()
                .filter(|(id, e)| e.vanished && known.contains(id))
                .map(|(id, _)| *id)
                .collect();
            v.sort();
            v
        });
        // Probes left by a crash during a build.
        let probes = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(label_filter(&[LABEL_PROBE.to_string()])),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.fail(e, "list containers"))?;
        let probes: Vec<String> = probes.into_iter().filter_map(|c| c.id).collect();
        self.remove_containers(&docker, None, &probes).await?;
        Ok(report)
    }
}

/// Version tags newest first; `latest` and non-version tags dropped, duplicates removed.
pub fn sort_versions(tags: impl Iterator<Item = String>) -> Vec<String> {
    let mut versions: Vec<(Vec<u64>, String)> = tags
        .filter_map(|t| {
            let parts: Option<Vec<u64>> = t.split('.').map(|p| p.parse().ok()).collect();
            parts.map(|p| (p, t))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.dedup_by(|a, b| a.1 == b.1);
    versions.into_iter().map(|(_, t)| t).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_numerically_newest_first() {
        let tags = ["4.2.2", "latest", "4.10.0", "4.3", "4.2.2", "dev"]
            .into_iter()
            .map(String::from);
        assert_eq!(super::sort_versions(tags), vec!["4.10.0", "4.3", "4.2.2"]);
    }

    fn spec() -> AppSpec {
        AppSpec {
            id: Uuid::new_v4(),
            slug: "demo".into(),
            r_version: "4.2.2".into(),
            packages: vec![],
            code_source: CodeSource::Upload,
            entry_script: "run_rserve.R".into(),
            replicas: 2,
            code_dir: None,
            memory_mb: None,
            cpus: None,
            env: vec![],
        }
    }

    #[test]
    fn replica_settings_are_safe_by_default() {
        let s = DockerSpawner::new(Path::new("/nonexistent.sock"));
        let body = s.container_body(&spec(), 2, "rserve-app-demo:abc", "cfg");
        let host = body.host_config.unwrap();
        assert_eq!(host.memory, Some(512 * 1024 * 1024));
        assert_eq!(host.memory_swap, host.memory);
        assert_eq!(host.nano_cpus, Some(1_000_000_000));
        assert_eq!(host.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(
            host.security_opt,
            Some(vec!["no-new-privileges:true".to_string()])
        );
        assert_eq!(host.network_mode.as_deref(), Some(NETWORK));
        assert!(host.port_bindings.is_none() && host.binds.is_none() && host.mounts.is_none());
        let restart = host.restart_policy.unwrap();
        assert_eq!(restart.name, Some(RestartPolicyNameEnum::ON_FAILURE));
        assert_eq!(restart.maximum_retry_count, Some(RESTART_RETRIES));
        let log = host.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.unwrap()["max-size"], "10m");
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_MANAGED], MANAGED_BY);
        assert_eq!(labels[LABEL_REPLICA], "2");
        assert_eq!(labels[LABEL_SLUG], "demo");
    }

    #[test]
    fn settings_change_the_replica_config() {
        let a = spec();
        let base = config_hash(&a, "img:1");
        assert_eq!(base, config_hash(&a, "img:1"));
        assert_ne!(base, config_hash(&a, "img:2"));
        let mut b = a.clone();
        b.memory_mb = Some(256);
        assert_ne!(base, config_hash(&b, "img:1"));
        let mut c = a.clone();
        c.cpus = Some(0.5);
        assert_ne!(base, config_hash(&c, "img:1"));
        let mut d = a.clone();
        d.env.push(("A".into(), "1".into()));
        assert_ne!(base, config_hash(&d, "img:1"));
    }

    #[test]
    fn layer_ids_from_build_output() {
        assert_eq!(layer_id(" ---> 3afd244a747c"), Some("3afd244a747c"));
        assert_eq!(layer_id(" ---> Running in 7df167bdd784"), None);
        assert_eq!(layer_id(" ---> Using cache"), None);
        assert_eq!(layer_id("Step 2/5 : COPY rootfs/ /"), None);
    }

    #[test]
    fn build_failure_tail_skips_docker_bookkeeping() {
        let lines: Vec<Arc<str>> = [
            "Step 5/9 : RUN [\"Rscript\", \"check.R\"]",
            " ---> Running in 1234",
            "R syntax error in run_rserve.R: 3:1: unexpected '}'",
            "Removing intermediate container 1234",
        ]
        .into_iter()
        .map(Arc::from)
        .collect();
        assert_eq!(
            output_tail(&lines, 5),
            vec!["R syntax error in run_rserve.R: 3:1: unexpected '}'"]
        );
    }

    #[tokio::test]
    async fn unreachable_docker_is_unavailable_everywhere() {
        let s = DockerSpawner::new(Path::new("/nonexistent/docker.sock"));
        let id = Uuid::new_v4();
        assert!(matches!(s.ping().await, Err(SpawnerError::Unavailable(_))));
        assert!(matches!(
            s.r_versions().await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.start(&spec()).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.stop(id).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.rebuild(&spec()).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.remove(id).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.logs(id, LogSource::Runtime).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.reconcile(&HashSet::new()).await,
            Err(SpawnerError::Unavailable(_))
        ));
        assert!(matches!(
            s.cleanup_all().await,
            Err(SpawnerError::Unavailable(_))
        ));
        let r = s.runtime(id).await;
        assert_eq!(r.status, AppStatus::Stopped);
        assert!(r.error.unwrap().contains("/nonexistent/docker.sock"));
        assert!(s.runtimes().await.is_empty());
    }
}
