#!/usr/bin/env python3
"""Spawner figures (issue #3), through the REST API of the release binary and the real
Docker daemon: start with a cached image until running (healthy) and until the API
shows it, stop until the containers are gone, rebuild of a code-only change, idle
memory of one hello replica.

Usage: python3 bench/spawner.py [--runs N] [--no-build]
Needs: Docker, the base image (images/rserve-base/build-from-debian.sh).
"""
import argparse, io, json, os, socket, statistics, subprocess, tarfile, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/rserve-proxy")
PW = "bench-password"


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


class Api:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.cookie = None

    def call(self, method, path, body=None, raw=None, ctype="application/json"):
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.base + path, method=method, data=data)
        if data is not None:
            req.add_header("content-type", ctype)
        if self.cookie:
            req.add_header("cookie", self.cookie)
        with urllib.request.urlopen(req, timeout=300) as r:
            if "set-cookie" in r.headers:
                self.cookie = r.headers["set-cookie"].split(";")[0]
            return json.loads(r.read() or b"null")

    def upload(self, app_id, files):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, text in files.items():
                data = text.encode()
                info = tarfile.TarInfo(name); info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        b = "----rspbench"
        body = (f"--{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"app.tar.gz\"\r\n"
                f"Content-Type: application/gzip\r\n\r\n").encode() + buf.getvalue() + f"\r\n--{b}--\r\n".encode()
        return self.call("POST", f"/api/apps/{app_id}/upload", raw=body, ctype=f"multipart/form-data; boundary={b}")


def wait(pred, limit=120, step=0.01):
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < limit:
        v = pred()
        if v:
            return time.perf_counter() - t0
        time.sleep(step)
    raise SystemExit("timed out")


def docker_ids(app_id):
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=rserve-proxy.app-id={app_id}",
                          "--filter", "label=rserve-proxy.replica"], capture_output=True, text=True, check=True).stdout
    return out.split()


def docker_healthy(app_id):
    ids = docker_ids(app_id)
    if not ids:
        return False
    out = subprocess.run(["docker", "inspect", "-f", "{{.State.Health.Status}}"] + ids,
                         capture_output=True, text=True).stdout.split()
    return bool(out) and all(s == "healthy" for s in out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-build", action="store_true")
    args = ap.parse_args()
    if not args.no_build:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "rserve-proxy"], cwd=ROOT, check=True)
    hello = open(os.path.join(ROOT, "examples/hello/run_rserve.R")).read()
    data = tempfile.mkdtemp(prefix="rsp-bench-spawner-")
    port = free_port()
    env = dict(os.environ, RSP_ADMIN_PASSWORD=PW, RSP_LOG_LEVEL="warn")
    proc = subprocess.Popen([BIN, "--data-dir", data, "--listen", f"127.0.0.1:{port}", "serve"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = Api(port)
    app_id = None
    try:
        wait(lambda: _try(lambda: api.call("GET", "/api/health")))
        api.call("POST", "/api/auth/login", {"username": "admin", "password": PW})
        app = api.call("POST", "/api/apps", {"name": "Bench", "slug": f"bench-{int(time.time())}"})["app"]
        app_id = app["id"]
        status = lambda: api.call("GET", f"/api/apps/{app_id}")["app"]["status"]
        api.upload(app_id, {"run_rserve.R": hello})
        t0 = time.perf_counter(); api.call("POST", f"/api/apps/{app_id}/start")
        first_build = time.perf_counter() - t0
        wait(lambda: status() == "running")
        api.call("POST", f"/api/apps/{app_id}/stop")

        start_api, start_docker, start_status, stop_gone = [], [], [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            api.call("POST", f"/api/apps/{app_id}/start")
            start_api.append(time.perf_counter() - t0)
            wait(lambda: docker_healthy(app_id), step=0.005)
            start_docker.append(time.perf_counter() - t0)
            wait(lambda: status() == "running", step=0.005)
            start_status.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            api.call("POST", f"/api/apps/{app_id}/stop")
            wait(lambda: not docker_ids(app_id), step=0.005)
            stop_gone.append(time.perf_counter() - t0)

        # Code-only change: start builds (COPY + check layers only), then replaces.
        rebuild, rebuild_healthy = [], []
        api.call("POST", f"/api/apps/{app_id}/start"); wait(lambda: status() == "running")
        for i in range(args.runs):
            api.upload(app_id, {"run_rserve.R": hello + f"\n# change {i} {time.time()}\n"})
            t0 = time.perf_counter()
            api.call("POST", f"/api/apps/{app_id}/start")
            rebuild.append(time.perf_counter() - t0)
            wait(lambda: status() == "running" and docker_healthy(app_id))
            rebuild_healthy.append(time.perf_counter() - t0)

        time.sleep(5)
        ids = docker_ids(app_id)
        mem = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}"] + ids,
                             capture_output=True, text=True, check=True).stdout.strip()
    finally:
        if app_id:
            _try(lambda: api.call("DELETE", f"/api/apps/{app_id}"))
        proc.terminate(); proc.wait(15)

    med = lambda xs: f"{statistics.median(xs)*1000:.0f} ms (min {min(xs)*1000:.0f}, max {max(xs)*1000:.0f})"
    print(f"runs: {args.runs}; {time.strftime('%Y-%m-%d')}; docker {subprocess.run(['docker','version','-f','{{.Server.Version}}'],capture_output=True,text=True).stdout.strip()}\n")
    print("| figure | median (min, max) |\n|---|---|")
    print(f"| first start of a new app (build of base + code layers), API answer | {first_build*1000:.0f} ms |")
    print(f"| start with cached image: API answers (containers created) | {med(start_api)} |")
    print(f"| start with cached image: until Docker reports all replicas healthy | {med(start_docker)} |")
    print(f"| start with cached image: until `GET /api/apps/:id` shows running | {med(start_status)} |")
    print(f"| stop: until the containers are gone | {med(stop_gone)} |")
    print(f"| code-only change: start answers (image built, replicas replaced) | {med(rebuild)} |")
    print(f"| code-only change: until running and healthy | {med(rebuild_healthy)} |")
    print(f"| idle memory of one hello replica (`docker stats`) | {mem} |")


def _try(f):
    try:
        return f()
    except Exception:
        return None


if __name__ == "__main__":
    main()
