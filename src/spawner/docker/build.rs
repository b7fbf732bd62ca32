//! Building app images: base image and installer lookup, code, the build itself
//! (log kept and broadcast), image clean-up.

use super::*;

/// Builds share cached layers (HEALTHCHECK/CMD, package layers) that Docker deletes
/// when it removes the last image built on them, even while a build uses one as its
/// parent. Builds hold this shared, image removals exclusively. One per process: it
/// is about the daemon's image store, not one spawner.
/// One base image build at a time (see `build_base_first`).
static BASE_BUILDS: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

static LAYERS: LazyLock<tokio::sync::RwLock<()>> = LazyLock::new(|| tokio::sync::RwLock::new(()));

enum BuildRun {
    Done,
    /// Docker's error and the layers the build committed before it.
    Failed {
        error: String,
        layers: Vec<String>,
    },
}

impl DockerSpawner {
    /// The base image's reference, id and pak label; `None` when it does not exist.
    pub(super) async fn find_base_image(
        &self,
        docker: &Docker,
        r_version: &str,
    ) -> Result<Option<(String, String, Option<String>)>, SpawnerError> {
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
                Ok(Some((base_ref, i.id.unwrap_or_default(), pak)))
            }
            Err(e) if status_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(self.fail(e, "inspect the base image")),
        }
    }

    /// First run: the app's base image is missing, so build it, its output going to
    /// the app's build log. One base build at a time (two apps starting at once would
    /// build the same image twice); the second finds the first's result.
    async fn build_base_first(
        &self,
        docker: &Docker,
        spec: &AppSpec,
    ) -> Result<(String, String, Option<String>), SpawnerError> {
        let base_ref = image::base_image_ref(&spec.r_version).unwrap_or_default();
        self.mutate(|s| {
            let e = s.entry(spec.id);
            e.phase = Phase::Building;
            e.build_error = None;
            e.build_log.begin();
        });
        let result = self.build_base_locked(docker, spec, &base_ref).await;
        self.mutate(|s| {
            let e = s.entry(spec.id);
            e.phase = Phase::Idle;
            e.build_log.finish();
        });
        result
    }

    async fn build_base_locked(
        &self,
        docker: &Docker,
        spec: &AppSpec,
        base_ref: &str,
    ) -> Result<(String, String, Option<String>), SpawnerError> {
        let _one_at_a_time = BASE_BUILDS.lock().await;
        if let Some(b) = self.find_base_image(docker, &spec.r_version).await? {
            return Ok(b);
        }
        let recipe = crate::images::recipe_for(&spec.r_version);
        let how = match &recipe {
            crate::images::Recipe::FromDebian { .. } => {
                if !nix::unistd::geteuid().is_root() {
                    let have = self.r_versions().await.unwrap_or_default();
                    return Err(build_failed(
                        format!(
                            "base image {base_ref} not found (R versions available: {}); building it from Debian's packages needs root (mmdebstrap): run `sudo rserve-proxy images build-base --from-debian` once, then start the app again",
                            if have.is_empty() { "none".to_string() } else { have.join(", ") }
                        ),
                        vec![],
                    ));
                }
                "from Debian's packages (mmdebstrap; no registry needed)".to_string()
            }
            crate::images::Recipe::Dockerfile { r_version } => {
                format!("from r-base:{r_version} on the registry")
            }
        };
        self.log_line(
            spec.id,
            &format!("rserve-proxy: base image {base_ref} is missing; building it first, {how}. This happens once per R version and takes a few minutes."),
        );
        let me = self.clone();
        let app = spec.id;
        let built = tokio::task::spawn_blocking(move || {
            crate::images::build_base_with(&recipe, &mut |line| me.log_line(app, line))
        })
        .await
        .map_err(|e| SpawnerError::Internal(format!("base image build task failed: {e}")))?;
        if let Err(e) = built {
            return Err(build_failed(
                format!(
                    "base image {base_ref} was missing and building it failed: {e}; see the build log, or build it by hand with `rserve-proxy images build-base`"
                ),
                vec![],
            ));
        }
        match self.find_base_image(docker, &spec.r_version).await? {
            Some(b) => {
                self.log_line(
                    spec.id,
                    &format!("rserve-proxy: base image {base_ref} built; now the app's image"),
                );
                Ok(b)
            }
            None => Err(build_failed(
                format!("the base image build finished but {base_ref} does not exist; build it with `rserve-proxy images build-base`"),
                vec![],
            )),
        }
    }

    /// pak or install.packages: the base image's label says, else R in a short-lived
    /// container does (once per base image).
    pub(super) async fn installer(
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

    pub(super) async fn app_image_exists(
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

    pub(super) fn log_line(&self, app: Uuid, line: &str) {
        self.mutate(|s| s.entry(app).build_log.push(line));
    }

    /// The app's image for `spec`: reused when its hash exists (unless `force`),
    /// built otherwise. A failed build records the reason on the app.
    pub(super) async fn ensure_image(
        &self,
        docker: &Docker,
        spec: &AppSpec,
        force: bool,
    ) -> Result<AppImage, SpawnerError> {
        // After a base build, its lines stay in the log the app build continues.
        let (found, base_built) = match self.find_base_image(docker, &spec.r_version).await {
            Ok(Some(b)) => (Ok(b), false),
            Ok(None) => (self.build_base_first(docker, spec).await, true),
            Err(e) => (Err(e), false),
        };
        let (base_ref, base_id, pak_label) = match found {
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
            if base_built {
                e.build_log.resume();
            } else {
                e.build_log.begin();
            }
        });
        let started = std::time::Instant::now();
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
        self.inner.builds.duration(started.elapsed());
        match &result {
            Ok(_) => self.inner.builds.success(),
            // Docker lost mid-build is a failed build too (not an app error).
            Err(e @ SpawnerError::BuildFailed { .. }) => self.record_build_error(spec.id, e),
            Err(_) => self.inner.builds.failure(),
        }
        self.mutate(|s| {
            let e = s.entry(spec.id);
            e.phase = Phase::Idle;
            e.build_log.finish();
        });
        result
    }

    pub(super) fn record_build_error(&self, app: Uuid, e: &SpawnerError) {
        if let SpawnerError::BuildFailed { reason, .. } = e {
            let reason = reason.clone();
            self.inner.builds.failure();
            // Nobody listening is fine.
            let _ = self
                .inner
                .build_failures
                .send(crate::spawner::BuildFailure {
                    app_id: app,
                    reason: reason.clone(),
                });
            self.mutate(|s| s.entry(app).build_error = Some(reason));
        }
    }

    pub(super) async fn scan_upload(
        &self,
        spec: &AppSpec,
    ) -> Result<image::CodeTree, SpawnerError> {
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
    pub(super) async fn build(
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
            instance: &self.inner.instance,
            slug: &spec.slug,
            installer,
            packages: &inputs.packages,
            entry_script: &spec.entry_script,
        });
        let context = tokio::task::spawn_blocking(move || image::context_tar(&support, &tree))
            .await
            .map_err(|e| SpawnerError::Internal(format!("build context stopped: {e}")))?
            .map_err(|e| fail(e, self))?;

        // A cached layer another app's image removal deleted mid-build (Docker does
        // not protect a build's parents) fails the build; building again fixes it.
        let context = bytes::Bytes::from(context);
        let mut retried = false;
        let outcome = loop {
            let shared = LAYERS.read().await;
            let run = self
                .run_build(docker, app, &reference, context.clone())
                .await;
            drop(shared);
            match run? {
                BuildRun::Failed { error, .. }
                    if !retried
                        && (error.contains("unknown parent image")
                            || error.contains("No such image")) =>
                {
                    retried = true;
                    self.log_line(
                        app,
                        "rserve-proxy: a cached layer was removed during the build; building again",
                    );
                }
                other => break other,
            }
        };
        if let BuildRun::Failed { error, layers } = outcome {
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
            let _exclusive = LAYERS.write().await;
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

    /// One `docker build`, its output going to the app's build log.
    async fn run_build(
        &self,
        docker: &Docker,
        app: Uuid,
        reference: &str,
        context: bytes::Bytes,
    ) -> Result<BuildRun, SpawnerError> {
        let options = BuildImageOptions {
            dockerfile: "Dockerfile".into(),
            t: Some(reference.to_string()),
            rm: true,
            forcerm: true,
            // Labels are in the Dockerfile: as build options they would add an
            // uncached step to every build.
            ..Default::default()
        };
        let mut output = docker.build_image(options, None, Some(bollard::body_full(context)));
        // Layers this build committed (" ---> <id>", not after "Using cache").
        let mut layers: Vec<String> = Vec::new();
        let mut cached = false;
        while let Some(item) = output.next().await {
            match item {
                Ok(info) => {
                    for line in info.stream.as_deref().unwrap_or("").lines() {
                        let line = line.trim_end();
                        if let Some(id) = layer_id(line) {
                            if !cached {
                                layers.push(id.to_string());
                            }
                        }
                        if !line.trim().is_empty() {
                            cached = line.trim() == "---> Using cache";
                            self.log_line(app, line);
                        }
                    }
                }
                Err(DockerError::DockerStreamError { error }) => {
                    return Ok(BuildRun::Failed { error, layers })
                }
                Err(e) if is_connection_error(&e) => return Err(self.fail(e, "build the image")),
                Err(e) => {
                    return Ok(BuildRun::Failed {
                        error: docker_message(&e),
                        layers,
                    })
                }
            }
        }
        Ok(BuildRun::Done)
    }

    /// Remove the app's images other than `keep` (in-use ones stay; errors ignored).
    pub(super) async fn prune_images(&self, docker: &Docker, app: Uuid, keep: &str) {
        let _exclusive = LAYERS.write().await;
        let Ok(images) = super::images(docker, app_filter(app)).await else {
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

    pub(super) async fn remove_images(
        &self,
        docker: &Docker,
        filters: HashMap<String, Vec<String>>,
    ) -> Result<usize, SpawnerError> {
        let _exclusive = LAYERS.write().await;
        let images = super::images(docker, filters)
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
}

/// The image id in a classic-builder line like ` ---> 3afd244a747c`.
pub(super) fn layer_id(line: &str) -> Option<&str> {
    let id = line.trim().strip_prefix("---> ")?.trim();
    (id.len() >= 12 && id.chars().all(|c| c.is_ascii_hexdigit())).then_some(id)
}

/// The last lines of build output that came from the build's commands, not from
/// Docker's own step bookkeeping.
pub(super) fn output_tail(lines: &[Arc<str>], n: usize) -> Vec<String> {
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
pub(super) async fn probe(docker: &Docker, image: &str, expr: &str) -> Result<String, String> {
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
