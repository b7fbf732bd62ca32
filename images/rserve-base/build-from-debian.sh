#!/usr/bin/env bash
# build-from-debian.sh -- build the rserve-proxy R base image without a
# container registry: a Debian 12 (bookworm) rootfs made by mmdebstrap from
# the Debian mirror this machine's apt already uses, then `docker import`.
#
# Result: rserve-base:<R version> (e.g. rserve-base:4.2.2) and rserve-base:latest
# with the same contract as ./Dockerfile: R + Rserve (WebSocket/OCAP capable),
# WORKDIR /app, EXPOSE 8081, /etc/Rserv.conf with `remote enable`, labels
# managed-by=rserve-proxy and rserve-proxy.r-version=<R version>.
#
# Usage: build-from-debian.sh [--force] [--mirror URL] [--image NAME]
#   --force        rebuild even if NAME:latest already exists
#   --mirror URL   Debian mirror to use instead of the one in /etc/apt/sources*
#   --image NAME   repository name to tag (default: rserve-base)
#
# Needs root, a running Docker daemon and network access to a Debian mirror.
# Installs mmdebstrap with apt-get if it is missing.
set -euo pipefail

SUITE=bookworm
IMAGE="rserve-base"
FORCE=0
MIRROR=""
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

log() { printf '[rserve-base] %s\n' "$*" >&2; }
die() { printf '[rserve-base] ERROR: %s\n' "$*" >&2; exit 1; }

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    -f|--force) FORCE=1 ;;
    --mirror) [ $# -ge 2 ] || die "--mirror needs a URL"; MIRROR="$2"; shift ;;
    --mirror=*) MIRROR="${1#*=}" ;;
    --image) [ $# -ge 2 ] || die "--image needs a name"; IMAGE="$2"; shift ;;
    --image=*) IMAGE="${1#*=}" ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
  shift
done

# --- preconditions ---------------------------------------------------------
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root)"
command -v docker >/dev/null || die "docker CLI not found"
docker info >/dev/null 2>&1 || die "Docker daemon not reachable"
for f in Rserv.conf rserve-healthcheck; do
  [ -f "$SCRIPT_DIR/$f" ] || die "missing $SCRIPT_DIR/$f"
done

# --- idempotency -----------------------------------------------------------
if [ "$FORCE" -eq 0 ] && docker image inspect "$IMAGE:latest" >/dev/null 2>&1; then
  have_ver="$(docker image inspect -f '{{ index .Config.Labels "rserve-proxy.r-version" }}' "$IMAGE:latest")"
  if [ -n "$have_ver" ] && [ "$have_ver" != "<no value>" ] \
     && ! docker image inspect "$IMAGE:$have_ver" >/dev/null 2>&1; then
    docker tag "$IMAGE:latest" "$IMAGE:$have_ver"
  fi
  log "$IMAGE:latest already exists (R ${have_ver:-?}); nothing to do (use --force to rebuild)"
  exit 0
fi

start_ts=$(date +%s)

# --- mmdebstrap ------------------------------------------------------------
if ! command -v mmdebstrap >/dev/null; then
  log "installing mmdebstrap (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt_log="$(mktemp)"
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends mmdebstrap; } >"$apt_log" 2>&1; then
    cat "$apt_log" >&2; rm -f "$apt_log"; die "could not install mmdebstrap"
  fi
  rm -f "$apt_log"
fi

# --- package sources: the same mirror(s) as this machine's apt ---------------
# apt-get indextargets lists what /etc/apt/sources.list and sources.list.d/
# (one-line and deb822 formats) configure; keep the Debian suites of $SUITE.
sources=()
if [ -n "$MIRROR" ]; then
  sources=("deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main")
else
  # shellcheck disable=SC2016 # $(...) are apt's format fields, not shell
  fmt='$(TARGET_OF) $(REPO_URI) $(RELEASE) $(COMPONENT)'
  while read -r uri rel; do
    sources+=("deb $uri $rel main")
  done < <(apt-get indextargets --format "$fmt" \
             'Identifier: Packages' 2>/dev/null \
           | awk -v s="$SUITE" '$1 == "deb" && $4 == "main" &&
                 ($3 == s || $3 == s"-updates" || $3 == s"-security" || $3 == s"/updates") {print $2, $3}' \
           | sort -u)
fi
have_main=0
for s in "${sources[@]}"; do
  case "$s" in *" $SUITE main") have_main=1 ;; esac
done
[ "$have_main" -eq 1 ] || die "no '$SUITE main' Debian source in /etc/apt/sources.list*; pass --mirror URL"
for s in "${sources[@]}"; do log "source: $s"; done

# --- build the rootfs ----------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/rserve-base.XXXXXX")"
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'die "interrupted"' INT TERM

cp "$SCRIPT_DIR/Rserv.conf" "$TMP/Rserv.conf"
cp "$SCRIPT_DIR/rserve-healthcheck" "$TMP/rserve-healthcheck"

# Runs inside mmdebstrap's customize stage with the rootfs as $1 (still
# mounted, so chroot works): config, smoke test, version detection, trimming.
cat > "$TMP/customize.sh" <<'EOF'
#!/bin/sh
set -eu
root="$1"; out="$2"
install -m 0644 "$out/Rserv.conf" "$root/etc/Rserv.conf"
ln -sf Rserv.conf "$root/etc/Rserve.conf"          # run.Rserve()'s default path
install -m 0755 "$out/rserve-healthcheck" "$root/usr/local/bin/rserve-healthcheck"
mkdir -p "$root/app"
ln -sf /usr/share/zoneinfo/Etc/UTC "$root/etc/localtime"
echo Etc/UTC > "$root/etc/timezone"

# version of the Debian package (e.g. 4.2.2.20221110-2) and what R reports
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' r-base-core > "$out/r-base-core.deb-version"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Version}' r-cran-rserve > "$out/r-cran-rserve.deb-version"
chroot "$root" /usr/bin/Rscript --vanilla -e '
  suppressPackageStartupMessages(library(Rserve))
  stopifnot(is.function(Rserve::run.Rserve), is.function(Rserve::ocap))
  cat(format(getRversion()), format(packageVersion("Rserve")), "\n")' > "$out/r-reported"

# trim: files dpkg path-excludes cannot catch, and host leftovers.
# Never touch "$root/tmp": mmdebstrap keeps its apt config there, and without
# it its cleanup stage runs apt-get against the HOST (wiping its apt lists).
rm -rf "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old \
       "$root"/var/cache/ldconfig/aux-cache "$root"/var/log/apt/eipp.log.xz \
       "$root"/root/.cache
rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
EOF
chmod +x "$TMP/customize.sh"

# shellcheck disable=SC2016 # "$1" is expanded by mmdebstrap's hook shell
printf -v hook '%q "$1" %q' "$TMP/customize.sh" "$TMP"
log "building $SUITE rootfs with mmdebstrap (r-base-core, r-cran-rserve)"
mm_start=$(date +%s)
# minbase: Essential + Priority:required + apt, no Recommends.  The merged-usr
# hook sets up merged-/usr the debootstrap way (usr-is-merged), otherwise apt
# satisfies init-system-helpers' "usrmerge | usr-is-merged" with usrmerge,
# which drags in perl (~50 MB).  BLAS/LAPACK: Debian's reference libraries.
# The dpkg options stay in /etc/dpkg/dpkg.cfg.d/ so later apt installs in the
# image stay slim too; force-unsafe-io (no fsync per file, as in Debian's
# official Docker images) roughly halves the install time on a busy disk.
mmdebstrap \
  --mode=root \
  --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --format=tar \
  --include=r-base-core,r-cran-rserve,libblas3,liblapack3,ca-certificates,tzdata \
  --dpkgopt='force-unsafe-io' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/bug/*' \
  --customize-hook="$hook" \
  "$SUITE" "$TMP/rootfs.tar" "${sources[@]}"
log "rootfs done in $(( $(date +%s) - mm_start ))s ($(du -h "$TMP/rootfs.tar" | cut -f1) tar)"

# --- R version: Debian package version -> upstream x.y.z ------------------------
deb_ver="$(cat "$TMP/r-base-core.deb-version")"     # e.g. 4.2.2.20221110-2
upstream="${deb_ver#*:}"                              # drop epoch
upstream="${upstream%-*}"                             # drop Debian revision
R_VERSION="$(printf '%s\n' "$upstream" | grep -oE '^[0-9]+\.[0-9]+\.[0-9]+' || true)"
[ -n "$R_VERSION" ] || die "cannot derive an R version from r-base-core $deb_ver"
read -r r_reported rserve_version < "$TMP/r-reported"
[ "$r_reported" = "$R_VERSION" ] || die "R reports $r_reported but package version says $R_VERSION"
rserve_deb="$(cat "$TMP/r-cran-rserve.deb-version")"
log "R $R_VERSION (r-base-core $deb_ver), Rserve $rserve_version (r-cran-rserve $rserve_deb)"

# --- import ----------------------------------------------------------------
old_id="$(docker image inspect -f '{{.Id}}' "$IMAGE:latest" 2>/dev/null || true)"
log "importing into Docker as $IMAGE:$R_VERSION"
CMD_JSON='["Rscript","-e","source(\"/app/run_rserve.R\"); Rserve::run.Rserve(websockets.port = 8081L, websockets = TRUE, oob = TRUE, websockets.qap.oc = TRUE, qap = FALSE)"]'
docker import \
  --change 'WORKDIR /app' \
  --change 'EXPOSE 8081' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8 TZ=UTC' \
  --change "LABEL managed-by=rserve-proxy rserve-proxy.r-version=$R_VERSION rserve-proxy.rserve-version=$rserve_version rserve-proxy.base=debian-$SUITE rserve-proxy.r-base-core=$deb_ver" \
  --change 'HEALTHCHECK --interval=30s --timeout=10s --start-period=15s --retries=3 CMD ["/usr/local/bin/rserve-healthcheck"]' \
  --change "CMD $CMD_JSON" \
  --message "rserve-base: Debian $SUITE, R $R_VERSION, Rserve $rserve_version" \
  "$TMP/rootfs.tar" "$IMAGE:$R_VERSION" >/dev/null
docker tag "$IMAGE:$R_VERSION" "$IMAGE:latest"

# --- smoke test of the imported image ---------------------------------------------
docker run --rm --network none "$IMAGE:$R_VERSION" Rscript -e \
  'stopifnot(requireNamespace("Rserve", quietly = TRUE), getwd() == "/app", file.exists("/etc/Rserve.conf"))' \
  || die "smoke test of $IMAGE:$R_VERSION failed"

new_id="$(docker image inspect -f '{{.Id}}' "$IMAGE:latest")"
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ]; then
  if docker rmi "$old_id" >/dev/null 2>&1; then log "removed previous image ${old_id#sha256:}"; fi
fi
size="$(docker image inspect -f '{{.Size}}' "$IMAGE:latest")"
log "done in $(( $(date +%s) - start_ts ))s: $IMAGE:$R_VERSION and $IMAGE:latest ($(( size / 1000000 )) MB, ${new_id#sha256:})"
