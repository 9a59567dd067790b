"""Turning one configured template into a file: settings, quiescence, writes and the command.

Owns: `TemplateSpec` (one template's validated settings), `write_atomic` (temp file in the
same directory, fsync, rename; identical bytes are not rewritten; perms; ``.bak``),
`run_command` (``/bin/sh -c`` through ``reactor.spawnProcess`` with a timeout) and
`TemplateJob`, which ties them together for one template: render from a source, write when the
bytes changed, then run the command, after the shared `Quiescence` wait (``min`` for changes to
stop, at most ``max``; `gateway.hookspecs`).

A render that fails (a template error, data the template cannot use, a destination that
cannot be written) is logged and leaves the old file as it was. A failing command is logged
with its output and run again after the next render, never in a loop.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import txaio
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessExitedAlready
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from gateway.hookspecs import Quiescence, parse_duration
from plugins.template.data import MISSING, DataError, DataFunctions, MissingData

txaio.use_twisted()

DEFAULT_PERMS = 0o644
OUTPUT_LIMIT = 64 * 1024  # bytes of command output kept for the log


def seconds(value: str | float) -> float:
    """Seconds from a number (the settings take plain seconds too) or a Go duration string
    (``"250ms"``, ``"1m30s"``, read by the shared `parse_duration`); ValueError otherwise."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return parse_duration(str(value))


def parse_perms(value: str | int | None) -> int | None:
    """File mode from ``"0640"``/``"640"`` (octal text) or an int; None keeps the default."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return int(value, 8)
    except ValueError:
        raise ValueError(f"invalid perms {value!r}: expected an octal mode such as \"0644\"") from None


@dataclass(frozen=True)
class TemplateSpec:
    """One template's settings (the items of ``templates`` in schemas/plugin-template.json)."""

    source: str
    destination: str = ""
    command: str = ""
    command_timeout: float = 30.0
    perms: int | None = None
    backup: bool = False
    wait_min: float = 0.0
    wait_max: float = 0.0
    left_delimiter: str | None = None
    right_delimiter: str | None = None
    syntax: str = ""  # "go" or "jinja"; empty means by the source's extension
    create_dest_dirs: bool = True

    @classmethod
    def from_config(cls, item: Mapping[str, Any]) -> TemplateSpec:
        wait = item.get("wait") or {}
        wait_min = seconds(wait.get("min", 0))
        wait_max = seconds(wait.get("max", 0))
        return cls(source=item["source"], destination=item.get("destination", ""),
                   command=item.get("command", ""),
                   command_timeout=seconds(item.get("command_timeout", "30s")),
                   perms=parse_perms(item.get("perms")), backup=bool(item.get("backup", False)),
                   wait_min=wait_min,
                   # consul-template's default: max is four times min.
                   wait_max=max(wait_max, wait_min) if wait_max else 4 * wait_min,
                   left_delimiter=item.get("left_delimiter"),
                   right_delimiter=item.get("right_delimiter"),
                   syntax=item.get("syntax", ""),
                   create_dest_dirs=bool(item.get("create_dest_dirs", True)))

    @property
    def is_jinja(self) -> bool:
        if self.syntax:
            return self.syntax == "jinja"
        return self.source.endswith((".j2", ".jinja", ".jinja2"))


# --- files ------------------------------------------------------------------------------

def write_atomic(path: str, data: bytes, perms: int | None = None, backup: bool = False,
                 create_dirs: bool = True) -> bool:
    """Replace ``path`` with ``data`` atomically; False (and nothing touched) if identical.

    The bytes go to a temporary file in the same directory, are fsynced, and the file is
    renamed over ``path``, so readers see the old or the new file, never a partial one. The
    mode is ``perms``, else the old file's, else 0644. Raises OSError.
    """
    try:
        with open(path, "rb") as handle:
            current: bytes | None = handle.read()
        old_mode: int | None = os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        current, old_mode = None, None
    if current == data and (perms is None or perms == old_mode):
        return False
    directory = os.path.dirname(os.path.abspath(path))
    if create_dirs:
        os.makedirs(directory, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.",
                                suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, perms if perms is not None else (old_mode or DEFAULT_PERMS))
        if backup and current is not None:
            shutil.copy2(path, path + ".bak")
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return True


def _fsync_dir(directory: str) -> None:
    # Makes the rename itself durable; some filesystems refuse, which is not worth failing on.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --- commands ---------------------------------------------------------------------------

@dataclass(frozen=True)
class CommandResult:
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    output: bytes  # stdout and stderr, interleaved, capped at OUTPUT_LIMIT
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def describe(self) -> str:
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit status {self.exit_code}"


class _CommandProtocol(ProcessProtocol):
    def __init__(self, done: Deferred) -> None:
        self.done = done
        self.output = bytearray()
        self.timed_out = False

    def outReceived(self, data: bytes) -> None:
        room = OUTPUT_LIMIT - len(self.output)
        if room > 0:
            self.output += data[:room]

    errReceived = outReceived

    def processEnded(self, reason: Failure) -> None:
        value = reason.value
        self.done.callback(CommandResult(getattr(value, "exitCode", None),
                                         getattr(value, "signal", None), bytes(self.output),
                                         self.timed_out))

    def kill(self) -> None:
        self.timed_out = True
        try:
            self.transport.signalProcess("KILL")
        except ProcessExitedAlready:
            pass  # it ended on its own just now
        # A child of the shell may still hold the pipes open; stop waiting for them.
        self.transport.loseConnection()


def run_command(reactor: Any, command: str, timeout: float,
                env: Mapping[str, str] | None = None) -> Deferred:
    """Run ``command`` with ``/bin/sh -c``; a Deferred of its `CommandResult` (never fails)."""
    done: Deferred = Deferred()
    protocol = _CommandProtocol(done)
    try:
        reactor.spawnProcess(protocol, "/bin/sh", ["/bin/sh", "-c", command],
                             env=dict(os.environ if env is None else env))
    except OSError as exc:
        done.callback(CommandResult(None, None, str(exc).encode()))
        return done
    timer = reactor.callLater(timeout, protocol.kill) if timeout > 0 else None

    def finished(result: CommandResult) -> CommandResult:
        if timer is not None and timer.active():
            timer.cancel()
        return result
    return done.addCallback(finished)


# --- one template -----------------------------------------------------------------------

class TemplateJob:
    """Renders one template from a source whenever poked, and writes and reloads on change.

    ``template`` is anything with ``render(funcs) -> str`` (`GoTemplate`, `JinjaTemplate`).
    With ``dry_out``, output goes there (``> destination`` and the text) instead of the file,
    and no command runs. ``on_settled`` is called after each render has finished, command
    included.
    """

    log = txaio.make_logger()

    def __init__(self, reactor: Any, spec: TemplateSpec, template: Any, source: Any, *,
                 env: Mapping[str, str] | None = None,
                 dry_out: Callable[[str], None] | None = None,
                 on_settled: Callable[[TemplateJob], None] | None = None) -> None:
        self.reactor = reactor
        self.spec = spec
        self.template = template
        self.source = source
        self.env = env
        self.dry_out = dry_out
        self.on_settled = on_settled
        self.used: dict[Any, Any] | None = None  # dependency -> value at the last render
        self.rendered = False  # a complete render has happened
        self.error: str | None = None  # why the last render failed, if it did
        self.writes = 0
        self.commands = 0
        self.command_failed = False
        self._running: Deferred | None = None
        self._command_again = False
        self._waiting_for: tuple[str, ...] = ()
        self.quiescence = Quiescence(reactor, spec.wait_min, spec.wait_max, self.render)

    @property
    def busy(self) -> bool:
        return self._running is not None or self.quiescence.pending

    def affected(self, kv: bool | None = None) -> bool:
        """Has anything the last render read changed (only KV deps, or only catalog deps)?"""
        if self.used is None:
            return True
        for dep, seen in self.used.items():
            if kv is not None and dep.is_kv != kv:
                continue
            try:
                now = self.source.fetch(dep)
            except MissingData:
                now = MISSING
            except DataError:
                continue
            if now is not seen and now != seen:
                return True
        return False

    def poke(self) -> None:
        """Data changed: render after the quiet period."""
        self.quiescence.poke()

    def stop(self) -> None:
        self.quiescence.cancel()

    def render(self) -> None:
        """Render now; write and run the command if the output changed."""
        data = DataFunctions(self.source, self.env, self.reactor.seconds)
        try:
            text = self.template.render(data.functions())
        except Exception as exc:  # noqa: BLE001 - any failure keeps the old file
            self.used = data.used
            if not data.missing:  # with data missing, errors are expected: wait for it
                self.error = str(exc)
                self.log.error("template {source}: {error}; {destination} left unchanged",
                               source=self.spec.source, error=exc,
                               destination=self.spec.destination or "output")
            self._settled()
            return
        self.used = data.used
        if data.missing:
            # Data still being fetched is routine; a key that does not exist is news.
            absent = tuple(str(d) for d in data.missing if data.used[d] is not MISSING)
            if absent and absent != self._waiting_for:
                self.log.info("template {source}: waiting for {deps} to exist",
                              source=self.spec.source, deps=", ".join(absent))
            self._waiting_for = absent
            self._settled()
            return
        self._waiting_for = ()
        self._output(text)

    def _output(self, text: str) -> None:
        spec = self.spec
        if self.dry_out is not None:
            self.rendered = True
            self.error = None
            self.dry_out(f"> {spec.destination}\n{text}")
            self._settled()
            return
        try:
            changed = write_atomic(spec.destination, text.encode("utf-8", "surrogateescape"),
                                   spec.perms, spec.backup, spec.create_dest_dirs)
        except OSError as exc:
            self.error = f"cannot write {spec.destination}: {exc.strerror or exc}"
            self.log.error("template {source}: {error}", source=spec.source, error=self.error)
            self._settled()
            return
        self.rendered = True
        self.error = None
        if changed:
            self.writes += 1
            self.log.info("rendered {source} => {destination}", source=spec.source,
                          destination=spec.destination)
        if spec.command and (changed or self.command_failed):
            self._command()
        else:
            self._settled()

    def _command(self) -> None:
        if self._running is not None:
            self._command_again = True  # run once more when the current one ends
            return
        self.commands += 1
        self._running = run_command(self.reactor, self.spec.command, self.spec.command_timeout,
                                    self.env)
        self._running.addCallback(self._command_done)

    def _command_done(self, result: CommandResult) -> None:
        self._running = None
        self.command_failed = not result.ok
        if result.ok:
            self.log.info("template {destination}: command {command!r} succeeded",
                          destination=self.spec.destination, command=self.spec.command)
        else:
            self.log.error("template {destination}: command {command!r} failed ({how}): "
                           "{output}", destination=self.spec.destination,
                           command=self.spec.command, how=result.describe(),
                           output=result.output.decode("utf-8", "replace").strip())
        if self._command_again:
            self._command_again = False
            self._command()
            return
        self._settled()

    def _settled(self) -> None:
        if self.on_settled is not None:
            self.on_settled(self)


__all__ = ["CommandResult", "TemplateJob", "TemplateSpec", "parse_perms", "run_command",
           "seconds", "write_atomic"]
