"""Applying the same log to two fresh stores gives identical snapshots, whatever the replicas'
clocks say; restoring a snapshot taken halfway and applying the rest gives the same state as
applying everything. The log is a seeded random mix of every command, failures included."""

from __future__ import annotations

import io
import random

import pytest

from agent.fsm.apply import FSM
from agent.fsm.commands import (
    Deregister,
    KVOperation,
    Register,
    SessionCreate,
    SessionDestroy,
    TombstoneReap,
    Txn,
)
from agent.fsm.table import encode_command
from agent.state import snapshot
from agent.state.store import StateStore
from agent.structs import Check, KVEntry, Node, Service, Session

NODES = [f"n{i}" for i in range(4)]
KEYS = [f"app/{d}/{k}" for d in ("a", "b") for k in ("x", "y", "z")] + ["top"]
STATUSES = ("passing", "warning", "critical")


def random_command(rng: random.Random, index: int, sessions: list[str]):
    kind = rng.randrange(100)
    node = rng.choice(NODES)
    if kind < 25:
        service = None
        checks = []
        if rng.random() < 0.7:
            sid = f"svc{rng.randrange(3)}"
            service = Service(node=node, id=sid, name=rng.choice(("web", "db")),
                              tags=tuple(rng.sample(["a", "b", "c"], rng.randrange(3))),
                              port=rng.randrange(1, 9))
            checks.append(Check(node=node, check_id=f"chk-{sid}", name="c",
                                status=rng.choice(STATUSES), service_id=sid))
        if rng.random() < 0.5:
            checks.append(Check(node=node, check_id="serfHealth", name="serf",
                                status=rng.choice(STATUSES)))
        return Register(node=Node(node, f"10.0.0.{rng.randrange(1, 4)}",
                                  meta={"r": str(rng.randrange(2))}),
                        service=service, checks=tuple(checks),
                        skip_node_update=rng.random() < 0.3)
    if kind < 30:
        which = rng.randrange(3)
        return Deregister(node=node, service_id=f"svc{rng.randrange(3)}" if which == 0 else "",
                          check_id="serfHealth" if which == 1 else "")
    if kind < 60:
        op = rng.choice(("set", "set", "cas", "delete", "delete-cas", "delete-tree"))
        key = rng.choice(KEYS) if op != "delete-tree" else rng.choice(("app/a/", "app/", "t"))
        return KVOperation(op, KVEntry(key, rng.randbytes(rng.randrange(4)),
                                       flags=rng.randrange(3)),
                           expected_index=rng.randrange(index + 1))
    if kind < 70 and sessions:
        op = rng.choice(("lock", "unlock"))
        return KVOperation(op, KVEntry(rng.choice(KEYS), b"L", session=rng.choice(sessions)))
    if kind < 78:
        sid = f"s{index}"
        sessions.append(sid)
        return SessionCreate(Session(id=sid, node=node, checks=("serfHealth",),
                                     behavior=rng.choice(("release", "delete")),
                                     lock_delay=rng.choice((0.0, 15.0)),
                                     ttl=rng.choice((0.0, 10.0))))
    if kind < 84 and sessions:
        return SessionDestroy(rng.choice(sessions))
    if kind < 94:
        return Txn(tuple(KVOperation(rng.choice(("set", "delete", "cas")),
                                     KVEntry(rng.choice(KEYS), b"t"),
                                     expected_index=rng.randrange(index + 1))
                         for _ in range(rng.randrange(1, 4))))
    return TombstoneReap(rng.randrange(index + 1))


def random_log(seed: int, length: int) -> list[tuple[int, bytes]]:
    rng = random.Random(seed)
    sessions: list[str] = []
    return [(index, encode_command(random_command(rng, index, sessions)))
            for index in range(2, length + 2)]


def replay(entries, store: StateStore | None = None, now: float = 0.0) -> StateStore:
    store = store or StateStore()
    fsm = FSM(store, clock=lambda: now)
    for index, data in entries:
        fsm.apply_entry(index, data)
    return store


def body(store: StateStore) -> bytes:
    return b"".join(snapshot.encode_chunks(snapshot.capture(store)))


def canonical(store: StateStore) -> dict:
    image = snapshot.capture(store)
    return {"indexes": (image.index, image.table_index, image.service_index, image.kv_index,
                        image.sessions_index, image.reaped_index),
            "nodes": sorted(map(repr, image.nodes)), "services": sorted(map(repr, image.services)),
            "checks": sorted(map(repr, image.checks)), "kv": sorted(map(repr, image.kv)),
            "tombstones": sorted(image.tombstones), "sessions": sorted(map(repr, image.sessions))}


@pytest.mark.parametrize("seed", range(6))
def test_two_fresh_stores_given_the_same_log_give_identical_snapshots(seed):
    entries = random_log(seed, 400)
    first = replay(entries, now=10.0)
    second = replay(entries, now=98765.0)  # another replica, another clock
    assert body(first) == body(second)
    assert first.kv.entries and first.catalog.nodes  # the log did something


@pytest.mark.parametrize("seed", range(6))
def test_a_snapshot_halfway_then_the_rest_equals_the_whole_log(seed):
    entries = random_log(100 + seed, 400)
    whole = replay(entries)
    half = replay(entries[:200])
    image, _ = snapshot.read_image(io.BytesIO(body(half)))
    restored = StateStore()
    FSM(restored).restore(image)
    replay(entries[200:], restored)
    assert canonical(restored) == canonical(whole)
