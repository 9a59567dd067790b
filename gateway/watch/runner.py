"""The agent's configured watches (`watches` in the config), run inside the agent.

Each watch asks the agent's own HTTP API in process (no socket) with blocking queries, and
invokes its handler — a command with the JSON on stdin, or an HTTP endpoint receiving it — only
when the answer changed. Handlers of one watch never overlap: a change that arrives while the
handler runs is delivered (the latest one only) when it finishes.
"""

from __future__ import annotations

import json
import os
from io import BytesIO
from typing import Any, Mapping

import txaio
from twisted.application.service import Service
from twisted.internet.defer import Deferred, inlineCallbacks, maybeDeferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

from gateway.http.request import Request
from gateway.watch.plan import WatchError, canonical, make_plan

txaio.use_twisted()

WAIT = "5m"
RETRY = 5.0  # seconds before asking again after an error


class _HandlerProcess(ProcessProtocol):
    def __init__(self, data: bytes, done: Deferred) -> None:
        self.data = data
        self.done = done
        self.output = b""

    def connectionMade(self) -> None:
        self.transport.write(self.data)
        self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.output = (self.output + data)[-4096:]

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.done.callback((0 if reason.check(ProcessDone) else reason.value.exitCode, self.output))


class Watch:
    log = txaio.make_logger()

    def __init__(self, spec: Mapping[str, Any], api, reactor) -> None:
        self.spec = spec
        self.plan = make_plan(spec)
        self.api = api
        self.reactor = reactor
        self.running = False
        self.invocations = 0
        self.failures = 0  # queries that failed or gave an answer the watch could not read
        self._pending = None
        self._timer = None

    def start(self) -> None:
        self.running = True
        self._loop()

    def stop(self) -> None:
        self.running = False
        if self._pending is not None:
            self._pending.cancel()
        if self._timer is not None and self._timer.active():
            self._timer.cancel()

    @inlineCallbacks
    def _loop(self):
        index, last = 0, None
        while self.running:
            try:
                index, seen, value, changed = yield self._step(index, last)
            except Exception as exc:  # noqa: BLE001 - one bad answer must not end the watch
                if not self.running:
                    return
                self.failures += 1
                self.log.warn("watch {type}: query failed: {exc}", type=self.plan.type, exc=exc)
                yield self._sleep(RETRY)
                continue
            if changed:
                last = canonical(value)
                yield self._invoke(value, seen)

    @inlineCallbacks
    def _step(self, index: int, last):
        """One blocking query: (next index to block on, the index answered, the shaped value,
        whether it differs from `last`)."""
        path, raw = self.plan.target(index)
        if index:
            raw += b"&wait=" + WAIT.encode()
        try:
            self._pending = maybeDeferred(self.api, Request(method="GET", path=path, raw_query=raw))
            response = yield self._pending
        finally:
            self._pending = None
        if response.status not in (200, 404):
            raise WatchError(f"agent answered {response.status}")
        headers = dict(response.headers)
        new_index = int(headers.get(b"X-Consul-Index", b"0"))
        value = self.plan.shape(response.status, response.body)
        # An index that went backwards (a restore) starts the watch over, as Consul's does.
        next_index = new_index if new_index >= index else 0
        return next_index, new_index, value, canonical(value) != last

    def _sleep(self, seconds: float) -> Deferred:
        d = Deferred()
        self._timer = self.reactor.callLater(seconds, d.callback, None)
        return d

    @inlineCallbacks
    def _invoke(self, value: Any, index: int):
        self.invocations += 1
        data = (json.dumps(value) + "\n").encode()
        try:
            if self.spec.get("handler_type", "script") == "http":
                yield self._post(data, index)
            else:
                yield self._run_script(data, index)
        except Exception as exc:  # noqa: BLE001 - a failing handler must not stop the watch
            self.log.error("watch {type}: handler failed: {exc}", type=self.plan.type, exc=exc)

    def _run_script(self, data: bytes, index: int) -> Deferred:
        args = self.spec.get("args")
        if args:
            argv = [str(a) for a in args]
        elif self.spec.get("handler"):
            argv = ["/bin/sh", "-c", str(self.spec["handler"])]
        else:
            raise WatchError("a watch needs a handler or args")
        done = Deferred()
        env = dict(os.environ, CONSUL_INDEX=str(index), WAYPOST_INDEX=str(index))
        self.reactor.spawnProcess(_HandlerProcess(data, done), argv[0], argv, env=env)

        def finished(result):
            code, output = result
            if code:
                self.log.error("watch {type}: handler exited {code}: {output}",
                               type=self.plan.type, code=code, output=output.decode("utf-8", "replace"))
        return done.addCallback(finished)

    def _post(self, data: bytes, index: int) -> Deferred:
        config = self.spec.get("http_handler_config") or {}
        headers = Headers({b"Content-Type": [b"application/json"],
                           b"X-Consul-Index": [str(index).encode()]})
        for name, values in (config.get("header") or {}).items():
            headers.setRawHeaders(name.encode(), [v.encode() for v in values])
        agent = Agent(self.reactor)
        d = agent.request(config.get("method", "POST").encode(), config["path"].encode(), headers,
                          FileBodyProducer(BytesIO(data)))
        return d.addCallback(readBody)


class WatchesService(Service):
    """Runs every configured watch; `replace` swaps them on reload."""

    log = txaio.make_logger()

    def __init__(self, api, reactor, specs) -> None:
        self.api = api
        self.reactor = reactor
        self.watches = [Watch(spec, api, reactor) for spec in specs]
        self.name = "watches"

    def startService(self) -> None:
        super().startService()
        for watch in self.watches:
            watch.start()

    def stopService(self):
        for watch in self.watches:
            watch.stop()
        return super().stopService()

    def replace(self, specs) -> None:
        new = [Watch(spec, self.api, self.reactor) for spec in specs]
        for watch in self.watches:
            watch.stop()
        self.watches = new
        if self.running:
            for watch in self.watches:
                watch.start()


def make_watches_service(facade, reactor) -> WatchesService:
    from gateway.http.api import HTTPAPI
    from gateway.http.plugin import build_routes
    service = WatchesService(HTTPAPI(facade, reactor, build_routes()), reactor,
                             facade.config.watches)
    facade.reload_listeners.append(lambda config: service.replace(config.watches))
    return service
