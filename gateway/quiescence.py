"""The wait timer plugins share: act once changes have stopped for a while, but not too late.

consul-template's ``wait = {min, max}``: a burst of changes (a rolling deploy re-registering
fifty instances) gives one render, once the catalog has been quiet for ``min``, and a catalog
that never stops changing still gives one at least every ``max``. The template and nginx
plugins use this one implementation, through `gateway.hookspecs.Quiescence`.
"""

from __future__ import annotations

from typing import Any, Callable

__all__ = ["Quiescence"]


class Quiescence:
    """Calls ``fire()`` once pokes stop for ``wait_min`` seconds, and no later than ``wait_max``
    after the first poke of a burst; with ``wait_min`` 0, at once, from `poke` itself.

    ``wait_max`` 0 means four times ``wait_min`` (consul-template's default), and it is never
    below ``wait_min``. Timers run on the ``reactor`` given (a ``Clock`` in tests).
    """

    def __init__(self, reactor: Any, wait_min: float, wait_max: float,
                 fire: Callable[[], Any]) -> None:
        self.reactor = reactor
        self.wait_min = wait_min
        self.wait_max = max(wait_max, wait_min) if wait_max else 4 * wait_min
        self.fire = fire
        self._min_call: Any = None
        self._max_call: Any = None

    @property
    def pending(self) -> bool:
        """A burst is being waited out: ``fire`` will be called."""
        return self._min_call is not None and self._min_call.active()

    def poke(self) -> None:
        """Something changed: restart the quiet period (the bound keeps running)."""
        if self.wait_min <= 0:
            self.fire()
            return
        if self.pending:
            self._min_call.reset(self.wait_min)
        else:
            self._min_call = self.reactor.callLater(self.wait_min, self._quiet)
        if self._max_call is None or not self._max_call.active():
            self._max_call = self.reactor.callLater(self.wait_max, self._quiet)

    def cancel(self) -> None:
        """Forget the burst being waited out (on stop): ``fire`` is not called for it."""
        for call in (self._min_call, self._max_call):
            if call is not None and call.active():
                call.cancel()
        self._min_call = self._max_call = None

    def _quiet(self) -> None:
        self.cancel()
        self.fire()
