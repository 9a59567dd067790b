"""``waypost snapshot save|restore|inspect``: Consul's disaster-recovery snapshots.

``save`` fetches ``GET /v1/snapshot`` into ``FILE.unverified``, reads that file back through
the archive checks and only then renames it to ``FILE``, so a damaged download never replaces
a good file. ``restore`` sends a file to ``PUT /v1/snapshot``. ``inspect`` needs no agent: it
checks the archive and prints its metadata. Texts and exit codes are Consul 1.8.7's.
"""

from __future__ import annotations

import os
from types import SimpleNamespace

from agent.snapshot_archive import SnapshotArchiveError, read_archive
from gateway.cli.commands import (Command, CommandError, Context, Group, add_http_flags,
                                  open_client, server_query, tabulate)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import AgentError, AgentClient, Query

__all__ = ["GROUP", "format_inspect"]

_ANY_ERROR = range(400, 600)


def _one_file(args: list[str]) -> str:
    if not args:
        raise CommandError("Missing FILE argument")
    if len(args) > 1:
        raise CommandError(f"Too many arguments (expected 1, got {len(args)})")
    return args[0]


def _os_error(path: str, exc: OSError) -> str:
    # As Go's *PathError prints: "open backup.snap: no such file or directory".
    reason = exc.strerror or str(exc)
    return f"open {path}: {reason[:1].lower()}{reason[1:]}"


def _send(client: AgentClient, method: str, query: Query = (), body: bytes | None = None):
    """The response, or AgentError worded as Consul's API client words a failure."""
    response = client.request(method, "/v1/snapshot", query=query, body=body,
                              allow=_ANY_ERROR)
    if response.status >= 400:
        text = response.body.decode("utf-8", "replace").strip()
        raise AgentError(f"Unexpected response code: {response.status} ({' '.join(text.split())})",
                         status=response.status)
    return response


def _reason(exc: AgentError) -> str:
    text = str(exc)
    return text[len("Error "):] if text.startswith("Error ") else text


def _save(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    path = _one_file(args)
    try:
        response = _send(open_client(ctx, values), "GET", server_query(values))
    except AgentError as exc:
        raise CommandError(f"Error saving snapshot: {_reason(exc)}") from None
    unverified = path + ".unverified"
    try:
        with open(unverified, "wb") as out:
            os.chmod(unverified, 0o600)
            out.write(response.body)
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise CommandError(f"Error writing unverified snapshot file: {exc}") from None
    try:
        try:
            with open(unverified, "rb") as saved:
                read_archive(saved)
        except SnapshotArchiveError as exc:
            raise CommandError(f"Error verifying snapshot file: {exc}") from None
        try:
            os.replace(unverified, path)
        except OSError as exc:
            raise CommandError(f'Error renaming "{unverified}" to "{path}": {exc}') from None
    finally:
        if os.path.exists(unverified):
            os.remove(unverified)
    ctx.out(f"Saved and verified snapshot to index {response.headers.get('x-consul-index', 0)}")
    return 0


def _read_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise CommandError(f"Error opening snapshot file: {_os_error(path, exc)}") from None


def _restore(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    body = _read_file(_one_file(args))
    try:
        _send(open_client(ctx, values), "PUT", server_query(values), body)
    except AgentError as exc:
        raise CommandError(f"Error restoring snapshot: {_reason(exc)}") from None
    ctx.out("Restored snapshot")
    return 0


def format_inspect(meta: dict) -> str:
    """Consul's table (Go tabwriter, padding 6) and the blank line its UI adds after it."""
    rows = [[key, str(meta[key])] for key in ("ID", "Size", "Index", "Term", "Version")]
    return "\n".join(tabulate(rows)) + "\n"


def _inspect(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    path = _one_file(args)
    try:
        with open(path, "rb") as f:
            meta = read_archive(f)  # streams: the state is checked, never held in memory
    except OSError as exc:
        raise CommandError(f"Error opening snapshot file: {_os_error(path, exc)}") from None
    except SnapshotArchiveError as exc:
        raise CommandError(f"Error verifying snapshot: {exc}") from None
    ctx.out(format_inspect(meta))
    return 0


_HTTP_USAGE = """
  If ACLs are enabled, a management token must be supplied in order to perform
  snapshot operations.
"""

GROUP = Group(
    name="snapshot",
    synopsis="Saves, restores and inspects snapshots of Consul server state",
    usage="""
Usage: waypost snapshot <subcommand> [options] [args]

  This command has subcommands for saving, restoring, and inspecting the state
  of the servers for disaster recovery. These are atomic, point-in-time
  snapshots which include key/value entries, service catalog, prepared queries,
  sessions, and ACLs. The files are Consul's: either tool reads the other's.

  Create a snapshot:

      $ waypost snapshot save backup.snap

  Restore a snapshot:

      $ waypost snapshot restore backup.snap

  Inspect a snapshot:

      $ waypost snapshot inspect backup.snap
""",
    subcommands={
        "save": Command(
            name="snapshot save",
            synopsis="Saves snapshot of Consul server state",
            usage="""
Usage: waypost snapshot save [options] FILE

  Retrieves an atomic, point-in-time snapshot of the state of the servers
  which includes key/value entries, service catalog, prepared queries, sessions,
  and ACLs.
""" + _HTTP_USAGE + """
  To create a potentially stale snapshot from any available server (useful if no
  leader is available):

    $ waypost snapshot save -stale backup.snap
""",
            flags=lambda: add_http_flags(FlagSet("snapshot save"), server=True),
            run=_save,
        ),
        "restore": Command(
            name="snapshot restore",
            synopsis="Restores snapshot of Consul server state",
            usage="""
Usage: waypost snapshot restore [options] FILE

  Restores an atomic, point-in-time snapshot of the state of the servers
  which includes key/value entries, service catalog, prepared queries, sessions,
  and ACLs. Restores replace the whole state and are meant for recovering from a
  disaster, typically into a fresh cluster.
""" + _HTTP_USAGE,
            flags=lambda: add_http_flags(FlagSet("snapshot restore"), server=True),
            run=_restore,
        ),
        "inspect": Command(
            name="snapshot inspect",
            synopsis="Displays information about a Consul snapshot file",
            usage="""
Usage: waypost snapshot inspect [options] FILE

  Displays information about a snapshot file on disk (no agent is needed).
""",
            flags=lambda: FlagSet("snapshot inspect"),
            run=_inspect,
        ),
    },
)
