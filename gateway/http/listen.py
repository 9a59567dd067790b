"""Where the HTTP API listens: a TCP address or a UNIX socket, with the system's backlog.

Owns turning `addresses.http` (or `client_addr`) into a listening endpoint: the listen backlog
(the system's maximum, not Twisted's 50, so a burst of connects is not stalled for a second at a
time), and for `unix:///path` addresses Consul's handling of the socket file: a stale socket
left by a dead agent is removed, and `unix_sockets { mode, user, group }` are applied.
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import stat
from pathlib import Path
from typing import Any, Mapping

import txaio
from twisted.application.internet import StreamServerEndpointService
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.endpoints import TCP4ServerEndpoint, TCP6ServerEndpoint
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from zope.interface import implementer

txaio.use_twisted()

__all__ = ["UNIX_PREFIX", "listen_backlog", "http_endpoint", "UnixSocketEndpoint",
           "UnixSocketError", "check_dns_address", "HTTPListenerService"]

UNIX_PREFIX = "unix://"
FALLBACK_BACKLOG = 4096
_SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
_UMASK_STATUS = Path("/proc/self/status")


def listen_backlog(source: Path = _SOMAXCONN) -> int:
    """The kernel's cap on a listen queue (net.core.somaxconn); a large value if unknown.

    Asking for more than the cap is harmless: the kernel silently lowers it."""
    try:
        value = int(source.read_text().strip())
    except (OSError, ValueError):
        return FALLBACK_BACKLOG
    return value if value > 0 else FALLBACK_BACKLOG


def check_dns_address(config: Any) -> None:
    """Refuse a UNIX socket address for DNS, with Consul's words.

    DNS needs UDP, which a stream socket cannot carry. Called when the HTTP listener starts
    (our listener code is where start-up errors about addresses are raised)."""
    if config.ports.dns < 0:
        return
    if (config.dns_addr or config.client_addr).startswith(UNIX_PREFIX):
        raise ValueError("DNS address cannot be a unix socket")


def http_endpoint(reactor: Any, config: Any, backlog: int) -> IStreamServerEndpoint:
    """The endpoint for the HTTP API: `addresses.http`, else `client_addr`."""
    host = config.http_addr or config.client_addr
    if host.startswith(UNIX_PREFIX):
        return UnixSocketEndpoint(reactor, host[len(UNIX_PREFIX):], config.unix_sockets,
                                  backlog)
    endpoint_cls = TCP6ServerEndpoint if ":" in host else TCP4ServerEndpoint
    return endpoint_cls(reactor, config.ports.http, backlog=backlog, interface=host)


class UnixSocketError(ValueError):
    """The socket file or its `unix_sockets` settings cannot be used; says which and why."""


def _current_umask() -> int:
    # Read, not set-and-restore: os.umask() changes it for every thread of the process.
    try:
        for line in _UMASK_STATUS.read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _parse_mode(text: str) -> int:
    try:
        mode = int(text, 8)
    except ValueError:
        raise UnixSocketError(f'invalid mode specified for unix socket: "{text}" '
                              "(want octal, like \"0770\")") from None
    if not 0 <= mode <= 0o7777:
        raise UnixSocketError(f'invalid mode specified for unix socket: "{text}"')
    return mode


def _parse_user(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return pwd.getpwnam(text).pw_uid
    except KeyError:
        raise UnixSocketError(f"invalid user specified for unix socket: {text}") from None


def _parse_group(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return grp.getgrnam(text).gr_gid
    except KeyError:
        raise UnixSocketError(f"invalid group specified for unix socket: {text}") from None


def _remove_stale_socket(path: str, log) -> None:
    """Remove a socket file nobody listens on. A live one, or any other kind of file,
    is left alone and refused: an agent must not steal a socket or delete user data."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        raise UnixSocketError(f"cannot listen on unix socket {path}: "
                              "the path exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)  # a live listener with a full queue makes connect() wait
    try:
        probe.connect(path)
    except socket.timeout:
        live = True
    except OSError:
        live = False  # refused: nobody listens, the file is left over
    else:
        live = True
    finally:
        probe.close()
    if live:
        raise UnixSocketError(f"cannot listen on unix socket {path}: "
                              "another process is listening on it")
    log.warn("Replacing stale unix socket {path}", path=path)
    os.unlink(path)


@implementer(IStreamServerEndpoint)
class UnixSocketEndpoint:
    """Listens on a UNIX socket file with `unix_sockets` mode and ownership applied.

    The mode is set between bind() and listen() (by Twisted), so no client can connect
    while the file still has the wrong one; ownership follows right after."""

    log = txaio.make_logger()

    def __init__(self, reactor: Any, path: str, settings: Mapping[str, str],
                 backlog: int) -> None:
        self._reactor = reactor
        self.path = path
        self._settings = dict(settings or {})
        self._backlog = backlog

    def listen(self, factory: Any) -> Deferred:
        try:
            return succeed(self._listen(factory))
        except Exception as exc:  # noqa: BLE001 - the caller reports it and stops start-up
            return fail(exc)

    def _listen(self, factory: Any) -> Any:
        settings = self._settings
        if not self.path:
            raise UnixSocketError("unix socket address has no path (want unix:///path/to.sock)")
        # Checked before anything touches the file system.
        mode_text = settings.get("mode")
        # Without a mode, the file gets what bind() gives it, as in Consul (0777 minus the umask).
        mode = _parse_mode(str(mode_text)) if mode_text else 0o777 & ~_current_umask()
        user, group = settings.get("user"), settings.get("group")
        uid = _parse_user(str(user)) if user not in (None, "") else -1
        gid = _parse_group(str(group)) if group not in (None, "") else -1
        _remove_stale_socket(self.path, self.log)
        try:
            port = self._reactor.listenUNIX(self.path, factory, backlog=self._backlog, mode=mode)
        except CannotListenError as exc:
            raise UnixSocketError(f"cannot listen on unix socket {self.path}: "
                                  f"{exc.socketError}") from None
        if uid != -1 or gid != -1:
            try:
                os.chown(self.path, uid, gid)
            except OSError as exc:
                port.stopListening()
                raise UnixSocketError(f"failed setting ownership of unix socket {self.path} "
                                      f"to user {user or '-'} group {group or '-'}: "
                                      f"{exc.strerror}") from None
        return port


class HTTPListenerService(StreamServerEndpointService):
    """The listening service of the HTTP API; checks the addresses before it listens, so a
    bad one stops start-up with a clear message instead of leaving an agent half up."""

    log = txaio.make_logger()

    def __init__(self, endpoint: IStreamServerEndpoint, factory: Any, config: Any) -> None:
        super().__init__(endpoint, factory)
        self._config = config
        self._raiseSynchronously = True  # a port in use must stop start-up, not be logged later
        self.setName("http")

    def startService(self) -> None:
        check_dns_address(self._config)
        super().startService()
        # As Consul's agent says it; Twisted's own "starting on" line is a library detail.
        port = getattr(self, "_waitingForPort", None)
        listening = getattr(port, "result", None)
        if listening is not None:
            host = listening.getHost()
            address = (f"{host.host}:{host.port}" if hasattr(host, "port")
                       else getattr(host, "name", str(host)))
            network = "tcp" if hasattr(host, "port") else "unix"
            self.log.info("Started HTTP server: address={address} network={network}",
                          address=address, network=network)
