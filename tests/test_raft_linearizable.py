"""A KV register on 3 real Waypost servers, driven by concurrent clients while the leader is
killed (SIGKILL) and restarted, checked for linearizability with `tests/linearizability.py`.

Clients pick any live server (followers forward to the leader). Operations: a write of a unique
value (PUT), a `?consistent` read, and a compare-and-swap (a consistent read's ModifyIndex as
`?cas=`: with unique values, "the index is still X" is "the value is still the one written at
X", so it is a register CAS on values). An operation that failed in any way (a refused
connection, a timeout, "No cluster leader", "leadership lost") may or may not have taken
effect, so it is recorded without a return; a read that failed is dropped.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time


from tests.linearizability import Op, check
from tests.servercluster import ServerCluster

KEY = "lin/register"
CLIENTS = 4
RUN = 14.0
CONFIG = {"performance": {"raft_multiplier": 1}}  # elections in 0.15-0.3 s: more of them


class Recorder:
    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.lock = threading.Lock()
        self.t0 = time.monotonic()
        self.acked_writes: list[str] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    def add(self, op: Op) -> None:
        with self.lock:
            self.ops.append(op)


def _read(cluster: ServerCluster, i: int) -> tuple[str | None, int]:
    status, _, body = cluster.request(i, "GET", f"/v1/kv/{KEY}?consistent", timeout=10)
    if status == 404:
        return None, 0
    if status != 200:
        raise OSError(f"read: {status} {body[:80]!r}")
    row = json.loads(body)[0]
    return base64.b64decode(row["Value"]).decode(), row["ModifyIndex"]


def client(cluster: ServerCluster, rec: Recorder, pid: int, stop: threading.Event) -> None:
    rng = random.Random(pid)
    seq = 0
    while not stop.is_set():
        alive = cluster.alive()
        if not alive:
            time.sleep(0.05)
            continue
        i = rng.choice(alive)
        kind = rng.choice(("write", "read", "cas"))
        seq += 1
        if kind == "write":
            value = f"p{pid}-{seq}"
            call = rec.now()
            try:
                status, _, body = cluster.request(i, "PUT", f"/v1/kv/{KEY}", value, timeout=10)
                ok = status == 200 and body == b"true"
            except OSError:
                ok = False
            rec.add(Op(pid, "write", KEY, value, None, call, rec.now() if ok else None))
            if ok:
                with rec.lock:
                    rec.acked_writes.append(value)
        elif kind == "read":
            call = rec.now()
            try:
                value, _ = _read(cluster, i)
            except OSError:
                continue
            rec.add(Op(pid, "read", KEY, None, value, call, rec.now()))
        else:
            call = rec.now()
            try:
                current, index = _read(cluster, i)
            except OSError:
                continue
            rec.add(Op(pid, "read", KEY, None, current, call, rec.now()))
            new = f"p{pid}-{seq}c"
            call = rec.now()
            try:
                status, _, body = cluster.request(i, "PUT", f"/v1/kv/{KEY}?cas={index}", new,
                                                  timeout=10)
                known = status == 200
                swapped = body == b"true"
            except OSError:
                known, swapped = False, None
            rec.add(Op(pid, "cas", KEY, (current, new), swapped if known else None, call,
                       rec.now() if known else None))


def nemesis(cluster: ServerCluster, stop: threading.Event, log: list[str]) -> None:
    """Kill the leader, restart it, twice."""
    for _ in range(2):
        if stop.wait(2.5):
            return
        try:
            leader = cluster.wait_leader(timeout=10)
        except Exception as exc:  # noqa: BLE001 - a test failure shows the log
            log.append(f"no leader: {exc}")
            return
        cluster.kill(leader)
        log.append(f"killed s{leader}")
        if stop.wait(2.5):
            cluster.restart(leader)
            return
        cluster.restart(leader)
        log.append(f"restarted s{leader}")


def test_a_register_stays_linearizable_while_leaders_are_killed(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=CONFIG).start()
    try:
        cluster.wait_leader(timeout=60)
        rec = Recorder()
        stop = threading.Event()
        events: list[str] = []
        threads = [threading.Thread(target=client, args=(cluster, rec, p, stop), daemon=True)
                   for p in range(CLIENTS)]
        chaos = threading.Thread(target=nemesis, args=(cluster, stop, events), daemon=True)
        for t in threads:
            t.start()
        chaos.start()
        time.sleep(RUN)
        stop.set()
        chaos.join(60)
        for t in threads:
            t.join(60)
        assert events[:4] and events[0].startswith("killed"), events
        ok, bad_key = check(rec.ops)
        completed = sum(1 for op in rec.ops if op.ret is not None)
        assert completed > 50, f"too few operations completed ({completed}): {events}"
        assert ok, f"the history of {bad_key} is not linearizable ({len(rec.ops)} ops, " \
                   f"events {events})"
        # Every server ends with the same value, and it is one that was written.
        cluster.wait_leader(timeout=60)
        finals = set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finals = set()
            for i in cluster.alive():
                status, _, body = cluster.request(i, "GET", f"/v1/kv/{KEY}?stale")
                finals.add(body if status == 200 else None)
            if len(finals) == 1:
                break
            time.sleep(0.1)
        assert len(finals) == 1, finals
    finally:
        cluster.stop()
