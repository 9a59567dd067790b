"""A real 3-server Waypost cluster in the situations operators meet: a client agent through a
change of leader, a follower that comes back after the log moved past it (snapshot), no
quorum ("No cluster leader" after rpc_hold_timeout), a leader leaving gracefully, a restart
of the whole cluster (default-mode reads never show a partial state), reads on followers in
each consistency mode, and a snapshot restored through a follower.
"""

from __future__ import annotations

import json
import time

from tests.agentproc import AgentProcess
from tests.servercluster import ServerCluster

FAST = {"performance": {"raft_multiplier": 1}}


def eventually(condition, what: str, timeout: float = 30.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except OSError as exc:
            last = exc
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def put(cluster: ServerCluster, i: int, key: str, value: str = "v") -> bool:
    status, _, body = cluster.request(i, "PUT", f"/v1/kv/{key}", value, timeout=15)
    return status == 200 and body == b"true"


def keys(cluster: ServerCluster, i: int, prefix: str, mode: str = "stale") -> list[str]:
    status, _, body = cluster.request(i, "GET", f"/v1/kv/{prefix}?keys&{mode}", timeout=15)
    return json.loads(body) if status == 200 else []


def raft_stats(cluster: ServerCluster, i: int) -> dict:
    return cluster.get_json(i, "/v1/agent/self")["Stats"]["raft"]


def followers(cluster: ServerCluster, leader: int) -> list[int]:
    return [i for i in cluster.alive() if i != leader]


def test_a_client_agent_keeps_working_through_a_change_of_leader(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    client = None
    try:
        leader = cluster.wait_leader()
        joins = [a for s in cluster.servers for a in ("-join", f"127.0.0.1:{s.serf_lan}")]
        client = AgentProcess("-server=false", *joins, "-data-dir", str(tmp_path / "client"),
                              node="c1").start(timeout=30)
        eventually(lambda: client.request("PUT", "/v1/kv/c/before", b"1")[0] == 200,
                   "a write through the client")
        # The operator's view through the client agent (asked of a server over the RPC).
        status, _, data = client.request("GET", "/v1/operator/raft/configuration")
        assert status == 200 and len(json.loads(data)["Servers"]) == 3
        status, _, data = client.request("GET", "/v1/operator/autopilot/health")
        assert status == 200 and json.loads(data)["FailureTolerance"] == 1
        status, _, archive = client.request("GET", "/v1/snapshot")
        assert status == 200 and archive[:2] == b"\x1f\x8b"
        cluster.kill(leader)
        eventually(lambda: client.request("PUT", "/v1/kv/c/after", b"2")[2].strip() == b"true",
                   "a write through the client after the leader died")
        status, _, _ = client.request("PUT", "/v1/agent/service/register",
                                      json.dumps({"Name": "web", "Port": 80}).encode())
        assert status == 200
        survivor = followers(cluster, leader)[0]
        eventually(lambda: "web" in cluster.get_json(survivor, "/v1/catalog/services"),
                   "the client's service in the catalog")
        assert keys(cluster, survivor, "c/", "consistent") == ["c/after", "c/before"]
    finally:
        if client is not None:
            client.stop()
        cluster.stop()


def test_a_follower_behind_the_compacted_log_catches_up_by_snapshot(tmp_path):
    config = {**FAST, "raft_snapshot_threshold": 32, "raft_trailing_logs": 8,
              "raft_snapshot_interval": "100ms"}
    cluster = ServerCluster(3, tmp_path, config=config).start()
    try:
        leader = cluster.wait_leader()
        lagging = followers(cluster, leader)[0]
        for n in range(10):
            assert put(cluster, leader, f"snap/{n:03d}")
        eventually(lambda: len(keys(cluster, lagging, "snap/")) == 10, "replication")
        behind = int(raft_stats(cluster, lagging)["last_log_index"])
        cluster.kill(lagging)
        for n in range(10, 200):
            assert put(cluster, leader, f"snap/{n:03d}")
        stats = raft_stats(cluster, leader)
        # The leader's log no longer holds what the follower lacks: only a snapshot helps.
        assert int(stats["last_snapshot_index"]) - 8 > behind, (stats, behind)
        cluster.restart(lagging)
        eventually(lambda: len(keys(cluster, lagging, "snap/")) == 200,
                   "the restarted follower holding every key")
        assert int(raft_stats(cluster, lagging)["last_snapshot_index"]) > behind
    finally:
        cluster.stop()


def test_without_a_quorum_writes_fail_with_no_cluster_leader_then_recover(tmp_path):
    config = {"performance": {"raft_multiplier": 1, "rpc_hold_timeout": "1s"},
              "discovery_max_stale": "1h"}
    cluster = ServerCluster(3, tmp_path, config=config).start()
    try:
        leader = cluster.wait_leader()
        assert put(cluster, leader, "q/before")
        survivor, *others = followers(cluster, leader)
        eventually(lambda: keys(cluster, survivor, "q/") == ["q/before"], "replication")
        cluster.kill(leader)
        cluster.kill(others[0])
        status, _, body = cluster.request(survivor, "PUT", "/v1/kv/q/during", "x", timeout=30)
        assert (status, body) == (500, b"No cluster leader")
        status, _, body = cluster.request(survivor, "GET", "/v1/kv/q/before", timeout=30)
        assert (status, body) == (500, b"No cluster leader")
        # A stale read is still answered from the replica.
        status, headers, _ = cluster.request(survivor, "GET", "/v1/kv/q/before?stale")
        assert status == 200 and headers["X-Consul-KnownLeader"] == "false"
        # discovery_max_stale: catalog and health reads naming no mode are served stale too.
        status, headers, _ = cluster.request(survivor, "GET", "/v1/catalog/nodes")
        assert status == 200 and headers["X-Consul-KnownLeader"] == "false"
        status, _, _ = cluster.request(survivor, "GET", "/v1/catalog/nodes?leader")
        assert status == 500
        cluster.restart(others[0])
        eventually(lambda: put(cluster, survivor, "q/after"), "a write once a quorum is back")
        assert keys(cluster, survivor, "q/", "consistent") == ["q/after", "q/before"]
    finally:
        cluster.stop()


def test_a_leader_that_leaves_hands_over_and_is_removed(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    try:
        leader = cluster.wait_leader()
        status, _, _ = cluster.request(leader, "PUT", "/v1/agent/leave")
        assert status == 200
        eventually(lambda: not cluster.servers[leader].alive, "the leaving server to exit")
        cluster.servers[leader].proc.wait(10)
        new = cluster.wait_leader()
        assert new != leader

        def two_voters():
            servers = cluster.get_json(new, "/v1/operator/raft/configuration")["Servers"]
            return sorted(s["Node"] for s in servers) if len(servers) == 2 else None
        names = eventually(two_voters, "the left server removed from the configuration")
        assert cluster.servers[leader].name not in names
        assert put(cluster, new, "after/leave")
    finally:
        cluster.stop()


def test_after_a_restart_of_every_server_default_reads_show_every_acknowledged_write(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    try:
        leader = cluster.wait_leader()
        body = json.dumps([{"KV": {"Verb": "set", "Key": f"all/{n:04d}", "Value": "dg=="}}
                           for n in range(64)])
        for _ in range(8):  # 8 transactions of 64 keys; the same keys, rewritten
            status, _, _ = cluster.request(leader, "PUT", "/v1/txn", body)
            assert status == 200
        for n in range(300):
            assert put(cluster, leader, f"one/{n:04d}")
        for i in range(3):
            cluster.kill(i)
        for i in range(3):
            cluster.restart(i)
        answers = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and answers < 30:
            for i in cluster.alive():
                try:
                    status, _, data = cluster.request(i, "GET", "/v1/kv/one/?keys", timeout=15)
                except OSError:
                    continue
                if status == 200:
                    answers += 1
                    assert len(json.loads(data)) == 300, "a default read showed a partial state"
        assert answers >= 30
    finally:
        cluster.stop()


def test_reads_on_a_follower_in_each_consistency_mode(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    try:
        leader = cluster.wait_leader()
        assert put(cluster, leader, "modes/k", "v1")
        follower = followers(cluster, leader)[0]
        for mode in ("", "?consistent", "?stale", "?stale&max_stale=5s"):
            def answered():
                status, headers, data = cluster.request(follower, "GET", f"/v1/kv/modes/k{mode}")
                return (status, headers) if status == 200 else None
            status, headers = eventually(answered, f"a read in mode {mode!r}")
            assert headers["X-Consul-KnownLeader"] == "true", mode
            assert int(headers["X-Consul-LastContact"]) >= 0
        leader_address = cluster.get_json(follower, "/v1/status/leader")
        assert cluster.server_by_address(leader_address) == leader
        assert len(cluster.get_json(follower, "/v1/status/peers")) == 3
    finally:
        cluster.stop()


def test_a_snapshot_saved_on_one_server_is_restored_on_every_server(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    try:
        leader = cluster.wait_leader()
        for n in range(5):
            assert put(cluster, leader, f"saved/{n}")
        follower = followers(cluster, leader)[0]
        status, _, archive = cluster.request(follower, "GET", "/v1/snapshot")
        assert status == 200 and archive[:2] == b"\x1f\x8b"
        status, _, _ = cluster.request(leader, "DELETE", "/v1/kv/saved?recurse")
        assert status == 200
        assert put(cluster, leader, "later/k")
        status, _, _ = cluster.request(follower, "PUT", "/v1/snapshot", archive)
        assert status == 200
        for i in range(3):
            eventually(lambda: keys(cluster, i, "saved/") == [f"saved/{n}" for n in range(5)],
                       f"the restored keys on s{i}")
            assert keys(cluster, i, "later/") == []
        status, _, _ = cluster.request(leader, "PUT", "/v1/snapshot", archive[:-10])
        assert status == 400
    finally:
        cluster.stop()


def test_peers_json_brings_a_lone_survivor_back(tmp_path):
    cluster = ServerCluster(3, tmp_path, config=FAST).start()
    try:
        leader = cluster.wait_leader()
        for n in range(10):
            assert put(cluster, leader, f"kept/{n}")
        survivor = followers(cluster, leader)[0]
        eventually(lambda: len(keys(cluster, survivor, "kept/")) == 10, "replication")
        node_id = cluster.get_json(survivor, "/v1/agent/self")["Config"]["NodeID"]
        for i in range(3):
            cluster.kill(i)
        server = cluster.servers[survivor]
        peers = server.data_dir / "raft" / "peers.json"
        peers.write_text(json.dumps([{"id": node_id, "non_voter": False,
                                      "address": f"127.0.0.1:{server.server_port}"}]))
        cluster.restart(survivor)
        assert cluster.wait_leader() == survivor
        assert keys(cluster, survivor, "kept/", "consistent") == [f"kept/{n}" for n in range(10)]
        assert cluster.get_json(survivor, "/v1/status/peers") == [
            f"127.0.0.1:{server.server_port}"]
        eventually(lambda: not peers.exists(), "peers.json removed once recovered")
        assert put(cluster, survivor, "after/recovery")
    finally:
        cluster.stop()
