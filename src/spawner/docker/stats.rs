//! Container resource counters through Docker's stats API, one-shot (Docker answers
//! at once instead of sampling twice a second apart; `precpu_stats` is then empty, so
//! the caller takes deltas against its own previous reading).

use bollard::models::{ContainerMemoryStats, ContainerStatsResponse};
use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt;

use super::{is_connection_error, status_code, DockerSpawner};
use crate::spawner::{ContainerStats, SpawnerError};

impl DockerSpawner {
    pub(super) async fn one_shot_stats(
        &self,
        container_id: &str,
    ) -> Result<Option<ContainerStats>, SpawnerError> {
        let docker = self.docker().await?;
        let mut stream = docker.stats(
            container_id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        match stream.next().await {
            Some(Ok(r)) => Ok(from_response(container_id, &r)),
            // Removed meanwhile: no sample, not an error.
            Some(Err(e)) if status_code(&e) == Some(404) => Ok(None),
            Some(Err(e)) if is_connection_error(&e) => Err(self.lost(e)),
            Some(Err(e)) => Err(SpawnerError::Internal(format!(
                "Docker could not report stats of {container_id}: {e}"
            ))),
            None => Ok(None),
        }
    }
}

/// The counters of a stats answer; `None` for a container that is not running (Docker
/// answers with empty figures then).
pub(super) fn from_response(id: &str, r: &ContainerStatsResponse) -> Option<ContainerStats> {
    let cpu = r.cpu_stats.as_ref()?;
    let cpu_total_ns = cpu.cpu_usage.as_ref()?.total_usage?;
    let online_cpus = cpu.online_cpus.filter(|n| *n > 0).unwrap_or_else(|| {
        // Older engines leave online_cpus out; the per-core list says it too.
        cpu.cpu_usage
            .as_ref()
            .and_then(|u| u.percpu_usage.as_ref())
            .map_or(1, |v| u32::try_from(v.len()).unwrap_or(1).max(1))
    });
    let (memory_bytes, memory_limit_bytes) = r
        .memory_stats
        .as_ref()
        .map_or((0, 0), |m| (memory_without_cache(m), m.limit.unwrap_or(0)));
    let (rx, tx) = r
        .networks
        .iter()
        .flatten()
        .fold((0u64, 0u64), |(rx, tx), (_, n)| {
            (
                rx.saturating_add(n.rx_bytes.unwrap_or(0)),
                tx.saturating_add(n.tx_bytes.unwrap_or(0)),
            )
        });
    Some(ContainerStats {
        container_id: id.chars().take(12).collect(),
        cpu_total_ns,
        system_cpu_ns: cpu.system_cpu_usage,
        online_cpus,
        memory_bytes,
        memory_limit_bytes,
        network_rx_bytes: rx,
        network_tx_bytes: tx,
    })
}

/// Memory in use without the page cache, as `docker stats` shows it: cgroup v1
/// subtracts `total_inactive_file`, v2 `inactive_file`; very old engines only
/// report `cache`.
pub(super) fn memory_without_cache(m: &ContainerMemoryStats) -> u64 {
    let usage = m.usage.unwrap_or(0);
    let Some(stats) = m.stats.as_ref() else {
        return usage;
    };
    let cache = ["total_inactive_file", "inactive_file", "cache"]
        .iter()
        .find_map(|k| stats.get(*k).copied())
        .unwrap_or(0);
    usage.saturating_sub(cache)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerCpuStats, ContainerCpuUsage, ContainerNetworkStats};
    use std::collections::HashMap;

    #[test]
    fn memory_subtracts_the_page_cache_per_cgroup_version() {
        let m = |stats: &[(&str, u64)]| ContainerMemoryStats {
            usage: Some(100),
            stats: Some(stats.iter().map(|(k, v)| (k.to_string(), *v)).collect()),
            ..Default::default()
        };
        // v1: total_inactive_file wins over cache.
        assert_eq!(
            memory_without_cache(&m(&[("total_inactive_file", 30), ("cache", 60)])),
            70
        );
        // v2
        assert_eq!(memory_without_cache(&m(&[("inactive_file", 40)])), 60);
        assert_eq!(memory_without_cache(&m(&[("cache", 10)])), 90);
        assert_eq!(memory_without_cache(&m(&[("inactive_file", 400)])), 0);
        assert_eq!(memory_without_cache(&m(&[])), 100);
    }

    #[test]
    fn response_to_counters() {
        let r = ContainerStatsResponse {
            cpu_stats: Some(ContainerCpuStats {
                cpu_usage: Some(ContainerCpuUsage {
                    total_usage: Some(5_000),
                    percpu_usage: Some(vec![1, 2, 3]),
                    ..Default::default()
                }),
                system_cpu_usage: Some(99_000),
                online_cpus: None,
                ..Default::default()
            }),
            memory_stats: Some(ContainerMemoryStats {
                usage: Some(1000),
                limit: Some(4000),
                ..Default::default()
            }),
            networks: Some(HashMap::from([
                (
                    "eth0".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(10),
                        tx_bytes: Some(20),
                        ..Default::default()
                    },
                ),
                (
                    "eth1".to_string(),
                    ContainerNetworkStats {
                        rx_bytes: Some(1),
                        tx_bytes: Some(2),
                        ..Default::default()
                    },
                ),
            ])),
            ..Default::default()
        };
        let s = from_response("0123456789abcdef", &r).unwrap();
        assert_eq!(s.container_id, "0123456789ab");
        assert_eq!(s.cpu_total_ns, 5_000);
        assert_eq!(s.system_cpu_ns, Some(99_000));
        assert_eq!(s.online_cpus, 3);
        assert_eq!((s.memory_bytes, s.memory_limit_bytes), (1000, 4000));
        assert_eq!((s.network_rx_bytes, s.network_tx_bytes), (11, 22));
        // A stopped container: Docker sends empty figures.
        assert!(from_response("x", &ContainerStatsResponse::default()).is_none());
    }
}
