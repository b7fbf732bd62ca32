//! Reconciles what should run (the store) with what runs (the spawner), and keeps
//! doing so across restarts of rserve-proxy and of Docker.
//!
//! The spawner tracks containers and their health itself (Docker events plus a poll);
//! this loop adds what only the store knows: which apps exist. Containers of apps the
//! store no longer has are removed; apps whose containers vanished are marked.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use uuid::Uuid;

use crate::spawner::Spawner;
use crate::store::Store;

/// How often the loop checks even without a change notice from the spawner.
const RECHECK: Duration = Duration::from_secs(30);

/// Run until `shutdown` turns true. Reconciles once Docker answers, and again after
/// every Docker outage (containers may have changed while we could not see them).
pub async fn run(store: Store, spawner: Arc<dyn Spawner>, mut shutdown: watch::Receiver<bool>) {
    let mut changes = spawner.subscribe();
    let mut reconciled = false;
    loop {
        if spawner.ping().await.is_err() {
            reconciled = false;
        } else if !reconciled {
            reconciled = reconcile_once(&store, spawner.as_ref()).await;
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            r = changes.changed() => {
                if r.is_err() {
                    // The spawner went away; nothing left to watch but the clock.
                    changes = spawner.subscribe();
                    tokio::time::sleep(RECHECK).await;
                }
            }
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// One pass: every app id in the store is "known". Returns whether it succeeded.
pub async fn reconcile_once(store: &Store, spawner: &dyn Spawner) -> bool {
    let store = store.clone();
    let known = match tokio::task::spawn_blocking(move || store.list_apps(None)).await {
        Ok(Ok(apps)) => apps.into_iter().map(|a| a.id).collect::<HashSet<Uuid>>(),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "reconcile: cannot read apps from the store");
            return false;
        }
        Err(e) => {
            tracing::error!(error = %e, "reconcile: store task failed");
            return false;
        }
    };
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
