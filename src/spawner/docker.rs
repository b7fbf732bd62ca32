//! Docker Engine backend (bollard).
//!
//! This build talks to Docker for reachability and the list of base images. Building
//! and running app containers is the next milestone (issue #3); until then the
//! lifecycle methods answer `Unavailable`, which the API turns into a 503.

use async_trait::async_trait;
use bollard::query_parameters::ListImagesOptions;
use bollard::Docker;
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

use super::{AppRuntime, AppSpec, AppStatus, LogSource, LogStream, Spawner, SpawnerError};

/// Repository name of the R base images.
pub const BASE_IMAGE_REPO: &str = "rserve-base";

pub struct DockerSpawner {
    docker: Option<Docker>,
    socket: String,
}

impl DockerSpawner {
    /// Prepare a client for the Engine at `socket`. Never fails: a bad socket shows up
    /// as `Unavailable` on use, so the rest of the product keeps working without Docker.
    pub fn new(socket: &Path) -> Self {
        let socket = socket.to_string_lossy().into_owned();
        let docker = Docker::connect_with_unix(&socket, 30, bollard::API_DEFAULT_VERSION).ok();
        DockerSpawner { docker, socket }
    }

    fn client(&self) -> Result<&Docker, SpawnerError> {
        self.docker
            .as_ref()
            .ok_or_else(|| self.unreachable("cannot create a client"))
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> SpawnerError {
        SpawnerError::Unavailable(format!(
            "cannot reach the Docker Engine at {} ({why}); start Docker or set docker_socket",
            self.socket
        ))
    }

    fn not_yet(&self) -> SpawnerError {
        SpawnerError::Unavailable(
            "this build cannot run apps yet: building and running app containers arrives with the Docker spawner".into(),
        )
    }
}

#[async_trait]
impl Spawner for DockerSpawner {
    async fn ping(&self) -> Result<(), SpawnerError> {
        let docker = self.client()?;
        match tokio::time::timeout(Duration::from_secs(2), docker.ping()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(self.unreachable(e)),
            Err(_) => Err(self.unreachable("no answer within 2 s")),
        }
    }

    async fn r_versions(&self) -> Result<Vec<String>, SpawnerError> {
        let docker = self.client()?;
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
            .map_err(|e| self.unreachable(e))?;
        let tags = images
            .iter()
            .flat_map(|i| i.repo_tags.iter())
            .filter_map(|t| {
                t.strip_prefix(&format!("{BASE_IMAGE_REPO}:"))
                    .map(str::to_string)
            });
        Ok(sort_versions(tags))
    }

    async fn runtime(&self, _app_id: Uuid) -> AppRuntime {
        AppRuntime::stopped()
    }

    async fn start(&self, _spec: &AppSpec) -> Result<AppStatus, SpawnerError> {
        self.ping().await?;
        Err(self.not_yet())
    }

    async fn stop(&self, _app_id: Uuid) -> Result<(), SpawnerError> {
        self.ping().await?;
        Err(self.not_yet())
    }

    async fn rebuild(&self, _spec: &AppSpec) -> Result<(String, String), SpawnerError> {
        self.ping().await?;
        Err(self.not_yet())
    }

    async fn remove(&self, _app_id: Uuid) -> Result<(), SpawnerError> {
        // Nothing can have been created for the app by this build.
        Ok(())
    }

    async fn logs(&self, _app_id: Uuid, _source: LogSource) -> Result<LogStream, SpawnerError> {
        self.ping().await?;
        Err(self.not_yet())
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
    #[test]
    fn versions_sort_numerically_newest_first() {
        let tags = ["4.2.2", "latest", "4.10.0", "4.3", "4.2.2", "dev"]
            .into_iter()
            .map(String::from);
        assert_eq!(super::sort_versions(tags), vec!["4.10.0", "4.3", "4.2.2"]);
    }
}
