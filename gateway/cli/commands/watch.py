"""``waypost watch``: follow a view of the catalog or KV with blocking queries.

Without a handler the current value is printed once and the command exits, as ``consul
watch`` does. With a handler (the arguments after the flags) the handler is run with the JSON on
stdin each time the value changes — not on every wake-up — until interrupted.
"""

from __future__ import annotations

import json
import os
import subprocess
from types import SimpleNamespace

from gateway.cli.commands import Command, CommandError, Context, add_http_flags, open_client
from gateway.cli.flags import FlagSet
from gateway.watch.plan import WatchError, canonical, make_plan

WAIT = "5m"


def _flags() -> FlagSet:
    flags = FlagSet("watch")
    flags.string("type", default="",
                 help="key, keyprefix, services, nodes, service, checks or event.")
    flags.string("name", help="The event name to watch (type event).")
    flags.string("key", help="The key to watch (type key).")
    flags.string("prefix", help="The key prefix to watch (type keyprefix).")
    flags.string("service", help="The service to watch (types service and checks).")
    flags.strings("tag", help="Only instances with this tag (type service); repeatable.")
    flags.bool("passingonly", help="Only instances whose checks pass (type service).")
    flags.string("state", help="Check state to watch (type checks): any, passing, warning, critical.")
    flags.bool("shell", default=True, help="Run the handler through /bin/sh -c (default true).")
    return add_http_flags(flags, server=True)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    spec = {"type": values.type, "key": values.key, "prefix": values.prefix,
            "service": values.service, "tag": values.tag, "passingonly": values.passingonly,
            "state": values.state, "stale": values.stale, "name": values.name,
            "datacenter": getattr(values, "datacenter", None)}
    try:
        plan = make_plan(spec)
    except WatchError as exc:
        raise CommandError(f"Error: {exc}") from None
    client = open_client(ctx, values)
    index = 0
    last: bytes | None = None
    while True:
        path, raw_query = plan.target(index)
        query = [tuple(kv.split("=", 1)) if "=" in kv else (kv, None)
                 for kv in raw_query.decode().split("&") if kv]
        if index:
            query.append(("wait", WAIT))
        response = client.request("GET", path, query=query, allow=(404,))
        new_index = int(response.headers.get("x-consul-index", "0") or 0)
        value = plan.shape(response.status, response.body)
        # An index that went backwards (a restore) restarts the watch from scratch.
        index = new_index if new_index >= index else 0
        current = canonical(value)
        if current == last:
            continue
        last = current
        data = json.dumps(value, indent=4) + "\n"
        if not args:
            ctx.stdout.write(data)
            return 0
        _invoke(args, data, new_index, values.shell, ctx)


def _invoke(args: list[str], data: str, index: int, shell: bool, ctx: Context) -> None:
    env = dict(os.environ, CONSUL_INDEX=str(index), WAYPOST_INDEX=str(index))
    command = ["/bin/sh", "-c", " ".join(args)] if shell else args
    try:
        done = subprocess.run(command, input=data.encode(), env=env)
    except OSError as exc:
        raise CommandError(f"Error executing handler: {exc}") from None
    if done.returncode != 0:
        ctx.err(f"Error executing handler: exit status {done.returncode}")


COMMAND = Command(
    name="watch",
    synopsis="Watch for changes in the catalog or KV",
    usage="""
Usage: waypost watch -type=<type> [options] [handler ...]

  Watches a view of the data with blocking queries. With a handler, runs it with the JSON on
  stdin (and CONSUL_INDEX set) each time the view changes; without one, prints the view once.

      $ waypost watch -type=key -key=app/config
      $ waypost watch -type=service -service=web -passingonly ./on-change.sh
""",
    flags=_flags,
    run=_run,
)
