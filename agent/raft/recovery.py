"""What a restarting Raft server reads back: configurations in either format (Raft's msgpack,
or the JSON a one-member log of an older Waypost wrote), the log after the newest snapshot,
and Consul's `raft/peers.json` outage-recovery file."""

from __future__ import annotations

import json
from dataclasses import replace

from agent.errors import WaypostError
from agent.raft.consensus import Configuration
from agent.raft.log import LogStore
from agent.raft.records import CONFIGURATION, Entry

REPLAY_BATCH_BYTES = 8 * 1024 * 1024


class RecoveryError(WaypostError):
    """data_dir's log and snapshots cannot be brought back; the message says why."""


def decode_configuration(data: bytes) -> Configuration:
    """A configuration entry: Raft's msgpack, or the JSON of a one-member log
    (`{"servers": [{"id", "address", "suffrage"}]}`)."""
    if data[:1] == b"{":
        servers = json.loads(data)["servers"]
        return Configuration.of([s["id"] for s in servers if s.get("suffrage") == "voter"],
                                tuple(s["id"] for s in servers if s.get("suffrage") != "voter"))
    return Configuration.decode(data)


def configuration_doc(config: Configuration) -> dict:
    """A configuration as a snapshot's header keeps it."""
    return {"voters": sorted(config.voters), "nonvoters": sorted(config.nonvoters)}


def configuration_from_header(header: dict) -> Configuration:
    doc = header.get("configuration") or {}
    if "servers" in doc:  # a one-member log's snapshot
        return decode_configuration(json.dumps(doc).encode())
    return Configuration.of(list(doc.get("voters", ())), tuple(doc.get("nonvoters", ())))


def entries_after(wal: LogStore, base: int) -> list[Entry]:
    """The log's entries after index `base` (the newest snapshot's), configurations in Raft's
    format; RecoveryError when the log starts past `base + 1` (entries are missing)."""
    if wal.last_index < wal.first_index:
        return []
    if wal.first_index > base + 1:
        raise RecoveryError(
            f"the write-ahead log starts at entry {wal.first_index} but the newest snapshot "
            f"ends at index {base}: entries are missing (a snapshot damaged or removed?)")
    out: list[Entry] = []
    index = base + 1
    while index <= wal.last_index:
        batch = wal.entries(index, wal.last_index, max_bytes=REPLAY_BATCH_BYTES)
        for e in batch:
            if e.kind == CONFIGURATION and e.data[:1] == b"{":
                e = replace(e, data=decode_configuration(e.data).encode())
            out.append(e)
        index += len(batch)
    return out


def read_peers_json(path: str) -> tuple[Configuration, dict[str, str]]:
    """Consul's peers.json, `[{"id", "address", "non_voter"}]`: the configuration it names and
    each server's address; RecoveryError when it cannot be used."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        voters, nonvoters, addresses = [], [], {}
        for server in doc:
            sid, address = str(server["id"]), str(server["address"])
            (nonvoters if server.get("non_voter") else voters).append(sid)
            addresses[sid] = address
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecoveryError(f"{path}: cannot recover from it: {exc}") from None
    if not voters:
        raise RecoveryError(f"{path}: it names no voter")
    return Configuration.of(voters, tuple(nonvoters)), addresses
