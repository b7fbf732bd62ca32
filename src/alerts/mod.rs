//! Alerts: events worth waking someone for, sent to the configured webhooks.
//!
//! Producers (the runtime: app crashed / unhealthy / recovered, Docker unreachable;
//! build failures the runtime forwards from the spawner; the ACME manager: renewal
//! failed) call [`Alerts::publish`]. It never waits: a repeat of the same event for the
//! same app within `webhook_dedup_secs` is dropped (a flapping app sends one alert per
//! window, not a storm), everything else goes into one bounded broadcast channel.
//! Each webhook has its own task reading that channel, so a slow or failing receiver
//! delays nobody — not the producers, not the other webhooks. A task that falls
//! behind loses the oldest events (counted in `rserve_proxy_alerts_dropped_total`).
//!
//! The HTTP side (POST, signature, retries) is in `webhook.rs`; this module holds no
//! HTTP types, so anything may publish.

pub mod webhook;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};
use uuid::Uuid;

use crate::config::WebhookConfig;

/// What happened. The wire names (`as_str`) are what webhooks list in `events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
pub enum EventKind {
    /// A serving app lost all its healthy replicas through a crash or failing health.
    #[serde(rename = "app.crashed")]
    AppCrashed,
    /// A serving app lost some of its healthy replicas (degraded).
    #[serde(rename = "app.unhealthy")]
    AppUnhealthy,
    /// An app that was alerted as crashed or unhealthy serves with all replicas again.
    #[serde(rename = "app.recovered")]
    AppRecovered,
    /// A start or rebuild could not make the app's image.
    #[serde(rename = "app.build_failed")]
    BuildFailed,
    /// An ACME order (first certificate or renewal) failed.
    #[serde(rename = "tls.renewal_failed")]
    CertRenewalFailed,
    /// The Docker Engine stopped answering.
    #[serde(rename = "docker.unreachable")]
    DockerUnreachable,
}

impl EventKind {
    pub const ALL: [EventKind; 6] = [
        EventKind::AppCrashed,
        EventKind::AppUnhealthy,
        EventKind::AppRecovered,
        EventKind::BuildFailed,
        EventKind::CertRenewalFailed,
        EventKind::DockerUnreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AppCrashed => "app.crashed",
            EventKind::AppUnhealthy => "app.unhealthy",
            EventKind::AppRecovered => "app.recovered",
            EventKind::BuildFailed => "app.build_failed",
            EventKind::CertRenewalFailed => "tls.renewal_failed",
            EventKind::DockerUnreachable => "docker.unreachable",
        }
    }

    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// The app an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AppRef {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
}

/// One event; serialised as the webhook's JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: EventKind,
    /// `null` for events about the server (TLS, Docker).
    pub app: Option<AppRef>,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// Human-readable: the error, the reason, what to check.
    pub detail: String,
}

impl Event {
    pub fn new(event: EventKind, app: Option<AppRef>, detail: impl Into<String>) -> Self {
        Event {
            event,
            app,
            time: OffsetDateTime::now_utc(),
            detail: detail.into(),
        }
    }
}

/// How a delivery is retried: `attempts` tries in all, waiting `first_delay`, then
/// twice as long each time.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    /// Per attempt (connect + answer).
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries: 2 + 4 + 8 + 16 s of waiting, about a minute with slow answers.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            first_delay: Duration::from_secs(2),
            timeout: Duration::from_secs(10),
        }
    }
}

/// One finished delivery (success or given up), for `GET /api/alerts/deliveries`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// Increasing per process; also sent as `X-Rserve-Proxy-Delivery`.
    pub id: u64,
    pub url: String,
    pub event: EventKind,
    pub app_id: Option<Uuid>,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub attempts: u32,
    /// The receiver answered 2xx.
    pub ok: bool,
    /// The last answer's status, if any came.
    pub status_code: Option<u16>,
    /// Why the last attempt failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub finished_at: OffsetDateTime,
}

/// Events a webhook task can fall behind by before it loses the oldest.
const QUEUE: usize = 256;

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AlertStats {
    pub published: u64,
    /// Repeats dropped by the de-duplication window.
    pub suppressed: u64,
    /// Events a webhook task lost because it fell `QUEUE` behind.
    pub dropped: u64,
    pub delivered: u64,
    /// Deliveries given up after every attempt.
    pub failed: u64,
}

/// The handle producers publish through. Cheap to clone; publishing never blocks on
/// delivery.
#[derive(Clone)]
pub struct Alerts {
    inner: Arc<Inner>,
}

struct Inner {
    tx: broadcast::Sender<Arc<Event>>,
    /// The webhooks in force (a config reload replaces them).
    hooks: Mutex<Vec<WebhookConfig>>,
    dedup: Duration,
    policy: RetryPolicy,
    /// Last time each (event, app) was let through.
    last: Mutex<HashMap<(EventKind, Option<Uuid>), Instant>>,
    /// Receivers made at construction (so nothing published before the tasks start
    /// is lost), taken by `start`.
    pending: Mutex<Vec<(WebhookConfig, broadcast::Receiver<Arc<Event>>)>>,
    /// Set by `start`: what a replacement of the webhooks needs to start new tasks.
    running: Mutex<Option<Running>>,
    history: Mutex<VecDeque<Delivery>>,
    history_max: usize,
    next_id: AtomicU64,
    published: AtomicU64,
    suppressed: AtomicU64,
    dropped: AtomicU64,
    delivered: AtomicU64,
    failed: AtomicU64,
}

/// The delivery tasks in force: they end when the process shuts down or when
/// `generation` turns true (their webhooks were replaced).
struct Running {
    shutdown: watch::Receiver<bool>,
    client: Option<webhook::Client>,
    generation: watch::Sender<bool>,
}

/// A stop signal for one generation of delivery tasks that also follows the process's
/// `shutdown`.
fn generation(shutdown: &watch::Receiver<bool>) -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(*shutdown.borrow());
    let mut global = shutdown.clone();
    let forward = tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                changed = global.changed() => {
                    if changed.is_err() || *global.borrow() {
                        let _ = forward.send(true);
                        return;
                    }
                }
                // Every task of this generation has ended.
                _ = forward.closed() => return,
            }
        }
    });
    (tx, rx)
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Alerts")
            .field("webhooks", &self.webhook_count())
            .finish()
    }
}

impl Default for Alerts {
    /// No webhooks: events are only logged.
    fn default() -> Self {
        Alerts::new(
            Vec::new(),
            Duration::from_secs(300),
            100,
            RetryPolicy::default(),
        )
    }
}

impl Alerts {
    /// Needs no runtime; call [`Alerts::start`] inside one to begin delivering.
    pub fn new(
        hooks: Vec<WebhookConfig>,
        dedup: Duration,
        history_max: usize,
        policy: RetryPolicy,
    ) -> Self {
        let (tx, _) = broadcast::channel(QUEUE);
        let pending = hooks.iter().map(|h| (h.clone(), tx.subscribe())).collect();
        Alerts {
            inner: Arc::new(Inner {
                tx,
                hooks: Mutex::new(hooks),
                dedup,
                policy,
                last: Mutex::new(HashMap::new()),
                pending: Mutex::new(pending),
                running: Mutex::new(None),
                history: Mutex::new(VecDeque::new()),
                history_max: history_max.max(1),
                next_id: AtomicU64::new(1),
                published: AtomicU64::new(0),
                suppressed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                delivered: AtomicU64::new(0),
                failed: AtomicU64::new(0),
            }),
        }
    }

    /// From the config's `webhooks`, `webhook_dedup_secs` and `webhook_history`.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Alerts::new(
            config.webhooks.clone(),
            config.webhook_dedup,
            config.webhook_history,
            RetryPolicy::default(),
        )
    }

    /// Start one delivery task per webhook (once; later calls do nothing). The tasks
    /// end when `shutdown` turns true.
    pub fn start(&self, shutdown: watch::Receiver<bool>) {
        let mut running = lock(&self.inner.running);
        if running.is_some() {
            return;
        }
        let pending = std::mem::take(&mut *lock(&self.inner.pending));
        let (stop, tasks_stop) = generation(&shutdown);
        let mut client = None;
        self.spawn_tasks(pending, &mut client, tasks_stop);
        *running = Some(Running {
            shutdown,
            client,
            generation: stop,
        });
    }

    /// Replace the webhooks (config reload): the tasks of the old ones stop (a delivery
    /// in the middle of its retries is given up), each new one gets a task that
    /// receives every event published from now on. History and counters stay.
    pub fn replace_webhooks(&self, hooks: Vec<WebhookConfig>) {
        let receivers: Vec<_> = hooks
            .iter()
            .map(|h| (h.clone(), self.inner.tx.subscribe()))
            .collect();
        *lock(&self.inner.hooks) = hooks;
        let mut running = lock(&self.inner.running);
        match running.as_mut() {
            // Not started yet: `start` will start these.
            None => *lock(&self.inner.pending) = receivers,
            Some(r) => {
                let _ = r.generation.send(true);
                let (stop, tasks_stop) = generation(&r.shutdown);
                r.generation = stop;
                self.spawn_tasks(receivers, &mut r.client, tasks_stop);
            }
        }
    }

    fn spawn_tasks(
        &self,
        hooks: Vec<(WebhookConfig, broadcast::Receiver<Arc<Event>>)>,
        client: &mut Option<webhook::Client>,
        stop: watch::Receiver<bool>,
    ) {
        if hooks.is_empty() {
            return;
        }
        if client.is_none() {
            match webhook::Client::new() {
                Ok(c) => *client = Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "alert webhooks disabled: cannot set up the HTTP client");
                    return;
                }
            }
        }
        let Some(client) = client.as_ref() else {
            return;
        };
        for (hook, rx) in hooks {
            tokio::spawn(webhook::run(
                self.clone(),
                client.clone(),
                hook,
                rx,
                stop.clone(),
            ));
        }
    }

    /// Report an event. Returns whether it was queued for delivery (`false`: a repeat
    /// within the de-duplication window, or no webhooks). Never waits.
    pub fn publish(&self, event: Event) -> bool {
        self.publish_at(event, Instant::now())
    }

    /// [`Alerts::publish`] with the clock passed in (tests).
    pub fn publish_at(&self, event: Event, now: Instant) -> bool {
        let key = (event.event, event.app.as_ref().map(|a| a.id));
        {
            let mut last = lock(&self.inner.last);
            if let Some(at) = last.get(&key) {
                if now.saturating_duration_since(*at) < self.inner.dedup {
                    self.inner.suppressed.fetch_add(1, Relaxed);
                    tracing::debug!(
                        event = event.event.as_str(),
                        "alert repeated within the de-duplication window; not sent again"
                    );
                    return false;
                }
            }
            last.insert(key, now);
            // Keep the map small: entries older than the window decide nothing.
            if last.len() > 10_000 {
                let window = self.inner.dedup;
                last.retain(|_, at| now.saturating_duration_since(*at) < window);
            }
        }
        self.inner.published.fetch_add(1, Relaxed);
        tracing::warn!(
            event = event.event.as_str(),
            app = event.app.as_ref().map_or("-", |a| a.slug.as_str()),
            "alert: {}",
            event.detail
        );
        // No webhook (no receiver): nothing to do.
        self.inner.tx.send(Arc::new(event)).is_ok()
    }

    /// The last deliveries, newest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        lock(&self.inner.history).iter().rev().cloned().collect()
    }

    pub fn stats(&self) -> AlertStats {
        let i = &self.inner;
        AlertStats {
            published: i.published.load(Relaxed),
            suppressed: i.suppressed.load(Relaxed),
            dropped: i.dropped.load(Relaxed),
            delivered: i.delivered.load(Relaxed),
            failed: i.failed.load(Relaxed),
        }
    }

    pub fn webhook_count(&self) -> usize {
        lock(&self.inner.hooks).len()
    }

    fn policy(&self) -> RetryPolicy {
        self.inner.policy
    }

    fn next_delivery_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Relaxed)
    }

    fn lost(&self, n: u64) {
        self.inner.dropped.fetch_add(n, Relaxed);
    }

    fn record(&self, d: Delivery) {
        if d.ok {
            self.inner.delivered.fetch_add(1, Relaxed);
        } else {
            self.inner.failed.fetch_add(1, Relaxed);
        }
        let mut h = lock(&self.inner.history);
        if h.len() >= self.inner.history_max {
            h.pop_front();
        }
        h.push_back(d);
    }
}

/// A poisoned lock only means a panic elsewhere; the data is still usable.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(n: u128) -> AppRef {
        AppRef {
            id: Uuid::from_u128(n),
            slug: format!("app-{n}"),
            name: "A".into(),
        }
    }

    fn hook() -> WebhookConfig {
        WebhookConfig {
            url: "http://127.0.0.1:9/".into(),
            events: vec![],
            secret: None,
        }
    }

    #[test]
    fn repeats_within_the_window_are_dropped_per_app_and_event() {
        let a = Alerts::new(
            vec![hook()],
            Duration::from_secs(300),
            10,
            RetryPolicy::default(),
        );
        let t0 = Instant::now();
        let ev = |k, n| Event::new(k, Some(app(n)), "x");
        assert!(a.publish_at(ev(EventKind::AppCrashed, 1), t0));
        assert!(!a.publish_at(ev(EventKind::AppCrashed, 1), t0 + Duration::from_secs(10)));
        // Another event, another app: their own windows.
        assert!(a.publish_at(ev(EventKind::AppRecovered, 1), t0 + Duration::from_secs(11)));
        assert!(a.publish_at(ev(EventKind::AppCrashed, 2), t0 + Duration::from_secs(12)));
        // After the window, again.
        assert!(a.publish_at(ev(EventKind::AppCrashed, 1), t0 + Duration::from_secs(301)));
        let s = a.stats();
        assert_eq!((s.published, s.suppressed), (4, 1));
    }

    #[test]
    fn event_names_round_trip_and_match_the_json() {
        for k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::Value::String(k.as_str().into())
            );
        }
        assert_eq!(EventKind::parse("app.exploded"), None);
    }

    #[test]
    fn history_keeps_the_last_n_newest_first() {
        let a = Alerts::new(vec![], Duration::ZERO, 2, RetryPolicy::default());
        for id in 1..=3 {
            a.record(Delivery {
                id,
                url: "u".into(),
                event: EventKind::AppCrashed,
                app_id: None,
                time: OffsetDateTime::now_utc(),
                attempts: 1,
                ok: id != 2,
                status_code: Some(200),
                error: None,
                finished_at: OffsetDateTime::now_utc(),
            });
        }
        let ids: Vec<u64> = a.deliveries().iter().map(|d| d.id).collect();
        assert_eq!(ids, vec![3, 2]);
        assert_eq!((a.stats().delivered, a.stats().failed), (2, 1));
    }
}
