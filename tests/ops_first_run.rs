//! First run: starting an app whose base image is missing builds the base image
//! itself, with its progress in the app's build log (real Docker, real `docker build`).
//!
//! The R version asked for, 0.0.1, has no `r-base` image anywhere, so the build the
//! spawner starts fails (no such image, or no registry): what is checked is that it
//! ran, that its output reached the build log, and that the failure says what to do.
//! The successful path is the Debian recipe `images build-base` runs (minutes).

mod support;

use std::path::PathBuf;

use futures_util::StreamExt;
use rserve_proxy::model::CodeSource;
use rserve_proxy::spawner::docker::DockerSpawner;
use rserve_proxy::spawner::{AppSpec, LogSource, Spawner, SpawnerError};
use uuid::Uuid;

fn socket() -> PathBuf {
    std::env::var_os("RSP_TEST_DOCKER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

#[tokio::test]
async fn a_missing_base_image_is_built_on_first_start_with_progress_in_the_build_log() {
    let spawner = DockerSpawner::new(&socket(), "tests-ops-first-run");
    if let Err(e) = spawner.ping().await {
        assert!(!support::in_ci(), "CI set and Docker is unreachable: {e}");
        eprintln!("SKIPPED: Docker unreachable: {e}");
        return;
    }
    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("run_rserve.R"), "1\n").unwrap();
    let id = Uuid::new_v4();
    let spec = AppSpec {
        id,
        slug: format!("t-{}", &id.simple().to_string()[..10]),
        r_version: "0.0.1".into(),
        packages: vec![],
        code_source: CodeSource::Upload,
        entry_script: "run_rserve.R".into(),
        replicas: 1,
        code_dir: Some(code.path().to_path_buf()),
        memory_mb: Some(256),
        cpus: Some(0.5),
        env: vec![],
    };
    let err = spawner.start(&spec).await.unwrap_err();
    let SpawnerError::BuildFailed { reason, .. } = &err else {
        panic!("expected a build failure, got {err:?}");
    };
    assert!(
        reason.contains("rserve-base:0.0.1 was missing and building it failed"),
        "{reason}"
    );
    assert!(
        reason.contains("rserve-proxy images build-base"),
        "{reason}"
    );

    let log: Vec<String> = spawner
        .logs(id, LogSource::Build)
        .await
        .unwrap()
        .collect()
        .await;
    let text = log.join("\n");
    assert!(
        text.contains(
            "base image rserve-base:0.0.1 is missing; building it first, from r-base:0.0.1"
        ),
        "{text}"
    );
    // docker build's own output, line by line.
    assert!(text.contains(": FROM r-base:"), "{text}");
    let _ = spawner.remove(id).await;
}
