"""The messages Raft servers exchange, and their msgpack codec.

Every message names its sender (`src`) and the sender's term. A frame is a msgpack array:
the message tag, then the fields in declaration order; entries are [index, term, kind, data]
and a snapshot is [index, term, [voters], [nonvoters], data]. `decode` checks the shape and
the types and raises `MessageError` on anything else, so a peer can never hand the node a
malformed value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Union

import msgpack

from agent.raft.records import Entry

from .membership import Configuration


class MessageError(ValueError):
    """A frame that is not a well-formed Raft message."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The state machine as of `index` (whose term is `term`), and the configuration then."""

    index: int
    term: int
    config: Configuration
    data: bytes


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote, or a pre-vote when `pre` (the term is then the one the sender would use,
    and nobody's term changes). `transfer` marks an election started by TimeoutNow: voters
    then grant even though they heard from a leader recently."""

    src: str
    term: int
    last_log_index: int
    last_log_term: int
    pre: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    src: str
    term: int
    granted: bool
    pre: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    """Entries after `prev_log_index` (empty for a heartbeat). `seq` numbers the leader's
    rounds so responses confirm read-index requests."""

    src: str
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    leader_commit: int
    seq: int


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """On success `match_index` is prev_log_index + len(entries): what is now known to match.
    On failure `hint` is where the follower suggests the leader retry from (its last index, or
    the index before the first entry of the conflicting term)."""

    src: str
    term: int
    success: bool
    prev_log_index: int
    match_index: int
    hint: int
    seq: int


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: str
    term: int
    snapshot: Snapshot
    seq: int


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    src: str
    term: int
    index: int
    seq: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the receiver starts an election at once, skipping the pre-vote."""

    src: str
    term: int


Message = Union[VoteRequest, VoteResponse, AppendEntries, AppendResponse, InstallSnapshot,
                SnapshotResponse, TimeoutNow]

_TAGS: dict[type, int] = {VoteRequest: 1, VoteResponse: 2, AppendEntries: 3, AppendResponse: 4,
                          InstallSnapshot: 5, SnapshotResponse: 6, TimeoutNow: 7}
_TYPES = {tag: cls for cls, tag in _TAGS.items()}
_FIELDS = {cls: [(f.name, f.type) for f in fields(cls)] for cls in _TAGS}


def _wire(value: Any) -> Any:
    if isinstance(value, Snapshot):
        return [value.index, value.term, sorted(value.config.voters),
                sorted(value.config.nonvoters), value.data]
    if isinstance(value, tuple):
        return [[e.index, e.term, e.kind, e.data] for e in value]
    return value


def encode(message: Message) -> bytes:
    cls = type(message)
    return msgpack.packb([_TAGS[cls], *(_wire(getattr(message, n)) for n, _ in _FIELDS[cls])],
                         use_bin_type=True)


def _int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise MessageError(f"expected a non-negative integer, got {v!r}")
    return v


def _entry(v: Any) -> Entry:
    if not isinstance(v, list) or len(v) != 4 or not isinstance(v[3], bytes):
        raise MessageError(f"bad entry {v!r}")
    return Entry(_int(v[0]), _int(v[1]), _int(v[2]), v[3])


def _strs(v: Any) -> frozenset[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) for s in v):
        raise MessageError(f"bad server list {v!r}")
    return frozenset(v)


def _snapshot(v: Any) -> Snapshot:
    if not isinstance(v, list) or len(v) != 5 or not isinstance(v[4], bytes):
        raise MessageError("bad snapshot")
    return Snapshot(_int(v[0]), _int(v[1]), Configuration(_strs(v[2]), _strs(v[3])), v[4])


def _field(kind: str, v: Any) -> Any:
    if kind == "int":
        return _int(v)
    if kind == "bool":
        if type(v) is not bool:
            raise MessageError(f"expected a boolean, got {v!r}")
        return v
    if kind == "str":
        if not isinstance(v, str):
            raise MessageError(f"expected a string, got {v!r}")
        return v
    if kind == "Snapshot":
        return _snapshot(v)
    if not isinstance(v, list):
        raise MessageError("entries must be a list")
    return tuple(_entry(e) for e in v)


def decode(frame: bytes) -> Message:
    try:
        raw = msgpack.unpackb(frame, raw=False)
    except Exception as exc:  # msgpack raises several unrelated types for garbage
        raise MessageError(f"undecodable frame: {exc}") from None
    if not isinstance(raw, list) or not raw or raw[0] not in _TYPES:
        raise MessageError("unknown message")
    cls = _TYPES[raw[0]]
    spec = _FIELDS[cls]
    if len(raw) != len(spec) + 1:
        raise MessageError(f"{cls.__name__}: expected {len(spec)} fields, got {len(raw) - 1}")
    return cls(*(_field(kind.split("[")[0], v) for (_, kind), v in zip(spec, raw[1:])))
