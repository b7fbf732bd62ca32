//! Observability: the collector samples containers (through the spawner) and the
//! proxy's counters every `metrics_interval_secs`, keeps the latest round in memory
//! ([`sample::Latest`]) and writes history to the store. See docs/architecture.md,
//! "Metrics and history".

pub mod collector;
pub mod maths;
pub mod sample;

pub use sample::{
    AppSample, CollectorStats, ContainerSample, HistoryStatus, Latest, Snapshot, SystemSample,
    TrafficSample,
};
