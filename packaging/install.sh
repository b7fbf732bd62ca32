#!/usr/bin/env bash
# install.sh -- install rserve-proxy as a systemd service on a distribution without
# the .deb (on Debian/Ubuntu prefer `apt install ./rserve-proxy_*.deb`).
#
# Usage: sudo packaging/install.sh [--binary PATH] [--from-debian] [--no-start]
#   --binary PATH   the rserve-proxy binary to install
#                   (default: ./rserve-proxy beside this script, else target/release/)
#   --from-debian   build the R base image from Debian packages (mmdebstrap) instead
#                   of the r-base image from a registry
#   --no-start      install only; do not enable or start the service
#
# What it does: checks systemd and Docker; installs /usr/bin/rserve-proxy, the unit
# /etc/systemd/system/rserve-proxy.service and /etc/rserve-proxy/config.toml (kept if
# present); creates the system user rserve-proxy in the docker group; builds the R
# base image if no rserve-base image exists; enables and starts the service; prints
# where the first admin password is. Running it again upgrades the binary and unit
# (config and data are kept) and restarts the service.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BINARY=""
FROM_DEBIAN=0
START=1
UNIT_SRC="$REPO/systemd/rserve-proxy.service"
CONFIG_SRC="$HERE/config.toml"
DATA=/var/lib/rserve-proxy
CONFIG=/etc/rserve-proxy/config.toml

log() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) [ $# -ge 2 ] || die "--binary needs a path"; BINARY="$2"; shift ;;
    --from-debian) FROM_DEBIAN=1 ;;
    --no-start) START=0 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

# --- checks ------------------------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "run it as root (sudo $0)"
[ -d /run/systemd/system ] || die "systemd is not running here: this script installs a systemd service"
command -v docker >/dev/null || die "Docker is not installed: install Docker Engine first (https://docs.docker.com/engine/install/)"
docker info >/dev/null 2>&1 || die "the Docker daemon does not answer: start it (systemctl start docker)"
if [ -z "$BINARY" ]; then
  for b in "$HERE/rserve-proxy" "$REPO/target/release/rserve-proxy"; do
    [ -x "$b" ] && { BINARY="$b"; break; }
  done
fi
[ -n "$BINARY" ] && [ -x "$BINARY" ] || die "no rserve-proxy binary: build it (cargo build --release) or pass --binary PATH"
"$BINARY" --version >/dev/null || die "$BINARY does not run on this machine"
for f in "$UNIT_SRC" "$CONFIG_SRC"; do [ -f "$f" ] || die "missing $f"; done

# --- user --------------------------------------------------------------------------
getent group docker >/dev/null || die "no 'docker' group: the service reaches Docker through it"
if ! getent passwd rserve-proxy >/dev/null; then
  log "creating system user rserve-proxy"
  useradd --system --user-group --home-dir "$DATA" --no-create-home \
    --shell "$(command -v nologin || echo /bin/false)" --comment "rserve-proxy service" rserve-proxy
fi
usermod -a -G docker rserve-proxy

# --- files -------------------------------------------------------------------------
upgrade=0
[ -e /usr/bin/rserve-proxy ] && upgrade=1
log "installing $("$BINARY" --version) as /usr/bin/rserve-proxy"
install -m 0755 "$BINARY" /usr/bin/rserve-proxy.new
mv -f /usr/bin/rserve-proxy.new /usr/bin/rserve-proxy
install -m 0644 "$UNIT_SRC" /etc/systemd/system/rserve-proxy.service
install -d -m 0755 /etc/rserve-proxy
if [ -e "$CONFIG" ]; then
  log "keeping $CONFIG"
else
  install -m 0640 -o root -g rserve-proxy "$CONFIG_SRC" "$CONFIG"
  log "wrote $CONFIG (listen 0.0.0.0:80; edit it for TLS)"
fi
chown root:rserve-proxy "$CONFIG"; chmod 0640 "$CONFIG"
[ -d "$DATA" ] || install -d -o rserve-proxy -g rserve-proxy -m 0750 "$DATA"
if [ -d /usr/share/doc ]; then
  install -d /usr/share/doc/rserve-proxy
  install -m 0644 "$REPO/README.md" /usr/share/doc/rserve-proxy/ 2>/dev/null || true
fi
systemctl daemon-reload

# --- R base image ----------------------------------------------------------------
if [ -n "$(docker images -q rserve-base 2>/dev/null)" ]; then
  log "R base image present: $(docker images --format '{{.Repository}}:{{.Tag}}' rserve-base | paste -sd ' ')"
elif [ "$FROM_DEBIAN" -eq 1 ]; then
  log "building the R base image from Debian packages (a few minutes)"
  /usr/bin/rserve-proxy images build-base --from-debian
else
  log "building the R base image from the r-base registry image (a few minutes)"
  /usr/bin/rserve-proxy images build-base
fi

# --- start -------------------------------------------------------------------------
[ "$START" -eq 1 ] || { log "installed; start it with: systemctl enable --now rserve-proxy"; exit 0; }
systemctl enable rserve-proxy.service >/dev/null 2>&1
if [ "$upgrade" -eq 1 ] && systemctl is-active --quiet rserve-proxy.service; then
  # A running server hands over to the new binary without dropping WebSockets when
  # it supports it (docs/upgrade.md); else a restart.
  if /usr/bin/rserve-proxy --help | grep -q '^  upgrade'; then
    /usr/bin/rserve-proxy --config "$CONFIG" --data-dir "$DATA" upgrade \
      || systemctl restart rserve-proxy.service
  else
    systemctl restart rserve-proxy.service
  fi
else
  # Type=notify: returns once the server is ready (or has failed).
  systemctl start rserve-proxy.service \
    || die "the service did not start: journalctl -u rserve-proxy; fix $CONFIG, then systemctl start rserve-proxy"
fi
log "rserve-proxy is running ($(systemctl show -p MainPID --value rserve-proxy.service) as rserve-proxy)"
if [ -f "$DATA/initial-admin-password" ]; then
  log "first login: user 'admin', password: sudo cat $DATA/initial-admin-password"
fi
log "logs: journalctl -u rserve-proxy -f; config: $CONFIG (systemctl reload rserve-proxy after a change)"
