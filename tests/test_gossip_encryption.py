"""Gossip encryption end to end: the keyring at start and on disk, `waypost keygen`, the
keyring operations (HTTP /v1/operator/keyring and `waypost keyring`), real agents that share a
key (or do not), key rotation across a pool, and interop with a real Consul 1.8.7.

Real processes on 127.0.0.1 throughout; everything waits by polling against a deadline.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.gossip.keyring_ops import (
    KeyringFileError, PersistentKeyring, go_b64decode, keyring_file_of, load_keyring,
    read_keyring_file)
from agent.gossip.security import KeyringError
from tests.polling import eventually
from tests.agentproc import ROOT, AgentProcess
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary

KEYRING = "/v1/operator/keyring"


def new_key(size: int = 32) -> str:
    return base64.b64encode(os.urandom(size)).decode()


def until(predicate, timeout: float = 20.0, what: str = "condition"):
    return eventually(what, predicate, timeout, interval=0.05)


def alive(agent, count: int):
    def check():
        status, _, members = agent.json("GET", "/v1/agent/members")
        names = {m["Name"] for m in members if m["Status"] == 1} if status == 200 else set()
        return names if len(names) == count else None
    return check


def members_of(agent) -> dict[str, int]:
    return {m["Name"]: m["Status"] for m in agent.json("GET", "/v1/agent/members")[2]}


def config_file(tmp: Path, name: str, doc: dict) -> str:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(doc))
    return str(path)


def cli(agent, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args,
                           f"-http-addr=127.0.0.1:{agent.port}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def agents():
    started: list[AgentProcess] = []

    def start(*args: str, node: str) -> AgentProcess:
        agent = AgentProcess(*args, node=node).start()
        started.append(agent)
        return agent
    yield start
    for agent in started:
        agent.stop()


# --- keys, the keyring file ---------------------------------------------------------------

@pytest.mark.parametrize("text, position", [("notbase64!", 9), ("bad", 0), ("YWJ", 0),
                                            ("YW=j", 2), ("YWJj=", 4), ("Y", 0)])
def test_malformed_keys_report_go_positions(text, position):
    """Consul reports a malformed key with Go's base64 error text; the byte offsets match the
    ones Consul 1.8.7 printed for "notbase64!" and "bad"."""
    with pytest.raises(ValueError, match=f"^illegal base64 data at input byte {position}$"):
        go_b64decode(text)


def test_wellformed_keys_decode():
    raw = os.urandom(32)
    assert go_b64decode(base64.b64encode(raw).decode()) == raw
    assert go_b64decode("YWI=") == b"ab" and go_b64decode("") == b""


def _config(tmp: Path, encrypt: str = "", dev: bool = False, **settings):
    return SimpleNamespace(encrypt=encrypt, dev=dev, data_dir=str(tmp), settings=settings)


def test_encrypt_alone_creates_the_keyring_file(tmp_path):
    key = new_key()
    ring = load_keyring(_config(tmp_path, key))
    path = tmp_path / "serf" / "local.keyring"
    assert ring.keys == (base64.b64decode(key),)
    assert json.loads(path.read_text()) == [key]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_the_keyring_file_wins_over_encrypt(tmp_path):
    """Consul's rule: an existing keyring file is used and `encrypt` only warned about."""
    k1, k2 = new_key(), new_key(16)
    (tmp_path / "serf").mkdir()
    (tmp_path / "serf" / "local.keyring").write_text(json.dumps([k2, k1]))
    ring = load_keyring(_config(tmp_path, new_key()))
    assert ring.keys == (base64.b64decode(k2), base64.b64decode(k1))
    assert load_keyring(_config(tmp_path)).primary_key == base64.b64decode(k2)


def test_no_key_anywhere_means_no_encryption(tmp_path):
    assert load_keyring(_config(tmp_path)) is None


def test_dev_and_disable_keyring_file_keep_the_key_in_memory(tmp_path):
    key = new_key()
    for config in (_config(tmp_path, key, dev=True),
                   _config(tmp_path, key, disable_keyring_file=True)):
        assert keyring_file_of(config) is None
        assert load_keyring(config).keys == (base64.b64decode(key),)
    assert not (tmp_path / "serf").exists()
    assert keyring_file_of(_config(tmp_path, dev=True, disable_keyring_file=False))


@pytest.mark.parametrize("content, message", [
    ("[]", "no keys present in keyring"), ("{", "not a JSON list"), ('"x"', "not a JSON list"),
    ('["bad"]', "illegal base64"), ('["YWJj"]', "key size must be")])
def test_a_broken_keyring_file_is_a_clear_error(tmp_path, content, message):
    (tmp_path / "serf").mkdir()
    (tmp_path / "serf" / "local.keyring").write_text(content)
    with pytest.raises(KeyringFileError, match=message):
        load_keyring(_config(tmp_path))


def test_every_change_rewrites_the_file_primary_first(tmp_path):
    k1, k2 = os.urandom(32), os.urandom(16)
    path = str(tmp_path / "serf" / "local.keyring")
    ring = PersistentKeyring(keys=[k1], primary=k1, path=path)
    assert not os.path.exists(path)  # the initial keys came from somewhere already
    ring.add_key(k2)
    assert read_keyring_file(path) == [k1, k2]
    ring.use_key(k2)
    assert read_keyring_file(path) == [k2, k1]
    ring.remove_key(k1)
    assert read_keyring_file(path) == [k2]
    with pytest.raises(KeyringError, match="^Removing the primary key is not allowed$"):
        ring.remove_key(k2)
    with pytest.raises(KeyringError, match="^Requested key is not in the keyring$"):
        ring.use_key(k1)
    assert "key" not in repr(ring).replace("keys=", "")  # no key bytes in the repr


def test_keygen_prints_32_random_bytes():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    outs = [subprocess.run([sys.executable, "-m", "gateway.cli.main", "keygen"], cwd=ROOT,
                           env=env, capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert all(len(base64.b64decode(o.strip(), validate=True)) == 32 for o in outs)
    assert outs[0] != outs[1]


# --- real agents --------------------------------------------------------------------------

def test_agents_with_the_same_key_join(agents):
    key = new_key()
    a = agents("-encrypt", key, node="enc-a")
    b = agents("-encrypt", key, "-join", f"127.0.0.1:{a.serf_lan}", node="enc-b")
    until(alive(a, 2), what="a sees b")
    until(alive(b, 2), what="b sees a")


@pytest.mark.parametrize("b_key", ["other", "none"])
def test_a_wrong_or_missing_key_is_refused(agents, b_key):
    a = agents("-encrypt", new_key(), node="enc-a")
    b = agents(*(["-encrypt", new_key()] if b_key == "other" else []), node="enc-b")
    for joiner, target in ((b, a), (a, b)):
        status, _, body = joiner.request("PUT", f"/v1/agent/join/127.0.0.1:{target.serf_lan}")
        assert status == 500 and b"Failed to join" in body
    assert members_of(a) == {"enc-a": 1}
    assert members_of(b) == {"enc-b": 1}


def test_verify_flags_let_a_pool_move_to_encryption(agents, tmp_path):
    """Consul's rollout: with both verify flags off, an agent holding the key still speaks
    and accepts plain gossip; with only outgoing on, it speaks encrypted but accepts plain,
    so a strict agent and a plain one can each reach it."""
    key = new_key()
    plain = agents(node="plain")
    lenient = agents("-encrypt", key, "-config-file", config_file(
        tmp_path, "lenient", {"encrypt_verify_incoming": False,
                              "encrypt_verify_outgoing": False}), node="lenient")
    status, _, body = lenient.request("PUT", f"/v1/agent/join/127.0.0.1:{plain.serf_lan}")
    assert status == 200, body
    until(alive(plain, 2), what="the plain agent sees the lenient one")
    strict = agents("-encrypt", key, node="strict")
    half = agents("-encrypt", key, "-config-file", config_file(
        tmp_path, "half", {"encrypt_verify_incoming": False}), node="half")
    status, _, body = strict.request("PUT", f"/v1/agent/join/127.0.0.1:{half.serf_lan}")
    assert status == 200, body
    until(alive(half, 2), what="half sees strict")


def test_keyring_without_encryption_or_gossip_errors(agents):
    a = agents(node="plain")
    status, _, body = a.request("GET", KEYRING)
    assert status == 500
    assert body.decode() == ("2 errors occurred:\n\t* dc1 (LAN) error: 1/1 nodes reported "
                             "failure\n\t* plain: Keyring is empty (encryption not enabled)\n\n")
    status, _, body = a.request("POST", KEYRING, json.dumps({"Key": new_key()}))
    assert status == 500 and b"No keyring to modify (encryption not enabled)" in body


@pytest.mark.parametrize("method, path, body, expected", [
    ("POST", KEYRING, "", "Bad request: Request decode failed: EOF"),
    ("POST", KEYRING, "{bad", "Bad request: Request decode failed: invalid character 'b' "
                              "looking for beginning of object key string"),
    ("POST", KEYRING, '{"Key": 5}', "Bad request: Request decode failed: json: cannot "
     "unmarshal number into Go struct field keyringArgs.Key of type string"),
    ("GET", KEYRING + "?relay-factor=9", None,
     "Bad request: Invalid relay-factor: Relay factor must be in range: [0, 5]"),
    ("GET", KEYRING + "?relay-factor=x", None, 'Bad request: Error parsing relay factor: '
     'strconv.Atoi: parsing "x": invalid syntax'),
    ("GET", KEYRING + "?local-only=x", None, 'Bad request: Error parsing local-only: '
     'strconv.ParseBool: parsing "x": invalid syntax'),
    ("PUT", KEYRING + "?local-only=1", '{"Key": ""}', "Bad request: Invalid use of "
     "local-only: local-only can only be set for list requests"),
])
def test_malformed_keyring_requests_are_400(agents, method, path, body, expected):
    a = agents("-encrypt", new_key(), node="enc-a")
    status, _, answer = a.request(method, path, body)
    assert (status, answer.decode()) == (400, expected)


def test_keyring_errors_word_as_consul(agents):
    key = new_key()
    a = agents("-encrypt", key, node="enc-a")
    status, _, body = a.request("DELETE", KEYRING, json.dumps({"Key": key}))
    assert (status, body.decode()) == (500, (
        "2 errors occurred:\n\t* dc1 (LAN) error: 1/1 nodes reported failure\n"
        "\t* enc-a: Removing the primary key is not allowed\n\n"))
    status, _, body = a.request("POST", KEYRING, json.dumps({"Key": "notbase64!"}))
    assert (status, body.decode()) == (500, (
        "1 error occurred:\n\t* dc1 (LAN) error: illegal base64 data at input byte 9\n\n"))
    status, _, body = a.request("PUT", KEYRING, json.dumps({"key": new_key()}))
    assert status == 500 and b"enc-a: Requested key is not in the keyring" in body
    status, headers, body = a.request("PATCH", KEYRING)
    assert status == 405


def test_rotation_across_three_agents_keeps_the_pool(agents):
    k1, k2 = new_key(), new_key()
    a = agents("-encrypt", k1, node="rot-a")
    b = agents("-encrypt", k1, "-join", f"127.0.0.1:{a.serf_lan}", node="rot-b")
    c = agents("-encrypt", k1, "-join", f"127.0.0.1:{a.serf_lan}", node="rot-c")
    for agent in (a, b, c):
        until(alive(agent, 3), what=f"{agent.node} sees 3")

    done = cli(a, "keyring", "-install", k2)
    assert (done.returncode, done.stdout) == (0, "==> Installing new gossip encryption key...\n"), \
        done.stderr
    listed = cli(b, "keyring", "-list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ("==> Gathering installed encryption keys...\n\ndc1 (LAN):\n"
                             + "".join(f"  {k} [3/3]\n" for k in sorted([k1, k2])))
    assert cli(c, "keyring", "-use", k2).returncode == 0
    primary = cli(a, "keyring", "-list-primary")
    assert primary.stdout.endswith(f"dc1 (LAN):\n  {k2} [3/3]\n"), primary.stdout
    removed = cli(a, "keyring", "-remove", k1)
    assert removed.returncode == 0, removed.stderr
    status, _, body = a.json("GET", KEYRING)
    assert body == [{"WAN": False, "Datacenter": "dc1", "Segment": "", "Keys": {k2: 3},
                     "PrimaryKeys": {k2: 3}, "NumNodes": 3}]
    for agent in (a, b, c):
        assert set(members_of(agent).values()) == {1}, members_of(agent)

    # The pool now speaks k2 only: an agent with k1 is refused, one with k2 joins.
    old = agents("-encrypt", k1, node="rot-old")
    status, _, _ = old.request("PUT", f"/v1/agent/join/127.0.0.1:{a.serf_lan}")
    assert status == 500
    new = agents("-encrypt", k2, "-join", f"127.0.0.1:{b.serf_lan}", node="rot-new")
    until(alive(new, 4), what="the k2 agent joins the rotated pool")
    failed = cli(a, "keyring", "-remove", k2)
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: Unexpected response code: 500 (")
    assert "Removing the primary key is not allowed" in failed.stderr


def test_cli_keyring_usage_errors(agents):
    a = agents("-encrypt", new_key(), node="enc-a")
    both = cli(a, "keyring", "-list", "-install", new_key())
    assert (both.returncode, both.stderr) == (1, "Only a single action is allowed\n")
    none = cli(a, "keyring")
    assert none.returncode == 1 and none.stderr.startswith("Usage: waypost keyring")
    local = cli(a, "keyring", "-list-primary", "-local-only")  # as Consul's: -list only
    assert local.stderr == ("Error validating local-only: local-only can only be set for list "
                            "requests\n")
    relay = cli(a, "keyring", "-list", "-relay-factor=9")
    assert relay.stderr == "Error parsing relay factor: Relay factor must be in range: [0, 5]\n"


def test_the_keyring_survives_a_restart(tmp_path):
    """With a keyring file (data_dir, disable_keyring_file = false), an installed and used
    key is what the agent comes back with, whatever `encrypt` says."""
    k1, k2 = new_key(), new_key()
    data = tmp_path / "data"
    conf = config_file(tmp_path, "keep", {"disable_keyring_file": False})
    first = AgentProcess("-encrypt", k1, "-data-dir", str(data), "-config-file", conf,
                         node="keep").start()
    try:
        assert first.request("POST", KEYRING, json.dumps({"Key": k2}))[0] == 200
        assert first.request("PUT", KEYRING, json.dumps({"Key": k2}))[0] == 200
    finally:
        first.stop()
    on_disk = json.loads((data / "serf" / "local.keyring").read_text())
    assert on_disk == [k2, k1]
    again = AgentProcess("-encrypt", new_key(), "-data-dir", str(data), "-config-file", conf,
                         node="keep").start()
    try:
        status, _, body = again.json("GET", KEYRING)
        assert status == 200, body
        assert body[0]["PrimaryKeys"] == {k2: 1} and set(body[0]["Keys"]) == {k1, k2}
    finally:
        again.stop()


# --- interop with a real Consul -----------------------------------------------------------

@pytest.fixture
def consul_with():
    if consul_binary() is None:
        pytest.skip(NO_CONSUL)
    started: list[ConsulProcess] = []

    def start(*args: str, node: str) -> ConsulProcess:
        proc = ConsulProcess(*args, node=node).start()
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.stop()


def consul_members(consul) -> dict[str, int]:
    return {m["Name"]: m["Status"] for m in consul.get("/v1/agent/members")}


def test_consul_and_waypost_with_the_same_key_join_both_ways(agents, consul_with):
    key = new_key()
    consul = consul_with("-encrypt", key, node="consul-enc")
    wp = agents("-encrypt", key, node="wp-enc")
    status, _, body = wp.request("PUT", f"/v1/agent/join/127.0.0.1:{consul.serf_lan}")
    assert status == 200, body
    until(lambda: consul_members(consul).get("wp-enc") == 1, what="consul sees waypost")
    until(alive(wp, 2), what="waypost sees consul")

    wp2 = agents("-encrypt", key, node="wp-enc2")
    consul.put(f"/v1/agent/join/127.0.0.1:{wp2.serf_lan}")  # Consul joins Waypost
    until(lambda: consul_members(consul).get("wp-enc2") == 1, what="consul sees waypost 2")
    until(alive(wp2, 3), what="waypost 2 sees the pool")

    # Keyring queries cross both implementations: Consul installs, Waypost lists.
    k2 = new_key(16)
    req = subprocess.run([consul_binary(), "keyring", "-install", k2,
                          f"-http-addr=127.0.0.1:{consul.http}"], capture_output=True,
                         text=True, timeout=60)
    assert req.returncode == 0, req.stderr
    status, _, listed = wp.json("GET", KEYRING)
    assert listed[0]["Keys"] == {key: 3, k2: 3} and listed[0]["NumNodes"] == 3
    done = cli(wp, "keyring", "-use", k2)
    assert done.returncode == 0, done.stderr
    out = subprocess.run([consul_binary(), "keyring", "-list-primary",
                          f"-http-addr=127.0.0.1:{consul.http}"], capture_output=True,
                         text=True, timeout=60)
    assert f"dc1 (LAN):\n  {k2} [3/3]\n" in out.stdout, out.stdout + out.stderr
    assert set(consul_members(consul).values()) == {1}


def test_consul_and_waypost_with_different_keys_are_refused(agents, consul_with):
    consul = consul_with("-encrypt", new_key(), node="consul-enc")
    wp = agents("-encrypt", new_key(), node="wp-enc")
    status, _, _ = wp.request("PUT", f"/v1/agent/join/127.0.0.1:{consul.serf_lan}")
    assert status == 500
    with pytest.raises(Exception):
        consul.put(f"/v1/agent/join/127.0.0.1:{wp.serf_lan}")
    assert members_of(wp) == {"wp-enc": 1}
    assert set(consul_members(consul)) == {"consul-enc"}
