"""Installing a rendered upstreams file safely: write, ``nginx -t``, keep or roll back, reload.

`NginxApplier.apply(text)` never blocks the reactor: file work runs in the reactor's thread pool
and nginx runs through ``reactor.spawnProcess``. The steps:

1. nothing to do when `text` is what is installed and nginx has loaded it;
2. the candidate is written next to the destination (``.<name>.waypost-tmp``, fsynced) and
   renamed over it, so nginx never sees a half-written file;
3. ``nginx -t`` checks the whole configuration with the candidate in place; if it fails, the
   previous file is put back (or the file removed if there was none), nginx's message is logged
   and the text is remembered so the same rejected text is not tried again;
4. ``nginx -s reload`` (or the configured command); if that fails it is retried on the next
   apply, even when the text is unchanged.

One apply runs at a time; callers serialize (the plugin service does), and wait `ready_in()`
seconds before the next: the nginx master takes a reload signal only after its previous reload
is over (it starts the new workers, then sleeps 100 ms before stopping the old ones, with
signals blocked), so a candidate installed sooner could be read by that pending reload before
``nginx -t`` has judged it. Spacing reloads by `reload_spacing` (250 ms by default) keeps every
reload we send reading a tested file, and costs nothing nginx would not delay anyway.
"""

from __future__ import annotations

import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import txaio
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.threads import deferToThreadPool

txaio.use_twisted()

UNCHANGED, RELOADED, REJECTED, RELOAD_FAILED = "unchanged", "reloaded", "rejected", "reload-failed"


@dataclass(frozen=True)
class ProcessResult:
    """How a command ended: its exit code (negative signal number if killed) and its output."""
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0


class _Collect(ProcessProtocol):
    """Gathers a child's stdout and stderr and fires `done` with a `ProcessResult` at exit."""

    def __init__(self, done: Deferred) -> None:
        self.done = done
        self.chunks: list[bytes] = []
        self.timer: Any = None  # the kill timer, cancelled at exit

    def outReceived(self, data: bytes) -> None:
        self.chunks.append(data)

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated) and value.exitCode is not None:
            code = value.exitCode
        else:
            code = -(getattr(value, "signal", None) or signal.SIGKILL)
        output = b"".join(self.chunks).decode("utf-8", "replace").strip()
        self.done.callback(ProcessResult(code, output))


def run_process(reactor: Any, argv: Sequence[str], timeout: float) -> Deferred:
    """Run `argv` (argv[0] looked up on PATH) without a shell; a Deferred of `ProcessResult`.

    A command still running after `timeout` seconds is killed. A command that cannot be
    started at all gives code 127 and the reason as output, like a shell would.
    """
    executable = shutil.which(argv[0])
    if executable is None:
        return succeed(ProcessResult(127, f"{argv[0]}: command not found"))
    proto = _Collect(Deferred())
    try:
        transport = reactor.spawnProcess(proto, executable, list(argv), env=dict(os.environ))
    except OSError as e:
        return succeed(ProcessResult(127, f"cannot run {argv[0]}: {e}"))
    proto.timer = reactor.callLater(timeout, _kill, transport)
    return proto.done


def _kill(transport: Any) -> None:
    try:
        transport.signalProcess("KILL")
    except Exception:  # already gone
        pass


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _install(path: Path, text: str | None) -> None:
    """Make `path` hold `text` atomically (rename over it); None removes the file."""
    if text is None:
        path.unlink(missing_ok=True)
        return
    candidate = path.with_name(f".{path.name}.waypost-tmp")
    with open(candidate, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(candidate, 0o644)
    os.replace(candidate, path)


class NginxApplier:
    """Owns one upstreams file and the nginx that includes it (see the module docstring)."""

    log = txaio.make_logger()

    def __init__(self, reactor: Any, upstreams_file: str | os.PathLike, *,
                 nginx_binary: str = "nginx", nginx_args: Sequence[str] = (),
                 reload_command: Sequence[str] | str | None = None,
                 timeout: float = 30.0, reload_spacing: float = 0.25) -> None:
        self.reactor = reactor
        self.path = Path(upstreams_file)
        self.test_argv = [nginx_binary, "-t", *nginx_args]
        if reload_command is None:
            self.reload_argv = [nginx_binary, *nginx_args, "-s", "reload"]
        elif isinstance(reload_command, str):
            self.reload_argv = ["/bin/sh", "-c", reload_command]
        else:
            self.reload_argv = list(reload_command)
        self.timeout = timeout
        self.reload_spacing = reload_spacing
        self._last_reload: float | None = None
        self._installed: str | None = None  # what we know the file holds, once checked
        self._loaded = False  # whether nginx was reloaded since `_installed` was put there
        self._rejected: str | None = None
        self.counts = {UNCHANGED: 0, RELOADED: 0, REJECTED: 0, RELOAD_FAILED: 0}

    def ready_in(self) -> float:
        """Seconds to wait before the next `apply` (0 when it may run now)."""
        if self._last_reload is None:
            return 0.0
        return max(0.0, self._last_reload + self.reload_spacing - self.reactor.seconds())

    def _in_thread(self, fn: Callable, *args: Any) -> Deferred:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    def apply(self, text: str) -> Deferred:
        """Install and load `text`; a Deferred of the outcome (`UNCHANGED`, `RELOADED`, ...)."""
        d = self._apply(text)
        d.addCallback(self._count)
        return d

    def _count(self, outcome: str) -> str:
        self.counts[outcome] += 1
        return outcome

    @inlineCallbacks
    def _apply(self, text: str):
        if text == self._installed and self._loaded:
            return UNCHANGED
        if text == self._rejected:
            return REJECTED  # logged when it was first rejected
        if text != self._installed:
            previous = yield self._in_thread(_read, self.path)
            if previous != text:
                yield self._in_thread(_install, self.path, text)
                result = yield run_process(self.reactor, self.test_argv, self.timeout)
                if not result.ok:
                    yield self._in_thread(_install, self.path, previous)
                    self._installed, self._rejected = previous, text
                    self.log.error(
                        "nginx rejected the new upstreams (kept the previous {path}): "
                        "{command} exited {code}: {output}", path=str(self.path),
                        command=" ".join(self.test_argv), code=result.code,
                        output=result.output)
                    return REJECTED
            self._installed, self._loaded, self._rejected = text, False, None
        self._last_reload = self.reactor.seconds()
        result = yield run_process(self.reactor, self.reload_argv, self.timeout)
        if not result.ok:
            self.log.error("nginx reload failed ({path} is installed, will retry on the next "
                           "change): {command} exited {code}: {output}", path=str(self.path),
                           command=" ".join(self.reload_argv), code=result.code,
                           output=result.output)
            return RELOAD_FAILED
        self._loaded = True
        return RELOADED
