#!/usr/bin/env bash
# The whole test suite: installs what the tests need when missing, then formatting,
# lints and every test. With CI=true a missing real part fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-test-deps.sh

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --all-targets -- -D warnings
echo "==> cargo test"
cargo test --locked --all-targets -- --test-threads=2
