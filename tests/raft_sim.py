"""A deterministic simulator for `agent.raft.consensus`: 3 or 5 `RaftNode`s, a KV register
state machine on each, clients doing writes, CAS and read-index reads, a network that
loses, delays (so reorders) and duplicates messages and is partitioned, and disks that lose
every write not yet acknowledged when their server crashes.

Everything is driven by one `random.Random(seed)`: a seed replays exactly. Time is integer
steps; the history's times come from a counter of events so that "returned before called"
is exact. Safety is checked as the run goes (`SafetyError` names the invariant) and again
at the end, after the network heals, every server restarts and the cluster has settled.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import msgpack

from agent.raft.consensus import (ChangeKind, Configuration, InvalidChange, NotLeader, Options,
                                  RaftNode, Role, Snapshot)
from agent.raft.consensus.messages import decode, encode
from agent.raft.records import COMMAND, CONFIGURATION, Entry, HardState
from tests.linearizability import Op, check

SIM_OPTIONS = Options(election_timeout=20, heartbeat_interval=4, max_batch=4, max_inflight=3,
                      snapshot_threshold=16, trailing_logs=4)


class SafetyError(AssertionError):
    pass


@dataclass
class Faults:
    loss: float = 0.05
    duplicate: float = 0.03
    max_delay: int = 4
    crash: float = 0.004        # per step: crash a random live server
    restart_after: tuple[int, int] = (10, 120)
    partition: float = 0.004    # per step: cut the network in two random halves
    heal: float = 0.02
    disk_delay: tuple[int, int] = (0, 3)
    drift: float = 0.0          # each server's clock runs at 1 +- up to this rate, and
    redrift: float = 0.01       # per step, one server's rate is drawn again


@dataclass
class Disk:
    """What survives a crash: applied in the order the node asked, only once acknowledged."""

    hard_state: HardState = HardState()
    snapshot: Snapshot | None = None
    entries: list[Entry] = field(default_factory=list)
    pending: list[tuple[int, Any]] = field(default_factory=list)  # (due step, Persist)

    def write(self, p) -> None:
        if p.snapshot is not None:
            self.snapshot = p.snapshot
        if p.truncate_from is not None:
            self.entries = [e for e in self.entries if e.index < p.truncate_from]
        if p.compact_through is not None:
            self.entries = [e for e in self.entries if e.index > p.compact_through]
        if p.entries:
            if self.entries and p.entries[0].index != self.entries[-1].index + 1:
                raise SafetyError(f"disk append gap: {p.entries[0].index} after "
                                  f"{self.entries[-1].index}")
            self.entries.extend(p.entries)
        if p.hard_state is not None:
            self.hard_state = p.hard_state


def random_faults(rng: random.Random) -> Faults:
    """Each seed draws its own weather, so the runs cover calm and hostile schedules alike."""
    return Faults(loss=rng.choice([0.0, 0.02, 0.1, 0.25]),
                  duplicate=rng.choice([0.0, 0.03, 0.15]),
                  max_delay=rng.choice([1, 2, 4, 8]),  # round trips stay under the timeout
                  crash=rng.choice([0.0, 0.003, 0.01, 0.02]),
                  restart_after=rng.choice([(5, 40), (10, 120), (40, 300)]),
                  partition=rng.choice([0.0, 0.004, 0.015, 0.03]),
                  heal=rng.choice([0.01, 0.03, 0.1]),
                  disk_delay=rng.choice([(0, 0), (0, 3), (1, 10)]),
                  drift=rng.choice([0.0, 0.0, 0.3, 0.7]))


class Server:
    def __init__(self, sim: Sim, sid: str, disk: Disk) -> None:
        self.sim, self.id, self.disk = sim, sid, disk
        self.alive = True
        snap = disk.snapshot
        self.node = RaftNode(sid, sim.options, random.Random(sim.rng.random()), self.clock,
                             hard_state=disk.hard_state, snapshot=snap, entries=disk.entries)
        self.kv: dict = dict(msgpack.unpackb(snap.data)) if snap else {}
        self.applied = snap.index if snap else 0
        self.writes: dict[int, tuple[int, Any]] = {}   # index -> (term, client request)
        self.reads: dict[int, Any] = {}                # read token -> client request

    @property
    def clock(self) -> float:
        """This server's own clock: clocks drift apart, so leases cannot be trusted."""
        return self.sim.clocks[self.id]

    def apply(self, item: Entry | Snapshot) -> None:
        sim = self.sim
        if isinstance(item, Snapshot):
            sim.stats["installs"] += 1
            sim.check_state(self.id, item.index, item.data, "installed snapshot")
            self.kv = dict(msgpack.unpackb(item.data))
            self.applied = item.index
            return
        if item.index != self.applied + 1:
            raise SafetyError(f"{self.id} applies {item.index} after {self.applied}")
        sim.check_applied(self.id, item)
        self.applied = item.index
        result = None
        if item.kind == COMMAND:
            op_id, kind, key, a, b = msgpack.unpackb(item.data)
            if kind == "write":
                self.kv[key] = a
            else:  # cas
                result = self.kv.get(key) == a
                if result:
                    self.kv[key] = b
        sim.check_state(self.id, item.index, msgpack.packb(sorted(self.kv.items())), "state")
        pending = self.writes.pop(item.index, None)
        if pending is not None:
            term, request = pending
            same = item.kind == COMMAND and msgpack.unpackb(item.data)[0] == request.op_id
            sim.respond(request, ok=same, output=result, index=item.index)


@dataclass
class Request:
    client: int
    op_id: int
    kind: str
    key: str
    a: Any = None
    b: Any = None
    call: int = 0
    started: int = 0          # step
    server: str | None = None
    done: bool = False


class Sim:
    def __init__(self, seed: int, servers: int = 3, clients: int = 3, faults: Faults | None = None,
                 options: Options = SIM_OPTIONS, keys: int = 3, membership: bool = False) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.options = options
        self.faults = faults or random_faults(self.rng)
        self.now = 0
        self.clock = 0  # the event counter for history times
        self.ids = [f"s{i}" for i in range(servers)]
        config = Configuration.of(self.ids)
        boot = Entry(1, 1, CONFIGURATION, config.encode())
        drift = self.faults.drift
        self.rates = {sid: 1 + self.rng.uniform(-drift, drift) for sid in self.ids}
        self.clocks = {sid: 0.0 for sid in self.ids}
        self.servers: dict[str, Server] = {}
        for sid in self.ids:
            self.servers[sid] = Server(self, sid, Disk(HardState(1, None), None, [boot]))
        self.network: list[tuple[int, float, int, str, bytes]] = []
        self._msg_seq = 0
        self.cut: set[frozenset[str]] = set()
        self.down_until: dict[str, int] = {}
        self.keys = [f"k{i}" for i in range(keys)]
        self.clients = [{"process": c, "busy": None, "next_at": 0} for c in range(clients)]
        self._next_process = clients
        self._op_id = 0
        self.history: list[Op] = []
        self.acked: list[tuple[int, int]] = []   # (index, op id) of acknowledged writes
        # Safety records, across the whole run.
        self.leaders: dict[int, str] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}    # index -> (term, data) applied
        self.states: dict[int, bytes] = {}                    # index -> digest after applying
        self.stats = {"elections": 0, "crashes": 0, "partitions": 0, "snapshots": 0,
                      "messages": 0, "acked": 0, "timeouts": 0, "installs": 0,
                      "config_changes": 0}
        self.membership = membership
        self.log: list[str] = []

    # --- safety checks ------------------------------------------------------------------

    def check_applied(self, sid: str, entry: Entry) -> None:
        known = self.committed.setdefault(entry.index, (entry.term, entry.data))
        if known != (entry.term, entry.data):
            raise SafetyError(f"state machine safety: {sid} applied {entry.index} term "
                              f"{entry.term}, another server applied term {known[0]}")

    def check_state(self, sid: str, index: int, data: bytes, what: str) -> None:
        """Every server's register after applying `index` (or a snapshot at it) is the same."""
        digest = hashlib.sha256(data).digest()[:8]
        known = self.states.setdefault(index, digest)
        if known != digest:
            raise SafetyError(f"state machine safety: {sid}'s {what} at {index} differs")

    def check_leader(self, sid: str, term: int) -> None:
        self.stats["elections"] += 1
        other = self.leaders.setdefault(term, sid)
        if other != sid:
            raise SafetyError(f"election safety: {other} and {sid} both lead term {term}")
        log = self.servers[sid].node.log
        for index, (t, data) in self.committed.items():
            if index > log.offset and (log.term_at(index) != t or log.entry(index).data != data):
                raise SafetyError(f"leader completeness: {sid} (term {term}) lacks committed "
                                  f"entry {index}")

    def check_logs(self) -> None:
        """Log matching: two logs with an entry of the same index and term are identical up
        to it (checked on the entries both hold)."""
        logs = [s.node.log for s in self.servers.values() if s.alive]
        for i, a in enumerate(logs):
            for b in logs[i + 1:]:
                lo, hi = max(a.offset, b.offset) + 1, min(a.last_index, b.last_index)
                same = [x for x in range(lo, hi + 1) if a.term_at(x) == b.term_at(x)]
                if not same:
                    continue
                top = same[-1]
                for x in range(lo, top + 1):
                    if a.entry(x) != b.entry(x):
                        raise SafetyError(f"log matching: logs agree at {top} but differ at {x}")

    # --- the network --------------------------------------------------------------------

    def send(self, src: str, dst: str, frame: bytes) -> None:
        f = self.faults
        self.stats["messages"] += 1
        if frozenset((src, dst)) in self.cut or self.rng.random() < f.loss:
            return
        copies = 2 if self.rng.random() < f.duplicate else 1
        for _ in range(copies):
            self._msg_seq += 1
            due = self.now + self.rng.randint(1, f.max_delay)
            heapq.heappush(self.network, (due, self.rng.random(), self._msg_seq, dst, frame))

    # --- driving the nodes --------------------------------------------------------------

    def process(self, server: Server) -> None:
        node = server.node
        while True:
            ready = node.ready()
            if not ready:
                return
            for p in ready.persist:
                lo, hi = self.faults.disk_delay
                due = self.now + self.rng.randint(lo, hi)
                if server.disk.pending:  # a disk completes writes in order
                    due = max(due, server.disk.pending[-1][0])
                server.disk.pending.append((due, p))
            for send in ready.messages:
                self.send(server.id, send.to, encode(send.message))
            for item in ready.committed:
                server.apply(item)
            for read in ready.reads:
                request = server.reads.pop(read.token, None)
                if request is not None:
                    if read.ok:
                        if server.applied < read.index:
                            raise SafetyError("read confirmed before its index was applied")
                        self.respond(request, ok=True, output=server.kv.get(request.key))
                    else:
                        self.respond(request, ok=False)
            for change in ready.leader_changes:
                if change.is_self:
                    self.check_leader(server.id, change.term)
            if ready.snapshot_wanted is not None:
                self.stats["snapshots"] += 1
                data = msgpack.packb(sorted(server.kv.items()))
                node.snapshot_taken(server.clock, server.applied, data)

    def flush_disk(self, server: Server) -> None:
        while server.disk.pending and server.disk.pending[0][0] <= self.now:
            _, p = server.disk.pending.pop(0)
            server.disk.write(p)
            server.node.persisted(server.clock, p.seq)

    def crash(self, sid: str) -> None:
        server = self.servers[sid]
        server.alive = False
        server.disk.pending.clear()   # not yet durable: lost
        # Its clients time out: their writes may or may not have committed.
        self.stats["crashes"] += 1
        self.down_until[sid] = self.now + self.rng.randint(*self.faults.restart_after)
        self.log.append(f"{self.now} crash {sid}")

    def restart(self, sid: str) -> None:
        disk = self.servers[sid].disk
        self.servers[sid] = Server(self, sid, disk)
        self.down_until.pop(sid, None)
        self.log.append(f"{self.now} restart {sid}")

    # --- clients ------------------------------------------------------------------------

    def respond(self, request: Request, ok: bool, output: Any = None, index: int = 0) -> None:
        """A server answers; a failed write had no effect (its entry was overwritten)."""
        if request.done:
            return
        request.done = True
        self.clock += 1
        client = self.clients[request.client]
        client["busy"] = None
        client["next_at"] = self.now + self.rng.randint(0, 6)
        if not ok:
            return  # no effect, nothing to record (a read that failed saw nothing)
        if request.kind != "read":
            self.acked.append((index, request.op_id))
            self.stats["acked"] += 1
        value = request.a if request.kind == "write" else (request.a, request.b)
        self.history.append(Op(client["process"], request.kind, request.key, value, output,
                               request.call, self.clock))

    def _timeout(self, request: Request) -> None:
        """The client gives up: the operation's effect is unknown. A process with an open
        operation cannot start another, so the client continues as a new process."""
        request.done = True
        self.stats["timeouts"] += 1
        client = self.clients[request.client]
        if request.kind != "read":
            value = request.a if request.kind == "write" else (request.a, request.b)
            self.history.append(Op(client["process"], request.kind, request.key, value, None,
                                   request.call, None))
        client["process"] = self._next_process
        self._next_process += 1
        client["busy"] = None

    def client_step(self, cid: int, chaos: bool) -> None:
        client = self.clients[cid]
        request: Request | None = client["busy"]
        if request is not None:
            if self.now - request.started > 80:
                self._timeout(request)
            elif request.server is None and self.now >= client["next_at"]:
                self._submit(request)
            return
        if self.now < client["next_at"]:
            return
        self._op_id += 1
        roll = self.rng.random()
        key = self.rng.choice(self.keys)
        if roll < 0.4:
            request = Request(cid, self._op_id, "write", key, self._op_id)
        elif roll < 0.6:
            request = Request(cid, self._op_id, "cas", key, self.rng.choice([None, *self._recent()]),
                              self._op_id)
        else:
            request = Request(cid, self._op_id, "read", key)
        self.clock += 1
        request.call, request.started = self.clock, self.now
        client["busy"] = request
        self._submit(request)

    def _recent(self) -> list[int]:
        return [op.value if op.kind == "write" else op.value[1] for op in self.history[-4:]
                if op.kind != "read"]

    def _submit(self, request: Request) -> None:
        """Try a server (a random live one, or the one last said to lead)."""
        live = [s for s in self.ids if self.servers[s].alive]
        if not live:
            return
        leaders = [s for s in live if self.servers[s].node.role is Role.LEADER]
        sid = self.rng.choice(leaders if leaders and self.rng.random() < 0.8 else live)
        server = self.servers[sid]
        if request.kind == "read":
            result = server.node.read_index(server.clock)
        else:
            data = msgpack.packb([request.op_id, request.kind, request.key, request.a, request.b])
            result = server.node.propose(server.clock, data)
        if isinstance(result, NotLeader):
            request.server = None
            self.clients[request.client]["next_at"] = self.now + 2
            return
        request.server = sid
        if request.kind == "read":
            server.reads[result] = request
        else:
            server.writes[result] = (server.node.term, request)
        self.process(server)

    # --- the run ------------------------------------------------------------------------

    def step(self, chaos: bool, clients: bool = True) -> None:
        self.now += 1
        f = self.faults
        for sid in self.ids:
            self.clocks[sid] += self.rates[sid]
        if f.drift and self.rng.random() < f.redrift:
            self.rates[self.rng.choice(self.ids)] = 1 + self.rng.uniform(-f.drift, f.drift)
        if chaos:
            live = [s for s in self.ids if self.servers[s].alive]
            if live and self.rng.random() < f.crash:
                self.crash(self.rng.choice(live))
            if self.rng.random() < f.partition:
                side = set(self.rng.sample(self.ids, self.rng.randint(1, len(self.ids) // 2)))
                leaders = [s for s in live if self.servers[s].node.role is Role.LEADER]
                if leaders and self.rng.random() < 0.5:
                    side = {leaders[0]}  # isolating the leader is the interesting case
                self.cut = {frozenset((a, b)) for a in side for b in self.ids if b not in side}
                self.stats["partitions"] += 1
                self.log.append(f"{self.now} partition {sorted(side)}")
            elif self.cut and self.rng.random() < f.heal:
                self.cut = set()
                self.log.append(f"{self.now} heal")
        for sid, until in sorted(self.down_until.items()):
            if until <= self.now or not chaos:
                self.restart(sid)
        while self.network and self.network[0][0] <= self.now:
            _, _, _, dst, frame = heapq.heappop(self.network)
            server = self.servers[dst]
            if server.alive:
                server.node.receive(server.clock, decode(frame))
                self.process(server)
        for sid in self.ids:
            server = self.servers[sid]
            if server.alive:
                self.flush_disk(server)
                server.node.tick(server.clock)
                self.process(server)
        for cid in range(len(self.clients)):
            if clients or self.clients[cid]["busy"] is not None:
                self.client_step(cid, chaos)
        if self.membership and chaos:
            self.membership_step()

    def membership_step(self) -> None:
        """Now and then remove a voter and add it back (non-voter first, then promoted)."""
        leaders = [s for s in self.servers.values() if s.alive and s.node.role is Role.LEADER]
        if not leaders or self.rng.random() > 0.02:
            return
        node = leaders[0].node
        config = node.config
        try:
            missing = sorted(set(self.ids) - config.servers)
            if missing:
                node.change_membership(leaders[0].clock, ChangeKind.ADD_NONVOTER, missing[0])
            elif config.nonvoters:
                peer = sorted(config.nonvoters)[0]
                if node.leader.peers[peer].match_index >= node.commit_index:
                    node.change_membership(leaders[0].clock, ChangeKind.PROMOTE, peer)
            elif len(config.voters) == len(self.ids):
                victim = self.rng.choice(sorted(config.voters))
                node.change_membership(leaders[0].clock, ChangeKind.REMOVE, victim)
        except InvalidChange:
            return
        self.stats["config_changes"] += 1
        self.process(leaders[0])

    def run(self, chaos_steps: int = 800, settle_steps: int = 600) -> None:
        try:
            for _ in range(chaos_steps):
                self.step(chaos=True)
                if self.now % 50 == 0:
                    self.check_logs()
            self.cut = set()
            self.faults = Faults(loss=0.0, duplicate=0.0, max_delay=self.faults.max_delay,
                                 crash=0.0, partition=0.0, disk_delay=self.faults.disk_delay)
            for i in range(settle_steps):
                self.step(chaos=False, clients=i < settle_steps // 2)
            self.check_final()
        except AssertionError as exc:
            raise SafetyError(f"seed {self.seed}: {exc}\nreplay: {self.replay_hint()}") from exc

    def replay_hint(self) -> str:
        return f"Sim({self.seed}, servers={len(self.ids)}, membership={self.membership}).run()"

    def check_final(self) -> None:
        """After healing: one leader, every voter applied everything acknowledged, all
        states equal, no acknowledged write lost, and the history is linearizable."""
        self.check_logs()
        leaders = [s for s in self.servers.values() if s.node.role is Role.LEADER]
        if len(leaders) != 1:
            raise SafetyError(f"liveness: {len(leaders)} leaders after settling")
        config = leaders[0].node.config
        top = max((i for i, _ in self.acked), default=0)
        for sid in sorted(config.servers):
            server = self.servers[sid]
            if server.applied < top:
                raise SafetyError(f"liveness: {sid} applied {server.applied} < acked {top}")
        states = {self.servers[s].applied for s in config.servers}
        if len(states) == 1:
            kvs = {msgpack.packb(sorted(self.servers[s].kv.items())) for s in config.servers}
            if len(kvs) != 1:
                raise SafetyError("state machine safety: final states differ")
        for index, op_id in self.acked:
            term, data = self.committed[index]
            if msgpack.unpackb(data)[0] != op_id:
                raise SafetyError(f"acknowledged write {op_id} at {index} lost")
        ok, key = check(self.history)
        if not ok:
            raise SafetyError(f"history of {key} is not linearizable")
