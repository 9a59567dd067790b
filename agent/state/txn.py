"""KV transactions: many operations applied at one index, all or nothing.

Operations run in order against an overlay on the KV table, so later ones see what earlier ones
wrote; every failing operation is reported (with its position) and, if any failed, the overlay
is dropped and the table is untouched. Otherwise the overlay's changes are written at the
entry's index. The rules and error texts are Consul's (its txnKVS); a transaction with no
writing verb is run against the store without a log entry.

Pure code: no reactor, no clock.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import TYPE_CHECKING, Callable, Iterable

from agent.state import kv as kvrules
from agent.structs import KVEntry, TxnError, TxnOutcome

if TYPE_CHECKING:  # pragma: no cover
    from agent.fsm.commands import KVOperation
    from agent.state.store import StateStore

MAX_TXN_OPS = 64
WRITE_VERBS = frozenset({"set", "cas", "delete", "delete-cas", "delete-tree", "lock", "unlock"})
READ_VERBS = frozenset({"get", "get-tree", "check-index", "check-session", "check-not-exists"})


class TxnOpError(Exception):
    """One operation failed; the message is what the client sees as `What`."""


def go_quote(text: str) -> str:
    """Roughly Go's %q for a string: double quotes with backslash escapes."""
    return json.dumps(text, ensure_ascii=False)


def is_write(verb: str) -> bool:
    return verb in WRITE_VERBS


class Overlay:
    """Changes to a KV table held aside: reads see them, the table does not until `apply`."""

    def __init__(self, table: kvrules.KVTable) -> None:
        self._table = table
        self.changes: dict[str, KVEntry | None] = {}  # None: deleted

    def lookup(self, key: str) -> KVEntry | None:
        if key in self.changes:
            return self.changes[key]
        return self._table.lookup(key)

    def keys_under(self, prefix: str) -> list[str]:
        keys = set(self._table.keys_under(prefix))
        for key, entry in self.changes.items():
            if key.startswith(prefix):
                if entry is None:
                    keys.discard(key)
                else:
                    keys.add(key)
        return sorted(keys)

    def put(self, entry: KVEntry, index: int) -> None:
        self.changes[entry.key] = entry

    def remove(self, key: str, index: int) -> None:
        if self.lookup(key) is not None:
            self.changes[key] = None

    def apply(self, index: int) -> None:
        for key, entry in self.changes.items():
            if entry is None:
                self._table.remove(key, index)
            else:
                self._table.put(entry, index)


def precheck(ops: Iterable[KVOperation],
             lock_delayed: Callable[[str], bool]) -> tuple[TxnError, ...]:
    """What the leader refuses before a transaction reaches the log: a missing key, and a
    lock on a key still inside its lock-delay."""
    errors = []
    for i, op in enumerate(ops):
        key = op.entry.key
        if not key and op.op != "delete-tree":
            errors.append(TxnError(i, "Must provide key"))
        elif op.op == "lock" and lock_delayed(key):
            errors.append(TxnError(i, f"failed to lock key {go_quote(key)} due to lock delay"))
    return tuple(errors)


def run_txn(store: StateStore, ops: Iterable[KVOperation], index: int) -> TxnOutcome:
    """Run `ops` at `index`; the store changes only if every one succeeds."""
    overlay = Overlay(store.kv)
    results: list[KVEntry] = []
    errors: list[TxnError] = []
    for i, op in enumerate(ops):
        try:
            results.extend(_run_op(store, overlay, op, index))
        except TxnOpError as exc:
            errors.append(TxnError(i, str(exc)))
    if errors:
        return TxnOutcome(errors=tuple(errors))
    overlay.apply(index)
    return TxnOutcome(results=tuple(results))


def _blank(entry: KVEntry) -> KVEntry:
    return replace(entry, value=None)


def _check_session(store: StateStore, session_id: str) -> None:
    if not session_id:
        raise TxnOpError("missing session")
    if session_id not in store.sessions.sessions:
        raise TxnOpError(f"invalid session {go_quote(session_id)}")


def _run_op(store: StateStore, rows: Overlay, op: KVOperation, index: int) -> list[KVEntry]:
    verb, entry, key = op.op, op.entry, op.entry.key
    quoted = go_quote(key)
    if verb == "set":
        return [_blank(kvrules.write_set(rows, entry, index))]
    if verb == "cas":
        done = kvrules.write_cas(rows, entry, op.expected_index, index)
        if done is None:
            raise TxnOpError(f"failed to set key {quoted}, index is stale")
        return [_blank(done)]
    if verb == "delete":
        rows.remove(key, index)
        return []
    if verb == "delete-cas":
        if not kvrules.write_delete_cas(rows, key, op.expected_index, index):
            raise TxnOpError(f"failed to delete key {quoted}, index is stale")
        return []
    if verb == "delete-tree":
        kvrules.write_delete_tree(rows, key, index)
        return []
    if verb == "lock":
        _check_session(store, entry.session)
        done = kvrules.write_lock(rows, entry, index)
        if done is None:
            raise TxnOpError(f"failed to lock key {quoted}, lock is already held")
        return [_blank(done)]
    if verb == "unlock":
        if not entry.session:
            raise TxnOpError("missing session")
        done = kvrules.write_unlock(rows, entry, index)
        if done is None:
            raise TxnOpError(f"failed to unlock key {quoted}, lock isn't held, "
                             "or is held by another session")
        return [_blank(done)]
    return _read_op(rows, op)


def _read_op(rows: Overlay, op: KVOperation) -> list[KVEntry]:
    verb, key = op.op, op.entry.key
    quoted = go_quote(key)
    current = rows.lookup(key)
    if verb == "get":
        if current is None:
            raise TxnOpError(f"key {quoted} doesn't exist")
        return [current]
    if verb == "get-tree":
        return [e for e in (rows.lookup(k) for k in rows.keys_under(key)) if e is not None]
    if verb == "check-index":
        if current is None:
            raise TxnOpError(f"failed to check index, key {quoted} doesn't exist")
        if current.modify_index != op.expected_index:
            raise TxnOpError(f"failed index check for key {quoted}, current modify index "
                             f"{current.modify_index} != {op.expected_index}")
        return [_blank(current)]
    if verb == "check-session":
        if current is None:
            raise TxnOpError(f"failed to check session, key {quoted} doesn't exist")
        if current.session != op.entry.session:
            raise TxnOpError(f"failed session check for key {quoted}, current session "
                             f"{go_quote(current.session)} != {go_quote(op.entry.session)}")
        return [_blank(current)]
    if verb == "check-not-exists":
        if current is not None:
            raise TxnOpError(f"key {quoted} exists")
        return []
    raise TxnOpError(f"unknown KV verb {go_quote(verb)}")
