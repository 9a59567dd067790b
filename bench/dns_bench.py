#!/usr/bin/env python3
"""DNS queries per second: Waypost against dnsmasq (and, with --consul, a real Consul).

Every server runs pinned to core 0 (`taskset -c 0`); dnsperf loads it from core 1 over UDP
(8 clients, 200 queries outstanding) for a fixed time. The catalog: 20 instances of `api`
(one per node, registered through /v1/catalog/register) and one instance of `web`. Queries:

  (a) web.service.consul A     service lookup, answered from the agent's answer cache
  (b) web.service.consul A     the same with the cache off: plugins.dns.answer_cache false
  (c) api.service.consul SRV   20 instances (UDP: 3 answers, Consul's udp_answer_limit)
  (d) oracle.node.consul A     node lookup

dnsmasq answers the same names from a hosts file and --srv-host lines: the ceiling for a
server doing no work per query beyond a table lookup.

    python bench/dns_bench.py                              # Waypost and dnsmasq
    python bench/dns_bench.py --consul /tmp/oracle/bin/consul   # and a consul binary

Needs dnsperf and dnsmasq (Debian packages) and two cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from http_bench import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
API_INSTANCES = 20
QUERIES = [  # (label, name, type, needs the uncached agent)
    ("(a) web.service.consul A", "web.service.consul", "A", False),
    ("(b) same, answer cache off", "web.service.consul", "A", True),
    ("(c) api.service.consul SRV (20)", "api.service.consul", "SRV", False),
    ("(d) oracle.node.consul A", "oracle.node.consul", "A", False),
]


def wait_http(port: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"agent exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/status/leader",
                                        timeout=1) as r:
                if json.loads(r.read()):
                    return
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("agent did not start")


def wait_dns(port: int, proc: subprocess.Popen) -> None:
    """Until the server answers one query (any answer): its UDP socket is up."""
    # ID 1, RD, one question: probe.invalid A IN (any answer will do, even REFUSED).
    query = (b"\x00\x01\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
             b"\x05probe\x07invalid\x00\x00\x01\x00\x01")
    deadline = time.monotonic() + 30
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            s.sendto(query, ("127.0.0.1", port))
            try:
                s.recv(512)
                return
            except socket.timeout:
                continue
    proc.kill()
    raise SystemExit(f"nothing answers DNS on port {port}")


def start_agent(consul: str | None, tmp: Path, config: dict | None = None):
    """An agent named `oracle` on core 0; returns (process, http port, dns port)."""
    http, dns = free_port(), free_port()
    if consul:
        cmd = [consul, "agent", "-dev", "-node", "oracle", "-http-port", str(http),
               "-dns-port", str(dns), "-serf-lan-port", str(free_port()),
               "-serf-wan-port", str(free_port()), "-server-port", str(free_port()),
               "-grpc-port", str(free_port()), "-log-level", "err",
               "-data-dir", tempfile.mkdtemp(prefix="consul-dns-bench-", dir=tmp)]
    else:
        cmd = [sys.executable, "-m", "gateway.cli.main", "agent", "-dev", "-node", "oracle",
               "-http-port", str(http), "-dns-port", str(dns), "-log-level", "error"]
        if config:
            path = tmp / f"agent-{http}.json"
            path.write_text(json.dumps(config))
            cmd += ["-config-file", str(path)]
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    wait_http(http, proc)
    seed(f"http://127.0.0.1:{http}")
    wait_dns(dns, proc)
    return proc, http, dns


def put(base: str, path: str, body: dict) -> None:
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="PUT")
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()


def seed(base: str) -> None:
    for i in range(API_INSTANCES):
        put(base, "/v1/catalog/register", {
            "Node": f"node{i}", "Address": f"10.1.0.{i + 1}",
            "Service": {"ID": f"api{i}", "Service": "api", "Port": 8000 + i},
            "Check": {"CheckID": f"api{i}", "Name": "api alive", "Status": "passing",
                      "ServiceID": f"api{i}"}})
    put(base, "/v1/catalog/register", {
        "Node": "webnode", "Address": "10.0.1.1",
        "Service": {"ID": "web1", "Service": "web", "Port": 80}})


def start_dnsmasq(tmp: Path):
    """dnsmasq on core 0 answering the same names from a hosts file; (process, port)."""
    hosts = tmp / "hosts"
    hosts.write_text("10.0.1.1 web.service.consul\n127.0.0.1 oracle.node.consul\n"
                     + "".join(f"10.1.0.{i + 1} node{i}.node.dc1.consul\n"
                               for i in range(API_INSTANCES)))
    port = free_port()
    cmd = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
           "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
           f"--addn-hosts={hosts}", f"--pid-file={tmp / 'dnsmasq.pid'}"]
    cmd += [f"--srv-host=api.service.consul,node{i}.node.dc1.consul,{8000 + i},1,1"
            for i in range(API_INSTANCES)]
    proc = subprocess.Popen(["taskset", "-c", "0", *cmd], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_dns(port, proc)
    return proc, port


def dnsperf(port: int, datafile: Path, seconds: int) -> float:
    out = subprocess.run(["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port),
                          "-d", str(datafile), "-l", str(seconds), "-c", "8", "-q", "200",
                          "-Q", "200000"],
                         capture_output=True, text=True, check=True).stdout
    qps = re.search(r"Queries per second:\s+([\d.]+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    # A fast wrong answer is not a result: every answer must be NOERROR.
    if qps is None or codes is None or not re.match(r"NOERROR \d+ \(100\.00%\)",
                                                      codes.group(1)):
        raise SystemExit(f"dnsperf against port {port} ({datafile.name}):\n{out}")
    return float(qps.group(1))


def measure(port: int, files: dict[str, Path], labels: list[str], seconds: int) -> dict:
    results = {}
    for label in labels:
        dnsperf(port, files[label], 2)  # warm up
        results[label] = dnsperf(port, files[label], seconds)
    return results


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--consul", help="path to a consul binary to measure as well")
    parser.add_argument("--seconds", type=int, default=10, help="length of each measured run")
    args = parser.parse_args()
    for tool in ("dnsperf", "dnsmasq", "taskset"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: apt-get install {tool}")

    with tempfile.TemporaryDirectory(prefix="dns-bench-") as name:
        tmp = Path(name)
        files = {}
        for label, qname, qtype, _ in QUERIES:
            path = tmp / f"query-{len(files)}.txt"
            path.write_text(f"{qname} {qtype}\n")
            files[label] = path
        cached = [label for label, *_, uncached in QUERIES if not uncached]
        uncached = [label for label, *_, uncached in QUERIES if uncached]
        same_as = {label: cached[0] for label in uncached}  # other servers have no such mode

        waypost: dict[str, float] = {}
        proc, _, port = start_agent(None, tmp)
        try:
            waypost.update(measure(port, files, cached, args.seconds))
        finally:
            stop(proc)
        proc, _, port = start_agent(None, tmp, {"plugins": {"dns": {"answer_cache": False}}})
        try:
            waypost.update(measure(port, files, uncached, args.seconds))
        finally:
            stop(proc)

        proc, port = start_dnsmasq(tmp)
        try:
            dnsmasq = measure(port, files, cached, args.seconds)
        finally:
            stop(proc)

        consul: dict[str, float] = {}
        if args.consul:
            proc, _, port = start_agent(args.consul, tmp)
            try:
                consul = measure(port, files, cached, args.seconds)
            finally:
                stop(proc)

    header = f"{'query':34s} {'waypost q/s':>12s} {'dnsmasq q/s':>12s} {'ratio':>6s}"
    if consul:
        header += f" {'consul q/s':>11s} {'ratio':>6s}"
    print(header)
    for label, *_ in QUERIES:
        other = same_as.get(label, label)
        row = (f"{label:34s} {waypost[label]:12.0f} {dnsmasq[other]:12.0f} "
               f"{waypost[label] / dnsmasq[other]:6.2f}")
        if consul:
            row += f" {consul[other]:11.0f} {waypost[label] / consul[other]:6.2f}"
        print(row)
    print("ratio = waypost / the other server; (b) is compared with the others' (a) figure "
          "(they cache nothing of their own to turn off)")


if __name__ == "__main__":
    main()
