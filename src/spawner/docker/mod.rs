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
//!
//! Files: this one holds the type, its shared helpers and the `Spawner` impl;
//! `image.rs` the pure parts of images (Dockerfile, hash, context, git), `build.rs`
//! building them, `replicas.rs` containers, `watcher.rs` events/poll/supervisor and
//! `state.rs` the in-memory view.

mod build;
pub mod image;
mod replicas;
mod state;
mod stats;
mod watcher;

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
use self::watcher::replica_from;
use super::{
    AppRuntime, AppSpec, AppStatus, ContainerStats, LogSource, LogStream, ReconcileReport, Spawner,
    SpawnerError,
};
use crate::model::CodeSource;

/// Repository name of the R base images.
pub const BASE_IMAGE_REPO: &str = "rserve-base";
/// The bridge network all replicas join; the proxy reaches them on it.
pub const NETWORK: &str = "rserve-proxy";

pub const LABEL_MANAGED: &str = "managed-by";
pub const MANAGED_BY: &str = "rserve-proxy";
pub const LABEL_APP: &str = "rserve-proxy.app-id";
/// Which rserve-proxy instance (data dir) owns a container or image. Two instances on
/// one Docker host (staging and production, or parallel tests) each see, adopt and
/// clean up only their own.
pub const LABEL_INSTANCE: &str = "rserve-proxy.instance";
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
    /// Value of `LABEL_INSTANCE` on everything this spawner creates and manages.
    instance: String,
    /// Connected client with a negotiated API version; dropped when Docker is lost.
    client: Mutex<Option<Docker>>,
    state: Mutex<State>,
    changes: watch::Sender<u64>,
    /// One lifecycle operation per app at a time.
    ops: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<()>>>>,
    /// Whether a base image (by id) has pak.
    installers: Mutex<HashMap<String, Installer>>,
    /// Builds since start, for metrics.
    builds: crate::spawner::BuildStats,
    /// Build failures as they happen, for alerts.
    build_failures: tokio::sync::broadcast::Sender<crate::spawner::BuildFailure>,
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

/// The images matching `filters`.
async fn images(
    docker: &Docker,
    filters: HashMap<String, Vec<String>>,
) -> Result<Vec<bollard::models::ImageSummary>, DockerError> {
    docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
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

impl DockerSpawner {
    /// Label filter selecting this instance's app containers and images.
    pub(super) fn ours(&self) -> HashMap<String, Vec<String>> {
        label_filter(&[
            LABEL_APP.to_string(),
            format!("{LABEL_INSTANCE}={}", self.inner.instance),
        ])
    }
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
    /// `instance` identifies this rserve-proxy (its data dir, see
    /// `Store::instance_id`); only containers and images labelled with it are ours.
    pub fn new(socket: &Path, instance: &str) -> Self {
        let (changes, _) = watch::channel(0);
        DockerSpawner {
            inner: Arc::new(Inner {
                socket: socket.to_string_lossy().into_owned(),
                instance: instance.to_string(),
                client: Mutex::new(None),
                state: Mutex::new(State::default()),
                changes,
                ops: Mutex::new(HashMap::new()),
                installers: Mutex::new(HashMap::new()),
                builds: Default::default(),
                build_failures: tokio::sync::broadcast::channel(64).0,
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

    /// Without a watcher having polled yet (first call, or Docker just lost), look now
    /// rather than answer from nothing — briefly: a hung Docker must not hang callers.
    async fn sync_if_needed(&self) {
        if self.read(|s| s.synced) {
            return;
        }
        if tokio::time::timeout(Duration::from_secs(3), self.refresh())
            .await
            .is_err()
        {
            self.lost("no answer within 3 s");
        }
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
        let images = images(&docker, filters)
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
        self.sync_if_needed().await;
        self.read(|s| s.runtime(app_id))
    }

    async fn runtimes(&self) -> HashMap<Uuid, AppRuntime> {
        self.sync_if_needed().await;
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

    fn build_stats(&self) -> crate::spawner::BuildStatsSnapshot {
        self.inner.builds.snapshot()
    }

    fn build_failures(
        &self,
    ) -> Option<tokio::sync::broadcast::Receiver<crate::spawner::BuildFailure>> {
        Some(self.inner.build_failures.subscribe())
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
        let images = images(&docker, self.ours())
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

    async fn container_stats(
        &self,
        container_id: &str,
    ) -> Result<Option<ContainerStats>, SpawnerError> {
        self.one_shot_stats(container_id).await
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
    use super::build::{layer_id, output_tail};
    use super::replicas::config_hash;
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
        let s = DockerSpawner::new(Path::new("/nonexistent.sock"), "test");
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
        let s = DockerSpawner::new(Path::new("/nonexistent/docker.sock"), "test");
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
