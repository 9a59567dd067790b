"""A real 3-server Waypost cluster changing shape, and what must survive a change of leader:
a fourth server joins as a non-voter and is promoted (autopilot), a dead server is removed
and comes back, the operator CLI lists, moves and removes peers, sessions and lock-delays keep
their meaning under a new leader, and DNS keeps answering while a leader is elected.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import dns.message
import dns.query
import dns.rcode

from tests.agentproc import ROOT, AgentProcess
from tests.servercluster import ServerCluster
from tests.test_raft_ops import eventually, followers, put

AUTOPILOT = {"performance": {"raft_multiplier": 1},
             "autopilot": {"server_stabilization_time": "1s"}}


def configuration(cluster: ServerCluster, i: int) -> dict[str, bool]:
    servers = cluster.get_json(i, "/v1/operator/raft/configuration")["Servers"]
    return {s["Node"]: s["Voter"] for s in servers}


def waypost(cluster: ServerCluster, i: int, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.main", *args,
                           f"-http-addr=127.0.0.1:{cluster.servers[i].http}"],
                          cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          capture_output=True, text=True, timeout=60)


def test_a_new_server_joins_as_a_non_voter_and_is_promoted(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=AUTOPILOT).start()
    extra = None
    try:
        leader = cluster.wait_leader()
        for n in range(20):
            assert put(cluster, leader, f"pre/{n}")
        config_file = tmp_path / "s3.json"
        config_file.write_text(json.dumps(AUTOPILOT))
        joins = [a for s in cluster.servers for a in ("-retry-join", f"127.0.0.1:{s.serf_lan}")]
        extra = AgentProcess("-server", "-data-dir", str(tmp_path / "s3"), *joins,
                             "-config-file", str(config_file), node="s3")
        extra.args.remove("-dev")
        extra.start(timeout=30)
        seen = eventually(lambda: configuration(cluster, leader).get("s3") is not None
                          and configuration(cluster, leader), "s3 in the configuration")
        assert len(seen) == 4
        eventually(lambda: configuration(cluster, leader).get("s3") is True, "s3 promoted")
        status, _, body = extra.request("GET", "/v1/kv/pre/?keys&stale")
        assert status == 200 and len(json.loads(body)) == 20
        assert len(cluster.get_json(leader, "/v1/status/peers")) == 4
    finally:
        if extra is not None:
            extra.stop()
        cluster.stop()


def test_a_dead_server_is_removed_and_comes_back_when_restarted(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=AUTOPILOT).start()
    try:
        leader = cluster.wait_leader()
        victim = followers(cluster, leader)[0]
        name = cluster.servers[victim].name
        cluster.kill(victim)

        def health() -> tuple[int, dict]:
            status, _, data = cluster.request(leader, "GET", "/v1/operator/autopilot/health")
            return status, json.loads(data)
        # Autopilot's view while the server is down: unhealthy (429), no failure tolerated.
        status, report = eventually(lambda: health()[0] == 429 and health(),
                                    "autopilot to see the dead server")
        assert report["Healthy"] is False and report["FailureTolerance"] == 0
        assert {s["Name"]: s["Healthy"] for s in report["Servers"]}[name] is False
        eventually(lambda: name not in configuration(cluster, leader),
                   "the dead server removed by autopilot", timeout=60)
        assert put(cluster, leader, "after/removal")
        cluster.restart(victim)
        eventually(lambda: configuration(cluster, leader).get(name) is True,
                   "the restarted server a voter again", timeout=60)
        eventually(lambda: cluster.request(victim, "GET", "/v1/kv/after/removal?stale")[0]
                   == 200, "the restarted server caught up")
        status, report = eventually(lambda: health()[0] == 200 and health(), "a healthy cluster")
        assert report["FailureTolerance"] == 1 and len(report["Servers"]) == 3
    finally:
        cluster.stop()


def test_the_operator_cli_on_a_real_cluster(tmp_path):
    # Autopilot would remove the dead server itself; here the operator does.
    config = {"performance": {"raft_multiplier": 1},
              "autopilot": {"cleanup_dead_servers": False}}
    cluster = ServerCluster(3, tmp_path, config=config).start()
    try:
        leader = cluster.wait_leader()
        follower = followers(cluster, leader)[0]
        listed = waypost(cluster, follower, "operator", "raft", "list-peers")
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()
        assert rows[0].split() == ["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
        states = {row.split()[0]: row.split()[3] for row in rows[1:]}
        assert states[cluster.servers[leader].name] == "leader"
        assert sorted(states.values()) == ["follower", "follower", "leader"]
        # An operator's autopilot settings go through the log: set on a follower, seen on all.
        done = waypost(cluster, follower, "operator", "autopilot", "set-config", "-min-quorum=2")
        assert (done.returncode, done.stdout) == (0, "Configuration updated!\n"), done.stderr
        for i in range(3):
            eventually(lambda: cluster.get_json(i, "/v1/operator/autopilot/configuration")
                       ["MinQuorum"] == 2, f"the setting on s{i}")
        target_id = cluster.get_json(follower, "/v1/agent/self")["Config"]["NodeID"]
        moved = waypost(cluster, follower, "operator", "raft", "transfer-leader",
                        f"-id={target_id}")
        assert moved.returncode == 0, moved.stderr
        assert cluster.wait_leader() == follower
        gone = [i for i in range(3) if i not in (leader, follower)][0]
        cluster.kill(gone)
        # As Consul's: a server still alive in gossip would be added back at once.
        eventually(lambda: any(m["Name"] == cluster.servers[gone].name and m["Status"] == 4
                               for m in cluster.get_json(leader, "/v1/agent/members")),
                   "the killed server failed in gossip")
        gone_address = f"127.0.0.1:{cluster.servers[gone].server_port}"
        removed = waypost(cluster, leader, "operator", "raft", "remove-peer",
                          f"-address={gone_address}")
        assert removed.returncode == 0, removed.stderr
        assert cluster.servers[gone].name not in configuration(cluster, follower)
        unknown = waypost(cluster, leader, "operator", "raft", "remove-peer",
                          "-address=127.0.0.1:1")
        assert unknown.returncode == 1
        assert put(cluster, leader, "two/servers")
    finally:
        cluster.stop()


def test_sessions_and_lock_delays_hold_across_a_change_of_leader(tmp_path):
    cluster = ServerCluster(3, tmp_path, config={"performance": {"raft_multiplier": 1}}).start()
    try:
        leader = cluster.wait_leader()
        follower = followers(cluster, leader)[0]

        def session(body: dict) -> str:
            status, _, data = cluster.request(follower, "PUT", "/v1/session/create",
                                              json.dumps(body))
            assert status == 200, data
            return json.loads(data)["ID"]
        holder = session({"LockDelay": "10s"})
        ttl = session({"TTL": "10s"})
        status, _, data = cluster.request(follower, "PUT", f"/v1/kv/lock?acquire={holder}", "x")
        assert data == b"true"
        status, _, data = cluster.request(follower, "PUT", f"/v1/session/destroy/{holder}")
        assert status == 200
        cluster.kill(leader)
        new = cluster.wait_leader()
        other = session({})
        # The lock-delay started under the old leader still holds under the new one.
        status, _, data = cluster.request(new, "PUT", f"/v1/kv/lock?acquire={other}", "y")
        assert (status, data) == (200, b"false")
        # The TTL session exists and is renewed through a follower (forwarded to the leader).
        status, _, data = cluster.request(follower, "PUT", f"/v1/session/renew/{ttl}")
        assert status == 200 and json.loads(data)[0]["ID"] == ttl
    finally:
        cluster.stop()


def test_dns_keeps_answering_while_a_leader_is_elected(tmp_path):
    cluster = ServerCluster(3, tmp_path, config={"performance": {"raft_multiplier": 1}}).start()
    try:
        leader = cluster.wait_leader()
        body = json.dumps({"Node": "ext", "Address": "10.1.2.3",
                           "Service": {"Service": "db", "Port": 5432}})
        status, _, _ = cluster.request(leader, "PUT", "/v1/catalog/register", body)
        assert status == 200
        follower = followers(cluster, leader)[0]
        port = cluster.servers[follower].dns

        def answer() -> list[str]:
            reply = dns.query.udp(dns.message.make_query("db.service.consul", "A"),
                                  "127.0.0.1", port=port, timeout=2)
            if reply.rcode() != dns.rcode.NOERROR:
                return []
            return [r.address for rrset in reply.answer for r in rrset]
        eventually(lambda: answer() == ["10.1.2.3"], "the service in the follower's DNS")
        cluster.kill(leader)
        answers = []
        end = time.monotonic() + 2.0  # through the election (0.15-0.3 s) and after it
        while time.monotonic() < end:
            answers.append(answer())
        assert all(a == ["10.1.2.3"] for a in answers), answers
        cluster.wait_leader()
    finally:
        cluster.stop()
