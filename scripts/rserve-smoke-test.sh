#!/usr/bin/env bash
# rserve-smoke-test.sh -- end-to-end check that an R app answers OCAP calls
# over WebSocket, both with the host's R and inside the rserve-base image.
#
# Usage: scripts/rserve-smoke-test.sh [--host] [--docker] [--image IMG] [--app DIR]
#   default: --host --docker, IMG=rserve-base:latest, DIR=examples/hello
#
# Each target starts Rserve exactly the way rserve-proxy does (source
# run_rserve.R, then run.Rserve(websockets.port=..., websockets=TRUE, oob=TRUE,
# websockets.qap.oc=TRUE, qap=FALSE)) on a free port bound to 127.0.0.1 (Docker:
# -p 127.0.0.1:PORT:8081), runs scripts/rserve_ocap_probe.py against it
# (RsOC greeting, add(3,4)=7, greet, sysinfo, error path), and stops it.
# The probe's checks are specific to examples/hello; for another app use
# --greeting-only semantics by setting PROBE_ARGS=--greeting-only.
# Ends with a "N passed, N failed" line; exit code 1 if anything failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
IMAGE="rserve-base:latest"
APP="$ROOT/examples/hello"
DO_HOST=0
DO_DOCKER=0
read -ra PROBE_ARGS <<< "${PROBE_ARGS:-}"

while [ $# -gt 0 ]; do
  case "$1" in
    --host) DO_HOST=1 ;;
    --docker) DO_DOCKER=1 ;;
    --image) IMAGE="$2"; shift ;;
    --app) APP="$(cd "$2" && pwd)"; shift ;;
    -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
  shift
done
if [ "$DO_HOST" -eq 0 ] && [ "$DO_DOCKER" -eq 0 ]; then DO_HOST=1; DO_DOCKER=1; fi

run_expr() {  # script path, port
  printf 'source("%s"); Rserve::run.Rserve(websockets.port = %sL, websockets = TRUE, oob = TRUE, websockets.qap.oc = TRUE, qap = FALSE)' "$1" "$2"
}

# a python3 that has websocket-client (Debian's python3-websocket lives in /usr/bin/python3)
PY=""
for c in /usr/bin/python3 python3; do
  if command -v "$c" >/dev/null 2>&1 && "$c" -c 'import websocket' 2>/dev/null; then PY="$c"; break; fi
done
[ -n "$PY" ] || { echo "no python3 with websocket-client (apt-get install python3-websocket)" >&2; exit 1; }
PROBE="$ROOT/scripts/rserve_ocap_probe.py"

passed=0
failed=0
HOST_PID=""
CONTAINER=""
TMPD="$(mktemp -d)"
cleanup() {
  if [ -n "$HOST_PID" ]; then kill "$HOST_PID" 2>/dev/null || true; wait "$HOST_PID" 2>/dev/null || true; fi
  if [ -n "$CONTAINER" ]; then docker rm -f "$CONTAINER" >/dev/null 2>&1 || true; fi
  rm -rf "$TMPD"
}
trap cleanup EXIT

free_port() {
  "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# wait until the greeting arrives (a bare TCP connect is not enough: docker-proxy
# accepts connections before Rserve listens)
wait_ready() {
  local url="$1"
  for _ in $(seq 1 60); do
    if "$PY" "$PROBE" --greeting-only "$url" >/dev/null 2>&1; then return 0; fi
    sleep 0.5
  done
  return 1
}

check() {  # name, command...
  local name="$1"; shift
  if "$@"; then echo "PASS $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}

if [ "$DO_HOST" -eq 1 ]; then
  port="$(free_port)"
  echo "== host R: $(R --version | head -1), app $APP, port $port"
  # run.Rserve's WebSocket listener binds 0.0.0.0 (Rserve 1.8 has no bind option)
  (cd "$APP" && exec R --no-save --no-echo -e "$(run_expr "$APP/run_rserve.R" "$port")") \
    > "$TMPD/host.log" 2>&1 &
  HOST_PID=$!
  if wait_ready "ws://127.0.0.1:$port/"; then
    check "host: OCAP calls" "$PY" "$PROBE" "${PROBE_ARGS[@]}" "ws://127.0.0.1:$port/"
  else
    check "host: Rserve came up" false
    cat "$TMPD/host.log" >&2
  fi
  kill "$HOST_PID" 2>/dev/null || true
  wait "$HOST_PID" 2>/dev/null || true
  HOST_PID=""
fi

if [ "$DO_DOCKER" -eq 1 ]; then
  if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "image $IMAGE not found; build it with images/rserve-base/build-from-debian.sh" >&2
    check "docker: image $IMAGE exists" false
  else
    port="$(free_port)"
    CONTAINER="rserve-smoke-$$"
    echo "== docker: $IMAGE (R $(docker image inspect -f '{{ index .Config.Labels "rserve-proxy.r-version" }}' "$IMAGE")), port 127.0.0.1:$port"
    docker run -d --name "$CONTAINER" -v "$APP:/app:ro" -p "127.0.0.1:$port:8081" \
      "$IMAGE" Rscript -e "$(run_expr /app/run_rserve.R 8081)" >/dev/null
    if wait_ready "ws://127.0.0.1:$port/"; then
      check "docker: OCAP calls" "$PY" "$PROBE" "${PROBE_ARGS[@]}" "ws://127.0.0.1:$port/"
      check "docker: rserve-healthcheck" docker exec "$CONTAINER" /usr/local/bin/rserve-healthcheck
      echo "   idle: $(docker stats --no-stream --format '{{.MemUsage}} pids={{.PIDs}}' "$CONTAINER")"
    else
      check "docker: Rserve came up" false
      docker logs "$CONTAINER" >&2 || true
    fi
    start=$(date +%s%N)
    docker stop -t 10 "$CONTAINER" >/dev/null
    echo "   docker stop took $(( ($(date +%s%N) - start) / 1000000 )) ms"
    check "docker: clean exit on SIGTERM" test "$(docker inspect -f '{{.State.ExitCode}}' "$CONTAINER")" = 0
    docker rm "$CONTAINER" >/dev/null
    CONTAINER=""
  fi
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
