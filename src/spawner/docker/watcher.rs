//! Keeping the runtime view current: Docker's event stream, the periodic poll, and
//! the supervisor that restarts replicas Docker will not.

use super::*;

impl DockerSpawner {
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
    pub(super) async fn watch_once(
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
            (
                "label".to_string(),
                vec![
                    LABEL_APP.to_string(),
                    format!("{LABEL_INSTANCE}={}", self.inner.instance),
                ],
            ),
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
    pub(super) async fn refresh(&self) -> Result<(), SpawnerError> {
        let docker = self.docker().await?;
        self.refresh_with(&docker).await
    }

    pub(super) async fn refresh_with(&self, docker: &Docker) -> Result<(), SpawnerError> {
        let epochs = self.read(|s| s.epochs.clone());
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.ours()),
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

    pub(super) async fn on_event(
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
    pub(super) async fn on_die(&self, docker: &Docker, app: Uuid, r: &Replica) {
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

    pub(super) async fn supervise(&self, docker: &Docker, app: Uuid, r: &Replica) {
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
}

/// Our view of a container, if it is one of our replicas. An image build runs its
/// steps in short-lived containers that inherit the app's labels from the Dockerfile's
/// LABEL; without `rserve-proxy.replica` they are not replicas.
pub(super) fn replica_from(info: &ContainerInspectResponse) -> Option<(Uuid, Replica)> {
    let labels = info.config.as_ref()?.labels.as_ref()?;
    let app: Uuid = labels.get(LABEL_APP)?.parse().ok()?;
    let replica: u32 = labels.get(LABEL_REPLICA)?.parse().ok()?;
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
        replica,
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
pub(super) async fn container_tail(docker: &Docker, id: &str, lines: usize) -> Vec<String> {
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
