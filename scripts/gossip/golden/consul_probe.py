"""Dev check against a running Consul agent (not CI): ping its Serf LAN port over UDP and do a
push-pull over TCP with the codec, encrypted with the agent's gossip key, and print what came
back. Usage: consul_probe.py HOST PORT NODE BASE64_KEY
(`consul agent -dev -node=NODE -bind=127.0.0.1 -serf-lan-port=PORT -encrypt=KEY ...`)."""

from __future__ import annotations

import base64
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))

from agent.gossip import codec, security  # noqa: E402
from agent.gossip.messages import Ping, PushPull  # noqa: E402


def main(host: str, port: int, node: str, key: str) -> None:
    envelope = security.Envelope(security.Keyring(primary=base64.b64decode(key)), version=1)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(3)
    me = udp.getsockname()
    ping = Ping(42, node, socket.inet_aton(me[0]), me[1], "probe")
    udp.sendto(codec.encode_packet([ping], crc=True, envelope=envelope), (host, port))
    reply, _ = udp.recvfrom(65536)
    packet = codec.decode_packet(reply, envelope=envelope)
    print("udp reply:", [type(m).__name__ for m in packet.messages], "dropped:", packet.dropped)

    for compress in (False, True):
        tcp = socket.create_connection((host, port), timeout=3)
        tcp.sendall(codec.encode_stream(PushPull((), b"", False), compress=compress, envelope=envelope))
        decoder, got = codec.StreamDecoder(envelope=envelope), []
        while not got:
            chunk = tcp.recv(65536)
            if not chunk:
                break
            got = decoder.feed(chunk)
        tcp.close()
        print(f"push-pull reply (we compressed={compress}):",
              [[(n.name, n.state.name, n.vsn) for n in m.nodes] for m in got if isinstance(m, PushPull)])


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
