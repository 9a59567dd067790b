"""Runs a `WaypostServer` on the global reactor with logging and signal handling.

This and the console script are the only places that import the global reactor.
"""

from __future__ import annotations

import sys

import txaio
from twisted.logger import (
    FilteringLogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    globalLogBeginner,
    textFileLogObserver,
)

from agent.config.model import WAYPOST_VERSION, AgentConfig

_LEVELS = {"trace": LogLevel.debug, "debug": LogLevel.debug, "info": LogLevel.info,
           "warn": LogLevel.warn, "error": LogLevel.error}


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
    predicate = LogLevelFilterPredicate(defaultLogLevel=_LEVELS[level.lower()])
    observers = [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate])]
    if use_syslog:
        observers.append(FilteringLogObserver(_syslog_observer(), [predicate]))
    globalLogBeginner.beginLoggingTo(observers, redirectStandardIO=False)


def run_agent(config: AgentConfig) -> int:
    from twisted.internet import reactor

    from gateway.server import WaypostServer

    start_logging(config.log_level, config.enable_syslog)
    log = txaio.make_logger()
    server = WaypostServer(config, reactor)
    failed = []

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

    reactor.callWhenRunning(start)
    reactor.addSystemEventTrigger("before", "shutdown",
                                  lambda: server.stopService() if server.running else None)
    reactor.run()
    if failed:
        print(f"Error starting agent: {failed[0]}", file=sys.stderr)
        return 1
    return 0
