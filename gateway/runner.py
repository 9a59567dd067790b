"""Runs a `WaypostServer` on the global reactor with logging and signal handling.

This and the console script are the only places that import the global reactor.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Callable

import txaio
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    PredicateResult,
    globalLogBeginner,
    textFileLogObserver,
)

from agent.agent import SnapshotError
from agent.config.model import WAYPOST_VERSION, AgentConfig
from agent.errors import WaypostError

_LEVELS = {"trace": LogLevel.debug, "debug": LogLevel.debug, "info": LogLevel.info,
           "warn": LogLevel.warn, "error": LogLevel.error}
_ORDER = {LogLevel.debug: 0, LogLevel.info: 1, LogLevel.warn: 2, LogLevel.error: 3,
          LogLevel.critical: 4}
# Namespaces of library internals ("Starting factory", "Main loop terminated", legacy
# log.msg lines): their INFO and DEBUG events are shown only at debug level. Their warnings
# and errors (an unhandled error in a Deferred) keep their level.
LIBRARY_NAMESPACES = ("twisted.", "log_legacy", "txaio", "treq", "hyperlink", "automat")


def is_library_event(event: dict) -> bool:
    namespace = event.get("log_namespace") or ""
    return namespace.startswith(LIBRARY_NAMESPACES)


def level_predicate(level: str) -> Callable[[dict], PredicateResult]:
    """Pass events at or above `level`, counting library chatter as debug."""
    threshold = _ORDER[_LEVELS[level.lower()]]

    def predicate(event: dict) -> PredicateResult:
        rank = _ORDER.get(event.get("log_level"), 1)
        if rank < _ORDER[LogLevel.warn] and is_library_event(event):
            rank = _ORDER[LogLevel.debug]
        return PredicateResult.maybe if rank >= threshold else PredicateResult.no
    return predicate


def _syslog_observer():
    import syslog

    from twisted.logger import formatEvent

    priorities = {LogLevel.debug: syslog.LOG_DEBUG, LogLevel.info: syslog.LOG_INFO,
                  LogLevel.warn: syslog.LOG_WARNING, LogLevel.error: syslog.LOG_ERR,
                  LogLevel.critical: syslog.LOG_CRIT}
    syslog.openlog("waypost", syslog.LOG_PID, syslog.LOG_LOCAL0)

    def observe(event):
        text = formatEvent(event)
        if text:
            syslog.syslog(priorities.get(event.get("log_level"), syslog.LOG_INFO), text)
    return observe


def start_logging(level: str, use_syslog: bool) -> None:
    txaio.use_twisted()
    # txaio loggers drop events below their own level before any observer sees them.
    txaio.set_global_log_level("trace" if level.lower() == "trace" else
                               _LEVELS[level.lower()].name)
    predicate = level_predicate(level)
    observers = [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])]
    if use_syslog:
        observers.append(FilteringLogObserver(_syslog_observer(), [predicate]))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)


def install_reload(server, reactor, reload_config: Callable[[], AgentConfig], log) -> None:
    """SIGHUP, `PUT /v1/agent/reload` and `waypost reload` re-read the config files.

    One reload runs at a time; a bad file leaves the running config alone and is reported.
    """
    facade = server.agent.facade

    def reload() -> Deferred:
        try:
            new = reload_config()
            server.agent.apply_config(new)
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the agent runs on
            log.error("Error reloading configuration: {exc}", exc=exc)
            return fail(WaypostError(f"Failed reloading configuration: {exc}"))
        log.info("Configuration reloaded")
        return succeed(None)

    facade.reload = reload
    def on_sighup(*_):
        # The outcome is logged by reload(); nothing waits on this Deferred.
        reactor.callFromThread(lambda: reload().addErrback(lambda _: None))
    signal.signal(signal.SIGHUP, on_sighup)


def run_agent(config: AgentConfig, reload_config: Callable[[], AgentConfig] | None = None) -> int:
    from twisted.internet import reactor

    from gateway.host import PluginConfigError
    from gateway.server import WaypostServer

    start_logging(config.log_level, config.enable_syslog)
    log = txaio.make_logger()
    try:
        server = WaypostServer(config, reactor, gossip=True)
    except PluginConfigError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    try:
        # Before anything starts: a damaged state file is one clear line and exit 1.
        server.agent.load_state()
    except SnapshotError as exc:
        print(f"Error: cannot start: {exc}", file=sys.stderr)
        return 1
    if reload_config is not None:
        install_reload(server, reactor, reload_config, log)
    # /v1/agent/leave ends the process once the agent has left, as Consul's does (exit 0).
    server.agent.facade.shutdown = lambda: reactor.callLater(0, reactor.stop)
    for key in getattr(config, "unsupported", ()):
        log.warn("configuration key {key!r} is accepted but not supported yet", key=key)
    failed = []
    pid_file = getattr(config, "pid_file", "")
    if pid_file:
        with open(pid_file, "w", encoding="ascii") as f:
            f.write(f"{os.getpid()}\n")

    def start():
        try:
            server.startService()
        except Exception as exc:  # e.g. the HTTP port is taken
            failed.append(exc)
            log.error("Error starting agent: {exc}", exc=exc)
            reactor.stop()
            return
        log.info("Waypost agent v{version} running: node {node!r}, datacenter {dc!r}, HTTP "
                 "{addr}:{port}", version=WAYPOST_VERSION, node=config.node_name,
                 dc=config.datacenter, addr=config.http_addr or config.client_addr,
                 port=config.ports.http)
        # Everything loaded at start (modules, schemas, the restored state) lives as long as
        # the agent: keep it out of the collector's full passes, which would otherwise walk it
        # again and again while requests are served.
        gc.freeze()

    def stop():
        # After a failed start some services never started; stopping them would only raise.
        if failed or not server.running:
            return None
        log.info("Shutting down agent")
        d = maybeDeferred(server.stopService)
        d.addErrback(lambda f: log.failure("Error while stopping the agent", failure=f))
        return d

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown", stop)
    # Twisted handles SIGINT only if it still has Python's default handler when the reactor
    # starts; a parent that ignored SIGINT (nohup, `cmd &` in a script) would leave the agent
    # deaf to it. Consul stops gracefully on SIGINT whatever its parent did, so do we.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    reactor.run()
    if failed:
        print(f"Error starting agent: {failed[0]}", file=sys.stderr)
        return 1
    return 0
