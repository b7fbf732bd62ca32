//! Wrappers that let the hand-over stop parts of the server at its own time instead of
//! pingora's shutdown: the listening service (stop accepting once the new process
//! serves) and the services that use the store (stop before the new process opens it).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::RuntimeOpts;
use pingora::server::{ListenFds, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::{ServiceReadyNotifier, ServiceWithDependents};
use tokio::sync::watch;

/// A watch that turns true when either `a` or `b` does (or their sender goes away
/// after turning true). Spawns a task: call it inside a runtime.
pub fn either(a: ShutdownWatch, b: watch::Receiver<bool>) -> ShutdownWatch {
    let (tx, rx) = watch::channel(*a.borrow() || *b.borrow());
    tokio::spawn(async move {
        let (mut a, mut b) = (a, b);
        // A sender gone without turning true never will: wait on the other one.
        let a_fires = async {
            if a.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        let b_fires = async {
            if b.wait_for(|v| *v).await.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = a_fires => {}
            () = b_fires => {}
            () = tx.closed() => return,
        }
        tx.send_replace(true);
        // Keep the sender until every receiver is gone, so `changed()` reports the
        // change rather than a closed channel.
        tx.closed().await;
    });
    rx
}

/// The front door's listening service, started with a shutdown watch that also turns
/// true when the hand-over says "stop accepting"; it keeps the listening sockets'
/// table (pingora's `ListenFds`) for the hand-over to send to the new process.
pub struct Listening<S> {
    inner: S,
    stop_accepting: watch::Receiver<bool>,
    fds: Arc<Mutex<Option<ListenFds>>>,
}

impl<S> Listening<S> {
    pub fn new(
        inner: S,
        stop_accepting: watch::Receiver<bool>,
        fds: Arc<Mutex<Option<ListenFds>>>,
    ) -> Self {
        Listening {
            inner,
            stop_accepting,
            fds,
        }
    }
}

#[async_trait]
impl<S: ServiceWithDependents> ServiceWithDependents for Listening<S> {
    async fn start_service(
        &mut self,
        fds: Option<ListenFds>,
        shutdown: ShutdownWatch,
        listeners_per_fd: usize,
        ready_notifier: ServiceReadyNotifier,
    ) {
        if let Ok(mut slot) = self.fds.lock() {
            *slot = fds.clone();
        }
        let shutdown = either(shutdown, self.stop_accepting.clone());
        self.inner
            .start_service(fds, shutdown, listeners_per_fd, ready_notifier)
            .await;
    }

    fn name(&self) -> &str {
        self.inner.name()
    }

    fn threads(&self) -> Option<usize> {
        self.inner.threads()
    }

    fn runtime_opts_override(&self, global: &RuntimeOpts) -> Option<RuntimeOpts> {
        self.inner.runtime_opts_override(global)
    }

    fn on_startup_delay(&self, time_waited: Duration) {
        self.inner.on_startup_delay(time_waited)
    }

    fn listen_addresses(&self) -> Option<Vec<String>> {
        self.inner.listen_addresses()
    }
}

/// A background service that also stops when the hand-over begins (it uses the store,
/// which the new process is about to open).
pub struct UntilHandOver<B> {
    inner: B,
    hand_over: watch::Receiver<bool>,
}

impl<B> UntilHandOver<B> {
    pub fn new(inner: B, hand_over: watch::Receiver<bool>) -> Self {
        UntilHandOver { inner, hand_over }
    }
}

#[async_trait]
impl<B: BackgroundService + Send + Sync> BackgroundService for UntilHandOver<B> {
    async fn start(&self, shutdown: ShutdownWatch) {
        let shutdown = either(shutdown, self.hand_over.clone());
        self.inner.start(shutdown).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn either_follows_both_sides() {
        for first in [true, false] {
            let (a_tx, a) = watch::channel(false);
            let (b_tx, b) = watch::channel(false);
            let mut both = either(a, b);
            assert!(!*both.borrow());
            if first {
                a_tx.send_replace(true);
            } else {
                b_tx.send_replace(true);
            }
            tokio::time::timeout(Duration::from_secs(5), both.wait_for(|v| *v))
                .await
                .unwrap()
                .unwrap();
        }
        // A side that goes away without turning true does not count.
        let (a_tx, a) = watch::channel(false);
        let (b_tx, b) = watch::channel(false);
        let mut both = either(a, b);
        drop(a_tx);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), both.wait_for(|v| *v))
                .await
                .is_err()
        );
        b_tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), both.wait_for(|v| *v))
            .await
            .unwrap()
            .unwrap();
    }
}
