#!/usr/bin/env python3
"""User-space instructions per proxied WebSocket round trip: rserve-proxy vs nginx.

Each proxy runs under `valgrind --tool=callgrind` (it counts instructions, not time, so
the figure repeats run after run whatever else the machine does). The same echo workload
(wsbench, 1 connection, 64-byte messages) is sent twice, to two fresh starts: once with
N messages and once with N + EXTRA; the difference of the two totals divided by EXTRA is
the cost of one round trip (client → proxy → backend → proxy → client), with start-up,
connection set-up and shutdown cancelled out. Kernel time (the syscalls themselves) is
not counted: both proxies make the same syscalls per message (2 epoll_wait, 2 recvfrom,
2 sendto; check with `strace -c -f`).

    python3 bench/instructions.py              # rserve-proxy (target/release) and nginx
    python3 bench/instructions.py --extra 10000

Needs valgrind and nginx (Debian: installed when missing) and the release builds of
rserve-proxy and wsbench (`cargo build --release --bin rserve-proxy --example wsbench`).
"""
import argparse, json, os, re, shutil, signal, subprocess, sys, tempfile, time, urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dataplane  # noqa: E402 - the nginx configuration is shared with the harness

WSBENCH, RSP_BIN, free_port = dataplane.WSBENCH, dataplane.RSP_BIN, dataplane.free_port


def wait_http(port, path, secs=60):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1).read()
            return
        except Exception as e:  # noqa: BLE001 - any answer (even 4xx/5xx) means "up"
            if hasattr(e, "code"):
                return
            time.sleep(0.3)
    raise SystemExit(f"nothing answers on port {port} after {secs}s")


def rtt(port, msgs):
    r = subprocess.run([WSBENCH, "rtt", "--url", f"ws://127.0.0.1:{port}/echo/", "--conns", "1",
                        "--msgs", str(msgs), "--warmup", "0", "--timeout-secs", "300"],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or f'"messages":{msgs}' not in r.stdout:
        raise SystemExit(f"wsbench failed: {r.stderr[-400:]}")


def callgrind_total(cmd, env, port, msgs, stop_sig, tmp):
    log = os.path.join(tmp, f"cg-{port}.log")
    p = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.%p", *cmd],
                         env=env, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        wait_http(port, "/echo/")
        rtt(port, msgs)
        time.sleep(0.5)
    finally:
        p.send_signal(stop_sig)
        p.wait(60)
    with open(log) as f:
        m = re.search(r"Collected : ([\d,]+)", f.read())
    if not m:
        raise SystemExit(f"no callgrind total in {log}")
    return int(m.group(1).replace(",", ""))


def rserve_proxy(tmp, bport):
    def run(msgs):
        port = free_port()
        data = tempfile.mkdtemp(dir=tmp)
        env = dict(os.environ, RSP_ADMIN_PASSWORD="bench-password-1", RSP_LOG_LEVEL="warn",
                   RSP_THREADS="2", RSP_SHUTDOWN_GRACE_SECS="0",
                   RSP_STATIC_ROUTES=f"echo=127.0.0.1:{bport}")
        cmd = [RSP_BIN, "--data-dir", data, "--listen", f"127.0.0.1:{port}", "serve"]
        return callgrind_total(cmd, env, port, msgs, signal.SIGTERM, tmp)
    return run


def nginx(tmp, bport):
    def run(msgs):
        port = free_port()
        d = tempfile.mkdtemp(dir=tmp)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(dataplane.nginx_conf(d, port, bport, single=True))
        return callgrind_total(["nginx", "-p", d, "-c", conf], dict(os.environ), port, msgs,
                               signal.SIGQUIT, tmp)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", type=int, default=100, help="messages in the short run")
    ap.add_argument("--extra", type=int, default=5000, help="extra messages in the long run")
    args = ap.parse_args()
    missing = [p for p, b in (("valgrind", "valgrind"), ("nginx", "nginx")) if not shutil.which(b)]
    if missing:
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True)
    for f in (WSBENCH, RSP_BIN):
        if not os.path.exists(f):
            raise SystemExit(f"{f} missing: cargo build --release --bin rserve-proxy --example wsbench")
    tmp = tempfile.mkdtemp(prefix="rsp-instr-")
    backend = subprocess.Popen([WSBENCH, "echo", "--listen", "127.0.0.1:0", "--max-secs", "3600"],
                               stdout=subprocess.PIPE, text=True)
    try:
        bport = int(json.loads(backend.stdout.readline())["addr"].rsplit(":", 1)[1])
        rows = []
        for name, make in (("rserve-proxy", rserve_proxy), ("nginx", nginx)):
            run = make(tmp, bport)
            short, long = run(args.base), run(args.base + args.extra)
            per = (long - short) / args.extra
            print(f"  {name}: {short:,} / {long:,} instructions -> {per:,.0f} per round trip",
                  file=sys.stderr)
            rows.append((name, per))
        nginx_per = dict(rows)["nginx"]
        print(f"| proxy | user-space instructions per round trip | vs nginx |\n|---|---|---|")
        for name, per in rows:
            print(f"| {name} | {per:,.0f} | {per / nginx_per:.2f} |")
        print(f"\n`python3 bench/instructions.py --base {args.base} --extra {args.extra}`; "
              f"valgrind {subprocess.run(['valgrind', '--version'], capture_output=True, text=True).stdout.strip()}")
    finally:
        backend.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
