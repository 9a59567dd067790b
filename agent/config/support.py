"""What Waypost does with each accepted key, read off the schema's annotations.

Owns:

- `scan`: the keys a user set that have no effect yet (``x-waypost: unsupported``, reported
  by their dotted path: "telemetry", "limits.rpc_rate"), and the warnings for Consul
  Enterprise keys (``x-waypost: enterprise``) and deprecated spellings (``x-deprecated``);
- `translate_deprecated`: moves a deprecated spelling (``acl_token``) to the key it stands
  for (``acl.tokens.default``) unless that key is set, as Consul does.

An annotated object is reported as a whole; its members are not walked. Nothing is reported
for an empty object, nor for a value equal to the key's ``x-waypost-noop`` (the behaviour
Waypost has anyway, such as ``enable_debug = false``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Resolve = Callable[[Any], Mapping[str, Any]]


def scan(doc: Mapping[str, Any], schema: Mapping[str, Any], resolve: Resolve,
         unsupported: set[str], warnings: list[str]) -> None:
    """Add what ``doc`` (one source, checked) sets without effect to the two collections."""

    def target_unsupported(target: str) -> bool:
        node: Any = schema
        for part in target.split("."):
            node = resolve(resolve(node).get("properties", {}).get(part, {}))
            if node.get("x-waypost") == "unsupported":
                return True
        return False

    _scan(doc, schema, resolve, (), unsupported, warnings, target_unsupported)


def _scan(value: Any, schema: Any, resolve: Resolve, path: tuple, unsupported: set[str],
          warnings: list[str], target_unsupported: Callable[[str], bool]) -> None:
    schema = resolve(schema)
    if path and _nothing_set(value):
        return
    if path and "x-waypost-noop" in schema and value == schema["x-waypost-noop"]:
        return  # the value Waypost behaves as anyway (enable_debug = false, ...)
    if path:
        name = ".".join(path)
        status = schema.get("x-waypost")
        target = schema.get("x-deprecated")
        if target is not None:
            _add(warnings, f"'{name}' is deprecated and ignored by Consul 1.8; remove it"
                 if not target else f"'{name}' is deprecated; use '{target}'")
            if target and target_unsupported(target):
                unsupported.add(name)
            return
        if status == "unsupported":
            unsupported.add(name)
            return
        if status == "enterprise":
            _add(warnings, f"'{name}' is a Consul Enterprise setting and has no effect")
            return
    if isinstance(value, dict):
        properties = schema.get("properties")
        if properties is None:
            return
        for key, item in value.items():
            if key in properties:
                _scan(item, properties[key], resolve, path + (key,), unsupported, warnings,
                      target_unsupported)


def _nothing_set(value: Any) -> bool:
    # An empty block (`"acl": {"tokens": {}}`, as Go's encoder writes unset structs).
    return isinstance(value, dict) and all(_nothing_set(v) for v in value.values())


def _add(items: list[str], text: str) -> None:
    if text not in items:
        items.append(text)


def scan_sources(docs: list[Mapping[str, Any]], schema: Mapping[str, Any],
                 resolve: Resolve) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(unsupported keys, sorted; warnings, in source order) for the user's sources."""
    unsupported: set[str] = set()
    warnings: list[str] = []
    for doc in docs:
        scan(doc, schema, resolve, unsupported, warnings)
    return tuple(sorted(unsupported)), tuple(warnings)


def deprecated_keys(schema: Mapping[str, Any]) -> dict[str, str]:
    """Top-level deprecated spelling -> the dotted key it stands for ("" when ignored)."""
    return {key: node["x-deprecated"] for key, node in schema.get("properties", {}).items()
            if isinstance(node, dict) and "x-deprecated" in node}


def translate_deprecated(merged: dict[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    """``merged`` with each deprecated key moved to its target, where the target is unset.

    The deprecated keys stay too: `agent.config.safety` reads ``acl_datacenter``, which
    also turns ACLs on in Consul.
    """
    out = dict(merged)
    for old, target in deprecated_keys(schema).items():
        if old not in merged or not target:
            continue
        parts = target.split(".")
        node = out
        for part in parts[:-1]:
            child = node.get(part)
            child = dict(child) if isinstance(child, dict) else {}
            node[part] = child
            node = child
        node.setdefault(parts[-1], merged[old])
    return out
