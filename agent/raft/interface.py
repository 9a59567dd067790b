"""The core's log interface: what the endpoints and leader duties need from consensus.

A `-dev` or `-bootstrap` server runs the one-member implementation (`agent.raft.single`);
Raft (a later issue) implements the same interface across 3-5 servers. Nothing above this
interface knows which one it talks to.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol

from twisted.internet.defer import Deferred


class ReplicatedLog(Protocol):
    """A log of commands, committed by a quorum and applied in order to the FSM.

    `apply(command)` fires with a `WriteResult(index, value)` once the command is durable on a
    quorum and applied here by the FSM; it fails with the command's own error, or with
    `agent.errors.NoLeader` when this server does not lead (forwarding to `leader_address`
    comes with the server RPC). Leadership listeners are called with True when this server
    becomes leader (after it applied everything in its log) and False when it stops being
    leader (or when `stop()` steps it down); the leader duties (`agent.leader`) start and stop
    with them. Every replica records lock-delays as it applies entries, so they survive a
    change of leader.
    """

    @property
    def is_leader(self) -> bool: ...

    @property
    def leader_address(self) -> str: ...

    @property
    def applied_index(self) -> int: ...

    def last_contact(self) -> float:
        """Seconds since the leader was last heard from (0 on the leader)."""

    def apply(self, command: Any) -> Deferred: ...

    def verify_leader(self) -> Deferred:
        """Fires once a quorum confirmed this server still leads (`?consistent` reads)."""

    def add_leadership_listener(self, listener: Callable[[bool], None]) -> None: ...

    def remove_leadership_listener(self, listener: Callable[[bool], None]) -> None: ...


def notify(listeners: list[Callable[[Any], None]], value: Any, log: Any, what: str) -> None:
    """Call every listener with `value`; one that raises is logged and the others still run."""
    for listener in list(listeners):
        try:
            listener(value)
        except Exception:  # noqa: BLE001 - one listener must not stop the others
            log.failure("a {what} listener failed", what=what)
