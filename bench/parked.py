"""Parking blocking queries for the benches: `waiters` raw connections, each with one blocking
`GET /v1/kv/bench/wake?index=<current>` sent, registered on a selector for reading.

A plain selector on non-blocking sockets keeps the client's own cost per answer to one recv,
so the wake-up figures are the agent's, not the load generator's.
"""

from __future__ import annotations

import selectors
import socket
import time
import urllib.request


def park_waiters(port: int, waiters: int, data: object = None
                 ) -> tuple[selectors.BaseSelector, list[socket.socket]]:
    """Park `waiters` queries on bench/wake and give them 2 s to park; (selector, sockets)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/kv/bench/wake") as r:
        index = r.headers["X-Consul-Index"]
    request = (f"GET /v1/kv/bench/wake?index={index}&wait=60s HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\n\r\n").encode()
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(waiters):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(request)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, data)
        socks.append(s)
    time.sleep(2.0)  # let every query park
    return sel, socks
