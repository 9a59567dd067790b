"""Consul's user events on this agent: the event model, its wire form, filtering, the buffer.

Consul carries a user event as a Serf user event named ``consul:event:<name>`` whose payload
is Consul's `UserEvent` struct in go-msgpack (hashicorp/go-msgpack 0.5.5, zero
`MsgpackHandle`): a map keyed by the codec names, in byte-sorted order (``ID``, ``n``, ``nf``,
``p``, ``sf``, ``tf``, ``v``), the ``omitempty`` ones (payload and filters) left out when
empty, strings and bytes both old-spec raw; `LTime` is not encoded but taken from Serf's
event clock on receipt. Serf coalescing is off (Consul's Internal.EventFire).

On receipt an event passes this agent's filters or is dropped, as Consul's
shouldProcessUserEvent: the node filter is a regexp searched (unanchored, as Go's
MatchString) in this node's name; the service filter in the IDs of this agent's services (a
service ID is its name unless given one), and with a tag filter one of that service's tags
must match too. Events named ``_rexec`` go to remote exec (`agent.exec`) and are never listed.
The others enter a ring of the last 256, which /v1/event/list reads; its X-Consul-Index is
Consul's `uuidToUint64` of the last listed event's ID (1 when none), so a blocking list waits
until that value differs from ``?index``.

Filters are compiled with Python's `re`, which accepts a superset of Go's RE2 syntax
(backreferences, lookaround): a filter Consul would refuse is tried here.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import txaio
from twisted.internet.defer import Deferred

from agent.errors import InvalidRequest, WaypostError
from agent.gossip import gomsgpack as g
from agent.gossip.serf.errors import SerfError

__all__ = ["BUFFER_SIZE", "EVENT_PREFIX", "MAX_LIST_WAIT", "REMOTE_EXEC", "Event",
           "EventDecodeError", "UserEvents", "decode_event", "encode_event", "event_index",
           "new_event_id", "passes_filters", "validate"]

txaio.use_twisted()

EVENT_PREFIX = "consul:event:"  # Consul's userEventPrefix on the Serf event name
REMOTE_EXEC = "_rexec"  # Consul's remoteExecName
MAX_VERSION = 1  # Consul's userEventMaxVersion
BUFFER_SIZE = 256  # Consul's agent keeps the last 256 events
MAX_LIST_WAIT = 600.0  # Consul's maxQueryTime: the list's default and cap, no jitter


class EventDecodeError(ValueError):
    """A Serf user event payload that is not Consul's UserEvent."""


@dataclass(frozen=True, slots=True)
class Event:
    """Consul's UserEvent. `ltime` is Serf's event clock (0 until received)."""

    id: str
    name: str
    payload: bytes = b""
    node_filter: str = ""
    service_filter: str = ""
    tag_filter: str = ""
    version: int = MAX_VERSION
    ltime: int = 0


def new_event_id(random_bytes: Callable[[int], bytes] = os.urandom) -> str:
    """A go-uuid GenerateUUID: 16 random bytes as 8-4-4-4-12 hex (no version bits)."""
    raw = random_bytes(16).hex()
    return f"{raw[:8]}-{raw[8:12]}-{raw[12:16]}-{raw[16:20]}-{raw[20:32]}"


def encode_event(event: Event) -> bytes:
    """The Serf payload Consul sends for `event` (go-msgpack, byte-sorted keys)."""
    fields = {"ID": g.text(event.id), "n": g.text(event.name), "v": event.version}
    optional = {"p": event.payload, "nf": g.text(event.node_filter),
                "sf": g.text(event.service_filter), "tf": g.text(event.tag_filter)}
    fields.update({key: value for key, value in optional.items() if value})
    return g.pack(g.struct(**fields))


def _text(value: Any, what: str) -> str:
    # Names and filters are Go strings (any bytes); JSON shows bad UTF-8 as U+FFFD, as Go.
    if isinstance(value, str):
        return value
    return g.as_bytes(value, what).decode("utf-8", "replace")


def decode_event(data: bytes, ltime: int) -> Event:
    """Consul's UserEvent from a Serf payload (go-msgpack is lenient about missing and unknown
    keys, strict about types); raises EventDecodeError for anything else."""
    try:
        f = g.as_struct(g.unpack_one(data), "UserEvent")
        return Event(id=_text(f.get("ID"), "ID"), name=_text(f.get("n"), "n"),
                     payload=g.as_bytes(f.get("p"), "p"),
                     node_filter=_text(f.get("nf"), "nf"),
                     service_filter=_text(f.get("sf"), "sf"),
                     tag_filter=_text(f.get("tf"), "tf"),
                     version=g.as_int(f.get("v"), "v"), ltime=ltime)
    except g.GossipDecodeError as exc:
        raise EventDecodeError(str(exc)) from None


def _compile(pattern: str, what: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        raise InvalidRequest(f"Invalid {what} filter: error parsing regexp: {exc}") from None


def validate(event: Event) -> None:
    """Consul's validateUserEventParams, as InvalidRequest (Consul answers these with 500)."""
    if not event.name:
        raise InvalidRequest("User event missing name")
    if event.tag_filter and not event.service_filter:
        raise InvalidRequest("Cannot provide tag filter without service filter")
    for pattern, what in ((event.node_filter, "node"), (event.service_filter, "service"),
                          (event.tag_filter, "tag")):
        if pattern:
            _compile(pattern, what)


def passes_filters(event: Event, node_name: str, services: Mapping[str, Any]) -> bool:
    """Whether this agent (`node_name`, its services by ID with their `tags`) takes `event`.
    A filter that does not compile drops the event, as in Consul."""
    try:
        if event.node_filter and not re.search(event.node_filter, node_name):
            return False
        if not event.service_filter:
            return True
        service_re = re.compile(event.service_filter)
        tag_re = re.compile(event.tag_filter) if event.tag_filter else None
    except (re.error, RecursionError, OverflowError):
        return False
    for service_id, service in services.items():
        if not service_re.search(service_id):
            continue
        if tag_re is None or any(tag_re.search(tag) for tag in service.tags):
            return True
    return False


def event_index(event_id: str) -> int:
    """Consul's uuidToUint64: the two 64-bit halves of the UUID's hex, XORed. Consul would
    panic on an ID that is not a UUID (another agent's bug); we use a stable hash instead."""
    lower, upper = event_id[0:8] + event_id[9:13] + event_id[14:18], \
        event_id[19:23] + event_id[24:36]
    try:
        if len(lower) == 16 and len(upper) == 16:
            return int(lower, 16) ^ int(upper, 16)
    except ValueError:
        pass
    return int.from_bytes(hashlib.blake2b(event_id.encode("utf-8", "replace"),
                                          digest_size=8).digest(), "big") or 1


def _index_of(events: list[Event]) -> int:
    # A list with no events answers 1, never 0, so a watch on it does not spin (as Consul).
    return event_index(events[-1].id) if events else 1


class UserEvents:
    """This agent's user events: what it fires, what it receives, the ring it lists.

    `send(serf_name, payload)` puts a Serf user event into the pool (raises SerfError when too
    large); None on an agent without gossip, which can list (nothing) but not fire.
    `services()` gives this agent's services by ID; `remote_exec(event)` takes `_rexec`
    events that passed the filters.
    """

    log = txaio.make_logger()

    def __init__(self, reactor, node_name: str, *,
                 send: Callable[[str, bytes], None] | None,
                 services: Callable[[], Mapping[str, Any]],
                 remote_exec: Callable[[Event], None] = lambda event: None,
                 new_id: Callable[[], str] = new_event_id) -> None:
        self._reactor = reactor
        self.node_name = node_name
        self._send = send
        self._services = services
        self._remote_exec = remote_exec
        self._new_id = new_id
        self._buffer: deque[Event] = deque(maxlen=BUFFER_SIZE)
        self._waiters: list[Callable[[], None]] = []

    # --- firing -------------------------------------------------------------------------

    def fire(self, name: str, payload: bytes = b"", node: str = "", service: str = "",
             tag: str = "") -> Event:
        """Fire an event across the pool; returns it with its new ID (LTime 0, as Consul's
        answer). Raises InvalidRequest for bad parameters, WaypostError when it cannot go."""
        event = Event(id=self._new_id(), name=name, payload=bytes(payload), node_filter=node,
                      service_filter=service, tag_filter=tag)
        validate(event)
        if self._send is None:
            raise WaypostError("This agent is not a member of a gossip pool")
        try:
            self._send(EVENT_PREFIX + name, encode_event(event))
        except SerfError as exc:
            # The caller's payload is too large: their fault, so a 400 (Consul: 500).
            raise InvalidRequest(f'error broadcasting event to segment "": {exc}') from None
        return event

    # --- receiving ----------------------------------------------------------------------

    def receive(self, serf_event: Any) -> None:
        """A Serf user event from the pool (ours included): decode, filter, ingest."""
        name = getattr(serf_event, "name", "")
        if not name.startswith(EVENT_PREFIX):
            return  # another Serf user of the pool, not Consul's
        try:
            event = decode_event(serf_event.payload, serf_event.ltime)
        except EventDecodeError as exc:
            self.log.error("agent: Failed to decode event: {error}", error=str(exc))
            return
        if event.version > MAX_VERSION:
            self.log.warn("agent: Event version {v} may have unsupported features ({name})",
                          v=event.version, name=event.name)
        if not passes_filters(event, self.node_name, self._services()):
            return
        if event.name == REMOTE_EXEC:
            self._remote_exec(event)
            return
        self.log.debug("agent: new event: {name} ({id})", name=event.name, id=event.id)
        self._buffer.append(event)
        waiters, self._waiters = self._waiters, []
        for wake in waiters:
            wake()

    # --- listing ------------------------------------------------------------------------

    def list(self, name: str = "") -> tuple[int, list[Event]]:
        """(index, events oldest first), only those named `name` when given."""
        events = [e for e in self._buffer if not name or e.name == name]
        return _index_of(events), events

    def wait_list(self, name: str, min_index: int, wait: float) -> Deferred:
        """Consul's blocking list: fires with (index, events) at once unless `min_index` is
        the current index, else when a new event changes it or after `wait` (default and
        cap 600 s). Cancelling the Deferred drops the wait."""
        index, events = self.list(name)
        done: Deferred = Deferred(lambda d: finish(cancelled=True))
        if not min_index or index != min_index:
            done.callback((index, events))
            return done
        timeout = min(wait, MAX_LIST_WAIT) if wait > 0 else MAX_LIST_WAIT

        def finish(cancelled: bool = False) -> None:
            if timer.active():
                timer.cancel()
            if wake in self._waiters:
                self._waiters.remove(wake)
            if not cancelled:
                done.callback(self.list(name))

        def wake() -> None:
            if self.list(name)[0] != min_index:
                finish()
            else:
                self._waiters.append(wake)  # another name's event: keep waiting

        timer = self._reactor.callLater(timeout, finish)
        self._waiters.append(wake)
        return done

