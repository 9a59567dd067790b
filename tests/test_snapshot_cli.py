"""`waypost snapshot save|restore|inspect` and the /v1/snapshot handler behind them.

- inspect needs no agent: its table is compared with Consul 1.8.7's (and with `consul
  snapshot inspect` itself when the binary is there);
- the handler is driven with a stand-in for `facade.operator` (the consensus layer's
  interface, agent/operator.py), which checks the archive it makes and the 400 for damage;
- end to end, against a real `-dev` agent process: keys written, `snapshot save`, keys
  deleted, `snapshot restore`, keys back. That needs the agent's consensus
  (`facade.operator`); an agent built without it answers /v1/snapshot with a 500 saying so,
  and the test then skips with that reason.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from twisted.internet.defer import succeed
from twisted.internet.task import Clock

from agent.errors import InvalidRequest, WaypostError
from agent.snapshot_archive import inspect, pack, unpack
from gateway.cli import main as cli
from gateway.cli.commands.snapshot import format_inspect
from gateway.http.api import error_response
from gateway.http.handlers import snapshot as handler
from gateway.http.request import Request
from gateway.http.results import EMPTY
from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import NO_CONSUL, consul_binary

WAYPOST = [sys.executable, "-m", "gateway.cli.main"]
NOW = 1_700_000_000.5
TABLE = ("ID           3-42-1700000000500\nSize         5\nIndex        42\nTerm         3\n"
         "Version      1\n\n")


def _archive(state: bytes = b"state", index: int = 42) -> bytes:
    return pack(state, index=index, term=3,
                configuration=[{"ID": "a", "Address": "127.0.0.1:8300", "Voter": True}],
                now=NOW)


def _run(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run([*WAYPOST, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


# --- inspect ---------------------------------------------------------------------------------

def test_inspect_prints_consuls_table(tmp_path, capsys):
    path = tmp_path / "backup.snap"
    path.write_bytes(_archive())
    assert cli.main(["snapshot", "inspect", str(path)]) == 0
    assert capsys.readouterr().out == TABLE
    assert format_inspect(inspect(_archive())) == TABLE[:-1]  # ctx.out adds the last newline


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_inspect_output_is_byte_for_byte_consuls(tmp_path, capsys):
    path = tmp_path / "backup.snap"
    path.write_bytes(_archive(b"some other state"))
    consul = subprocess.run([consul_binary(), "snapshot", "inspect", str(path)],
                            capture_output=True, text=True, timeout=60)
    assert cli.main(["snapshot", "inspect", str(path)]) == 0
    assert capsys.readouterr().out == consul.stdout


@pytest.mark.parametrize("args, message", [
    ((), "Missing FILE argument"),
    (("a", "b"), "Too many arguments (expected 1, got 2)"),
    (("/nonexistent/backup.snap",),
     "Error opening snapshot file: open /nonexistent/backup.snap: no such file or directory"),
])
def test_inspect_refuses_bad_command_lines(args, message, capsys):
    assert cli.main(["snapshot", "inspect", *args]) == 1
    assert capsys.readouterr().err == message + "\n"


def test_inspect_refuses_a_damaged_file(tmp_path, capsys):
    path = tmp_path / "bad.snap"
    data = _archive()
    path.write_bytes(data[:-20])
    assert cli.main(["snapshot", "inspect", str(path)]) == 1
    assert capsys.readouterr().err.startswith("Error verifying snapshot: failed to decompress")


def test_save_without_an_agent_fails_cleanly_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "backup.snap"
    assert cli.main(["snapshot", "save", "-http-addr", "127.0.0.1:1", str(path)]) == 1
    assert capsys.readouterr().err.startswith("Error saving snapshot: connecting to agent")
    assert list(tmp_path.iterdir()) == []


class _Serves(BaseHTTPRequestHandler):
    """Answers GET /v1/snapshot with the server's `body` and index, as an agent would."""

    def do_GET(self):  # noqa: N802 (http.server's name)
        body = self.server.body
        self.send_response(200)
        self.send_header("Content-Type", "application/x-gzip")
        self.send_header("X-Consul-Index", "42")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def snapshot_server() -> Iterator[ThreadingHTTPServer]:
    """A stand-in agent on 127.0.0.1 for the CLI's side of `save` (download, verify, rename)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Serves)
    server.body = b""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def test_save_writes_a_verified_file(snapshot_server, tmp_path, capsys):
    snapshot_server.body = _archive()
    path = tmp_path / "backup.snap"
    addr = f"127.0.0.1:{snapshot_server.server_address[1]}"
    assert cli.main(["snapshot", "save", "-http-addr", addr, str(path)]) == 0
    assert capsys.readouterr().out == "Saved and verified snapshot to index 42\n"
    assert path.read_bytes() == _archive()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.snap"]
    assert path.stat().st_mode & 0o777 == 0o600


def test_save_keeps_the_old_file_when_the_download_is_damaged(snapshot_server, tmp_path,
                                                             capsys):
    snapshot_server.body = _archive()[:-30]
    path = tmp_path / "backup.snap"
    path.write_bytes(b"the previous backup")
    addr = f"127.0.0.1:{snapshot_server.server_address[1]}"
    assert cli.main(["snapshot", "save", "-http-addr", addr, str(path)]) == 1
    assert capsys.readouterr().err.startswith(
        "Error verifying snapshot file: failed to decompress snapshot")
    assert path.read_bytes() == b"the previous backup"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["backup.snap"]


# --- the handler, with a stand-in operator ---------------------------------------------------

class FakeOperator:
    """`OperatorControl`'s two snapshot calls (and the configuration the archive carries)."""

    def __init__(self) -> None:
        self.state = b"cluster state"
        self.restored: list[bytes] = []
        self.stale: list[bool] = []

    def snapshot_save(self, stale: bool = False):
        self.stale.append(stale)
        return succeed((self.state, {"index": 77, "term": 5}))

    def raft_configuration(self, stale: bool = False):
        return succeed({"Servers": [{"ID": "s1", "Node": "n1", "Address": "127.0.0.1:8300",
                                     "Leader": True, "ProtocolVersion": "3", "Voter": True}],
                        "Index": 9})

    def snapshot_restore(self, state: bytes):
        self.restored.append(state)
        return succeed(None)


def _facade(operator) -> SimpleNamespace:
    clock = Clock()
    clock.advance(NOW)
    return SimpleNamespace(operator=operator, reactor=clock, last_contact_ms=lambda: 0)


def _result(d):
    out = []
    d.addBoth(out.append)
    return out[0]


def test_get_answers_the_archive_with_consuls_headers():
    operator = FakeOperator()
    response = _result(handler.snapshot(_facade(operator),
                                        Request("GET", "/v1/snapshot", raw_query=b"stale"),
                                        None, ""))
    assert response.status == 200 and response.content_type == b"application/x-gzip"
    assert (b"X-Consul-Index", b"77") in response.headers
    assert (b"X-Consul-KnownLeader", b"true") in response.headers
    meta, state = unpack(response.body)
    assert state == b"cluster state" and operator.stale == [True]
    assert (meta["Index"], meta["Term"], meta["ID"]) == (77, 5, "5-77-1700000000500")
    assert meta["Configuration"]["Servers"] == [
        {"Suffrage": 0, "ID": "s1", "Address": "127.0.0.1:8300"}]
    assert meta["ConfigurationIndex"] == 9


def test_put_restores_the_state_inside():
    operator = FakeOperator()
    result = _result(handler.snapshot(_facade(operator),
                                      Request("PUT", "/v1/snapshot", body=_archive(b"old")),
                                      None, ""))
    assert result is EMPTY and operator.restored == [b"old"]


def test_put_of_a_damaged_archive_is_a_400_naming_the_damage():
    operator = FakeOperator()
    failure = _result(handler.snapshot(_facade(operator),
                                       Request("PUT", "/v1/snapshot", body=b"garbage"),
                                       None, ""))
    assert isinstance(failure.value, InvalidRequest) and operator.restored == []
    response = error_response(failure.value)
    assert response.status == 400
    assert response.body == b"failed to decompress snapshot: not a gzip stream"


def test_without_consensus_the_answer_says_so():
    with pytest.raises(WaypostError) as caught:
        handler.snapshot(_facade(None), Request("GET", "/v1/snapshot"), None, "")
    response = error_response(caught.value)
    assert response.status == 500 and response.body.decode() == handler.NO_CONSENSUS


# --- end to end, a real agent ----------------------------------------------------------------

@pytest.fixture(scope="module")
def agent() -> Iterator[AgentProcess]:
    proc = AgentProcess(node="snapwp").start()
    yield proc
    proc.stop()


def _needs_consensus(agent: AgentProcess) -> None:
    status, _, body = agent.request("GET", "/v1/snapshot")
    if status == 500 and body.decode() == handler.NO_CONSENSUS:
        pytest.skip("this agent has no facade.operator yet: " + handler.NO_CONSENSUS)
    assert status == 200, body


def test_large_archives_pass_the_body_cap_other_paths_keep_it(agent):
    """/v1/snapshot takes bodies over the 8 MiB cap (up to MAX_ARCHIVE); /v1/kv does not."""
    big = b"x" * (9 * 1024 * 1024)
    status, _, body = agent.request("PUT", "/v1/snapshot", big)
    assert status in (400, 500) and status != 413, body  # judged, not refused for its size
    assert agent.request("PUT", "/v1/kv/big", big)[0] == 413


def test_save_delete_restore_brings_keys_back(agent, tmp_path):
    _needs_consensus(agent)
    addr = ["-http-addr", f"127.0.0.1:{agent.port}"]
    for key in ("snap/a", "snap/b"):
        assert agent.request("PUT", f"/v1/kv/{key}", b"value of " + key.encode())[0] == 200
    path = tmp_path / "backup.snap"
    saved = _run("snapshot", "save", *addr, str(path))
    assert saved.returncode == 0, saved.stderr
    assert saved.stdout.startswith("Saved and verified snapshot to index ")
    assert not (tmp_path / "backup.snap.unverified").exists()
    index = int(saved.stdout.split()[-1])
    assert inspect(path.read_bytes())["Index"] == index
    if consul_binary() is not None:  # Consul's own tool reads a Waypost snapshot
        consul = subprocess.run([consul_binary(), "snapshot", "inspect", str(path)],
                                capture_output=True, text=True, timeout=60)
        assert consul.returncode == 0, consul.stderr
        assert f"\nIndex        {index}\n" in consul.stdout
    assert agent.request("DELETE", "/v1/kv/snap?recurse")[0] == 200
    assert agent.request("GET", "/v1/kv/snap/a")[0] == 404
    restored = _run("snapshot", "restore", *addr, str(path))
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "Restored snapshot\n"
    for key in ("snap/a", "snap/b"):
        status, _, body = agent.request("GET", f"/v1/kv/{key}?raw")
        assert (status, body) == (200, b"value of " + key.encode())


def test_restore_of_a_damaged_file_is_refused(agent, tmp_path):
    _needs_consensus(agent)
    path = tmp_path / "bad.snap"
    path.write_bytes(b"not a snapshot")
    done = _run("snapshot", "restore", "-http-addr", f"127.0.0.1:{agent.port}", str(path))
    assert done.returncode == 1
    assert done.stderr == ("Error restoring snapshot: Unexpected response code: 400 "
                           "(failed to decompress snapshot: not a gzip stream)\n")
