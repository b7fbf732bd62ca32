//! Metrics history, status history and audit queries against real redb files, with a
//! fixed clock.

use tempfile::TempDir;
use time::macros::datetime;
use time::Duration;
use uuid::Uuid;

use super::{AuditFilter, Retention, Store, SYSTEM_SERIES};
use crate::metrics::maths::{minutes, runs, Point, Resolution};
use crate::metrics::HistoryStatus;
use crate::model::AuditEntry;

/// 2024-01-01 00:00 UTC: on every bucket edge.
const T0: i64 = 1_704_067_200;

fn open() -> (TempDir, std::path::PathBuf, Store) {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("state.redb");
    let store = Store::open(&path).unwrap();
    (dir, path, store)
}

fn point(cpu: f32) -> Point {
    Point {
        cpu_percent: cpu,
        memory_mb: 50.0,
        memory_limit_mb: 512.0,
        network_rx_bytes: 100,
        network_tx_bytes: 200,
        requests_per_min: Some(cpu * 2.0),
        containers: 1,
        apps: 1,
    }
}

const KEEP: Retention = Retention {
    raw_secs: 3600,
    min5_secs: 6 * 3600,
    min15_secs: 24 * 3600,
    min60_secs: 7 * 24 * 3600,
    status_secs: 7 * 24 * 3600,
};

#[test]
fn points_and_buckets_by_time_range() {
    let (_d, _p, store) = open();
    let app = Uuid::new_v4();
    // Every 15 s for 10 minutes: cpu = minute number.
    for i in 0..40i64 {
        let ts = T0 + i * 15;
        store
            .write_metrics(
                ts,
                &[(app, point((i / 4) as f32)), (SYSTEM_SERIES, point(1.0))],
            )
            .unwrap();
    }
    let raw = store.metric_points(app, T0, T0 + 600).unwrap();
    assert_eq!(raw.len(), 40);
    assert_eq!(raw[0].0, T0);
    assert_eq!(raw[39], (T0 + 585, point(9.0)));
    // Half-open range.
    assert_eq!(store.metric_points(app, T0 + 15, T0 + 45).unwrap().len(), 2);
    // Two 5-minute buckets: minutes 0..5 then 5..10 (20 points each).
    let b5 = store
        .metric_buckets(app, Resolution::Min5, T0, T0 + 600)
        .unwrap();
    assert_eq!(b5.len(), 2);
    assert_eq!(b5[0].0, T0);
    assert_eq!(b5[1].0, T0 + 300);
    assert_eq!(b5[0].1.cpu_percent.count, 20);
    assert_eq!(b5[0].1.cpu_percent.avg(), Some(2.0));
    assert_eq!(
        (b5[0].1.cpu_percent.min, b5[0].1.cpu_percent.max),
        (0.0, 4.0)
    );
    assert_eq!(
        (b5[1].1.cpu_percent.min, b5[1].1.cpu_percent.max),
        (5.0, 9.0)
    );
    assert_eq!(b5[1].1.requests_per_min.avg(), Some(14.0));
    let b60 = store
        .metric_buckets(app, Resolution::Min60, T0, T0 + 3600)
        .unwrap();
    assert_eq!(b60.len(), 1);
    assert_eq!(b60[0].1.cpu_percent.count, 40);
    // Series do not mix.
    let sys = store.metric_points(SYSTEM_SERIES, T0, T0 + 600).unwrap();
    assert!(sys.iter().all(|(_, p)| p.cpu_percent == 1.0));
    assert!(store
        .metric_points(Uuid::new_v4(), T0, T0 + 600)
        .unwrap()
        .is_empty());
}

#[test]
fn status_history_survives_reopen_and_the_gap_is_unknown() {
    let (_d, path, store) = open();
    let app = Uuid::new_v4();
    for m in 0..5 {
        store
            .write_statuses(T0 + m * 60 + 7, &[(app, HistoryStatus::Running)])
            .unwrap();
    }
    drop(store);
    // "Restart" ten minutes later.
    let store = Store::open(&path).unwrap();
    for m in 15..20 {
        store
            .write_statuses(T0 + m * 60, &[(app, HistoryStatus::Degraded)])
            .unwrap();
    }
    let rows = store.status_rows(&[app], T0, T0 + 20 * 60).unwrap();
    let ms = minutes(&rows[&app], T0, T0 + 20 * 60);
    assert_eq!(
        runs(&ms),
        vec![
            (T0, HistoryStatus::Running),
            (T0 + 300, HistoryStatus::Unknown),
            (T0 + 900, HistoryStatus::Degraded),
        ]
    );
}

#[test]
fn a_minute_keeps_its_most_telling_status() {
    let (_d, _p, store) = open();
    let app = Uuid::new_v4();
    // Started, ran and stopped within one minute: not shown as just "stopped".
    for (s, st) in [
        (1, HistoryStatus::Starting),
        (20, HistoryStatus::Running),
        (40, HistoryStatus::Stopping),
        (50, HistoryStatus::Stopped),
    ] {
        store.write_statuses(T0 + s, &[(app, st)]).unwrap();
    }
    // A short error in the next minute stays visible after recovery.
    for (s, st) in [(61, HistoryStatus::Error), (75, HistoryStatus::Running)] {
        store.write_statuses(T0 + s, &[(app, st)]).unwrap();
    }
    let rows = store.status_rows(&[app], T0, T0 + 120).unwrap();
    let ms = minutes(&rows[&app], T0, T0 + 120);
    assert_eq!(
        runs(&ms),
        vec![
            (T0, HistoryStatus::Starting),
            (T0 + 60, HistoryStatus::Error)
        ]
    );
}

#[test]
fn retention_prunes_in_bounded_transactions() {
    let (_d, _p, store) = open();
    let apps: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    // Two hours of points every minute for three apps and the system.
    for i in 0..120i64 {
        let ts = T0 + i * 60;
        let mut pts: Vec<(Uuid, Point)> = apps.iter().map(|a| (*a, point(1.0))).collect();
        pts.push((SYSTEM_SERIES, point(2.0)));
        store.write_metrics(ts, &pts).unwrap();
        let st: Vec<_> = apps.iter().map(|a| (*a, HistoryStatus::Running)).collect();
        store.write_statuses(ts, &st).unwrap();
    }
    let now = T0 + 120 * 60;
    // Raw: only the last hour stays; buckets are younger than their retention.
    let mut rounds = 0;
    let mut total = 0;
    loop {
        let n = store.prune_history(now, &KEEP, 25).unwrap();
        assert!(n <= 25);
        total += n;
        rounds += 1;
        if n < 25 {
            break;
        }
    }
    assert_eq!(total, 4 * 60, "one hour of raw points for four series");
    assert!(rounds >= 10, "{rounds} transactions");
    for s in apps.iter().chain([&SYSTEM_SERIES]) {
        let left = store.metric_points(*s, T0, now).unwrap();
        assert_eq!(left.len(), 60);
        assert_eq!(left[0].0, now - 3600);
        assert_eq!(
            store
                .metric_buckets(*s, Resolution::Min5, T0, now)
                .unwrap()
                .len(),
            24
        );
    }
    // Eight days later everything has aged out.
    let later = now + 8 * 24 * 3600;
    while store.prune_history(later, &KEEP, 100).unwrap() == 100 {}
    assert!(store
        .metric_buckets(apps[0], Resolution::Min60, T0, later)
        .unwrap()
        .is_empty());
    let rows = store.status_rows(&apps, T0, later).unwrap();
    assert!(rows.values().all(Vec::is_empty));
}

#[test]
fn deleting_an_app_deletes_its_history() {
    let (_d, _p, store) = open();
    let owner = crate::model::User {
        id: Uuid::new_v4(),
        username: "o".into(),
        email: None,
        role: crate::model::Role::User,
        password_hash: "x".into(),
        created_at: datetime!(2024-01-01 00:00 UTC),
        updated_at: datetime!(2024-01-01 00:00 UTC),
    };
    store
        .create_user(&owner, &AuditEntry::new(None, "user.create", None))
        .unwrap();
    let now = datetime!(2024-01-01 00:00 UTC);
    let app = crate::model::App {
        id: Uuid::new_v4(),
        name: "A".into(),
        slug: "a-app".into(),
        r_version: "latest".into(),
        packages: vec![],
        code_source: crate::model::CodeSource::Upload,
        entry_script: "run_rserve.R".into(),
        replicas: 1,
        settings: Default::default(),
        owner_id: owner.id,
        created_at: now,
        updated_at: now,
    };
    store
        .create_app(&app, &AuditEntry::new(None, "app.create", None))
        .unwrap();
    let other = Uuid::new_v4();
    store
        .write_metrics(T0, &[(app.id, point(1.0)), (other, point(1.0))])
        .unwrap();
    store
        .write_statuses(T0, &[(app.id, HistoryStatus::Running)])
        .unwrap();
    store
        .delete_app(app.id, &AuditEntry::new(None, "app.delete", None))
        .unwrap();
    assert!(store.metric_points(app.id, T0, T0 + 1).unwrap().is_empty());
    assert!(store
        .metric_buckets(app.id, Resolution::Min5, T0, T0 + 300)
        .unwrap()
        .is_empty());
    assert!(store.status_rows(&[app.id], T0, T0 + 60).unwrap()[&app.id].is_empty());
    assert_eq!(store.metric_points(other, T0, T0 + 1).unwrap().len(), 1);
}

#[test]
fn audit_query_filters_pages_and_prunes() {
    let (_d, _p, store) = open();
    let t0 = datetime!(2024-01-01 00:00 UTC);
    let app = Uuid::new_v4();
    for i in 0..30i64 {
        let mut e = AuditEntry::new(
            None,
            if i % 3 == 0 {
                "app.start"
            } else {
                "auth.login"
            },
            (i % 3 == 0).then(|| format!("demo ({app})")),
        );
        e.actor_name = if i % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        };
        e.at = t0 + Duration::minutes(i);
        store.record(&e).unwrap();
    }
    let all = AuditFilter::default();
    let p1 = store.query_audit(&all, None, 12).unwrap();
    assert_eq!(p1.entries.len(), 12);
    assert_eq!(p1.entries[0].0, 30, "newest first");
    let p2 = store.query_audit(&all, p1.next, 12).unwrap();
    assert_eq!(p2.entries[0].0, 18);
    let p3 = store.query_audit(&all, p2.next, 12).unwrap();
    assert_eq!(p3.entries.len(), 6);
    assert_eq!(p3.next, None);
    // Filters combine.
    let f = AuditFilter {
        user: Some("alice".into()),
        app: Some(app),
        ..Default::default()
    };
    let hits = store.query_audit(&f, None, 100).unwrap().entries;
    assert_eq!(hits.len(), 5, "i in 0,6,12,18,24");
    let f = AuditFilter {
        action: Some("auth.".into()),
        from: Some(t0 + Duration::minutes(10)),
        to: Some(t0 + Duration::minutes(20)),
        ..Default::default()
    };
    let hits = store.query_audit(&f, None, 100).unwrap().entries;
    assert!(hits.iter().all(|(_, e)| e.action == "auth.login"));
    assert_eq!(hits.len(), 7, "minutes 10..=19 minus 12, 15, 18");
    let f = AuditFilter {
        action: Some("app".into()),
        ..Default::default()
    };
    assert!(
        store.query_audit(&f, None, 100).unwrap().entries.is_empty(),
        "exact unless it ends with a dot"
    );
    // Prune what is older than minute 25, four rows per transaction.
    let cutoff = t0 + Duration::minutes(25);
    let mut total = 0;
    loop {
        let n = store.prune_audit(cutoff, 4).unwrap();
        total += n;
        if n < 4 {
            break;
        }
    }
    assert_eq!(total, 25);
    let left = store.query_audit(&all, None, 100).unwrap().entries;
    assert_eq!(left.len(), 5);
    assert!(left.iter().all(|(_, e)| e.at >= cutoff));
    // New entries keep counting up.
    store.record(&AuditEntry::new(None, "x", None)).unwrap();
    assert_eq!(store.query_audit(&all, None, 1).unwrap().entries[0].0, 31);
}

#[test]
fn v2_file_migrates_to_v3_with_history_tables() {
    let (_d, path, store) = open();
    store.record(&AuditEntry::new(None, "kept", None)).unwrap();
    drop(store);
    // Exactly what a v2 binary wrote: no history tables, stamped 2.
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        assert!(txn.delete_table(super::tables::METRIC_POINTS).unwrap());
        assert!(txn.delete_table(super::tables::STATUS_HISTORY).unwrap());
        txn.open_table(super::tables::META)
            .unwrap()
            .insert(super::migrate::VERSION_KEY, 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(&path).unwrap();
    assert_eq!(store.schema_version().unwrap(), 3);
    assert_eq!(store.list_audit(10).unwrap()[0].action, "kept");
    let app = Uuid::new_v4();
    store.write_metrics(T0, &[(app, point(1.0))]).unwrap();
    store
        .write_statuses(T0, &[(app, HistoryStatus::Running)])
        .unwrap();
    assert_eq!(store.metric_points(app, T0, T0 + 1).unwrap().len(), 1);
}
