"""The one-member stand-in for Raft: every command is committed at the next index and applied.

Commands take the same path Raft will give them (encoded to the log's JSON form, decoded and
applied by the FSM), so swapping in the replicated log changes nothing above this module.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from agent.fsm.apply import FSM
from agent.fsm.commands import decode_command, encode_command


class SingleServerLog:
    def __init__(self, fsm: FSM) -> None:
        self._fsm = fsm
        self.last_index = fsm.store.index

    def bootstrap(self) -> None:
        """Start a fresh log the way Raft's does: entry 1 is the cluster's configuration, which
        the FSM never sees, so the first command commits at index 2 (as in Consul, whose first
        answers carry an index past 1 and clients wait for one). No-op on a non-empty log."""
        if self.last_index == 0:
            self.last_index = 1

    def apply(self, command: Any) -> Deferred:
        """Commit `command`; the Deferred fires with its result or fails with its error."""
        entry = encode_command(command)
        self.last_index += 1
        result = self._fsm.apply(self.last_index, decode_command(entry))
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(result)
