#!/usr/bin/env bash
# Build rserve-proxy (release) and start it on its embedded defaults:
# data in ./data, listener http://127.0.0.1:8880, admin password printed on first start.
# Extra arguments go to `rserve-proxy serve` (e.g. --listen 127.0.0.1:9000).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v cmake >/dev/null || need+=(cmake)          # pingora → zlib-ng
command -v cc >/dev/null || need+=(build-essential)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)   # scripts/fetch-htmx.sh
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing ${need[*]}"
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# htmx for the admin UI comes from PyPI into target/htmx/ (build.rs embeds it).
bash scripts/fetch-htmx.sh
echo "==> building (release; the first build takes several minutes)"
cargo build --release --locked
exec ./target/release/rserve-proxy serve "$@"
