//! When open connections end: at once on a server shutdown, or — while this process
//! hands over to a new one (binary upgrade, see `crate::upgrade`) — only when the
//! hand-over says so (the last one closed, or the drain limit passed).
//!
//! The data plane's shutdown watch means "stop accepting" in both cases. What it
//! means for connections already open is decided here: every wait that used to end a
//! tunnel or a keep-alive wait on the shutdown watch waits on [`Drain::closing`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pingora::server::ShutdownWatch;
use tokio::sync::watch;

pub struct Drain {
    /// Set before the listeners stop: their stop then leaves open connections alone.
    handing_over: AtomicBool,
    /// True once open connections should end (Close 1001 for WebSockets).
    closing: watch::Sender<bool>,
    /// The task that turns a plain shutdown into `closing` has been started.
    following: AtomicBool,
}

impl Drain {
    pub fn new() -> Arc<Drain> {
        Arc::new(Drain {
            handing_over: AtomicBool::new(false),
            closing: watch::channel(false).0,
            following: AtomicBool::new(false),
        })
    }

    /// From now on the listeners' stop leaves open connections running.
    pub fn hand_over(&self) {
        self.handing_over.store(true, Ordering::SeqCst);
    }

    pub fn handing_over(&self) -> bool {
        self.handing_over.load(Ordering::SeqCst)
    }

    /// End open connections now: tunnels say goodbye (Close 1001), waits end.
    pub fn close_all(&self) {
        self.closing.send_replace(true);
    }

    /// Turns true when open connections should end.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Resolves when open connections should end.
    pub async fn closed(&self) {
        // `closing` lives as long as `self`: the wait cannot fail.
        let _ = self.closing.subscribe().wait_for(|c| *c).await;
    }

    /// Called with the server's shutdown watch for every connection; the first call
    /// starts the task that turns a shutdown into [`Drain::close_all`] unless a
    /// hand-over is under way. (The watch is only handed out with connections.)
    pub(crate) fn follow(self: &Arc<Self>, shutdown: &ShutdownWatch) {
        if self.following.load(Ordering::Relaxed) || self.following.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut shutdown = shutdown.clone();
        let drain = Arc::downgrade(self);
        tokio::spawn(async move {
            if shutdown.wait_for(|stop| *stop).await.is_err() {
                return;
            }
            if let Some(drain) = drain.upgrade() {
                if !drain.handing_over() {
                    drain.close_all();
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_shutdown_closes_unless_handing_over() {
        let (tx, rx) = watch::channel(false);
        let drain = Drain::new();
        drain.follow(&rx);
        tx.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), drain.closed())
            .await
            .expect("a shutdown closes open connections");

        let (tx, rx) = watch::channel(false);
        let drain = Drain::new();
        drain.follow(&rx);
        drain.hand_over();
        tx.send_replace(true);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), drain.closed())
                .await
                .is_err(),
            "while handing over, stopping the listeners leaves connections open"
        );
        drain.close_all();
        tokio::time::timeout(Duration::from_secs(5), drain.closed())
            .await
            .expect("close_all ends them");
    }
}
