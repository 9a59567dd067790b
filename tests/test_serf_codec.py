"""Serf's wire encodings against golden vectors written by serf 0.9.4 / go-msgpack 0.5.5.

tests/data/serf/go_vectors.json comes from scripts/gossip/serf_golden/run.sh (Debian's Serf
sources compiled with a small Go test file). The Go-dependent round trip runs live when Go and
the sources are present, and is skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.gossip.serf.codec import (
    SerfDecodeError, decode_filter, decode_message, encode_filter, encode_message)
from agent.gossip.serf.messages import (
    QUERY_FLAG_ACK, QUERY_FLAG_NO_BROADCAST, ConflictResponse, Join, KeyRequest, KeyResponse,
    Leave, MemberRecord, NodeFilter, PushPull, QueryMessage, QueryResponseMessage, Relay,
    TagFilter, UserEventMessage, UserEventRecord, UserEvents)
from agent.gossip.serf.tags import TagsTooLarge, decode_tags, encode_tags

ROOT = Path(__file__).resolve().parent.parent
GO_VECTORS = json.loads((ROOT / "tests/data/serf/go_vectors.json").read_text())
TOOL = ROOT / "scripts/gossip/serf_golden/run.sh"
SERF_SRC = Path("/usr/share/gocode/src/github.com/hashicorp/serf/serf/serf.go")

_ACK = QueryResponseMessage(ltime=4, id=123456789, source="responder", flags=QUERY_FLAG_ACK)

MESSAGES = {
    "join_small": Join(5, "a"),
    "join_big": Join(1 << 40, "a-node-name-that-is-longer-than-31-bytes"),
    "leave_prune": Leave(300, "b", prune=True),
    "leave": Leave(70000, "node-1"),
    "push_pull": PushPull(
        ltime=10, status_ltimes={"a": 3}, left_members=("b",), event_ltime=7,
        events=(None, UserEvents(1, (UserEventRecord("deploy", b"x"), UserEventRecord("nop"))),
                None),
        query_ltime=2),
    "push_pull_empty": PushPull(ltime=1, event_ltime=1, events=(None,) * 4, query_ltime=1),
    "user_event": UserEventMessage(9, "consul:event", bytes([0, 1, 2, 255]), cc=True),
    "user_event_nil_payload": UserEventMessage(0, "e"),
    "query": QueryMessage(
        ltime=4, id=123456789, addr=bytes([127, 0, 0, 1]), port=8301, source_node="src",
        filters=(encode_filter(NodeFilter(("a", "b"))), encode_filter(TagFilter("role", "^node$"))),
        flags=QUERY_FLAG_ACK, relay_factor=2, timeout_ns=3_200_000_000, name="_serf_ping",
        payload=b"hello"),
    "query_minimal": QueryMessage(
        ltime=1, id=1, addr=bytes(15) + b"\x01", port=1, source_node="s", name="q",
        flags=QUERY_FLAG_NO_BROADCAST),
    "query_ack": _ACK,
    "query_response": QueryResponseMessage(ltime=4, id=4294967295, source="r", payload=b"answer"),
    "relay": Relay(dest_addr=bytes([10, 0, 0, 2]), dest_port=8301, dest_name="dest",
                   inner=encode_message(_ACK)),
    "key_request": KeyRequest(bytes([7]) * 32),
    "key_response": KeyResponse(result=True, keys=("AAAA", "BBBB"), primary_key="AAAA"),
    "key_response_error": KeyResponse(
        result=False, message="No keyring to modify (encryption not enabled)"),
    "conflict_response": ConflictResponse(MemberRecord(
        name="n1", addr=bytes([192, 168, 1, 2]), port=8301, tags={"role": "node"}, status=1,
        vsn=(1, 5, 2, 2, 5, 4))),
    "conflict_response_unknown": ConflictResponse(None),
}
FILTERS = {"filter_node": NodeFilter(("a", "b")), "filter_tag": TagFilter("role", "^node$")}
TAGS = {"tags_v4": ({"role": "node"}, 4), "tags_v4_empty": ({}, 4),
        "tags_v2_role": ({"role": "consul", "dc": "dc1"}, 2)}


def test_every_go_vector_is_covered() -> None:
    assert set(GO_VECTORS) == set(MESSAGES) | set(FILTERS) | set(TAGS)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_encodes_as_serf_does(name: str) -> None:
    assert encode_message(MESSAGES[name]).hex() == GO_VECTORS[name]["hex"]


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_message_decodes_what_serf_wrote(name: str) -> None:
    assert decode_message(bytes.fromhex(GO_VECTORS[name]["hex"])) == MESSAGES[name]


@pytest.mark.parametrize("name", sorted(FILTERS))
def test_filters_match_serf(name: str) -> None:
    raw = bytes.fromhex(GO_VECTORS[name]["hex"])
    assert encode_filter(FILTERS[name]) == raw
    assert decode_filter(raw) == FILTERS[name]


@pytest.mark.parametrize("name", sorted(TAGS))
def test_tags_match_serf(name: str) -> None:
    tags, version = TAGS[name]
    raw = bytes.fromhex(GO_VECTORS[name]["hex"])
    assert encode_tags(tags, version) == raw
    expected = tags if version >= 3 else {"role": tags["role"]}
    assert decode_tags(raw) == expected


def test_relay_inner_message_decodes() -> None:
    relay = decode_message(bytes.fromhex(GO_VECTORS["relay"]["hex"]))
    assert isinstance(relay, Relay)
    assert decode_message(relay.inner) == _ACK


def test_tags_round_trip_many_entries_and_legacy_role() -> None:
    tags = {"role": "node", "dc": "dc1", "id": "x" * 36, "vsn": "2", "büild": "ü"}
    assert decode_tags(encode_tags(tags)) == tags
    assert decode_tags(b"consul") == {"role": "consul"}
    assert decode_tags(b"") == {"role": ""}


def test_tags_limit_is_512_bytes() -> None:
    # magic byte + fixmap header + fixstr key "k" (2 bytes) + raw16 value (3 + n bytes)
    fits = {"k": "v" * (512 - 1 - 1 - 2 - 3)}
    assert len(encode_tags(fits)) == 512
    with pytest.raises(TagsTooLarge):
        encode_tags({"k": "v" * (512 - 1 - 1 - 2 - 3 + 1)})


def test_tags_junk_raises_decode_error() -> None:
    for junk in (b"\xff", b"\xff\x92\x01\x02", b"\xff\x81\x01\x02", b"\xff\xc1"):
        with pytest.raises(SerfDecodeError):
            decode_tags(junk)


def test_timeout_is_go_duration_nanoseconds() -> None:
    assert MESSAGES["query"].timeout == pytest.approx(3.2)


def test_junk_never_raises_anything_but_decode_error() -> None:
    rnd = random.Random(11)
    seeds = [bytes.fromhex(v["hex"]) for v in GO_VECTORS.values()]
    for i in range(3000):
        base = bytearray(rnd.choice(seeds))
        if i % 3 == 0:
            data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 40)))
        else:
            for _ in range(rnd.randrange(1, 4)):
                if base:
                    base[rnd.randrange(len(base))] = rnd.randrange(256)
            data = bytes(base[:rnd.randrange(1, len(base) + 1)])
        for decode in (decode_message, decode_filter, decode_tags):
            try:
                decode(data)
            except SerfDecodeError:
                pass


def test_specific_junk_is_refused() -> None:
    for junk in (b"", b"\x0a", b"\x01\xc1", b"\x01\x81\x92\x01\x02\x01", b"\x01\x81\xa4Node\x01",
                 b"\x01\x81\xa5LTime\xff", b"\x01\x81\xa5LTime\xcb" + bytes(8),
                 b"\x09\x80", b"\x01\xdd\xff\xff\xff\xff", b"\x01" + b"\x91" * 5000):
        with pytest.raises(SerfDecodeError):
            decode_message(junk)


def _go_available() -> str | None:
    if not shutil.which(os.environ.get("GO", "/usr/bin/go")):
        return "Go toolchain not found (/usr/bin/go)"
    if not SERF_SRC.exists():
        return f"serf sources not found at {SERF_SRC.parent}"
    return None


@pytest.mark.skipif(_go_available() is not None, reason=str(_go_available()))
def test_serf_decodes_what_waypost_writes(tmp_path: Path) -> None:
    """Go's Serf decodes every Waypost encoding and, encoding it again, gets the same bytes."""
    ours = {name: {"kind": "message", "hex": encode_message(m).hex()}
            for name, m in MESSAGES.items()}
    ours.update({n: {"kind": "filter", "hex": encode_filter(f).hex()} for n, f in FILTERS.items()})
    ours.update({n: {"kind": f"tags{v}", "hex": encode_tags(t, v).hex()}
                 for n, (t, v) in TAGS.items()})
    ours["tags_many"] = {"kind": "tags4", "hex": encode_tags({"a": "1"}).hex()}
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    src.write_text(json.dumps(ours))
    subprocess.run([str(TOOL), "decode", str(src), str(out)], check=True, timeout=600,
                   env={**os.environ, "SERF_GOLDEN_WORK": str(tmp_path / "go")})
    back = json.loads(out.read_text())
    assert {n: v["hex"] for n, v in back.items()} == {n: v["hex"] for n, v in ours.items()}
