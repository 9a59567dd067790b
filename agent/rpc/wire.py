"""The server RPC's bodies: each typed query and command <-> the args of Consul's endpoint.

Table-driven, both ways, with Consul 1.8.7's struct field names (agent/structs/structs.go):
a query becomes e.g. `Health.ServiceNodes` with a ServiceSpecificRequest {Datacenter,
ServiceName, ServiceTags, TagFilter, NodeMetaFilters, Token, MinQueryIndex, MaxQueryTime,
AllowStale, RequireConsistent, MaxStaleDuration, Filter, ...}; its answer an
IndexedCheckServiceNodes {Nodes, Index, LastContact, KnownLeader, ConsistencyLevel}. As
go-msgpack does, embedded structs (QueryOptions, QueryMeta, WriteRequest, RaftIndex) are
flattened into their parent; durations are int64 nanoseconds (a session's TTL is a string,
as in Consul).

Waypost's own additions, which a Consul peer would skip as unknown keys: a write's answer is
{Index, Result} (Consul answers the bare value; Waypost's writes report the index applied at),
`ExpectedIndex` on a KV op when it has one, `Passing` is applied by the client as Consul's HTTP
handler does, and the endpoints Consul lacks (KVS.Tombstones, Session.Expiries,
Txn.SessionApply).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from agent import structs as s
from agent.durations import go_duration, parse_duration
from agent.errors import InvalidRequest
from agent.fsm.commands import (Deregister, KVOperation, Register, SessionCreate, SessionDestroy,
                                SessionTxn, SessionTxnResult, Txn)
from agent.rpc import queries as q
from agent.rpc.options import CONSISTENT, DEFAULT, STALE, QueryMeta, QueryOptions
from agent.rpc.requests import SessionRenew
from agent.state.catalog import is_healthy

_NS = 1_000_000_000


class WireError(InvalidRequest):
    """A body that does not hold what its endpoint takes (the message names the field)."""


# --- field kinds: (encode, decode) -----------------------------------------------------------

def _want(kind: type | tuple, name: str) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise WireError(f"{name}: expected {getattr(kind, '__name__', kind)}, "
                            f"got {type(value).__name__}")
        return value
    return check


_str = _want(str, "string")
_int = _want(int, "integer")
_bool = _want(bool, "bool")


def _strs(v: Any) -> tuple[str, ...]:
    return tuple(_str(x) for x in _want(list, "list")(v or []))


def _strmap(v: Any) -> dict[str, str]:
    return {_str(k): _str(x) for k, x in _want(dict, "map")(v or {}).items()}


def _dur_dec(v: Any) -> float:
    return _int(v) / _NS


def _dur_enc(v: float) -> int:
    return round(v * _NS)


IDENT = (lambda v: v, None)
STR = (lambda v: v, _str)
INT = (lambda v: v, _int)
BOOL = (lambda v: v, _bool)
STRS = (list, _strs)
STRMAP = (dict, _strmap)
DUR = (_dur_enc, _dur_dec)
BYTES = (lambda v: v, lambda v: None if v is None else bytes(_want((bytes, str), "bytes")(v)
                                                             if not isinstance(v, str)
                                                             else v.encode()))
OPT_STRS = (lambda v: None if v is None else list(v), lambda v: None if v is None else _strs(v))


@dataclass(frozen=True)
class Struct:
    """A Python dataclass as a Go struct: (Go name, attribute, kind) per field."""

    cls: type
    fields: tuple[tuple[str, str, tuple], ...]

    def encode(self, obj: Any) -> dict[str, Any]:
        return {go: enc(getattr(obj, attr)) for go, attr, (enc, _) in self.fields}

    def decode(self, data: Any, **extra: Any) -> Any:
        data = _want(dict, self.cls.__name__)(data)
        kwargs = dict(extra)
        for go, attr, (_, dec) in self.fields:
            if go in data and (data[go] is not None or dec in (BYTES[1], OPT_STRS[1])):
                try:
                    kwargs[attr] = data[go] if dec is None else dec(data[go])
                except WireError as exc:
                    raise WireError(f"{self.cls.__name__}.{go}: {exc}") from None
        try:
            return self.cls(**kwargs)
        except TypeError as exc:
            raise WireError(f"{self.cls.__name__}: {exc}") from None


def nested(spec: Struct) -> tuple:
    return (spec.encode, spec.decode)


def listof(spec: Struct) -> tuple:
    return (lambda v: [spec.encode(x) for x in v],
            lambda v: tuple(spec.decode(x) for x in _want(list, "list")(v or [])))


RAFT = (("CreateIndex", "create_index", INT), ("ModifyIndex", "modify_index", INT))
WEIGHTS = Struct(s.Weights, (("Passing", "passing", INT), ("Warning", "warning", INT)))
SERVICE_ADDRESS = Struct(s.ServiceAddress, (("Address", "address", STR), ("Port", "port", INT)))
_TADDRS = (lambda v: {k: SERVICE_ADDRESS.encode(a) for k, a in v.items()},
           lambda v: {_str(k): SERVICE_ADDRESS.decode(a) for k, a in _want(dict, "map")(v).items()})
_HEADER = (lambda v: None if v is None else {k: list(x) for k, x in v.items()},
           lambda v: None if v is None else {_str(k): _strs(x) for k, x in v.items()})
NODE = Struct(s.Node, (("ID", "node_id", STR), ("Node", "name", STR), ("Address", "address", STR),
                       ("Datacenter", "datacenter", STR),
                       ("TaggedAddresses", "tagged_addresses", STRMAP),
                       ("Meta", "meta", STRMAP), *RAFT))
SERVICE = Struct(s.Service, (  # Consul's NodeService (the node is its parent's)
    ("Kind", "kind", STR), ("ID", "id", STR), ("Service", "name", STR), ("Tags", "tags", STRS),
    ("Address", "address", STR), ("TaggedAddresses", "tagged_addresses", _TADDRS),
    ("Meta", "meta", STRMAP), ("Port", "port", INT), ("Weights", "weights", nested(WEIGHTS)),
    ("EnableTagOverride", "enable_tag_override", BOOL), *RAFT))
DEFINITION = Struct(s.CheckDefinition, (
    ("HTTP", "http", STR), ("TLSSkipVerify", "tls_skip_verify", BOOL), ("Header", "header", _HEADER),
    ("Method", "method", STR), ("Body", "body", STR), ("TCP", "tcp", STR),
    ("Interval", "interval", DUR), ("Timeout", "timeout", DUR),
    ("DeregisterCriticalServiceAfter", "deregister_critical_service_after", DUR)))
CHECK = Struct(s.Check, (
    ("Node", "node", STR), ("CheckID", "check_id", STR), ("Name", "name", STR),
    ("Status", "status", STR), ("Notes", "notes", STR), ("Output", "output", STR),
    ("ServiceID", "service_id", STR), ("ServiceName", "service_name", STR),
    ("ServiceTags", "service_tags", STRS), ("Type", "type", STR),
    ("Definition", "definition", nested(DEFINITION)), *RAFT))
DIRENT = Struct(s.KVEntry, (("LockIndex", "lock_index", INT), ("Key", "key", STR),
                            ("Flags", "flags", INT), ("Value", "value", BYTES),
                            ("Session", "session", STR), *RAFT))
SERVICE_CHECK = Struct(s.ServiceCheck, (("ID", "id", STR), ("Namespace", "namespace", STR)))
_OPT_SERVICE_CHECKS = (lambda v: None if v is None else listof(SERVICE_CHECK)[0](v),
                       lambda v: None if v is None else listof(SERVICE_CHECK)[1](v))
SESSION = Struct(s.Session, (
    ("ID", "id", STR), ("Name", "name", STR), ("Node", "node", STR),
    ("Checks", "legacy_checks", STRS), ("NodeChecks", "checks", OPT_STRS),
    ("ServiceChecks", "service_checks", _OPT_SERVICE_CHECKS), ("LockDelay", "lock_delay", DUR),
    ("Behavior", "behavior", STR),
    ("TTL", "ttl", (lambda v: go_duration(v) if v else "",
                    lambda v: parse_duration(_str(v)) if v else 0.0)), *RAFT))
TXN_ERROR = Struct(s.TxnError, (("OpIndex", "op_index", INT), ("What", "what", STR)))


def encode_service_node(row: q.ServiceNode) -> dict[str, Any]:
    """Consul's flattened ServiceNode (its RaftIndex is the service's)."""
    n, svc = NODE.encode(row.node), SERVICE.encode(row.service)
    out = {k: n[k] for k in ("ID", "Node", "Address", "Datacenter", "TaggedAddresses")}
    out["NodeMeta"] = n["Meta"]
    for go in ("Kind", "ID", "Tags", "Address", "TaggedAddresses", "Weights", "Meta", "Port",
               "EnableTagOverride"):
        out["Service" + go] = svc[go]
    out.update(ServiceName=svc["Service"], CreateIndex=svc["CreateIndex"],
               ModifyIndex=svc["ModifyIndex"])
    return out


def decode_service_node(d: Any) -> q.ServiceNode:
    d = _want(dict, "ServiceNode")(d)
    node = NODE.decode({**{k: d.get(k) for k in ("ID", "Node", "Address", "Datacenter",
                                                 "TaggedAddresses")}, "Meta": d.get("NodeMeta")})
    fields = {go: d.get("Service" + go) for go in ("Kind", "ID", "Tags", "Address",
                                                   "TaggedAddresses", "Weights", "Meta", "Port",
                                                   "EnableTagOverride")}
    fields.update(Service=d.get("ServiceName"), CreateIndex=d.get("CreateIndex"),
                  ModifyIndex=d.get("ModifyIndex"))
    return q.ServiceNode(node, SERVICE.decode(fields, node=node.name))


def encode_csn(row: q.CheckServiceNode) -> dict[str, Any]:
    return {"Node": NODE.encode(row.node), "Service": SERVICE.encode(row.service),
            "Checks": [CHECK.encode(c) for c in row.checks]}


def decode_csn(d: Any) -> q.CheckServiceNode:
    d = _want(dict, "CheckServiceNode")(d)
    node = NODE.decode(d.get("Node"))
    return q.CheckServiceNode(node, SERVICE.decode(d.get("Service"), node=node.name),
                              listof(CHECK)[1](d.get("Checks")))


def encode_node_services(v: q.NodeServices | None) -> Any:
    if v is None:
        return None
    return {"Node": NODE.encode(v.node),
            "Services": {k: SERVICE.encode(x) for k, x in v.services.items()}}


def decode_node_services(d: Any) -> q.NodeServices | None:
    if d is None:
        return None
    node = NODE.decode(_want(dict, "NodeServices")(d).get("Node"))
    services = _want(dict, "Services")(d.get("Services") or {})
    return q.NodeServices(node, {_str(k): SERVICE.decode(x, node=node.name)
                                 for k, x in services.items()})


def _rows(enc, dec) -> tuple:
    return (lambda v: [enc(x) for x in v], lambda v: [dec(x) for x in _want(list, "list")(v or [])])


# --- queries ---------------------------------------------------------------------------------

def encode_options(o: QueryOptions) -> dict[str, Any]:
    return {"Token": o.token, "MinQueryIndex": o.min_index, "MaxQueryTime": _dur_enc(o.wait),
            "AllowStale": o.consistency == STALE,
            "RequireConsistent": o.consistency == CONSISTENT,
            "MaxStaleDuration": _dur_enc(o.max_stale), "Filter": o.filter}


def decode_options(d: dict[str, Any]) -> QueryOptions:
    mode = (CONSISTENT if d.get("RequireConsistent") else STALE if d.get("AllowStale")
            else DEFAULT)
    return QueryOptions(datacenter=_str(d.get("Datacenter") or ""), token=_str(d.get("Token") or ""),
                        consistency=mode, max_stale=_dur_dec(d.get("MaxStaleDuration") or 0),
                        min_index=_int(d.get("MinQueryIndex") or 0),
                        wait=_dur_dec(d.get("MaxQueryTime") or 0),
                        filter=_str(d.get("Filter") or ""))


def encode_meta(m: QueryMeta) -> dict[str, Any]:
    consistency = {"leader": "leader"}.get(m.consistency, m.consistency)
    return {"Index": m.index, "LastContact": _dur_enc(m.last_contact),
            "KnownLeader": m.known_leader, "ConsistencyLevel": consistency}


def decode_meta(d: dict[str, Any]) -> QueryMeta:
    return QueryMeta(index=_int(d.get("Index") or 0), known_leader=bool(d.get("KnownLeader")),
                     last_contact=_dur_dec(d.get("LastContact") or 0),
                     consistency=_str(d.get("ConsistencyLevel") or DEFAULT))


_META = (dict, lambda v: tuple(sorted(_strmap(v).items())))


@dataclass(frozen=True)
class ReadSpec:
    """One query type: its endpoint, its args' fields beyond Datacenter and QueryOptions,
    and the result field of the answer with that field's codec."""

    cls: type
    args: tuple[tuple[str, str, tuple], ...]
    result: str
    codec: tuple


_SVC_ARGS = (("ServiceName", "service", STR), ("ServiceTags", "tags", STRS),
             ("NodeMetaFilters", "node_meta", _META))
_KV = (lambda v: [DIRENT.encode(v)] if v is not None else [],
       lambda v: DIRENT.decode(v[0]) if v else None)

READ_SPECS: dict[str, ReadSpec] = {spec.cls.ENDPOINT: spec for spec in (
    ReadSpec(q.KVGet, (("Key", "key", STR),), "Entries", _KV),
    ReadSpec(q.KVList, (("Key", "prefix", STR),), "Entries", _rows(DIRENT.encode, DIRENT.decode)),
    ReadSpec(q.KVKeys, (("Prefix", "prefix", STR), ("Seperator", "separator", STR)), "Keys",
             (list, lambda v: [_str(x) for x in v or []])),
    ReadSpec(q.KVTombstones, (("Key", "prefix", STR),), "Tombstones",
             (lambda v: [[k, i] for k, i in v], lambda v: [(_str(k), _int(i)) for k, i in v or []])),
    ReadSpec(q.CatalogDatacenters, (), "Datacenters", (list, lambda v: [_str(x) for x in v])),
    ReadSpec(q.CatalogNodes, (("NodeMetaFilters", "node_meta", _META),), "Nodes",
             _rows(NODE.encode, NODE.decode)),
    ReadSpec(q.CatalogServices, (("NodeMetaFilters", "node_meta", _META),), "Services",
             (dict, lambda v: {_str(k): list(_strs(x)) for k, x in v.items()})),
    ReadSpec(q.CatalogServiceNodes, _SVC_ARGS, "ServiceNodes",
             _rows(encode_service_node, decode_service_node)),
    ReadSpec(q.CatalogNodeServices, (("Node", "node", STR),), "NodeServices",
             (encode_node_services, decode_node_services)),
    ReadSpec(q.HealthNodeChecks, (("Node", "node", STR),), "HealthChecks",
             _rows(CHECK.encode, CHECK.decode)),
    ReadSpec(q.HealthServiceChecks, (_SVC_ARGS[0], _SVC_ARGS[2]), "HealthChecks",
             _rows(CHECK.encode, CHECK.decode)),
    ReadSpec(q.HealthServiceNodes, _SVC_ARGS, "Nodes", _rows(encode_csn, decode_csn)),
    ReadSpec(q.HealthChecksInState, (("State", "state", STR),
                                     ("NodeMetaFilters", "node_meta", _META)), "HealthChecks",
             _rows(CHECK.encode, CHECK.decode)),
    ReadSpec(q.ServiceDump, (), "Nodes", _rows(encode_csn, decode_csn)),
    ReadSpec(q.SessionGet, (("SessionID", "id", STR),), "Sessions",
             _rows(SESSION.encode, SESSION.decode)),
    ReadSpec(q.SessionList, (), "Sessions", _rows(SESSION.encode, SESSION.decode)),
    ReadSpec(q.SessionNode, (("Node", "node", STR),), "Sessions",
             _rows(SESSION.encode, SESSION.decode)),
    ReadSpec(q.SessionExpiries, (("SessionIDs", "ids", STRS),), "Expiries",
             (dict, lambda v: {_str(k): float(x) for k, x in v.items()})),
)}


def encode_read(query: Any, options: QueryOptions) -> tuple[str, dict[str, Any]]:
    """(endpoint, args) of a read; the `passing` filter stays with the caller (Consul's HTTP
    handler applies it after the RPC)."""
    endpoint = getattr(query, "ENDPOINT", None)
    spec = READ_SPECS.get(endpoint)
    if spec is None or type(query) is not spec.cls:
        raise InvalidRequest(f"no server endpoint answers {type(query).__name__}")
    args = {go: enc(getattr(query, attr)) for go, attr, (enc, _) in spec.args}
    if isinstance(query, q.HealthServiceNodes) and query.tags:
        args["TagFilter"] = True
    return endpoint, {"Datacenter": options.datacenter, **args, **encode_options(options)}


def decode_read(endpoint: str, args: Any) -> tuple[Any, QueryOptions]:
    spec = READ_SPECS[endpoint]
    args = _want(dict, endpoint)(args)
    return Struct(spec.cls, spec.args).decode(args), decode_options(args)


def encode_read_result(endpoint: str, value: Any, meta: QueryMeta) -> dict[str, Any]:
    spec = READ_SPECS[endpoint]
    return {spec.result: spec.codec[0](value), **encode_meta(meta)}


def decode_read_result(query: Any, body: Any) -> tuple[Any, QueryMeta]:
    spec = READ_SPECS[query.ENDPOINT]
    body = _want(dict, spec.result)(body)
    value = spec.codec[1](body.get(spec.result))
    if isinstance(query, q.HealthServiceNodes) and query.passing:
        value = [row for row in value if is_healthy(row.checks, True)]
    return value, decode_meta(body)


# --- writes ----------------------------------------------------------------------------------

def _kv_op(op: KVOperation, verb: str = "Op") -> dict[str, Any]:
    out = {verb: op.op, "DirEnt": DIRENT.encode(op.entry)}
    if op.expected_index:
        out["ExpectedIndex"] = op.expected_index
    return out


def _kv_op_dec(d: Any, verb: str = "Op") -> KVOperation:
    d = _want(dict, "KV op")(d)
    return KVOperation(op=_str(d.get(verb) or ""), entry=DIRENT.decode(d.get("DirEnt")),
                       expected_index=_int(d.get("ExpectedIndex") or 0))


def _txn_ops(ops) -> list:
    return [{"KV": _kv_op(op, "Verb")} for op in ops]


def _txn_ops_dec(v: Any) -> tuple[KVOperation, ...]:
    return tuple(_kv_op_dec(_want(dict, "TxnOp")(x).get("KV"), "Verb")
                 for x in _want(list, "Ops")(v or []))


def _register(c: Register) -> dict[str, Any]:
    n = c.node
    return {"Datacenter": n.datacenter, "ID": n.node_id, "Node": n.name, "Address": n.address,
            "TaggedAddresses": dict(n.tagged_addresses), "NodeMeta": dict(n.meta),
            "Service": None if c.service is None else SERVICE.encode(c.service),
            "Checks": [CHECK.encode(x) for x in c.checks], "SkipNodeUpdate": c.skip_node_update}


def _register_dec(d: dict[str, Any]) -> Register:
    node = NODE.decode({k: d.get(k) for k in ("ID", "Node", "Address", "Datacenter",
                                              "TaggedAddresses")} | {"Meta": d.get("NodeMeta")})
    service = d.get("Service")
    return Register(node=node, service=None if service is None else
                    SERVICE.decode(service, node=node.name),
                    checks=listof(CHECK)[1](d.get("Checks")),
                    skip_node_update=bool(d.get("SkipNodeUpdate")))


def _outcome(v: s.TxnOutcome) -> dict[str, Any]:
    return {"Results": None if v.results is None else [{"KV": DIRENT.encode(e)} for e in v.results],
            "Errors": None if v.errors is None else [TXN_ERROR.encode(e) for e in v.errors]}


def _outcome_dec(d: Any) -> s.TxnOutcome:
    d = _want(dict, "TxnResponse")(d)
    results, errors = d.get("Results"), d.get("Errors")
    return s.TxnOutcome(
        results=None if results is None else tuple(DIRENT.decode(_want(dict, "TxnResult")(r)
                                                                  .get("KV")) for r in results),
        errors=None if errors is None else listof(TXN_ERROR)[1](errors))


_SESSION_OPT = (lambda v: None if v is None else SESSION.encode(v),
                lambda v: None if v is None else SESSION.decode(v))
_PLAIN = (lambda v: v, lambda v: v)


@dataclass(frozen=True)
class WriteSpec:
    """One command type: its endpoint (and Op, for endpoints that take several), the args
    beyond Datacenter and Token both ways, and the codec of what it returns."""

    cls: type
    endpoint: str
    op: str
    encode: Callable[[Any], dict[str, Any]]
    decode: Callable[[dict[str, Any]], Any]
    result: tuple = _PLAIN


WRITE_SPECS: tuple[WriteSpec, ...] = (
    WriteSpec(Register, "Catalog.Register", "", _register, _register_dec),
    WriteSpec(Deregister, "Catalog.Deregister", "",
              lambda c: {"Node": c.node, "ServiceID": c.service_id, "CheckID": c.check_id},
              lambda d: Deregister(_str(d.get("Node") or ""), _str(d.get("ServiceID") or ""),
                                   _str(d.get("CheckID") or ""))),
    WriteSpec(KVOperation, "KVS.Apply", "", _kv_op, _kv_op_dec),
    WriteSpec(Txn, "Txn.Apply", "", lambda c: {"Ops": _txn_ops(c.ops)},
              lambda d: Txn(_txn_ops_dec(d.get("Ops"))), (_outcome, _outcome_dec)),
    WriteSpec(SessionCreate, "Session.Apply", "create",
              lambda c: {"Session": SESSION.encode(c.session)},
              lambda d: SessionCreate(SESSION.decode(d.get("Session")))),
    WriteSpec(SessionDestroy, "Session.Apply", "destroy",
              lambda c: {"Session": {"ID": c.id}},
              lambda d: SessionDestroy(_str(_want(dict, "Session")(d.get("Session")).get("ID")
                                            or ""))),
    WriteSpec(SessionRenew, "Session.Renew", "", lambda c: {"SessionID": c.id},
              lambda d: SessionRenew(_str(d.get("SessionID") or "")), _SESSION_OPT),
    WriteSpec(SessionTxn, "Txn.SessionApply", "",  # Waypost's own
              lambda c: {"Ops": _txn_ops(c.ops), "Create": _SESSION_OPT[0](c.create),
                         "Destroy": list(c.destroy)},
              lambda d: SessionTxn(_txn_ops_dec(d.get("Ops")), _SESSION_OPT[1](d.get("Create")),
                                   _strs(d.get("Destroy"))),
              (lambda v: {"Session": v.session, **_outcome(v.outcome)},
               lambda d: SessionTxnResult(_str(d.get("Session") or ""), _outcome_dec(d)))),
)
_WRITE_BY_CLASS = {spec.cls: spec for spec in WRITE_SPECS}
_WRITE_BY_NAME = {(spec.endpoint, spec.op): spec for spec in WRITE_SPECS}
WRITE_ENDPOINTS = frozenset(spec.endpoint for spec in WRITE_SPECS)


def encode_write(command: Any, datacenter: str, token: str) -> tuple[str, dict[str, Any]]:
    spec = _WRITE_BY_CLASS.get(type(command))
    if spec is None:
        raise InvalidRequest(f"no server endpoint takes {type(command).__name__}")
    args = {"Datacenter": datacenter, **spec.encode(command), "Token": token}
    if spec.op:
        args["Op"] = spec.op
    return spec.endpoint, args


def decode_write(endpoint: str, args: Any) -> tuple[Any, str, str]:
    """(command, datacenter, token) from a write's args."""
    args = _want(dict, endpoint)(args)
    op = args.get("Op", "") if endpoint == "Session.Apply" else ""
    spec = _WRITE_BY_NAME.get((endpoint, op))
    if spec is None:
        raise WireError(f"{endpoint}: unknown Op {op!r}")
    return (spec.decode(args), _str(args.get("Datacenter") or ""),
            _str(args.get("Token") or ""))


def encode_write_result(command: Any, index: int, value: Any) -> dict[str, Any]:
    return {"Index": index, "Result": _WRITE_BY_CLASS[type(command)].result[0](value)}


def decode_write_result(command: Any, body: Any) -> tuple[int, Any]:
    body = _want(dict, "write result")(body)
    return (_int(body.get("Index") or 0),
            _WRITE_BY_CLASS[type(command)].result[1](body.get("Result")))
