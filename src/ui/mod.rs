//! Admin UI (issue #10). Placeholder until ui-core lands the router.

pub mod app_metrics;
pub mod charts;
pub mod dashboard;
pub mod grid;
