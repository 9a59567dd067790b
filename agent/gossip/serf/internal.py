"""Serf's internal queries (`_serf_*`): ping, name-conflict lookups and keyring rotation.

Each node answers these itself instead of passing them to the agent. Keyring queries carry a
`KeyRequest` (type byte + msgpack) and are answered with a `KeyResponse`; the querier folds the
answers into a `KeyringSummary` (Serf's KeyResponse). The keyring itself belongs to the
memberlist security layer; this module only needs the `Keyring` protocol below. Keys are never
logged; list-keys answers carry them base64-encoded, as Serf's do.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from agent.gossip.serf.codec import SerfDecodeError, decode_message, encode_message
from agent.gossip.serf.errors import SerfError
from agent.gossip.serf.events import Query
from agent.gossip.serf.messages import (
    ConflictResponse, KeyRequest, KeyResponse, MemberRecord, QueryResponseMessage,
    SerfMessageType)
from agent.gossip.serf.queries import INTERNAL_QUERY_PREFIX, QueryParams

if TYPE_CHECKING:
    from agent.gossip.serf.queries import QueryHandle
    from agent.gossip.serf.state import Serf

PING, CONFLICT = "ping", "conflict"
INSTALL_KEY, USE_KEY, REMOVE_KEY, LIST_KEYS = "install-key", "use-key", "remove-key", "list-keys"
MIN_ENCODED_KEY_LENGTH = 25  # bounds how many keys a list-keys answer can carry
NO_KEYRING = "No keyring to modify (encryption not enabled)"
EMPTY_KEYRING = "Keyring is empty (encryption not enabled)"


class Keyring(Protocol):
    """What key rotation needs of memberlist's keyring. Methods raise ValueError with the
    message to report (e.g. removing the primary key)."""

    def add_key(self, key: bytes) -> None: ...

    def use_key(self, key: bytes) -> None: ...

    def remove_key(self, key: bytes) -> None: ...

    @property
    def keys(self) -> tuple[bytes, ...]: ...

    @property
    def primary_key(self) -> bytes | None: ...


def handle_internal_query(serf: "Serf", query: Query) -> None:
    op = query.name[len(INTERNAL_QUERY_PREFIX):]
    if op == CONFLICT:
        _conflict(serf, query)
    elif op in (INSTALL_KEY, USE_KEY, REMOVE_KEY):
        _send_key_response(serf, query, _change_keyring(serf, op, query.payload))
    elif op == LIST_KEYS:
        _send_key_response(serf, query, _list_keys(serf))
    # ping: the ack, if asked for, has gone already; unknown names are ignored as in Serf


def _conflict(serf: "Serf", query: Query) -> None:
    node = query.payload.decode("utf-8", "surrogateescape")
    if node == serf.name:
        return
    state = serf.members.members.get(node)
    record = None
    if state is not None:
        m = state.member
        record = MemberRecord(m.name, m.addr, m.port, dict(m.tags), int(m.status),
                              tuple(m.vsn))  # type: ignore[arg-type]
    _respond(serf, query, encode_message(ConflictResponse(record)))


def _change_keyring(serf: "Serf", op: str, payload: bytes) -> KeyResponse:
    try:  # Serf skips the type byte without checking it
        request = decode_message(bytes([SerfMessageType.KEY_REQUEST]) + payload[1:])
    except SerfDecodeError:
        return KeyResponse(result=False)
    assert isinstance(request, KeyRequest)
    if serf.keyring is None:
        return KeyResponse(result=False, message=NO_KEYRING)
    action = {INSTALL_KEY: serf.keyring.add_key, USE_KEY: serf.keyring.use_key,
              REMOVE_KEY: serf.keyring.remove_key}[op]
    try:
        action(request.key)
    except ValueError as err:
        return KeyResponse(result=False, message=str(err))
    return KeyResponse(result=True)


def _list_keys(serf: "Serf") -> KeyResponse:
    if serf.keyring is None:
        return KeyResponse(result=False, message=EMPTY_KEYRING)
    keys = tuple(base64.b64encode(k).decode() for k in serf.keyring.keys)
    primary = serf.keyring.primary_key or b""
    return KeyResponse(result=True, keys=keys, primary_key=base64.b64encode(primary).decode())


def _send_key_response(serf: "Serf", query: Query, resp: KeyResponse) -> None:
    """Answer; a list too big for one response loses keys from the end, as Serf trims it."""
    limit = serf.config.query_response_size_limit
    total = len(resp.keys)
    for shown in range(limit // MIN_ENCODED_KEY_LENGTH, -1, -1):
        body = encode_message(resp)
        whole = encode_message(QueryResponseMessage(query.ltime, query.id, serf.name, 0, body))
        if len(whole) <= limit:
            _respond(serf, query, body)
            return
        resp = KeyResponse(resp.result, f"truncated key list response, showing first {shown} "
                           f"of {total} keys", resp.keys[:shown], resp.primary_key)


def _respond(serf: "Serf", query: Query, body: bytes) -> None:
    try:
        serf.respond(query, body)
    except SerfError:
        pass  # too late or too large: Serf logs and drops it


# --- the querying side ------------------------------------------------------------------------

def start_key_query(serf: "Serf", op: str, key: bytes = b"", relay_factor: int = 0
                    ) -> "QueryHandle":
    """Broadcast a keyring operation (`install-key`, `use-key`, `remove-key`, `list-keys`)."""
    payload = encode_message(KeyRequest(key))
    return serf.query(INTERNAL_QUERY_PREFIX + op, payload, QueryParams(relay_factor=relay_factor))


@dataclass(slots=True)
class KeyringSummary:
    """The pool's answers to one keyring query (Serf's KeyResponse)."""

    num_nodes: int
    num_resp: int = 0
    num_err: int = 0
    messages: dict[str, str] = field(default_factory=dict)
    keys: dict[str, int] = field(default_factory=dict)  # base64 key -> nodes holding it
    primary_keys: dict[str, int] = field(default_factory=dict)

    def add(self, source: str, payload: bytes) -> None:
        self.num_resp += 1
        try:
            if not payload or payload[0] != SerfMessageType.KEY_RESPONSE:
                raise SerfDecodeError("not a key response")
            resp = decode_message(payload)
        except SerfDecodeError:
            self.messages[source] = "Invalid key query response"
            self.num_err += 1
            return
        assert isinstance(resp, KeyResponse)
        if not resp.result:
            self.messages[source] = resp.message
            self.num_err += 1
        elif resp.message:
            self.messages[source] = resp.message
        for key in resp.keys:
            self.keys[key] = self.keys.get(key, 0) + 1
        self.primary_keys[resp.primary_key] = self.primary_keys.get(resp.primary_key, 0) + 1

    def error(self) -> str | None:
        """Serf's verdict once the query is over: None when every node succeeded."""
        if self.num_err:
            return f"{self.num_err}/{self.num_nodes} nodes reported failure"
        if self.num_resp != self.num_nodes:
            return f"{self.num_resp}/{self.num_nodes} nodes reported success"
        return None
