"""Script checks: run a program (``Args``) or a shell line (legacy ``Script``), Nagios style.

Exit 0 is passing, 1 warning, anything else (or death by a signal) critical. The output is
stdout and stderr together, of which only the last 4 KiB are kept, announced as Consul does
("Captured 4096 of 10000 bytes\\n...\\n<tail>"). After the timeout (default 30 s) the whole
process group is killed with SIGKILL and the check is critical with Consul's
"Timed out (30s) running check", followed by the output so far.

Each check runs in its own process group, as Consul's ``Setpgid`` gives it, so that killing it
takes its children too. Twisted's ``spawnProcess`` cannot ask for a new group, so the child is
a tiny Python trampoline that calls ``setpgid(0, 0)`` and then ``execv``\\s the real program
(about 10 ms a run; checks run at most once a second).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
from typing import Sequence

from twisted.internet import error
from twisted.internet.defer import Deferred, succeed
from twisted.internet.protocol import ProcessProtocol

from agent import structs
from agent.durations import go_duration
from agent.checks.base import (
    OUTPUT_MAX,
    CheckNotifier,
    IntervalRunner,
    TailBuffer,
)

DEFAULT_TIMEOUT = 30.0  # Consul's script check timeout
DEFAULT_SHELL = "/bin/sh"

# argv: [python, -I, -S, -c, _TRAMPOLINE, <resolved path>, <argv of the check...>]
_TRAMPOLINE = """\
import os, sys
os.setpgid(0, 0)
try:
    os.execv(sys.argv[1], sys.argv[2:])
except OSError as exc:
    os.write(2, ("fork/exec %s: %s" % (sys.argv[1], exc.strerror.lower())).encode())
    os._exit(127)
"""


def status_for_exit(code: int | None) -> str:
    """Consul's (and Nagios') reading of an exit status; None means killed by a signal."""
    if code == 0:
        return structs.PASSING
    if code == 1:
        return structs.WARNING
    return structs.CRITICAL


class _CheckProcess(ProcessProtocol):
    def __init__(self, output: TailBuffer) -> None:
        self.output = output
        self.ended: Deferred = Deferred()

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # Consul gives checks no stdin; a read sees EOF at once

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output.write(data)  # bounded: TailBuffer keeps only the last `limit` bytes

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value)


class ScriptRunner(IntervalRunner):
    """Consul's script (monitor) check."""

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *,
                 args: Sequence[str] = (), script: str = "", shell: str = DEFAULT_SHELL,
                 output_max: int = OUTPUT_MAX, **thresholds: int) -> None:
        super().__init__(reactor, check_id, interval, timeout or DEFAULT_TIMEOUT, notifier, rng,
                         **thresholds)
        self.argv = list(args) if args else [shell or DEFAULT_SHELL, "-c", script]
        self.output_max = output_max

    def run_once(self) -> Deferred:
        program = self.argv[0]
        # Resolve here, like Go's exec.Command: a missing program is a setup error with Go's
        # message, not an exit status of the trampoline.
        path = program if "/" in program else shutil.which(program)
        if path is None:
            return succeed((structs.CRITICAL,
                            f'exec: "{program}": executable file not found in $PATH'))
        output = TailBuffer(self.output_max)
        proto = _CheckProcess(output)
        try:
            transport = self._reactor.spawnProcess(
                proto, sys.executable,
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, path, *self.argv], env=None)
        except OSError as exc:
            return succeed((structs.CRITICAL, str(exc)))
        except ValueError:  # a NUL byte in the program or an argument
            return succeed((structs.CRITICAL, f"fork/exec {path}: invalid argument"))

        timed_out: list[bool] = []

        def time_up() -> None:
            timed_out.append(True)
            _kill_group(transport)

        def cancel(_: Deferred) -> None:
            if timer.active():
                timer.cancel()
            _kill_group(transport)

        def ended(reason) -> None:
            if timer.active():
                timer.cancel()
            if run.called:
                return  # cancelled by stop(): nobody wants the result
            if timed_out:
                message = f"Timed out ({go_duration(self.timeout)}) running check"
                text = output.text()
                run.callback((structs.CRITICAL, f"{message}\n\n{text}" if text else message))
                return
            code = reason.exitCode if isinstance(reason, error.ProcessTerminated) else 0
            if isinstance(reason, error.ProcessTerminated) and reason.signal is not None:
                code = None
            run.callback((status_for_exit(code), output.text()))

        run: Deferred = Deferred(cancel)
        timer = self._reactor.callLater(self.timeout, time_up)
        proto.ended.addCallback(ended)
        return run


def _kill_group(transport) -> None:
    """SIGKILL the check's process group, then let go of its pipes.

    Closing our pipe ends matters when a child escaped the group and still holds them: the run
    must end now, not when that child does.
    """
    pid = transport.pid
    if pid is not None:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # The trampoline may not have made its group yet; kill the process itself.
            try:
                transport.signalProcess("KILL")
            except error.ProcessExitedAlready:
                pass
    transport.loseConnection()
