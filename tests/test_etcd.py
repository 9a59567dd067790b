"""The etcd v2 keys API on the HTTP port: the real `etcdctl` (API 2), etcd's JSON shapes and
error codes over HTTP, keys shared with the Consul KV API, and TTL keys through sessions
(`etcdctl set --ttl`, `waypost kv put -ttl [-keepalive]`)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from urllib.parse import urlencode

import pytest
from twisted.internet import task
from twisted.internet.defer import Deferred

from agent.facade import QueryMeta, ReadResult, Session, queries
from agent.structs import KVEntry
from gateway.etcd.keys import Keys
from gateway.etcd.reads import Expiries
from gateway.http.request import Request
from tests.agentproc import ROOT

pytestmark = pytest.mark.skipif(shutil.which("etcdctl") is None, reason="etcdctl not installed")

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def etcdctl(agent, *args: str, timeout: float = 10.0) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCTL_API="2")
    return subprocess.run(["etcdctl", "--endpoints", agent.base, *args], env=env, check=False,
                          capture_output=True, text=True, timeout=timeout)


def waypost(agent, *args: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(ROOT), CONSUL_HTTP_ADDR=agent.base)
    return subprocess.Popen([sys.executable, "-m", "gateway.cli.main", *args], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def etcd(agent, method: str, key: str, query: dict | None = None, form: dict | None = None):
    """(status, headers, JSON) of one /v2/keys request."""
    path = "/v2/keys" + key + ("?" + urlencode(query) if query else "")
    body = urlencode(form) if form is not None else None
    status, headers, data = agent.request(method, path, body, FORM if form else None)
    return status, headers, json.loads(data)


def put(agent, key: str, value: str, **form):
    return etcd(agent, "PUT", key, form={"value": value, **form})


def etcd_index(agent) -> int:
    return int(agent.request("GET", "/v2/keys/")[1]["X-Etcd-Index"])


def consul_kv(agent, key: str) -> dict | None:
    status, _, body = agent.json("GET", "/v1/kv/" + key)
    return body[0] if status == 200 else None


def sessions(agent) -> list[dict]:
    return agent.json("GET", "/v1/session/list")[2]


# -- etcdctl ---------------------------------------------------------------------------------

def test_etcdctl_set_get_and_visible_in_consul_kv(agent):
    done = etcdctl(agent, "set", "/services/redis/redis@1", "10.0.0.7:6379")
    assert (done.returncode, done.stdout) == (0, "10.0.0.7:6379\n"), done.stderr
    assert etcdctl(agent, "get", "/services/redis/redis@1").stdout == "10.0.0.7:6379\n"
    entry = consul_kv(agent, "services/redis/redis@1")
    assert entry["Value"] == "MTAuMC4wLjc6NjM3OQ=="  # base64 of the value
    assert etcdctl(agent, "get", "/services/redis/none").returncode == 4


def test_etcdctl_ls_recursive_and_mkdir(agent):
    for key in ("/ls/a", "/ls/b/c", "/ls/b/d/e", "/ls/_hidden"):
        assert etcdctl(agent, "set", key, "x").returncode == 0
    assert etcdctl(agent, "mkdir", "/ls/empty").returncode == 0
    assert consul_kv(agent, "ls/empty/")["Value"] is None  # a Consul folder
    listing = etcdctl(agent, "ls", "--recursive", "/ls").stdout.split()
    assert listing == ["/ls/a", "/ls/b", "/ls/b/c", "/ls/b/d", "/ls/b/d/e", "/ls/empty"]
    assert etcdctl(agent, "ls", "/ls").stdout.split() == ["/ls/a", "/ls/b", "/ls/empty"]
    again = etcdctl(agent, "mkdir", "/ls/empty")
    assert again.returncode == 4 and "105: Key already exists (/ls/empty)" in again.stderr


def test_etcdctl_update_mk_rm_rmdir(agent):
    etcdctl(agent, "set", "/upd/k", "one")
    assert etcdctl(agent, "update", "/upd/k", "two").stdout == "two\n"
    missing = etcdctl(agent, "update", "/upd/nope", "x")
    assert missing.returncode == 4 and "100: Key not found (/upd/nope)" in missing.stderr
    exists = etcdctl(agent, "mk", "/upd/k", "three")
    assert "105: Key already exists" in exists.stderr
    assert etcdctl(agent, "mk", "/upd/new", "3").returncode == 0
    swap = etcdctl(agent, "set", "--swap-with-value", "wrong", "/upd/k", "x")
    assert "101: Compare failed ([wrong != two])" in swap.stderr
    assert etcdctl(agent, "rm", "/upd/k").stdout == "PrevNode.Value: two\n"
    assert consul_kv(agent, "upd/k") is None
    not_file = etcdctl(agent, "rm", "/upd")
    assert "102: Not a file (/upd)" in not_file.stderr
    etcdctl(agent, "mkdir", "/upd/dir")
    assert etcdctl(agent, "rmdir", "/upd/dir").returncode == 0
    assert etcdctl(agent, "rm", "--recursive", "/upd").returncode == 0
    assert agent.json("GET", "/v1/kv/upd?recurse")[0] == 404


def test_etcdctl_watch_wakes_on_set(agent):
    index = etcd_index(agent)
    env = dict(os.environ, ETCDCTL_API="2")
    watch = subprocess.Popen(["etcdctl", "--endpoints", agent.base, "watch", "--after-index",
                              str(index), "/watched"], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert watch.poll() is None  # parked
    assert etcdctl(agent, "set", "/watched", "hello").returncode == 0
    out, err = watch.communicate(timeout=10)
    assert (watch.returncode, out) == (0, "hello\n"), err


def test_etcdctl_recursive_watch_sees_a_consul_write(agent):
    index = etcd_index(agent)
    env = dict(os.environ, ETCDCTL_API="2")
    watch = subprocess.Popen(["etcdctl", "--endpoints", agent.base, "-o", "json", "watch",
                              "--recursive", "--after-index", str(index), "/tree"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(0.3)
    assert agent.request("PUT", "/v1/kv/tree/deep/key", b"from-consul")[0] == 200
    out, err = watch.communicate(timeout=10)
    event = json.loads(out.splitlines()[-1])  # after a "[set] /tree/deep/key" line
    assert event["action"] == "set" and event["node"]["key"] == "/tree/deep/key", err
    assert event["node"]["value"] == "from-consul"


def test_etcdctl_set_ttl_shows_in_extended_output(agent):
    assert etcdctl(agent, "set", "--ttl", "60", "/ttl/k", "v").returncode == 0
    out = etcdctl(agent, "-o", "extended", "get", "/ttl/k").stdout
    ttl = int(next(line for line in out.splitlines() if line.startswith("TTL:")).split()[1])
    assert 55 <= ttl <= 60
    entry = consul_kv(agent, "ttl/k")
    session = agent.json("GET", "/v1/session/info/" + entry["Session"])[2][0]
    assert (session["Name"], session["TTL"], session["Behavior"]) == ("etcd-ttl /ttl/k",
                                                                      "30s", "delete")
    short = etcdctl(agent, "set", "--ttl", "5", "/ttl/short", "v")
    assert short.returncode == 4 and "209: Invalid field (ttl 5 is out of range" in short.stderr


def test_etcdctl_cluster_health_and_members(agent):
    health = etcdctl(agent, "cluster-health")
    assert health.returncode == 0 and "cluster is healthy" in health.stdout
    members = etcdctl(agent, "member", "list")
    assert f"clientURLs={agent.base}" in members.stdout and "isLeader=true" in members.stdout


# -- HTTP shapes and errors ------------------------------------------------------------------

def test_set_get_shapes_and_headers(agent):
    status, headers, body = put(agent, "/shape", "v1")
    assert status == 201 and body["action"] == "set"
    node = body["node"]
    assert list(node) == ["key", "value", "modifiedIndex", "createdIndex"]
    assert node["key"] == "/shape" and node["modifiedIndex"] == node["createdIndex"]
    assert int(headers["X-Etcd-Index"]) == node["modifiedIndex"]
    assert len(headers["X-Etcd-Cluster-Id"]) == 16 and headers["X-Raft-Term"] == "1"
    assert int(headers["X-Raft-Index"]) >= node["modifiedIndex"]
    status, _, again = put(agent, "/shape", "v2")
    assert status == 200 and again["prevNode"] == node
    assert again["node"]["createdIndex"] == node["createdIndex"]
    status, _, got = etcd(agent, "GET", "/shape")
    assert status == 200 and got == {"action": "get", "node": again["node"]}


def test_version_members_machines(agent):
    assert agent.json("GET", "/version")[2] == {"etcdserver": "2.3.8", "etcdcluster": "2.3.0"}
    members = agent.json("GET", "/v2/members")[2]["members"]
    assert [m["clientURLs"] for m in members] == [[agent.base]]
    assert set(members[0]) == {"id", "name", "peerURLs", "clientURLs"}
    assert agent.request("GET", "/v2/machines")[2].decode() == agent.base


def test_conditional_writes_and_deletes(agent):
    _, _, first = put(agent, "/cas", "one")
    index = first["node"]["modifiedIndex"]
    status, _, body = put(agent, "/cas", "two", prevValue="one")
    assert (status, body["action"], body["prevNode"]["value"]) == (200, "compareAndSwap", "one")
    status, _, body = put(agent, "/cas", "three", prevIndex=str(index))
    assert status == 412 and body["errorCode"] == 101
    assert body["cause"] == f"[{index} != {index + 1}]" and body["message"] == "Compare failed"
    status, _, body = put(agent, "/cas", "x", prevValue="nope", prevIndex="1")
    assert body["cause"] == f"[nope != two] [1 != {index + 1}]"
    status, _, body = put(agent, "/cas", "x", prevExist="false")
    assert (status, body["errorCode"], body["cause"]) == (412, 105, "/cas")
    status, _, body = put(agent, "/cas-new", "x", prevExist="true")
    assert (status, body["errorCode"]) == (404, 100)
    status, _, body = put(agent, "/cas-new", "x", prevExist="false")
    assert (status, body["action"]) == (201, "create")
    status, _, body = put(agent, "/cas-new", "y", prevExist="true")
    assert (status, body["action"]) == (200, "update")
    status, _, body = etcd(agent, "DELETE", "/cas", {"prevValue": "nope"})
    assert (status, body["errorCode"], body["cause"]) == (412, 101, "[nope != two]")
    status, _, body = etcd(agent, "DELETE", "/cas", {"prevValue": "two"})
    assert status == 200 and body["action"] == "compareAndDelete"
    assert body["node"] == {"key": "/cas", "modifiedIndex": body["node"]["modifiedIndex"],
                            "createdIndex": first["node"]["createdIndex"]}
    assert body["prevNode"]["value"] == "two"


@pytest.mark.parametrize("method, key, query, form, status, code", [
    ("GET", "/err/none", None, None, 404, 100),
    ("PUT", "/", None, {"value": "x"}, 400, 107),
    ("DELETE", "/", None, None, 400, 107),
    ("PUT", "/err/file/child", None, {"value": "x"}, 400, 104),
    ("PUT", "/err", None, {"value": "x"}, 403, 102),
    ("DELETE", "/err", {"dir": "true"}, None, 403, 108),
    ("PUT", "/err/file", None, {"value": "x", "prevValue": ""}, 400, 201),
    ("PUT", "/err/file", None, {"value": "x", "ttl": "soon"}, 400, 202),
    ("PUT", "/err/file", None, {"value": "x", "prevIndex": "-1"}, 400, 203),
    ("GET", "/err/file", {"wait": "true", "waitIndex": "x"}, None, 400, 203),
    ("GET", "/err", {"recursive": "maybe"}, None, 400, 209),
    ("PUT", "/err/file", None, {"value": "x", "ttl": "5"}, 400, 209),
    ("PUT", "/err/file", None, {"value": "x", "ttl": "172801"}, 400, 209),
    ("PUT", "/err/file", None, {"value": "x", "ttl": "30", "refresh": "true"}, 400, 211),
    ("PUT", "/err/file", None, {"refresh": "true", "prevExist": "true"}, 400, 212),
])
def test_errors(agent, method, key, query, form, status, code):
    put(agent, "/err/file", "keep")
    got_status, headers, body = etcd(agent, method, key, query, form)
    assert (got_status, body["errorCode"]) == (status, code), body
    assert set(body) <= {"errorCode", "message", "cause", "index"} and body["message"]
    assert body["index"] == int(headers["X-Etcd-Index"])
    assert etcd(agent, "GET", "/err/file")[2]["node"]["value"] == "keep"  # nothing half-done


def test_directories_hidden_keys_and_in_order_keys(agent):
    status, _, body = etcd(agent, "PUT", "/dirs/made", form={"dir": "true"})
    assert status == 201 and body["node"]["dir"] is True and "value" not in body["node"]
    put(agent, "/dirs/file", "f")
    put(agent, "/dirs/_secret", "s")
    first = etcd(agent, "POST", "/dirs/queue", form={"value": "job1"})[2]["node"]
    second = etcd(agent, "POST", "/dirs/queue", form={"value": "job2"})[2]["node"]
    assert first["key"] < second["key"] and len(first["key"].rsplit("/", 1)[1]) == 20
    _, _, listing = etcd(agent, "GET", "/dirs")
    assert [(n["key"], n.get("dir", False)) for n in listing["node"]["nodes"]] == [
        ("/dirs/file", False), ("/dirs/made", True), ("/dirs/queue", True)]
    assert "nodes" not in listing["node"]["nodes"][2]  # not recursive
    _, _, deep = etcd(agent, "GET", "/dirs/queue", {"recursive": "true", "sorted": "true"})
    assert [n["value"] for n in deep["node"]["nodes"]] == ["job1", "job2"]
    root = etcd(agent, "GET", "/")[2]["node"]
    assert "key" not in root and root["dir"] is True
    status, _, body = etcd(agent, "DELETE", "/dirs/made", {"dir": "true"})
    assert status == 200 and body["node"]["dir"] is True and body["prevNode"]["dir"] is True
    status, _, body = etcd(agent, "DELETE", "/dirs", {"recursive": "true"})
    assert status == 200 and agent.json("GET", "/v1/kv/dirs?recurse")[0] == 404


def test_wait_returns_a_past_event_at_once_and_blocks_for_a_new_one(agent):
    _, _, body = put(agent, "/w/k", "a")
    index = body["node"]["modifiedIndex"]
    _, headers, event = etcd(agent, "GET", "/w/k", {"wait": "true", "waitIndex": str(index)})
    assert event["node"]["value"] == "a" and int(headers["X-Etcd-Index"]) >= index
    result: dict = {}

    def wait() -> None:
        result["answer"] = etcd(agent, "GET", "/w", {"wait": "true", "recursive": "true",
                                                     "waitIndex": str(etcd_index(agent) + 1)})
    thread = threading.Thread(target=wait)
    thread.start()
    time.sleep(0.3)
    assert "answer" not in result
    etcd(agent, "DELETE", "/w/k")
    thread.join(10)
    status, _, event = result["answer"]
    assert status == 200 and event["action"] == "delete" and event["node"]["key"] == "/w/k"


def test_a_past_delete_is_reported_to_a_watch_that_asks_for_it(agent):
    """Between two polls of a watcher (waitIndex = the last index it saw + 1) a key was
    deleted: the next watch answers with that deletion at once, from the tombstone."""
    _, _, body = put(agent, "/past/k", "a")
    seen = body["node"]["modifiedIndex"]
    _, headers, gone = etcd(agent, "DELETE", "/past/k")
    deleted_at = gone["node"]["modifiedIndex"]
    assert int(headers["X-Etcd-Index"]) == deleted_at > seen
    put(agent, "/past/other", "later")  # a later change under the same directory
    status, _, event = etcd(agent, "GET", "/past", {"wait": "true", "recursive": "true",
                                                    "waitIndex": str(seen + 1)})
    assert status == 200 and event["action"] == "delete"
    assert event["node"] == {"key": "/past/k", "modifiedIndex": deleted_at}


def test_writes_answer_the_index_they_were_applied_at(agent):
    status, headers, body = etcd(agent, "POST", "/queue", form={"value": "job"})
    node = body["node"]
    assert status == 201 and node["createdIndex"] == node["modifiedIndex"]
    assert int(headers["X-Etcd-Index"]) == node["modifiedIndex"]
    assert node["key"] == "/queue/%020d" % node["createdIndex"]  # named after its index
    assert consul_kv(agent, node["key"][1:])["ModifyIndex"] == node["modifiedIndex"]
    _, headers, body = etcd(agent, "PUT", "/queue/dir", form={"dir": "true"})
    assert int(headers["X-Etcd-Index"]) == body["node"]["modifiedIndex"]
    status, _, got = etcd(agent, "GET", "/queue", {"quorum": "true", "recursive": "true"})
    assert status == 200 and [n["key"] for n in got["node"]["nodes"]] == [node["key"],
                                                                          "/queue/dir"]


def test_keys_are_shared_with_the_consul_api(agent):
    agent.request("PUT", "/v1/kv/both/consul", b"c-value")
    agent.request("PUT", "/v1/kv/both/folder/", b"")
    assert etcd(agent, "GET", "/both/consul")[2]["node"]["value"] == "c-value"
    assert etcd(agent, "GET", "/both/folder")[2]["node"]["dir"] is True
    put(agent, "/both/etcd", "e-value")
    assert agent.request("GET", "/v1/kv/both/etcd?raw")[2] == b"e-value"
    keys = agent.json("GET", "/v1/kv/both/?keys")[2]
    assert keys == ["both/consul", "both/etcd", "both/folder/"]


# -- TTL keys --------------------------------------------------------------------------------

def test_ttl_key_is_held_by_its_own_session(agent):
    status, _, body = put(agent, "/t/k", "v", ttl="40")
    assert status == 201 and body["node"]["ttl"] == 40 and body["node"]["expiration"]
    entry = consul_kv(agent, "t/k")
    assert entry["Session"] and entry["LockIndex"] == 1
    # Refreshing with the same TTL renews the session only: no new index, watchers sleep.
    status, _, body = etcd(agent, "PUT", "/t/k", form={"ttl": "40", "refresh": "true",
                                                        "prevExist": "true"})
    assert status == 200 and body["action"] == "update"
    assert consul_kv(agent, "t/k")["ModifyIndex"] == entry["ModifyIndex"]
    # A new TTL: a new session in the same entry as the write, the old one destroyed with it.
    status, _, body = put(agent, "/t/k", "v2", ttl="60")
    assert status == 200 and body["node"]["ttl"] == 60
    changed = consul_kv(agent, "t/k")
    held = [s for s in sessions(agent) if s["Name"].startswith("etcd-ttl /t/k")]
    assert [s["ID"] for s in held] == [changed["Session"]] != [entry["Session"]]
    assert held[0]["CreateIndex"] == changed["ModifyIndex"]  # one index: one command
    # A write without a TTL makes the key permanent: its session is released and destroyed.
    put(agent, "/t/k", "forever")
    assert "Session" not in consul_kv(agent, "t/k")
    assert entry["Session"] not in {s["ID"] for s in sessions(agent)}
    # Deleting a TTL key destroys its session.
    put(agent, "/t/gone", "v", ttl="40")
    held = consul_kv(agent, "t/gone")["Session"]
    etcd(agent, "DELETE", "/t/gone")
    assert held not in {s["ID"] for s in sessions(agent)}


def test_ttl_on_a_key_locked_by_a_consul_session_is_refused_cleanly(agent):
    session = agent.json("PUT", "/v1/session/create", {"Name": "holder"})[2]["ID"]
    assert agent.request("PUT", f"/v1/kv/t/locked?acquire={session}", b"mine")[2].strip() == b"true"
    before = {s["ID"] for s in sessions(agent)}
    status, _, body = put(agent, "/t/locked", "theirs", ttl="40")
    assert (status, body["errorCode"]) == (412, 101) and session in body["cause"]
    assert {s["ID"] for s in sessions(agent)} == before  # the new session was destroyed
    assert agent.request("GET", "/v1/kv/t/locked?raw")[2] == b"mine"


def test_kv_put_ttl_errors(agent):
    proc = waypost(agent, "kv", "put", "-ttl", "5s", "kt/a", "b")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1 and "-ttl 5s is out of range" in err
    proc = waypost(agent, "kv", "put", "-keepalive", "kt/a", "b")
    assert proc.communicate(timeout=10)[1].strip() == "Error! -keepalive needs -ttl"
    session = agent.json("PUT", "/v1/session/create", {"Name": "holder"})[2]["ID"]
    agent.request("PUT", f"/v1/kv/kt/locked?acquire={session}", b"mine")
    count = len(sessions(agent))
    proc = waypost(agent, "kv", "put", "-ttl", "10s", "kt/locked", "x")
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 1 and f"it is locked by session {session}" in err
    assert len(sessions(agent)) == count


def test_kv_put_keepalive_fails_when_its_session_is_destroyed(agent):
    proc = waypost(agent, "kv", "put", "-ttl", "10s", "-keepalive", "kt/destroyed", "v")
    line = proc.stdout.readline()
    assert line == "Success! Data written to: kt/destroyed\n"
    session = proc.stdout.readline().split()[1]
    agent.request("PUT", "/v1/session/destroy/" + session)
    _, err = proc.communicate(timeout=10)  # the next renewal, TTL/2 later, finds it gone
    assert proc.returncode == 1 and "has expired or was destroyed" in err
    assert consul_kv(agent, "kt/destroyed") is None


def test_ttl_keys_expire_unless_kept_alive(agent):
    """etcd ttl=20 and `kv put -ttl 10s` both go 20 s after their write; a -keepalive key
    outlives them and is deleted when its command is interrupted."""
    put(agent, "/exp/etcd", "v", ttl="20")
    plain = waypost(agent, "kv", "put", "-ttl", "10s", "exp/consul", "v")
    out, _ = plain.communicate(timeout=10)
    session = out.splitlines()[1].removeprefix("Session: ")
    kept = waypost(agent, "kv", "put", "-ttl", "10s", "-keepalive", "exp/kept", "v")
    assert kept.stdout.readline().startswith("Success!")
    written = time.monotonic()
    time.sleep(15)
    assert consul_kv(agent, "exp/consul") and etcd(agent, "GET", "/exp/etcd")[0] == 200
    deadline = written + 20 + 5
    while time.monotonic() < deadline and (consul_kv(agent, "exp/consul")
                                           or etcd(agent, "GET", "/exp/etcd")[0] == 200):
        time.sleep(0.2)
    gone_after = time.monotonic() - written
    assert 19 <= gone_after <= 22, gone_after
    assert etcd(agent, "GET", "/exp/etcd")[2]["errorCode"] == 100
    assert session not in {s["ID"] for s in sessions(agent)}
    assert consul_kv(agent, "exp/kept") is not None
    kept.send_signal(signal.SIGTERM)
    out, err = kept.communicate(timeout=10)
    assert kept.returncode == 0 and "destroyed; deleted: exp/kept" in out, err
    assert consul_kv(agent, "exp/kept") is None


# -- the frontend against a fake core (no process): blocking reads and TTL deadlines -----------

class ParkingFacade:
    """Answers KV reads at index 10; a blocking read parks until the test answers it."""

    config = type("Config", (), {"datacenter": "dc1", "node_id": "n-1", "node_name": "n"})

    def __init__(self) -> None:
        self.parked: list[Deferred] = []

    def local_index(self, consistency):
        return 10

    def read(self, query, options):
        if isinstance(query, queries.KVList) and options.min_index:
            parked = Deferred(lambda d: self.parked.remove(d))
            self.parked.append(parked)
            return parked
        return ReadResult([], QueryMeta(index=10))


def test_a_watch_is_a_blocking_read_and_a_gone_client_cancels_it():
    facade = ParkingFacade()
    keys = Keys(facade, Expiries(task.Clock()))
    answer = keys(Request("GET", "/v2/keys/k", raw_query=b"wait=true"), "k")
    assert not answer.called and len(facade.parked) == 1
    facade.parked.pop().callback(ReadResult([KVEntry("k", b"v", create_index=11, modify_index=11)],
                                         QueryMeta(index=11)))
    response = answer.result
    assert json.loads(response.body) == {"action": "set", "node": {
        "key": "/k", "value": "v", "modifiedIndex": 11, "createdIndex": 11}}
    assert (b"X-Etcd-Index", b"10") in response.headers  # where the watch started
    waiting = keys(Request("GET", "/v2/keys/k", raw_query=b"wait=true&recursive=true"), "k")
    assert len(facade.parked) == 1
    waiting.cancel()  # the client went away
    assert facade.parked == [] and waiting.called
    waiting.addErrback(lambda failure: None)


def test_ttl_expirations_are_shown_from_the_seconds_the_leader_says_are_left():
    clock = task.Clock()
    clock.advance(1_000_000)
    expiries = Expiries(clock)
    assert expiries.info(25.0) == (25, "1970-01-12T13:47:05Z")
    assert expiries.info(0.2) == (1, "1970-01-12T13:46:40.200000Z")
    assert expiries.info(-3.0)[0] == 0