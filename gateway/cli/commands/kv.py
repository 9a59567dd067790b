"""``waypost kv get|put|delete|export|import``: the key-value store over ``/v1/kv``.

Owns: the kv commands, their Consul-compatible messages, and the export
format (a JSON array of ``{"key", "flags", "value"}`` with base64 values),
both writing it (:func:`export_json`) and reading and validating it
(:func:`parse_export`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    Group,
    add_http_flags,
    kv_ttl,
    open_client,
    server_query,
)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import quote_path

__all__ = ["GROUP", "export_json", "format_detailed", "parse_export"]

# Consul's `kv export` indents with one tab (Go's json.MarshalIndent(v, "", "\t")).
EXPORT_INDENT = "\t"


def _b64decode(data: bytes | str) -> bytes:
    """Strict base64, except that line breaks are skipped as Go's decoder does."""
    if isinstance(data, str):
        data = data.encode("ascii", "replace")
    return base64.b64decode(data.replace(b"\r", b"").replace(b"\n", b""), validate=True)


def _kv_path(key: str) -> str:
    return "/v1/kv/" + quote_path(key)


def _strip_slash(key: str) -> str:
    # Keys never start with "/", but people type "/foo"; Consul strips it too.
    return key[1:] if key.startswith("/") else key


def _one_key(args: Sequence[str]) -> str:
    if len(args) > 1:
        raise CommandError(f"Too many arguments (expected 1, got {len(args)})")
    return _strip_slash(args[0]) if args else ""


def _value_bytes(pair: Mapping[str, Any]) -> bytes:
    value = pair.get("Value")
    if not value:
        return b""
    try:
        return _b64decode(value)
    except (binascii.Error, ValueError):
        raise CommandError(f"Error: agent sent an invalid base64 value for "
                           f"{pair.get('Key', '')}") from None


def format_detailed(pair: Mapping[str, Any], base64_value: bool = False) -> bytes:
    """``kv get -detailed`` output for one KV entry, without a final newline.

    Labels are padded as Go's tabwriter pads them with Consul's settings:
    widest label (11) plus 6 spaces.
    """
    value = _value_bytes(pair)
    if base64_value:
        value = base64.b64encode(value)
    rows = [
        ("CreateIndex", str(pair.get("CreateIndex", 0))),
        ("Flags", str(pair.get("Flags", 0))),
        ("Key", str(pair.get("Key", ""))),
        ("LockIndex", str(pair.get("LockIndex", 0))),
        ("ModifyIndex", str(pair.get("ModifyIndex", 0))),
        ("Session", str(pair.get("Session") or "-")),
    ]
    width = max(len(label) for label, _ in rows) + 6
    head = "".join(f"{label.ljust(width)}{text}\n" for label, text in rows)
    return head.encode("utf-8") + b"Value".ljust(width) + value


# -- get ---------------------------------------------------------------------

def _get_flags() -> FlagSet:
    flags = FlagSet("kv get")
    flags.bool("base64", help="Base64-encode the value when printing it.")
    flags.bool("detailed", help="Print the entry's metadata (indexes, flags, "
               "session) as well as its value.")
    flags.bool("keys", help="List the keys under the given prefix instead of "
               "values; see -separator.")
    flags.bool("recurse", help="Print every key under the given prefix, as "
               "key:value lines.")
    flags.string("separator", default="/", help="With -keys, list keys only up "
                 "to the first occurrence of this string after the prefix. "
                 "Empty lists every key.")
    return add_http_flags(flags, server=True)


def _get(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    key = _one_key(args)
    if not key and not (values.recurse or values.keys):
        raise CommandError("Error! Missing KEY argument")
    client = open_client(ctx, values)
    query = server_query(values)
    if values.keys:
        query.append(("keys", None))
        if values.separator:
            query.append(("separator", values.separator))
        for name in client.get_json(_kv_path(key), query=query, missing=[]) or []:
            ctx.out(str(name))
        return 0
    if values.recurse:
        query.append(("recurse", None))
        pairs = client.get_json(_kv_path(key), query=query, missing=[]) or []
        for index, pair in enumerate(pairs):
            if values.detailed:
                ctx.out_bytes(format_detailed(pair, values.base64) + b"\n")
                if index < len(pairs) - 1:
                    ctx.out()
                continue
            value = _value_bytes(pair)
            if values.base64:
                value = base64.b64encode(value)
            ctx.out_bytes(str(pair.get("Key", "")).encode("utf-8") + b":" + value + b"\n")
        return 0
    pairs = client.get_json(_kv_path(key), query=query)
    if not pairs:
        raise CommandError(f"Error! No key exists at: {key}")
    pair = pairs[0]
    if values.detailed:
        ctx.out_bytes(format_detailed(pair, values.base64) + b"\n")
        return 0
    value = _value_bytes(pair)
    ctx.out_bytes((base64.b64encode(value) if values.base64 else value) + b"\n")
    return 0


# -- put ---------------------------------------------------------------------

def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"Error! Failed to read file: {path}: "
                           f"{exc.strerror or exc}") from None


def _put_data(ctx: Context, args: Sequence[str]) -> tuple[str, bytes]:
    if not args:
        raise CommandError("Error! Missing KEY argument")
    if len(args) > 2:
        raise CommandError(f"Error! Too many arguments (expected 1 or 2, got {len(args)})")
    key = _strip_slash(args[0])
    if not key:
        raise CommandError("Error! Missing KEY argument")
    data = args[1] if len(args) == 2 else ""
    if data.startswith("@"):
        return key, _read_file(data[1:])
    if data == "-":
        return key, ctx.read_stdin()
    # fsencode gives back the exact bytes the shell passed, even undecodable ones.
    return key, os.fsencode(data)


def _put_flags() -> FlagSet:
    flags = FlagSet("kv put")
    flags.bool("base64", help="The data is base64-encoded; decode it before "
               "writing.")
    flags.bool("cas", help="Check-and-set: write only if the key's ModifyIndex "
               "still equals -modify-index.")
    flags.int("flags", default=0, help="Unsigned integer stored with the entry "
              "for the application's own use.")
    flags.int("modify-index", default=0, help="The ModifyIndex the key must have "
              "for -cas to write.")
    flags.string("ttl", default="", help="Write the key through a new session with this "
                 "TTL (10s to 24h) and Behavior=delete, and print the session ID: the key "
                 "is deleted when the session expires, 1 to 2 x TTL after the last renewal "
                 "(Consul's grace).")
    flags.bool("keepalive", help="With -ttl, keep renewing the session until interrupted, "
               "then destroy it, which deletes the key.")
    return add_http_flags(flags, server=True)


def _check_unsigned(values: SimpleNamespace, *names: str) -> None:
    for name in names:
        if getattr(values, name.replace("-", "_")) < 0:
            raise CommandError(f"Error: -{name} must not be negative")


def _put(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    _check_unsigned(values, "flags", "modify-index")
    key, data = _put_data(ctx, args)
    if values.base64:
        try:
            data = _b64decode(data)
        except (binascii.Error, ValueError) as exc:
            raise CommandError(f"Error! Cannot base 64 decode data: {exc}") from None
    if values.cas and values.modify_index == 0:
        raise CommandError("Must specify -modify-index with -cas!")
    if values.keepalive and not values.ttl:
        raise CommandError("Error! -keepalive needs -ttl")
    if values.ttl and values.cas:
        raise CommandError("Error! Cannot specify both -ttl and -cas")
    ttl = kv_ttl.parse_ttl(values.ttl) if values.ttl else 0.0
    query = server_query(values)
    if values.flags:
        query.append(("flags", str(values.flags)))
    if values.cas:
        query.append(("cas", str(values.modify_index)))
    client = open_client(ctx, values)
    if ttl:
        session_id = kv_ttl.put_with_ttl(client, _kv_path(key), key, data, ttl, query)
        ctx.out(f"Success! Data written to: {key}")
        ctx.out(f"Session: {session_id}")
        ctx.stdout.flush()
        return kv_ttl.keep_alive(ctx, client, key, session_id, ttl) if values.keepalive else 0
    written = client.request("PUT", _kv_path(key), query=query, body=data).json()
    if values.cas and written is not True:
        raise CommandError(f"Error! Did not write to {key}: CAS failed")
    ctx.out(f"Success! Data written to: {key}")
    return 0


# -- delete ------------------------------------------------------------------

def _delete_flags() -> FlagSet:
    flags = FlagSet("kv delete")
    flags.bool("cas", help="Check-and-set: delete only if the key's ModifyIndex "
               "still equals -modify-index.")
    flags.int("modify-index", default=0, help="The ModifyIndex the key must have "
              "for -cas to delete it.")
    flags.bool("recurse", help="Delete every key starting with the given prefix.")
    return add_http_flags(flags, server=True)


def _delete(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    _check_unsigned(values, "modify-index")
    key = _one_key(args)
    if not key and not values.recurse:
        raise CommandError("Error! Missing KEY argument")
    if values.cas and values.modify_index == 0:
        raise CommandError("Cannot delete a key that does not exist. "
                           "Provide a -modify-index greater than 0.")
    if values.modify_index and not values.cas:
        raise CommandError("Cannot specify -modify-index without -cas!")
    if values.recurse and values.cas:
        raise CommandError("Cannot specify both -cas and -recurse!")
    query = server_query(values)
    if values.recurse:
        query.append(("recurse", None))
    if values.cas:
        query.append(("cas", str(values.modify_index)))
    deleted = open_client(ctx, values).request("DELETE", _kv_path(key), query=query).json()
    if values.cas and deleted is not True:
        raise CommandError(f"Error! Did not delete key {key}: CAS failed")
    if values.recurse:
        ctx.out(f"Success! Deleted keys with prefix: {key}")
    else:
        ctx.out(f"Success! Deleted key: {key}")
    return 0


# -- export / import ---------------------------------------------------------

def export_json(pairs: Sequence[Mapping[str, Any]]) -> str:
    """The ``kv export`` document for KV entries as ``/v1/kv/?recurse`` returns them.

    Sorted by key, indented and escaped as Go's encoding/json writes it, so
    the output matches Consul's byte for byte for ordinary keys.
    """
    entries = [{"key": str(pair.get("Key", "")), "flags": int(pair.get("Flags") or 0),
                "value": pair.get("Value") or ""}
               for pair in sorted(pairs, key=lambda p: str(p.get("Key", "")))]
    text = json.dumps(entries, indent=EXPORT_INDENT, ensure_ascii=False)
    # Go escapes these even in indented output (HTML safety); match it.
    for char, escape in (("&", "\\u0026"), ("<", "\\u003c"), (">", "\\u003e"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _field(entry: Mapping[str, Any], name: str) -> Any:
    # Go's json.Unmarshal matches field names case-insensitively, and so do we.
    for key, value in entry.items():
        if isinstance(key, str) and key.lower() == name:
            return value
    return None


def parse_export(data: bytes | str) -> list[tuple[str, int, bytes]]:
    """Validate a ``kv export`` document; return (key, flags, value) triples.

    Everything is checked before anything is written, so a malformed file
    raises :class:`CommandError` (one line) and imports nothing.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        document = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CommandError(f"Error! Cannot unmarshal data: {exc}") from None
    if not isinstance(document, list):
        raise CommandError("Error! Cannot unmarshal data: expected a JSON array of "
                           '{"key", "flags", "value"} objects')
    result = []
    for position, entry in enumerate(document):
        where = f"entry {position}"
        if not isinstance(entry, dict):
            raise CommandError(f"Error! Cannot unmarshal data: {where} is not an object")
        key = _field(entry, "key")
        if not isinstance(key, str) or not key:
            raise CommandError(f"Error! Cannot unmarshal data: {where} has no key")
        flags = _field(entry, "flags")
        flags = 0 if flags is None else flags
        if isinstance(flags, bool) or not isinstance(flags, int) or flags < 0:
            raise CommandError(f"Error! Cannot unmarshal data: flags of {key} must be "
                               "an unsigned integer")
        encoded = _field(entry, "value")
        encoded = "" if encoded is None else encoded
        if not isinstance(encoded, str):
            raise CommandError(f"Error! Cannot unmarshal data: value of {key} must be "
                               "a base64 string")
        try:
            value = _b64decode(encoded)
        except (binascii.Error, ValueError) as exc:
            raise CommandError(f"Error base 64 decoding value for key {key}: {exc}") from None
        result.append((key, flags, value))
    return result


def _export_flags() -> FlagSet:
    return add_http_flags(FlagSet("kv export"), server=True)


def _export(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    prefix = _one_key(args)
    query = server_query(values) + [("recurse", None)]
    pairs = open_client(ctx, values).get_json(_kv_path(prefix), query=query, missing=[])
    ctx.out(export_json(pairs or []))
    return 0


def _import_data(ctx: Context, args: Sequence[str]) -> bytes:
    if not args:
        raise CommandError("Error! Missing DATA argument")
    if len(args) > 1:
        raise CommandError(f"Error! Too many arguments (expected 1, got {len(args)})")
    source = args[0]
    if not source:
        raise CommandError("Error! Empty DATA argument")
    if source == "-":
        return ctx.read_stdin()
    if source.startswith("@"):
        return _read_file(source[1:])
    # Consul takes a bare argument as the JSON itself; a path is more common.
    if source.lstrip().startswith(("[", "{")):
        return source.encode("utf-8")
    return _read_file(source)


def _import_flags() -> FlagSet:
    return add_http_flags(FlagSet("kv import"), server=True)


def _import(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    entries = parse_export(_import_data(ctx, args))
    client = open_client(ctx, values)
    for key, flags, value in entries:
        query = server_query(values)
        if flags:
            query.append(("flags", str(flags)))
        client.request("PUT", _kv_path(key), query=query, body=value)
        ctx.out(f"Imported: {key}")
    return 0


GROUP = Group(
    name="kv",
    synopsis="Interact with the key-value store",
    usage="""
Usage: waypost kv <subcommand> [options] [args]

  Reads, writes, deletes, exports and imports entries of the key-value store.

      $ waypost kv put redis/config/connections 5
      $ waypost kv get redis/config/connections
      $ waypost kv get -recurse redis/config
      $ waypost kv delete redis/config/connections
""",
    subcommands={
        "get": Command(
            name="kv get", synopsis="Retrieves or lists data from the KV store",
            usage="""
Usage: waypost kv get [options] [KEY_OR_PREFIX]

  Prints the value stored at KEY. With -recurse, prints key:value for every key
  under the prefix; with -keys, lists the keys under it.
""",
            flags=_get_flags, run=_get),
        "put": Command(
            name="kv put", synopsis="Sets or updates data in the KV store",
            usage="""
Usage: waypost kv put [options] KEY [DATA]

  Writes DATA at KEY. DATA "@file" reads a file, "-" reads stdin, and no DATA
  writes an empty value.

      $ waypost kv put -cas -modify-index=844 config/redis/maxconns 5
      $ waypost kv put -ttl 30s -keepalive services/redis/redis@1 10.0.0.7:6379
""",
            flags=_put_flags, run=_put),
        "delete": Command(
            name="kv delete", synopsis="Removes data from the KV store",
            usage="""
Usage: waypost kv delete [options] KEY_OR_PREFIX

  Removes the entry at KEY; with -recurse, every entry starting with the prefix.
""",
            flags=_delete_flags, run=_delete),
        "export": Command(
            name="kv export", synopsis="Exports a tree from the KV store as JSON",
            usage="""
Usage: waypost kv export [KEY_OR_PREFIX]

  Writes the entries under the prefix to stdout as JSON, for "waypost kv import".
""",
            flags=_export_flags, run=_export),
        "import": Command(
            name="kv import", synopsis="Imports a tree stored as JSON to the KV store",
            usage="""
Usage: waypost kv import [options] FILE|@FILE|-|DATA

  Writes every entry of a "waypost kv export" document: read from FILE (or
  @FILE), from stdin ("-"), or given inline as JSON. The whole document is
  checked before anything is written.
""",
            flags=_import_flags, run=_import),
    },
)
