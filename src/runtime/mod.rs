//! Keeps what runs in line with what should run, and tells the proxy.
//!
//! - Reconcile: the spawner tracks containers and their health itself (Docker events
//!   plus a poll); this loop adds what only the store knows — which apps exist — once
//!   Docker answers and again after every Docker outage. Containers of apps the store
//!   no longer has are removed; apps whose containers vanished are marked.
//! - Routes: on every change (a replica turning healthy or not, an app created,
//!   started, stopped or deleted) it publishes a new route snapshot to the proxy.
//! - Alerts: the same pass compares each app's status with the previous one and
//!   publishes crashed / unhealthy / recovered (`alerts.rs`); Docker going away and
//!   the spawner's build failures are published from here too.

mod alerts;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use uuid::Uuid;

use crate::alerts::{Alerts, Event, EventKind};
use crate::model::App;
use crate::proxy::routes::{AppEntry, AppPhase, ReplicaEntry, Routes};
use crate::service::with_store;
use crate::spawner::{AppRuntime, AppStatus, Spawner};
use crate::store::Store;

/// How often the loop checks even without a change notice.
const RECHECK: Duration = Duration::from_secs(30);

/// What the runtime loop works with.
pub struct Runtime {
    pub store: Store,
    pub spawner: Arc<dyn Spawner>,
    pub routes: Routes,
    /// Routes that do not come from the store (`static_routes`); kept in every table.
    pub static_entries: Vec<AppEntry>,
    /// Signalled by the services when apps are created or deleted.
    pub apps_changed: Arc<Notify>,
    /// Where crashes, recoveries, build failures and Docker outages are reported.
    pub alerts: Alerts,
}

/// Run until `shutdown` turns true.
pub async fn run(rt: Runtime, mut shutdown: watch::Receiver<bool>) {
    let mut changes = rt.spawner.subscribe();
    let mut reconciled = false;
    let mut watch = alerts::StatusWatch::default();
    let mut build_failures = rt.spawner.build_failures();
    let mut docker_up = true;
    loop {
        let ping = rt.spawner.ping().await;
        if let Err(e) = &ping {
            reconciled = false;
            if docker_up {
                rt.alerts.publish(Event::new(
                    EventKind::DockerUnreachable,
                    None,
                    e.to_string(),
                ));
            }
        } else if !reconciled {
            reconciled = reconcile_once(&rt.store, rt.spawner.as_ref()).await;
        }
        docker_up = ping.is_ok();
        let apps = publish_routes(&rt).await;
        // Without Docker every app reads "stopped": that is one outage, not N crashes.
        if let (true, Some((apps, runtimes))) = (docker_up, apps) {
            for event in watch.observe(&apps, &runtimes) {
                rt.alerts.publish(event);
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(failure) = alerts::next_build_failure(&mut build_failures) => {
                let app = with_store(&rt.store, move |s| s.get_app(failure.app_id))
                    .await
                    .ok()
                    .flatten();
                rt.alerts.publish(alerts::build_failed(app.as_ref(), &failure));
            }
            r = changes.changed() => {
                if r.is_err() {
                    // The spawner dropped its sender; fall back to the clock.
                    tokio::time::sleep(RECHECK).await;
                }
            }
            _ = rt.apps_changed.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// Build the route table from the store's apps and the spawner's view, and swap it in.
/// Returns what it was built from (`None` when the store could not be read).
pub async fn publish_routes(rt: &Runtime) -> Option<(Vec<App>, HashMap<Uuid, AppRuntime>)> {
    let apps = all_apps(&rt.store, "routes").await?;
    let runtimes = rt.spawner.runtimes().await;
    let mut entries: Vec<AppEntry> = apps
        .iter()
        .map(|app| route_entry(app, runtimes.get(&app.id)))
        .collect();
    entries.extend(rt.static_entries.iter().cloned());
    rt.routes.publish(entries);
    Some((apps, runtimes))
}

/// One app's route: where its replicas are and whether it is meant to serve.
pub fn route_entry(app: &App, runtime: Option<&AppRuntime>) -> AppEntry {
    let replicas: Vec<ReplicaEntry> = runtime
        .map(|r| {
            r.containers
                .iter()
                .filter_map(|c| {
                    c.addr.map(|addr| ReplicaEntry {
                        addr,
                        healthy: c.is_healthy(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let status = runtime.map_or(AppStatus::Stopped, |r| r.status);
    // Healthy replicas serve whatever else is going on (e.g. a rebuild of a running app).
    let phase = if replicas.iter().any(|r| r.healthy) {
        AppPhase::Running
    } else {
        match status {
            AppStatus::Building | AppStatus::Starting => AppPhase::Starting,
            AppStatus::Running | AppStatus::Degraded => AppPhase::Running,
            AppStatus::Stopping | AppStatus::Stopped | AppStatus::Error => AppPhase::Stopped,
        }
    };
    AppEntry {
        app_id: app.id,
        slug: app.slug.clone(),
        phase,
        replicas,
    }
}

/// Every app in the store, or `None` (logged) when it cannot be read.
async fn all_apps(store: &Store, purpose: &str) -> Option<Vec<App>> {
    match with_store(store, |s| s.list_apps(None)).await {
        Ok(apps) => Some(apps),
        Err(e) => {
            tracing::error!(error = %e, "{purpose}: cannot read apps from the store");
            None
        }
    }
}

/// One reconcile pass: every app id in the store is "known". Returns whether it ran.
pub async fn reconcile_once(store: &Store, spawner: &dyn Spawner) -> bool {
    let Some(apps) = all_apps(store, "reconcile").await else {
        return false;
    };
    let known: HashSet<Uuid> = apps.into_iter().map(|a| a.id).collect();
    match spawner.reconcile(&known).await {
        Ok(report) => {
            tracing::info!(
                adopted = report.adopted.len(),
                removed = report.removed.len(),
                vanished = report.vanished.len(),
                "reconciled apps with Docker"
            );
            for id in &report.vanished {
                tracing::warn!(app_id = %id, "app's containers disappeared outside rserve-proxy; it is stopped now");
            }
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "reconcile postponed until Docker answers");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AppSettings, CodeSource};
    use crate::spawner::ContainerInfo;

    /// An app record for the runtime's tests (also `alerts.rs`'s).
    pub(super) fn app() -> App {
        let now = time::OffsetDateTime::now_utc();
        App {
            id: Uuid::new_v4(),
            name: "A".into(),
            slug: "a-app".into(),
            r_version: "latest".into(),
            packages: vec![],
            code_source: CodeSource::Upload,
            entry_script: "run_rserve.R".into(),
            replicas: 2,
            settings: AppSettings::default(),
            owner_id: Uuid::new_v4(),
            created_at: now,
            updated_at: now,
        }
    }

    fn replica(n: u8, health: &str) -> ContainerInfo {
        ContainerInfo {
            status: "running".into(),
            health_status: Some(health.into()),
            addr: Some(std::net::SocketAddr::from(([172, 18, 0, n], 8081))),
            ..Default::default()
        }
    }

    #[test]
    fn phases_follow_health_first() {
        let a = app();
        assert_eq!(route_entry(&a, None).phase, AppPhase::Stopped);
        let starting = AppRuntime {
            status: AppStatus::Starting,
            containers: vec![replica(2, "starting")],
            error: None,
        };
        let e = route_entry(&a, Some(&starting));
        assert_eq!(e.phase, AppPhase::Starting);
        assert_eq!(e.replicas.len(), 1);
        assert!(!e.replicas[0].healthy);
        let building_with_old = AppRuntime {
            status: AppStatus::Building,
            containers: vec![replica(2, "healthy"), replica(3, "unhealthy")],
            error: None,
        };
        let e = route_entry(&a, Some(&building_with_old));
        assert_eq!(e.phase, AppPhase::Running, "old replicas keep serving");
        assert_eq!(e.replicas.iter().filter(|r| r.healthy).count(), 1);
        let failed = AppRuntime {
            status: AppStatus::Error,
            containers: vec![],
            error: Some("x".into()),
        };
        assert_eq!(route_entry(&a, Some(&failed)).phase, AppPhase::Stopped);
        assert_eq!(route_entry(&a, Some(&failed)).slug, "a-app");
    }
}
