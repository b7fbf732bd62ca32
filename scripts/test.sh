#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing, then formatting,
# lints and every test. With CI set (any non-empty value) a missing real part fails
# the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

# Real parts the tests use: Docker must answer (in CI its absence fails the run).
# A machine whose daemon is installed but stopped gets it started (as root).
if ! docker info >/dev/null 2>&1 && command -v dockerd >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    echo "==> starting dockerd"
    setsid -f dockerd >>/var/log/dockerd.log 2>&1 </dev/null
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
fi
if ! docker info >/dev/null 2>&1; then
    echo "test.sh: the Docker daemon is not reachable; the spawner tests need it" >&2
    [ -n "${CI:-}" ] && exit 1
fi
# The R base image, built from Debian's packages (no registry here); cached by tag.
bash images/rserve-base/build-from-debian.sh
# Debian 12 with systemd as PID 1, for the .deb test (tests/systemd_deb.rs); cached by tag.
bash packaging/build-systemd-test-image.sh
# Native Rserve and the base image answer OCAP calls before any Rust test relies on them.
bash scripts/rserve-smoke-test.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --all-targets -- --test-threads=2
