"""Dev check: one memberlist push-pull with a running Consul 1.8.7, Serf state both ways.

Usage: consul agent -dev -bind=127.0.0.1 ... ; python consul_pushpull_probe.py HOST SERF_LAN_PORT
Sends Waypost's node (client tags) and Serf push-pull state, decodes Consul's reply with
agent.gossip.serf, and prints Consul's tags, Serf clocks and buffered user events. Afterwards
`consul members` lists the probe node (it turns `failed`, since nothing answers its pings).
"""

from __future__ import annotations

import random
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.gossip.codec import StreamDecoder, encode_stream  # noqa: E402
from agent.gossip.delegate import NodeInfo  # noqa: E402
from agent.gossip.messages import NodeState, PushNodeState, PushPull  # noqa: E402
from agent.gossip.serf import Serf, SerfConfig  # noqa: E402
from agent.gossip.serf.codec import decode_message  # noqa: E402
from agent.gossip.serf.consul_tags import waypost_agent_tags  # noqa: E402
from agent.gossip.serf.tags import decode_tags, encode_tags  # noqa: E402

VSN = (1, 5, 2, 2, 5, 4)


def main(host: str, port: int) -> None:
    tags = waypost_agent_tags(node_id="11111111-2222-3333-4444-555555555555",
                              datacenter="dc1", server=False)
    serf = Serf(SerfConfig(node_name="wp-probe", tags=tags), random.Random())
    meta = encode_tags(tags)
    serf.notify_join(NodeInfo("wp-probe", bytes([127, 0, 0, 1]), 18999, meta, NodeState.ALIVE,
                              VSN))
    me = PushNodeState("wp-probe", bytes([127, 0, 0, 1]), 18999, meta, 1, NodeState.ALIVE, VSN)
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(encode_stream(PushPull((me,), serf.local_state(True), True)))
        decoder, msgs = StreamDecoder(), []
        while not msgs:
            data = conn.recv(65536)
            if not data:
                raise SystemExit("connection closed before a reply")
            msgs = decoder.feed(data)
    reply = msgs[0]
    for node in reply.nodes:
        print("node", node.name, node.vsn, decode_tags(node.meta))
    state = decode_message(reply.user_state)
    print("serf", state.ltime, state.status_ltimes, state.left_members, state.event_ltime,
          state.query_ltime, len(state.events), [e for e in state.events if e])
    serf.merge_remote_state(reply.user_state, True)
    for out in serf.drain():
        print(out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
