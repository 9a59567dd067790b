"""Waypost's encodings for the golden check: prints py_vectors.json (see run.sh).

Each vector is bytes from agent.gossip.codec plus the message values in the JSON shape Go's
encoding/json gives memberlist's structs ([]byte as base64, nil as null), so the Go side can
decode our bytes and the test can compare what it found. Encryption uses a fixed nonce here so
the file is reproducible; tests/test_gossip_codec.py re-encodes every vector and expects the
same bytes.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.gossip import codec, security  # noqa: E402
from agent.gossip.messages import (  # noqa: E402
    Ack, Alive, Dead, Err, IndirectPing, Nack, NodeState, Ping, PushNodeState, PushPull, Suspect,
    User,
)

NONCE = bytes(range(100, 112))
V4, V6 = bytes((10, 0, 0, 5)), bytes.fromhex("fd000000000000000000000000010002")
LONG = b"tag=value;" * 30


def key(size: int) -> bytes:
    return bytes((i * 7 + size) & 0xFF for i in range(size))


def _b64(data: bytes) -> str | None:
    return base64.b64encode(data).decode() if data else None


def go_json(msg: object) -> dict:
    """A message as {"type", "fields"} with Go's field names."""
    if isinstance(msg, Ping):
        return {"type": "ping", "fields": {"SeqNo": msg.seq_no, "Node": msg.node,
                "SourceAddr": _b64(msg.source_addr), "SourcePort": msg.source_port, "SourceNode": msg.source_node}}
    if isinstance(msg, IndirectPing):
        return {"type": "indirect_ping", "fields": {"SeqNo": msg.seq_no, "Target": _b64(msg.target),
                "Port": msg.port, "Node": msg.node, "Nack": msg.nack, "SourceAddr": _b64(msg.source_addr),
                "SourcePort": msg.source_port, "SourceNode": msg.source_node}}
    if isinstance(msg, Ack):
        return {"type": "ack", "fields": {"SeqNo": msg.seq_no, "Payload": _b64(msg.payload)}}
    if isinstance(msg, Nack):
        return {"type": "nack", "fields": {"SeqNo": msg.seq_no}}
    if isinstance(msg, Err):
        return {"type": "err", "fields": {"Error": msg.error}}
    if isinstance(msg, (Suspect, Dead)):
        return {"type": "suspect" if isinstance(msg, Suspect) else "dead",
                "fields": {"Incarnation": msg.incarnation, "Node": msg.node, "From": msg.source}}
    if isinstance(msg, Alive):
        return {"type": "alive", "fields": {"Incarnation": msg.incarnation, "Node": msg.node,
                "Addr": _b64(msg.addr), "Port": msg.port, "Meta": _b64(msg.meta), "Vsn": _b64(bytes(msg.vsn))}}
    if isinstance(msg, User):
        return {"type": "user", "fields": {"Payload": _b64(msg.payload)}}
    if isinstance(msg, PushPull):
        nodes = [{"Name": n.name, "Addr": _b64(n.addr), "Port": n.port, "Meta": _b64(n.meta),
                  "Incarnation": n.incarnation, "State": int(n.state), "Vsn": _b64(bytes(n.vsn))}
                 for n in msg.nodes]
        return {"type": "push_pull", "fields": {"Join": msg.join, "Nodes": nodes or None,
                "UserState": _b64(msg.user_state)}}
    raise TypeError(msg)


MESSAGES = {
    "ping_plain": Ping(7, "node-b"),
    "ping_source": Ping(4294967295, "consul-server-1", V4, 8301, "client-9"),
    "indirect_ping_nack": IndirectPing(300, V6, 65535, "target", True, V4, 128, "me"),
    "indirect_ping_plain": IndirectPing(127, V4, 255, "t"),
    "ack_payload": Ack(128, LONG[:40]),
    "ack_nil": Ack(0),
    "nack": Nack(65536),
    "err": Err("remote error: nope"),
    "suspect": Suspect(2, "a", "b"),
    "alive_full": Alive(2**31 + 5, "a-rather-long-node-name-for-str16-0123456789", V4, 8301, LONG,
                        (1, 5, 2, 2, 5, 4)),
    "alive_nil": Alive(1, "n\u00f6d\u00e9-\u03c0", V6, 1),
    "alive_big_meta": Alive(70000, "m", V4, 65535, b"x" * 512, (1, 5, 2, 2, 5, 4)),
    "dead": Dead(9, "gone", "gone"),
    "user": User(b"serf-event-payload"),
}
THREE = [MESSAGES["ping_plain"], MESSAGES["suspect"], MESSAGES["user"]]
REPEATED = [MESSAGES["alive_full"]] * 3 + [MESSAGES["suspect"]]
NODES = (
    PushNodeState("server-1", V4, 8301, LONG[:60], 3, NodeState.ALIVE, (1, 5, 2, 2, 5, 4)),
    PushNodeState("client-2", V6, 18301, b"", 1 << 20, NodeState.SUSPECT, (1, 5, 2, 2, 5, 4)),
    PushNodeState("gone-3", V4, 8301, b"", 0, NodeState.LEFT, (1, 5, 2, 2, 5, 4)),
    PushNodeState("dead-4", V4, 8301, b"", 4294967295, NodeState.DEAD, (1, 5, 2, 2, 5, 4)),
)
# name: (messages, crc, compress, key size or 0, envelope version)
PACKETS = {
    "packet_single": ([MESSAGES["ping_source"]], False, False, 0, 1),
    "packet_compound": (THREE, False, False, 0, 1),
    "packet_crc": (THREE, True, False, 0, 1),
    "packet_compress": (REPEATED, False, True, 0, 1),
    "packet_compress_crc": (REPEATED, True, True, 0, 1),
    "packet_encrypt_v1_key16": (THREE, False, False, 16, 1),
    "packet_encrypt_v0_key24": (THREE, False, False, 24, 0),
    "packet_all_v1_key32": (REPEATED, True, True, 32, 1),
    "packet_compound_127": ([Nack(i) for i in range(127)], False, False, 0, 1),
}
# Built by hand, past what codec.make_compound allows: memberlist 0.2.2 misreads it (its
# uint8 `numParts*2` wraps), which is why the codec sends at most 127 parts.
GO_MISREADS = {"packet_compound_128": [Nack(i) for i in range(128)]}
# name: (message, compress, key size or 0, envelope version)
STREAMS = {
    "stream_push_pull": (PushPull(NODES, b"serf-user-state", True), False, 0, 1),
    "stream_push_pull_empty": (PushPull(()), False, 0, 1),
    "stream_push_pull_compress_v1": (PushPull(NODES, LONG), True, 32, 1),
    "stream_push_pull_v0": (PushPull(NODES[:1], b"", True), False, 16, 0),
    "stream_user": (User(LONG[:45]), False, 0, 1),
    "stream_user_compress_v0": (User(LONG), True, 24, 0),
    "stream_ping": (MESSAGES["ping_source"], False, 0, 1),
    "stream_ack_v1": (Ack(5, b"coordinate"), False, 16, 1),
    "stream_err": (Err("Remote state is encrypted and encryption is not configured"), False, 0, 1),
}


def _envelope(size: int, version: int) -> security.Envelope | None:
    if not size:
        return None
    return security.Envelope(security.Keyring(primary=key(size)), version, lambda n: NONCE[:n])


def vectors() -> list[dict]:
    out = []
    for name, msg in MESSAGES.items():
        out.append({"name": name, "kind": "message", "hex": codec.encode_message(msg).hex(),
                    "expect": [go_json(msg)]})
    for name, (msgs, crc, compress, size, version) in PACKETS.items():
        data = codec.encode_packet(msgs, crc=crc, compress=compress, envelope=_envelope(size, version))
        out.append({"name": name, "kind": "packet", "hex": data.hex(), "key": _b64(key(size)) if size else None,
                    "options": {"crc": crc, "compress": compress, "version": version, "nonce": NONCE.hex()},
                    "expect": [go_json(m) for m in msgs]})
    for name, (msg, compress, size, version) in STREAMS.items():
        data = codec.encode_stream(msg, compress=compress, envelope=_envelope(size, version))
        out.append({"name": name, "kind": "stream", "hex": data.hex(), "key": _b64(key(size)) if size else None,
                    "options": {"compress": compress, "version": version, "nonce": NONCE.hex()},
                    "expect": [go_json(msg)]})
    for name, msgs in GO_MISREADS.items():
        parts = [codec.encode_message(m) for m in msgs]
        data = bytes((7, len(parts))) + b"".join(len(p).to_bytes(2, "big") for p in parts) + b"".join(parts)
        out.append({"name": name, "kind": "packet", "hex": data.hex(), "go_misreads": True,
                    "expect": [go_json(m) for m in msgs]})
    return out


if __name__ == "__main__":
    json.dump({"generator": "scripts/gossip/golden/pyvectors.py", "vectors": vectors()}, sys.stdout, indent=1)
    sys.stdout.write("\n")
