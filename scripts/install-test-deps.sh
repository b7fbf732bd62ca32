#!/usr/bin/env bash
# Installs what the tests need when it is missing; safe to run again (idempotent).
# scripts/test.sh runs it first; CI runs test.sh.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# --- TLS tests (tests/tls.rs): Pebble, the ACME test server, and pebble-challtestsrv,
# its DNS server (both from Debian's `pebble` package). Under CI=true a missing Pebble
# fails those tests rather than skipping them.
if ! command -v pebble >/dev/null 2>&1 || ! command -v pebble-challtestsrv >/dev/null 2>&1; then
    echo "==> installing pebble (ACME test server for the TLS tests)"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends pebble
fi
