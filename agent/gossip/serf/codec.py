"""Serf messages to bytes and back: a `SerfMessageType` byte, then the go-msgpack struct.

Every decoder raises only `SerfDecodeError` on bad input; the go-msgpack rules are the shared
`agent.gossip.gomsgpack`. Struct field
names and types are serf 0.9.4's (messages.go, keymanager.go, internal_query.go, serf.go's
Member); the golden vectors in tests/data/serf/ pin the exact bytes Go writes.
"""

from __future__ import annotations

from typing import Any, Callable

from agent.gossip import gomsgpack as g
from agent.gossip.serf.errors import SerfDecodeError, serf_decoder
from agent.gossip.serf.messages import (
    ConflictResponse, FilterType, Join, KeyRequest, KeyResponse, Leave, MemberRecord, NodeFilter,
    PushPull, QueryFilter, QueryMessage, QueryResponseMessage, Relay, SerfMessageType, TagFilter,
    UserEventMessage, UserEventRecord, UserEvents)

SerfMessage = (Join | Leave | PushPull | UserEventMessage | QueryMessage | QueryResponseMessage
               | ConflictResponse | KeyRequest | KeyResponse | Relay)

__all__ = ["SerfDecodeError", "SerfMessage", "decode_message", "encode_message",
           "encode_filter", "decode_filter", "message_type"]


# --- struct bodies ----------------------------------------------------------------------------

def _user_events_body(slot: UserEvents | None) -> dict[str, Any] | None:
    if slot is None:
        return None
    events = [g.struct(Name=e.name, Payload=g.nil_if_empty(e.payload)) for e in slot.events]
    return g.struct(LTime=slot.ltime, Events=events)


def _member_body(m: MemberRecord) -> dict[str, Any]:
    pmin, pmax, pcur, dmin, dmax, dcur = m.vsn
    return g.struct(
        Name=m.name, Addr=g.nil_if_empty(m.addr), Port=m.port, Tags=dict(sorted(m.tags.items())),
        Status=m.status, ProtocolMin=pmin, ProtocolMax=pmax, ProtocolCur=pcur,
        DelegateMin=dmin, DelegateMax=dmax, DelegateCur=dcur)


def _body(msg: SerfMessage) -> Any:
    match msg:
        case Join():
            return g.struct(LTime=msg.ltime, Node=msg.node)
        case Leave():
            return g.struct(LTime=msg.ltime, Node=msg.node, Prune=msg.prune)
        case PushPull():
            return g.struct(
                LTime=msg.ltime, StatusLTimes=dict(msg.status_ltimes),
                LeftMembers=list(msg.left_members), EventLTime=msg.event_ltime,
                Events=[_user_events_body(s) for s in msg.events], QueryLTime=msg.query_ltime)
        case UserEventMessage():
            return g.struct(LTime=msg.ltime, Name=msg.name, Payload=g.nil_if_empty(msg.payload),
                            CC=msg.cc)
        case QueryMessage():
            return g.struct(
                LTime=msg.ltime, ID=msg.id, Addr=g.nil_if_empty(msg.addr), Port=msg.port,
                SourceNode=msg.source_node, Filters=list(msg.filters) or None, Flags=msg.flags,
                RelayFactor=msg.relay_factor, Timeout=msg.timeout_ns, Name=msg.name,
                Payload=g.nil_if_empty(msg.payload))
        case QueryResponseMessage():
            return g.struct(LTime=msg.ltime, ID=msg.id, From=msg.source, Flags=msg.flags,
                            Payload=g.nil_if_empty(msg.payload))
        case ConflictResponse():
            return None if msg.member is None else _member_body(msg.member)
        case KeyRequest():
            return g.struct(Key=g.nil_if_empty(msg.key))
        case KeyResponse():
            return g.struct(Result=msg.result, Message=msg.message,
                            Keys=list(msg.keys) or None, PrimaryKey=msg.primary_key)
    raise TypeError(f"not a Serf message: {msg!r}")


_TYPES: dict[type, SerfMessageType] = {
    Leave: SerfMessageType.LEAVE, Join: SerfMessageType.JOIN,
    PushPull: SerfMessageType.PUSH_PULL, UserEventMessage: SerfMessageType.USER_EVENT,
    QueryMessage: SerfMessageType.QUERY, QueryResponseMessage: SerfMessageType.QUERY_RESPONSE,
    ConflictResponse: SerfMessageType.CONFLICT_RESPONSE, KeyRequest: SerfMessageType.KEY_REQUEST,
    KeyResponse: SerfMessageType.KEY_RESPONSE, Relay: SerfMessageType.RELAY,
}


def message_type(msg: SerfMessage) -> SerfMessageType:
    return _TYPES[type(msg)]


def encode_message(msg: SerfMessage) -> bytes:
    """The bytes Serf's encodeMessage (or encodeRelayMessage) writes for `msg`."""
    if isinstance(msg, Relay):
        header = g.struct(
            DestAddr=g.struct(IP=g.nil_if_empty(msg.dest_addr), Port=msg.dest_port,
                              Zone=msg.dest_zone),
            DestName=msg.dest_name)
        return bytes([SerfMessageType.RELAY]) + g.pack(header) + msg.inner
    return bytes([message_type(msg)]) + g.pack(_body(msg))


# --- decoding ---------------------------------------------------------------------------------

def _join(f: dict[str, Any]) -> Join:
    return Join(g.as_uint(f.get("LTime"), "LTime"), g.as_str(f.get("Node"), "Node"))


def _leave(f: dict[str, Any]) -> Leave:
    return Leave(g.as_uint(f.get("LTime"), "LTime"), g.as_str(f.get("Node"), "Node"),
                 g.as_bool(f.get("Prune"), "Prune"))


def _user_events(value: Any) -> UserEvents | None:
    if value is None:
        return None
    f = g.as_struct(value, "Events[]")
    records = []
    for item in g.as_list(f.get("Events"), "Events[].Events"):
        e = g.as_struct(item, "userEvent")
        records.append(UserEventRecord(g.as_str(e.get("Name"), "Name"),
                                       g.as_bytes(e.get("Payload"), "Payload")))
    return UserEvents(g.as_uint(f.get("LTime"), "LTime"), tuple(records))


def _push_pull(f: dict[str, Any]) -> PushPull:
    times = {g.as_str(k, "StatusLTimes"): g.as_uint(v, "StatusLTimes")
             for k, v in g.as_map(f.get("StatusLTimes"), "StatusLTimes").items()}
    return PushPull(
        ltime=g.as_uint(f.get("LTime"), "LTime"), status_ltimes=times,
        left_members=tuple(g.as_str(n, "LeftMembers")
                           for n in g.as_list(f.get("LeftMembers"), "LeftMembers")),
        event_ltime=g.as_uint(f.get("EventLTime"), "EventLTime"),
        events=tuple(_user_events(s) for s in g.as_list(f.get("Events"), "Events")),
        query_ltime=g.as_uint(f.get("QueryLTime"), "QueryLTime"))


def _user_event(f: dict[str, Any]) -> UserEventMessage:
    return UserEventMessage(g.as_uint(f.get("LTime"), "LTime"), g.as_str(f.get("Name"), "Name"),
                            g.as_bytes(f.get("Payload"), "Payload"), g.as_bool(f.get("CC"), "CC"))


def _query(f: dict[str, Any]) -> QueryMessage:
    return QueryMessage(
        ltime=g.as_uint(f.get("LTime"), "LTime"), id=g.as_uint(f.get("ID"), "ID", 32),
        addr=g.as_bytes(f.get("Addr"), "Addr"), port=g.as_uint(f.get("Port"), "Port", 16),
        source_node=g.as_str(f.get("SourceNode"), "SourceNode"),
        filters=tuple(g.as_bytes(x, "Filters") for x in g.as_list(f.get("Filters"), "Filters")),
        flags=g.as_uint(f.get("Flags"), "Flags", 32),
        relay_factor=g.as_uint(f.get("RelayFactor"), "RelayFactor", 8),
        timeout_ns=g.as_int(f.get("Timeout"), "Timeout"), name=g.as_str(f.get("Name"), "Name"),
        payload=g.as_bytes(f.get("Payload"), "Payload"))


def _query_response(f: dict[str, Any]) -> QueryResponseMessage:
    return QueryResponseMessage(
        ltime=g.as_uint(f.get("LTime"), "LTime"), id=g.as_uint(f.get("ID"), "ID", 32),
        source=g.as_str(f.get("From"), "From"), flags=g.as_uint(f.get("Flags"), "Flags", 32),
        payload=g.as_bytes(f.get("Payload"), "Payload"))


def _conflict(value: Any) -> ConflictResponse:
    if value is None:
        return ConflictResponse(None)
    f = g.as_struct(value, "Member")
    vsn = tuple(g.as_uint(f.get(k), k, 8) for k in (
        "ProtocolMin", "ProtocolMax", "ProtocolCur", "DelegateMin", "DelegateMax", "DelegateCur"))
    return ConflictResponse(MemberRecord(
        name=g.as_str(f.get("Name"), "Name"), addr=g.as_bytes(f.get("Addr"), "Addr"),
        port=g.as_uint(f.get("Port"), "Port", 16), tags=g.as_str_map(f.get("Tags"), "Tags"),
        status=g.as_int(f.get("Status"), "Status"), vsn=vsn))  # type: ignore[arg-type]


def _key_request(f: dict[str, Any]) -> KeyRequest:
    return KeyRequest(g.as_bytes(f.get("Key"), "Key"))


def _key_response(f: dict[str, Any]) -> KeyResponse:
    return KeyResponse(
        result=g.as_bool(f.get("Result"), "Result"), message=g.as_str(f.get("Message"), "Message"),
        keys=tuple(g.as_str(k, "Keys") for k in g.as_list(f.get("Keys"), "Keys")),
        primary_key=g.as_str(f.get("PrimaryKey"), "PrimaryKey"))


def _relay(body: bytes) -> Relay:
    header, used = g.unpack_prefix(body)
    f = g.as_struct(header, "relayHeader")
    dest = g.as_struct(f.get("DestAddr"), "DestAddr")
    inner = body[used:]
    if not inner:
        raise SerfDecodeError("relay: no inner message")
    return Relay(dest_addr=g.as_bytes(dest.get("IP"), "DestAddr.IP"),
                 dest_port=g.as_int(dest.get("Port"), "DestAddr.Port"),
                 dest_name=g.as_str(f.get("DestName"), "DestName"), inner=inner,
                 dest_zone=g.as_str(dest.get("Zone"), "DestAddr.Zone"))


_STRUCT_DECODERS: dict[SerfMessageType, Callable[[dict[str, Any]], SerfMessage]] = {
    SerfMessageType.LEAVE: _leave, SerfMessageType.JOIN: _join,
    SerfMessageType.PUSH_PULL: _push_pull, SerfMessageType.USER_EVENT: _user_event,
    SerfMessageType.QUERY: _query, SerfMessageType.QUERY_RESPONSE: _query_response,
    SerfMessageType.KEY_REQUEST: _key_request, SerfMessageType.KEY_RESPONSE: _key_response,
}


@serf_decoder
def decode_message(buf: bytes) -> SerfMessage:
    """Decode one Serf message (type byte first). Raises SerfDecodeError on anything bad."""
    if not buf:
        raise SerfDecodeError("empty message")
    try:
        kind = SerfMessageType(buf[0])
    except ValueError:
        raise SerfDecodeError(f"unknown Serf message type {buf[0]}") from None
    if kind is SerfMessageType.RELAY:
        return _relay(bytes(buf[1:]))
    value = g.unpack_one(bytes(buf[1:]))
    if kind is SerfMessageType.CONFLICT_RESPONSE:
        return _conflict(value)
    return _STRUCT_DECODERS[kind](g.as_struct(value, kind.name))


# --- query filters ----------------------------------------------------------------------------

def encode_filter(filt: QueryFilter) -> bytes:
    if isinstance(filt, NodeFilter):
        return bytes([FilterType.NODE]) + g.pack(list(filt.names))
    return bytes([FilterType.TAG]) + g.pack(g.struct(Tag=filt.tag, Expr=filt.expr))


@serf_decoder
def decode_filter(buf: bytes) -> QueryFilter:
    if not buf:
        raise SerfDecodeError("empty filter")
    if buf[0] == FilterType.NODE:
        names = g.as_list(g.unpack_one(bytes(buf[1:])), "filterNode")
        return NodeFilter(tuple(g.as_str(n, "filterNode") for n in names))
    if buf[0] == FilterType.TAG:
        f = g.as_struct(g.unpack_one(bytes(buf[1:])), "filterTag")
        return TagFilter(g.as_str(f.get("Tag"), "Tag"), g.as_str(f.get("Expr"), "Expr"))
    raise SerfDecodeError(f"unknown filter type {buf[0]}")
