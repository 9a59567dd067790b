"""memberlist 0.2.2's wire format: messages.py values <-> bytes, for packets (UDP) and streams (TCP).

A message is one type byte then the Go struct in go-msgpack's encoding (see `gomsgpack`: the
field tables below are memberlist's structs). A userMsg in a packet is its type byte then the raw
payload. Packets nest: compound (count, big-endian u16 lengths, parts), compress (LZW in a
msgpack `compress` struct), a CRC-32 prefix for peers that speak protocol 5, and encryption
(see `security`, reached only through the `Sealer` protocol so this module stays key-free).
Streams carry one message each: push-pull (header, node states, raw user state), a user message
(header, raw payload), ping/ack/err; optionally compressed, then encrypted with a length prefix.

Anything read from the network may be junk: decoding raises `GossipDecodeError` and nothing else,
and every length is bounded before memory is spent on it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

import msgpack

from agent.gossip import lzw
from agent.gossip.gomsgpack import (
    GossipDecodeError, NeedMore, Spec, new_unpacker, pack_struct, unpack_next, unpack_one, unpack_struct,
)
from agent.gossip.messages import (
    Ack, Alive, Dead, Err, IndirectPing, Message, MessageType, Nack, NodeState, Ping, PushNodeState,
    PushPull, Suspect, User,
)

MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024  # memberlist's maxPushStateBytes, for a whole stream message
MAX_PACKET_EXPANSION = 1024 * 1024  # what one packet may decompress to; UDP packets are < 64 KiB
# The count is one byte, but memberlist 0.2.2 computes the length table's size in uint8
# (count * 2 wraps), so it misreads any compound of more than 127 parts: never send one.
MAX_COMPOUND_PARTS = 127
_MAX_NESTING = 4  # compress > compound > message is 2; deeper is junk
_LZW_ALGO = 0


class Sealer(Protocol):
    """The encryption envelope (security.Envelope): memberlist's encryptPayload/decryptPayload."""

    def seal(self, plain: bytes, associated: bytes = b"") -> bytes: ...

    def open(self, sealed: bytes, associated: bytes = b"") -> bytes:
        """The plaintext; GossipDecodeError (GossipDecryptError) when no key opens it."""

    def sealed_length(self, size: int) -> int: ...


# Go struct layouts: (Go field name, our attribute, kind, omitempty), in Go declaration order
# (what a msgpack array would be matched against); maps are written in sorted name order.
_PING: Spec = (("SeqNo", "seq_no", "u32", False), ("Node", "node", "str", False),
                ("SourceAddr", "source_addr", "bytes", True), ("SourcePort", "source_port", "u16", True),
                ("SourceNode", "source_node", "str", True))
_INDIRECT_PING: Spec = (("SeqNo", "seq_no", "u32", False), ("Target", "target", "bytes", False),
                         ("Port", "port", "u16", False), ("Node", "node", "str", False),
                         ("Nack", "nack", "bool", False)) + _PING[2:]
_ACK: Spec = (("SeqNo", "seq_no", "u32", False), ("Payload", "payload", "bytes", False))
_NACK: Spec = (("SeqNo", "seq_no", "u32", False),)
_ERR: Spec = (("Error", "error", "str", False),)
_SUSPECT: Spec = (("Incarnation", "incarnation", "u32", False), ("Node", "node", "str", False),
                   ("From", "source", "str", False))
_ALIVE: Spec = (("Incarnation", "incarnation", "u32", False), ("Node", "node", "str", False),
                 ("Addr", "addr", "bytes", False), ("Port", "port", "u16", False),
                 ("Meta", "meta", "bytes", False), ("Vsn", "vsn", "vsn", False))
_PUSH_NODE: Spec = (("Name", "name", "str", False), ("Addr", "addr", "bytes", False),
                     ("Port", "port", "u16", False), ("Meta", "meta", "bytes", False),
                     ("Incarnation", "incarnation", "u32", False), ("State", "state", "int", False),
                     ("Vsn", "vsn", "vsn", False))
_PUSH_PULL_HEADER: Spec = (("Nodes", "nodes", "int", False), ("UserStateLen", "user_state_len", "int", False),
                            ("Join", "join", "bool", False))
_USER_HEADER: Spec = (("UserMsgLen", "length", "int", False),)
_COMPRESS: Spec = (("Algo", "algo", "u8", False), ("Buf", "buf", "bytes", False))

_BODIES: dict[MessageType, tuple[type, Spec]] = {
    MessageType.PING: (Ping, _PING), MessageType.INDIRECT_PING: (IndirectPing, _INDIRECT_PING),
    MessageType.ACK: (Ack, _ACK), MessageType.NACK: (Nack, _NACK), MessageType.ERR: (Err, _ERR),
    MessageType.SUSPECT: (Suspect, _SUSPECT), MessageType.ALIVE: (Alive, _ALIVE),
    MessageType.DEAD: (Dead, _SUSPECT),
}
_TYPES: dict[type, MessageType] = {cls: t for t, (cls, _spec) in _BODIES.items()}
_STREAM_BODIES = (MessageType.PING, MessageType.ACK, MessageType.ERR)  # what handleConn answers


# --- single messages -----------------------------------------------------------------------------

def encode_message(msg: Message) -> bytes:
    """A message as a packet carries it (a User is its type byte and raw payload)."""
    if isinstance(msg, User):
        return bytes((MessageType.USER,)) + msg.payload
    if isinstance(msg, PushPull):
        return encode_stream(msg)
    msg_type = _TYPES[type(msg)]
    return bytes((msg_type,)) + pack_struct(msg, _BODIES[msg_type][1])


def _decode_body(msg_type: int, value: Any) -> Message:
    cls, spec = _BODIES[MessageType(msg_type)]
    return cls(**unpack_struct(value, spec))


def decode_message(data: bytes) -> Message:
    """One plain message as a packet carries it (no compound/compress/CRC wrapping)."""
    if not data:
        raise GossipDecodeError("empty message")
    if data[0] == MessageType.USER:
        return User(bytes(data[1:]))
    if data[0] not in _BODIES:
        raise GossipDecodeError(f"message type {data[0]} is not a packet message")
    return _decode_body(data[0], unpack_one(data[1:], MAX_PACKET_EXPANSION))


# --- packets -------------------------------------------------------------------------------------

def make_compound(parts: Sequence[bytes]) -> bytes:
    """memberlist's compoundMsg; at most MAX_COMPOUND_PARTS parts of at most 65535 bytes each."""
    if len(parts) > MAX_COMPOUND_PARTS or any(len(p) > 0xFFFF for p in parts):
        raise ValueError(f"a compound message holds at most {MAX_COMPOUND_PARTS} parts of at most 65535 bytes")
    header = struct.pack(f">BB{len(parts)}H", MessageType.COMPOUND, len(parts), *map(len, parts))
    return header + b"".join(parts)


def split_compound(body: bytes) -> tuple[list[bytes], int]:
    """The parts of a compound message (after its type byte) and how many were truncated.
    Read correctly up to 255 parts (memberlist's own reader wraps past 127)."""
    if not body:
        raise GossipDecodeError("missing compound length byte")
    count = body[0]
    if len(body) < 1 + 2 * count:
        raise GossipDecodeError("truncated compound length table")
    lengths = struct.unpack_from(f">{count}H", body, 1)
    parts, offset = [], 1 + 2 * count
    for index, length in enumerate(lengths):
        if offset + length > len(body):
            return parts, count - index
        parts.append(bytes(body[offset:offset + length]))
        offset += length
    return parts, 0


def compress_payload(data: bytes) -> bytes:
    """memberlist's compressMsg: type byte then the `compress` struct holding LZW bytes."""
    return bytes((MessageType.COMPRESS,)) + pack_struct(None, _COMPRESS, algo=_LZW_ALGO,
                                                         buf=lzw.compress(data))


def _decompress_value(value: Any, limit: int) -> bytes:
    fields = unpack_struct(value, _COMPRESS)
    if fields["algo"] != _LZW_ALGO:
        raise GossipDecodeError(f"cannot decompress unknown algorithm {fields['algo']}")
    try:
        return lzw.decompress(fields["buf"], limit)
    except lzw.LzwError as exc:
        raise GossipDecodeError(str(exc)) from None


def decompress_payload(body: bytes, limit: int = MAX_PACKET_EXPANSION) -> bytes:
    """The payload of a compressMsg (after its type byte), at most `limit` bytes."""
    return _decompress_value(unpack_one(body, MAX_PACKET_EXPANSION), limit)


def add_crc(data: bytes) -> bytes:
    """The hasCrcMsg prefix: type byte and big-endian CRC-32 (IEEE) of `data`."""
    return struct.pack(">BI", MessageType.HAS_CRC, zlib.crc32(data)) + data


def encode_packet(msgs: Sequence[Message | bytes], *, crc: bool = False, compress: bool = False,
                  envelope: Sealer | None = None) -> bytes:
    """One UDP packet as rawSendMsgPacket builds it: a compound when there is more than one
    message (entries may be pre-encoded bytes, e.g. queued broadcasts), compressed only if that
    is smaller, CRC'd when the peer speaks protocol >= 5, then encrypted with the primary key."""
    parts = [m if isinstance(m, (bytes, bytearray)) else encode_message(m) for m in msgs]
    if not parts:
        raise ValueError("a packet needs at least one message")
    buf = bytes(parts[0]) if len(parts) == 1 else make_compound(parts)
    if compress:
        packed = compress_payload(buf)
        buf = packed if len(packed) < len(buf) else buf
    if crc:
        buf = add_crc(buf)
    return envelope.seal(buf) if envelope is not None else buf


@dataclass(frozen=True, slots=True)
class Packet:
    """What a packet held: its messages in order, how many compound parts were cut off, and why
    any single part was dropped (memberlist logs and skips a bad part, keeping the rest)."""

    messages: tuple[Message, ...]
    truncated: int = 0
    dropped: tuple[str, ...] = ()


def decode_packet(data: bytes, *, envelope: Sealer | None = None, verify_incoming: bool = True,
                  limit: int = MAX_PACKET_EXPANSION) -> Packet:
    """A received packet, as ingestPacket reads it. With an envelope, a packet no key opens is
    refused, unless `verify_incoming` is off: then it is read as plaintext (rolling upgrades)."""
    buf = bytes(data)
    if envelope is not None:
        try:
            buf = envelope.open(buf)
        except GossipDecodeError:
            if verify_incoming:
                raise
    if len(buf) >= 5 and buf[0] == MessageType.HAS_CRC:
        if zlib.crc32(buf[5:]) != struct.unpack_from(">I", buf, 1)[0]:
            raise GossipDecodeError("invalid packet checksum")
        buf = buf[5:]
    messages: list[Message] = []
    dropped: list[str] = []
    truncated = _read_command(buf, messages, dropped, limit, 0)
    return Packet(tuple(messages), truncated, tuple(dropped))


def _read_command(buf: bytes, out: list[Message], dropped: list[str], limit: int, depth: int) -> int:
    """handleCommand: append what `buf` holds to `out`; returns the truncated part count."""
    if depth > _MAX_NESTING:
        raise GossipDecodeError("packet nested too deeply")
    if not buf:
        raise GossipDecodeError("empty message")
    if buf[0] == MessageType.COMPRESS:
        return _read_command(decompress_payload(buf[1:], limit), out, dropped, limit, depth + 1)
    if buf[0] != MessageType.COMPOUND:
        out.append(decode_message(buf))
        return 0
    parts, truncated = split_compound(buf[1:])
    for part in parts:
        try:
            truncated += _read_command(part, out, dropped, limit, depth + 1)
        except GossipDecodeError as exc:
            dropped.append(str(exc))
    return truncated


# --- streams -------------------------------------------------------------------------------------

def _stream_body(msg: Message) -> bytes:
    if isinstance(msg, PushPull):
        header = pack_struct(None, _PUSH_PULL_HEADER, nodes=len(msg.nodes),
                              user_state_len=len(msg.user_state), join=msg.join)
        nodes = b"".join(pack_struct(n, _PUSH_NODE, state=int(n.state)) for n in msg.nodes)
        return bytes((MessageType.PUSH_PULL,)) + header + nodes + msg.user_state
    if isinstance(msg, User):
        header = pack_struct(None, _USER_HEADER, length=len(msg.payload))
        return bytes((MessageType.USER,)) + header + msg.payload
    return encode_message(msg)


def encode_stream(msg: Message, *, compress: bool = False, envelope: Sealer | None = None) -> bytes:
    """One stream message as rawSendMsgStream sends it: compressed whenever compression is on,
    then encrypted behind an encryptMsg header whose 5 bytes are the associated data."""
    buf = _stream_body(msg)
    if compress:
        buf = compress_payload(buf)
    if envelope is not None:
        header = struct.pack(">BI", MessageType.ENCRYPT, envelope.sealed_length(len(buf)))
        buf = header + envelope.seal(buf, header)
    return buf


class _Body:
    """A plaintext stream message being read from an Unpacker, resumable when data runs out."""

    def __init__(self, msg_type: int, limit: int) -> None:
        if msg_type not in (MessageType.PUSH_PULL, MessageType.USER) + _STREAM_BODIES:
            raise GossipDecodeError(f"message type {msg_type} is not a stream message")
        self.msg_type, self.limit = msg_type, limit
        self.header: dict[str, Any] | None = None
        self.nodes: list[PushNodeState] = []
        self.raw = bytearray()

    def _take_raw(self, unpacker: msgpack.Unpacker, size: int) -> bool:
        if len(self.raw) < size:
            self.raw += unpacker.read_bytes(size - len(self.raw))
        return len(self.raw) == size

    def step(self, unpacker: msgpack.Unpacker) -> Message | None:
        if self.msg_type in _STREAM_BODIES:
            return _decode_body(self.msg_type, unpack_next(unpacker))
        if self.header is None:
            spec = _USER_HEADER if self.msg_type == MessageType.USER else _PUSH_PULL_HEADER
            self.header = unpack_struct(unpack_next(unpacker), spec)
            if max(self.header.get("nodes", 0), self.header.get("user_state_len", 0),
                   self.header.get("length", 0)) > self.limit:
                raise GossipDecodeError("stream message is larger than the limit")
        if self.msg_type == MessageType.USER:
            return User(bytes(self.raw)) if self._take_raw(unpacker, self.header["length"]) else None
        while len(self.nodes) < self.header["nodes"]:
            fields = unpack_struct(unpack_next(unpacker), _PUSH_NODE)
            try:
                fields["state"] = NodeState(fields["state"])
            except ValueError:
                raise GossipDecodeError(f"unknown node state {fields['state']}") from None
            self.nodes.append(PushNodeState(**fields))
        if not self._take_raw(unpacker, self.header["user_state_len"]):
            return None
        return PushPull(tuple(self.nodes), bytes(self.raw), self.header["join"])


def _read_whole(plain: bytes, limit: int, *, allow_compress: bool = True) -> Message:
    """A stream message that arrived whole (decrypted or decompressed), as readStream reads it."""
    if not plain:
        raise GossipDecodeError("empty stream message")
    if plain[0] == MessageType.COMPRESS and allow_compress:
        inner = _decompress_value(unpack_one(plain[1:], limit), limit)
        return _read_whole(inner, limit, allow_compress=False)
    body = _Body(plain[0], limit)
    unpacker = new_unpacker(max(limit, len(plain)))
    unpacker.feed(plain[1:])
    try:
        msg = body.step(unpacker)
    except NeedMore:
        msg = None
    if msg is None:
        raise GossipDecodeError("truncated stream message")
    return msg


class _Sealed:
    """An encryptMsg frame: 4-byte length (bounded), then that many sealed bytes."""

    def __init__(self, envelope: Sealer, limit: int) -> None:
        self.envelope, self.limit, self.buf = envelope, limit, bytearray()

    def step(self, unpacker: msgpack.Unpacker) -> Message | None:
        if len(self.buf) < 4:
            self.buf += unpacker.read_bytes(4 - len(self.buf))
            if len(self.buf) < 4:
                return None
        size = struct.unpack_from(">I", self.buf)[0]
        if size > self.limit:
            raise GossipDecodeError(f"remote node state is larger than limit ({size})")
        self.buf += unpacker.read_bytes(4 + size - len(self.buf))
        if len(self.buf) < 4 + size:
            return None
        header = bytes((MessageType.ENCRYPT,)) + bytes(self.buf[:4])
        return _read_whole(self.envelope.open(bytes(self.buf[4:]), header), self.limit)


class _Compressed:
    def __init__(self, limit: int) -> None:
        self.limit = limit

    def step(self, unpacker: msgpack.Unpacker) -> Message | None:
        inner = _decompress_value(unpack_next(unpacker), self.limit)
        return _read_whole(inner, self.limit, allow_compress=False)


class StreamDecoder:
    """Reads memberlist stream messages from bytes as they arrive (one Twisted Protocol each).

    `feed` returns the messages completed so far. Any error is final: the decoder raises it
    again on every later feed, and the connection should be closed. One message may hold at most
    `limit` bytes (and expand to at most that much); a sender cannot make us buffer more."""

    def __init__(self, *, envelope: Sealer | None = None, verify_incoming: bool = True,
                 limit: int = MAX_PUSH_STATE_BYTES) -> None:
        self._envelope, self._verify, self._limit = envelope, verify_incoming, limit
        self._unpacker = new_unpacker(limit + 64)
        self._fed = self._start = 0
        self._current: _Body | _Sealed | _Compressed | None = None
        self._error: GossipDecodeError | None = None

    def feed(self, data: bytes) -> list[Message]:
        if self._error is not None:
            raise self._error
        try:
            return self._feed(data)
        except GossipDecodeError as exc:
            self._error = exc
            raise

    def _feed(self, data: bytes) -> list[Message]:
        self._fed += len(data)
        if self._fed - self._start > self._limit + 64:  # a little room for headers
            raise GossipDecodeError("stream message is larger than the limit")
        try:
            self._unpacker.feed(data)
        except msgpack.BufferFull:
            raise GossipDecodeError("stream message is larger than the limit") from None
        done: list[Message] = []
        while True:
            try:
                msg = self._step()
            except NeedMore:
                msg = None
            if msg is None:
                return done
            done.append(msg)
            self._current, self._start = None, self._unpacker.tell()

    def _step(self) -> Message | None:
        if self._current is None:
            first = self._unpacker.read_bytes(1)
            if not first:
                return None
            if first[0] == MessageType.ENCRYPT:
                if self._envelope is None:
                    raise GossipDecodeError("remote state is encrypted and encryption is not configured")
                self._current = _Sealed(self._envelope, self._limit)
            elif self._envelope is not None and self._verify:
                raise GossipDecodeError("encryption is configured but remote state is not encrypted")
            elif first[0] == MessageType.COMPRESS:
                self._current = _Compressed(self._limit)
            else:
                self._current = _Body(first[0], self._limit)
        return self._current.step(self._unpacker)
