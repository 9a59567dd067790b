"""The command table (numbers, codecs, handlers), unknown and ignorable entries, and Consul's
tombstone GC: the reap command, its timer on the leader, and blocking queries on a deleted
prefix around a reap. Pure code and a fake clock."""

from __future__ import annotations

import json

import pytest
from twisted.internet.task import Clock

from agent.errors import WaypostError
from agent.fsm import handlers
from agent.fsm.apply import FSM, IGNORED
from agent.fsm.commands import (
    AutopilotSetConfig,
    Deregister,
    KVOperation,
    Register,
    SessionCreate,
    SessionDestroy,
    SessionTxn,
    SessionTxnResult,
    TombstoneReap,
    Txn,
)
from agent.fsm.table import (
    COMMANDS,
    IGNORE_UNKNOWN_FLAG,
    CommandFormatError,
    CommandSpec,
    CommandTable,
    UnknownCommandType,
    decode_command,
    encode_command,
)
from agent.leader import LeaderDuties, TombstoneGC
from agent.raft.single import SingleServerLog
from agent.rpc import queries as q
from agent.rpc.options import QueryOptions, WriteRequest
from agent.rpc.server import ServerEndpoints
from agent.state.store import StateStore
from agent.structs import Check, KVEntry, Node, Service, Session

EVERY_COMMAND = [
    Register(node=Node("n1", "10.0.0.1", meta={"a": "b"}),
             service=Service(node="n1", id="web", name="web", tags=("x",), port=80),
             checks=(Check(node="n1", check_id="c", name="c", status="passing",
                           service_id="web"),), skip_node_update=True),
    Deregister(node="n1", service_id="web"),
    KVOperation("cas", KVEntry("k", b"\x00v", flags=3), expected_index=4),
    SessionCreate(Session(id="s1", node="n1", ttl=10.0)),
    SessionDestroy("s1"),
    Txn((KVOperation("set", KVEntry("a", b"1")), KVOperation("delete", KVEntry("b")))),
    TombstoneReap(17),
    SessionTxn((KVOperation("check-index", KVEntry("k"), 4),
                KVOperation("lock", KVEntry("k", b"v", session="s2"))),
               create=Session(id="s2", node="n1", ttl=10.0, behavior="delete"),
               destroy=("s1",)),
    AutopilotSetConfig((("CleanupDeadServers", False), ("MinQuorum", 3)), cas=12),
]


def test_the_type_numbers_never_change():
    # Append-only: logs and snapshots on disk hold these numbers.
    assert {n: spec.cls.__name__ for n, spec in COMMANDS.by_number.items()} == {
        1: "Register", 2: "Deregister", 3: "KVOperation", 4: "SessionCreate",
        5: "SessionDestroy", 6: "Txn", 7: "TombstoneReap", 8: "SessionTxn",
        9: "AutopilotSetConfig"}
    assert all(not spec.ignorable for spec in COMMANDS.by_number.values())


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: type(c).__name__)
def test_every_command_round_trips_through_its_entry(command):
    data = encode_command(command)
    doc = json.loads(data)
    assert (doc["v"], doc["t"]) == (1, COMMANDS.spec_for(command).number)
    assert decode_command(data) == command


def test_a_number_or_a_class_registered_twice_fails_when_the_table_is_built():
    first = CommandSpec(1, Register, lambda c: {}, lambda d: None, handlers.register)
    with pytest.raises(ValueError, match="command type 1 registered twice"):
        CommandTable.build([first, CommandSpec(1, Deregister, lambda c: {}, lambda d: None,
                                               handlers.deregister)])
    with pytest.raises(ValueError, match="Register registered twice"):
        CommandTable.build([first, CommandSpec(2, Register, lambda c: {}, lambda d: None,
                                               handlers.register)])
    with pytest.raises(ValueError, match="not in 1..127"):
        CommandTable.build([CommandSpec(IGNORE_UNKNOWN_FLAG, Register, lambda c: {},
                                        lambda d: None, handlers.register)])


def test_an_unknown_type_stops_the_server_unless_flagged_ignorable():
    store = StateStore()
    fsm = FSM(store)
    unknown = json.dumps({"v": 1, "t": 99, "d": {}}).encode()
    with pytest.raises(UnknownCommandType, match="command type 99 is unknown"):
        fsm.apply_entry(5, unknown)
    ignorable = json.dumps({"v": 1, "t": 99 | IGNORE_UNKNOWN_FLAG, "d": {}}).encode()
    assert fsm.apply_entry(5, ignorable) is IGNORED
    assert store.index == 0  # skipped: nothing changed, not even the index


def test_a_newer_or_damaged_entry_is_refused():
    with pytest.raises(CommandFormatError, match="newer Waypost"):
        decode_command(json.dumps({"v": 2, "t": 1, "d": {}}).encode())
    with pytest.raises(CommandFormatError, match="not a command"):
        decode_command(b"{not json")
    with pytest.raises(CommandFormatError, match="does not decode"):
        decode_command(json.dumps({"v": 1, "t": 7, "d": {"reap_index": "x"}}).encode())


def test_a_command_flagged_ignorable_is_skipped_by_a_server_that_lacks_it():
    class Newer:
        pass
    number = max(COMMANDS.by_number) + 1
    newer = CommandTable.build([*COMMANDS.by_number.values(),
                                CommandSpec(number, Newer, lambda c: {}, lambda d: Newer(),
                                            lambda s, c, i: None, ignorable=True)])
    data = newer.encode(Newer())
    assert json.loads(data)["t"] == number | IGNORE_UNKNOWN_FLAG
    assert isinstance(newer.decode(data), Newer)
    assert COMMANDS.decode(data) is None  # an older server skips it


def test_a_failed_command_changes_nothing_but_the_index():
    store = StateStore()
    fsm = FSM(store)
    result = fsm.apply(3, KVOperation("lock", KVEntry("k", b"v", session="nope")))
    assert isinstance(result, WaypostError)
    assert store.kv.entries == {} and store.index == 3


def _node_store() -> tuple[StateStore, FSM]:
    store = StateStore()
    fsm = FSM(store)
    fsm.apply(2, Register(node=Node("n1", "10.0.0.1")))
    return store, fsm


def test_a_session_txn_creates_locks_and_destroys_at_one_index():
    store, fsm = _node_store()
    fsm.apply(3, SessionCreate(Session(id="old", node="n1", behavior="delete", ttl=10.0,
                                       checks=())))
    fsm.apply(4, KVOperation("lock", KVEntry("k", b"v1", session="old")))
    result = fsm.apply(5, SessionTxn(
        (KVOperation("check-index", KVEntry("k"), 4),
         KVOperation("unlock", KVEntry("k", b"v2", session="old")),
         KVOperation("lock", KVEntry("k", b"v2", session="new"))),
        create=Session(id="new", node="n1", behavior="delete", ttl=10.0, checks=()),
        destroy=("old",)))
    assert result == SessionTxnResult("new", result.outcome) and result.outcome.ok
    entry = store.kv.lookup("k")
    assert (entry.value, entry.session, entry.modify_index) == (b"v2", "new", 5)
    assert set(store.sessions.sessions) == {"new"}  # the old one held nothing: nothing deleted
    assert store.sessions.index == 5 and store.index == 5


def test_a_failed_session_txn_leaves_no_session_behind():
    store, fsm = _node_store()
    fsm.apply(3, KVOperation("set", KVEntry("k", b"v")))
    before = (dict(store.kv.entries), store.sessions.index)
    result = fsm.apply(4, SessionTxn(
        (KVOperation("check-not-exists", KVEntry("k")),
         KVOperation("lock", KVEntry("k", b"x", session="new"))),
        create=Session(id="new", node="n1", behavior="delete", ttl=10.0, checks=())))
    assert not result.outcome.ok and result.session == ""
    assert store.sessions.sessions == {}
    assert (dict(store.kv.entries), store.sessions.index) == before
    # A session that cannot be created (unknown node) fails the whole entry.
    failed = fsm.apply(5, SessionTxn((KVOperation("set", KVEntry("j", b"x")),),
                                     create=Session(id="s", node="ghost", checks=())))
    assert isinstance(failed, WaypostError) and store.kv.lookup("j") is None


def test_the_leader_fills_in_the_session_a_txn_creates_and_answers_its_timer():
    from tests.coreutil import Core
    from agent.sessions import SessionManager
    core = Core()
    core.apply(Register(node=Node("n0", "10.0.0.1")))
    timers = SessionManager(core.clock, core.store, core.log.apply)
    timers.start()
    core.endpoints._session_timers = timers
    ids = iter(["s-1"])
    core.endpoints._new_id = lambda: next(ids)
    done = []
    command = SessionTxn((KVOperation("lock", KVEntry("k", b"v")),), create=Session(
        id="", node="n0", behavior="delete", ttl=20.0, checks=()))
    core.endpoints.write(command, WriteRequest()).addBoth(done.append)
    assert done[0].value.session == "s-1" and core.store.kv.lookup("k").session == "s-1"
    core.clock.advance(15)
    left = core.endpoints.read(q.SessionExpiries(("s-1", "none")), QueryOptions())
    assert left.value == {"s-1": 25.0}  # TTL x 2 from its creation, as the timer says
    core.log.leader = False
    with pytest.raises(Exception, match="No cluster leader"):
        core.endpoints.read(q.SessionExpiries(("s-1",)), QueryOptions())


# --- tombstones -------------------------------------------------------------------------------


def kv(fsm: FSM, index: int, op: str, key: str) -> None:
    fsm.apply(index, KVOperation(op, KVEntry(key, b"v")))


def test_reap_drops_tombstones_up_to_its_index_and_no_prefix_index_goes_back():
    store = StateStore()
    fsm = FSM(store)
    kv(fsm, 1, "set", "app/a")
    kv(fsm, 2, "set", "app/b")
    kv(fsm, 3, "set", "other/x")
    kv(fsm, 4, "delete", "app/b")
    kv(fsm, 5, "set", "zz/y")
    kv(fsm, 6, "delete", "zz/y")
    before = {p: store.kv.list(p)[0] for p in ("app/", "other/", "zz/", "", "none/")}
    assert before["app/"] == 4 and before["zz/"] == 6
    assert fsm.apply(7, TombstoneReap(4)) == 1
    assert dict(store.kv.tombstones) == {"zz/y": 6}
    after = {p: store.kv.list(p)[0] for p in before}
    assert all(after[p] >= before[p] for p in before), (before, after)
    assert after["app/"] == 4  # the reaped delete's index is not forgotten
    fsm.apply(8, TombstoneReap(8))
    assert store.kv.tombstones == {} and store.kv.list("zz/")[0] >= 6


def test_a_blocking_query_on_a_deleted_prefix_stays_correct_around_a_reap():
    clock = Clock()
    store = StateStore()
    fsm = FSM(store)
    log = SingleServerLog(clock, fsm, configuration={"servers": []})
    log.start()
    endpoints = ServerEndpoints(clock, store, log, datacenter=lambda: "dc1",
                                lock_delay_remaining=lambda key: 0.0)

    def write(command):
        out = []
        log.apply(command).addBoth(out.append)
        return out[0]

    write(KVOperation("set", KVEntry("app/a", b"1")))
    deleted = write(KVOperation("delete", KVEntry("app/a"))).index
    # A client that saw the prefix before the delete is told about it at once.
    seen = endpoints.read(q.KVList("app/"), QueryOptions(min_index=deleted - 1))
    assert seen.index == deleted and seen.value == []
    # A client that saw the delete parks; the reap is no change to it...
    parked = endpoints.read(q.KVList("app/"), QueryOptions(min_index=deleted, wait=60))
    answers = []
    parked.addCallback(answers.append)
    write(KVOperation("set", KVEntry("elsewhere", b"1")))
    write(TombstoneReap(deleted))
    clock.advance(0)
    assert answers == [] and store.kv.tombstones == {}
    assert endpoints.read(q.KVList("app/"), QueryOptions()).index >= deleted
    # ...and a new key under the prefix wakes it with a later index.
    later = write(KVOperation("set", KVEntry("app/b", b"2"))).index
    assert answers[0].index == later and [e.key for e in answers[0].value] == ["app/b"]


def test_tombstone_gc_reaps_each_bucket_once_after_the_ttl():
    clock = Clock()
    reaped = []
    gc = TombstoneGC(clock, reaped.append, ttl=900, granularity=30)
    gc.hint(5)  # disabled: not the leader
    assert gc.pending() == 0
    gc.set_enabled(True)
    clock.advance(1)
    gc.hint(5)
    clock.advance(10)
    gc.hint(9)  # the same 30 s bucket: one reap, the highest index
    assert gc.pending() == 1
    clock.advance(900 - 11)
    assert reaped == []
    clock.advance(30)
    assert reaped == [9] and gc.pending() == 0
    gc.hint(12)
    gc.set_enabled(False)  # leadership lost: the timers go
    clock.advance(2000)
    assert reaped == [9] and not clock.getDelayedCalls()


class Timers:
    def __init__(self) -> None:
        self.running = False

    def start(self) -> None:
        self.running = True

    def stop(self) -> None:
        self.running = False


def test_the_leader_reaps_tombstones_through_the_log_and_stops_when_it_steps_down():
    clock = Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    timers = Timers()
    duties = LeaderDuties(clock, store, log.apply, lambda: log.applied_index, sessions=timers)
    log.add_leadership_listener(duties.leadership_changed)
    log.start()
    assert duties.leading and timers.running and duties.tombstones.enabled
    log.apply(KVOperation("set", KVEntry("k", b"v")))
    log.apply(KVOperation("delete", KVEntry("k")))
    assert store.kv.tombstones
    clock.advance(15 * 60 + 30)
    assert store.kv.tombstones == {}
    last = store.index
    entry = log._store.entry(log.last_index)
    assert decode_command(entry.data) == TombstoneReap(last - 1)
    log.stop()
    assert not duties.leading and not timers.running and not duties.tombstones.enabled


def test_a_new_leader_starts_the_clock_for_tombstones_it_inherits():
    clock = Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    log.start()
    log.apply(KVOperation("set", KVEntry("k", b"v")))
    log.apply(KVOperation("delete", KVEntry("k")))
    log.stop()  # another server led when the key was deleted; now this one does
    duties = LeaderDuties(clock, store, log.apply, lambda: log.applied_index, sessions=Timers())
    log.add_leadership_listener(duties.leadership_changed)
    log.start()
    assert duties.tombstones.pending() == 1
    clock.advance(15 * 60 + 30)
    assert store.kv.tombstones == {}


def test_the_leader_reconciles_its_own_catalog_entry_only_when_it_differs():
    clock = Clock()
    store = StateStore()
    log = SingleServerLog(clock, FSM(store))
    serf = Check(node="me", check_id="serfHealth", name="Serf Health Status",
                 status="passing", output="Agent alive and reachable")
    member = Register(node=Node("me", "10.0.0.9"),
                      service=Service(node="me", id="consul", name="consul", port=8300),
                      checks=(serf,))
    duties = LeaderDuties(clock, store, log.apply, lambda: log.applied_index,
                          sessions=Timers(), member=lambda: member)
    log.add_leadership_listener(duties.leadership_changed)
    log.start()
    assert store.catalog.checks["me"]["serfHealth"].status == "passing"
    index = store.index
    assert duties.reconcile() is None  # in sync: nothing written
    # The agent's own sync adds meta; a reconcile must not take it away.
    log.apply(Register(node=Node("me", "10.0.0.9", meta={"rack": "r1"})))
    log.apply(Deregister(node="me", service_id="consul"))
    clock.advance(60)  # the reconcile interval
    assert "consul" in store.catalog.services["me"]
    assert store.catalog.nodes["me"].meta == {"rack": "r1"}
    assert store.index > index
