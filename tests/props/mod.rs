//! Property-based fuzz targets, shared by the test suite (tests/fuzz_props.rs, a few
//! thousand cases) and the million-case runner (bench/fuzz.rs). Both include this
//! file with `#[path]`, so a target is written once.
//!
//! A target is a proptest strategy plus a property; [`check`] runs it through
//! proptest's `TestRunner`, which also turns a panic into a failure and shrinks the
//! failing input to a minimal one.
//!
//! Adding a target: write `fn run(cases: u32) -> Outcome` in a module here (see
//! `heads.rs`), and add one line to [`TARGETS`]. The test file gets one `#[test]`
//! per target; the runner picks it up by itself.
#![allow(dead_code)]

pub mod app_path;
pub mod heads;
pub mod tunnel;
pub mod upload;

use std::fmt::Debug;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// `Err`: the failure reason and the minimal failing input, printed.
pub type Outcome = Result<(), String>;

pub struct Target {
    pub name: &'static str,
    /// Share of the runner's cases (relative to the other targets): cheap, pure
    /// targets get many more cases than the ones that write files.
    pub weight: u32,
    /// Cases in the test suite (debug build; keep the suite's total time small).
    pub suite_cases: u32,
    pub run: fn(u32) -> Outcome,
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "http1_head_arbitrary_bytes",
        weight: 30,
        suite_cases: 600,
        run: heads::arbitrary_bytes,
    },
    Target {
        name: "http1_valid_head_any_split",
        weight: 30,
        suite_cases: 600,
        run: heads::valid_head_any_split,
    },
    Target {
        name: "http1_head_size_limit",
        weight: 3,
        suite_cases: 60,
        run: heads::size_limit,
    },
    Target {
        name: "http1_strip_slug",
        weight: 20,
        suite_cases: 500,
        run: heads::strip_slug,
    },
    Target {
        name: "http1_connection_tokens",
        weight: 20,
        suite_cases: 500,
        run: heads::connection_tokens,
    },
    Target {
        name: "app_path_for_app",
        weight: 20,
        suite_cases: 500,
        run: app_path::for_app_stays_under_its_slug,
    },
    Target {
        name: "tunnel_prepare",
        weight: 30,
        suite_cases: 500,
        run: tunnel::prepare,
    },
    Target {
        name: "tunnel_rewrite_response",
        weight: 30,
        suite_cases: 500,
        run: tunnel::rewrite_response,
    },
    Target {
        name: "upload_zip_entries",
        weight: 3,
        suite_cases: 150,
        run: upload::zip_entries,
    },
    Target {
        name: "upload_targz_entries",
        weight: 3,
        suite_cases: 150,
        run: upload::targz_entries,
    },
    Target {
        name: "upload_arbitrary_bytes",
        weight: 3,
        suite_cases: 150,
        run: upload::arbitrary_bytes,
    },
];

pub fn target(name: &str) -> &'static Target {
    TARGETS
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no fuzz target {name}"))
}

/// Run `property` on `cases` inputs drawn from `strategy`. A failure (assertion or
/// panic) is shrunk to a minimal input, which the `Err` shows.
pub fn check<S>(
    cases: u32,
    strategy: S,
    property: impl Fn(S::Value) -> Result<(), TestCaseError>,
) -> Outcome
where
    S: Strategy,
    S::Value: Debug,
{
    let config = Config {
        cases,
        // The runner reports failures itself; no regression files in the tree.
        failure_persistence: None,
        max_shrink_iters: 4096,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    match runner.run(&strategy, property) {
        Ok(()) => Ok(()),
        Err(TestError::Fail(why, minimal)) => Err(format!("{why}\nminimal input: {minimal:?}")),
        Err(TestError::Abort(why)) => Err(format!("aborted: {why}")),
    }
}
