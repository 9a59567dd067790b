"""Network coordinates (agent.gossip.vivaldi): Serf's Vivaldi client gives the same floats as
Serf's Go code, the coordinate's wire form is go-msgpack's, and the ping delegate caches peers.

The golden values were printed by a throwaway Go program built against the Debian sources of
hashicorp/serf/coordinate and hashicorp/go-msgpack (the ones Consul 1.8.7 vendors): a client set
at (0.001, -0.002, 0...) takes 25 updates from three fixed peers a, b, c with RTTs
rtts[i mod 5] + i * 100us; some steps are checked here. Every step's direction is defined (no
two points coincide), so no randomness is involved.

Then real `waypost agent -dev` processes: two joined agents and a server of dc2 joined over the
WAN estimate coordinates and serve them (/v1/coordinate/*, /v1/agent/self) in Consul's shape;
and a real Consul 1.8.7 in one LAN pool with a Waypost agent: each moves its coordinate from the
other's ack payloads (skipped, with the reason shown, without the Consul binary).
"""

from __future__ import annotations

import json
import random

import pytest

from agent.gossip import vivaldi
from agent.gossip.delegate import NodeInfo
from agent.gossip.gomsgpack import GossipDecodeError
from agent.gossip.messages import NodeState
from agent.gossip.vivaldi import (
    Coordinate, CoordinateError, CoordinateTracker, VivaldiClient, VivaldiConfig)
from tests.agentproc import AgentProcess
from tests.consulproc import NO_CONSUL, ConsulProcess, consul_binary
from tests.polling import eventually

DEADLINE = 30.0  # joins, then a few probe rounds (200 ms each on a -dev LAN) to move coordinates

# The ack payload of a fresh Serf node: PingVersion 1, then the origin coordinate.
GO_FRESH_ACK = bytes.fromhex("""
0184aa41646a7573746d656e74cb0000000000000000a54572726f72cb3ff8000000000000a6486569676874
cb3ee4f8b588e368f1a356656398cb0000000000000000cb0000000000000000cb0000000000000000cb0000
000000000000cb0000000000000000cb0000000000000000cb0000000000000000cb0000000000000000""")
# Vec[0]=0.25, Vec[7]=-1.5e-3, Error 0.5, Adjustment -0.001, Height 0.002.
GO_CODED = bytes.fromhex("""
84aa41646a7573746d656e74cbbf50624dd2f1a9fca54572726f72cb3fe0000000000000a6486569676874cb
3f60624dd2f1a9fca356656398cb3fd0000000000000cb0000000000000000cb0000000000000000cb000000
0000000000cb0000000000000000cb0000000000000000cb0000000000000000cbbf589374bc6a7efa""")

# step i, peer, RTT in ns, then the client's coordinate after it: [Vec] Error Adjustment Height
GO_STEPS = """
0 a 12000000 [0.0007155116601035423, -0.0020632194022643306, 0, 0.0001264392164114492, 0, 0, 0, 0] 1.1955905330882353 2.765821861934292e-05 2.6120998033045839e-05
1 b 30100000 [0.00075212025667656455, -0.0031920702204455069, 0, 0.00013290838039956083, 0.00020465756101891474, 0, 0, 0] 1.0229673185978763 0.00016362999441320333 7.862184710463693e-05
2 c 5200000 [0.0006578970921581321, -0.002792178108957323, 0.0037582964793885175, 0.00011625805343243125, 0.00017901873149578059, -0.00050110619725180232, 0, 0] 1.5 -0.00040986389378736747 1.0000000000000001e-05
3 a 50300000 [-0.0064819604832962712, -0.0049261450145124987, 0.0066306348458240842, 0.0032621765277673588, 0.0003158366684536491, -0.00088408464610987766, 0, 0] 1.3399576701555374 0.00032921577859393758 0.00039977595384540034
7 b 5700000 [-0.0066502150401139964, -0.0019996049786313295, 0.0084055167110539258, 0.0032540118461284974, -0.00019400483435663349, -0.0011207355614738569, 0, 0] 1.2191706639010462 -0.00019568472861735488 0.00015497761560542717
12 a 6200000 [-0.0051880793116429267, 0.00055903784932574046, 0.0076469530445170721, 0.0025696127714041708, -0.00060618861661214754, -0.0010195937392689428, 0, 0] 1.1282438644777288 -0.00074932103628919057 2.4761620248955545e-05
18 a 51800000 [-0.0030788470695607517, 7.0829341903939211e-05, 0.0078741671307701079, 0.0016482848904462158, -0.00043091193100270285, -0.0010498889507693479, 0, 0] 0.80195164716740375 -0.0012502412956879726 1.0000000000000001e-05
24 a 10400000 [-0.0067327903638140793, 0.00059303102736432613, 0.013152371564339925, 0.0031751983773481503, -0.00060068843729538333, -0.00175364954191199, 0, 0] 0.74030805007181855 -0.0017848053850493494 8.1470286300237645e-05
"""
GO_DIST_TO_B_NS = 24289601  # the client's DistanceTo(b) after the 25 steps
GO_DIST_A_TO_C_NS = 34324756


def peers() -> dict[str, Coordinate]:
    out = {}
    for k, name in enumerate("abc"):
        vec = [0.0] * 8
        vec[k] = 0.01 * (k + 1)
        vec[k + 3] = -0.004
        out[name] = Coordinate(tuple(vec), 0.2 + 0.3 * k, 0.0001 * k, 0.0005 * (k + 1))
    return out


def golden_steps() -> dict[int, tuple[str, int, Coordinate]]:
    steps = {}
    for line in GO_STEPS.strip().splitlines():
        head, rest = line.split(" [")
        i, name, rtt = head.split()
        vec, tail = rest.split("] ")
        err, adj, height = (float(x) for x in tail.split())
        steps[int(i)] = (name, int(rtt),
                         Coordinate(tuple(float(x) for x in vec.split(", ")), err, adj, height))
    return steps


def test_updates_match_serfs_go_client_float_for_float():
    client = VivaldiClient(VivaldiConfig(), random.Random(1))
    client.set_coordinate(Coordinate((0.001, -0.002) + (0.0,) * 6, 1.5, 0.0, 10.0e-6))
    others = peers()
    rtts = [12_000_000, 30_000_000, 5_000_000, 50_000_000, 8_000_000]
    golden = golden_steps()
    for i in range(25):
        name = "abc"[i % 3]
        rtt_ns = rtts[i % 5] + i * 100_000
        got = client.update(name, others[name], rtt_ns / 1e9)
        if i in golden:
            assert (name, rtt_ns) == golden[i][:2]
            assert got == golden[i][2], f"step {i}"
    assert round(client.coordinate.distance(others["b"]) * 1e9) == GO_DIST_TO_B_NS
    assert round(others["a"].distance(others["c"]) * 1e9) == GO_DIST_A_TO_C_NS


def test_defaults_are_serfs():
    assert Coordinate.origin(VivaldiConfig()) == Coordinate((0.0,) * 8, 1.5, 0.0, 10.0e-6)


def test_wire_form_is_go_msgpacks():
    origin = Coordinate.origin(VivaldiConfig())
    assert vivaldi.ack_payload(origin) == GO_FRESH_ACK
    vec = [0.0] * 8
    vec[0], vec[7] = 0.25, -1.5e-3
    coded = Coordinate(tuple(vec), 0.5, -0.001, 0.002)
    assert vivaldi.encode(coded) == GO_CODED
    assert vivaldi.decode(GO_CODED) == coded
    assert vivaldi.parse_ack_payload(GO_FRESH_ACK) == origin


@pytest.mark.parametrize("payload", [
    b"",
    b"\x02" + GO_CODED,  # another ping version
    b"\x01",  # nothing after the header
    b"\x01\xc1",  # not msgpack
    b"\x01\x81\xa3Vec\xa1x",  # Vec not a list
    b"\x01\x81\xa3Vec\x91\xa1x",  # Vec of strings
    b"\x01\x81\xa5Error\xc3",  # a bool for a float
    b"\x01\x81\xa3Vec\xdc\x00\x80" + b"\x00" * 128,  # 128 dimensions
])
def test_bad_ack_payloads_are_refused_cleanly(payload):
    with pytest.raises(GossipDecodeError):
        vivaldi.parse_ack_payload(payload)


def test_client_refuses_what_serf_refuses():
    client = VivaldiClient(rng=random.Random(1))
    origin = Coordinate.origin(client.config)
    with pytest.raises(CoordinateError):
        client.update("a", origin, 11.0)  # longer than Serf's 10 s bound
    with pytest.raises(CoordinateError):
        client.update("a", origin, -0.001)
    with pytest.raises(CoordinateError):
        client.update("a", Coordinate((0.0,) * 3, 1.5, 0.0, 1e-5), 0.01)
    with pytest.raises(CoordinateError):
        client.update("a", Coordinate((float("nan"),) * 8, 1.5, 0.0, 1e-5), 0.01)
    assert client.coordinate == origin


def node(name: str) -> NodeInfo:
    return NodeInfo(name, bytes([127, 0, 0, 1]), 8301, b"", NodeState.ALIVE, (1, 5, 2, 2, 5, 4))


def test_tracker_updates_from_acks_and_caches_peers():
    tracker = CoordinateTracker("me", VivaldiClient(rng=random.Random(7)))
    peer = CoordinateTracker("peer", VivaldiClient(rng=random.Random(8)))
    for _ in range(10):
        tracker.notify_ping_complete(node("peer"), 0.02, peer.ack_payload())
        peer.notify_ping_complete(node("me"), 0.02, tracker.ack_payload())
    assert tracker.coordinate != Coordinate.origin(VivaldiConfig())
    assert set(tracker.cache) == {"me", "peer"}
    assert tracker.cache["me"] == tracker.coordinate
    # Both estimates moved towards the 20 ms they observed.
    assert 0.005 < tracker.coordinate.distance(peer.coordinate) < 0.05
    tracker.notify_ping_complete(node("x"), 0.02, b"")  # no payload: nothing happens
    tracker.notify_ping_complete(node("x"), 0.02, b"\x09junk")
    assert tracker.rejected == 1 and "x" not in tracker.cache
    tracker.forget("peer")
    assert set(tracker.cache) == {"me"}


# --- the datacenters nearest first (WanGossip, in process) --------------------------------------

def _wan_with(coords: dict[str, tuple[str, float]]):
    """A dc1 server's WanGossip whose pool holds servers `name -> (dc, x)`, each with a cached
    coordinate at x seconds along the first axis (None: not heard from yet)."""
    from twisted.internet.task import Clock

    from agent.config.model import AgentConfig
    from agent.gossip.serf.consul_tags import waypost_agent_tags
    from agent.gossip.serf.events import Member, MemberStatus
    from agent.gossip.wan import WanGossip

    wan = WanGossip(Clock(), AgentConfig(node_name="a1", datacenter="dc1",
                                         node_id="11111111-2222-3333-4444-555555555555"))
    members = []
    for name, (dc, x) in coords.items():
        tags = waypost_agent_tags(node_id=name, datacenter=dc, server=True, server_port=8300)
        members.append(Member(name=name, addr=b"\x7f\x00\x00\x01", port=8302, tags=tags,
                              status=MemberStatus.ALIVE))
        if x is not None:
            wan.pool.coordinates.cache[name] = Coordinate(
                (x,) + (0.0,) * 7, 0.5, 0.0, 10.0e-6)
    wan.pool.members = lambda: members
    return wan


def test_datacenters_are_listed_by_median_rtt_ours_first_unknown_last():
    wan = _wan_with({"a1.dc1": ("dc1", None),
                     "far1.east": ("east", 0.300), "far2.east": ("east", 0.010),
                     "far3.east": ("east", 0.250),  # east's median: 250 ms
                     "near.west": ("west", 0.020),
                     "new.south": ("south", None),  # no coordinate yet: infinitely far
                     "x.apac": ("apac", 0.020)})  # as near as west: by name
    assert wan.datacenters() == ["dc1", "apac", "west", "east", "south"]
    maps = wan.datacenter_coordinates()
    assert sorted(maps) == ["apac", "dc1", "east", "west"]  # south's server: no coordinate yet
    assert [name for name, _ in maps["east"]] == ["far1", "far2", "far3"]
    assert maps["dc1"] == [("a1", wan.pool.coordinates.coordinate)]


# --- real agents ------------------------------------------------------------------------------

COORD_KEYS = {"Vec", "Error", "Adjustment", "Height"}


def moved(coord: dict) -> bool:
    """Off the origin Serf starts every node at: it has taken RTT samples."""
    assert set(coord) == COORD_KEYS and len(coord["Vec"]) == 8
    return any(coord["Vec"]) and coord["Error"] < 1.5


def holds_moved(coords: dict[str, dict], names: set[str]) -> bool:
    return names <= set(coords) and all(moved(coords[n]) for n in names)


def lan_coords(agent: AgentProcess) -> dict[str, dict]:
    status, headers, body = agent.request("GET", "/v1/coordinate/nodes")
    assert status == 200 and "X-Consul-Index" in headers, body
    rows = json.loads(body)
    for row in rows:
        assert set(row) == {"Node", "Segment", "Coord"} and row["Segment"] == ""
    return {row["Node"]: row["Coord"] for row in rows}


@pytest.fixture
def agents():
    started: list = []

    def start(*flags: str, node: str):
        started.append(AgentProcess(*flags, node=node).start())
        return started[-1]
    yield start
    for agent in reversed(started):
        agent.stop()


def test_joined_agents_estimate_coordinates_and_serve_them_in_consuls_shape(agents):
    a = agents(node="a")
    b = agents("-join", f"127.0.0.1:{a.serf_lan}", node="b")
    w = agents("-datacenter", "dc2", "-join-wan", f"127.0.0.1:{a.serf_wan}", node="w")
    for agent, peer in ((a, "b"), (b, "a")):
        eventually(f"{agent.node} to hold moved coordinates of itself and {peer}",
                   lambda agent=agent, peer=peer: holds_moved(lan_coords(agent),
                                                              {agent.node, peer}), DEADLINE)
    status, _, body = a.request("GET", "/v1/coordinate/node/b")
    assert status == 200 and [row["Node"] for row in json.loads(body)] == ["b"]
    status, _, body = a.request("GET", "/v1/coordinate/node/nobody")
    assert (status, body) == (404, b"")
    _, _, own = a.json("GET", "/v1/agent/self")
    assert moved(own["Coord"])

    def wan_view() -> bool:
        _, _, found = a.json("GET", "/v1/coordinate/datacenters")
        for d in found:
            assert set(d) == {"Datacenter", "AreaID", "Coordinates"} and d["AreaID"] == "wan"
        nodes = {d["Datacenter"]: {c["Node"]: c["Coord"] for c in d["Coordinates"]}
                 for d in found}
        return set(nodes) == {"dc1", "dc2"} and set(nodes["dc1"]) == {"a"} and \
            holds_moved(nodes["dc2"], {"w"})
    eventually("a's WAN view to hold moved coordinates of w in dc2", wan_view, DEADLINE)
    assert a.json("GET", "/v1/catalog/datacenters")[2] == ["dc1", "dc2"]
    assert w.json("GET", "/v1/catalog/datacenters")[2] == ["dc2", "dc1"]


@pytest.mark.skipif(consul_binary() is None, reason=NO_CONSUL)
def test_consul_takes_waypost_acks_for_its_coordinate_and_waypost_takes_consuls(agents):
    """Consul moves its coordinate only from ack payloads it decoded: its one peer is Waypost.
    Waypost does not send Consul's Coordinate.Update, so Consul's catalog lists only itself."""
    consul = ConsulProcess(node="consul1").start()
    try:
        wp = agents("-join", f"127.0.0.1:{consul.serf_lan}", node="wp1")
        eventually("Consul's own coordinate to move from Waypost's acks",
                   lambda: moved(consul.get("/v1/agent/self")["Coord"]), DEADLINE)
        eventually("Waypost to hold a moved coordinate from Consul's acks",
                   lambda: holds_moved(lan_coords(wp), {"consul1"}), DEADLINE)
        assert {row["Node"] for row in consul.get("/v1/coordinate/nodes")} <= {"consul1"}
        log = consul.log_path.read_text(errors="replace").lower()
        for complaint in ("decode coordinate", "unsupported ping version",
                          "rejected coordinate"):
            assert complaint not in log
    finally:
        consul.stop()
