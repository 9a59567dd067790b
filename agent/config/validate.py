"""Checks one config source (a file, or the command line) before it is merged.

Owns: `ConfigError`, and `SourceChecker`, which validates a source against
``schemas/agent-config.json``, then applies the rules Consul enforces in code (durations,
log level, node ID, datacenter, gossip key, watch parameters) and parses the source's service
and check definitions through `agent.definitions`. Keys are matched case-insensitively
and, for HCL files, a single block stands for a list of one, as Consul reads them. Every message starts with the source's name
and, for a value, its JSON pointer: ``a.json: /ports/http: 'abc' is not of type 'integer'``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from agent.definitions import (
    CheckSpec,
    ServiceDefinition,
    parse_check_definition,
    parse_service_definition,
)
from agent.durations import parse_duration
from agent.errors import InvalidRequest
from agent.schemas import SchemaSet

SCHEMA_NAME = "agent-config"
_DURATION_REF = "#/$defs/duration"

LOG_LEVELS = ("trace", "debug", "info", "warn", "error")
_LOG_LEVEL_ALIASES = {"err": "error", "warning": "warn"}
_DATACENTER = re.compile(r"[a-z0-9_-]+\Z")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z")

# Consul's watch parameters by type (watch/funcs.go), besides the ones every watch takes.
_WATCH_COMMON = frozenset({"type", "datacenter", "token", "args", "handler", "handler_type"})
_WATCH_PARAMS = {
    "key": {"key", "stale"},
    "keyprefix": {"prefix", "stale"},
    "services": {"stale"},
    "nodes": {"stale"},
    "service": {"service", "tag", "passingonly", "stale"},
    "checks": {"service", "state", "stale"},
    "event": {"name"},
}
SCRIPTS_DISABLED = ("Scripts are disabled on this agent; to enable, configure "
                    "'enable_script_checks' or 'enable_local_script_checks' to true")


class ConfigError(Exception):
    """A config file or flag is wrong; the message names the source, where, and the reason."""


def pointer(*parts: str | int) -> str:
    """A JSON pointer (RFC 6901) to ``parts``; "" for the whole document."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def where(source: str, *parts: str | int) -> str:
    at = pointer(*parts)
    return f"{source}: {at}" if at else source


@dataclass
class Source:
    """One checked source: its settings, and the definitions it contributes, in its order."""

    name: str
    doc: dict[str, Any]  # everything but service/services/check/checks
    services: list[tuple[ServiceDefinition, str]] = field(default_factory=list)  # (def, label)
    checks: list[tuple[CheckSpec, str]] = field(default_factory=list)


class SourceChecker:
    """Checks sources against one compiled agent-config schema."""

    def __init__(self, schemas: SchemaSet) -> None:
        self.schemas = schemas
        self._hcl = False
        self.schema: Mapping[str, Any] = schemas.schema(SCHEMA_NAME)
        self._validator = Draft202012Validator(self.schema, format_checker=None)

    def resolve(self, schema: Any) -> Mapping[str, Any]:
        """``schema`` with a local ``$ref`` ("#/$defs/port") followed; {} if not an object."""
        if not isinstance(schema, dict):
            return {}
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/"):
            target: Any = self.schema
            for part in ref[2:].split("/"):
                target = target[part]
            return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    def check(self, name: str, doc: Mapping[str, Any], *, hcl: bool = False) -> Source:
        """Validate one source; raise `ConfigError` for its first problem.

        ``hcl``: the source was an HCL file, where one block stands for a list of one
        (``services { ... }``), as Consul reads it.
        """
        self._hcl = hcl
        doc = self._walk(doc, self.schema, (), name, drop_nulls=True)
        error = best_match(self._validator.iter_errors(doc))
        if error is not None:
            raise ConfigError(_describe(error, name))
        self._walk(doc, self.schema, (), name, drop_nulls=False)  # durations, now well-typed
        self._check_values(name, doc)
        for index, watch in enumerate(doc.get("watches", ())):
            problem = watch_problem(watch)
            if problem:
                raise ConfigError(f"{where(name, 'watches', index)}: {problem}")
        source = Source(name, {k: v for k, v in doc.items()
                               if k not in ("service", "services", "check", "checks")})
        # Consul appends a file's single `service`/`check` after its lists.
        entries = [(s, f"services[{i}]") for i, s in enumerate(doc.get("services", ()))]
        if "service" in doc:
            entries.append((doc["service"], "service"))
        for raw, label in entries:
            raw = _hcl_lists(raw) if hcl else raw
            source.services.append((self._parse(parse_service_definition, raw, name, label),
                                    label))
        entries = [(c, f"checks[{i}]") for i, c in enumerate(doc.get("checks", ()))]
        if "check" in doc:
            entries.append((doc["check"], "check"))
        for raw, label in entries:
            raw = _hcl_lists(raw) if hcl else raw
            source.checks.append((self._parse(parse_check_definition, raw, name, label), label))
        return source

    def _parse(self, parse, raw: Any, name: str, label: str):
        try:
            return parse(raw, self.schemas)
        except InvalidRequest as exc:
            raise ConfigError(f"{name}: {label}: {exc}") from None

    def _walk(self, value: Any, schema: Any, path: tuple, name: str, *, drop_nulls: bool) -> Any:
        """Drop ``null`` settings (Go's "not given") and spell keys as the schema does (Consul
        matches them case-insensitively), or, later, check every duration."""
        if isinstance(schema, dict) and schema.get("$ref") == _DURATION_REF and not drop_nulls:
            try:
                parse_duration(value)
            except InvalidRequest as exc:
                raise ConfigError(f"{where(name, *path)}: {exc}") from None
            return value
        schema = self.resolve(schema)
        if drop_nulls and self._hcl and isinstance(value, dict) and schema.get("type") == "array":
            value = [value]
        if isinstance(value, dict):
            properties = schema.get("properties", {})
            extra = schema.get("additionalProperties")
            folded = {key.lower(): key for key in properties}
            out = {}
            for key, item in value.items():
                if drop_nulls and key not in properties:
                    key = folded.get(key.lower(), key)
                if key in properties:
                    if item is None and drop_nulls:
                        continue
                    item = self._walk(item, properties[key], path + (key,), name,
                                      drop_nulls=drop_nulls)
                elif isinstance(extra, dict):
                    item = self._walk(item, extra, path + (key,), name, drop_nulls=drop_nulls)
                out[key] = item
            return out
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [self._walk(item, schema["items"], path + (index,), name,
                               drop_nulls=drop_nulls)
                    for index, item in enumerate(value)]
        return value

    def _check_values(self, name: str, doc: dict[str, Any]) -> None:
        if "log_level" in doc:  # kept as spelled (Consul shows it so); the model normalises
            normalize_log_level(doc["log_level"], where(name, "log_level"))
        if "datacenter" in doc:
            doc["datacenter"] = doc["datacenter"].lower()
            if not _DATACENTER.match(doc["datacenter"]):
                raise ConfigError(f"{where(name, 'datacenter')}: datacenter can only contain "
                                  f"lowercase alphanumeric, - or _ characters. received: "
                                  f"{doc['datacenter']!r}")
        if doc.get("node_id"):
            if not _UUID.match(doc["node_id"]):
                raise ConfigError(f"{where(name, 'node_id')}: {doc['node_id']!r} is not a UUID")
            doc["node_id"] = doc["node_id"].lower()
        if doc.get("encrypt"):
            problem = _gossip_key_problem(doc["encrypt"])
            if problem:
                raise ConfigError(f"{where(name, 'encrypt')}: encrypt has invalid key: {problem}")


def _hcl_lists(raw: Any) -> Any:
    """A service or check from HCL with its ``checks`` block as the list of one it means."""
    if not isinstance(raw, dict):
        return raw
    out = {}
    for key, value in raw.items():
        if key.lower() == "checks" and isinstance(value, dict):
            value = [value]
        elif isinstance(value, dict):
            value = _hcl_lists(value)
        out[key] = value
    return out


def normalize_log_level(level: str, at: str) -> str:
    folded = level.lower()
    folded = _LOG_LEVEL_ALIASES.get(folded, folded)
    if folded not in LOG_LEVELS:
        raise ConfigError(f"{at}: invalid log level {level!r} "
                          f"(one of {', '.join(LOG_LEVELS)})")
    return folded


def watch_problem(watch: Mapping[str, Any]) -> str | None:
    """What Consul's watch parser and agent would refuse in a (schema-valid) watch, in its words."""
    kind = watch["type"]
    handler_type = watch.get("handler_type", "script")
    allowed = _WATCH_COMMON | _WATCH_PARAMS[kind]
    if handler_type == "http":
        if "http_handler_config" not in watch:
            return "Handler type 'http' requires 'http_handler_config' to be set"
        allowed = allowed | {"http_handler_config"}
    bad = sorted(key for key in watch if key not in allowed)
    if bad:
        return f"Invalid parameters: [{' '.join(bad)}]"
    if kind == "checks" and watch.get("service") and watch.get("state"):
        return "Cannot specify service and state"
    has_handler, has_args = "handler" in watch, "args" in watch
    if (has_handler and has_args) or ((has_handler or has_args) and handler_type == "http"):
        return "Only one watch handler allowed"
    if not has_handler and not has_args and handler_type != "http":
        return "Must define a watch handler"
    return None


def _gossip_key_problem(key: str) -> str | None:
    try:
        raw = base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError) as exc:
        return f"illegal base64 data: {exc}"
    if len(raw) not in (16, 24, 32):
        return "key size must be 16, 24 or 32 bytes"
    return None


def _describe(error: ValidationError, name: str) -> str:
    at = where(name, *error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = error.schema.get("properties", {})
        unknown = [key for key in error.instance if key not in known]
        if unknown:
            return f"{at}: unknown key {unknown[0]!r}"
    if "propertyNames" in error.schema_path:
        return f"{at}: invalid key {error.instance!r}"
    if error.validator == "maxProperties":
        return f"{at}: more than {error.validator_value} keys"
    if error.validator == "type" and isinstance(error.instance, (dict, list)):
        kind = "an object" if isinstance(error.instance, dict) else "a list"
        return f"{at}: {kind} is not of type {error.validator_value!r}"
    return f"{at}: {error.message}"
