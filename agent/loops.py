"""Periodic background work that outlives a failing tick.

Twisted's `LoopingCall` stops for good when its function raises or its Deferred fails, so one
EMFILE in a snapshot tick would end snapshots for the life of the process, silently. Every
periodic job of the agent runs through `ResilientLoop` instead: a failed tick is logged (with
the loop's name), counted, and the next tick runs on schedule as if nothing happened.

A tick may return a Deferred; the next one is scheduled only when it has fired, so ticks never
overlap. The interval may be a callable, asked before each wait (anti-entropy's interval
grows with the cluster and carries a random stagger).
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import txaio
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.logger import LogLevel
from twisted.python.failure import Failure

txaio.use_twisted()


class ResilientLoop:
    """Call `tick` every `interval` seconds on `reactor` until stopped, whatever it raises.

    `ticks` counts ticks that completed, `failures` those that raised or failed; `last_error`
    describes the most recent failure ("" before any).
    """

    log = txaio.make_logger()

    def __init__(self, reactor, name: str, tick: Callable[[], Any],
                 interval: float | Callable[[], float]) -> None:
        self._reactor = reactor
        self.name = name
        self._tick = tick
        self._interval = interval
        self._timer: Any = None  # IDelayedCall of the next tick
        self._in_flight: Deferred | None = None
        self.running = False
        self.ticks = 0
        self.failures = 0
        self.last_error = ""

    def start(self, now: bool = False) -> None:
        """Begin ticking; with `now`, the first tick runs at once, else after one interval."""
        if self.running:
            return
        self.running = True
        if now:
            self._run()
        else:
            self._schedule()

    def stop(self) -> None:
        """No tick starts after this; one already in flight finishes on its own."""
        self.running = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def run_within(self, delay: float) -> None:
        """Bring the next tick forward to at most `delay` seconds from now (anti-entropy
        retries a failed sync sooner than its interval). A tick in flight is left alone: it
        schedules the next one itself when it ends."""
        timer = self._timer
        if self.running and timer is not None and timer.active():
            if timer.getTime() - self._reactor.seconds() > delay:
                timer.reset(delay)

    def _delay(self) -> float:
        interval = self._interval
        return float(interval() if callable(interval) else interval)

    def _schedule(self) -> None:
        try:
            delay = self._delay()
        except Exception:  # noqa: BLE001 - a broken interval must not end the loop either
            self._failed(Failure())
            delay = 1.0
        self._timer = self._reactor.callLater(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        d = maybeDeferred(self._tick)
        self._in_flight = d
        d.addCallbacks(self._succeeded, self._failed)
        d.addBoth(self._finished)

    def _succeeded(self, _result: Any) -> None:
        self.ticks += 1

    def _failed(self, failure: Failure) -> None:
        self.failures += 1
        self.last_error = failure.getErrorMessage() or failure.type.__name__
        # At error, with the traceback: a failing tick is a bug or a sick machine.
        self.log.failure("background loop {loop} failed (failure {count}); it runs again on "
                         "its next tick", failure=failure, level=LogLevel.error,
                         loop=self.name, count=self.failures)

    def _finished(self, _result: Any) -> None:
        self._in_flight = None
        if self.running and self._timer is None:
            self._schedule()


class LoopSet:
    """The agent's loops by name, for starting, stopping and reporting them together."""

    def __init__(self) -> None:
        self._loops: dict[str, ResilientLoop] = {}

    def add(self, loop: ResilientLoop) -> ResilientLoop:
        if loop.name in self._loops:
            raise ValueError(f"two background loops named {loop.name!r}")
        self._loops[loop.name] = loop
        return loop

    def __getitem__(self, name: str) -> ResilientLoop:
        return self._loops[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loops

    def __iter__(self) -> Iterator[ResilientLoop]:
        return iter(list(self._loops.values()))

    def stop(self) -> None:
        for loop in self:
            loop.stop()

    def failures(self) -> dict[str, int]:
        """Failed ticks per loop since start (all loops, zero included)."""
        return {loop.name: loop.failures for loop in self}
