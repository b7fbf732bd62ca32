#!/usr/bin/env bash
# update-screenshots.sh -- refresh docs/screenshots/ from a run of the browser tests.
#
# Runs tests/ui_browser.rs (real binary, real Docker, headless Chromium; it saves a
# screenshot of every page it visits under target/screenshots/), then copies one
# shot per page into docs/screenshots/ under stable names that README links to.
# Needs what the tests need (scripts/install-test-deps.sh, Docker, rserve-base).
# Pass --no-run to only copy the shots of the last run.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" != "--no-run" ]; then
  # The Docker lock keeps two image builds from running at once on a shared host.
  lock=()
  [ -e /work/notes/docker.lock ] && lock=(flock /work/notes/docker.lock)
  "${lock[@]}" cargo test --test ui_browser ui_flow -- --test-threads=1
fi

src="${CARGO_TARGET_DIR:-target}/screenshots"
dst=docs/screenshots
mkdir -p "$dst"
# docs name        <- test shot
pairs=(
  login:desktop-login
  dashboard:desktop-dashboard-running
  apps:desktop-apps
  new-app:desktop-new-app
  upload:desktop-upload-done
  app-detail:desktop-app-detail
  logs:desktop-logs
  tokens:desktop-token-created
  settings:desktop-settings
  users:desktop-users
  audit:desktop-audit
  phone-app-detail:phone-app-detail-screen
  phone-dashboard:phone-dashboard-screen
  phone-menu:phone-menu-open
)
missing=0
for p in "${pairs[@]}"; do
  name="${p%%:*}" shot="${p#*:}"
  if [ -f "$src/$shot.png" ]; then
    cp "$src/$shot.png" "$dst/$name.png"
  else
    echo "update-screenshots: no $src/$shot.png (did the flow reach that page?)" >&2
    missing=1
  fi
done
echo "update-screenshots: $dst/ updated" >&2
exit "$missing"
