#!/usr/bin/env python3
"""How fast the nginx plugin moves traffic after a catalog change, and what reloads cost clients.

Starts, all on 127.0.0.1 in a temp folder:
  - a backend nginx with four servers (b0..b3), each answering its own name;
  - a front nginx (one worker) whose upstream `web` comes from the plugin's file;
  - `waypost agent -dev` with ``plugins.nginx`` pointing at that file and that nginx.
b0 stays healthy; each change flips the check of one of b1..b3 through the HTTP API
(PUT /v1/catalog/register). Prints:
  1. change-to-serving latency, median/p95/max over --changes (20) changes on an idle proxy:
     from sending the PUT until a fresh request is answered by a new nginx worker (the front
     nginx adds its worker pid as X-Worker); that worker's answers are then checked, untimed,
     to reach exactly the healthy set;
  2. the same over --load-changes (100) changes back to back while --workers processes of
     each kind loop GETs through nginx (a new connection per request; keep-alive), with every
     failed request counted (status other than 200, or a connection error) and nginx's reload
     count. A keep-alive request that meets a connection nginx closed while retiring a
     worker is retried once on a new connection, as HTTP clients do; those are shown apart.
"Only the new config answers" comes about 100 ms after the first answer: nginx's master
starts the new workers, then waits 100 ms before telling the old ones to stop, and meanwhile
both take new connections.

    python bench/proxy_bench_nginx.py [--changes 20] [--load-changes 100] [--workers 2]

Needs nginx (Debian package: /usr/sbin/nginx).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.nginx_conf import nginx_conf, proxy_body  # noqa: E402  (shared with the tests)
BACKENDS = ["b0", "b1", "b2", "b3"]



def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


def start_nginx(nginx: str, prefix: Path, conf: str) -> tuple[subprocess.Popen, list[str]]:
    for sub in ("conf", "logs", "tmp"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    (prefix / "conf" / "nginx.conf").write_text(conf)
    args = ["-p", f"{prefix}/", "-c", str(prefix / "conf" / "nginx.conf")]
    with open(prefix / "logs" / "stderr", "wb") as err:
        proc = subprocess.Popen([nginx, *args, "-g", "daemon off;"],
                                stdout=subprocess.DEVNULL, stderr=err)
    return proc, args


def count_reloads(prefix: Path) -> int:
    """Reload signals the nginx master in `prefix` took (its error log is at notice level)."""
    return (prefix / "logs" / "error.log").read_text().count("(SIGHUP) received")


def get(port: int) -> tuple[int, str, str]:
    """One GET on a fresh connection: (status, body, pid of the nginx worker that answered)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        return r.status, r.read().decode(), r.headers.get("X-Worker", "")
    finally:
        conn.close()


def put(base: str, path: str, body: dict) -> None:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def register(base: str, name: str, port: int, status: str) -> None:
    put(base, "/v1/catalog/register", {
        "Node": name, "Address": "127.0.0.1",
        "Service": {"ID": name, "Service": "web", "Port": port},
        "Check": {"CheckID": "c-" + name, "Name": "alive", "Status": status, "ServiceID": name}})


def wait_new_worker(port: int, old: set[str], timeout: float = 10) -> str:
    """Poll with fresh requests until a worker not in `old` answers (the reloaded config)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        _, _, pid = get(port)
        if pid not in old:
            return pid
    raise SystemExit("nginx was not reloaded")


def wait_only(port: int, pid: str, expected: set[str], run: int = 30,
              timeout: float = 10) -> float:
    """When `run` fresh requests in a row were answered by worker `pid` alone.

    Returns the time of the first of them: from then on the old workers take no new
    connections. Checks that the run reached exactly `expected`, all with status 200.
    """
    deadline = time.perf_counter() + timeout
    streak: list[tuple[float, int, str]] = []
    while len(streak) < run:
        if time.perf_counter() > deadline:
            raise SystemExit(f"old nginx workers still answer after {timeout} s")
        now = time.perf_counter()
        status, body, who = get(port)
        streak = streak + [(now, status, body)] if who == pid else []
    if {s for _, s, _ in streak} != {200} or {b for _, _, b in streak} != expected:
        raise SystemExit(f"nginx serves {sorted({b for _, _, b in streak})}, "
                         f"wanted {sorted(expected)}")
    return streak[0][0]


def settle(port: int, expected: set[str], timeout: float = 10) -> set[str]:
    """Wait (idle proxy) until one worker answers 12 requests with exactly `expected`.

    Returns the worker pids seen, for `wait_new_worker`.
    """
    pids: set[str] = set()
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        answers = [get(port) for _ in range(12)]
        pids |= {pid for _, _, pid in answers}
        if len({pid for _, _, pid in answers}) == 1 and all(s == 200 for s, _, _ in answers) \
                and {body for _, body, _ in answers} == expected:
            return pids
        time.sleep(0.05)
    raise SystemExit(f"nginx did not converge on {sorted(expected)}")


def load_worker(port: int, keepalive: bool, stop, results) -> None:
    """GET through nginx until `stop`; put (kind, requests, failures, resets, first failure).

    With keep-alive, a request that fails on a reused connection (nginx closed it while
    retiring a worker) is retried once on a new one, as HTTP clients do for idempotent
    requests; such a request counts under resets, and under failures only if the retry fails.
    """
    done = failed = resets = 0
    first = ""
    conn = None
    while not stop.is_set():
        for attempt in (1, 2):
            reused = conn is not None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", "/")
                r = conn.getresponse()
                r.read()
                if r.status != 200:
                    failed += 1
                    first = first or f"status {r.status}"
                if not keepalive or r.will_close:
                    conn.close()
                    conn = None
                break
            except (OSError, http.client.HTTPException) as e:
                if conn is not None:
                    conn.close()
                conn = None
                if reused and attempt == 1:
                    resets += 1
                    continue
                failed += 1
                first = first or repr(e)
                break
        done += 1
    results.put(("keep-alive" if keepalive else "new connection", done, failed, resets, first))


def run_changes(base: str, front: int, ports: dict[str, int], healthy: set[str], count: int,
                workers: set[str], pause: float) -> tuple[list[float], list[float]]:
    """Flip b1..b3 in turn, `pause` s apart; per change (ms from sending the PUT): when a new
    nginx worker first answered, and when only new workers answered (exactly the new set)."""
    first, only = [], []
    for k in range(count):
        time.sleep(pause)
        name = BACKENDS[1 + k % 3]
        status = "critical" if name in healthy else "passing"
        healthy ^= {name}
        started = time.perf_counter()
        register(base, name, ports[name], status)
        pid = wait_new_worker(front, workers)
        first.append((time.perf_counter() - started) * 1000)
        only.append((wait_only(front, pid, set(healthy)) - started) * 1000)
        workers.add(pid)
    return first, only


def summary(times: list[float]) -> str:
    ordered = sorted(times)
    p95 = ordered[max(0, round(0.95 * len(ordered)) - 1)]
    return (f"median {statistics.median(ordered):6.1f} ms, p95 {p95:6.1f} ms, "
            f"max {ordered[-1]:6.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--load-changes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2, help="load processes of each kind")
    parser.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    opts = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="nginx-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        ports = {name: free_port() for name in BACKENDS}
        servers = "\n".join(
            f"    server {{ listen 127.0.0.1:{p}; location / {{ return 200 \"{n}\"; }} }}"
            for n, p in ports.items())
        back, _ = start_nginx(opts.nginx, tmp / "back",
                              nginx_conf(tmp / "back", servers, log_level="warn"))
        procs.append(back)
        front_port = free_port()
        upstreams = tmp / "front" / "conf" / "waypost-upstreams.conf"
        upstreams.parent.mkdir(parents=True)
        upstreams.write_text("upstream web { server 127.0.0.1:1 down; }\n")
        front, front_args = start_nginx(opts.nginx, tmp / "front", nginx_conf(
            tmp / "front", proxy_body(upstreams, front_port,
                                      "        add_header X-Worker $pid always;\n")))
        procs.append(front)
        for port in list(ports.values()) + [front_port]:
            wait_port(port, front if port == front_port else back, "nginx")

        http_port = free_port()
        config = tmp / "agent.json"
        config.write_text(json.dumps({"plugins": {"nginx": {
            "upstreams_file": str(upstreams), "nginx_binary": opts.nginx,
            "nginx_args": front_args, "services": ["web"]}}}))
        agent = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli.main", "agent", "-dev", "-node", "bench",
             "-http-port", str(http_port), "-dns-port", str(free_port()), "-log-level", "warn",
             "-config-file", str(config)],
            cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.DEVNULL, stderr=open(tmp / "agent.log", "wb"))
        procs.append(agent)
        wait_port(http_port, agent, "agent")
        base = f"http://127.0.0.1:{http_port}"
        healthy = set(BACKENDS)
        for name in BACKENDS:
            register(base, name, ports[name], "passing")
        workers = settle(front_port, healthy)
        reloads_before = count_reloads(tmp / "front")

        first, only = run_changes(base, front_port, ports, healthy, opts.changes, workers, 0.5)
        print(f"idle proxy, changes 0.5 s apart (n={opts.changes}):")
        print(f"  change -> first answer from the new config:  {summary(first)}")
        print(f"  change -> only the new config answers:       {summary(only)}")

        ctx = multiprocessing.get_context("fork")
        stop, results = ctx.Event(), ctx.Queue()
        loaders = [ctx.Process(target=load_worker, args=(front_port, keepalive, stop, results))
                   for keepalive in (False, True) for _ in range(opts.workers)]
        for w in loaders:
            w.start()
        time.sleep(0.5)
        first, only = run_changes(base, front_port, ports, healthy, opts.load_changes, workers, 0)
        stop.set()
        outcomes = [results.get(timeout=30) for _ in loaders]
        for w in loaders:
            w.join()
        print(f"under load, changes back to back (n={opts.load_changes}):")
        print(f"  change -> first answer from the new config:  {summary(first)}")
        print(f"  change -> only the new config answers:       {summary(only)}")
        reloads = count_reloads(tmp / "front")
        print(f"nginx reloads during the two runs: {reloads - reloads_before} "
              f"for {opts.changes + opts.load_changes} changes")
        for kind in ("new connection", "keep-alive"):
            rows = [o for o in outcomes if o[0] == kind]
            total, failed = sum(o[1] for o in rows), sum(o[2] for o in rows)
            resets = sum(o[3] for o in rows)
            first = next((o[4] for o in rows if o[4]), "")
            retried = f", {resets} closed keep-alive connections retried" if resets else ""
            print(f"load ({kind}, {len(rows)} processes): {total} requests, {failed} failed"
                  + (f" (first: {first})" if first else "") + retried)
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
