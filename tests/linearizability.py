"""A linearizability checker for histories of a key-value register (reads, writes, CAS).

The history is split per key (operations on different keys commute, so the whole history is
linearizable iff each key's is), and each key's history is searched with Wing & Gong's
algorithm in the just-in-time form of Lowe ("Testing for linearizability", 2017): walk the
call/return events in time order; at a call, try to linearize that operation now (its
effect must match the register); at a return whose operation was not linearized, backtrack.
A cache of (set of linearized operations, register value) already explored prunes the search
(the memoization that makes it practical).

An operation that never returned (its client timed out, its server crashed) may or may not
have taken effect: its return is at infinity, and a read without a return is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable

INFINITY = float("inf")
_UNKNOWN = object()


@dataclass(frozen=True)
class Op:
    """`kind` is read / write / cas. `value` is what a write writes, (expected, new) for a
    CAS; `output` is what a read saw or whether a CAS swapped (None: unknown)."""

    process: Hashable
    kind: str
    key: Hashable
    value: Any = None
    output: Any = None
    call: float = 0.0
    ret: float | None = None  # None: never returned


def _step(state: Any, op: Op) -> tuple[bool, Any]:
    """The register's rules: is `op` possible in `state`, and the state after it."""
    if op.kind == "write":
        return True, op.value
    if op.kind == "read":
        return op.output == state, state
    expected, new = op.value
    swapped = state == expected
    if op.ret is not None and op.output is not None and op.output != swapped:
        return False, state
    return True, new if swapped else state


@dataclass
class _Event:
    op_id: int
    is_call: bool
    time: float
    prev: _Event | None = None
    next: _Event | None = None
    match: _Event | None = None  # a call's return event


def check_key(ops: list[Op], initial: Any = None) -> bool:
    ops = [op for op in ops if not (op.kind == "read" and op.ret is None)]
    if not ops:
        return True
    events: list[_Event] = []
    for i, op in enumerate(ops):
        call = _Event(i, True, op.call)
        ret = _Event(i, False, INFINITY if op.ret is None else op.ret)
        call.match = ret
        events += [call, ret]
    # Time order; at equal times calls first (treating the two as concurrent never rejects a
    # linearizable history).
    events.sort(key=lambda e: (e.time, not e.is_call))
    head = _Event(-1, True, -INFINITY)
    prev = head
    for e in events:
        prev.next, e.prev, prev = e, prev, e

    def lift(call: _Event) -> None:
        for e in (call, call.match):
            e.prev.next = e.next
            if e.next is not None:
                e.next.prev = e.prev

    def unlift(call: _Event) -> None:
        for e in (call.match, call):
            e.prev.next = e
            if e.next is not None:
                e.next.prev = e

    state, linearized = initial, 0
    seen: set[tuple[int, Any]] = set()
    stack: list[tuple[_Event, Any]] = []
    entry = head.next
    while head.next is not None:
        if entry.is_call:
            ok, new_state = _step(state, ops[entry.op_id])
            bits = linearized | (1 << entry.op_id)
            if ok and (bits, _hashable(new_state)) not in seen:
                seen.add((bits, _hashable(new_state)))
                stack.append((entry, state))
                state, linearized = new_state, bits
                lift(entry)
                entry = head.next
                continue
            entry = entry.next
        else:
            if not stack:
                return False
            call, state = stack.pop()
            linearized &= ~(1 << call.op_id)
            unlift(call)
            entry = call.next
    return True


def _hashable(value: Any) -> Hashable:
    return tuple(value) if isinstance(value, list) else value


def check(ops: list[Op], initial: Any = None) -> tuple[bool, Hashable | None]:
    """(True, None), or (False, the first key whose history is not linearizable)."""
    by_key: dict[Hashable, list[Op]] = {}
    for op in ops:
        by_key.setdefault(op.key, []).append(op)
    for key in sorted(by_key, key=repr):
        if not check_key(by_key[key], initial):
            return False, key
    return True, None
