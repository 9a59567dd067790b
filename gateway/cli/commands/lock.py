"""``waypost lock``: run a command while holding a lock (or a semaphore slot) in the KV store.

Owns: the command's flags and messages, running the child (``sh -c`` for one argument, the
argv as given for several), forwarding SIGINT/SIGTERM to it, terminating it when the lock is
lost (SIGTERM, then SIGKILL after a grace period), and releasing the lock and destroying the
session when it exits. The exit code is the child's (128+N when a signal N ended it); with
``-child-exit-code`` it is Consul's (2 when the child failed, else 0). The locking itself is
:mod:`gateway.cli.locking`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from types import SimpleNamespace

from gateway.cli.commands import (
    Command,
    CommandError,
    Context,
    add_http_flags,
    open_client,
)
from gateway.cli.flags import FlagSet
from gateway.cli.http_client import AgentError
from agent.errors import InvalidRequest
from agent.durations import parse_duration
from gateway.cli.locking import KVLock, KVSemaphore, LockConflict, LockSession, monitor

__all__ = ["COMMAND"]

KILL_GRACE = 5.0  # Consul's lockKillGracePeriod


class _Interrupted(Exception):
    """A signal arrived while waiting for the lock."""


def parse_timeout(text: str) -> float:
    """Seconds in a Go duration ("30s", "1m30s"); "" and "0" mean no limit."""
    text = text.strip()
    if text in ("", "0"):
        return 0.0
    try:
        return parse_duration(text)
    except InvalidRequest:
        raise CommandError(f'Error: invalid duration "{text}" for -timeout') from None


def _flags() -> FlagSet:
    flags = FlagSet("lock")
    flags.int("n", default=1, help="Number of holders at once; above 1 a semaphore is used.")
    flags.string("timeout", default="", help="Maximum time to wait for the lock, "
                 "like \"30s\"; 0 waits forever.")
    flags.string("name", default="", help="Name of the lock session (default: derived from "
                 "the command).")
    flags.bool("shell", default=True, help="Run a single-argument command through sh -c.")
    flags.bool("pass-stdin", help="Pass stdin to the child process.")
    flags.bool("child-exit-code", help="Exit 2 if the child failed, else 0 (Consul's codes); "
               "by default the child's own exit code is returned.")
    flags.int("monitor-retry", default=3, help="Errors tolerated while watching the lock.")
    flags.bool("verbose", help="Print what the lock is doing.")
    return add_http_flags(flags)


def _child_argv(args: list[str], shell: bool) -> list[str]:
    if shell and len(args) == 1:
        return [os.environ.get("SHELL") or "/bin/sh", "-c", args[0]]
    return list(args)


def _exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


class _Runner:
    """One run: acquire, start the child, watch both, clean up."""

    def __init__(self, ctx: Context, values: SimpleNamespace, prefix: str,
                 command: list[str]) -> None:
        self.ctx = ctx
        self.values = values
        self.prefix = prefix
        self.command = command
        self.client = open_client(ctx, values)
        self.child: subprocess.Popen | None = None
        self.lost = threading.Event()
        self.stop = threading.Event()

    def info(self, text: str) -> None:
        if self.values.verbose:
            self.ctx.out(text)

    def run(self) -> int:
        name = self.values.name or (f"Consul lock for '{' '.join(self.command)}' "
                                    f"at '{self.prefix}'")
        session = LockSession(self.client, name)
        limit = self.values.n
        lock = (KVLock(self.client, self.prefix, session.id) if limit == 1
                else KVSemaphore(self.client, self.prefix, limit, session.id))
        session.keep_alive(self._lost)
        try:
            return self._run_locked(lock)
        finally:
            self.stop.set()
            try:
                session.destroy()
            except AgentError as exc:
                self.ctx.err(f"Lock cleanup failed: {exc}")

    def _run_locked(self, lock: KVLock | KVSemaphore) -> int:
        timeout = parse_timeout(self.values.timeout)
        deadline = time.monotonic() + timeout if timeout else None
        self.info(f"Attempting lock acquisition at {lock.key}")
        previous = self._trap(self._interrupt_waiting)
        try:
            acquired = lock.acquire(deadline)
        except _Interrupted:
            self.ctx.err("Shutdown triggered during lock acquisition")
            return 1
        except LockConflict as exc:
            self.ctx.err(f"Lock acquisition failed: {exc}")
            return 1
        finally:
            self._restore(previous)
        if not acquired:
            self.ctx.err("Shutdown triggered or timeout during lock acquisition")
            return 1
        try:
            code = self._run_child(lock)
        finally:
            try:
                lock.release()
                lock.cleanup()
            except (AgentError, LockConflict) as exc:
                self.ctx.err(f"Lock release failed: {exc}")
        if self.lost.is_set():
            self.ctx.err("Lock lost, child terminated")
            return 1
        if self.values.child_exit_code:
            return 2 if code else 0
        return code

    def _run_child(self, lock: KVLock | KVSemaphore) -> int:
        self.info("Starting handler")
        env = dict(os.environ, CONSUL_LOCK_HELD="true", WAYPOST_LOCK_HELD="true")
        stdin = None if self.values.pass_stdin else subprocess.DEVNULL
        previous = self._trap(self._forward)
        try:
            try:
                self.child = subprocess.Popen(_child_argv(self.command, self.values.shell),
                                              env=env, stdin=stdin)
            except OSError as exc:
                self.ctx.err(f"Error executing handler: {exc}")
                return 127
            monitor(self.client, lock, self._lost, self.stop, self.values.monitor_retry)
            code = _exit_code(self.child.wait())
        finally:
            self.stop.set()
            self._restore(previous)
        self.info("Child terminated, releasing lock")
        return code

    # --- signals and loss ---

    @staticmethod
    def _trap(handler) -> dict:
        return {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}

    @staticmethod
    def _restore(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _interrupt_waiting(self, signum, frame) -> None:
        raise _Interrupted()

    def _forward(self, signum, frame) -> None:
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    def _lost(self) -> None:
        """The session or the lock went away: stop the child (SIGTERM, then SIGKILL)."""
        if self.stop.is_set() or self.lost.is_set():
            return
        self.lost.set()
        child = self.child
        if child is None or child.poll() is not None:
            return
        self.info("Lock lost, killing child")
        child.terminate()
        try:
            child.wait(KILL_GRACE)
        except subprocess.TimeoutExpired:
            child.kill()


def _run(ctx: Context, values: SimpleNamespace, args: list[str]) -> int:
    if values.n <= 0:
        raise CommandError("Lock holder limit must be positive")
    if len(args) < 2:
        raise CommandError("Key prefix and child command must be specified")
    prefix = args[0].lstrip("/")
    try:
        return _Runner(ctx, values, prefix, args[1:]).run()
    except LockConflict as exc:
        raise CommandError(f"Lock setup failed: {exc}") from None


COMMAND = Command(
    name="lock",
    synopsis="Execute a command holding a lock",
    usage="""
Usage: waypost lock [options] prefix child...

  Acquires a lock (or, with -n above 1, a semaphore slot) at the given KV prefix and runs the
  child command while holding it. A second holder waits until the lock is free. The child is
  run with "sh -c" when it is one argument, else as the given argv; SIGINT and SIGTERM are
  passed on to it. If the lock is lost the child gets SIGTERM, then SIGKILL after 5s. When the
  child exits the lock is released and the exit code is the child's.

      $ waypost lock service/web/deploy ./deploy.sh
      $ waypost lock -n 2 -timeout 30s jobs/nightly 'make report'
""",
    flags=_flags,
    run=_run,
)
