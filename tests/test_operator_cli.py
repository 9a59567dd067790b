"""`waypost operator raft|autopilot ...` beside `consul operator ...` 1.8.7.

The commands run in this process (gateway.cli.main.main, output captured) against the
in-process agent of tests/test_operator_http.py, whose `facade.operator` is a stand-in with
canned answers. Against a real Consul -dev agent, the stand-in is fed Consul's own state (or
fails as Consul's servers do) and the two commands must print the same, byte for byte.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from agent.errors import NoLeader, NotFound
from gateway.cli.main import main
from tests.consulproc import ConsulProcess, consul_binary, running_consul
from tests.test_operator_http import SERVERS, InProcessAgent, StandInOperator
from tests.test_operator_http import served  # noqa: F401 - the module's in-process agent


@pytest.fixture
def wp(served: InProcessAgent, monkeypatch: pytest.MonkeyPatch) -> InProcessAgent:
    """The in-process agent with a fresh stand-in; CONSUL_HTTP_ADDR points at it."""
    for name in ("CONSUL_HTTP_ADDR", "WAYPOST_HTTP_ADDR", "CONSUL_HTTP_TOKEN",
                 "CONSUL_HTTP_TOKEN_FILE", "CONSUL_HTTP_SSL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", served.address)
    served.set_operator(StandInOperator())
    return served


@pytest.fixture(scope="module")
def consul() -> Iterator[ConsulProcess]:
    yield from running_consul("op-cli-consul")


def waypost(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def on_consul(consul: ConsulProcess, *argv: str) -> tuple[int, str, str]:
    env = dict(os.environ, CONSUL_HTTP_ADDR=f"127.0.0.1:{consul.http}")
    done = subprocess.run([consul_binary(), *argv], capture_output=True, text=True, env=env,
                          timeout=30)
    return done.returncode, done.stdout, done.stderr


# --- list-peers ---

def test_list_peers_prints_consuls_table(wp, capsys):
    code, out, err = waypost(capsys, "operator", "raft", "list-peers")
    assert (code, err) == (0, "")
    assert out == (
        "Node        ID                                    Address        State     Voter  "
        "RaftProtocol\n"
        f"s1          {SERVERS[0]['ID']}  10.0.0.1:8300  leader    true   3\n"
        f"server-two  {SERVERS[1]['ID']}  10.0.0.2:8300  follower  true   3\n"
        f"s3          {SERVERS[2]['ID']}  10.0.0.3:8300  follower  false  <=1\n")
    assert wp.operator.calls == [("raft_configuration", False)]


def test_list_peers_stale_and_http_addr_flag(wp, capsys, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")  # the flag wins over the env
    code, _, _ = waypost(capsys, "operator", "raft", "list-peers", "-stale",
                         "-http-addr", wp.address)
    assert code == 0 and wp.operator.calls == [("raft_configuration", True)]


def test_list_peers_without_a_leader(wp, capsys):
    wp.operator.errors["raft_configuration"] = NoLeader()
    assert waypost(capsys, "operator", "raft", "list-peers") == (
        1, "", "Error getting peers: Failed to retrieve raft configuration: Unexpected "
               "response code: 500 (No cluster leader)\n")


# --- remove-peer ---

@pytest.mark.parametrize("args, text", [
    ((), "an address or id is required for the peer to remove"),
    (("-id=",), "an address or id is required for the peer to remove"),
    (("-id=a", "-address=b"), "cannot give both an address and id"),
])
def test_remove_peer_argument_errors(wp, capsys, args, text):
    assert waypost(capsys, "operator", "raft", "remove-peer", *args) == (
        1, "", f"Error removing peer: {text}\n")
    assert wp.operator.calls == []


def test_remove_peer_by_id_and_address(wp, capsys):
    assert waypost(capsys, "operator", "raft", "remove-peer", "-id", SERVERS[2]["ID"]) == (
        0, f'Removed peer with id "{SERVERS[2]["ID"]}"\n', "")
    assert waypost(capsys, "operator", "raft", "remove-peer", "-address=10.0.0.3:8300") == (
        0, 'Removed peer with address "10.0.0.3:8300"\n', "")
    assert wp.operator.calls == [("remove_peer", SERVERS[2]["ID"], ""),
                                 ("remove_peer", "", "10.0.0.3:8300")]


def test_remove_peer_unknown(wp, capsys):
    wp.operator.errors["remove_peer"] = NotFound("gone")
    assert waypost(capsys, "operator", "raft", "remove-peer", "-id=nope") == (
        1, "", 'Error removing peer: Unexpected response code: 500 (id "nope" was not found '
               'in the Raft configuration)\n')


# --- transfer-leader ---

def test_transfer_leader(wp, capsys):
    assert waypost(capsys, "operator", "raft", "transfer-leader") == (0, "Success\n", "")
    assert waypost(capsys, "operator", "raft", "transfer-leader", "-id", "x") == (
        0, "Success\n", "")
    assert wp.operator.calls == [("transfer_leader", ""), ("transfer_leader", "x")]
    wp.operator.transfer = {"Success": False}
    assert waypost(capsys, "operator", "raft", "transfer-leader") == (
        1, "", "Error transfering leadership: Failed to transfer leadership\n")
    wp.operator.errors["transfer_leader"] = NoLeader()
    assert waypost(capsys, "operator", "raft", "transfer-leader") == (
        1, "", "Error transfering leadership: Failed to transfer leadership Unexpected "
               "response code: 500 (No cluster leader)\n")


# --- autopilot get-config ---

def test_autopilot_get_config(wp, capsys):
    wp.operator.autopilot["RedundancyZoneTag"] = "zone"
    assert waypost(capsys, "operator", "autopilot", "get-config") == (0, (
        "CleanupDeadServers = true\nLastContactThreshold = 200ms\nMaxTrailingLogs = 250\n"
        "MinQuorum = 0\nServerStabilizationTime = 10s\nRedundancyZoneTag = \"zone\"\n"
        "DisableUpgradeMigration = false\nUpgradeVersionTag = \"\"\n"), "")


def test_no_operator_here(wp, capsys):
    wp.set_operator(None)
    assert waypost(capsys, "operator", "autopilot", "get-config") == (
        1, "", "Error querying Autopilot configuration: Unexpected response code: 500 "
               "(No known Consul servers)\n")


# --- the command tree ---

def test_groups_print_their_help(wp, capsys):
    code, out, err = waypost(capsys, "operator", "raft")
    assert (code, out) == (1, "") and "Subcommands:\n    list-peers " in err
    assert "transfer-leader" in err
    code, out, _ = waypost(capsys, "operator", "raft", "-h")
    assert code == 0 and out.startswith("Usage: waypost operator raft <subcommand>")
    code, out, _ = waypost(capsys, "operator", "-h")
    assert code == 0 and "    autopilot    " in out and "    raft         " in out
    code, out, _ = waypost(capsys, "help", "operator", "autopilot")
    assert code == 0 and "get-config" in out
    code, _, err = waypost(capsys, "operator", "raft", "nope")
    assert code == 1 and err.startswith('Error: unknown operator raft subcommand "nope"')
    code, out, _ = waypost(capsys, "operator", "raft", "list-peers", "-h")
    assert code == 0 and "-stale" in out and "-datacenter" in out


# --- beside a real Consul 1.8.7 ---

def test_same_output_as_consul_fed_consuls_own_state(wp, consul, capsys):
    wp.operator.configuration = consul.get("/v1/operator/raft/configuration")
    wp.operator.autopilot = consul.get("/v1/operator/autopilot/configuration")
    for argv in (("operator", "raft", "list-peers"),
                 ("operator", "raft", "list-peers", "-stale"),
                 ("operator", "raft", "list-peers", "extra-argument"),
                 ("operator", "raft", "list-peers", "-datacenter=nope"),
                 ("operator", "autopilot", "get-config"),
                 ("operator", "autopilot", "get-config", "-datacenter=nope")):
        assert waypost(capsys, *argv) == on_consul(consul, *argv), argv


@pytest.mark.parametrize("args", [
    (),
    ("-id=a", "-address=b"),
    ("-id=nope",),
    ("-address=1.2.3.4:8300",),
    ("-id=x", "-datacenter=nope"),
])
def test_remove_peer_errors_match_consul(wp, consul, capsys, args):
    wp.operator.errors["remove_peer"] = NotFound("not here")
    argv = ("operator", "raft", "remove-peer", *args)
    assert waypost(capsys, *argv) == on_consul(consul, *argv)
