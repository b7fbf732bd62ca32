//! The route snapshot the proxy reads: slug → the app's replicas, state and counters.
//!
//! The table is immutable. Whoever knows what runs (the runtime, fed by the spawner)
//! describes apps as plain [`AppEntry`] values and publishes them through [`Routes`];
//! `Routes` builds a new table and swaps it in with one atomic store. The request path
//! only ever calls [`Routes::load`] (a lock-free read) and never waits for a publisher.
//!
//! What survives a swap: each app's [`AppCounters`] (matched by app id) and each
//! replica's [`ReplicaLoad`] (matched by app id + address), so counters never reset and
//! least-connection balancing keeps counting the connections that are already open.
//! Connections already established are never touched by a swap: a replica that turns
//! unhealthy just stops being picked for new ones.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};
use uuid::Uuid;

use super::counters::{AppCounters, CountersSnapshot};

/// What the runtime says about an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppPhase {
    /// Being built or started; clients are told to retry shortly.
    Starting,
    /// Meant to serve: requests go to its healthy replicas (503 while it has none).
    Running,
    /// Stopped, stopping or failed; 503 until someone starts it.
    Stopped,
}

/// One replica as the runtime publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaEntry {
    /// Where the proxy connects (the container's Rserve WebSocket port, 8081, on the
    /// managed network) — not what the container binds.
    pub addr: SocketAddr,
    /// Passing its health check. Unhealthy replicas get no new connections.
    pub healthy: bool,
}

/// One app as the runtime publishes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppEntry {
    pub app_id: Uuid,
    /// The first path segment the app is served at.
    pub slug: String,
    pub phase: AppPhase,
    pub replicas: Vec<ReplicaEntry>,
}

/// Live load of one replica, shared by every snapshot that lists it.
#[derive(Debug, Default)]
pub struct ReplicaLoad {
    /// HTTP requests in flight plus WebSockets open through this proxy.
    active: AtomicUsize,
    /// After a failed connect the replica is tried last until this time
    /// (milliseconds on [`super::balance::now_ms`]'s clock).
    cooldown_until_ms: AtomicU64,
}

impl ReplicaLoad {
    pub fn active(&self) -> usize {
        self.active.load(Relaxed)
    }

    pub(crate) fn add(&self) {
        self.active.fetch_add(1, Relaxed);
    }

    pub(crate) fn remove(&self) {
        self.active.fetch_sub(1, Relaxed);
    }

    pub(crate) fn cooling(&self, now_ms: u64) -> bool {
        self.cooldown_until_ms.load(Relaxed) > now_ms
    }

    pub(crate) fn cool_until(&self, until_ms: u64) {
        self.cooldown_until_ms.store(until_ms, Relaxed);
    }
}

#[derive(Debug, Clone)]
pub struct Replica {
    pub addr: SocketAddr,
    pub healthy: bool,
    pub load: Arc<ReplicaLoad>,
}

/// One app's routing entry in a snapshot.
#[derive(Debug)]
pub struct AppRoute {
    pub app_id: Uuid,
    pub slug: String,
    pub phase: AppPhase,
    pub replicas: Vec<Replica>,
    pub counters: Arc<AppCounters>,
}

impl AppRoute {
    pub fn has_healthy_replica(&self) -> bool {
        self.replicas.iter().any(|r| r.healthy)
    }
}

/// What the proxy does with a first path segment.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// No app has this slug: 404.
    Unknown,
    /// Known but cannot serve now: 503 with `Retry-After: retry_after_secs`.
    Unavailable {
        app: &'a Arc<AppRoute>,
        retry_after_secs: u32,
        message: String,
    },
    /// Serve from the app's healthy replicas.
    Serve(&'a Arc<AppRoute>),
}

#[derive(Debug, Default)]
pub struct RouteTable {
    apps: HashMap<String, Arc<AppRoute>>,
}

impl RouteTable {
    pub fn get(&self, slug: &str) -> Option<&Arc<AppRoute>> {
        self.apps.get(slug)
    }

    pub fn lookup(&self, slug: &str) -> Lookup<'_> {
        let Some(app) = self.apps.get(slug) else {
            return Lookup::Unknown;
        };
        let (retry_after_secs, message) = match app.phase {
            AppPhase::Running if app.has_healthy_replica() => return Lookup::Serve(app),
            AppPhase::Running => (
                5,
                format!("App \"{slug}\" has no healthy replica right now"),
            ),
            AppPhase::Starting => (5, format!("App \"{slug}\" is starting")),
            AppPhase::Stopped => (30, format!("App \"{slug}\" is not running")),
        };
        Lookup::Unavailable {
            app,
            retry_after_secs,
            message,
        }
    }

    pub fn apps(&self) -> impl Iterator<Item = &Arc<AppRoute>> {
        self.apps.values()
    }

    /// A new table holding exactly `entries`, reusing `self`'s counters and replica
    /// loads where the app (by id) and replica (by address) are the same. On duplicate
    /// slugs the last entry wins.
    pub fn rebuild(&self, entries: impl IntoIterator<Item = AppEntry>) -> RouteTable {
        let by_id: HashMap<Uuid, &Arc<AppRoute>> =
            self.apps.values().map(|a| (a.app_id, a)).collect();
        let mut apps = HashMap::new();
        for entry in entries {
            let prev = by_id.get(&entry.app_id).copied();
            let route = build_route(entry, prev);
            apps.insert(route.slug.clone(), Arc::new(route));
        }
        RouteTable { apps }
    }

    /// A new table with one app added or replaced (matched by id; its slug may differ).
    pub fn with_app(&self, entry: AppEntry) -> RouteTable {
        let prev = self.apps.values().find(|a| a.app_id == entry.app_id);
        let route = build_route(entry, prev);
        let mut apps: HashMap<String, Arc<AppRoute>> = self
            .apps
            .iter()
            .filter(|(_, a)| a.app_id != route.app_id)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        apps.insert(route.slug.clone(), Arc::new(route));
        RouteTable { apps }
    }

    /// A new table without the app `app_id`.
    pub fn without_app(&self, app_id: Uuid) -> RouteTable {
        RouteTable {
            apps: self
                .apps
                .iter()
                .filter(|(_, a)| a.app_id != app_id)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

fn build_route(entry: AppEntry, prev: Option<&Arc<AppRoute>>) -> AppRoute {
    let counters = prev.map_or_else(Default::default, |p| p.counters.clone());
    let replicas = entry
        .replicas
        .iter()
        .map(|r| Replica {
            addr: r.addr,
            healthy: r.healthy,
            load: prev
                .and_then(|p| p.replicas.iter().find(|old| old.addr == r.addr))
                .map_or_else(Default::default, |old| old.load.clone()),
        })
        .collect();
    AppRoute {
        app_id: entry.app_id,
        slug: entry.slug,
        phase: entry.phase,
        replicas,
        counters,
    }
}

/// One app's counters with its identity, for readers.
#[derive(Debug, Clone)]
pub struct AppCountersEntry {
    pub app_id: Uuid,
    pub slug: String,
    pub phase: AppPhase,
    pub counters: CountersSnapshot,
}

/// The handle to the live route table: cheap to clone, shared by the proxy (reads) and
/// the runtime (publishes).
///
/// Publishing is the runtime's job: on every status change (replica healthy or not,
/// app started, stopped, removed) call [`Routes::upsert`] / [`Routes::remove`], or
/// [`Routes::publish`] with the full list after a reconcile pass. Each call swaps in a
/// new snapshot at once; the next connection sees it.
#[derive(Clone, Default)]
pub struct Routes {
    table: Arc<ArcSwap<RouteTable>>,
}

impl Routes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Wrap an existing shared table (tests and embedders that hold the `ArcSwap`).
    pub fn from_shared(table: Arc<ArcSwap<RouteTable>>) -> Self {
        Routes { table }
    }

    pub fn shared(&self) -> Arc<ArcSwap<RouteTable>> {
        self.table.clone()
    }

    /// The current snapshot (lock-free; hold it only for the current request).
    pub fn load(&self) -> Guard<Arc<RouteTable>> {
        self.table.load()
    }

    /// Replace the whole table with `entries` (e.g. after a reconcile pass).
    pub fn publish(&self, entries: Vec<AppEntry>) {
        self.table
            .rcu(|current| current.rebuild(entries.iter().cloned()));
    }

    /// Add or update one app.
    pub fn upsert(&self, entry: AppEntry) {
        self.table.rcu(|current| current.with_app(entry.clone()));
    }

    /// Remove one app (its slug then answers 404 and its counters are dropped).
    pub fn remove(&self, app_id: Uuid) {
        self.table.rcu(|current| current.without_app(app_id));
    }

    /// Every app's counters, read now.
    pub fn counters(&self) -> Vec<AppCountersEntry> {
        let table = self.table.load();
        let mut out: Vec<AppCountersEntry> = table
            .apps()
            .map(|a| AppCountersEntry {
                app_id: a.app_id,
                slug: a.slug.clone(),
                phase: a.phase,
                counters: a.counters.snapshot(),
            })
            .collect();
        out.sort_by(|a, b| a.slug.cmp(&b.slug));
        out
    }

    /// One app's counters by slug.
    pub fn app_counters(&self, slug: &str) -> Option<CountersSnapshot> {
        self.table.load().get(slug).map(|a| a.counters.snapshot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: Uuid, slug: &str, phase: AppPhase, replicas: &[(u16, bool)]) -> AppEntry {
        AppEntry {
            app_id: id,
            slug: slug.into(),
            phase,
            replicas: replicas
                .iter()
                .map(|(port, healthy)| ReplicaEntry {
                    addr: SocketAddr::from(([10, 0, 0, 1], *port)),
                    healthy: *healthy,
                })
                .collect(),
        }
    }

    #[test]
    fn counters_and_loads_survive_swaps() {
        let routes = Routes::new();
        let id = Uuid::new_v4();
        routes.upsert(entry(id, "a", AppPhase::Running, &[(1, true), (2, true)]));
        let before = routes.load().get("a").unwrap().clone();
        before.counters.response(200);
        before.replicas[1].load.add();

        routes.upsert(entry(id, "a", AppPhase::Running, &[(2, false), (3, true)]));
        let after = routes.load().get("a").unwrap().clone();
        assert!(Arc::ptr_eq(&before.counters, &after.counters));
        assert_eq!(
            after.replicas[0].load.active(),
            1,
            "replica 2 keeps its load"
        );
        assert_eq!(after.replicas[1].load.active(), 0);
        assert_eq!(routes.app_counters("a").unwrap().responses_2xx, 1);

        routes.publish(vec![entry(id, "a", AppPhase::Stopped, &[])]);
        assert!(Arc::ptr_eq(
            &before.counters,
            &routes.load().get("a").unwrap().counters
        ));
        routes.remove(id);
        assert!(routes.load().get("a").is_none());
        routes.upsert(entry(id, "a", AppPhase::Running, &[]));
        assert_eq!(routes.app_counters("a").unwrap().responses_2xx, 0);
    }

    #[test]
    fn lookup_states() {
        let routes = Routes::new();
        let (a, b, c, d) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        routes.publish(vec![
            entry(a, "up", AppPhase::Running, &[(1, false), (2, true)]),
            entry(b, "sick", AppPhase::Running, &[(1, false)]),
            entry(c, "boot", AppPhase::Starting, &[]),
            entry(d, "off", AppPhase::Stopped, &[]),
        ]);
        let t = routes.load();
        assert!(matches!(t.lookup("up"), Lookup::Serve(_)));
        assert!(matches!(t.lookup("nope"), Lookup::Unknown));
        for (slug, secs) in [("sick", 5), ("boot", 5), ("off", 30)] {
            match t.lookup(slug) {
                Lookup::Unavailable {
                    retry_after_secs, ..
                } => assert_eq!(retry_after_secs, secs, "{slug}"),
                other => panic!("{slug}: {other:?}"),
            }
        }
    }

    #[test]
    fn renamed_app_keeps_counters_and_frees_old_slug() {
        let routes = Routes::new();
        let id = Uuid::new_v4();
        routes.upsert(entry(id, "old", AppPhase::Running, &[]));
        routes.load().get("old").unwrap().counters.response(500);
        routes.upsert(entry(id, "new", AppPhase::Running, &[]));
        assert!(routes.load().get("old").is_none());
        assert_eq!(routes.app_counters("new").unwrap().responses_5xx, 1);
    }
}
