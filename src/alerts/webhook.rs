//! Delivering events to one webhook: POST the JSON, sign it, retry with backoff.
//!
//! The client is hyper (already in the binary for ACME) with rustls and Mozilla's
//! roots compiled in, so https receivers work in a minimal container; plain http is
//! allowed too (a receiver on a private network).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::sync::{broadcast, watch};

use super::{Alerts, Delivery, Event, EventKind};
use crate::config::WebhookConfig;

/// The signature header: `sha256=<hex HMAC-SHA256 of the body>` keyed with the secret.
pub const SIGNATURE_HEADER: &str = "x-rserve-proxy-signature";

/// A failing receiver is logged at most this often (with a count of the rest).
const LOG_EVERY: Duration = Duration::from_secs(60);

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// Shared by every webhook task (one connection pool).
#[derive(Clone)]
pub struct Client {
    http: hyper_util::client::legacy::Client<Connector, Full<Bytes>>,
}

impl Client {
    pub fn new() -> Result<Self, String> {
        let tls = crate::tls::client_config(crate::tls::mozilla_roots())?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector);
        Ok(Client { http })
    }

    /// One POST; the answer's status, or why there was none.
    async fn post(
        &self,
        url: &str,
        body: Bytes,
        headers: &[(&str, String)],
        timeout: Duration,
    ) -> Result<u16, String> {
        let mut req = http::Request::post(url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::USER_AGENT,
                concat!("rserve-proxy/", env!("CARGO_PKG_VERSION")),
            );
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        match tokio::time::timeout(timeout, self.http.request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => Err(describe(&e)),
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
        }
    }
}

/// hyper's errors hide the cause (connection refused, DNS, TLS) in the source chain.
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// `sha256=<hex>` of `body` keyed with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether an answer is worth trying again: server errors, timeouts as statuses,
/// rate limits. Other 4xx mean the request itself is refused; repeating it is noise.
fn retryable(status: u16) -> bool {
    status >= 500 || status == 408 || status == 429
}

/// One webhook's task: take events off the channel in order and deliver each.
pub(super) async fn run(
    alerts: Alerts,
    client: Client,
    hook: WebhookConfig,
    mut rx: broadcast::Receiver<Arc<Event>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let wanted: Vec<EventKind> = hook
        .events
        .iter()
        .filter_map(|e| EventKind::parse(e))
        .collect();
    let mut log = RateLimitedLog::default();
    loop {
        let event = tokio::select! {
            r = rx.recv() => r,
            _ = shutdown.changed() => return,
        };
        let event = match event {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                alerts.lost(n);
                log.warn(
                    &hook.url,
                    &format!("fell behind; {n} oldest alert(s) dropped"),
                );
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !wanted.is_empty() && !wanted.contains(&event.event) {
            continue;
        }
        let delivery = tokio::select! {
            d = deliver(&alerts, &client, &hook, &event) => d,
            _ = shutdown.changed() => return,
        };
        if !delivery.ok {
            log.warn(
                &hook.url,
                &format!(
                    "gave up delivering {} after {} attempt(s): {}",
                    event.event.as_str(),
                    delivery.attempts,
                    delivery.error.as_deref().unwrap_or("-")
                ),
            );
        }
        alerts.record(delivery);
    }
}

/// Deliver one event with retries; the result for the history.
async fn deliver(
    alerts: &Alerts,
    client: &Client,
    hook: &WebhookConfig,
    event: &Event,
) -> Delivery {
    let policy = alerts.policy();
    let id = alerts.next_delivery_id();
    let body = Bytes::from(serde_json::to_vec(event).unwrap_or_default());
    let mut headers = vec![
        ("x-rserve-proxy-event", event.event.as_str().to_string()),
        ("x-rserve-proxy-delivery", id.to_string()),
    ];
    if let Some(secret) = &hook.secret {
        headers.push((SIGNATURE_HEADER, signature(secret, &body)));
    }
    let mut delay = policy.first_delay;
    let mut attempts = 0;
    let mut status_code = None;
    let mut error = None;
    let mut ok = false;
    while attempts < policy.attempts.max(1) {
        if attempts > 0 {
            tokio::time::sleep(delay).await;
            delay = delay.saturating_mul(2);
        }
        attempts += 1;
        match client
            .post(&hook.url, body.clone(), &headers, policy.timeout)
            .await
        {
            Ok(s) if (200..300).contains(&s) => {
                status_code = Some(s);
                error = None;
                ok = true;
                break;
            }
            Ok(s) => {
                status_code = Some(s);
                error = Some(format!("the receiver answered {s}"));
                if !retryable(s) {
                    break;
                }
            }
            Err(e) => {
                status_code = None;
                error = Some(e);
            }
        }
    }
    Delivery {
        id,
        url: hook.url.clone(),
        event: event.event,
        app_id: event.app.as_ref().map(|a| a.id),
        time: event.time,
        attempts,
        ok,
        status_code,
        error,
        finished_at: OffsetDateTime::now_utc(),
    }
}

/// A receiver that is down would otherwise log a line per event.
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    quiet: u64,
}

impl RateLimitedLog {
    fn warn(&mut self, url: &str, msg: &str) {
        let now = Instant::now();
        if self.last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
            self.quiet += 1;
            return;
        }
        let quiet = std::mem::take(&mut self.quiet);
        self.last = Some(now);
        tracing::warn!(
            webhook = %url,
            similar_messages_suppressed = quiet,
            "alert webhook: {msg}; check that the receiver is up and accepts POSTs"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_rfc4231_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn only_transient_answers_are_retried() {
        assert!(retryable(500) && retryable(503) && retryable(429) && retryable(408));
        assert!(!retryable(400) && !retryable(404) && !retryable(410));
    }
}
