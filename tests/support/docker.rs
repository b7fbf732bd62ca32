//! The Docker daemon as the real-binary tests use it: the socket, the `docker` CLI,
//! and whether Docker and the base image are there (in CI their absence fails).

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// `RSP_TEST_DOCKER_SOCKET`, else the default socket.
pub fn socket() -> PathBuf {
    std::env::var_os("RSP_TEST_DOCKER_SOCKET")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

/// Runs the `docker` CLI against [`socket`]; its trimmed stdout, or what failed.
pub fn run(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .env("DOCKER_HOST", format!("unix://{}", socket().display()))
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Docker answers and `rserve-base:latest` exists. Otherwise: with CI set, a failure
/// naming `what`; without, a loud skip notice and `false`.
pub fn ready(what: &str) -> bool {
    let problem = run(&["version", "--format", "{{.Server.Version}}"])
        .and_then(|_| {
            run(&[
                "image",
                "inspect",
                "--format",
                "{{.Id}}",
                "rserve-base:latest",
            ])
        })
        .err();
    let Some(problem) = problem else {
        return true;
    };
    if super::in_ci() {
        panic!(
            "CI is set and {what} cannot run: {problem} (run images/rserve-base/build-from-debian.sh)"
        );
    }
    let _ = std::io::stderr().write_all(
        format!(
            "\n!!! SKIPPED: {what} needs Docker and rserve-base:latest: {problem}\n\
             !!! (With CI set this is a failure.)\n"
        )
        .as_bytes(),
    );
    false
}
