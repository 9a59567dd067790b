"""The Serf state machine: membership with Lamport-ordered intents, user events and queries,
above SWIM and below the agent.

It implements the `Delegate` and `EventDelegate` protocols of `agent.gossip.delegate`, so the
SWIM state machine drives it directly; the agent drives it through the public methods. It
never touches the network or a clock: `tick(now)` gives it the time (the SWIM callbacks carry
none, so they use the last `now` seen) and everything it wants done comes out of `drain()` as
values (`agent.gossip.serf.events`). Randomness (query ids, reconnect choice, relays) comes
from the injected `random.Random`.
"""

from __future__ import annotations

from enum import Enum
from random import Random
from typing import Hashable, Mapping

from agent.gossip.broadcasts import TransmitLimitedQueue
from agent.gossip.delegate import NodeInfo
from agent.gossip.serf.buffers import EventBuffer, QueryBuffer
from agent.gossip.serf.codec import SerfDecodeError, decode_message, encode_message
from agent.gossip.serf.config import USER_EVENT_SIZE_LIMIT, SerfConfig
from agent.gossip.serf.errors import SerfError
from agent.gossip.serf.events import (
    BroadcastDone, Member, MemberStatus, Query, QueryAck, QueryDone, QueryReply, ReconnectTo,
    SendTo, SerfOutput, UserEvent)
from agent.gossip.serf.internal import Keyring, handle_internal_query
from agent.gossip.serf.lamport import LamportClock
from agent.gossip.serf.members import MemberTable
from agent.gossip.serf.messages import (
    QUERY_FLAG_ACK, Join, Leave, PushPull, QueryMessage, QueryResponseMessage, Relay,
    SerfMessageType, UserEventMessage, UserEventRecord)
from agent.gossip.serf.queries import (
    INTERNAL_QUERY_PREFIX, QueryHandle, QueryParams, default_query_timeout, k_random_members,
    should_process)
from agent.gossip.serf.tags import encode_tags


class SerfState(Enum):
    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    SHUTDOWN = "shutdown"


class Serf:
    def __init__(self, config: SerfConfig, rng: Random, now: float = 0.0,
                 keyring: Keyring | None = None) -> None:
        encode_tags(config.tags, config.protocol_version)  # refuse oversized tags up front
        self.config = config
        self.name = config.node_name
        self.tags = dict(config.tags)
        self.keyring = keyring
        self.state = SerfState.ALIVE
        self.ignore_old_events = False  # set by the adapter around a join that skips history
        self.dropped_messages = 0  # undecodable Serf messages received
        self._rng = rng
        self._now = now
        self._outbox: list[SerfOutput] = []
        # Start every clock at 1 so that a join stamped 0 never beats a real one.
        self.clock, self.event_clock, self.query_clock = (LamportClock(1) for _ in range(3))
        self.members = MemberTable(self.name, self._outbox.append)
        size = lambda: len(self.members.members)  # noqa: E731
        self._intents, self._event_queue, self._query_queue = (
            TransmitLimitedQueue(config.retransmit_mult, size, len) for _ in range(3))
        self._finished: list[Hashable] = []  # notify tokens of broadcasts done, not yet output
        self.event_buffer = EventBuffer(config.event_buffer)
        self.query_buffer = QueryBuffer(config.query_buffer)
        self._handles: dict[int, QueryHandle] = {}  # our queries, by Lamport time
        self._answered: dict[tuple[int, int], float] = {}  # queries we responded to -> deadline
        self._pending_prunes: list[tuple[float, str]] = []
        self._next_reap = now + config.reap_interval
        self._next_reconnect = now + config.reconnect_interval
        self._next_queue_check = now + config.queue_check_interval

    # --- time and output ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Advance time: reap, reconnect, trim queues, close finished queries."""
        self._now = now
        cfg = self.config
        if now >= self._next_reap:
            self._next_reap = now + cfg.reap_interval
            self.members.reap(now, cfg.reconnect_timeout, cfg.tombstone_timeout,
                              cfg.recent_intent_timeout)
        if now >= self._next_reconnect:
            self._next_reconnect = now + cfg.reconnect_interval
            self._reconnect()
        if now >= self._next_queue_check:
            self._next_queue_check = now + cfg.queue_check_interval
            limit = cfg.max_queue_depth
            if cfg.min_queue_depth > 0:
                limit = max(cfg.min_queue_depth, 2 * len(self.members.members))
            for queue in (self._intents, self._event_queue, self._query_queue):
                queue.prune(limit)
        due = [p for p in self._pending_prunes if p[0] <= now]
        self._pending_prunes = [p for p in self._pending_prunes if p[0] > now]
        for _, name in due:
            self.members.erase(name)
        for ltime, handle in list(self._handles.items()):
            if handle.finished(now):
                del self._handles[ltime]
                handle.closed = True
                self._outbox.append(QueryDone(handle.ltime, handle.id))
        self._answered = {k: d for k, d in self._answered.items() if d >= now}
        self._collect_finished()

    def drain(self) -> list[SerfOutput]:
        """Everything that happened since the last drain, in order."""
        self._collect_finished()
        out, self._outbox[:] = list(self._outbox), []
        return out

    def _collect_finished(self) -> None:
        self._outbox.extend(BroadcastDone(t) for t in self._finished)
        self._finished.clear()

    # --- views --------------------------------------------------------------------------------

    def member_list(self) -> list[Member]:
        return [s.member for s in self.members.members.values()]

    def local_member(self) -> Member | None:
        state = self.members.members.get(self.name)
        return state.member if state else None

    def num_nodes(self) -> int:
        return len(self.members.members)

    def default_query_timeout(self) -> float:
        """Serf uses memberlist's live-member count; ours is the alive members we know."""
        return default_query_timeout(self.members.count(MemberStatus.ALIVE),
                                     self.config.gossip_interval, self.config.query_timeout_mult)

    # --- memberlist Delegate ------------------------------------------------------------------

    def node_meta(self, limit: int) -> bytes:
        return encode_tags(self.tags, self.config.protocol_version, limit)

    def notify_message(self, payload: bytes) -> None:
        if not payload:
            return
        try:
            msg = decode_message(payload)
        except SerfDecodeError:
            self.dropped_messages += 1
            return
        queue, rebroadcast = self._intents, False
        if isinstance(msg, Leave):
            rebroadcast = self._leave_intent(msg)
        elif isinstance(msg, Join):
            rebroadcast = self._join_intent(msg)
        elif isinstance(msg, UserEventMessage):
            queue, rebroadcast = self._event_queue, self._user_event(msg)
        elif isinstance(msg, QueryMessage):
            queue, rebroadcast = self._query_queue, self._query(msg)
        elif isinstance(msg, QueryResponseMessage):
            self._query_response(msg)
        elif isinstance(msg, Relay):
            self._outbox.append(SendTo(msg.dest_addr, msg.dest_port, msg.dest_name, msg.inner))
        if rebroadcast:
            queue.queue(payload)

    def broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Intents first, then queries, then user events, sharing one byte budget (as Serf)."""
        out: list[bytes] = []
        used = 0
        for queue in (self._intents, self._query_queue, self._event_queue):
            msgs = queue.get(overhead, limit - used)
            used += sum(len(m) + overhead for m in msgs)
            out.extend(msgs)
        return out

    def local_state(self, join: bool) -> bytes:
        return encode_message(PushPull(
            ltime=self.clock.time(),
            status_ltimes={n: s.status_ltime for n, s in self.members.members.items()},
            left_members=tuple(self.members.left), event_ltime=self.event_clock.time(),
            events=self.event_buffer.snapshot(), query_ltime=self.query_clock.time()))

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        if not state or state[0] != SerfMessageType.PUSH_PULL:
            self.dropped_messages += 1
            return
        try:
            pp = decode_message(state)
        except SerfDecodeError:
            self.dropped_messages += 1
            return
        assert isinstance(pp, PushPull)
        # Nothing stamped with the remote's current times has been sent yet: witness one less.
        for clock, seen in ((self.clock, pp.ltime), (self.event_clock, pp.event_ltime),
                            (self.query_clock, pp.query_ltime)):
            if seen > 0:
                clock.witness(seen - 1)
        left = set(pp.left_members)
        for name in pp.left_members:
            # The real leave time is lost; it was accepted after the join, so go one past it.
            self._leave_intent(Leave(pp.status_ltimes.get(name, 0) + 1, name))
        for name, ltime in pp.status_ltimes.items():
            if name not in left:
                self._join_intent(Join(ltime, name))
        if join and self.ignore_old_events:
            self.event_buffer.min_time = max(self.event_buffer.min_time, pp.event_ltime)
        for slot in pp.events:
            for record in slot.events if slot else ():
                self._user_event(UserEventMessage(slot.ltime, record.name, record.payload))

    # --- memberlist EventDelegate -------------------------------------------------------------

    def notify_join(self, node: NodeInfo) -> None:
        self.members.node_join(node, self._now)

    def notify_leave(self, node: NodeInfo) -> None:
        self.members.node_leave(node, self._now)

    def notify_update(self, node: NodeInfo) -> None:
        self.members.node_update(node)

    # --- the agent's requests -----------------------------------------------------------------

    def joined(self) -> None:
        """memberlist's join reached someone: announce our join at the current time."""
        self._broadcast_join(self.clock.time())

    def set_tags(self, tags: Mapping[str, str]) -> bytes:
        """Change our tags; returns the new node meta for SWIM to re-advertise."""
        meta = encode_tags(tags, self.config.protocol_version)
        self.tags = dict(tags)
        return meta

    def leave(self) -> Hashable | None:
        """Start a graceful leave. Returns a token that comes back as `BroadcastDone` once the
        intent is out (wait at most `broadcast_timeout`), or None when nobody is listening.
        Then SWIM leaves, and after `leave_propagate_delay` the adapter calls `finish_leave`."""
        if self.state is SerfState.LEFT:
            return None
        if self.state is not SerfState.ALIVE:
            raise SerfError(f"Leave called in state {self.state.value}")
        self.state = SerfState.LEAVING
        return self._broadcast_leave(Leave(self.clock.time(), self.name), ("leave", self.name))

    def finish_leave(self) -> None:
        if self.state is not SerfState.SHUTDOWN:
            self.state = SerfState.LEFT

    def shutdown(self) -> None:
        self.state = SerfState.SHUTDOWN

    def force_leave(self, node: str, prune: bool = False) -> Hashable | None:
        """Mark a failed node left (and with `prune`, forget it now) across the pool."""
        return self._broadcast_leave(Leave(self.clock.time(), node, prune),
                                     ("force-leave", node, self.clock.time()))

    def user_event(self, name: str, payload: bytes = b"", coalesce: bool = False) -> None:
        limit = self.config.user_event_size_limit
        if len(name) + len(payload) > min(limit, USER_EVENT_SIZE_LIMIT):
            raise SerfError(f"user event exceeds limit of {limit} bytes before encoding")
        msg = UserEventMessage(self.event_clock.time(), name, bytes(payload), coalesce)
        raw = encode_message(msg)
        if len(raw) > min(limit, USER_EVENT_SIZE_LIMIT):
            raise SerfError(f"encoded user event exceeds limit of {limit} bytes")
        self.event_clock.increment()
        self._user_event(msg)
        self._event_queue.queue(raw)

    def query(self, name: str, payload: bytes = b"", params: QueryParams | None = None
              ) -> QueryHandle:
        """Start a query; acks and replies come out as QueryAck/QueryReply, then QueryDone."""
        if self.config.protocol_version < 4:
            raise SerfError("Feature not supported")
        params = params or QueryParams()
        timeout = params.timeout or self.default_query_timeout()
        local = self.local_member()
        if local is None:
            raise SerfError("the local node is not a member yet")
        msg = QueryMessage(
            ltime=self.query_clock.time(), id=self._rng.getrandbits(31), addr=local.addr,
            port=local.port, source_node=self.name, filters=params.encode_filters(),
            flags=QUERY_FLAG_ACK if params.request_ack else 0, relay_factor=params.relay_factor,
            timeout_ns=int(round(timeout * 1e9)), name=name, payload=bytes(payload))
        raw = encode_message(msg)
        if len(raw) > self.config.query_size_limit:
            raise SerfError(f"query exceeds limit of {self.config.query_size_limit} bytes")
        handle = QueryHandle(msg.ltime, msg.id, self._now + timeout, params.request_ack)
        self._handles[msg.ltime] = handle
        self._query(msg)
        self._query_queue.queue(raw)
        return handle

    def respond(self, query: Query, payload: bytes) -> None:
        """Answer a query we received, straight to its source (and through relays)."""
        resp = QueryResponseMessage(query.ltime, query.id, self.name, 0, bytes(payload))
        raw = encode_message(resp)
        if len(raw) > self.config.query_response_size_limit:
            raise SerfError("response exceeds limit of "
                            f"{self.config.query_response_size_limit} bytes")
        key = (query.ltime, query.id)
        if key in self._answered:
            raise SerfError("response already sent")
        if self._now > query.deadline:
            raise SerfError("response is past the deadline")
        self._answered[key] = query.deadline
        self._send_response(query.addr, query.port, query.source_node, query.relay_factor, raw)

    # --- handlers -----------------------------------------------------------------------------

    def _broadcast_join(self, ltime: int) -> None:
        msg = Join(ltime, self.name)
        self.clock.witness(ltime)
        self._join_intent(msg)
        self._intents.queue(encode_message(msg))

    def _broadcast_leave(self, msg: Leave, token: Hashable) -> Hashable | None:
        self.clock.increment()
        self._leave_intent(msg)
        if not self.members.alive_others():
            return None
        self._intents.queue(encode_message(msg),
                            on_finished=lambda: self._finished.append(token))
        return token

    def _join_intent(self, msg: Join) -> bool:
        self.clock.witness(msg.ltime)
        return self.members.join_intent(msg, self._now)

    def _leave_intent(self, msg: Leave) -> bool:
        self.clock.witness(msg.ltime)
        rebroadcast, refute = self.members.leave_intent(
            msg, self._now, self.state is SerfState.ALIVE)
        if refute:
            self._broadcast_join(self.clock.time())
        state = self.members.members.get(msg.node)
        if rebroadcast and msg.prune and state is not None:
            if state.member.status is MemberStatus.LEAVING:  # let its own leave go out first
                delay = self.config.broadcast_timeout + self.config.leave_propagate_delay
                self._pending_prunes.append((self._now + delay, msg.node))
            else:
                self.members.erase(msg.node)
        return rebroadcast

    def _user_event(self, msg: UserEventMessage) -> bool:
        self.event_clock.witness(msg.ltime)
        if not self.event_buffer.add(msg.ltime, UserEventRecord(msg.name, msg.payload),
                                     self.event_clock):
            return False
        self._outbox.append(UserEvent(msg.ltime, msg.name, msg.payload, msg.cc))
        return True

    def _query(self, msg: QueryMessage) -> bool:
        self.query_clock.witness(msg.ltime)
        if not self.query_buffer.add(msg.ltime, msg.id, self.query_clock):
            return False
        rebroadcast = not msg.no_broadcast
        if not should_process(msg.filters, self.name, self.tags):
            return rebroadcast  # not for us, but news: pass it on
        if msg.ack:
            ack = encode_message(QueryResponseMessage(msg.ltime, msg.id, self.name,
                                                      QUERY_FLAG_ACK))
            self._send_response(msg.addr, msg.port, msg.source_node, msg.relay_factor, ack)
        query = Query(msg.ltime, msg.name, msg.payload, msg.id, msg.addr, msg.port,
                      msg.source_node, self._now + msg.timeout, msg.relay_factor)
        if msg.name.startswith(INTERNAL_QUERY_PREFIX):
            handle_internal_query(self, query)
        else:
            self._outbox.append(query)
        return rebroadcast

    def _send_response(self, addr: bytes, port: int, node: str, relay_factor: int,
                       raw: bytes) -> None:
        if node == self.name:
            self.notify_message(raw)  # our own query: Serf sends this over UDP to itself
        else:
            self._outbox.append(SendTo(addr, port, node, raw))
        members = self.member_list()
        if relay_factor == 0 or len(members) < relay_factor + 1:
            return
        relay = encode_message(Relay(addr, port, node, raw))
        if len(relay) > self.config.query_response_size_limit:
            return
        for m in k_random_members(relay_factor, members, self.name, self._rng):
            self._outbox.append(SendTo(m.addr, m.port, m.name, relay))

    def _query_response(self, resp: QueryResponseMessage) -> None:
        handle = self._handles.get(resp.ltime)
        if handle is None or handle.id != resp.id or handle.finished(self._now):
            return
        if resp.ack:
            if handle.want_acks and resp.source not in handle.acks:
                handle.acks.append(resp.source)
                self._outbox.append(QueryAck(resp.ltime, resp.id, resp.source))
        elif resp.source not in handle.responses:
            handle.responses[resp.source] = resp.payload
            self._outbox.append(QueryReply(resp.ltime, resp.id, resp.source, resp.payload))

    def _reconnect(self) -> None:
        """Try one failed member, with probability failed / alive, so that the pool as a whole
        tries each failed member about once per reconnect interval."""
        failed = self.members.failed
        if not failed:
            return
        alive = len(self.members.members) - len(failed) - len(self.members.left) or 1
        if self._rng.random() > len(failed) / alive:
            return
        member = self.members.members[failed[self._rng.randrange(len(failed))]].member
        self._outbox.append(ReconnectTo(member.name, member.addr, member.port))
