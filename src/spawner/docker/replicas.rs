//! Running replicas: the network, container settings, create-record-start, stop and
//! remove, `cleanup_all`.

use super::*;

impl DockerSpawner {
    pub(super) async fn ensure_network(&self, docker: &Docker) -> Result<(), SpawnerError> {
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

    /// The app's replicas in Docker (any state), by name.
    pub(super) async fn app_containers(
        &self,
        docker: &Docker,
        app: Uuid,
    ) -> Result<Vec<Listed>, SpawnerError> {
        // Replicas only: a build's step containers carry the app's labels too.
        let filters = label_filter(&[format!("{LABEL_APP}={app}"), LABEL_REPLICA.to_string()]);
        let list = docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
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
    pub(super) async fn remove_containers(
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

    pub(super) fn container_body(
        &self,
        spec: &AppSpec,
        replica: u32,
        image: &str,
        config: &str,
    ) -> ContainerCreateBody {
        let labels = HashMap::from([
            (LABEL_MANAGED.to_string(), MANAGED_BY.to_string()),
            (LABEL_INSTANCE.to_string(), self.inner.instance.clone()),
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
    pub(super) async fn create_replica(
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
    pub(super) async fn run_replicas(
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
        // Off the start path: it waits for other apps' builds to finish.
        let (this, docker, app) = (self.clone(), docker.clone(), spec.id);
        tokio::spawn(async move { this.prune_images(&docker, app, &reference).await });
        Ok(AppStatus::Starting)
    }

    /// Re-read one app's containers (events may lag behind our own calls).
    pub(super) async fn refresh_app(&self, docker: &Docker, app: Uuid) -> Result<(), SpawnerError> {
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

    pub(super) async fn stop_app(&self, docker: &Docker, app: Uuid) -> Result<(), SpawnerError> {
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
        for filter in [self.ours(), label_filter(&[LABEL_PROBE.to_string()])] {
            let list = docker
                .list_containers(Some(ListContainersOptions {
                    all: true,
                    filters: Some(filter),
                    ..Default::default()
                }))
                .await
                .map_err(|e| self.fail(e, "list containers"))?;
            ids.extend(list.into_iter().filter_map(|c| c.id));
        }
        self.remove_containers(&docker, None, &ids).await?;
        let images = self.remove_images(&docker, self.ours()).await?;
        // Fails while someone else's container uses it; that is fine.
        let _ = docker.remove_network(NETWORK).await;
        self.mutate(|s| s.apps.clear());
        Ok(CleanupReport {
            containers: ids.len(),
            images,
        })
    }
}

/// Hash of what a replica is made of: image and settings. Replicas whose label
/// differs are replaced by `start`.
pub(super) fn config_hash(spec: &AppSpec, image: &str) -> String {
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
