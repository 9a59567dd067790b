"""The DNS wire format, just what the Consul interface needs: parse a query, encode an answer.

Hand-written for speed (this is the uncached path) and strictness: anything malformed raises
`FormatError`, which the server answers with FORMERR or drops. Records are plain tuples of
`Record`; names are strings without the trailing dot, compressed on the way out.
"""

from __future__ import annotations

import struct
from typing import NamedTuple, Sequence

# Types and classes we answer.
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, SRV, OPT, ANY = 1, 2, 5, 6, 12, 15, 16, 28, 33, 41, 255
IN = 1
# Response codes; BADVERS is extended (RFC 6891): its upper bits travel in the OPT record.
NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
# Header flag bits.
QR, AA, TC, RD, RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
OPCODE_MASK = 0x7800

MIN_UDP = 512
MAX_UDP = 65535
MAX_NAME = 255  # wire octets of a name, length bytes and the root label included (RFC 1035)
_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QTAIL = struct.Struct("!HH")
_POINTER = struct.Struct("!H")


class FormatError(ValueError):
    """The packet is not a well-formed query."""


class Question(NamedTuple):
    id: int
    flags: int
    name: str  # as sent (case kept, no trailing dot); "" for the root
    qtype: int
    qclass: int
    edns: bool  # the query carried an OPT record
    udp_size: int  # the client's EDNS buffer size, or 512 without EDNS
    question_end: int  # offset just past the question section in the query
    edns_version: int = 0  # the VERSION field of the query's OPT record

    @property
    def lower(self) -> str:
        return self.name.lower()

    @property
    def recursion_desired(self) -> bool:
        return bool(self.flags & RD)

    @property
    def opcode(self) -> int:
        return (self.flags & OPCODE_MASK) >> 11


class SRVData(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str


class SOAData(NamedTuple):
    mname: str
    rname: str
    serial: int
    refresh: int
    retry: int
    expire: int
    minimum: int


class Record(NamedTuple):
    """One resource record. `data` by type: A/AAAA packed address bytes, TXT a tuple of str,
    SRV `SRVData`, SOA `SOAData`, PTR/NS/CNAME a name."""
    name: str
    rtype: int
    ttl: int
    data: object


def _read_name(packet: bytes, pos: int) -> tuple[str, int]:
    """Read a (possibly compressed) name; returns (name, offset after it)."""
    labels: list[str] = []
    end = -1
    jumps = 0
    size = len(packet)
    total = 0
    while True:
        if pos >= size:
            raise FormatError("name runs past the packet")
        length = packet[pos]
        if length == 0:
            pos += 1
            break
        if length & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise FormatError("truncated compression pointer")
            target = ((length & 0x3F) << 8) | packet[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 32 or target >= pos:
                raise FormatError("compression loop")
            pos = target
            continue
        if length & 0xC0:
            raise FormatError("unknown label type")
        pos += 1
        label = packet[pos:pos + length]
        if len(label) != length:
            raise FormatError("label runs past the packet")
        total += length + 1
        if total >= MAX_NAME:  # with the root label's byte, over the limit
            raise FormatError("name too long")
        if b"." in label:
            # Names are dotted strings here: such a label would change the name when echoed.
            raise FormatError("dot inside a label")
        try:
            labels.append(label.decode("ascii"))
        except UnicodeDecodeError:
            raise FormatError("non-ASCII label") from None
        pos += length
    return ".".join(labels), (end if end >= 0 else pos)


def parse_query(packet: bytes) -> Question:
    """Parse the header, the single question and an OPT record if one is present."""
    if len(packet) < 12:
        raise FormatError("short header")
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(packet)
    if flags & QR:
        raise FormatError("not a query")
    if qdcount != 1:
        raise FormatError("exactly one question is supported")
    name, pos = _read_name(packet, 12)
    if pos + 4 > len(packet):
        raise FormatError("truncated question")
    qtype, qclass = _QTAIL.unpack_from(packet, pos)
    question_end = pos + 4
    edns = False
    udp_size = MIN_UDP
    version = 0
    if arcount and not ancount and not nscount:
        pos = question_end
        for _ in range(arcount):
            _, pos = _read_name(packet, pos)
            if pos + 10 > len(packet):
                raise FormatError("truncated additional record")
            rtype, rclass, ttl, rdlen = _RR.unpack_from(packet, pos)
            pos += 10 + rdlen
            if pos > len(packet):
                raise FormatError("truncated record data")
            if rtype == OPT:
                if edns:
                    raise FormatError("two OPT records")
                edns = True
                udp_size = max(MIN_UDP, rclass)
                version = (ttl >> 16) & 0xFF
    return Question(ident, flags, name, qtype, qclass, edns, udp_size, question_end, version)


class _Writer:
    """Builds a message with name compression."""

    __slots__ = ("parts", "size", "names")

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self.names: dict[str, int] = {}

    def add(self, data: bytes) -> None:
        self.parts.append(data)
        self.size += len(data)

    def name(self, name: str, compress: bool = True) -> None:
        if not name:
            self.add(b"\x00")
            return
        names = self.names
        lower = name.lower()
        if compress:
            # Most owner names repeat the question's name: one lookup, one pointer.
            offset = names.get(lower)
            if offset is not None:
                self.add(_POINTER.pack(0xC000 | offset))
                return
        if len(name) + 2 > MAX_NAME:  # clients reject the whole message for one such name
            raise ValueError(f"name too long: {name[:40]!r}...")
        out = bytearray()
        pos = 0
        for label in name.split("."):
            # `lower[pos:]` is the name from this label on: the key for compression.
            suffix = lower[pos:]
            if compress:
                offset = names.get(suffix)
                if offset is not None:
                    out += _POINTER.pack(0xC000 | offset)
                    self.add(bytes(out))
                    return
            here = self.size + len(out)
            if here < 0x4000 and suffix not in names:
                names[suffix] = here
            raw = label.encode("ascii")
            if not 0 < len(raw) < 64:
                raise ValueError(f"bad label in {name!r}")
            out.append(len(raw))
            out += raw
            pos += len(label) + 1
        out.append(0)
        self.add(bytes(out))

    def record(self, record: Record) -> None:
        self.name(record.name)
        rtype = record.rtype
        data = record.data
        if rtype in (A, AAAA):
            self.add(_RR.pack(rtype, IN, record.ttl, len(data)) + data)
            return
        if rtype == TXT:
            rdata = b"".join(bytes([len(b)]) + b for b in (s.encode("utf-8")[:255] for s in data))
            self.add(_RR.pack(rtype, IN, record.ttl, len(rdata)) + rdata)
            return
        # Name-bearing data: write the fixed part, the name(s), then patch RDLENGTH.
        self.add(b"")  # placeholder index for the fixed header
        header_index = len(self.parts) - 1
        start = self.size
        if rtype == SRV:
            self.add(struct.pack("!HHH", data.priority, data.weight, data.port))
            self.name(data.target, compress=False)  # RFC 2782: no compression in the target
        elif rtype == SOA:
            self.name(data.mname)
            self.name(data.rname)
            self.add(struct.pack("!IIIII", data.serial, data.refresh, data.retry, data.expire,
                                 data.minimum))
        elif rtype in (PTR, NS, CNAME):
            self.name(data)
        else:
            raise ValueError(f"cannot encode type {rtype}")
        rdlen = self.size - start
        fixed = _RR.pack(rtype, IN, record.ttl, rdlen)
        # The fixed part precedes the rdata: shift recorded name offsets written after it.
        self.parts[header_index] = fixed
        self.size += len(fixed)
        shift = len(fixed)
        for suffix, offset in list(self.names.items()):
            if offset >= start:
                self.names[suffix] = offset + shift

    def value(self) -> bytes:
        return b"".join(self.parts)


def encode_response(question: Question, rcode: int, answers: Sequence[Record] = (),
                    authority: Sequence[Record] = (), additional: Sequence[Record] = (), *,
                    authoritative: bool = True, recursion_available: bool = False,
                    truncated: bool = False, echo_edns: bool = True) -> bytes:
    """Encode a response to `question` with the ID set to 0 (callers patch it per query).

    An extended `rcode` (BADVERS) needs the query to have carried EDNS: its upper bits go into
    our OPT record."""
    flags = QR | (question.flags & (OPCODE_MASK | RD)) | (rcode & 0xF)
    if authoritative:
        flags |= AA
    if recursion_available:
        flags |= RA
    if truncated:
        flags |= TC
    opt = echo_edns and question.edns
    w = _Writer()
    w.add(_HEADER.pack(0, flags, 1, len(answers), len(authority), len(additional) + opt))
    w.name(question.name)
    w.add(_QTAIL.pack(question.qtype, question.qclass))
    for record in answers:
        w.record(record)
    for record in authority:
        w.record(record)
    for record in additional:
        w.record(record)
    if opt:
        # Echo the client's buffer size, version 0, no options, DO clear (we do not sign).
        w.add(b"\x00" + struct.pack("!HHIH", OPT, question.udp_size, (rcode >> 4) << 24, 0))
    return w.value()


def error_response(packet: bytes, rcode: int) -> bytes | None:
    """A bare answer carrying `rcode` for a query we could not parse; None if hopeless."""
    if len(packet) < 12:
        return None
    ident, flags = struct.unpack_from("!HH", packet)
    if flags & QR:
        return None  # never answer a response (reflection loops)
    flags = QR | (flags & (OPCODE_MASK | RD)) | rcode
    return _HEADER.pack(ident, flags, 0, 0, 0, 0)


# --- answers from recursors ---------------------------------------------------------------

# Record types whose data holds compressed names (RFC 1035, RFC 2782): the offset of the first
# name in the data, and how many names follow there.
_NAMES_IN_DATA = {NS: (0, 1), CNAME: (0, 1), PTR: (0, 1), MX: (2, 1), SRV: (6, 1), SOA: (0, 2)}


def _walk_name(packet: bytes, pos: int) -> tuple[tuple[bytes, ...], int]:
    """A name of any bytes, checked for structure only: (lower-cased labels, offset after it)."""
    labels: list[bytes] = []
    end = -1
    jumps = 0
    total = 1
    size = len(packet)
    while True:
        if pos >= size:
            raise FormatError("name runs past the packet")
        length = packet[pos]
        if length == 0:
            return tuple(labels), (end if end >= 0 else pos + 1)
        if length & 0xC0 == 0xC0:
            if pos + 1 >= size:
                raise FormatError("truncated compression pointer")
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > 127:
                raise FormatError("compression loop")
            pos = ((length & 0x3F) << 8) | packet[pos + 1]
            continue
        if length & 0xC0:
            raise FormatError("unknown label type")
        total += length + 1
        if total > MAX_NAME or pos + 1 + length > size:
            raise FormatError("bad name")
        labels.append(packet[pos + 1:pos + 1 + length].lower())
        pos += 1 + length


def check_reply(reply: bytes, question: Question) -> int:
    """Where a recursor's `reply` to `question` ends; FormatError when it is not a well-formed
    response to that question (RFC 5452: the question must match), so it is never passed on.

    Checks the header, the question, every record's bounds and the names in the data of the
    common compressed types. Anything after the last record is junk the caller cuts off.
    """
    if len(reply) < 12:
        raise FormatError("short header")
    _, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(reply)
    if not flags & QR or (flags ^ question.flags) & OPCODE_MASK:
        raise FormatError("not a response to this query")
    pos = 12
    if qdcount > 1:
        raise FormatError("several questions")
    if qdcount == 1:
        labels, pos = _walk_name(reply, pos)
        if pos + 4 > len(reply):
            raise FormatError("truncated question")
        asked = tuple(label.encode("ascii") for label in question.lower.split(".")) \
            if question.name else ()
        if labels != asked or _QTAIL.unpack_from(reply, pos) != (question.qtype,
                                                                  question.qclass):
            raise FormatError("an answer to another question")
        pos += 4
    elif flags & 0xF in (NOERROR, NXDOMAIN):
        raise FormatError("an answer without its question")
    for _ in range(ancount + nscount + arcount):
        _, pos = _walk_name(reply, pos)
        if pos + 10 > len(reply):
            raise FormatError("truncated record")
        rtype, _, _, rdlen = _RR.unpack_from(reply, pos)
        pos += 10
        end = pos + rdlen
        if end > len(reply):
            raise FormatError("truncated record data")
        names = _NAMES_IN_DATA.get(rtype)
        if names is not None:
            offset, count = names
            here = pos + offset
            for _ in range(count):
                if here >= end:
                    raise FormatError("record data too short")
                _, here = _walk_name(reply, here)
            if here > end:
                raise FormatError("name runs past its record")
        pos = end
    return pos
