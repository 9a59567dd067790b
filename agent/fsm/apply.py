"""The FSM: applies committed commands to the state store, one index at a time, and restores it
from a snapshot.

Every change to the store goes through `FSM.apply` (or `apply_entry`, from a log entry's bytes);
this is the path Raft feeds, on the leader and on every follower alike. What each command does
is looked up in the command table (`agent.fsm.table`). A command that fails validation changes
nothing and its error is the entry's result, so replicas stay equal. `restore` replaces the whole
state with a snapshot's and wakes every watcher, as Consul's FSM Restore does.

The apply-time clock is injected: the lock-delay a released key gets is recorded by every
replica when it applies the entry (Consul's state store does the same with its own clock).
"""

from __future__ import annotations

from typing import Any, Callable

from agent.errors import UnknownCommand, WaypostError
from agent.fsm.table import COMMANDS, CommandTable
from agent.state.snapshot import Capture, StoreImage, capture, install
from agent.state.store import StateStore

# What `apply_entry` returns for an entry of an unknown type flagged ignorable.
IGNORED = object()


class FSM:
    def __init__(self, store: StateStore,
                 report_error: Callable[[BaseException], None] | None = None, *,
                 clock: Callable[[], float] | None = None,
                 table: CommandTable = COMMANDS) -> None:
        """`clock` gives the apply time in seconds (the reactor's); without one no lock-delays
        are recorded. `report_error` is told what a woken watcher raised."""
        self.store = store
        self._report = report_error or (lambda exc: None)
        self._clock = clock
        self._table = table

    def apply(self, index: int, command: Any) -> Any:
        """Apply `command` at `index`; return its result or the exception it failed with."""
        spec = self._table.by_class.get(type(command))
        if spec is None:
            raise UnknownCommand(f"no FSM handler for {type(command).__name__}")
        store = self.store
        try:
            result = spec.handler(store, command, index)
        except WaypostError as exc:
            store.discard_pending()
            store.commit(index, self._clock)
            return exc
        for error in store.commit(index, self._clock):
            self._report(error)
        return result

    def apply_entry(self, index: int, data: bytes) -> Any:
        """Decode a log entry's command and apply it; `IGNORED` for an unknown type flagged
        ignorable. Raises `UnknownCommand` for an entry this server must not skip."""
        command = self._table.decode(data)
        if command is None:
            return IGNORED
        return self.apply(index, command)

    def capture(self) -> StoreImage:
        """An immutable view of the whole state, to be encoded into a snapshot at leisure."""
        return capture(self.store)

    def begin_capture(self) -> Capture:
        """The same view taken in slices; it must be finished before the next `apply`."""
        return Capture(self.store)

    def restore(self, image: StoreImage) -> None:
        """Replace the whole state with `image` (a snapshot's) and wake every watcher."""
        for error in install(self.store, image):
            self._report(error)
