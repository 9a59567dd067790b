"""Serf's member table: statuses driven by SWIM's notifications and by join/leave intents.

A member is `alive` once SWIM reports it, `leaving` after a leave intent newer than its last
status time, then `left` when SWIM reports it gone; a member SWIM reports gone without such an
intent is `failed`. Intents may arrive before SWIM has told us about the node: the latest one
per node waits in the recent-intent buffer and applies when the node shows up. Failed members
are reaped after the reconnect timeout, left ones after the tombstone timeout.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

from agent.gossip.delegate import NodeInfo
from agent.gossip.serf.events import Member, MemberEvent, MemberEventType, MemberStatus
from agent.gossip.serf.errors import SerfDecodeError
from agent.gossip.serf.messages import Join, Leave, SerfMessageType
from agent.gossip.serf.tags import decode_tags


@dataclass(slots=True)
class MemberState:
    member: Member
    status_ltime: int = 0  # Lamport time of the last join/leave intent applied
    leave_time: float = 0.0  # when it failed or left (`now` units), for reaping


@dataclass(frozen=True, slots=True)
class Intent:
    type: SerfMessageType  # JOIN or LEAVE
    wall_time: float
    ltime: int


def tags_of(meta: bytes) -> dict[str, str]:
    """Serf logs undecodable tags and carries on with none; so do we."""
    try:
        return decode_tags(meta)
    except SerfDecodeError:
        return {}


class MemberTable:
    def __init__(self, local_name: str, emit: Callable[[MemberEvent], None]) -> None:
        self.local_name = local_name
        self.members: dict[str, MemberState] = {}
        self.failed: list[str] = []  # names, oldest first
        self.left: list[str] = []
        self.intents: dict[str, Intent] = {}
        self._emit = emit

    # --- SWIM's notifications -----------------------------------------------------------------

    def node_join(self, node: NodeInfo, now: float) -> None:
        state = self.members.get(node.name)
        old = state.member.status if state else MemberStatus.NONE
        fresh = Member(node.name, node.addr, node.port, tags_of(node.meta), MemberStatus.ALIVE,
                       tuple(node.vsn))
        if state is None:
            state = MemberState(fresh)
            intent = self.intents.get(node.name)
            if intent is not None and intent.type is SerfMessageType.JOIN:
                state.status_ltime = intent.ltime
            elif intent is not None and intent.type is SerfMessageType.LEAVE:
                state.member = replace(fresh, status=MemberStatus.LEAVING)
                state.status_ltime = intent.ltime
            self.members[node.name] = state
        else:
            state.member = fresh
            state.leave_time = 0.0
        if old in (MemberStatus.FAILED, MemberStatus.LEFT):
            self._forget_old(node.name)
        self._emit(MemberEvent(MemberEventType.JOIN, state.member))

    def node_leave(self, node: NodeInfo, now: float) -> None:
        state = self.members.get(node.name)
        if state is None:
            return
        status = state.member.status
        if status is MemberStatus.LEAVING:
            self._set_status(state, MemberStatus.LEFT)
            self.left.append(node.name)
            kind = MemberEventType.LEAVE
        elif status is MemberStatus.ALIVE:
            self._set_status(state, MemberStatus.FAILED)
            self.failed.append(node.name)
            kind = MemberEventType.FAILED
        else:
            return
        state.leave_time = now
        self._emit(MemberEvent(kind, state.member))

    def node_update(self, node: NodeInfo) -> None:
        state = self.members.get(node.name)
        if state is None:
            return
        state.member = replace(state.member, addr=node.addr, port=node.port,
                               tags=tags_of(node.meta), vsn=tuple(node.vsn))
        self._emit(MemberEvent(MemberEventType.UPDATE, state.member))

    # --- intents ------------------------------------------------------------------------------

    def join_intent(self, msg: Join, now: float) -> bool:
        """Apply a join intent; True if it was news (so it should be re-gossiped)."""
        state = self.members.get(msg.node)
        if state is None:
            return self._upsert_intent(msg.node, SerfMessageType.JOIN, msg.ltime, now)
        if msg.ltime <= state.status_ltime:
            return False
        state.status_ltime = msg.ltime
        if state.member.status is MemberStatus.LEAVING:
            self._set_status(state, MemberStatus.ALIVE)  # the leave was older than this join
        return True

    def leave_intent(self, msg: Leave, now: float, local_alive: bool) -> tuple[bool, bool]:
        """Apply a leave intent. Returns (rebroadcast, refute): `refute` asks the caller to
        broadcast a newer join for ourselves, because we are alive and not leaving."""
        state = self.members.get(msg.node)
        if state is None:
            return self._upsert_intent(msg.node, SerfMessageType.LEAVE, msg.ltime, now), False
        if msg.ltime <= state.status_ltime:
            return False, False
        if msg.node == self.local_name and local_alive:
            return False, True
        # Record the time even when the status stays, or two nodes re-gossip the same leave to
        # each other forever (hashicorp/consul#8179).
        state.status_ltime = msg.ltime
        status = state.member.status
        if status is MemberStatus.ALIVE:
            self._set_status(state, MemberStatus.LEAVING)
        elif status is MemberStatus.FAILED:
            self._set_status(state, MemberStatus.LEFT)
            self.failed.remove(msg.node)
            self.left.append(msg.node)
            self._emit(MemberEvent(MemberEventType.LEAVE, state.member))
        elif status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False, False
        return True, False

    def _upsert_intent(self, node: str, kind: SerfMessageType, ltime: int, now: float) -> bool:
        old = self.intents.get(node)
        if old is None or ltime > old.ltime:
            self.intents[node] = Intent(kind, now, ltime)
            return True
        return False

    # --- removal ------------------------------------------------------------------------------

    def erase(self, name: str) -> None:
        state = self.members.pop(name, None)
        if state is None:
            return
        self._forget_old(name)
        self._emit(MemberEvent(MemberEventType.REAP, state.member))

    def reap(self, now: float, reconnect_timeout: float, tombstone_timeout: float,
             intent_timeout: float) -> None:
        for names, timeout in ((self.failed, reconnect_timeout), (self.left, tombstone_timeout)):
            for name in list(names):
                state = self.members.get(name)
                if state is None or now - state.leave_time > timeout:
                    names.remove(name)
                    self.erase(name)
        for node, intent in list(self.intents.items()):
            if now - intent.wall_time > intent_timeout:
                del self.intents[node]

    def _forget_old(self, name: str) -> None:
        for names in (self.failed, self.left):
            if name in names:
                names.remove(name)

    @staticmethod
    def _set_status(state: MemberState, status: MemberStatus) -> None:
        state.member = replace(state.member, status=status)

    # --- views --------------------------------------------------------------------------------

    def alive_others(self) -> bool:
        return any(s.member.status is MemberStatus.ALIVE and n != self.local_name
                   for n, s in self.members.items())

    def count(self, status: MemberStatus) -> int:
        return sum(1 for s in self.members.values() if s.member.status is status)
