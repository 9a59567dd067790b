"""A fake clock and thread pool under which the write-ahead log runs synchronously.

`InlinePool` runs each job on the caller's thread at once and `ThreadedClock.callFromThread`
delivers its result at once, so a non-dev agent (WAL and snapshots on real files) can be driven
by a fake clock: a write is durable, applied and answered before `facade.write` returns.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.python.failure import Failure


class ThreadedClock(Clock):
    """A `Clock` that also takes calls "from threads" (they run at once)."""

    def callFromThread(self, f, *args, **kwargs):
        f(*args, **kwargs)


class InlinePool:
    """A thread pool that runs every job at once, on the calling thread."""

    started = True

    def callInThreadWithCallback(self, on_result, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException:
            on_result(False, Failure())
        else:
            on_result(True, result)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class TurnClock(ThreadedClock):
    """`turn()` runs the calls due now, but not those they schedule: one reactor turn."""

    def turn(self) -> int:
        due = [call for call in self.calls if call.getTime() <= self.seconds()]
        for call in due:
            self.calls.remove(call)
            call.called = 1
            call.func(*call.args, **call.kw)
        return len(due)
