//! Give memory back to the system after a burst of connections has gone.
//!
//! glibc's malloc keeps freed memory in its arenas: after a flood of 20,000
//! connections the RSS stayed at its peak for good (measured: docs/benchmarks.md,
//! "Security: connection flood"). Once a second this looks at the number of open
//! client connections; when it has fallen by [`BURST`] or more from the highest
//! count seen since the last trim, it calls `malloc_trim(0)`, which returns free
//! pages anywhere in the heaps. Nothing happens while the count is steady, and the
//! connection path is not involved.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::admission::Admission;

/// A drop of this many open connections counts as a burst gone.
pub const BURST: u32 = 1000;

pub struct TrimAfterBursts {
    pub admission: Arc<Admission>,
}

#[async_trait]
impl BackgroundService for TrimAfterBursts {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut peak = 0u32;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let open = self.admission.open();
            peak = peak.max(open);
            if peak.saturating_sub(open) >= BURST {
                let released = trim();
                tracing::debug!(
                    from = peak,
                    to = open,
                    released,
                    "connections gone; memory trimmed"
                );
                peak = open;
            }
        }
    }
}

/// `malloc_trim(0)`; whether memory was released (`false` where there is no glibc).
fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim has no preconditions; it only walks malloc's own heaps.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
