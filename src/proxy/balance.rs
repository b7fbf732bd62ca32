//! Replica selection: least active connections among healthy replicas, skipping the
//! ones already tried for this request and preferring ones that did not just refuse a
//! connection. Lock-free: it reads the snapshot and a few atomics.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::routes::{AppRoute, Replica, ReplicaLoad};

/// How long a replica that refused a connection is tried last.
pub const COOLDOWN: Duration = Duration::from_secs(1);

/// Milliseconds on a process-wide monotonic clock.
pub fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The replica to use next, or `None` when every healthy replica has been tried.
pub fn pick<'a>(app: &'a AppRoute, tried: &[SocketAddr]) -> Option<&'a Replica> {
    let n = app.replicas.len();
    if n == 0 {
        return None;
    }
    let now = now_ms();
    let start = app.counters.next_cursor() % n;
    let mut best: Option<(&Replica, (bool, usize))> = None;
    for i in 0..n {
        let r = &app.replicas[(start + i) % n];
        if !r.healthy || tried.contains(&r.addr) {
            continue;
        }
        let key = (r.load.cooling(now), r.load.active());
        if best.as_ref().is_none_or(|(_, k)| key < *k) {
            best = Some((r, key));
        }
    }
    best.map(|(r, _)| r)
}

/// Remember that `replica` refused a connection: others go first for a while.
pub fn connect_failed(replica: &ReplicaLoad) {
    replica.cool_until(now_ms() + COOLDOWN.as_millis() as u64);
}

/// One active connection or request on a replica; the count drops when this drops.
#[derive(Debug)]
pub struct ActiveGuard(Arc<ReplicaLoad>);

impl ActiveGuard {
    pub fn new(load: &Arc<ReplicaLoad>) -> Self {
        load.add();
        ActiveGuard(load.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.remove();
    }
}

/// Log a replica refusing a connection (or not answering a connect in time), from
/// either path. Rate-limited: every client request to a dead replica would log one.
pub fn log_refused(app: &str, replica: SocketAddr, error: &dyn std::fmt::Display) {
    static REFUSED: crate::logging::Throttle =
        crate::logging::Throttle::new(std::time::Duration::from_secs(10));
    if let Some(repeated) = REFUSED.check() {
        tracing::warn!(app, replica = %replica, error = %error, "replica refused a connection{repeated}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::routes::{AppEntry, AppPhase, ReplicaEntry, Routes};

    fn app(replicas: &[(u16, bool)]) -> Routes {
        let routes = Routes::new();
        routes.upsert(AppEntry {
            app_id: uuid::Uuid::new_v4(),
            slug: "a".into(),
            phase: AppPhase::Running,
            replicas: replicas
                .iter()
                .map(|(p, h)| ReplicaEntry {
                    addr: SocketAddr::from(([127, 0, 0, 1], *p)),
                    healthy: *h,
                })
                .collect(),
        });
        routes
    }

    #[test]
    fn least_active_healthy_untried() {
        let routes = app(&[(1, true), (2, true), (3, false)]);
        let t = routes.load();
        let a = t.get("a").unwrap();
        let _g1 = ActiveGuard::new(&a.replicas[0].load);
        for _ in 0..4 {
            assert_eq!(pick(a, &[]).unwrap().addr.port(), 2);
        }
        let _g2 = ActiveGuard::new(&a.replicas[1].load);
        let _g3 = ActiveGuard::new(&a.replicas[1].load);
        assert_eq!(pick(a, &[]).unwrap().addr.port(), 1);
        let tried = [a.replicas[0].addr];
        assert_eq!(pick(a, &tried).unwrap().addr.port(), 2);
        let tried = [a.replicas[0].addr, a.replicas[1].addr];
        assert!(
            pick(a, &tried).is_none(),
            "unhealthy replica 3 is never picked"
        );
        drop((_g2, _g3));
        assert_eq!(a.replicas[1].load.active(), 0);
    }

    #[test]
    fn ties_rotate_and_refusals_cool_down() {
        let routes = app(&[(1, true), (2, true)]);
        let t = routes.load();
        let a = t.get("a").unwrap();
        let ports: std::collections::HashSet<u16> =
            (0..4).map(|_| pick(a, &[]).unwrap().addr.port()).collect();
        assert_eq!(ports.len(), 2);
        connect_failed(&a.replicas[0].load);
        for _ in 0..4 {
            assert_eq!(pick(a, &[]).unwrap().addr.port(), 2);
        }
        // Cooling replicas are still used when nothing else is left.
        assert_eq!(pick(a, &[a.replicas[1].addr]).unwrap().addr.port(), 1);
    }
}
