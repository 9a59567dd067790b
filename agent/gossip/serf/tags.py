"""Member tags in memberlist node metadata, as Serf encodes them.

Serf protocol >= 3 writes the magic byte 255 then a msgpack `map[string]string`; older
protocols wrote only the `role` tag's bytes, and any meta not starting with 255 still decodes
as `{"role": meta}`. memberlist carries at most `META_MAX_SIZE` (512) bytes of meta, so a tag
set that encodes larger is refused before it is advertised.
"""

from __future__ import annotations

from typing import Mapping

from agent.gossip.messages import META_MAX_SIZE
from agent.gossip import gomsgpack as g
from agent.gossip.serf.errors import serf_decoder

TAG_MAGIC_BYTE = 255


class TagsTooLarge(ValueError):
    """The encoded tags exceed memberlist's metadata limit."""


def encode_tags(tags: Mapping[str, str], protocol_version: int = 4,
                limit: int = META_MAX_SIZE) -> bytes:
    """Tags as node meta. Go writes map entries in random order; we sort them so the bytes are
    stable (every decoder reads a map regardless of order)."""
    if protocol_version < 3:
        meta = g.text(tags.get("role", ""))
    else:
        body = {g.text(k): g.text(v) for k, v in sorted(tags.items())}
        meta = bytes([TAG_MAGIC_BYTE]) + g.pack(body)
    if len(meta) > limit:
        raise TagsTooLarge(f"encoded tags are {len(meta)} bytes, limit is {limit}")
    return meta


@serf_decoder
def decode_tags(meta: bytes) -> dict[str, str]:
    """Tags from node meta; raises SerfDecodeError if the msgpack map is malformed."""
    if not meta or meta[0] != TAG_MAGIC_BYTE:
        return {"role": g.as_str(bytes(meta), "role")}
    return g.as_str_map(g.unpack_one(bytes(meta[1:])), "tags")
