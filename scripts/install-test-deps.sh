#!/usr/bin/env bash
# install-test-deps.sh -- install (only if missing) what rserve-proxy's tests
# and image build need on a Debian 12 machine (CI runs it as root):
#   cmake                         (native builds of some crates)
#   r-base-core, r-cran-rserve    (host-native Rserve for tests)
#   mmdebstrap                    (images/rserve-base/build-from-debian.sh)
#   python3, python3-websocket    (scripts/rserve_ocap_probe.py)
#   python3-pip                   (scripts/fetch-htmx.sh: htmx for the admin UI, from PyPI)
#   ca-certificates
#   pebble                        (ACME test server + pebble-challtestsrv DNS, tests/tls.rs)
#   chromium, chromium-driver     (headless browser + WebDriver, tests/ui_browser.rs)
#   cargo-deb (crates.io)         (the .deb of tests/systemd_deb.rs), into target/tools
# Docker itself is expected to be installed and running already.
# Runs `apt-get update` only when something is missing. Quiet on success.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

PKGS=(cmake r-base-core r-cran-rserve mmdebstrap python3 python3-websocket python3-pip ca-certificates pebble chromium chromium-driver)

missing=()
for p in "${PKGS[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "install-test-deps: need root to install: ${missing[*]}" >&2; exit 1; }
  echo "install-test-deps: installing ${missing[*]}" >&2
  log="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
fi

# cargo-deb builds the .deb that tests/systemd_deb.rs installs; pinned so its
# behaviour (e.g. --profile dev for the test package) does not change under us.
CARGO_DEB_VERSION=3.8.0
if ! target/tools/bin/cargo-deb --version 2>/dev/null | grep -qF "$CARGO_DEB_VERSION"; then
  echo "install-test-deps: installing cargo-deb $CARGO_DEB_VERSION into target/tools" >&2
  cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked --root target/tools --quiet
fi

if ! command -v docker >/dev/null 2>&1; then
  echo "install-test-deps: WARNING: docker CLI not found (needed for image tests)" >&2
fi

# htmx for the admin UI: build.rs embeds target/htmx/htmx.min.js (from PyPI).
bash "$(dirname "$0")/fetch-htmx.sh"
