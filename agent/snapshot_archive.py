"""Consul's snapshot archive: what `/v1/snapshot` and `waypost snapshot` move around.

Owns the format of Consul 1.8.7's snapshot file (consul/snapshot/archive.go and snapshot.go):
a gzip stream holding a ustar archive of exactly three regular files, in this order when we
write it: `meta.json` (Raft's SnapshotMeta as Go's JSON encoder writes it, newline included),
`state.bin` (the state bytes, opaque here) and `SHA256SUMS` ("<hex>  <name>\\n" per file; Go
writes them in map order, so a reader takes any order). Nothing else may follow the tar's
end-of-archive blocks inside the gzip stream: Consul refuses that too ("unread uncompressed
bytes remain"), so archives we write never carry tar's usual record padding.

Pure: no reactor, no files; time is the `now` argument. Everything damaged is refused with a
`SnapshotArchiveError` whose text says what is wrong. `write_archive`/`read_archive` stream
(the state passes through in chunks), `pack`/`unpack`/`inspect` are their in-memory forms.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, BinaryIO

import msgpack

__all__ = ["SnapshotArchiveError", "inspect", "pack", "read_archive", "snapshot_meta",
           "unpack", "write_archive", "MAX_STATE_SIZE"]

META, STATE, SUMS = "meta.json", "state.bin", "SHA256SUMS"
# Consul's meta.json is a few hundred bytes (one line per server at most); SHA256SUMS is two
# lines. Anything much bigger is not a snapshot, and must not be read into memory.
MAX_META_SIZE = 1 << 20
MAX_SUMS_SIZE = 4096
# The default cap on the state read by `unpack`; callers may pass their own.
MAX_STATE_SIZE = 1 << 30
# An 11-digit octal size field (what ustar, and Go for sizes below it, writes) tops out here.
_MAX_OCTAL_SIZE = (1 << 33) - 1
_BLOCK = 512
_CHUNK = 1 << 20
_SUFFRAGE = {"Voter": 0, "Nonvoter": 1, "Staging": 2}
_SUM_LINE = re.compile(r"([0-9a-fA-F]{64})  (\S+)")


class SnapshotArchiveError(ValueError):
    """The archive is damaged or is not a snapshot; `str()` says how, in Consul's words where
    Consul has some ("failed checking integrity of snapshot: hash check failed for ...")."""


# --- writing ---------------------------------------------------------------------------------

def _suffrage(server: Mapping[str, Any]) -> int:
    """Raft's ServerSuffrage number, from Consul's meta shape ("Suffrage": 0/1/2 or its name)
    or the operator API's ("Voter": bool)."""
    value = server.get("Suffrage")
    if isinstance(value, str):
        return _SUFFRAGE[value]
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return 0 if server.get("Voter", True) else 1


def encode_peers(servers: Iterable[Mapping[str, Any]]) -> bytes:
    """Raft's legacy `Peers` field: the voters' addresses, msgpack-encoded as go-msgpack does
    it (byte slices as raw strings; a nil list when there are no voters)."""
    voters = [str(s["Address"]).encode() for s in servers if _suffrage(s) == 0]
    return msgpack.packb(voters or None, use_bin_type=False)


def snapshot_meta(*, index: int, term: int, size: int, configuration: Iterable[Mapping] = (),
                  configuration_index: int = 0, now: float, version: int = 1) -> dict:
    """Raft's SnapshotMeta in the field order Go writes it. The ID is raft's snapshot name,
    "<term>-<index>-<unix ms>"."""
    servers = [{"Suffrage": _suffrage(s), "ID": str(s.get("ID", "")),
                "Address": str(s.get("Address", ""))} for s in configuration]
    return {"Version": version, "ID": f"{term}-{index}-{int(now * 1000)}", "Index": index,
            "Term": term, "Peers": base64.b64encode(encode_peers(servers)).decode("ascii"),
            "Configuration": {"Servers": servers}, "ConfigurationIndex": configuration_index,
            "Size": size}


def _tar_header(name: str, size: int, mtime: int) -> bytes:
    """A ustar header for a 0600 regular file owned by uid/gid 0, as Go's archive/tar writes
    Consul's members."""
    if size > _MAX_OCTAL_SIZE:
        raise SnapshotArchiveError(f"{name} is too large for a snapshot archive ({size} bytes)")
    fields = [name.encode().ljust(100, b"\0"), b"0000600\0", b"0000000\0", b"0000000\0",
              b"%011o\0" % size, b"%011o\0" % mtime, b" " * 8, b"0", b"\0" * 100,
              b"ustar\x0000", b"\0" * 32, b"\0" * 32, b"0000000\0", b"0000000\0", b"\0" * 155]
    header = b"".join(fields).ljust(_BLOCK, b"\0")
    checksum = b"%06o\0 " % sum(header)
    return header[:148] + checksum + header[156:]


def _pad(size: int) -> bytes:
    return b"\0" * (-size % _BLOCK)


def write_archive(out: BinaryIO, state: BinaryIO, meta: Mapping[str, Any], *,
                  now: float) -> None:
    """Write the archive of `meta` (see `snapshot_meta`; its "Size" bytes are read from
    `state` in chunks) to `out`, gzip-compressed."""
    size = int(meta["Size"])
    mtime = int(now)
    meta_bytes = json.dumps(meta, separators=(",", ":")).encode() + b"\n"
    meta_sum = hashlib.sha256(meta_bytes).hexdigest()
    state_hash = hashlib.sha256()
    # Go's gzip writer: no name, mtime 0, OS "unknown"; level 6 is its default.
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=6, mtime=0) as gz:
        gz.write(_tar_header(META, len(meta_bytes), mtime) + meta_bytes + _pad(len(meta_bytes)))
        gz.write(_tar_header(STATE, size, mtime))
        left = size
        while left:
            chunk = state.read(min(left, _CHUNK))
            if not chunk:
                raise SnapshotArchiveError(f"state ended {left} bytes short of its Size {size}")
            state_hash.update(chunk)
            gz.write(chunk)
            left -= len(chunk)
        gz.write(_pad(size))
        sums = f"{meta_sum}  {META}\n{state_hash.hexdigest()}  {STATE}\n".encode()
        gz.write(_tar_header(SUMS, len(sums), mtime) + sums + _pad(len(sums)))
        gz.write(b"\0" * (2 * _BLOCK))  # end of archive; no record padding (see above)


def pack(state: bytes, *, index: int, term: int, configuration: Iterable[Mapping] = (),
         configuration_index: int = 0, now: float, version: int = 1) -> bytes:
    """The archive of `state` taken at Raft `index`/`term`, as Consul's `snapshot save` writes
    it. `configuration` lists the servers ({"ID", "Address", "Suffrage" or "Voter"})."""
    meta = snapshot_meta(index=index, term=term, size=len(state), configuration=configuration,
                         configuration_index=configuration_index, now=now, version=version)
    out = io.BytesIO()
    write_archive(out, io.BytesIO(state), meta, now=now)
    return out.getvalue()


# --- reading ---------------------------------------------------------------------------------

class _Source:
    """The decompressed stream, read exactly; every gzip failure becomes an archive error."""

    def __init__(self, raw: BinaryIO) -> None:
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self._started = False

    def read(self, n: int, what: str) -> bytes:
        try:
            data = self._gz.read(n)
        except (OSError, EOFError, zlib.error) as exc:
            raise SnapshotArchiveError(f"failed to decompress snapshot: {_gzip_reason(exc)}") \
                from None
        if not data and n and not self._started:
            # gzip reads an empty input as an empty stream; Go (and so Consul) does not.
            raise SnapshotArchiveError(
                "failed to decompress snapshot: no data (an empty file or gzip stream)")
        self._started = True
        if len(data) != n:
            raise SnapshotArchiveError(f"failed reading snapshot: truncated in {what}")
        return data

    def rest(self) -> int:
        """How many uncompressed bytes are left (the stream is checked to its end)."""
        count = 0
        while True:
            try:
                data = self._gz.read(_CHUNK)
            except (OSError, EOFError, zlib.error) as exc:
                raise SnapshotArchiveError(
                    f"failed to decompress snapshot: {_gzip_reason(exc)}") from None
            if not data:
                return count
            count += len(data)


def _gzip_reason(exc: BaseException) -> str:
    if isinstance(exc, EOFError):
        return "unexpected EOF (the archive is truncated)"
    if isinstance(exc, gzip.BadGzipFile) and "Not a gzipped file" in str(exc):
        return "not a gzip stream"
    return str(exc) or type(exc).__name__


def _octal(field: bytes, what: str) -> int:
    text = field.rstrip(b"\0 ").lstrip(b" ")
    if not text:
        return 0
    if not re.fullmatch(rb"[0-7]+", text):
        raise SnapshotArchiveError(f"failed reading snapshot: invalid tar header ({what})")
    return int(text, 8)


def _parse_header(block: bytes) -> tuple[str, int]:
    """(name, size) of a regular file's header block."""
    stored = _octal(block[148:156], "checksum")
    if stored != sum(block[:148]) + 8 * 32 + sum(block[156:]):
        raise SnapshotArchiveError("failed reading snapshot: invalid tar header (bad checksum)")
    if block[156:157] not in (b"0", b"\0"):
        raise SnapshotArchiveError("failed reading snapshot: unexpected tar entry type "
                                   f"{block[156:157].decode('latin-1')!r} (only plain files)")
    name = block[:100].split(b"\0", 1)[0]
    prefix = block[345:500].split(b"\0", 1)[0] if block[257:262] == b"ustar" else b""
    if prefix:
        name = prefix + b"/" + name
    return name.decode("utf-8", "replace"), _octal(block[124:136], "size")


def _member_limit(name: str, max_state_size: int) -> int:
    limits = {META: MAX_META_SIZE, STATE: max_state_size, SUMS: MAX_SUMS_SIZE}
    if name not in limits:
        raise SnapshotArchiveError(f"failed reading snapshot: unexpected file {name!r} in "
                                   "snapshot")
    return limits[name]


def _decode_meta(data: bytes) -> dict:
    try:
        meta = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise SnapshotArchiveError(f"failed to decode snapshot metadata: {exc}") from None
    if not isinstance(meta, dict):
        raise SnapshotArchiveError("failed to decode snapshot metadata: not a JSON object")
    for field in ("Version", "Index", "Term", "Size"):
        value = meta.get(field)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise SnapshotArchiveError(f"failed to decode snapshot metadata: {field} must be "
                                       "a non-negative integer")
    if not isinstance(meta.get("ID"), str):
        raise SnapshotArchiveError("failed to decode snapshot metadata: ID must be a string")
    return meta


def _verify_sums(text: bytes, digests: Mapping[str, str]) -> None:
    """SHA256SUMS against the members' digests, as Consul's DecodeAndVerify checks them."""
    seen = set()
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise SnapshotArchiveError("failed checking integrity of snapshot: SHA256SUMS is not "
                                   "text") from None
    if lines and lines[-1] == "":
        lines.pop()
    for line in lines:
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            raise SnapshotArchiveError("failed checking integrity of snapshot: malformed "
                                       f"SHA256SUMS line {line[:80]!r}")
        digest, name = match.group(1).lower(), match.group(2)
        if name not in digests:
            raise SnapshotArchiveError("failed checking integrity of snapshot: list missing "
                                       f"hash for {name!r}")
        if name in seen:
            raise SnapshotArchiveError(f"failed checking integrity of snapshot: {name!r} "
                                       "listed twice in SHA256SUMS")
        if digest != digests[name]:
            raise SnapshotArchiveError("failed checking integrity of snapshot: hash check "
                                       f"failed for {name!r}")
        seen.add(name)
    for name in digests:
        if name not in seen:
            raise SnapshotArchiveError("failed checking integrity of snapshot: file missing "
                                       f"for {name!r}")


def read_archive(raw: BinaryIO, state_out: BinaryIO | None = None, *,
                 max_state_size: int = MAX_STATE_SIZE) -> dict:
    """Read and verify the archive from `raw`; the state goes to `state_out` in chunks (or
    nowhere). Returns meta.json's object. Only trust `state_out`'s bytes when this returns:
    the sums are checked after the state has passed through."""
    source = _Source(raw)
    digests: dict[str, str] = {}
    meta: dict | None = None
    sums = b""
    state_size = 0
    while True:
        block = source.read(_BLOCK, "a tar header")
        if block == b"\0" * _BLOCK:
            source.read(_BLOCK, "the end-of-archive marker")  # its second block
            break
        name, size = _parse_header(block)
        if name in digests:
            raise SnapshotArchiveError(f"failed reading snapshot: {name!r} appears twice")
        limit = _member_limit(name, max_state_size)
        if size > limit:
            raise SnapshotArchiveError(f"failed reading snapshot: {name} is {size} bytes, "
                                       f"more than the {limit} allowed")
        digest = hashlib.sha256()
        if name == STATE:
            left = state_size = size
            while left:
                chunk = source.read(min(left, _CHUNK), STATE)
                digest.update(chunk)
                if state_out is not None:
                    state_out.write(chunk)
                left -= len(chunk)
        else:
            data = source.read(size, name)
            digest.update(data)
            if name == META:
                meta = _decode_meta(data)
            else:
                sums = data
        source.read(-size % _BLOCK, f"the padding of {name}")
        digests[name] = digest.hexdigest()
    extra = source.rest()
    if extra:
        raise SnapshotArchiveError(f"{extra} unread uncompressed bytes remain")
    for name in (META, STATE, SUMS):
        if name not in digests:
            raise SnapshotArchiveError(f"failed reading snapshot: no {name} in the archive")
    del digests[SUMS]
    _verify_sums(sums, digests)
    assert meta is not None
    if meta["Size"] != state_size:
        raise SnapshotArchiveError(f"failed reading snapshot: meta.json says Size "
                                   f"{meta['Size']} but state.bin has {state_size} bytes")
    return meta


def unpack(data: bytes, *, max_state_size: int = MAX_STATE_SIZE) -> tuple[dict, bytes]:
    """(meta, state) of a verified archive; `SnapshotArchiveError` when it is damaged."""
    state = io.BytesIO()
    meta = read_archive(io.BytesIO(data), state, max_state_size=max_state_size)
    return meta, state.getvalue()


def inspect(data: bytes, *, max_state_size: int = MAX_STATE_SIZE) -> dict:
    """What `consul snapshot inspect` shows of a verified archive: ID, Size, Index, Term,
    Version (the state itself is checked and dropped)."""
    meta = read_archive(io.BytesIO(data), None, max_state_size=max_state_size)
    return {key: meta[key] for key in ("ID", "Size", "Index", "Term", "Version")}
