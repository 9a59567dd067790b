"""Running this agent's checks: their runners, TTL expiry, and status updates with damping.

Owns what happens between two registrations of a check: a runner (`agent.checks`) or a TTL
update reports a result; a status change is handed to the local state at once (it marks the
check out of sync and syncs it), an output-only change is kept here and written back at most
once per `check_update_interval` — Consul's damping of chatty checks, staggered over
[interval/2, 3*interval/2) so that agents do not write together. A TTL that lapses turns the
check critical with Consul's "TTL expired" output.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed

from agent import structs
from agent.checks.base import cap_output
from agent.definitions import CheckSpec
from agent.local.entries import LocalCheck


class CheckRuntime:
    """Timers and runners of the checks of one local state.

    `current(entry)` says whether an entry is still the registered one (a run may finish
    after its check was replaced); `changed(entry)` marks it out of sync and returns the
    Deferred of the sync carrying it; `background(d)` logs a failure nobody waits on.
    """

    def __init__(self, reactor, *, notifier: Any,
                 runner_factory: Callable[[CheckSpec, Any], Any] | None,
                 check_update_interval: float, rng: random.Random,
                 current: Callable[[LocalCheck], bool],
                 changed: Callable[[LocalCheck], Deferred],
                 background: Callable[[Deferred], Deferred]) -> None:
        self._reactor = reactor
        self._notifier = notifier
        self._runner_factory = runner_factory
        self.check_update_interval = check_update_interval
        self._rng = rng
        self._current = current
        self._changed = changed
        self._background = background

    def start_runner(self, entry: LocalCheck) -> None:
        if self._runner_factory is None or entry.runner is not None:
            return
        runner = self._runner_factory(entry.spec, self._notifier)
        if runner is not None:
            entry.runner = runner
            runner.start()

    def stop(self, entry: LocalCheck) -> None:
        """No timer of the entry fires and its runner stops (it was replaced or dropped)."""
        for timer in (entry.timer, entry.deferred):
            if timer is not None and timer.active():
                timer.cancel()
        entry.timer = entry.deferred = None
        if entry.runner is not None:
            entry.runner.stop()
            entry.runner = None

    def arm_ttl(self, entry: LocalCheck, delay: float | None = None) -> None:
        delay = entry.spec.ttl if delay is None else delay
        if entry.timer is not None and entry.timer.active():
            entry.timer.reset(delay)
            return
        entry.timer = self._reactor.callLater(delay, self._ttl_expired, entry)

    def _ttl_expired(self, entry: LocalCheck) -> None:
        entry.timer = None
        if not self._current(entry):
            return
        output = f"TTL expired (last output before timeout follows): {entry.check.output}"
        self._background(self.set_status(entry, structs.CRITICAL, cap_output(output)))

    def set_status(self, entry: LocalCheck, status: str, output: str) -> Deferred:
        """A check's new result; fires once it is in the catalog (at once when nothing is
        to be written now)."""
        if status == structs.CRITICAL:
            if entry.critical_since is None:
                entry.critical_since = self._reactor.seconds()
        else:
            entry.critical_since = None
        if not self._current(entry):
            return succeed(0)  # dropped while a run was in flight
        if entry.check.status == status and entry.check.output == output:
            return succeed(0)
        interval = self.check_update_interval
        if interval > 0 and entry.check.status == status:
            # Output only: seen here at once, written back within the interval.
            entry.check = replace(entry.check, output=output)
            if entry.deferred is None:
                delay = interval / 2 + self._rng.random() * interval
                entry.deferred = self._reactor.callLater(delay, self._write_back, entry)
            return succeed(0)
        entry.check = replace(entry.check, status=status, output=output)
        return self._changed(entry)

    def _write_back(self, entry: LocalCheck) -> None:
        entry.deferred = None
        if self._current(entry):
            self._background(self._changed(entry))
