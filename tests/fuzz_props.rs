//! Property-based fuzzing in the suite: every target of tests/props with its
//! `suite_cases` (a few thousand cases in all). bench/fuzz.rs runs the same targets
//! for a million cases and more.

#[path = "props/mod.rs"]
mod props;

fn run(name: &str) {
    let target = props::target(name);
    if let Err(failure) = (target.run)(target.suite_cases) {
        panic!("{name}: {failure}");
    }
}

#[test]
fn http1_head_arbitrary_bytes() {
    run("http1_head_arbitrary_bytes");
}

#[test]
fn http1_valid_head_any_split() {
    run("http1_valid_head_any_split");
}

#[test]
fn http1_head_size_limit() {
    run("http1_head_size_limit");
}

#[test]
fn http1_strip_slug() {
    run("http1_strip_slug");
}

#[test]
fn http1_connection_tokens() {
    run("http1_connection_tokens");
}

#[test]
fn app_path_for_app() {
    run("app_path_for_app");
}

#[test]
fn tunnel_prepare() {
    run("tunnel_prepare");
}

#[test]
fn tunnel_rewrite_response() {
    run("tunnel_rewrite_response");
}

#[test]
fn upload_zip_entries() {
    run("upload_zip_entries");
}

#[test]
fn upload_targz_entries() {
    run("upload_targz_entries");
}

#[test]
fn upload_arbitrary_bytes() {
    run("upload_arbitrary_bytes");
}

/// Every target has its test above.
#[test]
fn every_target_is_in_the_suite() {
    let source = include_str!("fuzz_props.rs");
    for t in props::TARGETS {
        assert!(
            source.contains(&format!("fn {}()", t.name)),
            "no test for fuzz target {}",
            t.name
        );
    }
}
