"""The server endpoints: every read and write that needs server state, answered here.

Named as Consul's RPC endpoints (`KVS.Apply`, `Catalog.Register`, `Session.Apply`,
`Txn.Apply`, `Health.ServiceNodes`, ...). This is the one place that decides a read's
consistency mode (so Raft, stale reads, forwarding to the leader and ACL filtering each plug in
once), runs blocking queries, applies `?filter=`, and enforces the rules only a leader may
decide before a command reaches the log (lock-delay, transaction pre-checks, session
validation and ID). Today the agent calls it in process; the server port of a later issue
reaches the same endpoints from client agents and followers.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.python.failure import Failure

from agent import structs
from agent.durations import go_duration
from agent.errors import InvalidRequest, NoLeader, NoServers, UnknownDatacenter, WaypostError
from agent.fsm.commands import (Deregister, KVOperation, Register, SessionCreate, SessionDestroy,
                                SessionTxn, SessionTxnResult, Txn)
from agent.rpc import queries as q
from agent.rpc.blocking import BlockingReads
from agent.rpc.filtering import Filtering
from agent.rpc.options import (
    CONSISTENT,
    DEFAULT,
    STALE,
    QueryMeta,
    QueryOptions,
    ReadResult,
    WriteRequest,
    WriteResult,
)
from agent.rpc.reads import READS
from agent.rpc.requests import SessionRenew
from agent.rpc.transport import RPCConnectionError
from agent.state.txn import WRITE_VERBS, precheck, run_txn
from agent.structs import Session

# What Consul reports as the effective consistency of each mode.
_EFFECTIVE = {DEFAULT: "leader", STALE: "stale", CONSISTENT: "consistent"}
_MEMO_LIMIT = 4096
_HOLD_POLL = 0.02  # how often a request held for a leader looks again (no network cost)


class ServerEndpoints:
    """Reads and writes against this server's state store and log."""

    def __init__(self, reactor, store, log, *, datacenter: Callable[[], str],
                 lock_delay_remaining: Callable[[str], float],
                 session_timers=None, rng: random.Random | None = None,
                 new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
                 other_datacenters: Any = None, hold_timeout: float = 7.0,
                 forward: Any = None) -> None:
        """`other_datacenters` (an `agent.gossip.wan.Datacenters`: `names()`, `endpoints(dc)`)
        is the way to other datacenters; None: only our own is reachable. `forward` (the
        endpoints of the current leader, over the server RPC) is where a follower sends what
        only the leader answers; without it this server only ever answers for itself.
        `hold_timeout` is Consul's rpc_hold_timeout: how long such a request waits for a
        leader before failing with "No cluster leader"."""
        self._reactor = reactor
        self._forward = forward
        self._hold_timeout = hold_timeout
        self.other_datacenters = other_datacenters
        self._store = store
        self._log = log
        self._datacenter = datacenter
        self._lock_delay_remaining = lock_delay_remaining
        self._session_timers = session_timers
        self._new_id = new_id
        self._blocking = BlockingReads(reactor, store.watch, rng)
        self._filtering = Filtering()
        # (query, filter, mode) -> the ReadResult at the store index it was computed at: a
        # thousand readers woken by one write share one evaluation (and so one encoding).
        self._memo: dict[tuple, tuple[int, ReadResult]] = {}

    # --- what frontends learn of the server -----------------------------------------------------

    def on_change(self, listener: Callable[[int, frozenset[str]], None]) -> Callable[[], None]:
        """Call `listener(index, tables)` after every committed change; returns the call that
        unsubscribes."""
        listeners = self._store.on_commit
        listeners.append(listener)

        def unsubscribe() -> None:
            if listener in listeners:
                listeners.remove(listener)
        return unsubscribe

    def leader(self) -> str:
        return self._log.leader_address

    def peers(self) -> list[str]:
        """The voters' server addresses, as Consul's /v1/status/peers."""
        if self._forward is None:
            address = self._log.leader_address
            return [address] if address else []
        log = self._log
        return sorted(log.addresses.get(sid, "") for sid in log.configuration.voters
                      if log.addresses.get(sid))

    # --- the leader, here or there --------------------------------------------------------------

    def _leader_ready(self) -> bool:
        return getattr(self._log, "is_ready_leader", self._log.is_leader)

    def at_leader(self, here: Callable[[], Any], there: Callable[[Any], Any]) -> Deferred:
        """Run `here()` once this server is a leader ready to serve, or `there(endpoints)` on
        the leader's endpoints; with no leader, retry until `hold_timeout`, then NoLeader
        ("No cluster leader"). `there` is retried only on failures that prove the request was
        not carried out (no leader there, or a connection that never sent it)."""
        if self._leader_ready():  # the common case on the leader: no holding machinery
            return maybeDeferred(here)
        deadline = self._reactor.seconds() + self._hold_timeout
        result: Deferred = Deferred()

        def attempt() -> None:
            if result.called:
                return
            forwarded = False
            try:
                if self._leader_ready():
                    d = maybeDeferred(here)
                elif self._log.leader_address and not self._log.is_leader:
                    forwarded = True
                    d = maybeDeferred(there, self._forward)
                else:
                    wait()
                    return
            except Exception:  # noqa: BLE001
                result.errback()
                return
            d.addCallbacks(lambda v: result.called or result.callback(v),
                           lambda f: failed(f, forwarded))

        def wait() -> None:
            if self._reactor.seconds() >= deadline:
                result.errback(NoLeader())
            else:
                self._reactor.callLater(_HOLD_POLL, attempt)

        def failed(f: Failure, forwarded: bool) -> None:
            if result.called:
                return
            unsent = f.check(RPCConnectionError) and not f.value.sent
            if forwarded and (f.check(NoLeader, NoServers) or unsent):
                wait()
            else:
                result.errback(f)

        attempt()
        return result

    def last_contact(self) -> float:
        return self._log.last_contact()

    # --- reads ----------------------------------------------------------------------------------

    def local_index(self, consistency: str, max_stale: float = 0.0) -> int | None:
        """The index at which a read in `consistency` mode would be answered here, now, without
        a round trip — or None when it would not (a follower's default read goes to the leader,
        a consistent read needs a quorum round, a stale read with `max_stale` needs a replica
        that heard from the leader within it). Frontends validate cached answers with it."""
        if consistency == STALE:
            if max_stale > 0 and self._log.last_contact() > max_stale:
                return None
            return self._store.index
        if consistency == DEFAULT and self._leader_ready():
            return self._store.index
        return None

    def read(self, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        """Answer a store query in the mode `options` asks for; a Deferred when it must wait
        (blocking, a quorum round). A read for another datacenter goes to a server of it."""
        elsewhere = self._elsewhere(options.datacenter)
        if elsewhere is not None:
            return elsewhere.read(query, options)
        if isinstance(query, q.CatalogDatacenters):
            names = (self.other_datacenters.names() if self.other_datacenters is not None
                     else [self._datacenter()])
            return ReadResult(names, QueryMeta(index=0))
        if self._forward is not None and self._leader_only(options):
            # What only the leader answers, answered by the leader (Consul forwards too).
            if options.consistency == STALE:
                options = replace(options, consistency=DEFAULT)
            return self.at_leader(lambda: self._read_here(query, options),
                                   lambda leader: leader.read(query, options))
        return self._read_here(query, options)

    def _leader_only(self, options: QueryOptions) -> bool:
        if options.consistency != STALE:
            return True
        return options.max_stale > 0 and self._log.last_contact() > options.max_stale

    def _read_here(self, query: Any, options: QueryOptions) -> ReadResult | Deferred:
        if isinstance(query, q.SessionExpiries):
            return self._session_expiries(query)
        spec = READS[type(query)]
        self._filtering.check(query, options.filter)  # a bad expression is a 400, at once
        mode = options.consistency
        if (mode == STALE and options.max_stale > 0
                and self._log.last_contact() > options.max_stale):
            # The replica is older than the client accepts: Consul asks the leader then.
            if not self._log.leader_address:
                raise NoLeader()
            mode = DEFAULT
        if mode == CONSISTENT:
            return self._log.verify_leader().addCallback(
                lambda _: self._blocking_read(spec, query, options))
        if mode == DEFAULT and not self._log.is_leader:
            # Forwarding to the leader arrives with the server RPC; until then there is none.
            raise NoLeader()
        return self._blocking_read(spec, query, options)

    def _session_expiries(self, query: q.SessionExpiries) -> ReadResult:
        # Timers live in the leader's memory only; a follower forwards (with the server RPC).
        if not self._log.is_leader or self._session_timers is None:
            raise NoLeader()
        now = self._reactor.seconds()
        left = {}
        for session_id in query.ids:
            deadline = self._session_timers.expires_at(session_id)
            if deadline is not None:
                left[session_id] = max(0.0, deadline - now)
        return ReadResult(left, QueryMeta(index=self._store.index, known_leader=True))

    def _blocking_read(self, spec, query, options: QueryOptions) -> ReadResult | Deferred:
        return self._blocking.read(lambda: self._answer(spec, query, options), options,
                                   spec.watch(query))

    def _answer(self, spec, query, options: QueryOptions) -> ReadResult:
        store_index = self._store.index
        key = (query, options.filter, options.consistency)
        memo = self._memo.get(key)
        if memo is not None and memo[0] == store_index:
            return memo[1]
        index, value = spec.run(self._store, query)
        if options.filter:
            value = self._filtering.apply(query, value, options.filter)
        log = self._log
        meta = QueryMeta(index=max(index, 1), known_leader=bool(log.leader_address),
                         last_contact=log.last_contact(),
                         consistency=_EFFECTIVE.get(options.consistency, "leader"))
        result = ReadResult(value, meta)
        if len(self._memo) >= _MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = (store_index, result)
        return result

    # --- writes ---------------------------------------------------------------------------------

    def write(self, command: Any, request: WriteRequest) -> Deferred:
        """Apply `command` through the log after the leader's rules; fires with a WriteResult.
        A write for another datacenter goes to a server of it: the request's datacenter, but a
        catalog registration's own (Consul's Catalog.Register ignores ?dc)."""
        try:
            target = (command.node.datacenter if isinstance(command, Register)
                      else request.datacenter)
            elsewhere = self._elsewhere(target)
            if elsewhere is not None:
                return elsewhere.write(command, replace(request, datacenter=target))
            handler = self._WRITES.get(type(command))
            if handler is None:
                raise InvalidRequest(f"no endpoint takes {type(command).__name__}")
            if self._forward is not None:
                return self.at_leader(lambda: handler(self, command),
                                       lambda leader: leader.write(command, request))
            return handler(self, command)
        except Exception:  # noqa: BLE001 - one failure path for the caller, as a Deferred
            return fail()

    def _apply(self, command: Any) -> Deferred:
        if not self._log.is_leader:
            return fail(NoLeader())
        return self._log.apply(command)

    def _catalog_register(self, command: Register) -> Deferred:  # Catalog.Register
        self._check_datacenter(command.node.datacenter)
        return self._apply(command)

    def _catalog_deregister(self, command: Deregister) -> Deferred:  # Catalog.Deregister
        return self._apply(command)

    def _kvs_apply(self, command: KVOperation) -> Deferred:  # KVS.Apply
        if command.op == "lock" and self._lock_delay_remaining(command.entry.key) > 0:
            # Consul's leader answers false while the key is inside its lock-delay.
            return succeed(WriteResult(self._store.index, False))
        return self._apply(command)

    def _txn_apply(self, command: Txn) -> Deferred:  # Txn.Apply (and Txn.Read)
        if not any(op.op in WRITE_VERBS for op in command.ops):
            errors = precheck(command.ops, lambda key: False)
            if errors:
                return succeed(WriteResult(self._store.index, structs.TxnOutcome(errors=errors)))
            return succeed(WriteResult(self._store.index,
                                       run_txn(self._store, command.ops, self._store.index)))
        errors = precheck(command.ops, lambda key: self._lock_delay_remaining(key) > 0)
        if errors:
            return succeed(WriteResult(self._store.index, structs.TxnOutcome(errors=errors)))
        return self._apply(command)

    def _session_create(self, command: SessionCreate) -> Deferred:  # Session.Apply create
        return self._apply(SessionCreate(self._new_session(command.session)))

    def _new_session(self, session: Session) -> Session:
        """`session` with a fresh ID, after the leader's rules (Consul's texts)."""
        behavior = session.behavior or structs.SESSION_RELEASE
        if behavior not in structs.SESSION_BEHAVIORS:
            raise WaypostError(f"Invalid Behavior setting '{behavior}'")
        ttl = session.ttl
        if ttl and not structs.SESSION_TTL_MIN <= ttl <= structs.SESSION_TTL_MAX:
            raise WaypostError(
                f"Invalid Session TTL '{round(ttl * 1e9)}', must be between "
                f"[{go_duration(structs.SESSION_TTL_MIN)}={go_duration(structs.SESSION_TTL_MAX)}]")
        if not session.node:
            raise WaypostError("Must provide Node")
        session_id = self._new_id()
        while session_id in self._store.sessions.sessions:
            session_id = self._new_id()
        return replace(session, id=session_id, behavior=behavior)

    def _session_txn(self, command: SessionTxn) -> Deferred:  # Waypost's etcd TTL writes
        errors = precheck(command.ops, lambda key: self._lock_delay_remaining(key) > 0)
        if errors:
            return succeed(WriteResult(self._store.index, SessionTxnResult(
                "", structs.TxnOutcome(errors=errors))))
        if command.create is not None:
            # The entry carries the ID chosen here, in the session and in every lock of it.
            session = self._new_session(command.create)
            ops = tuple(replace(op, entry=replace(op.entry, session=session.id))
                        if op.op == "lock" and not op.entry.session else op
                        for op in command.ops)
            command = replace(command, ops=ops, create=session)
        return self._apply(command)

    def _session_destroy(self, command: SessionDestroy) -> Deferred:  # Session.Apply destroy
        return self._apply(command)

    def _session_renew(self, command: SessionRenew) -> Deferred:  # Session.Renew
        if not self._log.is_leader:
            return fail(NoLeader())
        session = self._store.sessions.sessions.get(command.id)
        if session is not None and session.ttl > 0 and self._session_timers is not None:
            self._session_timers.renew(session.id)
        return succeed(WriteResult(self._store.index, session))

    _WRITES: dict[type, Callable[[Any, Any], Deferred]] = {
        Register: _catalog_register,
        Deregister: _catalog_deregister,
        KVOperation: _kvs_apply,
        Txn: _txn_apply,
        SessionCreate: _session_create,
        SessionTxn: _session_txn,
        SessionDestroy: _session_destroy,
        SessionRenew: _session_renew,
    }

    # --- shared -----------------------------------------------------------------------------

    def _elsewhere(self, dc: str | None) -> Any:
        """None for our own datacenter; the endpoints of another one (reached through the WAN
        pool), or UnknownDatacenter ("No path to datacenter") when there is no way to it."""
        if not dc or dc == self._datacenter():
            return None
        if self.other_datacenters is None:
            raise UnknownDatacenter(dc)
        return self.other_datacenters.endpoints(dc)

    def _check_datacenter(self, dc: str | None) -> None:
        if self._elsewhere(dc) is not None:
            raise UnknownDatacenter(dc)  # a command that reached here must be for us
