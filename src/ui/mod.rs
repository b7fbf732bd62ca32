//! Admin UI (issue #10). Placeholder until ui-core lands the router.

pub mod charts;
pub mod grid;
