"""The state store, FSM and watches as pure code: no reactor, no sockets."""

import io
import json

import pytest

from agent import structs
from agent.fsm.apply import FSM
from agent.fsm.commands import Deregister, KVOperation, Register
from agent.fsm.table import decode_command, encode_command
from agent.errors import InvalidRequest
from agent.state import snapshot
from agent.state.store import StateStore
from agent.structs import Check, KVEntry, Node, Service


class Log:
    """Feeds commands to the FSM at increasing indexes, as the log will."""

    def __init__(self):
        self.store = StateStore()
        self.fsm = FSM(self.store)
        self.index = 0

    def apply(self, command):
        self.index += 1
        # Round-trip through the log encoding, as every real entry does.
        return self.fsm.apply(self.index, decode_command(encode_command(command)))


def node(name="n1", address="10.0.0.1"):
    return Node(name=name, address=address)


def register_web(log, sid="web1", node_name="n1", status="passing", tags=("v1",)):
    svc = Service(node=node_name, id=sid, name="web", tags=tags, port=80)
    chk = Check(node=node_name, check_id=f"service:{sid}", name="c", status=status, service_id=sid)
    return log.apply(Register(node=node(node_name), service=svc, checks=(chk,)))


def test_kv_set_get_and_indexes():
    log = Log()
    assert log.apply(KVOperation("set", KVEntry("a/b", b"1"))) is True
    log.apply(KVOperation("set", KVEntry("a/c", b"2", flags=42)))
    index, entry = log.store.kv.get("a/b")
    assert (index, entry.value, entry.create_index, entry.modify_index) == (1, b"1", 1, 1)
    log.apply(KVOperation("set", KVEntry("a/b", b"3")))
    index, entry = log.store.kv.get("a/b")
    assert (index, entry.create_index, entry.modify_index) == (3, 1, 3)
    # A missing key reports the table's index.
    assert log.store.kv.get("nope") == (3, None)


def test_kv_cas_rules():
    log = Log()
    assert log.apply(KVOperation("cas", KVEntry("k", b"x"), 0)) is True
    assert log.apply(KVOperation("cas", KVEntry("k", b"y"), 0)) is False
    assert log.apply(KVOperation("cas", KVEntry("k", b"y"), 99)) is False
    assert log.apply(KVOperation("cas", KVEntry("k", b"y"), 1)) is True
    assert log.store.kv.get("k")[1].value == b"y"
    assert log.apply(KVOperation("delete-cas", KVEntry("k"), 1)) is False
    assert log.apply(KVOperation("delete-cas", KVEntry("k"), 4)) is True
    assert log.store.kv.get("k")[1] is None


def test_kv_keys_separator_and_recurse():
    log = Log()
    for key in ("app/config/db", "app/config/port", "app/emptyfolder/", "app/other/x", "apple"):
        log.apply(KVOperation("set", KVEntry(key, b"v")))
    _, keys = log.store.kv.keys("app/", "/")
    assert keys == ["app/config/", "app/emptyfolder/", "app/other/"]
    _, keys = log.store.kv.keys("app", "")
    assert keys[-1] == "apple" and len(keys) == 5
    index, entries = log.store.kv.list("app/")
    assert [e.key for e in entries] == ["app/config/db", "app/config/port", "app/emptyfolder/", "app/other/x"]
    assert index == 4


def test_prefix_index_moves_forward_after_delete():
    log = Log()
    log.apply(KVOperation("set", KVEntry("p/a", b"1")))
    log.apply(KVOperation("set", KVEntry("p/b", b"1")))
    log.apply(KVOperation("delete", KVEntry("p/b")))
    index, entries = log.store.kv.list("p/")
    assert index == 3 and [e.key for e in entries] == ["p/a"]
    log.apply(KVOperation("delete-tree", KVEntry("p/")))
    assert log.store.kv.list("p/") == (4, [])


def test_watch_fires_once_for_prefix_and_table():
    log = Log()
    fired = []
    log.store.watch(lambda: fired.append("kv"), kv_prefixes=("app/",))
    log.store.watch(lambda: fired.append("nodes"), tables=("nodes",))
    log.apply(KVOperation("set", KVEntry("other", b"1")))
    assert fired == []
    log.apply(KVOperation("set", KVEntry("app/x", b"1")))
    log.apply(KVOperation("set", KVEntry("app/y", b"1")))
    assert fired == ["kv"]  # a watch fires once, then is gone
    register_web(log)
    assert fired == ["kv", "nodes"]
    assert len(log.store.watches) == 0


def test_cancelled_watch_never_fires():
    log = Log()
    fired = []
    handle = log.store.watch(lambda: fired.append(1), kv_prefixes=("",))
    handle.cancel()
    log.apply(KVOperation("set", KVEntry("a", b"1")))
    assert fired == []


def test_failing_watcher_does_not_starve_others():
    log = Log()
    fired = []

    def boom():
        raise RuntimeError("boom")
    log.store.watch(boom, tables=("kvs",))
    log.store.watch(lambda: fired.append(1), tables=("kvs",))
    log.apply(KVOperation("set", KVEntry("a", b"1")))
    assert fired == [1]


def test_register_and_service_index():
    log = Log()
    register_web(log, "web1")
    register_web(log, "web2", node_name="n2", status="critical")
    cat = log.store.catalog
    assert [s.id for _, s in cat.service_instances("web")] == ["web1", "web2"]
    assert cat.max_service_index("web") == 2
    assert cat.service_tags() == {"web": ["v1"]}
    # An unrelated KV write leaves the service index alone.
    log.apply(KVOperation("set", KVEntry("x", b"1")))
    assert cat.max_service_index("web") == 2
    # A node-level check change touches the services on that node.
    log.apply(Register(node=node("n1"), checks=(Check(node="n1", check_id="serfHealth", name="s", status="passing"),)))
    assert cat.max_service_index("web") == 4
    checks = cat.instance_checks(cat.services["n2"]["web2"])
    assert [c.status for c in checks] == ["critical"]


def test_register_unchanged_does_not_bump_indexes():
    log = Log()
    register_web(log)
    before = dict(log.store.catalog.table_index)
    register_web(log)
    assert log.store.catalog.table_index == before


def test_check_for_unknown_service_is_refused_whole():
    log = Log()
    bad = Check(node="n1", check_id="c", name="c", service_id="nope")
    result = log.apply(Register(node=node(), checks=(bad,)))
    assert isinstance(result, InvalidRequest)
    assert log.store.catalog.nodes == {}  # nothing half-registered
    assert log.store.index == 1


def test_deregister_service_node_and_check():
    log = Log()
    register_web(log, "web1")
    register_web(log, "web2")
    log.apply(Deregister(node="n1", service_id="web1"))
    cat = log.store.catalog
    assert list(cat.services["n1"]) == ["web2"]
    assert list(cat.checks["n1"]) == ["service:web2"]
    log.apply(Deregister(node="n1", check_id="service:web2"))
    assert cat.checks["n1"] == {}
    log.apply(Deregister(node="n1"))
    assert cat.nodes == {} and cat.service_instances("web") == []


def test_service_rename_updates_its_checks():
    log = Log()
    register_web(log)
    svc = Service(node="n1", id="web1", name="api", tags=("x",))
    log.apply(Register(node=node(), service=svc))
    check = log.store.catalog.checks["n1"]["service:web1"]
    assert (check.service_name, check.service_tags) == ("api", ("x",))


def test_worst_status():
    assert structs.worst_status([]) == "passing"
    assert structs.worst_status(["passing", "warning"]) == "warning"
    assert structs.worst_status(["warning", "critical", "passing"]) == "critical"


def test_snapshot_round_trip():
    log = Log()
    register_web(log)
    log.apply(KVOperation("set", KVEntry("bin", b"\x00\x01", flags=7)))
    log.apply(KVOperation("set", KVEntry("gone", b"1")))
    log.apply(KVOperation("delete", KVEntry("gone")))
    body = b"".join(snapshot.encode_chunks(snapshot.capture(log.store), rows_per_chunk=2))
    image, header = snapshot.read_image(io.BytesIO(body))
    assert header["format"] == snapshot.BODY_FORMAT
    fired = []
    target = StateStore()
    target.watch(lambda: fired.append(1), kv_prefixes=("zzz",))
    FSM(target).restore(image)
    assert fired == [1]  # a restore wakes every watcher
    assert target.index == log.store.index
    assert target.kv.get("bin") == log.store.kv.get("bin")
    assert target.kv.list("gone") == log.store.kv.list("gone")
    assert target.catalog.services == log.store.catalog.services
    assert target.catalog.checks == log.store.catalog.checks
    assert target.catalog.table_index == log.store.catalog.table_index


def test_a_truncated_or_newer_snapshot_body_is_refused_and_changes_nothing():
    log = Log()
    register_web(log)
    body = b"".join(snapshot.encode_chunks(snapshot.capture(log.store)))
    with pytest.raises(snapshot.SnapshotError, match="truncated"):
        snapshot.read_image(io.BytesIO(body[:body.rindex(b'{"end"')]))
    newer = body.replace(b'"format":2', b'"format":3', 1)
    with pytest.raises(snapshot.SnapshotError, match="newer Waypost"):
        snapshot.read_image(io.BytesIO(newer), "snap-x")


def test_legacy_state_document_reads_back():
    log = Log()
    register_web(log)
    log.apply(KVOperation("set", KVEntry("k", b"v")))
    image = snapshot.legacy_image(json.loads(json.dumps(snapshot.dump(log.store))))
    target = StateStore()
    FSM(target).restore(image)
    assert target.kv.get("k") == log.store.kv.get("k")
    assert target.catalog.services == log.store.catalog.services


def test_writes_wake_watchers_after_the_writer_in_bounded_turns():
    """With a defer hook, a commit returns before any watcher runs; they fire WAKE_BATCH per
    turn after two hops, and each sees the committed state."""
    from agent.state.store import WAKE_BATCH
    turns = []
    store = StateStore(defer=turns.append)
    fsm = FSM(store)
    seen = []
    for _ in range(WAKE_BATCH + 5):
        store.watch(lambda: seen.append(store.kv.get("k")[0]), kv_prefixes=("k",))
    changes = []
    store.on_commit.append(lambda index, tables: changes.append(index))
    fsm.apply(7, KVOperation("set", KVEntry("k", b"1")))
    assert seen == [] and changes == [7]  # change listeners stay synchronous
    turns.pop(0)()  # the first hop only schedules the drain
    assert seen == []
    turns.pop(0)()
    assert seen == [7] * WAKE_BATCH
    turns.pop(0)()
    assert seen == [7] * (WAKE_BATCH + 5) and turns == []
    assert store.pending_wakeups() == 0


def test_a_watch_cancelled_before_its_deferred_wakeup_never_fires():
    turns = []
    store = StateStore(defer=turns.append)
    fired = []
    handle = store.watch(lambda: fired.append(1), kv_prefixes=("k",))
    FSM(store).apply(1, KVOperation("set", KVEntry("k", b"1")))
    handle.cancel()
    while turns:
        turns.pop(0)()
    assert fired == []


def test_agent_keeps_state_in_data_dir_between_runs(tmp_path):
    from agent.agent import make_agent
    from agent.config.model import AgentConfig
    from tests.inline import InlinePool, ThreadedClock
    cfg = AgentConfig(node_name="n", node_id="1", dev=False, data_dir=str(tmp_path))
    clock = ThreadedClock()
    first = make_agent(cfg, clock, pool=InlinePool())
    first.startService()
    first.facade.write(KVOperation("set", KVEntry("kept", b"yes")))
    first.facade.write(KVOperation("set", KVEntry("late", b"1")))
    assert list((tmp_path / "raft" / "wal").glob("*.wal"))
    first.stopService()
    second = make_agent(cfg, ThreadedClock(), pool=InlinePool())
    second.startService()
    assert second.store.kv.get("kept")[1].value == b"yes"
    assert second.store.kv.get("late")[1].value == b"1"
    # New writes continue after the restored index.
    before = second.raft.last_index
    second.facade.write(KVOperation("set", KVEntry("next", b"1")))
    assert second.store.kv.get("next")[1].create_index == before + 1
    second.stopService()
