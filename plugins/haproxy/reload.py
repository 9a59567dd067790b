"""Growing HAProxy's slots: render haproxy.cfg, check it, reload seamlessly (master-worker).

The runtime API can repoint, weigh and switch servers but cannot add any, nor add a backend.
When a backend needs more slots than it has (or is missing), `Reloader.reload` renders the
config from the template with enough ``server-template`` slots, validates it with
``haproxy -c -f``, saves the servers' state to the ``server-state-file`` (if the config names
one, so the new worker starts with every slot as it was), moves the file into place and asks
the master to reload: ``reload`` on the master CLI, or SIGUSR2 to the pid in ``pidfile``. With
``expose-fd listeners`` on the stats socket the new worker takes over the listening sockets and
the old one finishes its connections, so no connection is refused or dropped.

Rendering (`render`, pure) works on any plain haproxy.cfg: in ``backend <name>`` (or
``listen``) sections, ``server-template <prefix> <count> ...`` lines get a larger count, a
``${slots_<name>}`` placeholder (if the template uses one) becomes the count, a backend section
without slots gets a ``server-template`` line and a missing backend gets a section of its own.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import txaio
from twisted.internet import task
from twisted.internet.defer import inlineCallbacks
from twisted.internet.utils import getProcessOutputAndValue

from plugins.haproxy.runtime import Runtime, RuntimeAPIError

txaio.use_twisted()

SECTIONS = frozenset({"global", "defaults", "frontend", "backend", "listen", "resolvers",
                      "peers", "userlist", "mailers", "program", "http-errors", "ring",
                      "cache", "fcgi-app", "namespace_list", "crt-store", "traces"})
DEFAULT_SLOT_LINE = "server-template {prefix} {count} 127.0.0.1:80 disabled check"
_PLACEHOLDER = re.compile(r"\$\{slots_([A-Za-z0-9_.:-]+)\}")


class ReloadError(Exception):
    """The rendered config was rejected, or HAProxy did not come back with a new worker."""


@dataclass(frozen=True)
class SlotRequest:
    """A backend and how many ``<prefix>N`` slots it must have after the reload."""
    backend: str
    prefix: str
    count: int


def grow(needed: int, current: int) -> int:
    """The new slot count: a power of two covering `needed`, never fewer than `current`."""
    size = 1
    while size < needed:
        size *= 2
    return max(size, current)


def _section_of(line: str) -> tuple[str, str] | None:
    words = line.split()
    if words and words[0] in SECTIONS:
        return words[0], (words[1] if len(words) > 1 else "")
    return None


def template_slots(text: str, backend: str, prefix: str) -> int | None:
    """The count of ``server-template <prefix>`` in `backend`'s section, if there is one."""
    section = None
    for line in text.splitlines():
        header = _section_of(line)
        if header is not None:
            section = header
            continue
        words = line.split()
        if (section in (("backend", backend), ("listen", backend)) and len(words) >= 3
                and words[0] == "server-template" and words[1] == prefix and words[2].isdigit()):
            return int(words[2])
    return None


def render(template: str, requests: Mapping[str, SlotRequest]) -> str:
    """`template` with at least `requests[backend].count` slots in each requested backend."""
    text = _PLACEHOLDER.sub(
        lambda m: str(requests[m.group(1)].count) if m.group(1) in requests else m.group(0),
        template)
    out: list[str] = []
    section: tuple[str, str] | None = None
    done: set[str] = set()
    seen: set[str] = set()

    def close_section() -> None:
        if section and section[0] in ("backend", "listen") and section[1] in requests \
                and section[1] not in done:
            req = requests[section[1]]
            at = len(out)
            while at > 0 and not out[at - 1].strip():
                at -= 1  # before the blank lines that end the section
            out.insert(at, "    " + DEFAULT_SLOT_LINE.format(prefix=req.prefix, count=req.count))
            done.add(section[1])

    for line in text.splitlines():
        header = _section_of(line)
        if header is not None:
            close_section()
            section = header
            if header[0] in ("backend", "listen"):
                seen.add(header[1])
            out.append(line)
            continue
        words = line.split()
        req = requests.get(section[1]) if section and section[0] in ("backend", "listen") else None
        if req is not None and len(words) >= 3 and words[0] == "server-template" \
                and words[1] == req.prefix and words[2].isdigit():
            count = max(int(words[2]), req.count)
            indent = line[:len(line) - len(line.lstrip())]
            line = indent + " ".join(["server-template", req.prefix, str(count), *words[3:]])
            done.add(req.backend)
        out.append(line)
    close_section()
    for name in sorted(set(requests) - seen):
        req = requests[name]
        out += ["", f"backend {name}", "    balance roundrobin",
                "    " + DEFAULT_SLOT_LINE.format(prefix=req.prefix, count=req.count)]
    return "\n".join(out) + "\n"


def state_file_path(text: str) -> str | None:
    """Where the global ``server-state-file`` is (absolute, or under ``server-state-base``)."""
    base = path = None
    section = None
    for line in text.splitlines():
        header = _section_of(line)
        if header is not None:
            section = header[0]
            continue
        words = line.split()
        if section == "global" and len(words) >= 2:
            if words[0] == "server-state-base":
                base = words[1]
            elif words[0] == "server-state-file":
                path = words[1]
    if path is None:
        return None
    if os.path.isabs(path):
        return path
    return os.path.join(base, path) if base else None


class Reloader:
    """Render, check and reload; one call at a time (the service serialises them)."""

    log = txaio.make_logger()

    def __init__(self, reactor, runtime: Runtime, config_path: str,
                 template_path: str | None = None, binary: str = "haproxy",
                 pidfile: str | None = None, timeout: float = 15.0) -> None:
        self.reactor = reactor
        self.runtime = runtime
        self.config_path = config_path
        self.template_path = template_path or config_path
        self.binary = binary
        self.pidfile = pidfile
        self.timeout = timeout
        self.reloads = 0

    def can_reload(self) -> bool:
        return bool(self.runtime.master_socket or self.pidfile)

    @inlineCallbacks
    def reload(self, requests: Mapping[str, SlotRequest]):
        """Grow the slots to `requests`; fires once the new worker answers on the socket."""
        if not self.can_reload():
            raise ReloadError("neither master_socket nor pidfile is set: cannot reload HAProxy")
        template = yield self.runtime.call(Path(self.template_path).read_text)
        text = render(template, requests)
        staged = self.config_path + ".waypost-new"
        yield self.runtime.call(Path(staged).write_text, text)
        try:
            out, err, code = yield getProcessOutputAndValue(
                self.binary, ("-c", "-q", "-f", staged), env=dict(os.environ),
                reactor=self.reactor)
        except Exception:
            yield self.runtime.call(_unlink, staged)
            raise
        if code != 0:
            yield self.runtime.call(_unlink, staged)
            detail = (err or out).decode(errors="replace").strip()
            raise ReloadError(f"'{self.binary} -c' rejected the rendered config "
                              f"(HAProxy left as it was): {detail}")
        old_pid = yield self.runtime.pid()
        state_path = state_file_path(text)
        if state_path:
            state = yield self.runtime.servers_state_text()
            yield self.runtime.call(Path(state_path).write_text, state)
        yield self.runtime.call(os.replace, staged, self.config_path)
        yield self._trigger()
        pid = yield self._new_worker(old_pid)
        self.reloads += 1
        self.log.info("haproxy: reloaded (worker {old} -> {new}) with slots {slots}",
                      old=old_pid, new=pid,
                      slots=", ".join(f"{r.backend}={r.count}" for r in requests.values()))
        return pid

    @inlineCallbacks
    def _trigger(self, attempts: int = 10):
        """Ask the master to reload; its CLI refuses connections while it re-executes itself
        (right after a previous reload), so a refused attempt is repeated a few times."""
        if not self.runtime.master_socket:
            yield self.runtime.call(_signal_master, self.pidfile)
            return
        for attempt in range(attempts):
            try:
                yield self.runtime.master("reload")
                return
            except RuntimeAPIError:
                if attempt == attempts - 1:
                    raise
            yield task.deferLater(self.reactor, 0.1, lambda: None)

    @inlineCallbacks
    def _new_worker(self, old_pid: int):
        deadline = self.reactor.seconds() + self.timeout
        while self.reactor.seconds() < deadline:
            yield task.deferLater(self.reactor, 0.05, lambda: None)
            try:
                pid = yield self.runtime.pid()
            except RuntimeAPIError:
                continue  # the socket changes hands during the reload
            if pid != old_pid:
                return pid
        raise ReloadError(f"HAProxy started no new worker within {self.timeout:g}s of the "
                          "reload; the master keeps the old one (see HAProxy's log)")


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _signal_master(pidfile: str) -> None:
    try:
        pid = int(Path(pidfile).read_text().split()[0])
        os.kill(pid, signal.SIGUSR2)
    except (OSError, ValueError, IndexError) as e:
        raise ReloadError(f"cannot signal the HAProxy master from {pidfile}: {e}") from e
