"""Alias checks: mirror the health of another service instance or of a node.

There is no interval. The runner registers a catalog watch (``watch(callback)``, which fires
once per change and is registered again after each firing) and on every change asks
``store_reader(node, service_id)`` for the checks that count: the aliased service's checks plus
its node's checks, or the node's checks only when no service is aliased. ``None`` means the
service (or node) does not exist.

The result follows Consul's ``processChecks``: any critical check makes the alias critical,
else any warning makes it warning, else it passes. Outputs are Consul's: "All checks passing.",
"No checks found." (the service exists but has no checks), ``Aliased check "<name>" failing:
<output>`` and "Service <id> could not be found on node <node>". The reader may return check
rows (anything with ``status``, ``name`` and ``output``), which gives those exact texts, or bare
status strings, for which the failing message has no name to quote and reads "At least one
check is critical" / "At least one check is warning".

A non-existent node aliased without a service is critical ("Node <node> could not be found");
Consul 1.8 reports "No checks found." there, which hides a typo in ``alias_node``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

import txaio

from agent import structs
from agent.checks.base import CheckNotifier, go_quote

WATCH_RETRY = 1.0  # seconds before trying again to watch the catalog after that failed

StoreReader = Callable[[str, str], "Iterable[Any] | None"]
Watch = Callable[[Callable[[], None]], Any]


def alias_status(checks: Iterable[Any] | None, node: str, service_id: str) -> tuple[str, str]:
    """The (status, output) an alias of `service_id` on `node` shows for these checks."""
    if checks is None:
        if service_id:
            return structs.CRITICAL, f"Service {service_id} could not be found on node {node}"
        return structs.CRITICAL, f"Node {node} could not be found"
    status, output = structs.PASSING, "No checks found."
    for check in checks:
        state = getattr(check, "status", check)
        if state in (structs.CRITICAL, structs.WARNING):
            status = state
            output = _failing(check, state)
            if state == structs.CRITICAL:
                break  # nothing is worse; Consul stops at the first critical check
        elif status == structs.PASSING:
            # A passing check must not hide an earlier warning's message.
            output = "All checks passing."
    return status, output


def _failing(check: Any, state: str) -> str:
    name = getattr(check, "name", None)
    if name is None:
        return f"At least one check is {state}"
    return f"Aliased check {go_quote(name)} failing: {getattr(check, 'output', '')}"


class AliasRunner:
    """Consul's alias check, driven by catalog changes instead of a timer.

    A failing reader makes the alias critical with the error as output; a watch that cannot
    be registered is retried every `WATCH_RETRY` seconds, so the alias never goes quiet.

    Recomputing happens in a fresh reactor turn, never inside the watch callback: the store
    fires watches at the end of a write, and our own status update is another write.
    """

    log = txaio.make_logger()

    def __init__(self, reactor, check_id: str, notifier: CheckNotifier, *, node: str,
                 service_id: str, store_reader: StoreReader, watch: Watch) -> None:
        self._reactor = reactor
        self.check_id = check_id
        self.node = node
        self.service_id = service_id
        self._notifier = notifier
        self._read = store_reader
        self._watch = watch
        self._handle: Any = None
        self._pending: Any = None  # IDelayedCall of a queued refresh
        self._last: tuple[str, str] | None = None
        self._last_error: str | None = None
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._refresh()

    def stop(self) -> None:
        self._started = False
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._pending is not None and self._pending.active():
            self._pending.cancel()
        self._pending = None

    def _changed(self) -> None:
        self._handle = None
        if self._started and self._pending is None:
            self._pending = self._reactor.callLater(0, self._refresh)

    def _refresh(self) -> None:
        self._pending = None
        if not self._started:
            return
        # Watch again before reading, so a change made between the read and the next
        # registration cannot slip past.
        try:
            self._handle = self._watch(self._changed)
        except Exception as exc:  # noqa: BLE001 - without a watch, poll until one works
            self._log_once(exc)
            self._pending = self._reactor.callLater(WATCH_RETRY, self._refresh)
            self._publish((structs.CRITICAL,
                           f"Failure checking aliased node or service: {exc}"))
            return
        try:
            result = alias_status(self._read(self.node, self.service_id), self.node,
                                  self.service_id)
        except Exception as exc:  # noqa: BLE001 - shown as Consul shows a failed lookup
            self._log_once(exc)
            result = (structs.CRITICAL, f"Failure checking aliased node or service: {exc}")
        else:
            self._last_error = None
        self._publish(result)

    def _publish(self, result: tuple[str, str]) -> None:
        if result == self._last:
            return
        self._last = result
        try:
            self._notifier.update_check(self.check_id, *result)
        except Exception:  # noqa: BLE001 - a broken notifier must not stop the alias
            self.log.failure("notifier failed for check {check_id}", check_id=self.check_id)

    def _log_once(self, exc: BaseException) -> None:
        """Log a failure with its traceback, but the same one again only in the output."""
        if str(exc) != self._last_error:
            self._last_error = str(exc)
            self.log.failure("alias check {check_id} failed", check_id=self.check_id)
