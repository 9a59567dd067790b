"""Durability of a non-dev agent, end to end with real processes: every write acknowledged to a
client survives SIGKILL at random moments (concurrent writers, snapshots and compaction going
on); a torn tail of the write-ahead log is cut and logged at start; a damaged record in the
middle, or a log of a newer format, stops start-up in one clear line."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
from pathlib import Path

from agent.raft.records import scan_segment
from tests.agentproc import ROOT, AgentProcess, free_ports

WRITERS = 6
ROUNDS = 4


class ServerProcess(AgentProcess):
    """`waypost agent -server` on a data_dir: the write-ahead log, not -dev's memory."""

    def __init__(self, data_dir: Path, *args: str) -> None:
        super().__init__("-server", "-bootstrap", "-data-dir", str(data_dir), "-bind", "127.0.0.1",
                         "-client", "127.0.0.1", *args)
        self.args.remove("-dev")


def config_file(tmp_path: Path) -> Path:
    # A low threshold, so snapshots and compaction happen between (and during) the kills.
    path = tmp_path / "raft.json"
    path.write_text(json.dumps({"raft_snapshot_threshold": 64, "raft_snapshot_interval": "20ms"}))
    return path


def all_keys(agent: AgentProcess, prefix: str) -> dict[str, bytes]:
    status, _, body = agent.request("GET", f"/v1/kv/{prefix}?recurse")
    if status == 404:
        return {}
    assert status == 200, body
    return {row["Key"]: base64.b64decode(row["Value"] or "") for row in json.loads(body)}


class Writer(threading.Thread):
    """PUTs its own keys one after the other on a keep-alive connection, recording each one
    the agent acknowledged, until the connection breaks."""

    def __init__(self, port: int, name: str, acked: dict, lock: threading.Lock,
                 progress: threading.Semaphore) -> None:
        super().__init__(daemon=True)
        self.port, self.prefix = port, name
        self.acked, self.lock, self.progress = acked, lock, progress

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        try:
            while True:
                key, value = f"{self.prefix}/{n}", f"{self.prefix}-{n}".encode()
                conn.request("PUT", f"/v1/kv/{key}", body=value)
                response = conn.getresponse()
                answer = response.read()
                if response.status == 200 and answer.strip() == b"true":
                    with self.lock:
                        self.acked[key] = value
                    self.progress.release()
                n += 1
        except (OSError, http.client.HTTPException):
            return  # the agent was killed
        finally:
            conn.close()


def test_every_acknowledged_write_survives_sigkill_at_random_moments(tmp_path):
    rng = random.Random(20240611)  # the moments vary with the seed, the verdict must not
    data_dir = tmp_path / "data"
    config = config_file(tmp_path)
    acked: dict[str, bytes] = {}
    lock = threading.Lock()
    for round_ in range(ROUNDS):
        agent = ServerProcess(data_dir, "-config-file", str(config)).start()
        try:
            found = all_keys(agent, "crash/")
            missing = {k: v for k, v in acked.items() if found.get(k) != v}
            assert not missing, f"round {round_}: acknowledged writes lost: {sorted(missing)[:5]}"
            progress = threading.Semaphore(0)
            writers = [Writer(agent.port, f"crash/{round_}/{w}", acked, lock, progress)
                       for w in range(WRITERS)]
            for writer in writers:
                writer.start()
            for _ in range(rng.randrange(1, 400)):  # kill after a random number of acks
                assert progress.acquire(timeout=30), "the writers stalled"
            agent.proc.send_signal(signal.SIGKILL)
            agent.proc.wait(10)
            for writer in writers:
                writer.join(30)
        finally:
            agent.stop()
    agent = ServerProcess(data_dir, "-config-file", str(config)).start()
    try:
        found = all_keys(agent, "crash/")
        missing = sorted(k for k, v in acked.items() if found.get(k) != v)
        assert not missing, f"acknowledged writes lost: {missing[:5]}"
        assert len(acked) > ROUNDS
    finally:
        agent.stop()
    assert list((data_dir / "raft" / "snapshots").glob("*.snap"))  # snapshots were taken


# --- damaged logs ---------------------------------------------------------------------------


def write_keys(data_dir: Path, count: int) -> None:
    """`count` acknowledged PUTs, one after the other (each its own group commit), then a
    clean stop."""
    agent = ServerProcess(data_dir).start()
    try:
        for i in range(count):
            assert agent.request("PUT", f"/v1/kv/k{i}", f"v{i}")[2] == b"true"
    finally:
        assert agent.stop() == 0


def segment(data_dir: Path) -> tuple[Path, bytes, list[int]]:
    [path] = sorted((data_dir / "raft" / "wal").glob("*.wal"))
    data = path.read_bytes()
    scan = scan_segment(str(path), data, int(path.name[:20]), last=True, min_term=1)
    return path, data, list(scan.offsets)


def refused_start(data_dir: Path) -> subprocess.CompletedProcess:
    http_port, dns = free_ports(2)
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "agent", "-server", "-bootstrap", "-node", "n1",
         "-data-dir", str(data_dir), "-bind", "127.0.0.1", "-client", "127.0.0.1",
         "-http-port", str(http_port), "-dns-port", str(dns), "-log-level", "warn"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True,
        timeout=30)


def test_a_torn_tail_is_cut_and_logged_and_earlier_writes_are_intact(tmp_path):
    write_keys(tmp_path, 10)
    path, data, offsets = segment(tmp_path)
    cut = offsets[-1] + 11  # mid-way through the last record
    with open(path, "r+b") as f:
        f.truncate(cut)
    agent = ServerProcess(tmp_path, "-log-level", "warn").start()
    try:
        keys = all_keys(agent, "k")
        assert all(keys[f"k{i}"] == f"v{i}".encode() for i in range(9))
        log = agent.log_so_far()
        assert str(path) in log and f"offset {offsets[-1]}" in log and "dropping 11 bytes" in log
        # The log goes on from the cut: a new write lands where the torn one was.
        assert agent.request("PUT", "/v1/kv/after", "x")[2] == b"true"
    finally:
        agent.stop()


def test_a_damaged_record_in_the_middle_stops_start_up_in_one_line(tmp_path):
    write_keys(tmp_path, 10)
    path, data, offsets = segment(tmp_path)
    middle = offsets[len(offsets) // 2]
    damaged = bytearray(data)
    damaged[middle + 30] ^= 0x40  # inside the record's body: its checksum no longer matches
    path.write_bytes(bytes(damaged))
    out = refused_start(tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert str(path) in lines[0] and f"damaged at offset {middle}" in lines[0]
    assert "Traceback" not in out.stderr


def test_a_log_written_by_a_newer_format_is_refused(tmp_path):
    write_keys(tmp_path, 1)
    path, data, _ = segment(tmp_path)
    newer = bytearray(data)
    struct.pack_into("<H", newer, 8, 99)  # the segment header's format version
    path.write_bytes(bytes(newer))
    out = refused_start(tmp_path)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "newer Waypost (format 99)" in lines[0], out.stderr
