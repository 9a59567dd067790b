"""``waypost services register|deregister``: manage this agent's services.

Owns: the services commands and reading service definition files (Consul's
format: a ``service`` object, a ``services`` array, or a bare definition,
with lower-case or CamelCase keys). Definitions are sent to
``/v1/agent/service/register`` as written; the agent understands both
spellings, and re-encoding them here would lose fields we do not know.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    Group,
    add_http_flags,
    open_client,
    parse_pairs,
)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

__all__ = ["GROUP", "definitions_from_document", "load_definitions", "service_id",
           "service_name"]


def _field(definition: dict[str, Any], name: str) -> Any:
    # Consul's config loader matches keys case-insensitively (Name, name, ID, id).
    for key, value in definition.items():
        if key.lower() == name:
            return value
    return None


def service_name(definition: dict[str, Any]) -> str:
    """The definition's ``Name`` (any case), or "" when missing."""
    name = _field(definition, "name")
    return name if isinstance(name, str) else ""


def service_id(definition: dict[str, Any]) -> str:
    """The ID a definition registers under: its ``ID``, else its ``Name``."""
    value = _field(definition, "id")
    return value if isinstance(value, str) and value else service_name(definition)


def definitions_from_document(document: Any, source: str) -> list[dict[str, Any]]:
    """The service definitions in one parsed file, each checked to have a name."""
    if not isinstance(document, dict):
        raise CommandError(f"Error: {source}: expected a JSON object")
    wrapped_one = _field(document, "service")
    wrapped_many = _field(document, "services")
    if isinstance(wrapped_one, dict) or isinstance(wrapped_many, list):
        definitions = ([wrapped_one] if isinstance(wrapped_one, dict) else [])
        definitions += wrapped_many if isinstance(wrapped_many, list) else []
    else:
        definitions = [document]
    for position, definition in enumerate(definitions):
        if not isinstance(definition, dict):
            raise CommandError(f"Error: {source}: service {position} is not an object")
        if not service_name(definition):
            raise CommandError(f"Error: {source}: service {position} has no name")
    return definitions


def load_definitions(paths: Sequence[str]) -> list[dict[str, Any]]:
    """Every service definition in ``paths`` (JSON files), all read and
    checked before the caller registers any."""
    definitions = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                raw = handle.read()
        except OSError as exc:
            raise CommandError(f"Error: could not read {path}: "
                               f"{exc.strerror or exc}") from None
        try:
            document = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            hint = " (only JSON definitions are supported)" if path.endswith(".hcl") else ""
            raise CommandError(f"Error: {path}: invalid JSON: {exc}{hint}") from None
        definitions.extend(definitions_from_document(document, path))
    return definitions


def _register_flags() -> FlagSet:
    flags = FlagSet("services register")
    flags.string("name", help="Name of the service to register without a file.")
    flags.string("id", help="ID of the service; defaults to -name.")
    flags.string("address", help="Address of the service.")
    flags.int("port", default=0, help="Port of the service.")
    flags.strings("tag", help="Tag to add to the service. Repeatable.")
    flags.strings("meta", help="Metadata as key=value. Repeatable.")
    return add_http_flags(flags)


def _definition_from_flags(values: SimpleNamespace) -> dict[str, Any]:
    definition: dict[str, Any] = {"Name": values.name}
    if values.id:
        definition["ID"] = values.id
    if values.address:
        definition["Address"] = values.address
    if values.port:
        definition["Port"] = values.port
    if values.tag:
        definition["Tags"] = list(values.tag)
    meta = parse_pairs(values.meta, "meta")
    if meta:
        definition["Meta"] = meta
    return definition


def _register(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    uses_flags = any([values.name, values.id, values.address, values.port,
                      values.tag, values.meta])
    if not args and not uses_flags:
        raise CommandError("Service registration requires at least one argument or flags.")
    if not args and not values.name:
        raise CommandError("Error: -name is required to register without a file")
    if args and uses_flags:
        raise CommandError("Service registration requires arguments or flags, not both.")
    definitions = load_definitions(args) if args else [_definition_from_flags(values)]
    client = open_client(ctx, values)
    for definition in definitions:
        client.request("PUT", "/v1/agent/service/register",
                       body=json.dumps(definition).encode("utf-8"))
        ctx.out(f"Registered service: {service_name(definition)}")
    return 0


def _deregister_flags() -> FlagSet:
    flags = FlagSet("services deregister")
    flags.string("id", help="ID of the service to deregister (instead of files).")
    return add_http_flags(flags)


def _deregister(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if not args and not values.id:
        raise CommandError("Service deregistration requires at least one argument or -id.")
    if args and values.id:
        raise CommandError("Service deregistration requires arguments or -id, not both.")
    ids = [service_id(d) for d in load_definitions(args)] if args else [values.id]
    client = open_client(ctx, values)
    for service in ids:
        path = "/v1/agent/service/deregister/" + quote_path(service, keep_slashes=False)
        client.request("PUT", path)
        ctx.out(f"Deregistered service: {service}")
    return 0


GROUP = Group(
    name="services",
    synopsis="Interact with services",
    usage="""
Usage: waypost services <subcommand> [options] [args]

  Registers and deregisters services with the local agent.

      $ waypost services register web.json
      $ waypost services register -name=web -port=8080 -tag=v1
      $ waypost services deregister -id=web
""",
    subcommands={
        "register": Command(
            name="services register",
            synopsis="Register services with the local agent",
            usage="""
Usage: waypost services register [options] [FILE...]

  Registers the services defined in each JSON FILE (a "service" object, a
  "services" array, or a bare definition), or one service described by flags.
""",
            flags=_register_flags, run=_register),
        "deregister": Command(
            name="services deregister",
            synopsis="Deregister services with the local agent",
            usage="""
Usage: waypost services deregister [options] [FILE...]

  Deregisters the services defined in each FILE (by ID, else by name), or
  the one given with -id.
""",
            flags=_deregister_flags, run=_deregister),
    },
)
