//! Turning status changes into alert events. Pure: the runtime loop feeds it each
//! pass's apps and runtime views; tests feed it by hand.

use std::collections::{HashMap, HashSet};

use tokio::sync::broadcast;
use uuid::Uuid;

use crate::alerts::{AppRef, Event, EventKind};
use crate::model::App;
use crate::spawner::{AppRuntime, AppStatus, BuildFailure};

/// Each app's last status, and which apps are in an alerted state (so "recovered" is
/// sent only after a "crashed" or "unhealthy").
#[derive(Debug, Default)]
pub struct StatusWatch {
    prev: HashMap<Uuid, AppStatus>,
    alerted: HashSet<Uuid>,
}

pub fn app_ref(app: &App) -> AppRef {
    AppRef {
        id: app.id,
        slug: app.slug.clone(),
        name: app.name.clone(),
    }
}

impl StatusWatch {
    /// Compare with the previous pass. An app seen for the first time raises nothing
    /// (its history is unknown); operations (stop, restart, rebuild) raise nothing
    /// because they never leave a serving app without healthy replicas *and* with an
    /// error.
    pub fn observe(&mut self, apps: &[App], runtimes: &HashMap<Uuid, AppRuntime>) -> Vec<Event> {
        let mut events = Vec::new();
        let mut seen = HashSet::with_capacity(apps.len());
        for app in apps {
            seen.insert(app.id);
            let rt = runtimes.get(&app.id);
            let status = rt.map_or(AppStatus::Stopped, |r| r.status);
            let healthy = rt.map_or(0, |r| {
                r.containers.iter().filter(|c| c.is_healthy()).count()
            });
            let total = rt.map_or(0, |r| r.containers.len());
            let error = rt.and_then(|r| r.error.clone());
            let Some(prev) = self.prev.insert(app.id, status) else {
                continue;
            };
            if prev == status {
                continue;
            }
            let was_serving = matches!(prev, AppStatus::Running | AppStatus::Degraded);
            match status {
                AppStatus::Starting | AppStatus::Error
                    if was_serving && healthy == 0 && error.is_some() =>
                {
                    self.alerted.insert(app.id);
                    events.push(Event::new(
                        EventKind::AppCrashed,
                        Some(app_ref(app)),
                        format!(
                            "no replica is healthy: {}",
                            error.as_deref().unwrap_or("unknown reason")
                        ),
                    ));
                }
                AppStatus::Degraded if prev == AppStatus::Running => {
                    self.alerted.insert(app.id);
                    let why = error.map(|e| format!(": {e}")).unwrap_or_default();
                    events.push(Event::new(
                        EventKind::AppUnhealthy,
                        Some(app_ref(app)),
                        format!("{healthy} of {total} replicas healthy{why}"),
                    ));
                }
                AppStatus::Running if self.alerted.remove(&app.id) => {
                    events.push(Event::new(
                        EventKind::AppRecovered,
                        Some(app_ref(app)),
                        format!("all {total} replica(s) healthy again"),
                    ));
                }
                // Stopped on purpose: a later start is not a recovery.
                AppStatus::Stopping | AppStatus::Stopped => {
                    self.alerted.remove(&app.id);
                }
                _ => {}
            }
        }
        self.prev.retain(|id, _| seen.contains(id));
        self.alerted.retain(|id| seen.contains(id));
        events
    }
}

/// The event for a build failure (`app` from the store; `None` if it is gone).
pub fn build_failed(app: Option<&App>, failure: &BuildFailure) -> Event {
    let app = app.map(app_ref).unwrap_or_else(|| AppRef {
        id: failure.app_id,
        slug: String::new(),
        name: String::new(),
    });
    Event::new(
        EventKind::BuildFailed,
        Some(app),
        format!("Build failed: {}", failure.reason),
    )
}

/// The next build failure; waits for ever without a receiver (the select! in the
/// runtime loop then simply never takes this branch).
pub async fn next_build_failure(
    rx: &mut Option<broadcast::Receiver<BuildFailure>>,
) -> Option<BuildFailure> {
    loop {
        let Some(r) = rx.as_mut() else {
            return std::future::pending().await;
        };
        match r.recv().await {
            Ok(f) => return Some(f),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "build failures came faster than alerts could take them"
                );
            }
            Err(broadcast::error::RecvError::Closed) => *rx = None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::app;
    use super::*;
    use crate::spawner::ContainerInfo;

    fn rt(status: AppStatus, health: &[&str], error: Option<&str>) -> AppRuntime {
        AppRuntime {
            status,
            containers: health
                .iter()
                .map(|h| ContainerInfo {
                    status: "running".into(),
                    health_status: Some((*h).into()),
                    ..Default::default()
                })
                .collect(),
            error: error.map(str::to_string),
        }
    }

    fn kinds(w: &mut StatusWatch, a: &App, r: AppRuntime) -> Vec<EventKind> {
        let map = HashMap::from([(a.id, r)]);
        w.observe(std::slice::from_ref(a), &map)
            .into_iter()
            .map(|e| e.event)
            .collect()
    }

    #[test]
    fn crash_unhealthy_and_recovery() {
        let a = app();
        let mut w = StatusWatch::default();
        let running = || rt(AppStatus::Running, &["healthy", "healthy"], None);
        assert!(
            kinds(&mut w, &a, running()).is_empty(),
            "first sight: nothing"
        );
        let degraded = rt(
            AppStatus::Degraded,
            &["healthy", "unhealthy"],
            Some("r2 is unhealthy"),
        );
        assert_eq!(kinds(&mut w, &a, degraded), vec![EventKind::AppUnhealthy]);
        assert_eq!(kinds(&mut w, &a, running()), vec![EventKind::AppRecovered]);
        let crashed = rt(
            AppStatus::Starting,
            &["starting", "starting"],
            Some("exited 1"),
        );
        assert_eq!(kinds(&mut w, &a, crashed), vec![EventKind::AppCrashed]);
        assert_eq!(kinds(&mut w, &a, running()), vec![EventKind::AppRecovered]);
    }

    #[test]
    fn operations_raise_nothing() {
        let a = app();
        let mut w = StatusWatch::default();
        let running = || rt(AppStatus::Running, &["healthy"], None);
        kinds(&mut w, &a, running());
        // Restart: replicas replaced, no error.
        assert!(kinds(&mut w, &a, rt(AppStatus::Starting, &["starting"], None)).is_empty());
        assert!(kinds(&mut w, &a, running()).is_empty(), "not a recovery");
        // A failed rebuild: Error, but the old replica still serves.
        assert!(kinds(
            &mut w,
            &a,
            rt(AppStatus::Error, &["healthy"], Some("Build failed"))
        )
        .is_empty());
        assert!(kinds(&mut w, &a, rt(AppStatus::Stopping, &[], None)).is_empty());
        assert!(kinds(&mut w, &a, rt(AppStatus::Stopped, &[], None)).is_empty());
    }
}
