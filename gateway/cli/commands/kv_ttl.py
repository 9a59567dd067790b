"""``waypost kv put -ttl D [-keepalive]``: a key that disappears unless it is kept alive.

Owns: writing a key through a session of its own (Behavior=delete, the given TTL, no
lock-delay) with ``?acquire=``, and the ``-keepalive`` loop that renews that session until
interrupted and then destroys it, which deletes the key.

Consul's session TTL has a grace: a session is invalidated only when 2 x TTL passes without a
renewal. So without ``-keepalive`` the key lives between TTL and 2 x TTL (exactly 2 x TTL on a
Waypost agent, which arms the timer at creation); ``-keepalive`` renews every TTL/2.
"""

from __future__ import annotations

import json
import signal
import threading
from typing import Any

from gateway.cli.commands import CommandError, Context
from gateway.cli.commands.sidekick import format_go_duration, parse_go_duration
from gateway.cli.http_client import (
    AgentClient,
    AgentError,
    AgentUnreachable,
    quote_path,
)

__all__ = ["keep_alive", "parse_ttl", "put_with_ttl"]

MIN_TTL = 10.0  # Consul's session TTL limits
MAX_TTL = 86400.0


def parse_ttl(text: str) -> float:
    """The -ttl flag in seconds, within Consul's session limits (10s to 24h)."""
    ttl = parse_go_duration(text, "ttl")
    if not MIN_TTL <= ttl <= MAX_TTL:
        raise CommandError(f"Error: -ttl {text} is out of range: a TTL key is kept by a "
                           "session, whose TTL must be between 10s and 24h")
    return ttl


def _session_path(verb: str, session_id: str) -> str:
    return f"/v1/session/{verb}/{quote_path(session_id, keep_slashes=False)}"


def put_with_ttl(client: AgentClient, kv_path: str, key: str, data: bytes, ttl: float,
                 query: list[tuple[str, str | None]]) -> str:
    """Create the key's session and write the key with it; returns the session ID.

    A key locked by another session is refused, and the new session is destroyed again, so
    nothing is left behind.
    """
    body = json.dumps({"Name": f"waypost kv put {key}", "TTL": format_go_duration(ttl),
                       "Behavior": "delete", "LockDelay": "0s"}).encode()
    session_id = client.request("PUT", "/v1/session/create", body=body).json()["ID"]
    try:
        written = client.request("PUT", kv_path, query=query + [("acquire", session_id)],
                                 body=data).json()
    except BaseException:
        _destroy_quietly(client, session_id)
        raise
    if written is not True:
        _destroy_quietly(client, session_id)
        holder = _holder(client, kv_path)
        raise CommandError(f"Error! Did not write to {key}: it is locked by session "
                           f"{holder or 'another session'}")
    return session_id


def _holder(client: AgentClient, kv_path: str) -> str:
    pairs = client.get_json(kv_path, missing=[]) or []
    return str(pairs[0].get("Session") or "") if pairs else ""


def _destroy_quietly(client: AgentClient, session_id: str) -> None:
    try:
        client.request("PUT", _session_path("destroy", session_id))
    except AgentError:
        pass


def keep_alive(ctx: Context, client: AgentClient, key: str, session_id: str, ttl: float) -> int:
    """Renew the session every TTL/2 until SIGINT or SIGTERM, then destroy it (deleting the
    key). Fails when the session is gone (expired or destroyed elsewhere: the key is gone)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    delay = ttl / 2
    try:
        while not stop.wait(delay):
            delay = ttl / 2
            try:
                response = client.request("PUT", _session_path("renew", session_id),
                                          allow=(404,))
            except AgentUnreachable as exc:
                ctx.err(f"{exc}; retrying (the key goes after {format_go_duration(2 * ttl)} "
                        "without a renewal)")
                delay = min(1.0, delay)
                continue
            if response.status == 404:
                raise CommandError(f"Error! Session {session_id} has expired or was "
                                   f"destroyed: {key} was deleted")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    client.request("PUT", _session_path("destroy", session_id))
    ctx.out(f"Success! Session {session_id} destroyed; deleted: {key}")
    return 0
