"""The one-member stand-in for Raft: every command is committed at the next index and applied.

Commands take the same path Raft will give them (encoded to the log's JSON form, decoded and
applied by the FSM), so swapping in the replicated log changes nothing above this module. It
implements `agent.raft.interface.ReplicatedLog`: always the leader, of itself.
"""

from __future__ import annotations

from typing import Any, Callable

from twisted.internet.defer import Deferred, fail, succeed

from agent.fsm.apply import FSM
from agent.fsm.commands import decode_command, encode_command
from agent.rpc.options import WriteResult


class SingleServerLog:
    def __init__(self, fsm: FSM, address: str = "") -> None:
        self._fsm = fsm
        self.last_index = fsm.store.index
        self._address = address
        self._listeners: list[Callable[[bool], None]] = []

    def bootstrap(self) -> None:
        """Start a fresh log the way Raft's does: entry 1 is the cluster's configuration, which
        the FSM never sees, so the first command commits at index 2 (as in Consul, whose first
        answers carry an index past 1 and clients wait for one). No-op on a non-empty log."""
        if self.last_index == 0:
            self.last_index = 1

    # --- ReplicatedLog ---

    @property
    def is_leader(self) -> bool:
        return True

    @property
    def leader_address(self) -> str:
        return self._address

    @property
    def applied_index(self) -> int:
        return self.last_index

    def last_contact(self) -> float:
        return 0.0

    def verify_leader(self) -> Deferred:
        return succeed(True)

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        self._listeners.append(listener)

    def remove_leadership_listener(self, listener: Callable[[bool], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def apply(self, command: Any) -> Deferred:
        """Commit `command`; fires with a WriteResult, or fails with the command's error."""
        entry = encode_command(command)
        self.last_index += 1
        result = self._fsm.apply(self.last_index, decode_command(entry))
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(WriteResult(self.last_index, result))
