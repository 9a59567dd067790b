"""go-msgpack's rules, as memberlist and Serf both use them (hashicorp/go-msgpack 0.5.x with a
zero-value MsgpackHandle). Both codecs (agent.gossip.codec, agent.gossip.serf.codec) build on
this module; it owns every rule below, checked by both codecs' golden vectors.

Writing: a Go struct is a map keyed by field name, written in the byte order of the names
(`struct`), with `omitempty` fields left out when empty; strings and []byte are both old-spec
raw strings (fixraw, raw16, raw32: no str8, no bin, since WriteExt is off), which is what
msgpack packs with `use_bin_type=False`; unsigned integers take their smallest form; a nil
slice or map is msgpack nil (`nil_if_empty`).

Reading is as tolerant as Go's decoder and as strict about types: a struct may come as a map
or (memberlist) as an array in declaration order, unknown keys are skipped, missing keys and
nil are the zero value, integers must fit the field, a bool also accepts 0 and 1 (go-msgpack's
decodeBool), raw and bin both fill strings and []byte, and trailing bytes are ignored. Anything
else raises `GossipDecodeError`, the one error bytes from the network cause here (Serf's
`SerfDecodeError` is a subclass).

Two ways to read a struct: `unpack_struct` with a `Spec`, a table of (Go field name, Python
attribute, kind, omitempty) in Go declaration order, kinds u8/u16/u32, int (Go int,
non-negative here), bool, str, bytes and vsn (a []uint8 read as a tuple of ints), as the
memberlist codec does; or `as_struct` and the `as_*` readers field by field, as Serf's does.
"""

from __future__ import annotations

from typing import Any

import msgpack

Spec = tuple[tuple[str, str, str, bool], ...]


class GossipDecodeError(ValueError):
    """Bytes from the network that are not a valid gossip (memberlist or Serf) message."""


# --- writing ----------------------------------------------------------------------------------

def text(value: str) -> bytes:
    """A Go string as bytes: Go strings (node names) may hold any bytes, so round-trip them."""
    return value.encode("utf-8", "surrogateescape")


def pack(value: Any) -> bytes:
    """Plain values (structs already built with `struct`) as go-msgpack writes them."""
    return msgpack.packb(value, use_bin_type=False)


def struct(**fields: Any) -> dict[str, Any]:
    """A Go struct value: its fields in the byte order of their names, as go-msgpack sorts them."""
    return {name: fields[name] for name in sorted(fields, key=text)}


def nil_if_empty(value: bytes) -> bytes | None:
    """Go's zero []byte is nil, and an empty slice is written as nil."""
    return bytes(value) if value else None


_UINT_BITS = {"u8": 8, "u16": 16, "u32": 32, "int": 63}


def _pack_field(kind: str, value: Any) -> Any:
    if kind in _UINT_BITS:
        if isinstance(value, bool) or not 0 <= int(value) < (1 << _UINT_BITS[kind]):
            raise ValueError(f"{value!r} does not fit a Go {kind}")
        return int(value)
    if kind == "str":
        return text(value)
    if kind == "bool":
        return bool(value)
    return nil_if_empty(value)  # bytes and vsn are Go slices


def pack_struct(obj: Any, spec: Spec, **extra: Any) -> bytes:
    """The struct's map, its fields read from `obj`'s attributes unless given in `extra`."""
    fields = {}
    for go_name, attr, kind, omitempty in spec:
        value = extra[attr] if attr in extra else getattr(obj, attr)
        if not (omitempty and not value):
            fields[go_name] = _pack_field(kind, value)
    return pack(struct(**fields))


# --- reading bytes ----------------------------------------------------------------------------

def new_unpacker(limit: int) -> msgpack.Unpacker:
    """A streaming reader that keeps raw strings as bytes and buffers about `limit` bytes at most
    (msgpack also bounds every string, array and map length by the buffer size)."""
    return msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=limit + 1024)


class NeedMore(Exception):
    """The stream has not delivered the whole value yet."""


def unpack_next(unpacker: msgpack.Unpacker) -> Any:
    """The next value; NeedMore if it is incomplete (the unpacker rewinds), else only
    GossipDecodeError for malformed input."""
    try:
        return unpacker.unpack()
    except msgpack.OutOfData:
        raise NeedMore() from None
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError,
            msgpack.UnpackException) as exc:
        raise GossipDecodeError(f"bad msgpack: {str(exc) or type(exc).__name__}") from None


def unpack_prefix(data: bytes, limit: int = 0) -> tuple[Any, int]:
    """The first msgpack value in `data` and how many bytes it used."""
    unpacker = new_unpacker(max(limit, len(data)))
    unpacker.feed(data)
    try:
        value = unpack_next(unpacker)
    except NeedMore:
        raise GossipDecodeError("truncated msgpack value") from None
    return value, unpacker.tell()


def unpack_one(data: bytes, limit: int = 0) -> Any:
    """The first msgpack value in `data` (trailing bytes ignored, as Go's decoder does)."""
    return unpack_prefix(data, limit)[0]


# --- reading decoded values as Go assigns them to typed fields --------------------------------

def as_uint(value: Any, what: str, bits: int = 64) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        raise GossipDecodeError(f"{what}: expected an integer")
    if not 0 <= value < 1 << bits:
        raise GossipDecodeError(f"{what}: out of range for uint{bits}")
    return value


def as_int(value: Any, what: str, bits: int = 64) -> int:
    if value is None:
        return 0
    if type(value) is not int:
        raise GossipDecodeError(f"{what}: expected an integer")
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise GossipDecodeError(f"{what}: out of range for int{bits}")
    return value


def as_bool(value: Any, what: str) -> bool:
    if value is None:
        return False
    if type(value) not in (bool, int) or value not in (0, 1):
        raise GossipDecodeError(f"{what}: expected a bool")
    return bool(value)


def as_bytes(value: Any, what: str) -> bytes:
    if value is None:
        return b""
    if not isinstance(value, bytes):
        raise GossipDecodeError(f"{what}: expected bytes")
    return value


def as_str(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    return as_bytes(value, what).decode("utf-8", "surrogateescape")


def as_list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise GossipDecodeError(f"{what}: expected an array")
    return value


def as_map(value: Any, what: str) -> dict[Any, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise GossipDecodeError(f"{what}: expected a map")
    return value


def as_struct(value: Any, what: str) -> dict[str, Any]:
    """A decoded map as a struct's fields by Go name (nil is the zero struct)."""
    return {as_str(key, what): item for key, item in as_map(value, what).items()}


def as_str_map(value: Any, what: str) -> dict[str, str]:
    """A Go map[string]string (Serf's tags)."""
    return {k: as_str(v, what) for k, v in as_struct(value, what).items()}


_READERS = {
    "u8": lambda v, w: as_uint(v, w, 8), "u16": lambda v, w: as_uint(v, w, 16),
    "u32": lambda v, w: as_uint(v, w, 32), "int": lambda v, w: as_uint(v, w, 63),
    "bool": as_bool, "str": as_str, "bytes": as_bytes,
    "vsn": lambda v, w: tuple(as_bytes(v, w)),
}


def unpack_struct(value: Any, spec: Spec) -> dict[str, Any]:
    """Fields by attribute name from a decoded map (by Go name) or array (by position). A nil
    struct is refused: memberlist never sends one, so it is junk."""
    if isinstance(value, list):
        if len(value) > len(spec):
            raise GossipDecodeError("struct array has too many elements")
        fields = {spec[i][0]: v for i, v in enumerate(value)}
    elif isinstance(value, dict):
        fields = as_struct(value, "struct key")
    else:
        raise GossipDecodeError(f"expected a struct, got {type(value).__name__}")
    return {attr: _READERS[kind](fields.get(go_name), go_name)
            for go_name, attr, kind, _omitempty in spec}
