"""agent.snapshot_archive: Consul 1.8.7's snapshot file, written and read, and every kind of
damage refused with a message saying what is wrong.

Damaged archives are built here with Python's own `tarfile` (an independent tar writer), so
the reader is not only checked against our writer. The interop cases run the real Consul:
our reader takes Consul's archives, `consul snapshot inspect` takes ours, and Consul restores
its own state from an archive we packed. They skip visibly without the binary.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterator

import pytest

from agent import snapshot_archive as sa
from agent.snapshot_archive import SnapshotArchiveError, inspect, pack, unpack
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary, running_consul

NOW = 1_700_000_000.123
SERVERS = [{"ID": "id-1", "Address": "127.0.0.1:8300", "Suffrage": 0},
           {"ID": "id-2", "Address": "127.0.0.2:8300", "Voter": False}]


def _packed(state: bytes = b"the state", **kw) -> bytes:
    args = dict(index=42, term=3, configuration=SERVERS, configuration_index=7, now=NOW)
    args.update(kw)
    return pack(state, **args)


def _meta_bytes(state: bytes, **changes) -> bytes:
    meta = sa.snapshot_meta(index=42, term=3, size=len(state), configuration=SERVERS, now=NOW)
    meta.update(changes)
    return json.dumps(meta).encode() + b"\n"


def _sums(members: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n"
                   for name, data in members.items()).encode()


def _build(members: list[tuple[str, bytes]], *, trailing: bytes = b"", end: bool = True,
           kind: bytes = tarfile.REGTYPE) -> bytes:
    """A gzip'd ustar archive of `members`, ending right after its end-of-archive blocks (as
    Go writes it), plus `trailing` uncompressed bytes."""
    buf = io.BytesIO()
    tf = tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT)
    for name, data in members:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.type = len(data), 0o600, kind
        tf.addfile(info, io.BytesIO(data))
    end_at = tf.offset
    tf.close()
    raw = buf.getvalue()[:end_at + (1024 if end else 0)]
    return gzip.compress(raw + trailing)


def _good_members(state: bytes = b"the state") -> list[tuple[str, bytes]]:
    meta = _meta_bytes(state)
    return [("meta.json", meta), ("state.bin", state),
            ("SHA256SUMS", _sums({"meta.json": meta, "state.bin": state}))]


# --- round trips ---------------------------------------------------------------------------

def test_round_trip_keeps_state_and_meta():
    """What `pack` writes, `unpack` gives back: the state and Raft's SnapshotMeta."""
    meta, state = unpack(_packed(b"\x00\x01binary state\xff"))
    assert state == b"\x00\x01binary state\xff"
    assert meta["ID"] == "3-42-1700000000123"
    assert (meta["Index"], meta["Term"], meta["Version"], meta["Size"]) == (42, 3, 1, 15)
    assert meta["ConfigurationIndex"] == 7
    assert meta["Configuration"] == {"Servers": [
        {"Suffrage": 0, "ID": "id-1", "Address": "127.0.0.1:8300"},
        {"Suffrage": 1, "ID": "id-2", "Address": "127.0.0.2:8300"}]}


def test_peers_are_the_voters_msgpacked_as_raft_does():
    """Peers: base64 of go-msgpack's encoding of the voters' addresses (raw strings)."""
    meta, _ = unpack(_packed())
    assert meta["Peers"] == "ka4xMjcuMC4wLjE6ODMwMA=="  # [ "127.0.0.1:8300" ]


def test_layout_is_consuls():
    """Three 0600 files in Consul's order, SHA256SUMS in sha256sum's format, and nothing
    after the end-of-archive blocks (Consul refuses trailing bytes)."""
    data = _packed(b"abc")
    raw = gzip.decompress(data)
    tf = tarfile.open(fileobj=io.BytesIO(raw))
    members = tf.getmembers()
    assert [m.name for m in members] == ["meta.json", "state.bin", "SHA256SUMS"]
    assert all(m.mode == 0o600 and m.isreg() and m.mtime == int(NOW) for m in members)
    meta_bytes = tf.extractfile("meta.json").read()
    assert meta_bytes.endswith(b"}\n") and b" " not in meta_bytes  # Go's compact encoder
    assert tf.extractfile("SHA256SUMS").read() == _sums(
        {"meta.json": meta_bytes, "state.bin": b"abc"})
    assert len(raw) == 3 * 1024 + 1024  # three header+data block pairs, two end blocks


def test_large_state_streams_through_in_chunks():
    """A state bigger than the chunk size (and an empty one) survives the round trip."""
    big = os.urandom(3 * (1 << 20) + 123)
    assert unpack(_packed(big))[1] == big
    assert unpack(_packed(b""))[1] == b""


def test_inspect_gives_consuls_fields():
    assert inspect(_packed(b"12345")) == {"ID": "3-42-1700000000123", "Size": 5,
                                          "Index": 42, "Term": 3, "Version": 1}


def test_sums_in_any_order_are_accepted():
    """Go writes SHA256SUMS in map order, so either order is Consul's."""
    members = _good_members()
    meta, state = members[0][1], members[1][1]
    members[2] = ("SHA256SUMS", _sums({"state.bin": state, "meta.json": meta}))
    assert unpack(_build(members))[1] == state


def test_python_tar_writer_archive_is_accepted():
    """An archive another ustar writer made (ours is not the only reference)."""
    assert unpack(_build(_good_members(b"xyz")))[1] == b"xyz"


# --- damage --------------------------------------------------------------------------------

def _damaged() -> dict[str, tuple[bytes, str]]:
    good = _packed()
    members = _good_members()
    meta, state, sums = (m[1] for m in members)
    cases = {
        "empty": (b"", "failed to decompress snapshot"),
        "not gzip": (b"PK\x03\x04 not a snapshot", "not a gzip stream"),
        "truncated gzip": (good[: len(good) // 2], "failed to decompress snapshot"),
        "corrupt gzip": (good[:40] + bytes([good[40] ^ 0xFF]) + good[41:],
                         "failed to decompress snapshot"),
        "gzip but not tar": (gzip.compress(b"hello, world\n" * 100), "invalid tar header"),
        "tar cut short": (gzip.compress(gzip.decompress(good)[:1500]), "truncated"),
        "no end-of-archive": (_build(members, end=False), "truncated in a tar header"),
        "missing meta.json": (_build(members[1:]), "no meta.json"),
        "missing state.bin": (_build([members[0], members[2]]), "no state.bin"),
        "missing SHA256SUMS": (_build(members[:2]), "no SHA256SUMS"),
        "extra member": (_build(members + [("notes.txt", b"hi")]),
                         "unexpected file 'notes.txt'"),
        "member twice": (_build(members[:2] + [members[1]] + members[2:]),
                         "'state.bin' appears twice"),
        "not a plain file": (_build(members, kind=tarfile.SYMTYPE), "unexpected tar entry type"),
        "state changed": (_build([members[0], ("state.bin", b"the stAte"), members[2]]),
                          "hash check failed for 'state.bin'"),
        "meta changed": (_build([("meta.json", meta.replace(b'"Term": 3', b'"Term": 4')),
                                 members[1], members[2]]),
                         "hash check failed for 'meta.json'"),
        "sums miss a file": (_build(members[:2] + [("SHA256SUMS", _sums({"meta.json": meta}))]),
                             "file missing for 'state.bin'"),
        "sums name a stranger": (
            _build(members[:2] + [("SHA256SUMS", sums + b"0" * 64 + b"  other.bin\n")]),
            "list missing hash for 'other.bin'"),
        "sums garbled": (_build(members[:2] + [("SHA256SUMS", b"not a sums file\n")]),
                         "malformed SHA256SUMS line"),
        "meta not JSON": (_build([("meta.json", b"{nope"), ("state.bin", state),
                                  ("SHA256SUMS", _sums({"meta.json": b"{nope",
                                                        "state.bin": state}))]),
                          "failed to decode snapshot metadata"),
        "meta lacks Index": (_build([("meta.json", b'{"ID":"x","Version":1,"Term":1,"Size":9}'),
                                     ("state.bin", state),
                                     ("SHA256SUMS", _sums({
                                         "meta.json": b'{"ID":"x","Version":1,"Term":1,"Size":9}',
                                         "state.bin": state}))]),
                             "Index must be a non-negative integer"),
        "size disagrees": (_build([("meta.json", _meta_bytes(state, Size=99)), members[1],
                                   ("SHA256SUMS", _sums({"meta.json": _meta_bytes(state, Size=99),
                                                         "state.bin": state}))]),
                           "says Size 99 but state.bin has 9 bytes"),
        "oversized meta.json": (_build([("meta.json", b" " * (sa.MAX_META_SIZE + 1))]),
                                "meta.json is 1048577 bytes, more than the 1048576 allowed"),
        "trailing bytes": (_build(members, trailing=b"\0" * 512),
                           "512 unread uncompressed bytes remain"),
    }
    bad_header = bytearray(gzip.decompress(good))
    bad_header[0] = ord("M")  # name changes, checksum no longer matches
    cases["bad header checksum"] = (gzip.compress(bytes(bad_header)), "bad checksum")
    return cases


DAMAGED = _damaged()


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_damaged_archive_is_refused_with_its_reason(case):
    data, reason = DAMAGED[case]
    with pytest.raises(SnapshotArchiveError) as caught:
        unpack(data)
    assert reason in str(caught.value)
    with pytest.raises(SnapshotArchiveError):
        inspect(data)


def test_state_over_the_callers_cap_is_refused_before_reading_it():
    with pytest.raises(SnapshotArchiveError, match="state.bin is 1000 bytes, more than the 999"):
        unpack(_packed(b"x" * 1000), max_state_size=999)


# --- interop with the real Consul ------------------------------------------------------------

needs_consul = pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulProcess]:
    yield from running_consul("snap1")


def _consul_snapshot(consul: ConsulProcess) -> tuple[bytes, int]:
    with urllib.request.urlopen(f"http://127.0.0.1:{consul.http}/v1/snapshot", timeout=30) as r:
        return r.read(), int(r.headers["X-Consul-Index"])


def _consul_cli(consul: ConsulProcess, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([consul_binary(), *args], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{consul.http}"))


@needs_consul
def test_unpack_reads_consuls_archive(consul):
    """An archive from Consul's GET /v1/snapshot: verified, and its meta is Raft's."""
    consul.put("/v1/kv/snap/a", b"1")
    data, index = _consul_snapshot(consul)
    meta, state = unpack(data)
    assert meta["Index"] == index and meta["Size"] == len(state) > 0
    assert meta["ID"].startswith(f"{meta['Term']}-{index}-")
    servers = meta["Configuration"]["Servers"]
    assert [s["Address"] for s in servers] == [f"127.0.0.1:{consul.server_port}"]
    # Our Peers encoding is byte for byte Consul's.
    assert base64.b64decode(meta["Peers"]) == sa.encode_peers(servers)


@needs_consul
def test_consul_inspect_accepts_our_archive(consul, tmp_path):
    """`consul snapshot inspect` verifies an archive we packed and shows our metadata."""
    path = tmp_path / "ours.snap"
    path.write_bytes(_packed(b"opaque state bytes"))
    done = _consul_cli(consul, "snapshot", "inspect", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == ("ID           3-42-1700000000123\nSize         18\nIndex        42\n"
                           "Term         3\nVersion      1\n\n")


@needs_consul
def test_consul_restores_its_state_from_our_archive(consul, tmp_path):
    """Consul's state re-wrapped by `pack` (new ID, our tar and gzip) restores in Consul."""
    consul.put("/v1/kv/snap/kept", b"before")
    data, _ = _consul_snapshot(consul)
    meta, state = unpack(data)
    path = tmp_path / "rewrapped.snap"
    path.write_bytes(pack(state, index=meta["Index"], term=meta["Term"],
                          configuration=meta["Configuration"]["Servers"],
                          configuration_index=meta["ConfigurationIndex"], now=NOW))
    req = urllib.request.Request(f"http://127.0.0.1:{consul.http}/v1/kv/snap/kept",
                                 method="DELETE")
    urllib.request.urlopen(req, timeout=10).close()
    done = _consul_cli(consul, "snapshot", "restore", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Restored snapshot\n"
    with urllib.request.urlopen(f"http://127.0.0.1:{consul.http}/v1/kv/snap/kept?raw",
                                timeout=10) as r:
        assert r.read() == b"before"
