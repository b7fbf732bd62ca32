//! Schema fuzzing in the suite: schemathesis (tests/fuzz/schemathesis.sh, a pinned
//! version in a venv under target/) runs every operation of `/api/openapi.json`
//! against the real binary with a bearer token, all checks, a bounded number of
//! examples, and any finding fails the test. Needs python3 with venv and PyPI (first
//! run only); without them the test fails in CI and is skipped elsewhere.

mod support;

use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};
use support::{client, in_ci, json_of, login, Server};

const PASSWORD: &str = "schemathesis-password";
/// Examples per operation and phase: the whole run stays within a few minutes on 2 cores.
const MAX_EXAMPLES: &str = "25";

fn python_ready() -> Result<(), String> {
    match Command::new("python3")
        .args(["-m", "venv", "--help"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "python3 -m venv does not work: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Err(format!("python3 not found: {e}")),
    }
}

#[test]
fn schemathesis_finds_nothing() {
    if let Err(why) = python_ready() {
        assert!(!in_ci(), "schemathesis needs python3 with venv: {why}");
        eprintln!("skipping: {why} (install python3-venv)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let c = client();
    assert_eq!(login(&c, &s, PASSWORD), 200);
    let (status, body) = json_of(
        c.post(s.url("/api/auth/tokens"))
            .json(&json!({"name": "schemathesis"}))
            .send()
            .unwrap(),
    );
    assert_eq!(status, 201, "{body}");
    let token = body["token"]["token"].as_str().unwrap().to_string();
    let own_id = body["token"]["userId"].as_str().unwrap().to_string();

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/schemathesis.sh");
    let t0 = Instant::now();
    let out = Command::new("bash")
        .arg(script)
        .arg(&s.base)
        .arg(&token)
        .args(["--max-examples", MAX_EXAMPLES, "--seed", "1"])
        // tests/fuzz/hooks.py keeps the run from deleting or changing its own user.
        .env("FUZZ_OWN_USER_ID", &own_id)
        .output()
        .expect("run tests/fuzz/schemathesis.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The summary line, for docs/benchmarks.md.
    eprintln!(
        "schemathesis: {:.0} s; {}",
        t0.elapsed().as_secs_f64(),
        stdout
            .lines()
            .filter(|l| l.contains("generated") || l.contains(" in "))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    assert!(
        out.status.success(),
        "schemathesis reported findings (exit {:?}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status.code(),
        s.log()
    );

    // The run did not lock itself out: the token still works and admin is admin.
    let r = c
        .get(s.url("/api/auth/me"))
        .bearer_auth(&token)
        .send()
        .unwrap();
    let (status, me): (_, Value) = json_of(r);
    assert_eq!(status, 200, "the fuzzer's token stopped working: {me}");
    assert_eq!(me["user"]["role"], "admin");
    // And the server never answered 5xx (schemathesis checks that too; the log says
    // why if it did).
    assert!(
        !s.log().contains("internal error"),
        "internal errors in the server log:\n{}",
        s.log()
    );
}

/// Found by schemathesis: a request whose body the control plane did not read (a 405,
/// a 401 before the JSON extractor) closed the proxy's pooled connection, and the next
/// request on it could get a 502. tests/fuzz/unread_bodies.py sends the pattern
/// (without the fix: 5-6 502s in its 2,250 requests; reqwest and a raw Rust client did
/// not reproduce it, Python's http.client does).
#[test]
fn unread_request_bodies_never_cost_the_next_request_a_502() {
    if let Err(why) = python_ready() {
        assert!(!in_ci(), "this test needs python3: {why}");
        eprintln!("skipping: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[("RSP_ADMIN_PASSWORD", PASSWORD)]);
    let (host, port) = s
        .base
        .trim_start_matches("http://")
        .split_once(':')
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz/unread_bodies.py");
    let out = Command::new("python3")
        .args([script, host, port])
        .output()
        .expect("run tests/fuzz/unread_bodies.py");
    assert!(
        out.status.success(),
        "5xx answers: {}{}\nserver log:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        s.log()
    );
}
