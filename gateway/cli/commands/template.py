"""``waypost template``: render consul-template templates against an agent, like consul-template.

Owns: the command's flags and the parsing of ``-template "in:out[:command]"`` exactly as
consul-template splits it. The engine is the bundled template plugin, found through the
``waypost`` entry point named ``template`` (the gateway never imports plugins), and run with
this process's reactor and a blocking HTTP client on the agent the HTTP flags name.
"""

from __future__ import annotations

import importlib.metadata
import re
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    add_http_flags,
    expect_no_args,
    open_client,
)
from gateway.cli.flags import FlagSet

__all__ = ["COMMAND", "parse_template_flag"]

# consul-template's pattern: a part is a run of non-colons, optionally after a drive letter.
_PART = re.compile(r"([a-zA-Z]:)?([^:]+)")


def parse_template_flag(value: str) -> dict[str, str]:
    """``"in.ctmpl:out.conf:service nginx reload"`` -> source, destination, command.

    As consul-template: a fourth and later part belongs to the command (``a:b:c:d`` runs
    ``c:d``), and empty parts are skipped.
    """
    parts = [m.group(0) for m in _PART.finditer(value)]
    if not value.strip() or not parts:
        raise CommandError("Error: -template: cannot be empty")
    spec = {"source": parts[0]}
    if len(parts) > 1:
        spec["destination"] = parts[1]
    if len(parts) > 2:
        spec["command"] = ":".join(parts[2:])
    return spec


def _flags() -> FlagSet:
    flags = FlagSet("template")
    flags.strings("template", help='A template as "source:destination[:command]"; '
                  "repeatable.")
    flags.bool("once", help="Render each template once, run its command, and exit.")
    flags.bool("dry", help="Print the output to stdout (after \"> destination\") instead of "
               "writing files; no commands run.")
    return add_http_flags(flags)


def _load_engine() -> Any:
    found = importlib.metadata.entry_points(group="waypost", name="template")
    for entry in found:
        return entry.load()
    raise CommandError('Error: the template plugin is not installed (no "template" entry '
                       'point in the "waypost" group)')


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    expect_no_args(args)
    if not values.template:
        raise CommandError("Error: at least one -template is required "
                           "(see 'waypost template -h')")
    templates = [parse_template_flag(item) for item in values.template]
    if not values.dry:
        for spec in templates:
            if "destination" not in spec:
                raise CommandError(f"Error: -template {spec['source']!r}: no destination "
                                   "(use source:destination, or -dry)")
    client = open_client(ctx, values)

    def get(path: str, query: list) -> tuple[int, int, bytes]:
        response = client.request("GET", path, query=query, allow=(404,))
        index = response.headers.get("x-consul-index", "0") or "0"
        return response.status, int(index) if index.isdigit() else 0, response.body

    def out(text: str) -> None:
        ctx.stdout.write(text)
        ctx.stdout.flush()

    def err(text: str) -> None:
        ctx.stderr.write(text + "\n")
        ctx.stderr.flush()

    engine = _load_engine()
    from twisted.internet import reactor  # the console script owns the global reactor

    return engine.run_cli(reactor, get, templates, once=values.once, dry=values.dry,
                          out=out, err=err, env=ctx.env)


COMMAND = Command(
    name="template",
    synopsis="Renders templates from the catalog and KV store",
    usage="""
Usage: waypost template -template "source:destination[:command]" [options]

  Renders consul-template templates (.ctmpl; .j2/.jinja for Jinja2) with data from the agent,
  writes each destination atomically when its output changes, and runs the template's
  command afterwards. Keeps watching the data (blocking queries) until interrupted, unless
  -once is given.

      $ waypost template -template "nginx.ctmpl:/etc/nginx/upstreams.conf:nginx -s reload"
      $ waypost template -template "demo.ctmpl:demo.out" -once
      $ waypost template -template "demo.ctmpl" -dry -once
""",
    flags=_flags,
    run=_run,
)
