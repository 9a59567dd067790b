"""The Raft log's values and on-disk format: entries, hard state, the errors of the log, and
how a WAL segment file is encoded and scanned back. Pure: no reactor, no threads.

A segment file starts with a 24-byte header and holds consecutive records:

    header: magic (8) | format version u16 | flags u16 (0) | first index u64 | crc32 u32
    record: body length u32 | crc32 u32 | body
    body:   index u64 | term u64 | batch position u32 | kind u8 | data

All integers are little-endian. The record checksum covers the length field and the whole
body, so a damaged length is caught as surely as damaged data. It is zlib's CRC-32: in the
standard library, fast in C, and as strong as CRC-32C for telling a torn or rotten record
from a good one; CRC-32C would only add a dependency.

The batch position is how far the record is from the first record of the write that
carried it (one write = the bytes of one group commit, made durable by one fsync). It
lets recovery tell a torn write (damage inside the newest write, which was never
acknowledged, even if pages of it after the damage reached the disk) from damage to data
that had been made durable (a record of a later write follows the damage).
"""

from __future__ import annotations

import json
import re
import struct
import zlib
from array import array
from dataclasses import dataclass, field

MAGIC = b"\x89WPWAL\r\n"  # the \r\n and the high byte catch text-mode and 7-bit mangling
FORMAT_VERSION = 1
HARD_STATE_VERSION = 1

_HEADER = struct.Struct("<8sHHQ")
HEADER_SIZE = _HEADER.size + 4
_U32 = struct.Struct("<I")
_REC_HEAD = struct.Struct("<II")
_BODY_HEAD = struct.Struct("<QQIB")
_INDEX_TERM = struct.Struct("<QQ")
MIN_BODY = _BODY_HEAD.size
MIN_RECORD = _REC_HEAD.size + MIN_BODY
MAX_ENTRY_BYTES = 64 * 1024 * 1024

# Entry kinds. An open set of small integers: the log stores any 0..255 and gives meaning to
# none; Raft and the FSM do.
COMMAND = 0
NOOP = 1
CONFIGURATION = 2
RESTORE = 3  # an operator's snapshot restore: the whole state, replacing the FSM's

# Indexes and terms stay below 2**48 (at 50,000 appends/s that is 178 years), so the top two
# bytes of both are zero in every record: searching for that pattern lets recovery skip
# garbage at C speed when it looks for intact records after damage.
MAX_INDEX = 2**48 - 1
_NONZERO = re.compile(rb"[^\x00]")
_INDEX_TERM_TOPS = re.compile(rb"\x00\x00.{6}\x00\x00", re.DOTALL)
_TOPS_OFFSET = _REC_HEAD.size + 6


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `index` and `term` start at 1; `kind` is 0..255."""

    index: int
    term: int
    kind: int
    data: bytes


@dataclass(frozen=True, slots=True)
class HardState:
    """What Raft must never forget: the latest term seen and whom it voted for in it."""

    term: int = 0
    voted_for: str | None = None


# --- errors -----------------------------------------------------------------------------------


class LogError(Exception):
    """Base of every error the log raises about its files or its state."""


class WALCorrupt(LogError):
    """Damaged data the log cannot explain as a torn last write; names the file and offset."""

    def __init__(self, path: str, offset: int, problem: str) -> None:
        super().__init__(f"write-ahead log file {path} is damaged at offset {offset}: {problem}")
        self.path, self.offset, self.problem = path, offset, problem


class WALFormatError(LogError):
    """A file that is not in a format this Waypost reads (unknown magic, newer version)."""


class WALLocked(LogError):
    """Another process has this log open."""


class WALClosed(LogError):
    """The log was closed, or failed and must be reopened; nothing more is accepted."""


class InvalidAppend(LogError, ValueError):
    """Entries that do not continue the log (wrong index, falling term, bad field)."""


class InvalidHardState(LogError, ValueError):
    """A term below the saved one, or a vote that is not a server id."""


class EntryNotFound(LogError, LookupError):
    """No entry at that index: beyond the end of the log."""


class LogCompacted(EntryNotFound):
    """No entry at that index any more: it was covered by a snapshot and compacted away."""


# --- entries --------------------------------------------------------------------------------


def check_entries(entries: list[Entry], last_index: int, last_term: int, empty: bool) -> None:
    """Raise `InvalidAppend` unless `entries` may follow a log ending at (last_index,
    last_term). An empty log takes its first entry at any index: after a snapshot install the
    log restarts just past the snapshot."""
    if not entries:
        raise InvalidAppend("nothing to append")
    if not isinstance(entries[0], Entry):
        raise InvalidAppend(f"not an Entry: {type(entries[0]).__name__}")
    prev_index, prev_term = (entries[0].index - 1, 0) if empty else (last_index, last_term)
    for e in entries:
        if not isinstance(e, Entry):
            raise InvalidAppend(f"not an Entry: {type(e).__name__}")
        if not isinstance(e.index, int) or e.index != prev_index + 1 or \
                not 1 <= e.index <= MAX_INDEX:
            raise InvalidAppend(f"entry index {e.index!r} does not follow {prev_index} "
                                f"(indexes run from 1 to {MAX_INDEX})")
        if not isinstance(e.term, int) or not max(1, prev_term) <= e.term <= MAX_INDEX:
            raise InvalidAppend(f"entry {e.index} has term {e.term!r}, below "
                                f"{max(1, prev_term)} or above {MAX_INDEX}")
        if not isinstance(e.kind, int) or not 0 <= e.kind <= 255:
            raise InvalidAppend(f"entry {e.index} has kind {e.kind!r}, not 0..255")
        if not isinstance(e.data, bytes) or len(e.data) > MAX_ENTRY_BYTES:
            raise InvalidAppend(f"entry {e.index}: data must be bytes of at most "
                                f"{MAX_ENTRY_BYTES}")
        prev_index, prev_term = e.index, e.term


# --- segment header ---------------------------------------------------------------------------


def encode_header(first_index: int) -> bytes:
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, 0, first_index)
    return head + _U32.pack(zlib.crc32(head))


def segment_name(first_index: int) -> str:
    return f"{first_index:020d}.wal"


# --- records ----------------------------------------------------------------------------------


def encode_record(entry: Entry, batch_position: int) -> bytes:
    body = _BODY_HEAD.pack(entry.index, entry.term, batch_position, entry.kind) + entry.data
    length = _U32.pack(len(body))
    return length + _U32.pack(zlib.crc32(body, zlib.crc32(length))) + body


@dataclass(frozen=True, slots=True)
class _Record:
    start: int
    stop: int
    index: int
    term: int
    batch_position: int
    kind: int


def _parse(data: bytes | memoryview, pos: int, end: int) -> _Record | str:
    """The record at `pos`, or why there is none."""
    if end - pos < _REC_HEAD.size:
        return f"{end - pos} bytes left, too few for a record header"
    length, crc = _REC_HEAD.unpack_from(data, pos)
    if length == 0 and crc == 0:
        return "zeros where a record should start"
    if length < MIN_BODY:
        return f"record length {length} is impossible"
    stop = pos + _REC_HEAD.size + length
    if stop > end:
        return f"record of {length} bytes runs {stop - end} bytes past the end of the file"
    body = memoryview(data)[pos + _REC_HEAD.size:stop]
    if zlib.crc32(body, zlib.crc32(memoryview(data)[pos:pos + 4])) != crc:
        return "checksum mismatch"
    index, term, batch_position, kind = _BODY_HEAD.unpack_from(body)
    return _Record(pos, stop, index, term, batch_position, kind)


def decode_record(raw: bytes, path: str, offset: int) -> Entry:
    """The entry in `raw` (one whole record read back from `path` at `offset`)."""
    rec = _parse(raw, 0, len(raw))
    if isinstance(rec, str):
        raise WALCorrupt(path, offset, rec)
    return Entry(rec.index, rec.term, rec.kind, bytes(raw[_REC_HEAD.size + MIN_BODY:rec.stop]))


# --- scanning a segment back ------------------------------------------------------------------


@dataclass
class SegmentScan:
    """What a segment file holds: its entries' offsets and terms, and where its valid data
    ends. `torn` says why bytes from `end` on were dropped ("" if none were); `torn_header`
    means the file never got a whole header (a crash while it was created)."""

    first_index: int
    end: int
    offsets: array = field(default_factory=lambda: array("Q"))
    terms: array = field(default_factory=lambda: array("Q"))
    torn: str = ""
    torn_header: bool = False


def scan_segment(path: str, data: bytes, first_index: int, *, last: bool,
                 min_term: int) -> SegmentScan:
    """Read back segment `data` (named for `first_index`). Only the newest segment (`last`)
    may end in a torn write; `min_term` is the term its first entry may not fall below."""
    if _torn_header(path, data, first_index, last):
        return SegmentScan(first_index, 0, torn="the segment header is incomplete",
                           torn_header=True)
    scan = SegmentScan(first_index, HEADER_SIZE)
    pos, expected, prev_term, end = HEADER_SIZE, first_index, min_term, len(data)
    while pos < end:
        rec = _parse(data, pos, end)
        if isinstance(rec, _Record):
            if rec.index != expected or rec.term < max(1, prev_term):
                raise WALCorrupt(path, pos, f"entry {rec.index} of term {rec.term} where entry "
                                            f"{expected} of term >= {prev_term} belongs")
            scan.offsets.append(pos)
            scan.terms.append(rec.term)
            pos, expected, prev_term = rec.stop, expected + 1, rec.term
            continue
        if not last:
            raise WALCorrupt(path, pos, f"entry {expected}: {rec} (a torn write can only be at "
                                        "the end of the newest segment)")
        later = _later_write(data, pos + 1, expected, prev_term)
        if later is not None:
            raise WALCorrupt(path, pos, f"entry {expected}: {rec}, yet entry {later.index} "
                                        f"at offset {later.start}, written after it was made "
                                        "durable, is intact")
        scan.torn = rec
        break
    scan.end = pos
    return scan


def _torn_header(path: str, data: bytes, first_index: int, last: bool) -> bool:
    """True if the header is missing in a way only a crash during creation explains; raises
    for any other problem with it."""
    nothing_after = not data[HEADER_SIZE:].strip(b"\0")
    if len(data) < HEADER_SIZE:
        if last:
            return True
        raise WALCorrupt(path, 0, f"{len(data)} bytes, shorter than a segment header")
    magic, version, _flags, first = _HEADER.unpack_from(data)
    if magic != MAGIC:
        if last and nothing_after and not data[:HEADER_SIZE].strip(b"\0"):
            return True
        raise WALFormatError(f"{path} is not a Waypost write-ahead log segment "
                             f"(unknown magic {magic!r})")
    if version > FORMAT_VERSION:
        raise WALFormatError(f"{path} was written by a newer Waypost (format {version}); this "
                             f"one reads up to {FORMAT_VERSION}")
    if zlib.crc32(data[:_HEADER.size]) != _U32.unpack_from(data, _HEADER.size)[0]:
        if last and nothing_after:
            return True
        raise WALCorrupt(path, 0, "segment header checksum mismatch")
    if version < 1:
        raise WALFormatError(f"{path} claims format {version}, which never existed")
    if first != first_index:
        raise WALCorrupt(path, 0, f"the header says the first entry is {first}, the file "
                                  f"name says {first_index}")
    return False


def _later_write(data: bytes, start: int, damaged: int, min_term: int) -> _Record | None:
    """The first intact record after a damaged one (for entry `damaged`) that belongs to a
    later write than it, or None."""
    expected = damaged
    while (rec := _find_record(data, start, expected, min_term)) is not None:
        if rec.index - rec.batch_position > damaged:
            return rec
        start, expected, min_term = rec.stop, rec.index + 1, rec.term
    return None


def _find_record(data: bytes, start: int, expected: int, min_term: int) -> _Record | None:
    """The first offset from `start` holding an intact record plausible at this point of the
    log (index at least `expected`, term at least `min_term`). Only run on damage."""
    end = len(data)
    last_start = end - MIN_RECORD
    pos = start
    while pos <= last_start:
        # A record starts with a non-zero length, so no record starts inside a run of zeros;
        # skip such runs in C (a crash often leaves the tail of a file zero-filled).
        if data[pos:pos + 4] == b"\0\0\0\0":
            nonzero = _NONZERO.search(data, pos)
            if nonzero is None:
                return None
            pos = max(pos + 1, nonzero.start() - 3)
            continue
        tops = _INDEX_TERM_TOPS.search(data, pos + _TOPS_OFFSET)
        if tops is None:
            return None
        if tops.start() - _TOPS_OFFSET > pos:
            pos = tops.start() - _TOPS_OFFSET
            continue
        length = _U32.unpack_from(data, pos)[0]
        if MIN_BODY <= length <= end - pos - _REC_HEAD.size:
            index, term = _INDEX_TERM.unpack_from(data, pos + _REC_HEAD.size)
            if expected <= index <= expected + (end - start) // MIN_RECORD and term >= min_term:
                rec = _parse(data, pos, end)
                if isinstance(rec, _Record):
                    return rec
        pos += 1
    return None


# --- hard state -------------------------------------------------------------------------------


def encode_hard_state(state: HardState) -> bytes:
    doc = {"format": HARD_STATE_VERSION, "term": state.term, "voted_for": state.voted_for}
    raw = json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    # The file is replaced atomically, so a checksum only guards against later damage.
    return raw + b"\n" + f"{zlib.crc32(raw):08x}".encode() + b"\n"


def decode_hard_state(raw: bytes, path: str) -> HardState:
    try:
        body, crc, _ = raw.split(b"\n")
        ok = int(crc, 16) == zlib.crc32(body)
        doc = json.loads(body) if ok else None
    except (ValueError, UnicodeDecodeError):
        ok, doc = False, None
    if not ok or not isinstance(doc, dict):
        raise WALCorrupt(path, 0, "the hard state file is damaged (checksum or JSON)")
    version = doc.get("format")
    if not isinstance(version, int) or version > HARD_STATE_VERSION:
        raise WALFormatError(f"{path} was written by a newer Waypost (format {version}); this "
                             f"one reads up to {HARD_STATE_VERSION}")
    term, voted_for = doc.get("term"), doc.get("voted_for")
    if not isinstance(term, int) or term < 0 or not (voted_for is None or
                                                     isinstance(voted_for, str)):
        raise WALCorrupt(path, 0, "the hard state file holds an impossible term or vote")
    return HardState(term, voted_for)
