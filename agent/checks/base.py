"""What every check runner shares: the notifier contract, output capping and the run loop.

`IntervalRunner` runs a subclass's `run_once()` on Consul's schedule: the first run after a
random stagger within one interval (Consul's ``lib.RandomStagger``), then one interval after the
previous run *finished*, so a check never overlaps with itself. Each result goes through
Consul's success/failure thresholds before reaching the `CheckNotifier`.

Consul's two ways of shortening output live here too: `cap_output` (the head, with
"... (captured N of M bytes)", as for TTL updates) and `TailBuffer` (the last N bytes, with
"Captured N of M bytes\\n...\\n", as for script and Docker output).
"""

from __future__ import annotations

import json
import os
import random
from typing import Any, Protocol

import txaio
from twisted.internet import defer, error
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.python.failure import Failure

from agent import structs

txaio.use_twisted()

OUTPUT_MAX = 4096  # Consul's DefaultBufSize: the most output a check keeps
USER_AGENT = "Consul Health Check"
_STATUSES = frozenset({structs.PASSING, structs.WARNING, structs.CRITICAL})


class CheckNotifier(Protocol):
    def update_check(self, check_id: str, status: str, output: str) -> None: ...


def cap_output(text: str, limit: int = OUTPUT_MAX) -> str:
    """`text` cut to its first `limit` bytes the way Consul cuts a TTL check's output.

    Consul counts bytes, so the UTF-8 encoding is measured; a character split by the cut is
    dropped rather than mangled.
    """
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    head = raw[:limit].decode("utf-8", "ignore")
    return f"{head} ... (captured {limit} of {len(raw)} bytes)"


class TailBuffer:
    """The last `limit` bytes written and a count of all of them (Consul's circbuf)."""

    def __init__(self, limit: int = OUTPUT_MAX) -> None:
        self.limit = limit
        self.total = 0
        self._data = bytearray()

    def write(self, data: bytes) -> None:
        self.total += len(data)
        if len(data) >= self.limit:
            self._data[:] = data[len(data) - self.limit:]
            return
        self._data += data
        excess = len(self._data) - self.limit
        if excess > 0:
            del self._data[:excess]

    def text(self) -> str:
        """The kept bytes, announced as Consul does when earlier ones were dropped."""
        kept = bytes(self._data).decode("utf-8", "replace")
        if self.total > self.limit:
            return f"Captured {self.limit} of {self.total} bytes\n...\n{kept}"
        return kept


def go_quote(text: str) -> str:
    """A string quoted as Go's %q quotes it, near enough for messages."""
    return json.dumps(text, ensure_ascii=False)


def dial_error(reason: Failure | BaseException, network: str, address: str) -> str:
    """A failed connection described as Go's net package describes it.

    Consul puts Go's error text into check output ("dial tcp 127.0.0.1:80: connect: connection
    refused"); operators grep for those words, so the common cases keep them.
    """
    exc = reason.value if isinstance(reason, Failure) else reason
    if isinstance(exc, error.DNSLookupError):
        host = address.rsplit(":", 1)[0].strip("[]")
        return f"dial {network}: lookup {host}: no such host"
    if isinstance(exc, (defer.TimeoutError, error.TimeoutError, error.ConnectingCancelledError)):
        return f"dial {network} {address}: i/o timeout"
    if isinstance(exc, error.ConnectionRefusedError):
        return f"dial {network} {address}: connect: connection refused"
    if isinstance(exc, error.NoRouteError):
        return f"dial {network} {address}: connect: no route to host"
    if isinstance(exc, error.ConnectError):
        if isinstance(exc.osError, int):
            return f"dial {network} {address}: connect: {os.strerror(exc.osError).lower()}"
        return f"dial {network} {address}: {exc.osError or exc}".rstrip(". ")
    return f"dial {network} {address}: {exc}"


class IntervalRunner:
    """Runs `run_once()` every `interval` seconds, never overlapping, and reports each result.

    Subclasses implement `run_once() -> Deferred[(status, output)]`. Its Deferred must clean up
    (kill a process, drop a connection) when cancelled, because `stop()` cancels a run in
    flight. A run that fails unexpectedly (or returns something that is not a (status,
    output) pair) is reported as critical with the error text, logged once, and the schedule
    goes on.

    ``success_before_passing`` and ``failures_before_critical`` are Consul's StatusHandler: a
    passing/warning result is reported only after that many in a row, a critical one only
    after that many in a row. The counters start at the thresholds, so the first result is
    always reported, as in Consul.
    """

    log = txaio.make_logger()

    def __init__(self, reactor, check_id: str, interval: float, timeout: float,
                 notifier: CheckNotifier, rng: random.Random | None = None, *,
                 success_before_passing: int = 0, failures_before_critical: int = 0) -> None:
        self._reactor = reactor
        self.check_id = check_id
        self.interval = interval
        self.timeout = timeout
        self._notifier = notifier
        # Our own generator, never the module's: no global state, and tests can seed it.
        self._rng = rng if rng is not None else random.Random()
        self._success_before_passing = success_before_passing
        self._failures_before_critical = failures_before_critical
        self._successes = success_before_passing
        self._failures = failures_before_critical
        self._started = False
        self._timer: Any = None  # IDelayedCall of the next run
        self._running: Deferred | None = None  # the run in flight
        self._last_error: str | None = None  # the failure logged last, until a run succeeds

    def run_once(self) -> Deferred:
        raise NotImplementedError

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        # Spread the first runs of many checks over an interval, as Consul does.
        self._schedule(self._rng.random() * self.interval)

    def stop(self) -> None:
        self._started = False
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        running, self._running = self._running, None
        if running is not None:
            try:
                running.cancel()  # its result, whatever it is, is ignored by _completed
            except Exception:  # noqa: BLE001 - removing a check must not fail on its cleanup
                self.log.failure("check {check_id}: stopping its run failed",
                                 check_id=self.check_id)

    @property
    def running(self) -> bool:
        """Whether a run is in flight (for tests and stats)."""
        return self._running is not None

    def _schedule(self, delay: float) -> None:
        self._timer = self._reactor.callLater(delay, self._run)

    def _run(self) -> None:
        self._timer = None
        run = maybeDeferred(self.run_once)
        self._running = run
        run.addBoth(self._completed, run)

    def _completed(self, result: Any, run: Deferred) -> None:
        if self._running is not run:
            return  # stopped meanwhile: swallow whatever it produced, CancelledError too
        self._running = None
        # Schedule before anything else can go wrong, and before notifying: one broken run
        # must never end the schedule, and a notifier that stops this runner must find the
        # timer to cancel.
        self._schedule(self.interval)
        try:
            status, output = self._outcome(result)
        except Exception:  # noqa: BLE001 - a run that returned nonsense is a failed run
            status, output = self._outcome(Failure())
        self._report(status, output)

    def _outcome(self, result: Any) -> tuple[str, str]:
        """(status, output) of a finished run; a failure is critical with its error text.

        A failure is logged with its traceback once; the same error again on the next runs
        only shows in the check's output, so a broken check cannot flood the log.
        """
        if isinstance(result, Failure):
            message = result.getErrorMessage()
            if message != self._last_error:
                self._last_error = message
                self.log.failure("check {check_id} failed to run", failure=result,
                                 check_id=self.check_id)
            return structs.CRITICAL, f"Check failed to run: {message}"
        status, output = result
        if status not in _STATUSES or not isinstance(output, str):
            raise TypeError(f"a check run gave {result!r}, not (status, output)")
        self._last_error = None
        return status, output

    def _report(self, status: str, output: str) -> None:
        if status in (structs.PASSING, structs.WARNING):
            self._successes += 1
            self._failures = 0
            if self._successes < self._success_before_passing:
                return
        else:
            self._failures += 1
            self._successes = 0
            if self._failures < self._failures_before_critical:
                return
        try:
            self._notifier.update_check(self.check_id, status, output)
        except Exception:  # noqa: BLE001 - a broken notifier must not end the schedule
            self.log.failure("notifier failed for check {check_id}", check_id=self.check_id)
