#!/usr/bin/env python3
"""How fast the HAProxy plugin moves traffic after a catalog change, and what changes cost clients.

Starts, all on 127.0.0.1 in a temp folder (the same environment as tests/test_haproxy.py):
  - HTTP servers b0..b11 (threads in this process), each answering its own name;
  - `haproxy -W -S` (master-worker) with contrib/haproxy/haproxy.cfg, paths and ports rewritten;
  - `waypost agent -dev` with contrib/haproxy/waypost-haproxy.json pointed at that HAProxy.
b0 stays registered; each change registers or deregisters one of b1..b3 through the HTTP API
(PUT /v1/agent/service/register, /deregister). Prints:
  1. change-to-applied latency, median/p95/max over --changes (20) changes on an idle proxy:
     from sending the PUT until HAProxy's runtime state (``show servers state``, polled) has
     the slot enabled or disabled, i.e. from when new connections follow the new set; for
     the registrations, also until a fresh request is first answered by the new instance.
     Every change is then checked, untimed, to serve exactly the registered set;
  2. failed requests (status other than 200, or a connection error) while --workers threads
     loop GETs through HAProxy without keep-alive during --load-changes (100) changes, and
     HAProxy's reload count (0: all through the runtime API);
  3. the reload path: registering instances past the backend's 10 slots, the time until all
     are served (render + haproxy -c + seamless reload + runtime API) and failed requests
     under the same load meanwhile.

    python bench/proxy_bench.py [--changes 20] [--load-changes 100] [--workers 2] [--haproxy-only]

Then, unless --haproxy-only, runs bench/proxy_bench_nginx.py with the same counts for the
nginx (reload) path, so one command prints the figures of both paths.

Needs haproxy and nginx (Debian packages).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from plugins.haproxy.plan import READY  # noqa: E402
from tests.test_haproxy import (  # noqa: E402
    CONTRIB,
    HAPROXY,
    Backends,
    HAProxyProcess,
    LoadLoop,
    LoggedAgent,
    get,
    register,
    wait_served,
)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (f"median {statistics.median(ms):7.1f} ms   p95 {percentile(ms, 95):7.1f} ms   "
            f"max {max(ms):7.1f} ms   (n={len(ms)})")


def poll_state(haproxy: HAProxyProcess, port: int, enabled: bool, timeout: float = 10.0) -> float:
    """Poll the runtime state until the slot of `port` is READY (or no slot is); the time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        live = {s.port for s in haproxy.slots("web") if s.state == READY}
        if (port in live) == enabled:
            return time.monotonic()
        time.sleep(0.001)
    raise SystemExit(f"HAProxy did not {'enable' if enabled else 'disable'} port {port}")


def first_answer(haproxy: HAProxyProcess, name: str, timeout: float = 10.0) -> float:
    """Loop fresh requests until `name` answers one; the time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = get(haproxy.port)
        if status == 200 and body == name:
            return time.monotonic()
    raise SystemExit(f"{name} was never served")


class Flipper:
    """Registers and deregisters b1..b3 in turn; b0 stays."""

    def __init__(self, agent: LoggedAgent, backends: Backends) -> None:
        self.agent = agent
        self.ports = {f"b{i}": backends.get(f"b{i}") for i in range(4)}
        self.up = {"b0"}
        self.turn = 0
        register(agent, "web", "b0", self.ports["b0"])

    def flip(self) -> tuple[str, bool]:
        """One change; (instance, registered?)."""
        sid = f"b{1 + self.turn % 3}"
        self.turn += 1
        if sid in self.up:
            self.agent.request("PUT", f"/v1/agent/service/deregister/{sid}")
            self.up.discard(sid)
            return sid, False
        register(self.agent, "web", sid, self.ports[sid])
        self.up.add(sid)
        return sid, True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--changes", type=int, default=20)
    parser.add_argument("--load-changes", type=int, default=100)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    backends = Backends()
    agent = LoggedAgent(directory / "agent.log")
    haproxy = HAProxyProcess(directory, dns_port=agent.dns_port, inter="2s").start()
    config = json.loads((CONTRIB / "waypost-haproxy.json").read_text())
    config["plugins"]["haproxy"].update(haproxy.plugin_paths())
    (directory / "agent.json").write_text(json.dumps(config))
    agent.args += ["-config-file", str(directory / "agent.json")]
    agent.start()
    try:
        flipper = Flipper(agent, backends)
        wait_served(haproxy, {"b0"})
        print(f"HAProxy plugin, runtime API path (HAProxy {haproxy_version()}, "
              f"logs in {directory})")

        applied, answered = [], []
        for _ in range(args.changes):
            start = time.monotonic()
            sid, registered = flipper.flip()
            applied.append(poll_state(haproxy, flipper.ports[sid], registered) - start)
            if registered:
                answered.append(first_answer(haproxy, sid) - start)
            wait_served(haproxy, set(flipper.up))
        print(f"  change -> applied in HAProxy        {summary(applied)}")
        print(f"  register -> first answer from it    {summary(answered)}")

        reloads = haproxy.reloads()
        loads = [LoadLoop(haproxy.port) for _ in range(args.workers)]
        started = time.monotonic()
        for load in loads:
            load.__enter__()
        for _ in range(args.load_changes):
            flipper.flip()
            time.sleep(0.02)
        wait_served(haproxy, set(flipper.up))
        for load in loads:
            load.__exit__(None, None, None)
        took = time.monotonic() - started
        ok = sum(load.ok for load in loads)
        failed = [f for load in loads for f in load.failures]
        print(f"  {args.load_changes} changes under load ({args.workers} loops, no keep-alive): "
              f"{ok} requests ok ({ok / took:.0f}/s), {len(failed)} failed, "
              f"{haproxy.reloads() - reloads} reloads")
        for failure in failed[:5]:
            print(f"    {failure}")

        print("Reload path (more instances than slots)")
        names = sorted(flipper.up)
        extra = [f"x{i}" for i in range(11 - len(names))]
        for sid in extra[:-1]:
            register(agent, "web", sid, backends.get(sid))
        wait_served(haproxy, set(names + extra[:-1]))
        reloads = haproxy.reloads()
        loads = [LoadLoop(haproxy.port) for _ in range(args.workers)]
        for load in loads:
            load.__enter__()
        start = time.monotonic()
        register(agent, "web", extra[-1], backends.get(extra[-1]))
        took = first_answer(haproxy, extra[-1]) - start
        wait_served(haproxy, set(names + extra))
        time.sleep(0.5)
        for load in loads:
            load.__exit__(None, None, None)
        failed = [f for load in loads for f in load.failures]
        print(f"  11th instance on 10 slots -> served {took * 1000:7.1f} ms "
              f"({haproxy.reloads() - reloads} reload, now {len(haproxy.slots('web'))} slots); "
              f"{sum(load.ok for load in loads)} requests ok, {len(failed)} failed")
        for failure in failed[:5]:
            print(f"    {failure}")
    finally:
        agent.stop()
        haproxy.stop()
        backends.close()


def haproxy_version() -> str:
    out = subprocess.run([HAPROXY, "-v"], capture_output=True, text=True, check=False).stdout
    return out.split()[2] if out else "?"


def run_nginx_part(argv: list[str]) -> None:
    """The nginx path, measured by its own script with the same counts."""
    import sys
    from pathlib import Path
    wanted = [a for a in argv if a != "--haproxy-only"]
    print("\n--- nginx (reload path) ---", flush=True)
    subprocess.run([sys.executable, str(Path(__file__).with_name("proxy_bench_nginx.py")),
                    *wanted], check=False)


if __name__ == "__main__":
    import sys
    only = "--haproxy-only" in sys.argv
    sys.argv = [a for a in sys.argv if a != "--haproxy-only"]
    main()
    if not only:
        run_nginx_part(sys.argv[1:])
