"""Requests of the server endpoints that are not log commands (the log's commands are in
`agent.fsm.commands`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SessionRenew:
    """Session.Renew: restart a TTL session's timer on the leader; answers the session (or
    None when there is none). Nothing is written to the log, as in Consul."""

    id: str
