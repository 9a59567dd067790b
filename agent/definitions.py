"""Turn Consul-shaped JSON definitions into our structs, checking everything first.

Three kinds of document arrive from users: a service definition (PUT
/v1/agent/service/register, or a config file's ``service`` block once the config loader has
unwrapped it), a standalone check (PUT /v1/agent/check/register) and a catalog registration or
deregistration (PUT /v1/catalog/register, /v1/catalog/deregister). Each goes through the same
three steps: field names are mapped onto Consul's spelling (`normalize_keys`), the result is
validated against its schema in ``schemas/``, and then the rules that Consul enforces in code
are applied with Consul's own messages ("Missing service name", "Invalid check: ..."). A caller
gets a complete frozen value or an `InvalidRequest`, never part of a definition.

Durations follow Consul's JSON decoding: a string is Go's ``time.ParseDuration`` syntax and a
number is a count of nanoseconds (``time.Duration(float64)``), so ``"TTL": 10`` is 10 ns, not
10 s. Negative durations are rejected.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Mapping

from agent import structs

# -- durations ------------------------------------------------------------------------------
from agent.durations import parse_duration  # noqa: F401 - public re-export
from agent.errors import InvalidRequest
from agent.schemas import SchemaSet, field_path

# -- results --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """A check as the agent will run it; ``definition`` holds the HTTP/TCP details."""

    check_id: str
    name: str
    notes: str = ""
    service_id: str = ""
    status: str = structs.CRITICAL  # the initial status
    ttl: float = 0.0
    definition: structs.CheckDefinition = structs.CheckDefinition()
    args: tuple[str, ...] = ()
    script: str = ""
    docker_container_id: str = ""
    shell: str = ""
    alias_node: str = ""
    alias_service: str = ""
    grpc: str = ""
    type: str = ""  # Consul's Type: "ttl", "http", "tcp", "script", "docker", "alias", "grpc"
    grpc_use_tls: bool = False
    success_before_passing: int = 0
    failures_before_critical: int = 0
    output_max_size: int = 0
    token: str = ""


@dataclass(frozen=True, slots=True)
class ServiceDefinition:
    service: structs.Service  # node is "" (the agent fills it); id defaults to the name
    checks: tuple[CheckSpec, ...]
    token: str = ""


@dataclass(frozen=True, slots=True)
class CatalogRegistration:
    node: structs.Node
    service: structs.Service | None
    checks: tuple[structs.Check, ...]
    skip_node_update: bool
    token: str = ""


@dataclass(frozen=True, slots=True)
class CatalogDeregistration:
    node: str
    service_id: str
    check_id: str
    datacenter: str = ""  # "" means the agent's own
    token: str = ""


# -- decoding -------------------------------------------------------------------------------


def normalize_keys(doc: Any, schema_name: str, schemas: SchemaSet | None = None) -> Any:
    """A copy of ``doc`` with field names spelled as schema ``schema_name`` spells them.

    ``name`` becomes ``Name``, ``check_id`` ``CheckID``, ``http`` ``HTTP``; keys of user maps
    (Meta, NodeMeta, Header, TaggedAddresses) stay as written and unknown keys are left for
    validation to report. ``null`` for a known field means "not given", as in Consul.
    """
    return (schemas or SchemaSet()).normalize_keys(schema_name, doc)


def _checked(doc: Any, schema_name: str, schemas: SchemaSet) -> dict[str, Any]:
    normalized = schemas.normalize_keys(schema_name, doc)
    schemas.validate(schema_name, normalized)
    return normalized


def parse_service_definition(doc: Any, schemas: SchemaSet) -> ServiceDefinition:
    """A service definition as the agent registers it, with its checks numbered as Consul does."""
    raw = _checked(doc, "service", schemas)
    name = raw.get("Name", "")
    if not name:
        raise InvalidRequest("Missing service name")
    address = raw.get("Address", "")
    if _is_any_address(address):
        raise InvalidRequest("Invalid service address")
    weights = _weights(raw.get("Weights"))
    if "Weights" in raw:
        problem = _weights_problem(weights)
        if problem:
            raise InvalidRequest(f"Invalid Weights: {problem}")
    meta = dict(raw.get("Meta", {}))
    problem = _meta_problem(meta)
    if problem:
        raise InvalidRequest(f"Invalid Service Meta: {problem}")
    service_id = raw.get("ID") or name
    refuse_connect(raw)

    # Consul puts "Check" before "Checks", skips a "Check" with nothing set, and numbers the
    # generated IDs by position in that list (1-based) whenever there is more than one check.
    raw_checks: list[tuple[Mapping[str, Any], tuple]] = []
    if "Check" in raw and not _is_empty_check(raw["Check"]):
        raw_checks.append((raw["Check"], ("Service", "Check")))
    for index, check in enumerate(raw.get("Checks", ())):
        raw_checks.append((check, ("Service", "Checks", index)))
    checks = []
    for position, (check, path) in enumerate(raw_checks, start=1):
        check_id = check.get("CheckID") or check.get("ID")
        if not check_id:
            check_id = f"service:{service_id}"
            if len(raw_checks) > 1:
                check_id += f":{position}"
        checks.append(_check_spec(
            check, path,
            check_id=check_id,
            name=check.get("Name") or f"Service '{name}' check",
            service_id=service_id,
        ))

    service = structs.Service(
        node="",
        id=service_id,
        name=name,
        tags=tuple(raw.get("Tags", ())),
        address=address,
        port=int(raw.get("Port", 0)),
        meta=meta,
        tagged_addresses=_service_addresses(raw.get("TaggedAddresses", {})),
        weights=weights,
        enable_tag_override=raw.get("EnableTagOverride", False),
        kind=raw.get("Kind", ""),
    )
    return ServiceDefinition(service=service, checks=tuple(checks), token=raw.get("Token", ""))


def parse_check_definition(doc: Any, schemas: SchemaSet) -> CheckSpec:
    """A standalone check (/v1/agent/check/register); its ID defaults to its name."""
    raw = _checked(doc, "check", schemas)
    name = raw.get("Name", "")
    if not name:
        raise InvalidRequest("Missing check name")
    return _check_spec(
        raw, ("Check",),
        check_id=raw.get("CheckID") or raw.get("ID") or name,
        name=name,
        service_id=raw.get("ServiceID", ""),
    )


def parse_catalog_register(doc: Any, schemas: SchemaSet, default_dc: str) -> CatalogRegistration:
    """A direct catalog write: a node, optionally one service, and any number of checks."""
    raw = _checked(doc, "catalog-register", schemas)
    node_name = raw.get("Node", "")
    if not node_name:
        raise InvalidRequest("Must provide node")
    address = raw.get("Address", "")
    skip_node_update = raw.get("SkipNodeUpdate", False)
    if not address and not skip_node_update:
        raise InvalidRequest("Must provide address if SkipNodeUpdate is not set")
    node_id = raw.get("ID", "")
    if node_id:
        problem = _uuid_problem(node_id)
        if problem:
            raise InvalidRequest(f"Bad node ID: {problem}")
    node = structs.Node(
        name=node_name,
        address=address,
        node_id=node_id,
        datacenter=raw.get("Datacenter") or default_dc,
        tagged_addresses=dict(raw.get("TaggedAddresses", {})),
        meta=dict(raw.get("NodeMeta", {})),
    )

    service = None
    if "Service" in raw:
        service = _catalog_service(raw["Service"], node_name)

    # Consul appends the single "Check" after "Checks".
    raw_checks = [(check, ("Checks", index)) for index, check in enumerate(raw.get("Checks", ()))]
    if "Check" in raw:
        raw_checks.append((raw["Check"], ("Check",)))
    checks = tuple(_catalog_check(check, path, node_name, service) for check, path in raw_checks)

    token = raw.get("Token") or raw.get("WriteRequest", {}).get("Token", "")
    return CatalogRegistration(
        node=node, service=service, checks=checks, skip_node_update=skip_node_update, token=token
    )


def parse_catalog_deregister(doc: Any, schemas: SchemaSet) -> CatalogDeregistration:
    """What to remove from the catalog: the node, or one service or check of it."""
    raw = _checked(doc, "catalog-deregister", schemas)
    if not raw.get("Node"):
        raise InvalidRequest("Must provide node")
    return CatalogDeregistration(
        node=raw["Node"],
        service_id=raw.get("ServiceID", ""),
        check_id=raw.get("CheckID", ""),
        datacenter=raw.get("Datacenter", ""),
        token=raw.get("Token") or raw.get("WriteRequest", {}).get("Token", ""),
    )


# -- checks ---------------------------------------------------------------------------------

_DURATION_FIELDS = ("TTL", "Interval", "Timeout", "DeregisterCriticalServiceAfter")
# Accepted in a service's check but not part of how it runs (Consul ignores them there).
_NOT_CHECK_TYPE_FIELDS = frozenset({"ServiceID", "Token", "Namespace", "Definition"})


def _durations(raw: Mapping[str, Any], path: tuple) -> dict[str, float]:
    found = {}
    for key in _DURATION_FIELDS:
        if key in raw:
            try:
                found[key] = parse_duration(raw[key])
            except InvalidRequest as exc:
                raise InvalidRequest(f'Invalid field "{field_path(*path, key)}": {exc}') from None
    return found


def _is_empty_check(raw: Mapping[str, Any]) -> bool:
    """Whether every field is unset or zero, which Consul treats as "no check"."""
    for key, value in raw.items():
        if key in _NOT_CHECK_TYPE_FIELDS:
            continue
        if key in _DURATION_FIELDS:
            try:
                if parse_duration(value) == 0:
                    continue
            except InvalidRequest:
                pass  # not empty; the parser reports it with its path
            return False
        if isinstance(value, (list, dict)) or value not in ("", 0):
            return False
    return True


def _check_spec(raw: Mapping[str, Any], path: tuple, *, check_id: str, name: str,
                service_id: str) -> CheckSpec:
    durations = _durations(raw, path)
    ttl, interval = durations.get("TTL", 0.0), durations.get("Interval", 0.0)
    args = tuple(raw.get("Args") or raw.get("ScriptArgs") or ())
    script = raw.get("Script", "")
    http, tcp, grpc = raw.get("HTTP", ""), raw.get("TCP", ""), raw.get("GRPC", "")
    alias = bool(raw.get("AliasNode") or raw.get("AliasService"))
    is_script = bool(args or script)
    output_max_size = int(raw.get("OutputMaxSize", 0))

    # Consul's CheckType.Validate: the first rule broken, in its order and with its words.
    interval_check = is_script or bool(http or tcp or grpc)
    rules = (
        (interval > 0 and ttl > 0, "Interval and TTL cannot both be specified"),
        (interval_check and interval <= 0, "Interval must be > 0 for Script, HTTP, or TCP checks"),
        (interval_check and alias, "Interval cannot be set for Alias checks"),
        (alias and ttl > 0, "TTL must be not be set for Alias checks"),
        (not interval_check and not alias and ttl <= 0, "TTL must be > 0 for TTL checks"),
        (output_max_size < 0, "MaxOutputMaxSize must be positive"),
    )
    for broken, problem in rules:
        if broken:
            raise InvalidRequest(f"Invalid check: {problem}")

    # Consul's CheckType.Type(); the rules above leave exactly one kind possible, and a
    # check that got this far without any other kind runs a script.
    docker = raw.get("DockerContainerID", "")
    kinds = ((grpc, "grpc"), (http, "http"), (ttl > 0, "ttl"), (tcp, "tcp"), (alias, "alias"),
             (docker, "docker"))
    kind = next((name for present, name in kinds if present), "script")
    return CheckSpec(
        check_id=check_id,
        name=name,
        notes=raw.get("Notes", ""),
        service_id=service_id,
        status=raw.get("Status") or structs.CRITICAL,
        ttl=ttl,
        definition=_definition(raw, durations),
        args=args,
        script=script,
        docker_container_id=docker,
        shell=raw.get("Shell", ""),
        alias_node=raw.get("AliasNode", ""),
        alias_service=raw.get("AliasService", ""),
        grpc=grpc,
        type=kind,
        grpc_use_tls=raw.get("GRPCUseTLS", False),
        success_before_passing=int(raw.get("SuccessBeforePassing", 0)),
        failures_before_critical=int(raw.get("FailuresBeforeCritical", 0)),
        output_max_size=output_max_size,
        token=raw.get("Token", ""),
    )


def _definition(raw: Mapping[str, Any], durations: Mapping[str, float]) -> structs.CheckDefinition:
    header = raw.get("Header")
    return structs.CheckDefinition(
        interval=durations.get("Interval", 0.0),
        timeout=durations.get("Timeout", 0.0),
        deregister_critical_service_after=durations.get("DeregisterCriticalServiceAfter", 0.0),
        http=raw.get("HTTP", ""),
        header=None if header is None else {key: tuple(values) for key, values in header.items()},
        method=raw.get("Method", ""),
        body=raw.get("Body", ""),
        tls_skip_verify=raw.get("TLSSkipVerify", False),
        tcp=raw.get("TCP", ""),
    )


# -- catalog --------------------------------------------------------------------------------


def _catalog_service(raw: Mapping[str, Any], node_name: str) -> structs.Service:
    name, service_id = raw.get("Service", ""), raw.get("ID", "")
    if service_id and not name:
        raise InvalidRequest("Must provide service name with ID")
    if not name:
        raise InvalidRequest("Missing service name")
    address = raw.get("Address", "")
    if _is_any_address(address):
        raise InvalidRequest("Invalid service address")
    refuse_connect(raw)
    return structs.Service(
        node=node_name,
        id=service_id or name,
        name=name,
        tags=tuple(raw.get("Tags", ())),
        address=address,
        port=int(raw.get("Port", 0)),
        meta=dict(raw.get("Meta", {})),
        tagged_addresses=_service_addresses(raw.get("TaggedAddresses", {})),
        weights=_catalog_weights(raw.get("Weights")),
        enable_tag_override=raw.get("EnableTagOverride", False),
        kind=raw.get("Kind", ""),
    )


def _catalog_weights(raw: Mapping[str, Any] | None) -> structs.Weights:
    """A catalog write's weights: Consul keeps valid ones and puts the default (1, 1) in place
    of any it would refuse in an agent registration (a DNS SRV weight is 16 bits)."""
    weights = _weights(raw)
    return structs.Weights() if _weights_problem(weights) else weights


def _catalog_check(raw: Mapping[str, Any], path: tuple, node_name: str,
                   service: structs.Service | None) -> structs.Check:
    # As Consul: the ID defaults to the name. Consul would fail later on a check with
    # neither, inside the state store; we say so up front.
    check_id = raw.get("CheckID") or raw.get("Name", "")
    if not check_id:
        raise InvalidRequest(
            f'Invalid field "{field_path(*path, "CheckID")}": must provide CheckID or Name'
        )
    definition = raw.get("Definition", {})
    durations = _durations(definition, path + ("Definition",))
    service_id = raw.get("ServiceID", "")
    # A check of the service registered in this same request takes its name and tags; one
    # naming another service is resolved (or refused) by the state store.
    linked = service is not None and service_id == service.id
    return structs.Check(
        node=raw.get("Node") or node_name,
        check_id=check_id,
        name=raw.get("Name", ""),
        status=raw.get("Status") or structs.CRITICAL,
        notes=raw.get("Notes", ""),
        output=raw.get("Output", ""),
        service_id=service_id,
        service_name=service.name if linked else "",
        service_tags=service.tags if linked else (),
        type=raw.get("Type", ""),
        definition=_definition(definition, durations),
    )


# -- shared rules ---------------------------------------------------------------------------


def _weights(raw: Mapping[str, Any] | None) -> structs.Weights:
    if raw is None:
        return structs.Weights()
    # Go decodes a given Weights object into a zeroed struct: a missing field is 0.
    return structs.Weights(passing=int(raw.get("Passing", 0)), warning=int(raw.get("Warning", 0)))


def _weights_problem(weights: structs.Weights) -> str | None:
    if weights.passing < 1:
        return "Passing must be greater than 0"
    if weights.warning < 0:
        return "Warning must be greater or equal than 0"
    if weights.passing > 65535 or weights.warning > 65535:
        return "DNS Weight must be between 0 and 65535"
    return None


def _service_addresses(raw: Mapping[str, Any]) -> dict[str, structs.ServiceAddress]:
    return {
        tag: structs.ServiceAddress(value.get("Address", ""), int(value.get("Port", 0)))
        for tag, value in raw.items()
    }


_META_KEY = re.compile(r"[a-zA-Z0-9_-]+\Z")


def _meta_problem(meta: Mapping[str, str]) -> str | None:
    """Consul's limits on service metadata, with its messages (the "Node" is Consul's)."""
    if len(meta) > 64:
        return "Node metadata cannot contain more than 64 key/value pairs"
    for key, value in meta.items():
        if key == "":
            reason = "Key cannot be blank"
        elif not _META_KEY.match(key):
            reason = "Key contains invalid characters"
        elif len(key) > 128:
            reason = "Key is too long (limit: 128 characters)"
        elif key.startswith("consul-"):
            reason = "Key prefix 'consul-' is reserved for internal use"
        elif len(value.encode("utf-8")) > 512:
            reason = "Value is too long (limit: 512 characters)"
        else:
            continue
        return f"Couldn't load metadata pair ('{key}', '{value}'): {reason}"
    return None


def _is_any_address(address: str) -> bool:
    return address in ("0.0.0.0", "::", "[::]")


def _uuid_problem(text: str) -> str | None:
    """What Go's uuid.ParseUUID would object to, in its words."""
    if len(text) != 36:
        return "uuid string is wrong length"
    if any(text[i] != "-" for i in (8, 13, 18, 23)):
        return "uuid is improperly formatted"
    for char in text.replace("-", ""):
        if char not in "0123456789abcdefABCDEF":
            return f"encoding/hex: invalid byte: U+{ord(char):04X} '{char}'"
    return None


# -- Connect (not built) -----------------------------------------------------------------------

_CONNECT_KINDS = ("connect-proxy", "mesh-gateway", "terminating-gateway", "ingress-gateway")
CONNECT_UNSUPPORTED = ("Connect (service mesh) is not supported yet: refusing the registration "
                       "rather than dropping its {what}")


def _is_zero(value: Any) -> bool:
    """Go's zero value for a JSON field: what Consul itself sends back for an unset struct."""
    if isinstance(value, Mapping):
        return all(_is_zero(v) for v in value.values())
    if isinstance(value, list):
        return not value
    return value in (None, "", 0, False)


def refuse_connect(raw: Mapping[str, Any]) -> None:
    """A service naming a Connect kind, a proxy or Connect settings cannot work here yet; say
    so with a 400 instead of storing it without them (zero values, as Consul echoes them, pass)."""
    kind = raw.get("Kind") or ""
    if kind in _CONNECT_KINDS:  # other kinds are kept as given, as Consul keeps them
        raise InvalidRequest(CONNECT_UNSUPPORTED.format(what=f'Kind "{kind}"'))
    connect = raw.get("Connect")
    # An empty SidecarService still asks for a sidecar with the defaults.
    sidecar = isinstance(connect, Mapping) and connect.get("SidecarService") is not None
    for key in ("Proxy", "Connect"):
        if sidecar or not _is_zero(raw.get(key)):
            raise InvalidRequest(CONNECT_UNSUPPORTED.format(what=f"{key} settings"))
