"""``waypost exec [-node RE] [-service RE] [-tag RE] [-|command...]``: run a command on agents.

Owns: the exec command, as ``consul exec`` does it over the HTTP API: a session ("Remote
Exec", behavior delete, TTL 15s, renewed every 5s), the job spec uploaded to
``<prefix>/<session>/job`` with that session's lock (``Command``, or ``Args`` with
``-shell=false``, or the stdin ``Script`` for ``-``; ``Wait`` in nanoseconds), a pause for
replication (``-wait-repl``), then the ``_rexec`` user event with the filters. Results are
read with blocking key listings of ``<prefix>/<session>/`` until nothing happened for
``-wait`` (twice that while some acked node has not finished), printed as Consul prints them
(``==> node: ...`` notices, ``    node: ...`` output), then the session is destroyed and the
directory deleted. Exit 2 when a node failed or did not finish, else 0.

The agent side is `agent.exec`; it runs nothing unless ``disable_remote_exec = false``.
"""

from __future__ import annotations

import base64
import json
import posixpath
import time
from types import SimpleNamespace

from agent.durations import parse_duration
from agent.errors import InvalidRequest
from gateway.cli.commands import Command, CommandError, Context, add_http_flags, open_client
from gateway.cli.commands.event import check_filters, fire_query
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import AgentClient, AgentError, quote_path

__all__ = ["COMMAND", "job_spec", "prefix_lines"]

SESSION_TTL = "15s"  # Consul's rExecTTL
RENEW_INTERVAL = 5.0  # Consul's rExecRenewInterval


def prefix_lines(target: str, message: str, arrow: bool) -> str:
    """Consul's TargetedUI: every line as "==> node: line" (or indented without the arrow),
    trailing whitespace of the whole trimmed."""
    head = "==>" if arrow else "   "
    return "\n".join(f"{head} {target}: {line}" for line in message.split("\n")).rstrip()


def job_spec(command: str, args: list[str], script: bytes, wait: float) -> bytes:
    """The job spec's JSON, as Go's encoding/json writes Consul's rExecSpec."""
    spec: dict = {}
    if command:
        spec["Command"] = command
    if args:
        spec["Args"] = args
    if script:
        spec["Script"] = base64.b64encode(script).decode()
    spec["Wait"] = int(round(wait * 1e9))
    return json.dumps(spec, separators=(",", ":")).encode()


def _duration(text: str, flag: str) -> float:
    try:
        return parse_duration(text)
    except InvalidRequest:
        raise CommandError(f'Error: invalid duration "{text}" for -{flag}') from None


def _join(*parts: str) -> str:
    """Go's path.Join (Consul's CLI builds the keys with it): join non-empty parts, clean."""
    joined = "/".join(p for p in parts if p)
    clean = posixpath.normpath(joined) if joined else ""
    return clean[1:] if clean.startswith("//") else clean


def _rank(key: str) -> int:
    return 2 if key.endswith("/exit") else 1 if "/out/" in key else 0


def _flags() -> FlagSet:
    flags = FlagSet("exec")
    flags.string("node", default="", help="Regular expression to filter on node names.")
    flags.string("service", default="",
                 help="Regular expression to filter on service instances.")
    flags.string("tag", default="", help="Regular expression to filter on service tags. "
                 "Must be used with -service.")
    flags.string("prefix", default="_rexec",
                 help="Prefix in the KV store to use for request data.")
    flags.bool("shell", default=True, help="Use a shell to run the command.")
    flags.string("wait", default="2s",
                 help="Period to wait with no responses before terminating execution.")
    flags.string("wait-repl", default="200ms",
                 help="Period to wait for replication before firing event.")
    flags.bool("verbose", help="Enables verbose output.")
    return add_http_flags(flags)


class _Job:
    """One remote execution: its session, its data, and the results as they come."""

    def __init__(self, ctx: Context, client: AgentClient, values: SimpleNamespace,
                 wait: float) -> None:
        self.ctx, self.client, self.values, self.wait = ctx, client, values, wait
        self.session = ""
        self.renewed = time.monotonic()

    def info(self, text: str) -> None:
        self.ctx.out(text)

    def create_session(self) -> None:
        body = json.dumps({"Name": "Remote Exec", "Behavior": "delete", "TTL": SESSION_TTL})
        response = self.client.request("PUT", "/v1/session/create", body=body.encode())
        self.session = response.json()["ID"]
        self.renewed = time.monotonic()

    def upload(self, spec: bytes) -> None:
        key = _join(self.values.prefix, self.session, "job")
        response = self.client.request("PUT", "/v1/kv/" + quote_path(key),
                                       query=[("acquire", self.session)], body=spec)
        if response.json() is not True:
            raise CommandError(f"Failed to create job file: failed to acquire key {key}")

    def fire(self) -> str:
        payload = json.dumps({"Prefix": self.values.prefix, "Session": self.session},
                             separators=(",", ":")).encode()
        response = self.client.request(
            "PUT", "/v1/event/fire/_rexec",
            query=fire_query(self.values.node, self.values.service, self.values.tag),
            body=payload)
        return response.json()["ID"]

    def cleanup(self) -> None:
        # The session first: with it gone no agent can write (its lock fails), then the data.
        if not self.session:
            return
        for method, path, query in (
                ("PUT", "/v1/session/destroy/" + quote_path(self.session, False), []),
                ("DELETE", "/v1/kv/" + quote_path(_join(self.values.prefix, self.session)),
                 [("recurse", None)])):
            try:
                self.client.request(method, path, query=query)
            except AgentError:
                pass

    def _renew(self) -> None:
        if time.monotonic() - self.renewed >= RENEW_INTERVAL:
            self.client.request("PUT", "/v1/session/renew/" + quote_path(self.session, False))
            self.renewed = time.monotonic()

    def _value(self, key: str) -> bytes | None:
        response = self.client.request("GET", "/v1/kv/" + quote_path(key),
                                       query=[("raw", None)], allow=(404,))
        return None if response.status == 404 else response.body

    def wait_for_job(self, started: float) -> int:
        directory = _join(self.values.prefix, self.session) + "/"
        seen: set[str] = set()
        index = "0"
        acks = exits = bad = 0
        last = time.monotonic()
        while True:
            interval = self.wait * 2 if acks > exits else self.wait
            remaining = last + interval - time.monotonic()
            if remaining <= 0:
                break
            self._renew()
            block = max(1, int(min(remaining, RENEW_INTERVAL) * 1000))
            response = self.client.request(
                "GET", "/v1/kv/" + quote_path(directory),
                query=[("keys", None), ("index", index), ("wait", f"{block}ms")],
                allow=(404,))
            new_index = response.headers.get("x-consul-index", index)
            if new_index == index:
                continue
            index = new_index
            keys = response.json() if response.status == 200 else []
            # Keys come sorted, so a node's exit would print before its output when both
            # arrive in one listing: show acks, then output, then exits.
            for full in sorted(keys, key=_rank):
                if full in seen:
                    continue
                seen.add(full)
                key = full[len(directory):] if full.startswith(directory) else full
                if key == "job":
                    continue
                last = time.monotonic()
                if key.endswith("/ack"):
                    acks += 1
                    if self.values.verbose:
                        self.info(prefix_lines(key[:-4], "acknowledged", True))
                elif key.endswith("/exit"):
                    value = self._value(full)
                    try:
                        code = int((value or b"").decode())
                    except ValueError:
                        self.ctx.err(f"Failed to parse exit code '{value!r}'")
                        continue
                    exits += 1
                    self.info(prefix_lines(key[:-5], f"finished with exit code {code}", True))
                    bad += code != 0
                elif "/out/" in key:
                    node = key[:key.rindex("/out/")]
                    value = self._value(full)
                    if value:
                        self.info(prefix_lines(node, value.decode("utf-8", "replace"), False))
                    elif self.values.verbose:
                        self.info(prefix_lines(node, "heartbeat received", True))
                else:
                    self.ctx.err(f"Unknown key '{key}', ignoring.")
        self.info(f"{exits} / {acks} node(s) completed / acknowledged")
        if self.values.verbose:
            self.info(f"Completed in {time.monotonic() - started:0.2f} seconds")
        bad += exits < acks
        return 2 if bad else 0


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    command, argv, script = " ".join(args), [], b""
    if command == "-":
        if not values.shell:
            raise CommandError("Cannot configure -shell=false when reading from stdin")
        command, script = "", ctx.read_stdin()
    elif not values.shell:
        command, argv = "", list(args)
    if not command and not script and not argv:
        raise CommandError("Must specify a command to execute\n\n" + COMMAND.help())
    check_filters(values.node, values.service, values.tag)
    wait = _duration(values.wait, "wait")
    replication = _duration(values.wait_repl, "wait-repl")
    client = open_client(ctx, values)
    try:
        client.request("GET", "/v1/agent/self")
    except AgentError as exc:
        raise CommandError(f"Error querying Consul agent: {exc}") from None
    job = _Job(ctx, client, values, wait)
    spec = job_spec(command, argv, script, wait)
    try:
        job.create_session()
    except AgentError as exc:
        raise CommandError(f"Failed to create session: {exc}") from None
    try:
        if values.verbose:
            job.info(f"Created remote execution session: {job.session}")
        try:
            job.upload(spec)
        except AgentError as exc:
            raise CommandError(f"Failed to create job file: {exc}") from None
        if values.verbose:
            job.info("Uploaded remote execution spec")
        time.sleep(replication)  # so agents may read the spec stale (Consul's heuristic)
        started = time.monotonic()
        try:
            event_id = job.fire()
        except AgentError as exc:
            raise CommandError(f"Failed to fire event: {exc}") from None
        if values.verbose:
            job.info(f"Fired remote execution event: {event_id}")
        try:
            return job.wait_for_job(started)
        except AgentError as exc:
            raise CommandError(f"Failed to read results: {exc}") from None
    finally:
        job.cleanup()


COMMAND = Command(
    name="exec",
    synopsis="Executes a command on Waypost nodes",
    usage="""
Usage: waypost exec [options] [-|command...]

  Evaluates a command on remote Waypost (and Consul) nodes. The nodes responding can
  be filtered using regular expressions on node name, service, and tag
  definitions. If a command is '-', stdin will be read until EOF
  and used as a script input.
""",
    flags=_flags,
    run=_run,
)
