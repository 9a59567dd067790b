"""Real server processes in one Raft cluster: formation, and no acknowledged write lost when
the leader is SIGKILLed under load (3 servers, and 5 servers losing two leaders in a row).

Each test runs against Waypost and, as the reference for the test itself, against a real
Consul 1.8.7 (skipped with a visible reason when there is no binary). Both run with
``raft_multiplier = 1`` (Consul's production recommendation) so an election takes about a
second or two rather than Consul's development default of about fifteen.
"""

from __future__ import annotations

import base64
import json
import threading
import time

import pytest

from tests.consulproc import NO_CONSUL, consul_binary
from tests.servercluster import ClusterError, ServerCluster

FAST_RAFT = {"performance": {"raft_multiplier": 1}}
PREFIX = "load"


@pytest.fixture(params=["waypost", "consul"])
def make_cluster(request, tmp_path):
    """make_cluster(n) -> a started ServerCluster of `n` servers, stopped after the test."""
    if request.param == "consul" and consul_binary() is None:
        pytest.skip(NO_CONSUL)
    clusters: list[ServerCluster] = []

    def make(n: int) -> ServerCluster:
        cluster = ServerCluster(n, tmp_path, binary=request.param, config=FAST_RAFT)
        clusters.append(cluster)
        return cluster.start()
    yield make
    for cluster in clusters:
        cluster.stop()


class WriteLoad:
    """Writer threads PUTting unique keys to the live servers in turn, keeping every key
    whose write was acknowledged (200 and ``true``) with its value."""

    def __init__(self, cluster: ServerCluster, threads: int = 4) -> None:
        self.cluster = cluster
        self.acked: dict[str, bytes] = {}
        self.failed = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(t,), daemon=True)
                         for t in range(threads)]

    def __enter__(self) -> "WriteLoad":
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def _write(self, t: int) -> None:
        n = 0
        while not self._stopping.is_set():
            live = self.cluster.alive()
            n += 1
            key, value = f"{PREFIX}/{t}-{n}", f"value-{t}-{n}".encode()
            ok = False
            if live:
                try:
                    status, _, body = self.cluster.request(live[n % len(live)], "PUT",
                                                           "/v1/kv/" + key, value, timeout=15)
                    ok = status == 200 and body.strip() == b"true"
                except OSError:
                    pass  # the server just died, or held the write past the timeout
            if ok:
                with self._lock:
                    self.acked[key] = value
            else:
                self.failed += 1
                # Not a wait for a condition: only keeps a refused connection from spinning.
                self._stopping.wait(0.05)

    def wait_more(self, extra: int, timeout: float = 45.0) -> None:
        """Until `extra` more writes than now are acknowledged."""
        target = self.count() + extra
        deadline = time.monotonic() + timeout
        while self.count() < target:
            if time.monotonic() > deadline:
                raise ClusterError(f"only {self.count()} of {target} writes acknowledged in "
                                   f"{timeout} s ({self.failed} failed)" + self.cluster.tails())
            time.sleep(0.05)


def kv_index(cluster: ServerCluster, i: int, stale: bool) -> tuple[int, dict[str, bytes]]:
    """(X-Consul-Index, {key: value}) of the load prefix as server `i` has it."""
    path = f"/v1/kv/{PREFIX}/?recurse" + ("&stale" if stale else "")
    status, headers, body = cluster.request(i, "GET", path, timeout=10)
    if status == 404:
        return int(headers.get("X-Consul-Index", 0)), {}
    assert status == 200, (cluster.servers[i].name, status, body[:300])
    entries = {e["Key"]: base64.b64decode(e["Value"] or "") for e in json.loads(body)}
    return int(headers["X-Consul-Index"]), entries


def assert_everywhere(cluster: ServerCluster, acked: dict[str, bytes],
                      timeout: float = 30.0) -> None:
    """Every acknowledged key, with its value, on every server, read locally (?stale) once
    that server has applied as far as the leader has."""
    leader = cluster.wait_leader(timeout)
    target, _ = kv_index(cluster, leader, stale=False)
    for s in cluster.servers:
        deadline = time.monotonic() + timeout
        while True:
            index, entries = kv_index(cluster, s.index, stale=True)
            if index >= target:
                break
            if time.monotonic() > deadline:
                raise ClusterError(f"{s.name} stuck at index {index}, leader at {target}"
                                   + cluster.tails())
            time.sleep(0.05)
        missing = sorted(k for k, v in acked.items() if entries.get(k) != v)
        assert not missing, (f"{s.name} lacks {len(missing)} of {len(acked)} acknowledged "
                             f"writes, e.g. {missing[:5]}" + cluster.tails())


def test_three_servers_form_one_cluster(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.wait_leader(30)
    expected = {f"127.0.0.1:{s.server_port}" for s in cluster.servers}
    deadline = time.monotonic() + 30
    seen = {}
    while True:
        seen = {s.name: cluster.peers(s.index) for s in cluster.servers}
        if all(peers == expected for peers in seen.values()):
            break
        if time.monotonic() > deadline:
            raise ClusterError(f"peers {seen}, expected {expected}" + cluster.tails())
        time.sleep(0.05)
    # And it is one cluster: a write through any server is read back through the leader.
    for s in cluster.servers:
        status, _, body = cluster.request(s.index, "PUT", f"/v1/kv/formed/{s.name}", s.name)
        assert (status, body.strip()) == (200, b"true"), (s.name, status, body)
    _, _, body = cluster.request(leader, "GET", "/v1/kv/formed/?keys")
    assert sorted(json.loads(body)) == [f"formed/s{i}" for i in range(3)]


def test_leader_killed_under_load_loses_no_acknowledged_write(make_cluster):
    cluster = make_cluster(3)
    leader = cluster.wait_leader(30)
    with WriteLoad(cluster) as load:
        load.wait_more(20)
        cluster.kill(leader)
        load.wait_more(20)  # the two left elected a leader and commit again
        cluster.restart(leader)
        load.wait_more(10)
    assert_everywhere(cluster, load.acked)


def test_five_servers_lose_two_leaders_in_a_row(make_cluster):
    cluster = make_cluster(5)
    first = cluster.wait_leader(30)
    with WriteLoad(cluster) as load:
        load.wait_more(20)
        cluster.kill(first)
        second = cluster.wait_leader(30)
        assert second != first
        load.wait_more(20)
        cluster.kill(second)  # three of five left: still a quorum
        third = cluster.wait_leader(30)
        assert third not in (first, second)
        load.wait_more(20)
        cluster.restart(first)
        cluster.restart(second)
        load.wait_more(10)
    assert_everywhere(cluster, load.acked)
