"""``waypost sidekick``: keep a service announced at the local agent for as long as it lives.

Owns: the sidekick command (flags, the registration it sends, the heartbeat loop, wrapping a
child process, signal handling) and the Go duration syntax the client commands accept
(:func:`parse_go_duration`). The local probes live in :mod:`gateway.cli.commands.probes`.

The sidekick registers the service with a TTL check named ``sidekick:<id>`` and heartbeats it
every TTL/3. If the sidekick dies without deregistering (SIGKILL, OOM, a power cut), the check
goes critical one TTL after the last heartbeat and the agent's reaper removes the service once
it has been critical for ``-deregister-after``; see docs/sidekick.md for the worst-case times.

Plain blocking Python, like the other client commands: http.client, one thread waiting for the
wrapped child, signal handlers that only set flags.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    add_http_flags,
    parse_pairs,
)
from agent.errors import InvalidRequest
from agent.durations import go_duration, parse_duration
from gateway.cli.commands.probes import Probe, make_probe
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import (
    AgentClient,
    AgentError,
    AgentUnreachable,
    quote_path,
    resolve_address,
    resolve_tls,
    resolve_token,
)

__all__ = ["COMMAND", "Sidekick", "format_go_duration", "parse_go_duration"]

CHECK_PREFIX = "sidekick:"
# Consul raises a DeregisterCriticalServiceAfter below one minute to one minute (Waypost takes
# it as given); the reaper looks every 30 s (Consul's CheckReapInterval, ours too).
CONSUL_MIN_DEREGISTER = 60.0
REAP_INTERVAL = 30.0
MAX_BACKOFF = 5.0

def parse_go_duration(text: str, flag: str) -> float:
    """Seconds in a Go duration ("10s", "1m30s", "500ms"); a bare number means seconds."""
    raw = text.strip()
    if not raw:
        raise CommandError(f"Error: empty duration for -{flag}")
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        return parse_duration(raw)
    except InvalidRequest:
        raise CommandError(f'Error: invalid duration "{text}" for -{flag} '
                           "(use Go syntax such as 10s, 1m30s or 500ms)") from None


# The agent takes Go's own spelling of a duration.
format_go_duration = go_duration


# -- the registration ------------------------------------------------------------------------

def _get_field(doc: Mapping[str, Any], name: str) -> tuple[str | None, Any]:
    """A field of a Consul document, whatever its capitalisation (the agent accepts any)."""
    for key, value in doc.items():
        if isinstance(key, str) and key.replace("_", "").lower() == name.lower():
            return key, value
    return None, None


def heartbeat_check(service_id: str, ttl: float, deregister_after: float) -> dict[str, Any]:
    """The TTL check the sidekick keeps passing."""
    check: dict[str, Any] = {"CheckID": CHECK_PREFIX + service_id,
                             "Name": f"Sidekick heartbeat for {service_id}",
                             "TTL": format_go_duration(ttl)}
    if deregister_after > 0:
        check["DeregisterCriticalServiceAfter"] = format_go_duration(deregister_after)
    return check


def definition_from_flags(values: SimpleNamespace) -> dict[str, Any]:
    """The service definition given by -name, -id, -address, -port, -tag and -meta."""
    if not values.name:
        raise CommandError("Error: -name (or -service-file) is required")
    if values.port < 0 or values.port > 65535:
        raise CommandError(f"Error: -port {values.port} is out of range (0-65535)")
    doc: dict[str, Any] = {"Name": values.name, "ID": values.id or values.name}
    if values.address:
        doc["Address"] = values.address
    if values.port:
        doc["Port"] = values.port
    if values.tag:
        doc["Tags"] = list(values.tag)
    if values.meta:
        doc["Meta"] = parse_pairs(values.meta, "meta")
    return doc


def definition_from_file(path: str) -> dict[str, Any]:
    """A service definition file: the bare definition, or ``{"service": {...}}``."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except OSError as exc:
        raise CommandError(f"Error: cannot read -service-file {path}: "
                           f"{exc.strerror or exc}") from None
    except ValueError as exc:
        raise CommandError(f"Error: -service-file {path} is not valid JSON: {exc}") from None
    if isinstance(doc, dict) and len(doc) == 1:
        key, inner = _get_field(doc, "service")
        if key is not None and isinstance(inner, dict):
            doc = inner
    if not isinstance(doc, dict):
        raise CommandError(f"Error: -service-file {path} must hold a JSON object")
    return doc


def with_heartbeat(doc: dict[str, Any], ttl: float, deregister_after: float) -> tuple[dict, str]:
    """The definition plus the heartbeat check, and the service ID it will have."""
    _, service_id = _get_field(doc, "id")
    _, name = _get_field(doc, "name")
    service_id = service_id or name
    if not isinstance(service_id, str) or not service_id:
        raise CommandError("Error: the service definition has no Name")
    doc = dict(doc)
    key, checks = _get_field(doc, "checks")
    checks = list(checks) if isinstance(checks, list) else []
    checks.append(heartbeat_check(service_id, ttl, deregister_after))
    doc[key or "Checks"] = checks
    return doc, service_id


# -- the loop ---------------------------------------------------------------------------------

class Sidekick:
    """Registers, heartbeats and deregisters one service; optionally wraps a child process."""

    def __init__(self, client: AgentClient, definition: dict[str, Any], service_id: str,
                 ttl: float, probe: Probe | None, log: Callable[[str], None], *,
                 source: str = "") -> None:
        self.client = client
        self.definition = definition
        self.service_id = service_id
        self.check_id = CHECK_PREFIX + service_id
        self.interval = ttl / 3.0
        self.probe = probe
        self.log = log
        self.source = source  # the -service-file, for error messages
        self.wake = threading.Event()
        self.stop_signal: int | None = None
        self.child: subprocess.Popen | None = None
        self.registered = False
        self._unreachable = False

    # signals and the child only set flags; the main loop acts on them

    def on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_signal = signum
        self.wake.set()

    def start_child(self, argv: list[str]) -> None:
        try:
            self.child = subprocess.Popen(argv)
        except OSError as exc:
            raise CommandError(f"Error: cannot start {argv[0]}: {exc.strerror or exc}") from None
        threading.Thread(target=self._reap_child, name="sidekick-child", daemon=True).start()

    def _reap_child(self) -> None:
        assert self.child is not None
        self.child.wait()
        self.wake.set()

    def register(self) -> None:
        body = json.dumps(self.definition).encode()
        try:
            self.client.request("PUT", "/v1/agent/service/register", body=body)
        except AgentError as exc:
            if exc.status == 400:
                where = f" in {self.source}" if self.source else ""
                raise CommandError(f"Error: the agent refused the service definition{where}: "
                                   f"{str(exc).removeprefix('Error: ')}") from None
            raise
        self.registered = True
        self.log(f"registered service {self.service_id} with check {self.check_id} "
                 f"(heartbeat every {self.interval:.3g}s)")

    def heartbeat(self) -> None:
        if self.probe is not None:
            status, output = self.probe()
        elif self.child is not None:
            status, output = "passing", f"process {self.child.pid} running"
        else:
            status, output = "passing", f"sidekick {os.getpid()} alive"
        verb = {"passing": "pass", "warning": "warn"}.get(status, "fail")
        path = f"/v1/agent/check/{verb}/{quote_path(self.check_id, keep_slashes=False)}"
        try:
            self.client.request("PUT", path, query=[("note", output[:4096])])
        except AgentError as exc:
            if isinstance(exc, AgentUnreachable) or exc.status not in (404, 500):
                raise
            # The agent forgot us (restarted, or reaped us while we were away): announce again.
            self.log(f"the agent lost check {self.check_id}; registering again")
            self.register()
            self.client.request("PUT", path, query=[("note", output[:4096])])

    def deregister(self) -> None:
        path = "/v1/agent/service/deregister/" + quote_path(self.service_id, keep_slashes=False)
        try:
            self.client.request("PUT", path)
            self.log(f"deregistered service {self.service_id}")
        except AgentError as exc:
            self.log(f"could not deregister {self.service_id}: {exc}")

    def child_code(self) -> int | None:
        if self.child is None or self.child.poll() is None:
            return None
        code = self.child.returncode
        return 128 - code if code < 0 else code

    def run(self) -> int:
        """Announce until a signal arrives or the child exits; returns the exit code."""
        try:
            return self._loop()
        except BaseException:
            if self.child is not None and self.child.poll() is None:
                self.child.terminate()
                self.child.wait()
            raise

    def _loop(self) -> int:
        backoff = 0.0
        while True:
            if self.stop_signal is not None:
                return self._stop_on_signal()
            code = self.child_code()
            if code is not None:
                self.log(f"child exited with code {code}")
                self.deregister()
                return code
            try:
                if not self.registered:
                    self.register()
                self.heartbeat()
                if self._unreachable:
                    self.log("the agent is reachable again")
                self._unreachable = False
                backoff = 0.0
                delay = self.interval
            except AgentUnreachable as exc:
                if not self._unreachable:
                    self.log(f"{exc}; retrying")
                self._unreachable = True
                backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF, self.interval)
                delay = backoff
            except AgentError as exc:
                self.log(f"heartbeat failed: {exc}; retrying")
                backoff = min(max(backoff * 2, 0.25), MAX_BACKOFF, self.interval)
                delay = backoff
            self.wake.wait(delay)
            self.wake.clear()

    def _stop_on_signal(self) -> int:
        signum = self.stop_signal
        # Leave the catalog first, so traffic stops before the service goes down.
        self.deregister()
        if self.child is None:
            return 0
        if self.child.poll() is None:
            self.child.send_signal(signum)
        code = self.child.wait()
        return 128 - code if code < 0 else code


# -- the command -----------------------------------------------------------------------------

def _flags() -> FlagSet:
    flags = FlagSet("sidekick")
    flags.string("name", help="The service name.")
    flags.string("id", help="The service ID; defaults to the name.")
    flags.string("address", help="The service address; defaults to the node's.")
    flags.int("port", default=0, help="The service port.")
    flags.strings("tag", help="A service tag; repeatable.")
    flags.strings("meta", help="Service metadata as key=value; repeatable.")
    flags.string("service-file", help="A JSON service definition (bare or under \"service\") "
                 "to register instead of -name/-id/...; the agent validates it.")
    flags.string("ttl", default="10s", help="TTL of the heartbeat check; the sidekick "
                 "heartbeats every TTL/3.")
    flags.string("deregister-after", default="1m", help="How long the check may stay "
                 "critical (the sidekick gone) before the agent removes the service. Consul "
                 "raises values below 1m to 1m; 0 disables removal.")
    flags.string("check-http", help="Probe this URL before each heartbeat: 2xx passing, "
                 "429 warning, anything else critical.")
    flags.string("check-tcp", help="Probe HOST:PORT before each heartbeat: a connection "
                 "is passing, none is critical.")
    flags.string("check-cmd", help="Run this shell command before each heartbeat: exit 0 "
                 "passing, 1 warning, anything else critical.")
    flags.string("check-timeout", default="10s", help="Time limit of one probe (at most "
                 "the heartbeat interval).")
    return add_http_flags(flags)


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    ttl = parse_go_duration(values.ttl, "ttl")
    if ttl < 0.3:
        raise CommandError(f"Error: -ttl {values.ttl} is too short (at least 300ms)")
    deregister_after = parse_go_duration(values.deregister_after, "deregister-after")
    if values.service_file:
        if values.name or values.id or values.address or values.port or values.tag or values.meta:
            raise CommandError("Error: -service-file cannot be combined with -name, -id, "
                               "-address, -port, -tag or -meta")
        base = definition_from_file(values.service_file)
    else:
        base = definition_from_flags(values)
    definition, service_id = with_heartbeat(base, ttl, deregister_after)
    timeout = min(parse_go_duration(values.check_timeout, "check-timeout"), ttl / 3.0)
    probe = make_probe(values.check_http, values.check_tcp, values.check_cmd, timeout)
    # Requests time out well within a heartbeat interval, so a hung agent is retried in time.
    client = AgentClient(resolve_address(values.http_addr, ctx.env),
                         resolve_token(values.token, values.token_file, ctx.env),
                         tls=resolve_tls(values.ca_file, values.client_cert, values.client_key,
                                         ctx.env),
                         timeout=max(1.0, min(10.0, ttl / 3.0)))

    def log(text: str) -> None:
        ctx.err(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} [sidekick] {text}")
        ctx.stderr.flush()

    sidekick = Sidekick(client, definition, service_id, ttl, probe, log,
                        source=values.service_file or "")
    previous = {signum: signal.signal(signum, sidekick.on_signal)
                for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            sidekick.register()  # a definition the agent refuses fails before any child starts
        except AgentUnreachable as exc:
            log(f"{exc}; will keep trying")
        if args:
            sidekick.start_child(args)
        return sidekick.run()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


COMMAND = Command(
    name="sidekick",
    synopsis="Announces a service at the local agent while it (or a wrapped process) runs",
    usage="""
Usage: waypost sidekick [options] [-- COMMAND [ARGS...]]

  Registers a service at the local agent with a TTL check, heartbeats it every TTL/3
  (optionally from a local HTTP, TCP or command probe), registers again whenever the agent
  lost it, and deregisters on SIGTERM or SIGINT. With a COMMAND, runs it, announces the
  service while it runs, forwards SIGTERM/SIGINT to it and exits with its exit code.

      $ waypost sidekick -name redis -id redis-1 -port 6379 -check-tcp 127.0.0.1:6379
      $ waypost sidekick -name web -port 8080 -- python -m http.server 8080
""",
    flags=_flags,
    run=_run,
)
