"""Blocking queries, as Consul's servers run them: answer at once, or park on the state store's
watches until the result's index passes the client's, or until the wait runs out.

Owns Consul's rules (agent/consul/rpc.go blockingQuery): the default wait (5 m), its cap
(10 m), the jitter (up to wait/16 more, so parked queries do not all return together), an
index never below 1 (a client would otherwise never block), and "return when the index is
greater than the client's". Frontends only say what they want (`QueryOptions`).
"""

from __future__ import annotations

import random
from typing import Any, Callable

from twisted.internet.defer import Deferred

from agent.rpc.options import DEFAULT_WAIT, JITTER_FRACTION, MAX_WAIT, QueryOptions, ReadResult


def wait_time(options: QueryOptions, rng: random.Random) -> float:
    """How long a blocking read may park: Consul's default, cap and jitter."""
    wait = options.wait if options.wait > 0 else DEFAULT_WAIT
    wait = min(wait, MAX_WAIT)
    return wait + rng.random() * wait / JITTER_FRACTION


class BlockingReads:
    """Parks reads on a state store's watches; `reactor` times them out."""

    def __init__(self, reactor, watch: Callable[..., Any], rng: random.Random | None = None) -> None:
        self._reactor = reactor
        self._watch = watch  # store.watch(callback, tables, kv_prefixes)
        self._rng = rng or random.Random()
        self.parked = 0

    def read(self, answer: Callable[[], ReadResult], options: QueryOptions,
             watch_on: tuple[tuple[str, ...], tuple[str, ...]]) -> ReadResult | Deferred:
        """`answer()` now, if the client is not blocking or the index already moved on; else a
        Deferred firing with the first answer past `options.min_index` (or the last one when
        the wait runs out). Cancelling the Deferred drops the watch and the timer."""
        result = answer()
        if options.min_index <= 0 or result.index > options.min_index:
            return result
        return _Parked(self, answer, options, watch_on).deferred


class ParkedRead:
    """A read parked until what it waits for changes or its wait runs out: the timer, the
    owner's count of parked reads, answering once, and letting go when the reader goes away
    (cancelling `deferred`). Subclasses watch in `_park`, stop watching in `_unpark`, and
    answer through `_finish` from `_changed` and `_timeout`. The owner has `parked`,
    `_reactor` and `_rng`."""

    def __init__(self, owner: Any, options: QueryOptions) -> None:
        self._owner = owner
        self._released = False
        self.deferred: Deferred = Deferred(self._cancel)
        owner.parked += 1
        self._timer = owner._reactor.callLater(wait_time(options, owner._rng), self._timeout)

    def _timeout(self) -> None:
        raise NotImplementedError

    def _unpark(self) -> None:
        raise NotImplementedError

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._unpark()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._owner.parked -= 1

    def _finish(self, result: ReadResult | None, error: Exception | None = None) -> None:
        self._release()
        if self.deferred.called:
            return
        if error is not None:
            self.deferred.errback(error)
        else:
            self.deferred.callback(result)

    def _cancel(self, _deferred: Deferred) -> None:
        # The reader went away (its connection closed): drop the watch and the timer.
        self._release()


class _Parked(ParkedRead):
    """One parked read: wakes on a watch, answers when its index passes the client's."""

    def __init__(self, owner: BlockingReads, answer: Callable[[], ReadResult],
                 options: QueryOptions, watch_on) -> None:
        self._answer = answer
        self._min_index = options.min_index
        self._tables, self._prefixes = watch_on
        self._handle = None
        super().__init__(owner, options)
        self._park()

    def _park(self) -> None:
        self._handle = self._owner._watch(self._changed, self._tables, self._prefixes)

    def _changed(self) -> None:
        self._handle = None
        try:
            result = self._answer()
        except Exception as exc:  # noqa: BLE001 - the reader gets the error, the agent goes on
            self._finish(None, exc)
            return
        if result.index > self._min_index:
            self._finish(result)
        else:
            self._park()

    def _timeout(self) -> None:
        self._timer = None
        try:
            result = self._answer()
        except Exception as exc:  # noqa: BLE001
            self._finish(None, exc)
            return
        self._finish(result)

    def _unpark(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
