#!/usr/bin/env bash
# build-systemd-test-image.sh -- a Debian 12 image that runs systemd as PID 1, for
# tests/systemd_deb.rs (the .deb installed and run as a real systemd service).
# Built offline like images/rserve-base: mmdebstrap from the mirror this machine's
# apt uses, then `docker import`. Cached by tag: does nothing when the image exists.
#
# Usage: build-systemd-test-image.sh [--force] [--image NAME:TAG]
#   default image: rsp-systemd-test:bookworm
# Needs root and a running Docker daemon; installs mmdebstrap with apt-get if missing.
set -euo pipefail

IMAGE="rsp-systemd-test:bookworm"
FORCE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --image) IMAGE="$2"; shift ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
log() { printf '[systemd-test-image] %s\n' "$*" >&2; }
die() { printf '[systemd-test-image] ERROR: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root)"
docker info >/dev/null 2>&1 || die "Docker daemon not reachable"
# Bump when the package list or set-up below changes: an image of an older recipe
# is rebuilt.
RECIPE=2
have="$(docker image inspect -f '{{ index .Config.Labels "rsp-systemd-test.recipe" }}' "$IMAGE" 2>/dev/null || true)"
if [ "$FORCE" -eq 0 ] && [ "$have" = "$RECIPE" ]; then
  log "$IMAGE exists (recipe $RECIPE); nothing to do (--force rebuilds)"
  exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null
fi

# The bookworm sources of this machine's apt (one-line and deb822 formats).
# shellcheck disable=SC2016 # $(...) are apt's format fields
fmt='$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)'
sources=()
while read -r uri rel; do sources+=("deb $uri $rel main"); done < <(
  apt-get indextargets --format "$fmt" 'Identifier: Packages' 2>/dev/null \
  | awk '$1 == "deb" && $4 == "main" && ($3 == "bookworm" || $3 == "bookworm-updates" || $3 == "bookworm-security") {print $2, $3}' \
  | sort -u)
[ "${#sources[@]}" -gt 0 ] || die "no bookworm Debian source in /etc/apt/sources.list*"

start=$(date +%s)
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rsp-systemd-test.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
# systemd as init, dbus for systemctl, procps (kill, for ExecReload; on every real
# server), curl for the checks made inside. The merged-usr
# hook avoids usrmerge (and perl). No getty in a container: masked below.
mmdebstrap --mode=root --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --include=systemd,systemd-sysv,dbus,procps,ca-certificates,curl \
  --dpkgopt='force-unsafe-io' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --customize-hook='chroot "$1" systemctl mask getty@tty1.service console-getty.service systemd-logind.service 2>/dev/null || true' \
  --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"; : > "$1/etc/machine-id"' \
  --format=tar bookworm "$TMP/rootfs.tar" "${sources[@]}"
docker import \
  --change 'ENV container=docker' \
  --change 'CMD ["/lib/systemd/systemd"]' \
  --change "LABEL rsp-systemd-test.recipe=$RECIPE" \
  --message "rserve-proxy systemd test image (Debian bookworm)" \
  "$TMP/rootfs.tar" "$IMAGE" >/dev/null
log "built $IMAGE in $(( $(date +%s) - start ))s"
